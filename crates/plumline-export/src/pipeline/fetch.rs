//! One day's read: [`Pipeline::read_day`] tries a day until one attempt is
//! a consistent listing; [`Pipeline::fetch_day`] is one attempt, every page
//! of a [`DayPartition`] through the page source, checked page boundary by
//! page boundary, deduplicated, cut to the day's window, into the day's
//! [`ParquetSink`].
//!
//! ## The read
//! Pages ask for one call more than the page size and step by the page
//! size (by one less at the API's largest `limit`), so each answer's last
//! call is the next one's first ([`Paging`]). Every position two answers share
//! must hold the same call ([`check_boundary`]): a difference
//! among calls sharing a start is a tie the server orders differently per
//! request, settled by reading that start's whole group in one answer
//! (window `[t, t]`); any other difference means the listing moved under
//! the read, and the attempt is not consistent. The read stops at the first
//! short page, not at `total_calls` (which may lag); every answer's
//! `total_calls` must be the first's, and the distinct calls listed (in the
//! window or not) must equal it. On a closed day read in several pages
//! whose request budget (2% + 1 over the minimum) has room for it, a
//! second read of the whole day at the API's largest page follows, and
//! both reads must list the same calls with the same content (a wrapping
//! sum of content fingerprints); otherwise, on a closed day of 50 pages or
//! more (and on every later attempt), a closing read asks for the first
//! page again and checks it did not change. `reread` makes the second read
//! on every closed day, whatever it costs.
//! ARCHITECTURE.md ("Consistency") says what this catches and what not.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use arrow_array::RecordBatch;
use futures::{StreamExt as _, stream};
use parquet::file::properties::WriterProperties;
use plumline_api::{CallQuery, MAX_LIMIT, PageRequest, PageSource};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::Pipeline;
use super::consistency::{Boundary, Listed, Paging, check_boundary, straddling_tie};
use super::dedupe::Seen;
use crate::batch::{SessionHasher, calls_to_batch, filter_rows};
use crate::error::ExportError;
use crate::lake::Claim;
use crate::plan::DayPartition;
use crate::progress::{ExportEvent, ExportObserver, NoProgress};
use crate::sink::ParquetSink;

/// A day read to the end: its sink holds every row, ready to finish.
pub(super) struct DayRead {
    pub(super) sink: ParquetSink,
    /// The last (consistent, or open and accepted) attempt.
    pub(super) fetch: DayFetch,
    /// Pages of the listing fetched over all attempts.
    pub(super) pages: u64,
    /// Requests made over all attempts (pages, tie reads, pages past the end).
    pub(super) requests: u64,
    /// Attempts made.
    pub(super) attempts: u32,
}

/// One attempt at a day.
#[derive(Debug)]
pub(super) struct DayFetch {
    /// The `total_calls` of the attempt's first answer.
    pub(super) total: u64,
    /// Pages of the day's listing fetched.
    pub(super) pages: u64,
    /// Every request made for the day in this attempt, including tie reads
    /// and the page that proves the listing ended.
    pub(super) requests: u64,
    /// Distinct calls the server listed outside the day's window (left to
    /// their own day).
    pub(super) out_of_window: u64,
    /// Distinct calls listed, in the window or not: what `total_calls` counts.
    pub(super) listed: u64,
    /// Why the attempt is not a consistent listing, if it is not.
    pub(super) problem: Option<String>,
    /// The page size of a second read of the whole day that fits the
    /// day's request budget (the API's largest), when one does.
    pub(super) second_read: Option<u32>,
    /// The wrapping sum of [`SessionHasher::content`] over the distinct
    /// calls listed, when the attempt computes it (a day read twice).
    pub(super) digest: u128,
}

/// Where an attempt's rows go: the day's sink, or nowhere for a read that
/// only confirms an earlier one.
pub(super) struct Rows<'a>(Option<&'a mut ParquetSink>);

impl Rows<'_> {
    async fn write(&mut self, batch: RecordBatch) -> Result<(), ExportError> {
        match &mut self.0 {
            Some(sink) => sink.write(batch).await,
            None => Ok(()),
        }
    }
}

/// What one attempt needs to make its requests.
struct DayCx<'a> {
    day: &'a Arc<DayPartition>,
    query: &'a CallQuery,
    permits: &'a Arc<Semaphore>,
    observer: &'a dyn ExportObserver,
    hasher: SessionHasher,
    /// The page size asked for.
    asked: u32,
    /// Whether the day is closed (an open one is written as listed).
    closed: bool,
    /// A later attempt: an earlier one did not add up, so the source moves.
    /// Read every tie that straddles a boundary, even when both answers
    /// agree there (a reordered tie can hide a call from both answers while
    /// their shared call agrees), and always make the closing read.
    again: bool,
    /// A second read of the whole day follows this one (or this is it), to
    /// be compared with it: no closing read, nor a second read planned
    /// here.
    reread: bool,
    /// Fingerprint every call's content, for the comparison of two reads.
    /// On from the start for a closed day; after the first answer, kept on
    /// only when a second read follows.
    digest: AtomicBool,
    requests: AtomicU64,
}

impl DayCx<'_> {
    fn page_request(&self, limit: u32, offset: u64) -> Result<PageRequest, ExportError> {
        self.query.page(limit, offset).map_err(ExportError::query)
    }

    /// A request slot. Slots are taken in offset order, before the page's
    /// task exists: a day's next page to write always holds a slot (or is
    /// done), so pages waiting to be written can never starve it of one
    /// (no deadlock).
    async fn acquire(&self) -> Result<OwnedSemaphorePermit, ExportError> {
        Arc::clone(self.permits)
            .acquire_owned()
            .await
            // The limiter is never closed while the run lives; closed, the run is over.
            .map_err(|_| ExportError::Cancelled)
    }
}

/// What the read does after a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    /// The page was full: the listing may go on.
    More,
    /// A short page ended the listing, or the attempt has a problem.
    Done,
}

/// The running account of one attempt.
struct Ledger {
    /// The day's window, `[start, end)`.
    window: (i64, i64),
    total: u64,
    paging: Paging,
    /// The calls listed so far (in the window or not), in bounded memory.
    seen: Seen,
    out_of_window: u64,
    pages: u64,
    /// The last page taken, to check the next one against.
    prev: Listed,
    problem: Option<String>,
    /// See [`DayFetch::digest`].
    digest: u128,
}

impl<S: PageSource + 'static> Pipeline<S> {
    /// Reads a day until one attempt is a consistent listing, each attempt
    /// into a fresh sink.
    ///
    /// A closed day is read again (up to `max_day_attempts` times) while its
    /// answers do not add up, then fails with [`ExportError::Inconsistent`]
    /// naming it. An open day is written as it was listed, consistent or
    /// not: it is still moving, and the next run refreshes it.
    ///
    /// With [`ExportOptions::reread`](super::ExportOptions::reread), a
    /// closed day's consistent attempt is confirmed by a second read that
    /// writes nothing: the two must list the same calls with the same
    /// content, else the attempt counts as inconsistent.
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
        let reread = closed && self.options.reread;
        // The same keys for every read of the day, so their digests compare.
        let hasher = SessionHasher::default();
        let (mut pages, mut requests) = (0, 0);
        let mut attempt = 1;
        let mut again = false;
        loop {
            // The first read (`None`), or a second one at a page size.
            let cx = |second: Option<u32>| DayCx {
                day: &day,
                query,
                permits,
                observer: if second.is_some() { &NoProgress } else { observer },
                hasher: hasher.clone(),
                asked: second.unwrap_or(self.options.page_size.get()),
                closed,
                again,
                reread: reread || second.is_some(),
                digest: AtomicBool::new(closed),
                requests: AtomicU64::new(0),
            };
            let mut sink = self.open_sink(p, claim, properties, location).await?;
            let fetched = match self.fetch_day(&cx(None), &mut Rows(Some(&mut sink))).await {
                Ok(fetched) => fetched,
                Err(e) => {
                    sink.abort().await;
                    return Err(e);
                }
            };
            pages += fetched.pages;
            requests += fetched.requests;
            let mut problem = fetched.problem.clone();
            // Asked for, or free within the day's request budget.
            let second_read = if reread { Some(self.options.page_size.get()) } else { fetched.second_read };
            if let Some(size) = second_read.filter(|_| closed && problem.is_none()) {
                let second = match self.fetch_day(&cx(Some(size)), &mut Rows(None)).await {
                    Ok(second) => second,
                    Err(e) => {
                        sink.abort().await;
                        return Err(e);
                    }
                };
                pages += second.pages;
                requests += second.requests;
                problem = second.problem.map(|p| format!("on the second read: {p}")).or_else(|| {
                    (second.digest != fetched.digest).then(|| {
                        format!(
                            "a second read of the day listed other calls ({} distinct, {} the first time) or changed one",
                            second.listed, fetched.listed
                        )
                    })
                });
                if problem.is_none() {
                    debug!(calls = fetched.listed, "a second read listed the same calls");
                }
            }
            let Some(reason) = problem else {
                return Ok(DayRead { sink, fetch: fetched, pages, requests, attempts: attempt });
            };
            if !closed {
                // An open day may legitimately move: keep what it lists now,
                // and the next run refreshes it.
                warn!(reason = %reason, "open day does not add up; writing it as listed");
                return Ok(DayRead { sink, fetch: fetched, pages, requests, attempts: attempt });
            }
            sink.abort().await;
            if attempt >= self.options.max_day_attempts.get() {
                return Err(ExportError::Inconsistent {
                    day: p.date(),
                    number: p.number().map(str::to_owned),
                    expected: fetched.total,
                    received: fetched.listed,
                    attempts: attempt,
                    reason,
                });
            }
            attempt += 1;
            again = true;
            warn!(attempt, reason = %reason, "day does not add up, fetching it again");
            observer.on_event(&ExportEvent::DayRefetch {
                day: p.date(),
                number: p.number().map(str::to_owned),
                attempt,
                reason,
            });
            tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
        }
    }

    /// One attempt at a day: every page, in offset order, into `sink`.
    async fn fetch_day(&self, cx: &DayCx<'_>, rows: &mut Rows<'_>) -> Result<DayFetch, ExportError> {
        let planned_paging = Paging::planned(cx.asked);
        let first =
            self.spawn(cx, cx.page_request(planned_paging.limit, 0)?, Some(cx.acquire().await?)).await?;
        let total = first.total;
        let paging = planned_paging.following_first_answer(first.listed.len(), total);
        if paging != planned_paging {
            debug!(
                asked = planned_paging.limit,
                served = paging.size,
                "the server serves another page size; following it"
            );
        }
        let limit = paging.limit;
        cx.observer.on_event(&ExportEvent::DayStarted {
            day: cx.day.date(),
            number: cx.day.number().map(str::to_owned),
            total_calls: total,
        });
        let mut ledger = Ledger {
            window: (cx.day.window_start(), cx.day.window_end()),
            total,
            paging,
            seen: Seen::new(),
            out_of_window: 0,
            pages: 1,
            prev: Listed::default(),
            problem: None,
            digest: 0,
        };
        let full = paging.is_full(first.listed.len());
        let FetchedPage { batch, listed, permit, .. } = first;
        ledger.take(batch, &listed, None, rows, cx).await?;
        drop(permit);
        // An open day is written as listed anyway: no second or closing read.
        let second_read =
            (cx.closed && !cx.reread && paging.second_read_fits(total, cx.asked)).then_some(MAX_LIMIT);
        cx.digest.store(cx.reread || second_read.is_some(), Ordering::Relaxed);
        let closing = cx.closed
            && !cx.reread
            && second_read.is_none()
            && (cx.again || paging.closing_read_fits(total, cx.asked));
        let first_listed = if closing { listed.clone() } else { Listed::default() };
        ledger.prev = listed;
        let mut flow = if full { Flow::More } else { Flow::Done };

        // The planned pages, requested ahead and taken in offset order.
        let planned = paging.planned_pages(total);
        if flow == Flow::More && planned > 1 {
            let lookahead = self.options.concurrency.get();
            let mut rest = std::pin::pin!(
                stream::iter(1..planned)
                    .then(|k| async move {
                        let request = cx.page_request(limit, k * paging.stride)?;
                        Ok::<_, ExportError>(self.spawn(cx, request, Some(cx.acquire().await?)))
                    })
                    .map(|spawned| async move { spawned?.await })
                    .buffered(lookahead)
            );
            while let Some(page) = rest.next().await {
                flow = self.take_page(page?, &mut ledger, rows, cx).await?;
                if flow == Flow::Done {
                    break;
                }
            }
        }
        // Past the plan while pages stay full: `total_calls` may lag the
        // listing, and only a short page proves the end.
        while flow == Flow::More {
            let offset = ledger.prev.offset + paging.stride;
            let page = self.spawn(cx, cx.page_request(limit, offset)?, Some(cx.acquire().await?)).await?;
            if offset >= total {
                debug!(offset, total, "reading past total_calls");
            }
            flow = self.take_page(page, &mut ledger, rows, cx).await?;
        }

        ledger.check_count();
        if closing && ledger.problem.is_none() {
            self.closing_read(&first_listed, limit, &mut ledger, cx).await?;
            ledger.check_count();
        }
        let listed = ledger.seen.distinct();
        if ledger.out_of_window > 0 {
            debug!(
                out_of_window = ledger.out_of_window,
                "calls listed outside the day's window left to their own day"
            );
        }
        Ok(DayFetch {
            total,
            pages: ledger.pages,
            requests: cx.requests.load(Ordering::Relaxed),
            out_of_window: ledger.out_of_window,
            listed,
            problem: ledger.problem,
            second_read,
            digest: ledger.digest,
        })
    }

    /// Checks a page against the previous one, settles ties, and writes
    /// its new calls.
    async fn take_page(
        &self,
        page: FetchedPage,
        ledger: &mut Ledger,
        rows: &mut Rows<'_>,
        cx: &DayCx<'_>,
    ) -> Result<Flow, ExportError> {
        let FetchedPage { batch, listed, total, permit } = page;
        let offset = listed.offset;
        // Calls before the previous page cannot be listed again (bounded memory).
        ledger.seen.forget_before(ledger.prev.starts.first().copied().unwrap_or(i64::MIN));
        if total != ledger.total {
            ledger.problem =
                Some(format!("total_calls moved from {} to {total} at offset {offset}", ledger.total));
            return Ok(Flow::Done);
        }
        let mut ties = BTreeSet::new();
        match check_boundary(&ledger.prev, &listed) {
            Boundary::Aligned => {}
            // No progress: the server answers the same calls whatever the
            // offset; reading on would never end.
            Boundary::Relisted { extra } if extra as u64 >= ledger.paging.stride => {
                ledger.problem = Some(format!("the answer at offset {offset} repeats the one before it"));
                return Ok(Flow::Done);
            }
            Boundary::Relisted { extra } => debug!(offset, extra, "the page repeats calls already listed"),
            Boundary::Ties(starts) => ties = starts,
            Boundary::Shifted => {
                ledger.problem = Some(format!(
                    "the listing shifted at offset {offset} while it was paged (a call before it was added or removed)"
                ));
                return Ok(Flow::Done);
            }
        }
        if cx.again {
            ties.extend(straddling_tie(&ledger.prev, &listed));
        }
        for t in ties {
            self.read_tie(t, &listed, ledger, rows, cx).await?;
            if ledger.problem.is_some() {
                return Ok(Flow::Done);
            }
        }
        let full = ledger.paging.is_full(listed.len());
        ledger.take(batch, &listed, None, rows, cx).await?;
        // The page leaves our hands only now: its slot frees for another request.
        drop(permit);
        ledger.pages += 1;
        ledger.prev = listed;
        Ok(if full { Flow::More } else { Flow::Done })
    }

    /// Reads the first page again once the rest is read, and checks it
    /// lists what it listed first: a call removed and another added in a
    /// page already read change neither the total nor a later position, and
    /// only a second look at that page shows them. One request, made when
    /// the day's request budget has room for it (or the source is known to
    /// move), so it sees the first page only.
    async fn closing_read(
        &self,
        first: &Listed,
        limit: u32,
        ledger: &mut Ledger,
        cx: &DayCx<'_>,
    ) -> Result<(), ExportError> {
        let page = self.spawn(cx, cx.page_request(limit, 0)?, Some(cx.acquire().await?)).await?;
        let FetchedPage { listed, total, permit, .. } = page;
        drop(permit);
        if total != ledger.total {
            ledger.problem =
                Some(format!("total_calls moved from {} to {total} by the end of the read", ledger.total));
            return Ok(());
        }
        let changed = match check_boundary(first, &listed) {
            Boundary::Aligned => false,
            // A tie reordered is no change, a call not listed before is.
            Boundary::Ties(_) => {
                listed.ids.iter().any(|id| !first.ids.contains(id) && !ledger.seen.contains(id))
            }
            Boundary::Relisted { .. } | Boundary::Shifted => true,
        };
        if changed {
            ledger.problem = Some(
                "the first page changed while the day was read (a call in it was removed or added)".into(),
            );
        }
        Ok(())
    }

    /// Reads every call starting at `t` in one answer, a snapshot, and
    /// writes those not yet listed. Runs under the slot of the page being
    /// taken, so it needs none.
    ///
    /// The group's offsets are known from the two answers around the
    /// boundary (starts do not reorder, only ties do), so it is asked for
    /// within the day's own query, one call of margin on each side to prove
    /// the answer holds all of it. Only a group that runs past both answers
    /// is asked for by its own window `[t, t]`.
    async fn read_tie(
        &self,
        t: i64,
        next: &Listed,
        ledger: &mut Ledger,
        rows: &mut Rows<'_>,
        cx: &DayCx<'_>,
    ) -> Result<(), ExportError> {
        let prev = &ledger.prev;
        let first = prev.starts.iter().position(|s| *s == t);
        let last = next.starts.iter().rposition(|s| *s == t);
        let span = first.zip(last).and_then(|(i0, i1)| {
            let before_known = i0 > 0 || prev.offset == 0;
            let after_known = i1 + 1 < next.len() || !ledger.paging.is_full(next.len());
            let (g0, g1) = (prev.offset + i0 as u64, next.offset + i1 as u64);
            let from = g0.saturating_sub(1);
            let limit = u32::try_from(g1 + 2 - from).ok().filter(|l| *l <= MAX_LIMIT)?;
            (before_known && after_known && g1 >= g0).then_some((from, g0, limit))
        });
        let Some((from, g0, limit)) = span else {
            return self.read_tie_window(t, ledger, rows, cx).await;
        };
        let answer = self.spawn(cx, cx.page_request(limit, from)?, None).await?;
        if answer.total != ledger.total {
            ledger.problem =
                Some(format!("total_calls moved from {} to {} at offset {from}", ledger.total, answer.total));
            return Ok(());
        }
        // Whole: the calls of `t` are one run, bounded on each side by
        // another start or by an end of the listing.
        let starts = &answer.listed.starts;
        let run = starts.iter().position(|s| *s == t).zip(starts.iter().rposition(|s| *s == t));
        let whole = run.is_some_and(|(i0, i1)| {
            let bounded_before = i0 > 0 || from == 0;
            // A short answer ends the listing only if it reaches the total
            // (a server that caps the page size answers short too).
            let ends = from + starts.len() as u64 >= ledger.total;
            let bounded_after = i1 + 1 < starts.len() || ends;
            bounded_before && bounded_after && starts[i0..=i1].iter().all(|s| *s == t)
        });
        if !whole && starts.len() < limit as usize && from + (starts.len() as u64) < ledger.total {
            // Cut short (a server that caps the page size): by its window.
            return self.read_tie_window(t, ledger, rows, cx).await;
        }
        if !whole {
            ledger.problem =
                Some(format!("the listing moved around the tie at offset {g0} while it was paged"));
            return Ok(());
        }
        let added = ledger.take(answer.batch, &answer.listed, Some(t), rows, cx).await?;
        debug!(start = t, offset = from, added, "tie read in one answer");
        Ok(())
    }

    /// Reads the calls starting at `t` by their own window `[t, t]`, when
    /// the group is too long to place by offsets.
    async fn read_tie_window(
        &self,
        t: i64,
        ledger: &mut Ledger,
        rows: &mut Rows<'_>,
        cx: &DayCx<'_>,
    ) -> Result<(), ExportError> {
        let query = CallQuery::new(t, t)
            .map_err(ExportError::query)?
            .with_number(cx.query.number().map(str::to_owned));
        // The largest page the API allows: a tie (plus any window slack
        // around it) must fit in one answer.
        let request = query.page(MAX_LIMIT, 0).map_err(ExportError::query)?;
        let answer = self.spawn(cx, request, None).await?;
        if answer.total > answer.listed.len() as u64 {
            ledger.problem = Some(format!(
                "{} calls listed around the tie at start {t}, more than one answer holds",
                answer.total
            ));
            return Ok(());
        }
        let added = ledger.take(answer.batch, &answer.listed, Some(t), rows, cx).await?;
        debug!(start = t, added, "tie read by its own window");
        Ok(())
    }

    /// Fetches and converts one page on its own task, counting the request.
    fn spawn(
        &self,
        cx: &DayCx<'_>,
        request: PageRequest,
        permit: Option<OwnedSemaphorePermit>,
    ) -> AbortOnDrop<Result<FetchedPage, ExportError>> {
        cx.requests.fetch_add(1, Ordering::Relaxed);
        let hasher = cx.hasher.clone();
        let digest = cx.digest.load(Ordering::Relaxed);
        spawn_page(Arc::clone(&self.source), request, Arc::clone(cx.day), hasher, digest, permit)
    }
}

impl Ledger {
    /// The last check: the distinct calls listed must be what every answer
    /// said the listing holds.
    fn check_count(&mut self) {
        let listed = self.seen.distinct();
        if self.problem.is_none() && listed != self.total {
            self.problem = Some(format!("{listed} distinct calls listed but total_calls is {}", self.total));
        }
    }

    /// Writes the calls of an answer not listed before whose start is in the
    /// day's window (and is `only`, when given); returns how many calls it
    /// listed for the first time, in the window or not.
    async fn take(
        &mut self,
        batch: RecordBatch,
        listed: &Listed,
        only: Option<i64>,
        rows: &mut Rows<'_>,
        cx: &DayCx<'_>,
    ) -> Result<u64, ExportError> {
        let mut keep = Vec::with_capacity(listed.len());
        let (mut new, mut outside) = (0_u64, 0_u64);
        for (i, (id, start)) in listed.ids.iter().zip(&listed.starts).enumerate() {
            let first_time = only.is_none_or(|t| *start == t) && self.seen.insert(*id, *start);
            let inside = (self.window.0..self.window.1).contains(start);
            if first_time && let Some(content) = listed.contents.get(i) {
                self.digest = self.digest.wrapping_add(*content);
            }
            new += u64::from(first_time);
            outside += u64::from(first_time && !inside);
            keep.push(first_time && inside);
        }
        if outside > 0 {
            debug!(
                offset = listed.offset,
                outside, "calls outside the day's window are left to their own day"
            );
        }
        self.out_of_window += outside;
        let batch = match kept_run(&keep) {
            Some((from, len)) if len == batch.num_rows() => {
                debug_assert_eq!(from, 0);
                batch
            }
            // The usual case: only the repeated call at the head is dropped.
            Some((from, len)) => batch.slice(from, len),
            None => filter_rows(&batch, &keep)
                .map_err(|source| ExportError::Arrow { day: cx.day.date(), source })?,
        };
        let n = batch.num_rows() as u64;
        if n > 0 {
            rows.write(batch).await?;
        }
        cx.observer.on_event(&ExportEvent::PageWritten { day: cx.day.date(), calls: n });
        Ok(new)
    }
}

/// The kept rows as one run `(from, len)`, when they are one (a slice
/// then serves without copying the batch); `None` when they are scattered.
fn kept_run(keep: &[bool]) -> Option<(usize, usize)> {
    let Some(from) = keep.iter().position(|k| *k) else {
        return Some((0, 0));
    };
    let to = keep.iter().rposition(|k| *k).unwrap_or(from);
    keep[from..=to].iter().all(|k| *k).then_some((from, to + 1 - from))
}

/// A fetched page, converted, holding its concurrency slot.
#[derive(Debug)]
struct FetchedPage {
    batch: RecordBatch,
    listed: Listed,
    total: u64,
    permit: Option<OwnedSemaphorePermit>,
}

/// Fetches and converts one page on its own task, so decoding runs on any
/// worker in parallel with other pages.
fn spawn_page<S: PageSource + 'static>(
    source: Arc<S>,
    request: PageRequest,
    day: Arc<DayPartition>,
    hasher: SessionHasher,
    digest: bool,
    permit: Option<OwnedSemaphorePermit>,
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
        let listed = Listed {
            offset: request.offset(),
            ids: page.calls.iter().map(|c| hasher.fingerprint(&c.session_id)).collect(),
            starts: page.calls.iter().map(|c| c.start).collect(),
            contents: if digest {
                page.calls.iter().map(|c| hasher.content(c)).collect()
            } else {
                Vec::new()
            },
        };
        Ok(FetchedPage { batch, listed, total: page.total_calls, permit })
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
        Pin::new(&mut self.0).poll(cx).map(|joined| joined.unwrap_or_else(|e| Err(ExportError::Task(e))))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::num::NonZeroUsize;
    use std::sync::Arc;
    use std::time::Duration;

    use arrow_array::cast::AsArray;
    use arrow_array::types::TimestampMillisecondType;
    use jiff::tz::TimeZone;
    use plumline_api::{ApiError, Call, CallType};
    use plumline_sim::memory::{Change, MemorySource};

    use crate::ExportError;
    use crate::pipeline::ExportOptions;
    use crate::pipeline::consistency::{Paging, minimum_requests};
    use crate::pipeline::testing::{DAY, export, lake_batches};

    #[test]
    fn kept_rows_as_one_run() {
        type Run = Option<(usize, usize)>;
        let cases: [(&[bool], Run); 6] = [
            (&[], Some((0, 0))),
            (&[false, false], Some((0, 0))),
            (&[true, true], Some((0, 2))),
            (&[false, true, true], Some((1, 2))),
            (&[false, true, true, false], Some((1, 2))),
            (&[true, false, true], None),
        ];
        for (keep, want) in cases {
            assert_eq!(super::kept_run(keep), want, "{keep:?}");
        }
    }

    /// A call with an id and a start.
    fn call(id: &str, start: i64) -> Call {
        Call {
            dest: "8005550000".into(),
            src: "6175550100".into(),
            start,
            end: start + 30,
            session_id: id.into(),
            call_type: CallType::Inbound,
            log: false,
        }
    }

    /// `per_day` calls on each of `days` days, `spacing` seconds apart from
    /// `offset` seconds into the day, `tie` calls per start.
    fn calls(days: i64, per_day: i64, spacing: i64, offset: i64, tie: i64) -> Vec<Call> {
        let mut out = Vec::new();
        for d in 0..days {
            for i in 0..per_day {
                out.push(call(&format!("{d};{i:06}"), d * DAY + offset + (i / tie) * spacing));
            }
        }
        out
    }

    fn options(page_size: u32, concurrency: usize) -> ExportOptions {
        ExportOptions {
            concurrency: NonZeroUsize::new(concurrency).expect("nonzero"),
            page_size: plumline_api::PageSize::new(page_size).expect("page size"),
            now: Some(1_000 * DAY),
            ..ExportOptions::default()
        }
    }

    type Lake = BTreeMap<String, Vec<(String, i64)>>;

    /// The lake's rows as (session id, start) per day, sorted; a call filed
    /// twice shows twice.
    fn lake(dir: &std::path::Path) -> Lake {
        let mut out = Lake::new();
        for (day, batches) in lake_batches(dir) {
            let rows = out.entry(day).or_default();
            for batch in batches {
                let ids = batch.column_by_name("session_id").expect("session_id").as_string::<i32>().clone();
                let starts = batch.column_by_name("start").expect("start");
                let starts = starts.as_primitive::<TimestampMillisecondType>();
                for (id, start) in ids.iter().zip(starts.iter()) {
                    rows.push((id.expect("id").to_owned(), start.expect("start") / 1000));
                }
            }
            rows.sort();
        }
        out
    }

    /// The lake a correct export of `days` days of `truth` writes.
    fn expected(truth: &[Call], days: i64) -> Lake {
        let mut out = Lake::new();
        for d in 0..days {
            let date = TimeZone::UTC.to_datetime(jiff::Timestamp::from_second(d * DAY).expect("ts")).date();
            out.insert(date.to_string(), Vec::new());
        }
        for c in truth.iter().filter(|c| (0..days * DAY).contains(&c.start)) {
            let date = TimeZone::UTC.to_datetime(jiff::Timestamp::from_second(c.start).expect("ts")).date();
            out.entry(date.to_string()).or_default().push((c.session_id.clone(), c.start));
        }
        for rows in out.values_mut() {
            rows.sort();
        }
        out
    }

    fn assert_exact(dir: &std::path::Path, source: &MemorySource, days: i64) {
        let (got, want) = (lake(dir), expected(&source.truth(), days));
        for (day, rows) in &want {
            let have = got.get(day).map_or(&[][..], Vec::as_slice);
            if have != rows.as_slice() {
                let missing: Vec<_> = rows.iter().filter(|r| !have.contains(r)).take(5).collect();
                let extra: Vec<_> = have.iter().filter(|r| !rows.contains(r)).take(5).collect();
                panic!(
                    "{day}: {} rows, want {}; missing {missing:?}, extra {extra:?}",
                    have.len(),
                    rows.len()
                );
            }
        }
        assert_eq!(got.len(), want.len(), "days in the lake");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_static_source_costs_the_planned_requests_within_the_budget() {
        // (calls per day, page size): short, exact multiples, a full last page.
        for (per_day, page) in [(450, 100), (0, 100), (100, 100), (199, 100), (496, 100), (2_500, 1_000)] {
            let dir = tempfile::tempdir().expect("tempdir");
            let source = Arc::new(MemorySource::new(calls(2, per_day, 17, 0, 1)));
            let summary = export(&source, dir.path(), options(page, 3), 2).await.expect("export");
            assert_exact(dir.path(), &source, 2);
            let total = u64::try_from(per_day).expect("count");
            let planned = Paging::planned(page).static_requests(total, page);
            assert_eq!(source.requests(), 2 * planned, "{per_day} calls a day, page {page}");
            let min = minimum_requests(total, page);
            assert!(planned * 50 <= min * 51 + 50, "{per_day}/{page}: {planned} requests, minimum {min}");
            assert_eq!(summary.refetches, 0);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_outside_the_window_are_left_to_their_own_day() {
        // Calls every 10 minutes round the clock; the server widens every
        // window by an hour on each side.
        let dir = tempfile::tempdir().expect("tempdir");
        let source = Arc::new(MemorySource::new(calls(3, 144, 600, 0, 1)).with_window_slack(3_600));
        let summary = export(&source, dir.path(), options(50, 3), 3).await.expect("export");
        assert_exact(dir.path(), &source, 3);
        assert_eq!((summary.calls, summary.refetches), (3 * 144, 0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_source_that_moves_between_requests_gives_its_final_truth() {
        // 450 calls, pages of 100 at offsets 0, 99, 198, 297, 396; one slot,
        // so request n is page n. Changes land before request 2 unless said.
        let early = |id: &str| Change::Insert(call(id, 5 * 60 + 1));
        let late = |id: &str| Change::Insert(call(id, 440 * 60 + 1));
        let gone = |i: u32| Change::Remove(format!("0;{i:06}"));
        let cases: Vec<(&str, Vec<(u64, Change)>)> = vec![
            ("added in the pages read", vec![(2, early("new"))]),
            ("removed from the pages read", vec![(2, gone(3))]),
            ("added after the cursor", vec![(2, late("new"))]),
            // The total holds: only a page boundary or the count sees these.
            ("removed before, added after", vec![(2, gone(3)), (2, late("new"))]),
            ("added before, removed after", vec![(2, early("new")), (2, gone(420))]),
            ("a swap read across two boundaries", vec![(2, gone(3)), (3, early("new"))]),
            (
                "a swap across the cursor, then back",
                vec![(2, gone(3)), (2, late("a")), (4, early("b")), (4, gone(440))],
            ),
        ];
        for (name, changes) in cases {
            let dir = tempfile::tempdir().expect("tempdir");
            let source = Arc::new(MemorySource::new(calls(1, 450, 60, 0, 1)).with_changes(changes));
            let summary = export(&source, dir.path(), options(100, 1), 1).await.expect(name);
            assert_eq!(source.pending_changes(), 0, "{name}: the changes happened");
            assert_exact(dir.path(), &source, 1);
            assert!(summary.refetches >= 1, "{name}: the move was noticed");
        }
    }

    /// Total and every later position hold: only the closing read sees a
    /// swap in the first page (made on days of 50 pages or more, where it
    /// costs at most 2%).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_swap_in_the_first_page_is_seen_by_the_closing_read() {
        // 6000 calls, 60 pages of 100; request n is page n, 60 the closing read.
        for before in [2, 60] {
            let dir = tempfile::tempdir().expect("tempdir");
            let changes =
                vec![(before, Change::Remove("0;000003".into())), (before, Change::Insert(call("new", 71)))];
            let source = Arc::new(MemorySource::new(calls(1, 6_000, 14, 0, 1)).with_changes(changes));
            let summary = export(&source, dir.path(), options(100, 1), 1).await.expect("export");
            assert_eq!(source.pending_changes(), 0);
            assert_exact(dir.path(), &source, 1);
            assert_eq!(summary.refetches, 1, "swapped before request {before}");
        }
    }

    /// One call removed and one added in pages already read, between the
    /// same two requests, change neither the total nor any later position.
    /// Where the day's request budget has room for a second read of the
    /// whole day at the API's largest page (here one request for 450 calls
    /// read in five pages), the two reads differ and the day is read again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_swap_inside_the_pages_read_is_seen_by_a_second_read_within_the_budget() {
        // In the second page (offsets 99..199), before the third request.
        let dir = tempfile::tempdir().expect("tempdir");
        let changes =
            vec![(3, Change::Remove("0;000150".into())), (3, Change::Insert(call("new", 150 * 60 + 1)))];
        let source = Arc::new(MemorySource::new(calls(1, 450, 60, 0, 1)).with_changes(changes));
        let summary = export(&source, dir.path(), options(100, 1), 1).await.expect("export");
        assert_eq!((source.pending_changes(), summary.refetches), (0, 1));
        assert_exact(dir.path(), &source, 1);
        // Two attempts of five pages and one second read each.
        assert_eq!(source.requests(), 2 * (5 + 1));
    }

    /// The limit of the default read that ARCHITECTURE.md states: where the
    /// budget has no room for a second read (20 pages of 1000 here, whose
    /// second read at 10,000 would take 3 requests against a budget of 2),
    /// such a swap past the first page is not seen. `reread` (the next
    /// test) sees it anywhere. This test pins the limit down.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_swap_past_the_first_page_of_a_day_too_long_for_a_second_read_is_not_seen() {
        // In the fourth page (offsets 3000..4000), before the seventh request.
        let dir = tempfile::tempdir().expect("tempdir");
        let changes =
            vec![(6, Change::Remove("0;003500".into())), (6, Change::Insert(call("new", 3_500 * 4 + 1)))];
        let source = Arc::new(MemorySource::new(calls(1, 20_000, 4, 0, 1)).with_changes(changes));
        let summary = export(&source, dir.path(), options(1_000, 1), 1).await.expect("export");
        assert_eq!((source.pending_changes(), summary.refetches), (0, 0));
        assert_eq!(source.requests(), Paging::planned(1_000).static_requests(20_000, 1_000));
        let rows = lake(dir.path()).remove("1970-01-01").unwrap_or_default();
        assert!(rows.iter().any(|r| r.0 == "0;003500") && !rows.iter().any(|r| r.0 == "new"));
    }

    /// The swap a single read cannot see, and a call changed in place: a
    /// second read of the day sees both, and the day is read until two
    /// reads agree, so it ends as the final truth.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_second_read_sees_a_swap_or_a_change_inside_the_pages_read() {
        let changed = Call { end: 150 * 60 + 999, ..call("0;000150", 150 * 60) };
        let cases: Vec<(&str, Vec<(u64, Change)>)> = vec![
            (
                "swap",
                vec![(3, Change::Remove("0;000150".into())), (3, Change::Insert(call("new", 150 * 60 + 1)))],
            ),
            (
                "changed in place",
                vec![(3, Change::Remove("0;000150".into())), (3, Change::Insert(changed.clone()))],
            ),
        ];
        for (case, changes) in cases {
            let dir = tempfile::tempdir().expect("tempdir");
            let source = Arc::new(MemorySource::new(calls(1, 450, 60, 0, 1)).with_changes(changes));
            let reread = ExportOptions { reread: true, ..options(100, 1) };
            let summary = export(&source, dir.path(), reread, 1).await.expect(case);
            assert_eq!((source.pending_changes(), summary.refetches), (0, 1), "{case}");
            assert_exact(dir.path(), &source, 1);
            // Two reads of five pages each, twice: the first pair disagreed.
            assert_eq!(source.requests(), 4 * 5, "{case}");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let edit = vec![(3, Change::Remove("0;000150".into())), (3, Change::Insert(changed.clone()))];
        let source = Arc::new(MemorySource::new(calls(1, 450, 60, 0, 1)).with_changes(edit));
        let reread = ExportOptions { reread: true, ..options(100, 1) };
        export(&source, dir.path(), reread, 1).await.expect("export");
        let mut duration = None;
        for batch in lake_batches(dir.path()).into_iter().flat_map(|(_, batches)| batches) {
            let ids = batch.column_by_name("session_id").expect("id").as_string::<i32>();
            let durations = batch.column_by_name("duration_s").expect("duration");
            let durations = durations.as_primitive::<arrow_array::types::Int64Type>();
            for i in (0..batch.num_rows()).filter(|i| ids.value(*i) == "0;000150") {
                duration = Some(durations.value(i));
            }
        }
        assert_eq!(duration, Some(999), "the call as it is now");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_second_read_costs_one_read_more_and_a_source_that_never_agrees_fails_naming_the_day() {
        // Static: exactly twice the single read's requests, no refetch.
        let dir = tempfile::tempdir().expect("tempdir");
        let source = Arc::new(MemorySource::new(calls(2, 450, 60, 0, 1)));
        let reread = || ExportOptions { reread: true, ..options(100, 2) };
        let summary = export(&source, dir.path(), reread(), 2).await.expect("export");
        assert_exact(dir.path(), &source, 2);
        // 450 calls in pages of 100 at offsets 0, 99, 198, 297, 396, read twice.
        let once = Paging::planned(100).paging_requests(450);
        assert_eq!(once, 5);
        assert_eq!((source.requests(), summary.requests, summary.refetches), (2 * 2 * once, 2 * 2 * once, 0));

        // A swap inside the pages read before every request: no two reads
        // agree, the day fails naming it, and nothing is committed.
        let swaps: Vec<(u64, Change)> = (1..200_i64)
            .flat_map(|n| {
                let (old, new) = (format!("0;{:06}", 100 + n), format!("new{n}"));
                let at = n.unsigned_abs();
                [(at, Change::Remove(old)), (at, Change::Insert(call(&new, (100 + n) * 60)))]
            })
            .collect();
        let dir = tempfile::tempdir().expect("tempdir");
        let source = Arc::new(MemorySource::new(calls(1, 450, 60, 0, 1)).with_changes(swaps));
        let err = export(&source, dir.path(), ExportOptions { reread: true, ..options(100, 1) }, 1)
            .await
            .expect_err("never agrees");
        let message = err.to_string();
        assert!(matches!(only_failure(&err), ExportError::Inconsistent { attempts: 4, .. }), "{message}");
        assert!(message.contains("1970-01-01"), "{message}");
        assert!(lake(dir.path()).values().all(Vec::is_empty), "nothing committed");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_closed_day_that_never_settles_fails_naming_it_and_an_open_one_is_written() {
        // A call added before the cursor on every request.
        let changes = || (1..200).map(|n| (n, Change::Insert(call(&format!("new{n}"), 60))));
        let dir = tempfile::tempdir().expect("tempdir");
        let source = Arc::new(MemorySource::new(calls(1, 450, 60, 0, 1)).with_changes(changes()));
        let err = export(&source, dir.path(), options(100, 1), 1).await.expect_err("never settles");
        let message = err.to_string();
        let err = only_failure(&err);
        assert!(matches!(err, ExportError::Inconsistent { attempts: 4, .. }), "{message}");
        assert!(message.contains("1970-01-01") && message.contains("total_calls moved"), "{message}");
        assert!(lake(dir.path()).values().all(Vec::is_empty), "nothing committed");
        let open = ExportOptions { now: Some(DAY + 60), ..options(100, 1) };
        let source = Arc::new(MemorySource::new(calls(1, 450, 60, 0, 1)).with_changes(changes()));
        let summary = export(&source, dir.path(), open, 1).await.expect("an open day is written");
        assert_eq!((summary.written, summary.open, summary.refetches), (1, 1, 0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_total_that_lags_the_listing_is_read_past() {
        // The whole first attempt reports 150 calls too few.
        let dir = tempfile::tempdir().expect("tempdir");
        let source = Arc::new(MemorySource::new(calls(1, 450, 60, 0, 1)).with_skewed_total(5, -150));
        let summary = export(&source, dir.path(), options(100, 1), 1).await.expect("export");
        assert_exact(dir.path(), &source, 1);
        assert_eq!(summary.refetches, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ties_reordered_on_every_request_are_read_whole() {
        // Groups of 7 calls sharing a start, ordered afresh per request:
        // every page boundary falls inside a group.
        for concurrency in [1, 3] {
            let dir = tempfile::tempdir().expect("tempdir");
            let source = Arc::new(MemorySource::new(calls(2, 700, 60, 0, 7)).with_shuffled_ties());
            export(&source, dir.path(), options(100, concurrency), 2).await.expect("export");
            assert_exact(dir.path(), &source, 2);
        }
        // A server that caps pages below a tie's length: ties by their window.
        let dir = tempfile::tempdir().expect("tempdir");
        let source =
            Arc::new(MemorySource::new(calls(1, 700, 60, 0, 10)).with_shuffled_ties().with_page_cap(10));
        export(&source, dir.path(), options(100, 3), 1).await.expect("export");
        assert_exact(dir.path(), &source, 1);
        // The same ties in a stable order cost no request more than the plan.
        let dir = tempfile::tempdir().expect("tempdir");
        let source = Arc::new(MemorySource::new(calls(2, 700, 60, 0, 7)));
        export(&source, dir.path(), options(100, 3), 2).await.expect("export");
        assert_eq!(source.requests(), 2 * Paging::planned(100).static_requests(700, 100));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn servers_that_cap_or_ignore_the_limit_are_followed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let source = Arc::new(MemorySource::new(calls(2, 950, 60, 0, 1)).with_page_cap(70));
        let summary = export(&source, dir.path(), options(100, 3), 2).await.expect("capped");
        assert_exact(dir.path(), &source, 2);
        assert_eq!(
            (summary.refetches, source.requests()),
            // Following the cap; no second read (it would be as long).
            (0, 2 * Paging::planned(70).paging_requests(950))
        );
        for serves in [250, 2_000] {
            let dir = tempfile::tempdir().expect("tempdir");
            let source = Arc::new(MemorySource::new(calls(2, 950, 60, 0, 1)).with_ignored_limit(serves));
            let summary = export(&source, dir.path(), options(100, 3), 2).await.expect("limit ignored");
            assert_exact(dir.path(), &source, 2);
            assert_eq!(summary.refetches, 0, "serving {serves}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_server_that_ignores_offset_fails_the_day_instead_of_paging_forever() {
        // Its total lags, so the read goes past the plan, where only the
        // answers themselves can stop it.
        let dir = tempfile::tempdir().expect("tempdir");
        let source = Arc::new(
            MemorySource::new(calls(1, 450, 60, 0, 1))
                .with_ignored_offset()
                .with_skewed_total(u64::MAX, -300),
        );
        let run = export(&source, dir.path(), options(100, 3), 1);
        let err = tokio::time::timeout(Duration::from_secs(60), run)
            .await
            .expect("the read ends")
            .expect_err("inconsistent");
        assert!(err.to_string().contains("repeats the one before it"), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_error_answer_fails_the_day_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Requests for the second day fail, as a client does once its
        // retries of a `200` carrying `error` ran out.
        let source = Arc::new(MemorySource::new(calls(2, 150, 60, 0, 1)).with_failure(|request| {
            (request.query().start() == DAY).then(|| ApiError::RetriesExhausted {
                attempts: 4,
                elapsed: Duration::ZERO,
                last: Box::new(ApiError::Server { status: 200, message: Some("database error".into()) }),
            })
        }));
        let err = export(&source, dir.path(), options(100, 3), 2).await.expect_err("fails");
        let chain = plumline_api::error_chain(&err);
        let failure = only_failure(&err);
        assert!(
            matches!(failure, ExportError::Api { day, .. } if day.to_string() == "1970-01-02"),
            "{chain}"
        );
        assert!(chain.contains("database error"), "{chain}");
        // The other day is not affected: committed, complete.
        let ExportError::DaysFailed { summary, .. } = &err else { panic!("{chain}") };
        assert_eq!(summary.written, 1, "{chain}");
        assert_eq!(lake(dir.path()).get("1970-01-01").map(Vec::len), Some(150), "{chain}");
    }

    /// The one day that failed a run.
    fn only_failure(err: &ExportError) -> &ExportError {
        match err {
            ExportError::DaysFailed { failures, .. } if failures.len() == 1 => &failures[0],
            other => panic!("expected one failed day: {other}"),
        }
    }
}
