//! The order-free search: find the calls the API lists now but the poller
//! does not hold yet with `total_calls` counts of time windows, and fetch
//! only the small windows where a count grew.
//!
//! For a window `[a, b]` the poller knows how many calls it holds
//! ([`Target::held_in`]: widened by the server's slack, for a server that
//! answers wider windows than asked); a request with `limit=1` and
//! `offset` = that count answers the window's `total_calls` (and, when the
//! count grew, one call, else an empty page). The search:
//!
//! 1. fetches the newest few held calls' window whole (new short calls sit
//!    there among few old ones) and counts the rest of the reach-back;
//! 2. splits a window whose count grew at the median of where new calls
//!    started in past polls ([`AgePrior`], learned in log-age bins), counts
//!    the younger half and derives the older half's count from the parent;
//! 3. fetches a window whole once it holds few calls per new one, or once
//!    it fits its share of the poll's byte allowance: the first round
//!    tells how many calls are new, and a poll may spend
//!    [`Tuning::budget_per_new`] calls' worth of bytes per new call plus
//!    [`Tuning::budget_slack`] (issue 10's target: 5 × the new bytes + 4 KB),
//!    shared among the open windows by their new calls. Fetching a window
//!    whole saves the counts that would isolate its new calls.
//!
//! With slack, both halves of a split are counted: a half's count derived
//! from its parent's would be off by the calls at the split's edges.
//!
//! Nothing here relies on the API's order within a window. Counts are
//! assumed to only grow (a listed call stays listed): a window whose count
//! fell is treated as holding nothing new.

use futures::StreamExt as _;
use plumline_api::{ApiError, Call, PageSource};

#[cfg(doc)]
use super::AgePrior;
use super::{ANSWER_OVERHEAD, PollContext, Tally, Target, Tuning, absorb, fetch_page, fetch_window};
use crate::metrics::Metrics;

/// `total_calls` of `[a, b]` from one `limit=1` request at `offset` (the
/// calls held there, so an unchanged window answers an empty page).
async fn count_window<S: PageSource>(
    source: &S,
    number: Option<String>,
    (a, b): (i64, i64),
    offset: u64,
) -> Result<(u64, Vec<Call>), ApiError> {
    let page = fetch_page(source, number, (a, b), 1, offset).await?;
    Ok((page.total_calls, page.calls))
}

/// A window's `total_calls` and the calls answered with it.
type Answer = Result<(u64, Vec<Call>), ApiError>;

/// A window of the search, with its `total_calls` once known.
#[derive(Debug, Clone, Copy)]
struct Node {
    a: i64,
    b: i64,
    total: Option<u64>,
    fetch: bool,
}

#[derive(Debug, Clone, Copy)]
struct Probe {
    a: i64,
    b: i64,
    /// `Some(offset)`: a count; `None`: a whole fetch.
    count_at: Option<u64>,
    /// The older sibling whose total is the parent's minus this probe's.
    sibling: Option<(i64, i64, u64)>,
}

/// One poll of `target` over `[lo, hi]`: finds and counts every call
/// listed there that it does not hold yet; returns how many requests it made.
///
/// # Errors
/// The first error of a request; the calls absorbed so far stay counted
/// and remembered.
pub(crate) async fn poll<S: PageSource>(
    source: &S,
    metrics: &Metrics,
    ctx: &PollContext,
    tuning: &Tuning,
    target: &mut Target,
    (lo, hi): (i64, i64),
    tally: &mut Tally,
) -> Result<u64, ApiError> {
    let recent_start = target
        .seen
        .nth_newest_start(hi, tuning.recent_known)
        .map_or(lo, |s| s.saturating_add(1))
        .clamp(lo, hi);
    let mut frontier = vec![Node { a: recent_start, b: hi, total: None, fetch: true }];
    if recent_start > lo {
        frontier.push(Node { a: lo, b: recent_start - 1, total: None, fetch: false });
    }
    let mut requests = 0u64;
    let mut first_error = None;
    // In calls' worth of bytes: set after the first round, which counts the
    // new calls of the whole reach-back.
    let mut allowance: Option<f64> = None;
    let mut spent = 0.0f64;
    while !frontier.is_empty() {
        let open_new = open_new_calls(target, &frontier);
        let remaining = allowance
            .map_or(0.0, |allowance| (allowance - spent - tuning.budget_reserve * open_new as f64).max(0.0));
        let mut probes = Vec::with_capacity(frontier.len());
        for node in frontier.drain(..) {
            let held = target.held_in(node.a, node.b);
            let probe_for = |a: i64, b: i64, held: u64, force: bool, sibling| {
                let fetch = force || held <= tuning.small_fetch || requests >= tuning.max_requests;
                Probe { a, b, count_at: (!fetch).then_some(held), sibling }
            };
            let Some(total) = node.total else {
                probes.push(probe_for(node.a, node.b, held, node.fetch, None));
                continue;
            };
            let new = total.saturating_sub(held);
            if new == 0 {
                continue;
            }
            let share = remaining * new as f64 / open_new.max(1) as f64;
            let small = total <= tuning.fetch_ratio * new + tuning.fetch_slack || total as f64 <= share;
            match target.prior.split(ctx.now, node.a, node.b).filter(|_| !small) {
                // Two widened halves overlap their parent's edges
                // differently: with slack, both halves are counted.
                Some(m) if target.slack > 0 => {
                    probes.push(probe_for(m, node.b, target.held_in(m, node.b), false, None));
                    probes.push(probe_for(node.a, m - 1, target.held_in(node.a, m - 1), false, None));
                }
                Some(m) => {
                    let held_young = target.held_in(m, node.b);
                    probes.push(probe_for(m, node.b, held_young, false, Some((node.a, m - 1, total))));
                }
                None => probes.push(probe_for(node.a, node.b, held, true, None)),
            }
        }
        requests += probes.len() as u64;
        let number = target.number.clone();
        let answers: Vec<(Probe, Answer)> = futures::stream::iter(probes)
            .map(|probe| {
                let number = number.clone();
                async move {
                    let window = (probe.a, probe.b);
                    let answer = match probe.count_at {
                        Some(offset) => count_window(source, number, window, offset).await,
                        None => fetch_window(source, number, window, ctx.page_size).await,
                    };
                    (probe, answer)
                }
            })
            .buffer_unordered(tuning.in_flight.max(1))
            .collect()
            .await;
        for (probe, answer) in answers {
            let (total, calls) = match answer {
                Ok(answer) => answer,
                Err(error) => {
                    first_error.get_or_insert(error);
                    continue;
                }
            };
            spent += calls.len() as f64 + ANSWER_OVERHEAD;
            target.order.observe(&calls);
            target.note_slack((probe.a, probe.b), &calls);
            absorb(metrics, target, ctx, (lo, hi), &calls, true, tally);
            if probe.count_at.is_some() {
                frontier.push(Node { a: probe.a, b: probe.b, total: Some(total), fetch: false });
            }
            if let Some((a, b, parent)) = probe.sibling {
                frontier.push(Node { a, b, total: Some(parent.saturating_sub(total)), fetch: false });
            }
        }
        if first_error.is_some() {
            break;
        }
        if allowance.is_none() {
            let new_calls = (tally.counted + open_new_calls(target, &frontier)) as f64;
            allowance = Some(tuning.budget_per_new * new_calls + tuning.budget_slack);
        }
    }
    match first_error {
        Some(error) => Err(error),
        None => Ok(requests),
    }
}

/// The new calls the windows of known totals hold, together.
fn open_new_calls(target: &Target, frontier: &[Node]) -> u64 {
    frontier.iter().filter_map(|n| n.total.map(|t| t.saturating_sub(target.held_in(n.a, n.b)))).sum()
}
