//! [`Behaviours`]: the ways a real server of this family answers loosely or
//! moves under a client, each off by default.
//!
//! Unlike [`Faults`](crate::Faults), which decide whether a request is
//! answered, behaviours decide *what* a 200 says: calls a little outside
//! the window, an `error` inside a 200, data that changes between requests,
//! a `total_calls` that lags the listing, ties in `start` that come in a
//! different order on each request, a page size that is capped or ignored.
//!
//! Every behaviour is deterministic given the seed and the order in which
//! requests arrive. Ground truth ([`Simulator::calls_in`](crate::Simulator::calls_in)
//! and friends) always reflects the data as it is now, mutations included,
//! and never the per-request distortions (slack, lag, shuffling).

use crate::error::SimError;

/// Which query windows a behaviour applies to, by what they overlap.
///
/// A window `[start, end]` (the path of `/calls/{start}/{end}`) matches
/// `Overlapping(ranges)` when it shares at least one second with one of
/// the inclusive ranges. Use [`WindowSet::containing`] for "every window
/// containing T" and [`WindowSet::utc_days`] for "every window touching
/// these UTC dates".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum WindowSet {
    /// Every window.
    #[default]
    All,
    /// Windows overlapping any of these inclusive `(start, end)` ranges, UNIX seconds.
    Overlapping(Vec<(i64, i64)>),
}

impl WindowSet {
    /// Windows that contain the instant `t` (UNIX seconds).
    #[must_use]
    pub fn containing(t: i64) -> Self {
        WindowSet::Overlapping(vec![(t, t)])
    }

    /// Windows that touch any of these UTC days, each given by its midnight
    /// (UNIX seconds, a multiple of 86 400).
    #[must_use]
    pub fn utc_days(midnights: impl IntoIterator<Item = i64>) -> Self {
        WindowSet::Overlapping(midnights.into_iter().map(|d| (d, d + 86_399)).collect())
    }

    /// Whether the window `[start, end]` (inclusive) is in the set.
    #[must_use]
    pub fn matches(&self, start: i64, end: i64) -> bool {
        match self {
            WindowSet::All => true,
            WindowSet::Overlapping(ranges) => ranges.iter().any(|&(a, b)| start <= b && a <= end),
        }
    }
}

/// Answer `200` with an error body, as servers of this family do when the
/// database fails: `{"error":"database error","calls":[],"total_calls":0}`
/// or `<result><error>database error</error><calls/><total_calls>0</total_calls></result>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorIn200 {
    /// The windows that fail.
    pub windows: WindowSet,
    /// Which requests of a matching window fail.
    pub persistence: Persistence,
    /// The `error` text.
    pub message: String,
}

impl ErrorIn200 {
    /// Every request of the matching windows fails with "database error".
    #[must_use]
    pub fn persistent(windows: WindowSet) -> Self {
        ErrorIn200 { windows, persistence: Persistence::Always, message: "database error".to_owned() }
    }

    /// The first `n` requests of each matching window fail with "database
    /// error"; later ones are answered normally.
    #[must_use]
    pub fn transient(windows: WindowSet, n: u64) -> Self {
        ErrorIn200 {
            windows,
            persistence: Persistence::FirstRequests(n),
            message: "database error".to_owned(),
        }
    }
}

/// For how many requests of a window a behaviour lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// The first `n` requests of each window (counted per `(start, end, number)`).
    FirstRequests(u64),
    /// Every request.
    Always,
}

impl Persistence {
    /// Whether the `n`-th request of a window (1-based) is affected.
    #[must_use]
    pub fn applies(self, n: u64) -> bool {
        match self {
            Persistence::FirstRequests(first) => n <= first,
            Persistence::Always => true,
        }
    }
}

/// A `total_calls` lower than the listing: for the first `first_requests`
/// requests of each matching window, `total_calls` is the true count minus
/// `lag` (at least 0). The listing itself stays complete: a page past the
/// reported total still holds the calls that are there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaggingTotal {
    /// The windows whose total lags.
    pub windows: WindowSet,
    /// How far below the listing the total is.
    pub lag: u64,
    /// For how many requests of each window (1-based, inclusive).
    pub first_requests: u64,
}

/// What one mutation step of a [`MovingSource`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mutation {
    /// A new call (fresh `session_id`) with the same start (and number,
    /// duration, type) as the call at the chosen position: the total grows by one.
    Insert,
    /// The call at the chosen position disappears: the total shrinks by one.
    Remove,
    /// Remove the call at the chosen position and insert a new one with the
    /// same start in the same step: the total is unchanged, the content not.
    Swap,
}

/// Where in a window's listing a [`MovingSource`] mutates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Region {
    /// A region the client has already read: positions before the end of
    /// the page just served (`[0, offset + calls served)`), so a pager that
    /// moves on never sees the change.
    Paged,
    /// Anywhere in the window's listing.
    Anywhere,
}

/// A source that moves under the client: after chosen requests of a window,
/// the data of that window changes, then stops changing.
///
/// After the `k`-th request of a matching window (counted per
/// `(start, end, number)`, 1-based) for each `k` in `after_requests`, the
/// server applies `per_step` mutations of kind `mutation` at positions in
/// `region` of that window's listing (as the data stands after the request),
/// chosen by a generator seeded from the config's seed and the window. Once
/// every listed request number has passed, the window no longer moves.
/// Mutations are real: [`Simulator::calls_in`](crate::Simulator::calls_in)
/// and every later request see them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovingSource {
    /// The windows that move.
    pub windows: WindowSet,
    /// What each mutation does.
    pub mutation: Mutation,
    /// Where in the listing.
    pub region: Region,
    /// The request numbers of a window (1-based) after which a step happens.
    pub after_requests: Vec<u64>,
    /// Mutations per step.
    pub per_step: u32,
}

impl MovingSource {
    /// One `mutation` in `region` after the first request of every window.
    #[must_use]
    pub fn once(mutation: Mutation, region: Region) -> Self {
        MovingSource { windows: WindowSet::All, mutation, region, after_requests: vec![1], per_step: 1 }
    }
}

/// How a server answers beyond the documented happy path. All off by default.
///
/// Set with [`SimConfig::with_behaviours`](crate::SimConfig::with_behaviours)
/// or, while serving, [`SimServer::set_behaviours`](crate::SimServer::set_behaviours).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Behaviours {
    /// Window slack: a query for `[start, end]` also lists calls whose start
    /// is up to this many seconds outside it (`[start - slack, end + slack]`),
    /// and `total_calls` counts what is listed. 0 is exact.
    pub slack_secs: i64,
    /// Answer 200 with an `error` for some windows.
    pub error_in_200: Option<ErrorIn200>,
    /// Mutate the data between requests of a window.
    pub moving: Option<MovingSource>,
    /// Report a `total_calls` below the listing for a while.
    pub lagging_total: Option<LaggingTotal>,
    /// List calls with equal `start` in a different order on each request
    /// (a permutation of each run of ties over the whole listing, seeded per
    /// request), so a page boundary inside a tie shows different calls each
    /// time. Pair with [`SimConfig::ties`](crate::SimConfig::ties) for many ties.
    pub shuffle_ties: bool,
    /// Serve at most this many calls per page, whatever `limit` asks (as
    /// servers that cap the page size do); `total_calls` stays the whole count.
    pub page_cap: Option<u32>,
    /// Ignore `limit` altogether: every call from `offset` to the end of the
    /// listing in one page.
    pub ignore_limit: bool,
}

impl Behaviours {
    /// No behaviours: the documented happy path.
    #[must_use]
    pub fn none() -> Self {
        Behaviours::default()
    }

    /// With this window slack, in seconds.
    #[must_use]
    pub fn with_slack_secs(mut self, slack_secs: i64) -> Self {
        self.slack_secs = slack_secs;
        self
    }

    /// With errors inside 200s.
    #[must_use]
    pub fn with_error_in_200(mut self, error: ErrorIn200) -> Self {
        self.error_in_200 = Some(error);
        self
    }

    /// With a moving source.
    #[must_use]
    pub fn with_moving(mut self, moving: MovingSource) -> Self {
        self.moving = Some(moving);
        self
    }

    /// With a lagging total.
    #[must_use]
    pub fn with_lagging_total(mut self, lagging: LaggingTotal) -> Self {
        self.lagging_total = Some(lagging);
        self
    }

    /// With ties shuffled per request.
    #[must_use]
    pub fn with_shuffled_ties(mut self, shuffle: bool) -> Self {
        self.shuffle_ties = shuffle;
        self
    }

    /// With the page size capped.
    #[must_use]
    pub fn with_page_cap(mut self, cap: Option<u32>) -> Self {
        self.page_cap = cap;
        self
    }

    /// With `limit` ignored.
    #[must_use]
    pub fn with_ignored_limit(mut self, ignore: bool) -> Self {
        self.ignore_limit = ignore;
        self
    }

    /// Whether every behaviour is off.
    #[must_use]
    pub fn is_none(&self) -> bool {
        *self == Behaviours::default()
    }

    /// Checks the values can be served.
    pub fn validate(&self) -> Result<(), SimError> {
        let invalid = |m: String| Err(SimError::InvalidConfig(m));
        if self.slack_secs < 0 {
            return invalid(format!("the window slack ({}) must not be negative", self.slack_secs));
        }
        if self.page_cap == Some(0) {
            return invalid("the page cap must be at least 1".into());
        }
        for set in [
            self.error_in_200.as_ref().map(|e| &e.windows),
            self.moving.as_ref().map(|m| &m.windows),
            self.lagging_total.as_ref().map(|l| &l.windows),
        ]
        .into_iter()
        .flatten()
        {
            if let WindowSet::Overlapping(ranges) = set
                && let Some((a, b)) = ranges.iter().find(|(a, b)| a > b)
            {
                return invalid(format!("the window range ({a}, {b}) ends before it starts"));
            }
        }
        if let Some(moving) = &self.moving
            && moving.after_requests.contains(&0)
        {
            return invalid("moving-source request numbers start at 1".into());
        }
        Ok(())
    }
}

/// What the behaviours have done so far, read with
/// [`SimServer::behaviour_stats`](crate::SimServer::behaviour_stats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BehaviourStats {
    /// 200 answers that carried an `error` instead of a page.
    pub errors_in_200: u64,
    /// Mutations applied by the moving source (a swap counts once).
    pub mutations: u64,
    /// Pages whose `total_calls` was reported below the listing.
    pub lagged_totals: u64,
    /// Pages served with shuffled ties.
    pub shuffled_pages: u64,
    /// Calls listed outside the window asked for (window slack).
    pub slack_calls: u64,
}
