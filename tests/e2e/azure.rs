//! `az://` end to end: `plumline export` into Azurite (Microsoft's Azure
//! Storage emulator, started here on 127.0.0.1), configured the ways Azure
//! users configure their tools, read back with `azure-storage-blob` and
//! pyarrow. `cargo xtask ci` installs Azurite and sets
//! `PLUMLINE_TEST_AZURITE`.

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use jiff::tz::TimeZone;
use plumline_export::ExportPlan;
use plumline_sim::{SimConfig, SimServer};
use serde_json::Value;

use crate::util::{external_tool, free_port, plumline, plumline_bin, run_ok, run_ok_async};

const JAN_1_2025: i64 = 1_735_689_600;
const DAY: i64 = 86_400;
/// Azurite's well-known development account and key (public, in Microsoft's docs).
const ACCOUNT: &str = "devstoreaccount1";
const KEY: &str = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
const CONTAINER: &str = "lake-container";
const PREFIX: &str = "exports/calls";

/// An Azurite blob service on a free port, killed on drop.
struct Azurite(Child);

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_azurite(azurite: &Path, port: u16, workspace: &Path) -> Azurite {
    let log = workspace.join("azurite.stderr");
    let child = Command::new(azurite)
        .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
        .args(["--inMemoryPersistence", "--skipApiVersionCheck", "--loose", "--disableTelemetry", "--silent"])
        .current_dir(workspace)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("azurite's log file"))
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", azurite.display()));
    let azurite = Azurite(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "Azurite did not listen on {port} within 30 s: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    azurite
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("e2e").join(name)
}

fn inspect(python: &Path, connection: &str) -> Value {
    let out = run_ok(
        Command::new(python)
            .arg(script("az_check.py"))
            .args(["inspect", CONTAINER, PREFIX])
            .env("AZURE_STORAGE_CONNECTION_STRING", connection),
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("az_check printed no JSON ({e}):\n{}", String::from_utf8_lossy(&out.stdout))
    })
}

/// The data files' names and `ETag`s: what a rerun must leave as they are.
fn data_blobs(inspected: &Value) -> BTreeMap<String, String> {
    inspected["blobs"]
        .as_object()
        .expect("blobs")
        .iter()
        .filter(|(name, _)| name.ends_with(".parquet"))
        .map(|(name, etag)| (name.clone(), etag.as_str().unwrap_or_default().to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn az_lake_round_trips_through_azurite() {
    let Some(python) = external_tool("PLUMLINE_TEST_PYTHON") else {
        return;
    };
    let Some(azurite) = external_tool("PLUMLINE_TEST_AZURITE") else {
        return;
    };
    let Some(bin) = plumline_bin() else {
        return;
    };
    let workspace = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let _azurite = start_azurite(&azurite, port, workspace.path());
    let endpoint = format!("http://127.0.0.1:{port}/{ACCOUNT}");
    let connection = format!(
        "DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};BlobEndpoint={endpoint};"
    );
    run_ok(
        Command::new(&python)
            .arg(script("az_check.py"))
            .args(["create", CONTAINER])
            .env("AZURE_STORAGE_CONNECTION_STRING", &connection),
    );

    let server =
        SimServer::start(SimConfig::default().with_calls_per_day(100.0), "127.0.0.1:0".parse().expect("a"))
            .await
            .expect("sim");
    let number = server.simulator().numbers()[0].clone();
    let out = format!("az://{CONTAINER}/{PREFIX}");
    let args =
        ["export", "--start", "2025-01-01", "--end", "2025-01-04", "--out", &out, "--page-size", "150"];
    let mut args = args.to_vec();
    args.extend(["--number", &number]);
    let export = |vars: &[(&str, &str)]| {
        let mut cmd = plumline(&bin, &server.base_url(), &args);
        cmd.envs(vars.iter().copied());
        run_ok_async(cmd)
    };

    // 1. The connection string Azurite (and the Azure portal) hands out.
    let first = export(&[("AZURE_STORAGE_CONNECTION_STRING", &connection)]).await;
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(stdout.contains("3 written, 0 already committed"), "{stdout}");
    let before = inspect(&python, &connection);
    assert_eq!(before["uncommitted"], serde_json::json!({}), "no uncommitted blocks may remain: {before}");
    let plan =
        ExportPlan::new(JAN_1_2025, JAN_1_2025 + 3 * DAY, TimeZone::UTC, std::slice::from_ref(&number))
            .expect("plan");
    for p in plan.partitions() {
        let name = format!(
            "{PREFIX}/{}/{}",
            plumline_export::partition_dir(p.date()),
            plumline_export::file_name(p.number())
        );
        let want = server.simulator().count_in(p.window_start(), p.window_end() - 1, p.number());
        assert!(want > 50, "a day worth exporting");
        assert_eq!(before["rows"][&name].as_u64(), Some(want), "rows of {name}: {before}");
    }
    assert_eq!(data_blobs(&before).len(), 3, "one file per day: {before}");
    for name in before["blobs"].as_object().expect("blobs").keys() {
        let state = name.starts_with(&format!("{PREFIX}/_plumline/"));
        assert!(name.ends_with(".parquet") || state, "unexpected blob {name}");
    }
    assert_eq!(before["schema"]["start"], "timestamp[ms, tz=UTC]", "{before}");

    // 2. and 3. Reruns, configured as the az CLI is and as `UseDevelopmentStorage`
    // says: nothing to do, nothing rewritten, nothing left uncommitted.
    let az_cli = [
        ("AZURE_STORAGE_ACCOUNT", ACCOUNT),
        ("AZURE_STORAGE_KEY", KEY),
        ("AZURE_STORAGE_ENDPOINT", endpoint.as_str()),
        ("AZURE_ALLOW_HTTP", "true"),
    ];
    let emulator_url = format!("http://127.0.0.1:{port}");
    let development = [
        ("AZURE_STORAGE_CONNECTION_STRING", "UseDevelopmentStorage=true"),
        ("AZURITE_BLOB_STORAGE_URL", &emulator_url),
    ];
    for (how, vars) in [("az CLI variables", &az_cli[..]), ("UseDevelopmentStorage=true", &development[..])] {
        let rerun = export(vars).await;
        let stdout = String::from_utf8_lossy(&rerun.stdout);
        assert!(
            stdout.contains("0 written, 3 already committed"),
            "{how}: the state in Azure lets a rerun skip: {stdout}"
        );
        let after = inspect(&python, &connection);
        assert_eq!(data_blobs(&after), data_blobs(&before), "{how}: a rerun rewrites no data file");
        assert_eq!(after["uncommitted"], serde_json::json!({}), "{how}: {after}");
    }
    server.shutdown().await;
}

#[test]
fn az_without_an_account_names_the_variables_to_set() {
    let Some(bin) = plumline_bin() else {
        return;
    };
    // No simulator is needed: the destination is checked before any request.
    let out = plumline(
        &bin,
        "http://127.0.0.1:9",
        &["export", "--start", "2025-01-01", "--end", "2025-01-02", "--out", "az://container/lake"],
    )
    .output()
    .expect("run plumline");
    assert!(!out.status.success(), "no account must fail");
    let stderr = String::from_utf8_lossy(&out.stderr);
    for name in ["AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ACCOUNT", "AZURE_STORAGE_KEY"] {
        assert!(stderr.contains(name), "the error names {name}: {stderr}");
    }
}

/// (destination, environment, variables the error must name)
type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a [&'a str]);

/// With an account but no credential (Azure) or no credential at all (GCS),
/// the store asks the cloud's metadata endpoint, here pointed at closed
/// loopback ports; the error then names the variables to set.
#[test]
fn a_failed_token_lookup_names_the_variables_to_set() {
    let Some(bin) = plumline_bin() else {
        return;
    };
    let closed = || format!("127.0.0.1:{}", free_port());
    let (store, msi, meta_host, meta_ip) = (closed(), closed(), closed(), closed());
    let no_home = tempfile::tempdir().expect("tempdir");
    let azure_store = format!("http://{store}/acct");
    let msi = format!("http://{msi}/token");
    let gcs_store = format!("http://{store}");
    let cases: [Case<'_>; 2] = [
        (
            "az://container/lake",
            vec![
                ("AZURE_STORAGE_ACCOUNT", "acct"),
                ("AZURE_STORAGE_ENDPOINT", &azure_store),
                ("AZURE_ALLOW_HTTP", "true"),
                ("AZURE_MSI_ENDPOINT", &msi),
            ],
            &["AZURE_STORAGE_KEY", "AZURE_STORAGE_SAS_TOKEN", "AZURE_CLIENT_ID"],
        ),
        (
            "gs://bucket/lake",
            vec![
                ("GOOGLE_BASE_URL", &gcs_store),
                ("GCE_METADATA_HOST", &meta_host),
                ("GCE_METADATA_IP", &meta_ip),
                ("HOME", no_home.path().to_str().expect("utf-8")),
            ],
            &["GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_SERVICE_ACCOUNT", "STORAGE_EMULATOR_HOST"],
        ),
    ];
    for (dest, vars, names) in cases {
        let out = plumline(
            &bin,
            "http://127.0.0.1:9",
            &["export", "--start", "2025-01-01", "--end", "2025-01-02", "--out", dest],
        )
        .envs(vars)
        .output()
        .expect("run plumline");
        assert!(!out.status.success(), "{dest}: no credential must fail");
        let stderr = String::from_utf8_lossy(&out.stderr);
        for name in names {
            assert!(stderr.contains(name), "{dest}: the error names {name}: {stderr}");
        }
    }
}
