//! Names in the lake: partition folders, data files, state, claims.

use jiff::civil::Date;

use crate::plan::DayPartition;

/// Name of the state directory under DEST (a leading `_` hides it from
/// hive-partitioned readers).
pub const STATE_DIR: &str = "_plumline";

/// The hive partition directory of `date`: `date=YYYY-MM-DD`.
#[must_use]
pub fn partition_dir(date: Date) -> String {
    format!("date={date}")
}

/// The slug naming a number filter in file and state names: `all` when
/// unfiltered, else `number-` and the number with every character outside
/// `[A-Za-z0-9+-]` written as `_XX` (hex), so distinct numbers never share a
/// name.
#[must_use]
pub fn number_slug(number: Option<&str>) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    match number {
        None => "all".to_owned(),
        Some(n) => {
            let mut s = String::with_capacity(n.len() + 7);
            s.push_str("number-");
            for b in n.bytes() {
                if b.is_ascii_alphanumeric() || b == b'+' || b == b'-' {
                    s.push(char::from(b));
                } else {
                    s.push('_');
                    s.push(char::from(HEX[usize::from(b >> 4)]));
                    s.push(char::from(HEX[usize::from(b & 15)]));
                }
            }
            s
        }
    }
}

/// The data file name of a number filter: `calls-<slug>.parquet`.
#[must_use]
pub fn file_name(number: Option<&str>) -> String {
    format!("calls-{}.parquet", number_slug(number))
}

/// `date=YYYY-MM-DD/calls-<slug>.parquet`, relative to DEST.
pub(crate) fn data_file(p: &DayPartition) -> String {
    format!("{}/{}", partition_dir(p.date()), file_name(p.number()))
}

/// `_plumline/days/<slug>/YYYY-MM-DD.json`: a committed day's state.
pub(crate) fn state_file(p: &DayPartition) -> String {
    format!("{STATE_DIR}/days/{}/{}.json", number_slug(p.number()), p.date())
}

/// `_plumline/claims/<slug>/YYYY-MM-DD.json`: who is writing a day.
pub(crate) fn claim_file(p: &DayPartition) -> String {
    format!("{STATE_DIR}/claims/{}/{}.json", number_slug(p.number()), p.date())
}

/// `_plumline/lake.json`: what holds for the whole lake (its time zone).
pub(crate) const LAKE_FILE: &str = "_plumline/lake.json";

/// A run's temp name for `file` in its folder: hidden (leading dot), not
/// ending in `.parquet` (`DuckDB`'s glob also matches hidden files), and
/// carrying the run's token so no other run mistakes it for its own.
pub(crate) fn temp_name(file: &str, token: &str, seq: u64) -> String {
    format!(".{file}.{token}-{seq}.tmp")
}

/// Whether `name` is a temp of the run with `token`.
pub(crate) fn is_temp_of(name: &str, token: &str) -> bool {
    name.starts_with('.')
        && std::path::Path::new(name).extension().is_some_and(|e| e == "tmp")
        && name.contains(&format!(".{token}-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_distinct_and_safe() {
        let cases = [
            (None, "all"),
            (Some("6175551234"), "number-6175551234"),
            (Some("+1 617"), "number-+1_20617"),
            (Some("a/b"), "number-a_2Fb"),
            (Some("a_2Fb"), "number-a_5F2Fb"),
        ];
        for (number, want) in cases {
            assert_eq!(number_slug(number), want, "{number:?}");
        }
    }

    #[test]
    fn temps_are_recognised_by_their_run_only() {
        let name = temp_name("calls-all.parquet", "r1a2b3", 7);
        assert_eq!(name, ".calls-all.parquet.r1a2b3-7.tmp");
        assert!(is_temp_of(&name, "r1a2b3"));
        assert!(!is_temp_of(&name, "r1a2b"));
        assert!(!is_temp_of("calls-all.parquet", "r1a2b3"));
        assert!(!name.ends_with(".parquet"));
    }
}
