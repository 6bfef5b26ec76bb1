//! Time-window arithmetic of the poller: UTC days, the backfill's windows,
//! the reach-back, and the wait after failures.

use std::time::Duration;

use crate::search::DAY_SECS;

/// Width of one backfill window.
pub(super) const BACKFILL_WINDOW: i64 = 3_600;

/// The longest wait between polls after repeated failures (unless the
/// interval itself is longer).
pub(crate) const MAX_FAILURE_BACKOFF: Duration = Duration::from_secs(300);

/// Whole seconds of `d`, saturating.
pub(super) fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// 00:00 UTC of the day holding `t`.
pub(super) fn day_of(t: i64) -> i64 {
    t.div_euclid(DAY_SECS) * DAY_SECS
}

/// Where the backfill of the day holding `now` starts: the longest call
/// before 00:00 UTC (never before 1970), and its end (`now`, or the start
/// if `now` is earlier).
pub(super) fn backfill_span(now: i64, reach_back: i64) -> (i64, i64) {
    let from = day_of(now).saturating_sub(reach_back).max(0);
    (from, now.max(from))
}

/// `[from, to]` cut into windows of `width` seconds (inclusive bounds, the
/// last one shorter), oldest first.
pub(super) fn windows(from: i64, to: i64, width: i64) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    let mut start = from;
    while start <= to {
        let end = start.saturating_add(width - 1).min(to);
        out.push((start, end));
        if end == i64::MAX {
            break;
        }
        start = end + 1;
    }
    out
}

/// The wait between poll starts after `failures` consecutive failed polls.
#[must_use]
pub(crate) fn next_delay(interval: Duration, failures: u32) -> Duration {
    if failures <= 1 {
        return interval;
    }
    let cap = interval.max(MAX_FAILURE_BACKOFF);
    interval.saturating_mul(2u32.saturating_pow(failures - 1)).min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2023-11-14T00:00:00Z, a UTC midnight.
    const DAY0: i64 = 1_699_920_000;

    #[test]
    fn days_start_at_utc_midnight() {
        // (t, its day)
        let cases = [(DAY0, DAY0), (DAY0 + 1, DAY0), (DAY0 - 1, DAY0 - DAY_SECS), (0, 0), (-1, -DAY_SECS)];
        for (t, want) in cases {
            assert_eq!(day_of(t), want, "{t}");
        }
    }

    #[test]
    fn the_backfill_reaches_back_before_midnight() {
        // (now, reach-back, (from, to))
        let cases = [
            (DAY0 + 43_200, 14_400, (DAY0 - 14_400, DAY0 + 43_200)),
            (DAY0, 3_600, (DAY0 - 3_600, DAY0)),
            (100, 3_600, (0, 100)),
            (-5, 3_600, (0, 0)),
        ];
        for (now, reach_back, want) in cases {
            assert_eq!(backfill_span(now, reach_back), want, "{now} {reach_back}");
        }
    }

    #[test]
    fn windows_tile_the_span_without_gaps() {
        type Case = (i64, i64, i64, &'static [(i64, i64)]);
        // (from, to, width, windows)
        let cases: [Case; 5] = [
            (0, 9, 5, &[(0, 4), (5, 9)]),
            (0, 10, 5, &[(0, 4), (5, 9), (10, 10)]),
            (7, 7, 3_600, &[(7, 7)]),
            (8, 7, 3_600, &[]),
            (i64::MAX - 1, i64::MAX, 10, &[(i64::MAX - 1, i64::MAX)]),
        ];
        for (from, to, width, want) in cases {
            assert_eq!(windows(from, to, width), want, "[{from}, {to}] by {width}");
        }
    }

    #[test]
    fn secs_saturate() {
        assert_eq!(secs(Duration::from_secs(90)), 90);
        assert_eq!(secs(Duration::from_secs(u64::MAX)), i64::MAX);
    }

    #[test]
    fn failure_backoff_doubles_up_to_a_cap() {
        let i = Duration::from_secs(60);
        let got: Vec<u64> = (0..7).map(|f| next_delay(i, f).as_secs()).collect();
        assert_eq!(got, vec![60, 60, 120, 240, 300, 300, 300]);
        assert_eq!(
            next_delay(Duration::from_secs(900), 5),
            Duration::from_secs(900),
            "never below the interval"
        );
        assert_eq!(next_delay(Duration::from_secs(1), 3), Duration::from_secs(4));
    }
}
