//! Progress as events ([`ExportEvent`] through an [`ExportObserver`]) and
//! the final [`ExportSummary`].
//!
//! The library never prints: a caller renders events as it likes (the CLI
//! draws a progress bar on a terminal and log lines elsewhere).

use std::fmt;
use std::time::Duration;

use jiff::civil::Date;

/// Something that happened during an export.
///
/// Events arrive in order from one task; an observer must return quickly
/// (it runs on the export's own task).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExportEvent {
    /// The plan is known: how many day partitions, and how many of them the
    /// resume state lets this run skip.
    Planned {
        /// Day partitions in the plan (days × numbers).
        partitions: usize,
        /// Of those, already committed and closed.
        skipped: usize,
    },
    /// A day's first page arrived and told how many calls the day has.
    DayStarted {
        /// The day.
        day: Date,
        /// Its number filter.
        number: Option<String>,
        /// The API's `total_calls` for the day.
        total_calls: u64,
    },
    /// A page's calls were handed to the day's writer.
    PageWritten {
        /// The day.
        day: Date,
        /// Distinct new calls in the page.
        calls: u64,
    },
    /// A day did not add up (rows versus `total_calls`, or a total that moved
    /// while paging) and is being fetched again.
    DayRefetch {
        /// The day.
        day: Date,
        /// Its number filter.
        number: Option<String>,
        /// The attempt about to start (2 for the first refetch).
        attempt: u32,
        /// Why: a short description.
        reason: String,
    },
    /// A day's file is committed (visible to readers).
    DayCommitted {
        /// The day.
        day: Date,
        /// Its number filter.
        number: Option<String>,
        /// Rows in the file.
        rows: u64,
        /// Size of the file.
        bytes: u64,
        /// Whether the day is closed (recorded complete); an open day is
        /// refreshed by the next run.
        closed: bool,
    },
}

/// Receives [`ExportEvent`]s. Implemented for closures.
pub trait ExportObserver: Send + Sync {
    /// Called for each event, in order.
    fn on_event(&self, event: &ExportEvent);
}

impl<F: Fn(&ExportEvent) + Send + Sync> ExportObserver for F {
    fn on_event(&self, event: &ExportEvent) {
        self(event);
    }
}

/// An observer that ignores every event.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl ExportObserver for NoProgress {
    fn on_event(&self, _event: &ExportEvent) {}
}

/// What an export did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExportSummary {
    /// Day partitions in the plan (days × numbers).
    pub partitions: usize,
    /// Distinct calendar days in the plan.
    pub days: usize,
    /// Partitions skipped because an earlier run committed them.
    pub skipped: usize,
    /// Partitions written by this run.
    pub written: usize,
    /// Of those written, days still open (inside the settle margin); the
    /// next run refreshes them.
    pub open: usize,
    /// Calls written by this run.
    pub calls: u64,
    /// Files written by this run.
    pub files: u64,
    /// Bytes written by this run.
    pub bytes: u64,
    /// Pages fetched (including refetches).
    pub pages: u64,
    /// Day refetches caused by inconsistent answers.
    pub refetches: u64,
    /// Wall-clock time of the run.
    pub elapsed: Duration,
}

impl ExportSummary {
    /// Calls written per second of wall-clock time.
    #[must_use]
    pub fn calls_per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 { self.calls as f64 / secs } else { 0.0 }
    }
}

impl fmt::Display for ExportSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} days ({} partitions: {} written, {} already committed{}), {} calls, {} files, {} bytes in {:.2?} ({:.0} calls/s)",
            self.days,
            self.partitions,
            self.written,
            self.skipped,
            if self.open > 0 { format!(", {} still open", self.open) } else { String::new() },
            self.calls,
            self.files,
            self.bytes,
            self.elapsed,
            self.calls_per_sec()
        )
    }
}
