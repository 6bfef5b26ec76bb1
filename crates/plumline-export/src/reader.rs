//! [`LakeSummary`]: reads a local lake back, one batch at a time, for the
//! demo's summary and for checks.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{Array, StringArray};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::error::ExportError;

/// Figures computed from a lake's files.
///
/// ## Memory Usage
/// Reading streams one batch (8,192 rows of three columns) at a time; the
/// summary keeps one counter per day, per (number, type) pair and per
/// distinct duration in seconds, so it stays small however large the lake.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LakeSummary {
    /// Parquet files read.
    pub files: u64,
    /// Rows read.
    pub calls: u64,
    /// Calls per partition day (`YYYY-MM-DD`).
    pub per_day: BTreeMap<String, u64>,
    /// Calls per (number, type); number `None` for unfiltered exports.
    pub per_number_type: BTreeMap<(Option<String>, String), u64>,
    /// How many calls lasted each number of seconds.
    pub durations: BTreeMap<i64, u64>,
}

impl LakeSummary {
    /// The `q`-quantile (0.0..=1.0) of call durations in seconds, by the
    /// nearest-rank method; `None` for an empty lake.
    #[must_use]
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "the rank is a small non-negative whole number"
    )]
    pub fn duration_quantile(&self, q: f64) -> Option<i64> {
        if self.calls == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.calls as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (duration, n) in &self.durations {
            seen += n;
            if seen >= rank {
                return Some(*duration);
            }
        }
        self.durations.keys().next_back().copied()
    }

    /// Calls per number, all types together.
    #[must_use]
    pub fn per_number(&self) -> BTreeMap<Option<String>, u64> {
        let mut out = BTreeMap::new();
        for ((number, _), n) in &self.per_number_type {
            *out.entry(number.clone()).or_insert(0) += n;
        }
        out
    }
}

/// The data files of a local lake: `ROOT/date=*/*.parquet`, sorted, skipping
/// hidden and temp files as hive readers do.
///
/// # Errors
/// [`ExportError::Io`] when `root` cannot be listed.
pub fn lake_files(root: &Path) -> Result<Vec<(String, PathBuf)>, ExportError> {
    let mut files = Vec::new();
    let entries = std::fs::read_dir(root).map_err(|e| ExportError::io("listing", root, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| ExportError::io("listing", root, e))?;
        let name = entry.file_name();
        let Some(day) = name.to_str().and_then(|n| n.strip_prefix("date=")) else {
            continue;
        };
        let dir = entry.path();
        for file in std::fs::read_dir(&dir).map_err(|e| ExportError::io("listing", &dir, e))? {
            let file = file.map_err(|e| ExportError::io("listing", &dir, e))?;
            let fname = file.file_name();
            let Some(fname) = fname.to_str() else { continue };
            if !fname.starts_with(['.', '_']) && fname.ends_with(".parquet") {
                files.push((day.to_owned(), file.path()));
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Reads every file of a local lake and summarizes it.
///
/// Blocking: call it from a blocking thread in async code.
///
/// # Errors
/// [`ExportError::Io`] or [`ExportError::Parquet`] when a file cannot be
/// listed, opened or decoded.
pub fn summarize_lake(root: &Path) -> Result<LakeSummary, ExportError> {
    let mut summary = LakeSummary::default();
    for (day, path) in lake_files(root)? {
        let perr =
            |source| ExportError::Parquet { action: "reading", location: path.display().to_string(), source };
        let file = File::open(&path).map_err(|e| ExportError::io("opening", &path, e))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(perr)?;
        let mask = ProjectionMask::columns(builder.parquet_schema(), ["number", "type", "duration_s"]);
        let reader = builder.with_projection(mask).with_batch_size(8192).build().map_err(perr)?;
        summary.files += 1;
        let day_count = summary.per_day.entry(day).or_insert(0);
        for batch in reader {
            let batch = batch.map_err(|e| perr(e.into()))?;
            let column = |name: &str| {
                batch.column_by_name(name).cloned().ok_or_else(|| {
                    perr(parquet::errors::ParquetError::General(format!("the file has no `{name}` column")))
                })
            };
            let (number, call_type, duration) = (column("number")?, column("type")?, column("duration_s")?);
            // A valid file of another shape is an error naming it, never a panic.
            let unexpected = |name: &str, array: &arrow_array::ArrayRef, want: &str| {
                perr(parquet::errors::ParquetError::General(format!(
                    "the `{name}` column is {} where the lake writes {want}",
                    array.data_type()
                )))
            };
            let number: &StringArray =
                number.as_string_opt::<i32>().ok_or_else(|| unexpected("number", &number, "Utf8"))?;
            let call_type =
                call_type.as_string_opt::<i32>().ok_or_else(|| unexpected("type", &call_type, "Utf8"))?;
            let duration = duration
                .as_primitive_opt::<Int64Type>()
                .ok_or_else(|| unexpected("duration_s", &duration, "Int64"))?;
            for i in 0..batch.num_rows() {
                let key =
                    (number.is_valid(i).then(|| number.value(i).to_owned()), call_type.value(i).to_owned());
                *summary.per_number_type.entry(key).or_insert(0) += 1;
                *summary.durations.entry(duration.value(i)).or_insert(0) += 1;
            }
            summary.calls += batch.num_rows() as u64;
            *day_count += batch.num_rows() as u64;
        }
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes `batch` as the one file of day 2025-01-01 under `root`.
    fn write_day(root: &Path, batch: &arrow_array::RecordBatch) -> PathBuf {
        let dir = root.join("date=2025-01-01");
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("calls-all.parquet");
        let file = File::create(&path).expect("create");
        let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).expect("writer");
        writer.write(batch).expect("write");
        writer.close().expect("close");
        path
    }

    /// (what, columns, what the error must name)
    type Case<'a> = (&'a str, Vec<(&'a str, arrow_array::ArrayRef)>, &'a str);

    #[test]
    fn unexpected_but_valid_files_are_errors_naming_the_file() {
        use std::sync::Arc;

        use arrow_array::{ArrayRef, Int64Array, LargeStringArray, RecordBatch};
        let strings = |v: &str| Arc::new(StringArray::from(vec![v])) as ArrayRef;
        let cases: Vec<Case<'_>> = vec![
            (
                "a LargeUtf8 number",
                vec![
                    ("number", Arc::new(LargeStringArray::from(vec!["1"])) as ArrayRef),
                    ("type", strings("inbound")),
                    ("duration_s", Arc::new(Int64Array::from(vec![5])) as ArrayRef),
                ],
                "LargeUtf8",
            ),
            (
                "a missing duration_s",
                vec![("number", strings("1")), ("type", strings("inbound"))],
                "duration_s",
            ),
            (
                "a duration as text",
                vec![("number", strings("1")), ("type", strings("inbound")), ("duration_s", strings("5"))],
                "duration_s",
            ),
        ];
        for (what, columns, needle) in cases {
            let dir = tempfile::tempdir().expect("tempdir");
            let batch = RecordBatch::try_from_iter(columns).expect("batch");
            let path = write_day(dir.path(), &batch);
            let err = summarize_lake(dir.path()).expect_err(what);
            let chain = plumline_api::error_chain(&err);
            assert!(chain.contains(&path.display().to_string()) && chain.contains(needle), "{what}: {chain}");
        }
    }

    #[test]
    fn quantiles_by_nearest_rank() {
        let mut s = LakeSummary::default();
        assert_eq!(s.duration_quantile(0.5), None);
        for d in 1..=100 {
            s.durations.insert(d, 1);
        }
        s.calls = 100;
        assert_eq!(s.duration_quantile(0.5), Some(50));
        assert_eq!(s.duration_quantile(0.9), Some(90));
        assert_eq!(s.duration_quantile(0.99), Some(99));
        assert_eq!(s.duration_quantile(1.0), Some(100));
        assert_eq!(s.duration_quantile(0.0), Some(1));
    }
}
