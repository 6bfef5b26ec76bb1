//! Queries: a window (optionally one number) resolved to the records it
//! lists, in the server's order (start descending, then session id), and
//! the calls and bodies made from them.
//!
//! A query is split per UTC day; a whole settled day that no mutation
//! touched is counted from the hash without generating it, so
//! `total_calls` of a month costs O(days), and a page O(days + log n + limit).

use std::sync::Arc;

use plumline_api::{Call, CallPage, CallType, PageRequest, WireFormat};

use super::Simulator;
use super::generation::{DAY_SECS, Day, KIND_INBOUND, KIND_OUTBOUND, KIND_TRANSFER, Rec, UNKNOWN_TYPE};
use crate::render;

/// Which calls of a day a query sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Filter {
    All,
    Number(u16),
}

/// The calls of one day that a query sees, in order.
enum Segment {
    /// A whole settled day, counted without generating it.
    Counted { day: i64, len: u64 },
    /// A generated day: `picked` view indices first, then view indices `lo..hi`.
    Loaded { day: Arc<Day>, picked: Vec<u32>, lo: usize, hi: usize },
}

impl Segment {
    fn len(&self) -> u64 {
        match self {
            Segment::Counted { len, .. } => *len,
            Segment::Loaded { picked, lo, hi, .. } => (picked.len() + (hi - lo)) as u64,
        }
    }
}

/// One page, resolved to records: `items` are (index into `days`, index
/// into that day's `recs`).
pub(crate) struct Resolved {
    pub(crate) days: Vec<Arc<Day>>,
    pub(crate) items: Vec<(u32, u32)>,
    pub(crate) total: u64,
}

impl Resolved {
    fn empty() -> Self {
        Resolved { days: Vec::new(), items: Vec::new(), total: 0 }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&Day, Rec)> + '_ {
        self.items.iter().map(|&(slot, i)| {
            let day = &*self.days[slot as usize];
            (day, day.recs[i as usize])
        })
    }
}

impl Day {
    fn view_len(&self, filter: Filter) -> usize {
        match filter {
            Filter::All => self.recs.len(),
            Filter::Number(n) => self.by_number[usize::from(n)].len(),
        }
    }

    #[allow(clippy::cast_possible_truncation, reason = "a day holds far fewer than 2^32 calls")]
    fn rec_index(&self, filter: Filter, view_index: usize) -> u32 {
        match filter {
            Filter::All => view_index as u32,
            Filter::Number(n) => self.by_number[usize::from(n)][view_index],
        }
    }

    /// The first view index where `pred` (of the call's start) stops
    /// holding; `pred` must hold on a prefix of the view.
    fn partition_point(&self, filter: Filter, pred: impl Fn(i64) -> bool) -> usize {
        match filter {
            Filter::All => self.recs.partition_point(|r| pred(self.start(*r))),
            Filter::Number(n) => {
                self.by_number[usize::from(n)].partition_point(|&i| pred(self.start(self.recs[i as usize])))
            }
        }
    }
}

impl Simulator {
    /// Every visible call starting in `[start, end_inclusive]`, optionally of
    /// one number, in the server's order (start descending, then session id
    /// ascending). An unknown number has no calls.
    #[must_use]
    pub fn calls_in(&self, start: i64, end_inclusive: i64, number: Option<&str>) -> Vec<Call> {
        let resolved = self.resolve(start, end_inclusive, number, usize::MAX, 0);
        self.to_calls(&resolved)
    }

    /// How many visible calls start in `[start, end_inclusive]`: the
    /// `total_calls` the server answers for that query.
    #[must_use]
    pub fn count_in(&self, start: i64, end_inclusive: i64, number: Option<&str>) -> u64 {
        self.resolve(start, end_inclusive, number, 0, 0).total
    }

    /// The page the server would answer for `request`.
    #[must_use]
    pub fn page(&self, request: &PageRequest) -> CallPage {
        let resolved = self.resolve_request(request);
        CallPage { calls: self.to_calls(&resolved), total_calls: resolved.total }
    }

    /// Appends the body the server would send for `request` in `format`
    /// (with this simulator's quirks setting) to `out`; returns the number
    /// of calls written.
    pub fn render_page(&self, request: &PageRequest, format: WireFormat, out: &mut Vec<u8>) -> usize {
        let resolved = self.resolve_request(request);
        self.render(&resolved, request.offset(), format, out);
        resolved.items.len()
    }

    pub(crate) fn render(&self, resolved: &Resolved, offset: u64, format: WireFormat, out: &mut Vec<u8>) {
        let quirks = self.inner.config.quirks;
        match format {
            WireFormat::Json => render::json_page(self, resolved, offset, quirks, out),
            WireFormat::Xml => render::xml_page(self, resolved, quirks, out),
        }
    }

    fn resolve_request(&self, request: &PageRequest) -> Resolved {
        let query = request.query();
        let limit = usize::try_from(request.limit()).unwrap_or(usize::MAX);
        self.resolve(query.start(), query.end(), query.number(), limit, request.offset())
    }

    pub(crate) fn to_calls(&self, resolved: &Resolved) -> Vec<Call> {
        resolved.iter().map(|(day, rec)| self.call(day, rec)).collect()
    }

    fn call(&self, day: &Day, rec: Rec) -> Call {
        let number = || self.inner.numbers[usize::from(rec.number)].clone();
        let peer = || rec.peer.to_string();
        let (dest, src, call_type) = match rec.kind() {
            KIND_INBOUND => (number(), peer(), CallType::Inbound),
            KIND_OUTBOUND => (peer(), "Outbound".to_owned(), CallType::Outbound),
            KIND_TRANSFER => (peer(), number(), CallType::Transfer),
            _ => (number(), peer(), CallType::Other(UNKNOWN_TYPE.to_owned())),
        };
        let start = day.start(rec);
        Call {
            dest,
            src,
            start,
            end: start + i64::from(rec.dur),
            session_id: format!(
                "{};{:0width$};{}",
                rec.part1,
                usize::from(rec.number) + 1,
                day.session_ts(rec),
                width = self.inner.part2_width
            ),
            call_type,
            log: rec.log(),
        }
    }

    /// Resolves the `limit` calls at `offset` of the query, and its total.
    ///
    /// `usize::MAX` as limit means all; 0 only counts.
    pub(crate) fn resolve(
        &self,
        start: i64,
        end_inclusive: i64,
        number: Option<&str>,
        limit: usize,
        offset: u64,
    ) -> Resolved {
        let filter = match number.filter(|n| !n.is_empty()) {
            None => Filter::All,
            Some(n) => match self.inner.by_name.get(n) {
                Some(&i) => Filter::Number(i),
                None => return Resolved::empty(),
            },
        };
        let now = self.inner.config.live.then(|| self.now());
        let segments = self.plan(start, end_inclusive, filter, now);
        let total: u64 = segments.iter().map(Segment::len).sum();
        let wanted = usize::try_from(total.saturating_sub(offset)).unwrap_or(usize::MAX).min(limit);
        let mut resolved = Resolved { days: Vec::new(), items: Vec::with_capacity(wanted), total };
        let mut skip = offset;
        for segment in segments {
            if resolved.items.len() >= wanted {
                break;
            }
            let len = segment.len();
            if skip >= len {
                skip -= len;
                continue;
            }
            let (day, picked, lo, hi) = match segment {
                Segment::Counted { day, len } => {
                    let day = self.day(day);
                    let hi = day.view_len(filter);
                    debug_assert_eq!(hi as u64, len, "day count formula and generation disagree");
                    (day, Vec::new(), 0, hi)
                }
                Segment::Loaded { day, picked, lo, hi } => (day, picked, lo, hi),
            };
            let slot = u32::try_from(resolved.days.len()).unwrap_or(u32::MAX);
            let take = wanted - resolved.items.len();
            // `skip < len`, and len fits in usize because it counts resident records.
            let skip_now = usize::try_from(skip).unwrap_or(usize::MAX);
            let views = picked.iter().map(|&i| i as usize).chain(lo..hi).skip(skip_now).take(take);
            resolved.items.extend(views.map(|v| (slot, day.rec_index(filter, v))));
            resolved.days.push(day);
            skip = 0;
        }
        resolved
    }

    /// Splits the query into per-day segments, newest day first.
    fn plan(&self, start: i64, end_inclusive: i64, filter: Filter, now: Option<i64>) -> Vec<Segment> {
        let config = &self.inner.config;
        let lo = start.max(config.data_start);
        let mut hi = end_inclusive.min(config.data_end - 1);
        if let Some(now) = now {
            // A call that starts at `now` or later cannot have ended (durations are ≥ 1 s).
            hi = hi.min(now.saturating_sub(1));
        }
        let max_call = config.max_call_secs();
        if lo > hi {
            return Vec::new();
        }
        let mut segments = Vec::new();
        for d in (lo.div_euclid(DAY_SECS)..=hi.div_euclid(DAY_SECS)).rev() {
            let day_start = d * DAY_SECS;
            let day_end = day_start + DAY_SECS - 1;
            let (a, b) = (lo.max(day_start), hi.min(day_end));
            let whole = a == day_start && b == day_end;
            let settled = now.is_none_or(|now| day_end + max_call <= now);
            let inside_data = day_start >= config.data_start && day_end < config.data_end;
            if whole && settled && inside_data && !self.is_patched(d) {
                let len = match filter {
                    Filter::All => {
                        (0..self.inner.numbers.len()).map(|n| u64::from(self.day_count(n, d))).sum()
                    }
                    Filter::Number(n) => u64::from(self.day_count(usize::from(n), d)),
                };
                if len > 0 {
                    segments.push(Segment::Counted { day: d, len });
                }
                continue;
            }
            let day = self.day(d);
            let first = day.partition_point(filter, |s| s > b);
            let last = day.partition_point(filter, |s| s >= a).max(first);
            let mut picked = Vec::new();
            let mut lo_view = first;
            if let Some(now) = now {
                // Only calls that started within the longest call of now may still be running.
                let cut = day.partition_point(filter, |s| s > now - max_call).clamp(first, last);
                for v in first..cut {
                    let rec = day.recs[day.rec_index(filter, v) as usize];
                    if day.start(rec) + i64::from(rec.dur) <= now {
                        picked.push(u32::try_from(v).unwrap_or(u32::MAX));
                    }
                }
                lo_view = cut;
            }
            if !picked.is_empty() || lo_view < last {
                segments.push(Segment::Loaded { day, picked, lo: lo_view, hi: last });
            }
        }
        segments
    }
}
