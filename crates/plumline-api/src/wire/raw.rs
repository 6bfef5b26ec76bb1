//! The one raw shape of a call and of a page, shared by JSON and XML, and
//! the one conversion from it to the model.
//!
//! Both formats deserialize each call into [`RawCall`] (every field
//! optional, scalars lenient) and convert it at once, element by element
//! (no intermediate list); only the container of the calls differs (a JSON
//! list or PHP-style object, an XML element of `<item>`s).
//! [`RawCall::into_call`] decides, per field and for both formats at once,
//! what a missing value means:
//!
//! | field | missing or `null` |
//! |---|---|
//! | `session_id`, `start`, `end` | an error: the call's identity and its day |
//! | `dest`, `src` | `""` (the lake keeps what was sent) |
//! | `type` | `CallType::Other("")`, kept like any other unknown type |
//! | `log` | `false`: no detailed log was announced |

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

use super::lenient;
use crate::model::{Call, CallType};

/// One call as sent, before any field is required.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawCall {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    dest: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    src: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    start: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    end: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    session_id: Option<String>,
    #[serde(rename = "type", default, deserialize_with = "lenient::opt_call_type")]
    call_type: Option<CallType>,
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    log: Option<bool>,
}

impl RawCall {
    /// The one conversion: applies the table in the module docs.
    pub(crate) fn into_call(self) -> Result<Call, String> {
        let Some(session_id) = self.session_id else {
            return Err("a call has no `session_id`".to_owned());
        };
        let required = |value: Option<i64>, name: &str| {
            value.ok_or_else(|| format!("call {session_id}: `{name}` is missing"))
        };
        let start = required(self.start, "start")?;
        let end = required(self.end, "end")?;
        Ok(Call {
            dest: self.dest.unwrap_or_default(),
            src: self.src.unwrap_or_default(),
            start,
            end,
            call_type: self.call_type.unwrap_or_else(|| CallType::Other(String::new())),
            log: self.log.unwrap_or(false),
            session_id,
        })
    }
}

/// A page as sent: calls, `total_calls` and `error`, each optional.
#[derive(Debug, Default)]
pub(crate) struct RawPage {
    pub(crate) calls: Vec<Call>,
    pub(crate) total_calls: Option<u64>,
    pub(crate) error: Option<String>,
    pub(crate) message: Option<String>,
}

/// The JSON envelope.
#[derive(Deserialize)]
struct JsonEnvelope {
    #[serde(default, deserialize_with = "json_calls")]
    calls: Vec<Call>,
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    total_calls: Option<u64>,
    #[serde(default, deserialize_with = "lenient::opt_error")]
    error: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_error")]
    message: Option<String>,
}

/// `<calls>`: any element name per call (the vendor's `<item>`, or `<call>`).
#[derive(Deserialize)]
struct XmlCalls {
    #[serde(rename = "$value", default)]
    item: Vec<Call>,
}

/// The XML envelope (`<result>…</result>`).
#[derive(Deserialize)]
struct XmlEnvelope {
    #[serde(default)]
    calls: Option<XmlCalls>,
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    total_calls: Option<u64>,
    #[serde(default, deserialize_with = "lenient::opt_error")]
    error: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_error")]
    message: Option<String>,
}

pub(crate) fn json_page(body: &[u8]) -> Result<RawPage, serde_json::Error> {
    let e: JsonEnvelope = serde_json::from_slice(body)?;
    Ok(RawPage { calls: e.calls, total_calls: e.total_calls, error: e.error, message: e.message })
}

pub(crate) fn xml_page(text: &str) -> Result<RawPage, quick_xml::DeError> {
    let e: XmlEnvelope = quick_xml::de::from_str(text)?;
    Ok(RawPage {
        calls: e.calls.map(|c| c.item).unwrap_or_default(),
        total_calls: e.total_calls,
        error: e.error,
        message: e.message,
    })
}

struct CallsVisitor;

impl<'de> Visitor<'de> for CallsVisitor {
    type Value = Vec<Call>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of calls")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut calls = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(10_000));
        while let Some(call) = seq.next_element()? {
            calls.push(call);
        }
        Ok(calls)
    }
    // PHP encodes a list whose keys are not 0..n as an object.
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut calls = Vec::new();
        while let Some((_, call)) = map.next_entry::<de::IgnoredAny, Call>()? {
            calls.push(call);
        }
        Ok(calls)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }
    // `"calls": ""` and `"calls": false` are what some PHP back ends send for nothing.
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        if v.trim().is_empty() {
            Ok(Vec::new())
        } else {
            Err(E::custom(format!("expected a list of calls, got {v:?}")))
        }
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        if v { Err(E::custom("expected a list of calls, got true")) } else { Ok(Vec::new()) }
    }
}

fn json_calls<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Call>, D::Error> {
    d.deserialize_any(CallsVisitor)
}

/// A [`Call`] deserializes through the same raw shape and conversion as a
/// page's calls, so it accepts exactly what the decoders accept.
impl<'de> Deserialize<'de> for Call {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        RawCall::deserialize(deserializer)?.into_call().map_err(de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for CallType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(lenient::opt_call_type(deserializer)?.unwrap_or_else(|| CallType::Other(String::new())))
    }
}
