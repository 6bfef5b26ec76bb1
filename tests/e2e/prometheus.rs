//! The exporter against real Prometheus tools: `promtool` lints a real
//! scrape and the deploy files, and a real Prometheus server scrapes an
//! in-process exporter whose counts a `PromQL` query must match the ground truth.

use std::fmt::Write as _;
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
/// 00:00 UTC of that day: the call families count from here.
const ANCHOR: i64 = T0 - 43_200;
/// Simulated seconds the clock moves per step.
const STEP: i64 = 30;
/// How long Prometheus gets to start and scrape the right figure.
const PROMETHEUS_TIMEOUT: Duration = Duration::from_secs(90);

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("deploy")
}

/// A simulator in live mode on a manual clock, and an exporter polling it
/// every 200 ms, serving on 127.0.0.1.
struct Setup {
    sim: SimServer,
    exporter: Exporter,
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
        let exporter = Exporter::start(&sim, ([127, 0, 0, 1], 0).into(), plumline_api::MAX_LIMIT).await;
        // The backfill reads up to `T0`: wait for it before anyone moves the clock.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !exporter.metrics.up() {
            assert!(Instant::now() < deadline, "the first poll never succeeded");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Setup { sim, exporter }
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
            let got = self.exporter.total();
            if got == want && self.exporter.metrics.up() {
                return want;
            }
            assert!(Instant::now() < deadline, "exporter counted {got}, truth {want}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn truth(&self) -> u64 {
        truth(&self.sim)
    }

    async fn stop(self) {
        self.exporter.stop().await;
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
    run_ok(Command::new(&promtool).current_dir(&dir).args(["check", "rules", "rules.yml", "alerts.yml"]));
    run_ok(Command::new(&promtool).current_dir(&dir).args(["test", "rules", "alerts_test.yml"]));
}

/// Every `expr` of the dashboard, with Grafana's variables replaced by
/// values Prometheus accepts.
fn dashboard_expressions() -> Vec<String> {
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(deploy_dir().join("grafana/plumline.json")).expect("dashboard"),
    )
    .expect("dashboard JSON");
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("expr");
            exprs.push(
                expr.replace("$__rate_interval", "1m")
                    .replace("$__range", "1h")
                    .replace("$job", ".*")
                    .replace("$number", ".*")
                    .replace("$direction", ".*"),
            );
        }
    }
    exprs
}

#[test]
fn every_dashboard_expression_parses() {
    let Some(promtool) = external_tool("PLUMLINE_TEST_PROMTOOL") else {
        return;
    };
    let exprs = dashboard_expressions();
    assert!(exprs.len() > 15, "{}", exprs.len());
    // promtool parses the expressions of a rules file: one recording rule each.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, expr) in exprs.iter().enumerate() {
        let quoted = serde_json::to_string(expr).expect("a JSON string is a YAML string");
        let _ = writeln!(rules, "      - record: dashboard:expr_{i}\n        expr: {quoted}");
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("dashboard_rules.yml");
    std::fs::write(&file, rules).expect("write");
    run_ok(Command::new(&promtool).arg("check").arg("rules").arg(&file));
    let dashboard = std::fs::read_to_string(deploy_dir().join("grafana/plumline.json")).expect("dashboard");
    for needle in
        ["\"type\": \"heatmap\"", "$__rate_interval", "\"name\": \"datasource\"", "\"name\": \"number\""]
    {
        assert!(dashboard.contains(needle), "the dashboard lacks {needle}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn promtool_check_metrics_passes_on_a_real_scrape() {
    let Some(promtool) = external_tool("PLUMLINE_TEST_PROMTOOL") else {
        return;
    };
    let setup = Setup::start().await;
    setup.advance_and_settle(3).await;
    let (status, body) = http_get(setup.exporter.addr, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("plum_fuse_calls_total{")
            && body.contains("plum_fuse_last_call_end_timestamp_seconds{")
            && body.contains("plum_fuse_no_calls_alert_after_seconds{")
            && body.contains("process_resident_memory_bytes"),
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
            setup.exporter.addr
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
    let exprs = dashboard_expressions();
    for expr in &exprs {
        query(&prom, expr).await;
    }
    assert!(exprs.len() > 10, "{}", exprs.len());
    drop(prom);
    setup.stop().await;
}

/// Completed calls of every number of `sim` that ended since [`ANCHOR`] and
/// started within the reach-back of it: what the call families must count.
fn truth(sim: &SimServer) -> u64 {
    let sim = sim.simulator();
    let mut total = 0;
    for number in sim.numbers() {
        let calls = sim.calls_in(ANCHOR - MAX_CALL_SECS, sim.now(), Some(number));
        total += calls.iter().filter(|c| c.end >= ANCHOR).count() as u64;
    }
    total
}

/// Calls of every number that ended in `(from, to]` of simulated time: the
/// calls of one poll interval when the clock moves that much between polls.
fn ended_between(sim: &SimServer, from: i64, to: i64) -> u64 {
    let sim = sim.simulator();
    sim.numbers()
        .iter()
        .map(|n| {
            sim.calls_in(from - MAX_CALL_SECS, to, Some(n))
                .iter()
                .filter(|c| c.end > from && c.end <= to)
                .count() as u64
        })
        .sum()
}

fn live_sim_config() -> SimConfig {
    SimConfig::default()
        .with_seed(9)
        .with_calls_per_day(5_000.0)
        .with_data_range(T0 - 2 * 86_400, T0 + 2 * 86_400)
        .with_unknown_types(true)
        .with_live(true)
        .with_clock(SimClock::manual(T0))
}

/// An exporter in this process, polling `sim` every 200 ms, serving on `addr`.
struct Exporter {
    metrics: Arc<Metrics>,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), plumline_metrics::MetricsError>>,
}

impl Exporter {
    async fn start(sim: &SimServer, addr: SocketAddr, page_size: u32) -> Exporter {
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
                max_call_duration: Duration::from_secs(MAX_CALL_SECS.unsigned_abs()),
                page_size: plumline_api::PageSize::new(page_size).expect("page size"),
                ..PollerConfig::default()
            },
        )
        .expect("poller")
        .with_clock(Arc::new(move || clock.now()));
        let server = MetricsServer::bind(addr, Arc::clone(&metrics), None).await.expect("bind");
        let addr = server.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(run_exporter(poller, server, async move {
            let _ = stopped.await;
        }));
        Exporter { metrics, addr, stop: Some(stop), task }
    }

    fn total(&self) -> u64 {
        self.metrics.call_series().values().map(|s| s.calls).sum()
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let done = tokio::time::timeout(Duration::from_secs(10), self.task).await;
        assert!(matches!(done, Ok(Ok(Ok(())))), "exporter did not stop cleanly: {done:?}");
    }
}

/// Waits (bounded) until every exporter's counters equal the ground truth
/// with `plum_fuse_up 1`; returns the truth.
async fn settle(sim: &SimServer, exporters: &[&Exporter]) -> u64 {
    let want = truth(sim);
    let deadline = Instant::now() + Duration::from_secs(30);
    for exporter in exporters {
        loop {
            let got = exporter.total();
            if got == want && exporter.metrics.up() {
                break;
            }
            assert!(Instant::now() < deadline, "exporter counted {got}, truth {want}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    want
}

/// Moves the simulated clock `steps` × [`STEP`], a poll's worth of wall time apart.
async fn advance(sim: &SimServer, steps: i64) {
    for _ in 0..steps {
        sim.set_now(sim.simulator().now() + STEP);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Starts Prometheus scraping `targets` every 250 ms and waits until ready.
async fn start_prometheus(prometheus: &Path, dir: &Path, targets: &[SocketAddr]) -> PrometheusServer {
    let config = dir.join("prometheus.yml");
    let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 250ms\n  scrape_timeout: 200ms\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: plumline\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        ),
    )
    .expect("write config");
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let log = dir.join("prometheus.log");
    let log_file = std::fs::File::create(&log).expect("log file");
    let child = Command::new(prometheus)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address={addr}"))
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", prometheus.display()));
    let prom = PrometheusServer { child, log, addr };
    let deadline = Instant::now() + PROMETHEUS_TIMEOUT;
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() && http_get(addr, "/-/ready").await.0 == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "Prometheus never became ready\n{}", prom.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    prom
}

/// Waits (bounded) until the scalar `promql` equals `want`.
async fn wait_for_value(prom: &PrometheusServer, promql: &str, want: f64) {
    let deadline = Instant::now() + PROMETHEUS_TIMEOUT;
    loop {
        let got = scalar(&query(prom, promql).await);
        if got.is_some_and(|g| (g - want).abs() < 0.5) {
            return;
        }
        assert!(Instant::now() < deadline, "{promql} is {got:?}, want {want}\n{}", prom.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn wall_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// The increase of every series of `metric` over `[at - range, at]` from its
/// raw samples (no extrapolation), with counter resets counted as Prometheus
/// does, and whether any sample ever went down.
async fn raw_increase(prom: &PrometheusServer, metric: &str, range_ms: u64, at: f64) -> (f64, bool) {
    let (status, body) = http_get(
        prom.addr,
        &format!("/api/v1/query?query={}&time={at:.3}", percent_encode(&format!("{metric}[{range_ms}ms]"))),
    )
    .await;
    let json: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: HTTP {status} {body}"));
    let mut total = 0.0;
    let mut went_down = false;
    for series in json["data"]["result"].as_array().into_iter().flatten() {
        let values: Vec<f64> = series["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v[1].as_str()?.parse().ok())
            .collect();
        for pair in values.windows(2) {
            if pair[1] < pair[0] {
                went_down = true;
                total += pair[1];
            } else {
                total += pair[1] - pair[0];
            }
        }
    }
    (total, went_down)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_continues_where_it_left_off_without_a_spike() {
    let Some(prometheus) = external_tool("PLUMLINE_TEST_PROMETHEUS") else {
        return;
    };
    let sim = SimServer::start(live_sim_config(), ([127, 0, 0, 1], 0).into()).await.expect("simulator");
    let first = Exporter::start(&sim, ([127, 0, 0, 1], 0).into(), 1_000).await;
    let addr = first.addr;
    let dir = tempfile::tempdir().expect("temp dir");
    let prom = start_prometheus(&prometheus, dir.path(), &[addr]).await;

    advance(&sim, 4).await;
    let before = settle(&sim, &[&first]).await;
    assert!(before > 1_000, "the day so far is a meaningful count: {before}");
    wait_for_value(&prom, "sum(plum_fuse_calls_total)", before as f64).await;
    let from = wall_now();
    tokio::time::sleep(Duration::from_millis(1_500)).await;

    // Down for a while (calls keep ending), then a new process on the same address.
    first.stop().await;
    advance(&sim, 4).await;
    let second = Exporter::start(&sim, addr, 1_000).await;
    advance(&sim, 4).await;
    let after = settle(&sim, &[&second]).await;
    wait_for_value(&prom, "sum(plum_fuse_calls_total)", after as f64).await;
    wait_for_value(&prom, "sum(plum_fuse_call_duration_seconds_count)", after as f64).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let to = wall_now();

    let truth = (after - before) as f64;
    assert!(truth > 20.0, "calls ended across the restart: {truth}");
    // One poll interval of calls: the clock moves one step between polls.
    let one_interval = ended_between(&sim, sim.simulator().now() - STEP, sim.simulator().now()) as f64 + 1.0;
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "seconds of a test")]
    let range_ms = ((to - from) * 1_000.0) as u64;
    for metric in ["plum_fuse_calls_total", "plum_fuse_call_duration_seconds_count"] {
        let (raw, went_down) = raw_increase(&prom, metric, range_ms, to).await;
        assert!(!went_down, "{metric} went down across the restart (read as a counter reset)");
        assert!((raw - truth).abs() <= one_interval, "{metric}: samples rose by {raw}, truth {truth}");
        // increase() extrapolates to the window's ends: at most about one
        // scrape interval (250 ms) on each side of the samples.
        let promql = format!("sum(increase({metric}[{range_ms}ms]))");
        let (_, body) =
            http_get(prom.addr, &format!("/api/v1/query?query={}&time={to:.3}", percent_encode(&promql)))
                .await;
        let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        let increase: f64 =
            json["data"]["result"][0]["value"][1].as_str().and_then(|v| v.parse().ok()).expect("a value");
        let extrapolation = truth * 0.6 / (to - from);
        assert!(
            (increase - truth).abs() <= one_interval + extrapolation,
            "{promql} = {increase}, truth {truth} (allowed {one_interval} + {extrapolation})\n{}",
            prom.log()
        );
    }
    drop(prom);
    second.stop().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_agree_within_one_poll_interval() {
    let Some(prometheus) = external_tool("PLUMLINE_TEST_PROMETHEUS") else {
        return;
    };
    let sim = SimServer::start(live_sim_config(), ([127, 0, 0, 1], 0).into()).await.expect("simulator");
    let early = Exporter::start(&sim, ([127, 0, 0, 1], 0).into(), 1_000).await;
    advance(&sim, 6).await;
    // The second replica starts later, with another history and page size.
    let late = Exporter::start(&sim, ([127, 0, 0, 1], 0).into(), 97).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let prom = start_prometheus(&prometheus, dir.path(), &[early.addr, late.addr]).await;
    let spread = "max(max by (number, direction) (plum_fuse_calls_total) - min by (number, direction) (plum_fuse_calls_total))";
    for _ in 0..6 {
        advance(&sim, 1).await;
        if let Some(diff) = scalar(&query(&prom, spread).await) {
            let now = sim.simulator().now();
            let one_interval = ended_between(&sim, now - 2 * STEP, now) as f64;
            assert!(diff <= one_interval, "replicas differ by {diff} calls, one interval is {one_interval}");
        }
    }
    let want = settle(&sim, &[&early, &late]).await;
    assert_eq!(early.metrics.call_series(), late.metrics.call_series(), "settled replicas report the same");
    wait_for_value(&prom, "sum(max by (number, direction) (plum_fuse_calls_total))", want as f64).await;
    wait_for_value(&prom, "count(plum_fuse_up == 1)", 2.0).await;
    wait_for_value(&prom, spread, 0.0).await;
    drop(prom);
    early.stop().await;
    late.stop().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn nothing_is_published_before_the_backfill_and_zero_series_right_after() {
    // A slow API, so the backfill spans many scrapes.
    let config =
        live_sim_config().with_faults(plumline_sim::Faults::none().with_latency(Duration::from_millis(60)));
    let sim = SimServer::start(config, ([127, 0, 0, 1], 0).into()).await.expect("simulator");
    let exporter = Exporter::start(&sim, ([127, 0, 0, 1], 0).into(), 200).await;
    let mut scrapes_during_backfill = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    let first_after = loop {
        let (status, body) = http_get(exporter.addr, "/metrics").await;
        assert_eq!(status, 200);
        if body.contains("\nplum_fuse_exporter_backfill_done 1\n") {
            break body;
        }
        scrapes_during_backfill += 1;
        assert!(!body.contains("plum_fuse_calls_total"), "a call sample before the backfill:\n{body}");
        assert!(
            !body.contains("plum_fuse_call_duration_seconds"),
            "a call sample before the backfill:\n{body}"
        );
        assert!(
            !body.contains("plum_fuse_last_call_end_timestamp_seconds"),
            "a last-call sample before the backfill:\n{body}"
        );
        assert!(body.contains("\nplum_fuse_up 0"), "up before the backfill:\n{body}");
        assert!(Instant::now() < deadline, "the backfill never finished");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(scrapes_during_backfill >= 3, "the backfill was too quick to observe: {scrapes_during_backfill}");
    assert!(first_after.contains("\nplum_fuse_up 1"), "{first_after}");
    for number in sim.simulator().numbers() {
        for direction in ["inbound", "outbound", "transfer"] {
            let series = format!("plum_fuse_calls_total{{number=\"{number}\",direction=\"{direction}\"}} ");
            assert!(first_after.contains(&series), "no series {series}in the first scrape:\n{first_after}");
        }
        for name in ["plum_fuse_last_call_end_timestamp_seconds", "plum_fuse_no_calls_alert_after_seconds"] {
            let series = format!("{name}{{number=\"{number}\"}} ");
            assert!(first_after.contains(&series), "no series {series}in the first scrape:\n{first_after}");
        }
    }
    let counted: u64 = first_after
        .lines()
        .filter(|l| l.starts_with("plum_fuse_calls_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(counted, truth(&sim), "the first published values are the whole day's");
    exporter.stop().await;
    sim.shutdown().await;
}
