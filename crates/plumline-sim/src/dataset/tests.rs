use std::collections::HashSet;

use plumline_api::{Call, CallQuery, CallType, PageRequest, WireFormat, wire};

use super::generation::DAY_SECS;
use super::*;
use crate::behaviour::Mutation;
use crate::config::{Faults, MAX_CALL_SECS};
use crate::rng::Rng;

const JAN1: i64 = 1_735_689_600; // 2025-01-01T00:00:00Z, a Wednesday

fn sim(config: SimConfig) -> Simulator {
    Simulator::new(config).expect("valid config")
}

/// A week of calls for three numbers: small enough to check exhaustively.
fn week() -> SimConfig {
    SimConfig::default().with_seed(42).with_calls_per_day(300.0).with_data_range(JAN1, JAN1 + 7 * DAY_SECS)
}

/// The request for `limit` calls at `offset` of `[start, end]` (and `number`).
pub(crate) fn request(start: i64, end: i64, number: Option<&str>, limit: u32, offset: u64) -> PageRequest {
    CallQuery::new(start, end)
        .expect("valid window")
        .with_number(number.map(str::to_owned))
        .page(limit, offset)
        .expect("valid page")
}

fn all(s: &Simulator) -> Vec<Call> {
    let c = s.config();
    s.calls_in(c.data_start, c.data_end - 1, None)
}

#[test]
fn same_seed_same_data_other_seed_other_data() {
    let a = all(&sim(week()));
    let b = all(&sim(week()));
    assert!(a.len() > 3 * 7 * 150, "only {} calls", a.len());
    assert_eq!(a, b);
    let c = all(&sim(week().with_seed(43)));
    assert_ne!(a, c);
    assert_ne!(sim(week()).numbers(), sim(week().with_seed(43)).numbers());
    // A small cache evicts and regenerates, identically.
    let d = all(&sim(week().with_cache_calls(100)));
    assert_eq!(a, d);
}

#[test]
fn pinned_first_call() {
    // Changing generation changes every dataset users and benches rely on.
    let s = sim(SimConfig::default());
    let calls = s.calls_in(JAN1, JAN1 + DAY_SECS - 1, None);
    let last = calls.last().expect("calls on 2025-01-01");
    assert_eq!(s.numbers().len(), DEFAULT_NUMBER_COUNT_FOR_TEST);
    assert!(last.start >= JAN1 && last.start < JAN1 + 3_600, "{last:?}");
    assert_eq!(calls.len() as u64, s.count_in(JAN1, JAN1 + DAY_SECS - 1, None));
}

const DEFAULT_NUMBER_COUNT_FOR_TEST: usize = crate::config::DEFAULT_NUMBER_COUNT;

#[test]
fn session_ids_are_unique_and_vendor_shaped() {
    let s = sim(week().with_generated_numbers(12));
    let calls = all(&s);
    let mut ids = HashSet::with_capacity(calls.len());
    for call in &calls {
        assert!(ids.insert(call.session_id.as_str()), "duplicate session id {}", call.session_id);
        let parts: Vec<&str> = call.session_id.split(';').collect();
        assert_eq!(parts.len(), 3, "{}", call.session_id);
        assert!(
            parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())),
            "{}",
            call.session_id
        );
        assert_eq!((parts[0].len(), parts[1].len()), (6, 3), "{}", call.session_id);
        let created: i64 = parts[2].parse().expect("a timestamp");
        assert!(created <= call.start && call.start - created < 120, "{call:?}");
    }
}

#[test]
fn order_is_start_descending_then_session_id() {
    for config in [week(), week().with_generated_numbers(1_200).with_calls_per_day(2.0)] {
        let calls = all(&sim(config));
        for pair in calls.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            assert!(
                a.start > b.start || (a.start == b.start && a.session_id < b.session_id),
                "out of order: {a:?} then {b:?}"
            );
        }
    }
}

#[test]
fn windows_are_inclusive_on_both_ends() {
    let s = sim(week());
    let everything = all(&s);
    let pick = |i: usize| everything[i * everything.len() / 10].start;
    let windows = [
        (pick(3), pick(3)),
        (pick(5), pick(2)),
        (pick(9), pick(0)),
        (pick(8) + 1, pick(1) - 1),
        (JAN1, JAN1 + DAY_SECS - 1),
        (JAN1 + DAY_SECS, JAN1 + DAY_SECS),
        (JAN1 - 10 * DAY_SECS, JAN1 + 100 * DAY_SECS),
        (0, JAN1 - 1),
        (JAN1 + 7 * DAY_SECS, i64::MAX),
        (pick(2), pick(5)), // start after end: nothing
    ];
    for (lo, hi) in windows {
        let want: Vec<Call> = everything.iter().filter(|c| lo <= c.start && c.start <= hi).cloned().collect();
        assert_eq!(s.calls_in(lo, hi, None), want, "window [{lo}, {hi}]");
        assert_eq!(s.count_in(lo, hi, None), want.len() as u64, "count of [{lo}, {hi}]");
    }
    let edge = pick(4);
    assert!(s.calls_in(edge, edge, None).iter().all(|c| c.start == edge));
    assert!(!s.calls_in(edge, edge, None).is_empty());
}

#[test]
fn number_filter_partitions_the_calls() {
    let s = sim(week());
    let everything = all(&s);
    let (lo, hi) = (JAN1 + 3_600, JAN1 + 3 * DAY_SECS + 7);
    let window: Vec<&Call> = everything.iter().filter(|c| lo <= c.start && c.start <= hi).collect();
    let mut union = HashSet::new();
    let mut sum = 0;
    for number in s.numbers() {
        let mine = s.calls_in(lo, hi, Some(number));
        assert_eq!(s.count_in(lo, hi, Some(number)), mine.len() as u64);
        assert!(!mine.is_empty());
        // Inbound calls are to the number; transfers from it.
        for c in &mine {
            match c.call_type {
                CallType::Inbound => assert_eq!(&c.dest, number),
                CallType::Transfer => assert_eq!(&c.src, number),
                CallType::Outbound => assert_eq!(c.src, "Outbound"),
                CallType::Other(_) => {}
            }
        }
        // A subsequence of the unfiltered order.
        let mut it = window.iter();
        assert!(mine.iter().all(|c| it.any(|w| *w == c)), "{number} is not in server order");
        sum += mine.len();
        union.extend(mine.into_iter().map(|c| c.session_id));
    }
    assert_eq!(sum, window.len());
    assert_eq!(union.len(), window.len());
    assert!(s.calls_in(lo, hi, Some("0000000000")).is_empty());
    assert_eq!(s.count_in(lo, hi, Some("0000000000")), 0);
    assert_eq!(s.calls_in(lo, hi, Some("")).len(), window.len(), "an empty number is no filter");
}

#[test]
fn pages_concatenate_to_the_window() {
    let s = sim(week());
    let cases: [(i64, i64, Option<usize>, u32); 5] = [
        (JAN1, JAN1 + 7 * DAY_SECS - 1, None, 1_000),
        (JAN1 + 5_000, JAN1 + 2 * DAY_SECS + 5_000, None, 97),
        (JAN1 + 5_000, JAN1 + 2 * DAY_SECS + 5_000, Some(1), 50),
        (JAN1, JAN1 + 7 * DAY_SECS - 1, Some(0), 10_000),
        (JAN1 + 100, JAN1 + 100, None, 1),
    ];
    for (lo, hi, number, limit) in cases {
        let number = number.map(|i| s.numbers()[i].clone());
        let want = s.calls_in(lo, hi, number.as_deref());
        let total = want.len() as u64;
        let mut got = Vec::new();
        let mut offset = 0;
        loop {
            let page = s.page(&request(lo, hi, number.as_deref(), limit, offset));
            assert_eq!(page.total_calls, total, "total at offset {offset} of [{lo}, {hi}] {number:?}");
            assert!(page.calls.len() <= limit as usize);
            if page.calls.is_empty() {
                break;
            }
            offset += page.calls.len() as u64;
            got.extend(page.calls);
        }
        assert_eq!(got, want, "pages of [{lo}, {hi}] {number:?} limit {limit}");
        let past = s.page(&request(lo, hi, number.as_deref(), limit, total + 5));
        assert!(past.calls.is_empty());
        assert_eq!(past.total_calls, total);
    }
}

#[test]
fn calls_look_like_a_call_center() {
    let calls = all(&sim(SimConfig::default().with_calls_per_day(2_000.0)));
    let n = calls.len() as f64;
    let share = |f: &dyn Fn(&Call) -> bool| calls.iter().filter(|c| f(c)).count() as f64 / n;
    let cases: [(&str, f64, f64, f64); 4] = [
        ("inbound", share(&|c| c.call_type == CallType::Inbound), 0.67, 0.73),
        ("outbound", share(&|c| c.call_type == CallType::Outbound), 0.18, 0.22),
        ("transfer", share(&|c| c.call_type == CallType::Transfer), 0.08, 0.12),
        ("log", share(&|c| c.log), 0.88, 0.92),
    ];
    for (what, got, lo, hi) in cases {
        assert!((lo..=hi).contains(&got), "{what} share {got}");
    }
    let mut durations: Vec<i64> = calls.iter().map(Call::duration_secs).collect();
    durations.sort_unstable();
    let median = durations[durations.len() / 2];
    assert!((60..=120).contains(&median), "median duration {median}");
    assert!(durations[0] >= 1 && *durations.last().expect("calls") <= MAX_CALL_SECS);
    assert!(*durations.last().expect("calls") > 3_600, "no heavy tail");
    assert!(calls.iter().all(|c| c.src == "Outbound" || c.src.len() == 10));
    // Office hours are busier than nights.
    let at_hour = |h: i64| calls.iter().filter(|c| c.start.rem_euclid(DAY_SECS) / 3_600 == h).count();
    assert!(at_hour(11) > 5 * at_hour(3), "11h: {}, 3h: {}", at_hour(11), at_hour(3));
    // Weekends are quieter: Jan 4 and 5 2025 were a Saturday and Sunday.
    let s = sim(SimConfig::default().with_calls_per_day(2_000.0));
    let weekday: u64 =
        (0..3).map(|d| s.count_in(JAN1 + d * DAY_SECS, JAN1 + (d + 1) * DAY_SECS - 1, None)).sum();
    let weekend = s.count_in(JAN1 + 3 * DAY_SECS, JAN1 + 5 * DAY_SECS - 1, None);
    assert!(weekend * 3 < weekday * 2 * 3 / 4, "weekend {weekend} vs 3 weekdays {weekday}");
}

#[test]
fn day_counts_follow_volume_and_vary() {
    let s = sim(SimConfig::default().with_numbers(["8005550100"]).with_calls_per_day(1_000.0));
    let counts: Vec<u64> =
        (0..31).map(|d| s.count_in(JAN1 + d * DAY_SECS, JAN1 + (d + 1) * DAY_SECS - 1, None)).collect();
    let mean = counts.iter().sum::<u64>() as f64 / 31.0;
    assert!((850.0..=1_150.0).contains(&mean), "mean {mean}");
    assert!(counts.iter().all(|&c| (350..=1_600).contains(&c)), "{counts:?}");
    assert!(counts.iter().collect::<HashSet<_>>().len() > 20, "days do not vary: {counts:?}");
    // Fractional volumes work on average.
    let sparse = sim(SimConfig::default().with_numbers(["8005550100"]).with_calls_per_day(0.5));
    let n = sparse.count_in(JAN1, JAN1 + 31 * DAY_SECS, None);
    assert!((5..=30).contains(&n), "{n} calls at 0.5/day");
}

#[test]
fn unknown_types_change_only_types() {
    let plain = all(&sim(week()));
    let exotic = all(&sim(week().with_unknown_types(true)));
    assert_eq!(plain.len(), exotic.len());
    let mut changed = 0;
    for (a, b) in plain.iter().zip(&exotic) {
        assert_eq!((&a.session_id, a.start, a.end, a.log), (&b.session_id, b.start, b.end, b.log));
        if a.call_type != b.call_type {
            assert_eq!(b.call_type, CallType::Other(UNKNOWN_TYPE.into()));
            changed += 1;
        }
    }
    let share = f64::from(changed) / plain.len() as f64;
    assert!((0.01..0.03).contains(&share), "unknown share {share}");
    assert!(plain.iter().all(|c| !matches!(c.call_type, CallType::Other(_))));
}

#[test]
fn data_range_bounds_call_starts() {
    // Starting at noon: the first day is partial, and its count comes from generation.
    let (start, end) = (JAN1 + 43_200, JAN1 + 3 * DAY_SECS + 3_600);
    let s = sim(SimConfig::default().with_data_range(start, end));
    let calls = s.calls_in(0, i64::MAX, None);
    assert!(calls.iter().all(|c| (start..end).contains(&c.start)));
    assert!(
        calls.iter().any(|c| c.start < JAN1 + DAY_SECS)
            && calls.iter().any(|c| c.start >= JAN1 + 3 * DAY_SECS)
    );
    let full = sim(SimConfig::default());
    let want: Vec<Call> = full.calls_in(start, end - 1, None);
    assert_eq!(calls, want, "the data range only clips");
    assert_eq!(s.count_in(JAN1, JAN1 + DAY_SECS - 1, None), full.count_in(start, JAN1 + DAY_SECS - 1, None));
}

#[test]
fn live_mode_shows_calls_once_they_end() {
    let config = week();
    let truth = all(&sim(config.clone()));
    let clock = SimClock::manual(JAN1);
    let live = sim(config.with_live(true).with_clock(clock.clone()));
    let mut last = 0;
    // From before the data, through hot days, to long after: each a different path.
    for now in [
        JAN1,
        JAN1 + 30,
        JAN1 + 40_000,
        JAN1 + DAY_SECS + 1_800,
        JAN1 + 3 * DAY_SECS + 7_300,
        JAN1 + 30 * DAY_SECS,
    ] {
        clock.set(now);
        assert_eq!(live.now(), now);
        let want: Vec<Call> = truth.iter().filter(|c| c.end <= now).cloned().collect();
        let got = live.calls_in(JAN1 - 5, JAN1 + 10 * DAY_SECS, None);
        assert_eq!(got.len(), want.len(), "visible count at {now}");
        assert_eq!(got, want, "visible calls at {now}");
        assert_eq!(live.count_in(0, i64::MAX, None), want.len() as u64);
        // Paging through a hot window gives the same.
        let mut paged = Vec::new();
        loop {
            let page = live.page(&request(JAN1, JAN1 + 10 * DAY_SECS, None, 333, paged.len() as u64));
            assert_eq!(page.total_calls, want.len() as u64);
            if page.calls.is_empty() {
                break;
            }
            paged.extend(page.calls);
        }
        assert_eq!(paged, want);
        assert!(got.len() >= last, "calls disappeared at {now}");
        last = got.len();
    }
    // set_now on the simulator drives the same clock.
    live.set_now(JAN1 + 3_600);
    assert_eq!(clock.now(), JAN1 + 3_600);
    assert!(live.calls_in(0, i64::MAX, None).iter().all(|c| c.end <= JAN1 + 3_600));
}

#[test]
fn records_stay_compact_and_cache_is_bounded() {
    assert_eq!(std::mem::size_of::<Rec>(), 24);
    let s = sim(SimConfig::default().with_cache_calls(5_000));
    let n = s.calls_in(JAN1, JAN1 + 10 * DAY_SECS, None).len();
    assert!(n > 20_000);
    // One day may exceed the budget on its own, never two.
    assert!(s.cached_calls() <= 5_000 + 4_500, "{} calls cached", s.cached_calls());
    // Counting whole settled days generates nothing.
    let fresh = sim(SimConfig::default());
    assert!(fresh.count_in(JAN1, JAN1 + 31 * DAY_SECS - 1, None) > 50_000);
    assert_eq!(fresh.cached_calls(), 0);
}

#[test]
fn rendered_pages_decode_to_the_same_calls() {
    let configs = [
        week(),
        week().with_quirks(true),
        week().with_unknown_types(true).with_quirks(true),
        week().with_numbers(["80055501\"<&>'\\00", "617-555-0100"]),
    ];
    for config in configs {
        let quirks = config.quirks;
        let s = sim(config);
        let mut saw_object = false;
        let mut saw_string_numbers = false;
        for (offset, limit) in
            [(0, 1_000), (1_000, 500), (1_500, 37), (1_537, 3), (4_000, 10_000), (99_999, 10)]
        {
            let req = request(JAN1, JAN1 + 7 * DAY_SECS - 1, None, limit, offset);
            let want = s.page(&req);
            for format in [WireFormat::Json, WireFormat::Xml] {
                let mut body = Vec::new();
                let n = s.render_page(&req, format, &mut body);
                assert_eq!(n, want.calls.len());
                let text = String::from_utf8_lossy(&body);
                let got = wire::decode_page(&body, format).unwrap_or_else(|e| {
                    panic!("{format} page at {offset} (quirks {quirks}) failed: {e}\n{text:.400}")
                });
                assert_eq!(got, want, "{format} page at {offset}, quirks {quirks}");
                if format == WireFormat::Json {
                    saw_object |= text.starts_with("{\"calls\":{") || text.contains(",\"calls\":{");
                    saw_string_numbers |= text.contains("\"start\":\"");
                } else {
                    assert!(text.starts_with("<?xml version=\"1.0\"?>\n<result>"), "{text:.80}");
                }
            }
        }
        assert_eq!(saw_object && saw_string_numbers, quirks, "quirks {quirks} shapes");
    }
}

#[test]
fn empty_results_render_per_vendor_and_quirks() {
    let cases = [
        (false, WireFormat::Json, r#"{"calls":[],"total_calls":0}"#),
        (
            false,
            WireFormat::Xml,
            "<?xml version=\"1.0\"?>\n<result><calls/><total_calls>0</total_calls></result>\n",
        ),
        (true, WireFormat::Xml, "<?xml version=\"1.0\"?>\n<result><total_calls>0</total_calls></result>\n"),
    ];
    for (quirks, format, want) in cases {
        let s = sim(week().with_quirks(quirks));
        let mut body = Vec::new();
        s.render_page(&request(0, 10, None, 10, 0), format, &mut body);
        assert_eq!(String::from_utf8_lossy(&body), want);
    }
    let s = sim(week().with_quirks(true));
    let mut body = Vec::new();
    s.render_page(&request(0, 10, None, 10, 0), WireFormat::Json, &mut body);
    let text = String::from_utf8_lossy(&body);
    assert!(!text.contains("\"calls\""), "calls should be omitted: {text}");
    let page = wire::decode_page(&body, WireFormat::Json).expect("decodes");
    assert_eq!((page.calls.len(), page.total_calls), (0, 0));
}

#[test]
fn faults_default_to_none() {
    assert_eq!(SimConfig::default().faults, Faults::none());
}

/// `part1;number`: the part of a session id that does not depend on the start.
fn prefix(call: &Call) -> String {
    call.session_id.rsplit_once(';').map_or_else(String::new, |(p, _)| p.to_owned())
}

#[test]
fn long_calls_change_only_durations() {
    let plain = all(&sim(week()));
    let long = all(&sim(week().with_long_calls(Some(crate::config::LongCalls::default()))));
    assert_eq!(plain.len(), long.len());
    let mut changed = 0;
    for (a, b) in plain.iter().zip(&long) {
        assert_eq!((&a.session_id, a.start, &a.dest, a.log), (&b.session_id, b.start, &b.dest, b.log));
        if a.end != b.end {
            changed += 1;
            assert!((1_800..=4 * 3_600).contains(&b.duration_secs()), "{b:?}");
        }
    }
    let share = f64::from(changed) / plain.len() as f64;
    assert!((0.03..0.07).contains(&share), "long share {share}");
    assert!(long.iter().any(|c| c.duration_secs() > MAX_CALL_SECS));
}

#[test]
fn forced_ties_share_start_seconds_and_change_nothing_else() {
    let plain = all(&sim(week()));
    let tied = all(&sim(week().with_ties(5)));
    assert_eq!(plain.len(), tied.len());
    let distinct: HashSet<i64> = tied.iter().map(|c| c.start).collect();
    assert!(distinct.len() * 4 < tied.len(), "{} starts for {} calls", distinct.len(), tied.len());
    let durations: HashMap<String, i64> = plain.iter().map(|c| (prefix(c), c.duration_secs())).collect();
    for call in &tied {
        assert_eq!(durations.get(&prefix(call)), Some(&call.duration_secs()), "{call:?}");
    }
    assert_eq!(all(&sim(week().with_ties(1))), plain, "1 is no forced ties");
}

#[test]
fn mutations_are_the_truth_and_keep_ids_unique() {
    let s = sim(week());
    let (a, b) = (JAN1 + DAY_SECS, JAN1 + 2 * DAY_SECS - 1);
    let before = s.calls_in(a, b, None);
    let mut rng = Rng::new(5);
    assert!(s.mutate(a, b, None, Some(10), Mutation::Swap, &mut rng));
    assert!(s.mutate(a, b, None, None, Mutation::Insert, &mut rng));
    assert!(s.mutate(a, b, None, None, Mutation::Remove, &mut rng));
    let after = s.calls_in(a, b, None);
    assert_eq!(after.len(), before.len());
    assert_eq!(s.count_in(a, b, None), after.len() as u64, "a patched day is counted from its records");
    assert_eq!(s.mutations(), 3);
    let ids: HashSet<&str> = after.iter().map(|c| c.session_id.as_str()).collect();
    assert_eq!(ids.len(), after.len());
    assert_ne!(after, before);
    // A number's view follows the patch too.
    let number = s.numbers()[0].clone();
    let of_number = s.calls_in(a, b, Some(&number));
    let expected: Vec<&str> = after
        .iter()
        .filter(|c| c.session_id.split(';').nth(1) == Some("001"))
        .map(|c| c.session_id.as_str())
        .collect();
    let got: Vec<&str> = of_number.iter().map(|c| c.session_id.as_str()).collect();
    assert!(got == expected, "the number's view differs from the patched day's");
    // Nothing outside the day moved, and an empty window cannot move.
    assert_eq!(s.calls_in(JAN1, a - 1, None), sim(week()).calls_in(JAN1, a - 1, None));
    assert!(!s.mutate(JAN1 + 30 * DAY_SECS, JAN1 + 31 * DAY_SECS, None, None, Mutation::Remove, &mut rng));
}
