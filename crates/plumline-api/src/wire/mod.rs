//! Decoding the API's JSON and XML bodies.
//!
//! Servers of this family are loose about types: numbers arrive as strings
//! (`"start":"1575898386"`), booleans as `"true"` or `1`, `calls` may be
//! missing when `total_calls` is 0, and PHP back ends sometimes encode a list
//! as an object keyed by index. Every one of those is accepted here; anything
//! that is not a page at all becomes a [`DecodeError`], and a body that
//! carries an `error` is [`Answer::Error`], never a page.
//!
//! JSON and XML decode into one raw shape and go through one conversion
//! (`raw`), so both formats agree on what a missing field means; the scalar
//! rules live in `lenient`.

use std::fmt;
use std::str::FromStr;

use crate::model::CallPage;

mod lenient;
mod raw;

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

/// What a 200 body says: a page, or an error the server reported inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A page of calls.
    Page(CallPage),
    /// The body carries a non-empty `error` (e.g. `{"error":"database
    /// error","calls":[],"total_calls":0}`): the server failed, whatever the
    /// rest of the body says. Holds the server's text (with its `message`,
    /// if it sent one).
    Error(String),
}

/// Decodes a 200 body, in `format` or, when the body is clearly the other
/// format, in that one.
///
/// An `error` field that is absent, `null`, `false` or blank is no error.
pub fn decode_answer(body: &[u8], format: WireFormat) -> Result<Answer, DecodeError> {
    // A UTF-8 byte-order mark is legal before JSON and XML alike, and PHP
    // files saved with one put it in every response.
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let format = WireFormat::sniff(body).unwrap_or(format);
    let fail = |reason: &dyn fmt::Display| DecodeError::new(format, reason, body);
    let raw = match format {
        WireFormat::Json => raw::json_page(body).map_err(|e| fail(&e))?,
        WireFormat::Xml => {
            let text = std::str::from_utf8(body).map_err(|e| fail(&e))?;
            raw::xml_page(text).map_err(|e| fail(&e))?
        }
    };
    if let Some(error) = raw.error {
        return Ok(Answer::Error(compose_message(Some(error), raw.message).unwrap_or_default()));
    }
    let total_calls = raw.total_calls.ok_or_else(|| fail(&"`total_calls` is missing"))?;
    Ok(Answer::Page(CallPage { calls: raw.calls, total_calls }))
}

/// Decodes a 200 body as a page; a body carrying an `error` is a
/// [`DecodeError`] here ([`decode_answer`] tells the two apart).
pub fn decode_page(body: &[u8], format: WireFormat) -> Result<CallPage, DecodeError> {
    match decode_answer(body, format)? {
        Answer::Page(page) => Ok(page),
        Answer::Error(message) => {
            Err(DecodeError::new(format, format_args!("the body is an error, not a page: {message}"), body))
        }
    }
}

/// Decodes a JSON page.
pub fn decode_json(body: &[u8]) -> Result<CallPage, DecodeError> {
    decode_page(body, WireFormat::Json)
}

/// Decodes an XML page (`<result><calls><item>…</item></calls><total_calls>N</total_calls></result>`).
///
/// XML has no types: every leaf is text, parsed with the same rules as
/// JSON's string-typed values.
pub fn decode_xml(body: &[u8]) -> Result<CallPage, DecodeError> {
    decode_page(body, WireFormat::Xml)
}

/// `error` and `message` as one text: `error: message` when both say something different.
fn compose_message(error: Option<String>, message: Option<String>) -> Option<String> {
    match (error, message) {
        (Some(e), Some(m)) if !m.is_empty() && m != e => Some(format!("{e}: {m}")),
        (Some(e), _) if !e.is_empty() => Some(e),
        (_, Some(m)) if !m.is_empty() => Some(m),
        _ => None,
    }
}

/// Pulls the `error` message out of a non-200 body, in either format.
///
/// Returns `None` when the body carries no recognisable message.
#[must_use]
pub fn error_message(body: &[u8]) -> Option<String> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let raw = match WireFormat::sniff(body)? {
        WireFormat::Json => raw::json_page(body).ok()?,
        WireFormat::Xml => raw::xml_page(std::str::from_utf8(body).ok()?).ok()?,
    };
    compose_message(raw.error, raw.message)
}

#[cfg(test)]
mod tests;
