//! [`SimServer`]: the HTTP face of a [`Simulator`], with fault injection.

use std::collections::{HashMap, VecDeque};
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

use crate::behaviour::{BehaviourStats, Behaviours, Region};
use crate::config::{Fault, Faults, SimConfig};
use crate::dataset::Simulator;
use crate::error::SimError;
use crate::render;
use crate::rng::{Rng, hash_str, mix64};

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
        }
    }
}

#[derive(Debug)]
struct FaultState {
    faults: Faults,
    script: VecDeque<Fault>,
    rng: Rng,
}

/// A query window as the server counts requests: `(start, end, number)`.
type WindowKey = (i64, i64, Option<String>);

#[derive(Debug, Default)]
struct BehaviourCounters {
    errors_in_200: AtomicU64,
    mutations: AtomicU64,
    lagged_totals: AtomicU64,
    shuffled_pages: AtomicU64,
    slack_calls: AtomicU64,
}

impl BehaviourCounters {
    fn snapshot(&self) -> BehaviourStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        BehaviourStats {
            errors_in_200: get(&self.errors_in_200),
            mutations: get(&self.mutations),
            lagged_totals: get(&self.lagged_totals),
            shuffled_pages: get(&self.shuffled_pages),
            slack_calls: get(&self.slack_calls),
        }
    }
}

#[derive(Debug)]
struct Shared {
    sim: Simulator,
    faults: Mutex<FaultState>,
    stats: Counters,
    behaviours: Mutex<Arc<Behaviours>>,
    /// Page requests per window, since the behaviours were last set.
    windows: Mutex<HashMap<WindowKey, u64>>,
    /// Page requests ever answered, for per-request seeds.
    serial: AtomicU64,
    behaviour_stats: BehaviourCounters,
}

impl Shared {
    fn new(config: SimConfig) -> Result<Self, SimError> {
        let faults = config.faults.clone();
        // Seeded, so a sequential client meets the same faults on every run.
        let rng = Rng::new(mix64(config.seed ^ 0xFA_017));
        let behaviours = Arc::new(config.behaviours.clone());
        let sim = Simulator::new(config)?;
        Ok(Shared {
            sim,
            faults: Mutex::new(FaultState { faults, script: VecDeque::new(), rng }),
            stats: Counters::default(),
            behaviours: Mutex::new(behaviours),
            windows: Mutex::new(HashMap::new()),
            serial: AtomicU64::new(0),
            behaviour_stats: BehaviourCounters::default(),
        })
    }

    fn behaviours(&self) -> Arc<Behaviours> {
        Arc::clone(&self.behaviours.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn windows(&self) -> std::sync::MutexGuard<'_, HashMap<WindowKey, u64>> {
        self.windows.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a page request of `params`' window; returns its number (1-based).
    fn count_window(&self, params: &Params) -> u64 {
        let mut windows = self.windows();
        let n = windows.entry((params.start, params.end, params.number.clone())).or_insert(0);
        *n += 1;
        *n
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

    /// Replaces the behaviours in force and restarts every window's request
    /// count, so "the first N requests" count from here. Mutations already
    /// applied stay (they are the data now).
    ///
    /// # Errors
    /// [`SimError::InvalidConfig`] when they do not validate; the old ones then stay.
    pub fn set_behaviours(&self, behaviours: Behaviours) -> Result<(), SimError> {
        behaviours.validate()?;
        *self.shared.behaviours.lock().unwrap_or_else(PoisonError::into_inner) = Arc::new(behaviours);
        self.shared.windows().clear();
        Ok(())
    }

    /// The behaviours in force.
    #[must_use]
    pub fn behaviours(&self) -> Behaviours {
        (*self.shared.behaviours()).clone()
    }

    /// What the behaviours have done so far.
    #[must_use]
    pub fn behaviour_stats(&self) -> BehaviourStats {
        self.shared.behaviour_stats.snapshot()
    }

    /// Page requests of the window `[start, end]` (exactly as in the path)
    /// for `number` (`None`: unfiltered) that reached the data, whatever
    /// they were answered (a page, an error inside a 200, a cut-short
    /// body), since the behaviours were last set.
    #[must_use]
    pub fn window_requests(&self, start: i64, end: i64, number: Option<&str>) -> u64 {
        let key = (start, end, number.filter(|n| !n.is_empty()).map(str::to_owned));
        self.shared.windows().get(&key).copied().unwrap_or(0)
    }

    /// Page requests of every window that reached the data, since the
    /// behaviours were last set: compare with the minimum a client needs
    /// (`ceil(total / page)` per window).
    #[must_use]
    pub fn page_requests(&self) -> u64 {
        self.shared.windows().values().sum()
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

/// A 200 with the page `params` ask for (as the behaviours in force shape
/// it), cut short when `fault` says so; then the moving source's step, if due.
fn page_response(shared: &Shared, params: &Params, format: WireFormat, fault: Fault) -> Response<SimBody> {
    let stats = &shared.stats;
    let behaviours = shared.behaviours();
    let nth = shared.count_window(params);
    let serial = shared.serial.fetch_add(1, Ordering::Relaxed);
    if let Some(error) = &behaviours.error_in_200
        && error.windows.matches(params.start, params.end)
        && error.persistence.applies(nth)
    {
        bump(&shared.behaviour_stats.errors_in_200);
        debug!(start = params.start, end = params.end, nth, message = %error.message, "error inside a 200");
        let body = match format {
            WireFormat::Json => render::json_error_page(&error.message),
            WireFormat::Xml => render::xml_error_page(&error.message),
        };
        let mut response = Response::new(SimBody::Full(Some(Bytes::from(body))));
        response.headers_mut().insert(CONTENT_TYPE, content_type(format));
        return response;
    }
    let resolved = resolve_page(shared, &behaviours, params, nth, serial);
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
        nth,
        fault = %fault,
        "page"
    );
    drop(resolved);
    move_source(shared, &behaviours, params, nth, n_calls);
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
        Response::new(SimBody::Full(Some(Bytes::from(body))))
    };
    response.headers_mut().insert(CONTENT_TYPE, content_type(format));
    response
}

/// The calls of one page and the total to report, under the behaviours.
fn resolve_page(
    shared: &Shared,
    behaviours: &Behaviours,
    params: &Params,
    nth: u64,
    serial: u64,
) -> crate::dataset::Resolved {
    let sim = &shared.sim;
    let number = params.number.as_deref();
    let slack = behaviours.slack_secs;
    let (start, end) = (params.start.saturating_sub(slack), params.end.saturating_add(slack));
    let limit = if behaviours.ignore_limit {
        usize::MAX
    } else {
        behaviours
            .page_cap
            .and_then(|cap| usize::try_from(cap).ok())
            .map_or(params.limit, |cap| params.limit.min(cap))
    };
    // Pages cost O(days + log n + limit); a day is generated at most once
    // while cached, so this stays short enough to run on the async worker.
    // Shuffled ties need the whole listing: a tie may straddle the page.
    let mut resolved = if behaviours.shuffle_ties {
        let mut all = sim.resolve(start, end, number, usize::MAX, 0);
        let mut rng = Rng::new(mix64(sim.config().seed ^ mix64(serial ^ 0x5_4FF1E)));
        shuffle_ties(&mut all, &mut rng);
        let from = usize::try_from(params.offset).unwrap_or(usize::MAX).min(all.items.len());
        let to = from.saturating_add(limit).min(all.items.len());
        all.items.truncate(to);
        all.items.drain(..from);
        bump(&shared.behaviour_stats.shuffled_pages);
        all
    } else {
        sim.resolve(start, end, number, limit, params.offset)
    };
    if slack > 0 {
        let outside =
            resolved.iter().filter(|(day, rec)| !(params.start..=params.end).contains(&day.start(*rec)));
        shared.behaviour_stats.slack_calls.fetch_add(outside.count() as u64, Ordering::Relaxed);
    }
    if let Some(lagging) = &behaviours.lagging_total
        && lagging.windows.matches(params.start, params.end)
        && nth <= lagging.first_requests
    {
        resolved.total = resolved.total.saturating_sub(lagging.lag);
        bump(&shared.behaviour_stats.lagged_totals);
    }
    resolved
}

/// Permutes every run of equal starts in the listing.
fn shuffle_ties(listing: &mut crate::dataset::Resolved, rng: &mut Rng) {
    let starts: Vec<i64> = listing.iter().map(|(day, rec)| day.start(rec)).collect();
    let mut run = 0;
    while run < starts.len() {
        let len = starts[run..].iter().take_while(|&&s| s == starts[run]).count();
        for i in (1..len).rev() {
            let j = usize::try_from(rng.below(i as u64 + 1)).unwrap_or(0);
            listing.items.swap(run + i, run + j);
        }
        run += len;
    }
}

/// The moving source's step after the `nth` request of a window, if due.
fn move_source(shared: &Shared, behaviours: &Behaviours, params: &Params, nth: u64, n_served: usize) {
    let Some(moving) = &behaviours.moving else { return };
    if !moving.windows.matches(params.start, params.end) || !moving.after_requests.contains(&nth) {
        return;
    }
    let region_end = match moving.region {
        Region::Paged => Some(params.offset.saturating_add(n_served as u64)),
        Region::Anywhere => None,
    };
    let window_bits = mix64(params.start.unsigned_abs() ^ mix64(params.end.unsigned_abs()))
        ^ params.number.as_deref().map_or(0, hash_str);
    let mut rng = Rng::new(mix64(shared.sim.config().seed ^ window_bits ^ mix64(nth ^ 0x30_71E5)));
    for _ in 0..moving.per_step {
        let number = params.number.as_deref();
        if shared.sim.mutate(params.start, params.end, number, region_end, moving.mutation, &mut rng) {
            bump(&shared.behaviour_stats.mutations);
        }
    }
    debug!(start = params.start, end = params.end, nth, mutation = ?moving.mutation, "moved the source");
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
