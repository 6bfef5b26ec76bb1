//! One request: routing, credentials, query parsing, and rendering the
//! answer (the faults and behaviours it meets are applied from `faults`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use base64::Engine as _;
use bytes::Bytes;
use http::header::{ACCEPT, ALLOW, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use plumline_api::{MAX_LIMIT, WireFormat};
use tracing::debug;

use super::faults::{self, DropConnection, SimBody};
use super::stats::bump;
use super::{BASE_PATH, Shared};
use crate::config::Fault;
use crate::dataset::Simulator;
use crate::render;

/// Answers one request: a page, an error, or (for an injected reset) no
/// answer at all.
pub(super) async fn handle(
    shared: Arc<Shared>,
    abort: Arc<AtomicBool>,
    request: Request<Incoming>,
) -> Result<Response<SimBody>, DropConnection> {
    let stats = &shared.stats;
    bump(&stats.requests);
    let format = if wants_xml(request.headers()) { WireFormat::Xml } else { WireFormat::Json };
    let Some((start_raw, end_raw)) = calls_path(request.uri().path()) else {
        bump(&stats.not_found);
        debug!(path = request.uri().path(), status = 404, "unknown path");
        return Ok(error_response(StatusCode::NOT_FOUND, format, "not found"));
    };
    if request.method() != Method::GET {
        bump(&stats.method_not_allowed);
        let mut response = error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            format,
            "method not allowed: only GET is supported",
        );
        response.headers_mut().insert(ALLOW, HeaderValue::from_static("GET"));
        return Ok(response);
    }
    let (fault, latency) = shared.next_fault();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if let Some(answer) = faults::injected_answer(fault, &shared, &abort, format) {
        return answer;
    }
    if let Err(message) = check_auth(request.headers(), &shared.sim) {
        bump(&stats.unauthorized);
        debug!(status = 401, message, "refused credentials");
        let mut response = error_response(StatusCode::UNAUTHORIZED, format, message);
        response
            .headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"Plum Fuse\""));
        return Ok(response);
    }
    let params = match parse_params(start_raw, end_raw, request.uri().query()) {
        Ok(params) => params,
        Err(message) => {
            bump(&stats.bad_request);
            debug!(status = 400, message = %message, "bad request");
            return Ok(error_response(StatusCode::BAD_REQUEST, format, &message));
        }
    };
    Ok(page_response(&shared, &params, format, fault))
}

/// A 200 with the page `params` ask for (as the behaviours in force shape
/// it), cut short when `fault` says so; then the moving source's step, if due.
fn page_response(shared: &Shared, params: &Params, format: WireFormat, fault: Fault) -> Response<SimBody> {
    let stats = &shared.stats;
    let behaviours = shared.behaviours();
    let nth = shared.count_window(params);
    let serial = shared.serial.fetch_add(1, Ordering::Relaxed);
    if let Some(response) = faults::error_in_200(shared, &behaviours, params, nth, format) {
        return response;
    }
    let resolved = faults::resolve_page(shared, &behaviours, params, nth, serial);
    let mut body = Vec::new();
    shared.sim.render(&resolved, params.offset, format, &mut body);
    let n_calls = resolved.items.len();
    debug!(
        start = params.start,
        end = params.end,
        number = params.number.as_deref().unwrap_or(""),
        offset = params.offset,
        limit = params.limit,
        n_calls,
        total_calls = resolved.total,
        nth,
        fault = %fault,
        "page"
    );
    drop(resolved);
    faults::move_source(shared, &behaviours, params, nth, n_calls);
    let mut response = if fault == Fault::Truncated {
        bump(&stats.truncated);
        faults::truncated_response(body)
    } else {
        bump(&stats.ok);
        stats.calls_served.fetch_add(n_calls as u64, Ordering::Relaxed);
        stats.bytes_served.fetch_add(body.len() as u64, Ordering::Relaxed);
        Response::new(SimBody::Full(Some(Bytes::from(body))))
    };
    response.headers_mut().insert(CONTENT_TYPE, content_type(format));
    response
}

/// `(start, end)` path segments of `/api/calls/{start}/{end}`, if it is that.
fn calls_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix(BASE_PATH)?.strip_prefix("/calls/")?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (start, end) = rest.split_once('/')?;
    (!start.is_empty() && !end.is_empty() && !end.contains('/')).then_some((start, end))
}

/// XML only when asked for before (or without) JSON; anything else is JSON.
fn wants_xml(headers: &HeaderMap) -> bool {
    let Some(accept) = headers.get(ACCEPT).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let accept = accept.to_ascii_lowercase();
    match (accept.find("/xml"), accept.find("/json")) {
        (Some(xml), Some(json)) => xml < json,
        (Some(_), None) => true,
        _ => false,
    }
}

fn check_auth(headers: &HeaderMap, sim: &Simulator) -> Result<(), &'static str> {
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Err("authentication required: send HTTP Basic credentials (email and developer key)");
    };
    let invalid = "invalid credentials";
    let value = value.to_str().map_err(|_| invalid)?.trim();
    let (scheme, encoded) = value.split_once(' ').ok_or(invalid)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(invalid);
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).map_err(|_| invalid)?;
    let decoded = std::str::from_utf8(&decoded).map_err(|_| invalid)?;
    let (email, key) = decoded.split_once(':').ok_or(invalid)?;
    let expected = &sim.config().credentials;
    if email.eq_ignore_ascii_case(&expected.email) && key == expected.developer_key.expose() {
        Ok(())
    } else {
        Err(invalid)
    }
}

/// The query of one calls request, validated.
pub(super) struct Params {
    pub(super) start: i64,
    pub(super) end: i64,
    pub(super) number: Option<String>,
    pub(super) limit: usize,
    pub(super) offset: u64,
}

fn parse_params(start: &str, end: &str, query: Option<&str>) -> Result<Params, String> {
    let timestamp = |raw: &str, name: &str| {
        raw.parse::<i64>()
            .map_err(|_| format!("{name} must be a UNIX timestamp in whole seconds, got {raw:?}"))
    };
    let mut params = Params {
        start: timestamp(start, "start")?,
        end: timestamp(end, "end")?,
        number: None,
        limit: 1_000,
        offset: 0,
    };
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match &*key {
            "number" => params.number = Some(value.into_owned()).filter(|n| !n.is_empty()),
            "limit" => {
                params.limit = value
                    .trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|l| (1..=MAX_LIMIT).contains(l))
                    .and_then(|l| usize::try_from(l).ok())
                    .ok_or_else(|| {
                        format!("limit must be an integer from 1 to {MAX_LIMIT}, got {value:?}")
                    })?;
            }
            "offset" => {
                params.offset = value
                    .trim()
                    .parse::<u64>()
                    .map_err(|_| format!("offset must be a non-negative integer, got {value:?}"))?;
            }
            _ => {}
        }
    }
    Ok(params)
}

pub(super) fn content_type(format: WireFormat) -> HeaderValue {
    match format {
        WireFormat::Json => HeaderValue::from_static("application/json"),
        WireFormat::Xml => HeaderValue::from_static("application/xml"),
    }
}

pub(super) fn error_response(status: StatusCode, format: WireFormat, message: &str) -> Response<SimBody> {
    let body = match format {
        WireFormat::Json => render::json_error(message),
        WireFormat::Xml => render::xml_error(message),
    };
    let mut response = Response::new(SimBody::Full(Some(Bytes::from(body))));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, content_type(format));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_route() {
        let cases = [
            ("/api/calls/1/2", Some(("1", "2"))),
            ("/api/calls/1/2/", Some(("1", "2"))),
            ("/api/calls/a/b", Some(("a", "b"))),
            ("/api/calls/1", None),
            ("/api/calls/1/2/3", None),
            ("/api/calls//2", None),
            ("/calls/1/2", None),
            ("/api/call/1", None),
        ];
        for (path, want) in cases {
            assert_eq!(calls_path(path), want, "{path}");
        }
    }

    #[test]
    fn accept_picks_format() {
        let cases = [
            (None, false),
            (Some("application/json"), false),
            (Some("application/xml"), true),
            (Some("text/xml"), true),
            (Some("application/xml, application/json"), true),
            (Some("application/json, application/xml"), false),
            (Some("*/*"), false),
            (Some("text/html"), false),
        ];
        for (accept, want) in cases {
            let mut headers = HeaderMap::new();
            if let Some(a) = accept {
                headers.insert(ACCEPT, HeaderValue::from_static(a));
            }
            assert_eq!(wants_xml(&headers), want, "{accept:?}");
        }
    }

    #[test]
    fn params_parse_and_reject() {
        let ok =
            parse_params("10", "20", Some("number=8005551234&limit=50&offset=7&extra=1")).expect("valid");
        assert_eq!(
            (ok.start, ok.end, ok.number.as_deref(), ok.limit, ok.offset),
            (10, 20, Some("8005551234"), 50, 7)
        );
        let defaults = parse_params("10", "20", None).expect("valid");
        assert_eq!((defaults.number, defaults.limit, defaults.offset), (None, 1_000, 0));
        let empty_number = parse_params("10", "20", Some("number=")).expect("valid");
        assert_eq!(empty_number.number, None);
        let bad = [
            ("x", "20", None, "start must be"),
            ("10", "2.5", None, "end must be"),
            ("10", "20", Some("limit=0"), "limit must be"),
            ("10", "20", Some("limit=10001"), "limit must be"),
            ("10", "20", Some("limit=ten"), "limit must be"),
            ("10", "20", Some("offset=-1"), "offset must be"),
        ];
        for (start, end, query, needle) in bad {
            let Err(message) = parse_params(start, end, query) else {
                panic!("{start} {end} {query:?} should fail");
            };
            assert!(message.contains(needle), "{message}");
        }
    }
}
