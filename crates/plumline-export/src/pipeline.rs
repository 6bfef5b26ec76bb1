//! [`Exporter`]: pages every day of an [`ExportPlan`] through a
//! [`PageSource`] into one committed Parquet file per day and number.

use std::collections::{BTreeSet, HashSet};
use std::future::Future;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use futures::{StreamExt as _, TryStreamExt as _, stream};
use jiff::Timestamp;
use parquet::file::metadata::KeyValue;
use plumline_api::{CallQuery, PageRequest, PageSource, validate_limit};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tracing::{Instrument as _, debug, info_span, warn};

use crate::batch::{SessionHasher, calls_to_batch, filter_rows};
use crate::error::ExportError;
use crate::lake::{DayState, Destination, number_slug};
use crate::plan::{DayPartition, ExportPlan};
use crate::progress::{ExportEvent, ExportObserver, ExportSummary};
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
    /// Calls per page (1..=10000).
    pub page_size: u32,
    /// Days (day partitions) worked on at once; `None` picks
    /// `concurrency / 2` clamped to 2..=8. More days overlap their first
    /// pages (which must arrive before the rest of a day can be requested);
    /// each costs one writer's row group of memory.
    pub days_in_flight: Option<NonZeroUsize>,
    /// Export days again even when an earlier run committed them.
    pub overwrite: bool,
    /// A day whose window ends less than this before now is written but not
    /// recorded complete, so the next run refreshes it (the API lists a call
    /// once it has ended, under its start).
    pub settle: Duration,
    /// Times a day is fetched before an inconsistent answer is an error.
    pub max_day_attempts: u32,
    /// The Parquet files' settings.
    pub parquet: ParquetOptions,
    /// The current time for the settle margin (UNIX seconds); `None` reads
    /// the clock. For tests.
    pub now: Option<i64>,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            concurrency: NonZeroUsize::new(8).unwrap_or(NonZeroUsize::MIN),
            page_size: plumline_api::DEFAULT_LIMIT,
            days_in_flight: None,
            overwrite: false,
            settle: Duration::from_secs(3600),
            max_day_attempts: 4,
            parquet: ParquetOptions::default(),
            now: None,
        }
    }
}

impl ExportOptions {
    fn days_in_flight(&self) -> usize {
        self.days_in_flight.map_or_else(|| (self.concurrency.get() / 2).clamp(2, 8), NonZeroUsize::get)
    }
}

/// Exports an [`ExportPlan`] from a [`PageSource`] into a [`Destination`].
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
/// one encoded row group, and a 16-byte fingerprint per distinct call of
/// that day (for dedupe). For an object store, add each in-flight day's
/// finished file (see [`ParquetSink`]).
#[derive(Debug)]
pub struct Exporter<S> {
    source: Arc<S>,
    destination: Destination,
    options: ExportOptions,
}

impl<S: PageSource + 'static> Exporter<S> {
    /// An exporter reading from `source` and writing to `destination`.
    ///
    /// # Errors
    /// [`ExportError::InvalidPlan`] for a page size outside 1..=10000 or a
    /// day attempt count of 0.
    pub fn new(source: Arc<S>, destination: Destination, options: ExportOptions) -> Result<Self, ExportError> {
        validate_limit(options.page_size).map_err(|e| ExportError::InvalidPlan(e.to_string()))?;
        if options.max_day_attempts == 0 {
            return Err(ExportError::InvalidPlan("max_day_attempts must be at least 1".into()));
        }
        writer_properties(&options.parquet, Vec::new())?;
        Ok(Exporter { source, destination, options })
    }

    /// The destination written to.
    #[must_use]
    pub fn destination(&self) -> &Destination {
        &self.destination
    }

    /// Runs the plan to the end, or to the first error.
    ///
    /// Days an earlier run committed (and that were closed then) are
    /// skipped unless [`ExportOptions::overwrite`] is set.
    ///
    /// # Errors
    /// The first failure; days committed before it stay committed, so a
    /// rerun resumes.
    ///
    /// # Cancel safety
    /// Dropping the future stops the export: in-flight requests are
    /// abandoned and uncommitted local temp files deleted. Committed days
    /// stay committed and recorded, so the lake is always consistent and a
    /// rerun resumes. An object-store upload interrupted mid-way may leave an
    /// incomplete multipart upload (invisible to readers; a bucket lifecycle
    /// rule removes it).
    pub async fn run(&self, plan: &ExportPlan, observer: &dyn ExportObserver) -> Result<ExportSummary, ExportError> {
        let started = Instant::now();
        let now = self.options.now.unwrap_or_else(|| Timestamp::now().as_second());
        let settle = i64::try_from(self.options.settle.as_secs()).unwrap_or(i64::MAX);
        let slugs: BTreeSet<String> = plan.partitions().iter().map(|p| number_slug(p.number())).collect();
        self.destination.prepare(slugs.into_iter().collect()).await?;

        let mut summary =
            ExportSummary { partitions: plan.partitions().len(), days: plan.n_days(), ..ExportSummary::default() };
        let mut todo = Vec::new();
        let states: Vec<(&DayPartition, Option<DayState>)> = stream::iter(plan.partitions())
            .map(|p| async move {
                if self.options.overwrite {
                    return Ok((p, None));
                }
                self.destination.committed(p).await.map(|s| (p, s))
            })
            .buffered(16)
            .try_collect()
            .await?;
        for (p, state) in states {
            match state {
                Some(s) if s.closed && state_matches(&s, p, plan) => {
                    debug!(day = %p.date(), number = p.number(), "already committed, skipping");
                    summary.skipped += 1;
                }
                _ => todo.push(p),
            }
        }
        observer.on_event(&ExportEvent::Planned { partitions: summary.partitions, skipped: summary.skipped });
        debug!(
            destination = %self.destination.display(),
            partitions = summary.partitions,
            skipped = summary.skipped,
            concurrency = self.options.concurrency.get(),
            "export planned"
        );

        let permits = Arc::new(Semaphore::new(self.options.concurrency.get()));
        let mut days = stream::iter(todo)
            .map(|p| {
                let span = info_span!("export_day", day = %p.date(), number = p.number());
                self.export_day(p, plan, now, settle, &permits, observer).instrument(span)
            })
            .buffer_unordered(self.options.days_in_flight());
        while let Some(outcome) = days.next().await {
            let outcome = outcome?;
            summary.written += 1;
            summary.open += usize::from(!outcome.closed);
            summary.calls += outcome.rows;
            summary.files += 1;
            summary.bytes += outcome.bytes;
            summary.pages += outcome.pages;
            summary.refetches += u64::from(outcome.attempts - 1);
        }
        summary.elapsed = started.elapsed();
        debug!(
            calls = summary.calls,
            files = summary.files,
            bytes = summary.bytes,
            elapsed_ms = u64::try_from(summary.elapsed.as_millis()).unwrap_or(u64::MAX),
            "export finished"
        );
        Ok(summary)
    }

    async fn export_day(
        &self,
        p: &DayPartition,
        plan: &ExportPlan,
        now: i64,
        settle: i64,
        permits: &Arc<Semaphore>,
        observer: &dyn ExportObserver,
    ) -> Result<DayOutcome, ExportError> {
        let query = p.query()?;
        let closed = p.is_closed(now, settle);
        let location = self.destination.file_location(p);
        let properties = writer_properties(&self.options.parquet, file_metadata(p, &query, plan))?;
        let day = Arc::new(p.clone());
        let mut pages = 0;
        let mut attempt = 1;
        let (sink, fetched) = loop {
            let mut sink =
                ParquetSink::spawn(self.destination.open(p).await?, properties.clone(), location.clone());
            let fetched = self.fetch_day(&day, &query, &mut sink, permits, observer).await?;
            pages += fetched.pages;
            match &fetched.problem {
                None => break (sink, fetched),
                Some(reason) if attempt < self.options.max_day_attempts => {
                    attempt += 1;
                    warn!(attempt, reason = %reason, "day does not add up, fetching it again");
                    observer.on_event(&ExportEvent::DayRefetch {
                        day: p.date(),
                        number: p.number().map(str::to_owned),
                        attempt,
                        reason: reason.clone(),
                    });
                    drop(sink);
                    tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
                }
                // An open day may legitimately move; keep what we have, and the
                // next run refreshes it.
                Some(reason) if !closed => {
                    warn!(reason = %reason, "open day does not add up; writing it unfinished");
                    break (sink, fetched);
                }
                Some(_) => {
                    return Err(ExportError::Inconsistent {
                        day: p.date(),
                        number: p.number().map(str::to_owned),
                        expected: fetched.total,
                        received: fetched.rows,
                        attempts: attempt,
                    });
                }
            }
        };
        let encoded = sink.finish().await?;
        let (rows, bytes) = (encoded.rows, encoded.bytes);
        let file = self.destination.commit(p, encoded).await?;
        let state = DayState {
            tool_version: TOOL_VERSION.to_owned(),
            date: p.date().to_string(),
            number: p.number().map(str::to_owned),
            tz: plan.tz_name().to_owned(),
            window_start: p.window_start(),
            window_end: p.window_end(),
            file,
            rows,
            bytes,
            api_total: fetched.total,
            closed,
            committed_at: Timestamp::now().as_second(),
        };
        self.destination.write_state(p, &state).await?;
        debug!(rows, bytes, closed, attempts = attempt, "day committed");
        observer.on_event(&ExportEvent::DayCommitted {
            day: p.date(),
            number: p.number().map(str::to_owned),
            rows,
            bytes,
            closed,
        });
        Ok(DayOutcome { rows, bytes, pages, attempts: attempt, closed })
    }

    /// One attempt at a day: every page, in offset order, into `sink`.
    async fn fetch_day(
        &self,
        day: &Arc<DayPartition>,
        query: &CallQuery,
        sink: &mut ParquetSink,
        permits: &Arc<Semaphore>,
        observer: &dyn ExportObserver,
    ) -> Result<DayFetch, ExportError> {
        let limit = self.options.page_size;
        let hasher = SessionHasher::default();
        let page_request = |offset: u64| {
            query.page(limit, offset).map_err(|e| ExportError::InvalidPlan(e.to_string()))
        };
        let spawn = |request: PageRequest| {
            spawn_page(Arc::clone(&self.source), request, Arc::clone(day), hasher.clone(), Arc::clone(permits))
        };
        let first = spawn(page_request(0)?).await?;
        let total = first.total;
        observer.on_event(&ExportEvent::DayStarted {
            day: day.date(),
            number: day.number().map(str::to_owned),
            total_calls: total,
        });
        let mut seen: HashSet<u128> = HashSet::with_capacity(usize::try_from(total.min(1 << 20)).unwrap_or(0));
        let mut fetch = DayFetch { rows: 0, total, pages: 1, problem: None };
        fetch.rows += consume_page(first, &mut seen, sink, day, observer).await?;
        let n_pages = total.div_ceil(u64::from(limit));
        let lookahead = self.options.concurrency.get();
        let mut rest = stream::iter(1..n_pages)
            .map(|k| page_request(k * u64::from(limit)).map(spawn))
            .map(|r| async move { r?.await })
            .buffered(lookahead);
        let mut problem = None;
        while let Some(page) = rest.next().await {
            let page = page?;
            if page.total != total {
                problem = Some(format!("total_calls moved from {total} to {} while paging", page.total));
                break;
            }
            fetch.rows += consume_page(page, &mut seen, sink, day, observer).await?;
            fetch.pages += 1;
        }
        if problem.is_none() && fetch.rows != total {
            problem = Some(format!("{} distinct calls arrived but total_calls is {total}", fetch.rows));
        }
        fetch.problem = problem;
        Ok(fetch)
    }
}

/// Dedupes a page against the day's calls so far and hands it to the
/// writer; returns the rows written.
async fn consume_page(
    page: FetchedPage,
    seen: &mut HashSet<u128>,
    sink: &mut ParquetSink,
    day: &DayPartition,
    observer: &dyn ExportObserver,
) -> Result<u64, ExportError> {
    let FetchedPage { batch, fingerprints, permit, .. } = page;
    let keep: Vec<bool> = fingerprints.iter().map(|fp| seen.insert(*fp)).collect();
    let batch = if keep.iter().all(|k| *k) {
        batch
    } else {
        debug!(duplicates = keep.iter().filter(|k| !**k).count(), "dropping repeated calls");
        filter_rows(&batch, &keep).map_err(|source| ExportError::Arrow { day: day.date(), source })?
    };
    let n = batch.num_rows() as u64;
    if n > 0 {
        sink.write(batch).await?;
    }
    // The page leaves our hands only now: its slot frees for another request.
    drop(permit);
    observer.on_event(&ExportEvent::PageWritten { day: day.date(), calls: n });
    Ok(n)
}

fn state_matches(s: &DayState, p: &DayPartition, plan: &ExportPlan) -> bool {
    s.window_start == p.window_start()
        && s.window_end == p.window_end()
        && s.tz == plan.tz_name()
        && s.number.as_deref() == p.number()
}

fn file_metadata(p: &DayPartition, query: &CallQuery, plan: &ExportPlan) -> Vec<KeyValue> {
    vec![
        KeyValue::new("plumline.version".into(), TOOL_VERSION.to_owned()),
        KeyValue::new("plumline.date".into(), p.date().to_string()),
        KeyValue::new("plumline.tz".into(), plan.tz_name().to_owned()),
        KeyValue { key: "plumline.number".into(), value: p.number().map(str::to_owned) },
        // The API window exactly as requested: /calls/{start}/{end}, both inclusive.
        KeyValue::new("plumline.api_start".into(), query.start().to_string()),
        KeyValue::new("plumline.api_end".into(), query.end().to_string()),
    ]
}

#[derive(Debug)]
struct DayOutcome {
    rows: u64,
    bytes: u64,
    pages: u64,
    attempts: u32,
    closed: bool,
}

#[derive(Debug)]
struct DayFetch {
    rows: u64,
    total: u64,
    pages: u64,
    problem: Option<String>,
}

/// A fetched page, converted, holding its concurrency slot.
#[derive(Debug)]
struct FetchedPage {
    batch: RecordBatch,
    fingerprints: Vec<u128>,
    total: u64,
    permit: OwnedSemaphorePermit,
}

/// Fetches and converts one page on its own task, so decoding runs on any
/// worker in parallel with other pages.
fn spawn_page<S: PageSource + 'static>(
    source: Arc<S>,
    request: PageRequest,
    day: Arc<DayPartition>,
    hasher: SessionHasher,
    permits: Arc<Semaphore>,
) -> AbortOnDrop<Result<FetchedPage, ExportError>> {
    AbortOnDrop(tokio::spawn(async move {
        let permit = permits
            .acquire_owned()
            .await
            .map_err(|_| ExportError::Worker("the request limiter was closed".into()))?;
        let page = source.fetch_page(&request).await.map_err(|source| ExportError::Api {
            day: day.date(),
            number: day.number().map(str::to_owned),
            offset: request.offset(),
            source,
        })?;
        let batch = calls_to_batch(&page.calls, day.number())
            .map_err(|source| ExportError::Arrow { day: day.date(), source })?;
        let fingerprints = page.calls.iter().map(|c| hasher.fingerprint(&c.session_id)).collect();
        Ok(FetchedPage { batch, fingerprints, total: page.total_calls, permit })
    }))
}

/// A task handle that aborts the task when dropped, so abandoning a day
/// (refetch, error, cancellation) stops its requests.
#[derive(Debug)]
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> Future for AbortOnDrop<Result<T, ExportError>> {
    type Output = Result<T, ExportError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(|joined| joined.unwrap_or_else(|e| Err(ExportError::worker(&e))))
    }
}
