//! [`SimServer`]: the HTTP face of a [`Simulator`], with fault injection.
//!
//! A component in four parts:
//! - `lifecycle`: [`SimServer`] itself: binding, the accept loop, the
//!   connections, setting faults and behaviours while serving, shutdown.
//! - `handler`: one request: routing, credentials, query parsing, and
//!   rendering the page as the behaviours in force shape it.
//! - `faults`: what is applied per request on top of the data: injected
//!   HTTP faults (500, 429, resets, truncated bodies, latency) and the
//!   behaviours inside a 200 (slack, shuffled ties, a lagging total, a
//!   moving source).
//! - `stats`: [`SimStats`] and the counters behind it.
//!
//! `Shared` is the state all four read: the dataset, the faults, the
//! behaviours, the counters.

mod faults;
mod handler;
mod lifecycle;
mod stats;

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::behaviour::Behaviours;
use crate::config::SimConfig;
use crate::dataset::Simulator;
use crate::error::SimError;
use crate::rng::{Rng, mix64};

pub use lifecycle::SimServer;
pub use stats::SimStats;

use faults::FaultState;
use handler::Params;
use stats::{BehaviourCounters, Counters};

/// The path every API URL starts with, as on the vendor's host.
pub const BASE_PATH: &str = "/api";

/// A query window as the server counts requests: `(start, end, number)`.
type WindowKey = (i64, i64, Option<String>);

/// What every connection of one server shares: the dataset, the faults
/// and behaviours in force, and the counters.
#[derive(Debug)]
struct Shared {
    sim: Simulator,
    faults: Mutex<FaultState>,
    stats: Counters,
    behaviours: Mutex<Arc<Behaviours>>,
    /// Page requests per window, since the behaviours were last set.
    windows: Mutex<HashMap<WindowKey, u64>>,
    /// Page requests ever answered, for per-request seeds.
    serial: AtomicU64,
    behaviour_stats: BehaviourCounters,
}

impl Shared {
    fn new(config: SimConfig) -> Result<Self, SimError> {
        let faults = config.faults.clone();
        // Seeded, so a sequential client meets the same faults on every run.
        let rng = Rng::new(mix64(config.seed ^ 0xFA_017));
        let behaviours = Arc::new(config.behaviours.clone());
        let sim = Simulator::new(config)?;
        Ok(Shared {
            sim,
            faults: Mutex::new(FaultState::new(faults, rng)),
            stats: Counters::default(),
            behaviours: Mutex::new(behaviours),
            windows: Mutex::new(HashMap::new()),
            serial: AtomicU64::new(0),
            behaviour_stats: BehaviourCounters::default(),
        })
    }

    fn behaviours(&self) -> Arc<Behaviours> {
        Arc::clone(&self.behaviours.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn windows(&self) -> MutexGuard<'_, HashMap<WindowKey, u64>> {
        self.windows.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a page request of `params`' window; returns its number (1-based).
    fn count_window(&self, params: &Params) -> u64 {
        let mut windows = self.windows();
        let n = windows.entry((params.start, params.end, params.number.clone())).or_insert(0);
        *n += 1;
        *n
    }
}
