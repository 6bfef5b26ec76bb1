//! Generation: the calls of one UTC day, for every number at once, as a
//! pure function of (seed, number, day).
//!
//! Every draw is made for every call whatever the options, so an option
//! changes only what it is about; counts of a day come from the same hash
//! without generating it (`day_count`).

use super::Simulator;
use crate::config::{MAX_CALL_SECS, MAX_CALLS_PER_NUMBER_DAY};
use crate::rng::{Rng, mix64, unit};

pub(super) const DAY_SECS: i64 = 86_400;

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
}

impl Simulator {
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
    pub(super) fn day_count(&self, number: usize, day: i64) -> u32 {
        let h = self.day_hash(number, day);
        let weekday = WEEKDAY_FACTOR[(day + 3).rem_euclid(7) as usize]; // 1970-01-01 was a Thursday
        let jitter = 0.7 + 0.6 * unit(mix64(h ^ 0xA11CE));
        let expected = self.inner.config.calls_per_day * weekday * jitter;
        // Stochastic rounding keeps small fractional means right on average.
        let base = expected.floor();
        let n = base as u64 + u64::from(unit(mix64(h ^ 0xB0B)) < expected - base);
        n.min(u64::from(MAX_CALLS_PER_NUMBER_DAY)) as u32
    }

    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "all values are bounded far below the target types, and positive"
    )]
    pub(super) fn generate(&self, d: i64) -> Day {
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
    pub(super) fn build_day(&self, d: i64, mut recs: Vec<Rec>) -> Day {
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

    /// A new call like `like` (same number, start, duration and kind) with
    /// a session id no generated or inserted call of its day has.
    #[allow(clippy::cast_possible_truncation, reason = "below 1 000 000")]
    pub(super) fn fresh_rec(&self, d: i64, like: Rec, rng: &mut Rng) -> Option<Rec> {
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
pub(super) fn generate_numbers(seed: u64, count: usize) -> Vec<String> {
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
