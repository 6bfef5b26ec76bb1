//! [`MetricsServer`]: the HTTP side: `/metrics`, `/healthz`, `/`.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::header::{ALLOW, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

use crate::error::MetricsError;
use crate::metrics::{CONTENT_TYPE as METRICS_CONTENT_TYPE, Metrics};

/// How long connections in flight get to finish after shutdown starts.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long a client may take to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

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
            return Err(MetricsError::InvalidConfig(
                "the basic-auth username must be non-empty and hold no ':'".into(),
            ));
        }
        if password.is_empty() {
            return Err(MetricsError::InvalidConfig("the basic-auth password is empty".into()));
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

/// The exporter's HTTP server, bound and ready to serve.
///
/// Every request is answered from the [`Metrics`] registry alone, so a
/// scrape never waits on the API.
#[derive(Debug)]
pub struct MetricsServer {
    listener: TcpListener,
    local_addr: SocketAddr,
    metrics: Arc<Metrics>,
    auth: Option<Arc<BasicAuth>>,
}

impl MetricsServer {
    /// Binds `addr` (port 0 picks a free port; see [`MetricsServer::local_addr`]).
    ///
    /// # Errors
    /// [`MetricsError::Bind`], with a hint for an address in use.
    pub async fn bind(
        addr: SocketAddr,
        metrics: Arc<Metrics>,
        auth: Option<BasicAuth>,
    ) -> Result<Self, MetricsError> {
        let listener = TcpListener::bind(addr).await.map_err(|source| MetricsError::Bind { addr, source })?;
        let local_addr = listener.local_addr().map_err(|source| MetricsError::Bind { addr, source })?;
        Ok(MetricsServer { listener, local_addr, metrics, auth: auth.map(Arc::new) })
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
        info!(addr = %self.local_addr, auth = self.auth.is_some(), "serving metrics");
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
            let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    debug!(peer = %peer, error = %error, "connection ended with an error");
                }
            });
        }
        drop(self.listener);
        tokio::select! {
            () = graceful.shutdown() => debug!("connections closed"),
            () = tokio::time::sleep(SHUTDOWN_GRACE) => warn!("connections still open after the shutdown grace period"),
        }
        Ok(())
    }
}

/// Answers one request from the registry: the exporter's routing table.
///
/// `GET`/`HEAD` on `/metrics`, `/healthz` and `/`; 405 with `Allow` for
/// other methods there; 404 elsewhere; 401 without the configured
/// credentials (except `/healthz`).
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
                let mut response = Response::new(Full::new(Bytes::from(body)));
                response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(METRICS_CONTENT_TYPE));
                response.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
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
