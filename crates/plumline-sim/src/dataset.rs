//! [`Simulator`]: the deterministic dataset and the queries over it.
//!
//! Calls are generated per UTC day, for every number at once, from a hash of
//! (seed, number, day), so any window can be answered without generating
//! anything outside it. A generated day is a [`Day`]: compact records sorted
//! in the server's order, plus per-number position lists, kept in a bounded
//! LRU cache. Counts of whole days that are fully settled come from the same
//! hash without generating the day at all, so `total_calls` of a month costs
//! O(days), and a page costs O(days + log n + limit).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use plumline_api::{Call, CallPage, CallType, PageRequest, WireFormat};
use tracing::debug;

use crate::behaviour::Mutation;
use crate::config::{MAX_CALL_SECS, MAX_CALLS_PER_NUMBER_DAY, SimClock, SimConfig};
use crate::error::SimError;
use crate::render;
use crate::rng::{Rng, hash_str, mix64, unit};

pub(crate) const DAY_SECS: i64 = 86_400;

pub(crate) const KIND_INBOUND: u8 = 0;
pub(crate) const KIND_OUTBOUND: u8 = 1;
pub(crate) const KIND_TRANSFER: u8 = 2;
pub(crate) const KIND_UNKNOWN: u8 = 3;
const KIND_MASK: u8 = 0b011;
const LOG_BIT: u8 = 0b100;
/// The `type` of calls that have an undocumented one.
pub(crate) const UNKNOWN_TYPE: &str = "conference";

/// Share of calls given [`UNKNOWN_TYPE`] when that option is on.
const UNKNOWN_SHARE: f64 = 0.02;
/// Monday to Sunday; the mean is 1, so `calls_per_day` stays the mean.
const WEEKDAY_FACTOR: [f64; 7] = [1.15, 1.2, 1.2, 1.15, 1.05, 0.65, 0.6];
/// Relative call volume per UTC hour: quiet nights, busy office hours.
const HOUR_WEIGHT: [f64; 24] = [
    1.0, 0.6, 0.4, 0.3, 0.3, 0.5, 1.0, 2.0, 4.0, 6.0, 7.0, 7.0, 6.0, 6.5, 7.0, 6.5, 6.0, 5.0, 4.0, 3.0, 2.5,
    2.0, 1.5, 1.2,
];
/// Six-digit session prefixes: k ↦ (k·7919 + o) mod 900 000 is a bijection
/// because 7919 is prime and does not divide 900 000.
const PREFIX_SPACE: u64 = 900_000;
const PREFIX_STRIDE: u64 = 7_919;

/// One call, resident. 24 bytes; strings are formatted on demand.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rec {
    /// The other party's 10-digit number.
    pub(crate) peer: u64,
    /// Start, seconds after the day's midnight (UTC).
    pub(crate) start_sod: u32,
    /// First part of the session id, 100000..=999999, unique per (number, day).
    pub(crate) part1: u32,
    /// `end - start`, 1..=[`SimConfig::max_call_secs`].
    pub(crate) dur: u16,
    /// Index of the deployment number.
    pub(crate) number: u16,
    /// Seconds between the session's creation (last part of the id) and the start.
    pub(crate) delay: u8,
    /// Kind (2 bits) and the log flag.
    pub(crate) flags: u8,
}

impl Rec {
    pub(crate) fn kind(self) -> u8 {
        self.flags & KIND_MASK
    }

    pub(crate) fn log(self) -> bool {
        self.flags & LOG_BIT != 0
    }
}

/// One UTC day of calls for every number.
///
/// # Invariants
/// `recs` is sorted by start descending, then session id ascending (which
/// is `part1`, then `number`, because both parts are fixed-width).
/// `by_number[n]` lists, in that same order, the indices of number `n`'s calls.
///
/// ## Memory Usage
/// 24 bytes per call in `recs` plus 4 in `by_number`.
#[derive(Debug)]
pub(crate) struct Day {
    /// Days since 1970-01-01 (UTC).
    pub(crate) index: i64,
    pub(crate) recs: Box<[Rec]>,
    pub(crate) by_number: Box<[Box<[u32]>]>,
}

impl Day {
    pub(crate) fn start(&self, rec: Rec) -> i64 {
        self.index * DAY_SECS + i64::from(rec.start_sod)
    }

    /// The last part of the session id: when the session was created, never
    /// before the day's midnight so the id pins the day (and stays unique).
    pub(crate) fn session_ts(&self, rec: Rec) -> i64 {
        (self.start(rec) - i64::from(rec.delay)).max(self.index * DAY_SECS)
    }

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

    fn resident_calls(&self) -> usize {
        self.recs.len()
    }
}

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

/// A deterministic, randomly accessible dataset of calls, and the ground
/// truth of everything a [`SimServer`](crate::SimServer) answers.
///
/// Cheap to clone (clones share the cache and the clock). Usable without a
/// server: benches build pages with [`Simulator::page`] or encoded bodies
/// with [`Simulator::render_page`].
///
/// ## Memory Usage
/// About 28 bytes per call of each cached day, for at most
/// [`SimConfig::cache_calls`] calls (plus the day being generated); strings
/// are never stored. A month of 1,000,000 calls fits in about 30 MB.
#[derive(Clone)]
pub struct Simulator {
    inner: Arc<Inner>,
}

struct Inner {
    config: SimConfig,
    numbers: Vec<String>,
    number_hash: Vec<u64>,
    by_name: HashMap<String, u16>,
    json_numbers: Vec<String>,
    xml_numbers: Vec<String>,
    part2_width: usize,
    cache: Mutex<DayCache>,
    /// Days changed by mutations: they take precedence over the cache and
    /// are never evicted, so a mutation is never lost.
    patches: Mutex<Patches>,
    /// Whether `patches` holds any day (a lock-free check for the hot path).
    patched: AtomicBool,
    /// Serializes mutations (read, change, store).
    mutating: Mutex<()>,
}

#[derive(Default)]
struct Patches {
    days: HashMap<i64, Arc<Day>>,
    /// Session-id prefixes handed out to inserted calls, per (number, day).
    fresh: HashMap<(u16, i64), u64>,
    mutations: u64,
}

struct DayCache {
    days: HashMap<i64, (Arc<Day>, u64)>,
    tick: u64,
    resident_calls: usize,
}

impl fmt::Debug for Simulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Simulator")
            .field("seed", &self.inner.config.seed)
            .field("numbers", &self.inner.numbers)
            .field("live", &self.inner.config.live)
            .field("cached_calls", &self.cached_calls())
            .finish_non_exhaustive()
    }
}

impl Simulator {
    /// Builds the dataset described by `config`. Generates nothing yet.
    pub fn new(config: SimConfig) -> Result<Self, SimError> {
        config.validate()?;
        let numbers = if config.numbers.is_empty() {
            generate_numbers(config.seed, config.generated_numbers)
        } else {
            config.numbers.clone()
        };
        let mut by_name = HashMap::with_capacity(numbers.len());
        for (i, n) in numbers.iter().enumerate() {
            // `validate` capped the count at u16::MAX.
            by_name.insert(n.clone(), u16::try_from(i).unwrap_or(u16::MAX));
        }
        let inner = Inner {
            number_hash: numbers.iter().map(|n| hash_str(n)).collect(),
            json_numbers: numbers.iter().map(|n| render::json_escaped(n)).collect(),
            xml_numbers: numbers.iter().map(|n| render::xml_escaped(n)).collect(),
            part2_width: numbers.len().to_string().len().max(3),
            by_name,
            numbers,
            config,
            cache: Mutex::new(DayCache { days: HashMap::new(), tick: 0, resident_calls: 0 }),
            patches: Mutex::new(Patches::default()),
            patched: AtomicBool::new(false),
            mutating: Mutex::new(()),
        };
        Ok(Simulator { inner: Arc::new(inner) })
    }

    /// The configuration this dataset was built from.
    #[must_use]
    pub fn config(&self) -> &SimConfig {
        &self.inner.config
    }

    /// The deployment numbers served (generated ones if none were given).
    #[must_use]
    pub fn numbers(&self) -> &[String] {
        &self.inner.numbers
    }

    /// The clock live mode reads.
    #[must_use]
    pub fn clock(&self) -> &SimClock {
        &self.inner.config.clock
    }

    /// The simulator's current time (UNIX seconds).
    #[must_use]
    pub fn now(&self) -> i64 {
        self.inner.config.clock.now()
    }

    /// Sets the clock to `now` (making it manual). Only live mode cares.
    pub fn set_now(&self, now: i64) {
        self.inner.config.clock.set(now);
    }

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

    /// Calls currently held in the day cache.
    #[must_use]
    pub fn cached_calls(&self) -> usize {
        self.inner.cache.lock().unwrap_or_else(PoisonError::into_inner).resident_calls
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

    pub(crate) fn json_number(&self, index: u16) -> &str {
        &self.inner.json_numbers[usize::from(index)]
    }

    pub(crate) fn xml_number(&self, index: u16) -> &str {
        &self.inner.xml_numbers[usize::from(index)]
    }

    pub(crate) fn part2_width(&self) -> usize {
        self.inner.part2_width
    }

    fn to_calls(&self, resolved: &Resolved) -> Vec<Call> {
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

    fn day_hash(&self, number: usize, day: i64) -> u64 {
        #[allow(clippy::cast_sign_loss, reason = "only the bits matter")]
        let day_bits = day as u64;
        mix64(mix64(self.inner.config.seed) ^ self.inner.number_hash[number] ^ mix64(day_bits ^ 0xDA7))
    }

    /// Calls of `number` starting on `day`, before clipping to the data range.
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "validate() bounds the mean so the count stays within u32"
    )]
    fn day_count(&self, number: usize, day: i64) -> u32 {
        let h = self.day_hash(number, day);
        let weekday = WEEKDAY_FACTOR[(day + 3).rem_euclid(7) as usize]; // 1970-01-01 was a Thursday
        let jitter = 0.7 + 0.6 * unit(mix64(h ^ 0xA11CE));
        let expected = self.inner.config.calls_per_day * weekday * jitter;
        // Stochastic rounding keeps small fractional means right on average.
        let base = expected.floor();
        let n = base as u64 + u64::from(unit(mix64(h ^ 0xB0B)) < expected - base);
        n.min(u64::from(MAX_CALLS_PER_NUMBER_DAY)) as u32
    }

    fn is_patched(&self, d: i64) -> bool {
        self.inner.patched.load(Ordering::Acquire) && self.patches().days.contains_key(&d)
    }

    fn patches(&self) -> std::sync::MutexGuard<'_, Patches> {
        self.inner.patches.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn day(&self, d: i64) -> Arc<Day> {
        if self.inner.patched.load(Ordering::Acquire)
            && let Some(day) = self.patches().days.get(&d)
        {
            return Arc::clone(day);
        }
        {
            let mut cache = self.inner.cache.lock().unwrap_or_else(PoisonError::into_inner);
            cache.tick += 1;
            let tick = cache.tick;
            if let Some(entry) = cache.days.get_mut(&d) {
                entry.1 = tick;
                return Arc::clone(&entry.0);
            }
        }
        // Generated outside the lock so other days stay servable meanwhile;
        // two requests racing for the same day generate it twice, identically.
        let day = Arc::new(self.generate(d));
        debug!(day = d, n_calls = day.recs.len(), "generated day");
        let mut cache = self.inner.cache.lock().unwrap_or_else(PoisonError::into_inner);
        cache.tick += 1;
        let tick = cache.tick;
        if let Some(entry) = cache.days.get_mut(&d) {
            entry.1 = tick;
            return Arc::clone(&entry.0);
        }
        cache.resident_calls += day.resident_calls();
        cache.days.insert(d, (Arc::clone(&day), tick));
        let budget = self.inner.config.cache_calls;
        while cache.resident_calls > budget && cache.days.len() > 1 {
            let oldest =
                cache.days.iter().filter(|(k, _)| **k != d).min_by_key(|(_, (_, t))| *t).map(|(k, _)| *k);
            let Some(oldest) = oldest else { break };
            if let Some((evicted, _)) = cache.days.remove(&oldest) {
                cache.resident_calls -= evicted.resident_calls();
            }
        }
        day
    }

    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "all values are bounded far below the target types, and positive"
    )]
    fn generate(&self, d: i64) -> Day {
        let config = &self.inner.config;
        let day_start = d * DAY_SECS;
        let mut recs = Vec::new();
        for number in 0..self.inner.numbers.len() {
            let h = self.day_hash(number, d);
            let count = self.day_count(number, d);
            recs.reserve(count as usize);
            let mut rng = Rng::new(h ^ 0x5EED_CA11);
            let prefix_offset = mix64(h ^ 0x1D) % PREFIX_SPACE;
            let mut lead_sod = 0;
            for k in 0..u64::from(count) {
                // Every draw is made for every call, whatever the options,
                // so turning an option on changes only what it is about.
                let mut start_sod = diurnal(&mut rng);
                let mut dur = duration(&mut rng);
                if config.ties > 1 {
                    // Runs of `ties` consecutive calls share the run's first start.
                    if k % u64::from(config.ties) == 0 {
                        lead_sod = start_sod;
                    } else {
                        start_sod = lead_sod;
                    }
                }
                if let Some(long) = config.long_calls {
                    // From a hash, not the stream, so the other fields stay put.
                    let bits = mix64(h ^ mix64(k ^ 0x10C6_CA11));
                    if unit(bits) < long.share {
                        let max = f64::from(long.max_secs);
                        let min = max.min(1_800.0);
                        dur = (min + unit(mix64(bits)) * (max - min)).round().clamp(1.0, max) as u16;
                    }
                }
                let kind_draw = rng.f64();
                let unknown_draw = rng.f64();
                let log = rng.f64() < 0.9;
                let peer = 2_000_000_000 + rng.below(8_000_000_000);
                let delay = rng.below(120) as u8;
                let start = day_start + i64::from(start_sod);
                if start < config.data_start || start >= config.data_end {
                    continue;
                }
                let kind = if config.unknown_types && unknown_draw < UNKNOWN_SHARE {
                    KIND_UNKNOWN
                } else if kind_draw < 0.7 {
                    KIND_INBOUND
                } else if kind_draw < 0.9 {
                    KIND_OUTBOUND
                } else {
                    KIND_TRANSFER
                };
                recs.push(Rec {
                    peer,
                    start_sod,
                    part1: ((k * PREFIX_STRIDE + prefix_offset) % PREFIX_SPACE + 100_000) as u32,
                    dur,
                    number: number as u16,
                    delay,
                    flags: kind | if log { LOG_BIT } else { 0 },
                });
            }
        }
        self.build_day(d, recs)
    }

    /// A [`Day`] from its records, in the server's order.
    #[allow(clippy::cast_possible_truncation, reason = "a day holds far fewer than 2^32 calls")]
    fn build_day(&self, d: i64, mut recs: Vec<Rec>) -> Day {
        recs.sort_unstable_by(|a, b| {
            b.start_sod.cmp(&a.start_sod).then(a.part1.cmp(&b.part1)).then(a.number.cmp(&b.number))
        });
        let mut by_number: Vec<Vec<u32>> = vec![Vec::new(); self.inner.numbers.len()];
        for (i, rec) in recs.iter().enumerate() {
            by_number[usize::from(rec.number)].push(i as u32);
        }
        Day {
            index: d,
            recs: recs.into_boxed_slice(),
            by_number: by_number.into_iter().map(Vec::into_boxed_slice).collect(),
        }
    }

    /// Mutations applied so far.
    #[must_use]
    pub fn mutations(&self) -> u64 {
        self.patches().mutations
    }

    /// Applies one `mutation` to the listing of `[start, end_inclusive]`
    /// (optionally one number) at a position drawn from `rng` in
    /// `[0, region_end)` (`None`: the whole listing). Returns whether the
    /// data changed (an empty listing, or no fresh session id left, changes
    /// nothing).
    pub(crate) fn mutate(
        &self,
        start: i64,
        end_inclusive: i64,
        number: Option<&str>,
        region_end: Option<u64>,
        mutation: Mutation,
        rng: &mut Rng,
    ) -> bool {
        let _guard = self.inner.mutating.lock().unwrap_or_else(PoisonError::into_inner);
        let listing = self.resolve(start, end_inclusive, number, usize::MAX, 0);
        let len = listing.items.len() as u64;
        if len == 0 {
            return false;
        }
        let hi = region_end.map_or(len, |e| e.clamp(1, len));
        let Some(&(slot, index)) = usize::try_from(rng.below(hi)).ok().and_then(|p| listing.items.get(p))
        else {
            return false;
        };
        let day = &listing.days[slot as usize];
        let index = index as usize;
        let rec = day.recs[index];
        let mut recs = day.recs.to_vec();
        if matches!(mutation, Mutation::Insert | Mutation::Swap) {
            let Some(fresh) = self.fresh_rec(day.index, rec, rng) else {
                return false;
            };
            recs.push(fresh);
        }
        if matches!(mutation, Mutation::Remove | Mutation::Swap) {
            recs.remove(index);
        }
        let patched = Arc::new(self.build_day(day.index, recs));
        debug!(day = day.index, mutation = ?mutation, n_calls = patched.recs.len(), "mutated day");
        let mut all = self.patches();
        all.days.insert(day.index, patched);
        all.mutations += 1;
        self.inner.patched.store(true, Ordering::Release);
        true
    }

    /// A new call like `like` (same number, start, duration and kind) with
    /// a session id no generated or inserted call of its day has.
    #[allow(clippy::cast_possible_truncation, reason = "below 1 000 000")]
    fn fresh_rec(&self, d: i64, like: Rec, rng: &mut Rng) -> Option<Rec> {
        let number = usize::from(like.number);
        let generated = u64::from(self.day_count(number, d));
        let k = {
            let mut patches = self.patches();
            let used = patches.fresh.entry((like.number, d)).or_insert(0);
            *used += 1;
            generated + *used - 1
        };
        if k >= PREFIX_SPACE {
            return None;
        }
        let prefix_offset = mix64(self.day_hash(number, d) ^ 0x1D) % PREFIX_SPACE;
        Some(Rec {
            peer: 2_000_000_000 + rng.below(8_000_000_000),
            part1: ((k * PREFIX_STRIDE + prefix_offset) % PREFIX_SPACE + 100_000) as u32,
            delay: rng.below(120) as u8,
            ..like
        })
    }
}

/// A start time within the day, following [`HOUR_WEIGHT`].
#[allow(clippy::cast_possible_truncation, reason = "below 86 400")]
fn diurnal(rng: &mut Rng) -> u32 {
    let total: f64 = HOUR_WEIGHT.iter().sum();
    let mut u = rng.f64() * total;
    let second = rng.below(3_600) as u32;
    for (hour, weight) in (0u32..).zip(HOUR_WEIGHT) {
        if u < weight {
            return hour * 3_600 + second;
        }
        u -= weight;
    }
    23 * 3_600 + second
}

/// A call length: log-normal around 90 s (most calls a minute or two, some
/// up to an hour), plus a 1 % tail of 30 minutes to 2 hours.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "clamped to 1..=7200")]
fn duration(rng: &mut Rng) -> u16 {
    let tail = rng.f64() < 0.01;
    let z = rng.normal();
    let u = rng.f64();
    let secs = if tail { 1_800.0 + u * 5_400.0 } else { (90f64.ln() + z).exp().clamp(1.0, 3_600.0) };
    (secs.round() as u16).clamp(1, MAX_CALL_SECS as u16)
}

/// `count` distinct 10-digit deployment numbers derived from `seed`.
fn generate_numbers(seed: u64, count: usize) -> Vec<String> {
    const PREFIXES: [&str; 8] = ["800", "833", "844", "855", "866", "877", "888", "617"];
    let mut rng = Rng::new(mix64(seed ^ 0x4E55_4D42));
    let mut numbers = Vec::with_capacity(count);
    let mut distinct = std::collections::HashSet::with_capacity(count);
    while numbers.len() < count {
        let prefix = PREFIXES[usize::try_from(rng.below(PREFIXES.len() as u64)).unwrap_or(0)];
        let number = format!("{prefix}{:07}", rng.below(10_000_000));
        if distinct.insert(number.clone()) {
            numbers.push(number);
        }
    }
    numbers
}

#[cfg(test)]
mod tests;
