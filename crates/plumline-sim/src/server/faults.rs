//! What a server applies per request on top of the data: the injected
//! HTTP faults ([`Fault`]: latency, 500, 429, resets, truncated bodies)
//! and the [`Behaviours`] that shape a 200 (an `error` inside it, window
//! slack, a capped or ignored `limit`, shuffled ties, a lagging total, a
//! moving source).

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Response, StatusCode};
use hyper::body::{Body, Frame, SizeHint};
use plumline_api::WireFormat;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tracing::debug;

use super::Shared;
use super::handler::{Params, content_type, error_response};
use super::stats::bump;
use crate::behaviour::{Behaviours, Region};
use crate::config::{Fault, Faults};
use crate::dataset::Resolved;
use crate::render;
use crate::rng::{Rng, hash_str, mix64};

/// The random faults in force, and the script that takes precedence.
#[derive(Debug)]
pub(super) struct FaultState {
    pub(super) faults: Faults,
    pub(super) script: VecDeque<Fault>,
    rng: Rng,
}

impl FaultState {
    pub(super) fn new(faults: Faults, rng: Rng) -> Self {
        FaultState { faults, script: VecDeque::new(), rng }
    }
}

impl Shared {
    pub(super) fn fault_state(&self) -> MutexGuard<'_, FaultState> {
        self.faults.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The fault for the next calls request, and the latency to add.
    pub(super) fn next_fault(&self) -> (Fault, Duration) {
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

/// The answer an injected `fault` gives instead of a page, if any: `None`
/// lets the request go on ([`Fault::Truncated`] cuts its page short later).
/// A reset marks the connection for `abort` (see [`SimStream`]).
pub(super) fn injected_answer(
    fault: Fault,
    shared: &Shared,
    abort: &AtomicBool,
    format: WireFormat,
) -> Option<Result<Response<SimBody>, DropConnection>> {
    let stats = &shared.stats;
    match fault {
        Fault::Reset => {
            bump(&stats.reset);
            abort.store(true, Ordering::Release);
            debug!(fault = %fault, "dropping the connection");
            Some(Err(DropConnection))
        }
        Fault::ServerError => {
            bump(&stats.server_error);
            debug!(fault = %fault, status = 500, "injected fault");
            Some(Ok(error_response(StatusCode::INTERNAL_SERVER_ERROR, format, "database error")))
        }
        Fault::RateLimited => {
            bump(&stats.rate_limited);
            debug!(fault = %fault, status = 429, "injected fault");
            let mut response = error_response(StatusCode::TOO_MANY_REQUESTS, format, "too many requests");
            response.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static("1"));
            Some(Ok(response))
        }
        Fault::Pass | Fault::Truncated => None,
    }
}

/// A 200 whose body is cut in half, declaring the whole length so the
/// client knows it got less.
pub(super) fn truncated_response(body: Vec<u8>) -> Response<SimBody> {
    let full = body.len();
    let mut body = Bytes::from(body);
    body.truncate(full / 2);
    let mut response = Response::new(SimBody::Truncated { part: Some(body), stalled: false });
    response.headers_mut().insert(CONTENT_LENGTH, HeaderValue::from(full));
    response
}

/// The 200 carrying an `error` that the behaviours answer for the `nth`
/// request of `params`' window, if they do.
pub(super) fn error_in_200(
    shared: &Shared,
    behaviours: &Behaviours,
    params: &Params,
    nth: u64,
    format: WireFormat,
) -> Option<Response<SimBody>> {
    let error = behaviours.error_in_200.as_ref()?;
    if !(error.windows.matches(params.start, params.end) && error.persistence.applies(nth)) {
        return None;
    }
    bump(&shared.behaviour_stats.errors_in_200);
    debug!(start = params.start, end = params.end, nth, message = %error.message, "error inside a 200");
    let body = match format {
        WireFormat::Json => render::json_error_page(&error.message),
        WireFormat::Xml => render::xml_error_page(&error.message),
    };
    let mut response = Response::new(SimBody::Full(Some(Bytes::from(body))));
    response.headers_mut().insert(CONTENT_TYPE, content_type(format));
    Some(response)
}

/// The calls of one page and the total to report, under the behaviours.
pub(super) fn resolve_page(
    shared: &Shared,
    behaviours: &Behaviours,
    params: &Params,
    nth: u64,
    serial: u64,
) -> Resolved {
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
fn shuffle_ties(listing: &mut Resolved, rng: &mut Rng) {
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
pub(super) fn move_source(
    shared: &Shared,
    behaviours: &Behaviours,
    params: &Params,
    nth: u64,
    n_served: usize,
) {
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

/// The error a handler returns to make hyper drop the connection unanswered.
#[derive(Debug)]
pub(super) struct DropConnection;

impl std::fmt::Display for DropConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("injected connection reset")
    }
}

impl std::error::Error for DropConnection {}

/// A response body: whole, or cut short with an error so hyper closes the
/// connection after sending part of it.
#[derive(Debug)]
pub(super) enum SimBody {
    Full(Option<Bytes>),
    Truncated { part: Option<Bytes>, stalled: bool },
}

/// The body error that ends a truncated response.
#[derive(Debug)]
pub(super) struct TruncatedBody;

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
pub(super) struct SimStream {
    inner: TcpStream,
    abort: Arc<AtomicBool>,
}

impl SimStream {
    /// `inner`, reset on close once `abort` is set.
    pub(super) fn new(inner: TcpStream, abort: Arc<AtomicBool>) -> Self {
        SimStream { inner, abort }
    }
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
    use crate::config::SimConfig;

    #[test]
    fn the_script_comes_before_the_rates() {
        let config = SimConfig::default().with_faults(Faults::none().with_server_errors(1.0));
        let shared = Shared::new(config).expect("valid config");
        shared.fault_state().script.extend([Fault::Reset, Fault::Truncated]);
        let faults: Vec<Fault> = (0..3).map(|_| shared.next_fault().0).collect();
        assert_eq!(faults, [Fault::Reset, Fault::Truncated, Fault::ServerError]);
    }

    #[test]
    fn a_truncated_body_sends_half_then_fails() {
        let response = truncated_response(b"0123456789".to_vec());
        assert_eq!(response.headers()[CONTENT_LENGTH], "10", "the whole length is declared");
        let mut body = response.into_body();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut poll = || Pin::new(&mut body).poll_frame(&mut cx);
        let Poll::Ready(Some(Ok(frame))) = poll() else { panic!("the first half comes first") };
        assert_eq!(frame.into_data().ok().as_deref(), Some(&b"01234"[..]));
        assert!(poll().is_pending(), "a yield lets hyper flush the part");
        assert!(matches!(poll(), Poll::Ready(Some(Err(TruncatedBody)))));
    }
}
