//! [`SeenCalls`]: the bounded, time-evicted set of listed `session_id`s
//! that makes overlapping poll windows safe and tells a poll what it
//! already holds.

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::Arc;

/// The `session_id`s the API has listed for one polled number, keyed by the
/// call's `start`: every call seen in the reach-back window, counted or not
/// (a call that ended before the day's anchor is held but not counted).
///
/// Two jobs: a call is counted only when it is new here, and
/// [`SeenCalls::count_in`] says how many calls of a window the poller
/// already holds, so a `total_calls` equal to it means nothing new there.
///
/// The API matches its window against each call's `start`, so once the
/// poller's next window starts after a call's `start`, no later poll can
/// return that call again and its id can go:
/// [`SeenCalls::evict_started_before`] does that after every successful
/// poll. The set therefore holds the calls of the reach-back plus one
/// interval, not the day.
///
/// # Invariants
/// `by_id` and `by_start` hold the same ids; `len() <= capacity`.
///
/// ## Memory Usage
/// About 100 bytes per entry plus the id's length (one shared allocation
/// for the id, a hash-map slot and a B-tree slot). At the capacity of
/// 200,000 that is roughly 25 MB per polled number; a number with 100,000
/// calls a day holds about 40,000 at its busiest hour (4 h reach-back).
#[derive(Debug)]
pub struct SeenCalls {
    by_id: HashMap<Arc<str>, i64>,
    by_start: BTreeSet<(i64, Arc<str>)>,
    capacity: usize,
}

/// What [`SeenCalls::insert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Insert {
    /// First time this id is seen: count the call.
    New,
    /// Already counted.
    Seen,
    /// New, and the set was full, so the entry with the oldest start was
    /// dropped to make room. The poller then stops reaching back to that
    /// start (so the dropped call is never counted twice, but a long call
    /// that starts there and ends later is missed).
    NewEvictedOldest {
        /// The start of the dropped call.
        evicted_start: i64,
    },
}

impl SeenCalls {
    /// An empty set that holds at most `capacity` ids (at least 1).
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        SeenCalls { by_id: HashMap::new(), by_start: BTreeSet::new(), capacity: capacity.max(1) }
    }

    /// Records `session_id` (a call that started at `start`) and says
    /// whether it is new.
    pub fn insert(&mut self, session_id: &str, start: i64) -> Insert {
        if self.by_id.contains_key(session_id) {
            return Insert::Seen;
        }
        let mut outcome = Insert::New;
        if self.by_id.len() >= self.capacity
            && let Some((evicted_start, oldest)) = self.by_start.pop_first()
        {
            self.by_id.remove(&oldest);
            outcome = Insert::NewEvictedOldest { evicted_start };
        }
        let id: Arc<str> = Arc::from(session_id);
        self.by_id.insert(Arc::clone(&id), start);
        self.by_start.insert((start, id));
        outcome
    }

    /// Whether `session_id` is in the set.
    #[must_use]
    pub fn contains(&self, session_id: &str) -> bool {
        self.by_id.contains_key(session_id)
    }

    /// How many held calls started in `[start, end]` (inclusive, as API windows).
    #[must_use]
    pub fn count_in(&self, start: i64, end: i64) -> u64 {
        if start > end {
            return 0;
        }
        let empty: Arc<str> = Arc::from("");
        let range = self.by_start.range((
            Bound::Included((start, Arc::clone(&empty))),
            Bound::Excluded((end.saturating_add(1), empty)),
        ));
        range.count() as u64
    }

    /// The held calls that started in `[start, end]`, as `(start, id)`,
    /// oldest start first (ids ascending within a start).
    pub(crate) fn iter_in(&self, start: i64, end: i64) -> impl Iterator<Item = (i64, &Arc<str>)> + '_ {
        let empty: Arc<str> = Arc::from("");
        let range = if start > end {
            None
        } else {
            Some(self.by_start.range((
                Bound::Included((start, Arc::clone(&empty))),
                Bound::Excluded((end.saturating_add(1), empty)),
            )))
        };
        range.into_iter().flatten().map(|(start, id)| (*start, id))
    }

    /// The start of the `n`-th newest held call (0: the newest) among those
    /// starting at or before `end`, if there are that many.
    #[must_use]
    pub fn nth_newest_start(&self, end: i64, n: usize) -> Option<i64> {
        let empty: Arc<str> = Arc::from("");
        self.by_start
            .range((Bound::Unbounded, Bound::Excluded((end.saturating_add(1), empty))))
            .rev()
            .nth(n)
            .map(|(start, _)| *start)
    }

    /// Drops every id whose call started before `cutoff`; returns how many.
    pub fn evict_started_before(&mut self, cutoff: i64) -> usize {
        let mut evicted = 0;
        while let Some((start, _)) = self.by_start.first() {
            if *start >= cutoff {
                break;
            }
            if let Some((_, id)) = self.by_start.pop_first() {
                self.by_id.remove(&id);
                evicted += 1;
            }
        }
        evicted
    }

    /// Number of ids held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether no id is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_once_and_evicts_by_start() {
        let mut seen = SeenCalls::new(100);
        // (id, start, expected)
        let steps = [
            ("a", 10, Insert::New),
            ("b", 20, Insert::New),
            ("a", 10, Insert::Seen),
            ("c", 30, Insert::New),
            ("b", 20, Insert::Seen),
        ];
        for (id, start, want) in steps {
            assert_eq!(seen.insert(id, start), want, "{id}");
        }
        assert_eq!(seen.len(), 3);
        // The cutoff is exclusive: a call starting at the cutoff can still
        // be returned by a window starting there.
        assert_eq!(seen.evict_started_before(20), 1);
        assert!(!seen.contains("a") && seen.contains("b") && seen.contains("c"));
        assert_eq!(seen.evict_started_before(i64::MAX), 2);
        assert!(seen.is_empty());
    }

    #[test]
    fn capacity_drops_the_oldest_start() {
        let mut seen = SeenCalls::new(2);
        assert_eq!(seen.insert("late", 50), Insert::New);
        assert_eq!(seen.insert("early", 5), Insert::New);
        assert_eq!(seen.insert("mid", 20), Insert::NewEvictedOldest { evicted_start: 5 });
        assert!(!seen.contains("early") && seen.contains("mid") && seen.contains("late"));
        assert_eq!(seen.len(), 2);
    }

    #[test]
    fn counts_windows_inclusively() {
        let mut seen = SeenCalls::new(100);
        for (id, start) in [("a", 10), ("b", 10), ("c", 11), ("d", 20), ("e", 30)] {
            seen.insert(id, start);
        }
        // (start, end, held calls)
        let cases = [(10, 10, 2), (10, 11, 3), (11, 29, 2), (0, 100, 5), (31, 40, 0), (20, 10, 0)];
        for (start, end, want) in cases {
            assert_eq!(seen.count_in(start, end), want, "[{start}, {end}]");
        }
        assert_eq!(seen.nth_newest_start(100, 0), Some(30));
        assert_eq!(seen.nth_newest_start(25, 1), Some(11));
        assert_eq!(seen.nth_newest_start(100, 5), None);
    }

    #[test]
    fn same_start_many_ids() {
        let mut seen = SeenCalls::new(1_000);
        for i in 0..100 {
            assert_eq!(seen.insert(&format!("id{i}"), 7), Insert::New);
        }
        assert_eq!(seen.evict_started_before(7), 0);
        assert_eq!(seen.evict_started_before(8), 100);
    }
}
