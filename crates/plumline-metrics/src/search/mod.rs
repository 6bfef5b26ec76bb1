//! The incremental poll of one number: find the calls the API lists now
//! but the poller does not hold yet, and count them, at a small API cost.
//!
//! A call is listed once it has ended, at the position of its start, so the
//! calls new in a poll are those that ended since the last one: most are
//! short and started a minute or two ago, but a long call that just ended
//! can sit anywhere in the reach-back. Two searches find them:
//!
//! - `ordered.rs`, the search in the API's listing order: requests placed
//!   by position, each telling two counts. It runs once the answers have
//!   shown one order ([`OrderEvidence`]), from the backfill on.
//! - `counts.rs`, the order-free count search: `total_calls` of time
//!   windows, bisected where a count grew. It runs when no order is known,
//!   when the answers stop fitting the order, when the server widens its
//!   windows ([`Target::slack`]), and when a listing moved under two polls
//!   in a row.
//!
//! [`poll_target`] picks per number the search that cost fewer requests
//! per new call lately ([`SearchCosts`]): a listing that moves a lot
//! while a poll runs (a slow API at a busy hour) can make the count
//! search the cheaper one. Both count through [`absorb`], by session id,
//! and both share the byte allowance of [`Tuning`] and the [`AgePrior`]
//! of where new calls start.

mod counts;
mod ordered;

use std::collections::HashSet;

use futures::TryStreamExt as _;
use plumline_api::{ApiError, Call, CallPage, CallQuery, PageSource, all_pages};
use tracing::debug;

use crate::dedupe::{Insert, SeenCalls};
use crate::metrics::Metrics;
use crate::poller::attributed_number;

pub(crate) use self::ordered::OrderEvidence;
use self::ordered::Outcome;

/// Seconds in a UTC day.
pub(crate) const DAY_SECS: i64 = 86_400;

/// How the search trades requests against bytes; see the module docs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tuning {
    /// Whether the ordered search may run (see `ordered.rs`).
    pub(crate) ordered: bool,
    /// Held calls in the newest window, fetched whole every poll.
    pub(crate) recent_known: usize,
    /// In listing order, the first request reads this many calls more
    /// than `recent_known` (the new calls among them).
    pub(crate) recent_extra: u64,
    /// A window holding at most this many calls is fetched, not counted.
    pub(crate) small_fetch: u64,
    /// A window whose count grew by `d` is fetched once its total is at most
    /// `fetch_ratio * d + fetch_slack`.
    pub(crate) fetch_ratio: u64,
    pub(crate) fetch_slack: u64,
    /// Requests in flight at once within one number's poll.
    pub(crate) in_flight: usize,
    /// After this many requests in one number's poll, the count search
    /// fetches every open window whole; the ordered search does so at half
    /// this and gives up at it (bounds on a pathological source).
    pub(crate) max_requests: u64,
    /// A poll's byte allowance, in calls' worth: this many per new call...
    pub(crate) budget_per_new: f64,
    /// ... plus this many.
    pub(crate) budget_slack: f64,
    /// Calls' worth of the allowance kept back per new call still open,
    /// for the counts that isolate it if its window is not fetched.
    pub(crate) budget_reserve: f64,
}

pub(crate) const TUNING: Tuning = Tuning {
    ordered: true,
    recent_known: 12,
    recent_extra: 4,
    small_fetch: 2,
    fetch_ratio: 3,
    fetch_slack: 2,
    in_flight: 8,
    max_requests: 200,
    budget_per_new: 5.0,
    // 4 KB at the ~140 bytes of a JSON call.
    budget_slack: 28.0,
    budget_reserve: 1.0,
};

/// What an answer costs beyond its calls, in calls' worth of bytes
/// (`{"calls":[],"total_calls":N}` against ~140 bytes a call).
const ANSWER_OVERHEAD: f64 = 0.25;

/// Bins of `log2(1 + age)`: ages up to 2^18 s (three days).
const AGE_BINS: usize = 18;
/// Per-poll decay of what was learned, so the prior follows the traffic.
const DECAY: f64 = 0.995;
/// Mass every bin keeps, so windows where no new call was seen yet still split.
const FLOOR: f64 = 0.000_5;

/// Where the calls new in a poll started, as `now - start`, learned from
/// the polls so far: splitting a window at the median of this mass halves
/// the expected new calls on each side, as a binary search should.
#[derive(Debug, Clone)]
pub(crate) struct AgePrior {
    weights: [f64; AGE_BINS],
}

impl Default for AgePrior {
    /// Log-uniform: no idea yet where new calls start.
    fn default() -> Self {
        AgePrior { weights: [0.1; AGE_BINS] }
    }
}

impl AgePrior {
    /// Learns that a new call started `age` seconds before the poll.
    pub(crate) fn observe(&mut self, age: i64) {
        let x = log_age(age);
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "x is in [0, 64)")]
        let bin = (x as usize).min(AGE_BINS - 1);
        self.weights[bin] += 1.0;
    }

    /// Forgets a little, once per poll.
    pub(crate) fn decay(&mut self) {
        for w in &mut self.weights {
            *w = *w * DECAY + FLOOR;
        }
    }

    /// Mass between `x1 <= x2` in log-age space.
    fn mass(&self, x1: f64, x2: f64) -> f64 {
        let mut total = 0.0;
        for (i, w) in self.weights.iter().enumerate() {
            let (lo, hi) = (i as f64, if i == AGE_BINS - 1 { f64::INFINITY } else { (i + 1) as f64 });
            let overlap = x2.min(hi) - x1.max(lo);
            if overlap > 0.0 {
                let width = if hi.is_finite() { 1.0 } else { overlap.max(1.0) };
                total += w * overlap / width;
            }
        }
        total
    }

    /// Where to split the window `[a, b]` (starts, inclusive) polled at
    /// `now`: `m` with `a < m <= b`, the older half `[a, m - 1]` and the
    /// younger `[m, b]` holding about the same expected new calls.
    pub(crate) fn split(&self, now: i64, a: i64, b: i64) -> Option<i64> {
        self.split_younger(now, a, b, 0.5)
    }

    /// Like [`AgePrior::split`], with the younger part `[m, b]` holding
    /// about `share` (in `(0, 1)`) of the expected new calls.
    pub(crate) fn split_younger(&self, now: i64, a: i64, b: i64, share: f64) -> Option<i64> {
        if a >= b {
            return None;
        }
        let (x_young, x_old) = (log_age(now - b), log_age(now - a));
        let wanted = self.mass(x_young, x_old) * share;
        // Bisection on the monotone mass function: 40 steps are plenty.
        let (mut lo, mut hi) = (x_young, x_old);
        for _ in 0..40 {
            let mid = f64::midpoint(lo, hi);
            if self.mass(x_young, mid) < wanted {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        #[allow(clippy::cast_possible_truncation, reason = "ages are bounded by the window")]
        let age = ((hi.exp2() - 1.0).round() as i64).max(0);
        Some((now - age).clamp(a + 1, b))
    }
}

fn log_age(age: i64) -> f64 {
    ((age.max(0) as f64) + 1.0).log2()
}

/// The state of one polled number.
#[derive(Debug)]
pub(crate) struct Target {
    /// `None`: the unfiltered query of the whole account.
    pub(crate) number: Option<String>,
    /// Every call listed in the reach-back.
    pub(crate) seen: SeenCalls,
    /// The clock of the last poll (or the backfill) that succeeded.
    pub(crate) watermark: Option<i64>,
    /// No window reaches before this start (raised when `seen` overflows).
    pub(crate) horizon: i64,
    /// Where new calls started in this number's past polls.
    pub(crate) prior: AgePrior,
    /// What the API's answers say of its listing order.
    pub(crate) order: OrderEvidence,
    /// Which search has been cheaper for this number lately.
    pub(crate) costs: SearchCosts,
    /// The last poll left calls for this one (its window is covered again).
    pub(crate) deferred: bool,
    /// How many seconds the server widens every window by, on both sides,
    /// as seen in its answers (calls outside the window asked); 0 for a
    /// server that answers exactly.
    pub(crate) slack: i64,
}

/// Requests per new call (plus one) of recent polls, by search: a listing
/// that moves a lot while a poll runs (a slow API at a busy hour) makes the
/// ordered search start over often, and then the count search is cheaper.
/// The cheaper one runs; every [`SearchCosts::EXPLORE`]th poll tries the other.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SearchCosts {
    ordered: Option<f64>,
    counts: Option<f64>,
    polls: u64,
}

impl SearchCosts {
    const EXPLORE: u64 = 16;
    /// A search cheaper than this share of the other's cost is not questioned.
    const CLEAR: f64 = 0.7;
    /// Weight of the newest poll in the running means.
    const WEIGHT: f64 = 0.1;

    /// Whether this poll should try the ordered search (when an order is known).
    fn ordered_next(&mut self) -> bool {
        self.polls += 1;
        let explore = self.polls.is_multiple_of(Self::EXPLORE);
        match (self.ordered, self.counts) {
            // Far cheaper (by a third or more): no need to try the other.
            (Some(ordered), Some(counts)) if ordered <= counts => !explore || ordered < Self::CLEAR * counts,
            (Some(ordered), Some(counts)) => explore && counts >= Self::CLEAR * ordered,
            (None, _) => true,
            (Some(_), None) => !explore,
        }
    }

    fn record(&mut self, ordered: bool, requests: u64, counted: u64) {
        let cost = requests as f64 / (counted + 1) as f64;
        let mean = if ordered { &mut self.ordered } else { &mut self.counts };
        *mean = Some(mean.map_or(cost, |m| m + Self::WEIGHT * (cost - m)));
    }
}

impl Target {
    pub(crate) fn new(number: Option<String>, capacity: usize) -> Self {
        Target {
            number,
            seen: SeenCalls::new(capacity),
            watermark: None,
            horizon: 0,
            prior: AgePrior::default(),
            order: OrderEvidence::default(),
            costs: SearchCosts::default(),
            deferred: false,
            slack: 0,
        }
    }

    /// Learns from an answer for `[a, b]` how far the server widens windows.
    pub(crate) fn note_slack(&mut self, (a, b): (i64, i64), calls: &[Call]) {
        for call in calls {
            self.slack = self.slack.max(a - call.start).max(call.start - b);
        }
    }

    /// How many held calls the server counts in its answer for `[a, b]`:
    /// those of the window widened by the server's slack.
    pub(crate) fn held_in(&self, a: i64, b: i64) -> u64 {
        self.seen.count_in(a.saturating_sub(self.slack), b.saturating_add(self.slack))
    }

    /// The `number` label of calls of this target (`None`: per call).
    pub(crate) fn label<'a>(&'a self, call: &'a Call) -> &'a str {
        self.number.as_deref().unwrap_or_else(|| attributed_number(&call.call_type, &call.dest))
    }
}

/// What one target's poll (or backfill chunk) did.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Tally {
    /// Calls counted for the first time.
    pub(crate) counted: u64,
    /// Ids dropped early from a full dedupe set.
    pub(crate) evicted: u64,
    /// The poll stopped before finding every new call (the listing moved
    /// under it): the next one must cover its window again.
    pub(crate) deferred: bool,
}

/// Values every window of one poll shares.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PollContext {
    /// The clock at the poll's start: the end of every window.
    pub(crate) now: i64,
    /// 00:00 UTC of the day counted: calls ending in `[anchor, anchor + 1 day)` count.
    pub(crate) anchor: i64,
    /// How far before the last poll a window reaches (the longest call).
    pub(crate) reach_back: i64,
    pub(crate) page_size: u32,
}

/// Takes the calls of an answer into the target: each new one is
/// remembered and, if it ended today, counted.
///
/// `reach` is the span whose calls the target holds all of: the poll's
/// reach-back (the backfill's live part). A call starting there is taken
/// whichever window answered it (a server that widens its windows answers
/// a neighbour's calls too, and only here are they seen); one starting
/// outside may be one no longer held, so counting it could count it twice.
/// `live` says whether this is a regular poll (detection lag and the age
/// prior learn from it) rather than the backfill.
pub(crate) fn absorb(
    metrics: &Metrics,
    target: &mut Target,
    ctx: &PollContext,
    reach: (i64, i64),
    calls: &[Call],
    live: bool,
    tally: &mut Tally,
) {
    for call in calls {
        if !(reach.0..=reach.1).contains(&call.start) {
            continue;
        }
        // A call ending on the next UTC day (a server clock ahead of ours)
        // waits for that day, unremembered.
        if call.end >= ctx.anchor + DAY_SECS {
            continue;
        }
        match target.seen.insert(&call.session_id, call.start) {
            Insert::Seen => continue,
            Insert::New => {}
            Insert::NewEvictedOldest { evicted_start } => {
                tally.evicted += 1;
                target.horizon = target.horizon.max(evicted_start + 1);
            }
        }
        if call.end < ctx.anchor {
            continue;
        }
        count(metrics, target, call, tally);
        if live {
            metrics.record_detection_lag((ctx.now - call.end) as f64);
            target.prior.observe(ctx.now - call.start);
        }
    }
}

/// Counts `call`, which ended today, in `target`'s series.
pub(crate) fn count(metrics: &Metrics, target: &Target, call: &Call, tally: &mut Tally) {
    metrics.record_call_ended_at(target.label(call), call.call_type.as_str(), call.duration_secs(), call.end);
    tally.counted += 1;
}

/// One page of `[a, b]`: `limit` calls at `offset`.
pub(crate) async fn fetch_page<S: PageSource>(
    source: &S,
    number: Option<String>,
    (a, b): (i64, i64),
    limit: u32,
    offset: u64,
) -> Result<CallPage, ApiError> {
    let request = CallQuery::new(a, b)?.with_number(number).page(limit, offset)?;
    source.fetch_page(&request).await
}

/// Pages through `[a, b]` whole; returns the largest `total_calls` seen and
/// every call.
pub(crate) async fn fetch_window<S: PageSource>(
    source: &S,
    number: Option<String>,
    (a, b): (i64, i64),
    page_size: u32,
) -> Result<(u64, Vec<Call>), ApiError> {
    let query = CallQuery::new(a, b)?.with_number(number);
    let pages: Vec<CallPage> = all_pages(source, query, page_size).try_collect().await?;
    let total = pages.iter().map(|p| p.total_calls).max().unwrap_or(0);
    Ok((total, pages.into_iter().flat_map(|p| p.calls).collect()))
}

/// One poll of `target`: finds and counts every call listed in the reach-back
/// (`[watermark - reach_back, now]`) that it does not hold yet; see the
/// module docs. Returns how many requests it made.
///
/// On an error the calls absorbed so far stay counted and remembered, and
/// the watermark is left for the caller to keep, so the next poll covers the
/// window again without counting anything twice.
///
/// # Cancel safety
/// Dropping the future loses at most the answers of the requests in flight;
/// the next poll finds those calls again.
pub(crate) async fn poll_target<S: PageSource>(
    source: &S,
    metrics: &Metrics,
    ctx: &PollContext,
    tuning: &Tuning,
    target: &mut Target,
    tally: &mut Tally,
) -> Result<u64, ApiError> {
    let Some(watermark) = target.watermark else {
        return Ok(0);
    };
    let hi = ctx.now.max(0);
    let lo = watermark.saturating_sub(ctx.reach_back).max(target.horizon).clamp(0, hi);
    let mut requests = 0;
    let counted_before = tally.counted;
    // Positions in a widened window are not the ones asked for.
    let order = target.order.order().filter(|_| tuning.ordered && target.slack == 0);
    let ordered = order.is_some() && target.costs.ordered_next();
    if let Some(order) = order.filter(|_| ordered) {
        let outcome;
        (outcome, requests) =
            ordered::poll(source, metrics, ctx, tuning, target, (lo, hi), order, tally).await?;
        match outcome {
            Outcome::Done => {}
            // The next poll covers this window again and finds the rest,
            // unless the last poll was already left to this one.
            Outcome::Moved if !target.deferred => {
                debug!(requests, "the listing moved during the poll: the next poll finds the rest");
                tally.deferred = true;
            }
            Outcome::Moved | Outcome::Unusable => {
                debug!(requests, "answers did not fit the listing order: counting instead");
                requests += counts::poll(source, metrics, ctx, tuning, target, (lo, hi), tally).await?;
            }
        }
    } else {
        requests += counts::poll(source, metrics, ctx, tuning, target, (lo, hi), tally).await?;
    }
    if order.is_some() {
        target.costs.record(ordered, requests, tally.counted - counted_before);
    }
    Ok(requests)
}

/// Session ids of a backfill chunk already taken, so a call a moving
/// listing shows twice across pages counts once.
pub(crate) fn dedupe_chunk(calls: Vec<Call>) -> Vec<Call> {
    let mut ids = HashSet::with_capacity(calls.len());
    calls.into_iter().filter(|c| ids.insert(c.session_id.clone())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_stay_inside_the_window_and_follow_the_prior() {
        let prior = AgePrior::default();
        let now = 1_000_000;
        // (a, b): the split must satisfy a < m <= b.
        for (a, b) in [(now - 14_400, now), (now - 1, now), (now - 100, now - 50), (5, 6)] {
            let m = prior.split(now, a, b).expect("splittable");
            assert!(a < m && m <= b, "[{a}, {b}] split at {m}");
        }
        assert_eq!(prior.split(now, now, now), None);
        // Log-uniform: the split of four hours sits near the geometric mean
        // of the ages (about two minutes), not at two hours.
        let m = prior.split(now, now - 14_400, now).expect("split");
        assert!((60..=240).contains(&(now - m)), "age {}", now - m);
        // Having learned that new calls start about 30 minutes before the
        // poll, a window of the last four hours splits near there.
        let mut learned = AgePrior::default();
        for _ in 0..1_000 {
            learned.observe(1_800);
        }
        let m = learned.split(now, now - 14_400, now).expect("split");
        assert!((1_024..=2_048).contains(&(now - m)), "age {}", now - m);
    }

    #[test]
    fn the_cheaper_search_runs_and_a_close_call_is_tried_again() {
        // (ordered, counts: requests per new call so far; which search
        // runs on a plain poll and on an exploring one)
        let cases = [
            (None, None, true, true),
            (Some(2.0), None, true, false),
            // Clearly cheaper (under 70 % of the other): never questioned.
            (Some(1.0), Some(3.0), true, true),
            (Some(2.5), Some(3.0), true, false),
            (Some(4.0), Some(3.0), false, true),
            (Some(9.0), Some(3.0), false, false),
        ];
        for (ordered, counts, plain, exploring) in cases {
            let mut costs = SearchCosts { ordered, counts, polls: 0 };
            assert_eq!(costs.ordered_next(), plain, "{ordered:?} {counts:?}");
            costs.polls = SearchCosts::EXPLORE - 1;
            assert_eq!(costs.ordered_next(), exploring, "{ordered:?} {counts:?}, exploring");
        }
        let mut costs = SearchCosts::default();
        costs.record(true, 10, 4);
        costs.record(true, 20, 4);
        assert_eq!(costs.ordered, Some(2.2));
    }

    #[test]
    fn chunks_drop_repeated_ids() {
        let call = |id: &str| Call {
            dest: "1".into(),
            src: "2".into(),
            start: 10,
            end: 20,
            session_id: id.into(),
            call_type: plumline_api::CallType::Inbound,
            log: false,
        };
        let kept = dedupe_chunk(vec![call("a"), call("b"), call("a")]);
        assert_eq!(kept.iter().map(|c| c.session_id.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    }
}
