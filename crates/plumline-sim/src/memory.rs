//! [`MemorySource`]: a [`PageSource`] answered from memory, without HTTP,
//! with the misbehaviours of real servers as knobs and counters of what
//! it was asked.
//!
//! For unit tests of code that pages through the API (the export's read,
//! its verifier): the answers are exact, immediate and deterministic, and
//! what a test asserts (requests made, requests in flight at once, what is
//! listed in the end) is read from the source itself.

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::hash::{BuildHasher as _, BuildHasherDefault, DefaultHasher};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use plumline_api::{ApiError, Call, CallPage, PageRequest, PageSource};

use crate::dataset::Simulator;

/// A change to what a [`MemorySource`] lists, applied just before the
/// request of a given number is answered (see [`MemorySource::with_changes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Change {
    /// List this call too (for every number, on a source built from a
    /// [`Simulator`]).
    Insert(Call),
    /// Stop listing every call with this session id.
    Remove(String),
}

/// Decides whether a request fails, and how: see [`MemorySource::with_failure`].
type Failure = Box<dyn Fn(&PageRequest) -> Option<ApiError> + Send + Sync>;

/// A [`PageSource`] answered from memory: a list of calls, or a
/// [`Simulator`]'s data, optionally moving between requests and served
/// with the misbehaviours real servers of this family show.
///
/// Requests are numbered from 0 in the order they arrive; the knobs that
/// depend on "the first N requests" and the [`Change`]s count in those
/// numbers. One request goes: counted (and in flight), the delay, the
/// failure check, recorded as answered, the changes due, then the answer.
///
/// # Order
/// A source built from calls ([`MemorySource::new`]) lists them oldest
/// first, then by session id, and lists them for any `number` in the query
/// (calls do not say which deployment number they belong to). One built
/// from a [`Simulator`] ([`MemorySource::from_simulator`]) answers exactly
/// what [`Simulator::page`] does (newest first, filtered by number) until a
/// knob or a change says otherwise.
///
/// # Invariants
/// With no knob set and no change, the answer to a request is the exact
/// page of the listing at its offset and limit, and `total_calls` the
/// listing's length. [`MemorySource::truth`] is what is listed once every
/// change has been applied.
///
/// ## Memory Usage
/// The calls given (as `Call`s, about 150 bytes each with their strings),
/// the changes, every answered request (for [`MemorySource::answered`]), and
/// per request the window asked for when a knob or a
/// change needs it whole; a simulator's data is its own (see [`Simulator`]).
///
/// # Examples
/// ```
/// # async fn demo() -> Result<(), plumline_api::ApiError> {
/// use plumline_api::{CallQuery, PageSource as _};
/// use plumline_sim::memory::MemorySource;
/// use plumline_sim::{SimConfig, Simulator};
///
/// let sim = Simulator::new(SimConfig::default().with_calls_per_day(50.0)).expect("a valid config");
/// // A server that never answers more than 20 calls, whatever the limit.
/// let source = MemorySource::from_simulator(sim).with_page_cap(20);
/// let page = source.fetch_page(&CallQuery::new(1_735_689_600, 1_735_775_999)?.page(100, 0)?).await?;
/// assert_eq!((page.calls.len(), source.requests()), (20, 1));
/// # Ok(()) }
/// ```
pub struct MemorySource {
    data: Data,
    knobs: Knobs,
    state: Mutex<State>,
    requests: AtomicU64,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    /// Nanoseconds to wait before each answer (settable while in use).
    delay_nanos: AtomicU64,
    /// The requests answered, in order.
    answered: Mutex<Vec<PageRequest>>,
}

/// What is listed before any change.
enum Data {
    /// Sorted by start, then session id.
    Calls(Vec<Call>),
    Simulator(Simulator),
}

#[derive(Default)]
struct Knobs {
    slack_secs: i64,
    /// `(first_requests, by)`.
    total_skew: Option<(u64, i64)>,
    shuffle_ties: bool,
    page_cap: Option<usize>,
    serves: Option<usize>,
    ignore_offset: bool,
    overlap: bool,
    failure: Option<Failure>,
    /// Live: a call is listed once `end <= now`.
    clock: Option<Arc<AtomicI64>>,
    numbers: NumberMatch,
}

/// Which calls of a list-backed source a query for a number lists.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum NumberMatch {
    /// Every call (calls do not say their deployment number).
    #[default]
    Any,
    /// The calls whose `dest` is the number.
    Dest,
}

/// The changes applied so far, as an overlay over [`Data`], and those due.
#[derive(Debug, Clone, Default)]
struct State {
    inserted: Vec<Call>,
    /// Session ids no longer listed from the data (inserted calls are
    /// removed from `inserted` instead).
    removed: HashSet<String>,
    /// By request number, in order.
    pending: VecDeque<(u64, Change)>,
}

impl State {
    fn apply(&mut self, change: Change) {
        match change {
            Change::Insert(call) => self.inserted.push(call),
            Change::Remove(id) => {
                self.inserted.retain(|c| c.session_id != id);
                self.removed.insert(id);
            }
        }
    }

    /// Applies the changes due before request `n`.
    fn apply_due(&mut self, n: u64) {
        while self.pending.front().is_some_and(|c| c.0 <= n) {
            if let Some((_, change)) = self.pending.pop_front() {
                self.apply(change);
            }
        }
    }

    fn is_untouched(&self) -> bool {
        self.inserted.is_empty() && self.removed.is_empty()
    }
}

impl fmt::Debug for MemorySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let data = match &self.data {
            Data::Calls(calls) => format!("{} calls", calls.len()),
            Data::Simulator(sim) => format!("{sim:?}"),
        };
        f.debug_struct("MemorySource")
            .field("data", &data)
            .field("requests", &self.requests())
            .field("pending_changes", &self.pending_changes())
            .finish_non_exhaustive()
    }
}

impl MemorySource {
    /// A source listing `calls` (oldest first, then by session id), with
    /// no knob set.
    #[must_use]
    pub fn new(calls: impl IntoIterator<Item = Call>) -> Self {
        let mut calls: Vec<Call> = calls.into_iter().collect();
        sort_oldest_first(&mut calls);
        Self::with_data(Data::Calls(calls))
    }

    /// A source answering what `sim` answers ([`Simulator::page`]), with
    /// no knob set.
    #[must_use]
    pub fn from_simulator(sim: Simulator) -> Self {
        Self::with_data(Data::Simulator(sim))
    }

    fn with_data(data: Data) -> Self {
        MemorySource {
            data,
            knobs: Knobs::default(),
            state: Mutex::new(State::default()),
            requests: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            delay_nanos: AtomicU64::new(0),
            answered: Mutex::new(Vec::new()),
        }
    }

    /// The simulator answered from, if built from one.
    #[must_use]
    pub fn simulator(&self) -> Option<&Simulator> {
        match &self.data {
            Data::Simulator(sim) => Some(sim),
            Data::Calls(_) => None,
        }
    }

    /// Adds changes, each applied just before the request of its number
    /// (from 0) is answered, or before the first one after it when that
    /// request fails.
    #[must_use]
    pub fn with_changes(self, changes: impl IntoIterator<Item = (u64, Change)>) -> Self {
        {
            let mut state = self.state();
            state.pending.extend(changes);
            state.pending.make_contiguous().sort_by_key(|c| c.0);
        }
        self
    }

    /// Widens every window by `secs` on both sides, as servers that filter
    /// on another time zone or on the end of a call do.
    #[must_use]
    pub fn with_window_slack(mut self, secs: i64) -> Self {
        self.knobs.slack_secs = secs;
        self
    }

    /// The first `first_requests` requests (`u64::MAX`: all) report
    /// `total_calls` off by `by` from what is listed, never below 0:
    /// negative for a total that lags the listing, positive for one that
    /// runs ahead of it.
    #[must_use]
    pub fn with_skewed_total(mut self, first_requests: u64, by: i64) -> Self {
        self.knobs.total_skew = Some((first_requests, by));
        self
    }

    /// Orders calls that share a start afresh on every request.
    #[must_use]
    pub fn with_shuffled_ties(mut self) -> Self {
        self.knobs.shuffle_ties = true;
        self
    }

    /// Never answers more than `max` calls, whatever the limit.
    #[must_use]
    pub fn with_page_cap(mut self, max: usize) -> Self {
        self.knobs.page_cap = Some(max);
        self
    }

    /// Answers `serves` calls, whatever the limit (a page cap still applies).
    #[must_use]
    pub fn with_ignored_limit(mut self, serves: usize) -> Self {
        self.knobs.serves = Some(serves);
        self
    }

    /// Answers from offset 0, whatever the offset.
    #[must_use]
    pub fn with_ignored_offset(mut self) -> Self {
        self.knobs.ignore_offset = true;
        self
    }

    /// Every page after offset 0 also starts with the call before its
    /// offset (so it holds one call more than asked for).
    #[must_use]
    pub fn with_page_overlap(mut self) -> Self {
        self.knobs.overlap = true;
        self
    }

    /// Fails every request for which `failure` returns an error, with that
    /// error (checked after the delay, before the changes due). What a
    /// client returns once its retries ran out is for the test to say, e.g.
    /// `ApiError::RetriesExhausted` around a 200 carrying `error`.
    #[must_use]
    pub fn with_failure(
        mut self,
        failure: impl Fn(&PageRequest) -> Option<ApiError> + Send + Sync + 'static,
    ) -> Self {
        self.knobs.failure = Some(Box::new(failure));
        self
    }

    /// Waits `delay` (on the Tokio timer) before answering each request.
    #[must_use]
    pub fn with_delay(self, delay: Duration) -> Self {
        self.set_delay(delay);
        self
    }

    /// Changes the delay of [`MemorySource::with_delay`] while the source
    /// is in use (for requests that arrive from now on).
    pub fn set_delay(&self, delay: Duration) {
        self.delay_nanos.store(u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX), Ordering::SeqCst);
    }

    /// Lists a call only once it has ended (`end <= now`, `now` read on
    /// every request), as the API does: a test moves `now` to let calls
    /// appear.
    #[must_use]
    pub fn with_live_clock(mut self, now: Arc<AtomicI64>) -> Self {
        self.knobs.clock = Some(now);
        self
    }

    /// For a source built from calls: a query for a number lists only the
    /// calls whose `dest` is that number (the deployment number of an
    /// inbound call), instead of every call.
    #[must_use]
    pub fn with_numbers_by_dest(mut self) -> Self {
        self.knobs.numbers = NumberMatch::Dest;
        self
    }

    /// The requests answered so far (not those that failed), in order.
    #[must_use]
    pub fn answered(&self) -> Vec<PageRequest> {
        self.answered.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Requests received so far, answered or not.
    #[must_use]
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    /// Requests being answered now.
    #[must_use]
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// The most requests ever in flight at once.
    #[must_use]
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }

    /// Changes not applied yet: a test that expects its changes to happen
    /// checks this is 0.
    #[must_use]
    pub fn pending_changes(&self) -> usize {
        self.state().pending.len()
    }

    /// What is listed once the source stops moving (every change applied,
    /// due or not), unfiltered and with no knob, in the source's order: the
    /// calls given, or the simulator's whole data range.
    #[must_use]
    pub fn truth(&self) -> Vec<Call> {
        let mut settled = self.state().clone();
        while let Some((_, change)) = settled.pending.pop_front() {
            settled.apply(change);
        }
        let (start, end) = match &self.data {
            Data::Calls(_) => (i64::MIN, i64::MAX),
            Data::Simulator(sim) => (sim.config().data_start, sim.config().data_end - 1),
        };
        self.window(&settled, start, end, None)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every call of `[start, end]` (and `number`, for a simulator) listed
    /// under `state`, in the source's order.
    fn window(&self, state: &State, start: i64, end: i64, number: Option<&str>) -> Vec<Call> {
        let mut window: Vec<Call> = match &self.data {
            Data::Calls(calls) => {
                let lo = calls.partition_point(|c| c.start < start);
                let hi = calls.partition_point(|c| c.start <= end).max(lo);
                let by_dest =
                    |c: &Call| self.knobs.numbers == NumberMatch::Any || number.is_none_or(|n| n == c.dest);
                calls[lo..hi]
                    .iter()
                    .filter(|c| !state.removed.contains(&c.session_id) && by_dest(c))
                    .cloned()
                    .collect()
            }
            Data::Simulator(sim) => {
                let mut calls = sim.calls_in(start, end, number);
                calls.retain(|c| !state.removed.contains(&c.session_id));
                calls
            }
        };
        let inserted = state.inserted.iter().filter(|c| (start..=end).contains(&c.start));
        let n_before = window.len();
        window.extend(inserted.cloned());
        if let Some(clock) = &self.knobs.clock {
            let now = clock.load(Ordering::SeqCst);
            window.retain(|c| c.end <= now);
        }
        if window.len() > n_before {
            match self.data {
                Data::Calls(_) => sort_oldest_first(&mut window),
                Data::Simulator(_) => {
                    window
                        .sort_by(|a, b| b.start.cmp(&a.start).then_with(|| a.session_id.cmp(&b.session_id)));
                }
            }
        }
        window
    }

    /// The answer to request `n`, after the changes due.
    fn answer(&self, request: &PageRequest, n: u64) -> CallPage {
        let knobs = &self.knobs;
        let mut state = self.state();
        state.apply_due(n);
        let query = request.query();
        let (start, end) =
            (query.start().saturating_sub(knobs.slack_secs), query.end().saturating_add(knobs.slack_secs));
        let offset = if knobs.ignore_offset { 0 } else { request.offset() };
        let size = knobs
            .serves
            .unwrap_or_else(|| usize::try_from(request.limit()).unwrap_or(usize::MAX))
            .min(knobs.page_cap.unwrap_or(usize::MAX));
        // With overlap, the page starts one call early and ends where asked.
        let first = if knobs.overlap { offset.saturating_sub(1) } else { offset };
        let take = size.saturating_add(usize::try_from(offset - first).unwrap_or(0));
        let (calls, listed) = match &self.data {
            Data::Simulator(sim) if state.is_untouched() && !knobs.shuffle_ties && knobs.clock.is_none() => {
                let resolved = sim.resolve(start, end, query.number(), take, first);
                (sim.to_calls(&resolved), resolved.total)
            }
            _ => {
                let mut window = self.window(&state, start, end, query.number());
                if knobs.shuffle_ties {
                    shuffle_ties(&mut window, n);
                }
                let listed = window.len() as u64;
                let skip = usize::try_from(first).unwrap_or(usize::MAX);
                (window.into_iter().skip(skip).take(take).collect(), listed)
            }
        };
        let total_calls = match knobs.total_skew {
            Some((first_requests, by)) if n < first_requests => {
                if by < 0 {
                    listed.saturating_sub(by.unsigned_abs())
                } else {
                    listed.saturating_add(by.unsigned_abs())
                }
            }
            _ => listed,
        };
        CallPage { calls, total_calls }
    }
}

impl PageSource for MemorySource {
    async fn fetch_page(&self, request: &PageRequest) -> Result<CallPage, ApiError> {
        let n = self.requests.fetch_add(1, Ordering::SeqCst);
        let _in_flight = InFlight::enter(self);
        let delay = self.delay_nanos.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_nanos(delay)).await;
        }
        if let Some(error) = self.knobs.failure.as_ref().and_then(|fail| fail(request)) {
            return Err(error);
        }
        self.answered.lock().unwrap_or_else(PoisonError::into_inner).push(request.clone());
        Ok(self.answer(request, n))
    }
}

/// One request in flight, until dropped (answered, or its future dropped).
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn enter(source: &'a MemorySource) -> Self {
        let now = source.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        source.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(&source.in_flight)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn sort_oldest_first(calls: &mut [Call]) {
    calls.sort_by(|a, b| (a.start, &a.session_id).cmp(&(b.start, &b.session_id)));
}

/// Orders every run of calls sharing a start by a hash of (session id,
/// request number): afresh per request, the same on every run.
fn shuffle_ties(window: &mut [Call], n: u64) {
    let order = BuildHasherDefault::<DefaultHasher>::default();
    for run in window.chunk_by_mut(|a, b| a.start == b.start) {
        run.sort_by_key(|c| order.hash_one((&c.session_id, n)));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use plumline_api::CallType;

    use super::*;
    use crate::config::SimConfig;
    use crate::dataset::tests::request;

    const JAN1: i64 = 1_735_689_600;

    fn call(id: &str, start: i64) -> Call {
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

    /// Ten calls a minute apart from 0, given newest first; two share 300.
    fn ten() -> Vec<Call> {
        let mut calls: Vec<Call> = (0..10).map(|i| call(&format!("c{i}"), i * 60)).collect();
        calls.push(call("c5b", 300));
        calls.reverse();
        calls
    }

    fn fetch(source: &MemorySource, request: &PageRequest) -> Result<CallPage, ApiError> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("a runtime");
        runtime.block_on(source.fetch_page(request))
    }

    /// `(session ids, total_calls)` of one answer.
    fn answer(source: &MemorySource, limit: u32, offset: u64) -> (Vec<String>, u64) {
        let page = fetch(source, &request(0, 3_600, None, limit, offset)).expect("a page");
        (page.calls.into_iter().map(|c| c.session_id).collect(), page.total_calls)
    }

    fn ids(names: &[&str]) -> Vec<String> {
        names.iter().map(|&n| n.to_owned()).collect()
    }

    #[test]
    fn a_list_is_paged_oldest_first_and_windows_are_inclusive() {
        let source = MemorySource::new(ten());
        assert_eq!(answer(&source, 4, 0), (ids(&["c0", "c1", "c2", "c3"]), 11));
        assert_eq!(answer(&source, 4, 4), (ids(&["c4", "c5", "c5b", "c6"]), 11));
        assert_eq!(answer(&source, 4, 10), (ids(&["c9"]), 11));
        assert_eq!(answer(&source, 4, 11), (ids(&[]), 11));
        let page = fetch(&source, &request(60, 120, Some("any number"), 10, 0)).expect("a page");
        assert_eq!((page.calls.len(), page.total_calls), (2, 2), "[60, 120] holds c1 and c2");
        assert_eq!(source.truth().first().map(|c| c.session_id.as_str()), Some("c0"));
        assert_eq!((source.requests(), source.in_flight(), source.max_in_flight()), (5, 0, 1));
    }

    #[test]
    fn a_simulator_source_answers_what_the_simulator_does() {
        let sim = Simulator::new(SimConfig::default().with_calls_per_day(40.0)).expect("valid config");
        let number = sim.numbers()[1].clone();
        let source = MemorySource::from_simulator(sim.clone());
        let day = (JAN1, JAN1 + 86_399);
        let requests = [
            request(day.0, day.1, None, 1, 0),
            request(day.0, day.1, None, 50, 30),
            request(day.0, day.1, Some(&number), 7, 14),
            request(day.0, day.1, Some("8000000000"), 10, 0),
            request(day.0 + 3_600, day.1 + 86_400, None, 10_000, 0),
        ];
        for r in &requests {
            assert_eq!(fetch(&source, r).expect("a page"), sim.page(r), "{r:?}");
        }
        let c = sim.config();
        assert_eq!(source.truth(), sim.calls_in(c.data_start, c.data_end - 1, None));
        // A change is laid over the simulator's data, in its order.
        let first = sim.calls_in(day.0, day.1, None).remove(0);
        let source = MemorySource::from_simulator(sim.clone()).with_changes([
            (0, Change::Remove(first.session_id.clone())),
            (0, Change::Insert(call("new", day.1))),
        ]);
        let page = fetch(&source, &requests[0]).expect("a page");
        assert_eq!(page.calls[0].session_id, "new");
        assert_eq!(page.total_calls, sim.page(&requests[0]).total_calls);
        assert!(!source.truth().contains(&first));
    }

    #[test]
    fn changes_land_before_their_request_and_the_truth_is_final() {
        let source = MemorySource::new(ten()).with_changes([
            (2, Change::Remove("c0".into())),
            (1, Change::Insert(call("new", 30))),
            (2, Change::Remove("new".into())),
            (3, Change::Insert(call("new", 31))),
        ]);
        assert_eq!(source.pending_changes(), 4);
        let truth: Vec<String> = source.truth().into_iter().map(|c| c.session_id).collect();
        assert_eq!(truth[..3], ids(&["new", "c1", "c2"]), "every change, due or not");
        assert_eq!(answer(&source, 2, 0), (ids(&["c0", "c1"]), 11), "request 0");
        assert_eq!(answer(&source, 2, 0), (ids(&["c0", "new"]), 12), "request 1");
        assert_eq!(answer(&source, 2, 0), (ids(&["c1", "c2"]), 10), "request 2");
        assert_eq!(source.pending_changes(), 1);
        assert_eq!(answer(&source, 2, 0), (ids(&["new", "c1"]), 11), "request 3");
        assert_eq!(source.pending_changes(), 0);
    }

    #[test]
    fn knobs_shape_the_answer() {
        type Knob = fn(MemorySource) -> MemorySource;
        type Case = (&'static str, Knob, u32, u64, &'static [&'static str], u64);
        // (name, knob, limit, offset, ids, total): every request is the source's first.
        let cases: [Case; 9] = [
            ("none", |s| s, 3, 3, &["c3", "c4", "c5"], 11),
            ("slack", |s| s.with_window_slack(3_600), 3, 0, &["early", "c0", "c1"], 12),
            ("cap", |s| s.with_page_cap(2), 3, 3, &["c3", "c4"], 11),
            ("ignored limit", |s| s.with_ignored_limit(5), 3, 3, &["c3", "c4", "c5", "c5b", "c6"], 11),
            (
                "ignored limit, capped",
                |s| s.with_ignored_limit(5).with_page_cap(4),
                3,
                3,
                &["c3", "c4", "c5", "c5b"],
                11,
            ),
            ("ignored offset", |s| s.with_ignored_offset(), 3, 3, &["c0", "c1", "c2"], 11),
            ("overlap", |s| s.with_page_overlap(), 3, 3, &["c2", "c3", "c4", "c5"], 11),
            ("a lagging total", |s| s.with_skewed_total(1, -20), 3, 0, &["c0", "c1", "c2"], 0),
            ("a total ahead", |s| s.with_skewed_total(u64::MAX, 2), 3, 0, &["c0", "c1", "c2"], 13),
        ];
        for (name, knob, limit, offset, want, total) in cases {
            let mut calls = ten();
            calls.push(call("early", -1));
            let source = knob(MemorySource::new(calls));
            assert_eq!(answer(&source, limit, offset), (ids(want), total), "{name}");
        }
        let overlap = MemorySource::new(ten()).with_page_overlap();
        assert_eq!(answer(&overlap, 2, 0).0, ids(&["c0", "c1"]), "the first page starts where asked");
        let skewed = MemorySource::new(ten()).with_skewed_total(1, 5);
        assert_eq!((answer(&skewed, 1, 0).1, answer(&skewed, 1, 0).1), (16, 11), "the first request only");
    }

    #[test]
    fn failures_are_chosen_per_request_and_delay_the_changes() {
        let source = MemorySource::new(ten())
            .with_failure(|r| {
                (r.offset() == 4).then_some(ApiError::Unauthorized { status: 401, message: None })
            })
            .with_changes([(0, Change::Remove("c0".into()))]);
        let err = fetch(&source, &request(0, 3_600, None, 4, 4)).expect_err("fails at offset 4");
        assert!(matches!(err, ApiError::Unauthorized { status: 401, .. }), "{err}");
        assert_eq!((source.requests(), source.pending_changes()), (1, 1), "a failed request applies nothing");
        assert_eq!(answer(&source, 4, 0).1, 10, "the change due at 0 lands before request 1");
        assert_eq!(source.pending_changes(), 0);
    }

    #[test]
    fn a_live_clock_lists_ended_calls_and_numbers_match_dest() {
        let now = Arc::new(AtomicI64::new(0));
        let mut calls = ten();
        calls[3].dest = "200".into();
        let source = MemorySource::new(calls).with_live_clock(Arc::clone(&now)).with_numbers_by_dest();
        // The calls of ten() end 30 s after their start.
        let listed = |page: CallPage| page.calls.into_iter().map(|c| c.session_id).collect::<Vec<_>>();
        let all = request(0, 1_000, None, 100, 0);
        now.store(30, Ordering::SeqCst);
        assert_eq!(listed(fetch(&source, &all).expect("page")).len(), 1, "only the first call ended");
        now.store(10_000, Ordering::SeqCst);
        assert_eq!(fetch(&source, &all).expect("page").total_calls, 11);
        let of_200 = fetch(&source, &request(0, 1_000, Some("200"), 100, 0)).expect("page");
        assert_eq!(of_200.total_calls, 1);
        source.set_delay(Duration::from_millis(1));
        let _ = fetch(&source, &all).expect("page");
        let answered = source.answered();
        assert_eq!(answered.len(), 4);
        assert_eq!(answered[2].query().number(), Some("200"));
    }

    #[test]
    fn shuffled_ties_move_only_within_their_start() {
        let calls: Vec<Call> = (0..40).map(|i| call(&format!("t{i:02}"), (i / 8) * 60)).collect();
        let source = MemorySource::new(calls.clone()).with_shuffled_ties();
        let mut orders = HashSet::new();
        for _ in 0..4 {
            let page = fetch(&source, &request(0, 3_600, None, 100, 0)).expect("a page");
            let starts: Vec<i64> = page.calls.iter().map(|c| c.start).collect();
            assert!(starts.is_sorted(), "{starts:?}");
            let mut sorted = page.calls.clone();
            sort_oldest_first(&mut sorted);
            assert_eq!(sorted, calls, "the same calls");
            orders.insert(page.calls.into_iter().map(|c| c.session_id).collect::<Vec<_>>());
        }
        assert!(orders.len() > 1, "ordered afresh per request");
        assert_eq!(source.truth(), calls, "the truth is in order");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_in_flight_are_counted_and_released_when_dropped() {
        let source = Arc::new(MemorySource::new(ten()).with_delay(Duration::from_millis(50)));
        let r = request(0, 3_600, None, 4, 0);
        let pages = futures::future::join_all((0..4).map(|_| source.fetch_page(&r))).await;
        assert!(pages.iter().all(Result::is_ok));
        assert_eq!((source.requests(), source.max_in_flight(), source.in_flight()), (4, 4, 0));
        let abandoned = tokio::time::timeout(Duration::from_millis(5), source.fetch_page(&r)).await;
        assert!(abandoned.is_err(), "still waiting when dropped");
        assert_eq!((source.requests(), source.in_flight()), (5, 0));
    }
}
