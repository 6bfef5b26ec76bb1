//! The search in the API's listing order, once its answers have shown one.
//!
//! A `limit=1` request for the window `[m, now]` at `offset` says two
//! things: the window's `total_calls` (how many new calls start at `m` or
//! later) and, by the call it returns, how many new calls the listing puts
//! before that call (`offset` minus the held calls before it). So every
//! request cuts the reach-back twice where a count cuts it once: the
//! window's edge splits one stretch of unknown calls (a "node") and the
//! returned call another. A node whose new calls are few against its held
//! ones is then fetched by position, exactly its calls and no more.
//!
//! What the search knows is a list of [`Cut`]s in listing order, each with
//! the number of the poll's new calls listed before it (a prefix count,
//! [`Listing::facts`]); between two cuts lies a node. Every answer is
//! checked against what is known: calls in the expected order, inside the
//! window asked, at positions that agree with every earlier answer. An
//! answer that does not fit (the listing moved during the poll, a held
//! call left it, the server orders, pages or filters otherwise than it
//! showed) ends this search as [`Outcome::Broken`]; the caller then runs
//! the order-free count search over the whole reach-back, so a call is
//! never missed or counted twice because of the order: counting goes by
//! session id, and only calls the API returned are counted.

use std::cmp::Ordering;
use std::sync::Arc;

use futures::StreamExt as _;
use plumline_api::{ApiError, Call, CallPage, CallQuery, PageSource};

use super::{ANSWER_OVERHEAD, PollContext, Target, Tally, Tuning, absorb};
use crate::metrics::Metrics;

/// How the API lists a window: by start, then by session id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Order {
    /// Newest start first (the vendor's sample) or oldest first.
    pub(crate) newest_first: bool,
    /// Calls sharing a start: ids ascending or descending (byte order).
    pub(crate) ids_ascending: bool,
}

/// The orders the answers so far allow, bit `i` for `ORDERS[i]`.
const ORDERS: [Order; 4] = [
    Order { newest_first: true, ids_ascending: true },
    Order { newest_first: true, ids_ascending: false },
    Order { newest_first: false, ids_ascending: true },
    Order { newest_first: false, ids_ascending: false },
];

/// What the API's answers say of its order: every multi-call answer
/// removes the orders it contradicts, for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OrderEvidence {
    possible: u8,
}

impl Default for OrderEvidence {
    fn default() -> Self {
        OrderEvidence { possible: 0b1111 }
    }
}

impl OrderEvidence {
    /// Learns from one answer's calls, in the order answered.
    pub(crate) fn observe(&mut self, calls: &[Call]) {
        for pair in calls.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            self.possible &= match a.start.cmp(&b.start) {
                Ordering::Greater => 0b0011,
                Ordering::Less => 0b1100,
                Ordering::Equal => match a.session_id.cmp(&b.session_id) {
                    Ordering::Less => 0b0101,
                    Ordering::Greater => 0b1010,
                    // The same call twice (a listing that moved between
                    // pages) says nothing of the order.
                    Ordering::Equal => 0b1111,
                },
            };
        }
    }

    /// The order to search in: known once the answers show which way
    /// starts run (and one order is left); calls sharing a start are taken
    /// as ids ascending until an answer shows otherwise.
    pub(crate) fn order(self) -> Option<Order> {
        let newest = self.possible & 0b0011 != 0;
        let oldest = self.possible & 0b1100 != 0;
        if newest == oldest {
            return None;
        }
        ORDERS.iter().enumerate().find(|(i, _)| self.possible & (1 << i) != 0).map(|(_, order)| *order)
    }
}

/// A call's place in the listing: `u` is its start, negated when the
/// newest come first, so the listing runs by `u` ascending, then by id.
#[derive(Debug, Clone)]
struct Key {
    u: i64,
    id: Arc<str>,
}

/// A point of the listing.
#[derive(Debug, Clone)]
enum Cut {
    /// Just before the call with this key.
    Before(Key),
    /// Just after it.
    After(Key),
    /// After every call whose `u` is at most this: the end of the listing
    /// of a window that reaches (in listing order) up to there.
    End(i64),
}

/// The answer broke an assumption of this search; the count search takes over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Broken;

/// How an ordered search ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Every new call of the reach-back was found.
    Done,
    /// An answer contradicted the earlier ones: the listing moved during
    /// the poll (a call that ended meanwhile shifts every position after
    /// it). What was found is counted; the rest is for another search.
    Moved,
    /// The answers showed another order, or a full dedupe set shortened
    /// the reach-back: only the count search can finish this poll.
    Unusable,
}

/// What one poll knows of the listing of its reach-back.
#[derive(Debug)]
struct Listing {
    order: Order,
    /// The reach-back, as API windows `[lo, hi]`.
    lo: i64,
    hi: i64,
    /// The calls held when the poll began, in listing order.
    held: Vec<Key>,
    /// The new calls answered so far, in listing order.
    found: Vec<Key>,
    /// Cuts in listing order, each with how many of the poll's new calls
    /// (found or not) the listing puts before it.
    facts: Vec<(Cut, u64)>,
}

/// A stretch between two consecutive facts that still holds new calls.
#[derive(Debug, Clone)]
struct Node {
    first: Cut,
    last: Cut,
    /// Held and found calls inside.
    known: u64,
    /// New calls inside not found yet.
    unfound: u64,
    /// The listing position of `first` (calls before it).
    position: u64,
}

impl Node {
    fn size(&self) -> u64 {
        self.known + self.unfound
    }
}

/// One request: the window of the calls between the known cut `End(top)`
/// and `End(u0)`, `limit` calls at `offset` (counted from `End(top)`).
///
/// Starting the window at a known cut rather than at the reach-back's
/// newest call keeps its positions still while calls that start before
/// the cut (in listing order) end during the poll: most calls that end
/// mid-poll are short, so young, so listed before the windows of the
/// older stretches.
#[derive(Debug, Clone, Copy)]
struct Probe {
    top: i64,
    u0: i64,
    offset: u64,
    limit: u32,
}

impl Listing {
    fn new(order: Order, target: &Target, lo: i64, hi: i64) -> Self {
        let mut listing = Listing { order, lo, hi, held: Vec::new(), found: Vec::new(), facts: Vec::new() };
        let mut held: Vec<Key> =
            target.seen.iter_in(lo, hi).map(|(start, id)| Key { u: listing.u(start), id: Arc::clone(id) }).collect();
        held.sort_by(|a, b| listing.cmp_key(a, b));
        listing.held = held;
        let (u_first, _) = listing.u_range();
        listing.facts.push((Cut::End(u_first - 1), 0));
        listing
    }

    fn u(&self, start: i64) -> i64 {
        if self.order.newest_first { -start } else { start }
    }

    /// The `u` of the reach-back's first and last listed seconds.
    fn u_range(&self) -> (i64, i64) {
        let (a, b) = (self.u(self.lo), self.u(self.hi));
        (a.min(b), a.max(b))
    }

    /// The API window `[a, b]` listing the calls after `End(top)` up to `End(u0)`.
    fn window(&self, top: i64, u0: i64) -> (i64, i64) {
        if self.order.newest_first {
            ((-u0).max(self.lo), (-top - 1).min(self.hi))
        } else {
            ((top + 1).max(self.lo), u0.min(self.hi))
        }
    }

    /// The prefix count known at `cut`, if any.
    fn fact(&self, cut: &Cut) -> Option<u64> {
        let at = self.facts.partition_point(|(c, _)| self.cmp_cut(c, cut) == Ordering::Less);
        self.facts.get(at).filter(|(c, _)| self.cmp_cut(c, cut) == Ordering::Equal).map(|(_, p)| *p)
    }

    /// The last known `End` cut at or before `cut`, and its listing position.
    fn top_for(&self, cut: &Cut) -> (i64, u64) {
        let at = self.facts.partition_point(|(c, _)| self.cmp_cut(c, cut) != Ordering::Greater);
        self.facts[..at]
            .iter()
            .rev()
            .find_map(|(c, p)| match c {
                Cut::End(u) => Some((*u, self.held_before(c) + p)),
                _ => None,
            })
            .unwrap_or((self.u_range().0 - 1, 0))
    }

    /// The first known `End` cut at or after `cut`.
    fn end_after(&self, cut: &Cut) -> i64 {
        let at = self.facts.partition_point(|(c, _)| self.cmp_cut(c, cut) == Ordering::Less);
        self.facts[at..]
            .iter()
            .find_map(|(c, _)| match c {
                Cut::End(u) => Some(*u),
                _ => None,
            })
            .unwrap_or(self.u_range().1)
    }

    fn cmp_ids(&self, a: &str, b: &str) -> Ordering {
        if self.order.ids_ascending { a.cmp(b) } else { b.cmp(a) }
    }

    fn cmp_key(&self, a: &Key, b: &Key) -> Ordering {
        a.u.cmp(&b.u).then_with(|| self.cmp_ids(&a.id, &b.id))
    }

    fn cmp_cut(&self, a: &Cut, b: &Cut) -> Ordering {
        fn parts(cut: &Cut) -> (i64, Option<(&str, u8)>) {
            match cut {
                Cut::Before(key) => (key.u, Some((&key.id, 0))),
                Cut::After(key) => (key.u, Some((&key.id, 1))),
                Cut::End(u) => (*u, None),
            }
        }
        let ((ua, ia), (ub, ib)) = (parts(a), parts(b));
        ua.cmp(&ub).then_with(|| match (ia, ib) {
            (Some((x, rx)), Some((y, ry))) => self.cmp_ids(x, y).then(rx.cmp(&ry)),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        })
    }

    /// Whether the call `key` is listed before `cut`.
    fn is_before(&self, key: &Key, cut: &Cut) -> bool {
        match cut {
            Cut::Before(at) => self.cmp_key(key, at) == Ordering::Less,
            Cut::After(at) => self.cmp_key(key, at) != Ordering::Greater,
            Cut::End(u) => key.u <= *u,
        }
    }

    fn held_before(&self, cut: &Cut) -> u64 {
        self.held.partition_point(|k| self.is_before(k, cut)) as u64
    }

    fn found_before(&self, cut: &Cut) -> u64 {
        self.found.partition_point(|k| self.is_before(k, cut)) as u64
    }

    fn is_held(&self, key: &Key) -> bool {
        self.held.binary_search_by(|k| self.cmp_key(k, key)).is_ok()
    }

    /// Records that `count` new calls are listed before `cut`; `Broken` if
    /// that contradicts what is known.
    fn learn(&mut self, cut: Cut, count: u64) -> Result<(), Broken> {
        let at = self.facts.partition_point(|(c, _)| self.cmp_cut(c, &cut) == Ordering::Less);
        if let Some((c, known)) = self.facts.get(at)
            && self.cmp_cut(c, &cut) == Ordering::Equal
        {
            return if *known == count { Ok(()) } else { Err(Broken) };
        }
        let found_here = self.found_before(&cut);
        if let Some((prev, p)) = at.checked_sub(1).map(|i| &self.facts[i])
            && count < p + (found_here - self.found_before(prev))
        {
            return Err(Broken);
        }
        if let Some((next, p)) = self.facts.get(at)
            && *p < count + (self.found_before(next) - found_here)
        {
            return Err(Broken);
        }
        self.facts.insert(at, (cut, count));
        Ok(())
    }

    /// Takes a new call into `found`; `Broken` if the facts left no room for it.
    fn discover(&mut self, key: Key) -> Result<(), Broken> {
        let at = self.found.partition_point(|k| self.cmp_key(k, &key) == Ordering::Less);
        if self.found.get(at).is_some_and(|k| self.cmp_key(k, &key) == Ordering::Equal) {
            return Ok(());
        }
        // The stretch it lands in must still hold an unfound call.
        let i = self.facts.partition_point(|(c, _)| !self.is_before(&key, c));
        if let (Some(prev), Some(next)) = (i.checked_sub(1).map(|i| &self.facts[i]), self.facts.get(i)) {
            let found_inside = self.found_before(&next.0) - self.found_before(&prev.0);
            if next.1 - prev.1 <= found_inside {
                return Err(Broken);
            }
        }
        self.found.insert(at, key);
        Ok(())
    }

    /// Takes one answer to `probe` in; `Broken` if it does not fit.
    fn take(&mut self, probe: Probe, page: &CallPage) -> Result<(), Broken> {
        let (a, b) = self.window(probe.top, probe.u0);
        let top = Cut::End(probe.top);
        // Listing positions count from the reach-back's first call; the
        // answer's from `top`.
        let base = self.held_before(&top) + self.fact(&top).ok_or(Broken)?;
        let mut keys: Vec<Key> = Vec::with_capacity(page.calls.len());
        for call in &page.calls {
            if !(a..=b).contains(&call.start) {
                return Err(Broken);
            }
            let key = Key { u: self.u(call.start), id: Arc::from(call.session_id.as_str()) };
            if keys.last().is_some_and(|p| self.cmp_key(p, &key) != Ordering::Less) {
                return Err(Broken);
            }
            keys.push(key);
        }
        let end = Cut::End(probe.u0);
        let held = self.held_before(&end);
        let new_before_end = (base + page.total_calls).checked_sub(held).ok_or(Broken)?;
        self.learn(end, new_before_end)?;
        let mut previous: Option<(i64, u64)> = None;
        for (i, key) in keys.into_iter().enumerate() {
            let position = base + probe.offset + i as u64;
            let before = Cut::Before(key.clone());
            let new_before = position.checked_sub(self.held_before(&before)).ok_or(Broken)?;
            // Nothing is listed between two calls answered one after the
            // other: where their starts differ, that is a window's end too.
            if let Some((u, count)) = previous
                && u != key.u
            {
                self.learn(Cut::End(u), count)?;
            }
            let is_new = !self.is_held(&key);
            if is_new {
                self.discover(key.clone())?;
            }
            self.learn(before, new_before)?;
            let after = new_before + u64::from(is_new);
            previous = Some((key.u, after));
            self.learn(Cut::After(key), after)?;
        }
        Ok(())
    }

    /// The stretches that still hold new calls, in listing order.
    fn open_nodes(&self) -> Vec<Node> {
        let mut nodes = Vec::new();
        for pair in self.facts.windows(2) {
            let ((first, p1), (last, p2)) = (&pair[0], &pair[1]);
            let found = self.found_before(last) - self.found_before(first);
            let unfound = (p2 - p1).saturating_sub(found);
            if unfound == 0 {
                continue;
            }
            let held_first = self.held_before(first);
            nodes.push(Node {
                first: first.clone(),
                last: last.clone(),
                known: self.held_before(last) - held_first + found,
                unfound,
                position: held_first + p1,
            });
        }
        nodes
    }

    /// The `u0`s with `first < End(u0) < last`: a window edge inside `node`.
    fn edges_inside(node: &Node) -> Option<(i64, i64)> {
        let lo = match &node.first {
            Cut::Before(key) | Cut::After(key) => key.u,
            Cut::End(u) => u + 1,
        };
        let hi = match &node.last {
            Cut::Before(key) | Cut::After(key) => key.u - 1,
            Cut::End(u) => u - 1,
        };
        (lo <= hi).then_some((lo, hi))
    }

    /// The window edge inside `node` with about `share` of its expected new
    /// calls listed before it (by the age prior).
    fn edge_at(&self, node: &Node, ctx: &PollContext, target: &Target, share: f64) -> Option<i64> {
        let (lo, hi) = Self::edges_inside(node)?;
        // The node's calls start within these seconds (in `u`: lo - ... hi + 1).
        let (u_a, u_b) = (lo, hi + 1);
        let u0 = if self.order.newest_first {
            // Listed first = youngest: starts in [m, b] lie before End(-m).
            let (a, b) = (-u_b, -u_a);
            target.prior.split_younger(ctx.now, a, b, share).map_or(lo, |m| -m)
        } else {
            // Listed first = oldest: starts up to m - 1 lie before End(m - 1).
            let (a, b) = (u_a, u_b);
            target.prior.split_younger(ctx.now, a, b, 1.0 - share).map_or(lo, |m| m - 1)
        };
        Some(u0.clamp(lo, hi))
    }

    /// A one-call probe inside `node`, about `share` of its expected new
    /// calls before the position asked.
    fn rank_probe(&self, node: &Node, ctx: &PollContext, target: &Target, share: f64) -> u64 {
        let known_before = match self.edge_at(node, ctx, target, share) {
            Some(u0) => {
                let edge = Cut::End(u0);
                (self.held_before(&edge) + self.found_before(&edge))
                    - (self.held_before(&node.first) + self.found_before(&node.first))
            }
            None => node.known / 2,
        };
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "a small count")]
        let unfound_before = (node.unfound as f64 * share).round() as u64;
        node.position + (known_before + unfound_before).min(node.size() - 1)
    }
}

/// Requests this far into a poll make every open node fetched whole.
fn fetch_everything(tuning: &Tuning, requests: u64) -> bool {
    requests >= tuning.max_requests
}

/// One poll of `target` over `[lo, hi]` in `order`: finds and counts every
/// call listed there that it does not hold yet; see the module docs.
/// Adds the requests made to `requests`.
///
/// # Errors
/// The first error of a request; the calls absorbed so far stay counted
/// and remembered.
#[allow(clippy::too_many_arguments, reason = "the poll's whole context, passed down once")]
pub(crate) async fn poll<S: PageSource>(
    source: &S,
    metrics: &Metrics,
    ctx: &PollContext,
    tuning: &Tuning,
    target: &mut Target,
    (lo, hi): (i64, i64),
    order: Order,
    tally: &mut Tally,
    requests: &mut u64,
) -> Result<Outcome, ApiError> {
    let mut listing = Listing::new(order, target, lo, hi);
    let (u_first, u_last) = listing.u_range();
    // The first request reads the newest calls (where new short calls sit
    // among few held ones) and, with its window the whole reach-back,
    // counts every new call.
    let recent = tuning.recent_known as u64;
    let limit = u32::try_from(recent + tuning.recent_extra).unwrap_or(u32::MAX).min(ctx.page_size).max(1);
    let offset = if order.newest_first { 0 } else { (listing.held.len() as u64).saturating_sub(recent) };
    let mut probes = vec![Probe { top: u_first - 1, u0: u_last, offset, limit }];
    let mut allowance: Option<f64> = None;
    let mut spent = 0.0f64;
    let evicted_before = tally.evicted;
    while !probes.is_empty() {
        *requests += probes.len() as u64;
        let number = target.number.clone();
        let answers: Vec<(Probe, Result<CallPage, ApiError>)> = futures::stream::iter(probes)
            .map(|probe| {
                let number = number.clone();
                let window = listing.window(probe.top, probe.u0);
                async move {
                    let request = CallQuery::new(window.0, window.1)
                        .map(|q| q.with_number(number))
                        .and_then(|q| q.page(probe.limit, probe.offset));
                    let answer = match request {
                        Ok(request) => source.fetch_page(&request).await,
                        Err(error) => Err(error),
                    };
                    (probe, answer)
                }
            })
            .buffer_unordered(tuning.in_flight.max(1))
            .collect()
            .await;
        let mut first_error = None;
        let mut contradicted = false;
        for (probe, answer) in answers {
            let page = match answer {
                Ok(page) => page,
                Err(error) => {
                    first_error.get_or_insert(error);
                    continue;
                }
            };
            spent += page.calls.len() as f64 + ANSWER_OVERHEAD;
            target.order.observe(&page.calls);
            contradicted |= listing.take(probe, &page).is_err();
            absorb(metrics, target, ctx, listing.window(probe.top, probe.u0), &page.calls, true, tally);
        }
        if let Some(error) = first_error {
            return Err(error);
        }
        // A full dedupe set raised the horizon: the reach-back changed under us.
        if target.order.order() != Some(order) || tally.evicted > evicted_before {
            return Ok(Outcome::Unusable);
        }
        if contradicted || *requests > 4 * tuning.max_requests {
            return Ok(Outcome::Moved);
        }
        let nodes = listing.open_nodes();
        if allowance.is_none() {
            let new_calls = (listing.found.len() as u64 + nodes.iter().map(|n| n.unfound).sum::<u64>()) as f64;
            allowance = Some(tuning.budget_per_new * new_calls + tuning.budget_slack);
        }
        probes = plan(&listing, &nodes, ctx, tuning, target, allowance.unwrap_or(0.0) - spent, *requests);
    }
    Ok(Outcome::Done)
}

/// What one round asks: for each open node a fetch, a probe inside it, or
/// a window edge inside it riding on the request of a node listed earlier.
fn plan(
    listing: &Listing,
    nodes: &[Node],
    ctx: &PollContext,
    tuning: &Tuning,
    target: &Target,
    remaining: f64,
    requests: u64,
) -> Vec<Probe> {
    let open_new: u64 = nodes.iter().map(|n| n.unfound).sum();
    let remaining = (remaining - tuning.budget_reserve * open_new as f64).max(0.0);
    let everything = fetch_everything(tuning, requests);
    // Requests so far this round, and which of them (by index) still have
    // a free window edge, with the node that made them.
    let mut probes: Vec<Probe> = Vec::new();
    let mut free_edges: Vec<usize> = Vec::new();
    let mut owners: Vec<Option<usize>> = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let share = remaining * node.unfound as f64 / open_new.max(1) as f64;
        let size = node.size();
        let fetch = everything
            || node.known <= tuning.small_fetch
            || size <= tuning.fetch_ratio * node.unfound + tuning.fetch_slack
            || size as f64 <= share
            || Listing::edges_inside(node).is_none() && node.known <= 2 * tuning.small_fetch;
        if fetch {
            // One call past the node: a call that ended during the poll and
            // pushed the node's last call out of reach shows as a contradiction.
            let limit = u32::try_from(size + 1).unwrap_or(u32::MAX).min(ctx.page_size);
            let (top, base) = listing.top_for(&node.first);
            let u0 = listing.end_after(&node.last);
            probes.push(Probe { top, u0, offset: node.position - base, limit });
            free_edges.push(probes.len() - 1);
            owners.push(None);
            continue;
        }
        // A split: ride as a window edge on an earlier request if one is free.
        if let (Some(j), Some(u0)) = (free_edges.last().copied(), listing.edge_at(node, ctx, target, 0.5)) {
            free_edges.pop();
            probes[j].u0 = u0;
            continue;
        }
        let (top, base) = listing.top_for(&node.first);
        let offset = listing.rank_probe(node, ctx, target, 0.5) - base;
        probes.push(Probe { top, u0: listing.end_after(&node.last), offset, limit: 1 });
        free_edges.push(probes.len() - 1);
        owners.push(Some(i));
    }
    // A probe whose edge nobody took cuts its own node twice: the probe
    // in the first third, the edge at two thirds.
    for j in free_edges {
        if let Some(i) = owners[j] {
            let node = &nodes[i];
            if let Some(u0) = listing.edge_at(node, ctx, target, 2.0 / 3.0) {
                let (top, base) = listing.top_for(&node.first);
                let offset = listing.rank_probe(node, ctx, target, 1.0 / 3.0) - base;
                probes[j] = Probe { top, u0, offset, limit: 1 };
            }
        }
    }
    probes
}
