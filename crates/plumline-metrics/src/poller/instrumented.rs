//! [`Instrumented`]: the page source the poller sends every request
//! through, counting and timing them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use plumline_api::{ApiError, CallPage, PageRequest, PageSource};

use crate::metrics::Metrics;

/// A [`PageSource`] that records each request's outcome and latency.
pub(super) struct Instrumented<'a, S> {
    pub(super) inner: &'a S,
    pub(super) metrics: &'a Metrics,
    pub(super) requests: &'a AtomicU64,
}

impl<S: PageSource> PageSource for Instrumented<'_, S> {
    async fn fetch_page(&self, request: &PageRequest) -> Result<CallPage, ApiError> {
        let started = Instant::now();
        self.requests.fetch_add(1, Ordering::Relaxed);
        let result = self.inner.fetch_page(request).await;
        let outcome = match &result {
            Ok(_) => "success",
            Err(e) => e.kind(),
        };
        self.metrics.record_api_request(outcome, started.elapsed().as_secs_f64());
        result
    }
}
