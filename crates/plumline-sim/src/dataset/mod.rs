//! [`Simulator`]: the deterministic dataset and the queries over it.
//!
//! Calls are generated per UTC day, for every number at once, from a hash of
//! (seed, number, day), so any window can be answered without generating
//! anything outside it. A generated day is a [`Day`]: compact records sorted
//! in the server's order, plus per-number position lists, kept in a bounded
//! LRU cache. Counts of whole days that are fully settled come from the same
//! hash without generating the day at all, so `total_calls` of a month costs
//! O(days), and a page costs O(days + log n + limit).
//!
//! In three parts: `generation` (the records of a day, from the hash),
//! `cache` (the days held: a bounded LRU of generated days, and the days
//! mutations patched), `queries` (a window resolved to records, and the
//! calls, pages and bodies made from them).

mod cache;
mod generation;
mod queries;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use crate::config::{SimClock, SimConfig};
use crate::error::SimError;
use crate::render;
use crate::rng::hash_str;

use cache::{DayCache, Patches};
use generation::generate_numbers;

pub(crate) use generation::{Day, KIND_INBOUND, KIND_OUTBOUND, KIND_TRANSFER, Rec, UNKNOWN_TYPE};
pub(crate) use queries::Resolved;

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
            cache: Mutex::new(DayCache::new()),
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

    pub(crate) fn json_number(&self, index: u16) -> &str {
        &self.inner.json_numbers[usize::from(index)]
    }

    pub(crate) fn xml_number(&self, index: u16) -> &str {
        &self.inner.xml_numbers[usize::from(index)]
    }

    pub(crate) fn part2_width(&self) -> usize {
        self.inner.part2_width
    }
}

#[cfg(test)]
pub(crate) mod tests;
