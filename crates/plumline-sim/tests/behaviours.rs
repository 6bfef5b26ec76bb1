//! The simulator's behaviours over real HTTP, read through the real API
//! client: window slack, errors inside 200s, a moving source, a lagging
//! total, shuffled ties, capped and ignored page sizes, long live calls.

use std::collections::HashSet;
use std::time::Duration;

use futures::TryStreamExt as _;
use plumline_api::{
    ApiError, Call, CallPage, CallQuery, Client, Credentials, RetryPolicy, WireFormat, all_pages,
};
use plumline_sim::{
    Behaviours, DEMO_EMAIL, DEMO_KEY, ErrorIn200, LaggingTotal, LongCalls, MAX_CALL_SECS, MovingSource,
    Mutation, Region, SimClock, SimConfig, SimServer, WindowSet,
};

const JAN1: i64 = 1_735_689_600;
const DAY: i64 = 86_400;

fn config() -> SimConfig {
    SimConfig::default().with_seed(11).with_calls_per_day(300.0).with_data_range(JAN1, JAN1 + 4 * DAY)
}

async fn start(config: SimConfig) -> SimServer {
    SimServer::start(config, "127.0.0.1:0".parse().expect("an address")).await.expect("simulator starts")
}

fn client(server: &SimServer, format: WireFormat, retry: RetryPolicy) -> Client {
    Client::builder(server.base_url(), Credentials::new(DEMO_EMAIL, DEMO_KEY))
        .wire_format(format)
        .retry_policy(retry)
        .request_timeout(Duration::from_secs(5))
        .build()
        .expect("client builds")
}

fn fast_retries(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
        max_elapsed: Duration::from_secs(10),
    }
}

/// The second day of the data, inclusive.
fn day2() -> CallQuery {
    CallQuery::new(JAN1 + DAY, JAN1 + 2 * DAY - 1).expect("a valid window")
}

async fn page(c: &Client, query: &CallQuery, limit: u32, offset: u64) -> Result<CallPage, ApiError> {
    c.fetch_page(&query.page(limit, offset).expect("a valid page")).await
}

/// Every page, in order, as a naive pager reads them: (calls, last total).
async fn read_all(c: &Client, query: &CallQuery, limit: u32) -> (Vec<Call>, u64) {
    let pages: Vec<CallPage> = all_pages(c, query.clone(), limit).try_collect().await.expect("every page");
    let total = pages.last().map_or(0, |p| p.total_calls);
    (pages.into_iter().flat_map(|p| p.calls).collect(), total)
}

fn ids(calls: &[Call]) -> HashSet<String> {
    calls.iter().map(|c| c.session_id.clone()).collect()
}

#[tokio::test]
async fn window_slack_lists_calls_outside_the_window_and_counts_them() {
    let slack = 900;
    let server = start(config().with_behaviours(Behaviours::none().with_slack_secs(slack))).await;
    let q = day2();
    let (calls, total) = read_all(&client(&server, WireFormat::Json, RetryPolicy::never()), &q, 100).await;
    let truth = server.simulator().calls_in(q.start() - slack, q.end() + slack, None);
    assert_eq!(calls, truth, "the listing is the widened window");
    assert_eq!(total, calls.len() as u64, "total_calls counts what is listed");
    let outside = calls.iter().filter(|c| c.start < q.start() || c.start > q.end()).count();
    assert!(outside > 0, "some calls lie outside the window");
    assert!(calls.iter().all(|c| c.start >= q.start() - slack && c.start <= q.end() + slack));
    assert_eq!(server.behaviour_stats().slack_calls, outside as u64);
    // The ground truth of the window itself is unaffected.
    assert_eq!(server.simulator().count_in(q.start(), q.end(), None) + outside as u64, total);
}

#[tokio::test]
async fn errors_inside_200s_are_retried_when_transient_and_fail_when_persistent() {
    for format in [WireFormat::Json, WireFormat::Xml] {
        let q = day2();
        let t = q.start() + 3_600;
        let transient =
            Behaviours::none().with_error_in_200(ErrorIn200::transient(WindowSet::containing(t), 2));
        let server = start(config().with_behaviours(transient)).await;

        // One attempt: the error is typed, transient, and carries the server's text.
        let once = client(&server, format, RetryPolicy::never());
        let err = page(&once, &q, 50, 0).await.expect_err("an error inside a 200");
        assert!(
            matches!(&err, ApiError::ServerReportedError { status: 200, message } if message == "database error"),
            "{format}: {err:?}"
        );
        assert!(err.is_transient(), "{format}");
        // Retried: the third request of the window is answered.
        let retrying = client(&server, format, fast_retries(5));
        let got = page(&retrying, &q, 50, 0).await.expect("the error was transient");
        assert_eq!(got.calls, server.simulator().calls_in(q.start(), q.end(), None)[..50], "{format}");
        assert_eq!(server.window_requests(q.start(), q.end(), None), 3, "{format}");
        assert_eq!(server.behaviour_stats().errors_in_200, 2, "{format}");

        // Persistent on one UTC day: that day always fails, the others never.
        let persistent = ErrorIn200::persistent(WindowSet::utc_days([q.start()]));
        server.set_behaviours(Behaviours::none().with_error_in_200(persistent)).expect("valid");
        let err = page(&retrying, &q, 50, 0).await.expect_err("a persistent error");
        assert!(matches!(&err, ApiError::RetriesExhausted { attempts: 5, .. }), "{format}: {err:?}");
        assert!(plumline_api::error_chain(&err).contains("database error"), "{format}: {err}");
        let other = CallQuery::new(JAN1 + 2 * DAY, JAN1 + 3 * DAY - 1).expect("valid");
        let fine = page(&retrying, &other, 50, 0).await.expect("another day is unaffected");
        assert_eq!(fine.total_calls, server.simulator().count_in(other.start(), other.end(), None));
        server.shutdown().await;
    }
}

#[tokio::test]
async fn a_swap_in_the_paged_region_keeps_the_total_but_changes_the_content() {
    for format in [WireFormat::Json, WireFormat::Xml] {
        let moving = MovingSource::once(Mutation::Swap, Region::Paged);
        let server = start(config().with_behaviours(Behaviours::none().with_moving(moving))).await;
        let q = day2();
        let before = server.simulator().calls_in(q.start(), q.end(), None);
        let c = client(&server, format, RetryPolicy::never());
        let (naive, total) = read_all(&c, &q, 100).await;
        let after = server.simulator().calls_in(q.start(), q.end(), None);
        assert_eq!(server.behaviour_stats().mutations, 1, "{format}");
        assert_eq!(
            (total, after.len()),
            (before.len() as u64, before.len()),
            "{format}: the total is stable"
        );
        assert_ne!(ids(&before), ids(&after), "{format}: the content moved");
        assert_eq!(
            ids(&naive),
            ids(&before),
            "{format}: a naive pager keeps the removed call and misses the new one"
        );
        // The swap happened on the first page, already read.
        let added: Vec<&Call> = after.iter().filter(|c| !ids(&before).contains(&c.session_id)).collect();
        assert_eq!(added.len(), 1, "{format}");
        assert!(
            before[..100].iter().any(|c| c.start == added[0].start),
            "{format}: the new call sits in the first page"
        );
        // The source has stopped: a second read is the final truth.
        let (again, _) = read_all(&c, &q, 100).await;
        assert_eq!(again, after, "{format}");
        server.shutdown().await;
    }
}

#[tokio::test]
async fn inserts_and_removals_move_the_truth_and_then_stop() {
    let q = day2();
    for (mutation, grows) in [(Mutation::Insert, true), (Mutation::Remove, false)] {
        let moving = MovingSource {
            windows: WindowSet::containing(q.start()),
            mutation,
            region: Region::Anywhere,
            after_requests: vec![1, 3],
            per_step: 2,
        };
        let server = start(config().with_behaviours(Behaviours::none().with_moving(moving))).await;
        let before = server.simulator().calls_in(q.start(), q.end(), None);
        let other = server.simulator().calls_in(q.end() + 1, q.end() + DAY, None);
        let c = client(&server, WireFormat::Json, RetryPolicy::never());
        let first = page(&c, &q, 50, 0).await.expect("page 1");
        assert_eq!(first.total_calls, before.len() as u64, "the first answer is the data before the step");
        for offset in [50, 100, 150, 200] {
            page(&c, &q, 50, offset).await.expect("a page");
        }
        let after = server.simulator().calls_in(q.start(), q.end(), None);
        let want = if grows { before.len() + 4 } else { before.len() - 4 };
        assert_eq!(after.len(), want, "{mutation:?}: two steps of two");
        assert_eq!(server.behaviour_stats().mutations, 4, "{mutation:?}");
        assert_eq!(server.simulator().mutations(), 4, "{mutation:?}");
        if mutation == Mutation::Insert {
            let new: Vec<&Call> = after.iter().filter(|c| !ids(&before).contains(&c.session_id)).collect();
            assert_eq!(new.len(), 4);
            assert!(
                new.iter().all(|c| c.start >= q.start() && c.start <= q.end()),
                "inserted starts lie in the window"
            );
            let all = ids(&after);
            assert_eq!(all.len(), after.len(), "session ids stay unique");
        } else {
            assert!(ids(&after).is_subset(&ids(&before)));
        }
        // Windows outside the set do not move, and the moved window stops.
        assert_eq!(server.simulator().calls_in(q.end() + 1, q.end() + DAY, None), other);
        let (last, total) = read_all(&c, &q, 1_000).await;
        assert_eq!((last.len() as u64, &last), (total, &after), "{mutation:?}");
        server.shutdown().await;
    }
}

#[tokio::test]
async fn a_lagging_total_under_reports_while_the_listing_stays_complete() {
    let lagging = LaggingTotal { windows: WindowSet::All, lag: 7, first_requests: 2 };
    let server = start(config().with_behaviours(Behaviours::none().with_lagging_total(lagging))).await;
    let q = day2();
    let truth = server.simulator().calls_in(q.start(), q.end(), None);
    let n = truth.len() as u64;
    let c = client(&server, WireFormat::Json, RetryPolicy::never());
    let first = page(&c, &q, 100, 0).await.expect("page 1");
    assert_eq!(first.total_calls, n - 7);
    let past = page(&c, &q, 100, n - 7).await.expect("the page past the reported total");
    assert_eq!(past.total_calls, n - 7);
    assert_eq!(
        past.calls,
        truth[usize::try_from(n - 7).expect("small")..],
        "the listing holds the calls past the total"
    );
    let third = page(&c, &q, 100, 0).await.expect("page 1 again");
    assert_eq!(third.total_calls, n, "the total catches up");
    assert_eq!(server.behaviour_stats().lagged_totals, 2);
}

#[tokio::test]
async fn shuffled_ties_come_in_another_order_on_each_request() {
    let server =
        start(config().with_ties(4).with_behaviours(Behaviours::none().with_shuffled_ties(true))).await;
    let q = day2();
    let truth = server.simulator().calls_in(q.start(), q.end(), None);
    let distinct: HashSet<i64> = truth.iter().map(|c| c.start).collect();
    assert!(distinct.len() * 3 < truth.len(), "ties: {} starts for {} calls", distinct.len(), truth.len());
    let c = client(&server, WireFormat::Json, RetryPolicy::never());
    let one = page(&c, &q, 10_000, 0).await.expect("whole").calls;
    let two = page(&c, &q, 10_000, 0).await.expect("whole").calls;
    assert_ne!(one, two, "ties are reordered between requests");
    for listing in [&one, &two] {
        assert_eq!(ids(listing), ids(&truth), "the same calls");
        assert!(listing.windows(2).all(|w| w[0].start >= w[1].start), "still ordered by start");
    }
    // Pages cut through ties, so a naive pager sees some calls twice and misses others.
    let (paged, total) = read_all(&c, &q, 7).await;
    assert_eq!(total, truth.len() as u64);
    assert_eq!(paged.len(), truth.len());
    assert!(ids(&paged).len() < truth.len(), "page boundaries inside ties lose calls");
    assert!(server.behaviour_stats().shuffled_pages >= 2);
}

#[tokio::test]
async fn page_sizes_can_be_capped_or_ignored() {
    let q = day2();
    let server = start(config().with_behaviours(Behaviours::none().with_page_cap(Some(30)))).await;
    let truth = server.simulator().calls_in(q.start(), q.end(), None);
    let c = client(&server, WireFormat::Json, RetryPolicy::never());
    let capped = page(&c, &q, 100, 10).await.expect("a capped page");
    assert_eq!((capped.calls.as_slice(), capped.total_calls), (&truth[10..40], truth.len() as u64));
    server.set_behaviours(Behaviours::none().with_ignored_limit(true)).expect("valid");
    let all = page(&c, &q, 10, 5).await.expect("limit ignored");
    assert_eq!(all.calls, truth[5..], "everything from the offset");
    // Both count as page requests of the window.
    assert_eq!(server.window_requests(q.start(), q.end(), None), 1, "counts restart when behaviours change");
    assert_eq!(server.page_requests(), 1);
}

#[tokio::test]
async fn live_long_calls_are_listed_only_once_they_end() {
    let t0 = JAN1 + DAY + 20 * 3_600;
    let clock = SimClock::manual(t0);
    let config = config()
        .with_calls_per_day(2_000.0)
        .with_live(true)
        .with_clock(clock.clone())
        .with_long_calls(Some(LongCalls::default()));
    assert_eq!(config.max_call_secs(), 4 * 3_600);
    let server = start(config).await;
    let q = day2();
    let c = client(&server, WireFormat::Json, RetryPolicy::never());
    let (now_listed, total) = read_all(&c, &q, 500).await;
    assert_eq!(total, now_listed.len() as u64);
    assert!(now_listed.iter().all(|call| call.end <= t0), "only ended calls are listed");
    // Four hours after the day ended, every call of it has ended.
    clock.set(q.end() + 1 + 4 * 3_600);
    let (settled, _) = read_all(&c, &q, 500).await;
    let late: Vec<&Call> = settled.iter().filter(|call| call.end > t0).collect();
    assert!(
        late.iter().any(|call| call.start < t0 - MAX_CALL_SECS),
        "long calls started hours before they appear"
    );
    assert!(settled.iter().any(|call| call.duration_secs() > MAX_CALL_SECS), "some calls last beyond 2 h");
    assert!(settled.iter().all(|call| call.duration_secs() <= 4 * 3_600));
    assert!(ids(&now_listed).is_subset(&ids(&settled)));
    assert_eq!(settled, server.simulator().calls_in(q.start(), q.end(), None));
    // Listed at the position of their start: the order is by start throughout.
    assert!(settled.windows(2).all(|w| w[0].start >= w[1].start));
}
