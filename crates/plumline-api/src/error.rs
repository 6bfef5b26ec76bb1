//! [`ApiError`]: everything that can go wrong talking to the API.

use std::time::Duration;

use crate::wire::DecodeError;

/// An error from the Get Call Logs API or the way to it.
///
/// Each variant says what to do about it, and [`ApiError::is_transient`]
/// says whether trying the same request again can help. No variant ever
/// carries the developer key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// 401 (or 403): wrong or inactive credentials.
    #[error(
        "the API refused the credentials (HTTP {status}{}): check the account email and \
         developer key; the account may be inactive or may not own the number",
        message.as_deref().map(|m| format!(": {m}")).unwrap_or_default()
    )]
    Unauthorized {
        /// 401 or 403.
        status: u16,
        /// The API's `error` message, if any.
        message: Option<String>,
    },
    /// 405: the server only accepts GET here; the base URL probably points
    /// at something that is not the calls endpoint.
    #[error(
        "the API answered 405 method not allowed: check that the base URL points at the Fuse API (e.g. https://fuse.plumvoice.com/api)"
    )]
    MethodNotAllowed,
    /// 429: throttled by the server.
    #[error("the API is rate limiting requests (HTTP 429){}: send fewer requests at once or cap the request rate",
        retry_after.map(|d| format!(", retry after {}s", d.as_secs())).unwrap_or_default())]
    RateLimited {
        /// What the server asked for in `Retry-After`.
        retry_after: Option<Duration>,
    },
    /// 5xx: the server failed (the vendor documents 500 "database error").
    #[error("the API failed with HTTP {status}{}; this is usually temporary, try again later",
        message.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Server {
        /// The HTTP status.
        status: u16,
        /// The API's `error` message, if any.
        message: Option<String>,
    },
    /// Any other non-200 status.
    #[error("the API answered HTTP {status}{}: check the base URL and query",
        message.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
    UnexpectedStatus {
        /// The HTTP status.
        status: u16,
        /// The API's `error` message, or a snippet of the body.
        message: Option<String>,
    },
    /// The request did not complete in time.
    #[error(
        "the request to the API timed out after {0:?}: the server may be overloaded; try a larger timeout or lower concurrency"
    )]
    Timeout(Duration),
    /// Connecting, sending, or reading the body failed.
    #[error("could not reach the API at {host}")]
    Transport {
        /// Host (and port) of the base URL.
        host: String,
        /// What the HTTP stack said.
        #[source]
        source: reqwest::Error,
    },
    /// A 200 answer whose body carries an `error` (e.g.
    /// `{"error":"database error","calls":[],"total_calls":0}`): the server
    /// failed, and the rest of the body is not data. Transient, like a 5xx.
    #[error(
        "the API answered HTTP {status} but reported an error: {message}; this is usually temporary, try again later"
    )]
    ServerReportedError {
        /// The HTTP status (200).
        status: u16,
        /// The server's `error` text (with its `message`, if any).
        message: String,
    },
    /// A 200 body that is not a page.
    #[error("the API sent a body that is not a call page")]
    Decode(#[from] DecodeError),
    /// The query itself is wrong; nothing was sent.
    #[error(transparent)]
    InvalidQuery(#[from] QueryError),
    /// The client configuration is wrong; nothing was sent.
    #[error("invalid client configuration")]
    InvalidConfig(#[from] ConfigError),
    /// Retries ran out; the last error is the source.
    #[error("gave up after {attempts} attempts over {elapsed:.1?}")]
    RetriesExhausted {
        /// How many requests were sent.
        attempts: u32,
        /// Time spent, including backoff.
        elapsed: Duration,
        /// The error of the last attempt.
        #[source]
        last: Box<ApiError>,
    },
}

/// Formats an error with its whole `source()` chain on one line
/// (`outer: inner: innermost`), for log fields.
#[must_use]
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        out.push_str(": ");
        out.push_str(&e.to_string());
        source = e.source();
    }
    out
}

impl ApiError {
    /// Whether the same request may succeed if tried again.
    ///
    /// True for 5xx, errors reported inside a 200, 429, timeouts, connection failures and bodies that were
    /// cut short or undecodable; false for credentials, 405, bad queries and
    /// exhausted retries.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        match self {
            ApiError::Server { .. }
            | ApiError::RateLimited { .. }
            | ApiError::Timeout(_)
            | ApiError::Transport { .. }
            | ApiError::ServerReportedError { .. }
            | ApiError::Decode(_) => true,
            // 408 Request Timeout and 425 Too Early invite a retry.
            ApiError::UnexpectedStatus { status, .. } => matches!(status, 408 | 425),
            ApiError::Unauthorized { .. }
            | ApiError::MethodNotAllowed
            | ApiError::InvalidQuery(_)
            | ApiError::InvalidConfig(_)
            | ApiError::RetriesExhausted { .. } => false,
        }
    }

    /// Whether this is (or, after retries, ended in) a credentials failure.
    #[must_use]
    pub fn is_unauthorized(&self) -> bool {
        match self {
            ApiError::Unauthorized { .. } => true,
            ApiError::RetriesExhausted { last, .. } => last.is_unauthorized(),
            _ => false,
        }
    }

    /// A short, stable label for metrics and logs (`unauthorized`, `server`, …).
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            ApiError::Unauthorized { .. } => "unauthorized",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::Server { .. } => "server_error",
            ApiError::UnexpectedStatus { .. } => "unexpected_status",
            ApiError::Timeout(_) => "timeout",
            ApiError::Transport { .. } => "transport",
            ApiError::ServerReportedError { .. } => "server_reported_error",
            ApiError::Decode(_) => "decode",
            ApiError::InvalidQuery(_) => "invalid_query",
            ApiError::InvalidConfig(_) => "invalid_config",
            ApiError::RetriesExhausted { last, .. } => last.kind(),
        }
    }

    /// How long the server asked us to wait, if it did.
    #[must_use]
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::RateLimited { retry_after } => *retry_after,
            _ => None,
        }
    }
}

/// Why a query or page request is not one the API accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// The window starts before 1970 (the API counts UNIX seconds).
    #[error("start {start} is before 1970")]
    BeforeEpoch {
        /// The start asked for.
        start: i64,
    },
    /// The window's start is after its end.
    #[error("start ({start}) is after end ({end}): swap them or widen the window")]
    Reversed {
        /// The start asked for.
        start: i64,
        /// The end asked for.
        end: i64,
    },
    /// A page size outside what the API accepts.
    #[error("page size {limit} is out of range: the API accepts 1 to {max}")]
    Limit {
        /// The page size asked for.
        limit: u32,
        /// The largest page size the API accepts.
        max: u32,
    },
}

/// What is wrong with a [`ClientBuilder`](crate::ClientBuilder)'s
/// configuration, by field. Messages name the setting, not how a program
/// lets its user set it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The account email (the Basic-auth user) is empty.
    #[error("the account email is empty")]
    EmptyEmail,
    /// The developer key (the Basic-auth password) is empty.
    #[error("the developer key is empty")]
    EmptyDeveloperKey,
    /// The base URL does not parse.
    #[error("base URL `{url}` is not a URL: expected e.g. {}", crate::DEFAULT_BASE_URL)]
    BaseUrlSyntax {
        /// The URL as given.
        url: String,
        /// What the parser said.
        #[source]
        source: url::ParseError,
    },
    /// The base URL carries a user or password; credentials have their own settings.
    #[error("the base URL must not carry credentials: give the email and developer key separately")]
    CredentialsInBaseUrl,
    /// Plain `http://` to a host that is not loopback, without opting in.
    #[error(
        "refusing plain http:// to {host}: credentials would cross the network unencrypted; use https:// or allow plain http explicitly"
    )]
    PlainHttp {
        /// The host of the base URL.
        host: String,
    },
    /// A scheme other than `https` (or `http`).
    #[error("base URL scheme `{scheme}` is not supported: use https://")]
    UnsupportedScheme {
        /// The scheme given.
        scheme: String,
    },
    /// The base URL has no host.
    #[error("base URL `{url}` has no host")]
    NoHost {
        /// The URL as given.
        url: String,
    },
    /// The base URL has a query or fragment, which paging would clobber.
    #[error("base URL `{url}` must not have a query or fragment")]
    QueryOrFragment {
        /// The URL as given.
        url: String,
    },
    /// The HTTP stack could not be built (e.g. no TLS backend).
    #[error("cannot build the HTTP client")]
    HttpClient(#[source] reqwest::Error),
}
