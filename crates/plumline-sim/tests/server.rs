//! The simulator over real HTTP: routing, auth, formats, faults, stats,
//! live mode, shutdown, and the real API client paging through faults.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use plumline_api::{CallPage, CallQuery, Client, Credentials, RetryPolicy, WireFormat, all_pages, wire};
use plumline_sim::{DEMO_EMAIL, DEMO_KEY, Fault, Faults, SimClock, SimConfig, SimError, SimServer};
use reqwest::StatusCode;

const JAN1: i64 = 1_735_689_600;
const DAY: i64 = 86_400;

fn localhost() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn small() -> SimConfig {
    SimConfig::default().with_seed(9).with_calls_per_day(200.0).with_data_range(JAN1, JAN1 + 5 * DAY)
}

async fn start(config: SimConfig) -> SimServer {
    SimServer::start(config, localhost()).await.expect("simulator starts")
}

/// A client that opens a fresh connection per request, so an injected reset
/// or truncation never leaks into the next request.
fn http() -> reqwest::Client {
    reqwest::Client::builder().pool_max_idle_per_host(0).build().expect("an HTTP client")
}

struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Result<Vec<u8>, String>,
}

async fn get(
    server: &SimServer,
    path_and_query: &str,
    accept: Option<&str>,
    auth: Option<(&str, &str)>,
) -> Result<Answer, reqwest::Error> {
    send(server, reqwest::Method::GET, path_and_query, accept, auth).await
}

async fn send(
    server: &SimServer,
    method: reqwest::Method,
    path_and_query: &str,
    accept: Option<&str>,
    auth: Option<(&str, &str)>,
) -> Result<Answer, reqwest::Error> {
    let mut request = http().request(method, format!("{}{path_and_query}", server.base_url()));
    if let Some(accept) = accept {
        request = request.header(reqwest::header::ACCEPT, accept);
    }
    if let Some((user, key)) = auth {
        request = request.basic_auth(user, Some(key));
    }
    let response = request.send().await?;
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.bytes().await.map(|b| b.to_vec()).map_err(|e| format!("{e:?}"));
    Ok(Answer { status, headers, body })
}

const DEMO: Option<(&str, &str)> = Some((DEMO_EMAIL, DEMO_KEY));

/// (credentials, `Accept`, how the body starts).
type AuthCase<'a> = (Option<(&'a str, &'a str)>, Option<&'a str>, &'a str);

fn text(answer: &Answer) -> String {
    match &answer.body {
        Ok(body) => String::from_utf8_lossy(body).into_owned(),
        Err(e) => format!("<body error: {e}>"),
    }
}

fn window_path(start: i64, end: i64, query: &str) -> String {
    format!("/calls/{start}/{end}{query}")
}

fn expected_page(
    server: &SimServer,
    start: i64,
    end: i64,
    number: Option<&str>,
    limit: u32,
    offset: u64,
) -> CallPage {
    let request = CallQuery::new(start, end)
        .expect("a valid window")
        .with_number(number.map(str::to_owned))
        .page(limit, offset)
        .expect("a valid page");
    server.simulator().page(&request)
}

#[tokio::test]
async fn json_and_xml_pages_match_the_ground_truth() {
    let server = start(small().with_unknown_types(true)).await;
    let number = server.simulator().numbers()[1].clone();
    let cases: Vec<(String, Option<&str>, WireFormat, CallPage)> = vec![
        (
            window_path(JAN1, JAN1 + 2 * DAY, ""),
            None,
            WireFormat::Json,
            expected_page(&server, JAN1, JAN1 + 2 * DAY, None, 1_000, 0),
        ),
        (
            window_path(JAN1, JAN1 + 2 * DAY, "?limit=50&offset=120"),
            Some("application/json"),
            WireFormat::Json,
            expected_page(&server, JAN1, JAN1 + 2 * DAY, None, 50, 120),
        ),
        (
            window_path(JAN1, JAN1 + 2 * DAY, "?limit=50&offset=120"),
            Some("application/xml"),
            WireFormat::Xml,
            expected_page(&server, JAN1, JAN1 + 2 * DAY, None, 50, 120),
        ),
        (
            window_path(JAN1 + 100, JAN1 + 4 * DAY, &format!("?number={number}&limit=10000")),
            Some("application/xml"),
            WireFormat::Xml,
            expected_page(&server, JAN1 + 100, JAN1 + 4 * DAY, Some(&number), 10_000, 0),
        ),
        (
            window_path(JAN1, JAN1 + 2 * DAY, "?offset=999999"),
            Some("text/html"),
            WireFormat::Json,
            expected_page(&server, JAN1, JAN1 + 2 * DAY, None, 1_000, 999_999),
        ),
        (window_path(0, 10, ""), None, WireFormat::Json, CallPage::default()),
    ];
    for (path, accept, format, want) in cases {
        let answer = get(&server, &path, accept, DEMO).await.expect("an answer");
        assert_eq!(answer.status, StatusCode::OK, "{path}: {}", text(&answer));
        let content_type = answer.headers.get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
        assert_eq!(content_type, Some(format.media_type()), "{path}");
        let body = answer.body.as_deref().expect("a whole body");
        let got = wire::decode_page(body, format).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(got, want, "{path} as {format}");
    }
    assert!(server.stats().calls_served > 1_000);
    server.shutdown().await;
}

#[tokio::test]
async fn quirky_answers_decode_to_the_same_calls() {
    let server = start(small().with_quirks(true)).await;
    let plain = SimServer::start(small(), localhost()).await.expect("starts");
    for (offset, accept, format) in [
        (0, None, WireFormat::Json),
        (333, None, WireFormat::Json),
        (1_000, Some("application/xml"), WireFormat::Xml),
    ] {
        let path = window_path(JAN1, JAN1 + 3 * DAY, &format!("?limit=333&offset={offset}"));
        let quirky = get(&server, &path, accept, DEMO).await.expect("an answer");
        let normal = get(&plain, &path, accept, DEMO).await.expect("an answer");
        assert_ne!(text(&quirky), text(&normal), "quirks changed nothing at {offset}");
        let decode =
            |a: &Answer| wire::decode_page(a.body.as_deref().expect("a body"), format).expect("decodes");
        assert_eq!(decode(&quirky), decode(&normal), "offset {offset}");
        assert_eq!(decode(&quirky).calls.len(), 333);
    }
    server.shutdown().await;
    plain.shutdown().await;
}

#[tokio::test]
async fn credentials_are_required() {
    let server = start(small()).await;
    let path = window_path(JAN1, JAN1 + DAY, "");
    let cases: [AuthCase<'_>; 5] = [
        (None, None, "{\"error\":\"authentication required"),
        (Some((DEMO_EMAIL, "wrong-key")), None, "{\"error\":\"invalid credentials\"}"),
        (Some(("someone@else.invalid", DEMO_KEY)), None, "{\"error\":\"invalid credentials\"}"),
        (
            Some((DEMO_EMAIL, "")),
            Some("application/xml"),
            "<?xml version=\"1.0\"?>\n<result><error>invalid credentials</error></result>",
        ),
        (None, Some("application/xml"), "<?xml version=\"1.0\"?>\n<result><error>authentication required"),
    ];
    for (auth, accept, body_start) in cases {
        let answer = get(&server, &path, accept, auth).await.expect("an answer");
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{auth:?}");
        assert!(text(&answer).starts_with(body_start), "{auth:?}: {}", text(&answer));
        assert!(answer.headers.contains_key(reqwest::header::WWW_AUTHENTICATE));
        assert!(wire::error_message(answer.body.as_deref().expect("a body")).is_some());
    }
    // The email is matched case-insensitively, the key exactly.
    let upper =
        get(&server, &path, None, Some(("DEMO@plumline.invalid", DEMO_KEY))).await.expect("an answer");
    assert_eq!(upper.status, StatusCode::OK);
    let stats = server.stats();
    assert_eq!((stats.unauthorized, stats.ok, stats.requests), (5, 1, 6));
    server.shutdown().await;
}

#[tokio::test]
async fn wrong_methods_paths_and_parameters_are_refused() {
    let server = start(small()).await;
    let calls = window_path(JAN1, JAN1 + DAY, "");
    for method in
        [reqwest::Method::POST, reqwest::Method::PUT, reqwest::Method::DELETE, reqwest::Method::HEAD]
    {
        let answer = send(&server, method.clone(), &calls, None, DEMO).await.expect("an answer");
        assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
        assert_eq!(answer.headers.get(reqwest::header::ALLOW).and_then(|v| v.to_str().ok()), Some("GET"));
        if method != reqwest::Method::HEAD {
            assert!(text(&answer).contains("\"error\""), "{method}: {}", text(&answer));
        }
    }
    let cases: [(&str, StatusCode, &str); 9] = [
        ("/calls/1735689600/1735775999?limit=0", StatusCode::BAD_REQUEST, "limit must be"),
        ("/calls/1735689600/1735775999?limit=10001", StatusCode::BAD_REQUEST, "limit must be"),
        ("/calls/1735689600/1735775999?limit=many", StatusCode::BAD_REQUEST, "limit must be"),
        ("/calls/1735689600/1735775999?offset=-3", StatusCode::BAD_REQUEST, "offset must be"),
        ("/calls/yesterday/1735775999", StatusCode::BAD_REQUEST, "start must be"),
        ("/calls/1735689600/1.5", StatusCode::BAD_REQUEST, "end must be"),
        ("/calls/1735689600", StatusCode::NOT_FOUND, "not found"),
        ("/call/abc", StatusCode::NOT_FOUND, "not found"),
        ("/calls/1/2/3", StatusCode::NOT_FOUND, "not found"),
    ];
    for (path, status, needle) in cases {
        let answer = get(&server, path, None, DEMO).await.expect("an answer");
        assert_eq!(answer.status, status, "{path}: {}", text(&answer));
        assert!(text(&answer).contains(needle), "{path}: {}", text(&answer));
    }
    let outside =
        http().get(format!("http://{}/metrics", server.local_addr())).send().await.expect("an answer");
    assert_eq!(outside.status(), StatusCode::NOT_FOUND);
    let stats = server.stats();
    assert_eq!((stats.method_not_allowed, stats.bad_request, stats.not_found), (4, 6, 4));
    server.shutdown().await;
}

#[tokio::test]
async fn each_fault_is_observable_and_the_script_runs_in_order() {
    let server = start(small()).await;
    let path = window_path(JAN1, JAN1 + DAY, "?limit=200");
    server.push_script([Fault::ServerError, Fault::RateLimited, Fault::Pass, Fault::Reset, Fault::Truncated]);
    assert_eq!(server.script_len(), 5);

    let error500 = get(&server, &path, None, DEMO).await.expect("an answer");
    assert_eq!(error500.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(text(&error500), "{\"error\":\"database error\"}");

    let throttled = get(&server, &path, None, DEMO).await.expect("an answer");
    assert_eq!(throttled.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(throttled.headers.get(reqwest::header::RETRY_AFTER).and_then(|v| v.to_str().ok()), Some("1"));

    let passed = get(&server, &path, None, DEMO).await.expect("an answer");
    assert_eq!(passed.status, StatusCode::OK, "{}", text(&passed));

    let reset = get(&server, &path, None, DEMO).await;
    assert!(reset.is_err(), "a reset must not be answered, got {:?}", reset.map(|a| a.status));

    let truncated = get(&server, &path, None, DEMO).await.expect("headers arrive before the cut");
    assert_eq!(truncated.status, StatusCode::OK);
    let declared: usize = truncated
        .headers
        .get(reqwest::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .expect("a length");
    assert!(declared > 1_000, "declared {declared}");
    assert!(
        truncated.body.is_err(),
        "a truncated body must fail to read, got {} bytes",
        truncated.body.as_ref().map_or(0, Vec::len)
    );

    assert_eq!(server.script_len(), 0);
    let after_script = get(&server, &path, None, DEMO).await.expect("an answer");
    assert_eq!(after_script.status, StatusCode::OK, "the script is used up");

    let stats = server.stats();
    let got = (
        stats.requests,
        stats.ok,
        stats.server_error,
        stats.rate_limited,
        stats.reset,
        stats.truncated,
        stats.unauthorized,
    );
    assert_eq!(got, (6, 2, 1, 1, 1, 1, 0), "{stats:?}");
    assert_eq!(stats.calls_served, 400);

    // The same faults from the client's side, without retries.
    let client = Client::builder(server.base_url(), Credentials::new(DEMO_EMAIL, DEMO_KEY))
        .retry_policy(RetryPolicy::never())
        .build()
        .expect("a client");
    let request = CallQuery::new(JAN1, JAN1 + DAY).expect("a window").page(100, 0).expect("a page");
    let kinds = [
        (Fault::ServerError, "server_error"),
        (Fault::RateLimited, "rate_limited"),
        (Fault::Reset, "transport"),
        (Fault::Truncated, "transport"),
    ];
    for (fault, kind) in kinds {
        server.push_script([fault]);
        let error = client.fetch_page(&request).await.expect_err("a fault");
        assert_eq!(error.kind(), kind, "{fault}: {error}");
        assert!(error.is_transient(), "{fault}: {error}");
    }
    assert_eq!(client.fetch_page(&request).await.expect("no fault left").calls.len(), 100);
    server.shutdown().await;
}

#[tokio::test]
async fn fault_rates_and_latency_change_at_run_time() {
    let server = start(small()).await;
    let path = window_path(JAN1, JAN1 + DAY, "?limit=5");
    server.set_faults(Faults::none().with_server_errors(1.0)).expect("valid faults");
    for _ in 0..3 {
        assert_eq!(
            get(&server, &path, None, DEMO).await.expect("an answer").status,
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
    // The script goes first, then the rates again.
    server.push_script([Fault::Pass]);
    assert_eq!(get(&server, &path, None, DEMO).await.expect("an answer").status, StatusCode::OK);
    assert_eq!(
        get(&server, &path, None, DEMO).await.expect("an answer").status,
        StatusCode::INTERNAL_SERVER_ERROR
    );

    let bad = server.set_faults(Faults::none().with_rate_limits(2.0));
    assert!(matches!(bad, Err(SimError::InvalidConfig(_))), "{bad:?}");
    assert_eq!(
        server.faults(),
        Faults::none().with_server_errors(1.0),
        "a refused change keeps the old faults"
    );

    server.set_faults(Faults::none().with_latency(Duration::from_millis(300))).expect("valid faults");
    let began = Instant::now();
    assert_eq!(get(&server, &path, None, DEMO).await.expect("an answer").status, StatusCode::OK);
    assert!(began.elapsed() >= Duration::from_millis(300), "{:?}", began.elapsed());
    // Latency is for the calls endpoint only.
    let began = Instant::now();
    assert_eq!(
        get(&server, "/elsewhere", None, DEMO).await.expect("an answer").status,
        StatusCode::NOT_FOUND
    );
    assert!(began.elapsed() < Duration::from_millis(300));

    // Rates split as configured (seeded, so this is exact run to run).
    server.set_faults(Faults::none().with_server_errors(0.3).with_rate_limits(0.2)).expect("valid faults");
    let before = server.stats();
    for _ in 0..200 {
        get(&server, &path, None, DEMO).await.expect("an answer");
    }
    let after = server.stats();
    let share = |a: u64, b: u64| (a - b) as f64 / 200.0;
    assert!((0.2..0.4).contains(&share(after.server_error, before.server_error)), "{after:?}");
    assert!((0.12..0.28).contains(&share(after.rate_limited, before.rate_limited)), "{after:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn live_mode_lists_calls_as_they_end() {
    let clock = SimClock::manual(JAN1 + 6 * 3_600);
    let config = small().with_calls_per_day(50_000.0).with_live(true).with_clock(clock.clone());
    let server = start(config).await;
    let path = window_path(JAN1, JAN1 + 5 * DAY, "?limit=1");
    let mut last = 0;
    for step in 0..5 {
        let now = JAN1 + 6 * 3_600 + step * 60;
        server.set_now(now);
        let answer = get(&server, &path, None, DEMO).await.expect("an answer");
        let page =
            wire::decode_page(answer.body.as_deref().expect("a body"), WireFormat::Json).expect("decodes");
        assert_eq!(page.total_calls, server.simulator().count_in(JAN1, JAN1 + 5 * DAY, None));
        assert!(page.calls.iter().all(|c| c.end <= now), "{page:?} at {now}");
        assert!(page.total_calls > last, "no new calls by {now}: {} then {}", last, page.total_calls);
        last = page.total_calls;
    }
    clock.advance(3_600);
    assert_eq!(server.simulator().now(), JAN1 + 6 * 3_600 + 4 * 60 + 3_600);
    server.shutdown().await;
}

#[tokio::test]
async fn the_api_client_pages_through_faults_to_the_ground_truth() {
    let faults = Faults::none().with_server_errors(0.1).with_resets(0.1);
    let server = start(small().with_calls_per_day(500.0).with_faults(faults)).await;
    let (start, end) = (JAN1 + 7_200, JAN1 + 4 * DAY + 3_600);
    let truth = server.simulator().calls_in(start, end, None);
    assert!(truth.len() > 4_000, "{}", truth.len());
    for format in [WireFormat::Json, WireFormat::Xml] {
        let client = Client::builder(server.base_url(), Credentials::new(DEMO_EMAIL, DEMO_KEY))
            .wire_format(format)
            .build()
            .expect("a client");
        let query = CallQuery::new(start, end).expect("a window");
        let mut pages = std::pin::pin!(all_pages(client, query, 250));
        let mut got = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.unwrap_or_else(|e| panic!("{format}: {e:#}"));
            assert_eq!(page.total_calls, truth.len() as u64);
            got.extend(page.calls);
        }
        assert_eq!(got.len(), truth.len(), "{format}");
        assert_eq!(got, truth, "{format}");
    }
    let stats = server.stats();
    assert!(stats.server_error > 0 && stats.reset > 0, "no faults were injected: {stats:?}");
    assert_eq!(stats.ok, 2 * truth.len().div_ceil(250) as u64, "{stats:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_frees_the_port_and_bind_errors_say_so() {
    let server = start(small()).await;
    let addr = server.local_addr();
    assert_eq!(server.base_url(), format!("http://{addr}/api"));
    let taken = SimServer::start(small(), addr).await.expect_err("the port is taken");
    let message = taken.to_string();
    assert!(matches!(taken, SimError::Bind { .. }), "{taken:?}");
    assert!(message.contains(&addr.to_string()) && message.contains("another port"), "{message}");
    // An idle keep-alive connection must not hold shutdown up.
    let keep_alive = reqwest::Client::new();
    let answer = keep_alive
        .get(format!("{}/calls/{JAN1}/{JAN1}", server.base_url()))
        .basic_auth(DEMO_EMAIL, Some(DEMO_KEY))
        .send()
        .await
        .expect("an answer");
    assert_eq!(answer.status(), StatusCode::OK);
    let began = Instant::now();
    server.shutdown().await;
    assert!(began.elapsed() < Duration::from_secs(2), "shutdown took {:?}", began.elapsed());
    let again = SimServer::start(small(), addr).await.expect("the port is free again");
    drop(again);
}

#[tokio::test]
async fn dropping_the_handle_stops_the_server() {
    let server = start(small()).await;
    let addr = server.local_addr();
    drop(server);
    let deadline = Instant::now() + Duration::from_secs(5);
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < deadline, "still accepting after drop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn serve_until_runs_in_the_foreground() {
    let listener = tokio::net::TcpListener::bind(localhost()).await.expect("bind");
    let addr = listener.local_addr().expect("an address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(SimServer::serve_until(small(), listener, async move {
        let _ = stopped.await;
    }));
    let answer = http()
        .get(format!("http://{addr}/api/calls/{JAN1}/{}", JAN1 + DAY))
        .basic_auth(DEMO_EMAIL, Some(DEMO_KEY))
        .send()
        .await
        .expect("an answer");
    assert_eq!(answer.status(), StatusCode::OK);
    stop.send(()).expect("the server is waiting");
    let stats = serving.await.expect("joins").expect("serves");
    assert_eq!((stats.requests, stats.ok), (1, 1));
    let invalid = SimServer::serve_until(
        small().with_data_range(5, 5),
        tokio::net::TcpListener::bind(localhost()).await.expect("bind"),
        async {},
    )
    .await;
    assert!(matches!(invalid, Err(SimError::InvalidConfig(_))));
}
