//! The exporter over real sockets: HTTPS with a self-signed certificate
//! made at test time (trusted by a reqwest client), and gzipped scrapes.

use std::io::Read as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use plumline_metrics::{BasicAuth, Metrics, MetricsServer, TlsConfig};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A server task and the switch that stops it.
struct Serving {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), plumline_metrics::MetricsError>>,
}

impl Serving {
    fn start(server: MetricsServer) -> Self {
        let addr = server.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(async move {
            let _ = stopped.await;
        }));
        Serving { addr, stop, task }
    }

    /// Stops the server; it must not wait out its 5 s grace period for
    /// idle or half-open connections.
    async fn stop(self) {
        let started = std::time::Instant::now();
        self.stop.send(()).expect("server alive");
        let done = tokio::time::timeout(Duration::from_secs(10), self.task).await;
        assert!(matches!(done, Ok(Ok(Ok(())))), "{done:?}");
        assert!(started.elapsed() < Duration::from_secs(3), "shutdown took {:?}", started.elapsed());
    }
}

fn metrics() -> Arc<Metrics> {
    let metrics = Metrics::new().expect("metrics");
    metrics.publish_calls(0);
    // 1,000 numbers x 3 directions: ~1.6 MB of text, like a real deployment.
    for n in 0..1_000 {
        for direction in ["inbound", "outbound", "transfer"] {
            metrics.record_call(&format!("617555{n:04}"), direction, n % 3_700);
        }
    }
    Arc::new(metrics)
}

/// A self-signed certificate for 127.0.0.1 and localhost, written as PEM.
struct SelfSigned {
    _dir: tempfile::TempDir,
    cert_file: PathBuf,
    key_file: PathBuf,
    cert_pem: String,
}

fn self_signed() -> SelfSigned {
    let names = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
    let generated = rcgen::generate_simple_self_signed(names).expect("generate a certificate");
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let cert_pem = generated.cert.pem();
    std::fs::write(&cert_file, &cert_pem).expect("write cert");
    std::fs::write(&key_file, generated.signing_key.serialize_pem()).expect("write key");
    SelfSigned { _dir: dir, cert_file, key_file, cert_pem }
}

fn client_trusting(cert_pem: &str) -> reqwest::Client {
    let root = reqwest::Certificate::from_pem(cert_pem.as_bytes()).expect("certificate");
    reqwest::Client::builder()
        .add_root_certificate(root)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

fn gunzip(bytes: &[u8]) -> String {
    let mut out = String::new();
    flate2::read::GzDecoder::new(bytes).read_to_string(&mut out).expect("valid gzip of utf-8");
    out
}

/// Process metrics (CPU, memory) move between two scrapes; the rest not.
fn stable_lines(text: &str) -> Vec<&str> {
    text.lines().filter(|l| !l.contains("process_")).collect()
}

#[tokio::test]
async fn https_only_with_basic_auth_and_bad_clients_do_not_stop_it() {
    let certs = self_signed();
    let tls = TlsConfig::from_pem_files(&certs.cert_file, &certs.key_file).expect("load the pair");
    let auth = BasicAuth::new("prom", "pw-123").expect("auth");
    let server = MetricsServer::bind(([127, 0, 0, 1], 0).into(), metrics(), Some(auth))
        .await
        .expect("bind")
        .with_tls(tls);
    assert_eq!(server.scheme(), "https");
    let serving = Serving::start(server);
    let port = serving.addr.port();
    let client = client_trusting(&certs.cert_pem);

    let scrape = |host: &'static str, path: &'static str, auth: bool| {
        let mut request = client.get(format!("https://{host}:{port}{path}"));
        if auth {
            request = request.basic_auth("prom", Some("pw-123"));
        }
        request.send()
    };
    let response = scrape("127.0.0.1", "/metrics", true).await.expect("https scrape");
    assert_eq!(response.status(), 200);
    let text = response.text().await.expect("body");
    assert!(
        text.contains("plum_fuse_calls_total{number=\"6175550042\",direction=\"inbound\"} 1"),
        "{text:.300}"
    );
    assert_eq!(
        scrape("localhost", "/metrics", false).await.expect("https").status(),
        401,
        "auth still applies"
    );
    let health = scrape("localhost", "/healthz", false).await.expect("https healthz");
    assert_eq!((health.status().as_u16(), health.text().await.expect("body").as_str()), (200, "ok\n"));

    // Clients that fail the handshake lose their own connection only.
    let plain = reqwest::Client::new().get(format!("http://127.0.0.1:{port}/healthz")).send().await;
    assert!(plain.is_err(), "plain HTTP to the TLS port must fail: {plain:?}");
    let untrusting = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client");
    let untrusted = untrusting.get(format!("https://127.0.0.1:{port}/healthz")).send().await;
    assert!(untrusted.is_err(), "a self-signed certificate must not be trusted by default: {untrusted:?}");
    let mut garbage = tokio::net::TcpStream::connect(serving.addr).await.expect("connect");
    garbage.write_all(b"\x16\x03\x01\x00\x05hello").await.expect("write");
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), garbage.read_to_end(&mut sink)).await;
    // A peer that never starts the handshake must not hold up the others.
    let _silent = tokio::net::TcpStream::connect(serving.addr).await.expect("connect");

    let response = scrape("127.0.0.1", "/metrics", true).await.expect("still serving after bad clients");
    assert_eq!(response.status(), 200);
    assert!(response.text().await.expect("body").contains("plum_fuse_up 0"));
    serving.stop().await;
}

#[tokio::test]
async fn gzip_when_asked_over_http_and_https() {
    let certs = self_signed();
    let tls = TlsConfig::from_pem_files(&certs.cert_file, &certs.key_file).expect("load the pair");
    let plain_server = MetricsServer::bind(([127, 0, 0, 1], 0).into(), metrics(), None).await.expect("bind");
    assert_eq!(plain_server.scheme(), "http");
    let tls_server =
        MetricsServer::bind(([127, 0, 0, 1], 0).into(), metrics(), None).await.expect("bind").with_tls(tls);
    let servers = [Serving::start(plain_server), Serving::start(tls_server)];
    let client = client_trusting(&certs.cert_pem);
    for (scheme, serving) in ["http", "https"].into_iter().zip(&servers) {
        let url = format!("{scheme}://127.0.0.1:{}/metrics", serving.addr.port());
        // reqwest is built without its gzip feature: it neither asks for
        // gzip nor inflates it, so the test sees exactly what was sent.
        let response = client.get(&url).send().await.expect("scrape");
        assert_eq!(response.headers().get("content-encoding"), None, "{url}: gzip without asking");
        let plain = response.text().await.expect("body");
        assert!(plain.starts_with("# HELP"), "{url}: {plain:.100}");

        let response = client.get(&url).header("accept-encoding", "gzip").send().await.expect("scrape");
        assert_eq!(response.status(), 200);
        let encoding = response.headers().get("content-encoding").map(|v| v.as_bytes().to_vec());
        assert_eq!(encoding.as_deref(), Some(&b"gzip"[..]), "{url}");
        let compressed = response.bytes().await.expect("body");
        let unzipped = gunzip(&compressed);
        assert_eq!(stable_lines(&unzipped), stable_lines(&plain), "{url}");
        assert!(compressed.len() * 5 < plain.len(), "{url}: {} of {} bytes", compressed.len(), plain.len());
    }
    for serving in servers {
        serving.stop().await;
    }
}
