//! `plumline verify` end to end: the real binary against a simulator, on
//! lakes the real binary exported.

mod common;

use std::path::Path;
use std::process::Command;

use common::{describe, output, plumline, sim};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use plumline_sim::{SimConfig, SimServer};

const START: &str = "2025-01-03";
const END: &str = "2025-01-09";

/// Runs and returns (exit code, stdout, stderr, description for messages).
async fn run(cmd: Command) -> (i32, String, String, String) {
    let (cmd, out) = output(cmd).await;
    let ctx = describe(&cmd, &out);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"), "panicked\n{ctx}");
    let code = out.status.code().unwrap_or(-1);
    (
        code,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        ctx,
    )
}

fn cmd(server: &SimServer, args: &[&str]) -> Command {
    let mut cmd = plumline(server);
    cmd.args(args);
    cmd
}

async fn export(server: &SimServer, lake: &Path, extra: &[&str]) {
    let lake = lake.to_str().expect("utf-8");
    let mut c = cmd(server, &["export", "--start", START, "--end", END, "--out", lake, "--settle", "0s"]);
    c.args(extra);
    let (code, _, _, ctx) = run(c).await;
    assert_eq!(code, 0, "export failed\n{ctx}");
}

fn verify(server: &SimServer, lake: &Path, extra: &[&str]) -> Command {
    let mut c =
        cmd(server, &["verify", "--start", START, "--end", END, "--out", lake.to_str().expect("utf-8")]);
    c.args(extra);
    c
}

/// Rewrites a Parquet file keeping only its first `keep` rows.
fn truncate_parquet(path: &Path, keep: usize) -> usize {
    let file = std::fs::File::open(path).expect("open");
    let reader = ParquetRecordBatchReaderBuilder::try_new(file).expect("parquet").build().expect("reader");
    let batches: Vec<_> = reader.collect::<Result<_, _>>().expect("batches");
    let schema = batches[0].schema();
    let total: usize = batches.iter().map(arrow_array::RecordBatch::num_rows).sum();
    let mut out = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut out, schema, None).expect("writer");
    let mut left = keep;
    for b in &batches {
        let n = left.min(b.num_rows());
        writer.write(&b.slice(0, n)).expect("write");
        left -= n;
    }
    writer.close().expect("close");
    std::fs::write(path, out).expect("rewrite");
    total
}

fn line_of<'a>(table: &'a str, date: &str) -> &'a str {
    table.lines().find(|l| l.starts_with(date)).unwrap_or_else(|| panic!("no line for {date} in\n{table}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_names_missing_and_short_days_and_repair_fixes_them() {
    let server = sim(SimConfig::default().with_seed(5).with_calls_per_day(200.0)).await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let lake = tmp.path().join("lake");
    export(&server, &lake, &[]).await;

    let (code, table, _, ctx) = run(verify(&server, &lake, &[])).await;
    assert_eq!(code, 0, "a complete lake\n{ctx}");
    assert_eq!(table.lines().filter(|l| l.ends_with("  match")).count(), 6, "{ctx}");
    assert!(table.contains("6 match, 0 differ, 0 missing"), "{ctx}");

    // One day's file removed, another's cut short.
    std::fs::remove_file(lake.join("date=2025-01-05/calls-all.parquet")).expect("rm");
    let total = truncate_parquet(&lake.join("date=2025-01-07/calls-all.parquet"), 50);
    assert!(total > 300, "{total}");
    let (code, table, stderr, ctx) = run(verify(&server, &lake, &[])).await;
    assert_eq!(code, 1, "damaged lake\n{ctx}");
    assert!(!stderr.contains("error:"), "findings are not errors\n{ctx}");
    let missing = line_of(&table, "2025-01-05");
    assert!(missing.contains("missing") && missing.contains("date=2025-01-05/calls-all.parquet"), "{ctx}");
    let short = line_of(&table, "2025-01-07");
    assert!(short.contains(" 50 ") && short.contains(&total.to_string()), "both counts shown\n{ctx}");
    assert!(short.contains(&format!("{} fewer", total - 50)), "{ctx}");
    assert!(table.contains("incomplete: 2025-01-05 is missing, 2025-01-07 differs"), "{ctx}");
    assert!(
        table
            .contains("_plumline/days/all/2025-01-05.json: the state records a file that is not in the lake"),
        "{ctx}"
    );
    assert!(table.contains("_plumline/days/all/2025-01-07.json"), "the short file's state disagrees\n{ctx}");

    // The same as JSON.
    let (code, json, _, ctx) = run(verify(&server, &lake, &["--output", "json"])).await;
    assert_eq!(code, 1, "{ctx}");
    let report: serde_json::Value = serde_json::from_str(&json).expect("json report");
    assert_eq!(report["complete"], false);
    let days = report["days"].as_array().expect("days");
    assert_eq!(days.len(), 6);
    let day = |date: &str| days.iter().find(|d| d["date"] == date).expect("day");
    assert_eq!(day("2025-01-05")["status"], "missing");
    assert!(day("2025-01-05")["lake_rows"].is_null());
    assert_eq!(day("2025-01-07")["status"], "differs");
    assert_eq!(day("2025-01-07")["lake_rows"], 50);
    assert_eq!(day("2025-01-07")["api_total"], total);
    assert_eq!(day("2025-01-03")["status"], "match");

    // --repair re-exports both, then the lake checks out.
    let (code, table, _, ctx) = run(verify(&server, &lake, &["--repair"])).await;
    assert_eq!(code, 0, "repaired\n{ctx}");
    assert!(table.contains("repaired: 2025-01-05, 2025-01-07"), "{ctx}");
    let (code, _, _, ctx) = run(verify(&server, &lake, &[])).await;
    assert_eq!(code, 0, "{ctx}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_day_with_more_rows_than_the_api_is_not_shrunk_by_repair() {
    let server = sim(SimConfig::default().with_seed(6).with_calls_per_day(100.0)).await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let (big, small) = (tmp.path().join("big"), tmp.path().join("small"));
    // A lake of the whole account, and one day of it copied over a lake of one number.
    export(&server, &big, &[]).await;
    let number = server.simulator().numbers()[0].clone();
    export(&server, &small, &["--number", &number]).await;
    let file = format!("date=2025-01-04/calls-number-{number}.parquet");
    std::fs::copy(big.join("date=2025-01-04/calls-all.parquet"), small.join(&file)).expect("copy");
    let (code, table, _, ctx) = run(verify(&server, &small, &["--number", &number, "--repair"])).await;
    assert_eq!(code, 1, "{ctx}");
    assert!(line_of(&table, "2025-01-04").contains("more"), "{ctx}");
    assert!(!table.contains("repaired:"), "{ctx}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn lakes_of_numbers_and_of_another_zone_verify() {
    let server = sim(SimConfig::default().with_seed(7).with_calls_per_day(150.0)).await;
    let numbers = server.simulator().numbers().to_vec();
    let tmp = tempfile::tempdir().expect("tempdir");

    let by_number = tmp.path().join("numbers");
    export(&server, &by_number, &["--number", &numbers[0], "--number", &numbers[1]]).await;
    let (code, table, _, ctx) =
        run(verify(&server, &by_number, &["--number", &numbers[0], "--number", &numbers[1]])).await;
    assert_eq!(code, 0, "{ctx}");
    assert_eq!(table.lines().filter(|l| l.ends_with("  match")).count(), 12, "{ctx}");
    // A number that was never exported is missing on every day.
    let (code, table, _, ctx) = run(verify(&server, &by_number, &["--number", &numbers[2]])).await;
    assert_eq!(code, 1, "{ctx}");
    assert!(table.contains("0 match, 0 differ, 6 missing"), "{ctx}");

    let zoned = tmp.path().join("zoned");
    export(&server, &zoned, &["--tz", "America/New_York"]).await;
    let (code, table, _, ctx) = run(verify(&server, &zoned, &["--tz", "America/New_York"])).await;
    assert_eq!(code, 0, "{ctx}");
    assert!(table.contains("(America/New_York)"), "{ctx}");
    // Checked in UTC, the days do not add up, and the state says why.
    let (code, table, _, ctx) = run(verify(&server, &zoned, &[])).await;
    assert_eq!(code, 1, "{ctx}");
    assert!(table.contains("cut in time zone America/New_York, not UTC"), "{ctx}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_that_cannot_check_exits_2_with_one_error_line() {
    let server = sim(SimConfig::default().with_calls_per_day(50.0)).await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let lake = tmp.path().join("lake");
    export(&server, &lake, &[]).await;

    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let mut c = verify(&server, &lake, &["--max-attempts", "1"]);
    c.env("PLUM_BASE_URL", format!("http://127.0.0.1:{closed}/api"));
    let (code, stdout, stderr, ctx) = run(c).await;
    assert_eq!(code, 2, "closed port\n{ctx}");
    assert!(stdout.is_empty(), "{ctx}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{ctx}");
    assert!(errors[0].contains("cannot verify") && errors[0].contains("could not reach the API"), "{ctx}");

    let secret = "verify-KEY-never-printed";
    let mut c = verify(&server, &lake, &["-vv"]);
    c.env("PLUM_DEVELOPER_KEY", secret).env("RUST_LOG", "trace");
    let (code, stdout, stderr, ctx) = run(c).await;
    assert_eq!(code, 2, "bad credentials\n{ctx}");
    assert!(
        stderr.lines().any(|l| l.starts_with("error:") && l.contains("refused the credentials")),
        "{ctx}"
    );
    assert!(!stdout.contains(secret) && !stderr.contains(secret), "the key leaked\n{ctx}");

    let (code, _, stderr, ctx) = run(verify(&server, &tmp.path().join("nowhere"), &[])).await;
    assert_eq!(code, 2, "no lake\n{ctx}");
    assert!(stderr.contains("does not exist"), "{ctx}");
    assert!(!tmp.path().join("nowhere").exists(), "verify must not create a lake\n{ctx}");

    let (code, _, stderr, ctx) = run(verify(&server, &lake, &["--concurrency", "0"])).await;
    assert_eq!(code, 2, "bad flag\n{ctx}");
    assert!(stderr.contains("at least 1"), "{ctx}");
    server.shutdown().await;
}
