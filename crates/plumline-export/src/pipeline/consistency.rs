//! The checks that tell a day's read is one consistent listing: pages
//! that overlap by one call, compared position by position at each
//! boundary, and the paging arithmetic they rest on.
//!
//! Pure logic, no I/O: [`fetch`](super) makes the requests and acts on
//! what these functions find.

use std::collections::BTreeSet;

use plumline_api::MAX_LIMIT;

/// What one answer listed, in the server's order: enough to check the next
/// page against it.
#[derive(Debug, Default, Clone)]
pub(super) struct Listed {
    /// The offset asked for.
    pub(super) offset: u64,
    /// Fingerprints of the listed session ids.
    pub(super) ids: Vec<u128>,
    /// The listed calls' starts.
    pub(super) starts: Vec<i64>,
    /// Fingerprints of the listed calls' content, when the read computes
    /// them (empty otherwise).
    pub(super) contents: Vec<u128>,
}

impl Listed {
    pub(super) fn len(&self) -> usize {
        self.ids.len()
    }
}

/// What a page boundary shows about the listing between two answers.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Boundary {
    /// Both answers hold the same call at every position they share.
    Aligned,
    /// The next answer starts `extra` positions early, repeating calls the
    /// previous one held in the same order: an offset the server counts
    /// differently, or calls added before the boundary. No call is skipped,
    /// and an added call leaves the day short of `total_calls`, which the
    /// end of the read catches.
    Relisted {
        /// Calls listed twice beyond the planned one-call overlap.
        extra: usize,
    },
    /// The answers differ only among calls sharing a start: a tie the
    /// server orders differently per request. Each start's whole group must
    /// be read in one answer.
    Ties(BTreeSet<i64>),
    /// The listing moved under the read (a call before the boundary was
    /// removed, or the answers disagree beyond ties): calls may be skipped.
    Shifted,
}

/// Compares the positions two answers share.
///
/// `prev` must be a full page (it reaches `next.offset`), and
/// `next.offset > prev.offset`.
pub(super) fn check_boundary(prev: &Listed, next: &Listed) -> Boundary {
    let Some(expected) = next.offset.checked_sub(prev.offset).and_then(|d| usize::try_from(d).ok()) else {
        return Boundary::Shifted;
    };
    if expected >= prev.len() {
        // Nothing shared (a page size of 1 has no overlap).
        return Boundary::Aligned;
    }
    if next.ids.is_empty() {
        // The previous answer listed calls at offsets this one says are gone.
        return Boundary::Shifted;
    }
    if let Some(ties) = compare_from(prev, expected, next) {
        return if ties.is_empty() { Boundary::Aligned } else { Boundary::Ties(ties) };
    }
    // The next answer may start earlier than asked (repeating calls) but in
    // the same order: find its first call among the previous answer's.
    let first = next.ids[0];
    if let Some(at) = prev.ids[..expected].iter().rposition(|id| *id == first)
        && let Some(ties) = compare_from(prev, at, next)
    {
        return if ties.is_empty() {
            Boundary::Relisted { extra: expected - at }
        } else {
            Boundary::Ties(ties)
        };
    }
    Boundary::Shifted
}

/// `Some(starts of tied mismatches)` when `next` agrees with `prev` from
/// `prev[from]` on, up to calls sharing a start; `None` when a mismatch is
/// not a tie.
fn compare_from(prev: &Listed, from: usize, next: &Listed) -> Option<BTreeSet<i64>> {
    let mut ties = BTreeSet::new();
    let shared = prev.len().saturating_sub(from).min(next.len());
    for i in 0..shared {
        let (p, n) = (from + i, i);
        if prev.ids[p] == next.ids[n] {
            continue;
        }
        if prev.starts[p] != next.starts[n] {
            return None;
        }
        ties.insert(prev.starts[p]);
    }
    Some(ties)
}

/// The start of a tie that straddles the boundary: the call at the shared
/// offset has the same start as its neighbour on each side, so the group
/// extends into both answers and a server that reorders ties per request
/// can hide a member from both. `None` when no tie straddles.
pub(super) fn straddling_tie(prev: &Listed, next: &Listed) -> Option<i64> {
    let expected = usize::try_from(next.offset.checked_sub(prev.offset)?).ok()?;
    let t = *prev.starts.get(expected)?;
    let before = expected.checked_sub(1).and_then(|i| prev.starts.get(i)) == Some(&t);
    let after = next.starts.first() == Some(&t) && next.starts.get(1) == Some(&t);
    (before && after).then_some(t)
}

/// The paging of a day: page `k` at offset `k * stride`, each answer
/// sharing its last call with the next one's first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Paging {
    /// The `limit` asked for.
    pub(super) limit: u32,
    /// Calls in a full answer (what the server really serves).
    pub(super) size: u32,
    /// Offsets between pages: `size - 1`, so consecutive answers share a
    /// call (`size` when it is 1: no overlap is possible).
    pub(super) stride: u64,
}

impl Paging {
    /// The paging for a page size of `page` calls: ask one call more than
    /// the page and step by the page, so answers overlap by one call at no
    /// extra request; at the API's largest `limit`, ask the page and step by
    /// one less.
    pub(super) fn planned(page: u32) -> Self {
        let page = page.max(1);
        if page < MAX_LIMIT { Paging::served(page + 1, page + 1) } else { Paging::served(page, page) }
    }

    /// Asking `limit`, answers of `size` calls.
    fn served(limit: u32, size: u32) -> Self {
        let size = size.max(1);
        Paging { limit, size, stride: u64::from(size.saturating_sub(1).max(1)) }
    }

    /// The paging the first answer shows: a server that serves fewer calls
    /// than asked while the total is larger caps the page size, one that
    /// serves more ignores `limit`; either way follow what it does.
    pub(super) fn following_first_answer(self, listed: usize, total: u64) -> Self {
        let listed_u32 = u32::try_from(listed).unwrap_or(u32::MAX);
        if listed_u32 > 0 && listed_u32 < self.limit && (listed as u64) < total {
            Paging::served(listed_u32, listed_u32)
        } else if listed_u32 > self.limit {
            Paging::served(self.limit, listed_u32)
        } else {
            self
        }
    }

    /// Pages planned from a `total`: enough to list `total` calls.
    pub(super) fn planned_pages(self, total: u64) -> u64 {
        let size = u64::from(self.size);
        if total <= size { 1 } else { 1 + (total - size).div_ceil(self.stride) }
    }

    /// Whether an answer of `listed` calls may have more after it.
    pub(super) fn is_full(self, listed: usize) -> bool {
        listed as u64 >= u64::from(self.size)
    }

    /// Requests the pages of a static, well-behaved source cost for a day
    /// of `total` calls: the planned pages, plus one when the last is full
    /// (only a short page proves the listing ended, since `total_calls` may
    /// lag).
    pub(super) fn paging_requests(self, total: u64) -> u64 {
        let planned = self.planned_pages(total);
        let last_offset = (planned - 1) * self.stride;
        let last_len = total.saturating_sub(last_offset).min(u64::from(self.size));
        planned + u64::from(last_len >= u64::from(self.size))
    }

    /// Whether the closing read (the first page again, at the end) fits the
    /// budget of a static source, for a page size of `page`: at most 2% + 1
    /// requests over the minimum, and at most 2% more calls transferred
    /// (so only days of 50 pages or more).
    pub(super) fn closing_read_fits(self, total: u64, page: u32) -> bool {
        // paging + 1 <= 1.02 * minimum + 1, in integers.
        let requests = self.paging_requests(total) * 50 <= minimum_requests(total, page) * 51;
        let transfer = u64::from(self.size).min(total) * 50 <= total;
        requests && transfer
    }

    /// Whether a second read of the whole day at the API's largest page
    /// fits, after this paging's read, in the budget of a static source for
    /// a page size of `page` (2% + 1 requests over the minimum): then a
    /// change that keeps every count and position (a call removed and
    /// another added in pages already read, a call edited in place) is seen
    /// by comparing the two reads, within the budget. It costs one more
    /// transfer of the day. Not for a day read in one answer (a snapshot
    /// already) nor when the server serves another page size than asked (a
    /// server that caps `limit` would make the second read as long as the
    /// first).
    pub(super) fn second_read_fits(self, total: u64, page: u32) -> bool {
        let second = Paging::planned(MAX_LIMIT).paging_requests(total);
        self == Paging::planned(page)
            && page < MAX_LIMIT
            && self.planned_pages(total) > 1
            && (self.paging_requests(total) + second) * 50 <= minimum_requests(total, page) * 51 + 50
    }

    /// Requests a static, well-behaved source costs for a day of `total`
    /// calls at a page size of `page`: the pages, and the second read or
    /// the closing read when one fits.
    #[cfg(test)]
    pub(super) fn static_requests(self, total: u64, page: u32) -> u64 {
        let extra = if self.second_read_fits(total, page) {
            Paging::planned(MAX_LIMIT).paging_requests(total)
        } else {
            u64::from(self.closing_read_fits(total, page))
        };
        self.paging_requests(total) + extra
    }
}

/// The fewest requests any reader needs for `total` calls at `size` per
/// page: `ceil(total / size)`.
pub(super) fn minimum_requests(total: u64, size: u32) -> u64 {
    total.div_ceil(u64::from(size.max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(offset: u64, calls: &[(u128, i64)]) -> Listed {
        Listed {
            offset,
            ids: calls.iter().map(|c| c.0).collect(),
            starts: calls.iter().map(|c| c.1).collect(),
            ..Listed::default()
        }
    }

    #[test]
    fn boundaries_are_classified() {
        // Page size 4, stride 3: the previous page's last call is the next's first.
        let prev = listed(0, &[(1, 10), (2, 20), (3, 30), (4, 40)]);
        let cases: Vec<(&str, Listed, Boundary)> = vec![
            ("aligned", listed(3, &[(4, 40), (5, 50)]), Boundary::Aligned),
            ("removed before", listed(3, &[(5, 50), (6, 60)]), Boundary::Shifted),
            ("added before", listed(3, &[(3, 30), (4, 40), (5, 50)]), Boundary::Relisted { extra: 1 }),
            ("gone", listed(3, &[]), Boundary::Shifted),
            ("other call", listed(3, &[(9, 45), (5, 50)]), Boundary::Shifted),
        ];
        for (name, next, want) in cases {
            assert_eq!(check_boundary(&prev, &next), want, "{name}");
        }
        // A tie at 40 reordered across the boundary.
        let prev = listed(0, &[(1, 10), (2, 20), (3, 40), (4, 40)]);
        let next = listed(3, &[(3, 40), (5, 40), (6, 50)]);
        assert_eq!(check_boundary(&prev, &next), Boundary::Ties(BTreeSet::from([40])));
        assert_eq!(straddling_tie(&prev, &next), Some(40));
        // A server that ignores limit: the pages overlap by more than one.
        let prev = listed(0, &[(1, 10), (2, 20), (3, 30), (4, 40), (5, 50), (6, 60)]);
        let next = listed(3, &[(4, 40), (5, 50), (6, 60), (7, 70)]);
        assert_eq!(check_boundary(&prev, &next), Boundary::Aligned);
        let next = listed(3, &[(4, 40), (8, 55), (6, 60), (7, 70)]);
        assert_eq!(check_boundary(&prev, &next), Boundary::Shifted);
        assert_eq!(straddling_tie(&prev, &next), None);
    }

    #[test]
    fn the_first_answer_sets_the_paging() {
        let asked = Paging::planned(100);
        assert_eq!((asked.limit, asked.size, asked.stride), (101, 101, 100));
        assert_eq!(asked.following_first_answer(101, 450), asked);
        assert_eq!(asked.following_first_answer(70, 450), Paging::served(70, 70), "capped");
        assert_eq!(asked.following_first_answer(100, 450), Paging::served(100, 100), "capped at the page");
        assert_eq!(asked.following_first_answer(70, 70), asked, "a short day");
        assert_eq!(asked.following_first_answer(450, 450), Paging::served(101, 450), "limit ignored");
        assert_eq!(asked.following_first_answer(0, 450), asked, "an empty answer");
        let max = Paging::planned(MAX_LIMIT);
        assert_eq!((max.limit, max.size, max.stride), (MAX_LIMIT, MAX_LIMIT, u64::from(MAX_LIMIT) - 1));
        assert_eq!(Paging::served(1, 1).stride, 1);
        assert_eq!(Paging::planned(1).stride, 1);
    }

    #[test]
    fn planned_pages_cover_the_total() {
        for paging in [2_u32, 3, 7, 100].into_iter().flat_map(|n| [Paging::planned(n), Paging::served(n, n)])
        {
            for total in 0..2_000_u64 {
                let n = paging.planned_pages(total);
                let covered = (n - 1) * paging.stride + u64::from(paging.size);
                assert!(covered >= total, "{paging:?} total {total}: {n} pages cover {covered}");
                if n > 1 {
                    assert!((n - 2) * paging.stride + u64::from(paging.size) < total, "one page too many");
                }
            }
        }
    }

    /// The budget: on a static, well-behaved source, at most 2% + 1
    /// more requests per day than `ceil(total / page)`.
    #[test]
    fn a_static_source_costs_at_most_two_percent_plus_one_over_the_minimum() {
        let mut totals: Vec<u64> = (0..=3_000).collect();
        // The bench shapes (1M calls over 30 days; 300 pages of 1000) and
        // their neighbours, and many exact multiples of the page.
        for base in [33_334_u64, 300_000, 1_000_000, 5_000_000] {
            totals.extend(base.saturating_sub(20)..base + 20);
        }
        for size in [1_u32, 2, 100, 250, 1_000, 5_000, 9_999, 10_000] {
            totals.extend((1..300).map(|k| k * u64::from(size)));
            totals.extend((1..300).map(|k| k * u64::from(size) + 1));
            let paging = Paging::planned(size);
            for &total in &totals {
                let made = paging.static_requests(total, size);
                if size < MAX_LIMIT {
                    // One call more than the page: the overlap is free.
                    let paged = paging.paging_requests(total);
                    assert!(
                        paged - minimum_requests(total, size) <= 1,
                        "size {size}, total {total}: {paged}"
                    );
                }
                let min = minimum_requests(total, size);
                // made <= 1.02 * min + 1, in integers.
                assert!(
                    made * 50 <= min * 51 + 50,
                    "size {size}, total {total}: {made} requests, minimum {min}"
                );
            }
        }
    }
}
