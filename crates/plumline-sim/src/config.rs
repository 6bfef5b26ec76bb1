//! [`SimConfig`], [`Faults`], [`Fault`] and [`SimClock`]: what the simulator
//! serves and how it misbehaves.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use plumline_api::Credentials;

use crate::behaviour::Behaviours;
use crate::error::SimError;

/// The demo account's email, accepted by a default simulator.
pub const DEMO_EMAIL: &str = "demo@plumline.invalid";
/// The demo account's developer key, accepted by a default simulator.
pub const DEMO_KEY: &str = "demo-key";
/// How many deployment numbers a default simulator generates.
pub const DEFAULT_NUMBER_COUNT: usize = 3;
/// The longest call the simulator generates by default, in seconds (2 hours).
///
/// Live-mode consumers can rely on it unless [`SimConfig::long_calls`] is
/// set: a call that started more than this long ago has ended. With long
/// calls, [`SimConfig::max_call_secs`] is the bound.
pub const MAX_CALL_SECS: i64 = 7_200;
/// At most this many calls per number per UTC day; session ids stay in the
/// vendor's six-digit shape up to it.
pub const MAX_CALLS_PER_NUMBER_DAY: u32 = 900_000;

/// Everything that decides what a simulator serves.
///
/// The data is a pure function of `seed`, the effective numbers,
/// `calls_per_day`, `data_start`/`data_end` and `unknown_types`: the same
/// values give the same calls, byte for byte, on every machine. `quirks`
/// changes only the encoding, `live` and `clock` only which calls are
/// visible, `faults` only whether a request is answered.
///
/// Fields are public so callers can set what they need; the `with_*`
/// helpers read better in chains. [`SimConfig::validate`] runs when a
/// [`Simulator`](crate::Simulator) is built.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Seed of every random choice.
    pub seed: u64,
    /// Deployment numbers. Empty (the default) means `generated_numbers`
    /// 10-digit numbers derived from `seed`.
    pub numbers: Vec<String>,
    /// How many numbers to generate when `numbers` is empty.
    pub generated_numbers: usize,
    /// Mean calls per number per day. Each day's count is this, scaled by a
    /// day-of-week factor (weekends are quieter) and a deterministic ±30 %
    /// per-day jitter.
    pub calls_per_day: f64,
    /// Calls start at or after this instant (UNIX seconds).
    pub data_start: i64,
    /// Calls start strictly before this instant (UNIX seconds).
    pub data_end: i64,
    /// The only credentials the server accepts.
    pub credentials: Credentials,
    /// Encode responses the loose way some servers of this family do
    /// (numbers as strings, `log` as `1`, extra fields, PHP-style objects).
    /// Never changes the data.
    pub quirks: bool,
    /// Give about 2 % of calls a `type` the vendor never documented
    /// (`conference`), so consumers can test their catch-all.
    pub unknown_types: bool,
    /// List a call only once it has ended (`end <= now`), as the real API does.
    pub live: bool,
    /// Where "now" comes from in live mode.
    pub clock: SimClock,
    /// Faults the server starts with (changeable at run time).
    pub faults: Faults,
    /// Upper bound on calls held in the day cache; about 28 bytes each.
    pub cache_calls: usize,
    /// Force ties in `start`: when above 1, calls of a number come in runs
    /// of this many sharing one start second (e.g. 4 puts four calls on
    /// every start second used). 0 or 1 leaves starts independent.
    pub ties: u32,
    /// Give a share of calls a long duration (up to several hours), as live
    /// call centres have; `None` keeps every call within [`MAX_CALL_SECS`].
    pub long_calls: Option<LongCalls>,
    /// How the server answers beyond the happy path (all off by default).
    pub behaviours: Behaviours,
}

/// A share of calls that last long: uniformly from 30 minutes (or
/// `max_secs`, if shorter) to `max_secs`.
///
/// In live mode such calls are listed only once they end, hours after
/// their start, so the days they start in stay incomplete for that long.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LongCalls {
    /// Share of calls made long, in `[0, 1]`.
    pub share: f64,
    /// The longest call, in seconds (at most 65 535).
    pub max_secs: u32,
}

impl Default for LongCalls {
    /// 5 % of calls last from 30 minutes up to 4 hours
    /// ([`plumline_api::LONGEST_CALL`]).
    fn default() -> Self {
        LongCalls { share: 0.05, max_secs: 4 * 3_600 }
    }
}

impl Default for SimConfig {
    /// Seed 1, three generated numbers, 1,000 calls per number per day over
    /// January 2025, the demo credentials, no quirks, no faults.
    fn default() -> Self {
        SimConfig {
            seed: 1,
            numbers: Vec::new(),
            generated_numbers: DEFAULT_NUMBER_COUNT,
            calls_per_day: 1_000.0,
            data_start: 1_735_689_600,             // 2025-01-01T00:00:00Z
            data_end: 1_735_689_600 + 31 * 86_400, // 2025-02-01T00:00:00Z
            credentials: Credentials::new(DEMO_EMAIL, DEMO_KEY),
            quirks: false,
            unknown_types: false,
            live: false,
            clock: SimClock::system(),
            faults: Faults::default(),
            cache_calls: 1_500_000,
            ties: 0,
            long_calls: None,
            behaviours: Behaviours::default(),
        }
    }
}

impl SimConfig {
    /// The default configuration with another seed.
    #[must_use]
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Serve these deployment numbers instead of generated ones.
    #[must_use]
    pub fn with_numbers<I, S>(mut self, numbers: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.numbers = numbers.into_iter().map(Into::into).collect();
        self
    }

    /// Generate `count` numbers from the seed (only when `numbers` is empty).
    #[must_use]
    pub fn with_generated_numbers(mut self, count: usize) -> Self {
        self.generated_numbers = count;
        self
    }

    /// Mean calls per number per day.
    #[must_use]
    pub fn with_calls_per_day(mut self, calls_per_day: f64) -> Self {
        self.calls_per_day = calls_per_day;
        self
    }

    /// Calls start in `[start, end)` (UNIX seconds).
    #[must_use]
    pub fn with_data_range(mut self, start: i64, end: i64) -> Self {
        self.data_start = start;
        self.data_end = end;
        self
    }

    /// Accept these credentials (and no others).
    #[must_use]
    pub fn with_credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = credentials;
        self
    }

    /// Turn quirky encoding on or off.
    #[must_use]
    pub fn with_quirks(mut self, quirks: bool) -> Self {
        self.quirks = quirks;
        self
    }

    /// Turn undocumented call types on or off.
    #[must_use]
    pub fn with_unknown_types(mut self, unknown_types: bool) -> Self {
        self.unknown_types = unknown_types;
        self
    }

    /// Live mode: only ended calls are visible, per `clock`.
    #[must_use]
    pub fn with_live(mut self, live: bool) -> Self {
        self.live = live;
        self
    }

    /// Read "now" from this clock.
    #[must_use]
    pub fn with_clock(mut self, clock: SimClock) -> Self {
        self.clock = clock;
        self
    }

    /// Start with these faults.
    #[must_use]
    pub fn with_faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }

    /// Bound the day cache to about this many calls.
    #[must_use]
    pub fn with_cache_calls(mut self, cache_calls: usize) -> Self {
        self.cache_calls = cache_calls;
        self
    }

    /// Runs of `ties` calls share a start second (0 or 1: no forced ties).
    #[must_use]
    pub fn with_ties(mut self, ties: u32) -> Self {
        self.ties = ties;
        self
    }

    /// Make a share of calls long (see [`LongCalls`]).
    #[must_use]
    pub fn with_long_calls(mut self, long_calls: Option<LongCalls>) -> Self {
        self.long_calls = long_calls;
        self
    }

    /// Serve with these behaviours.
    #[must_use]
    pub fn with_behaviours(mut self, behaviours: Behaviours) -> Self {
        self.behaviours = behaviours;
        self
    }

    /// The longest call this configuration generates, in seconds:
    /// [`MAX_CALL_SECS`], or the long calls' maximum when that is larger.
    /// In live mode a window is complete once its end is this far in the past.
    #[must_use]
    pub fn max_call_secs(&self) -> i64 {
        self.long_calls.map_or(MAX_CALL_SECS, |l| MAX_CALL_SECS.max(i64::from(l.max_secs)))
    }

    /// Checks that the configuration can be served.
    pub fn validate(&self) -> Result<(), SimError> {
        let invalid = |msg: String| Err(SimError::InvalidConfig(msg));
        if self.data_start >= self.data_end {
            return invalid(format!(
                "the data range is empty: data_start ({}) must be before data_end ({})",
                self.data_start, self.data_end
            ));
        }
        // Calls per day beyond the cap would need a wider session id.
        let max_mean = f64::from(MAX_CALLS_PER_NUMBER_DAY) / 1.3 / 1.2;
        if !self.calls_per_day.is_finite() || self.calls_per_day < 0.0 || self.calls_per_day > max_mean {
            return invalid(format!(
                "calls per day ({}) must be between 0 and {max_mean:.0}",
                self.calls_per_day
            ));
        }
        if self.numbers.is_empty() && self.generated_numbers == 0 {
            return invalid("no numbers to serve: give numbers or a generated count above 0".into());
        }
        let count = if self.numbers.is_empty() { self.generated_numbers } else { self.numbers.len() };
        if count > usize::from(u16::MAX) {
            return invalid(format!(
                "{count} numbers is too many: the simulator serves at most {}",
                u16::MAX
            ));
        }
        let mut seen = HashSet::new();
        for number in &self.numbers {
            if number.is_empty() {
                return invalid("a deployment number is empty".into());
            }
            if !seen.insert(number) {
                return invalid(format!("deployment number {number} is listed twice"));
            }
        }
        if self.credentials.email.is_empty() || self.credentials.developer_key.expose().is_empty() {
            return invalid("the simulator needs a non-empty email and developer key".into());
        }
        if self.ties > 1_000 {
            return invalid(format!("ties ({}) must be at most 1000 calls per start second", self.ties));
        }
        if let Some(long) = self.long_calls {
            if !(0.0..=1.0).contains(&long.share) {
                return invalid(format!("the share of long calls ({}) must be between 0 and 1", long.share));
            }
            if long.max_secs == 0 || long.max_secs > u32::from(u16::MAX) {
                return invalid(format!(
                    "the longest call ({} s) must be between 1 and {} seconds",
                    long.max_secs,
                    u16::MAX
                ));
            }
        }
        self.behaviours.validate()?;
        self.faults.validate()
    }
}

/// Faults applied to requests of the calls endpoint.
///
/// Each request draws once from a seeded generator: with probability
/// `server_error_rate` it gets a 500, then `rate_limit_rate` a 429, then
/// `reset_rate` a dropped connection, then `truncate_rate` a cut-off body.
/// The rates must sum to at most 1. `latency` delays every answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    /// Added to every response of the calls endpoint.
    pub latency: Duration,
    /// Share of requests answered 500 `{"error":"database error"}`.
    pub server_error_rate: f64,
    /// Share of requests answered 429 with `Retry-After: 1`.
    pub rate_limit_rate: f64,
    /// Share of connections dropped without an answer.
    pub reset_rate: f64,
    /// Share of 200 answers whose body stops half way.
    pub truncate_rate: f64,
}

impl Faults {
    /// No faults at all.
    #[must_use]
    pub fn none() -> Self {
        Faults::default()
    }

    /// With this latency.
    #[must_use]
    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// With this share of 500s.
    #[must_use]
    pub fn with_server_errors(mut self, rate: f64) -> Self {
        self.server_error_rate = rate;
        self
    }

    /// With this share of 429s.
    #[must_use]
    pub fn with_rate_limits(mut self, rate: f64) -> Self {
        self.rate_limit_rate = rate;
        self
    }

    /// With this share of dropped connections.
    #[must_use]
    pub fn with_resets(mut self, rate: f64) -> Self {
        self.reset_rate = rate;
        self
    }

    /// With this share of truncated bodies.
    #[must_use]
    pub fn with_truncations(mut self, rate: f64) -> Self {
        self.truncate_rate = rate;
        self
    }

    /// Checks every rate is in `[0, 1]` and that they sum to at most 1.
    pub fn validate(&self) -> Result<(), SimError> {
        let rates = [
            ("server error", self.server_error_rate),
            ("rate limit", self.rate_limit_rate),
            ("reset", self.reset_rate),
            ("truncate", self.truncate_rate),
        ];
        for (name, rate) in rates {
            if !(0.0..=1.0).contains(&rate) {
                return Err(SimError::InvalidConfig(format!(
                    "the {name} rate ({rate}) must be between 0 and 1"
                )));
            }
        }
        let sum: f64 = rates.iter().map(|(_, r)| r).sum();
        if sum > 1.0 + 1e-9 {
            return Err(SimError::InvalidConfig(format!("the fault rates add up to {sum}, more than 1")));
        }
        Ok(())
    }

    /// The fault a draw in `[0, 1)` selects.
    pub(crate) fn pick(&self, u: f64) -> Fault {
        let mut edge = self.server_error_rate;
        if u < edge {
            return Fault::ServerError;
        }
        edge += self.rate_limit_rate;
        if u < edge {
            return Fault::RateLimited;
        }
        edge += self.reset_rate;
        if u < edge {
            return Fault::Reset;
        }
        edge += self.truncate_rate;
        if u < edge {
            return Fault::Truncated;
        }
        Fault::Pass
    }
}

/// One scripted fault, for tests that need an exact sequence.
///
/// Scripted faults are consumed in order, one per calls-endpoint request,
/// before the random rates of [`Faults`] apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Fault {
    /// Answer normally (a gap in a script).
    Pass,
    /// 500 `{"error":"database error"}`.
    ServerError,
    /// 429 with `Retry-After: 1`.
    RateLimited,
    /// Close the connection (with a TCP reset) without answering.
    Reset,
    /// Declare the full `Content-Length`, send half the body, close.
    Truncated,
}

impl Fault {
    /// A short label (`pass`, `server_error`, …) for logs.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Fault::Pass => "pass",
            Fault::ServerError => "server_error",
            Fault::RateLimited => "rate_limited",
            Fault::Reset => "reset",
            Fault::Truncated => "truncated",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a simulator's "now" comes from: the system clock, or a manual one
/// that tests set and advance.
///
/// Clones share the same time, so a test can keep a clone and move time for
/// a running server. Only live mode reads it.
#[derive(Debug, Clone)]
pub struct SimClock(Arc<AtomicI64>);

// Marks "read the system clock"; no test needs to set the year -292 billion.
const SYSTEM: i64 = i64::MIN;

impl Default for SimClock {
    fn default() -> Self {
        SimClock::system()
    }
}

impl SimClock {
    /// The system clock.
    #[must_use]
    pub fn system() -> Self {
        SimClock(Arc::new(AtomicI64::new(SYSTEM)))
    }

    /// A manual clock reading `now` (UNIX seconds) until set or advanced.
    #[must_use]
    pub fn manual(now: i64) -> Self {
        SimClock(Arc::new(AtomicI64::new(now.max(SYSTEM + 1))))
    }

    /// The current time, UNIX seconds.
    #[must_use]
    pub fn now(&self) -> i64 {
        match self.0.load(Ordering::Acquire) {
            SYSTEM => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
            manual => manual,
        }
    }

    /// Whether this clock is manual.
    #[must_use]
    pub fn is_manual(&self) -> bool {
        self.0.load(Ordering::Acquire) != SYSTEM
    }

    /// Sets the time (switching a system clock to manual).
    pub fn set(&self, now: i64) {
        self.0.store(now.max(SYSTEM + 1), Ordering::Release);
    }

    /// Moves the time forward by `secs` (a system clock becomes manual at
    /// system time plus `secs`).
    pub fn advance(&self, secs: i64) {
        self.set(self.now().saturating_add(secs));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_configs_say_why() {
        let cases: Vec<(SimConfig, &str)> = vec![
            (SimConfig::default().with_data_range(10, 10), "data range is empty"),
            (SimConfig::default().with_calls_per_day(-1.0), "calls per day"),
            (SimConfig::default().with_calls_per_day(f64::NAN), "calls per day"),
            (SimConfig::default().with_numbers(["1", "1"]), "listed twice"),
            (SimConfig::default().with_numbers([""]), "is empty"),
            (SimConfig::default().with_generated_numbers(0), "no numbers"),
            (SimConfig::default().with_credentials(Credentials::new("", "k")), "non-empty email"),
            (SimConfig::default().with_faults(Faults::none().with_resets(1.5)), "reset rate"),
            (SimConfig::default().with_ties(5_000), "ties"),
            (
                SimConfig::default().with_long_calls(Some(LongCalls { share: 2.0, max_secs: 60 })),
                "share of long calls",
            ),
            (
                SimConfig::default().with_long_calls(Some(LongCalls { share: 0.1, max_secs: 100_000 })),
                "longest call",
            ),
            (SimConfig::default().with_behaviours(Behaviours::none().with_slack_secs(-1)), "slack"),
            (SimConfig::default().with_behaviours(Behaviours::none().with_page_cap(Some(0))), "page cap"),
            (
                SimConfig::default().with_faults(Faults::none().with_resets(0.6).with_server_errors(0.6)),
                "add up to",
            ),
        ];
        for (config, needle) in cases {
            let err = config.validate().expect_err(needle).to_string();
            assert!(err.contains(needle), "{err:?} should contain {needle:?}");
        }
        SimConfig::default().validate().expect("the default is valid");
    }

    #[test]
    fn fault_rates_pick_in_order() {
        let f = Faults::none()
            .with_server_errors(0.1)
            .with_rate_limits(0.1)
            .with_resets(0.1)
            .with_truncations(0.1);
        let cases = [
            (0.05, Fault::ServerError),
            (0.15, Fault::RateLimited),
            (0.25, Fault::Reset),
            (0.35, Fault::Truncated),
            (0.45, Fault::Pass),
        ];
        for (u, want) in cases {
            assert_eq!(f.pick(u), want, "draw {u}");
        }
        assert_eq!(Faults::none().pick(0.0), Fault::Pass);
    }

    #[test]
    fn manual_clock_is_shared_by_clones() {
        let clock = SimClock::manual(100);
        let other = clock.clone();
        other.advance(5);
        assert_eq!(clock.now(), 105);
        assert!(clock.is_manual());
        let system = SimClock::system();
        assert!(!system.is_manual());
        assert!(system.now() > 1_700_000_000);
        system.set(7);
        assert_eq!(system.now(), 7);
    }
}
