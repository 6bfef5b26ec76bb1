//! The client against the simulator: auth, paging, formats, retries.

use std::time::{Duration, Instant};

use futures::TryStreamExt as _;
use plumline_api::{ApiError, CallQuery, Client, Credentials, RetryPolicy, WireFormat, all_pages};
use plumline_sim::{DEMO_EMAIL, DEMO_KEY, Fault, Faults, SimConfig, SimServer};

const DAY: i64 = 86_400;

async fn sim(config: SimConfig) -> SimServer {
    SimServer::start(config, "127.0.0.1:0".parse().expect("addr")).await.expect("simulator starts")
}

fn fast_retries(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(50),
        max_elapsed: Duration::from_secs(30),
    }
}

fn client(server: &SimServer, format: WireFormat, retry: RetryPolicy) -> Client {
    Client::builder(server.base_url(), Credentials::new(DEMO_EMAIL, DEMO_KEY))
        .wire_format(format)
        .retry_policy(retry)
        .request_timeout(Duration::from_secs(5))
        .build()
        .expect("client builds")
}

/// A window covering the first `days` days of the simulator's data.
fn window(server: &SimServer, days: i64) -> CallQuery {
    let start = server.simulator().config().data_start;
    CallQuery::new(start, start + days * DAY - 1).expect("valid window")
}

async fn collect(
    client: &Client,
    query: CallQuery,
    limit: u32,
) -> Result<(Vec<plumline_api::Call>, u64), ApiError> {
    let pages: Vec<_> = all_pages(client, query, limit).try_collect().await?;
    let total = pages.last().map_or(0, |p| p.total_calls);
    Ok((pages.into_iter().flat_map(|p| p.calls).collect(), total))
}

#[tokio::test]
async fn pages_of_a_multi_day_window_equal_the_ground_truth_in_both_formats() {
    let server = sim(SimConfig::default().with_calls_per_day(700.0)).await;
    let query = window(&server, 3);
    let truth = server.simulator().calls_in(query.start(), query.end(), None);
    assert!(truth.len() > 3_000, "the window should span many pages, has {}", truth.len());
    for (format, limit) in [(WireFormat::Json, 250), (WireFormat::Xml, 999), (WireFormat::Json, 10_000)] {
        let c = client(&server, format, RetryPolicy::never());
        let (calls, total) = collect(&c, query.clone(), limit).await.expect("all pages");
        assert_eq!(total, truth.len() as u64, "{format} total_calls");
        assert_eq!(calls, truth, "{format} with limit {limit}");
    }
    // One number only.
    let number = server.simulator().numbers()[1].clone();
    let q = query.clone().with_number(Some(number.clone()));
    let c = client(&server, WireFormat::Json, RetryPolicy::never());
    let (calls, _) = collect(&c, q, 500).await.expect("all pages");
    assert_eq!(calls, server.simulator().calls_in(query.start(), query.end(), Some(&number)));
    server.shutdown().await;
}

#[tokio::test]
async fn quirky_encoding_decodes_to_the_same_calls() {
    let plain = sim(SimConfig::default().with_unknown_types(true)).await;
    let quirky = sim(SimConfig::default().with_unknown_types(true).with_quirks(true)).await;
    let query = window(&plain, 2);
    for format in [WireFormat::Json, WireFormat::Xml] {
        let (a, _) =
            collect(&client(&plain, format, RetryPolicy::never()), query.clone(), 400).await.expect("plain");
        let (b, _) = collect(&client(&quirky, format, RetryPolicy::never()), query.clone(), 400)
            .await
            .expect("quirky");
        assert_eq!(a, b, "{format}");
        assert!(a.iter().any(|c| c.call_type.as_str() == "conference"), "unknown types are kept");
    }
    // An empty window: total 0 (the quirky server omits `calls`).
    let empty = CallQuery::new(1, 2).expect("valid");
    let page = client(&quirky, WireFormat::Json, RetryPolicy::never())
        .fetch_page(&empty.page(10, 0).expect("valid"))
        .await
        .expect("empty page");
    assert_eq!((page.calls.len(), page.total_calls), (0, 0));
}

#[tokio::test]
async fn wrong_credentials_fail_once_without_retry() {
    let server = sim(SimConfig::default()).await;
    let bad = Client::builder(server.base_url(), Credentials::new(DEMO_EMAIL, "not-the-key"))
        .retry_policy(fast_retries(5))
        .build()
        .expect("client builds");
    let err = bad.fetch_page(&window(&server, 1).page(10, 0).expect("valid")).await.expect_err("401");
    assert!(matches!(err, ApiError::Unauthorized { status: 401, .. }), "{err:?}");
    assert!(!err.is_transient());
    let msg = err.to_string();
    assert!(msg.contains("developer key") && !msg.contains("not-the-key"), "{msg}");
    assert!(!msg.contains("--") && !msg.contains("PLUM_"), "a library error names no CLI flag: {msg}");
    assert_eq!(server.stats().unauthorized, 1, "401 must not be retried");
}

#[tokio::test]
async fn every_transient_fault_is_retried_until_the_page_arrives() {
    let server = sim(SimConfig::default()).await;
    let c = client(&server, WireFormat::Json, fast_retries(6));
    let request = window(&server, 1).page(100, 0).expect("valid");
    let want = server.simulator().page(&request);
    // Retry-After: 1 makes this test take a second; it proves it is honoured.
    server.push_script([Fault::ServerError, Fault::Reset, Fault::Truncated, Fault::RateLimited]);
    let started = Instant::now();
    let page = c.fetch_page(&request).await.expect("recovers");
    assert_eq!(page, want);
    assert!(started.elapsed() >= Duration::from_millis(900), "Retry-After was not honoured");
    let stats = server.stats();
    assert_eq!(
        (stats.server_error, stats.reset, stats.truncated, stats.rate_limited, stats.ok),
        (1, 1, 1, 1, 1),
        "{stats:?}"
    );
}

#[tokio::test]
async fn retries_give_up_with_the_last_error() {
    let server = sim(SimConfig::default()).await;
    let c = client(&server, WireFormat::Json, fast_retries(3));
    server.push_script([Fault::Reset, Fault::Reset, Fault::ServerError, Fault::Pass]);
    let err = c.fetch_page(&window(&server, 1).page(10, 0).expect("valid")).await.expect_err("gives up");
    match &err {
        ApiError::RetriesExhausted { attempts: 3, last, .. } => {
            assert!(matches!(**last, ApiError::Server { status: 500, .. }), "{last:?}");
            assert!(
                plumline_api::error_chain(&err).contains("database error"),
                "{}",
                plumline_api::error_chain(&err)
            );
        }
        other => panic!("expected RetriesExhausted after 3 attempts, got {other:?}"),
    }
    assert!(!err.is_transient());
    assert_eq!(server.stats().requests, 3);
}

#[tokio::test]
async fn slow_answers_time_out_as_transient_errors() {
    let server =
        sim(SimConfig::default().with_faults(Faults::none().with_latency(Duration::from_millis(800)))).await;
    let c = Client::builder(server.base_url(), Credentials::new(DEMO_EMAIL, DEMO_KEY))
        .request_timeout(Duration::from_millis(200))
        .retry_policy(RetryPolicy::never())
        .build()
        .expect("client builds");
    let err = c.fetch_page(&window(&server, 1).page(10, 0).expect("valid")).await.expect_err("times out");
    assert!(matches!(err, ApiError::Timeout(_)), "{err:?}");
    assert!(err.is_transient());
}

#[tokio::test]
async fn the_request_budget_spaces_requests() {
    let server = sim(SimConfig::default()).await;
    let c = Client::builder(server.base_url(), Credentials::new(DEMO_EMAIL, DEMO_KEY))
        .requests_per_second(std::num::NonZeroU32::new(10))
        .build()
        .expect("client builds");
    let request = window(&server, 1).page(1, 0).expect("valid");
    let started = Instant::now();
    for _ in 0..16 {
        c.fetch_page(&request).await.expect("page");
    }
    // A burst of 10 is allowed, then one request per 100 ms: at least ~0.5 s.
    assert!(started.elapsed() >= Duration::from_millis(450), "took only {:?}", started.elapsed());
}

#[tokio::test]
async fn a_wrong_base_path_is_a_clear_error() {
    let server = sim(SimConfig::default()).await;
    let base = server.base_url().replace("/api", "/nope");
    let c = Client::builder(base, Credentials::new(DEMO_EMAIL, DEMO_KEY)).build().expect("client builds");
    let err = c.fetch_page(&window(&server, 1).page(1, 0).expect("valid")).await.expect_err("404");
    assert!(matches!(err, ApiError::UnexpectedStatus { status: 404, .. }), "{err:?}");
    assert!(err.to_string().contains("check the base URL"), "{err}");
}
