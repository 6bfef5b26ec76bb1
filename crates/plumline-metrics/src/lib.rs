//! A Prometheus exporter for Plum Fuse call logs: call counts and
//! durations per deployment number, served at `/metrics`.
//!
//! Calls are events, so the exporter does not query the API per scrape. A
//! [`Poller`] runs in the background (as log-tailing exporters do): every
//! interval, for each polled number (a few at a time), it queries the
//! window from its last watermark minus an overlap up to now, pages through
//! it, and counts each completed call exactly once into the [`Metrics`]
//! registry. A [`MetricsServer`] renders that registry for each scrape and
//! never waits on the API.
//!
//! ```text
//! API ──pages──▶ Poller ──(dedupe: SeenCalls)──▶ Metrics registry ◀──GET /metrics── Prometheus
//! ```
//!
//! # Counting each call once
//!
//! The API lists a call only once it has ended but indexes it by its start,
//! so a call that starts before one poll and ends after it shows up in a
//! later window only if that window reaches back to its start. Each window
//! therefore begins `max_call_duration` (`--max-call-duration`, 4 h by
//! default) before the previous window's end. Calls longer than that are
//! missed. Overlapping windows return the same calls again; a per-number
//! [`SeenCalls`] set of `session_id`s, evicted once no later window can
//! reach a call's start, counts each only once. A poll costs the calls of
//! one interval plus the overlap, not the history.
//!
//! `lookback` (`--lookback`, 1 h by default) is how far back the first poll
//! counts: calls that ended before `start - lookback` are not counted, so
//! a restarted exporter does not start from zero but does not replay days.
//!
//! # Labels
//!
//! `plum_fuse_calls_total` and `plum_fuse_call_duration_seconds` carry
//! `number` and `direction` (the call's `type`: `inbound`, `outbound`,
//! `transfer` or whatever the API sent).
//!
//! - With numbers to poll (`--number`, repeatable), each is queried on its
//!   own and `number` is the number queried.
//! - Without, one unfiltered query covers the account, and `number` is the
//!   deployment number the call belongs to where the record says so: the
//!   `dest` of an inbound call. Outbound calls have `src` = `Outbound` and
//!   the callee as `dest`, and transfers name outside parties too, so they
//!   get `number="unknown"` ([`UNATTRIBUTED_NUMBER`]) rather than one series
//!   per outside phone number. Pass `--number` to attribute them.
//!
//! The figures lag by up to one poll interval; the HELP texts say so.
//!
//! # Faults
//!
//! A failed poll (after the API client's own retries) sets `plum_fuse_up`
//! to 0, counts the failure in `plum_fuse_exporter_api_requests_total` by
//! outcome, keeps serving the last counts and polls again with growing
//! waits; the failed window is covered again by the next poll without
//! counting anything twice. Bad credentials on the very first poll stop
//! the exporter with [`MetricsError::Unauthorized`]; later they only show
//! in the metrics (`outcome="unauthorized"`).
//!
//! # Security
//!
//! The server listens only where told; the developer key never reaches a
//! metric or a log line. Two optional layers follow Prometheus'
//! exporter-toolkit web config:
//!
//! - TLS ([`TlsConfig`], given to [`MetricsServer::with_tls`]): a PEM
//!   certificate chain and key, read once at startup. The listener then
//!   speaks HTTPS only (TLS 1.2 and 1.3, rustls on the aws-lc-rs provider
//!   the API client already uses), `/healthz` included. A client that fails
//!   the handshake loses its own connection, never the server.
//! - HTTP Basic auth ([`BasicAuth`]) guards `/metrics` and `/`, over TLS or
//!   not; `/healthz` stays open for liveness probes.
//!
//! Without TLS, keep the exporter on loopback next to Prometheus or put a
//! TLS-terminating proxy in front.
//!
//! # Compression
//!
//! `/metrics` is gzipped (fastest level) when the request's
//! `Accept-Encoding` names gzip, as Prometheus' scrapes do: a scrape of
//! thousands of series shrinks about tenfold. Other clients get plain text.
//!
//! This is the only crate that knows Prometheus.

mod calls;
mod dedupe;
mod error;
mod http;
mod metrics;
mod poller;
mod search;
mod tls;

use std::future::Future;

pub use dedupe::{Insert, SeenCalls};
pub use error::MetricsError;
pub use http::{BasicAuth, MetricsServer, respond};
pub use metrics::{CALL_DURATION_BUCKETS, CONTENT_TYPE, CallSeries, LATENCY_BUCKETS, Metrics};
use plumline_api::PageSource;
pub use poller::{
    Clock, MAX_FAILURE_BACKOFF, PollReport, Poller, PollerConfig, SystemClock, TargetError,
    UNATTRIBUTED_NUMBER, attributed_number, next_delay,
};
pub use tls::TlsConfig;

/// Runs the exporter: serves `server` and polls with `poller` until
/// `shutdown` completes, then stops both gracefully.
///
/// The server starts before the first poll, so scrapes work (showing
/// `plum_fuse_up 0`) while a long first window is paged through.
///
/// # Errors
/// [`MetricsError::Unauthorized`] if the first poll is refused for bad
/// credentials (the server is stopped first); [`MetricsError::Serve`] if
/// the server task fails.
///
/// # Cancel safety
/// Prefer `shutdown`. Dropping the future stops polling at once (nothing is
/// counted twice later) but leaves the server task to end when the runtime
/// does.
pub async fn run_exporter<S: PageSource>(
    poller: Poller<S>,
    server: MetricsServer,
    shutdown: impl Future<Output = ()>,
) -> Result<(), MetricsError> {
    let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
    // A dropped sender also stops the server, so every exit path below does.
    let mut server_task = tokio::spawn(server.serve(async move {
        let _ = server_stopped.await;
    }));
    let result = tokio::select! {
        result = poller.run(shutdown) => result,
        joined = &mut server_task => {
            return match joined {
                Ok(Ok(())) => Err(MetricsError::Serve(std::io::Error::other("the metrics server stopped unexpectedly"))),
                Ok(Err(error)) => Err(error),
                Err(join) => Err(MetricsError::Serve(std::io::Error::other(join))),
            };
        }
    };
    let _ = stop_server.send(());
    match server_task.await {
        Ok(outcome) => outcome?,
        Err(join) => return Err(MetricsError::Serve(std::io::Error::other(join))),
    }
    result
}
