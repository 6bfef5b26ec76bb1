//! The lake as independent readers see it: pyarrow's hive dataset, `DuckDB`,
//! Polars and Apache Spark on unfiltered, `--number` and `--tz` lakes written
//! by the CLI, and pyarrow on a lake in a local S3 server (moto). Run by
//! `cargo xtask ci`, which installs the venv (and Java for Spark) and sets
//! `PLUMLINE_TEST_PYTHON`.

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::tz::TimeZone;
use plumline_api::{Client, Credentials};
use plumline_export::{ExportOptions, ExportPlan, ExportSummary, Lake as LakeDest, NoProgress, Pipeline};
use plumline_sim::{DEMO_EMAIL, DEMO_KEY, SimConfig, SimServer};
use serde_json::Value;

use crate::util::{external_tool, free_port, plumline, plumline_bin, run_ok, run_ok_async};

const JAN_1_2025: i64 = 1_735_689_600;
const DAY: i64 = 86_400;

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("e2e").join(name)
}

fn json(output: &std::process::Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!("python printed no JSON ({e}):\n{}", String::from_utf8_lossy(&output.stdout))
    })
}

async fn export(server: &SimServer, dest: LakeDest, plan: &ExportPlan) -> ExportSummary {
    let client =
        Client::builder(server.base_url(), Credentials::new(DEMO_EMAIL, DEMO_KEY)).build().expect("client");
    let options = ExportOptions {
        page_size: plumline_api::PageSize::new(150).expect("page size"),
        settle: Duration::ZERO,
        ..ExportOptions::default()
    };
    Pipeline::new(Arc::new(client), dest, options)
        .expect("pipeline")
        .run(plan, &NoProgress)
        .await
        .unwrap_or_else(|e| panic!("export failed: {e:#?}"))
}

/// Ground truth for the readers: calls per `date|number|type` key, and the
/// earliest start and latest end (UNIX seconds).
fn truth(server: &SimServer, plan: &ExportPlan) -> (BTreeMap<String, u64>, i64, i64) {
    let mut counts = BTreeMap::new();
    let (mut min_start, mut max_end) = (i64::MAX, i64::MIN);
    for p in plan.partitions() {
        for call in server.simulator().calls_in(p.window_start(), p.window_end() - 1, p.number()) {
            let key = format!("{}|{}|{}", p.date(), p.number().unwrap_or(""), call.call_type.as_str());
            *counts.entry(key).or_insert(0) += 1;
            min_start = min_start.min(call.start);
            max_end = max_end.max(call.end);
        }
    }
    (counts, min_start, max_end)
}

fn counts(v: &Value) -> BTreeMap<String, u64> {
    v.as_object()
        .unwrap_or_else(|| panic!("an object of counts: {v}"))
        .iter()
        .map(|(k, n)| (k.clone(), n.as_u64().expect("a count")))
        .collect()
}

/// What each engine must call the timestamp columns: an instant in UTC (not
/// a plain integer, not a zone-less local time).
const UTC_TIMESTAMP: &[(&str, &str)] = &[
    ("pyarrow", "timestamp[ms, tz=UTC]"),
    ("duckdb", "TIMESTAMP WITH TIME ZONE"),
    ("polars", "Datetime(time_unit='ms', time_zone='UTC')"),
    // Spark's `timestamp` is TIMESTAMP_LTZ, an instant (`timestamp_ntz` would be zone-less).
    ("spark", "timestamp"),
];

/// A lake written by `plumline export` for the reader test.
struct Lake {
    name: &'static str,
    dir: PathBuf,
    plan: ExportPlan,
    files: usize,
}

/// pyarrow's and `DuckDB`'s view of the other columns, and the files.
fn check_schemas(lake: &Lake, got: &Value) {
    let arrow = &got["pyarrow"];
    let schema = &arrow["schema"];
    for (col, ty) in [("session_id", "string"), ("number", "string"), ("src", "string"), ("dest", "string")] {
        assert_eq!(schema[col], ty, "{}: pyarrow type of {col}: {arrow}", lake.name);
    }
    assert!(
        schema["type"] == "string" || schema["type"].as_str().is_some_and(|t| t.starts_with("dictionary")),
        "{arrow}"
    );
    assert_eq!((schema["duration_s"].as_str(), schema["log"].as_str()), (Some("int64"), Some("bool")));
    for (col, nullable) in arrow["nullable"].as_object().expect("nullability") {
        assert_eq!(nullable.as_bool(), Some(col == "number"), "{}: nullability of {col}", lake.name);
    }
    assert_eq!(
        arrow["files"].as_array().map(Vec::len),
        Some(lake.files),
        "{}: one file per day and number, no temp: {arrow}",
        lake.name
    );
    assert_eq!(arrow["duration_ok"], true, "{}", lake.name);
    let duck = &got["duckdb"]["schema"];
    for (col, ty) in
        [("session_id", "VARCHAR"), ("number", "VARCHAR"), ("duration_s", "BIGINT"), ("log", "BOOLEAN")]
    {
        assert_eq!(duck[col], ty, "{}: duckdb type of {col}", lake.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_reader_reads_every_kind_of_lake() {
    let Some(python) = external_tool("PLUMLINE_TEST_PYTHON") else {
        return;
    };
    let Some(bin) = plumline_bin() else {
        return;
    };
    let server =
        SimServer::start(SimConfig::default().with_calls_per_day(120.0), "127.0.0.1:0".parse().expect("a"))
            .await
            .expect("sim");
    let numbers = server.simulator().numbers()[..2].to_vec();
    let tmp = tempfile::tempdir().expect("tempdir");
    let kolkata = TimeZone::get("Asia/Kolkata").expect("tz database");
    let ist = 19_800; // +05:30, a zone whose days do not start on a UTC hour
    let lakes = [
        Lake {
            name: "unfiltered",
            dir: tmp.path().join("unfiltered"),
            plan: ExportPlan::new(JAN_1_2025, JAN_1_2025 + 2 * DAY, TimeZone::UTC, &[]).expect("plan"),
            files: 2,
        },
        Lake {
            name: "number",
            dir: tmp.path().join("number"),
            plan: ExportPlan::new(JAN_1_2025 + 2 * DAY, JAN_1_2025 + 5 * DAY, TimeZone::UTC, &numbers)
                .expect("plan"),
            files: 6,
        },
        Lake {
            name: "tz",
            dir: tmp.path().join("tz"),
            plan: ExportPlan::new(JAN_1_2025 - ist, JAN_1_2025 + 2 * DAY - ist, kolkata, &[]).expect("plan"),
            files: 2,
        },
    ];
    let mut number_flags = Vec::new();
    for n in &numbers {
        number_flags.extend(["--number", n.as_str()]);
    }
    for lake in &lakes {
        let out = lake.dir.to_str().expect("utf-8 path");
        let mut args = vec!["export", "--out", out, "--page-size", "150"];
        match lake.name {
            "unfiltered" => args.extend(["--start", "2025-01-01", "--end", "2025-01-03"]),
            "number" => {
                args.extend(["--start", "2025-01-03", "--end", "2025-01-06"]);
                args.extend(&number_flags);
            }
            _ => args.extend(["--start", "2025-01-01", "--end", "2025-01-03", "--tz", "Asia/Kolkata"]),
        }
        run_ok_async(plumline(&bin, &server.base_url(), &args)).await;
    }
    // What a killed run leaves behind must be invisible to every reader.
    std::fs::write(lakes[1].dir.join("date=2025-01-03").join(".calls-all.parquet.999-1.tmp"), b"PAR1 half")
        .expect("write a stale temp");

    let started = Instant::now();
    let mut cmd = Command::new(&python);
    cmd.arg(script("lake_readers.py")).args(lakes.iter().map(|l| &l.dir));
    let out = json(&run_ok_async(cmd).await);
    let took = started.elapsed();
    let mut seen = Vec::new();
    for lake in &lakes {
        let (want, min_start, max_end) = truth(&server, &lake.plan);
        let total: u64 = want.values().sum();
        assert!(total > 100, "{}: a lake worth reading ({total} calls)", lake.name);
        let got = &out[lake.dir.to_str().expect("utf-8")];
        for &(engine, ts) in UTC_TIMESTAMP {
            let r = &got[engine];
            let ctx = format!("{} lake, {engine}", lake.name);
            assert_eq!(r["types"]["start"], ts, "{ctx}: type of start: {r}");
            assert_eq!(r["types"]["end"], ts, "{ctx}: type of end: {r}");
            assert_eq!(counts(&r["counts"]), want, "{ctx}: calls per day, number and type");
            assert_eq!(r["rows"].as_u64(), Some(total), "{ctx}: rows");
            assert_eq!(r["distinct"].as_u64(), Some(total), "{ctx}: every call exactly once");
            assert_eq!(r["min_start"].as_i64(), Some(min_start), "{ctx}: earliest start as an instant");
            assert_eq!(r["max_end"].as_i64(), Some(max_end), "{ctx}: latest end as an instant");
            seen.push(format!("{ctx}: start {}, end {}", r["types"]["start"], r["types"]["end"]));
        }
        check_schemas(lake, got);
    }
    #[allow(clippy::print_stderr, reason = "the report the issue asks for: each engine's timestamp types")]
    {
        eprintln!("four readers on three lakes in {took:.1?}:\n  {}", seen.join("\n  "));
    }
    server.shutdown().await;
}

/// A moto S3 server on a free port, killed on drop.
struct Moto(Child);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_moto(python: &Path, port: u16) -> Moto {
    let child = Command::new(python)
        .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start moto_server from the venv");
    let moto = Moto(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto_server did not listen on {port} within 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    moto
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_lake_round_trips_without_leftover_uploads() {
    let Some(python) = external_tool("PLUMLINE_TEST_PYTHON") else {
        return;
    };
    let port = free_port();
    let _moto = start_moto(&python, port);
    let endpoint = format!("http://127.0.0.1:{port}");
    run_ok(Command::new(&python).arg(script("s3_check.py")).args([&endpoint, "create", "lake-bucket"]));

    let server =
        SimServer::start(SimConfig::default().with_calls_per_day(100.0), "127.0.0.1:0".parse().expect("a"))
            .await
            .expect("sim");
    let number = server.simulator().numbers()[0].clone();
    let store = object_store::aws::AmazonS3Builder::new()
        .with_url("s3://lake-bucket/exports/calls")
        .with_endpoint(&endpoint)
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_access_key_id("test")
        .with_secret_access_key("test")
        .build()
        .expect("s3 store");
    let dest = LakeDest::object_store(
        Arc::new(store),
        object_store::path::Path::from("exports/calls"),
        "s3://lake-bucket/exports/calls",
    );
    let plan = ExportPlan::new(JAN_1_2025, JAN_1_2025 + 3 * DAY, TimeZone::UTC, &[number]).expect("plan");
    let first = export(&server, dest.clone(), &plan).await;
    assert_eq!(first.written, 3);
    let second = export(&server, dest, &plan).await;
    assert_eq!((second.skipped, second.written), (3, 0), "the state on S3 lets a rerun skip");

    let out = json(&run_ok(Command::new(&python).arg(script("s3_check.py")).args([
        &endpoint,
        "inspect",
        "lake-bucket",
        "exports/calls",
    ])));
    assert_eq!(out["uploads"], 0, "no multipart upload may remain: {out}");
    let keys: Vec<&str> = out["keys"].as_array().expect("keys").iter().filter_map(Value::as_str).collect();
    // Three files, three day states, three (released) claims, and the lake's zone.
    assert_eq!(keys.len(), 10, "{keys:?}");
    for key in &keys {
        let data = key.ends_with(".parquet") && key.contains("/date=2025-01-0");
        let state = key.starts_with("exports/calls/_plumline/")
            && Path::new(key).extension().is_some_and(|e| e == "json");
        assert!(data || state, "unexpected object {key}");
    }
    for p in plan.partitions() {
        let key = format!(
            "exports/calls/{}/{}",
            plumline_export::partition_dir(p.date()),
            plumline_export::file_name(p.number())
        );
        let want = server.simulator().count_in(p.window_start(), p.window_end() - 1, p.number());
        assert_eq!(out["rows"][&key].as_u64(), Some(want), "rows of {key}: {out}");
    }
    assert_eq!(out["schema"]["session_id"], "string", "{out}");
    assert_eq!(out["schema"]["start"], "timestamp[ms, tz=UTC]", "{out}");
    server.shutdown().await;
}
