//! `plumline calls` end to end: the real binary against a simulator.

mod common;

use common::{plumline, plumline_bare, run_err, run_ok, sim};
use plumline_api::Call;
use plumline_sim::SimConfig;

const DAY: i64 = 86_400;

fn range_args(cmd: &mut std::process::Command, start: i64, end: i64) {
    cmd.args(["calls", "--start", &start.to_string(), "--end", &end.to_string()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn all_pages_of_a_multi_day_window_match_the_ground_truth_in_every_format() {
    let server = sim(SimConfig::default().with_calls_per_day(400.0)).await;
    let start = server.simulator().config().data_start + DAY / 2;
    let end = start + 3 * DAY;
    let truth = server.simulator().calls_in(start, end - 1, None);
    assert!(truth.len() > 2_000);

    let mut cmd = plumline(&server);
    range_args(&mut cmd, start, end);
    cmd.args(["--all", "--limit", "700", "--output", "json"]);
    let calls: Vec<Call> = serde_json::from_str(&run_ok(cmd).await).expect("json array of calls");
    assert_eq!(calls, truth);

    let mut cmd = plumline(&server);
    range_args(&mut cmd, start, end);
    cmd.args(["--all", "--limit", "10000", "--output", "ndjson", "--wire-format", "xml"]);
    let ndjson = run_ok(cmd).await;
    let calls: Vec<Call> = ndjson.lines().map(|l| serde_json::from_str(l).expect("ndjson line")).collect();
    assert_eq!(calls, truth);

    let mut cmd = plumline(&server);
    range_args(&mut cmd, start, end);
    cmd.args(["--all", "--output", "csv"]);
    let csv_text = run_ok(cmd).await;
    let mut reader = csv::Reader::from_reader(csv_text.as_bytes());
    assert_eq!(
        reader.headers().expect("header").iter().collect::<Vec<_>>(),
        ["dest", "src", "start", "end", "session_id", "type", "log"]
    );
    let ids: Vec<String> = reader.records().map(|r| r.expect("row")[4].to_owned()).collect();
    assert_eq!(ids, truth.iter().map(|c| c.session_id.clone()).collect::<Vec<_>>());

    // One page, table output: a header and `limit` rows, starting at `offset`.
    let number = server.simulator().numbers()[0].clone();
    let by_number = server.simulator().calls_in(start, end - 1, Some(&number));
    let mut cmd = plumline(&server);
    range_args(&mut cmd, start, end);
    cmd.args(["--number", &number, "--limit", "5", "--offset", "10"]);
    let table = run_ok(cmd).await;
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 6, "{table}");
    assert!(lines[0].starts_with("SESSION_ID"), "{table}");
    for (line, call) in lines[1..].iter().zip(&by_number[10..15]) {
        assert!(line.starts_with(&call.session_id), "{line} vs {}", call.session_id);
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn dates_are_read_in_the_time_zone() {
    // 2025-01-10 in New York is [05:00Z, next day 05:00Z).
    let server = sim(SimConfig::default()).await;
    let mut cmd = plumline(&server);
    cmd.args(["calls", "--start", "2025-01-10", "--end", "2025-01-11", "--tz", "America/New_York"]);
    cmd.args(["--all", "--output", "ndjson", "--limit", "10000"]);
    let out = run_ok(cmd).await;
    let start = 1_736_485_200; // 2025-01-10T05:00:00Z
    let truth = server.simulator().calls_in(start, start + DAY - 1, None);
    assert_eq!(out.lines().count(), truth.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_one_clear_error_line() {
    let server = sim(SimConfig::default()).await;
    let cases: &[(&[&str], &str)] = &[
        (&["calls", "--start", "2025-01-03", "--end", "2025-01-02"], "must be before --end"),
        (&["calls", "--start", "2025-01-02", "--end", "2025-01-02"], "must be before --end"),
        (&["calls", "--start", "last tuesday", "--end", "2025-01-02"], "cannot read --start"),
        (&["calls", "--start", "2025-01-01", "--end", "2025-13-40"], "cannot read --end"),
        (
            &["calls", "--start", "2025-01-01", "--end", "2025-01-02", "--tz", "Mars/Olympus"],
            "unknown time zone",
        ),
        (
            &["calls", "--start", "2025-01-01", "--end", "2025-01-02", "--limit", "0"],
            "page size 0 is out of range",
        ),
        (&["calls", "--start", "2025-01-01", "--end", "2025-01-02", "--limit", "10001"], "1 to 10000"),
        (
            &["calls", "--start", "2025-01-01", "--end", "2025-01-02", "--wire-format", "yaml"],
            "unknown wire format",
        ),
        (
            &[
                "calls",
                "--start",
                "2025-01-01",
                "--end",
                "2025-01-02",
                "--base-url",
                "http://example.com/api",
            ],
            "--allow-http",
        ),
        (&["calls", "--start", "2025-01-01"], "--end"),
    ];
    for (args, needle) in cases {
        let mut cmd = plumline(&server);
        cmd.args(*args);
        run_err(cmd, needle).await;
    }
    assert_eq!(server.stats().requests, 0, "bad input must fail before any request");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_credentials_say_how_to_set_them() {
    let server = sim(SimConfig::default()).await;
    let mut cmd = plumline_bare();
    cmd.env("PLUM_BASE_URL", server.base_url()).args([
        "calls",
        "--start",
        "2025-01-01",
        "--end",
        "2025-01-02",
    ]);
    run_err(cmd, "PLUM_EMAIL").await;
    let mut cmd = plumline_bare();
    cmd.env("PLUM_BASE_URL", server.base_url()).env("PLUM_EMAIL", "a@b.c");
    cmd.args(["calls", "--start", "2025-01-01", "--end", "2025-01-02"]);
    run_err(cmd, "PLUM_DEVELOPER_KEY").await;
    assert_eq!(server.stats().requests, 0, "missing credentials must fail before any request");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_developer_key_is_never_printed() {
    let server = sim(SimConfig::default()).await;
    let secret = "k3y-THAT-must-NOT-leak";
    // Wrong key, most verbose logging: the 401 error must not echo it.
    let mut cmd = plumline(&server);
    cmd.env("PLUM_DEVELOPER_KEY", secret).env("RUST_LOG", "trace");
    cmd.args(["calls", "--start", "2025-01-01", "--end", "2025-01-02", "-vv"]);
    let stderr = run_err(cmd, "refused the credentials").await;
    assert!(!stderr.contains(secret), "key leaked:\n{stderr}");
    // --help with the key in the environment.
    let mut cmd = plumline(&server);
    cmd.env("PLUM_DEVELOPER_KEY", secret).args(["calls", "--help"]);
    let help = run_ok(cmd).await;
    assert!(help.contains("PLUM_DEVELOPER_KEY") && !help.contains(secret), "{help}");
    // The right key, passed as a flag, with trace logging.
    let mut cmd = plumline(&server);
    cmd.env("RUST_LOG", "trace").args(["calls", "--start", "2025-01-01", "--end", "2025-01-02", "-vv"]);
    cmd.args(["--developer-key", plumline_sim::DEMO_KEY, "--limit", "3"]);
    let (cmd, out) = common::output(cmd).await;
    assert!(out.status.success(), "{}", common::describe(&cmd, &out));
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!all.contains(plumline_sim::DEMO_KEY), "key leaked:\n{all}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn plumline_sim_then_plumline_calls_pulls_every_call() {
    // `plumline sim` as its own process, as a user would run it.
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let (from, to) = (1_767_225_600_i64, 1_767_225_600 + 4 * DAY); // 2026-01-01 .. 2026-01-05
    let mut child = plumline_bare()
        .args(["sim", "--listen", &format!("127.0.0.1:{port}"), "--seed", "7", "--calls-per-day", "300"])
        .args(["--from", &from.to_string(), "--to", &to.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn plumline sim");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "plumline sim did not start listening");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let truth = plumline_sim::Simulator::new(
        SimConfig::default().with_seed(7).with_calls_per_day(300.0).with_data_range(from, to),
    )
    .expect("simulator")
    .calls_in(from, to - 1, None);
    let mut cmd = plumline_bare();
    cmd.env("PLUM_BASE_URL", format!("http://127.0.0.1:{port}/api"))
        .env("PLUM_EMAIL", plumline_sim::DEMO_EMAIL)
        .env("PLUM_DEVELOPER_KEY", plumline_sim::DEMO_KEY)
        .args(["calls", "--start", "2026-01-01", "--end", "2026-01-05", "--all", "--output", "ndjson"]);
    let out = run_ok(cmd).await;
    let _ = child.kill();
    let _ = child.wait();
    let calls: Vec<Call> = out.lines().map(|l| serde_json::from_str(l).expect("ndjson line")).collect();
    assert!(truth.len() > 2_000, "{}", truth.len());
    assert_eq!(calls.len(), truth.len());
    assert_eq!(calls, truth);
}

#[tokio::test(flavor = "multi_thread")]
async fn plumline_sim_rejects_bad_flags_clearly() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let cases: &[(&[&str], &str)] = &[
        (&["sim", "--listen", &addr], "is the port in use"),
        (&["sim", "--listen", "not-an-address"], "invalid value"),
        (&["sim", "--listen", "127.0.0.1:0", "--error-rate", "1.5"], "rate"),
        (&["sim", "--listen", "127.0.0.1:0", "--days", "0"], "--days"),
        (&["sim", "--listen", "127.0.0.1:0", "--from", "2026-01-02", "--to", "2026-01-01"], "must be before"),
    ];
    for (args, needle) in cases {
        let mut cmd = plumline_bare();
        cmd.args(*args);
        run_err(cmd, needle).await;
    }
}
