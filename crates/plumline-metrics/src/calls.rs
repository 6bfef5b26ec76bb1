//! [`CallFamilies`]: `plum_fuse_calls_total`,
//! `plum_fuse_call_duration_seconds` and the per-number gauges
//! `plum_fuse_last_call_end_timestamp_seconds` and
//! `plum_fuse_no_calls_alert_after_seconds`, kept and rendered by hand.
//!
//! These two families hold one series per `(number, direction)`, thousands
//! on a large account. Going through the `prometheus` crate's `gather()`
//! builds a protobuf-shaped copy of every sample on each scrape (about
//! 45 ms for 3,000 histograms); writing the text format straight from a
//! compact table with pre-escaped label sets is several times faster
//! (see `benches/benches/metrics_render.rs`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::metrics::{CALL_DURATION_BUCKETS, CallSeries, NumberSeries};
use crate::poller::NoCallsAlertConfig;

const N_BUCKETS: usize = CALL_DURATION_BUCKETS.len();

/// One `(number, direction)` series: the counter and the histogram share
/// their count, since each completed call is one increment of both.
#[derive(Debug)]
struct Series {
    /// `number="…",direction="…"`, escaped once at creation.
    labels: String,
    /// Calls per bucket (not cumulative); the last slot is `+Inf` only.
    buckets: [u64; N_BUCKETS + 1],
    count: u64,
    /// Whole seconds: durations are integers, so the sum is exact.
    sum_secs: u64,
}

/// Everything kept for one number: its direction series and the figures of
/// the two per-number gauges.
#[derive(Debug)]
struct Number {
    /// `number="…"`, escaped once at creation.
    label: String,
    /// direction → series; empty for a number known only by its window.
    directions: BTreeMap<String, Series>,
    /// End of the latest-ending call counted since the anchor.
    last_end: Option<i64>,
    /// `plum_fuse_no_calls_alert_after_seconds`.
    alert_after: Duration,
}

impl Number {
    /// The series of `direction`, created at zero if missing.
    fn series(&mut self, direction: &str) -> &mut Series {
        // Allocate keys only for a new series; the common path borrows.
        if !self.directions.contains_key(direction) {
            let series = Series {
                labels: format!("{},direction=\"{}\"", self.label, escape_label(direction)),
                buckets: [0; N_BUCKETS + 1],
                count: 0,
                sum_secs: 0,
            };
            self.directions.insert(direction.to_owned(), series);
        }
        self.directions.get_mut(direction).expect("inserted above")
    }
}

/// What the lock guards.
#[derive(Debug)]
struct Table {
    /// number → its series, so lookups borrow `&str` keys.
    numbers: BTreeMap<String, Number>,
    /// 00:00 UTC of the day counted: the last-call gauge never reads earlier.
    anchor: i64,
    /// Where each new number's window comes from.
    windows: NoCallsAlertConfig,
}

/// The HELP texts of the families kept here.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct FamilyHelp<'a> {
    pub(crate) calls: &'a str,
    pub(crate) durations: &'a str,
    pub(crate) last_call_end: &'a str,
    pub(crate) no_calls_alert_after: &'a str,
}

/// The call counter and duration histogram families, and the per-number
/// gauges `plum_fuse_last_call_end_timestamp_seconds` and
/// `plum_fuse_no_calls_alert_after_seconds`.
///
/// # Invariants
/// For every series, `count` is the sum of `buckets`; a scrape sees each
/// series whole (one lock guards the table, held for a render, about
/// 5 ms at 3,000 series, and for well under a microsecond per counted call).
/// The last-call gauge of a number reads `max(last_end, anchor)`, so it is
/// never earlier than the day counted, and every number with a direction
/// series has both gauges.
///
/// ## Memory Usage
/// About 250 bytes per `(number, direction)` series plus about 100 bytes
/// per number: 850 KB for 1,000 numbers × 3 directions.
#[derive(Debug)]
pub(crate) struct CallFamilies {
    series: Mutex<Table>,
    le_labels: Vec<String>,
    calls_help: String,
    durations_help: String,
    last_call_end_help: String,
    no_calls_alert_after_help: String,
}

impl CallFamilies {
    pub(crate) fn new(help: FamilyHelp<'_>) -> Self {
        CallFamilies {
            series: Mutex::new(Table {
                numbers: BTreeMap::new(),
                anchor: 0,
                windows: NoCallsAlertConfig::default(),
            }),
            le_labels: CALL_DURATION_BUCKETS.iter().map(|b| format!("{b}")).collect(),
            calls_help: escape_help(help.calls),
            durations_help: escape_help(help.durations),
            last_call_end_help: escape_help(help.last_call_end),
            no_calls_alert_after_help: escape_help(help.no_calls_alert_after),
        }
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        // Every update leaves the table consistent, so a poisoned lock
        // (a panic elsewhere while holding it) holds valid data.
        self.series.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn with_number<R>(&self, number: &str, f: impl FnOnce(&mut Number) -> R) -> R {
        let mut table = self.table();
        let table = &mut *table;
        // Allocate keys only for a new number; the common path borrows.
        if !table.numbers.contains_key(number) {
            let entry = Number {
                label: format!("number=\"{}\"", escape_label(number)),
                directions: BTreeMap::new(),
                last_end: None,
                alert_after: table.windows.window(number),
            };
            table.numbers.insert(number.to_owned(), entry);
        }
        f(table.numbers.get_mut(number).expect("inserted above"))
    }

    /// Creates the series at zero if missing.
    pub(crate) fn touch(&self, number: &str, direction: &str) {
        self.with_number(number, |entry| {
            entry.series(direction);
        });
    }

    /// Creates the per-number gauges of `number` if missing, without any
    /// direction series.
    pub(crate) fn touch_number(&self, number: &str) {
        self.with_number(number, |_| ());
    }

    /// Counts one call of `duration_secs` (>= 0) and, if given, takes its
    /// `end` into the number's last call.
    pub(crate) fn record(&self, number: &str, direction: &str, duration_secs: u64, end: Option<i64>) {
        let slot = CALL_DURATION_BUCKETS.partition_point(|&le| (duration_secs as f64) > le);
        // One lock for both, so a scrape sees the count and the last call agree.
        self.with_number(number, |entry| {
            if let Some(end) = end {
                entry.last_end = Some(entry.last_end.map_or(end, |last| last.max(end)));
            }
            let s = entry.series(direction);
            s.buckets[slot] += 1;
            s.count += 1;
            s.sum_secs = s.sum_secs.saturating_add(duration_secs);
        });
    }

    /// Sets the day counted, keeping what was counted (the backfill's end).
    pub(crate) fn set_anchor(&self, anchor: i64) {
        self.table().anchor = anchor;
    }

    /// Sets where windows come from, for the numbers known and those to come.
    pub(crate) fn set_windows(&self, windows: &NoCallsAlertConfig) {
        let mut table = self.table();
        for (number, entry) in &mut table.numbers {
            entry.alert_after = windows.window(number);
        }
        table.windows = windows.clone();
    }

    /// Sets every series to zero and forgets every last call, keeping the
    /// series (a new UTC day starting at `anchor`).
    pub(crate) fn reset(&self, anchor: i64) {
        let mut table = self.table();
        table.anchor = anchor;
        for entry in table.numbers.values_mut() {
            entry.last_end = None;
            for s in entry.directions.values_mut() {
                s.buckets = [0; N_BUCKETS + 1];
                s.count = 0;
                s.sum_secs = 0;
            }
        }
    }

    pub(crate) fn snapshot(&self) -> BTreeMap<(String, String), CallSeries> {
        let table = self.table();
        let mut out = BTreeMap::new();
        for (number, entry) in &table.numbers {
            for (direction, s) in &entry.directions {
                let series =
                    CallSeries { calls: s.count, duration_count: s.count, duration_sum: s.sum_secs as f64 };
                out.insert((number.clone(), direction.clone()), series);
            }
        }
        out
    }

    pub(crate) fn number_snapshot(&self) -> BTreeMap<String, NumberSeries> {
        let table = self.table();
        table
            .numbers
            .iter()
            .map(|(number, entry)| {
                let series = NumberSeries {
                    last_call_end: last_call_end(entry, table.anchor),
                    no_calls_alert_after: entry.alert_after,
                };
                (number.clone(), series)
            })
            .collect()
    }

    /// Appends every family in the text exposition format.
    pub(crate) fn render(&self, out: &mut String) {
        let table = self.table();
        // Roughly 100 bytes a line, 18 lines a series, 2 lines a number.
        let n_series: usize = table.numbers.values().map(|n| n.directions.len()).sum();
        out.reserve(n_series * 18 * 100 + table.numbers.len() * 2 * 80 + 2048);
        let series = || table.numbers.values().flat_map(|n| n.directions.values());
        let _ = writeln!(out, "# HELP plum_fuse_calls_total {}", self.calls_help);
        out.push_str("# TYPE plum_fuse_calls_total counter\n");
        for s in series() {
            let _ = writeln!(out, "plum_fuse_calls_total{{{}}} {}", s.labels, s.count);
        }
        let _ = writeln!(out, "# HELP plum_fuse_call_duration_seconds {}", self.durations_help);
        out.push_str("# TYPE plum_fuse_call_duration_seconds histogram\n");
        for s in series() {
            let mut cumulative = 0;
            for (le, n) in self.le_labels.iter().zip(&s.buckets) {
                cumulative += n;
                let _ = writeln!(
                    out,
                    "plum_fuse_call_duration_seconds_bucket{{{},le=\"{le}\"}} {cumulative}",
                    s.labels
                );
            }
            let _ = writeln!(
                out,
                "plum_fuse_call_duration_seconds_bucket{{{},le=\"+Inf\"}} {}",
                s.labels, s.count
            );
            let _ = writeln!(out, "plum_fuse_call_duration_seconds_sum{{{}}} {}", s.labels, s.sum_secs);
            let _ = writeln!(out, "plum_fuse_call_duration_seconds_count{{{}}} {}", s.labels, s.count);
        }
        let _ = writeln!(out, "# HELP plum_fuse_last_call_end_timestamp_seconds {}", self.last_call_end_help);
        out.push_str("# TYPE plum_fuse_last_call_end_timestamp_seconds gauge\n");
        for n in table.numbers.values() {
            let _ = writeln!(
                out,
                "plum_fuse_last_call_end_timestamp_seconds{{{}}} {}",
                n.label,
                last_call_end(n, table.anchor)
            );
        }
        let _ =
            writeln!(out, "# HELP plum_fuse_no_calls_alert_after_seconds {}", self.no_calls_alert_after_help);
        out.push_str("# TYPE plum_fuse_no_calls_alert_after_seconds gauge\n");
        for n in table.numbers.values() {
            let _ = writeln!(
                out,
                "plum_fuse_no_calls_alert_after_seconds{{{}}} {}",
                n.label,
                n.alert_after.as_secs()
            );
        }
    }
}

/// The last-call gauge: the latest end counted, never before the anchor.
fn last_call_end(number: &Number, anchor: i64) -> i64 {
    number.last_end.map_or(anchor, |end| end.max(anchor))
}

/// Escapes a label value: `\`, `"` and newline.
fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes a HELP text: `\` and newline.
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::DAY_SECS;

    #[test]
    fn durations_land_in_the_right_bucket() {
        // (duration, index of the first bucket that holds it; N_BUCKETS = +Inf)
        let cases = [(0, 0), (5, 0), (6, 1), (60, 3), (61, 4), (3600, 9), (14_400, 11), (14_401, N_BUCKETS)];
        for (duration, slot) in cases {
            let f = CallFamilies::new(FamilyHelp::default());
            f.record("n", "inbound", duration, None);
            let table = f.table();
            let s = &table.numbers["n"].directions["inbound"];
            assert_eq!(s.buckets.iter().position(|&b| b == 1), Some(slot), "{duration}s");
        }
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label("x\ny"), "x\\ny");
        assert_eq!(escape_help("a\\b\nc"), "a\\\\b\\nc");
        let f = CallFamilies::new(FamilyHelp::default());
        f.record("61\"7", "in\nbound", 1, Some(5));
        let mut out = String::new();
        f.render(&mut out);
        assert!(
            out.contains("plum_fuse_calls_total{number=\"61\\\"7\",direction=\"in\\nbound\"} 1\n"),
            "{out}"
        );
        assert!(out.contains("plum_fuse_last_call_end_timestamp_seconds{number=\"61\\\"7\"} 5\n"), "{out}");
    }

    #[test]
    fn histogram_lines_are_cumulative_and_consistent() {
        let help = FamilyHelp { calls: "c", durations: "d", ..FamilyHelp::default() };
        let f = CallFamilies::new(help);
        for d in [3, 3, 70, 5000] {
            f.record("1", "inbound", d, None);
        }
        let mut out = String::new();
        f.render(&mut out);
        let expected = [
            r#"plum_fuse_call_duration_seconds_bucket{number="1",direction="inbound",le="5"} 2"#,
            r#"plum_fuse_call_duration_seconds_bucket{number="1",direction="inbound",le="60"} 2"#,
            r#"plum_fuse_call_duration_seconds_bucket{number="1",direction="inbound",le="120"} 3"#,
            r#"plum_fuse_call_duration_seconds_bucket{number="1",direction="inbound",le="3600"} 3"#,
            r#"plum_fuse_call_duration_seconds_bucket{number="1",direction="inbound",le="7200"} 4"#,
            r#"plum_fuse_call_duration_seconds_bucket{number="1",direction="inbound",le="+Inf"} 4"#,
            r#"plum_fuse_call_duration_seconds_sum{number="1",direction="inbound"} 5076"#,
            r#"plum_fuse_call_duration_seconds_count{number="1",direction="inbound"} 4"#,
            "# TYPE plum_fuse_call_duration_seconds histogram",
            "# HELP plum_fuse_calls_total c",
        ];
        for line in expected {
            assert!(out.lines().any(|l| l == line), "missing {line}\n{out}");
        }
    }

    /// 2023-11-14T00:00:00Z, a UTC midnight.
    const DAY0: i64 = 1_699_920_000;

    fn gauges(f: &CallFamilies) -> Vec<(String, i64, u64)> {
        f.number_snapshot()
            .into_iter()
            .map(|(n, s)| (n, s.last_call_end, s.no_calls_alert_after.as_secs()))
            .collect()
    }

    #[test]
    fn the_last_call_end_is_the_anchor_then_the_latest_end_then_the_next_anchor() {
        // (number, direction, end, then the last-call gauge of "1" and "2")
        type Step = (&'static str, &'static str, Option<i64>, i64, Option<i64>);
        let f = CallFamilies::new(FamilyHelp::default());
        let steps: [Step; 5] = [
            ("1", "inbound", None, DAY0, None), // touched only: the anchor
            ("1", "inbound", Some(DAY0 + 100), DAY0 + 100, None), // the first call
            ("1", "outbound", Some(DAY0 + 50), DAY0 + 100, None), // ended earlier: the latest end stays
            ("2", "inbound", Some(DAY0 + 70), DAY0 + 100, Some(DAY0 + 70)), // a number of its own
            ("1", "transfer", Some(DAY0 + 900), DAY0 + 900, Some(DAY0 + 70)), // any direction counts
        ];
        f.set_anchor(DAY0);
        f.touch("1", "inbound");
        for (number, direction, end, want_1, want_2) in steps {
            f.record(number, direction, 10, end);
            let got: BTreeMap<String, i64> = gauges(&f).into_iter().map(|(n, v, _)| (n, v)).collect();
            assert_eq!(got.get("1").copied(), Some(want_1), "{number} {direction} {end:?}");
            assert_eq!(got.get("2").copied(), want_2, "{number} {direction} {end:?}");
        }
        // UTC midnight: back to the new anchor, the series kept.
        f.reset(DAY0 + DAY_SECS);
        assert_eq!(
            gauges(&f),
            vec![("1".into(), DAY0 + DAY_SECS, 7_200), ("2".into(), DAY0 + DAY_SECS, 7_200)]
        );
        // Never before the anchor, even for a call counted with an earlier end.
        f.record("1", "inbound", 10, Some(DAY0 + 10));
        assert_eq!(gauges(&f)[0].1, DAY0 + DAY_SECS);
    }

    #[test]
    fn windows_come_from_the_config_for_known_and_new_numbers() {
        let f = CallFamilies::new(FamilyHelp::default());
        f.touch("early", "inbound");
        let windows = NoCallsAlertConfig {
            default: Duration::from_secs(1_800),
            per_number: BTreeMap::from([
                ("early".to_owned(), Duration::from_secs(600)),
                ("named".to_owned(), Duration::from_secs(21_600)),
            ]),
        };
        f.set_windows(&windows);
        f.touch_number("named");
        f.record("late", "inbound", 1, Some(3));
        assert_eq!(
            gauges(&f),
            vec![("early".into(), 0, 600), ("late".into(), 3, 1_800), ("named".into(), 0, 21_600)]
        );
        let mut out = String::new();
        f.render(&mut out);
        for line in [
            "# TYPE plum_fuse_last_call_end_timestamp_seconds gauge",
            "# TYPE plum_fuse_no_calls_alert_after_seconds gauge",
            r#"plum_fuse_no_calls_alert_after_seconds{number="named"} 21600"#,
            r#"plum_fuse_last_call_end_timestamp_seconds{number="late"} 3"#,
        ] {
            assert!(out.lines().any(|l| l == line), "missing {line}\n{out}");
        }
        // A number known only by its window has no call series.
        assert!(!out.contains(r#"plum_fuse_calls_total{number="named""#), "{out}");
    }
}
