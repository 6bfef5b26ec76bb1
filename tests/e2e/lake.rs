//! The lake as independent readers see it: pyarrow's hive dataset and
//! `DuckDB` on a local lake, and pyarrow on a lake in a local S3 server
//! (moto). Run by `cargo xtask ci`, which installs the venv and sets
//! `PLUMLINE_TEST_PYTHON`.

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::tz::TimeZone;
use plumline_api::{Client, Credentials};
use plumline_export::{ExportOptions, ExportPlan, ExportSummary, Exporter, Lake, NoProgress};
use plumline_sim::{DEMO_EMAIL, DEMO_KEY, SimConfig, SimServer};
use serde_json::Value;

use crate::util::{external_tool, free_port, run_ok};

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

async fn export(server: &SimServer, dest: Lake, plan: &ExportPlan) -> ExportSummary {
    let client =
        Client::builder(server.base_url(), Credentials::new(DEMO_EMAIL, DEMO_KEY)).build().expect("client");
    let options = ExportOptions { page_size: 150, settle: Duration::ZERO, ..ExportOptions::default() };
    Exporter::new(Arc::new(client), dest, options)
        .expect("exporter")
        .run(plan, &NoProgress)
        .await
        .unwrap_or_else(|e| panic!("export failed: {e:#?}"))
}

/// Ground truth: calls per `date|number` key, as the readers print them.
fn truth(server: &SimServer, plan: &ExportPlan) -> BTreeMap<String, u64> {
    plan.partitions()
        .iter()
        .map(|p| {
            let n = server.simulator().count_in(p.window_start(), p.window_end() - 1, p.number());
            (format!("{}|{}", p.date(), p.number().unwrap_or("")), n)
        })
        .collect()
}

fn counts(v: &Value) -> BTreeMap<String, u64> {
    v.as_object()
        .expect("an object of counts")
        .iter()
        .map(|(k, n)| (k.clone(), n.as_u64().expect("a count")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyarrow_and_duckdb_read_the_lake() {
    let Some(python) = external_tool("PLUMLINE_TEST_PYTHON") else {
        return;
    };
    let server =
        SimServer::start(SimConfig::default().with_calls_per_day(120.0), "127.0.0.1:0".parse().expect("a"))
            .await
            .expect("sim");
    let numbers = server.simulator().numbers()[..2].to_vec();
    let dir = tempfile::tempdir().expect("tempdir");
    let lake = dir.path().join("lake");
    // Two numbers (each its own file per day) and an unfiltered export of other days, in one lake.
    let by_number = ExportPlan::new(JAN_1_2025, JAN_1_2025 + 3 * DAY, TimeZone::UTC, &numbers).expect("plan");
    let unfiltered =
        ExportPlan::new(JAN_1_2025 + 3 * DAY, JAN_1_2025 + 5 * DAY, TimeZone::UTC, &[]).expect("plan");
    export(&server, Lake::local(&lake), &by_number).await;
    export(&server, Lake::local(&lake), &unfiltered).await;
    // What a killed run leaves behind must be invisible to both readers.
    std::fs::write(lake.join("date=2025-01-01").join(".calls-all.parquet.999-1.tmp"), b"PAR1 half a file")
        .expect("write a stale temp");
    let mut want = truth(&server, &by_number);
    want.extend(truth(&server, &unfiltered));
    let total: u64 = want.values().sum();

    let out = json(&run_ok(Command::new(&python).arg(script("lake_readers.py")).arg(&lake)));
    let ts_ok = |t: &str| t == "timestamp[ms, tz=UTC]";
    let schema = &out["pyarrow_schema"];
    for (col, ty) in [("session_id", "string"), ("number", "string"), ("src", "string"), ("dest", "string")] {
        assert_eq!(schema[col], ty, "pyarrow type of {col}: {out}");
    }
    assert!(
        schema["type"] == "string" || schema["type"].as_str().is_some_and(|t| t.starts_with("dictionary")),
        "{out}"
    );
    assert!(
        ts_ok(schema["start"].as_str().unwrap_or("")) && ts_ok(schema["end"].as_str().unwrap_or("")),
        "{out}"
    );
    assert_eq!(
        (schema["duration_s"].as_str(), schema["log"].as_str()),
        (Some("int64"), Some("bool")),
        "{out}"
    );
    for (col, nullable) in out["pyarrow_nullable"].as_object().expect("nullability") {
        assert_eq!(nullable.as_bool(), Some(col == "number"), "nullability of {col}: {out}");
    }
    assert_eq!(
        out["pyarrow_files"].as_array().map(Vec::len),
        Some(8),
        "one file per day and number, no temp: {out}"
    );
    assert_eq!(counts(&out["pyarrow_counts"]), want, "pyarrow counts per day and number");
    assert_eq!(out["pyarrow_rows"].as_u64(), Some(total));
    assert_eq!(out["pyarrow_distinct_ids"].as_u64(), Some(total), "every call exactly once");
    assert_eq!(out["pyarrow_duration_ok"], true);

    let duck = &out["duckdb_schema"];
    for (col, ty) in
        [("session_id", "VARCHAR"), ("number", "VARCHAR"), ("duration_s", "BIGINT"), ("log", "BOOLEAN")]
    {
        assert_eq!(duck[col], ty, "duckdb type of {col}: {out}");
    }
    assert_eq!(
        (duck["start"].as_str(), duck["end"].as_str()),
        (Some("TIMESTAMP WITH TIME ZONE"), Some("TIMESTAMP WITH TIME ZONE")),
        "{out}"
    );
    assert_eq!(counts(&out["duckdb_counts"]), want, "duckdb counts per day and number");
    assert_eq!(out["duckdb_rows"].as_u64(), Some(total));
    assert_eq!(out["duckdb_distinct_ids"].as_u64(), Some(total));
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
    let dest = Lake::object_store(
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
    assert_eq!(keys.len(), 6, "three files and three state records: {keys:?}");
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
