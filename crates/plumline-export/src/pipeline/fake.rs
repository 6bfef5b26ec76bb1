//! A fake API for the read's tests: a truth that can move between
//! requests, served with the misbehaviours real servers of this family
//! show (window slack, a lagging total, reordered ties, a capped or
//! ignored `limit`, errors).

use std::collections::VecDeque;
use std::hash::{BuildHasher as _, BuildHasherDefault, DefaultHasher};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use plumline_api::{ApiError, Call, CallPage, CallType, PageRequest, PageSource};

/// A change to the truth.
#[derive(Debug, Clone)]
pub(super) enum Change {
    Insert(Call),
    Remove(String),
}

/// The fake. Requests are numbered from 0 in the order they arrive.
#[derive(Debug, Default)]
pub(super) struct FakeSource {
    /// The calls listed now, ordered by start then session id.
    pub(super) truth: Mutex<Vec<Call>>,
    /// Changes applied just before the request of that number is answered.
    pub(super) changes: Mutex<VecDeque<(u64, Change)>>,
    /// Seconds each window is widened by on both sides.
    pub(super) slack: i64,
    /// The first `.0` requests report `total_calls` `.1` lower than listed.
    pub(super) lag: (u64, u64),
    /// Calls sharing a start are ordered afresh on every request.
    pub(super) shuffle_ties: bool,
    /// Never serve more than this many calls, whatever the limit.
    pub(super) cap: Option<usize>,
    /// Serve this many calls, whatever the limit.
    pub(super) ignore_limit: Option<usize>,
    /// Serve from offset 0, whatever the offset.
    pub(super) ignore_offset: bool,
    /// Requests whose window starts here fail (as a client does once its
    /// retries of a `200` carrying `error` ran out).
    pub(super) fail_window: Option<i64>,
    pub(super) delay: Duration,
    pub(super) requests: AtomicU64,
}

impl FakeSource {
    pub(super) fn new(mut calls: Vec<Call>) -> Self {
        sort(&mut calls);
        FakeSource { truth: Mutex::new(calls), ..FakeSource::default() }
    }

    /// The same fake, with `changes` before the given request numbers.
    pub(super) fn with_changes(self, changes: Vec<(u64, Change)>) -> Self {
        let mut changes: VecDeque<_> = changes.into();
        changes.make_contiguous().sort_by_key(|c| c.0);
        FakeSource { changes: Mutex::new(changes), ..self }
    }

    /// What the API lists once it stops moving.
    pub(super) fn truth(&self) -> Vec<Call> {
        self.truth.lock().expect("lock").clone()
    }

    /// Changes not applied yet (a test that expects its changes to happen
    /// checks this is 0).
    pub(super) fn pending(&self) -> usize {
        self.changes.lock().expect("lock").len()
    }

    pub(super) fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
}

fn sort(calls: &mut [Call]) {
    calls.sort_by(|a, b| (a.start, &a.session_id).cmp(&(b.start, &b.session_id)));
}

impl PageSource for FakeSource {
    async fn fetch_page(&self, request: &PageRequest) -> Result<CallPage, ApiError> {
        let n = self.requests.fetch_add(1, Ordering::SeqCst);
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let q = request.query();
        if self.fail_window == Some(q.start()) {
            return Err(ApiError::RetriesExhausted {
                attempts: 4,
                elapsed: Duration::ZERO,
                last: Box::new(ApiError::Server { status: 200, message: Some("database error".into()) }),
            });
        }
        let mut truth = self.truth.lock().expect("lock");
        {
            let mut changes = self.changes.lock().expect("lock");
            while changes.front().is_some_and(|c| c.0 <= n) {
                match changes.pop_front().map(|c| c.1) {
                    Some(Change::Insert(call)) => truth.push(call),
                    Some(Change::Remove(id)) => truth.retain(|c| c.session_id != id),
                    None => {}
                }
            }
            sort(&mut truth);
        }
        let (from, to) = (q.start() - self.slack, q.end() + self.slack);
        let mut window: Vec<&Call> = truth.iter().filter(|c| (from..=to).contains(&c.start)).collect();
        if self.shuffle_ties {
            let order = BuildHasherDefault::<DefaultHasher>::default();
            window.sort_by_key(|c| (c.start, order.hash_one((&c.session_id, n))));
        }
        let offset = if self.ignore_offset { 0 } else { usize::try_from(request.offset()).expect("offset") };
        let size = self.ignore_limit.unwrap_or(request.limit() as usize).min(self.cap.unwrap_or(usize::MAX));
        let calls: Vec<Call> = window.iter().skip(offset).take(size).map(|c| (*c).clone()).collect();
        let lag = if n < self.lag.0 { self.lag.1 } else { 0 };
        Ok(CallPage { calls, total_calls: (window.len() as u64).saturating_sub(lag) })
    }
}

/// A call with an id and a start.
pub(super) fn call(id: &str, start: i64) -> Call {
    Call {
        dest: "8005550000".into(),
        src: "6175550100".into(),
        start,
        end: start + 30,
        session_id: id.into(),
        call_type: CallType::Inbound,
        log: false,
    }
}
