//! The poller and server against the simulator in live mode, on a manual
//! clock: the counters must equal the simulator's ground truth.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use plumline_api::{Call, Client, Credentials, RetryPolicy};
use plumline_metrics::{
    CallSeries, Metrics, MetricsError, MetricsServer, NoCallsAlertConfig, Poller, PollerConfig,
    attributed_number, run_exporter,
};
use plumline_sim::{DEMO_EMAIL, DEMO_KEY, Faults, MAX_CALL_SECS, SimClock, SimConfig, SimServer};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// 2025-01-10T12:00:00Z, inside the simulated data.
const T0: i64 = 1_736_510_400;
/// 00:00 UTC of that day: the counters count from here.
const ANCHOR: i64 = T0 - 43_200;
const INTERVAL: i64 = 300;

async fn sim(calls_per_day: f64) -> SimServer {
    let config = SimConfig::default()
        .with_seed(42)
        .with_calls_per_day(calls_per_day)
        .with_data_range(T0 - 2 * 86_400, T0 + 2 * 86_400)
        .with_unknown_types(true)
        .with_live(true)
        .with_clock(SimClock::manual(T0));
    SimServer::start(config, ([127, 0, 0, 1], 0).into()).await.expect("start the simulator")
}

fn client(server: &SimServer, key: &str) -> Client {
    Client::builder(server.base_url(), Credentials::new(DEMO_EMAIL, key))
        .retry_policy(RetryPolicy {
            max_attempts: 2,
            initial_backoff: Duration::from_millis(1),
            ..RetryPolicy::default()
        })
        .build()
        .expect("client")
}

fn config(numbers: &[String]) -> PollerConfig {
    PollerConfig {
        numbers: numbers.to_vec(),
        interval: Duration::from_secs(INTERVAL.unsigned_abs()),
        max_call_duration: Duration::from_secs(MAX_CALL_SECS.unsigned_abs()),
        page_size: plumline_api::PageSize::new(50).expect("page size"), // several pages per poll
        concurrency: std::num::NonZeroUsize::new(2).expect("nonzero"),
        max_tracked_calls: std::num::NonZeroUsize::new(100_000).expect("nonzero"),
        no_calls_alert: NoCallsAlertConfig::default(),
    }
}

fn poller(server: &SimServer, numbers: &[String]) -> Poller<Client> {
    let clock = server.simulator().clock().clone();
    Poller::new(client(server, DEMO_KEY), Arc::new(Metrics::new().expect("metrics")), config(numbers))
        .expect("poller")
        .with_clock(Arc::new(move || clock.now()))
}

/// What the counters must say: every call visible now (so completed) that
/// ended since 00:00 UTC and started within the reach-back of it, per label.
fn truth(server: &SimServer, numbers: &[String]) -> BTreeMap<(String, String), CallSeries> {
    let sim = server.simulator();
    let floor = ANCHOR;
    let now = sim.now();
    let mut out: BTreeMap<(String, String), CallSeries> = BTreeMap::new();
    let mut add = |number: &str, call: &Call| {
        let s = out.entry((number.to_owned(), call.call_type.as_str().to_owned())).or_default();
        s.calls += 1;
        s.duration_count += 1;
        s.duration_sum += call.duration_secs() as f64;
    };
    let queries: Vec<Option<&str>> =
        if numbers.is_empty() { vec![None] } else { numbers.iter().map(|n| Some(n.as_str())).collect() };
    for number in queries {
        for call in sim.calls_in(floor - MAX_CALL_SECS, now, number) {
            assert!(call.end <= now, "live mode lists completed calls only");
            if call.end >= floor {
                add(number.unwrap_or_else(|| attributed_number(&call.call_type, &call.dest)), &call);
            }
        }
    }
    out
}

/// The series that counted something (polled numbers start with zeros).
fn nonzero(series: BTreeMap<(String, String), CallSeries>) -> BTreeMap<(String, String), CallSeries> {
    series.into_iter().filter(|(_, s)| s.calls > 0).collect()
}

#[tokio::test]
async fn counters_equal_ground_truth_after_every_poll() {
    let server = sim(3_000.0).await;
    let numbers = server.simulator().numbers().to_vec();
    for polled in [numbers.clone(), Vec::new()] {
        server.set_now(T0);
        let mut poller = poller(&server, &polled);
        let mut long_calls_spanning_polls = 0;
        for step in 0..12 {
            let now = T0 + step * INTERVAL;
            server.set_now(now);
            let report = poller.poll_once().await;
            assert!(report.is_success(), "{:?}", report.errors);
            let want = truth(&server, &polled);
            assert_eq!(nonzero(poller.metrics().call_series()), want, "step {step}, numbers {polled:?}");
            // Calls that were running at the previous poll and ended by this one.
            long_calls_spanning_polls += server
                .simulator()
                .calls_in(now - MAX_CALL_SECS, now, None)
                .iter()
                .filter(|c| c.start < now - INTERVAL && c.end > now - INTERVAL && c.start >= T0)
                .count();
            // A second poll at the same instant covers the same window: nothing new.
            if step % 4 == 0 {
                assert_eq!(poller.poll_once().await.counted, 0, "re-poll counted again");
            }
        }
        assert!(long_calls_spanning_polls > 10, "the data must exercise calls longer than a poll");
        assert!(poller.metrics().up());
        let total: u64 = poller.metrics().call_series().values().map(|s| s.calls).sum();
        assert!(total > 500, "a meaningful sample: {total}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn outage_flips_up_and_recovers_without_double_counting() {
    let server = sim(2_000.0).await;
    let numbers = server.simulator().numbers().to_vec();
    let mut poller = poller(&server, &numbers);
    poller.poll_once().await;
    assert!(poller.metrics().up());

    server.set_faults(Faults::none().with_server_errors(1.0)).expect("faults");
    for step in 1..=3 {
        server.set_now(T0 + step * INTERVAL);
        let report = poller.poll_once().await;
        assert_eq!(report.errors.len(), numbers.len());
        assert!(!poller.metrics().up(), "plum_fuse_up must be 0 during the outage");
    }
    // Half the requests fail: some pages land, some do not, windows are retried.
    server.set_faults(Faults::none().with_server_errors(0.5)).expect("faults");
    for step in 4..=8 {
        server.set_now(T0 + step * INTERVAL);
        poller.poll_once().await;
    }
    server.set_faults(Faults::none()).expect("faults");
    server.set_now(T0 + 9 * INTERVAL);
    assert!(poller.poll_once().await.is_success());
    assert!(poller.metrics().up());
    assert_eq!(nonzero(poller.metrics().call_series()), truth(&server, &numbers));

    let text = String::from_utf8(poller.metrics().render().expect("render")).expect("utf-8");
    let errors = text
        .lines()
        .find(|l| l.starts_with("plum_fuse_exporter_api_requests_total{outcome=\"server_error\"}"))
        .unwrap_or_else(|| panic!("no server_error count in\n{text}"));
    assert!(!errors.ends_with(" 0"), "{errors}");
    server.shutdown().await;
}

#[tokio::test]
async fn bad_credentials_fail_the_first_poll_clearly() {
    let server = sim(100.0).await;
    let poller =
        Poller::new(client(&server, "wrong-key"), Arc::new(Metrics::new().expect("metrics")), config(&[]))
            .expect("poller");
    let err = tokio::time::timeout(Duration::from_secs(30), poller.run(std::future::pending()))
        .await
        .expect("bounded")
        .expect_err("refused");
    assert!(matches!(err, MetricsError::Unauthorized { .. }), "{err:?}");
    let chain =
        format!("{err}: {}", std::error::Error::source(&err).map(ToString::to_string).unwrap_or_default());
    assert!(chain.contains("refused the credentials") && !chain.contains("wrong-key"), "{chain}");
    server.shutdown().await;
}

async fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("read");
    answer
}

#[tokio::test]
async fn scrapes_serve_the_counts_and_shutdown_is_graceful() {
    let server = sim(2_000.0).await;
    let numbers = server.simulator().numbers().to_vec();
    let poller = poller(&server, &numbers);
    let metrics = Arc::clone(poller.metrics());
    let http =
        MetricsServer::bind(([127, 0, 0, 1], 0).into(), Arc::clone(&metrics), None).await.expect("bind");
    let addr = http.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run_exporter(poller, http, async move {
        let _ = stopped.await;
    }));
    // The first poll runs right away; wait (bounded) for it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !metrics.up() {
        assert!(tokio::time::Instant::now() < deadline, "first poll never succeeded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let scrape = get(addr, "/metrics").await;
    assert!(scrape.starts_with("HTTP/1.1 200"), "{scrape}");
    let want: u64 = truth(&server, &numbers).values().map(|s| s.calls).sum();
    let got: f64 = scrape
        .lines()
        .filter(|l| l.starts_with("plum_fuse_calls_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!((got - want as f64).abs() < 0.5, "scraped {got}, truth {want}");
    assert!(scrape.contains("plum_fuse_up 1"), "{scrape}");
    assert!(!scrape.contains(DEMO_KEY), "the developer key leaked into /metrics");
    assert!(get(addr, "/healthz").await.ends_with("ok\n"));

    stop.send(()).expect("exporter alive");
    let done = tokio::time::timeout(Duration::from_secs(10), task).await;
    assert!(matches!(done, Ok(Ok(Ok(())))), "{done:?}");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "the port is released");
    server.shutdown().await;
}
