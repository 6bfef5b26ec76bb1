//! The wire decoder's tables: both formats, one set of rules.

use super::*;
use crate::model::Call;
use crate::model::CallType;

const VENDOR_JSON: &str = include_str!("../../fixtures/vendor-sample.json");
const VENDOR_XML: &str = include_str!("../../fixtures/vendor-sample.xml");

fn call(dest: &str, src: &str, start: i64, end: i64, id: &str) -> Call {
    Call {
        dest: dest.into(),
        src: src.into(),
        start,
        end,
        session_id: id.into(),
        call_type: CallType::Inbound,
        log: true,
    }
}

#[test]
fn vendor_json_sample() {
    let page = decode_json(VENDOR_JSON.as_bytes()).expect("vendor sample decodes");
    assert_eq!(page.total_calls, 2);
    assert_eq!(
        page.calls,
        vec![
            call("8009957586", "2125551234", 1_529_552_691, 1_529_552_697, "300060;001;1529552581"),
            call("8009957586", "6175551234", 1_529_550_008, 1_529_550_036, "400050;001;1529549919"),
        ]
    );
}

#[test]
fn vendor_xml_sample() {
    let page = decode_xml(VENDOR_XML.as_bytes()).expect("vendor sample decodes");
    assert_eq!(page.total_calls, 2);
    assert_eq!(
        page.calls,
        vec![
            call("8669077078", "3472550011", 1_529_552_691, 1_529_552_697, "300060;001;1529552581"),
            call("8338605949", "3472550011", 1_529_550_008, 1_529_550_036, "400050;001;1529549919"),
        ]
    );
}

#[test]
fn quirks_are_tolerated() {
    // (body, total_calls, first call's (start, log, type))
    type Case<'a> = (&'a str, u64, Option<(i64, bool, &'a str)>);
    let cases: &[Case<'_>] = &[
        (
            r#"{"calls":[{"dest":"1","src":"2","start":"1575898386","end":"1575898390","session_id":"a","type":"inbound","log":"true"}],"total_calls":"1"}"#,
            1,
            Some((1_575_898_386, true, "inbound")),
        ),
        (
            r#"{"calls":[{"dest":1,"src":2,"start":10,"end":11,"session_id":"a","type":"outbound","log":1}],"total_calls":1}"#,
            1,
            Some((10, true, "outbound")),
        ),
        (
            r#"{"calls":[{"dest":"1","src":"2","start":10.0,"end":11,"session_id":"a","type":"conference","log":"0","extra":{"x":[1]}}],"total_calls":1,"page":3}"#,
            1,
            Some((10, false, "conference")),
        ),
        (
            r#"{"calls":{"0":{"dest":"1","src":"2","start":10,"end":11,"session_id":"a","type":"transfer","log":false}},"total_calls":1}"#,
            1,
            Some((10, false, "transfer")),
        ),
        (r#"{"calls":[],"total_calls":0}"#, 0, None),
        (r#"{"total_calls":0}"#, 0, None),
        (r#"{"calls":null,"total_calls":0}"#, 0, None),
        (r#"{"calls":"","total_calls":"0"}"#, 0, None),
        ("<result><total_calls>0</total_calls></result>", 0, None),
        ("\u{feff}{\"calls\":[],\"total_calls\":0}", 0, None),
        (
            "<result>\n <calls>\n  <call><dest>1</dest><src>2</src><start>8</start><end>9</end><session_id>s</session_id><type>inbound</type><log>true</log></call>\n </calls>\n <total_calls>1</total_calls>\n</result>",
            1,
            Some((8, true, "inbound")),
        ),
        ("\u{feff}<result><total_calls>3</total_calls></result>", 3, None),
        ("<result><calls/><total_calls>0</total_calls></result>", 0, None),
        (
            "<?xml version=\"1.0\"?><result><calls><item><dest>1</dest><src>Outbound</src><start>5</start><end>9</end><session_id>s</session_id><type>outbound</type><log>1</log><extra>x</extra></item></calls><total_calls>7</total_calls></result>",
            7,
            Some((5, true, "outbound")),
        ),
    ];
    for (body, total, first) in cases {
        let page = decode_page(body.as_bytes(), WireFormat::Json)
            .unwrap_or_else(|e| panic!("body {body} failed to decode: {e}"));
        assert_eq!(page.total_calls, *total, "total of {body}");
        let got = page.calls.first().map(|c| (c.start, c.log, c.call_type.as_str().to_owned()));
        let want = first.map(|(s, l, t)| (s, l, t.to_owned()));
        assert_eq!(got, want, "first call of {body}");
    }
}

#[test]
fn unknown_type_is_kept_verbatim() {
    let page = decode_json(br#"{"calls":[{"dest":"1","src":"2","start":1,"end":2,"session_id":"a","type":"Sip-Refer","log":true}],"total_calls":1}"#).expect("decodes");
    assert_eq!(page.calls[0].call_type, CallType::Other("Sip-Refer".into()));
    assert_eq!(serde_json::to_string(&page.calls[0].call_type).expect("serializes"), r#""Sip-Refer""#);
}

#[test]
fn malformed_bodies_are_clear_errors() {
    let cases: &[(&[u8], &str)] = &[
        (b"", "invalid json body"),
        (b"{\"calls\":[{\"dest\":\"1\"", "invalid json body"),
        (b"{\"calls\":[]}", "`total_calls` is missing"),
        (b"{\"error\":\"database error\"}", "the body is an error"),
        (b"{\"calls\":[{\"dest\":\"1\",\"src\":\"2\",\"start\":\"soon\",\"end\":1,\"session_id\":\"a\",\"type\":\"inbound\",\"log\":true}],\"total_calls\":1}", "expected an integer"),
        (b"<result><calls><item><dest>1</dest>", "invalid xml body"),
        (b"<html><body>502 Bad Gateway</body></html>", "invalid xml body"),
    ];
    for (body, needle) in cases {
        let err = decode_page(body, WireFormat::Json).expect_err("must fail");
        let msg = err.to_string();
        assert!(
            msg.contains(needle),
            "error for {:?} was {msg:?}, wanted {needle:?}",
            String::from_utf8_lossy(body)
        );
        assert!(msg.contains("body starts with"), "{msg}");
    }
}

#[test]
fn snippets_are_short_and_printable() {
    let long = "x".repeat(10_000);
    let s = snippet(long.as_bytes());
    assert!(s.chars().count() <= 121, "{}", s.len());
    assert!(s.ends_with('…'));
    assert_eq!(snippet(b"a\nb\x00c"), "a b c");
    assert_eq!(snippet(b"  "), "<empty>");
}

#[test]
fn error_messages_from_both_formats() {
    assert_eq!(error_message(br#"{"error":"database error"}"#).as_deref(), Some("database error"));
    assert_eq!(
        error_message(br#"{"error":"auth","type":"x","message":"inactive account"}"#).as_deref(),
        Some("auth: inactive account")
    );
    assert_eq!(
        error_message(b"<result><error>Invalid credentials</error></result>").as_deref(),
        Some("Invalid credentials")
    );
    assert_eq!(error_message(b"Internal Server Error"), None);
}

#[test]
fn call_serializes_with_api_field_names() {
    let c = call("1", "2", 3, 4, "s");
    assert_eq!(
        serde_json::to_string(&c).expect("serializes"),
        r#"{"dest":"1","src":"2","start":3,"end":4,"session_id":"s","type":"inbound","log":true}"#
    );
}

/// One call, encoded in `format` from `(field, text)` pairs: JSON values
/// as strings (the loosest form servers send), XML as leaf text.
fn encode_one(format: WireFormat, fields: &[(&str, &str)]) -> String {
    match format {
        WireFormat::Json => {
            let body: Vec<String> = fields
                .iter()
                .map(|(k, v)| {
                    let value = if *v == "null" { "null".to_owned() } else { format!("\"{v}\"") };
                    format!("\"{k}\":{value}")
                })
                .collect();
            format!("{{\"calls\":[{{{}}}],\"total_calls\":1}}", body.join(","))
        }
        WireFormat::Xml => {
            let body: Vec<String> = fields.iter().map(|(k, v)| format!("<{k}>{v}</{k}>")).collect();
            let body = body.concat();
            format!("<result><calls><item>{body}</item></calls><total_calls>1</total_calls></result>")
        }
    }
}

#[test]
fn both_formats_agree_on_missing_fields() {
    const FULL: [(&str, &str); 7] = [
        ("dest", "8005551234"),
        ("src", "6175550000"),
        ("start", "100"),
        ("end", "160"),
        ("session_id", "s1"),
        ("type", "inbound"),
        ("log", "true"),
    ];
    let full = Call {
        dest: "8005551234".into(),
        src: "6175550000".into(),
        start: 100,
        end: 160,
        session_id: "s1".into(),
        call_type: CallType::Inbound,
        log: true,
    };
    // (fields left out, what the call becomes, or the error it gives)
    let cases: Vec<(&[&str], Result<Call, &str>)> = vec![
        (&[], Ok(full.clone())),
        (&["log"], Ok(Call { log: false, ..full.clone() })),
        (&["dest"], Ok(Call { dest: String::new(), ..full.clone() })),
        (&["src"], Ok(Call { src: String::new(), ..full.clone() })),
        (&["type"], Ok(Call { call_type: CallType::Other(String::new()), ..full.clone() })),
        (&["session_id"], Err("no `session_id`")),
        (&["start"], Err("call s1: `start` is missing")),
        (&["end"], Err("call s1: `end` is missing")),
    ];
    for format in [WireFormat::Json, WireFormat::Xml] {
        for (missing, want) in &cases {
            let fields: Vec<(&str, &str)> =
                FULL.iter().copied().filter(|(k, _)| !missing.contains(k)).collect();
            let body = encode_one(format, &fields);
            let got = decode_page(body.as_bytes(), format);
            match (got, want) {
                (Ok(page), Ok(call)) => assert_eq!(&page.calls[0], call, "{format} without {missing:?}"),
                (Err(e), Err(needle)) => {
                    assert!(e.to_string().contains(needle), "{format} without {missing:?}: {e}");
                }
                (got, want) => panic!("{format} without {missing:?}: got {got:?}, want {want:?}"),
            }
        }
    }
    // JSON's `null` means the same as a missing field.
    for (field, want) in [("log", Ok(false)), ("dest", Ok(true)), ("start", Err("`start` is missing"))] {
        let fields: Vec<(&str, &str)> =
            FULL.iter().map(|&(k, v)| if k == field { (k, "null") } else { (k, v) }).collect();
        let got = decode_json(encode_one(WireFormat::Json, &fields).as_bytes());
        match (got, want) {
            (Ok(page), Ok(log_or_dest)) => {
                assert!(page.calls[0].log == log_or_dest || page.calls[0].dest.is_empty(), "null {field}");
            }
            (Err(e), Err(needle)) => assert!(e.to_string().contains(needle), "null {field}: {e}"),
            (got, _) => panic!("null {field}: {got:?}"),
        }
    }
    // A call deserialized on its own follows the same rules.
    let alone: Call = serde_json::from_str(r#"{"start":"1","end":2,"session_id":"x"}"#).expect("decodes");
    assert_eq!((alone.log, alone.dest.as_str(), alone.call_type.as_str()), (false, "", ""));
}

#[test]
fn an_error_inside_a_200_is_not_a_page() {
    let page = |n| Answer::Page(CallPage { calls: Vec::new(), total_calls: n });
    let error = |m: &str| Answer::Error(m.to_owned());
    let cases: Vec<(&str, Answer)> = vec![
        (r#"{"error":"database error","calls":[],"total_calls":0}"#, error("database error")),
        (r#"{"error":"database error"}"#, error("database error")),
        (r#"{"calls":[],"total_calls":"0","error":"timeout","message":"retry"}"#, error("timeout: retry")),
        (r#"{"error":{"code":5,"message":"db down"},"total_calls":0}"#, error("db down")),
        (r#"{"error":500,"total_calls":0}"#, error("500")),
        (
            "<result><error>database error</error><calls/><total_calls>0</total_calls></result>",
            error("database error"),
        ),
        (
            "<?xml version=\"1.0\"?><result><total_calls>0</total_calls><error>database error</error></result>",
            error("database error"),
        ),
        // Blank, null and false errors are no error.
        (r#"{"error":"","calls":[],"total_calls":0}"#, page(0)),
        (r#"{"error":null,"calls":[],"total_calls":3}"#, page(3)),
        (r#"{"error":false,"total_calls":0}"#, page(0)),
        (r#"{"error":"  ","total_calls":0}"#, page(0)),
        ("<result><error></error><total_calls>0</total_calls></result>", page(0)),
        ("<result><error/><total_calls>2</total_calls></result>", page(2)),
    ];
    for (body, want) in cases {
        let got = decode_answer(body.as_bytes(), WireFormat::Json).unwrap_or_else(|e| panic!("{body}: {e}"));
        assert_eq!(got, want, "{body}");
    }
    let err = decode_page(br#"{"error":"database error","calls":[],"total_calls":0}"#, WireFormat::Json)
        .expect_err("an error is not a page");
    assert!(err.to_string().contains("database error"), "{err}");
}
