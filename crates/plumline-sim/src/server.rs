//! [`SimServer`]: the HTTP face of a [`Simulator`], with fault injection.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::header::{
    ACCEPT, ALLOW, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE,
};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use plumline_api::{MAX_LIMIT, WireFormat};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, info, warn};

use crate::config::{Fault, Faults, SimConfig};
use crate::dataset::Simulator;
use crate::error::SimError;
use crate::render;
use crate::rng::{Rng, mix64};

/// The path every API URL starts with, as on the vendor's host.
pub const BASE_PATH: &str = "/api";
/// How long shutdown waits for in-flight requests before dropping them.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Counters of what a server answered, read with [`SimServer::stats`].
///
/// `requests` counts every request on any path; the others count answers
/// of the calls endpoint by outcome, except `not_found`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SimStats {
    /// Requests received, on any path.
    pub requests: u64,
    /// 200 answers sent whole.
    pub ok: u64,
    /// 401 answers.
    pub unauthorized: u64,
    /// Injected 500 answers.
    pub server_error: u64,
    /// Injected 429 answers.
    pub rate_limited: u64,
    /// Connections dropped without an answer.
    pub reset: u64,
    /// 200 answers cut short.
    pub truncated: u64,
    /// 400 answers (bad window, limit or offset).
    pub bad_request: u64,
    /// 405 answers.
    pub method_not_allowed: u64,
    /// 404 answers (unknown paths).
    pub not_found: u64,
    /// Calls in 200 bodies sent whole.
    pub calls_served: u64,
    /// Body bytes of 200 answers sent whole.
    pub bytes_served: u64,
}

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    ok: AtomicU64,
    unauthorized: AtomicU64,
    server_error: AtomicU64,
    rate_limited: AtomicU64,
    reset: AtomicU64,
    truncated: AtomicU64,
    bad_request: AtomicU64,
    method_not_allowed: AtomicU64,
    not_found: AtomicU64,
    calls_served: AtomicU64,
    bytes_served: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    fn snapshot(&self) -> SimStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SimStats {
            requests: get(&self.requests),
            ok: get(&self.ok),
            unauthorized: get(&self.unauthorized),
            server_error: get(&self.server_error),
            rate_limited: get(&self.rate_limited),
            reset: get(&self.reset),
            truncated: get(&self.truncated),
            bad_request: get(&self.bad_request),
            method_not_allowed: get(&self.method_not_allowed),
            not_found: get(&self.not_found),
            calls_served: get(&self.calls_served),
            bytes_served: get(&self.bytes_served),
        }
    }
}

#[derive(Debug)]
struct FaultState {
    faults: Faults,
    script: VecDeque<Fault>,
    rng: Rng,
}

#[derive(Debug)]
struct Shared {
    sim: Simulator,
    faults: Mutex<FaultState>,
    stats: Counters,
}

impl Shared {
    fn new(config: SimConfig) -> Result<Self, SimError> {
        let faults = config.faults.clone();
        // Seeded, so a sequential client meets the same faults on every run.
        let rng = Rng::new(mix64(config.seed ^ 0xFA_017));
        let sim = Simulator::new(config)?;
        Ok(Shared {
            sim,
            faults: Mutex::new(FaultState { faults, script: VecDeque::new(), rng }),
            stats: Counters::default(),
        })
    }

    fn fault_state(&self) -> std::sync::MutexGuard<'_, FaultState> {
        self.faults.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The fault for the next calls request, and the latency to add.
    fn next_fault(&self) -> (Fault, Duration) {
        let mut state = self.fault_state();
        let fault = if let Some(fault) = state.script.pop_front() {
            fault
        } else {
            let u = state.rng.f64();
            state.faults.pick(u)
        };
        (fault, state.faults.latency)
    }
}

/// A running simulator: an HTTP server on a local port, serving a
/// [`Simulator`] under `/api`, with faults changeable while it runs.
///
/// Dropping the handle stops the server too (in the background); call
/// [`SimServer::shutdown`] to wait until it has stopped and its port is free.
///
/// # Examples
/// ```no_run
/// # async fn demo() -> Result<(), plumline_sim::SimError> {
/// use plumline_sim::{Fault, SimConfig, SimServer};
/// let server = SimServer::start(SimConfig::default(), "127.0.0.1:0".parse().expect("an address")).await?;
/// server.push_script([Fault::ServerError; 3]);
/// let url = server.base_url(); // http://127.0.0.1:PORT/api
/// # drop(url);
/// server.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct SimServer {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    // Dropping the sender is the stop signal, so dropping the handle stops the server.
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl SimServer {
    /// Binds `addr` (port 0 picks a free port) and serves in a background
    /// task on the current Tokio runtime.
    ///
    /// # Errors
    /// [`SimError::InvalidConfig`] for a configuration that cannot be
    /// served, [`SimError::Bind`] when the address cannot be bound.
    ///
    /// # Cancel safety
    /// Cancelling before it returns leaves nothing running.
    pub async fn start(config: SimConfig, addr: SocketAddr) -> Result<Self, SimError> {
        config.validate()?;
        let listener = TcpListener::bind(addr).await.map_err(|source| SimError::Bind { addr, source })?;
        Self::from_listener(config, listener)
    }

    /// Serves on an already bound listener in a background task. Must be
    /// called inside a Tokio runtime.
    ///
    /// # Errors
    /// [`SimError::InvalidConfig`], or [`SimError::Listener`] when the
    /// listener's address cannot be read.
    pub fn from_listener(config: SimConfig, listener: TcpListener) -> Result<Self, SimError> {
        let local_addr = listener.local_addr().map_err(SimError::Listener)?;
        let shared = Arc::new(Shared::new(config)?);
        let (stop, mut stopped) = watch::channel(false);
        let until = async move {
            // An error means the handle was dropped: stop as well.
            let _ = stopped.wait_for(|s| *s).await;
        };
        let task = tokio::spawn(accept_loop(Arc::clone(&shared), listener, until));
        info!(addr = %local_addr, base_url = %base_url(local_addr), "simulator listening");
        Ok(SimServer { shared, local_addr, stop, task })
    }

    /// Serves on `listener` in the current task until `shutdown` completes,
    /// then stops accepting, lets in-flight requests finish (for up to five
    /// seconds) and returns what was served. For foreground use such as
    /// `plumline sim`.
    ///
    /// # Errors
    /// [`SimError::InvalidConfig`] for a configuration that cannot be served.
    ///
    /// # Cancel safety
    /// Dropping the future closes the listener and every connection at once.
    pub async fn serve_until<F>(
        config: SimConfig,
        listener: TcpListener,
        shutdown: F,
    ) -> Result<SimStats, SimError>
    where
        F: Future<Output = ()> + Send,
    {
        let shared = Arc::new(Shared::new(config)?);
        if let Ok(addr) = listener.local_addr() {
            info!(addr = %addr, base_url = %base_url(addr), "simulator listening");
        }
        accept_loop(Arc::clone(&shared), listener, shutdown).await;
        Ok(shared.stats.snapshot())
    }

    /// The API base URL, e.g. `http://127.0.0.1:40123/api`.
    #[must_use]
    pub fn base_url(&self) -> String {
        base_url(self.local_addr)
    }

    /// The address the server listens on.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The dataset served: the ground truth for tests.
    #[must_use]
    pub fn simulator(&self) -> &Simulator {
        &self.shared.sim
    }

    /// Replaces the random faults and latency (the script is kept).
    ///
    /// # Errors
    /// [`SimError::InvalidConfig`] when a rate is outside `[0, 1]` or they
    /// add up to more than 1; the old faults then stay.
    pub fn set_faults(&self, faults: Faults) -> Result<(), SimError> {
        faults.validate()?;
        self.shared.fault_state().faults = faults;
        Ok(())
    }

    /// The random faults and latency in force.
    #[must_use]
    pub fn faults(&self) -> Faults {
        self.shared.fault_state().faults.clone()
    }

    /// Appends to the script: the next calls requests get these faults, in
    /// order, before the random rates apply again.
    pub fn push_script(&self, faults: impl IntoIterator<Item = Fault>) {
        self.shared.fault_state().script.extend(faults);
    }

    /// Scripted faults not yet consumed.
    #[must_use]
    pub fn script_len(&self) -> usize {
        self.shared.fault_state().script.len()
    }

    /// Drops the rest of the script.
    pub fn clear_script(&self) {
        self.shared.fault_state().script.clear();
    }

    /// What the server has answered so far.
    #[must_use]
    pub fn stats(&self) -> SimStats {
        self.shared.stats.snapshot()
    }

    /// Sets the simulator's clock to `now` (UNIX seconds; the clock becomes
    /// manual). Only live mode reads it.
    pub fn set_now(&self, now: i64) {
        self.shared.sim.set_now(now);
    }

    /// Stops accepting, lets in-flight requests finish (for up to five
    /// seconds), and returns once the port is free.
    ///
    /// # Cancel safety
    /// Cancelling still stops the server, in the background.
    pub async fn shutdown(self) {
        let SimServer { stop, task, local_addr, .. } = self;
        let _ = stop.send(true);
        if let Err(error) = task.await {
            warn!(%error, "simulator task failed");
        }
        info!(addr = %local_addr, "simulator stopped");
    }
}

fn base_url(addr: SocketAddr) -> String {
    format!("http://{addr}{BASE_PATH}")
}

async fn accept_loop<F: Future<Output = ()>>(shared: Arc<Shared>, listener: TcpListener, shutdown: F) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    // Small answers (errors, short pages) should not wait for Nagle.
                    let _ = stream.set_nodelay(true);
                    connections.spawn(serve_connection(Arc::clone(&shared), stream, peer, stop_rx.clone()));
                }
                Err(error) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(DRAIN_TIMEOUT, drain).await.is_err() {
        warn!(n_connections = connections.len(), "closing connections still busy after the drain timeout");
        connections.shutdown().await;
    }
}

async fn serve_connection(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    mut stop: watch::Receiver<bool>,
) {
    let abort = Arc::new(AtomicBool::new(false));
    let io = TokioIo::new(SimStream { inner: stream, abort: Arc::clone(&abort) });
    let service = service_fn(move |request| handle(Arc::clone(&shared), Arc::clone(&abort), request));
    let connection = http1::Builder::new().serve_connection(io, service);
    let mut connection = std::pin::pin!(connection);
    let stopped = async move {
        // An error means the accept loop is gone: stop as well.
        let _ = stop.wait_for(|s| *s).await;
    };
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = stopped => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        debug!(%peer, %error, "connection closed with an error");
    }
}

/// The error a handler returns to make hyper drop the connection unanswered.
#[derive(Debug)]
struct DropConnection;

impl std::fmt::Display for DropConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("injected connection reset")
    }
}

impl std::error::Error for DropConnection {}

async fn handle(
    shared: Arc<Shared>,
    abort: Arc<AtomicBool>,
    request: Request<Incoming>,
) -> Result<Response<SimBody>, DropConnection> {
    let stats = &shared.stats;
    bump(&stats.requests);
    let format = if wants_xml(request.headers()) { WireFormat::Xml } else { WireFormat::Json };
    let Some((start_raw, end_raw)) = calls_path(request.uri().path()) else {
        bump(&stats.not_found);
        debug!(path = request.uri().path(), status = 404, "unknown path");
        return Ok(error_response(StatusCode::NOT_FOUND, format, "not found"));
    };
    if request.method() != Method::GET {
        bump(&stats.method_not_allowed);
        let mut response = error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            format,
            "method not allowed: only GET is supported",
        );
        response.headers_mut().insert(ALLOW, HeaderValue::from_static("GET"));
        return Ok(response);
    }
    let (fault, latency) = shared.next_fault();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    match fault {
        Fault::Reset => {
            bump(&stats.reset);
            abort.store(true, Ordering::Release);
            debug!(fault = %fault, "dropping the connection");
            return Err(DropConnection);
        }
        Fault::ServerError => {
            bump(&stats.server_error);
            debug!(fault = %fault, status = 500, "injected fault");
            return Ok(error_response(StatusCode::INTERNAL_SERVER_ERROR, format, "database error"));
        }
        Fault::RateLimited => {
            bump(&stats.rate_limited);
            debug!(fault = %fault, status = 429, "injected fault");
            let mut response = error_response(StatusCode::TOO_MANY_REQUESTS, format, "too many requests");
            response.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static("1"));
            return Ok(response);
        }
        Fault::Pass | Fault::Truncated => {}
    }
    if let Err(message) = check_auth(request.headers(), &shared.sim) {
        bump(&stats.unauthorized);
        debug!(status = 401, message, "refused credentials");
        let mut response = error_response(StatusCode::UNAUTHORIZED, format, message);
        response
            .headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"Plum Fuse\""));
        return Ok(response);
    }
    let params = match parse_params(start_raw, end_raw, request.uri().query()) {
        Ok(params) => params,
        Err(message) => {
            bump(&stats.bad_request);
            debug!(status = 400, message = %message, "bad request");
            return Ok(error_response(StatusCode::BAD_REQUEST, format, &message));
        }
    };
    Ok(page_response(&shared, &params, format, fault))
}

/// A 200 with the page `params` ask for, cut short when `fault` says so.
fn page_response(shared: &Shared, params: &Params, format: WireFormat, fault: Fault) -> Response<SimBody> {
    let stats = &shared.stats;
    // Pages cost O(days + log n + limit); a day is generated at most once
    // while cached, so this stays short enough to run on the async worker.
    let resolved =
        shared.sim.resolve(params.start, params.end, params.number.as_deref(), params.limit, params.offset);
    let mut body = Vec::new();
    shared.sim.render(&resolved, params.offset, format, &mut body);
    let n_calls = resolved.items.len();
    debug!(
        start = params.start,
        end = params.end,
        number = params.number.as_deref().unwrap_or(""),
        offset = params.offset,
        limit = params.limit,
        n_calls,
        total_calls = resolved.total,
        fault = %fault,
        "page"
    );
    let mut response = if fault == Fault::Truncated {
        bump(&stats.truncated);
        let full = body.len();
        let mut body = Bytes::from(body);
        body.truncate(full / 2);
        let mut response = Response::new(SimBody::Truncated { part: Some(body), stalled: false });
        // Declare the whole length so the client knows it got less.
        response.headers_mut().insert(CONTENT_LENGTH, HeaderValue::from(full));
        response
    } else {
        bump(&stats.ok);
        stats.calls_served.fetch_add(n_calls as u64, Ordering::Relaxed);
        stats.bytes_served.fetch_add(body.len() as u64, Ordering::Relaxed);
        Response::new(SimBody::Full(Some(Bytes::from(body))))
    };
    response.headers_mut().insert(CONTENT_TYPE, content_type(format));
    response
}

/// `(start, end)` path segments of `/api/calls/{start}/{end}`, if it is that.
fn calls_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix(BASE_PATH)?.strip_prefix("/calls/")?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (start, end) = rest.split_once('/')?;
    (!start.is_empty() && !end.is_empty() && !end.contains('/')).then_some((start, end))
}

/// XML only when asked for before (or without) JSON; anything else is JSON.
fn wants_xml(headers: &HeaderMap) -> bool {
    let Some(accept) = headers.get(ACCEPT).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let accept = accept.to_ascii_lowercase();
    match (accept.find("/xml"), accept.find("/json")) {
        (Some(xml), Some(json)) => xml < json,
        (Some(_), None) => true,
        _ => false,
    }
}

fn check_auth(headers: &HeaderMap, sim: &Simulator) -> Result<(), &'static str> {
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Err("authentication required: send HTTP Basic credentials (email and developer key)");
    };
    let invalid = "invalid credentials";
    let value = value.to_str().map_err(|_| invalid)?.trim();
    let (scheme, encoded) = value.split_once(' ').ok_or(invalid)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(invalid);
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).map_err(|_| invalid)?;
    let decoded = std::str::from_utf8(&decoded).map_err(|_| invalid)?;
    let (email, key) = decoded.split_once(':').ok_or(invalid)?;
    let expected = &sim.config().credentials;
    if email.eq_ignore_ascii_case(&expected.email) && key == expected.developer_key.expose() {
        Ok(())
    } else {
        Err(invalid)
    }
}

struct Params {
    start: i64,
    end: i64,
    number: Option<String>,
    limit: usize,
    offset: u64,
}

fn parse_params(start: &str, end: &str, query: Option<&str>) -> Result<Params, String> {
    let timestamp = |raw: &str, name: &str| {
        raw.parse::<i64>()
            .map_err(|_| format!("{name} must be a UNIX timestamp in whole seconds, got {raw:?}"))
    };
    let mut params = Params {
        start: timestamp(start, "start")?,
        end: timestamp(end, "end")?,
        number: None,
        limit: 1_000,
        offset: 0,
    };
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match &*key {
            "number" => params.number = Some(value.into_owned()).filter(|n| !n.is_empty()),
            "limit" => {
                params.limit = value
                    .trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|l| (1..=MAX_LIMIT).contains(l))
                    .and_then(|l| usize::try_from(l).ok())
                    .ok_or_else(|| {
                        format!("limit must be an integer from 1 to {MAX_LIMIT}, got {value:?}")
                    })?;
            }
            "offset" => {
                params.offset = value
                    .trim()
                    .parse::<u64>()
                    .map_err(|_| format!("offset must be a non-negative integer, got {value:?}"))?;
            }
            _ => {}
        }
    }
    Ok(params)
}

fn content_type(format: WireFormat) -> HeaderValue {
    match format {
        WireFormat::Json => HeaderValue::from_static("application/json"),
        WireFormat::Xml => HeaderValue::from_static("application/xml"),
    }
}

fn error_response(status: StatusCode, format: WireFormat, message: &str) -> Response<SimBody> {
    let body = match format {
        WireFormat::Json => render::json_error(message),
        WireFormat::Xml => render::xml_error(message),
    };
    let mut response = Response::new(SimBody::Full(Some(Bytes::from(body))));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, content_type(format));
    response
}

/// A response body: whole, or cut short with an error so hyper closes the
/// connection after sending part of it.
#[derive(Debug)]
enum SimBody {
    Full(Option<Bytes>),
    Truncated { part: Option<Bytes>, stalled: bool },
}

/// The body error that ends a truncated response.
#[derive(Debug)]
struct TruncatedBody;

impl std::fmt::Display for TruncatedBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("injected truncated body")
    }
}

impl std::error::Error for TruncatedBody {}

impl Body for SimBody {
    type Data = Bytes;
    type Error = TruncatedBody;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, TruncatedBody>>> {
        match self.get_mut() {
            SimBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            SimBody::Truncated { part, stalled } => {
                if let Some(part) = part.take() {
                    Poll::Ready(Some(Ok(Frame::data(part))))
                } else if *stalled {
                    Poll::Ready(Some(Err(TruncatedBody)))
                } else {
                    // Yield once so hyper flushes the part before the error closes the connection.
                    *stalled = true;
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, SimBody::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            SimBody::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            SimBody::Full(None) => SizeHint::with_exact(0),
            SimBody::Truncated { .. } => SizeHint::default(),
        }
    }
}

/// A TCP stream that, when a handler asked for a reset, closes with RST
/// (zero linger) instead of FIN, as a crashed proxy would.
struct SimStream {
    inner: TcpStream,
    abort: Arc<AtomicBool>,
}

impl Drop for SimStream {
    fn drop(&mut self) {
        if self.abort.load(Ordering::Acquire) {
            let _ = self.inner.set_zero_linger();
        }
    }
}

impl AsyncRead for SimStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for SimStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_route() {
        let cases = [
            ("/api/calls/1/2", Some(("1", "2"))),
            ("/api/calls/1/2/", Some(("1", "2"))),
            ("/api/calls/a/b", Some(("a", "b"))),
            ("/api/calls/1", None),
            ("/api/calls/1/2/3", None),
            ("/api/calls//2", None),
            ("/calls/1/2", None),
            ("/api/call/1", None),
        ];
        for (path, want) in cases {
            assert_eq!(calls_path(path), want, "{path}");
        }
    }

    #[test]
    fn accept_picks_format() {
        let cases = [
            (None, false),
            (Some("application/json"), false),
            (Some("application/xml"), true),
            (Some("text/xml"), true),
            (Some("application/xml, application/json"), true),
            (Some("application/json, application/xml"), false),
            (Some("*/*"), false),
            (Some("text/html"), false),
        ];
        for (accept, want) in cases {
            let mut headers = HeaderMap::new();
            if let Some(a) = accept {
                headers.insert(ACCEPT, HeaderValue::from_static(a));
            }
            assert_eq!(wants_xml(&headers), want, "{accept:?}");
        }
    }

    #[test]
    fn params_parse_and_reject() {
        let ok =
            parse_params("10", "20", Some("number=8005551234&limit=50&offset=7&extra=1")).expect("valid");
        assert_eq!(
            (ok.start, ok.end, ok.number.as_deref(), ok.limit, ok.offset),
            (10, 20, Some("8005551234"), 50, 7)
        );
        let defaults = parse_params("10", "20", None).expect("valid");
        assert_eq!((defaults.number, defaults.limit, defaults.offset), (None, 1_000, 0));
        let empty_number = parse_params("10", "20", Some("number=")).expect("valid");
        assert_eq!(empty_number.number, None);
        let bad = [
            ("x", "20", None, "start must be"),
            ("10", "2.5", None, "end must be"),
            ("10", "20", Some("limit=0"), "limit must be"),
            ("10", "20", Some("limit=10001"), "limit must be"),
            ("10", "20", Some("limit=ten"), "limit must be"),
            ("10", "20", Some("offset=-1"), "offset must be"),
        ];
        for (start, end, query, needle) in bad {
            let Err(message) = parse_params(start, end, query) else {
                panic!("{start} {end} {query:?} should fail");
            };
            assert!(message.contains(needle), "{message}");
        }
    }
}
