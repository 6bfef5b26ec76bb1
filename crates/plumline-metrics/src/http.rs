//! [`MetricsServer`]: the HTTP(S) side: `/metrics`, `/healthz`, `/`.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;
use http::header::{
    ACCEPT_ENCODING, ALLOW, AUTHORIZATION, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_TYPE, VARY,
    WWW_AUTHENTICATE,
};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

use crate::error::MetricsError;
use crate::metrics::{CONTENT_TYPE as METRICS_CONTENT_TYPE, Metrics};
use crate::tls::TlsConfig;

/// How long connections in flight get to finish after shutdown starts.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long a client may take to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to complete the TLS handshake, so a silent
/// peer cannot hold a task (and its socket) forever.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// HTTP Basic credentials that `/metrics` and `/` require (`/healthz` stays
/// open so liveness probes need no secret), in the spirit of Prometheus'
/// exporter-toolkit web config.
///
/// The password is compared in constant time; `Debug` never shows it.
#[derive(Clone)]
pub struct BasicAuth {
    username: String,
    password: String,
}

impl fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicAuth")
            .field("username", &self.username)
            .field("password", &"[redacted]")
            .finish()
    }
}

impl BasicAuth {
    /// Credentials a scraper must send.
    ///
    /// # Errors
    /// [`MetricsError::InvalidConfig`] if the username is empty or holds a
    /// `:`, or the password is empty.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Result<Self, MetricsError> {
        let (username, password) = (username.into(), password.into());
        if username.is_empty() || username.contains(':') {
            return Err(MetricsError::InvalidConfig {
                field: "basic_auth.username",
                reason: "must be non-empty and hold no ':'".into(),
            });
        }
        if password.is_empty() {
            return Err(MetricsError::InvalidConfig {
                field: "basic_auth.password",
                reason: "must not be empty".into(),
            });
        }
        Ok(BasicAuth { username, password })
    }

    /// Whether an `Authorization` header carries these credentials.
    #[must_use]
    pub fn accepts(&self, header: Option<&HeaderValue>) -> bool {
        let Some(value) = header.and_then(|h| h.to_str().ok()) else {
            return false;
        };
        let Some((scheme, encoded)) = value.trim().split_once(' ') else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case("basic") {
            return false;
        }
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
            return false;
        };
        let Some(colon) = decoded.iter().position(|&b| b == b':') else {
            return false;
        };
        let (user, pass) = (&decoded[..colon], &decoded[colon + 1..]);
        // `&`, not `&&`: check both so the time does not tell which was wrong.
        constant_time_eq(user, self.username.as_bytes()) & constant_time_eq(pass, self.password.as_bytes())
    }
}

/// Compares without an early exit on the first differing byte (the length
/// still shows, which is acceptable for a password of the operator's choice).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// The exporter's HTTP server, bound and ready to serve: plain HTTP, or
/// HTTPS only once given a [`TlsConfig`] ([`MetricsServer::with_tls`]).
///
/// Every request is answered from the [`Metrics`] registry alone, so a
/// scrape never waits on the API. With TLS, a client that fails the
/// handshake (plain HTTP, an untrusted certificate, a silent peer) loses
/// its own connection only.
#[derive(Debug)]
pub struct MetricsServer {
    listener: TcpListener,
    local_addr: SocketAddr,
    metrics: Arc<Metrics>,
    auth: Option<Arc<BasicAuth>>,
    tls: Option<TlsConfig>,
}

impl MetricsServer {
    /// Binds `addr` (port 0 picks a free port; see [`MetricsServer::local_addr`]).
    ///
    /// # Errors
    /// [`MetricsError::Bind`], with a hint for an address in use.
    ///
    /// # Cancel safety
    /// Dropping the future before it returns leaves nothing bound.
    pub async fn bind(
        addr: SocketAddr,
        metrics: Arc<Metrics>,
        auth: Option<BasicAuth>,
    ) -> Result<Self, MetricsError> {
        let listener = TcpListener::bind(addr).await.map_err(|source| MetricsError::Bind { addr, source })?;
        let local_addr = listener.local_addr().map_err(|source| MetricsError::Bind { addr, source })?;
        Ok(MetricsServer { listener, local_addr, metrics, auth: auth.map(Arc::new), tls: None })
    }

    /// Serves HTTPS only, with `tls`, on the bound address (`/healthz`
    /// included); basic auth, if set, still applies on top.
    #[must_use]
    pub fn with_tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// `https` with TLS, else `http`: the scheme a scraper must use.
    #[must_use]
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// The address actually bound.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` completes, then stops accepting and gives
    /// connections in flight up to 5 s to finish.
    ///
    /// # Errors
    /// None today: failed accepts (e.g. out of file descriptors) are logged
    /// and retried after a pause. The `Result` leaves room for fatal ones.
    ///
    /// # Cancel safety
    /// Dropping the future closes the listener and abandons connections in
    /// flight; prefer `shutdown`.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<(), MetricsError> {
        let mut shutdown = std::pin::pin!(shutdown);
        let graceful = GracefulShutdown::new();
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder.timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
        let acceptor = self.tls.as_ref().map(TlsConfig::acceptor);
        // Dropped when shutdown starts: handshakes in flight then give up
        // instead of holding the graceful shutdown for their timeout.
        let (closing, _) = tokio::sync::watch::channel(());
        info!(addr = %self.local_addr, scheme = self.scheme(), auth = self.auth.is_some(), "serving metrics");
        loop {
            let (stream, peer) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        warn!(error = %error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let metrics = Arc::clone(&self.metrics);
            let auth = self.auth.clone();
            let service = service_fn(move |request: Request<Incoming>| {
                let response = respond(&request, &metrics, auth.as_deref());
                async move { Ok::<_, Infallible>(response) }
            });
            let watcher = graceful.watcher();
            let Some(acceptor) = &acceptor else {
                let connection = watcher.watch(builder.serve_connection(TokioIo::new(stream), service));
                tokio::spawn(async move { log_connection_end(peer, connection.await) });
                continue;
            };
            // The handshake runs in the connection's own task: a slow or
            // failing client never holds up the accept loop or the others.
            let handshake = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream));
            let builder = builder.clone();
            let mut closing = closing.subscribe();
            tokio::spawn(async move {
                let stream = tokio::select! {
                    handshake = handshake => match handshake {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(error)) => return debug!(peer = %peer, error = %error, "TLS handshake failed"),
                        Err(_) => return debug!(peer = %peer, "TLS handshake timed out"),
                    },
                    _ = closing.changed() => return debug!(peer = %peer, "TLS handshake cut short by shutdown"),
                };
                let connection = watcher.watch(builder.serve_connection(TokioIo::new(stream), service));
                log_connection_end(peer, connection.await);
            });
        }
        drop(self.listener);
        drop(closing);
        tokio::select! {
            () = graceful.shutdown() => debug!("connections closed"),
            () = tokio::time::sleep(SHUTDOWN_GRACE) => warn!("connections still open after the shutdown grace period"),
        }
        Ok(())
    }
}

fn log_connection_end(peer: SocketAddr, outcome: Result<(), hyper::Error>) {
    if let Err(error) = outcome {
        debug!(peer = %peer, error = %error, "connection ended with an error");
    }
}

/// Answers one request from the registry: the exporter's routing table.
///
/// `GET`/`HEAD` on `/metrics`, `/healthz` and `/`; 405 with `Allow` for
/// other methods there; 404 elsewhere; 401 without the configured
/// credentials (except `/healthz`). `/metrics` is gzipped when the request's
/// `Accept-Encoding` allows gzip, as Prometheus' does.
#[must_use]
pub fn respond<B>(
    request: &Request<B>,
    metrics: &Metrics,
    auth: Option<&BasicAuth>,
) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    let public = match path {
        "/healthz" => true,
        "/metrics" | "/" => false,
        _ => return plain(StatusCode::NOT_FOUND, "not found: try /metrics\n"),
    };
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed: use GET\n");
        response.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    if let (false, Some(auth)) = (public, auth)
        && !auth.accepts(request.headers().get(AUTHORIZATION))
    {
        let mut response = plain(StatusCode::UNAUTHORIZED, "unauthorized\n");
        response.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"plumline\", charset=\"UTF-8\""),
        );
        return response;
    }
    match path {
        "/healthz" => plain(StatusCode::OK, "ok\n"),
        "/metrics" => match metrics.render() {
            Ok(body) => {
                let gzipped = if accepts_gzip(request.headers()) { gzip(&body) } else { None };
                let is_gzipped = gzipped.is_some();
                let mut response = Response::new(Full::new(Bytes::from(gzipped.unwrap_or(body))));
                let headers = response.headers_mut();
                headers.insert(CONTENT_TYPE, HeaderValue::from_static(METRICS_CONTENT_TYPE));
                headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
                headers.insert(VARY, HeaderValue::from_static("accept-encoding"));
                if is_gzipped {
                    headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                }
                response
            }
            Err(error) => {
                warn!(error = %error, "cannot render metrics");
                plain(StatusCode::INTERNAL_SERVER_ERROR, "cannot render metrics\n")
            }
        },
        _ => {
            let mut response = Response::new(Full::new(Bytes::from_static(LANDING_PAGE.as_bytes())));
            response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
            response
        }
    }
}

/// Whether `Accept-Encoding` allows gzip: a `gzip` (or legacy `x-gzip`)
/// coding without `q=0`. A bare `*` does not count: identity is always
/// acceptable, so only clients that name gzip get it.
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or_default();
            let refused = parts.any(|param| {
                param.split_once('=').is_some_and(|(key, q)| {
                    key.trim().eq_ignore_ascii_case("q") && q.trim().parse::<f32>().is_ok_and(|q| q <= 0.0)
                })
            });
            (name.eq_ignore_ascii_case("gzip") || name.eq_ignore_ascii_case("x-gzip")) && !refused
        })
}

/// The body gzipped at the fastest level: text exposition compresses
/// about tenfold even so, and a scrape must stay cheap. `None` (serve it
/// plain) if the encoder fails, which writing to memory does not.
fn gzip(body: &[u8]) -> Option<Vec<u8>> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(body.len() / 8), Compression::fast());
    match encoder.write_all(body).and_then(|()| encoder.finish()) {
        Ok(compressed) => Some(compressed),
        Err(error) => {
            warn!(error = %error, "cannot gzip the metrics; serving them uncompressed");
            None
        }
    }
}

fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

const LANDING_PAGE: &str = concat!(
    "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>plumline exporter</title></head>\n",
    "<body><h1>plumline exporter</h1>\n",
    "<p>Plum Fuse call counts and durations for Prometheus (plumline ",
    env!("CARGO_PKG_VERSION"),
    "). Figures lag by up to one poll interval.</p>\n",
    "<ul><li><a href=\"metrics\">/metrics</a>: the metrics</li>\n",
    "<li><a href=\"healthz\">/healthz</a>: liveness</li></ul>\n",
    "</body></html>\n"
);

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    fn request(method: Method, path: &str, authorization: Option<&str>) -> Request<()> {
        let mut builder = Request::builder().method(method).uri(path);
        if let Some(value) = authorization {
            builder = builder.header(AUTHORIZATION, value);
        }
        builder.body(()).expect("request")
    }

    fn basic(user: &str, pass: &str) -> String {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}")))
    }

    async fn body(response: Response<Full<Bytes>>) -> String {
        let bytes = response.into_body().collect().await.expect("body").to_bytes();
        String::from_utf8(bytes.to_vec()).expect("utf-8")
    }

    #[tokio::test]
    async fn routes() {
        let metrics = Metrics::new().expect("metrics");
        // (method, path, status, content type prefix, body needle)
        let cases = [
            (Method::GET, "/metrics", 200, "text/plain; version=0.0.4", "# TYPE plum_fuse_up gauge"),
            (Method::HEAD, "/metrics", 200, "text/plain; version=0.0.4", ""),
            (Method::GET, "/metrics?x=1", 200, "text/plain; version=0.0.4", "plum_fuse_up"),
            (Method::GET, "/healthz", 200, "text/plain", "ok"),
            (Method::GET, "/", 200, "text/html", "href=\"metrics\""),
            (Method::GET, "/nope", 404, "text/plain", "not found"),
            (Method::POST, "/nope", 404, "text/plain", "not found"),
            (Method::POST, "/metrics", 405, "text/plain", "method not allowed"),
            (Method::DELETE, "/", 405, "text/plain", "method not allowed"),
        ];
        for (method, path, status, content_type, needle) in cases {
            let response = respond(&request(method.clone(), path, None), &metrics, None);
            assert_eq!(response.status().as_u16(), status, "{method} {path}");
            let ct = response
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            assert!(ct.starts_with(content_type), "{method} {path}: {ct}");
            if status == 405 {
                assert_eq!(response.headers().get(ALLOW).map(HeaderValue::as_bytes), Some(&b"GET, HEAD"[..]));
            }
            assert!(body(response).await.contains(needle), "{method} {path}");
        }
    }

    #[tokio::test]
    async fn basic_auth_guards_metrics_not_healthz() {
        let metrics = Metrics::new().expect("metrics");
        let auth = BasicAuth::new("prom", "s3cret").expect("auth");
        let good = basic("prom", "s3cret");
        let cases = [
            ("/metrics", None, 401),
            ("/metrics", Some(basic("prom", "wrong")), 401),
            ("/metrics", Some(basic("other", "s3cret")), 401),
            ("/metrics", Some(basic("prom", "s3cret2")), 401),
            ("/metrics", Some("Bearer abc".to_owned()), 401),
            ("/metrics", Some("Basic !!!".to_owned()), 401),
            ("/metrics", Some(good.clone()), 200),
            ("/metrics", Some(good.replace("Basic", "basic")), 200),
            ("/", None, 401),
            ("/healthz", None, 200),
            ("/nope", Some(good), 404),
        ];
        for (path, header, status) in cases {
            let response = respond(&request(Method::GET, path, header.as_deref()), &metrics, Some(&auth));
            assert_eq!(response.status().as_u16(), status, "{path} {header:?}");
            if status == 401 {
                assert!(response.headers().contains_key(WWW_AUTHENTICATE));
            }
        }
        assert!(!format!("{auth:?}").contains("s3cret"));
        assert!(BasicAuth::new("a:b", "x").is_err());
        assert!(BasicAuth::new("a", "").is_err());
    }

    #[test]
    fn accept_encoding_gzip() {
        let cases: [(&[&str], bool); 14] = [
            (&[], false),
            (&["gzip"], true),
            (&["GZIP"], true),
            (&["x-gzip"], true),
            (&["gzip, deflate, br"], true),
            (&["deflate,gzip"], true),
            (&["br", "gzip"], true),
            (&["gzip;q=0.5"], true),
            (&["gzip ; q=1.0"], true),
            (&["gzip;q=0"], false),
            (&["gzip; Q=0.000"], false),
            (&["identity"], false),
            (&["*"], false),
            (&["gzipx, deflate"], false),
        ];
        for (values, want) in cases {
            let mut headers = HeaderMap::new();
            for value in values {
                headers.append(ACCEPT_ENCODING, HeaderValue::from_static(value));
            }
            assert_eq!(accepts_gzip(&headers), want, "{values:?}");
        }
    }

    fn gunzip(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(bytes), &mut out).expect("valid gzip");
        out
    }

    /// Process metrics (CPU, memory) move between two renders; the rest not.
    fn stable_lines(text: &str) -> Vec<&str> {
        text.lines().filter(|l| !l.contains("process_")).collect()
    }

    #[tokio::test]
    async fn metrics_are_gzipped_only_when_asked() {
        let metrics = Metrics::new().expect("metrics");
        metrics.publish_calls(0);
        for n in 0..1_000 {
            for direction in ["inbound", "outbound", "transfer"] {
                metrics.record_call(&format!("617555{n:04}"), direction, n % 3_700);
            }
        }
        let exact = metrics.render().expect("render");
        assert_eq!(gunzip(&gzip(&exact).expect("gzip")), exact, "gzip round-trips byte for byte");

        let get = |accept: Option<&'static str>| {
            let mut builder = Request::builder().uri("/metrics");
            if let Some(accept) = accept {
                builder = builder.header(ACCEPT_ENCODING, accept);
            }
            respond(&builder.body(()).expect("request"), &metrics, None)
        };
        let plain = get(None);
        assert_eq!(plain.headers().get(CONTENT_ENCODING), None);
        assert_eq!(plain.headers().get(VARY).map(HeaderValue::as_bytes), Some(&b"accept-encoding"[..]));
        let plain = body(plain).await;
        for accept in ["identity", "gzip;q=0", "*"] {
            let response = get(Some(accept));
            assert_eq!(response.headers().get(CONTENT_ENCODING), None, "{accept}");
            assert!(body(response).await.starts_with("# HELP"), "{accept}: not plain text");
        }

        let response = get(Some("gzip, deflate"));
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers().get(CONTENT_ENCODING).map(HeaderValue::as_bytes), Some(&b"gzip"[..]));
        assert!(
            response
                .headers()
                .get(CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"text/plain; version=0.0.4")),
            "{:?}",
            response.headers()
        );
        let compressed = response.into_body().collect().await.expect("body").to_bytes();
        let unzipped = String::from_utf8(gunzip(&compressed)).expect("utf-8");
        assert_eq!(stable_lines(&unzipped), stable_lines(&plain));
        assert!(
            compressed.len() * 5 < plain.len(),
            "gzip saves little: {} of {} bytes",
            compressed.len(),
            plain.len()
        );

        // Only /metrics is compressed.
        let healthz =
            Request::builder().uri("/healthz").header(ACCEPT_ENCODING, "gzip").body(()).expect("request");
        let response = respond(&healthz, &metrics, None);
        assert_eq!(response.headers().get(CONTENT_ENCODING), None);
        assert_eq!(body(response).await, "ok\n");
    }

    #[test]
    fn constant_time_eq_is_eq() {
        for (a, b) in [("", ""), ("a", "a"), ("a", "b"), ("ab", "a"), ("secret", "secreT")] {
            assert_eq!(constant_time_eq(a.as_bytes(), b.as_bytes()), a == b, "{a} {b}");
        }
    }

    #[tokio::test]
    async fn serves_over_tcp_and_shuts_down() {
        let metrics = Arc::new(Metrics::new().expect("metrics"));
        let server = MetricsServer::bind(([127, 0, 0, 1], 0).into(), metrics, None).await.expect("bind");
        let addr = server.local_addr();
        let in_use = MetricsServer::bind(addr, Arc::new(Metrics::new().expect("metrics")), None).await;
        let err = in_use.expect_err("port in use").to_string();
        assert!(err.contains("already in use"), "{err}");

        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(async move {
            let _ = stopped.await;
        }));
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.expect("read");
        assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok\n"), "{answer}");
        stop.send(()).expect("server alive");
        let done = tokio::time::timeout(Duration::from_secs(10), task).await;
        assert!(matches!(done, Ok(Ok(Ok(())))), "{done:?}");
    }
}
