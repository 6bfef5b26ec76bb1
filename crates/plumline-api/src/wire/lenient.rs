//! Lenient scalars: the loose typing of real servers, for JSON and XML alike.
//!
//! Every deserializer here reads an optional value: absent (with
//! `#[serde(default)]`) and `null` are both `None`, so the one conversion in
//! [`super::raw`] decides, per field, what a missing value means. XML leaves
//! are text and arrive through `visit_str`, JSON values through their own
//! types; both end in the same parse.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::model::CallType;

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

/// The text of an XML leaf: quick-xml hands an element to `deserialize_any`
/// as a map holding its text under `$text`. An empty element is `None`.
fn leaf_text<'de, A: MapAccess<'de>>(mut map: A) -> Result<Option<String>, A::Error> {
    let mut text = None;
    while let Some(key) = map.next_key::<Key>()? {
        if key == Key::Text {
            text = map.next_value_seed(LeafSeed)?;
        } else {
            map.next_value::<de::IgnoredAny>()?;
        }
    }
    Ok(text)
}

/// A map key, told apart without allocating: a leaf's text (`$text` or
/// `$value`), `message`, or anything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Text,
    Message,
    Other,
}

impl<'de> de::Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(match v {
                    "$text" | "$value" => Key::Text,
                    "message" => Key::Message,
                    _ => Key::Other,
                })
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Key, E> {
                Ok(Key::Other)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Key, E> {
                Ok(Key::Other)
            }
        }
        d.deserialize_identifier(KeyVisitor)
    }
}

struct LeafSeed;

impl<'de> de::DeserializeSeed<'de> for LeafSeed {
    type Value = Option<String>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(StringVisitor)
    }
}

struct IntVisitor;

impl<'de> Visitor<'de> for IntVisitor {
    type Value = Option<i64>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an integer or a string holding one")
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Some(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        i64::try_from(v).map(Some).map_err(|_| E::custom(format!("integer {v} is out of range")))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        whole(v).map(Some).map_err(E::custom)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        parse_i64(v).map(Some).map_err(E::custom)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        match leaf_text(map)? {
            Some(text) => self.visit_str(&text),
            None => Ok(None),
        }
    }
}

/// An integer, or `None` for `null`.
pub(crate) fn opt_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    d.deserialize_any(IntVisitor)
}

/// A count (a non-negative integer), or `None` for `null`.
pub(crate) fn opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match d.deserialize_any(IntVisitor)? {
        None => Ok(None),
        Some(v) => {
            u64::try_from(v).map(Some).map_err(|_| de::Error::custom(format!("expected a count, got {v}")))
        }
    }
}

struct BoolVisitor;

impl<'de> Visitor<'de> for BoolVisitor {
    type Value = Option<bool>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a boolean, 0/1, or a string holding one")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Some(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        match v {
            0 => Ok(Some(false)),
            1 => Ok(Some(true)),
            _ => Err(E::custom(format!("expected 0 or 1, got {v}"))),
        }
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        parse_bool(v).map(Some).map_err(E::custom)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        match leaf_text(map)? {
            Some(text) => self.visit_str(&text),
            None => Ok(None),
        }
    }
}

/// A boolean, or `None` for `null`.
pub(crate) fn opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    d.deserialize_any(BoolVisitor)
}

struct StringVisitor;

impl<'de> Visitor<'de> for StringVisitor {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or a number")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Some(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Some(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Some(v.to_string()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Some(v.to_string()))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        match leaf_text(map)? {
            Some(text) => self.visit_str(&text),
            None => Ok(None),
        }
    }
}

/// A string (numbers are kept as their digits), or `None` for `null`.
pub(crate) fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    d.deserialize_any(StringVisitor)
}

struct CallTypeVisitor;

impl<'de> Visitor<'de> for CallTypeVisitor {
    type Value = Option<CallType>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a call type")
    }
    // Known types allocate nothing; others are kept verbatim (trimmed).
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Some(CallType::from_wire(v.trim())))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Some(CallType::Other(v.to_string())))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Some(CallType::Other(v.to_string())))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        match leaf_text(map)? {
            Some(text) => self.visit_str(&text),
            None => Ok(None),
        }
    }
}

/// A call `type`, or `None` for `null`.
pub(crate) fn opt_call_type<'de, D: Deserializer<'de>>(d: D) -> Result<Option<CallType>, D::Error> {
    d.deserialize_any(CallTypeVisitor)
}

struct ErrorVisitor;

impl<'de> Visitor<'de> for ErrorVisitor {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an error message")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        let v = v.trim();
        Ok((!v.is_empty()).then(|| v.to_owned()))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(v.then(|| "true".to_owned()))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Some(v.to_string()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Some(v.to_string()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Some(v.to_string()))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
    // `{"error":{"code":5,"message":"…"}}`: the `message` if there is one.
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        // An XML element's text arrives as `$text`; an empty element (or
        // `{}`) has no keys at all and is no error.
        let (mut message, mut other_keys) = (None, false);
        while let Some(key) = map.next_key::<Key>()? {
            if key == Key::Other {
                other_keys = true;
                map.next_value::<de::IgnoredAny>()?;
            } else {
                message = map.next_value_seed(OptStringSeed)?;
            }
        }
        Ok(message.or_else(|| other_keys.then(|| "an error object without a message".to_owned())))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut parts = Vec::new();
        while let Some(part) = seq.next_element_seed(OptStringSeed)? {
            parts.extend(part);
        }
        Ok((!parts.is_empty()).then(|| parts.join("; ")))
    }
}

struct OptStringSeed;

impl<'de> de::DeserializeSeed<'de> for OptStringSeed {
    type Value = Option<String>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        // Nested values of any shape: keep strings and numbers, skip the rest.
        d.deserialize_any(ErrorVisitor)
    }
}

/// The `error` field: `None` when absent, `null`, `false` or blank, so an
/// empty error is not an error; otherwise the server's text.
pub(crate) fn opt_error<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    d.deserialize_any(ErrorVisitor)
}
