//! The export pipeline: Plum Fuse call logs into a day-partitioned Parquet
//! lake, locally or on an object store.
//!
//! - [`ExportPlan`] cuts a time range into [`DayPartition`]s: calendar days
//!   of a time zone (daylight-saving aware), per requested number.
//! - [`Pipeline`] pages each day through a [`plumline_api::PageSource`]
//!   with one global bound on requests in flight, dedupes by `session_id`,
//!   refetches days that do not add up, and writes one Parquet file per day
//!   and number through a Parquet sink, committed atomically into a
//!   [`Lake`] (over a destination: a local directory or an object-store
//!   prefix) under a claim, and recorded for resumption.
//! - [`ExportObserver`] receives progress events; [`ExportSummary`] is the
//!   result.
//! - [`summarize_lake`] reads a local lake back into a [`LakeSummary`].
//!
//! The lake's layout and naming are described in [`Lake`] and the
//! contract: `DEST/date=YYYY-MM-DD/calls-<slug>.parquet`, state in
//! `DEST/_plumline/`.
//!
//! This crate never builds HTTP requests (it only sees the page source),
//! knows nothing of Prometheus, and never prints.

mod batch;
mod error;
mod failpoint;
mod lake;
mod pipeline;
mod plan;
mod progress;
mod reader;
mod sink;
mod store;
mod verify;

pub use batch::{calls_to_batch, lake_schema};
pub use error::{DestinationError, ExportError, PlanError};
pub use lake::{Lake, LakeOptions, file_name, number_slug, partition_dir};
pub use pipeline::{ExportOptions, Pipeline};
pub use plan::{DayPartition, ExportPlan};
pub use progress::{DayRef, ExportEvent, ExportObserver, ExportSummary, NoProgress, OpenDay, WidenedBound};
pub use reader::{LakeSummary, lake_files, summarize_lake};
pub use sink::ParquetOptions;
pub use verify::{
    DayCheck, DayStatus, LakeVerifier, StateMismatch, UntrackedFile, VerifyOptions, VerifyReport,
};

/// Encodes `batches` into an in-memory Parquet file with the lake's writer
/// settings (for benchmarks and tests of the file format alone).
///
/// # Errors
/// [`ExportError::Parquet`] if encoding fails.
pub fn write_parquet_to_vec(
    batches: &[arrow_array::RecordBatch],
    options: &ParquetOptions,
) -> Result<Vec<u8>, ExportError> {
    let properties = sink::writer_properties(options, Vec::new())?;
    let perr = |source| ExportError::Parquet { action: "writing", location: "memory".into(), source };
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(Vec::new(), lake_schema(), Some(properties)).map_err(perr)?;
    for batch in batches {
        writer.write(batch).map_err(perr)?;
    }
    writer.into_inner().map_err(perr)
}
