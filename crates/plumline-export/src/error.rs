//! [`ExportError`]: everything that can stop an export.

use std::path::PathBuf;

use jiff::civil::Date;
use plumline_api::ApiError;

/// An error that stopped an export, with the day, page offset or path it
/// happened at.
///
/// Messages name what was being done; the cause is the [`source`](std::error::Error::source),
/// so print the chain (as `anyhow`'s `{:#}` does) to see both.
///
/// Days committed before the error stay committed (and recorded in the
/// resume state), so running the same export again continues where this one
/// stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// The plan or options are invalid; nothing was fetched or written.
    #[error(transparent)]
    InvalidPlan(#[from] PlanError),
    /// The destination cannot be used (bad URL, unsupported scheme, missing
    /// bucket); nothing was written.
    #[error(transparent)]
    InvalidDestination(#[from] DestinationError),
    /// A page could not be fetched (after the source's own retries).
    #[error("fetching the calls of {day}{} at offset {offset}", number_suffix(number.as_deref()))]
    Api {
        /// The day being exported.
        day: Date,
        /// The number filter of the day, if any.
        number: Option<String>,
        /// The offset of the page that failed.
        offset: u64,
        /// What the API (or the way to it) said.
        #[source]
        source: ApiError,
    },
    /// A closed day never came out consistent: the listing moved while it
    /// was paged (`total_calls` changed, a page boundary shifted) or the
    /// distinct calls listed did not match `total_calls`, however often it
    /// was fetched again.
    #[error(
        "the API's answers for {day}{} do not add up after {attempts} attempts: {reason} \
         (last attempt: {received} distinct calls listed, total_calls {expected}); the source is still \
         moving, try again later",
        number_suffix(number.as_deref())
    )]
    Inconsistent {
        /// The day being exported.
        day: Date,
        /// The number filter of the day, if any.
        number: Option<String>,
        /// The API's `total_calls` for the day in the last attempt.
        expected: u64,
        /// Distinct calls listed in the last attempt (in the day's window
        /// or not).
        received: u64,
        /// How many times the day was fetched.
        attempts: u32,
        /// What did not add up in the last attempt (`total_calls moved from
        /// 450 to 451 at offset 198`, `the listing shifted at offset 99`,
        /// `449 distinct calls listed but total_calls is 450`).
        reason: String,
    },
    /// A local file operation failed.
    #[error("{action} {}", path.display())]
    Io {
        /// What was being done (`creating`, `writing`, `renaming`, …).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// An object-store operation failed.
    #[error("{action} {location}")]
    ObjectStore {
        /// What was being done (`uploading`, `reading`, …).
        action: &'static str,
        /// The object's URL.
        location: String,
        /// What the store said.
        #[source]
        source: object_store::Error,
    },
    /// Encoding (or, in the lake reader, decoding) Parquet failed.
    #[error("{action} the parquet file {location}")]
    Parquet {
        /// `writing` or `reading`.
        action: &'static str,
        /// The day's file.
        location: String,
        /// What the Parquet library said.
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// Building an Arrow batch failed (a bug: the schema is fixed).
    #[error("building the arrow batch for {day}")]
    Arrow {
        /// The day being exported.
        day: Date,
        /// What Arrow said.
        #[source]
        source: arrow_schema::ArrowError,
    },
    /// A resume-state file could not be read or written.
    #[error("encoding or decoding the resume state {location}")]
    State {
        /// The state file.
        location: String,
        /// What the JSON codec said.
        #[source]
        source: serde_json::Error,
    },
    /// The lake is cut in another time zone than the export asks for.
    #[error(
        "the lake {lake} is cut in time zone {recorded}, but this export asks for {requested}: \
         export into it with the zone {recorded}, or into another lake"
    )]
    TimeZoneMismatch {
        /// The lake.
        lake: String,
        /// The zone its first export recorded.
        recorded: String,
        /// The zone asked for.
        requested: String,
    },
    /// Another live run holds the claim of a partition.
    #[error(
        "{day}{} is being written by another {holder}; waited {}s for it: run again once it is done",
        number_suffix(number.as_deref()),
        waited.as_secs()
    )]
    ClaimHeld {
        /// The day.
        day: Date,
        /// The number filter of the day, if any.
        number: Option<String>,
        /// The other run.
        holder: String,
        /// How long this run waited.
        waited: std::time::Duration,
    },
    /// Another run took a claim over while this run held it (this run was
    /// too slow to renew it); the day was not committed by this run.
    #[error("lost the claim {location} to another run; the day was left to it")]
    ClaimLost {
        /// The claim.
        location: String,
    },
    /// A re-export would replace a committed day with fewer calls.
    #[error(
        "{day}{} would shrink from {current} to {new} calls (the API now lists fewer): the committed file is kept",
        number_suffix(number.as_deref())
    )]
    WouldShrink {
        /// The day.
        day: Date,
        /// The number filter of the day, if any.
        number: Option<String>,
        /// Calls in the committed file.
        current: u64,
        /// Calls the API lists now.
        new: u64,
    },
    /// Some days failed; every other day was exported. Each failure names
    /// its day.
    #[error("{} of {} days failed: {}", failures.len(), failures.len() + summary.written, failure_list(failures))]
    DaysFailed {
        /// Each failed day's error.
        failures: Vec<ExportError>,
        /// What the run did do.
        summary: Box<crate::progress::ExportSummary>,
    },
    /// The run was cancelled (Ctrl-C, SIGTERM) before it finished; its
    /// uploads were aborted, committed days stay committed.
    #[error("the export was interrupted; the days committed so far are kept")]
    Cancelled,
    /// A task of the export panicked or was cancelled by the runtime.
    #[error("an export task failed")]
    Task(#[source] tokio::task::JoinError),
}

/// What makes an export plan or its options unusable: the value and why.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// The range starts before 1970.
    #[error("the range starts at {start}, before 1970: the API counts UNIX seconds")]
    BeforeEpoch {
        /// The start asked for, UNIX seconds.
        start: i64,
    },
    /// The range is empty or reversed.
    #[error("the range [{start}, {end}) is empty: the start must be before the end")]
    EmptyRange {
        /// The start asked for, UNIX seconds.
        start: i64,
        /// The end asked for, UNIX seconds.
        end: i64,
    },
    /// A number to filter by is blank.
    #[error("a number to filter by is empty: pass a phone number")]
    BlankNumber,
    /// A number to filter by is given twice.
    #[error("the number {number} is given twice")]
    RepeatedNumber {
        /// The number.
        number: String,
    },
    /// A time is outside what the time zone database covers.
    #[error("{what} is outside the calendar")]
    OutsideCalendar {
        /// The range or the day.
        what: String,
        /// What the calendar library said.
        #[source]
        source: jiff::Error,
    },
    /// The plan holds no day.
    #[error("the plan has no days")]
    NoDays,
    /// A window or page of the plan is not a valid API query.
    #[error("a query of the plan is invalid")]
    Query(#[source] ApiError),
    /// The Parquet compression level is not one zstd accepts.
    #[error("zstd level {level} is not supported")]
    ZstdLevel {
        /// The level asked for.
        level: i32,
        /// What the Parquet library said.
        #[source]
        source: parquet::errors::ParquetError,
    },
}

/// Why a lake destination cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DestinationError {
    /// No destination was given.
    #[error("the destination is empty: pass a directory or a URL")]
    Empty,
    /// The destination looks like a URL but does not parse.
    #[error("the lake URL `{url}` is not valid")]
    Url {
        /// The destination as given.
        url: String,
        /// What the URL parser said.
        #[source]
        source: url::ParseError,
    },
    /// A `file:` URL that names no local path.
    #[error("`{url}` is not a local file:/// URL")]
    NotLocal {
        /// The destination as given.
        url: String,
    },
    /// A URL scheme no supported store uses.
    #[error(
        "the lake URL scheme `{scheme}://` is not supported: use a directory, file:///, s3://, gs:// or az://"
    )]
    UnsupportedScheme {
        /// The scheme given.
        scheme: String,
    },
    /// An object-store URL without a bucket or container.
    #[error("the lake URL `{url}` names no bucket")]
    NoBucket {
        /// The destination as given.
        url: String,
    },
    /// An object-store URL whose path is not a valid object path.
    #[error("the lake URL `{url}` has an invalid path")]
    Path {
        /// The destination as given.
        url: String,
        /// What the object-store library said.
        #[source]
        source: object_store::path::Error,
    },
    /// The store could not be configured from the URL and the environment.
    #[error("cannot use {url}{}", hint.map(|h| format!(" ({h})")).unwrap_or_default())]
    Store {
        /// The destination as given.
        url: String,
        /// What to set, when the likely cause is a missing credential.
        hint: Option<&'static str>,
        /// What the object-store library said.
        #[source]
        source: object_store::Error,
    },
    /// An Azure URL with no storage account in it or in the environment.
    #[error("no Azure storage account for {url}: {hint}")]
    NoAzureAccount {
        /// The destination as given.
        url: String,
        /// What to set.
        hint: &'static str,
    },
    /// `AZURE_STORAGE_CONNECTION_STRING` does not parse (its values are
    /// secrets, so only the shape of the problem is named).
    #[error("AZURE_STORAGE_CONNECTION_STRING {problem}")]
    ConnectionString {
        /// What is wrong with it, without its values.
        problem: String,
    },
    /// A local lake that does not exist where one must (`verify`).
    #[error("the lake {} does not exist: check its path, or export into it first", path.display())]
    Missing {
        /// The directory.
        path: PathBuf,
    },
}

fn failure_list(failures: &[ExportError]) -> String {
    failures.iter().map(|e| plumline_api::error_chain(e)).collect::<Vec<_>>().join("; ")
}

fn number_suffix(number: Option<&str>) -> String {
    number.map(|n| format!(" (number {n})")).unwrap_or_default()
}

impl ExportError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ExportError::Io { action, path: path.into(), source }
    }

    pub(crate) fn store(
        action: &'static str,
        location: impl Into<String>,
        source: object_store::Error,
    ) -> Self {
        ExportError::ObjectStore { action, location: location.into(), source }
    }

    pub(crate) fn calendar(what: impl Into<String>, source: jiff::Error) -> Self {
        PlanError::OutsideCalendar { what: what.into(), source }.into()
    }

    pub(crate) fn query(source: ApiError) -> Self {
        PlanError::Query(source).into()
    }

    /// Whether running the export again may succeed without changing anything
    /// (server errors, timeouts, an inconsistent moving source).
    #[must_use]
    pub fn is_transient(&self) -> bool {
        match self {
            ExportError::Api { source, .. } => {
                source.is_transient() || matches!(source, ApiError::RetriesExhausted { .. })
            }
            ExportError::Inconsistent { .. }
            | ExportError::ObjectStore { .. }
            | ExportError::ClaimHeld { .. }
            | ExportError::ClaimLost { .. } => true,
            ExportError::DaysFailed { failures, .. } => failures.iter().all(ExportError::is_transient),
            _ => false,
        }
    }
}
