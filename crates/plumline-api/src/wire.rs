//! Decoding the API's JSON and XML bodies.
//!
//! Servers of this family are loose about types: numbers arrive as strings
//! (`"start":"1575898386"`), booleans as `"true"` or `1`, `calls` may be
//! missing when `total_calls` is 0, and PHP back ends sometimes encode a list
//! as an object keyed by index. Every one of those is accepted here; anything
//! that is not a page at all becomes a [`DecodeError`].

use std::fmt;
use std::str::FromStr;

use serde::Deserialize;

use crate::model::{Call, CallPage};

/// The body format asked of the server with the `Accept` header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum WireFormat {
    /// `application/json` (the default).
    #[default]
    Json,
    /// `application/xml`.
    Xml,
}

impl WireFormat {
    /// The media type sent in `Accept`.
    #[must_use]
    pub fn media_type(self) -> &'static str {
        match self {
            WireFormat::Json => "application/json",
            WireFormat::Xml => "application/xml",
        }
    }

    /// The lowercase name users type (`json`, `xml`).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            WireFormat::Json => "json",
            WireFormat::Xml => "xml",
        }
    }

    /// Guesses a body's format from its first non-blank byte.
    ///
    /// Servers that ignore `Accept` exist; decoding what was actually sent is
    /// kinder than failing on what was asked for.
    #[must_use]
    pub fn sniff(body: &[u8]) -> Option<Self> {
        match body.iter().find(|b| !b.is_ascii_whitespace() && **b != 0xEF && **b != 0xBB && **b != 0xBF)? {
            b'<' => Some(WireFormat::Xml),
            b'{' | b'[' => Some(WireFormat::Json),
            _ => None,
        }
    }
}

impl fmt::Display for WireFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for WireFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "json" => Ok(WireFormat::Json),
            "xml" => Ok(WireFormat::Xml),
            other => Err(format!("unknown wire format `{other}`: expected `json` or `xml`")),
        }
    }
}

/// A body that could not be decoded as a page.
#[derive(Debug, thiserror::Error)]
#[error("invalid {format} body ({reason}); body starts with: {snippet}")]
pub struct DecodeError {
    /// The format the body was decoded as.
    pub format: WireFormat,
    /// What the decoder said.
    pub reason: String,
    /// The first bytes of the body, printable characters only.
    pub snippet: String,
}

impl DecodeError {
    fn new(format: WireFormat, reason: impl fmt::Display, body: &[u8]) -> Self {
        DecodeError { format, reason: reason.to_string(), snippet: snippet(body) }
    }
}

/// A short, printable prefix of a body for error messages.
///
/// Bodies never carry credentials (they travel in the request's header, and
/// responses do not echo them), so a prefix is safe to show.
#[must_use]
pub fn snippet(body: &[u8]) -> String {
    const MAX: usize = 120;
    let text = String::from_utf8_lossy(&body[..body.len().min(MAX * 4)]);
    let mut out: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).take(MAX).collect();
    if text.chars().count() > MAX || body.len() > MAX * 4 {
        out.push('…');
    }
    if out.trim().is_empty() { "<empty>".to_owned() } else { out }
}

/// Decodes a 200 body as a page, in `format` or, when the body is clearly the
/// other format, in that one.
pub fn decode_page(body: &[u8], format: WireFormat) -> Result<CallPage, DecodeError> {
    // A UTF-8 byte-order mark is legal before JSON and XML alike, and PHP
    // files saved with one put it in every response.
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    match WireFormat::sniff(body).unwrap_or(format) {
        WireFormat::Json => decode_json(body),
        WireFormat::Xml => decode_xml(body),
    }
}

/// Decodes a JSON page.
pub fn decode_json(body: &[u8]) -> Result<CallPage, DecodeError> {
    #[derive(Deserialize)]
    struct Envelope {
        #[serde(default, deserialize_with = "lenient::calls")]
        calls: Vec<Call>,
        #[serde(default, deserialize_with = "lenient::opt_u64")]
        total_calls: Option<u64>,
        #[serde(default)]
        error: Option<serde_json::Value>,
    }
    let envelope: Envelope =
        serde_json::from_slice(body).map_err(|e| DecodeError::new(WireFormat::Json, e, body))?;
    finish(envelope.calls, envelope.total_calls, envelope.error.is_some(), WireFormat::Json, body)
}

/// Decodes an XML page (`<result><calls><item>…</item></calls><total_calls>N</total_calls></result>`).
///
/// XML has no types: every leaf is text, so leaves are read as strings and
/// parsed with the same tolerance as JSON's string-typed values.
pub fn decode_xml(body: &[u8]) -> Result<CallPage, DecodeError> {
    #[derive(Deserialize)]
    struct Item {
        #[serde(default)]
        dest: String,
        #[serde(default)]
        src: String,
        start: String,
        end: String,
        session_id: String,
        #[serde(rename = "type", default)]
        call_type: String,
        #[serde(default)]
        log: String,
    }
    // The vendor names each call `<item>`; any element name is accepted so
    // that a server naming them `<call>` still decodes.
    #[derive(Deserialize)]
    struct Items {
        #[serde(rename = "$value", default)]
        item: Vec<Item>,
    }
    #[derive(Deserialize)]
    struct Envelope {
        #[serde(default)]
        calls: Option<Items>,
        #[serde(default)]
        total_calls: Option<String>,
        #[serde(default)]
        error: Option<String>,
    }
    let fail = |reason: &dyn fmt::Display| DecodeError::new(WireFormat::Xml, reason, body);
    let text = std::str::from_utf8(body).map_err(|e| fail(&e))?;
    let envelope: Envelope = quick_xml::de::from_str(text).map_err(|e| fail(&e))?;
    let items = envelope.calls.map(|c| c.item).unwrap_or_default();
    let mut calls = Vec::with_capacity(items.len());
    for item in items {
        calls.push(Call {
            start: lenient::parse_i64(&item.start)
                .map_err(|e| fail(&format_args!("call {}: start: {e}", item.session_id)))?,
            end: lenient::parse_i64(&item.end)
                .map_err(|e| fail(&format_args!("call {}: end: {e}", item.session_id)))?,
            log: lenient::parse_bool(&item.log)
                .map_err(|e| fail(&format_args!("call {}: log: {e}", item.session_id)))?,
            call_type: crate::model::CallType::from_wire(item.call_type.trim()),
            dest: item.dest,
            src: item.src,
            session_id: item.session_id,
        });
    }
    let total_calls = match envelope.total_calls {
        Some(t) => Some(
            lenient::parse_i64(&t)
                .ok()
                .and_then(|v| u64::try_from(v).ok())
                .ok_or_else(|| fail(&format_args!("`total_calls` is not a count: {t:?}")))?,
        ),
        None => None,
    };
    finish(calls, total_calls, envelope.error.is_some(), WireFormat::Xml, body)
}

fn finish(
    calls: Vec<Call>,
    total_calls: Option<u64>,
    has_error: bool,
    format: WireFormat,
    body: &[u8],
) -> Result<CallPage, DecodeError> {
    match total_calls {
        Some(total_calls) => Ok(CallPage { calls, total_calls }),
        None if has_error => Err(DecodeError::new(format, "the body is an error, not a page", body)),
        None => Err(DecodeError::new(format, "`total_calls` is missing", body)),
    }
}

/// Pulls the `error` message out of a non-200 body, in either format.
///
/// Returns `None` when the body carries no recognisable message.
#[must_use]
pub fn error_message(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct ErrorBody {
        error: Option<serde_json::Value>,
        message: Option<String>,
    }
    #[derive(Deserialize)]
    struct XmlErrorBody {
        error: Option<String>,
        message: Option<String>,
    }
    let (error, message) = match WireFormat::sniff(body)? {
        WireFormat::Json => {
            let parsed: ErrorBody = serde_json::from_slice(body).ok()?;
            let error = parsed.error.map(|v| match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            });
            (error, parsed.message)
        }
        WireFormat::Xml => {
            let parsed: XmlErrorBody = quick_xml::de::from_str(std::str::from_utf8(body).ok()?).ok()?;
            (parsed.error, parsed.message)
        }
    };
    match (error, message) {
        (Some(e), Some(m)) if !m.is_empty() && m != e => Some(format!("{e}: {m}")),
        (Some(e), _) if !e.is_empty() => Some(e),
        (_, Some(m)) if !m.is_empty() => Some(m),
        _ => None,
    }
}

/// Deserializers that accept the loose typing of real servers.
pub(crate) mod lenient {
    use std::fmt;

    use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

    use crate::model::Call;

    /// An integer from text: `"42"`, `" 42 "`, or a whole `"42.0"`.
    pub(crate) fn parse_i64(v: &str) -> Result<i64, String> {
        let t = v.trim();
        t.parse::<i64>()
            .or_else(|_| t.parse::<f64>().map_err(|_| ()).and_then(|f| whole(f).map_err(|_| ())))
            .map_err(|()| format!("expected an integer, got {v:?}"))
    }

    /// A float that holds a whole number within the range of exact integers.
    fn whole(v: f64) -> Result<i64, String> {
        if v.fract() == 0.0 && v.abs() < 9.0e15 {
            #[allow(clippy::cast_possible_truncation, reason = "whole and within 2^53, so exact")]
            Ok(v as i64)
        } else {
            Err(format!("expected a whole number, got {v}"))
        }
    }

    /// A boolean from text: `true`/`false`, `1`/`0`, `yes`/`no`; empty is false.
    pub(crate) fn parse_bool(v: &str) -> Result<bool, String> {
        match v.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "y" | "t" => Ok(true),
            "false" | "0" | "no" | "n" | "f" | "" => Ok(false),
            _ => Err(format!("expected a boolean, got {v:?}")),
        }
    }

    struct IntVisitor;

    impl Visitor<'_> for IntVisitor {
        type Value = i64;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an integer or a string holding one")
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
            Ok(v)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
            i64::try_from(v).map_err(|_| E::custom(format!("integer {v} is out of range")))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<i64, E> {
            whole(v).map_err(E::custom)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<i64, E> {
            parse_i64(v).map_err(E::custom)
        }
    }

    pub(crate) fn i64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        d.deserialize_any(IntVisitor)
    }

    pub(crate) fn opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        let v = d.deserialize_any(IntVisitor)?;
        u64::try_from(v).map(Some).map_err(|_| de::Error::custom(format!("expected a count, got {v}")))
    }

    struct BoolVisitor;

    impl Visitor<'_> for BoolVisitor {
        type Value = bool;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a boolean, 0/1, or a string holding one")
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
            Ok(v)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<bool, E> {
            match v {
                0 => Ok(false),
                1 => Ok(true),
                _ => Err(E::custom(format!("expected 0 or 1, got {v}"))),
            }
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<bool, E> {
            self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
            parse_bool(v).map_err(E::custom)
        }
        fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
            Ok(false)
        }
    }

    pub(crate) fn bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
        d.deserialize_any(BoolVisitor)
    }

    struct StringVisitor;

    impl Visitor<'_> for StringVisitor {
        type Value = String;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string or a number")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_owned())
        }
        fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
            Ok(v)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_unit<E: de::Error>(self) -> Result<String, E> {
            Ok(String::new())
        }
    }

    pub(crate) fn string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        d.deserialize_any(StringVisitor)
    }

    struct CallsVisitor;

    impl<'de> Visitor<'de> for CallsVisitor {
        type Value = Vec<Call>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of calls")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Call>, A::Error> {
            let mut calls = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(10_000));
            while let Some(call) = seq.next_element()? {
                calls.push(call);
            }
            Ok(calls)
        }
        // PHP encodes a list whose keys are not 0..n as an object.
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<Call>, A::Error> {
            let mut calls = Vec::new();
            while let Some((_, call)) = map.next_entry::<de::IgnoredAny, Call>()? {
                calls.push(call);
            }
            Ok(calls)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Vec<Call>, E> {
            Ok(Vec::new())
        }
        // `"calls": ""` and `"calls": false` are what some PHP back ends send for nothing.
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<Call>, E> {
            if v.trim().is_empty() {
                Ok(Vec::new())
            } else {
                Err(E::custom(format!("expected a list of calls, got {v:?}")))
            }
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Vec<Call>, E> {
            if v { Err(E::custom("expected a list of calls, got true")) } else { Ok(Vec::new()) }
        }
    }

    pub(crate) fn calls<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Call>, D::Error> {
        d.deserialize_any(CallsVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::CallType;

    const VENDOR_JSON: &str = include_str!("../fixtures/vendor-sample.json");
    const VENDOR_XML: &str = include_str!("../fixtures/vendor-sample.xml");

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
}
