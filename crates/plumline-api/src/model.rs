//! The records the API returns: [`Call`], [`CallType`] and [`CallPage`].

use std::fmt;

use serde::Serialize;

/// One completed call, as the API describes it.
///
/// Deserializes (in `wire`) through the same rules as a page's calls.
/// Serializes with the API's own field names (`type`, not `call_type`), times
/// as integer UNIX seconds and `log` as a boolean, so the JSON a user sees is
/// the JSON the vendor documents.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Call {
    /// Destination phone number.
    pub dest: String,
    /// Source phone number; the literal `Outbound` for outbound calls.
    pub src: String,
    /// Start of the call, UNIX seconds.
    pub start: i64,
    /// End of the call, UNIX seconds.
    pub end: i64,
    /// Unique id of the call, e.g. `300060;001;1529552581`.
    pub session_id: String,
    /// Direction of the call.
    #[serde(rename = "type")]
    pub call_type: CallType,
    /// Whether a detailed call log exists for this call.
    pub log: bool,
}

impl Call {
    /// `end - start` in seconds; negative values from a broken upstream are
    /// passed through rather than hidden.
    #[must_use]
    pub fn duration_secs(&self) -> i64 {
        self.end - self.start
    }
}

/// The `type` of a call.
///
/// Values the vendor documents get their own variant; anything else is kept
/// verbatim in [`CallType::Other`] so a new upstream value never fails a
/// decode and is never silently renamed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CallType {
    /// `inbound`
    Inbound,
    /// `outbound`
    Outbound,
    /// `transfer`
    Transfer,
    /// Any other value, exactly as sent.
    Other(String),
}

impl CallType {
    /// The wire spelling of this type.
    #[must_use]
    pub fn as_str(&self) -> &str {
        match self {
            CallType::Inbound => "inbound",
            CallType::Outbound => "outbound",
            CallType::Transfer => "transfer",
            CallType::Other(other) => other,
        }
    }

    /// Parses the wire spelling; never fails.
    #[must_use]
    pub fn from_wire(value: &str) -> Self {
        match value {
            "inbound" => CallType::Inbound,
            "outbound" => CallType::Outbound,
            "transfer" => CallType::Transfer,
            other => CallType::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for CallType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for CallType {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// One page of a call-log query.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CallPage {
    /// The calls of this page, in the server's order.
    pub calls: Vec<Call>,
    /// The number of calls matching the whole query (not just this page).
    pub total_calls: u64,
}
