//! Shared fixtures of the benches, and the end-to-end export scenarios
//! that `cargo xtask bench` runs through the `export-e2e` binary.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use jiff::tz::TimeZone;
use plumline_api::{Client, Credentials, RetryPolicy};
use plumline_export::{ExportOptions, ExportPlan, ExportSummary, Lake, NoProgress, Pipeline};
use plumline_sim::{DEMO_EMAIL, DEMO_KEY, Faults, SimConfig, SimServer};

/// 2025-01-01T00:00:00Z.
pub const JAN_1_2025: i64 = 1_735_689_600;
/// Seconds per day.
pub const DAY: i64 = 86_400;

/// One end-to-end export against the in-process simulator.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Short name for tables.
    pub name: &'static str,
    /// Calls to aim for (the simulator's daily jitter makes the exact count differ slightly).
    pub target_calls: u64,
    /// Days the calls are spread over (UTC).
    pub days: i64,
    /// Deployment numbers in the simulator (the export is unfiltered).
    pub numbers: usize,
    /// Page size asked of the API.
    pub page_size: u32,
    /// Requests in flight.
    pub concurrency: usize,
    /// Latency the simulator adds to every answer.
    pub latency: Duration,
    /// Where the simulator's data ends, in days from the start, when it
    /// ends before the range does (a partial last day makes days unequal).
    pub data_days: Option<f64>,
    /// Export into S3 (a moto server the bench starts) instead of a local
    /// directory.
    pub s3: bool,
    /// Serve the simulator from a child process, so the peak RSS measured
    /// is the export's alone (the simulator holds every call it generated).
    pub sim_apart: bool,
    /// Read every day twice (`ExportOptions::reread`).
    pub reread: bool,
}

impl Scenario {
    /// 1,000,000 calls over a month, no latency, pages of 10,000.
    #[must_use]
    pub fn throughput() -> Self {
        Scenario {
            name: "1M calls, 31 days, no latency",
            target_calls: 1_000_000,
            days: 31,
            numbers: 3,
            page_size: 10_000,
            concurrency: 8,
            latency: Duration::ZERO,
            data_days: None,
            s3: false,
            sim_apart: false,
            reread: false,
        }
    }

    /// Peak memory: 2.3M calls of which one day holds 1.5M.
    #[must_use]
    pub fn one_big_day(s3: bool) -> Self {
        Scenario {
            name: if s3 { "memory: 2.3M calls, a 1.5M day, to S3" } else { "memory: 2.3M calls, a 1.5M day" },
            target_calls: 2_300_000,
            days: 2,
            numbers: 3,
            data_days: Some(1.0 + 0.8 / 1.5),
            s3,
            sim_apart: true,
            ..Scenario::throughput()
        }
    }

    /// Peak memory: 4 days of 1.2M calls each.
    #[must_use]
    pub fn four_big_days(s3: bool) -> Self {
        Scenario {
            name: if s3 { "memory: 4 days x 1.2M calls, to S3" } else { "memory: 4 days x 1.2M calls" },
            target_calls: 4_800_000,
            days: 4,
            numbers: 3,
            s3,
            sim_apart: true,
            ..Scenario::throughput()
        }
    }

    /// The same calls over four times the days, to show memory does not grow with days.
    #[must_use]
    pub fn throughput_many_days() -> Self {
        Scenario { name: "1M calls, 124 days, no latency", days: 124, ..Scenario::throughput() }
    }

    /// 300 pages of 1,000 calls at 100 ms each, 16 in flight.
    #[must_use]
    pub fn latency_bound() -> Self {
        Scenario {
            name: "300 pages x 100 ms, concurrency 16",
            target_calls: 300_000,
            days: 10,
            numbers: 1,
            page_size: 1_000,
            concurrency: 16,
            latency: Duration::from_millis(100),
            data_days: None,
            s3: false,
            sim_apart: false,
            reread: false,
        }
    }

    /// The scenario with every day read twice: its requests are twice a
    /// read's, so its budget and ideal double.
    #[must_use]
    pub fn with_reread(self, name: &'static str) -> Self {
        Scenario { name, reread: true, ..self }
    }

    /// Reads of each day: 2 with `reread`.
    #[must_use]
    pub fn reads(&self) -> u64 {
        if self.reread { 2 } else { 1 }
    }

    /// Every scenario the table shows.
    #[must_use]
    pub fn all() -> Vec<Scenario> {
        vec![
            Scenario::throughput(),
            Scenario::throughput_many_days(),
            Scenario::latency_bound(),
            Scenario::one_big_day(false),
            Scenario::four_big_days(false),
            Scenario::one_big_day(true),
            Scenario::four_big_days(true),
            Scenario::throughput().with_reread("1M calls, 31 days, --reread"),
            Scenario::latency_bound().with_reread("300 pages x 100 ms, --reread"),
        ]
    }

    /// The simulator configuration: `calls_per_day` scaled so the range
    /// holds about `target_calls`.
    #[must_use]
    pub fn sim_config(&self) -> SimConfig {
        let (start, end) = self.range();
        #[allow(clippy::cast_possible_truncation, reason = "days are small")]
        let end = self.data_days.map_or(end, |d| start + (d * DAY as f64) as i64);
        let base = SimConfig::default()
            .with_seed(42)
            .with_generated_numbers(self.numbers)
            .with_data_range(start, end)
            .with_calls_per_day(1_000.0);
        let probe = plumline_sim::Simulator::new(base.clone()).expect("valid simulator config");
        let count = probe.count_in(start, end - 1, None).max(1);
        let cache = usize::try_from(self.target_calls * 2).unwrap_or(usize::MAX);
        base.with_calls_per_day(1_000.0 * self.target_calls as f64 / count as f64)
            .with_cache_calls(cache)
            .with_faults(Faults::none().with_latency(self.latency))
    }

    /// The exported range, `[start, end)`.
    #[must_use]
    pub fn range(&self) -> (i64, i64) {
        (JAN_1_2025, JAN_1_2025 + self.days * DAY)
    }
}

/// What one run measured.
#[derive(Debug, Clone)]
pub struct Measured {
    /// The export's own summary.
    pub summary: ExportSummary,
    /// Minimum requests x latency / concurrency: the floor for a
    /// latency-bound run.
    pub ideal: Duration,
    /// Requests the export sent (counted at the page source).
    pub requests: u64,
    /// The fewest requests any reader needs: `ceil(total / page size)`
    /// summed over the days.
    pub min_requests: u64,
}

impl Scenario {
    /// The fewest requests any reader needs for the scenario's days in
    /// `sim`: `ceil(calls of the day / page size)` per day.
    #[must_use]
    pub fn min_requests(&self, sim: &plumline_sim::Simulator) -> u64 {
        let (start, end) = self.range();
        (0..(end - start) / DAY)
            .map(|d| {
                let day = start + d * DAY;
                sim.count_in(day, day + DAY - 1, None).div_ceil(u64::from(self.page_size))
            })
            .sum()
    }

    /// The request budget on a static source: 2% + 1 per day over the minimum.
    #[must_use]
    pub fn request_budget(&self, min_requests: u64) -> u64 {
        self.reads() * (min_requests + min_requests.div_ceil(50) + u64::try_from(self.days).unwrap_or(0))
    }
}

/// A page source that counts the requests it forwards.
#[derive(Debug)]
pub struct Counting<S> {
    inner: S,
    requests: AtomicU64,
}

impl<S> Counting<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Counting { inner, requests: AtomicU64::new(0) }
    }

    /// Requests forwarded so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

impl<S: plumline_api::PageSource> plumline_api::PageSource for Counting<S> {
    async fn fetch_page(
        &self,
        request: &plumline_api::PageRequest,
    ) -> Result<plumline_api::CallPage, plumline_api::ApiError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.inner.fetch_page(request).await
    }
}

/// Starts the simulator of `scenario` (the caller shuts it down).
///
/// # Panics
/// When the simulator cannot start.
pub async fn start_sim(scenario: &Scenario) -> SimServer {
    let server = SimServer::start(scenario.sim_config(), "127.0.0.1:0".parse().expect("address"))
        .await
        .expect("simulator starts");
    // Generate the data before timing, as a real API has it already.
    let (start, end) = scenario.range();
    let _ = server.simulator().count_in(start, end - 1, None);
    server
}

/// Exports `scenario` from `server` into `dir` and returns the measurements.
///
/// # Panics
/// When the export fails.
pub async fn run_export(scenario: &Scenario, server: &SimServer, dir: &std::path::Path) -> Measured {
    run_export_into(scenario, server, Lake::local(dir)).await
}

/// [`run_export`] into any lake.
///
/// # Panics
/// When the export fails.
pub async fn run_export_into(scenario: &Scenario, server: &SimServer, lake: Lake) -> Measured {
    let min_requests = scenario.min_requests(server.simulator());
    run_export_at(scenario, &server.base_url(), lake, min_requests).await
}

/// [`run_export`] against a simulator at `base_url` (maybe in another
/// process, so this process's peak RSS is the export's alone).
///
/// # Panics
/// When the export fails.
pub async fn run_export_at(scenario: &Scenario, base_url: &str, lake: Lake, min_requests: u64) -> Measured {
    let client = Client::builder(base_url, Credentials::new(DEMO_EMAIL, DEMO_KEY))
        .retry_policy(RetryPolicy::never())
        .build()
        .expect("client");
    let (plan, options) = plan_and_options(scenario);
    let source = Arc::new(Counting::new(client));
    let pipeline = Pipeline::new(Arc::clone(&source), lake, options).expect("pipeline");
    let summary = pipeline.run(&plan, &NoProgress).await.expect("export succeeds");
    let concurrency = u32::try_from(scenario.concurrency).unwrap_or(u32::MAX);
    // The floor for any reader: the fewest requests, `concurrency` at a time.
    let ideal =
        scenario.latency * u32::try_from(scenario.reads() * min_requests).unwrap_or(u32::MAX) / concurrency;
    Measured { summary, ideal, requests: source.requests(), min_requests }
}

/// The scenario's plan (UTC days, unfiltered) and export options; days in
/// flight can be overridden with `PLUMLINE_BENCH_DAYS` for experiments.
fn plan_and_options(scenario: &Scenario) -> (ExportPlan, ExportOptions) {
    let (start, end) = scenario.range();
    let plan = ExportPlan::new(start, end, TimeZone::UTC, &[]).expect("plan");
    let options = ExportOptions {
        concurrency: NonZeroUsize::new(scenario.concurrency).expect("nonzero concurrency"),
        page_size: plumline_api::PageSize::new(scenario.page_size).expect("a valid page size"),
        settle: Duration::ZERO,
        overwrite: true,
        days_in_flight: std::env::var("PLUMLINE_BENCH_DAYS").ok().and_then(|v| v.parse().ok()),
        reread: scenario.reread,
        ..ExportOptions::default()
    };
    (plan, options)
}

/// The simulator's dataset as a page source, without HTTP or JSON: the
/// pipeline's own cost, for diagnosis.
#[derive(Debug, Clone)]
pub struct DirectSource(pub plumline_sim::Simulator);

impl plumline_api::PageSource for DirectSource {
    async fn fetch_page(
        &self,
        request: &plumline_api::PageRequest,
    ) -> Result<plumline_api::CallPage, plumline_api::ApiError> {
        Ok(self.0.page(request))
    }
}

/// Like [`run_export`], reading pages straight from the dataset.
///
/// # Panics
/// When the export fails.
pub async fn run_export_direct(
    scenario: &Scenario,
    sim: &plumline_sim::Simulator,
    dir: &std::path::Path,
) -> Measured {
    let (plan, options) = plan_and_options(scenario);
    let source = Arc::new(Counting::new(DirectSource(sim.clone())));
    let pipeline = Pipeline::new(Arc::clone(&source), Lake::local(dir), options).expect("pipeline");
    let summary = pipeline.run(&plan, &NoProgress).await.expect("export succeeds");
    Measured {
        summary,
        ideal: Duration::ZERO,
        requests: source.requests(),
        min_requests: scenario.min_requests(sim),
    }
}

/// Peak resident set size of this process (`VmHWM`), in bytes.
#[must_use]
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// A moto S3 server on 127.0.0.1 for the object-store scenarios, started
/// from the Python named by `PLUMLINE_BENCH_PYTHON` (the venv `cargo xtask
/// ci` installs); killed on drop.
#[derive(Debug)]
pub struct Moto {
    child: std::process::Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    /// Starts moto with a bucket `bench`, or `None` without
    /// `PLUMLINE_BENCH_PYTHON`.
    ///
    /// # Panics
    /// When moto does not start.
    #[must_use]
    pub fn start() -> Option<Moto> {
        let python = std::env::var_os("PLUMLINE_BENCH_PYTHON")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
        let child = std::process::Command::new(&python)
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start moto");
        let moto = Moto { child, endpoint: format!("http://127.0.0.1:{port}") };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "moto did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let created = std::process::Command::new(&python)
            .args(["-c", &format!(
                "import boto3; boto3.client('s3', endpoint_url='{}', aws_access_key_id='t', aws_secret_access_key='t', region_name='us-east-1').create_bucket(Bucket='bench')",
                moto.endpoint
            )])
            .status()
            .expect("create the bucket");
        assert!(created.success(), "creating the bench bucket failed");
        Some(moto)
    }

    /// The lake `s3://bench/lake` on this server.
    ///
    /// # Panics
    /// When the store cannot be configured.
    #[must_use]
    pub fn lake(&self) -> Lake {
        let store = object_store::aws::AmazonS3Builder::new()
            .with_url("s3://bench/lake")
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_access_key_id("t")
            .with_secret_access_key("t")
            .build()
            .expect("s3 store");
        Lake::object_store(Arc::new(store), object_store::path::Path::from("lake"), "s3://bench/lake")
    }
}
