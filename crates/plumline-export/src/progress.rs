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
    /// Another live run holds the claim of a day; this run waits for it
    /// (bounded by the claim wait).
    ClaimWait {
        /// The day.
        day: Date,
        /// Its number filter.
        number: Option<String>,
        /// The other run, as a person reads it.
        holder: String,
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

/// One day partition, as the summary names it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DayRef {
    /// The calendar day, `YYYY-MM-DD` in the plan's time zone.
    pub date: String,
    /// The number filter, if any.
    pub number: Option<String>,
}

/// A day written while still open (inside the settle margin).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OpenDay {
    /// The calendar day, `YYYY-MM-DD`.
    pub date: String,
    /// The number filter, if any.
    pub number: Option<String>,
    /// When the day closes (UNIX seconds): its end plus the settle margin.
    /// A run after this commits it for good.
    pub closes_at: i64,
}

/// A bound of the requested range that fell inside a day and was widened to
/// that day's edge (exports work in whole days).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WidenedBound {
    /// `start` or `end`.
    pub bound: &'static str,
    /// The bound as requested (UNIX seconds).
    pub requested: i64,
    /// The bound used (UNIX seconds): midnight of the plan's time zone.
    pub widened_to: i64,
}

/// What an export did.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
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
    /// The partitions written by this run (closed and open), in date order.
    pub written_days: Vec<DayRef>,
    /// The partitions skipped as already committed, in date order.
    pub skipped_days: Vec<DayRef>,
    /// The partitions written while open, with when each closes.
    pub open_days: Vec<OpenDay>,
    /// Bounds of the requested range that were widened to whole days.
    pub widened: Vec<WidenedBound>,
    /// Calls written by this run.
    pub calls: u64,
    /// Files written by this run.
    pub files: u64,
    /// Bytes written by this run.
    pub bytes: u64,
    /// Pages fetched (including refetches).
    pub pages: u64,
    /// API requests made (pages, boundary checks and count requests,
    /// including refetches).
    pub requests: u64,
    /// Calls the server returned outside the window asked for; not filed in
    /// the day asked about (they belong to their own day).
    pub out_of_window: u64,
    /// Day refetches caused by inconsistent answers.
    pub refetches: u64,
    /// Wall-clock time of the run.
    #[serde(serialize_with = "serialize_secs")]
    pub elapsed: Duration,
}

fn serialize_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
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
