//! One attempt at one day: every page of a [`DayPartition`] through the
//! page source, deduplicated, into the day's [`ParquetSink`].

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arrow_array::RecordBatch;
use futures::{StreamExt as _, stream};
use parquet::file::properties::WriterProperties;
use plumline_api::{CallQuery, PageRequest, PageSource};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::Exporter;
use crate::batch::{SessionHasher, calls_to_batch, filter_rows};
use crate::error::ExportError;
use crate::lake::Claim;
use crate::plan::DayPartition;
use crate::progress::{ExportEvent, ExportObserver};
use crate::sink::ParquetSink;

/// A day read to the end: its sink holds every row, ready to finish.
pub(super) struct DayRead {
    pub(super) sink: ParquetSink,
    /// The last (consistent, or open and accepted) attempt.
    pub(super) fetch: DayFetch,
    /// Pages fetched over all attempts.
    pub(super) pages: u64,
    /// Attempts made.
    pub(super) attempts: u32,
}

impl<S: PageSource + 'static> Exporter<S> {
    /// Reads a day until its answers are consistent (or, for an open day,
    /// until attempts run out), each attempt into a fresh sink.
    #[allow(clippy::too_many_arguments, reason = "one day's context, passed down once")]
    pub(super) async fn read_day(
        &self,
        p: &DayPartition,
        claim: &Claim,
        query: &CallQuery,
        closed: bool,
        properties: &WriterProperties,
        location: &str,
        permits: &Arc<Semaphore>,
        observer: &dyn ExportObserver,
    ) -> Result<DayRead, ExportError> {
        let day = Arc::new(p.clone());
        let mut pages = 0;
        let mut attempt = 1;
        let read = loop {
            let mut sink = self.open_sink(p, claim, properties, location).await?;
            let fetched = match self.fetch_day(&day, query, &mut sink, permits, observer).await {
                Ok(fetched) => fetched,
                Err(e) => {
                    sink.abort().await;
                    return Err(e);
                }
            };
            pages += fetched.pages;
            match &fetched.problem {
                None => break DayRead { sink, fetch: fetched, pages, attempts: attempt },
                Some(reason) if attempt < self.options.max_day_attempts => {
                    attempt += 1;
                    warn!(attempt, reason = %reason, "day does not add up, fetching it again");
                    observer.on_event(&ExportEvent::DayRefetch {
                        day: p.date(),
                        number: p.number().map(str::to_owned),
                        attempt,
                        reason: reason.clone(),
                    });
                    sink.abort().await;
                    tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
                }
                // An open day may legitimately move; keep what we have, and the
                // next run refreshes it.
                Some(reason) if !closed => {
                    warn!(reason = %reason, "open day does not add up; writing it unfinished");
                    break DayRead { sink, fetch: fetched, pages, attempts: attempt };
                }
                Some(_) => {
                    sink.abort().await;
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
        Ok(read)
    }

    /// One attempt at a day: every page, in offset order, into `sink`.
    pub(super) async fn fetch_day(
        &self,
        day: &Arc<DayPartition>,
        query: &CallQuery,
        sink: &mut ParquetSink,
        permits: &Arc<Semaphore>,
        observer: &dyn ExportObserver,
    ) -> Result<DayFetch, ExportError> {
        let limit = self.options.page_size;
        let hasher = SessionHasher::default();
        let page_request = |limit: u32, offset: u64| {
            query.page(limit, offset).map_err(|e| ExportError::InvalidPlan(e.to_string()))
        };
        // Slots are taken in offset order, before the page's task exists: a
        // day's next page to write always holds a slot (or is done), so pages
        // waiting to be written can never starve it of one (no deadlock).
        let acquire = || async {
            Arc::clone(permits)
                .acquire_owned()
                .await
                .map_err(|_| ExportError::Worker("the request limiter was closed".into()))
        };
        let spawn = |request: PageRequest, permit: OwnedSemaphorePermit| {
            spawn_page(Arc::clone(&self.source), request, Arc::clone(day), hasher.clone(), permit)
        };
        let first = spawn(page_request(limit, 0)?, acquire().await?).await?;
        let total = first.total;
        // Some servers cap the page size below what was asked; a short first
        // page of a larger total gives the stride they really use, so the
        // rest of the day is requested without gaps.
        let first_rows = u32::try_from(first.batch.num_rows()).unwrap_or(u32::MAX);
        let limit = if first_rows > 0 && first_rows < limit && u64::from(first_rows) < total {
            debug!(asked = limit, got = first_rows, "server caps the page size; following its stride");
            first_rows
        } else {
            limit
        };
        observer.on_event(&ExportEvent::DayStarted {
            day: day.date(),
            number: day.number().map(str::to_owned),
            total_calls: total,
        });
        let mut seen: HashSet<u128> =
            HashSet::with_capacity(usize::try_from(total.min(1 << 20)).unwrap_or(0));
        let mut fetch = DayFetch { rows: 0, total, pages: 1, requests: 1, out_of_window: 0, problem: None };
        fetch.rows += consume_page(first, &mut seen, sink, day, observer).await?;
        let n_pages = total.div_ceil(u64::from(limit));
        let lookahead = self.options.concurrency.get();
        let mut rest = std::pin::pin!(
            stream::iter(1..n_pages)
                .then(|k| async move {
                    let request = page_request(limit, k * u64::from(limit))?;
                    Ok::<_, ExportError>(spawn(request, acquire().await?))
                })
                .map(|spawned| async move { spawned?.await })
                .buffered(lookahead)
        );
        let mut problem = None;
        while let Some(page) = rest.next().await {
            let page = page?;
            if page.total != total {
                problem = Some(format!("total_calls moved from {total} to {} while paging", page.total));
                break;
            }
            fetch.rows += consume_page(page, &mut seen, sink, day, observer).await?;
            fetch.pages += 1;
            fetch.requests += 1;
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

#[derive(Debug)]
pub(super) struct DayFetch {
    pub(super) rows: u64,
    pub(super) total: u64,
    pub(super) pages: u64,
    /// Requests made in this attempt.
    pub(super) requests: u64,
    /// Calls listed outside the day's window (not written).
    pub(super) out_of_window: u64,
    pub(super) problem: Option<String>,
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
    permit: OwnedSemaphorePermit,
) -> AbortOnDrop<Result<FetchedPage, ExportError>> {
    AbortOnDrop(tokio::spawn(async move {
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
