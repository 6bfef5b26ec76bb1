//! [`PollerConfig`]: how the poller polls, and its validation; and
//! [`NoCallsAlertConfig`], the quiet window published per number.

use std::collections::{BTreeMap, HashSet};
use std::num::NonZeroUsize;
use std::time::Duration;

use plumline_api::PageSize;

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
    /// Calls per page request when a window is fetched.
    pub page_size: PageSize,
    /// Numbers polled (and backfill windows fetched) at once (>= 1).
    pub concurrency: NonZeroUsize,
    /// Capacity of each number's dedupe set (>= 1).
    pub max_tracked_calls: NonZeroUsize,
    /// The quiet window after which the "no calls" alert should fire, per
    /// number: published as `plum_fuse_no_calls_alert_after_seconds`.
    pub no_calls_alert: NoCallsAlertConfig,
}

/// The default quiet window of the "no calls" alert: two hours.
pub const DEFAULT_NO_CALLS_ALERT_AFTER: Duration = Duration::from_secs(2 * 3_600);

/// How long a number may go without a completed call before the "no
/// calls" alert should fire: a default and per-number overrides.
///
/// The exporter publishes the window of each number it has a series for as
/// the gauge `plum_fuse_no_calls_alert_after_seconds{number}`, next to
/// `plum_fuse_last_call_end_timestamp_seconds{number}`, so one alerting rule
/// compares the two and the window is data, not `PromQL` (a range selector
/// cannot vary per series).
///
/// # Invariants (checked by [`PollerConfig::validate`])
/// Every window is greater than zero and shorter than a day: the last-call
/// gauge never reads earlier than 00:00 UTC of the current day, so a window
/// of 24 h or more could never elapse. With numbers to poll, every override
/// names one of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoCallsAlertConfig {
    /// The window of every number without an override.
    pub default: Duration,
    /// Windows of named numbers, overriding `default`.
    pub per_number: BTreeMap<String, Duration>,
}

impl Default for NoCallsAlertConfig {
    /// [`DEFAULT_NO_CALLS_ALERT_AFTER`] for every number, no overrides.
    fn default() -> Self {
        NoCallsAlertConfig { default: DEFAULT_NO_CALLS_ALERT_AFTER, per_number: BTreeMap::new() }
    }
}

impl NoCallsAlertConfig {
    /// The window of `number`: its override, else the default.
    #[must_use]
    pub fn window(&self, number: &str) -> Duration {
        self.per_number.get(number).copied().unwrap_or(self.default)
    }

    /// Checks the windows, and that overrides name polled numbers (when
    /// `numbers` is not empty).
    fn validate(&self, numbers: &[String]) -> Result<(), MetricsError> {
        const DAY: Duration = Duration::from_secs(86_400);
        let invalid = |reason: String| Err(MetricsError::InvalidConfig { field: "no_calls_alert", reason });
        let windows = std::iter::once((None, self.default))
            .chain(self.per_number.iter().map(|(number, window)| (Some(number), *window)));
        for (number, window) in windows {
            let shown = match number {
                Some(number) => format!("{number}={}", show(window)),
                None => show(window),
            };
            if window.is_zero() {
                return invalid(format!("{shown}: the window must be greater than zero (e.g. 2h)"));
            }
            if window >= DAY {
                return invalid(format!(
                    "{shown}: the window must be shorter than 24h, as the quiet time is counted from \
                     00:00 UTC at the earliest"
                ));
            }
        }
        for number in self.per_number.keys() {
            if number.trim().is_empty() {
                return invalid("an override names an empty number".into());
            }
            if !numbers.is_empty() && !numbers.contains(number) {
                let polled = if numbers.len() <= 5 {
                    numbers.join(", ")
                } else {
                    format!("{}, ... {} in all", numbers[..3].join(", "), numbers.len())
                };
                return invalid(format!(
                    "{number} has a window but is not one of the numbers polled ({polled})"
                ));
            }
        }
        Ok(())
    }
}

impl Default for PollerConfig {
    fn default() -> Self {
        PollerConfig {
            numbers: Vec::new(),
            interval: Duration::from_secs(60),
            max_call_duration: plumline_api::LONGEST_CALL,
            page_size: PageSize::MAX,
            concurrency: NonZeroUsize::new(4).unwrap_or(NonZeroUsize::MIN),
            max_tracked_calls: NonZeroUsize::new(200_000).unwrap_or(NonZeroUsize::MIN),
            no_calls_alert: NoCallsAlertConfig::default(),
        }
    }
}

impl PollerConfig {
    /// Checks every value; the error names the field.
    ///
    /// # Errors
    /// [`MetricsError::InvalidConfig`] for a zero interval or reach-back, a
    /// duration beyond 100
    /// years, a number given twice or empty, or a "no calls" window that is
    /// zero, a day or longer, or given for a number not polled
    /// (`no_calls_alert`, see [`NoCallsAlertConfig`]).
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
        self.no_calls_alert.validate(&self.numbers)
    }
}

/// A window as its flag would spell it: `2h`, `90m`, `45s`.
fn show(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        s if s > 0 && s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s > 0 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
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
        let cases: [(Change, &str, &str); 4] = [
            (|c| c.interval = Duration::ZERO, "interval", "must be greater than zero"),
            (|c| c.max_call_duration = Duration::ZERO, "max_call_duration", "must be greater than zero"),
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

    #[test]
    fn no_calls_windows_default_override_and_are_validated() {
        type Case = (&'static [&'static str], u64, &'static [(&'static str, u64)], Option<&'static str>);
        const H: u64 = 3_600;
        let hours = |h: u64| Duration::from_secs(h * 3_600);
        let windows = NoCallsAlertConfig {
            default: Duration::from_secs(1_800),
            per_number: BTreeMap::from([("2".to_owned(), hours(6))]),
        };
        assert_eq!((windows.window("1"), windows.window("2")), (Duration::from_secs(1_800), hours(6)));
        assert_eq!(NoCallsAlertConfig::default().window("any"), hours(2));
        assert_eq!(DEFAULT_NO_CALLS_ALERT_AFTER, hours(2));

        // (numbers polled, default s, overrides in s, None or what the reason says)
        let cases: [Case; 8] = [
            (&["1", "2"], 2 * H, &[("2", 6 * H)], None),
            (&[], 2 * H, &[("6175550199", 6 * H)], None), // whole account: any number
            (&["1"], 86_399, &[], None),
            (&["1"], 0, &[], Some("0s: the window must be greater than zero")),
            (&["1"], 24 * H, &[], Some("24h: the window must be shorter than 24h")),
            (&["1"], 2 * H, &[("1", 90)], None),
            (&["1"], 2 * H, &[("1", 30 * H)], Some("1=30h: the window must be shorter than 24h")),
            (&["1"], 2 * H, &[("3", H)], Some("3 has a window but is not one of the numbers polled (1)")),
        ];
        for (numbers, default, overrides, want) in cases {
            let config = PollerConfig {
                numbers: numbers.iter().map(|n| (*n).to_owned()).collect(),
                no_calls_alert: NoCallsAlertConfig {
                    default: Duration::from_secs(default),
                    per_number: overrides
                        .iter()
                        .map(|(n, d)| ((*n).to_owned(), Duration::from_secs(*d)))
                        .collect(),
                },
                ..PollerConfig::default()
            };
            match (config.validate(), want) {
                (Ok(()), None) => {}
                (Err(MetricsError::InvalidConfig { field, reason }), Some(needle)) => {
                    assert_eq!(field, "no_calls_alert");
                    assert!(reason.contains(needle), "{reason}");
                    assert!(!reason.contains("--"), "no flag words in the library: {reason}");
                }
                (got, want) => panic!("{numbers:?} {default:?} {overrides:?}: got {got:?}, want {want:?}"),
            }
        }
    }
}
