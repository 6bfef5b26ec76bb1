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
async fn bad_tls_flags_give_one_clear_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path.to_string_lossy().into_owned()
    };
    let one = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
    let cert = write("cert.pem", &one.cert.pem());
    let other_key = write("other-key.pem", &other.signing_key.serialize_pem());
    let not_pem = write("not-pem.txt", "hello\n");
    let missing = dir.path().join("missing.pem").to_string_lossy().into_owned();
    let a_dir = dir.path().to_string_lossy().into_owned();
    let base = ["--listen", "127.0.0.1:0", "--email", "a@b.c", "--developer-key", "k"];
    // (TLS flags, what the one error line must say)
    let cases: [(&[&str], String); 8] = [
        (&["--tls-cert-file", &cert], "--tls-cert-file needs --tls-key-file".to_owned()),
        (&["--tls-key-file", &other_key], "--tls-key-file needs --tls-cert-file".to_owned()),
        (
            &["--tls-cert-file", &missing, "--tls-key-file", &other_key],
            format!("cannot load the TLS certificate from {missing}: No such file"),
        ),
        (
            &["--tls-cert-file", &cert, "--tls-key-file", &missing],
            format!("cannot load the TLS private key from {missing}: No such file"),
        ),
        (
            &["--tls-cert-file", &not_pem, "--tls-key-file", &other_key],
            format!("cannot load the TLS certificate from {not_pem}: no PEM certificate"),
        ),
        (
            &["--tls-cert-file", &cert, "--tls-key-file", &cert],
            format!("cannot load the TLS private key from {cert}: no PEM private key"),
        ),
        (&["--tls-cert-file", &a_dir, "--tls-key-file", &other_key], format!("certificate from {a_dir}")),
        (
            &["--tls-cert-file", &cert, "--tls-key-file", &other_key],
            format!("cannot use the TLS certificate {cert} with the private key {other_key}"),
        ),
    ];
    for (flags, needle) in cases {
        let mut cmd = exporter(plumline_bare());
        cmd.args(base).args(flags);
        run_err(cmd, &needle).await;
    }
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
    /// `http` or `https`, from the address line.
    scheme: String,
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
    let parsed =
        line.trim().strip_prefix("serving metrics on ").and_then(|url| url.split_once("://")).and_then(
            |(scheme, rest)| Some((scheme.to_owned(), rest.strip_suffix("/metrics")?.parse().ok()?)),
        );
    let Some((scheme, addr)) = parsed else {
        let _ = child.kill();
        let mut stderr = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut stderr);
        }
        panic!("no address line from {cmd:?}: {line:?}\n--- stderr ---\n{stderr}");
    };
    Running { child, addr, scheme }
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

/// A live simulator (calls listed once ended) with data around the wall
/// clock, busy enough that every number has calls within a few seconds.
fn live_config() -> SimConfig {
    let now =
        i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs()).expect("time");
    SimConfig::default()
        .with_live(true)
        .with_calls_per_day(20_000.0)
        .with_data_range(now - 86_400, now + 86_400)
}

#[tokio::test(flavor = "multi_thread")]
async fn serves_metrics_behind_basic_auth_and_stops_on_sigterm() {
    let server = sim(live_config()).await;
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

#[tokio::test(flavor = "multi_thread")]
async fn serves_https_with_the_given_certificate() {
    let server = sim(SimConfig::default()).await;
    let names = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
    let generated = rcgen::generate_simple_self_signed(names).expect("generate a certificate");
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_file, generated.cert.pem()).expect("write cert");
    std::fs::write(&key_file, generated.signing_key.serialize_pem()).expect("write key");
    let mut cmd = exporter(plumline(&server));
    cmd.args(["--listen", "127.0.0.1:0", "--interval", "1s"])
        .arg("--tls-cert-file")
        .arg(&cert_file)
        .arg("--tls-key-file")
        .arg(&key_file);
    let running = tokio::task::spawn_blocking(move || start(cmd)).await.expect("start");
    assert_eq!(running.scheme, "https");
    let port = running.addr.port();

    let root = reqwest::Certificate::from_pem(generated.cert.pem().as_bytes()).expect("certificate");
    let client = reqwest::Client::builder()
        .add_root_certificate(root)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let plain = reqwest::Client::new().get(format!("http://127.0.0.1:{port}/healthz")).send().await;
    assert!(plain.is_err(), "plain HTTP must not be served: {plain:?}");
    let response =
        client.get(format!("https://localhost:{port}/metrics")).send().await.expect("scrape over https");
    assert_eq!(response.status(), 200);
    let scrape = response.text().await.expect("body");
    assert!(scrape.contains("# TYPE plum_fuse_up gauge"), "{scrape}");
    assert!(!scrape.contains(DEMO_KEY), "the developer key leaked into /metrics");
    drop(running);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn lookback_is_gone_and_help_explains_the_day_anchor() {
    let mut cmd = exporter(plumline_bare());
    cmd.args(["--listen", "127.0.0.1:0", "--lookback", "1h", "--email", "a@b.c", "--developer-key", "k"]);
    run_err(cmd, "--lookback").await;

    let mut cmd = exporter(plumline_bare());
    cmd.arg("--help");
    let output = tokio::task::spawn_blocking(move || cmd.output().expect("run --help")).await.expect("help");
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{help}");
    for needle in ["00:00 UTC", "backfills", "max by (number, direction)", "--settle", "[default: 4h]"] {
        assert!(help.contains(needle), "--help lacks {needle:?}:\n{help}");
    }
    assert!(!help.contains("--lookback <"), "{help}");
}

/// The value of the sample `name{number="…"}` in a scrape.
fn sample(scrape: &str, name: &str, number: &str) -> Option<f64> {
    let prefix = format!("{name}{{number=\"{number}\"}} ");
    scrape.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn publishes_the_last_call_and_the_no_calls_window_per_number() {
    let server = sim(live_config()).await;
    let (busy, quiet) = (server.simulator().numbers()[0].clone(), server.simulator().numbers()[1].clone());
    let mut cmd = exporter(plumline(&server));
    cmd.args(["--listen", "127.0.0.1:0", "--interval", "1s", "--number", &busy, "--number", &quiet]).args([
        "--no-calls-alert-after",
        "30m",
        "--no-calls-alert-after",
        &format!("{quiet}=6h"),
    ]);
    let running = tokio::task::spawn_blocking(move || start(cmd)).await.expect("start");
    let addr = running.addr;
    let simulator = server.simulator().clone();

    tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let asked = i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs())
                .expect("time");
            let anchor = asked.div_euclid(86_400) * 86_400;
            let scrape = get(addr, "/metrics", None);
            let published = scrape.contains("\nplum_fuse_up 1");
            let mut caught_up = published;
            for (number, window) in [(&busy, 1_800.0), (&quiet, 21_600.0)] {
                if !published {
                    break;
                }
                let got = sample(&scrape, "plum_fuse_no_calls_alert_after_seconds", number);
                assert_eq!(got, Some(window), "window of {number}:\n{scrape}");
                let last = sample(&scrape, "plum_fuse_last_call_end_timestamp_seconds", number)
                    .unwrap_or_else(|| panic!("no last call of {number}:\n{scrape}"));
                #[allow(clippy::cast_possible_truncation, reason = "whole UNIX seconds")]
                let last = last as i64;
                // The truth: the latest end since the anchor among the calls the API lists.
                let ends: Vec<i64> = simulator
                    .calls_in(anchor - 4 * 3_600, asked + 60, Some(number.as_str()))
                    .into_iter()
                    .map(|c| c.end)
                    .filter(|&end| end >= anchor)
                    .collect();
                assert!(
                    last == anchor || ends.contains(&last),
                    "{number}: {last} is neither the anchor {anchor} nor a call's end"
                );
                assert!((anchor..=asked + 60).contains(&last), "{number}: {last} outside the day");
                // Calls that ended a few polls before the scrape are counted.
                let settled = ends.iter().copied().filter(|&end| end <= asked - 3).max().unwrap_or(anchor);
                caught_up &= last >= settled;
            }
            if caught_up {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the last-call gauges did not catch up within 30 s:\n{scrape}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    })
    .await
    .expect("scraper");
    drop(running);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_no_calls_window_gives_one_clear_error() {
    let base = ["--listen", "127.0.0.1:0", "--email", "a@b.c", "--developer-key", "k"];
    // (value(s), what the one error line must say)
    let cases: [(&[&str], &str); 6] = [
        (&["soon"], "`soon` is not a duration"),
        (&["6175550199=six hours"], "`six hours` is not a duration"),
        (&["=6h"], "names no number"),
        (&["24h"], "--no-calls-alert-after 24h: the window must be shorter than 24h"),
        (&["30m", "1h"], "--no-calls-alert-after gives the default window twice"),
        (&["0s"], "--no-calls-alert-after 0s: the window must be greater than zero"),
    ];
    for (values, needle) in cases {
        let mut cmd = exporter(plumline_bare());
        cmd.args(base);
        for value in values {
            cmd.args(["--no-calls-alert-after", value]);
        }
        run_err(cmd, needle).await;
    }
    let mut cmd = exporter(plumline_bare());
    cmd.args(base).args(["--number", "100", "--no-calls-alert-after", "200=1h"]);
    run_err(cmd, "--no-calls-alert-after 200 has a window but is not one of the numbers polled (100)").await;
}
