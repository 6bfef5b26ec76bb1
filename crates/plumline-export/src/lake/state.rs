//! What the lake records: each committed day's [`DayState`], and the
//! lake-wide [`LakeInfo`] (its time zone).

use serde::{Deserialize, Serialize};

/// What the state records about a committed day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayState {
    /// `plumline-export` version that wrote the day.
    pub tool_version: String,
    /// The calendar day, `YYYY-MM-DD`.
    pub date: String,
    /// The number filter, if any.
    pub number: Option<String>,
    /// The time zone days are cut in.
    pub tz: String,
    /// First second of the API window (inclusive).
    pub window_start: i64,
    /// End of the window (exclusive).
    pub window_end: i64,
    /// The data file, relative to DEST.
    pub file: String,
    /// Rows in the file.
    pub rows: u64,
    /// Size of the file.
    pub bytes: u64,
    /// The API's `total_calls` for the window when it was fetched.
    pub api_total: u64,
    /// Whether the day was closed (outside the settle margin) when written;
    /// only closed days are skipped by later runs.
    pub closed: bool,
    /// When it was committed (UNIX seconds).
    pub committed_at: i64,
}

/// What holds for the whole lake, recorded by its first export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LakeInfo {
    /// The time zone every day of the lake is cut in (IANA name).
    pub tz: String,
    /// The version that created the lake.
    pub created_by: String,
    /// When (UNIX seconds).
    pub created_at: i64,
}
