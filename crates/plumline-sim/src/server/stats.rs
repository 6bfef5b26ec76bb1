//! [`SimStats`]: counters of what a server answered, and of what its
//! behaviours did.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::behaviour::BehaviourStats;

/// Counters of what a server answered, read with
/// [`SimServer::stats`](crate::SimServer::stats).
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
pub(super) struct Counters {
    pub(super) requests: AtomicU64,
    pub(super) ok: AtomicU64,
    pub(super) unauthorized: AtomicU64,
    pub(super) server_error: AtomicU64,
    pub(super) rate_limited: AtomicU64,
    pub(super) reset: AtomicU64,
    pub(super) truncated: AtomicU64,
    pub(super) bad_request: AtomicU64,
    pub(super) method_not_allowed: AtomicU64,
    pub(super) not_found: AtomicU64,
    pub(super) calls_served: AtomicU64,
    pub(super) bytes_served: AtomicU64,
}

pub(super) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    pub(super) fn snapshot(&self) -> SimStats {
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

#[derive(Debug, Default)]
pub(super) struct BehaviourCounters {
    pub(super) errors_in_200: AtomicU64,
    pub(super) mutations: AtomicU64,
    pub(super) lagged_totals: AtomicU64,
    pub(super) shuffled_pages: AtomicU64,
    pub(super) slack_calls: AtomicU64,
}

impl BehaviourCounters {
    pub(super) fn snapshot(&self) -> BehaviourStats {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_read_each_counter_into_its_own_field() {
        let counters = Counters::default();
        bump(&counters.requests);
        bump(&counters.requests);
        bump(&counters.truncated);
        counters.calls_served.fetch_add(7, Ordering::Relaxed);
        let want = SimStats { requests: 2, truncated: 1, calls_served: 7, ..SimStats::default() };
        assert_eq!(counters.snapshot(), want);

        let behaviours = BehaviourCounters::default();
        bump(&behaviours.mutations);
        behaviours.slack_calls.fetch_add(3, Ordering::Relaxed);
        let want = BehaviourStats { mutations: 1, slack_calls: 3, ..BehaviourStats::default() };
        assert_eq!(behaviours.snapshot(), want);
    }
}
