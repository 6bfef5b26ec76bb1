//! [`PollerConfig`]: how the poller polls, and its validation.

use std::collections::HashSet;
use std::time::Duration;

use plumline_api::MAX_LIMIT;

use crate::error::MetricsError;

/// How the poller polls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollerConfig {
    /// Deployment numbers to poll, each its own query and `number` label.
    /// Empty: one unfiltered query, labelled per call (see the crate docs).
    pub numbers: Vec<String>,
    /// Time between the starts of two polls (> 0).
    pub interval: Duration,
    /// The longest call expected, and so how far each poll reaches back
    /// before the previous poll: the API indexes calls by their start but
    /// lists them only once they end. Longer calls are missed. Defaults to
    /// [`plumline_api::LONGEST_CALL`], the export's settle margin.
    pub max_call_duration: Duration,
    /// Calls per page request when a window is fetched (1..=10000).
    pub page_size: u32,
    /// Numbers polled (and backfill windows fetched) at once (>= 1).
    pub concurrency: usize,
    /// Capacity of each number's dedupe set (>= 1).
    pub max_tracked_calls: usize,
}

impl Default for PollerConfig {
    fn default() -> Self {
        PollerConfig {
            numbers: Vec::new(),
            interval: Duration::from_secs(60),
            max_call_duration: plumline_api::LONGEST_CALL,
            page_size: plumline_api::BULK_PAGE_SIZE,
            concurrency: 4,
            max_tracked_calls: 200_000,
        }
    }
}

impl PollerConfig {
    /// Checks every value; the error names the field.
    ///
    /// # Errors
    /// [`MetricsError::InvalidConfig`] for a zero interval, reach-back or
    /// concurrency, a page size outside 1..=10000, a duration beyond 100
    /// years, or a number given twice or empty.
    pub fn validate(&self) -> Result<(), MetricsError> {
        const CENTURY: Duration = Duration::from_secs(100 * 365 * 86_400);
        let invalid =
            |field: &'static str, reason: String| Err(MetricsError::InvalidConfig { field, reason });
        if self.interval.is_zero() {
            return invalid("interval", "must be greater than zero (e.g. 30s or 1m)".into());
        }
        if self.max_call_duration.is_zero() {
            return invalid("max_call_duration", "must be greater than zero (e.g. 4h)".into());
        }
        if !(1..=MAX_LIMIT).contains(&self.page_size) {
            return invalid(
                "page_size",
                format!("{} is out of range: the API accepts 1 to {MAX_LIMIT}", self.page_size),
            );
        }
        if self.concurrency == 0 {
            return invalid("concurrency", "must be at least 1".into());
        }
        if self.max_tracked_calls == 0 {
            return invalid("max_tracked_calls", "must be at least 1".into());
        }
        for (field, d) in [("interval", self.interval), ("max_call_duration", self.max_call_duration)] {
            if d > CENTURY {
                return invalid(field, format!("{}s is longer than a century", d.as_secs()));
            }
        }
        let mut seen = HashSet::new();
        for number in &self.numbers {
            if number.trim().is_empty() {
                return invalid("numbers", "must not hold an empty number".into());
            }
            if !seen.insert(number) {
                return invalid("numbers", format!("{number} is given twice"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_are_validated_naming_the_field() {
        type Change = fn(&mut PollerConfig);
        let ok = PollerConfig {
            numbers: vec!["1".into()],
            interval: Duration::from_secs(60),
            ..PollerConfig::default()
        };
        assert!(ok.validate().is_ok());
        let cases: [(Change, &str, &str); 6] = [
            (|c| c.interval = Duration::ZERO, "interval", "must be greater than zero"),
            (|c| c.max_call_duration = Duration::ZERO, "max_call_duration", "must be greater than zero"),
            (|c| c.page_size = 0, "page_size", "out of range"),
            (|c| c.concurrency = 0, "concurrency", "at least 1"),
            (|c| c.numbers = vec!["1".into(), "1".into()], "numbers", "twice"),
            (|c| c.max_call_duration = Duration::from_secs(u64::MAX / 2), "max_call_duration", "century"),
        ];
        for (change, want_field, needle) in cases {
            let mut c = ok.clone();
            change(&mut c);
            match c.validate() {
                Err(MetricsError::InvalidConfig { field, reason }) => {
                    assert_eq!(field, want_field);
                    assert!(reason.contains(needle), "{reason}");
                    assert!(!reason.contains("--"), "no flag words in the library: {reason}");
                }
                other => panic!("{want_field}: {other:?}"),
            }
        }
    }
}
