//! `plumline exporter` end to end: the real binary against a simulator.

mod common;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{plumline, plumline_bare, run_err, sim};
use plumline_sim::{DEMO_KEY, SimConfig};

fn exporter(mut cmd: Command) -> Command {
    cmd.arg("exporter");
    cmd
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gives_one_clear_error() {
    let mut cmd = exporter(plumline_bare());
    cmd.args(["--listen", "not-an-address", "--email", "a@b.c", "--developer-key", "k"]);
    run_err(cmd, "--listen `not-an-address` is not an address").await;

    let mut cmd = exporter(plumline_bare());
    cmd.args(["--listen", "127.0.0.1:0", "--interval", "0s", "--email", "a@b.c", "--developer-key", "k"]);
    run_err(cmd, "--interval must be greater than zero").await;

    let mut cmd = exporter(plumline_bare());
    cmd.args(["--listen", "127.0.0.1:0"]);
    run_err(cmd, "no account email").await;

    let mut cmd = exporter(plumline_bare());
    cmd.args([
        "--listen",
        "127.0.0.1:0",
        "--basic-auth-user",
        "prom",
        "--email",
        "a@b.c",
        "--developer-key",
        "k",
    ]);
    run_err(cmd, "PLUMLINE_EXPORTER_PASSWORD").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn port_in_use_is_reported() {
    let server = sim(SimConfig::default()).await;
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let mut cmd = exporter(plumline(&server));
    cmd.args(["--listen", &addr.to_string()]);
    let stderr = run_err(cmd, "already in use").await;
    assert!(stderr.contains(&addr.to_string()), "{stderr}");
    drop(taken);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_credentials_stop_the_exporter_at_startup() {
    let server = sim(SimConfig::default()).await;
    let secret = "definitely-wrong-key-4711";
    let mut cmd = exporter(plumline(&server));
    cmd.env("PLUM_DEVELOPER_KEY", secret).args(["--listen", "127.0.0.1:0"]);
    let stderr = run_err(cmd, "refused the credentials").await;
    assert!(stderr.contains("PLUM_DEVELOPER_KEY"), "says what to fix: {stderr}");
    assert!(!stderr.contains(secret), "the key leaked: {stderr}");
    server.shutdown().await;
}

/// A running exporter, killed on drop.
struct Running {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(mut cmd: Command) -> Running {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let stdout = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    // The exporter prints its address first; on a failure it exits and this reads EOF.
    BufReader::new(stdout).read_line(&mut line).expect("read stdout");
    let addr = line
        .trim()
        .strip_prefix("serving metrics on http://")
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .and_then(|a| a.parse().ok());
    let Some(addr) = addr else {
        let _ = child.kill();
        let mut stderr = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut stderr);
        }
        panic!("no address line from {cmd:?}: {line:?}\n--- stderr ---\n{stderr}");
    };
    Running { child, addr }
}

fn get(addr: SocketAddr, path: &str, auth: Option<&str>) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let auth = auth.map(|a| format!("Authorization: Basic {a}\r\n")).unwrap_or_default();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n").expect("write");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read");
    answer
}

#[tokio::test(flavor = "multi_thread")]
async fn serves_metrics_behind_basic_auth_and_stops_on_sigterm() {
    let now =
        i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs()).expect("time");
    let config = SimConfig::default()
        .with_live(true)
        .with_calls_per_day(20_000.0)
        .with_data_range(now - 86_400, now + 86_400);
    let server = sim(config).await;
    let number = server.simulator().numbers()[0].clone();
    let mut cmd = exporter(plumline(&server));
    // "prom:pw-123" in base64.
    let auth = "cHJvbTpwdy0xMjM=";
    cmd.env("PLUMLINE_EXPORTER_PASSWORD", "pw-123").args([
        "--listen",
        "127.0.0.1:0",
        "--interval",
        "1s",
        "--number",
        &number,
        "--basic-auth-user",
        "prom",
    ]);
    let mut running = tokio::task::spawn_blocking(move || start(cmd)).await.expect("start");
    let addr = running.addr;

    let scrape = tokio::task::spawn_blocking(move || {
        assert!(get(addr, "/metrics", None).starts_with("HTTP/1.1 401"), "no credentials, no metrics");
        assert!(get(addr, "/healthz", None).starts_with("HTTP/1.1 200"), "health stays open");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let scrape = get(addr, "/metrics", Some(auth));
            if scrape.contains("\nplum_fuse_up 1") && scrape.contains("plum_fuse_calls_total{") {
                return scrape;
            }
            assert!(Instant::now() < deadline, "no successful poll within 30 s:\n{scrape}");
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .await
    .expect("scraper");
    assert!(scrape.contains(&format!("number=\"{number}\"")), "{scrape}");
    assert!(!scrape.contains(DEMO_KEY), "the developer key leaked into /metrics");

    let pid = running.child.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let exit = loop {
        if let Some(exit) = running.child.try_wait().expect("wait") {
            break exit;
        }
        assert!(Instant::now() < deadline, "the exporter did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    if let Some(mut e) = running.child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    assert!(exit.success(), "exit {exit} after SIGTERM\n{stderr}");
    assert!(!stderr.contains(DEMO_KEY), "the developer key leaked into the log\n{stderr}");
    assert!(!stderr.contains("error:"), "{stderr}");
    server.shutdown().await;
}
