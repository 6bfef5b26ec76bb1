//! [`Pipeline`]: pages every day of an [`ExportPlan`] through a
//! [`PageSource`] into one committed Parquet file per day and number.
//!
//! `mod.rs` holds the options and the run over all days; [`fetch`] one
//! attempt at one day.

mod consistency;
mod dedupe;
mod fetch;
#[cfg(test)]
mod testing;

use std::future::Future;
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt as _, TryStreamExt as _, stream};
use jiff::Timestamp;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use plumline_api::{ApiError, CallQuery, PageSize, PageSource};
use tokio::sync::Semaphore;
use tracing::{Instrument as _, debug, info_span, warn};

use crate::error::ExportError;
use crate::lake::{Claim, ClaimSettings, Committed, DayState, Lake, RunId};
use crate::plan::{DayPartition, ExportPlan};
use crate::progress::{DayRef, ExportEvent, ExportObserver, ExportSummary, OpenDay};
use crate::sink::{ParquetOptions, ParquetSink, writer_properties};

/// The version recorded in file metadata and resume state.
pub const TOOL_VERSION: &str = concat!("plumline-export/", env!("CARGO_PKG_VERSION"));

/// How an export runs.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// Most page requests in flight at once, across all days. A fetched
    /// page keeps its slot until its rows are handed to the day's writer,
    /// so this also bounds the pages held in memory.
    pub concurrency: NonZeroUsize,
    /// Calls per page.
    pub page_size: PageSize,
    /// Days (day partitions) worked on at once; `None` picks
    /// `concurrency` clamped to 2..=8. More days overlap their first
    /// pages (which must arrive before the rest of a day can be requested);
    /// each costs one writer's row group of memory.
    pub days_in_flight: Option<NonZeroUsize>,
    /// Export days again even when an earlier run committed them.
    pub overwrite: bool,
    /// Let a re-export replace a committed day with a file of fewer calls
    /// (after the vendor purged old records, say). Off: such a day is kept
    /// and the run fails naming it.
    pub allow_shrink: bool,
    /// A day whose window ends less than this before now is written but not
    /// recorded complete, so the next run refreshes it (the API lists a call
    /// once it has ended, under its start).
    pub settle: Duration,
    /// Times a day is fetched before an inconsistent answer is an error.
    pub max_day_attempts: NonZeroU32,
    /// Read every closed day twice, and commit it only when the second read
    /// lists the same calls with the same content as the first (else read
    /// it again, up to `max_day_attempts`). This catches what no single
    /// read can: a call removed and another added in pages already read,
    /// or a call changed in place, under a stable total. It costs a second
    /// read's requests and time; the write is not repeated. Off, a closed
    /// day still gets a second read (at the API's largest page) when its
    /// request budget of 2% + 1 over the minimum has room for it.
    pub reread: bool,
    /// The Parquet files' settings.
    pub parquet: ParquetOptions,
    /// The current time for the settle margin (UNIX seconds); `None` reads
    /// the clock. For tests.
    pub now: Option<i64>,
    /// How long a run's claim on a day lives without renewal (renewed every
    /// third of it). Another run takes over a claim only once it expired,
    /// or at once when it names a process of this machine that is gone. Must
    /// exceed the clock skew between machines writing one lake.
    pub claim_lease: Duration,
    /// How long to wait for another live run's claim on a day before
    /// failing that day.
    pub claim_wait: Duration,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            concurrency: NonZeroUsize::new(8).unwrap_or(NonZeroUsize::MIN),
            page_size: PageSize::MAX,
            days_in_flight: None,
            overwrite: false,
            allow_shrink: false,
            settle: plumline_api::LONGEST_CALL,
            max_day_attempts: NonZeroU32::new(4).unwrap_or(NonZeroU32::MIN),
            reread: false,
            parquet: ParquetOptions::default(),
            now: None,
            claim_lease: Duration::from_secs(60),
            claim_wait: Duration::from_secs(600),
        }
    }
}

impl ExportOptions {
    fn days_in_flight(&self) -> usize {
        self.days_in_flight.map_or_else(|| self.concurrency.get().clamp(2, 8), NonZeroUsize::get)
    }
}

/// Exports an [`ExportPlan`] from a [`PageSource`] into a [`Lake`].
///
/// For each day partition, the first page tells the day's `total_calls`;
/// the other pages are then requested concurrently and written in offset
/// order. Calls are deduplicated by `session_id` within the day. When the
/// distinct rows do not match `total_calls`, or the total moves while
/// paging, the day is fetched again (up to
/// [`ExportOptions::max_day_attempts`] times). Each day's file is committed
/// atomically, then recorded in the resume state.
///
/// Decoding (inside the page source) and Arrow conversion run in one task
/// per page, so they spread over the runtime's workers; Parquet encoding
/// runs on a blocking thread per day.
///
/// ## Memory Usage
/// Bounded by the configuration, not by the export's size: at most
/// `concurrency` decoded pages, plus per day in flight two queued batches,
/// up to 8 MiB of rows before its writer opens, one encoded row group, and
/// the dedupe set (16-byte fingerprints of about two pages once the listing
/// is seen ordered). For an object store, add one upload part
/// ([`LakeOptions::upload_part_bytes`](crate::LakeOptions::upload_part_bytes))
/// per day in flight.
#[derive(Debug)]
pub struct Pipeline<S> {
    source: Arc<S>,
    lake: Lake,
    options: ExportOptions,
    run: RunId,
}

impl<S: PageSource + 'static> Pipeline<S> {
    /// A pipeline reading from `source` and writing into `lake`.
    ///
    /// # Errors
    /// [`ExportError::InvalidPlan`] for a zstd level the codec does not
    /// accept.
    pub fn new(source: Arc<S>, lake: Lake, options: ExportOptions) -> Result<Self, ExportError> {
        writer_properties(&options.parquet, Vec::new())?;
        Ok(Pipeline { source, lake, options, run: RunId::current() })
    }

    /// The lake written to.
    #[must_use]
    pub fn lake(&self) -> &Lake {
        &self.lake
    }

    /// Runs the plan to the end.
    ///
    /// Days an earlier run committed (and that were closed then) are
    /// skipped unless [`ExportOptions::overwrite`] is set. Each day is
    /// written under its claim (see [`Lake`]); a day that fails does not
    /// stop the others.
    ///
    /// # Errors
    /// [`ExportError::DaysFailed`] naming each day that failed while the
    /// others were exported; a lake-wide error (another time zone, the
    /// destination unusable, credentials refused) at once. Days committed
    /// before an error stay committed, so a rerun resumes.
    ///
    /// # Cancel safety
    /// Dropping the future stops the export: in-flight requests are
    /// abandoned, local temp files deleted, and unfinished uploads put on
    /// the lake's cleanup list: await [`Lake::cleanup`] (or use
    /// [`Pipeline::run_until`], which does) before the runtime ends.
    /// Committed days stay committed and recorded; claims expire.
    pub async fn run(
        &self,
        plan: &ExportPlan,
        observer: &dyn ExportObserver,
    ) -> Result<ExportSummary, ExportError> {
        let result = self.run_days(plan, observer).await;
        self.lake.cleanup().await;
        result
    }

    /// [`Pipeline::run`] until `cancel` completes (Ctrl-C, SIGTERM): then the
    /// days in flight are abandoned and their uploads aborted before this
    /// returns [`ExportError::Cancelled`].
    ///
    /// # Errors
    /// As [`Pipeline::run`], or [`ExportError::Cancelled`].
    ///
    /// # Cancel safety
    /// As [`Pipeline::run`].
    pub async fn run_until(
        &self,
        plan: &ExportPlan,
        observer: &dyn ExportObserver,
        cancel: impl Future<Output = ()>,
    ) -> Result<ExportSummary, ExportError> {
        let result = tokio::select! {
            result = self.run_days(plan, observer) => result,
            () = cancel => Err(ExportError::Cancelled),
        };
        self.lake.cleanup().await;
        result
    }

    async fn run_days(
        &self,
        plan: &ExportPlan,
        observer: &dyn ExportObserver,
    ) -> Result<ExportSummary, ExportError> {
        let started = Instant::now();
        let now = self.options.now.unwrap_or_else(|| Timestamp::now().as_second());
        let settle = i64::try_from(self.options.settle.as_secs()).unwrap_or(i64::MAX);
        // Before anything is written: a lake is cut in one zone.
        self.lake.check_tz(plan.tz_name()).await?;
        let slugs: std::collections::BTreeSet<String> =
            plan.partitions().iter().map(|p| crate::lake::number_slug(p.number())).collect();
        self.lake.sweep_stale(slugs).await?;

        let mut summary = ExportSummary {
            partitions: plan.partitions().len(),
            days: plan.n_days(),
            widened: plan.widened().to_vec(),
            ..ExportSummary::default()
        };
        let todo = self.days_to_do(plan, &mut summary).await?;
        observer.on_event(&ExportEvent::Planned { partitions: summary.partitions, skipped: summary.skipped });
        debug!(
            destination = %self.lake.display(),
            partitions = summary.partitions,
            skipped = summary.skipped,
            concurrency = self.options.concurrency.get(),
            "export planned"
        );

        let permits = Arc::new(Semaphore::new(self.options.concurrency.get()));
        let mut days = stream::iter(todo)
            .map(|p| {
                let span = info_span!("export_day", day = %p.date(), number = p.number());
                let permits = &permits;
                async move { (p, self.export_day(p, plan, now, settle, permits, observer).await) }
                    .instrument(span)
            })
            .buffer_unordered(self.options.days_in_flight());
        let mut failures = Vec::new();
        while let Some((p, outcome)) = days.next().await {
            match outcome {
                Ok(DayOutcome::Written(w)) => {
                    summary.written += 1;
                    summary.written_days.push(day_ref(p));
                    if !w.closed {
                        summary.open += 1;
                        summary.open_days.push(OpenDay {
                            date: p.date().to_string(),
                            number: p.number().map(str::to_owned),
                            closes_at: p.window_end().saturating_add(settle),
                        });
                    }
                    summary.calls += w.rows;
                    summary.files += 1;
                    summary.bytes += w.bytes;
                    summary.pages += w.pages;
                    summary.requests += w.requests;
                    summary.out_of_window += w.out_of_window;
                    summary.refetches += u64::from(w.attempts - 1);
                }
                Ok(DayOutcome::CommittedByOther) => {
                    summary.skipped += 1;
                    summary.skipped_days.push(day_ref(p));
                }
                Err(e) if is_lake_wide(&e) => return Err(e),
                Err(e) => {
                    warn!(day = %p.date(), number = p.number(), error = %plumline_api::error_chain(&e), "day failed; going on with the others");
                    failures.push(e);
                }
            }
        }
        drop(days);
        let by_day = |a: &DayRef, b: &DayRef| (&a.date, &a.number).cmp(&(&b.date, &b.number));
        summary.written_days.sort_by(by_day);
        summary.skipped_days.sort_by(by_day);
        summary.open_days.sort_by(|a, b| (&a.date, &a.number).cmp(&(&b.date, &b.number)));
        summary.elapsed = started.elapsed();
        debug!(
            calls = summary.calls,
            files = summary.files,
            bytes = summary.bytes,
            failed = failures.len(),
            elapsed_ms = u64::try_from(summary.elapsed.as_millis()).unwrap_or(u64::MAX),
            "export finished"
        );
        if failures.is_empty() {
            Ok(summary)
        } else {
            Err(ExportError::DaysFailed { failures, summary: Box::new(summary) })
        }
    }

    /// The partitions this run must write: all but those committed and
    /// closed (unless overwriting); the skipped ones go into `summary`.
    async fn days_to_do<'p>(
        &self,
        plan: &'p ExportPlan,
        summary: &mut ExportSummary,
    ) -> Result<Vec<&'p DayPartition>, ExportError> {
        let mut todo = Vec::new();
        let states: Vec<(&DayPartition, Committed)> = stream::iter(plan.partitions())
            .map(|p| async move {
                if self.options.overwrite {
                    return Ok((p, Committed::No));
                }
                self.lake.committed(p, plan.tz_name()).await.map(|s| (p, s))
            })
            .buffered(16)
            .try_collect()
            .await?;
        for (p, state) in states {
            match state {
                Committed::Yes(s) if s.closed => {
                    debug!(day = %p.date(), number = p.number(), "already committed, skipping");
                    summary.skipped += 1;
                    summary.skipped_days.push(day_ref(p));
                }
                _ => todo.push(p),
            }
        }
        Ok(todo)
    }

    /// A fresh writer for one attempt at a day, staged under its claim.
    async fn open_sink(
        &self,
        p: &DayPartition,
        claim: &Claim,
        properties: &WriterProperties,
        location: &str,
    ) -> Result<ParquetSink, ExportError> {
        let staged = self.lake.stage(p, claim).await?;
        Ok(ParquetSink::spawn(staged, properties.clone(), location.to_owned()))
    }

    /// One day under its claim.
    async fn export_day(
        &self,
        p: &DayPartition,
        plan: &ExportPlan,
        now: i64,
        settle: i64,
        permits: &Arc<Semaphore>,
        observer: &dyn ExportObserver,
    ) -> Result<DayOutcome, ExportError> {
        let on_wait = |holder: &RunId| {
            observer.on_event(&ExportEvent::ClaimWait {
                day: p.date(),
                number: p.number().map(str::to_owned),
                holder: holder.to_string(),
            });
        };
        let claim =
            Claim::acquire(self.lake.destination(), p, &self.run, self.claim_settings(), &on_wait).await?;
        crate::failpoint::hit("claimed");
        let result = self.export_claimed(p, &claim, plan, now, settle, permits, observer).await;
        claim.release().await;
        result
    }

    #[allow(clippy::too_many_arguments, reason = "one day's context, passed down once")]
    async fn export_claimed(
        &self,
        p: &DayPartition,
        claim: &Claim,
        plan: &ExportPlan,
        now: i64,
        settle: i64,
        permits: &Arc<Semaphore>,
        observer: &dyn ExportObserver,
    ) -> Result<DayOutcome, ExportError> {
        // Another run may have committed the day while this one waited.
        if !self.options.overwrite
            && let Committed::Yes(state) = self.lake.committed(p, plan.tz_name()).await?
            && state.closed
        {
            debug!("committed by another run meanwhile; skipping");
            return Ok(DayOutcome::CommittedByOther);
        }
        let query = p.query()?;
        let closed = p.is_closed(now, settle);
        let location = self.lake.file_location(p);
        let properties = writer_properties(&self.options.parquet, file_metadata(p, &query, plan))?;
        let read = self.read_day(p, claim, &query, closed, &properties, &location, permits, observer).await?;
        let (sink, fetched, pages, attempt, requests) =
            (read.sink, read.fetch, read.pages, read.attempts, read.requests);
        let encoded = sink.finish().await?;
        crate::failpoint::hit("staged");
        let (rows, bytes) = (encoded.rows, encoded.bytes);
        if !self.options.allow_shrink
            && let Some(current) = self.current_rows(p).await?
            && rows < current
        {
            encoded.staged.abort().await?;
            return Err(ExportError::WouldShrink {
                day: p.date(),
                number: p.number().map(str::to_owned),
                current,
                new: rows,
            });
        }
        // Still ours for a whole lease: no other run can have taken it over.
        claim.confirm().await?;
        encoded.staged.commit().await?;
        crate::failpoint::hit("committed");
        let state = DayState {
            tool_version: TOOL_VERSION.to_owned(),
            date: p.date().to_string(),
            number: p.number().map(str::to_owned),
            tz: plan.tz_name().to_owned(),
            window_start: p.window_start(),
            window_end: p.window_end(),
            file: crate::lake::data_file(p),
            rows,
            bytes,
            api_total: fetched.total,
            closed,
            committed_at: Timestamp::now().as_second(),
        };
        self.lake.write_state(p, &state).await?;
        crate::failpoint::hit("recorded");
        debug!(rows, bytes, closed, attempts = attempt, "day committed");
        observer.on_event(&ExportEvent::DayCommitted {
            day: p.date(),
            number: p.number().map(str::to_owned),
            rows,
            bytes,
            closed,
        });
        Ok(DayOutcome::Written(Written {
            rows,
            bytes,
            pages,
            requests,
            out_of_window: fetched.out_of_window,
            attempts: attempt,
            closed,
        }))
    }

    /// Rows of the day's current file; an unreadable file counts as none (a
    /// re-export may replace it).
    async fn current_rows(&self, p: &DayPartition) -> Result<Option<u64>, ExportError> {
        match self.lake.current_rows(p).await {
            Err(error @ ExportError::Parquet { .. }) => {
                warn!(error = %plumline_api::error_chain(&error), "the day's current file is unreadable; replacing it");
                Ok(None)
            }
            other => other,
        }
    }

    fn claim_settings(&self) -> ClaimSettings {
        ClaimSettings { lease: self.options.claim_lease, wait: self.options.claim_wait }
    }
}

/// Errors that would fail every day alike: stop the run at once.
fn is_lake_wide(e: &ExportError) -> bool {
    match e {
        ExportError::Api { source, .. } => {
            matches!(
                source,
                ApiError::Unauthorized { .. } | ApiError::InvalidConfig(_) | ApiError::MethodNotAllowed
            )
        }
        ExportError::InvalidPlan(_)
        | ExportError::InvalidDestination(_)
        | ExportError::TimeZoneMismatch { .. }
        | ExportError::Cancelled => true,
        _ => false,
    }
}

fn day_ref(p: &DayPartition) -> DayRef {
    DayRef { date: p.date().to_string(), number: p.number().map(str::to_owned) }
}

fn file_metadata(p: &DayPartition, query: &CallQuery, plan: &ExportPlan) -> Vec<KeyValue> {
    // Every entry has a value: Spark's reader fails on a key without one.
    let mut metadata = vec![
        KeyValue::new("plumline.version".into(), TOOL_VERSION.to_owned()),
        KeyValue::new("plumline.date".into(), p.date().to_string()),
        KeyValue::new("plumline.tz".into(), plan.tz_name().to_owned()),
        // The API window exactly as requested: /calls/{start}/{end}, both inclusive.
        KeyValue::new("plumline.api_start".into(), query.start().to_string()),
        KeyValue::new("plumline.api_end".into(), query.end().to_string()),
    ];
    if let Some(number) = p.number() {
        metadata.push(KeyValue::new("plumline.number".into(), number.to_owned()));
    }
    metadata
}

/// What became of one day.
#[derive(Debug)]
enum DayOutcome {
    Written(Written),
    /// Another run committed it while this one waited for its claim.
    CommittedByOther,
}

#[derive(Debug)]
struct Written {
    rows: u64,
    bytes: u64,
    pages: u64,
    requests: u64,
    out_of_window: u64,
    attempts: u32,
    closed: bool,
}

#[cfg(test)]
mod tests {
    use plumline_api::{ApiError, Call, CallType};
    use plumline_sim::memory::MemorySource;

    use super::*;

    use super::testing::{DAY, export, lake_batches};

    fn calls(days: i64, per_day: i64) -> Vec<Call> {
        let mut out = Vec::new();
        for d in 0..days {
            for i in 0..per_day {
                let start = d * DAY + i * (DAY / per_day);
                out.push(Call {
                    dest: "8005550000".into(),
                    src: format!("617555{i:04}"),
                    start,
                    end: start + i % 300,
                    session_id: format!("{d};{i:06}"),
                    call_type: if i % 3 == 0 { CallType::Outbound } else { CallType::Inbound },
                    log: i % 2 == 0,
                });
            }
        }
        out
    }

    fn options() -> ExportOptions {
        ExportOptions {
            concurrency: NonZeroUsize::new(3).expect("nonzero"),
            page_size: PageSize::new(100).expect("page size"),
            now: Some(1_000 * DAY),
            ..ExportOptions::default()
        }
    }

    /// Every session id in the lake, file by file in order.
    fn lake_ids(dir: &std::path::Path) -> Vec<String> {
        use arrow_array::cast::AsArray;
        let mut ids = Vec::new();
        for (_, batches) in lake_batches(dir) {
            for batch in batches {
                let col = batch.column_by_name("session_id").expect("session_id");
                ids.extend(col.as_string::<i32>().iter().map(|s| s.expect("non-null").to_owned()));
            }
        }
        ids
    }

    fn ids(calls: &[Call]) -> Vec<String> {
        calls.iter().map(|c| c.session_id.clone()).collect()
    }

    fn leftovers(dir: &std::path::Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
                if e.path().is_dir() {
                    stack.push(e.path());
                } else if e.file_name().to_string_lossy().ends_with(".tmp") {
                    out.push(e.path().display().to_string());
                }
            }
        }
        out
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pages_land_once_in_order_within_the_bound() {
        let dir = tempfile::tempdir().expect("tempdir");
        let source = Arc::new(MemorySource::new(calls(3, 450)).with_delay(Duration::from_millis(2)));
        let summary = export(&source, dir.path(), options(), 3).await.expect("export");
        assert_eq!(lake_ids(dir.path()), ids(&source.truth()));
        assert_eq!((summary.written, summary.calls, summary.files, summary.refetches), (3, 1350, 3, 0));
        // Five pages a day, and a second read of each day in one answer at
        // the API's largest page (the day's request budget has room for it).
        assert_eq!(summary.pages, 3 * (5 + 1));
        assert!(source.max_in_flight() <= 3, "{}", source.max_in_flight());
        assert!(leftovers(dir.path()).is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn few_slots_and_many_days_never_deadlock() {
        // Pages done but not yet written hold their slot; with one or two
        // slots shared by eight days, taking slots out of order would hang.
        for concurrency in [1, 2] {
            let dir = tempfile::tempdir().expect("tempdir");
            let source = Arc::new(MemorySource::new(calls(8, 730)).with_delay(Duration::from_micros(300)));
            let options = ExportOptions {
                concurrency: NonZeroUsize::new(concurrency).expect("nonzero"),
                days_in_flight: NonZeroUsize::new(8),
                ..options()
            };
            let run = export(&source, dir.path(), options, 8);
            let summary =
                tokio::time::timeout(Duration::from_secs(60), run).await.expect("no deadlock").expect("ok");
            assert_eq!(summary.calls, 8 * 730);
            assert_eq!(source.max_in_flight(), concurrency);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn repeated_calls_are_kept_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let source = Arc::new(MemorySource::new(calls(2, 250)).with_page_overlap());
        let summary = export(&source, dir.path(), options(), 2).await.expect("export");
        assert_eq!(lake_ids(dir.path()), ids(&source.truth()));
        assert_eq!(summary.refetches, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_server_that_caps_the_page_size_is_followed_without_gaps() {
        let dir = tempfile::tempdir().expect("tempdir");
        let source = Arc::new(MemorySource::new(calls(2, 950)).with_page_cap(70));
        let summary = export(&source, dir.path(), options(), 2).await.expect("export");
        assert_eq!(lake_ids(dir.path()), ids(&source.truth()));
        assert_eq!((summary.refetches, summary.pages), (0, 2 * 950_u64.div_ceil(70)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_moving_total_refetches_the_day() {
        let dir = tempfile::tempdir().expect("tempdir");
        // The first two requests report 7 calls too many.
        let source = Arc::new(MemorySource::new(calls(1, 450)).with_skewed_total(2, 7));
        let summary = export(&source, dir.path(), options(), 1).await.expect("export");
        assert_eq!(lake_ids(dir.path()), ids(&source.truth()));
        assert!(summary.refetches >= 1, "{summary:?}");
        assert!(leftovers(dir.path()).is_empty(), "{:?}", leftovers(dir.path()));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_day_that_never_adds_up_fails_when_closed_and_stays_open_otherwise() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Every request reports one call too many.
        let source = Arc::new(MemorySource::new(calls(1, 150)).with_skewed_total(u64::MAX, 1));
        let err = export(&source, dir.path(), options(), 1).await.expect_err("inconsistent");
        let ExportError::DaysFailed { failures, .. } = &err else { panic!("{err}") };
        assert!(
            matches!(
                failures[..],
                [ExportError::Inconsistent { expected: 151, received: 150, attempts: 4, .. }]
            ),
            "{err}"
        );
        assert!(lake_ids(dir.path()).is_empty());
        assert!(leftovers(dir.path()).is_empty());
        // The same day inside the settle margin is written, but not recorded complete.
        let open = ExportOptions { now: Some(DAY + 60), ..options() };
        let summary = export(&source, dir.path(), open.clone(), 1).await.expect("open day");
        assert_eq!((summary.written, summary.open, summary.calls), (1, 1, 150));
        let again = export(&source, dir.path(), open, 1).await.expect("open day again");
        assert_eq!(again.written, 1, "an open day is refreshed by the next run");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn committed_days_are_skipped_unless_overwritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let source = Arc::new(MemorySource::new(calls(2, 120)));
        export(&source, dir.path(), options(), 2).await.expect("first");
        let before = source.requests();
        let second = export(&source, dir.path(), options(), 2).await.expect("second");
        assert_eq!((second.skipped, second.written), (2, 0));
        assert_eq!(source.requests(), before, "no request for committed days");
        let third = export(&source, dir.path(), ExportOptions { overwrite: true, ..options() }, 2)
            .await
            .expect("3rd");
        assert_eq!(third.written, 2);
        assert_eq!(lake_ids(dir.path()), ids(&source.truth()));
        // A committed file that vanished is exported again.
        let victim = dir.path().join("date=1970-01-02").join("calls-all.parquet");
        std::fs::remove_file(&victim).expect("remove");
        let fourth = export(&source, dir.path(), options(), 2).await.expect("4th");
        assert_eq!((fourth.skipped, fourth.written), (1, 1));
        assert!(victim.exists());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_page_names_its_day_and_offset_and_leaves_no_temp() {
        let dir = tempfile::tempdir().expect("tempdir");
        // The request at offset 200 is refused for good.
        let source = Arc::new(MemorySource::new(calls(1, 450)).with_failure(|request| {
            (request.offset() == 200).then_some(ApiError::Unauthorized { status: 401, message: None })
        }));
        let err = export(&source, dir.path(), options(), 1).await.expect_err("fails");
        match &err {
            ExportError::Api { day, offset, .. } => {
                assert_eq!((day.to_string().as_str(), *offset), ("1970-01-01", 200));
            }
            other => panic!("unexpected {other}"),
        }
        assert!(lake_ids(dir.path()).is_empty());
        assert!(leftovers(dir.path()).is_empty(), "{:?}", leftovers(dir.path()));
    }
}
