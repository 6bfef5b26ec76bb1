//! [`LakeVerifier`]: reconciles a lake with the API, day by day.
//!
//! For every day partition of an [`ExportPlan`] the verifier reads the row
//! count of the day's file from its Parquet footer (never the data) and asks
//! the API for the day's `total_calls` with one `limit=1` request. It also
//! checks the lake's bookkeeping: data files that no state records, and
//! state that disagrees with its file. The result is a [`VerifyReport`];
//! the caller decides what to print and how to exit.
//!
//! Days are always checked whole (midnight to midnight in the plan's time
//! zone), as exports write them, even when the plan's first or last day is
//! only partly covered.

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroUsize;
use std::sync::Arc;

use futures::{StreamExt as _, TryStreamExt as _, stream};
use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt as _};
use parquet::errors::ParquetError;
use parquet::file::FOOTER_SIZE;
use parquet::file::metadata::{FooterTail, ParquetMetaDataReader};
use plumline_api::{CallQuery, PageSource};
use serde::Serialize;
use tracing::debug;

use crate::error::{DestinationError, ExportError, PlanError};
use crate::lake::{DayState, Lake, STATE_DIR, number_slug, partition_dir};
use crate::plan::ExportPlan;

/// How a verification runs.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// Most API requests and store reads in flight at once.
    pub concurrency: NonZeroUsize,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions { concurrency: NonZeroUsize::new(8).unwrap_or(NonZeroUsize::MIN) }
    }
}

/// How a day of the lake compares with the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DayStatus {
    /// The file holds as many rows as the API lists.
    Match,
    /// The file holds more or fewer rows than the API lists.
    Differs,
    /// The lake has no file for the day.
    Missing,
}

/// One day partition, checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DayCheck {
    /// The calendar day, in the plan's time zone.
    #[serde(serialize_with = "serialize_display")]
    pub date: Date,
    /// The number filter, `None` for an unfiltered export.
    pub number: Option<String>,
    /// The day's file relative to the lake's root.
    pub file: String,
    /// Rows in the day's file (from its footer); `None` when it has no file.
    pub lake_rows: Option<u64>,
    /// The API's `total_calls` for the whole day.
    pub api_total: u64,
    /// Whether the state recorded the day as closed (complete) when it was
    /// written; `None` without state. An open day may differ until the next
    /// export refreshes it.
    pub closed: Option<bool>,
    /// The verdict.
    pub status: DayStatus,
}

impl DayCheck {
    /// Whether the day needs attention (differs or is missing).
    #[must_use]
    pub fn is_bad(&self) -> bool {
        self.status != DayStatus::Match
    }
}

/// A data file that no state records: written by something else, or left
/// by a run killed between committing the file and recording it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UntrackedFile {
    /// The file relative to the lake's root.
    pub file: String,
    /// Its size in bytes.
    pub bytes: u64,
}

/// State that disagrees with the file it describes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StateMismatch {
    /// The state file relative to the lake's root.
    pub state: String,
    /// The data file it describes, relative to the lake's root.
    pub file: String,
    /// What disagrees, in a few words.
    pub reason: String,
}

/// What a verification found.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// The lake, as named in messages.
    pub destination: String,
    /// The time zone days are cut in.
    pub tz: String,
    /// First day checked.
    #[serde(serialize_with = "serialize_display")]
    pub first_day: Date,
    /// Last day checked (inclusive).
    #[serde(serialize_with = "serialize_display")]
    pub last_day: Date,
    /// Every day partition of the plan, by day then number.
    pub days: Vec<DayCheck>,
    /// Data files in the checked days that no state records.
    pub untracked_files: Vec<UntrackedFile>,
    /// State in the checked days that disagrees with its file.
    pub state_mismatches: Vec<StateMismatch>,
    /// API requests made.
    pub api_requests: u64,
    #[serde(skip)]
    plan_tz: TimeZone,
}

impl VerifyReport {
    /// Whether every day matches the API.
    #[must_use]
    pub fn all_match(&self) -> bool {
        self.days.iter().all(|d| !d.is_bad())
    }

    /// The days that differ or are missing.
    pub fn bad_days(&self) -> impl Iterator<Item = &DayCheck> {
        self.days.iter().filter(|d| d.is_bad())
    }

    /// Counts of days per status: (match, differs, missing).
    #[must_use]
    pub fn counts(&self) -> (usize, usize, usize) {
        let n = |s: DayStatus| self.days.iter().filter(|d| d.status == s).count();
        (n(DayStatus::Match), n(DayStatus::Differs), n(DayStatus::Missing))
    }

    /// One single-day plan per day that a re-export may fix: each missing
    /// day, and each day whose file holds fewer rows than the API lists.
    /// Days holding more rows than the API lists are left out: replacing
    /// them would shrink a committed day (the vendor purged records, say).
    ///
    /// # Errors
    /// [`ExportError::InvalidPlan`] if a day's plan cannot be built.
    pub fn repair_plans(&self) -> Result<Vec<ExportPlan>, ExportError> {
        self.bad_days()
            .filter(|d| d.lake_rows.is_none_or(|rows| rows < d.api_total))
            .map(|d| {
                let (start, end) = whole_day(d.date, &self.plan_tz)?;
                let numbers: Vec<String> = d.number.iter().cloned().collect();
                ExportPlan::new(start, end, self.plan_tz.clone(), &numbers)
            })
            .collect()
    }
}

fn serialize_display<T: std::fmt::Display, S: serde::Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// Reads a lake and the API side by side: each day's rows (from the file footers) against one `limit=1` count per day and number.
#[derive(Debug)]
pub struct LakeVerifier<S> {
    source: Arc<S>,
    destination: Lake,
    options: VerifyOptions,
}

/// What the lake holds for one (date, slug).
#[derive(Debug, Default)]
struct Found {
    /// The data file's size, if listed.
    file_bytes: Option<u64>,
    /// Whether a state object is listed.
    has_state: bool,
}

/// The lake's side of one (date, slug), read.
#[derive(Debug)]
struct LakeSide {
    rows: Option<u64>,
    state: Option<Result<DayState, String>>,
}

impl<S: PageSource + 'static> LakeVerifier<S> {
    /// A verifier of `destination` against `source`.
    #[must_use]
    pub fn new(source: Arc<S>, destination: Lake, options: VerifyOptions) -> Self {
        LakeVerifier { source, destination, options }
    }

    /// Checks every day partition of `plan`.
    ///
    /// # Errors
    /// When the check itself cannot be done: the lake does not exist or
    /// cannot be listed or read ([`ExportError::InvalidDestination`],
    /// [`ExportError::ObjectStore`], [`ExportError::Parquet`]), or the API
    /// fails ([`ExportError::Api`]). Findings about the lake are never
    /// errors: they are in the report.
    ///
    /// # Cancel safety
    /// Dropping the future abandons the reads and requests in flight;
    /// verification only reads, so nothing is left half done.
    pub async fn verify(&self, plan: &ExportPlan) -> Result<VerifyReport, ExportError> {
        if let Some(root) = self.destination.local_root()
            && !root.is_dir()
        {
            return Err(DestinationError::Missing { path: root.to_path_buf() }.into());
        }
        let (store, prefix) = self.destination.store()?;
        let tz = plan.tz().clone();
        let dates: BTreeSet<Date> = plan.partitions().iter().map(crate::plan::DayPartition::date).collect();
        let (Some(&first_day), Some(&last_day)) = (dates.first(), dates.last()) else {
            return Err(PlanError::NoDays.into());
        };
        let width = self.options.concurrency.get();
        let (found, untracked_candidates) = self.list_lake(&store, &prefix, &dates, plan).await?;

        // Read footers and states.
        let keys: Vec<(Date, String, Option<u64>, bool)> =
            found.iter().map(|((d, s), f)| (*d, s.clone(), f.file_bytes, f.has_state)).collect();
        let sides: BTreeMap<(Date, String), LakeSide> = stream::iter(keys)
            .map(|(date, slug, file_bytes, has_state)| {
                let store = Arc::clone(&store);
                let prefix = prefix.clone();
                async move {
                    let rows = match file_bytes {
                        Some(bytes) => Some(self.footer_rows(&store, &prefix, date, &slug, bytes).await?),
                        None => None,
                    };
                    let state = if has_state {
                        Some(self.read_state(&store, &prefix, date, &slug).await?)
                    } else {
                        None
                    };
                    Ok::<_, ExportError>(((date, slug), LakeSide { rows, state }))
                }
            })
            .buffer_unordered(width)
            .try_collect()
            .await?;

        let totals = self.api_totals(plan).await?;

        let mut report = VerifyReport {
            destination: self.destination.display().to_owned(),
            tz: plan.tz_name().to_owned(),
            first_day,
            last_day,
            days: Vec::with_capacity(plan.partitions().len()),
            untracked_files: untracked_candidates,
            state_mismatches: Vec::new(),
            api_requests: totals.len() as u64,
            plan_tz: tz,
        };
        for p in plan.partitions() {
            let slug = number_slug(p.number());
            let side = sides.get(&(p.date(), slug));
            let lake_rows = side.and_then(|s| s.rows);
            let api_total = totals.get(&(p.date(), p.number().map(str::to_owned))).copied().unwrap_or(0);
            let status = match lake_rows {
                None => DayStatus::Missing,
                Some(rows) if rows == api_total => DayStatus::Match,
                Some(_) => DayStatus::Differs,
            };
            let closed = side.and_then(|s| s.state.as_ref()).and_then(|s| s.as_ref().ok()).map(|s| s.closed);
            report.days.push(DayCheck {
                date: p.date(),
                number: p.number().map(str::to_owned),
                file: relative_file(p.date(), &number_slug(p.number())),
                lake_rows,
                api_total,
                closed,
                status,
            });
        }
        for ((date, slug), f) in &found {
            let file = relative_file(*date, slug);
            let state_path = relative_state(*date, slug);
            let side = sides.get(&(*date, slug.clone()));
            let state = side.and_then(|s| s.state.as_ref());
            match (f.file_bytes, state) {
                (Some(bytes), None) => report.untracked_files.push(UntrackedFile { file, bytes }),
                (None, Some(_)) => report.state_mismatches.push(StateMismatch {
                    state: state_path,
                    file,
                    reason: "the state records a file that is not in the lake".into(),
                }),
                (Some(bytes), Some(state)) => {
                    let rows = side.and_then(|s| s.rows);
                    if let Some(reason) = disagreement(state, bytes, rows, &file, &report.tz) {
                        report.state_mismatches.push(StateMismatch { state: state_path, file, reason });
                    }
                }
                (None, None) => {}
            }
        }
        report.untracked_files.sort_by(|a, b| a.file.cmp(&b.file));
        Ok(report)
    }

    /// What the lake holds for the plan's days: data files and state per
    /// (date, slug), with every plan partition present; and the `.parquet`
    /// files whose names no export writes.
    async fn list_lake(
        &self,
        store: &Arc<dyn ObjectStore>,
        prefix: &ObjPath,
        dates: &BTreeSet<Date>,
        plan: &ExportPlan,
    ) -> Result<(BTreeMap<(Date, String), Found>, Vec<UntrackedFile>), ExportError> {
        let width = self.options.concurrency.get();

        // What the lake holds: data files per day, state files per slug.
        let mut found: BTreeMap<(Date, String), Found> = BTreeMap::new();
        let listed: Vec<(Date, Vec<(String, u64)>)> = stream::iter(dates.iter().copied())
            .map(|date| {
                let (store, dir) = (Arc::clone(store), child(prefix, &partition_dir(date)));
                let location = self.location(&partition_dir(date));
                async move { list_files(&*store, &dir, &location).await.map(|files| (date, files)) }
            })
            .buffer_unordered(width)
            .try_collect()
            .await?;
        let mut untracked_candidates = Vec::new();
        for (date, files) in listed {
            for (name, bytes) in files {
                let Some(slug) = name.strip_prefix("calls-").and_then(|n| n.strip_suffix(".parquet")) else {
                    if has_extension(&name, "parquet") {
                        untracked_candidates
                            .push(UntrackedFile { file: format!("{}/{name}", partition_dir(date)), bytes });
                    }
                    continue;
                };
                found.entry((date, slug.to_owned())).or_default().file_bytes = Some(bytes);
            }
        }
        let days_dir = child(&child(prefix, STATE_DIR), "days");
        let slug_dirs =
            list_dirs(store.as_ref(), &days_dir, &self.location(&format!("{STATE_DIR}/days"))).await?;
        let state_lists: Vec<(String, Vec<(String, u64)>)> = stream::iter(slug_dirs)
            .map(|slug| {
                let (store, dir) = (Arc::clone(store), child(&days_dir, &slug));
                let location = self.location(&format!("{STATE_DIR}/days/{slug}"));
                async move { list_files(&*store, &dir, &location).await.map(|files| (slug, files)) }
            })
            .buffer_unordered(width)
            .try_collect()
            .await?;
        for (slug, files) in state_lists {
            for (name, _) in files {
                let Some(date) = name.strip_suffix(".json").and_then(|d| d.parse::<Date>().ok()) else {
                    continue;
                };
                if dates.contains(&date) {
                    found.entry((date, slug.clone())).or_default().has_state = true;
                }
            }
        }
        for p in plan.partitions() {
            found.entry((p.date(), number_slug(p.number()))).or_default();
        }

        Ok((found, untracked_candidates))
    }

    /// The API's `total_calls` of each whole day partition of `plan`.
    async fn api_totals(
        &self,
        plan: &ExportPlan,
    ) -> Result<BTreeMap<(Date, Option<String>), u64>, ExportError> {
        let width = self.options.concurrency.get();
        stream::iter(plan.partitions())
            .map(|p| {
                let tz = plan.tz().clone();
                async move {
                    let (start, end) = whole_day(p.date(), &tz)?;
                    let query = CallQuery::new(start, end - 1)
                        .map(|q| q.with_number(p.number().map(str::to_owned)))
                        .map_err(ExportError::query)?;
                    let api = |source| ExportError::Api {
                        day: p.date(),
                        number: p.number().map(str::to_owned),
                        offset: 0,
                        source,
                    };
                    let page = self.source.fetch_page(&query.page(1, 0).map_err(api)?).await.map_err(api)?;
                    debug!(day = %p.date(), number = p.number(), total_calls = page.total_calls, "api total");
                    Ok::<_, ExportError>(((p.date(), p.number().map(str::to_owned)), page.total_calls))
                }
            })
            .buffer_unordered(width)
            .try_collect()
            .await
    }

    fn location(&self, relative: &str) -> String {
        format!("{}/{relative}", self.destination.display())
    }

    async fn footer_rows(
        &self,
        store: &Arc<dyn ObjectStore>,
        prefix: &ObjPath,
        date: Date,
        slug: &str,
        bytes: u64,
    ) -> Result<u64, ExportError> {
        let rel = relative_file(date, slug);
        let path = child_path(prefix, &rel);
        let parquet = |source| ExportError::Parquet {
            action: "reading the footer of",
            location: self.location(&rel),
            source,
        };
        let get = |range: std::ops::Range<u64>| {
            let (store, path) = (Arc::clone(store), path.clone());
            async move { store.get_range(&path, range).await }
        };
        let footer = FOOTER_SIZE as u64;
        if bytes < footer + 4 {
            return Err(parquet(ParquetError::General(format!(
                "a file of {bytes} bytes is too short for parquet"
            ))));
        }
        // Two range reads: the fixed-size tail says how long the metadata before it is.
        let tail = get(bytes - footer..bytes)
            .await
            .map_err(|e| ExportError::store("reading", self.location(&rel), e))?;
        let tail = FooterTail::try_from(tail.as_ref()).map_err(parquet)?;
        let len = tail.metadata_length() as u64;
        if len + footer > bytes {
            return Err(parquet(ParquetError::General(format!(
                "the footer claims {len} bytes of metadata in a file of {bytes}"
            ))));
        }
        let raw = get(bytes - footer - len..bytes - footer)
            .await
            .map_err(|e| ExportError::store("reading", self.location(&rel), e))?;
        let metadata = ParquetMetaDataReader::decode_metadata(&raw).map_err(parquet)?;
        Ok(u64::try_from(metadata.file_metadata().num_rows()).unwrap_or(0))
    }

    async fn read_state(
        &self,
        store: &Arc<dyn ObjectStore>,
        prefix: &ObjPath,
        date: Date,
        slug: &str,
    ) -> Result<Result<DayState, String>, ExportError> {
        let rel = relative_state(date, slug);
        let raw = match store.get(&child_path(prefix, &rel)).await {
            Ok(got) => {
                got.bytes().await.map_err(|e| ExportError::store("reading", self.location(&rel), e))?
            }
            // Deleted between listing and reading: as if it never was.
            Err(object_store::Error::NotFound { .. }) => {
                return Ok(Err("the state vanished while the lake was read".into()));
            }
            Err(e) => return Err(ExportError::store("reading", self.location(&rel), e)),
        };
        Ok(serde_json::from_slice::<DayState>(&raw).map_err(|e| format!("the state is unreadable: {e}")))
    }
}

/// Why `state` disagrees with its file (`bytes`, `rows` from the footer), if it does.
fn disagreement(
    state: &Result<DayState, String>,
    bytes: u64,
    rows: Option<u64>,
    file: &str,
    tz: &str,
) -> Option<String> {
    let state = match state {
        Ok(state) => state,
        Err(why) => return Some(why.clone()),
    };
    if state.file != file {
        return Some(format!("the state names another file, {}", state.file));
    }
    if state.bytes != bytes {
        return Some(format!("the state records {} bytes, the file has {bytes}", state.bytes));
    }
    if let Some(rows) = rows
        && state.rows != rows
    {
        return Some(format!("the state records {} rows, the file holds {rows}", state.rows));
    }
    if state.tz != tz {
        return Some(format!("the day was cut in time zone {}, not {tz}", state.tz));
    }
    None
}

/// `[midnight, next midnight)` of `date` in `tz`, as UNIX seconds.
fn whole_day(date: Date, tz: &TimeZone) -> Result<(i64, i64), ExportError> {
    let bad = |e| ExportError::calendar(date.to_string(), e);
    let start_of = |d: Date| -> Result<i64, jiff::Error> {
        Ok(d.to_zoned_datetime(tz.clone())?.start_of_day()?.timestamp().as_second())
    };
    let start = start_of(date).map_err(bad)?;
    let end = match date.tomorrow() {
        Ok(next) => start_of(next).map_err(bad)?,
        Err(_) => Timestamp::MAX.as_second(),
    };
    Ok((start, end))
}

fn relative_file(date: Date, slug: &str) -> String {
    format!("{}/calls-{slug}.parquet", partition_dir(date))
}

fn relative_state(date: Date, slug: &str) -> String {
    format!("{STATE_DIR}/days/{slug}/{date}.json")
}

fn child(prefix: &ObjPath, part: &str) -> ObjPath {
    prefix.clone().join(part)
}

fn child_path(prefix: &ObjPath, relative: &str) -> ObjPath {
    relative.split('/').fold(prefix.clone(), ObjPath::join)
}

fn has_extension(name: &str, ext: &str) -> bool {
    std::path::Path::new(name).extension().is_some_and(|e| e.eq_ignore_ascii_case(ext))
}

/// The visible files directly in `dir` (name, size); none if it does not exist.
/// Hidden files (temps in flight) are skipped.
async fn list_files(
    store: &dyn ObjectStore,
    dir: &ObjPath,
    location: &str,
) -> Result<Vec<(String, u64)>, ExportError> {
    let listed = match store.list_with_delimiter(Some(dir)).await {
        Ok(listed) => listed,
        Err(object_store::Error::NotFound { .. }) => return Ok(Vec::new()),
        Err(e) => return Err(ExportError::store("listing", location, e)),
    };
    Ok(listed
        .objects
        .into_iter()
        .filter_map(|o| o.location.filename().map(|n| (n.to_owned(), o.size)))
        .filter(|(name, _)| !name.starts_with('.'))
        .collect())
}

/// The names of the directories directly in `dir`.
async fn list_dirs(
    store: &dyn ObjectStore,
    dir: &ObjPath,
    location: &str,
) -> Result<Vec<String>, ExportError> {
    let listed = match store.list_with_delimiter(Some(dir)).await {
        Ok(listed) => listed,
        Err(object_store::Error::NotFound { .. }) => return Ok(Vec::new()),
        Err(e) => return Err(ExportError::store("listing", location, e)),
    };
    Ok(listed.common_prefixes.iter().filter_map(|p| p.filename().map(str::to_owned)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ExportOptions, NoProgress, Pipeline};
    use plumline_sim::memory::MemorySource;
    use plumline_sim::{SimConfig, Simulator};

    /// The simulator's data as a page source, without HTTP.
    fn sim(config: SimConfig) -> Arc<MemorySource> {
        Arc::new(MemorySource::from_simulator(Simulator::new(config).expect("sim")))
    }

    fn plan(numbers: &[String], tz: TimeZone) -> ExportPlan {
        // 2025-01-03 .. 2025-01-06 in UTC.
        ExportPlan::new(1_735_862_400, 1_735_862_400 + 3 * 86_400, tz, numbers).expect("plan")
    }

    async fn exported(dir: &std::path::Path, sim: &Arc<MemorySource>, plan: &ExportPlan) {
        let options = ExportOptions { settle: std::time::Duration::ZERO, ..ExportOptions::default() };
        Pipeline::new(Arc::clone(sim), Lake::local(dir), options)
            .expect("pipeline")
            .run(plan, &NoProgress)
            .await
            .expect("export");
    }

    #[tokio::test]
    async fn a_complete_lake_matches_and_damage_is_named() {
        let sim = sim(SimConfig::default().with_calls_per_day(200.0));
        let dir = tempfile::tempdir().expect("tempdir");
        let plan = plan(&[], TimeZone::UTC);
        exported(dir.path(), &sim, &plan).await;
        let verifier = LakeVerifier::new(Arc::clone(&sim), Lake::local(dir.path()), VerifyOptions::default());
        let report = verifier.verify(&plan).await.expect("verify");
        assert!(report.all_match(), "{report:#?}");
        assert_eq!(report.days.len(), 3);
        assert!(report.untracked_files.is_empty() && report.state_mismatches.is_empty(), "{report:#?}");
        assert_eq!(report.api_requests, 3);

        // Remove one day's file, and plant a file nobody recorded.
        let day = "date=2025-01-04";
        std::fs::remove_file(dir.path().join(day).join("calls-all.parquet")).expect("rm");
        std::fs::write(dir.path().join("date=2025-01-05").join("stray.parquet"), b"x").expect("write");
        let report = verifier.verify(&plan).await.expect("verify");
        let bad: Vec<(String, DayStatus)> =
            report.bad_days().map(|d| (d.date.to_string(), d.status)).collect();
        assert_eq!(bad, vec![("2025-01-04".to_owned(), DayStatus::Missing)]);
        assert_eq!(report.state_mismatches.len(), 1, "{report:#?}");
        assert_eq!(report.state_mismatches[0].file, format!("{day}/calls-all.parquet"));
        assert_eq!(
            report.untracked_files,
            vec![UntrackedFile { file: "date=2025-01-05/stray.parquet".into(), bytes: 1 }]
        );
        // Days the lake never had (no partition directory at all) are missing, not an error.
        let wider =
            ExportPlan::new(1_735_862_400, 1_735_862_400 + 5 * 86_400, TimeZone::UTC, &[]).expect("plan");
        let wide = verifier.verify(&wider).await.expect("verify");
        let missing: Vec<String> =
            wide.bad_days().filter(|d| d.status == DayStatus::Missing).map(|d| d.date.to_string()).collect();
        assert_eq!(missing, ["2025-01-04", "2025-01-06", "2025-01-07"]);
        let plans = report.repair_plans().expect("plans");
        assert_eq!(plans.len(), 1);
        assert_eq!(plans[0].partitions()[0].date().to_string(), "2025-01-04");
        assert_eq!(plans[0].partitions()[0].window_end() - plans[0].partitions()[0].window_start(), 86_400);
    }

    #[tokio::test]
    async fn an_object_store_lake_under_a_prefix_verifies() {
        let sim = sim(SimConfig::default().with_calls_per_day(100.0));
        let numbers = sim.simulator().expect("a simulator").numbers().to_vec();
        let store: Arc<dyn crate::lake::LakeObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let lake = Lake::object_store(Arc::clone(&store), ObjPath::from("lakes/calls"), "mem://lakes/calls");
        let plan = plan(&numbers[..2], TimeZone::UTC);
        let options = ExportOptions { settle: std::time::Duration::ZERO, ..ExportOptions::default() };
        Pipeline::new(Arc::clone(&sim), lake.clone(), options)
            .expect("pipeline")
            .run(&plan, &NoProgress)
            .await
            .expect("export");
        let verifier = LakeVerifier::new(Arc::clone(&sim), lake, VerifyOptions::default());
        let report = verifier.verify(&plan).await.expect("verify");
        assert!(report.all_match(), "{report:#?}");
        assert_eq!(report.days.len(), 6);
        assert!(report.days.iter().all(|d| d.lake_rows.is_some_and(|r| r > 0)), "{report:#?}");
        assert!(report.untracked_files.is_empty() && report.state_mismatches.is_empty(), "{report:#?}");
        // Drop one state object: its file is now untracked.
        let state =
            format!("lakes/calls/{STATE_DIR}/days/{}/2025-01-04.json", number_slug(Some(&numbers[1])));
        store.delete(&ObjPath::from(state.as_str())).await.expect("delete");
        let report = verifier.verify(&plan).await.expect("verify");
        assert!(report.all_match());
        assert_eq!(
            report.untracked_files.iter().map(|f| f.file.as_str()).collect::<Vec<_>>(),
            [format!("date=2025-01-04/calls-{}.parquet", number_slug(Some(&numbers[1])))]
        );
    }

    #[tokio::test]
    async fn a_missing_lake_cannot_be_checked() {
        let sim = sim(SimConfig::default());
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nope");
        let verifier = LakeVerifier::new(sim, Lake::local(&missing), VerifyOptions::default());
        let err = verifier.verify(&plan(&[], TimeZone::UTC)).await.expect_err("no lake");
        assert!(err.to_string().contains("does not exist"), "{err}");
        assert!(!missing.exists(), "verify must not create the lake");
    }

    #[test]
    fn state_disagreements_are_explained() {
        let state = DayState {
            tool_version: "t".into(),
            date: "2025-01-03".into(),
            number: None,
            tz: "UTC".into(),
            window_start: 0,
            window_end: 1,
            file: "date=2025-01-03/calls-all.parquet".into(),
            rows: 10,
            bytes: 100,
            api_total: 10,
            closed: true,
            committed_at: 0,
        };
        let file = "date=2025-01-03/calls-all.parquet";
        let ok = Ok(state.clone());
        assert_eq!(disagreement(&ok, 100, Some(10), file, "UTC"), None);
        let cases: &[(u64, Option<u64>, &str, &str)] = &[
            (99, Some(10), "UTC", "100 bytes"),
            (100, Some(9), "UTC", "10 rows"),
            (100, Some(10), "Europe/Berlin", "time zone UTC"),
        ];
        for (bytes, rows, tz, needle) in cases {
            let why = disagreement(&ok, *bytes, *rows, file, tz).expect("disagrees");
            assert!(why.contains(needle), "{why}");
        }
        assert!(disagreement(&Err("unreadable".into()), 100, None, file, "UTC").is_some());
    }
}
