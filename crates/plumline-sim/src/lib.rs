//! A deterministic, fault-injecting simulator of Plum Fuse's "Get Call
//! Logs" API, for tests, benchmarks, the demo and `plumline sim`.
//!
//! - [`Simulator`]: the dataset. Calls are a pure function of the
//!   [`SimConfig`] (seed, numbers, volume, date range), generated per UTC
//!   day on demand and cached compactly, so any window is served without
//!   generating the rest. It is also the ground truth tests compare with
//!   ([`Simulator::calls_in`], [`Simulator::count_in`], [`Simulator::page`]).
//! - [`SimServer`]: serves a [`Simulator`] over HTTP/1 exactly as the vendor
//!   documents (`GET /api/calls/{start}/{end}?number=&limit=&offset=`,
//!   Basic auth, JSON or XML), with optional quirky encodings, live
//!   visibility driven by a [`SimClock`], and injected [`Faults`] (latency,
//!   500, 429, resets, truncated bodies), random or scripted ([`Fault`]).
//! - [`Behaviours`]: what real servers of this family do inside a 200 —
//!   window slack, an `error` in a 200 ([`ErrorIn200`]), a source that moves
//!   between requests ([`MovingSource`]), a lagging total ([`LaggingTotal`]),
//!   ties shuffled per request, a capped or ignored `limit`. With
//!   [`SimConfig::ties`] and [`SimConfig::long_calls`] the data itself has
//!   many ties in `start` and calls hours long.
//! - [`memory::MemorySource`]: a [`PageSource`](plumline_api::PageSource)
//!   answered from memory, without HTTP, for unit tests: a list of calls or
//!   a [`Simulator`]'s data, moving between requests by numbered
//!   [`memory::Change`]s, with knobs for the same misbehaviours and counters
//!   of the requests made and in flight.
//!
//! Production code never depends on this crate.
//!
//! # Examples
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use plumline_sim::{Faults, SimConfig, SimServer};
//! let config = SimConfig::default().with_seed(7).with_faults(Faults::none().with_server_errors(0.1));
//! let server = SimServer::start(config, "127.0.0.1:0".parse()?).await?;
//! let truth = server.simulator().calls_in(1_735_689_600, 1_735_775_999, None);
//! // ... page through server.base_url() and compare with `truth` ...
//! # drop(truth);
//! server.shutdown().await;
//! # Ok(()) }
//! ```

mod behaviour;
mod config;
mod dataset;
mod error;
pub mod memory;
mod render;
mod rng;
mod server;

pub use behaviour::{
    BehaviourStats, Behaviours, ErrorIn200, LaggingTotal, MovingSource, Mutation, Persistence, Region,
    WindowSet,
};
pub use config::{
    DEFAULT_NUMBER_COUNT, DEMO_EMAIL, DEMO_KEY, Fault, Faults, LongCalls, MAX_CALL_SECS,
    MAX_CALLS_PER_NUMBER_DAY, SimClock, SimConfig,
};
pub use dataset::Simulator;
pub use error::SimError;
pub use server::{BASE_PATH, SimServer, SimStats};
