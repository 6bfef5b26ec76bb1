//! A Prometheus exporter for Plum Fuse call logs: call counts and
//! durations per deployment number, served at `/metrics`.
//!
//! Calls are events, so the exporter does not query the API per scrape. A
//! [`Poller`] runs in the background (as log-tailing exporters do): it first
//! backfills the current UTC day, then every interval, for each polled
//! number (a few at a time), it finds what the API lists that it does not
//! hold yet, and counts each completed call exactly once into the
//! [`Metrics`] registry. A [`MetricsServer`] renders that registry for each
//! scrape and never waits on the API.
//!
//! ```text
//! API ──counts, pages──▶ Poller ──(dedupe: SeenCalls)──▶ Metrics registry ◀──GET /metrics── Prometheus
//! ```
//!
//! # What the values are
//!
//! The call families count the calls that ended since 00:00 UTC of the
//! current day (the anchor), as the API lists them, and reset at each UTC
//! midnight: a function of the API's data, not of the exporter's history.
//! On start the poller backfills from the anchor; until that is done the
//! call families are not rendered at all (partial values would read as a
//! counter reset) and `plum_fuse_up` is 0. A restarted exporter therefore
//! continues where it left off, and replicas agree within one poll
//! interval. See [`Poller`] for calls that end just before midnight.
//!
//! # The "no calls" alert
//!
//! Per number, `plum_fuse_last_call_end_timestamp_seconds` is the end of the
//! latest-ending call counted since the anchor, or the anchor itself when
//! none was counted yet (so right after midnight it is at least that
//! midnight), and `plum_fuse_no_calls_alert_after_seconds` is the quiet
//! window configured for the number ([`NoCallsAlertConfig`]: a default and
//! per-number overrides). One rule compares the two
//! (`time() - last > window`), so the window is data: `PromQL` cannot vary
//! a range selector per series. Both are published with the call families,
//! once the backfill is done, for every number with a call series (in
//! whole-account mode, as calls come) and every number named by an
//! override.
//!
//! # Counting each call once, cheaply
//!
//! The API lists a call only once it has ended but indexes it by its start,
//! so each poll looks back `max_call_duration` (`--max-call-duration`,
//! [`plumline_api::LONGEST_CALL`] by default) before the previous poll;
//! longer calls are missed. A per-number [`SeenCalls`] set of `session_id`s
//! holds every call listed in that reach-back, so overlapping windows count
//! each call once, and says how many calls of any window the poller already
//! holds: a `limit=1` request answering the same `total_calls` means nothing
//! new there. Once the answers have shown the API's listing order, a poll
//! places its requests by position: each request's `total_calls` and the
//! rank of the call it returns cut the reach-back twice, and a stretch
//! that holds a new call among few held ones is fetched by position. With
//! no order known (or when the listing moves too fast under a poll) it
//! counts time windows and bisects where a count grew. Either way, a few
//! requests and roughly the new calls' bytes, not the reach-back
//! (`benches/bin/poll_cost.rs` measures it).
//!
//! # Labels
//!
//! `plum_fuse_calls_total` and `plum_fuse_call_duration_seconds` carry
//! `number` and `direction` (the call's `type`: `inbound`, `outbound`,
//! `transfer` or whatever the API sent); the two "no calls" gauges carry
//! `number` only.
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
//! counting anything twice. A failed backfill window is fetched again, and
//! counts only once it is whole. Bad credentials on the very first request
//! stop the exporter with [`MetricsError::Unauthorized`]; later they only
//! show in the metrics (`outcome="unauthorized"`).
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
pub use metrics::{
    CALL_DURATION_BUCKETS, CONTENT_TYPE, CallSeries, DETECTION_LAG_BUCKETS, LATENCY_BUCKETS, Metrics,
    NumberSeries,
};
use plumline_api::PageSource;
pub use poller::{
    Clock, DEFAULT_NO_CALLS_ALERT_AFTER, NoCallsAlertConfig, PollReport, Poller, PollerConfig, TargetError,
    UNATTRIBUTED_NUMBER, attributed_number,
};
pub use tls::TlsConfig;

/// Runs the exporter: serves `server` and polls with `poller` until
/// `shutdown` completes, then stops both gracefully.
///
/// The server starts before the backfill, so scrapes work (showing
/// `plum_fuse_up 0` and no call families) while the day so far is paged
/// through.
///
/// # Errors
/// [`MetricsError::Unauthorized`] if the first requests are refused for bad
/// credentials (the server is stopped first); [`MetricsError::Serve`] if
/// the server task fails.
///
/// # Cancel safety
/// Prefer `shutdown`. Dropping the future stops polling at once (nothing is
/// counted twice later) and drops the server's stop signal, so the server
/// task stops in the background: it stops accepting and gives connections
/// in flight up to 5 s, as on `shutdown`.
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
