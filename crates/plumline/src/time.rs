//! Time arguments: `YYYY-MM-DD` (midnight in `--tz`), RFC 3339, or UNIX seconds.

use anyhow::{Context as _, bail};
use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;

/// Resolves a `--tz` value (IANA name such as `Europe/Berlin`, or `UTC`).
pub fn parse_tz(name: &str) -> anyhow::Result<TimeZone> {
    TimeZone::get(name).with_context(|| {
        format!("unknown time zone `{name}`: use an IANA name such as UTC, Europe/Berlin or America/New_York")
    })
}

/// Parses one time argument; `what` names the flag in errors.
pub fn parse_time(value: &str, tz: &TimeZone, what: &str) -> anyhow::Result<Timestamp> {
    let v = value.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        let secs: i64 = v.parse().with_context(|| format!("{what} `{value}` is too large"))?;
        return Timestamp::from_second(secs).with_context(|| format!("{what} `{value}` is out of range"));
    }
    if let Ok(ts) = v.parse::<Timestamp>() {
        return Ok(ts);
    }
    if let Ok(date) = v.parse::<Date>() {
        return date
            .to_zoned_datetime(tz.clone())
            .map(|z| z.timestamp())
            .with_context(|| format!("{what} `{value}` has no midnight in the time zone"));
    }
    bail!("cannot read {what} `{value}`: use YYYY-MM-DD, RFC 3339 (2026-11-01T00:00:00Z) or UNIX seconds")
}

/// `--start`, `--end` and `--tz`, shared by the commands that take a range.
#[derive(Debug, Clone, clap::Args)]
pub struct RangeArgs {
    /// Start of the range, inclusive: YYYY-MM-DD (midnight in --tz), RFC 3339, or UNIX seconds.
    #[arg(long, value_name = "TIME")]
    pub start: String,

    /// End of the range, exclusive; same forms as --start.
    #[arg(long, value_name = "TIME")]
    pub end: String,

    /// Time zone (IANA name) of dates, of printed times, and of the calendar days that make partitions.
    #[arg(long, default_value = "UTC", value_name = "ZONE")]
    pub tz: String,
}

impl RangeArgs {
    /// The time zone and the validated range.
    pub fn parse(&self) -> anyhow::Result<(TimeZone, TimeRange)> {
        let tz = parse_tz(&self.tz)?;
        let range = TimeRange::parse(&self.start, &self.end, &tz)?;
        Ok((tz, range))
    }
}

/// A half-open range `[start, end)` of UNIX seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    pub start: Timestamp,
    pub end: Timestamp,
}

impl TimeRange {
    /// Parses `--start` and `--end` and checks `start < end`.
    pub fn parse(start: &str, end: &str, tz: &TimeZone) -> anyhow::Result<Self> {
        let start_ts = parse_time(start, tz, "--start")?;
        let end_ts = parse_time(end, tz, "--end")?;
        if start_ts.as_second() < 0 {
            bail!("--start `{start}` is before 1970: the API counts UNIX seconds");
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_forms() {
        let utc = TimeZone::UTC;
        let ny = parse_tz("America/New_York").expect("tz");
        let cases: &[(&str, &TimeZone, i64)] = &[
            ("1529552691", &utc, 1_529_552_691),
            ("2026-11-01", &utc, 1_793_491_200),
            ("2026-11-01", &ny, 1_793_505_600), // EDT, UTC-4
            ("2026-11-02", &ny, 1_793_595_600), // EST, UTC-5
            ("2026-11-01T12:00:00Z", &ny, 1_793_534_400),
            ("2026-11-01T12:00:00+02:00", &utc, 1_793_527_200),
        ];
        for (input, tz, want) in cases {
            let got = parse_time(input, tz, "--start").unwrap_or_else(|e| panic!("{input}: {e:#}"));
            assert_eq!(got.as_second(), *want, "{input}");
        }
        for bad in ["yesterday", "", "2026-13-01", "12:00"] {
            let err = parse_time(bad, &utc, "--start").expect_err(bad);
            assert!(format!("{err:#}").contains("YYYY-MM-DD"), "{bad}: {err:#}");
        }
    }

    #[test]
    fn ranges() {
        let utc = TimeZone::UTC;
        let r = TimeRange::parse("2026-11-01", "2026-11-02", &utc).expect("valid");
        assert_eq!(r.api_window(), (1_793_491_200, 1_793_491_200 + 86_399));
        for (s, e) in [("2026-11-02", "2026-11-01"), ("2026-11-01", "2026-11-01")] {
            let err = TimeRange::parse(s, e, &utc).expect_err("invalid");
            assert!(format!("{err:#}").contains("must be before"), "{err:#}");
        }
        assert!(parse_tz("Mars/Olympus").is_err());
    }
}
