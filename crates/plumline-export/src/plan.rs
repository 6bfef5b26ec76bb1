//! [`ExportPlan`]: a time range cut into [`DayPartition`]s, one per calendar
//! day in the export's time zone and per requested number.

use std::fmt;

use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;
use plumline_api::CallQuery;

use crate::error::{ExportError, PlanError};

/// One unit of work: the calls of one calendar day (in the plan's time
/// zone) for one number, or for all numbers.
///
/// # Invariants
/// `window_start < window_end`, and the window is the whole day: exports
/// work in whole days, so a file always holds its whole day (a bound inside
/// a day widens the plan to that day's edge).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayPartition {
    date: Date,
    number: Option<String>,
    window_start: i64,
    window_end: i64,
}

impl DayPartition {
    /// The calendar day, in the plan's time zone.
    #[must_use]
    pub fn date(&self) -> Date {
        self.date
    }

    /// The number filter, or `None` for every number.
    #[must_use]
    pub fn number(&self) -> Option<&str> {
        self.number.as_deref()
    }

    /// First second of the window (UNIX seconds, inclusive).
    #[must_use]
    pub fn window_start(&self) -> i64 {
        self.window_start
    }

    /// End of the window (UNIX seconds, exclusive).
    #[must_use]
    pub fn window_end(&self) -> i64 {
        self.window_end
    }

    /// The API query of this day: the window with both ends inclusive, as
    /// the server matches them against each call's `start`.
    pub fn query(&self) -> Result<CallQuery, ExportError> {
        CallQuery::new(self.window_start, self.window_end - 1)
            .map(|q| q.with_number(self.number.clone()))
            .map_err(ExportError::query)
    }

    /// Whether the day's window is closed: it ended at least `settle_secs`
    /// before `now`, so the API's answer for it should no longer change.
    #[must_use]
    pub fn is_closed(&self, now: i64, settle_secs: i64) -> bool {
        self.window_end.saturating_add(settle_secs) <= now
    }
}

impl fmt::Display for DayPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.number {
            Some(n) => write!(f, "{} (number {n})", self.date),
            None => write!(f, "{}", self.date),
        }
    }
}

/// A half-open range `[start, end)` of UNIX seconds cut into whole calendar
/// days of a time zone, for each requested number.
///
/// A bound inside a day widens to that day's edge (its midnight, or the next
/// one for the end): a day file always holds its whole day, so a narrower
/// rerun never replaces a day with part of it. [`ExportPlan::widened`] says
/// which bounds moved.
///
/// Days follow the zone's calendar, so a day is 23 or 25 hours long across a
/// daylight-saving change, and a day whose midnight does not exist starts at
/// its first instant. Partitions are ordered by day, then by number.
#[derive(Debug, Clone)]
pub struct ExportPlan {
    tz: TimeZone,
    tz_name: String,
    start: i64,
    end: i64,
    widened: Vec<crate::progress::WidenedBound>,
    partitions: Vec<DayPartition>,
}

impl ExportPlan {
    /// Plans `[start, end)` (UNIX seconds) in `tz`, once per entry of
    /// `numbers`, or once unfiltered when `numbers` is empty.
    ///
    /// # Errors
    /// [`ExportError::InvalidPlan`] when the range is empty or reversed,
    /// starts before 1970, or lies outside what the time zone database
    /// covers, or when a number repeats or is blank.
    pub fn new(start: i64, end: i64, tz: TimeZone, numbers: &[String]) -> Result<Self, ExportError> {
        if start < 0 {
            return Err(PlanError::BeforeEpoch { start }.into());
        }
        if start >= end {
            return Err(PlanError::EmptyRange { start, end }.into());
        }
        let mut filters: Vec<Option<String>> = Vec::with_capacity(numbers.len().max(1));
        for n in numbers {
            let n = n.trim();
            if n.is_empty() {
                return Err(PlanError::BlankNumber.into());
            }
            if filters.iter().any(|f| f.as_deref() == Some(n)) {
                return Err(PlanError::RepeatedNumber { number: n.to_owned() }.into());
            }
            filters.push(Some(n.to_owned()));
        }
        if filters.is_empty() {
            filters.push(None);
        }
        let bad_time = |e| ExportError::calendar("the range", e);
        let mut date = Timestamp::from_second(start).map_err(bad_time)?.to_zoned_datetime(tz.clone()).date();
        let mut partitions = Vec::new();
        let (requested_start, requested_end) = (start, end);
        let (mut start, mut end) = (start, end);
        loop {
            let day_start = day_start(date, &tz).map_err(bad_time)?;
            let next = date.tomorrow().map_err(bad_time)?;
            let next_start = day_start_or_end(next, &tz).map_err(bad_time)?;
            start = start.min(day_start);
            for number in &filters {
                partitions.push(DayPartition {
                    date,
                    number: number.clone(),
                    window_start: day_start,
                    window_end: next_start,
                });
            }
            if next_start >= end {
                end = next_start;
                break;
            }
            date = next;
        }
        let mut widened = Vec::new();
        if start != requested_start {
            widened.push(crate::progress::WidenedBound {
                bound: "start",
                requested: requested_start,
                widened_to: start,
            });
        }
        if end != requested_end {
            widened.push(crate::progress::WidenedBound {
                bound: "end",
                requested: requested_end,
                widened_to: end,
            });
        }
        let tz_name = tz.iana_name().unwrap_or("fixed offset").to_owned();
        Ok(ExportPlan { tz, tz_name, start, end, widened, partitions })
    }

    /// The bounds of the requested range that fell inside a day, and the
    /// midnight each was widened to.
    #[must_use]
    pub fn widened(&self) -> &[crate::progress::WidenedBound] {
        &self.widened
    }

    /// The partitions, by day then number.
    #[must_use]
    pub fn partitions(&self) -> &[DayPartition] {
        &self.partitions
    }

    /// The time zone days are cut in.
    #[must_use]
    pub fn tz(&self) -> &TimeZone {
        &self.tz
    }

    /// The time zone's IANA name (recorded in file metadata and state).
    #[must_use]
    pub fn tz_name(&self) -> &str {
        &self.tz_name
    }

    /// Start of the range (UNIX seconds, inclusive), widened to midnight.
    #[must_use]
    pub fn start(&self) -> i64 {
        self.start
    }

    /// End of the range (UNIX seconds, exclusive), widened to midnight.
    #[must_use]
    pub fn end(&self) -> i64 {
        self.end
    }

    /// How many distinct calendar days the plan covers.
    #[must_use]
    pub fn n_days(&self) -> usize {
        let mut n = 0;
        let mut last = None;
        for p in &self.partitions {
            if last != Some(p.date) {
                n += 1;
                last = Some(p.date);
            }
        }
        n
    }
}

/// The first instant of `date` in `tz`, as UNIX seconds.
fn day_start(date: Date, tz: &TimeZone) -> Result<i64, jiff::Error> {
    Ok(date.to_zoned_datetime(tz.clone())?.start_of_day()?.timestamp().as_second())
}

/// Like [`day_start`], but a day past the end of the supported calendar
/// ends at the largest representable second instead of failing.
fn day_start_or_end(date: Date, tz: &TimeZone) -> Result<i64, jiff::Error> {
    day_start(date, tz).or_else(|e| if date.year() >= 9999 { Ok(Timestamp::MAX.as_second()) } else { Err(e) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> i64 {
        s.parse::<Timestamp>().expect("timestamp").as_second()
    }

    fn windows(plan: &ExportPlan) -> Vec<(String, i64, i64)> {
        plan.partitions().iter().map(|p| (p.date().to_string(), p.window_start(), p.window_end())).collect()
    }

    #[test]
    fn days_are_cut_in_the_zone_across_dst() {
        type Case<'a> = (&'a str, &'a str, &'a [(&'a str, i64)]);
        let ny = TimeZone::get("America/New_York").expect("tz");
        // 2026-11-01 is the fall-back day in New York (25 hours); 2026-03-08 springs forward (23 hours).
        let cases: &[Case<'_>] = &[
            (
                "2026-10-31T04:00:00Z",
                "2026-11-03T05:00:00Z",
                &[("2026-10-31", 24 * 3600), ("2026-11-01", 25 * 3600), ("2026-11-02", 24 * 3600)],
            ),
            (
                "2026-03-07T05:00:00Z",
                "2026-03-10T04:00:00Z",
                &[("2026-03-07", 24 * 3600), ("2026-03-08", 23 * 3600), ("2026-03-09", 24 * 3600)],
            ),
        ];
        for (start, end, want) in cases {
            let plan = ExportPlan::new(ts(start), ts(end), ny.clone(), &[]).expect("plan");
            let got: Vec<(String, i64)> = windows(&plan).into_iter().map(|(d, s, e)| (d, e - s)).collect();
            let want: Vec<(String, i64)> = want.iter().map(|(d, l)| ((*d).to_owned(), *l)).collect();
            assert_eq!(got, want, "{start}..{end}");
            // Windows tile the range with no gap and no overlap.
            let w = windows(&plan);
            assert_eq!(w[0].1, ts(start));
            assert_eq!(w[w.len() - 1].2, ts(end));
            for pair in w.windows(2) {
                assert_eq!(pair[0].2, pair[1].1, "{pair:?}");
            }
        }
    }

    #[test]
    fn bounds_inside_a_day_widen_to_whole_days() {
        type Case<'a> = (&'a str, &'a str, &'a str, &'a str, &'a [&'a str]);
        // (requested start, requested end, zone, widened [start, end), widened bounds)
        let cases: &[Case<'_>] = &[
            (
                "2026-01-01T12:00:00Z",
                "2026-01-03T06:00:00Z",
                "UTC",
                "2026-01-01T00:00:00Z/2026-01-04T00:00:00Z",
                &["start", "end"],
            ),
            (
                "2026-01-01T00:00:00Z",
                "2026-01-02T00:00:00Z",
                "UTC",
                "2026-01-01T00:00:00Z/2026-01-02T00:00:00Z",
                &[],
            ),
            (
                "2026-01-01T00:00:00Z",
                "2026-01-01T00:00:01Z",
                "UTC",
                "2026-01-01T00:00:00Z/2026-01-02T00:00:00Z",
                &["end"],
            ),
            (
                "2024-03-05T12:00:00Z",
                "2024-03-06T00:00:00Z",
                "UTC",
                "2024-03-05T00:00:00Z/2024-03-06T00:00:00Z",
                &["start"],
            ),
            // Midnight in New York is 05:00Z in winter.
            (
                "2026-01-01T00:00:00Z",
                "2026-01-02T00:00:00Z",
                "America/New_York",
                "2025-12-31T05:00:00Z/2026-01-02T05:00:00Z",
                &["start", "end"],
            ),
        ];
        for (start, end, zone, want, bounds) in cases {
            let tz = TimeZone::get(zone).expect("tz");
            let plan = ExportPlan::new(ts(start), ts(end), tz, &[]).expect("plan");
            let (ws, we) = want.split_once('/').expect("want");
            assert_eq!((plan.start(), plan.end()), (ts(ws), ts(we)), "{start}..{end} in {zone}");
            let got: Vec<&str> = plan.widened().iter().map(|w| w.bound).collect();
            assert_eq!(&got, bounds, "{start}..{end} in {zone}");
            for w in plan.widened() {
                assert_eq!(w.requested, if w.bound == "start" { ts(start) } else { ts(end) });
            }
            // Every partition is a whole day, and they tile the widened range.
            let w = windows(&plan);
            assert_eq!((w[0].1, w[w.len() - 1].2), (ts(ws), ts(we)));
            for pair in w.windows(2) {
                assert_eq!(pair[0].2, pair[1].1, "{pair:?}");
            }
        }
        let plan =
            ExportPlan::new(ts("2026-01-01T12:00:00Z"), ts("2026-01-02T00:00:00Z"), TimeZone::UTC, &[])
                .expect("plan");
        let q = plan.partitions()[0].query().expect("query");
        assert_eq!((q.start(), q.end()), (ts("2026-01-01T00:00:00Z"), ts("2026-01-02T00:00:00Z") - 1));
        assert_eq!(plan.n_days(), 1);
    }

    #[test]
    fn one_partition_per_day_and_number() {
        let numbers = vec!["6175551234".to_owned(), "8005550000".to_owned()];
        let plan =
            ExportPlan::new(ts("2026-01-01T00:00:00Z"), ts("2026-01-03T00:00:00Z"), TimeZone::UTC, &numbers)
                .expect("plan");
        let got: Vec<(String, Option<&str>)> =
            plan.partitions().iter().map(|p| (p.date().to_string(), p.number())).collect();
        assert_eq!(
            got,
            vec![
                ("2026-01-01".into(), Some("6175551234")),
                ("2026-01-01".into(), Some("8005550000")),
                ("2026-01-02".into(), Some("6175551234")),
                ("2026-01-02".into(), Some("8005550000")),
            ]
        );
        assert_eq!(plan.n_days(), 2);
    }

    #[test]
    fn bad_plans_are_refused() {
        let cases: &[(i64, i64, &[&str], &str)] = &[
            (10, 10, &[], "is empty"),
            (20, 10, &[], "is empty"),
            (-5, 10, &[], "before 1970"),
            (0, 10, &["1", "1"], "given twice"),
            (0, 10, &[" "], "is empty"),
        ];
        for (start, end, numbers, needle) in cases {
            let numbers: Vec<String> = numbers.iter().map(|s| (*s).to_owned()).collect();
            let err = ExportPlan::new(*start, *end, TimeZone::UTC, &numbers).expect_err("invalid");
            assert!(err.to_string().contains(needle), "{start}..{end}: {err}");
        }
    }

    #[test]
    fn settle_margin_decides_closed_days() {
        let plan = ExportPlan::new(0, 2 * 86_400, TimeZone::UTC, &[]).expect("plan");
        let [first, second] = plan.partitions() else { panic!("two days") };
        let now = 2 * 86_400 + 1800;
        assert!(first.is_closed(now, 3600));
        assert!(!second.is_closed(now, 3600));
        assert!(second.is_closed(now, 0));
    }
}
