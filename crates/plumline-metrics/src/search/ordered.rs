//! The search in the API's listing order, once its answers have shown one.
//!
//! A request for a window at `offset` with `limit=1` says two things: the
//! window's `total_calls`, so how many new calls lie before the window's
//! end, and, by the call it returns, how many lie before that call
//! (`offset` minus the held calls listed before it). Every request thus
//! cuts the reach-back twice where a count cuts it once: the window's end
//! splits one stretch of not-yet-found calls and the returned call another
//! (often a second stretch: a split rides as the window end of a request
//! made for an earlier stretch). A stretch whose new calls are few against
//! its held ones is fetched by position, exactly its calls and one more.
//!
//! The order is learned, never assumed: [`OrderEvidence`] keeps the
//! orders (by start, newest or oldest first; ties by session id, either
//! way) that no answer with two calls or more has contradicted, from the
//! backfill on. The search runs only once one is left.
//!
//! What a poll knows is a [`Listing`]: cuts in listing order and, per
//! stretch between two cuts, how many of the poll's new calls it holds.
//! Every request's window starts at a known cut near its target, not at
//! the newest call, and positions count from there. Calls that end during
//! the poll are listed at once and move every position after them. Per
//! stretch, such a call changes one count; a window that does not reach
//! it is not moved at all. An answer that contradicts what is known (a
//! count that grew) replaces what was known inside its window. One that
//! cannot be read at all (a call outside its window, a held call missing
//! from the listing) ends the search as [`Outcome::Moved`].
//!
//! Nothing here can count a call twice or count one the API did not
//! return: counting goes by session id, through [`absorb`]. What a wrong
//! guess costs is time. A call left unfound (a stretch estimated too low
//! after a replacement) is found by the next poll, whose first request
//! counts the whole reach-back afresh. The caller falls back to the
//! order-free count search when the order stops holding, and when a
//! listing moves under two polls in a row.

use std::cmp::Ordering;
use std::sync::Arc;

use futures::StreamExt as _;
use plumline_api::{ApiError, Call, CallPage, PageSource};

use super::{ANSWER_OVERHEAD, PollContext, Tally, Target, Tuning, absorb, fetch_page};
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

/// An answer that cannot be read in the listing as known: it lists a call
/// outside its window, skips a call held or found, or puts calls where no
/// count allows them (a held call left the listing, or the server pages
/// otherwise than asked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Unreadable;

/// What taking an answer in did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Taken {
    /// The answer agreed with what was known, and added to it.
    Agreed,
    /// It contradicted what was known of its window (calls ended there
    /// since): its window now reads as it answered.
    Replaced,
    /// Its window starts at a cut a replaced answer removed: not read.
    Stale,
}

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
///
/// The listing is cut into stretches at [`Cut`]s; for each stretch the
/// search knows (or not yet) how many of the poll's new calls (found or
/// not) it holds. Counts per stretch, not from the reach-back's start: a
/// call that ends during the poll changes the count of the one stretch
/// it lands in and no other, so an answer that disagrees with what is
/// known replaces only the stretches of its own window.
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
    /// In listing order, from the reach-back's start to its end.
    cuts: Vec<Cut>,
    /// `counts[i]`: the new calls between `cuts[i]` and `cuts[i + 1]`.
    counts: Vec<Option<u64>>,
}

/// A stretch that still holds new calls (or may).
#[derive(Debug, Clone)]
struct Node {
    first: Cut,
    last: Cut,
    /// Held and found calls inside.
    known: u64,
    /// New calls inside not found yet; `None`: not known.
    unfound: Option<u64>,
    /// The `End` cut its requests' windows start at, and how many calls
    /// lie between that cut and `first`.
    top: i64,
    offset: u64,
}

impl Node {
    fn unfound(&self) -> u64 {
        self.unfound.unwrap_or(0)
    }

    fn size(&self) -> u64 {
        self.known + self.unfound()
    }
}

/// One request: the window of the calls between the known cut `End(top)`
/// and `End(u0)`, `limit` calls at `offset` (counted from `End(top)`).
///
/// Starting the window at a known cut near its target rather than at the
/// reach-back's newest call keeps its positions still while calls listed
/// before the cut end during the poll: most calls that end mid-poll are
/// short, so young, so listed before the windows of the older stretches.
#[derive(Debug, Clone, Copy)]
struct Probe {
    top: i64,
    u0: i64,
    offset: u64,
    limit: u32,
}

impl Listing {
    fn new(order: Order, target: &Target, lo: i64, hi: i64) -> Self {
        let mut listing = Listing {
            order,
            lo,
            hi,
            held: Vec::new(),
            found: Vec::new(),
            cuts: Vec::new(),
            counts: vec![None],
        };
        let mut held: Vec<Key> = target
            .seen
            .iter_in(lo, hi)
            .map(|(start, id)| Key { u: listing.u(start), id: Arc::clone(id) })
            .collect();
        held.sort_by(|a, b| listing.cmp_key(a, b));
        listing.held = held;
        let (u_first, u_last) = listing.u_range();
        listing.cuts = vec![Cut::End(u_first - 1), Cut::End(u_last)];
        listing
    }

    fn u(&self, start: i64) -> i64 {
        if self.order.newest_first { -start } else { start }
    }

    fn key(&self, call: &Call) -> Key {
        Key { u: self.u(call.start), id: Arc::from(call.session_id.as_str()) }
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

    fn held_between(&self, a: &Cut, b: &Cut) -> u64 {
        self.held_before(b).saturating_sub(self.held_before(a))
    }

    fn found_between(&self, a: &Cut, b: &Cut) -> u64 {
        self.found_before(b).saturating_sub(self.found_before(a))
    }

    fn is_held(&self, key: &Key) -> bool {
        self.held.binary_search_by(|k| self.cmp_key(k, key)).is_ok()
    }

    fn remember(&mut self, key: Key) {
        let at = self.found.partition_point(|k| self.cmp_key(k, &key) == Ordering::Less);
        if self.found.get(at).is_none_or(|k| self.cmp_key(k, &key) != Ordering::Equal) {
            self.found.insert(at, key);
        }
    }

    /// The index of `cut` among the cuts, if it is one.
    fn index(&self, cut: &Cut) -> Option<usize> {
        self.cuts.binary_search_by(|c| self.cmp_cut(c, cut)).ok()
    }

    /// The new calls `answer` says lie between its window's start and each
    /// of its cuts, in order, ending with the window's end.
    fn read(&mut self, probe: Probe, page: &CallPage) -> Result<Vec<(Cut, u64)>, Unreadable> {
        let (a, b) = self.window(probe.top, probe.u0);
        let top = Cut::End(probe.top);
        let mut keys: Vec<Key> = Vec::with_capacity(page.calls.len());
        for call in &page.calls {
            if !(a..=b).contains(&call.start) {
                return Err(Unreadable);
            }
            let key = self.key(call);
            if keys.last().is_some_and(|p| self.cmp_key(p, &key) != Ordering::Less) {
                return Err(Unreadable);
            }
            keys.push(key);
        }
        let mut view: Vec<(Cut, u64)> = Vec::with_capacity(2 * keys.len() + 2);
        for (i, key) in keys.into_iter().enumerate() {
            let before = Cut::Before(key.clone());
            let position = probe.offset + i as u64;
            let new_before = position.checked_sub(self.held_between(&top, &before)).ok_or(Unreadable)?;
            // Nothing is listed between two calls answered one after the
            // other (so no held or found call), and where their starts
            // differ, a window's end lies between them too.
            if let Some((last, count)) = view.last() {
                if *count != new_before
                    || self.found_between(last, &before) + self.held_between(last, &before) > 0
                {
                    return Err(Unreadable);
                }
                if let Cut::After(previous) = last
                    && previous.u != key.u
                {
                    let end = Cut::End(previous.u);
                    view.push((end, new_before));
                }
            } else if self.found_between(&top, &before) > new_before {
                return Err(Unreadable);
            }
            let is_new = !self.is_held(&key);
            view.push((before, new_before));
            view.push((Cut::After(key.clone()), new_before + u64::from(is_new)));
            if is_new {
                self.remember(key);
            }
        }
        let end = Cut::End(probe.u0);
        let new_in_window = page.total_calls.checked_sub(self.held_between(&top, &end)).ok_or(Unreadable)?;
        if let Some((last, count)) = view.last()
            && new_in_window < count + self.found_between(last, &end)
        {
            return Err(Unreadable);
        }
        view.push((end, new_in_window));
        Ok(view)
    }

    /// Takes one answer to `probe` in.
    fn take(&mut self, probe: Probe, page: &CallPage) -> Result<Taken, Unreadable> {
        let Some(top) = self.index(&Cut::End(probe.top)) else {
            // Its positions cannot be placed, but its new calls are found.
            let (a, b) = self.window(probe.top, probe.u0);
            for call in page.calls.iter().filter(|c| (a..=b).contains(&c.start)) {
                let key = self.key(call);
                if !self.is_held(&key) {
                    self.remember(key);
                }
            }
            return Ok(Taken::Stale);
        };
        let view = self.read(probe, page)?;
        let Some((end, _)) = view.last().cloned() else {
            return Ok(Taken::Stale);
        };
        // The stored cuts inside the window, `top..=last`, and whether its
        // end falls inside stretch `last` (is not a cut).
        let last = self.cuts.partition_point(|c| self.cmp_cut(c, &end) != Ordering::Greater) - 1;
        let straddled = self.cmp_cut(&self.cuts[last], &end) == Ordering::Less;
        if let Some((cuts, counts)) = self.merge(top, last, straddled, &view) {
            self.splice(top, last, straddled, cuts, counts);
            Ok(Taken::Agreed)
        } else {
            // The answer is the listing as it is now: its window reads
            // as it says.
            let mut cuts = Vec::with_capacity(view.len());
            let mut counts = Vec::with_capacity(view.len() + 1);
            let mut previous = 0;
            for (cut, count) in &view {
                counts.push(Some(count - previous));
                cuts.push(cut.clone());
                previous = *count;
            }
            if straddled {
                counts.push(Some(self.rest_estimate(last, &end)));
            }
            self.splice(top, last, straddled, cuts, counts);
            Ok(Taken::Replaced)
        }
    }

    /// What is left past `end` of stretch `at`, which `end` falls inside,
    /// after an answer replaced what was known before `end`: its count
    /// less the found calls before `end`, no less than the found calls
    /// after. An estimate (calls ended there meanwhile are not known): too
    /// high, a later answer contradicts it; too low, the next poll finds
    /// the call left.
    fn rest_estimate(&self, at: usize, end: &Cut) -> u64 {
        let (first, next) = (&self.cuts[at], &self.cuts[at + 1]);
        let after = self.found_between(end, next);
        self.counts[at].map_or(after, |count| count.saturating_sub(self.found_between(first, end)).max(after))
    }

    /// Replaces the cuts `top + 1..=last` and the counts `top..last`
    /// (`..=last` if the window's end falls inside stretch `last`) by
    /// `cuts` and `counts`.
    fn splice(&mut self, top: usize, last: usize, straddled: bool, cuts: Vec<Cut>, counts: Vec<Option<u64>>) {
        let old_counts = if straddled { top..last + 1 } else { top..last };
        self.cuts.splice(top + 1..=last, cuts);
        self.counts.splice(old_counts, counts);
        debug_assert_eq!(self.cuts.len(), self.counts.len() + 1);
    }

    /// The stored cuts `top + 1..=last` and `view` together, with the counts
    /// between them, if they agree; `None` if they contradict.
    #[allow(clippy::type_complexity, reason = "cuts and their counts, as stored")]
    fn merge(
        &self,
        top: usize,
        last: usize,
        straddled: bool,
        view: &[(Cut, u64)],
    ) -> Option<(Vec<Cut>, Vec<Option<u64>>)> {
        // Every cut from the window's start on, with the new calls between
        // the start and it (if known) and, for a stored one, its index.
        let mut merged: Vec<(Cut, Option<u64>, Option<usize>)> = Vec::new();
        let (mut stored, mut answered) = (top + 1, 0);
        while stored <= last || answered < view.len() {
            let order = match (self.cuts.get(stored).filter(|_| stored <= last), view.get(answered)) {
                (Some(stored), Some((cut, _))) => self.cmp_cut(stored, cut),
                (Some(_), None) => Ordering::Less,
                _ => Ordering::Greater,
            };
            match order {
                Ordering::Less => {
                    merged.push((self.cuts[stored].clone(), None, Some(stored)));
                    stored += 1;
                }
                Ordering::Equal => {
                    merged.push((view[answered].0.clone(), Some(view[answered].1), Some(stored)));
                    stored += 1;
                    answered += 1;
                }
                Ordering::Greater => {
                    merged.push((view[answered].0.clone(), Some(view[answered].1), None));
                    answered += 1;
                }
            }
        }
        // Stored cuts inherit what the stored counts say, both ways, and
        // must agree with the answer where both speak.
        // Every stored cut `top + 1..=last` is in `merged`, in order, so the
        // stored cuts met one after the other bound one stored stretch each.
        let mut known: Vec<Option<u64>> = merged.iter().map(|m| m.1).collect();
        let mut previous = (Some(0), top);
        for k in 0..merged.len() {
            let Some(index) = merged[k].2 else { continue };
            if let (Some(p), Some(count)) = (previous.0, self.counts[previous.1]) {
                let derived = p + count;
                match known[k] {
                    Some(said) if said != derived => return None,
                    Some(_) => {}
                    None => known[k] = Some(derived),
                }
            }
            previous = (known[k], index);
        }
        let mut next: Option<(Option<u64>, usize)> = None;
        for k in (0..merged.len()).rev() {
            let Some(index) = merged[k].2 else { continue };
            if known[k].is_none()
                && let Some((Some(after), _)) = next
                && let Some(count) = self.counts[index]
            {
                known[k] = Some(after.checked_sub(count)?);
            }
            next = Some((known[k], index));
        }
        let mut cuts = Vec::with_capacity(merged.len());
        let mut counts = Vec::with_capacity(merged.len() + 1);
        let mut previous = (self.cuts[top].clone(), Some(0u64), Some(top));
        for (k, (cut, _, index)) in merged.iter().enumerate() {
            let count = match (previous.1, known[k]) {
                (Some(a), Some(b)) => Some(b.checked_sub(a)?),
                // A whole stored stretch keeps its count.
                _ => match (previous.2, index) {
                    (Some(a), Some(b)) if a + 1 == *b => self.counts[a],
                    _ => None,
                },
            };
            if count.is_some_and(|c| c < self.found_between(&previous.0, cut)) {
                return None;
            }
            counts.push(count);
            cuts.push(cut.clone());
            previous = (cut.clone(), known[k], *index);
        }
        if straddled {
            // What is left of stretch `last` past the window's end.
            let next = &self.cuts[last + 1];
            let from = if last == top {
                Some(0)
            } else {
                merged.iter().zip(&known).find(|(m, _)| m.2 == Some(last)).and_then(|(_, k)| *k)
            };
            let rest = match (self.counts[last], known.last().copied().flatten(), from) {
                (Some(count), Some(end), Some(from)) => Some(count.checked_sub(end.checked_sub(from)?)?),
                _ => None,
            };
            if rest.is_some_and(|r| r < self.found_between(&previous.0, next)) {
                return None;
            }
            counts.push(rest);
        }
        Some((cuts, counts))
    }

    /// The open stretches, in listing order, each with the window start its
    /// requests use; a stretch no known window start reaches waits.
    fn open_nodes(&self) -> Vec<Node> {
        let mut nodes = Vec::new();
        for i in 0..self.counts.len() {
            let (first, last) = (&self.cuts[i], &self.cuts[i + 1]);
            let found = self.found_between(first, last);
            let unfound = self.counts[i].map(|c| c.saturating_sub(found));
            if unfound == Some(0) {
                continue;
            }
            let Some((top, offset)) = self.anchor(i) else { continue };
            nodes.push(Node {
                first: first.clone(),
                last: last.clone(),
                known: self.held_between(first, last) + found,
                unfound,
                top,
                offset,
            });
        }
        nodes
    }

    /// The last `End` cut at or before `cuts[i]` with every count between
    /// known, and how many calls lie between it and `cuts[i]`.
    fn anchor(&self, i: usize) -> Option<(i64, u64)> {
        let (mut j, mut calls) = (i, 0);
        loop {
            if let Cut::End(u) = &self.cuts[j] {
                return Some((*u, calls));
            }
            let above = j.checked_sub(1)?;
            calls += self.counts[above]? + self.held_between(&self.cuts[above], &self.cuts[j]);
            j = above;
        }
    }

    /// The first `End` cut at or after `cut`.
    fn end_after(&self, cut: &Cut) -> i64 {
        let at = self.cuts.partition_point(|c| self.cmp_cut(c, cut) == Ordering::Less);
        self.cuts[at..]
            .iter()
            .find_map(|c| match c {
                Cut::End(u) => Some(*u),
                _ => None,
            })
            .unwrap_or(self.u_range().1)
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
        // The node's calls lie in the seconds `u_a..=u_b` (in `u`).
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

    /// The offset (from `node.top`) of a one-call probe inside `node`, about
    /// `share` of its expected new calls before the position asked.
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
        let unfound_before = (node.unfound() as f64 * share).round() as u64;
        node.offset + (known_before + unfound_before).min(node.size().saturating_sub(1))
    }
}

/// Answers that replaced what was known, after which a poll gives up (the
/// listing moves faster than the search reads it).
const MAX_REPLACED: u32 = 8;

/// Requests this far into a poll (half the bound after which it gives
/// up) make every open node fetched whole.
fn fetch_everything(tuning: &Tuning, requests: u64) -> bool {
    2 * requests >= tuning.max_requests
}

/// One poll of `target` over `[lo, hi]` in `order`: finds and counts every
/// call listed there that it does not hold yet; see the module docs.
/// Returns how it ended and how many requests it made.
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
) -> Result<(Outcome, u64), ApiError> {
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
    let mut replaced = 0u32;
    let mut requests = 0u64;
    while !probes.is_empty() {
        requests += probes.len() as u64;
        let number = target.number.clone();
        let answers: Vec<(Probe, Result<CallPage, ApiError>)> = futures::stream::iter(probes)
            .map(|probe| {
                let number = number.clone();
                let window = listing.window(probe.top, probe.u0);
                async move { (probe, fetch_page(source, number, window, probe.limit, probe.offset).await) }
            })
            .buffer_unordered(tuning.in_flight.max(1))
            .collect()
            .await;
        let mut first_error = None;
        let mut unreadable = false;
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
            target.note_slack(listing.window(probe.top, probe.u0), &page.calls);
            match listing.take(probe, &page) {
                Ok(Taken::Replaced) => replaced += 1,
                Ok(Taken::Agreed | Taken::Stale) => {}
                Err(Unreadable) => unreadable = true,
            }
            absorb(metrics, target, ctx, (lo, hi), &page.calls, true, tally);
        }
        if let Some(error) = first_error {
            return Err(error);
        }
        // Another order showed, the server widens its windows, or a full
        // dedupe set raised the horizon (the reach-back changed under the search).
        if target.order.order() != Some(order) || target.slack > 0 || tally.evicted > evicted_before {
            return Ok((Outcome::Unusable, requests));
        }
        if unreadable || replaced > MAX_REPLACED || requests >= tuning.max_requests {
            return Ok((Outcome::Moved, requests));
        }
        let nodes = listing.open_nodes();
        if allowance.is_none() {
            let new_calls =
                (listing.found.len() as u64 + nodes.iter().map(Node::unfound).sum::<u64>()) as f64;
            allowance = Some(tuning.budget_per_new * new_calls + tuning.budget_slack);
        }
        // Once the listing moved under this poll, splits stop riding on the
        // requests of earlier stretches: such a window spans every stretch
        // between, and each is one more place a call may end meanwhile.
        let round = Round { remaining: allowance.unwrap_or(0.0) - spent, requests, pair: replaced == 0 };
        probes = plan(&listing, &nodes, ctx, tuning, target, round);
    }
    Ok((Outcome::Done, requests))
}

/// Where a poll stands when it plans a round.
#[derive(Debug, Clone, Copy)]
struct Round {
    /// What is left of the byte allowance, in calls' worth.
    remaining: f64,
    /// Requests made so far.
    requests: u64,
    /// Whether splits may ride on the requests of earlier stretches.
    pair: bool,
}

/// What one round asks: for each open node a fetch, a probe inside it, or
/// (if `round.pair`) a window edge inside it riding on the request of a
/// node listed earlier.
fn plan(
    listing: &Listing,
    nodes: &[Node],
    ctx: &PollContext,
    tuning: &Tuning,
    target: &Target,
    round: Round,
) -> Vec<Probe> {
    let Round { remaining, requests, pair } = round;
    let open_new: u64 = nodes.iter().map(Node::unfound).sum();
    let remaining = (remaining - tuning.budget_reserve * open_new as f64).max(0.0);
    let everything = fetch_everything(tuning, requests);
    // Requests so far this round, and which of them (by index) still have
    // a free window edge, with the node that made them.
    let mut probes: Vec<Probe> = Vec::new();
    let mut free_edges: Vec<usize> = Vec::new();
    let mut owners: Vec<Option<usize>> = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let share = remaining * node.unfound() as f64 / open_new.max(1) as f64;
        let size = node.size();
        // A stretch of unknown count is probed first: its size is not known.
        let fetch = node.unfound.is_some()
            && (everything
                || node.known <= tuning.small_fetch
                || size <= tuning.fetch_ratio * node.unfound() + tuning.fetch_slack
                || size as f64 <= share
                || Listing::edges_inside(node).is_none() && node.known <= 2 * tuning.small_fetch);
        if fetch {
            // One call past the node: a call that ended during the poll and
            // pushed the node's last call out of reach shows as a contradiction.
            let limit = u32::try_from(size + 1).unwrap_or(u32::MAX).min(ctx.page_size);
            let u0 = listing.end_after(&node.last);
            probes.push(Probe { top: node.top, u0, offset: node.offset, limit });
            free_edges.push(probes.len() - 1);
            owners.push(None);
            continue;
        }
        let offset = listing.rank_probe(node, ctx, target, 0.5);
        let probe = Probe { top: node.top, u0: listing.end_after(&node.last), offset, limit: 1 };
        // A stretch of unknown count is measured whole, by its own request.
        if node.unfound.is_none() {
            probes.push(probe);
            owners.push(None);
            continue;
        }
        // A split: ride as a window edge on an earlier request if one is free.
        if let (true, Some(j), Some(u0)) =
            (pair, free_edges.last().copied(), listing.edge_at(node, ctx, target, 0.5))
        {
            free_edges.pop();
            probes[j].u0 = u0;
            continue;
        }
        probes.push(probe);
        free_edges.push(probes.len() - 1);
        owners.push(Some(i));
    }
    // A probe whose edge nobody took cuts its own node twice: the probe
    // in the first third, the edge at two thirds.
    for j in free_edges {
        if let Some(i) = owners[j] {
            let node = &nodes[i];
            if let Some(u0) = listing.edge_at(node, ctx, target, 2.0 / 3.0) {
                let offset = listing.rank_probe(node, ctx, target, 1.0 / 3.0);
                probes[j] = Probe { top: node.top, u0, offset, limit: 1 };
            }
        }
    }
    probes
}

#[cfg(test)]
mod tests {
    use plumline_api::CallType;

    use super::*;

    fn call(id: &str, start: i64) -> Call {
        Call {
            dest: "100".into(),
            src: "200".into(),
            start,
            end: start + 1,
            session_id: id.into(),
            call_type: CallType::Inbound,
            log: false,
        }
    }

    const NEWEST_ASC: Order = Order { newest_first: true, ids_ascending: true };

    /// Answers, each as `(start, id)` in the order answered.
    type Answers<'a> = &'a [&'a [(i64, &'a str)]];

    #[test]
    fn the_order_is_what_no_answer_contradicted() {
        let newest_desc = Order { newest_first: true, ids_ascending: false };
        let oldest_asc = Order { newest_first: false, ids_ascending: true };
        // (answers, each as (start, id) in the order answered; the order left)
        let cases: [(Answers<'_>, Option<Order>); 8] = [
            (&[], None),
            (&[&[(10, "a")]], None),
            // Ties never seen: ids ascending until shown otherwise.
            (&[&[(10, "a"), (9, "b")]], Some(NEWEST_ASC)),
            (&[&[(10, "b"), (10, "a"), (9, "c")]], Some(newest_desc)),
            (&[&[(9, "a"), (10, "b")]], Some(oldest_asc)),
            (&[&[(10, "a"), (9, "b")], &[(9, "a"), (10, "b")]], None),
            (&[&[(10, "a"), (10, "b"), (9, "c")], &[(10, "b"), (10, "a")]], None),
            // The same call twice (a listing that moved between pages) says nothing.
            (&[&[(10, "a"), (10, "a")]], None),
        ];
        for (answers, want) in cases {
            let mut evidence = OrderEvidence::default();
            for answer in answers {
                let calls: Vec<Call> = answer.iter().map(|(start, id)| call(id, *start)).collect();
                evidence.observe(&calls);
            }
            assert_eq!(evidence.order(), want, "{answers:?}");
        }
    }

    /// Ten held calls `h100`..`h109`, one a second, newest first.
    fn listing() -> Listing {
        let mut target = Target::new(Some("100".into()), 100);
        for start in 100..110 {
            target.seen.insert(&format!("h{start}"), start);
        }
        Listing::new(NEWEST_ASC, &target, 100, 109)
    }

    fn page(calls: &[(&str, i64)], total_calls: u64) -> CallPage {
        CallPage { calls: calls.iter().map(|(id, start)| call(id, *start)).collect(), total_calls }
    }

    fn unfound(listing: &Listing) -> Vec<(u64, Option<u64>)> {
        listing.open_nodes().iter().map(|n| (n.known, n.unfound)).collect()
    }

    #[test]
    fn answers_cut_stretches_and_one_that_contradicts_replaces_its_window() {
        let mut l = listing();
        // The whole reach-back from its start: the two newest calls, and
        // one new call somewhere in the eight after them.
        let first = Probe { top: -110, u0: -100, offset: 0, limit: 2 };
        assert_eq!(l.take(first, &page(&[("h109", 109), ("h108", 108)], 11)), Ok(Taken::Agreed));
        let nodes = l.open_nodes();
        assert_eq!(unfound(&l), [(8, Some(1))]);
        // Its requests start at the second after h109, one call before it.
        assert_eq!((nodes[0].top, nodes[0].offset), (-109, 1));

        // A probe there that agrees: the new call is x104, after h104 (ids
        // ascending within a second), and the stretch is done.
        let mut agreeing = listing();
        agreeing.take(first, &page(&[("h109", 109), ("h108", 108)], 11)).expect("readable");
        let probe = Probe { top: -109, u0: -100, offset: 5, limit: 1 };
        assert_eq!(agreeing.take(probe, &page(&[("x104", 104)], 10)), Ok(Taken::Agreed));
        assert_eq!(unfound(&agreeing), []);

        // The same probe after another call ended (at 102): the window's
        // total grew, so the window reads as answered, with one call left
        // after x104.
        assert_eq!(l.take(probe, &page(&[("x104", 104)], 11)), Ok(Taken::Replaced));
        assert_eq!(unfound(&l), [(4, Some(1))]);

        // A window starting at a cut no longer known is not read, but its
        // new call is found.
        let stale = Probe { top: -108, u0: -100, offset: 5, limit: 1 };
        assert_eq!(l.take(stale, &page(&[("y102", 102)], 11)), Ok(Taken::Stale));
        assert_eq!(unfound(&l), []);
    }

    #[test]
    fn answers_that_cannot_be_placed_are_refused() {
        let first = Probe { top: -110, u0: -100, offset: 0, limit: 2 };
        // (calls answered, total: what no listing in this order could answer)
        let cases: [(&[(&str, i64)], u64); 4] = [
            // h108 is held, and listed between these two.
            (&[("h109", 109), ("h107", 107)], 10),
            // Out of order.
            (&[("h108", 108), ("h109", 109)], 10),
            // Outside the window asked.
            (&[("h111", 111)], 10),
            // Fewer calls than are held there.
            (&[("h109", 109), ("h108", 108)], 9),
        ];
        for (calls, total) in cases {
            assert_eq!(listing().take(first, &page(calls, total)), Err(Unreadable), "{calls:?}");
        }
    }
}
