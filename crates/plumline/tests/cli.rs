//! The command line itself: time arguments, output discipline, the export's
//! JSON summary, completions and the man page.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{describe, output, plumline, plumline_bare, run_err, run_ok, sim};
use parquet::file::reader::{FileReader as _, SerializedFileReader};
use plumline_api::Call;
use plumline_sim::{Faults, SimConfig};

fn ts(s: &str) -> i64 {
    s.parse::<jiff::Timestamp>().expect("timestamp").as_second()
}

/// The calls `plumline calls` prints for a range, as ndjson.
async fn calls(server: &plumline_sim::SimServer, args: &[&str]) -> Vec<Call> {
    let mut cmd = plumline(server);
    cmd.arg("calls").args(args).args(["--all", "--output", "ndjson"]);
    run_ok(cmd).await.lines().map(|l| serde_json::from_str(l).expect("ndjson line")).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn relative_times_in_utc_and_another_zone() {
    let server = sim(SimConfig::default().with_calls_per_day(100.0)).await;
    let now = "2025-01-10T15:30:00Z"; // 16:30 in Berlin (CET, +01:00)
    // (start, end, zone, want start, want end)
    let cases: &[(&str, &str, &str, &str, &str)] = &[
        ("yesterday", "today", "UTC", "2025-01-09T00:00:00Z", "2025-01-10T00:00:00Z"),
        ("yesterday", "today", "Europe/Berlin", "2025-01-08T23:00:00Z", "2025-01-09T23:00:00Z"),
        ("today", "now", "UTC", "2025-01-10T00:00:00Z", "2025-01-10T15:30:00Z"),
        ("today", "now", "Europe/Berlin", "2025-01-09T23:00:00Z", "2025-01-10T15:30:00Z"),
        ("-36h", "-30h", "UTC", "2025-01-09T03:30:00Z", "2025-01-09T09:30:00Z"),
        ("-36h", "-30h", "Europe/Berlin", "2025-01-09T03:30:00Z", "2025-01-09T09:30:00Z"),
        ("-7d", "-6d", "UTC", "2025-01-03T15:30:00Z", "2025-01-04T15:30:00Z"),
        ("-7d", "-6d", "America/New_York", "2025-01-03T15:30:00Z", "2025-01-04T15:30:00Z"),
    ];
    for (start, end, tz, want_start, want_end) in cases {
        let truth = server.simulator().calls_in(ts(want_start), ts(want_end) - 1, None);
        assert!(!truth.is_empty());
        // Both spellings: `--start -7d` and `--start=-7d`.
        let spaced = calls(&server, &["--start", start, "--end", end, "--tz", tz, "--now", now]).await;
        assert_eq!(spaced, truth, "--start {start} --end {end} --tz {tz}");
        let joined = format!("--start={start}");
        let joined = calls(&server, &[&joined, &format!("--end={end}"), "--tz", tz, "--now", now]).await;
        assert_eq!(joined, truth, "--start={start} --end={end} --tz {tz}");
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn relative_times_follow_the_clock_without_now() {
    let now = jiff::Timestamp::now().as_second();
    let server =
        sim(SimConfig::default().with_calls_per_day(200.0).with_data_range(now - 3 * 86_400, now)).await;
    let midnight = |t: i64| t - t.rem_euclid(86_400);
    let before = midnight(jiff::Timestamp::now().as_second());
    let got = calls(&server, &["--start", "yesterday", "--end", "today"]).await;
    if before == midnight(jiff::Timestamp::now().as_second()) {
        assert_eq!(got, server.simulator().calls_in(before - 86_400, before - 1, None));
    }
    // `-1h` to `now`: the calls of the last hour, by the clock of the run.
    let before = jiff::Timestamp::now().as_second();
    let got = calls(&server, &["--start", "-1h", "--end", "now"]).await;
    let after = jiff::Timestamp::now().as_second();
    assert!(!got.is_empty(), "the last hour has calls");
    assert!(
        got.iter().all(|c| c.start >= before - 3_600 && c.start <= after),
        "a call outside the last hour"
    );
    let truth = server.simulator().calls_in(after - 3_600, before - 1, None);
    assert!(truth.iter().all(|c| got.contains(c)), "a call of the last hour is missing");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn strict_rfc3339_and_bad_relative_times_are_usage_errors() {
    let server = sim(SimConfig::default()).await;
    let cases: &[(&str, &str)] = &[
        ("2024-03-03T00:00:00+24:00", "±23:59"),
        ("2024-03-03T00:00:00+25:00", "±23:59"),
        ("2024-03-03T00:00:00-24:00", "±23:59"),
        ("2024-03-03T00:00:00+0100", "±HH:MM"),
        ("2024-03-03T00:00", "HH:MM:SS"),
        ("2024-03-03T00:00:00", "needs an offset"),
        ("-7y", "unit s, m, h, d or w"),
        ("tomorrow", "cannot read --start"),
    ];
    for (start, needle) in cases {
        let mut cmd = plumline(&server);
        cmd.args(["calls", "--start", start, "--end", "2025-01-02"]);
        let stderr = run_err(cmd, needle).await;
        assert!(stderr.contains("--start"), "{stderr}");
    }
    // The edges of what RFC 3339 allows are accepted.
    for start in ["2025-01-01T23:59:00+23:59", "2025-01-01T00:00:00-23:59", "2025-01-01t00:00:00.25z"] {
        let mut cmd = plumline(&server);
        cmd.args(["calls", "--start", start, "--end", "2025-01-03", "--limit", "1"]);
        run_ok(cmd).await;
    }
    assert!(server.stats().requests <= 3, "usage errors must not reach the API");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn calls_print_nothing_until_the_first_page_and_say_how_far_they_got() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    for format in ["table", "json", "csv", "ndjson"] {
        let mut cmd = plumline_bare();
        cmd.env("PLUM_BASE_URL", format!("http://127.0.0.1:{closed}/api"))
            .env("PLUM_EMAIL", "a@b.c")
            .env("PLUM_DEVELOPER_KEY", "k")
            .args(["calls", "--start", "2025-01-01", "--end", "2025-01-02", "--max-attempts", "1"])
            .args(["--output", format]);
        let (cmd, out) = output(cmd).await;
        assert!(!out.status.success(), "{}", describe(&cmd, &out));
        assert!(out.stdout.is_empty(), "half-written output\n{}", describe(&cmd, &out));
    }

    // A server that goes away mid-listing: the error says how far it got.
    let server = sim(SimConfig::default()
        .with_calls_per_day(2_000.0)
        .with_faults(Faults::none().with_latency(Duration::from_millis(30))))
    .await;
    let mut cmd = plumline(&server);
    cmd.args(["calls", "--start", "2025-01-01", "--end", "2025-01-02", "--all", "--limit", "20"])
        .args(["--max-attempts", "1", "--output", "ndjson"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().expect("spawn");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    server.shutdown().await;
    let out =
        tokio::task::spawn_blocking(move || child.wait_with_output()).await.expect("join").expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let printed = String::from_utf8_lossy(&out.stdout).lines().count();
    assert!(!out.status.success(), "{stderr}");
    assert!(printed > 0, "the listing was meant to be interrupted after its first page: {stderr}");
    let error = stderr.lines().find(|l| l.starts_with("error:")).expect("an error line");
    assert!(
        error.contains(&format!("with {printed} of ")) && error.contains("the output is incomplete"),
        "{error}"
    );
}

/// Row count and size of every data file of a local lake.
fn lake_files(root: &Path) -> BTreeMap<String, (u64, u64)> {
    let mut files = BTreeMap::new();
    for day in std::fs::read_dir(root).expect("ls").flatten() {
        let name = day.file_name().to_string_lossy().into_owned();
        if !name.starts_with("date=") {
            continue;
        }
        for f in std::fs::read_dir(day.path()).expect("ls").flatten() {
            let fname = f.file_name().to_string_lossy().into_owned();
            if Path::new(&fname).extension().is_some_and(|e| e == "parquet") {
                let reader =
                    SerializedFileReader::new(std::fs::File::open(f.path()).expect("open")).expect("parquet");
                let rows = u64::try_from(reader.metadata().file_metadata().num_rows()).expect("rows");
                files.insert(format!("{name}/{fname}"), (rows, f.metadata().expect("meta").len()));
            }
        }
    }
    files
}

#[tokio::test(flavor = "multi_thread")]
async fn the_json_summary_parses_and_matches_the_lake() {
    let server = sim(SimConfig::default().with_seed(3).with_calls_per_day(150.0)).await;
    let numbers = server.simulator().numbers().to_vec();
    let tmp = tempfile::tempdir().expect("tempdir");
    let lake = tmp.path().join("lake");
    let file = tmp.path().join("summary.json");
    let mut cmd = plumline(&server);
    cmd.args(["export", "--start", "2025-01-03T06:00:00Z", "--end", "2025-01-06", "--output", "json"])
        .args(["--out", lake.to_str().expect("utf-8"), "--summary-json", file.to_str().expect("utf-8")])
        .args(["--number", &numbers[0], "--number", &numbers[1], "--days-in-flight", "2"]);
    let stdout = run_ok(cmd).await;
    let printed: serde_json::Value = serde_json::from_str(&stdout).expect("stdout is one JSON object");
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).expect("summary file")).expect("json file");
    let strip = |mut v: serde_json::Value| {
        v.as_object_mut().expect("object").remove("elapsed");
        v
    };
    assert_eq!(strip(printed.clone()), strip(written), "--output json and --summary-json agree");

    let files = lake_files(&lake);
    assert_eq!(printed["files"], files.len());
    assert_eq!(printed["calls"], files.values().map(|(rows, _)| rows).sum::<u64>());
    assert_eq!(printed["bytes"], files.values().map(|(_, bytes)| bytes).sum::<u64>());
    assert_eq!(printed["destination"], lake.to_str().expect("utf-8"));
    assert_eq!(printed["tz"], "UTC");
    let written_days: Vec<String> = printed["written_days"]
        .as_array()
        .expect("written_days")
        .iter()
        .map(|d| {
            let slug = format!("number-{}", d["number"].as_str().expect("number"));
            format!("date={}/calls-{slug}.parquet", d["date"].as_str().expect("date"))
        })
        .collect();
    assert_eq!(printed["written"], files.len());
    assert_eq!(written_days, files.keys().cloned().collect::<Vec<_>>());
    // 06:00 is inside a day: the start widened to its midnight.
    assert_eq!(printed["widened"][0]["bound"], "start", "{printed}");
    assert!(printed["elapsed"].as_f64().is_some_and(|s| s > 0.0), "{printed}");
    for key in ["skipped_days", "open_days", "widened", "requests", "out_of_window"] {
        assert!(printed.get(key).is_some(), "{key} missing from {printed}");
    }
    // Run again: everything skipped, named as such.
    let mut cmd = plumline(&server);
    cmd.args(["export", "--start", "2025-01-03T06:00:00Z", "--end", "2025-01-06", "--output", "json"])
        .args(["--out", lake.to_str().expect("utf-8"), "--number", &numbers[0], "--number", &numbers[1]]);
    let again: serde_json::Value = serde_json::from_str(&run_ok(cmd).await).expect("json");
    assert_eq!(again["written"], 0);
    assert_eq!(again["skipped"], files.len());
    let skipped_days = again["skipped_days"].as_array().map_or(0, Vec::len);
    assert_eq!(skipped_days, files.len(), "{again}");
    server.shutdown().await;
}

fn bare(args: &[&str]) -> Command {
    let mut cmd = plumline_bare();
    cmd.args(args);
    cmd
}

#[tokio::test(flavor = "multi_thread")]
async fn completions_and_man_pages_are_generated() {
    for (shell, marker) in
        [("bash", "complete -F"), ("zsh", "#compdef plumline"), ("fish", "complete -c plumline")]
    {
        let script = run_ok(bare(&["completions", shell])).await;
        assert!(script.contains(marker), "{shell}: {script:.300}");
        for word in ["verify", "export", "--summary-json", "--allow-shrink"] {
            assert!(script.contains(word), "{shell} completion lacks {word}");
        }
    }
    let page = run_ok(bare(&["man"])).await;
    assert!(page.starts_with(".ie") || page.starts_with(".TH"), "{page:.200}");
    assert!(page.contains(".TH plumline 1") && page.contains("verify"), "{page:.400}");
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("man1");
    run_ok(bare(&["man", "--dir", dir.to_str().expect("utf-8")])).await;
    for name in ["plumline.1", "plumline-export.1", "plumline-verify.1", "plumline-calls.1"] {
        let text = std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(text.contains(".TH"), "{name}");
    }
    let verify_page = std::fs::read_to_string(dir.join("plumline-verify.1")).expect("page");
    assert!(verify_page.contains("repair") && verify_page.contains("Exit status"), "{verify_page:.600}");
    run_err(bare(&["completions", "tcsh"]), "tcsh").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn help_shows_exit_codes_and_keeps_global_flags_apart() {
    let help = run_ok(bare(&["--help"])).await;
    assert!(help.contains("Exit status:") && help.contains("2  bad flags"), "{help}");
    let export = run_ok(bare(&["export", "--help"])).await;
    assert!(export.contains("Exit status:"), "{export}");
    let global = export.find("Global options:").expect("a global section");
    let verbose = export.find("--verbose").expect("--verbose");
    let out = export.find("--out").expect("--out");
    assert!(verbose > global && out < global, "global flags sit in their own section\n{export}");
    assert!(export.contains("--max-call-duration") && export.contains("[default: 4h]"), "{export}");
    assert!(export.contains("[default: 10000]"), "{export}");
    let verify = run_ok(bare(&["verify", "--help"])).await;
    assert!(verify.contains("0  every day matches") && verify.contains("--repair"), "{verify}");
}

/// The commands of the deploy examples, as a list of argument lists.
fn deploy_commands(root: &Path) -> Vec<(String, Vec<String>)> {
    let mut commands = Vec::new();
    let unit =
        std::fs::read_to_string(root.join("deploy/systemd/plumline-daily-export.service")).expect("unit");
    let joined = unit.replace("\\\n", " ");
    for line in joined.lines().filter_map(|l| l.strip_prefix("ExecStart=")) {
        let words: Vec<String> = line.split_whitespace().skip(1).map(str::to_owned).collect();
        commands.push(("systemd".to_owned(), words));
    }
    let cronjob =
        std::fs::read_to_string(root.join("deploy/kubernetes/daily-export-cronjob.yaml")).expect("yaml");
    let mut current: Option<Vec<String>> = None;
    for line in cronjob.lines().map(str::trim) {
        if line == "args:" {
            current = Some(Vec::new());
        } else if let (Some(args), Some(word)) = (current.as_mut(), line.strip_prefix("- ")) {
            args.push(word.to_owned());
        } else if let Some(args) = current.take() {
            commands.push(("kubernetes".to_owned(), args));
        }
    }
    commands
}

#[tokio::test(flavor = "multi_thread")]
async fn the_deploy_examples_run_as_written() {
    let server = sim(SimConfig::default().with_calls_per_day(60.0)).await;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let commands = deploy_commands(&root);
    let kinds: Vec<(&str, &str)> = commands.iter().map(|(k, a)| (k.as_str(), a[0].as_str())).collect();
    assert_eq!(
        kinds,
        [("systemd", "export"), ("systemd", "verify"), ("kubernetes", "export"), ("kubernetes", "verify")]
    );
    let tmp = tempfile::tempdir().expect("tempdir");
    for (kind, args) in commands {
        let lake = tmp.path().join(&kind);
        let lake = lake.to_str().expect("utf-8");
        let args: Vec<String> = args
            .iter()
            .map(|a| {
                a.replace("${PLUMLINE_TZ}", "UTC")
                    .replace("/var/lib/plumline", lake)
                    .replace("s3://example-call-lake/plumline", &format!("{lake}/lake"))
                    .replace("/summary", lake)
            })
            .collect();
        let mut cmd = plumline(&server);
        // Inside the simulator's month. At midnight `-7d` is a day's edge; at
        // the schedule's 05:30 the export widens it to one (see the contract).
        cmd.args(&args).args(["--now", "2025-01-20T00:00:00Z"]);
        let out = run_ok(cmd).await;
        if args[0] == "verify" && args.iter().any(|a| a == "--output=json") {
            let report: serde_json::Value = serde_json::from_str(&out).expect("json");
            assert_eq!(report["complete"], true, "{report}");
            assert_eq!(report["days"].as_array().map(Vec::len), Some(7), "{report}");
            assert_eq!(
                (&report["first_day"], &report["last_day"]),
                (&"2025-01-13".into(), &"2025-01-19".into())
            );
        }
    }
    assert!(tmp.path().join("systemd/last-export.json").is_file());
    server.shutdown().await;
}

/// `key=value` of a log line, as a number.
fn field(line: &str, key: &str) -> Option<u64> {
    line.split_whitespace().find_map(|w| w.strip_prefix(&format!("{key}=")))?.parse().ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_terminal_progress_is_plain_periodic_lines_counting_calls() {
    let server = sim(SimConfig::default()
        .with_calls_per_day(1_500.0)
        .with_faults(Faults::none().with_latency(Duration::from_millis(15))))
    .await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut cmd = plumline(&server);
    cmd.args(["export", "--start", "2025-01-01", "--end", "2025-01-07", "--page-size", "100"])
        .args(["--concurrency", "2", "--progress-every", "150ms", "--out"])
        .arg(tmp.path().join("lake"));
    let (cmd, out) = output(cmd).await;
    let ctx = describe(&cmd, &out);
    assert!(out.status.success(), "{ctx}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("export progress")).collect();
    assert!(lines.len() >= 3, "expected periodic progress lines\n{ctx}");
    let calls: Vec<u64> = lines.iter().map(|l| field(l, "calls").expect("calls=")).collect();
    assert!(calls.windows(2).all(|w| w[0] <= w[1]), "calls only grow: {calls:?}");
    let total = server.simulator().count_in(1_735_689_600, 1_735_689_600 + 6 * 86_400 - 1, None);
    for line in &lines {
        let (done, expected) =
            (field(line, "calls").expect("calls"), field(line, "expected").expect("expected"));
        assert!(done <= expected && done <= total, "{line}");
        assert!(line.contains("eta="), "{line}");
    }
    // Counted in calls, not in days: some line falls between two committed days.
    assert!(calls.iter().any(|&c| c > 0 && c < total), "{calls:?}");
    assert!(
        !stderr.contains('\r') && !stderr.contains("\u{1b}["),
        "no bar drawing without a terminal\n{ctx}"
    );
    assert_eq!(stderr.lines().filter(|l| l.contains("day committed")).count(), 6, "{ctx}");
}
