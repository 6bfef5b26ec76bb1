//! [`Poller`]: the background loop that turns call logs into counters.
//!
//! `config.rs` holds [`PollerConfig`] and its validation, `window.rs` the
//! time arithmetic (days, backfill windows, backoff), `instrumented.rs` the
//! page source that counts requests; this file holds the loop: backfill,
//! then a poll of every number each interval (the searches themselves are
//! `search/`).

mod config;
mod instrumented;
mod window;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt as _;
use plumline_api::{ApiError, Call, CallType, PageSource};
use tracing::{Instrument as _, debug, info, info_span, warn};

pub use self::config::{DEFAULT_NO_CALLS_ALERT_AFTER, NoCallsAlertConfig, PollerConfig};
use self::instrumented::Instrumented;
use self::window::{BACKFILL_WINDOW, backfill_span, day_of, next_delay, secs, windows};
#[cfg(doc)]
use crate::dedupe::SeenCalls;
use crate::error::MetricsError;
use crate::metrics::Metrics;
use crate::search::{
    DAY_SECS, PollContext, TUNING, Tally, Target, Tuning, absorb, count, dedupe_chunk, fetch_window,
    poll_target,
};

/// The `number` label of calls that cannot be attributed to a deployment
/// number when the exporter polls without `--number` (outbound and transfer
/// calls: their `src` is `Outbound` or a caller, not the deployment).
pub const UNATTRIBUTED_NUMBER: &str = "unknown";

/// Where "now" comes from, in UNIX seconds.
///
/// The system's wall clock in production; tests share a manual clock with the
/// simulator. Any `Fn() -> i64 + Send + Sync` is a clock.
pub trait Clock: Send + Sync {
    /// The current time, UNIX seconds.
    fn now(&self) -> i64;
}

/// The operating system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    }
}

impl<F: Fn() -> i64 + Send + Sync> Clock for F {
    fn now(&self) -> i64 {
        self()
    }
}

/// How far before the first poll's reach-back the backfill remembers calls
/// (they are evicted after that poll): room for a server that answers
/// windows this much wider than asked.
const SLACK_MARGIN: i64 = 300;

/// A number whose poll failed, and why.
#[derive(Debug)]
pub struct TargetError {
    /// The number queried (`None`: the unfiltered query).
    pub number: Option<String>,
    /// What the API (after the client's retries) answered.
    pub error: ApiError,
}

/// What one [`Poller::poll_once`] did.
#[derive(Debug)]
pub struct PollReport {
    /// The end (inclusive) of every window queried: the clock at the start.
    pub window_end: i64,
    /// Whether this was (a step of) the backfill rather than a regular poll.
    pub backfill: bool,
    /// Calls counted for the first time.
    pub counted: u64,
    /// Requests sent to the API (counts and pages, each after retries).
    pub requests: u64,
    /// The numbers whose poll failed; empty on success.
    pub errors: Vec<TargetError>,
}

impl PollReport {
    /// Whether every number was polled to the end.
    #[must_use]
    pub fn is_success(&self) -> bool {
        self.errors.is_empty()
    }

    /// The first credentials failure, if any.
    #[must_use]
    pub fn unauthorized(&self) -> Option<&TargetError> {
        self.errors.iter().find(|e| e.error.is_unauthorized())
    }
}

/// The backfill in progress: the windows from the anchor still to fetch.
#[derive(Debug)]
struct Backfill {
    /// 00:00 UTC of the day it counts.
    anchor: i64,
    /// The clock when it began: the end of its windows.
    now: i64,
    /// `(target, start, end)` windows not fetched yet.
    pending: Vec<(usize, i64, i64)>,
    n_windows: usize,
}

/// Polls the API every interval and counts each completed call once, for
/// the current UTC day.
///
/// **Backfill.** The first [`Poller::poll_once`] calls (one, unless the API
/// fails) fetch every call that started from `max_call_duration` before
/// 00:00 UTC (the anchor) up to now, in one-hour windows, `concurrency` at
/// a time, and count those that ended since the anchor. Until that is done
/// the call families are not rendered and `plum_fuse_up` is 0; then
/// [`Metrics::publish_calls`] shows them, every configured number with a
/// zero series per documented direction.
///
/// **Polls.** Each later poll looks at `[last poll - max_call_duration,
/// now]` and fetches only what is new there (see `search/`: requests
/// placed by position in the API's listing order once the answers show
/// one, else `limit=1` counts of time windows bisected where a count grew),
/// so it costs a few requests and roughly the bytes of the new calls. A
/// poll that fails, or that leaves calls to the next because the listing
/// moved under it, keeps its watermark, so the next covers the window again
/// without counting anything twice.
///
/// **Days.** The first poll of a new UTC day resets every call series to
/// zero (the series stay). A call that ended before midnight but is listed
/// only after the last poll of that day is never counted: it belongs to a
/// day whose series were reset, and counting it into the new day would make
/// the value depend on when this exporter polled (a restarted one or a
/// replica would not count it). `increase()` over a window spanning
/// midnight therefore misses at most one interval of calls.
///
/// ## Memory Usage
/// One [`SeenCalls`] per number, holding the calls listed within the
/// reach-back plus one interval (at most `max_tracked_calls`); during the
/// backfill, up to `concurrency` one-hour windows of calls.
pub struct Poller<S> {
    source: S,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    config: PollerConfig,
    targets: Vec<Target>,
    tuning: Tuning,
    /// 00:00 UTC of the day counted; set by the backfill.
    anchor: i64,
    backfill: Option<Backfill>,
    backfilled: bool,
}

impl<S> fmt::Debug for Poller<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Poller")
            .field("config", &self.config)
            .field("targets", &self.targets)
            .field("anchor", &self.anchor)
            .field("backfilled", &self.backfilled)
            .finish_non_exhaustive()
    }
}

impl<S: PageSource> Poller<S> {
    /// A poller over `source` recording into `metrics`, on the system clock.
    ///
    /// # Errors
    /// [`MetricsError::InvalidConfig`] if `config` does not validate.
    pub fn new(source: S, metrics: Arc<Metrics>, config: PollerConfig) -> Result<Self, MetricsError> {
        config.validate()?;
        metrics.set_no_calls_alert(&config.no_calls_alert);
        touch_configured(&metrics, &config.numbers);
        // Whole-account mode: a number named by its window is known from
        // the start, so its "no calls" alert can fire before its first call.
        for number in config.no_calls_alert.per_number.keys() {
            metrics.touch_number(number);
        }
        let numbers: Vec<Option<String>> = if config.numbers.is_empty() {
            vec![None]
        } else {
            config.numbers.iter().cloned().map(Some).collect()
        };
        let targets =
            numbers.into_iter().map(|number| Target::new(number, config.max_tracked_calls.get())).collect();
        Ok(Poller {
            source,
            metrics,
            clock: Arc::new(SystemClock),
            config,
            targets,
            tuning: TUNING,
            anchor: 0,
            backfill: None,
            backfilled: false,
        })
    }

    /// The same poller on another clock (tests drive a simulator's clock).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The same poller without the search in the API's listing order: every
    /// poll runs the order-free count search. For benchmarks and tests that
    /// compare the two; the exporter never needs it, as the poller falls
    /// back to counting by itself when the order does not hold.
    #[doc(hidden)]
    #[must_use]
    pub fn count_search_only(mut self) -> Self {
        self.tuning.ordered = false;
        self
    }

    /// The metrics this poller records into.
    #[must_use]
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Whether the backfill from 00:00 UTC is done.
    #[must_use]
    pub fn is_backfilled(&self) -> bool {
        self.backfilled
    }

    /// The 00:00 UTC the call families count from (0 before the backfill).
    #[must_use]
    pub fn day_start(&self) -> i64 {
        self.anchor
    }

    /// Runs the backfill (or what is left of it after a failure) or, once it
    /// is done, one poll of every number (up to `concurrency` at a time),
    /// and updates the metrics, `plum_fuse_up` included.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future mid-poll leaves every call counted
    /// so far remembered and every watermark where it was, so the next poll
    /// covers the rest without counting anything twice.
    pub async fn poll_once(&mut self) -> PollReport {
        let started = Instant::now();
        let requests = AtomicU64::new(0);
        let source = Instrumented { inner: &self.source, metrics: &self.metrics, requests: &requests };
        let mut report = if self.backfilled {
            poll_targets(
                &source,
                &self.metrics,
                &self.config,
                &self.tuning,
                &mut self.targets,
                self.clock.now(),
                &mut self.anchor,
            )
            .await
        } else {
            let now = self.clock.now();
            let backfill =
                self.backfill.get_or_insert_with(|| plan_backfill(&self.targets, &self.config, now));
            let report =
                run_backfill(&source, &self.metrics, &self.config, &mut self.targets, backfill).await;
            if backfill.pending.is_empty() {
                self.anchor = backfill.anchor;
                for target in &mut self.targets {
                    target.watermark = Some(backfill.now);
                }
                self.backfill = None;
                self.backfilled = true;
                self.metrics.publish_calls(self.anchor);
            }
            report
        };
        report.requests = requests.load(Ordering::Relaxed);
        let elapsed = started.elapsed().as_secs_f64();
        let tracked: usize = self.targets.iter().map(|t| t.seen.len()).sum();
        self.metrics.record_poll(self.backfilled && report.is_success(), report.window_end, elapsed);
        for failed in &report.errors {
            warn!(
                number = failed.number.as_deref().unwrap_or("*"),
                kind = failed.error.kind(),
                error = %plumline_api::error_chain(&failed.error),
                backfill = report.backfill,
                "poll failed"
            );
        }
        // Polls come every few seconds: their summary is a debug line.
        if report.backfill {
            info!(
                window_end = report.window_end,
                counted = report.counted,
                requests = report.requests,
                failed = report.errors.len(),
                tracked,
                elapsed_s = elapsed,
                "backfill step done"
            );
        } else {
            debug!(
                window_end = report.window_end,
                counted = report.counted,
                requests = report.requests,
                failed = report.errors.len(),
                tracked,
                elapsed_s = elapsed,
                "poll done"
            );
        }
        report
    }

    /// Backfills, then polls every interval, until `shutdown` completes.
    ///
    /// After consecutive failed polls the wait doubles, from the interval up
    /// to 5 minutes (or the interval, if longer); the first
    /// success restores the interval.
    ///
    /// # Errors
    /// [`MetricsError::Unauthorized`] if the very first request is refused
    /// for bad credentials: better a clear error at startup than an exporter
    /// that serves nothing. Later refusals only set `plum_fuse_up` to 0 and
    /// count `outcome="unauthorized"` requests.
    ///
    /// # Cancel safety
    /// Cancel safe, as [`Poller::poll_once`]; prefer `shutdown`, which also
    /// ends a poll in flight.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), MetricsError> {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut failures = 0u32;
        let mut first = true;
        loop {
            let started = tokio::time::Instant::now();
            let mut report = tokio::select! {
                report = self.poll_once() => report,
                () = &mut shutdown => return Ok(()),
            };
            if first {
                if let Some(pos) = report.errors.iter().position(|e| e.error.is_unauthorized()) {
                    let refused = report.errors.swap_remove(pos);
                    return Err(MetricsError::Unauthorized { number: refused.number, source: refused.error });
                }
                first = false;
            }
            failures = if report.is_success() { 0 } else { failures.saturating_add(1) };
            // The poll right after the backfill comes at once: the backfill
            // may have taken longer than an interval.
            let delay = if report.backfill && report.is_success() {
                Duration::ZERO
            } else {
                next_delay(self.config.interval, failures)
            };
            debug!(delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX), failures, "next poll");
            tokio::select! {
                () = tokio::time::sleep_until(started + delay) => {}
                () = &mut shutdown => return Ok(()),
            }
        }
    }
}

/// Zero series for the documented directions of each configured number:
/// "no calls yet" is a 0, not a missing series.
fn touch_configured(metrics: &Metrics, numbers: &[String]) {
    for number in numbers {
        for direction in [CallType::Inbound, CallType::Outbound, CallType::Transfer] {
            metrics.touch_series(number, direction.as_str());
        }
    }
}

fn plan_backfill(targets: &[Target], config: &PollerConfig, now: i64) -> Backfill {
    let anchor = day_of(now);
    let (from, now) = backfill_span(now, secs(config.max_call_duration));
    let spans = windows(from, now, BACKFILL_WINDOW);
    let pending: Vec<(usize, i64, i64)> = (0..targets.len())
        .flat_map(|index| spans.iter().map(move |&(start, end)| (index, start, end)))
        .collect();
    let n_windows = pending.len();
    info!(anchor, from, to = now, n_windows, "backfill from 00:00 UTC starting");
    Backfill { anchor, now, pending, n_windows }
}

/// Fetches the backfill's pending windows, `concurrency` at a time; a
/// window counts its calls only once it is fetched whole, so one that fails
/// stays pending and counts nothing twice when retried.
async fn run_backfill<S: PageSource>(
    source: &S,
    metrics: &Metrics,
    config: &PollerConfig,
    targets: &mut [Target],
    backfill: &mut Backfill,
) -> PollReport {
    let ctx = PollContext {
        now: backfill.now,
        anchor: backfill.anchor,
        reach_back: secs(config.max_call_duration),
        page_size: config.page_size.get(),
    };
    // Calls from here on may be listed again by the first poll: remember them.
    let live_from = backfill.now.saturating_sub(ctx.reach_back);
    let mut report =
        PollReport { window_end: backfill.now, backfill: true, counted: 0, requests: 0, errors: Vec::new() };
    let numbers: Vec<Option<String>> = targets.iter().map(|t| t.number.clone()).collect();
    // A window leaves `pending` only in the step that counts it, so a
    // cancelled backfill resumes with exactly the windows not yet counted.
    let jobs: Vec<_> =
        backfill
            .pending
            .clone()
            .into_iter()
            .map(|(index, start, end)| {
                let number = numbers[index].clone();
                async move {
                    ((index, start, end), fetch_window(source, number, (start, end), ctx.page_size).await)
                }
            })
            .collect();
    let n_jobs = jobs.len();
    let mut done = 0usize;
    let mut answers = futures::stream::iter(jobs).buffer_unordered(config.concurrency.get());
    let mut evicted = 0;
    while let Some(((index, start, end), answer)) = answers.next().await {
        let target = &mut targets[index];
        match answer {
            Ok((_, calls)) => {
                backfill.pending.retain(|w| *w != (index, start, end));
                let mut tally = Tally::default();
                target.order.observe(&calls);
                target.note_slack((start, end), &calls);
                let calls = dedupe_chunk(calls);
                // Calls that started before `live_from` are never listed
                // again by a poll: counted, not remembered. (Those up to
                // `SLACK_MARGIN` before are remembered too: a server that
                // widens its windows counts them in the first poll's oldest.)
                let live_from = live_from.saturating_sub(target.slack.max(SLACK_MARGIN));
                let (live, settled): (Vec<Call>, Vec<Call>) =
                    calls.into_iter().partition(|c| c.start >= live_from);
                for call in settled.iter().filter(|c| (start..=end).contains(&c.start)) {
                    if call.end >= ctx.anchor && call.end < ctx.anchor + DAY_SECS {
                        count(metrics, target, call, &mut tally);
                    }
                }
                absorb(metrics, target, &ctx, (live_from, backfill.now), &live, false, &mut tally);
                report.counted += tally.counted;
                evicted += tally.evicted;
                done += 1;
                info!(
                    number = target.number.as_deref().unwrap_or("*"),
                    from = start,
                    to = end,
                    counted = tally.counted,
                    done,
                    of = n_jobs,
                    "backfill window done"
                );
            }
            Err(error) => {
                report.errors.push(TargetError { number: target.number.clone(), error });
            }
        }
    }
    let tracked: usize = targets.iter().map(|t| t.seen.len()).sum();
    metrics.record_dedupe(tracked, evicted);
    info!(
        windows_done = backfill.n_windows - backfill.pending.len(),
        windows = backfill.n_windows,
        counted = report.counted,
        "backfill progress"
    );
    report
}

/// One regular poll of every target, after the day check.
async fn poll_targets<S: PageSource>(
    source: &S,
    metrics: &Metrics,
    config: &PollerConfig,
    tuning: &Tuning,
    targets: &mut [Target],
    now: i64,
    anchor: &mut i64,
) -> PollReport {
    let today = day_of(now);
    if today > *anchor {
        info!(previous = *anchor, day_start = today, "new UTC day: call series reset to zero");
        metrics.reset_calls(today);
        *anchor = today;
    }
    let ctx = PollContext {
        now,
        anchor: *anchor,
        reach_back: secs(config.max_call_duration),
        page_size: config.page_size.get(),
    };
    let ctx = &ctx;
    // Futures built eagerly (no closure inside the stream) keep the poll
    // future `Send`, so callers may spawn it.
    let polls: Vec<_> = targets
        .iter_mut()
        .map(|target| async move {
            target.prior.decay();
            let mut tally = Tally::default();
            let span = info_span!("poll", number = target.number.as_deref().unwrap_or("*"));
            let result = poll_target(source, metrics, ctx, tuning, target, &mut tally).instrument(span).await;
            if result.is_ok() {
                target.deferred = tally.deferred;
            }
            // A poll that left calls for the next keeps its watermark, so
            // the next covers its window again.
            if result.is_ok() && !tally.deferred {
                target.watermark = Some(ctx.now);
                // The server counts calls up to its slack before the next
                // window: they stay held, so its counts and ours agree.
                target.seen.evict_started_before(ctx.now.saturating_sub(ctx.reach_back + target.slack));
            }
            (target.number.clone(), tally, result)
        })
        .collect();
    let results: Vec<_> =
        futures::stream::iter(polls).buffer_unordered(config.concurrency.get()).collect().await;
    let mut report =
        PollReport { window_end: now, backfill: false, counted: 0, requests: 0, errors: Vec::new() };
    let mut evicted = 0;
    for (number, tally, result) in results {
        report.counted += tally.counted;
        evicted += tally.evicted;
        if tally.evicted > 0 {
            warn!(
                number = number.as_deref().unwrap_or("*"),
                evicted = tally.evicted,
                capacity = config.max_tracked_calls,
                "dedupe set full: reaching back less far for this number"
            );
        }
        if let Err(error) = result {
            report.errors.push(TargetError { number, error });
        }
    }
    let tracked: usize = targets.iter().map(|t| t.seen.len()).sum();
    metrics.record_dedupe(tracked, evicted);
    report
}

/// The deployment number of a call from an unfiltered query: the `dest` of
/// an inbound call; [`UNATTRIBUTED_NUMBER`] for every other type, whose
/// `src`/`dest` name the caller or callee rather than the deployment (and
/// would make one series per outside party).
#[must_use]
pub fn attributed_number<'a>(call_type: &CallType, dest: &'a str) -> &'a str {
    match call_type {
        CallType::Inbound if !dest.is_empty() => dest,
        _ => UNATTRIBUTED_NUMBER,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::num::NonZeroUsize;
    use std::sync::atomic::{AtomicBool, AtomicI64};

    use plumline_api::{Call, PageRequest, PageSize};
    use plumline_sim::memory::MemorySource;

    use super::*;
    use crate::metrics::CallSeries;

    /// The shared in-memory API, live (a call is listed once `now >= end`,
    /// as the real one lists only completed calls), numbers matched by
    /// `dest`, ordered by start *ascending* (the simulator orders them the
    /// other way: the poller learns the order from the answers, so these
    /// tests run its search in listing order oldest first), with switches
    /// for an API that is down or refuses the credentials.
    struct Api {
        source: Arc<MemorySource>,
        down: Arc<AtomicBool>,
        unauthorized: Arc<AtomicBool>,
    }

    fn call(id: &str, dest: &str, call_type: CallType, start: i64, end: i64) -> Call {
        Call {
            dest: dest.into(),
            src: "6170000000".into(),
            start,
            end,
            session_id: id.into(),
            call_type,
            log: false,
        }
    }

    fn setup(calls: Vec<Call>, config: PollerConfig) -> (Poller<Arc<MemorySource>>, Api, Arc<AtomicI64>) {
        let now = Arc::new(AtomicI64::new(0));
        let (down, unauthorized) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let failure = {
            let (down, unauthorized) = (Arc::clone(&down), Arc::clone(&unauthorized));
            move |_: &PageRequest| {
                if unauthorized.load(Ordering::SeqCst) {
                    Some(ApiError::Unauthorized { status: 401, message: None })
                } else if down.load(Ordering::SeqCst) {
                    Some(ApiError::Server { status: 500, message: Some("database error".into()) })
                } else {
                    None
                }
            }
        };
        let source = Arc::new(
            MemorySource::new(calls)
                .with_live_clock(Arc::clone(&now))
                .with_numbers_by_dest()
                .with_failure(failure),
        );
        let clock = Arc::clone(&now);
        let poller = Poller::new(Arc::clone(&source), Arc::new(Metrics::new().expect("metrics")), config)
            .expect("config")
            .with_clock(Arc::new(move || clock.load(Ordering::SeqCst)));
        (poller, Api { source, down, unauthorized }, now)
    }

    fn config(numbers: &[&str]) -> PollerConfig {
        PollerConfig {
            numbers: numbers.iter().map(|n| (*n).to_owned()).collect(),
            interval: Duration::from_secs(60),
            max_call_duration: Duration::from_secs(3600),
            page_size: PageSize::new(2).expect("page size"),
            concurrency: NonZeroUsize::new(2).expect("nonzero"),
            max_tracked_calls: NonZeroUsize::new(1_000).expect("nonzero"),
            no_calls_alert: NoCallsAlertConfig::default(),
        }
    }

    type Row = (String, String, u64, u64, f64);

    fn totals(p: &Poller<Arc<MemorySource>>) -> Vec<Row> {
        p.metrics()
            .call_series()
            .into_iter()
            .filter(|(_, s)| s.calls > 0)
            .map(|((n, d), s)| (n, d, s.calls, s.duration_count, s.duration_sum))
            .collect()
    }

    fn render(p: &Poller<Arc<MemorySource>>) -> String {
        String::from_utf8(p.metrics().render().expect("render")).expect("utf-8")
    }

    /// 2023-11-14T00:00:00Z, a UTC midnight.
    const DAY0: i64 = 1_699_920_000;
    /// Noon of that day.
    const T0: i64 = DAY0 + 43_200;

    #[tokio::test]
    async fn backfill_counts_from_midnight_and_publishes_only_when_done() {
        let calls = vec![
            call("yesterday", "100", CallType::Inbound, DAY0 - 600, DAY0 - 1), // ended before the anchor
            call("across", "100", CallType::Inbound, DAY0 - 600, DAY0 + 5),    // started before, ended after
            call("morning", "100", CallType::Outbound, DAY0 + 3_600, DAY0 + 3_660),
            call("running", "100", CallType::Inbound, T0 - 100, T0 + 100), // not listed yet
            call("too_long", "100", CallType::Inbound, DAY0 - 7_200, DAY0 + 60), // beyond the reach-back
        ];
        let (mut poller, api, now) = setup(calls, config(&["100"]));
        now.store(T0, Ordering::SeqCst);
        let text = render(&poller);
        assert!(!text.contains("plum_fuse_calls_total") && text.contains("plum_fuse_up 0"), "{text}");

        api.down.store(true, Ordering::SeqCst);
        let report = poller.poll_once().await;
        assert!(report.backfill && !report.is_success());
        let text = render(&poller);
        assert!(!text.contains("plum_fuse_call"), "no partial values: {text}");
        assert!(
            text.contains("plum_fuse_up 0") && text.contains("plum_fuse_exporter_backfill_done 0"),
            "{text}"
        );

        api.down.store(false, Ordering::SeqCst);
        let report = poller.poll_once().await;
        assert!(report.backfill && report.is_success(), "{report:?}");
        assert_eq!(poller.day_start(), DAY0);
        let text = render(&poller);
        assert!(
            text.contains("plum_fuse_up 1") && text.contains("plum_fuse_exporter_backfill_done 1"),
            "{text}"
        );
        // Zero series for every direction of the configured number.
        assert!(text.contains(r#"plum_fuse_calls_total{number="100",direction="transfer"} 0"#), "{text}");
        assert_eq!(
            totals(&poller),
            vec![
                ("100".into(), "inbound".into(), 1, 1, 605.0),
                ("100".into(), "outbound".into(), 1, 1, 60.0),
            ]
        );
        // The running call is counted by a later poll, once.
        for step in 1..=3 {
            now.store(T0 + step * 60, Ordering::SeqCst);
            assert!(poller.poll_once().await.is_success());
        }
        assert_eq!(totals(&poller)[0].2, 2);
    }

    #[tokio::test]
    async fn a_cancelled_backfill_resumes_without_gaps_or_double_counts() {
        // One call an hour through the morning, in as many backfill windows.
        let calls: Vec<Call> = (0..12)
            .map(|h| {
                call(&format!("h{h}"), "100", CallType::Inbound, DAY0 + h * 3_600 + 10, DAY0 + h * 3_600 + 70)
            })
            .collect();
        let (mut poller, api, now) =
            setup(calls, PollerConfig { concurrency: NonZeroUsize::MIN, ..config(&["100"]) });
        now.store(T0, Ordering::SeqCst);
        api.source.set_delay(Duration::from_millis(20));
        let cancelled = tokio::time::timeout(Duration::from_millis(90), poller.poll_once()).await;
        assert!(cancelled.is_err(), "the backfill must still be running when cancelled");
        assert!(!poller.is_backfilled());
        assert!(!render(&poller).contains("plum_fuse_calls_total"));
        api.source.set_delay(Duration::ZERO);
        let report = poller.poll_once().await;
        assert!(report.backfill && report.is_success() && poller.is_backfilled(), "{report:?}");
        assert_eq!(totals(&poller), vec![("100".into(), "inbound".into(), 12, 12, 720.0)]);
    }

    #[tokio::test]
    async fn overlapping_polls_count_each_call_once_even_long_ones() {
        let calls = vec![
            call("a", "100", CallType::Inbound, T0 + 10, T0 + 40),
            call("b", "100", CallType::Outbound, T0 + 20, T0 + 50),
            call("long", "100", CallType::Inbound, T0 + 30, T0 + 30 + 1800), // spans 30 polls
            call("c", "200", CallType::Inbound, T0 + 70, T0 + 100),
        ];
        let (mut poller, _api, now) = setup(calls, config(&["100", "200"]));
        for step in 0..=40 {
            now.store(T0 + step * 60, Ordering::SeqCst);
            assert!(poller.poll_once().await.is_success());
        }
        assert_eq!(
            totals(&poller),
            vec![
                ("100".into(), "inbound".into(), 2, 2, 30.0 + 1800.0),
                ("100".into(), "outbound".into(), 1, 1, 30.0),
                ("200".into(), "inbound".into(), 1, 1, 30.0),
            ]
        );
        assert!(poller.metrics().up());
    }

    /// A tiny deterministic generator for the randomized test.
    struct Lcg(u64);

    impl Lcg {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 33) % n
        }
    }

    #[tokio::test]
    async fn counts_equal_the_truth_after_every_poll_and_polls_stay_cheap() {
        let mut rng = Lcg(7);
        let mut calls = Vec::new();
        for i in 0..3_000 {
            let start = T0 - 3 * 3_600 + i64::try_from(rng.below(4 * 3_600)).expect("small");
            // Mostly short calls, a few up to the reach-back.
            let dur = if rng.below(50) == 0 { 1 + rng.below(3_500) } else { 1 + rng.below(300) };
            let end = start + i64::try_from(dur).expect("small");
            calls.push(call(&format!("s{i}"), "100", CallType::Inbound, start, end));
        }
        let (mut poller, api, now) = setup(
            calls.clone(),
            PollerConfig { page_size: PageSize::new(100).expect("page size"), ..config(&["100"]) },
        );
        let (mut polls, mut requests) = (0u64, 0u64);
        let mut t = T0;
        while t < T0 + 3_600 {
            now.store(t, Ordering::SeqCst);
            let report = poller.poll_once().await;
            assert!(report.is_success());
            if !report.backfill {
                polls += 1;
                requests += report.requests;
            }
            let truth =
                calls.iter().filter(|c| c.end <= t && c.end >= DAY0 && c.start >= DAY0 - 3_600).count();
            assert_eq!(totals(&poller).first().map_or(0, |r| r.2), truth as u64, "at {t}");
            t += 5 + i64::try_from(rng.below(20)).expect("small");
        }
        let per_poll = requests as f64 / polls as f64;
        assert!(per_poll < 20.0, "{per_poll} requests per poll");
        // Far fewer calls fetched than a re-download of the reach-back.
        let fetched: u64 = api.source.answered().iter().map(|r| u64::from(r.limit())).sum();
        assert!(fetched > 0);
    }

    #[tokio::test]
    async fn a_call_ending_before_midnight_first_listed_after_it_is_not_counted() {
        let calls = vec![
            call("late", "100", CallType::Inbound, DAY0 + 86_400 - 100, DAY0 + 86_400 - 2),
            call("early", "100", CallType::Inbound, DAY0 + 86_400 - 50, DAY0 + 86_400 + 3),
            call("day", "100", CallType::Outbound, DAY0 + 60_000, DAY0 + 60_010),
        ];
        let (mut poller, api, now) = setup(calls, config(&["100"]));
        now.store(DAY0 + 86_400 - 5, Ordering::SeqCst); // 23:59:55: "late" has not ended
        assert!(poller.poll_once().await.is_success());
        assert_eq!(totals(&poller), vec![("100".into(), "outbound".into(), 1, 1, 10.0)]);
        // The API was slow to list "late": it shows only after midnight.
        api.down.store(true, Ordering::SeqCst);
        now.store(DAY0 + 86_400 - 1, Ordering::SeqCst);
        assert!(!poller.poll_once().await.is_success());
        api.down.store(false, Ordering::SeqCst);
        now.store(DAY0 + 86_400 + 5, Ordering::SeqCst);
        assert!(poller.poll_once().await.is_success());
        assert_eq!(poller.day_start(), DAY0 + 86_400);
        // Reset: "day" is gone, "late" belongs to yesterday, "early" counts.
        assert_eq!(totals(&poller), vec![("100".into(), "inbound".into(), 1, 1, 53.0)]);
        let text = render(&poller);
        assert!(text.contains(r#"plum_fuse_calls_total{number="100",direction="outbound"} 0"#), "{text}");
        // A fresh exporter started now agrees (the value is the API's, not the history's).
        let (mut fresh, _api, fresh_now) = setup(
            vec![
                call("late", "100", CallType::Inbound, DAY0 + 86_400 - 100, DAY0 + 86_400 - 2),
                call("early", "100", CallType::Inbound, DAY0 + 86_400 - 50, DAY0 + 86_400 + 3),
            ],
            config(&["100"]),
        );
        fresh_now.store(DAY0 + 86_400 + 5, Ordering::SeqCst);
        assert!(fresh.poll_once().await.is_success());
        assert_eq!(totals(&fresh), totals(&poller));
    }

    #[tokio::test]
    async fn outage_sets_up_to_zero_and_recovers_without_double_counting() {
        let calls = (0..20)
            .map(|i| call(&format!("c{i}"), "100", CallType::Inbound, T0 + i * 30, T0 + i * 30 + 20))
            .collect();
        let (mut poller, api, now) = setup(calls, config(&["100"]));
        now.store(T0 + 100, Ordering::SeqCst);
        assert!(poller.poll_once().await.is_success());
        api.down.store(true, Ordering::SeqCst);
        for step in 1..=4 {
            now.store(T0 + 100 + step * 60, Ordering::SeqCst);
            let report = poller.poll_once().await;
            assert_eq!(report.errors.len(), 1);
            assert!(!poller.metrics().up());
        }
        api.down.store(false, Ordering::SeqCst);
        now.store(T0 + 1000, Ordering::SeqCst);
        assert!(poller.poll_once().await.is_success());
        assert!(poller.metrics().up());
        assert_eq!(totals(&poller), vec![("100".into(), "inbound".into(), 20, 20, 400.0)]);
        let text = render(&poller);
        assert!(
            text.contains(r#"plum_fuse_exporter_api_requests_total{outcome="server_error"} 4"#),
            "{text}"
        );
        assert!(text.contains(r#"plum_fuse_exporter_polls_total{result="error"} 4"#), "{text}");
        assert!(text.contains("plum_fuse_exporter_detection_lag_seconds_count "), "{text}");
    }

    #[tokio::test]
    async fn a_full_dedupe_set_shortens_the_reach_back_and_never_counts_twice() {
        let calls: Vec<Call> = (0..30)
            .map(|i| call(&format!("c{i}"), "100", CallType::Inbound, T0 - 600 + i * 10, T0 - 590 + i * 10))
            .collect();
        let (mut poller, _api, now) = setup(
            calls,
            PollerConfig { max_tracked_calls: NonZeroUsize::new(10).expect("nonzero"), ..config(&["100"]) },
        );
        for step in 0..5 {
            now.store(T0 + step * 60, Ordering::SeqCst);
            assert!(poller.poll_once().await.is_success());
        }
        assert_eq!(totals(&poller)[0].2, 30);
        let text = render(&poller);
        assert!(text.contains("plum_fuse_exporter_dedupe_evictions_total 20"), "{text}");
        assert!(text.contains("plum_fuse_exporter_tracked_calls 10"), "{text}");
    }

    #[tokio::test]
    async fn unfiltered_polls_label_by_the_deployment_number() {
        let calls = vec![
            call("in", "6175550100", CallType::Inbound, T0, T0 + 10),
            call("out", "2125550199", CallType::Outbound, T0, T0 + 10),
            call("xfer", "2125550123", CallType::Transfer, T0, T0 + 10),
            call("odd", "6175550100", CallType::Other("conference".into()), T0, T0 + 10),
        ];
        let (mut poller, _api, now) = setup(calls, config(&[]));
        now.store(T0 + 60, Ordering::SeqCst);
        assert!(poller.poll_once().await.is_success());
        let labels: Vec<_> = totals(&poller).into_iter().map(|(n, d, c, ..)| (n, d, c)).collect();
        assert_eq!(
            labels,
            vec![
                ("6175550100".into(), "inbound".into(), 1),
                ("unknown".into(), "conference".into(), 1),
                ("unknown".into(), "outbound".into(), 1),
                ("unknown".into(), "transfer".into(), 1),
            ]
        );
    }

    /// `(number, last call end, window seconds)` of every number.
    fn last_calls(p: &Poller<Arc<MemorySource>>) -> Vec<(String, i64, u64)> {
        p.metrics()
            .number_series()
            .into_iter()
            .map(|(n, s)| (n, s.last_call_end, s.no_calls_alert_after.as_secs()))
            .collect()
    }

    #[tokio::test]
    async fn the_last_call_gauge_is_the_anchor_then_the_latest_end_and_resets_at_midnight() {
        let calls = vec![
            call("yesterday", "100", CallType::Inbound, DAY0 - 600, DAY0 - 10), // before the anchor
            call("morning", "100", CallType::Inbound, DAY0 + 3_600, DAY0 + 3_700),
            call("long", "100", CallType::Outbound, DAY0 + 3_000, DAY0 + 4_000), // started earlier, ended later
            call("later", "100", CallType::Inbound, T0 + 100, T0 + 130),
            call("late", "100", CallType::Inbound, DAY0 + 86_400 - 300, DAY0 + 86_400 - 200),
            call("tomorrow", "100", CallType::Inbound, DAY0 + 86_400 + 60, DAY0 + 86_400 + 90),
        ];
        let windows = NoCallsAlertConfig {
            default: Duration::from_secs(1_800),
            per_number: BTreeMap::from([("200".to_owned(), Duration::from_secs(21_600))]),
        };
        let (mut poller, api, now) =
            setup(calls, PollerConfig { no_calls_alert: windows, ..config(&["100", "200"]) });
        now.store(T0, Ordering::SeqCst);
        // Not published while the backfill fails.
        api.down.store(true, Ordering::SeqCst);
        assert!(!poller.poll_once().await.is_success());
        assert!(!render(&poller).contains("plum_fuse_last_call_end_timestamp_seconds"));
        api.down.store(false, Ordering::SeqCst);
        assert!(poller.poll_once().await.is_success());
        // The backfill: the latest end since the anchor; the anchor for a number with none.
        assert_eq!(
            last_calls(&poller),
            vec![("100".into(), DAY0 + 4_000, 1_800), ("200".into(), DAY0, 21_600)]
        );
        let text = render(&poller);
        assert!(
            text.contains(r#"plum_fuse_last_call_end_timestamp_seconds{number="200"} 1699920000"#),
            "{text}"
        );
        now.store(T0 + 200, Ordering::SeqCst);
        assert!(poller.poll_once().await.is_success());
        assert_eq!(last_calls(&poller)[0].1, T0 + 130);
        now.store(DAY0 + 86_400 - 100, Ordering::SeqCst);
        assert!(poller.poll_once().await.is_success());
        assert_eq!(last_calls(&poller)[0].1, DAY0 + 86_400 - 200);
        // Midnight: back to the new anchor, whatever yesterday's last call was.
        now.store(DAY0 + 86_400 + 30, Ordering::SeqCst);
        assert!(poller.poll_once().await.is_success());
        assert_eq!(
            last_calls(&poller),
            vec![("100".into(), DAY0 + 86_400, 1_800), ("200".into(), DAY0 + 86_400, 21_600)]
        );
        now.store(DAY0 + 86_400 + 120, Ordering::SeqCst);
        assert!(poller.poll_once().await.is_success());
        assert_eq!(last_calls(&poller)[0].1, DAY0 + 86_400 + 90);
        // A fresh exporter (a restart, a replica) agrees after its backfill.
        let (mut fresh, _api, fresh_now) = setup(
            vec![call("tomorrow", "100", CallType::Inbound, DAY0 + 86_400 + 60, DAY0 + 86_400 + 90)],
            PollerConfig { no_calls_alert: poller.config.no_calls_alert.clone(), ..config(&["100", "200"]) },
        );
        fresh_now.store(DAY0 + 86_400 + 120, Ordering::SeqCst);
        assert!(fresh.poll_once().await.is_success());
        assert_eq!(last_calls(&fresh), last_calls(&poller));
    }

    #[tokio::test]
    async fn whole_account_mode_gives_each_number_seen_the_default_window_and_named_ones_theirs() {
        let calls = vec![
            call("in", "6175550100", CallType::Inbound, T0, T0 + 10),
            call("out", "2125550199", CallType::Outbound, T0, T0 + 20),
        ];
        let windows = NoCallsAlertConfig {
            default: Duration::from_secs(1_800),
            per_number: BTreeMap::from([("6175550199".to_owned(), Duration::from_secs(21_600))]),
        };
        let (mut poller, _api, now) = setup(calls, PollerConfig { no_calls_alert: windows, ..config(&[]) });
        now.store(T0 + 60, Ordering::SeqCst);
        assert!(poller.poll_once().await.is_success());
        assert_eq!(
            last_calls(&poller),
            vec![
                ("6175550100".into(), T0 + 10, 1_800),
                // Named by its window: known before its first call.
                ("6175550199".into(), DAY0, 21_600),
                ("unknown".into(), T0 + 20, 1_800),
            ]
        );
    }

    #[tokio::test]
    async fn first_unauthorized_poll_stops_run_later_ones_do_not() {
        let (poller, api, now) = setup(Vec::new(), config(&["100"]));
        now.store(T0, Ordering::SeqCst);
        api.unauthorized.store(true, Ordering::SeqCst);
        let err = poller.run(std::future::pending()).await.expect_err("refused");
        let text = format!(
            "{err}: {}",
            std::error::Error::source(&err).map(ToString::to_string).unwrap_or_default()
        );
        assert!(text.contains("number 100") && text.contains("developer key"), "{text}");

        let (mut poller, api, now) = setup(Vec::new(), config(&["100"]));
        now.store(T0, Ordering::SeqCst);
        assert!(poller.poll_once().await.is_success());
        api.unauthorized.store(true, Ordering::SeqCst);
        let report = poller.poll_once().await;
        assert!(report.unauthorized().is_some());
        let text = render(&poller);
        assert!(
            text.contains(r#"plum_fuse_exporter_api_requests_total{outcome="unauthorized"} 1"#),
            "{text}"
        );
        assert!(text.contains("plum_fuse_up 0"), "{text}");
    }

    #[tokio::test]
    async fn run_stops_on_shutdown() {
        let (poller, _api, now) = setup(Vec::new(), config(&["100"]));
        now.store(T0, Ordering::SeqCst);
        let result = tokio::time::timeout(
            Duration::from_secs(5),
            poller.run(tokio::time::sleep(Duration::from_millis(50))),
        )
        .await;
        assert!(matches!(result, Ok(Ok(()))), "{result:?}");
    }

    #[test]
    fn call_series_default_is_zero() {
        assert_eq!(CallSeries::default().calls, 0);
    }
}
