//! Validated queries: [`CallQuery`] (a window and a number) and
//! [`PageRequest`] (one page of it).

use crate::error::{ApiError, QueryError};

/// The most calls the API returns in one page.
pub const MAX_LIMIT: u32 = 10_000;
/// The page size the vendor's sibling endpoints default to.
pub const DEFAULT_LIMIT: u32 = 1_000;

/// A call-log query: a window of call starts and an optional number.
///
/// # Invariants
/// `0 <= start <= end`. Both ends are inclusive, as the server matches them
/// against each call's `start`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CallQuery {
    start: i64,
    end: i64,
    number: Option<String>,
}

impl CallQuery {
    /// A query for calls starting in `[start, end]` (UNIX seconds, inclusive).
    pub fn new(start: i64, end: i64) -> Result<Self, ApiError> {
        if start < 0 {
            return Err(QueryError::BeforeEpoch { start }.into());
        }
        if start > end {
            return Err(QueryError::Reversed { start, end }.into());
        }
        Ok(CallQuery { start, end, number: None })
    }

    /// The same query for one deployment number.
    #[must_use]
    pub fn with_number(mut self, number: Option<String>) -> Self {
        self.number = number.filter(|n| !n.is_empty());
        self
    }

    /// First second of the window, inclusive.
    #[must_use]
    pub fn start(&self) -> i64 {
        self.start
    }

    /// Last second of the window, inclusive.
    #[must_use]
    pub fn end(&self) -> i64 {
        self.end
    }

    /// The number filter, if any.
    #[must_use]
    pub fn number(&self) -> Option<&str> {
        self.number.as_deref()
    }

    /// One page of this query.
    pub fn page(&self, limit: u32, offset: u64) -> Result<PageRequest, ApiError> {
        PageRequest::new(self.clone(), limit, offset)
    }
}

/// One page of a [`CallQuery`].
///
/// # Invariants
/// `1 <= limit <= MAX_LIMIT`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PageRequest {
    query: CallQuery,
    limit: u32,
    offset: u64,
}

impl PageRequest {
    /// A page of `limit` calls starting at `offset`.
    pub fn new(query: CallQuery, limit: u32, offset: u64) -> Result<Self, ApiError> {
        validate_limit(limit)?;
        Ok(PageRequest { query, limit, offset })
    }

    /// The query this page belongs to.
    #[must_use]
    pub fn query(&self) -> &CallQuery {
        &self.query
    }

    /// Page size.
    #[must_use]
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// Index of the first call of the page.
    #[must_use]
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The same query at another offset.
    #[must_use]
    pub fn at_offset(&self, offset: u64) -> Self {
        PageRequest { query: self.query.clone(), limit: self.limit, offset }
    }
}

/// A page size the API accepts: 1 to [`MAX_LIMIT`] calls.
///
/// Checked once, where it is made ([`PageSize::new`], or a command-line
/// parser), so the code it is handed to needs no check of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PageSize(u32);

impl PageSize {
    /// The API's largest page, [`MAX_LIMIT`] calls (what bulk reads ask for).
    pub const MAX: PageSize = PageSize(MAX_LIMIT);

    /// `calls` per page.
    ///
    /// # Errors
    /// [`QueryError::Limit`] outside 1 to [`MAX_LIMIT`].
    pub fn new(calls: u32) -> Result<Self, QueryError> {
        if (1..=MAX_LIMIT).contains(&calls) {
            Ok(PageSize(calls))
        } else {
            Err(QueryError::Limit { limit: calls, max: MAX_LIMIT })
        }
    }

    /// Calls per page.
    #[must_use]
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl std::fmt::Display for PageSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Checks a page size against the API's bounds.
pub fn validate_limit(limit: u32) -> Result<(), ApiError> {
    PageSize::new(limit).map(drop).map_err(ApiError::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_and_limits_are_validated() {
        assert!(CallQuery::new(10, 10).is_ok());
        assert!(CallQuery::new(0, 10).is_ok());
        let cases = [(11, 10, "after end"), (-1, 10, "before 1970")];
        for (start, end, needle) in cases {
            let err = CallQuery::new(start, end).expect_err("invalid").to_string();
            assert!(err.contains(needle), "{err}");
        }
        let q = CallQuery::new(0, 10).expect("valid");
        for (limit, ok) in [(0, false), (1, true), (10_000, true), (10_001, false)] {
            assert_eq!(q.page(limit, 0).is_ok(), ok, "limit {limit}");
        }
    }

    #[test]
    fn empty_number_means_unfiltered() {
        let q = CallQuery::new(0, 1).expect("valid").with_number(Some(String::new()));
        assert_eq!(q.number(), None);
    }
}
