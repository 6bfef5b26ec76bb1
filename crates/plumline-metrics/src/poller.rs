//! [`Poller`]: the background loop that turns call logs into counters.

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::{StreamExt as _, TryStreamExt as _};
use plumline_api::{ApiError, CallPage, CallQuery, CallType, MAX_LIMIT, PageRequest, PageSource, all_pages};
use tracing::{Instrument as _, debug, info, info_span, warn};

use crate::dedupe::{Insert, SeenCalls};
use crate::error::MetricsError;
use crate::metrics::Metrics;

/// The `number` label of calls that cannot be attributed to a deployment
/// number when the exporter polls without `--number` (outbound and transfer
/// calls: their `src` is `Outbound` or a caller, not the deployment).
pub const UNATTRIBUTED_NUMBER: &str = "unknown";

/// The longest wait between polls after repeated failures (unless the
/// interval itself is longer).
pub const MAX_FAILURE_BACKOFF: Duration = Duration::from_secs(300);

/// Where "now" comes from, in UNIX seconds.
///
/// [`SystemClock`] in production; tests share a manual clock with the
/// simulator. Any `Fn() -> i64 + Send + Sync` is a clock.
pub trait Clock: Send + Sync {
    /// The current time, UNIX seconds.
    fn now(&self) -> i64;
}

/// The operating system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

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

/// How the poller polls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollerConfig {
    /// Deployment numbers to poll, each its own query and `number` label.
    /// Empty: one unfiltered query, labelled per call (see the crate docs).
    pub numbers: Vec<String>,
    /// Time between the starts of two polls (> 0).
    pub interval: Duration,
    /// How far back the first poll counts: calls that ended before
    /// `first poll - lookback` are never counted.
    pub lookback: Duration,
    /// The longest call expected. Each poll's window reaches back this far
    /// before the previous poll's end, because the API indexes calls by
    /// their start but lists them only once they end.
    pub max_call_duration: Duration,
    /// Calls per page request (1..=10000).
    pub page_size: u32,
    /// Numbers polled at once (>= 1).
    pub concurrency: usize,
    /// Capacity of each number's dedupe set.
    pub max_tracked_calls: usize,
}

impl Default for PollerConfig {
    fn default() -> Self {
        PollerConfig {
            numbers: Vec::new(),
            interval: Duration::from_secs(60),
            lookback: Duration::from_secs(3600),
            max_call_duration: plumline_api::LONGEST_CALL,
            page_size: plumline_api::DEFAULT_LIMIT,
            concurrency: 4,
            max_tracked_calls: 200_000,
        }
    }
}

impl PollerConfig {
    /// Checks every value; the message names the flag to fix.
    ///
    /// # Errors
    /// [`MetricsError::InvalidConfig`] for a zero interval or concurrency,
    /// a page size outside 1..=10000, a duration beyond 100 years, or a
    /// number given twice or empty.
    pub fn validate(&self) -> Result<(), MetricsError> {
        const CENTURY: Duration = Duration::from_secs(100 * 365 * 86_400);
        let invalid = |m: String| Err(MetricsError::InvalidConfig(m));
        if self.interval.is_zero() {
            return invalid("--interval must be greater than zero (e.g. 30s or 1m)".into());
        }
        if !(1..=MAX_LIMIT).contains(&self.page_size) {
            return invalid(format!(
                "--page-size {} is out of range: the API accepts 1 to {MAX_LIMIT}",
                self.page_size
            ));
        }
        if self.concurrency == 0 {
            return invalid("--concurrency must be at least 1".into());
        }
        if self.max_tracked_calls == 0 {
            return invalid("--max-tracked-calls must be at least 1".into());
        }
        for (flag, d) in [
            ("--interval", self.interval),
            ("--lookback", self.lookback),
            ("--max-call-duration", self.max_call_duration),
        ] {
            if d > CENTURY {
                return invalid(format!("{flag} {} is longer than a century", humanize(d)));
            }
        }
        let mut seen = HashSet::new();
        for number in &self.numbers {
            if number.trim().is_empty() {
                return invalid("--number must not be empty".into());
            }
            if !seen.insert(number) {
                return invalid(format!("--number {number} is given twice"));
            }
        }
        Ok(())
    }
}

fn humanize(d: Duration) -> String {
    format!("{}s", d.as_secs())
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

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
    /// Calls counted for the first time.
    pub counted: u64,
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

/// The state of one polled number.
#[derive(Debug)]
struct Target {
    number: Option<String>,
    /// Calls that ended before this are never counted (first poll - lookback).
    count_floor: Option<i64>,
    /// End of the last window polled to the end.
    watermark: Option<i64>,
    seen: SeenCalls,
}

/// Polls the API every interval and counts each completed call once.
///
/// For each number the window is `[watermark - max_call_duration, now]`
/// (the first: `[now - lookback - max_call_duration, now]`), paged through
/// in full. New `session_id`s are counted and remembered; a window polled
/// to the end moves the watermark to `now` and forgets ids that no later
/// window can return. A window that fails part-way keeps its watermark, so
/// the next poll covers it again, and the ids counted before the failure
/// keep those calls from being counted twice. Each poll therefore costs the
/// calls of one interval plus the overlap, not the history.
///
/// ## Memory Usage
/// One [`SeenCalls`] per number, holding the calls of the overlap plus one
/// interval (at most `max_tracked_calls`), and one page at a time.
pub struct Poller<S> {
    source: S,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    config: PollerConfig,
    targets: Vec<Target>,
}

impl<S> fmt::Debug for Poller<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Poller")
            .field("config", &self.config)
            .field("targets", &self.targets)
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
        // Zero series for the documented directions of each polled number:
        // "no calls yet" is a 0, not a missing series.
        for number in &config.numbers {
            for direction in [CallType::Inbound, CallType::Outbound, CallType::Transfer] {
                metrics.touch_series(number, direction.as_str());
            }
        }
        let numbers: Vec<Option<String>> = if config.numbers.is_empty() {
            vec![None]
        } else {
            config.numbers.iter().cloned().map(Some).collect()
        };
        let targets = numbers
            .into_iter()
            .map(|number| Target {
                number,
                count_floor: None,
                watermark: None,
                seen: SeenCalls::new(config.max_tracked_calls),
            })
            .collect();
        Ok(Poller { source, metrics, clock: Arc::new(SystemClock), config, targets })
    }

    /// The same poller on another clock (tests drive a simulator's clock).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The metrics this poller records into.
    #[must_use]
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Polls every number once (up to `concurrency` at a time) and updates
    /// the metrics, `plum_fuse_up` included.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future mid-poll leaves every call counted
    /// so far remembered and every watermark where it was, so the next poll
    /// covers the rest without counting anything twice.
    pub async fn poll_once(&mut self) -> PollReport {
        let started = Instant::now();
        let now = self.clock.now();
        let settings = Settings {
            lookback: secs(self.config.lookback),
            overlap: secs(self.config.max_call_duration),
            page_size: self.config.page_size,
        };
        let source = Instrumented { inner: &self.source, metrics: &self.metrics };
        let (source, metrics, settings) = (&source, &*self.metrics, &settings);
        // Futures built eagerly (no closure inside the stream) keep the poll
        // future `Send`, so callers may spawn it.
        let polls: Vec<_> =
            self.targets.iter_mut().map(|target| poll_one(source, metrics, settings, target, now)).collect();
        let results: Vec<_> =
            futures::stream::iter(polls).buffer_unordered(self.config.concurrency).collect().await;

        let mut report = PollReport { window_end: now, counted: 0, errors: Vec::new() };
        let (mut tracked, mut overflowed) = (0, 0);
        for (number, seen, result) in results {
            tracked += seen;
            match result {
                Ok(done) => {
                    report.counted += done.counted;
                    overflowed += done.overflowed;
                }
                Err(failed) => {
                    report.counted += failed.counted;
                    overflowed += failed.overflowed;
                    warn!(number = number.as_deref().unwrap_or("*"), kind = failed.error.kind(), error = %plumline_api::error_chain(&failed.error), "poll failed");
                    report.errors.push(TargetError { number, error: failed.error });
                }
            }
        }
        let elapsed = started.elapsed().as_secs_f64();
        self.metrics.record_dedupe(tracked, overflowed);
        self.metrics.record_poll(report.is_success(), now, elapsed);
        if overflowed > 0 {
            warn!(
                overflowed,
                capacity = self.config.max_tracked_calls,
                "dedupe set full; raise --max-tracked-calls"
            );
        }
        info!(
            window_end = now,
            counted = report.counted,
            failed = report.errors.len(),
            tracked,
            elapsed_s = elapsed,
            "poll done"
        );
        report
    }

    /// Polls now and then every interval until `shutdown` completes.
    ///
    /// After consecutive failed polls the wait doubles, from the interval up
    /// to [`MAX_FAILURE_BACKOFF`] (or the interval, if longer); the first
    /// success restores the interval.
    ///
    /// # Errors
    /// [`MetricsError::Unauthorized`] if the very first poll is refused for
    /// bad credentials: better a clear error at startup than an exporter
    /// that serves zeros. Later refusals only set `plum_fuse_up` to 0 and
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
            let delay = next_delay(self.config.interval, failures);
            debug!(delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX), failures, "next poll");
            tokio::select! {
                () = tokio::time::sleep_until(started + delay) => {}
                () = &mut shutdown => return Ok(()),
            }
        }
    }
}

/// The wait between poll starts after `failures` consecutive failed polls.
#[must_use]
pub fn next_delay(interval: Duration, failures: u32) -> Duration {
    if failures <= 1 {
        return interval;
    }
    let cap = interval.max(MAX_FAILURE_BACKOFF);
    interval.saturating_mul(2u32.saturating_pow(failures - 1)).min(cap)
}

/// Values of one poll shared by every target.
#[derive(Debug)]
struct Settings {
    lookback: i64,
    overlap: i64,
    page_size: u32,
}

#[derive(Debug, Default)]
struct TargetPoll {
    counted: u64,
    overflowed: u64,
}

#[derive(Debug)]
struct FailedPoll {
    counted: u64,
    overflowed: u64,
    error: ApiError,
}

/// [`poll_target`] in a span, with the number and the dedupe size.
async fn poll_one<S: PageSource>(
    source: &S,
    metrics: &Metrics,
    settings: &Settings,
    target: &mut Target,
    now: i64,
) -> (Option<String>, usize, Result<TargetPoll, FailedPoll>) {
    let span = info_span!("poll", number = target.number.as_deref().unwrap_or("*"));
    let result = poll_target(source, metrics, settings, target, now).instrument(span).await;
    (target.number.clone(), target.seen.len(), result)
}

/// Polls one number's window to the end; see [`Poller`].
async fn poll_target<S: PageSource>(
    source: &S,
    metrics: &Metrics,
    settings: &Settings,
    target: &mut Target,
    now: i64,
) -> Result<TargetPoll, FailedPoll> {
    let floor = *target.count_floor.get_or_insert(now.saturating_sub(settings.lookback));
    let from = target.watermark.unwrap_or(floor).saturating_sub(settings.overlap).clamp(0, now.max(0));
    let mut done = TargetPoll::default();
    let result: Result<(), ApiError> = async {
        let query = CallQuery::new(from, now.max(0))?.with_number(target.number.clone());
        let mut pages = std::pin::pin!(all_pages(source, query, settings.page_size));
        while let Some(page) = pages.try_next().await? {
            count_page(metrics, target, floor, &page, &mut done);
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => {
            target.watermark = Some(now);
            let evicted = target.seen.evict_started_before(now.saturating_sub(settings.overlap));
            debug!(
                from,
                to = now,
                counted = done.counted,
                evicted,
                tracked = target.seen.len(),
                "window done"
            );
            Ok(done)
        }
        Err(error) => Err(FailedPoll { counted: done.counted, overflowed: done.overflowed, error }),
    }
}

fn count_page(metrics: &Metrics, target: &mut Target, floor: i64, page: &CallPage, done: &mut TargetPoll) {
    for call in &page.calls {
        if call.end < floor {
            continue;
        }
        let fresh = match target.seen.insert(&call.session_id, call.start) {
            Insert::Seen => false,
            Insert::New => true,
            Insert::NewEvictedOldest => {
                done.overflowed += 1;
                true
            }
        };
        if fresh {
            let number =
                target.number.as_deref().unwrap_or_else(|| attributed_number(&call.call_type, &call.dest));
            metrics.record_call(number, call.call_type.as_str(), call.duration_secs());
            done.counted += 1;
        }
    }
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

/// A [`PageSource`] that records each request's outcome and latency.
struct Instrumented<'a, S> {
    inner: &'a S,
    metrics: &'a Metrics,
}

impl<S: PageSource> PageSource for Instrumented<'_, S> {
    async fn fetch_page(&self, request: &PageRequest) -> Result<CallPage, ApiError> {
        let started = Instant::now();
        let result = self.inner.fetch_page(request).await;
        let outcome = match &result {
            Ok(_) => "success",
            Err(e) => e.kind(),
        };
        self.metrics.record_api_request(outcome, started.elapsed().as_secs_f64());
        result
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

    use plumline_api::Call;

    use super::*;
    use crate::metrics::CallSeries;

    /// An in-memory API: calls appear once `now >= end` (as the real one
    /// lists only completed calls), matched by `start` in the inclusive
    /// window, ordered by start.
    struct FakeApi {
        calls: Vec<Call>,
        now: Arc<AtomicI64>,
        down: AtomicBool,
        unauthorized: AtomicBool,
        requests: Mutex<Vec<(i64, i64)>>,
    }

    impl PageSource for FakeApi {
        async fn fetch_page(&self, request: &PageRequest) -> Result<CallPage, ApiError> {
            if self.unauthorized.load(Ordering::SeqCst) {
                return Err(ApiError::Unauthorized { status: 401, message: None });
            }
            if self.down.load(Ordering::SeqCst) {
                return Err(ApiError::Server { status: 500, message: Some("database error".into()) });
            }
            let q = request.query();
            self.requests.lock().expect("lock").push((q.start(), q.end()));
            let now = self.now.load(Ordering::SeqCst);
            let matching: Vec<&Call> = self
                .calls
                .iter()
                .filter(|c| c.end <= now && (q.start()..=q.end()).contains(&c.start))
                .filter(|c| q.number().is_none_or(|n| n == c.dest))
                .collect();
            let offset = usize::try_from(request.offset()).expect("offset");
            let calls =
                matching.iter().skip(offset).take(request.limit() as usize).map(|c| (*c).clone()).collect();
            Ok(CallPage { calls, total_calls: matching.len() as u64 })
        }
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

    fn setup(calls: Vec<Call>, config: PollerConfig) -> (Poller<Arc<FakeApi>>, Arc<FakeApi>, Arc<AtomicI64>) {
        let now = Arc::new(AtomicI64::new(0));
        let api = Arc::new(FakeApi {
            calls,
            now: Arc::clone(&now),
            down: AtomicBool::new(false),
            unauthorized: AtomicBool::new(false),
            requests: Mutex::new(Vec::new()),
        });
        let clock = Arc::clone(&now);
        let poller = Poller::new(Arc::clone(&api), Arc::new(Metrics::new().expect("metrics")), config)
            .expect("config")
            .with_clock(Arc::new(move || clock.load(Ordering::SeqCst)));
        (poller, api, now)
    }

    fn config(numbers: &[&str]) -> PollerConfig {
        PollerConfig {
            numbers: numbers.iter().map(|n| (*n).to_owned()).collect(),
            interval: Duration::from_secs(60),
            lookback: Duration::from_secs(600),
            max_call_duration: Duration::from_secs(3600),
            page_size: 2,
            concurrency: 2,
            max_tracked_calls: 1_000,
        }
    }

    type Row = (String, String, u64, u64, f64);

    fn totals(p: &Poller<Arc<FakeApi>>) -> Vec<Row> {
        p.metrics()
            .call_series()
            .into_iter()
            .filter(|(_, s)| s.calls > 0)
            .map(|((n, d), s)| (n, d, s.calls, s.duration_count, s.duration_sum))
            .collect()
    }

    const T0: i64 = 1_700_000_000;

    #[tokio::test]
    async fn overlapping_polls_count_each_call_once_even_long_ones() {
        let calls = vec![
            call("old", "100", CallType::Inbound, T0 - 2000, T0 - 1000), // ended before the lookback
            call("recent", "100", CallType::Inbound, T0 - 300, T0 - 200),
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
                ("100".into(), "inbound".into(), 3, 3, 100.0 + 30.0 + 1800.0),
                ("100".into(), "outbound".into(), 1, 1, 30.0),
                ("200".into(), "inbound".into(), 1, 1, 30.0),
            ]
        );
        assert!(poller.metrics().up());
    }

    #[tokio::test]
    async fn polled_numbers_start_at_zero() {
        let (poller, _api, _now) = setup(Vec::new(), config(&["100"]));
        let series = poller.metrics().call_series();
        let keys: Vec<_> = series.keys().map(|(n, d)| format!("{n}/{d}")).collect();
        assert_eq!(keys, ["100/inbound", "100/outbound", "100/transfer"]);
        assert!(series.values().all(|s| *s == CallSeries::default()));
    }

    #[tokio::test]
    async fn windows_reach_back_by_the_overlap_only() {
        let (mut poller, api, now) = setup(Vec::new(), config(&["100"]));
        for t in [T0, T0 + 60, T0 + 120] {
            now.store(t, Ordering::SeqCst);
            poller.poll_once().await;
        }
        let windows = api.requests.lock().expect("lock").clone();
        assert_eq!(windows, vec![(T0 - 600 - 3600, T0), (T0 - 3600, T0 + 60), (T0 + 60 - 3600, T0 + 120)]);
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
        let text = String::from_utf8(poller.metrics().render().expect("render")).expect("utf-8");
        assert!(
            text.contains(r#"plum_fuse_exporter_api_requests_total{outcome="server_error"} 4"#),
            "{text}"
        );
        assert!(text.contains(r#"plum_fuse_exporter_polls_total{result="error"} 4"#), "{text}");
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
        let text = String::from_utf8(poller.metrics().render().expect("render")).expect("utf-8");
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
    fn configs_are_validated() {
        type Change = fn(&mut PollerConfig);
        let ok = config(&["1"]);
        assert!(ok.validate().is_ok());
        let cases: [(Change, &str); 5] = [
            (|c| c.interval = Duration::ZERO, "--interval must be greater than zero"),
            (|c| c.page_size = 0, "--page-size"),
            (|c| c.concurrency = 0, "--concurrency"),
            (|c| c.numbers = vec!["1".into(), "1".into()], "given twice"),
            (|c| c.lookback = Duration::from_secs(u64::MAX / 2), "century"),
        ];
        for (change, needle) in cases {
            let mut c = ok.clone();
            change(&mut c);
            let err = c.validate().expect_err(needle).to_string();
            assert!(err.contains(needle), "{err}");
        }
    }

    #[test]
    fn failure_backoff_doubles_up_to_a_cap() {
        let i = Duration::from_secs(60);
        let got: Vec<u64> = (0..7).map(|f| next_delay(i, f).as_secs()).collect();
        assert_eq!(got, vec![60, 60, 120, 240, 300, 300, 300]);
        assert_eq!(
            next_delay(Duration::from_secs(900), 5),
            Duration::from_secs(900),
            "never below the interval"
        );
        assert_eq!(next_delay(Duration::from_secs(1), 3), Duration::from_secs(4));
    }
}
