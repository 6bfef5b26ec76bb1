//! The pipeline against the simulator over HTTP: the lake must equal the
//! simulator's ground truth, column by column, per day and number.

use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, TimestampMillisecondType};
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use bytes::Bytes;
use jiff::tz::TimeZone;
use object_store::ObjectStoreExt as _;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use plumline_api::{Call, CallType, Client, Credentials, RetryPolicy, WireFormat};
use plumline_export::{
    ExportOptions, ExportPlan, ExportSummary, Lake, NoProgress, Pipeline, file_name, lake_schema,
    partition_dir,
};
use plumline_sim::{DEMO_EMAIL, DEMO_KEY, Faults, SimConfig, SimServer};

const JAN_1_2025: i64 = 1_735_689_600;
const DAY: i64 = 86_400;

fn client(server: &SimServer, format: WireFormat) -> Client {
    let retry = RetryPolicy {
        max_attempts: 12,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(50),
        max_elapsed: Duration::from_secs(60),
    };
    Client::builder(server.base_url(), Credentials::new(DEMO_EMAIL, DEMO_KEY))
        .wire_format(format)
        .retry_policy(retry)
        .request_timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

fn options(page_size: u32, concurrency: usize) -> ExportOptions {
    ExportOptions {
        concurrency: NonZeroUsize::new(concurrency).expect("nonzero"),
        page_size: plumline_api::PageSize::new(page_size).expect("page size"),
        settle: Duration::ZERO,
        ..ExportOptions::default()
    }
}

async fn export(
    server: &SimServer,
    format: WireFormat,
    dest: Lake,
    plan: &ExportPlan,
    options: ExportOptions,
) -> ExportSummary {
    let pipeline = Pipeline::new(Arc::new(client(server, format)), dest, options).expect("pipeline");
    pipeline.run(plan, &NoProgress).await.unwrap_or_else(|e| panic!("export failed: {e:#?}"))
}

fn decode(bytes: Bytes) -> Vec<RecordBatch> {
    ParquetRecordBatchReaderBuilder::try_new(bytes)
        .expect("a parquet file")
        .build()
        .expect("reader")
        .collect::<Result<Vec<_>, _>>()
        .expect("batches")
}

/// The rows of a day file, as calls plus the `number` column.
fn rows(batches: &[RecordBatch]) -> Vec<(Call, Option<String>)> {
    let mut out = Vec::new();
    for b in batches {
        assert_eq!(b.schema(), lake_schema(), "the file's embedded Arrow schema is the contract's");
        let s = |name: &str| b.column_by_name(name).expect(name).as_string::<i32>().clone();
        let t = |name: &str| {
            b.column_by_name(name).expect(name).as_primitive::<TimestampMillisecondType>().clone()
        };
        let (id, number, src, dest, ty) = (s("session_id"), s("number"), s("src"), s("dest"), s("type"));
        let (start, end) = (t("start"), t("end"));
        let duration =
            b.column_by_name("duration_s").expect("duration_s").as_primitive::<Int64Type>().clone();
        let log = b.column_by_name("log").expect("log").as_boolean().clone();
        for i in 0..b.num_rows() {
            assert_eq!(start.value(i) % 1000, 0, "whole seconds");
            assert_eq!(duration.value(i) * 1000, end.value(i) - start.value(i), "duration_s = end - start");
            let call = Call {
                dest: dest.value(i).to_owned(),
                src: src.value(i).to_owned(),
                start: start.value(i) / 1000,
                end: end.value(i) / 1000,
                session_id: id.value(i).to_owned(),
                call_type: CallType::from_wire(ty.value(i)),
                log: log.value(i),
            };
            out.push((call, number.is_valid(i).then(|| number.value(i).to_owned())));
        }
    }
    out
}

/// Checks every partition of `plan` in a local lake against the simulator.
fn assert_lake_matches(root: &Path, server: &SimServer, plan: &ExportPlan) {
    for p in plan.partitions() {
        let path = root.join(partition_dir(p.date())).join(file_name(p.number()));
        let bytes = Bytes::from(std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())));
        assert_partition(bytes, server, p, &path.display().to_string());
    }
}

fn assert_partition(bytes: Bytes, server: &SimServer, p: &plumline_export::DayPartition, what: &str) {
    let got = rows(&decode(bytes));
    let want = server.simulator().calls_in(p.window_start(), p.window_end() - 1, p.number());
    assert_eq!(got.len(), want.len(), "{what}: row count");
    for (i, ((call, number), want)) in got.iter().zip(&want).enumerate() {
        assert_eq!(call, want, "{what}: row {i}");
        assert_eq!(number.as_deref(), p.number(), "{what}: number of row {i}");
    }
}

fn temp_files(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else if e.file_name().to_string_lossy().ends_with(".tmp") {
                out.push(e.path().display().to_string());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_day_lake_equals_ground_truth_per_number_and_unfiltered() {
    let server = SimServer::start(
        SimConfig::default().with_calls_per_day(300.0),
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await
    .expect("sim");
    let numbers: Vec<String> = server.simulator().numbers()[..2].to_vec();
    let dir = tempfile::tempdir().expect("tempdir");
    // A partial first and last day: 06:00 on Jan 2 to 18:00 on Jan 5.
    let (start, end) = (JAN_1_2025 + DAY + 6 * 3600, JAN_1_2025 + 4 * DAY + 18 * 3600);
    for numbers in [numbers.clone(), Vec::new()] {
        let plan = ExportPlan::new(start, end, TimeZone::UTC, &numbers).expect("plan");
        let summary = export(&server, WireFormat::Json, Lake::local(dir.path()), &plan, options(97, 6)).await;
        assert_eq!(summary.written, plan.partitions().len());
        assert_lake_matches(dir.path(), &server, &plan);
    }
    assert!(temp_files(dir.path()).is_empty());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quirky_json_and_xml_with_unknown_types_are_exact() {
    let config = SimConfig::default().with_calls_per_day(200.0).with_quirks(true).with_unknown_types(true);
    let server = SimServer::start(config, "127.0.0.1:0".parse().expect("addr")).await.expect("sim");
    let plan = ExportPlan::new(JAN_1_2025, JAN_1_2025 + 3 * DAY, TimeZone::UTC, &[]).expect("plan");
    for format in [WireFormat::Json, WireFormat::Xml] {
        let dir = tempfile::tempdir().expect("tempdir");
        export(&server, format, Lake::local(dir.path()), &plan, options(250, 4)).await;
        assert_lake_matches(dir.path(), &server, &plan);
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn days_follow_the_time_zone_across_dst() {
    // New York springs forward on 2025-03-09 (a 23-hour day).
    let ny = TimeZone::get("America/New_York").expect("tz");
    let (start, end) = (1_741_237_200, 1_741_579_200); // 2025-03-06T00:00-05:00 .. 2025-03-10T00:00-04:00
    let config = SimConfig::default().with_calls_per_day(150.0).with_data_range(start - DAY, end + DAY);
    let server = SimServer::start(config, "127.0.0.1:0".parse().expect("addr")).await.expect("sim");
    let plan = ExportPlan::new(start, end, ny, &[]).expect("plan");
    let days: Vec<(String, i64)> =
        plan.partitions().iter().map(|p| (p.date().to_string(), p.window_end() - p.window_start())).collect();
    assert_eq!(
        days,
        vec![
            ("2025-03-06".into(), DAY),
            ("2025-03-07".into(), DAY),
            ("2025-03-08".into(), DAY),
            ("2025-03-09".into(), DAY - 3600),
        ]
    );
    let dir = tempfile::tempdir().expect("tempdir");
    export(&server, WireFormat::Json, Lake::local(dir.path()), &plan, options(100, 4)).await;
    assert_lake_matches(dir.path(), &server, &plan);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_do_not_change_the_lake() {
    let faults = Faults::none()
        .with_server_errors(0.08)
        .with_rate_limits(0.0)
        .with_resets(0.05)
        .with_truncations(0.05)
        .with_latency(Duration::from_millis(3));
    let config = SimConfig::default().with_calls_per_day(200.0).with_faults(faults);
    let server = SimServer::start(config, "127.0.0.1:0".parse().expect("addr")).await.expect("sim");
    let plan = ExportPlan::new(JAN_1_2025, JAN_1_2025 + 3 * DAY, TimeZone::UTC, &[]).expect("plan");
    let dir = tempfile::tempdir().expect("tempdir");
    export(&server, WireFormat::Json, Lake::local(dir.path()), &plan, options(100, 8)).await;
    let stats = server.stats();
    assert!(stats.server_error + stats.reset + stats.truncated > 0, "faults were injected: {stats:?}");
    assert_lake_matches(dir.path(), &server, &plan);
    assert!(temp_files(dir.path()).is_empty());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_store_lake_is_exact_and_resumable() {
    let server = SimServer::start(
        SimConfig::default().with_calls_per_day(100.0),
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await
    .expect("sim");
    let store = Arc::new(object_store::memory::InMemory::new());
    let prefix = object_store::path::Path::from("lake/calls");
    let dest = Lake::object_store(store.clone(), prefix.clone(), "memory://lake/calls");
    let number = server.simulator().numbers()[0].clone();
    let plan = ExportPlan::new(JAN_1_2025, JAN_1_2025 + 2 * DAY, TimeZone::UTC, &[number]).expect("plan");
    let first = export(&server, WireFormat::Json, dest.clone(), &plan, options(50, 4)).await;
    assert_eq!(first.written, 2);
    for p in plan.partitions() {
        let path = prefix.clone().join(partition_dir(p.date())).join(file_name(p.number()));
        let bytes = store.get(&path).await.expect("get").bytes().await.expect("bytes");
        assert_partition(bytes, &server, p, path.as_ref());
        let state =
            prefix.clone().join("_plumline").join("days").join(plumline_export::number_slug(p.number()));
        store.head(&state.join(format!("{}.json", p.date()))).await.expect("state recorded");
    }
    let second = export(&server, WireFormat::Json, dest, &plan, options(50, 4)).await;
    assert_eq!((second.skipped, second.written), (2, 0));
    server.shutdown().await;
}

#[test]
fn schema_is_the_contract() {
    let schema = lake_schema();
    let ts = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    let want: Vec<(&str, DataType, bool)> = vec![
        ("session_id", DataType::Utf8, false),
        ("number", DataType::Utf8, true),
        ("src", DataType::Utf8, false),
        ("dest", DataType::Utf8, false),
        ("type", DataType::Utf8, false),
        ("start", ts.clone(), false),
        ("end", ts, false),
        ("duration_s", DataType::Int64, false),
        ("log", DataType::Boolean, false),
    ];
    let got: Vec<(&str, DataType, bool)> =
        schema.fields().iter().map(|f| (f.name().as_str(), f.data_type().clone(), f.is_nullable())).collect();
    assert_eq!(got, want);
}
