//! [`Seen`]: the calls a day's read has listed, for dedupe, in memory that
//! does not grow with the day.

use std::collections::{HashSet, VecDeque};

/// Fingerprints held before the set starts forgetting: a day smaller than
/// this is remembered whole.
const KEEP: usize = 8 * 1024;

/// The distinct calls listed so far in one attempt at a day.
///
/// The API lists a day ordered by `start` (the simulator newest first), so
/// a call can be listed again only near where it was first listed: the
/// overlap at a page boundary, a tie group read again, a listing shifted by
/// calls added or removed while it was paged (by less than a page, or the
/// shift itself is caught). While the listing is seen ordered (either way),
/// calls that started before the previous page's first call, in listing
/// order, are forgotten, so the set holds about two pages, not the day. If
/// an answer ever comes out of order, nothing is forgotten from then on
/// (exact, in memory that grows with the day).
///
/// The count of distinct calls is kept apart, so the read's final check
/// (distinct calls against `total_calls`) covers the whole day: a call
/// that came back after it was forgotten is counted twice and fails it.
///
/// ## Memory Usage
/// At most [`KEEP`] fingerprints plus two pages' worth while ordered: 16
/// bytes each and their start in a queue, under 1.5 MB with pages of
/// 10,000.
#[derive(Debug, Default)]
pub(super) struct Seen {
    set: HashSet<u128>,
    /// `(start, fingerprint)` in listing order, for forgetting the oldest.
    order: VecDeque<(i64, u128)>,
    distinct: u64,
    /// The last start listed for the first time.
    last_start: Option<i64>,
    /// Whether starts go up (`Some(true)`) or down, once two differ.
    ascending: Option<bool>,
    ordered: bool,
}

impl Seen {
    pub(super) fn new() -> Self {
        Seen { ordered: true, ..Seen::default() }
    }

    /// Records a listed call; whether it is listed for the first time.
    pub(super) fn insert(&mut self, id: u128, start: i64) -> bool {
        if !self.set.insert(id) {
            return false;
        }
        self.distinct += 1;
        if let Some(last) = self.last_start
            && start != last
        {
            let up = start > last;
            match self.ascending {
                None => self.ascending = Some(up),
                Some(ascending) if ascending != up => self.ordered = false,
                Some(_) => {}
            }
        }
        self.last_start = Some(start);
        if self.ordered {
            self.order.push_back((start, id));
        }
        true
    }

    /// Whether `id` was listed (and is still remembered).
    pub(super) fn contains(&self, id: &u128) -> bool {
        self.set.contains(id)
    }

    /// Distinct calls listed, over the whole attempt.
    pub(super) fn distinct(&self) -> u64 {
        self.distinct
    }

    /// Forgets calls listed before `horizon` (the previous page's first
    /// start) in listing order, once more than [`KEEP`] are held and the
    /// listing has been ordered.
    pub(super) fn forget_before(&mut self, horizon: i64) {
        if !self.ordered {
            self.order = VecDeque::new();
            return;
        }
        let Some(ascending) = self.ascending else { return };
        while self.set.len() > KEEP {
            match self.order.front() {
                Some(&(start, id)) if (ascending && start < horizon) || (!ascending && start > horizon) => {
                    self.set.remove(&id);
                    self.order.pop_front();
                }
                _ => break,
            }
        }
    }

    /// Fingerprints held now (for tests and the memory bound).
    #[cfg(test)]
    pub(super) fn held(&self) -> usize {
        self.set.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ordered_listing_is_remembered_about_two_pages_deep() {
        let mut seen = Seen::new();
        let page = 10_000_i64;
        for p in 0..30 {
            let horizon = (p - 1).max(0) * page;
            seen.forget_before(horizon);
            for i in p * page..(p + 1) * page {
                assert!(seen.insert(u128::try_from(i).expect("id"), i), "{i}");
            }
            // The overlap call of the page before is still known.
            if p > 0 {
                assert!(!seen.insert(u128::try_from(p * page - 1).expect("id"), p * page - 1));
            }
        }
        assert_eq!(seen.distinct(), 300_000);
        assert!(seen.held() <= KEEP + 2 * usize::try_from(page).expect("page"), "{}", seen.held());
    }

    #[test]
    fn a_listing_newest_first_is_remembered_two_pages_deep_too() {
        let mut seen = Seen::new();
        let page = 10_000_i64;
        let n = 30 * page;
        for p in 0..30 {
            // Starts go down: page p lists n - p*page .. n - (p+1)*page.
            let first = n - p * page;
            seen.forget_before(if p == 0 { first } else { first + page });
            for i in 0..page {
                let start = first - i;
                assert!(seen.insert(u128::try_from(start).expect("id"), start));
            }
        }
        assert!(seen.held() <= KEEP + 2 * usize::try_from(page).expect("page"), "{}", seen.held());
    }

    #[test]
    fn an_unordered_listing_is_remembered_whole() {
        let mut seen = Seen::new();
        for i in 0..200_000_i64 {
            // Starts go back once: from then on nothing is forgotten.
            let start = if i == 10 { 0 } else { i };
            seen.insert(u128::try_from(i).expect("id"), start);
            seen.forget_before(i);
        }
        assert_eq!(seen.held(), 200_000);
        assert!(!seen.insert(5, 5), "an early call is still known");
    }
}
