//! What the pipeline's tests share: an export of whole UTC days from a page
//! source into a local lake, and the lake's files read back.

use std::path::Path;
use std::sync::Arc;

use arrow_array::RecordBatch;
use jiff::tz::TimeZone;
use plumline_api::PageSource;

use super::{ExportOptions, Pipeline};
use crate::ExportError;
use crate::lake::Lake;
use crate::plan::ExportPlan;
use crate::progress::{ExportSummary, NoProgress};
use crate::reader::lake_files;

/// Seconds in a day: the tests' days are UTC days from 1970-01-01.
pub(super) const DAY: i64 = 86_400;

/// Exports the first `days` UTC days from `source` into a local lake at `dir`.
pub(super) async fn export<S: PageSource + 'static>(
    source: &Arc<S>,
    dir: &Path,
    options: ExportOptions,
    days: i64,
) -> Result<ExportSummary, ExportError> {
    let plan = ExportPlan::new(0, days * DAY, TimeZone::UTC, &[]).expect("plan");
    let pipeline = Pipeline::new(Arc::clone(source), Lake::local(dir), options).expect("pipeline");
    pipeline.run(&plan, &NoProgress).await
}

/// The files of the lake at `dir`, in order: each one's day and batches.
pub(super) fn lake_batches(dir: &Path) -> Vec<(String, Vec<RecordBatch>)> {
    let mut out = Vec::new();
    for (day, path) in lake_files(dir).expect("list the lake") {
        let file = std::fs::File::open(path).expect("open");
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .expect("parquet")
            .build()
            .expect("reader");
        out.push((day, reader.map(|batch| batch.expect("batch")).collect()));
    }
    out
}
