//! One lake, many runs: whole days, one time zone, no silent shrink,
//! concurrent writers, claims left by killed runs, crashes at each step of
//! the commit protocol. The real binary against an in-process simulator.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{describe, output, plumline, run_err, run_ok, sim};
use plumline_sim::{SimConfig, SimServer};

/// Every file under `root`: relative path → bytes.
fn all_files(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(root).expect("under root").display().to_string();
                files.insert(rel, std::fs::read(&path).expect("read"));
            }
        }
    }
    files
}

/// The lake's data and state, not its claims (which every run takes and
/// releases).
fn snapshot(root: &Path) -> BTreeMap<String, Vec<u8>> {
    all_files(root).into_iter().filter(|(k, _)| !k.starts_with("_plumline/claims")).collect()
}

/// Data files only, and no temp anywhere.
fn data_files(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let all = all_files(root);
    let temps: Vec<&String> =
        all.keys().filter(|k| Path::new(k).extension().is_some_and(|e| e == "tmp")).collect();
    assert!(temps.is_empty(), "temps remain under {}: {temps:?}", root.display());
    all.into_iter().filter(|(k, _)| Path::new(k).extension().is_some_and(|e| e == "parquet")).collect()
}

fn config() -> SimConfig {
    SimConfig::default().with_seed(23).with_calls_per_day(400.0).with_generated_numbers(3)
}

fn export(server: &SimServer, out: &Path, extra: &[&str]) -> Command {
    let mut cmd = plumline(server);
    cmd.args(["export", "--out"]).arg(out).args(["--page-size", "100", "--concurrency", "4"]).args(extra);
    cmd.stdin(Stdio::null());
    cmd
}

const RANGE: &[&str] = &["--start", "2025-01-13", "--end", "2025-01-17"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounds_inside_a_day_export_whole_days_and_a_narrower_rerun_keeps_the_lake() {
    let server = sim(config()).await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let (full, narrow) = (tmp.path().join("full"), tmp.path().join("narrow"));
    run_ok(export(&server, &full, RANGE)).await;
    let before = data_files(&full);
    assert_eq!(before.len(), 4, "{:?}", before.keys());

    // A narrower rerun with bounds inside days, forced over committed days.
    let inside = ["--start", "2025-01-14T12:00:00Z", "--end", "2025-01-15T06:00:00Z"];
    run_ok(export(&server, &full, &[&inside[..], &["--overwrite"]].concat())).await;
    assert!(data_files(&full) == before, "a narrower rerun changed the lake");

    // The same bounds alone export the two whole days they touch.
    run_ok(export(&server, &narrow, &inside)).await;
    let got = data_files(&narrow);
    let want: BTreeMap<String, Vec<u8>> = before
        .iter()
        .filter(|(k, _)| k.contains("2025-01-14") || k.contains("2025-01-15"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>());
    assert!(got == want, "whole days widened from inner bounds differ from the full export's days");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_time_zone_is_refused_and_changes_nothing() {
    let server = sim(config()).await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let lake = tmp.path().join("lake");
    run_ok(export(&server, &lake, RANGE)).await;
    let before = snapshot(&lake);
    let stderr = run_err(
        export(&server, &lake, &[RANGE, &["--tz", "America/New_York", "--overwrite"]].concat()),
        "UTC",
    )
    .await;
    assert!(stderr.contains("America/New_York"), "{stderr}");
    assert!(snapshot(&lake) == before, "a refused export changed the lake");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_that_would_shrink_is_kept_unless_allowed() {
    let full = sim(config()).await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let lake = tmp.path().join("lake");
    run_ok(export(&full, &lake, RANGE)).await;
    let before = snapshot(&lake);
    full.shutdown().await;

    // The vendor purged records: the same account now lists fewer calls.
    let purged = sim(config().with_calls_per_day(150.0)).await;
    let stderr = run_err(export(&purged, &lake, &[RANGE, &["--overwrite"]].concat()), "would shrink").await;
    assert!(stderr.contains("2025-01-13") && stderr.contains("--allow-shrink"), "{stderr}");
    assert!(snapshot(&lake) == before, "a refused shrink changed the lake");

    run_ok(export(&purged, &lake, &[RANGE, &["--overwrite", "--allow-shrink"]].concat())).await;
    let after = data_files(&lake);
    assert_eq!(after.len(), 4);
    assert!(after.values().zip(data_files_of(&before).values()).all(|(a, b)| a.len() < b.len()));
    purged.shutdown().await;
}

fn data_files_of(snapshot: &BTreeMap<String, Vec<u8>>) -> BTreeMap<String, Vec<u8>> {
    snapshot.iter().filter(|(k, _)| k.ends_with(".parquet")).map(|(k, v)| (k.clone(), v.clone())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_state_exports_the_day_again_with_a_warning() {
    let server = sim(config()).await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let lake = tmp.path().join("lake");
    run_ok(export(&server, &lake, RANGE)).await;
    let before = data_files(&lake);
    let state = lake.join("_plumline/days/all/2025-01-15.json");
    let raw = std::fs::read(&state).expect("state");
    std::fs::write(&state, &raw[..raw.len() / 2]).expect("truncate");
    let requests = server.stats().requests;
    let (cmd, out) = output(export(&server, &lake, RANGE)).await;
    assert!(out.status.success(), "{}", describe(&cmd, &out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unreadable state"), "{}", describe(&cmd, &out));
    assert!(server.stats().requests > requests, "the day was not fetched again");
    assert!(data_files(&lake) == before);
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state).expect("state")).expect("json");
    assert_eq!(state["date"], "2025-01-15");
    server.shutdown().await;
}

/// Runs `cmds` at once, each started `stagger` after the previous.
async fn run_together(cmds: Vec<Command>, stagger: Duration) -> Vec<(Command, std::process::Output)> {
    let mut handles = Vec::new();
    for (i, cmd) in cmds.into_iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(stagger).await;
        }
        handles.push(tokio::spawn(output(cmd)));
    }
    let mut outs = Vec::new();
    for h in handles {
        outs.push(h.await.expect("runner"));
    }
    outs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_runs_never_corrupt_the_lake() {
    let server = sim(config()).await;
    let numbers = server.simulator().numbers().to_vec();
    let tmp = tempfile::tempdir().expect("tempdir");
    let reference = tmp.path().join("reference");
    run_ok(export(&server, &reference, RANGE)).await;
    for n in &numbers[..2] {
        run_ok(export(&server, &reference, &[RANGE, &["--number", n]].concat())).await;
    }
    let want = data_files(&reference);

    for (i, stagger) in
        [Duration::ZERO, Duration::from_millis(150), Duration::from_millis(400)].into_iter().enumerate()
    {
        let lake = tmp.path().join(format!("lake-{i}"));
        // The same partitions twice, and two distinct numbers, all at once.
        let cmds = vec![
            export(&server, &lake, RANGE),
            export(&server, &lake, RANGE),
            export(&server, &lake, &[RANGE, &["--number", &numbers[0]]].concat()),
            export(&server, &lake, &[RANGE, &["--number", &numbers[1]]].concat()),
        ];
        for (cmd, out) in run_together(cmds, stagger).await {
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!stderr.contains("panicked"), "{}", describe(&cmd, &out));
            assert!(out.status.success(), "a run failed on another's files\n{}", describe(&cmd, &out));
        }
        assert!(
            data_files(&lake) == want,
            "stagger {stagger:?}: the lake differs from runs one after another"
        );
        // A rerun finds every day committed.
        let requests = server.stats().requests;
        run_ok(export(&server, &lake, RANGE)).await;
        assert_eq!(server.stats().requests, requests, "stagger {stagger:?}: a rerun fetched again");
    }
    server.shutdown().await;
}

/// A live claim of another machine on `date` that expires in `lease`.
fn foreign_claim(lake: &Path, date: &str, lease: Duration) {
    let dir = lake.join("_plumline/claims/all");
    std::fs::create_dir_all(&dir).expect("claims dir");
    let expires = jiff::Timestamp::now().as_millisecond() + i64::try_from(lease.as_millis()).expect("ms");
    let claim = serde_json::json!({
        "run": {"host": "worker-7.example", "pid": 4242, "started_at": 1_700_000_000, "token": "rforeign"},
        "date": date, "number": null, "expires_at_ms": expires, "released": false, "stages": []
    });
    std::fs::write(dir.join(format!("{date}.json")), claim.to_string()).expect("claim");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_claim_is_waited_for_and_an_expired_one_taken_over() {
    let server = sim(config()).await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let (reference, lake) = (tmp.path().join("reference"), tmp.path().join("lake"));
    run_ok(export(&server, &reference, RANGE)).await;

    // Another machine holds 2025-01-15 for a minute: a short wait fails that
    // day, naming it and the other run; the other days are committed.
    foreign_claim(&lake, "2025-01-15", Duration::from_secs(60));
    let stderr =
        run_err(export(&server, &lake, &[RANGE, &["--claim-wait", "1s"]].concat()), "2025-01-15").await;
    assert!(stderr.contains("worker-7.example"), "{stderr}");
    assert_eq!(data_files(&lake).len(), 3);

    // Its claim expires in 2 s: a run that may wait takes it over then.
    foreign_claim(&lake, "2025-01-15", Duration::from_secs(2));
    let (cmd, out) = output(export(&server, &lake, &[RANGE, &["--claim-wait", "30s"]].concat())).await;
    assert!(out.status.success(), "{}", describe(&cmd, &out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("waiting"), "{}", describe(&cmd, &out));
    assert!(data_files(&lake) == data_files(&reference));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_each_step_of_the_commit_protocol_then_a_rerun_gives_the_same_lake() {
    let server = sim(config()).await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let reference = tmp.path().join("reference");
    run_ok(export(&server, &reference, RANGE)).await;
    let want = data_files(&reference);
    for point in ["claimed", "staged", "committed", "recorded"] {
        let lake = tmp.path().join(point);
        let mut crashing = export(&server, &lake, RANGE);
        crashing.env("PLUMLINE_FAILPOINT", point);
        let (cmd, out) = output(crashing).await;
        assert!(!out.status.success(), "{point}: the crash point was not reached\n{}", describe(&cmd, &out));
        // The rerun takes over the dead run's claims at once (same machine).
        run_ok(export(&server, &lake, RANGE)).await;
        assert!(data_files(&lake) == want, "{point}: the lake differs from an uninterrupted run");
    }
    server.shutdown().await;
}

/// Calls per UTC day the simulator lists now, for `days` from `first`.
fn truth_per_day(server: &SimServer, first: i64, days: i64) -> BTreeMap<String, u64> {
    (0..days)
        .map(|d| {
            let start = first + d * 86_400;
            let date = jiff::Timestamp::from_second(start)
                .expect("ts")
                .to_zoned_datetime(jiff::tz::TimeZone::UTC)
                .date();
            (date.to_string(), server.simulator().count_in(start, start + 86_399, None))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_export_writes_open_days_and_a_rerun_after_the_calls_ended_completes_them() {
    let now = jiff::Timestamp::now().as_second();
    let today = now - now.rem_euclid(86_400);
    let first = today - 2 * 86_400;
    // A live account: calls are listed once ended, some last hours.
    let config = SimConfig::default()
        .with_seed(31)
        .with_generated_numbers(2)
        .with_calls_per_day(600.0)
        .with_data_range(first, today + 86_400)
        .with_live(true)
        .with_clock(plumline_sim::SimClock::manual(now))
        .with_long_calls(Some(plumline_sim::LongCalls::default()));
    let server = sim(config).await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let lake = tmp.path().join("lake");
    let run = |server: &SimServer| {
        let mut cmd = export(server, &lake, &["--start", "-2d", "--end", "now", "--output", "json"]);
        cmd.args(["--settle", "4h"]);
        cmd
    };
    let first_run: serde_json::Value =
        serde_json::from_str(&run_ok(run(&server)).await).expect("json summary");
    let open: Vec<&str> = first_run["open_days"]
        .as_array()
        .expect("open days")
        .iter()
        .filter_map(|d| d["date"].as_str())
        .collect();
    let today_date = jiff::Timestamp::from_second(today)
        .expect("ts")
        .to_zoned_datetime(jiff::tz::TimeZone::UTC)
        .date()
        .to_string();
    assert!(open.contains(&today_date.as_str()), "today is open: {first_run}");
    // What was written is what the API listed then: today still misses the
    // calls in progress.
    let before = plumline_export::summarize_lake(&lake).expect("lake").per_day;
    assert_eq!(before, truth_per_day(&server, first, 3), "the lake is what the API listed");

    // Five hours later every call that had started has ended.
    server.set_now(now + 5 * 3_600);
    let grown = truth_per_day(&server, first, 3);
    assert!(
        grown[&today_date] > before[&today_date],
        "the test lost its point: today did not grow {grown:?}"
    );
    run_ok(run(&server)).await;
    let after = plumline_export::summarize_lake(&lake).expect("lake").per_day;
    assert_eq!(after, grown, "the rerun refreshed the open days to the API's final listing");
    server.shutdown().await;
}
