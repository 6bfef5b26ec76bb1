//! Time arguments: `YYYY-MM-DD` (midnight in `--tz`), strict RFC 3339, UNIX
//! seconds, and the relative forms of scheduled runs (`now`, `today`,
//! `yesterday`, `-36h`, `-7d`).
//!
//! Parsing is split in two, as clap wants it: [`TimeArg`] is what a flag
//! says (checked by clap, so a typo is a usage error before anything runs),
//! and [`TimeArg::resolve`] turns it into an instant once the time zone and
//! the current time are known.

use std::ffi::OsStr;

use anyhow::{Context as _, bail};
use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan as _, ZonedDateTime};

const FORMS: &str = "use YYYY-MM-DD, RFC 3339 (2026-11-01T00:00:00Z), UNIX seconds, \
                     now, today, yesterday, or an offset into the past such as -36h or -7d";

/// Resolves a `--tz` value (IANA name such as `Europe/Berlin`, or `UTC`).
pub fn parse_tz(name: &str) -> anyhow::Result<TimeZone> {
    tz_value(name).map_err(anyhow::Error::msg)
}

/// Clap's parser of `--tz`.
pub fn tz_value(name: &str) -> Result<TimeZone, String> {
    TimeZone::get(name).map_err(|_| {
        format!("unknown time zone `{name}`: use an IANA name such as UTC, Europe/Berlin or America/New_York")
    })
}

/// The unit of a relative offset such as `-36h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgoUnit {
    Seconds,
    Minutes,
    Hours,
    /// Calendar days in `--tz` (23 or 25 hours across a daylight-saving change).
    Days,
    /// Seven calendar days.
    Weeks,
}

/// One time argument as written, before the time zone and clock apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeArg {
    /// An instant: RFC 3339 or UNIX seconds.
    Instant(Timestamp),
    /// Midnight of a calendar day in `--tz`.
    Date(Date),
    /// The current time.
    Now,
    /// Midnight today in `--tz`.
    Today,
    /// Midnight yesterday in `--tz`.
    Yesterday,
    /// This far before now.
    Ago(i64, AgoUnit),
}

impl TimeArg {
    /// Reads one argument; the error says which forms exist.
    pub fn parse(value: &str) -> Result<Self, String> {
        let v = value.trim();
        match v {
            "now" => return Ok(TimeArg::Now),
            "today" => return Ok(TimeArg::Today),
            "yesterday" => return Ok(TimeArg::Yesterday),
            _ => {}
        }
        if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
            let secs: i64 = v.parse().map_err(|_| format!("`{value}` is too large for UNIX seconds"))?;
            return Timestamp::from_second(secs)
                .map(TimeArg::Instant)
                .map_err(|_| format!("`{value}` is out of range for UNIX seconds"));
        }
        if let Some(rest) = v.strip_prefix('-') {
            return parse_ago(rest).ok_or_else(|| {
                format!("`{value}` is not an offset into the past: write -<N><unit>, unit s, m, h, d or w (-36h, -7d)")
            });
        }
        if v.len() == 10 {
            return v.parse::<Date>().map(TimeArg::Date).map_err(|e| format!("`{value}`: {e}"));
        }
        if v.len() > 10 {
            check_rfc3339(v).map_err(|why| format!("`{value}` is not RFC 3339: {why}"))?;
            return v.parse::<Timestamp>().map(TimeArg::Instant).map_err(|e| format!("`{value}`: {e}"));
        }
        Err(format!("`{value}`: {FORMS}"))
    }

    /// The instant this argument names in `tz`, with `now` as the current time.
    pub fn resolve(self, tz: &TimeZone, now: Timestamp) -> anyhow::Result<Timestamp> {
        let today = || now.to_zoned_datetime(tz.clone()).date();
        let midnight = |date: Date| -> anyhow::Result<Timestamp> {
            // `start_of_day` handles days whose midnight does not exist (a DST gap at 00:00).
            Ok(date.to_zoned_datetime(tz.clone())?.start_of_day()?.timestamp())
        };
        Ok(match self {
            TimeArg::Instant(ts) => ts,
            TimeArg::Date(date) => midnight(date)?,
            TimeArg::Now => now,
            TimeArg::Today => midnight(today())?,
            TimeArg::Yesterday => midnight(today().yesterday()?)?,
            TimeArg::Ago(n, unit) => {
                let zoned: ZonedDateTime = now.to_zoned_datetime(tz.clone());
                let earlier = match unit {
                    AgoUnit::Seconds => zoned.checked_sub(n.seconds()),
                    AgoUnit::Minutes => zoned.checked_sub(n.minutes()),
                    AgoUnit::Hours => zoned.checked_sub(n.hours()),
                    AgoUnit::Days => zoned.checked_sub(n.days()),
                    AgoUnit::Weeks => zoned.checked_sub(n.weeks()),
                };
                earlier.context("the offset reaches outside the calendar")?.timestamp()
            }
        })
    }
}

/// `-<N><unit>` without its `-`.
fn parse_ago(rest: &str) -> Option<TimeArg> {
    let split = rest.find(|c: char| !c.is_ascii_digit())?;
    let (digits, unit) = rest.split_at(split);
    let n: i64 = digits.parse().ok()?;
    let unit = match unit {
        "s" => AgoUnit::Seconds,
        "m" => AgoUnit::Minutes,
        "h" => AgoUnit::Hours,
        "d" => AgoUnit::Days,
        "w" => AgoUnit::Weeks,
        _ => return None,
    };
    // jiff spans are bounded; larger offsets reach before year -9999 anyway.
    (n <= 100_000_000).then_some(TimeArg::Ago(n, unit))
}

/// Checks the shape RFC 3339 section 5.6 allows:
/// `YYYY-MM-DD(T|t| )HH:MM:SS[.fraction](Z|z|±HH:MM)`, offsets within ±23:59.
/// Ranges of the date and time fields are left to jiff.
fn check_rfc3339(v: &str) -> Result<(), &'static str> {
    let b = v.as_bytes();
    let digits =
        |range: std::ops::Range<usize>| b.get(range).is_some_and(|s| s.iter().all(u8::is_ascii_digit));
    let at = |i: usize, c: u8| b.get(i) == Some(&c);
    if !(digits(0..4) && at(4, b'-') && digits(5..7) && at(7, b'-') && digits(8..10)) {
        return Err("the date must be YYYY-MM-DD");
    }
    if !matches!(b.get(10), Some(b'T' | b't' | b' ')) {
        return Err("the date and time must be separated by T");
    }
    if !(digits(11..13) && at(13, b':') && digits(14..16) && at(16, b':') && digits(17..19)) {
        return Err("the time must be HH:MM:SS");
    }
    let mut i = 19;
    if at(i, b'.') {
        i += 1;
        let from = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == from {
            return Err("a fraction of a second needs digits after the dot");
        }
    }
    match &b[i..] {
        [b'Z' | b'z'] => Ok(()),
        [b'+' | b'-', h1, h2, b':', m1, m2] if [h1, h2, m1, m2].iter().all(|d| d.is_ascii_digit()) => {
            let hours = (h1 - b'0') * 10 + (h2 - b'0');
            let minutes = (m1 - b'0') * 10 + (m2 - b'0');
            if hours > 23 || minutes > 59 { Err("the offset must be within ±23:59") } else { Ok(()) }
        }
        [] => Err("the time needs an offset: Z or ±HH:MM"),
        _ => Err("the offset must be Z or ±HH:MM"),
    }
}

/// Clap's parser of `--now`: an instant (RFC 3339 or UNIX seconds), not a
/// form that itself needs a clock or a time zone.
pub fn instant_value(value: &str) -> Result<Timestamp, String> {
    match TimeArg::parse(value)? {
        TimeArg::Instant(ts) => Ok(ts),
        _ => Err(format!("`{value}` is not an instant: use RFC 3339 (2026-11-01T05:30:00Z) or UNIX seconds")),
    }
}

/// Clap's parser of time arguments: syntax errors are usage errors that
/// name the flag.
#[derive(Debug, Clone, Copy)]
pub struct TimeArgParser;

impl clap::builder::TypedValueParser for TimeArgParser {
    type Value = TimeArg;

    fn parse_ref(
        &self,
        _cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<TimeArg, clap::Error> {
        let flag = arg.map_or_else(|| "the time".to_owned(), |a| format!("--{}", a.get_id()));
        let text = value.to_str().ok_or_else(|| {
            clap::Error::raw(clap::error::ErrorKind::InvalidUtf8, format!("cannot read {flag}: not UTF-8\n"))
        })?;
        TimeArg::parse(text).map_err(|why| {
            clap::Error::raw(clap::error::ErrorKind::ValueValidation, format!("cannot read {flag}: {why}\n"))
        })
    }
}

/// `--start`, `--end`, `--tz` and `--now`, shared by the commands that take a range.
#[derive(Debug, Clone, clap::Args)]
pub struct RangeArgs {
    /// Start of the range, inclusive: YYYY-MM-DD (midnight in --tz), RFC 3339, UNIX seconds,
    /// now, today, yesterday, or an offset into the past such as -36h or -7d (d: calendar days in --tz).
    #[arg(long, value_name = "TIME", value_parser = TimeArgParser, allow_hyphen_values = true)]
    pub start: TimeArg,

    /// End of the range, exclusive; same forms as --start.
    #[arg(long, value_name = "TIME", value_parser = TimeArgParser, allow_hyphen_values = true)]
    pub end: TimeArg,

    /// Time zone (IANA name) of dates, of printed times, and of the calendar days that make partitions.
    #[arg(long, default_value = "UTC", value_name = "ZONE", value_parser = tz_value)]
    pub tz: TimeZone,

    /// The instant relative times (now, today, -7d, …) count from, instead of the clock: an
    /// orchestrator's logical run time, to rerun a missed schedule (RFC 3339 or UNIX seconds).
    #[arg(long, value_name = "TIME", value_parser = instant_value)]
    pub now: Option<Timestamp>,
}

impl RangeArgs {
    /// The time zone and the validated range.
    pub fn parse(&self) -> anyhow::Result<(TimeZone, TimeRange)> {
        let now = self.now.unwrap_or_else(Timestamp::now);
        let range = TimeRange::resolve(self.start, self.end, &self.tz, now)?;
        tracing::debug!(
            start = %range.start,
            end = %range.end,
            start_unix = range.start.as_second(),
            end_unix = range.end.as_second(),
            "time range"
        );
        Ok((self.tz.clone(), range))
    }
}

/// A half-open range `[start, end)` of UNIX seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    pub start: Timestamp,
    pub end: Timestamp,
}

impl TimeRange {
    /// Parses `--start` and `--end` given as text, relative to the clock.
    pub fn parse(start: &str, end: &str, tz: &TimeZone) -> anyhow::Result<Self> {
        let arg = |v: &str, flag: &str| {
            TimeArg::parse(v).map_err(|why| anyhow::anyhow!("cannot read {flag}: {why}"))
        };
        Self::resolve(arg(start, "--start")?, arg(end, "--end")?, tz, Timestamp::now())
    }

    /// Resolves `--start` and `--end` and checks `start < end`.
    pub fn resolve(start: TimeArg, end: TimeArg, tz: &TimeZone, now: Timestamp) -> anyhow::Result<Self> {
        let start_ts = start.resolve(tz, now).context("cannot read --start")?;
        let end_ts = end.resolve(tz, now).context("cannot read --end")?;
        if start_ts.as_second() < 0 {
            bail!("--start ({start_ts}) is before 1970: the API counts UNIX seconds");
        }
        if start_ts >= end_ts {
            bail!(
                "--start ({start_ts}) must be before --end ({end_ts}): the range is [start, end), so it is empty; swap them or widen it"
            );
        }
        Ok(TimeRange { start: start_ts, end: end_ts })
    }

    /// The API's inclusive window for this half-open range, rounded to whole seconds.
    pub fn api_window(&self) -> (i64, i64) {
        // A sub-second end still covers its whole second only if the range
        // reaches into it; ceil(end) - 1 is the last whole second inside.
        let end = self.end.as_second() + i64::from(self.end.subsec_nanosecond() > 0) - 1;
        (self.start.as_second() + i64::from(self.start.subsec_nanosecond() > 0), end)
    }

    /// The range as `[start, end)` in whole UNIX seconds.
    pub fn half_open_secs(&self) -> (i64, i64) {
        let (start, end_inclusive) = self.api_window();
        (start, end_inclusive + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn resolve(input: &str, tz: &TimeZone, now: Timestamp) -> Result<Timestamp, String> {
        TimeArg::parse(input)?.resolve(tz, now).map_err(|e| format!("{e:#}"))
    }

    #[test]
    fn absolute_forms() {
        let utc = TimeZone::UTC;
        let ny = parse_tz("America/New_York").expect("tz");
        let now = ts("2030-01-01T00:00:00Z");
        let cases: &[(&str, &TimeZone, i64)] = &[
            ("1529552691", &utc, 1_529_552_691),
            ("2026-11-01", &utc, 1_793_491_200),
            ("2026-11-01", &ny, 1_793_505_600), // EDT, UTC-4
            ("2026-11-02", &ny, 1_793_595_600), // EST, UTC-5
            ("2026-11-01T12:00:00Z", &ny, 1_793_534_400),
            ("2026-11-01t12:00:00z", &ny, 1_793_534_400),
            ("2026-11-01 12:00:00Z", &ny, 1_793_534_400),
            ("2026-11-01T12:00:00+02:00", &utc, 1_793_527_200),
            ("2026-11-01T12:00:00-00:00", &utc, 1_793_534_400),
            ("2026-11-01T12:00:00.5+23:59", &utc, 1_793_534_400 - 86_340),
            ("2026-11-01T12:00:00-23:59", &utc, 1_793_534_400 + 86_340),
        ];
        for (input, tz, want) in cases {
            let got = resolve(input, tz, now).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(got.as_second(), *want, "{input}");
        }
    }

    #[test]
    fn strict_rfc3339_refuses_what_the_rfc_does_not_allow() {
        let cases: &[(&str, &str)] = &[
            ("2024-03-03T00:00:00+24:00", "within ±23:59"),
            ("2024-03-03T00:00:00+25:00", "within ±23:59"),
            ("2024-03-03T00:00:00-24:00", "within ±23:59"),
            ("2024-03-03T00:00:00+01:60", "within ±23:59"),
            ("2024-03-03T00:00:00+0100", "Z or ±HH:MM"),
            ("2024-03-03T00:00:00+01", "Z or ±HH:MM"),
            ("2024-03-03T00:00:00", "needs an offset"),
            ("2024-03-03T00:00Z", "HH:MM:SS"),
            ("2024-03-03T00:00:00.Z", "digits after the dot"),
            ("2024-03-03T00:00:00Z[Europe/Paris]", "Z or ±HH:MM"),
            ("2024-03-03_00:00:00Z", "separated by T"),
            ("20240303T000000Z", "YYYY-MM-DD"),
            ("2024-02-30T00:00:00Z", "2024-02-30"),
            ("2024-03-03T25:00:00Z", "2024-03-03T25"),
        ];
        for (input, needle) in cases {
            let err = TimeArg::parse(input).expect_err(input);
            assert!(err.contains(needle), "{input}: {err}");
        }
    }

    #[test]
    fn relative_forms_in_utc_and_another_zone() {
        let utc = TimeZone::UTC;
        let berlin = parse_tz("Europe/Berlin").expect("tz");
        // 2026-03-29 is the spring-forward day in Berlin (02:00 → 03:00, 23 hours).
        let now = ts("2026-03-30T10:30:00Z"); // 12:30 in Berlin (CEST, +02:00)
        let cases: &[(&str, &TimeZone, &str)] = &[
            ("now", &utc, "2026-03-30T10:30:00Z"),
            ("now", &berlin, "2026-03-30T10:30:00Z"),
            ("today", &utc, "2026-03-30T00:00:00Z"),
            ("today", &berlin, "2026-03-29T22:00:00Z"),
            ("yesterday", &utc, "2026-03-29T00:00:00Z"),
            ("yesterday", &berlin, "2026-03-28T23:00:00Z"), // midnight CET, +01:00
            ("-36h", &utc, "2026-03-28T22:30:00Z"),
            ("-36h", &berlin, "2026-03-28T22:30:00Z"), // hours are absolute
            ("-1d", &utc, "2026-03-29T10:30:00Z"),
            ("-1d", &berlin, "2026-03-29T10:30:00Z"), // 12:30 CEST the day before
            ("-2d", &berlin, "2026-03-28T11:30:00Z"), // 12:30 CET: a calendar day, not 48 h
            ("-1w", &utc, "2026-03-23T10:30:00Z"),
            ("-90m", &utc, "2026-03-30T09:00:00Z"),
            ("-45s", &utc, "2026-03-30T10:29:15Z"),
            ("-0d", &utc, "2026-03-30T10:30:00Z"),
        ];
        for (input, tz, want) in cases {
            let got = resolve(input, tz, now).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(got, ts(want), "{input} in {:?}", tz.iana_name());
        }
        for bad in ["-7", "-d", "-7y", "-7 d", "+7d", "-1.5h", "tomorrow", "last tuesday", "", "12:00"] {
            assert!(TimeArg::parse(bad).is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn ranges() {
        let utc = TimeZone::UTC;
        let now = ts("2026-11-05T08:00:00Z");
        let arg = |s: &str| TimeArg::parse(s).expect("valid");
        let r = TimeRange::resolve(arg("2026-11-01"), arg("2026-11-02"), &utc, now).expect("valid");
        assert_eq!(r.api_window(), (1_793_491_200, 1_793_491_200 + 86_399));
        assert_eq!(r.half_open_secs(), (1_793_491_200, 1_793_491_200 + 86_400));
        let r = TimeRange::resolve(arg("-7d"), arg("today"), &utc, now).expect("valid");
        assert_eq!((r.start, r.end), (ts("2026-10-29T08:00:00Z"), ts("2026-11-05T00:00:00Z")));
        for (s, e) in [("2026-11-02", "2026-11-01"), ("2026-11-01", "2026-11-01"), ("today", "yesterday")] {
            let err = TimeRange::resolve(arg(s), arg(e), &utc, now).expect_err("invalid");
            assert!(format!("{err:#}").contains("must be before"), "{err:#}");
        }
        assert!(parse_tz("Mars/Olympus").is_err());
        assert_eq!(instant_value("2026-11-01T05:30:00+01:00"), Ok(ts("2026-11-01T04:30:00Z")));
        for bad in ["today", "-7d", "2026-11-01", "now"] {
            assert!(instant_value(bad).expect_err(bad).contains("not an instant"), "{bad}");
        }
    }
}
