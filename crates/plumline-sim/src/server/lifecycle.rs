//! [`SimServer`]'s lifecycle: binding, the accept loop and its
//! connections, the knobs set while serving, shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, info, warn};

use super::faults::SimStream;
use super::handler::handle;
use super::stats::SimStats;
use super::{BASE_PATH, Shared};
use crate::behaviour::{BehaviourStats, Behaviours};
use crate::config::{Fault, Faults, SimConfig};
use crate::dataset::Simulator;
use crate::error::SimError;

/// How long shutdown waits for in-flight requests before dropping them.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

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
    pub(crate) fn from_listener(config: SimConfig, listener: TcpListener) -> Result<Self, SimError> {
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
    let io = TokioIo::new(SimStream::new(stream, Arc::clone(&abort)));
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
