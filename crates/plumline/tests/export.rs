//! `plumline export` and `plumline demo`, run as the real binary against a
//! simulator started in-process on port 0.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use plumline_sim::{Faults, SimConfig};

mod common;

use common::{BlockingSim as Sim, describe as show, run_ok_blocking as run_ok};

fn plumline(sim: &Sim, args: &[&str]) -> Command {
    let mut cmd = sim.plumline();
    cmd.args(args);
    cmd
}

/// Every data file of a lake (relative path → bytes), and every temp file
/// found anywhere under it.
fn snapshot(root: &Path) -> (BTreeMap<String, Vec<u8>>, Vec<String>) {
    let mut files = BTreeMap::new();
    let mut temps = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let rel = path.strip_prefix(root).expect("under root").display().to_string();
            if path.is_dir() {
                stack.push(path);
            } else if Path::new(&rel).extension().is_some_and(|e| e == "tmp") {
                temps.push(rel);
            } else if !rel.starts_with("_plumline") {
                files.insert(rel, std::fs::read(&path).expect("read"));
            }
        }
    }
    (files, temps)
}

fn sim_config() -> SimConfig {
    SimConfig::default().with_seed(11).with_calls_per_day(300.0)
}

const EXPORT: &[&str] =
    &["export", "--start", "2025-01-03", "--end", "2025-01-09", "--page-size", "100", "--concurrency", "4"];

fn export_args<'a>(out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = EXPORT.to_vec();
    args.extend(["--out", out]);
    args.extend(extra);
    args
}

#[test]
fn bad_input_is_one_clear_error_and_writes_nothing() {
    let sim = Sim::start(sim_config());
    let tmp = tempfile::tempdir().expect("tempdir");
    let blocker = tmp.path().join("a-file");
    std::fs::write(&blocker, b"not a directory").expect("write");
    let out = tmp.path().join("lake");
    let out = out.to_str().expect("utf-8");
    let unwritable = blocker.join("lake");
    let unwritable = unwritable.to_str().expect("utf-8");
    let base = |start: &'static str, end: &'static str| vec!["export", "--start", start, "--end", end];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        ([base("2025-01-05", "2025-01-02"), vec!["--out", out]].concat(), "must be before --end"),
        ([base("2025-01-05", "2025-01-05"), vec!["--out", out]].concat(), "empty"),
        (
            [base("2025-01-01", "2025-01-02"), vec!["--out", out, "--tz", "Mars/Olympus"]].concat(),
            "unknown time zone",
        ),
        ([base("2025-01-01", "2025-01-02"), vec!["--out", unwritable]].concat(), "a-file/lake"),
        (
            [base("2025-01-01", "2025-01-02"), vec!["--out", "ftp://host/lake"]].concat(),
            "scheme `ftp://` is not supported",
        ),
        ([base("2025-01-01", "2025-01-02"), vec!["--out", out, "--page-size", "0"]].concat(), "page size 0"),
        (
            [base("2025-01-01", "2025-01-02"), vec!["--out", out, "--page-size", "10001"]].concat(),
            "page size 10001",
        ),
        (
            [base("2025-01-01", "2025-01-02"), vec!["--out", out, "--concurrency", "0"]].concat(),
            "--concurrency",
        ),
        ([base("last tuesday", "2025-01-02"), vec!["--out", out]].concat(), "cannot read --start"),
        ([base("2025-01-01T00:00:00+24:00", "2025-01-02"), vec!["--out", out]].concat(), "±23:59"),
        (
            [base("2025-01-01", "2025-01-02"), vec!["--out", out, "--days-in-flight", "0"]].concat(),
            "at least 1",
        ),
    ];
    for (args, needle) in cases {
        let mut cmd = plumline(&sim, &args);
        let output = cmd.output().expect("run");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert!(!output.status.success(), "expected failure\n{}", show(&cmd, &output));
        assert!(
            lines.len() == 1 && lines[0].starts_with("error: ") && lines[0].contains(needle),
            "expected one `error:` line containing {needle:?}\n{}",
            show(&cmd, &output)
        );
        assert!(!Path::new(out).exists(), "nothing may be written\n{}", show(&cmd, &output));
        assert!(blocker.is_file(), "the blocking file is untouched");
        let leftovers: Vec<PathBuf> =
            std::fs::read_dir(tmp.path()).expect("ls").flatten().map(|e| e.path()).collect();
        assert_eq!(leftovers, vec![blocker.clone()], "nothing else appears\n{}", show(&cmd, &output));
    }
}

#[test]
fn a_rerun_skips_committed_days_and_changes_nothing() {
    let sim = Sim::start(sim_config());
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("lake");
    let out_s = out.to_str().expect("utf-8");
    let first = run_ok(plumline(&sim, &export_args(out_s, &[])));
    assert!(String::from_utf8_lossy(&first.stdout).contains("6 written"), "{first:?}");
    let (files, temps) = snapshot(&out);
    assert_eq!(files.len(), 6, "{:?}", files.keys());
    assert!(temps.is_empty(), "{temps:?}");
    let second = run_ok(plumline(&sim, &export_args(out_s, &[])));
    assert!(String::from_utf8_lossy(&second.stdout).contains("6 already committed"), "{second:?}");
    assert_eq!(snapshot(&out), (files.clone(), Vec::new()));
    // --overwrite rewrites every day, to the same bytes.
    let third = run_ok(plumline(&sim, &export_args(out_s, &["--overwrite"])));
    assert!(String::from_utf8_lossy(&third.stdout).contains("6 written"), "{third:?}");
    assert_eq!(snapshot(&out), (files, Vec::new()));
}

#[test]
fn numbers_share_a_lake_without_clobbering() {
    let sim = Sim::start(sim_config());
    let numbers = sim.server().simulator().numbers().to_vec();
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("lake");
    let out_s = out.to_str().expect("utf-8");
    run_ok(plumline(&sim, &export_args(out_s, &["--number", &numbers[0]])));
    run_ok(plumline(&sim, &export_args(out_s, &["--number", &numbers[1], "--number", &numbers[2]])));
    let (files, _) = snapshot(&out);
    assert_eq!(files.len(), 18, "{:?}", files.keys());
    for n in &numbers {
        assert!(
            files.contains_key(&format!("date=2025-01-03/calls-number-{n}.parquet")),
            "{:?}",
            files.keys()
        );
    }
}

#[cfg(unix)]
#[test]
fn killed_exports_resume_to_the_same_lake() {
    let config = sim_config().with_faults(Faults::none().with_latency(Duration::from_millis(4)));
    let sim = Sim::start(config);
    let tmp = tempfile::tempdir().expect("tempdir");
    let reference = tmp.path().join("reference");
    run_ok(plumline(&sim, &export_args(reference.to_str().expect("utf-8"), &[])));
    let (want, _) = snapshot(&reference);
    assert_eq!(want.len(), 6);

    // One lake per kill point, plus one lake killed again and again.
    let delays = [20u64, 80, 200, 400, 700];
    let repeated = tmp.path().join("repeated");
    let mut interrupted = 0;
    for (i, delay) in delays.iter().enumerate() {
        let lake = tmp.path().join(format!("killed-{i}"));
        for target in [&lake, &repeated] {
            let mut cmd = plumline(&sim, &export_args(target.to_str().expect("utf-8"), &[]));
            let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn");
            std::thread::sleep(Duration::from_millis(*delay));
            // SIGKILL: no destructor, no cleanup.
            let _ = child.kill();
            let _ = child.wait();
        }
        interrupted += usize::from(snapshot(&lake).0 != want);
        run_ok(plumline(&sim, &export_args(lake.to_str().expect("utf-8"), &[])));
        let (got, temps) = snapshot(&lake);
        assert!(temps.is_empty(), "killed after {delay} ms: temps remain: {temps:?}");
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>(),
            "killed after {delay} ms"
        );
        assert!(got == want, "killed after {delay} ms: file contents differ from an uninterrupted run");
    }
    assert!(
        interrupted >= 2,
        "only {interrupted} kill points interrupted the export: the test lost its point"
    );
    run_ok(plumline(&sim, &export_args(repeated.to_str().expect("utf-8"), &[])));
    let (got, temps) = snapshot(&repeated);
    assert!(temps.is_empty(), "{temps:?}");
    assert!(got == want, "killed repeatedly: file contents differ from an uninterrupted run");
}

#[test]
fn demo_runs_twice() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("demo");
    let dir_s = dir.to_str().expect("utf-8");
    let demo = || {
        let mut cmd = common::plumline_bare();
        cmd.args(["demo", "--dir", dir_s, "--calls-per-day", "40"]);
        run_ok(cmd)
    };
    let first = String::from_utf8_lossy(&demo().stdout).into_owned();
    for needle in ["Calls per day", "Calls per number and type", "p50", "p99", "read_parquet(", "93 written"]
    {
        assert!(first.contains(needle), "missing {needle:?} in:\n{first}");
    }
    let (files, _) = snapshot(&dir.join("lake"));
    let second = String::from_utf8_lossy(&demo().stdout).into_owned();
    assert!(second.contains("93 already committed"), "{second}");
    assert_eq!(snapshot(&dir.join("lake")), (files, Vec::new()));
    // The figures read back are the same both times.
    let tail = |s: &str| s.split("The lake, read back").nth(1).map(str::to_owned);
    assert_eq!(tail(&first), tail(&second));
}
