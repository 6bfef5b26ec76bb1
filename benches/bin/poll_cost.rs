//! The exporter's API cost per poll against the in-process simulator in
//! live mode: requests and body bytes per poll for one busy number (and
//! for the whole account), checked against the target of issue 10.
//!
//! ```text
//! cargo run --release -p benches --bin poll-cost -- [--polls N] [--hour H] [--calls-per-day N] [--drift N] [--count-search]
//! ```
//!
//! The simulator's clock moves 5 s per poll (`--interval 5s`) from each of
//! 03:00, 09:00 and 14:00 UTC of a Tuesday (night, the morning climb, the
//! busiest hour; `--hour H` for one of them); the reach-back is the default
//! 4 h. "New bytes" are the calls counted by a poll times the mean bytes per
//! call of the backfill's pages. Exit 1 when a count is off; the targets are
//! reported, not enforced. `--drift N` moves the clock 1 s every N requests
//! during a poll, so calls end while a poll runs, as on the real API (then
//! a last poll on a still clock must make the counts exact).
//! `--count-search` polls with the order-free count search only, the
//! design before the search in listing order, for comparison.
//!
//! The day polled holds about `--calls-per-day` calls (100,000) in both
//! modes: the simulator's rate is scaled by its own count of that day.

#![allow(clippy::print_stdout, clippy::print_stderr, reason = "a bench report")]

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use plumline_api::{ApiError, CallPage, Client, Credentials, LONGEST_CALL, PageRequest, PageSource};
use plumline_metrics::{Metrics, Poller, PollerConfig};
use plumline_sim::{DEMO_EMAIL, DEMO_KEY, SimClock, SimConfig, SimServer, Simulator};

/// 2025-01-14T00:00:00Z, a Tuesday.
const DAY0: i64 = benches::JAN_1_2025 + 13 * benches::DAY;
const INTERVAL: i64 = 5;
const BYTES_SLACK: f64 = 4_096.0;
const BYTES_FACTOR: f64 = 5.0;
const MAX_REQUESTS: u64 = 30;

struct Figures {
    mode: &'static str,
    calls_that_day: u64,
    backfill_requests: u64,
    backfill_bytes: u64,
    backfill_secs: f64,
    polls: usize,
    new_calls: u64,
    requests: Vec<u64>,
    bytes: Vec<u64>,
    over_bytes: usize,
    over_requests: usize,
    bytes_per_call: f64,
    new_bytes_total: f64,
    poll_secs: Vec<f64>,
    exact: bool,
}

fn arg(args: &[String], name: &str, default: i64) -> i64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let polls = usize::try_from(arg(&args, "--polls", 240)).unwrap_or(240);
    let hours: Vec<i64> = match arg(&args, "--hour", -1) {
        -1 => vec![3, 9, 14],
        h => vec![h],
    };
    let per_day = arg(&args, "--calls-per-day", 100_000) as f64;
    let drift = u64::try_from(arg(&args, "--drift", 0)).unwrap_or(0);
    let count_search = args.iter().any(|a| a == "--count-search");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let mut ok = true;
    println!(
        "mode\thour\tcalls/day\tpolls\tnew/poll\treq mean\treq p95\treq max\tbytes mean\tbytes p95\tbytes max\tbytes/new bytes\tpolls over bytes target\tpolls over 30 req\tpoll ms p95\texact"
    );
    for (mode, numbers, hour) in [("one number", 1usize), ("whole account", 3)]
        .into_iter()
        .flat_map(|(m, n)| hours.iter().map(move |h| (m, n, *h)))
    {
        let f = runtime.block_on(measure(Setup {
            mode,
            n_numbers: numbers,
            per_day,
            hour,
            polls,
            drift,
            count_search,
        }));
        let mean = |v: &[u64]| v.iter().sum::<u64>() as f64 / v.len().max(1) as f64;
        println!(
            "{}\t{hour:02}:00\t{}\t{}\t{:.1}\t{:.1}\t{}\t{}\t{:.0}\t{}\t{}\t{:.2}\t{}\t{}\t{:.1}\t{}",
            f.mode,
            f.calls_that_day,
            f.polls,
            f.new_calls as f64 / f.polls as f64,
            mean(&f.requests),
            pct(&f.requests, 0.95),
            f.requests.iter().max().unwrap_or(&0),
            mean(&f.bytes),
            pct(&f.bytes, 0.95),
            f.bytes.iter().max().unwrap_or(&0),
            f.bytes.iter().sum::<u64>() as f64 / f.new_bytes_total.max(1.0),
            f.over_bytes,
            f.over_requests,
            pctf(&f.poll_secs, 0.95) * 1e3,
            f.exact,
        );
        eprintln!(
            "{} {hour:02}:00: backfill {} requests, {:.1} MB, {:.2} s; {:.0} bytes per call",
            f.mode,
            f.backfill_requests,
            f.backfill_bytes as f64 / 1e6,
            f.backfill_secs,
            f.bytes_per_call
        );
        ok &= f.exact;
    }
    if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

fn pct(v: &[u64], q: f64) -> u64 {
    let mut v = v.to_vec();
    v.sort_unstable();
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "an index")]
    let i = ((v.len() as f64 - 1.0) * q).round() as usize;
    v.get(i).copied().unwrap_or(0)
}

fn pctf(v: &[f64], q: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "an index")]
    let i = ((v.len() as f64 - 1.0) * q).round() as usize;
    v.get(i).copied().unwrap_or(0.0)
}

/// The API seen through a clock that moves one second every `every`
/// requests while `on` (0: never).
struct Drifting {
    inner: Client,
    clock: SimClock,
    every: u64,
    on: AtomicBool,
    served: AtomicU64,
}

impl PageSource for Drifting {
    async fn fetch_page(&self, request: &PageRequest) -> Result<CallPage, ApiError> {
        let n = self.served.fetch_add(1, Ordering::SeqCst) + 1;
        if self.every > 0 && self.on.load(Ordering::SeqCst) && n.is_multiple_of(self.every) {
            self.clock.advance(1);
        }
        self.inner.fetch_page(request).await
    }
}

/// One measured run.
struct Setup {
    mode: &'static str,
    n_numbers: usize,
    per_day: f64,
    hour: i64,
    polls: usize,
    drift: u64,
    count_search: bool,
}

/// The simulator for `setup`, its rate scaled so that the day holds about
/// `per_day` calls, and that count.
fn sim_config(setup: &Setup, start: i64) -> (SimConfig, u64) {
    let config = |per_number: f64| {
        SimConfig::default()
            .with_seed(11)
            .with_generated_numbers(setup.n_numbers)
            .with_calls_per_day(per_number)
            .with_data_range(DAY0 - 2 * benches::DAY, DAY0 + 2 * benches::DAY)
            .with_live(true)
            .with_clock(SimClock::manual(start))
    };
    let count = |config: &SimConfig| {
        let settled = Simulator::new(config.clone().with_live(false)).expect("simulator");
        settled.count_in(DAY0, DAY0 + benches::DAY - 1, None)
    };
    let first = setup.per_day / setup.n_numbers as f64;
    let scaled = config(first * setup.per_day / count(&config(first)).max(1) as f64);
    let calls = count(&scaled);
    (scaled, calls)
}

async fn measure(setup: Setup) -> Figures {
    let Setup { mode, hour, polls, drift, .. } = setup;
    let start = DAY0 + hour * 3_600;
    let (config, calls_that_day) = sim_config(&setup, start);
    let server = SimServer::start(config, ([127, 0, 0, 1], 0).into()).await.expect("simulator");
    let client =
        Client::builder(server.base_url(), Credentials::new(DEMO_EMAIL, DEMO_KEY)).build().expect("client");
    let numbers = if setup.n_numbers == 1 { server.simulator().numbers().to_vec() } else { Vec::new() };
    let clock = server.simulator().clock().clone();
    let source = Arc::new(Drifting {
        inner: client,
        clock: clock.clone(),
        every: drift,
        on: AtomicBool::new(false),
        served: AtomicU64::new(0),
    });
    let metrics = Arc::new(Metrics::new().expect("metrics"));
    let mut poller = Poller::new(
        Arc::clone(&source),
        Arc::clone(&metrics),
        PollerConfig {
            numbers,
            interval: Duration::from_secs(5),
            max_call_duration: LONGEST_CALL,
            page_size: plumline_api::PageSize::MAX,
            ..PollerConfig::default()
        },
    )
    .expect("poller")
    .with_clock({
        let clock = clock.clone();
        Arc::new(move || clock.now())
    });
    if setup.count_search {
        poller = poller.count_search_only();
    }

    let before = server.stats();
    let t = Instant::now();
    let report = poller.poll_once().await;
    assert!(report.backfill && report.is_success(), "{report:?}");
    let backfill_secs = t.elapsed().as_secs_f64();
    let after = server.stats();
    let bytes_per_call = (after.bytes_served - before.bytes_served) as f64
        / (after.calls_served - before.calls_served).max(1) as f64;
    let mut f = Figures {
        mode,
        calls_that_day,
        backfill_requests: after.requests - before.requests,
        backfill_bytes: after.bytes_served - before.bytes_served,
        backfill_secs,
        polls,
        new_calls: 0,
        requests: Vec::new(),
        bytes: Vec::new(),
        over_bytes: 0,
        over_requests: 0,
        bytes_per_call,
        new_bytes_total: 0.0,
        poll_secs: Vec::new(),
        exact: false,
    };
    let mut now = start;
    source.on.store(true, Ordering::SeqCst);
    for _ in 0..polls {
        now = (now + INTERVAL).max(clock.now());
        server.set_now(now);
        let before = server.stats();
        let t = Instant::now();
        let report = poller.poll_once().await;
        f.poll_secs.push(t.elapsed().as_secs_f64());
        assert!(report.is_success(), "{report:?}");
        let after = server.stats();
        let (requests, bytes) = (after.requests - before.requests, after.bytes_served - before.bytes_served);
        let new_bytes = report.counted as f64 * bytes_per_call;
        f.new_calls += report.counted;
        f.new_bytes_total += new_bytes;
        f.over_bytes += usize::from(bytes as f64 > BYTES_FACTOR * new_bytes + BYTES_SLACK);
        f.over_requests += usize::from(requests > MAX_REQUESTS);
        f.requests.push(requests);
        f.bytes.push(bytes);
    }
    // A last poll on a still clock finds what ended during the last one.
    source.on.store(false, Ordering::SeqCst);
    now = clock.now();
    let settle = poller.poll_once().await;
    f.new_calls += settle.counted;
    // Exact: every call that ended since midnight (and started within the
    // reach-back of it) is counted once.
    let reach = i64::try_from(LONGEST_CALL.as_secs()).expect("small");
    let truth =
        server.simulator().calls_in(DAY0 - reach, now, None).iter().filter(|c| c.end >= DAY0).count() as u64;
    let counted: u64 = metrics.call_series().values().map(|s| s.calls).sum();
    f.exact = counted == truth;
    if !f.exact {
        eprintln!("{mode}: counted {counted}, truth {truth}");
    }
    server.shutdown().await;
    f
}
