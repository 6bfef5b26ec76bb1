//! The exporter against real Prometheus tools: `promtool` lints a real
//! scrape and the deploy files, and a real Prometheus server scrapes an
//! in-process exporter whose counts a `PromQL` query must match the ground truth.

use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use plumline_api::{Client, Credentials, RetryPolicy};
use plumline_metrics::{Metrics, MetricsServer, Poller, PollerConfig, run_exporter};
use plumline_sim::{DEMO_EMAIL, DEMO_KEY, MAX_CALL_SECS, SimClock, SimConfig, SimServer};
use tokio::sync::oneshot;

use crate::util::{external_tool, free_port, run_ok};

/// 2025-01-10T12:00:00Z, inside the simulated data.
const T0: i64 = 1_736_510_400;
const LOOKBACK: i64 = 3_600;
/// How long Prometheus gets to start and scrape the right figure.
const PROMETHEUS_TIMEOUT: Duration = Duration::from_secs(90);

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("deploy")
}

/// A simulator in live mode on a manual clock, and an exporter polling it
/// every 200 ms, serving on 127.0.0.1.
struct Setup {
    sim: SimServer,
    metrics: Arc<Metrics>,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), plumline_metrics::MetricsError>>,
}

impl Setup {
    async fn start() -> Setup {
        let config = SimConfig::default()
            .with_seed(9)
            .with_calls_per_day(5_000.0)
            .with_data_range(T0 - 2 * 86_400, T0 + 2 * 86_400)
            .with_unknown_types(true)
            .with_live(true)
            .with_clock(SimClock::manual(T0));
        let sim = SimServer::start(config, ([127, 0, 0, 1], 0).into()).await.expect("start the simulator");
        let client = Client::builder(sim.base_url(), Credentials::new(DEMO_EMAIL, DEMO_KEY))
            .retry_policy(RetryPolicy {
                max_attempts: 2,
                initial_backoff: Duration::from_millis(1),
                ..RetryPolicy::default()
            })
            .build()
            .expect("client");
        let metrics = Arc::new(Metrics::new().expect("metrics"));
        let clock = sim.simulator().clock().clone();
        let poller = Poller::new(
            client,
            Arc::clone(&metrics),
            PollerConfig {
                numbers: sim.simulator().numbers().to_vec(),
                interval: Duration::from_millis(200),
                lookback: Duration::from_secs(LOOKBACK.unsigned_abs()),
                max_call_duration: Duration::from_secs(MAX_CALL_SECS.unsigned_abs()),
                ..PollerConfig::default()
            },
        )
        .expect("poller")
        .with_clock(Arc::new(move || clock.now()));
        let server =
            MetricsServer::bind(([127, 0, 0, 1], 0).into(), Arc::clone(&metrics), None).await.expect("bind");
        let addr = server.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(run_exporter(poller, server, async move {
            let _ = stopped.await;
        }));
        // The first poll fixes the counting floor at `T0 - lookback`: wait
        // for it before anyone moves the clock.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !metrics.up() {
            assert!(Instant::now() < deadline, "the first poll never succeeded");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Setup { sim, metrics, addr, stop: Some(stop), task }
    }

    /// Moves the simulated clock forward in steps and waits (bounded) until
    /// the exporter's counters equal the ground truth; returns the total.
    async fn advance_and_settle(&self, steps: i64) -> u64 {
        for step in 1..=steps {
            self.sim.set_now(T0 + step * 300);
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let want = self.truth();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got: u64 = self.metrics.call_series().values().map(|s| s.calls).sum();
            if got == want && self.metrics.up() {
                return want;
            }
            assert!(Instant::now() < deadline, "exporter counted {got}, truth {want}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Completed calls of every number that ended at or after the first
    /// poll's `now - lookback`.
    fn truth(&self) -> u64 {
        let sim = self.sim.simulator();
        let floor = T0 - LOOKBACK;
        let mut total = 0;
        for number in sim.numbers() {
            let calls = sim.calls_in(floor - MAX_CALL_SECS, sim.now(), Some(number));
            total += calls.iter().filter(|c| c.end >= floor).count() as u64;
        }
        total
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let done = tokio::time::timeout(Duration::from_secs(10), self.task).await;
        assert!(matches!(done, Ok(Ok(Ok(())))), "exporter did not stop cleanly: {done:?}");
        self.sim.shutdown().await;
    }
}

/// A plain HTTP/1.0 GET (the body runs to EOF: no chunking); returns
/// status and body.
async fn http_get(addr: SocketAddr, path_and_query: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream =
        tokio::net::TcpStream::connect(addr).await.unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream
        .write_all(format!("GET {path_and_query} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .expect("write request");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("bounded")
        .expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[test]
fn promtool_checks_the_deploy_files() {
    let Some(promtool) = external_tool("PLUMLINE_TEST_PROMTOOL") else {
        return;
    };
    let dir = deploy_dir().join("prometheus");
    run_ok(Command::new(&promtool).current_dir(&dir).args(["check", "config", "prometheus.yml"]));
    run_ok(Command::new(&promtool).current_dir(&dir).args(["check", "rules", "alerts.yml"]));
    run_ok(Command::new(&promtool).current_dir(&dir).args(["test", "rules", "alerts_test.yml"]));
}

#[tokio::test(flavor = "multi_thread")]
async fn promtool_check_metrics_passes_on_a_real_scrape() {
    let Some(promtool) = external_tool("PLUMLINE_TEST_PROMTOOL") else {
        return;
    };
    let setup = Setup::start().await;
    setup.advance_and_settle(3).await;
    let (status, body) = http_get(setup.addr, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("plum_fuse_calls_total{") && body.contains("process_resident_memory_bytes"),
        "{body}"
    );
    let output = tokio::task::spawn_blocking(move || {
        let mut child = Command::new(&promtool)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run promtool");
        child.stdin.take().expect("stdin").write_all(body.as_bytes()).expect("feed the scrape");
        (child.wait_with_output().expect("promtool output"), body)
    })
    .await
    .expect("promtool thread");
    let (output, body) = output;
    assert!(
        output.status.success() && output.stdout.is_empty() && output.stderr.is_empty(),
        "promtool check metrics: {}\n--- stdout ---\n{}\n--- stderr ---\n{}\n--- scrape ---\n{body}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    setup.stop().await;
}

/// A Prometheus server, killed on drop; its log is kept for failures.
struct PrometheusServer {
    child: Child,
    log: PathBuf,
    addr: SocketAddr,
}

impl PrometheusServer {
    fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut text);
        }
        text
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs an instant query; returns the JSON `data.result` array.
async fn query(prom: &PrometheusServer, promql: &str) -> Vec<serde_json::Value> {
    let (status, body) =
        http_get(prom.addr, &format!("/api/v1/query?query={}", percent_encode(promql))).await;
    let json: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{promql}: {e}: HTTP {status} {body}"));
    assert_eq!(json["status"], "success", "{promql}: {body}");
    json["data"]["result"].as_array().cloned().unwrap_or_default()
}

fn scalar(result: &[serde_json::Value]) -> Option<f64> {
    result.first()?["value"][1].as_str()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn real_prometheus_scrapes_the_exporter_and_promql_matches_the_ground_truth() {
    let Some(prometheus) = external_tool("PLUMLINE_TEST_PROMETHEUS") else {
        return;
    };
    let setup = Setup::start().await;
    let want = setup.advance_and_settle(4).await;
    assert!(want > 100, "a meaningful sample: {want}");

    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: plumline\n    static_configs:\n      - targets: [\"{}\"]\n",
            setup.addr
        ),
    )
    .expect("write config");
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let log = dir.path().join("prometheus.log");
    let log_file = std::fs::File::create(&log).expect("log file");
    let child = Command::new(&prometheus)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address={addr}"))
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", prometheus.display()));
    let prom = PrometheusServer { child, log, addr };

    // Bounded waits: ready, then the scraped figure equals the ground truth.
    let deadline = Instant::now() + PROMETHEUS_TIMEOUT;
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() && http_get(addr, "/-/ready").await.0 == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "Prometheus never became ready\n{}", prom.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let got = loop {
        let got = scalar(&query(&prom, "sum(plum_fuse_calls_total)").await);
        if got.is_some_and(|g| (g - want as f64).abs() < 0.5) {
            break got;
        }
        assert!(Instant::now() < deadline, "PromQL says {got:?}, truth {want}\n{}", prom.log());
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(got.is_some());

    let count = scalar(&query(&prom, "sum(plum_fuse_call_duration_seconds_count)").await);
    assert_eq!(count, Some(want as f64));
    let up = scalar(&query(&prom, r#"up{job="plumline"} * on() plum_fuse_up"#).await);
    assert_eq!(up, Some(1.0));
    // One series per number and direction, each labelled as the contract says.
    let by_number = query(&prom, "sum by (number) (plum_fuse_calls_total)").await;
    assert_eq!(by_number.len(), setup.sim.simulator().numbers().len(), "{by_number:?}");

    // Every dashboard query parses and runs.
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(deploy_dir().join("grafana/plumline.json")).expect("dashboard"),
    )
    .expect("dashboard JSON");
    let mut checked = 0;
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("expr");
            let expr = expr
                .replace("$__rate_interval", "1m")
                .replace("$__range", "1h")
                .replace("$job", ".*")
                .replace("$number", ".*")
                .replace("$direction", ".*");
            query(&prom, &expr).await;
            checked += 1;
        }
    }
    assert!(checked > 10, "{checked}");
    drop(prom);
    setup.stop().await;
}
