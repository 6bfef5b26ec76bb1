//! [`Metrics`]: the exporter's Prometheus registry and every metric in it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prometheus::{
    Encoder as _, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::calls::{CallFamilies, FamilyHelp};
use crate::error::MetricsError;
use crate::poller::NoCallsAlertConfig;

/// The `Content-Type` of a scrape: the text exposition format 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upper bounds (seconds) of `plum_fuse_call_duration_seconds`.
///
/// Phone calls run from a few seconds (hang-ups, IVR menus) to hours
/// (conference lines, forgotten calls); the buckets are dense under five
/// minutes, where most calls fall, and reach the default reach-back of
/// 4 h, so quantiles stay meaningful from seconds to hours.
pub const CALL_DURATION_BUCKETS: [f64; 12] =
    [5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0];

/// Upper bounds (seconds) of `plum_fuse_exporter_detection_lag_seconds`:
/// from a fraction of a short poll interval to an hour (a long outage).
pub const DETECTION_LAG_BUCKETS: [f64; 12] =
    [1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0];

/// Upper bounds (seconds) for the API request and poll duration histograms.
pub const LATENCY_BUCKETS: [f64; 12] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0];

/// Every metric the exporter serves.
///
/// The call families (`plum_fuse_calls_total`,
/// `plum_fuse_call_duration_seconds`), one series per number and
/// direction, and the per-number gauges
/// `plum_fuse_last_call_end_timestamp_seconds` and
/// `plum_fuse_no_calls_alert_after_seconds`, live in a compact table
/// rendered straight to text, as scrapes of thousands of series must stay
/// fast; all four are published together, once the backfill is done
/// ([`Metrics::publish_calls`]). The exporter's own
/// health and the process metrics live in a `prometheus` [`Registry`] of
/// their own (not the crate's global default, so several exporters, in
/// tests say, can share a process). A scrape only reads: rendering never
/// waits on the API.
///
/// ## Memory Usage
/// About 250 bytes per `(number, direction)` pair plus 100 per number:
/// 850 KB for 1,000 numbers × 3 directions. Series are never removed while
/// the process runs, as counters must not vanish between scrapes.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    calls: CallFamilies,
    up: IntGauge,
    last_success: Gauge,
    api_requests: IntCounterVec,
    api_request_duration: Histogram,
    poll_duration: Histogram,
    polls: IntCounterVec,
    tracked_calls: IntGauge,
    dedupe_evictions: IntCounter,
    detection_lag: Histogram,
    backfill_done: IntGauge,
    day_start: IntGauge,
    /// Whether the call families are rendered: only once the backfill is
    /// done, as partial counts would read as a counter reset.
    calls_published: AtomicBool,
}

/// Counter and histogram figures of one `(number, direction)` series.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CallSeries {
    /// `plum_fuse_calls_total`.
    pub calls: u64,
    /// `plum_fuse_call_duration_seconds_count`.
    pub duration_count: u64,
    /// `plum_fuse_call_duration_seconds_sum`.
    pub duration_sum: f64,
}

/// The per-number gauges of one number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NumberSeries {
    /// `plum_fuse_last_call_end_timestamp_seconds`: the end (UNIX seconds)
    /// of the latest-ending call counted since the anchor, or the anchor.
    pub last_call_end: i64,
    /// `plum_fuse_no_calls_alert_after_seconds`.
    pub no_calls_alert_after: Duration,
}

const LAG: &str = "Figures lag by up to one poll interval.";
const DAY: &str = "Counts the calls that ended since 00:00 UTC today, as the API lists them, and resets at each UTC midnight: query it with increase() or rate(), and with max by (number, direction) across replicas.";

impl Metrics {
    /// A registry holding every metric, with process metrics on Linux.
    ///
    /// # Errors
    /// [`MetricsError::Prometheus`] if a metric is malformed (a bug).
    #[allow(clippy::too_many_lines, reason = "one declaration per metric, read top to bottom")]
    pub fn new() -> Result<Self, MetricsError> {
        let registry = Registry::new();
        let calls_help = format!(
            "Completed calls in the Plum Fuse call logs, by deployment number and call type (direction), each counted once. {DAY} {LAG}"
        );
        let durations_help = format!(
            "Duration (end - start) of completed calls, by deployment number and call type (direction). {DAY} {LAG}"
        );
        let last_call_end_help = format!(
            "UNIX time of the end of the latest-ending completed call counted for the number since 00:00 UTC today (the anchor the call families count from), as the API lists them, or that 00:00 UTC when none was counted yet: right after midnight the value is at least the new day's 00:00 UTC, whenever the last call was. Alert on time() minus this against plum_fuse_no_calls_alert_after_seconds; take max by (number) across replicas. {LAG}"
        );
        let calls = CallFamilies::new(FamilyHelp {
            calls: &calls_help,
            durations: &durations_help,
            last_call_end: &last_call_end_help,
            no_calls_alert_after: "Seconds without a completed call after which the \"no calls\" alert should fire for the number, as configured on the exporter (a default and per-number overrides).",
        });
        let up = IntGauge::new(
            "plum_fuse_up",
            format!(
                "1 if the backfill from 00:00 UTC is done and the last poll of the Plum Fuse API succeeded for every number, 0 otherwise. {LAG}"
            ),
        )?;
        let last_success = Gauge::new(
            "plum_fuse_exporter_last_success_timestamp_seconds",
            "UNIX time of the end of the window of the last poll that succeeded for every number; 0 before the first.",
        )?;
        let api_requests = IntCounterVec::new(
            Opts::new(
                "plum_fuse_exporter_api_requests_total",
                "Requests to the Plum Fuse API (counts and pages) by outcome (success, unauthorized, server_error, timeout, transport, ...), each after the client's own retries.",
            ),
            &["outcome"],
        )?;
        let api_request_duration = Histogram::with_opts(
            HistogramOpts::new(
                "plum_fuse_exporter_api_request_duration_seconds",
                "Time to fetch one page from the Plum Fuse API, retries included.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )?;
        let poll_duration = Histogram::with_opts(
            HistogramOpts::new(
                "plum_fuse_exporter_poll_duration_seconds",
                "Time taken by one poll of every number (the backfill included).",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )?;
        let polls = IntCounterVec::new(
            Opts::new(
                "plum_fuse_exporter_polls_total",
                "Polls of every number by result (success or error).",
            ),
            &["result"],
        )?;
        let tracked_calls = IntGauge::new(
            "plum_fuse_exporter_tracked_calls",
            "Session ids held by the dedupe sets (every call listed within the reach-back), summed over numbers.",
        )?;
        let dedupe_evictions = IntCounter::new(
            "plum_fuse_exporter_dedupe_evictions_total",
            "Session ids dropped early because a number's dedupe set was full; the poller then reaches back less far for that number, so long calls may be missed. Raise the tracked-calls capacity if this grows.",
        )?;
        let detection_lag = Histogram::with_opts(
            HistogramOpts::new(
                "plum_fuse_exporter_detection_lag_seconds",
                "Time from a call's end to the poll that counted it (calls counted by the backfill excluded).",
            )
            .buckets(DETECTION_LAG_BUCKETS.to_vec()),
        )?;
        let backfill_done = IntGauge::new(
            "plum_fuse_exporter_backfill_done",
            "1 once the calls that ended since 00:00 UTC have been counted after start; the call families are published only then.",
        )?;
        let day_start = IntGauge::new(
            "plum_fuse_exporter_day_start_timestamp_seconds",
            "UNIX time of the 00:00 UTC the call families count from; 0 before the backfill.",
        )?;
        let build_info = IntGaugeVec::new(
            Opts::new(
                "plum_fuse_exporter_build_info",
                "Always 1; the version label says which plumline runs.",
            ),
            &["version"],
        )?;
        build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        for outcome in ["success", "error"] {
            polls.with_label_values(&[outcome]);
        }
        api_requests.with_label_values(&["success"]);

        registry.register(Box::new(up.clone()))?;
        registry.register(Box::new(last_success.clone()))?;
        registry.register(Box::new(api_requests.clone()))?;
        registry.register(Box::new(api_request_duration.clone()))?;
        registry.register(Box::new(poll_duration.clone()))?;
        registry.register(Box::new(polls.clone()))?;
        registry.register(Box::new(tracked_calls.clone()))?;
        registry.register(Box::new(dedupe_evictions.clone()))?;
        registry.register(Box::new(detection_lag.clone()))?;
        registry.register(Box::new(backfill_done.clone()))?;
        registry.register(Box::new(day_start.clone()))?;
        registry.register(Box::new(build_info))?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))?;

        Ok(Metrics {
            registry,
            calls,
            up,
            last_success,
            api_requests,
            api_request_duration,
            poll_duration,
            polls,
            tracked_calls,
            dedupe_evictions,
            detection_lag,
            backfill_done,
            day_start,
            calls_published: AtomicBool::new(false),
        })
    }

    /// The registry, to add collectors of one's own.
    #[must_use]
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Creates the series of `(number, direction)` at zero if missing, so a
    /// polled number shows (and can alert on) zero calls before its first.
    pub fn touch_series(&self, number: &str, direction: &str) {
        self.calls.touch(number, direction);
    }

    /// Counts one completed call of `duration_secs` (negative durations
    /// from a broken upstream count as 0), leaving the number's last call
    /// as it is; see [`Metrics::record_call_ended_at`].
    pub fn record_call(&self, number: &str, direction: &str, duration_secs: i64) {
        self.calls.record(number, direction, duration_secs.max(0).unsigned_abs(), None);
    }

    /// Counts one completed call, as [`Metrics::record_call`], that ended
    /// at `end` (UNIX seconds): `plum_fuse_last_call_end_timestamp_seconds`
    /// of `number` becomes the latest such end since the anchor.
    pub fn record_call_ended_at(&self, number: &str, direction: &str, duration_secs: i64, end: i64) {
        self.calls.record(number, direction, duration_secs.max(0).unsigned_abs(), Some(end));
    }

    /// Creates the per-number gauges of `number` if missing, with no call
    /// series: a number named only by its "no calls" window.
    pub fn touch_number(&self, number: &str) {
        self.calls.touch_number(number);
    }

    /// Sets the "no calls" windows published as
    /// `plum_fuse_no_calls_alert_after_seconds`, for the numbers known and
    /// those to come. The [`Poller`](crate::Poller) sets them from its
    /// config.
    pub fn set_no_calls_alert(&self, windows: &NoCallsAlertConfig) {
        self.calls.set_windows(windows);
    }

    /// Sets `plum_fuse_up` and, on success, the last-success timestamp.
    pub fn record_poll(&self, ok: bool, window_end: i64, elapsed_secs: f64) {
        self.up.set(i64::from(ok));
        self.poll_duration.observe(elapsed_secs);
        self.polls.with_label_values(&[if ok { "success" } else { "error" }]).inc();
        if ok {
            self.last_success.set(window_end as f64);
        }
    }

    /// Counts one page request with its outcome label.
    pub fn record_api_request(&self, outcome: &str, elapsed_secs: f64) {
        self.api_requests.with_label_values(&[outcome]).inc();
        self.api_request_duration.observe(elapsed_secs);
    }

    /// Sets the size of the dedupe sets and counts early evictions.
    pub fn record_dedupe(&self, tracked: usize, evicted: u64) {
        self.tracked_calls.set(i64::try_from(tracked).unwrap_or(i64::MAX));
        self.dedupe_evictions.inc_by(evicted);
    }

    /// Observes the detection lag of one counted call, in seconds.
    pub fn record_detection_lag(&self, lag_secs: f64) {
        self.detection_lag.observe(lag_secs.max(0.0));
    }

    /// Marks the backfill from `day_start` done: from now on the call
    /// families and the per-number gauges are rendered.
    pub fn publish_calls(&self, day_start: i64) {
        self.calls.set_anchor(day_start);
        self.day_start.set(day_start);
        self.backfill_done.set(1);
        self.calls_published.store(true, Ordering::Release);
    }

    /// Whether the call families are rendered (the backfill is done).
    #[must_use]
    pub fn calls_published(&self) -> bool {
        self.calls_published.load(Ordering::Acquire)
    }

    /// Sets every call series to zero (keeping them) and every number's last
    /// call to `day_start`, for the UTC day that starts there.
    pub fn reset_calls(&self, day_start: i64) {
        self.calls.reset(day_start);
        self.day_start.set(day_start);
    }

    /// The current value of `plum_fuse_up`.
    #[must_use]
    pub fn up(&self) -> bool {
        self.up.get() == 1
    }

    /// Every call series, keyed by `(number, direction)`.
    #[must_use]
    pub fn call_series(&self) -> BTreeMap<(String, String), CallSeries> {
        self.calls.snapshot()
    }

    /// The per-number gauges, keyed by number (rendered only once
    /// published, as the call families).
    #[must_use]
    pub fn number_series(&self) -> BTreeMap<String, NumberSeries> {
        self.calls.number_snapshot()
    }

    /// Renders every metric in the text exposition format; the call
    /// families and per-number gauges only once [`Metrics::publish_calls`]
    /// was called.
    ///
    /// Reads atomics only; never waits on the poller or the API.
    ///
    /// # Errors
    /// [`MetricsError::Prometheus`] if encoding fails (a bug).
    pub fn render(&self) -> Result<Vec<u8>, MetricsError> {
        let mut out = String::new();
        if self.calls_published() {
            self.calls.render(&mut out);
        }
        let families = self.registry.gather();
        let mut out = out.into_bytes();
        TextEncoder::new().encode(&families, &mut out)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(m: &Metrics) -> String {
        m.publish_calls(0);
        String::from_utf8(m.render().expect("render")).expect("utf-8")
    }

    #[test]
    fn buckets_fit_phone_calls() {
        assert!(CALL_DURATION_BUCKETS.windows(2).all(|w| w[0] < w[1]), "strictly increasing");
        let (first, last) = (CALL_DURATION_BUCKETS.first().copied(), CALL_DURATION_BUCKETS.last().copied());
        assert!(first.is_some_and(|b| b <= 5.0), "resolves short calls");
        assert!(last.is_some_and(|b| (b - 14_400.0).abs() < f64::EPSILON), "reaches the reach-back");
        assert!(DETECTION_LAG_BUCKETS.windows(2).all(|w| w[0] < w[1]));
        assert!(LATENCY_BUCKETS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn calls_land_in_their_series_and_buckets() {
        let m = Metrics::new().expect("metrics");
        // (number, direction, duration, expected bucket le)
        let calls =
            [("100", "inbound", 3, "5"), ("100", "inbound", 61, "120"), ("200", "outbound", 4000, "+Inf")];
        for (number, direction, duration, _) in calls {
            m.record_call(number, direction, duration);
        }
        m.record_call("100", "inbound", -5); // broken upstream: counts as 0 s
        let series = m.call_series();
        let s = series[&("100".to_owned(), "inbound".to_owned())];
        assert_eq!((s.calls, s.duration_count), (3, 3));
        assert!((s.duration_sum - 64.0).abs() < 1e-9, "{}", s.duration_sum);
        let t = text(&m);
        assert!(t.contains(r#"plum_fuse_calls_total{number="200",direction="outbound"} 1"#), "{t}");
        assert!(
            t.contains(
                r#"plum_fuse_call_duration_seconds_bucket{number="100",direction="inbound",le="5"} 2"#
            ),
            "{t}"
        );
        assert!(
            t.contains(
                r#"plum_fuse_call_duration_seconds_bucket{number="200",direction="outbound",le="3600"} 0"#
            ),
            "{t}"
        );
        assert!(
            t.contains(
                r#"plum_fuse_call_duration_seconds_bucket{number="200",direction="outbound",le="+Inf"} 1"#
            ),
            "{t}"
        );
    }

    #[test]
    fn exposition_has_the_contract_metrics_and_help() {
        let m = Metrics::new().expect("metrics");
        m.record_call("1", "inbound", 1);
        m.record_poll(true, 1_700_000_000, 0.5);
        m.record_api_request("success", 0.1);
        let t = text(&m);
        for (name, kind) in [
            ("plum_fuse_calls_total", "counter"),
            ("plum_fuse_call_duration_seconds", "histogram"),
            ("plum_fuse_up", "gauge"),
            ("plum_fuse_exporter_last_success_timestamp_seconds", "gauge"),
            ("plum_fuse_exporter_api_requests_total", "counter"),
            ("plum_fuse_exporter_api_request_duration_seconds", "histogram"),
            ("plum_fuse_exporter_poll_duration_seconds", "histogram"),
            ("plum_fuse_exporter_build_info", "gauge"),
        ] {
            assert!(t.contains(&format!("# TYPE {name} {kind}\n")), "{name} {kind}\n{t}");
            assert!(t.contains(&format!("# HELP {name} ")), "{name}");
        }
        for lagging in ["plum_fuse_calls_total", "plum_fuse_call_duration_seconds", "plum_fuse_up"] {
            let help = t.lines().find(|l| l.starts_with(&format!("# HELP {lagging} "))).expect("help");
            assert!(help.contains("lag by up to one poll interval"), "{help}");
        }
        assert!(t.contains("plum_fuse_up 1\n"), "{t}");
        assert!(t.contains("plum_fuse_exporter_last_success_timestamp_seconds 1700000000\n"), "{t}");
        assert!(t.contains(&format!(
            "plum_fuse_exporter_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )));
        m.record_poll(false, 1_700_000_060, 0.5);
        let t = text(&m);
        assert!(t.contains("plum_fuse_up 0\n"), "{t}");
        assert!(
            t.contains("plum_fuse_exporter_last_success_timestamp_seconds 1700000000\n"),
            "kept on failure"
        );
    }

    #[test]
    fn call_families_appear_only_once_published_and_reset_to_zero() {
        let m = Metrics::new().expect("metrics");
        m.touch_series("1", "inbound");
        m.record_call("1", "inbound", 30);
        let before = String::from_utf8(m.render().expect("render")).expect("utf-8");
        assert!(!before.contains("plum_fuse_call"), "{before}");
        assert!(before.contains("plum_fuse_exporter_backfill_done 0\n"), "{before}");
        m.publish_calls(86_400);
        let after = String::from_utf8(m.render().expect("render")).expect("utf-8");
        assert!(after.contains(r#"plum_fuse_calls_total{number="1",direction="inbound"} 1"#), "{after}");
        assert!(after.contains("plum_fuse_exporter_backfill_done 1\n"), "{after}");
        m.reset_calls(2 * 86_400);
        let reset = String::from_utf8(m.render().expect("render")).expect("utf-8");
        assert!(reset.contains(r#"plum_fuse_calls_total{number="1",direction="inbound"} 0"#), "{reset}");
        assert!(
            reset.contains(r#"plum_fuse_call_duration_seconds_sum{number="1",direction="inbound"} 0"#),
            "{reset}"
        );
        assert!(reset.contains("plum_fuse_exporter_day_start_timestamp_seconds 172800\n"), "{reset}");
    }

    #[test]
    fn per_number_gauges_appear_only_once_published() {
        let m = Metrics::new().expect("metrics");
        m.touch_series("1", "inbound");
        m.record_call_ended_at("1", "inbound", 30, 86_400 + 500);
        let before = String::from_utf8(m.render().expect("render")).expect("utf-8");
        for name in ["plum_fuse_last_call_end_timestamp_seconds", "plum_fuse_no_calls_alert_after_seconds"] {
            assert!(!before.contains(name), "{name} before the backfill: {before}");
        }
        m.publish_calls(86_400);
        let after = String::from_utf8(m.render().expect("render")).expect("utf-8");
        for line in [
            "# TYPE plum_fuse_last_call_end_timestamp_seconds gauge",
            r#"plum_fuse_last_call_end_timestamp_seconds{number="1"} 86900"#,
            "# TYPE plum_fuse_no_calls_alert_after_seconds gauge",
            r#"plum_fuse_no_calls_alert_after_seconds{number="1"} 7200"#,
        ] {
            assert!(after.lines().any(|l| l == line), "missing {line}\n{after}");
        }
        let help = after
            .lines()
            .find(|l| l.starts_with("# HELP plum_fuse_last_call_end_timestamp_seconds "))
            .expect("help");
        for needle in
            ["00:00 UTC", "latest-ending", "none was counted", "right after midnight", "lag by up to"]
        {
            assert!(help.contains(needle), "{needle}: {help}");
        }
        m.reset_calls(2 * 86_400);
        assert_eq!(
            m.number_series()["1"],
            NumberSeries { last_call_end: 2 * 86_400, no_calls_alert_after: Duration::from_secs(7_200) }
        );
    }

    #[test]
    fn registries_are_independent() {
        let a = Metrics::new().expect("a");
        let b = Metrics::new().expect("b");
        a.record_call("1", "inbound", 1);
        assert!(b.call_series().is_empty());
    }
}
