//! [`Client`]: the HTTP client for the calls endpoint.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, RETRY_AFTER};
use tracing::{Instrument, debug, debug_span, warn};
use url::Url;

use crate::PageSource;
use crate::error::{ApiError, ConfigError};
use crate::model::CallPage;
use crate::query::PageRequest;
use crate::retry::RetryPolicy;
use crate::secret::Credentials;
use crate::wire::{self, Answer, WireFormat};

/// The vendor's production base URL.
pub const DEFAULT_BASE_URL: &str = "https://fuse.plumvoice.com/api";

/// Builds a [`Client`]. Only the base URL and credentials are required.
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    base_url: String,
    credentials: Credentials,
    wire_format: WireFormat,
    connect_timeout: Duration,
    request_timeout: Duration,
    user_agent: String,
    retry: RetryPolicy,
    allow_http: bool,
    requests_per_second: Option<NonZeroU32>,
}

impl ClientBuilder {
    /// JSON (default) or XML bodies.
    #[must_use]
    pub fn wire_format(mut self, format: WireFormat) -> Self {
        self.wire_format = format;
        self
    }

    /// Time allowed to open a connection (default 10 s).
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Time allowed for one whole request, body included (default 60 s).
    #[must_use]
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The `User-Agent` header (default `plumline/<version>`).
    #[must_use]
    pub fn user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = user_agent.into();
        self
    }

    /// How transient failures are retried.
    #[must_use]
    pub fn retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Accept plain `http://` for hosts that are not loopback.
    #[must_use]
    pub fn allow_http(mut self, allow: bool) -> Self {
        self.allow_http = allow;
        self
    }

    /// Cap requests per second across all clones of the client.
    #[must_use]
    pub fn requests_per_second(mut self, rps: Option<NonZeroU32>) -> Self {
        self.requests_per_second = rps;
        self
    }

    /// Validates the configuration and builds the client.
    pub fn build(self) -> Result<Client, ApiError> {
        let base = parse_base_url(&self.base_url, self.allow_http)?;
        if self.credentials.email.trim().is_empty() {
            return Err(ConfigError::EmptyEmail.into());
        }
        if self.credentials.developer_key.expose().is_empty() {
            return Err(ConfigError::EmptyDeveloperKey.into());
        }
        let http = reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            .timeout(self.request_timeout)
            .user_agent(self.user_agent)
            .pool_max_idle_per_host(64)
            .build()
            .map_err(ConfigError::HttpClient)?;
        let host = match (base.host_str(), base.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            _ => base.as_str().to_owned(),
        };
        let limiter = self.requests_per_second.map(|rps| RateLimiter::direct(Quota::per_second(rps)));
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                base,
                host,
                credentials: self.credentials,
                wire_format: self.wire_format,
                request_timeout: self.request_timeout,
                retry: self.retry,
                limiter,
            }),
        })
    }
}

/// A client for `GET {base}/calls/{start}/{end}`.
///
/// Cheap to clone: clones share the connection pool and the request budget.
/// Every request carries HTTP Basic auth; the key is never logged.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    base: Url,
    host: String,
    credentials: Credentials,
    wire_format: WireFormat,
    request_timeout: Duration,
    retry: RetryPolicy,
    limiter: Option<DefaultDirectRateLimiter>,
}

impl Client {
    /// Starts building a client for `base_url` (e.g. [`DEFAULT_BASE_URL`]).
    #[must_use]
    pub fn builder(base_url: impl Into<String>, credentials: Credentials) -> ClientBuilder {
        ClientBuilder {
            base_url: base_url.into(),
            credentials,
            wire_format: WireFormat::Json,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            user_agent: concat!("plumline/", env!("CARGO_PKG_VERSION")).to_owned(),
            retry: RetryPolicy::default(),
            allow_http: false,
            requests_per_second: None,
        }
    }

    /// The base URL requests go to.
    #[must_use]
    pub fn base_url(&self) -> &Url {
        &self.inner.base
    }

    /// The wire format asked for.
    #[must_use]
    pub fn wire_format(&self) -> WireFormat {
        self.inner.wire_format
    }

    /// The URL of one page.
    #[must_use]
    pub fn page_url(&self, request: &PageRequest) -> Url {
        let mut url = self.inner.base.clone();
        let query = request.query();
        // `parse_base_url` rejected cannot-be-a-base URLs, so this always applies.
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().extend(["calls", &query.start().to_string(), &query.end().to_string()]);
        }
        {
            let mut pairs = url.query_pairs_mut();
            if let Some(number) = query.number() {
                pairs.append_pair("number", number);
            }
            pairs.append_pair("limit", &request.limit().to_string());
            pairs.append_pair("offset", &request.offset().to_string());
        }
        url
    }

    /// Fetches one page, retrying transient failures per the retry policy.
    ///
    /// # Errors
    /// The first permanent error, or [`ApiError::RetriesExhausted`] holding
    /// the last transient one.
    ///
    /// # Cancel safety
    /// Dropping the future abandons the request and any pending backoff.
    pub async fn fetch_page(&self, request: &PageRequest) -> Result<CallPage, ApiError> {
        let policy = &self.inner.retry;
        let started = Instant::now();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let span = debug_span!("fetch_page", offset = request.offset(), limit = request.limit(), attempt);
            match self.fetch_page_once(request).instrument(span).await {
                Ok(page) => return Ok(page),
                Err(error) if !error.is_transient() => return Err(error),
                Err(error) => {
                    let elapsed = started.elapsed();
                    let delay = policy.backoff(attempt, error.retry_after());
                    if attempt >= policy.max_attempts || elapsed + delay > policy.max_elapsed {
                        return Err(if attempt == 1 {
                            error
                        } else {
                            ApiError::RetriesExhausted { attempts: attempt, elapsed, last: Box::new(error) }
                        });
                    }
                    warn!(
                        offset = request.offset(),
                        attempt,
                        delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        error = %crate::error::error_chain(&error),
                        "transient API error, retrying"
                    );
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// One attempt, no retries.
    ///
    /// # Cancel safety
    /// Dropping the future abandons the request.
    pub async fn fetch_page_once(&self, request: &PageRequest) -> Result<CallPage, ApiError> {
        let inner = &self.inner;
        if let Some(limiter) = &inner.limiter {
            limiter.until_ready().await;
        }
        let url = self.page_url(request);
        let response = inner
            .http
            .get(url)
            .basic_auth(&inner.credentials.email, Some(inner.credentials.developer_key.expose()))
            .header(ACCEPT, inner.wire_format.media_type())
            .send()
            .await
            .map_err(|e| self.transport_error(e))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = response.bytes().await.map_err(|e| self.transport_error(e))?;
        debug!(status = status.as_u16(), bytes = body.len(), "response");
        if status == StatusCode::OK {
            return match wire::decode_answer(&body, inner.wire_format)? {
                Answer::Page(page) => Ok(page),
                Answer::Error(message) => {
                    debug!(status = status.as_u16(), message = %message, "error inside a 200");
                    Err(ApiError::ServerReportedError { status: status.as_u16(), message })
                }
            };
        }
        let message = wire::error_message(&body);
        Err(match status.as_u16() {
            401 | 403 => ApiError::Unauthorized { status: status.as_u16(), message },
            405 => ApiError::MethodNotAllowed,
            429 => ApiError::RateLimited { retry_after },
            code @ 500..=599 => ApiError::Server { status: code, message },
            code => ApiError::UnexpectedStatus {
                status: code,
                message: message.or_else(|| (!body.is_empty()).then(|| wire::snippet(&body))),
            },
        })
    }

    fn transport_error(&self, error: reqwest::Error) -> ApiError {
        if error.is_timeout() {
            ApiError::Timeout(self.inner.request_timeout)
        } else {
            // The URL holds only the window and paging; credentials travel in a header.
            ApiError::Transport { host: self.inner.host.clone(), source: error.without_url() }
        }
    }
}

impl PageSource for Client {
    fn fetch_page(&self, request: &PageRequest) -> impl Future<Output = Result<CallPage, ApiError>> + Send {
        Client::fetch_page(self, request)
    }
}

/// Whether `url`'s host is loopback (`localhost`, 127.0.0.0/8, `::1`).
#[must_use]
pub fn is_loopback_url(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => {
            d.eq_ignore_ascii_case("localhost") || d.to_ascii_lowercase().ends_with(".localhost")
        }
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

fn parse_base_url(raw: &str, allow_http: bool) -> Result<Url, ConfigError> {
    let url = Url::parse(raw.trim())
        .map_err(|source| ConfigError::BaseUrlSyntax { url: raw.to_owned(), source })?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ConfigError::CredentialsInBaseUrl);
    }
    match url.scheme() {
        "https" => {}
        "http" if allow_http || is_loopback_url(&url) => {}
        "http" => return Err(ConfigError::PlainHttp { host: url.host_str().unwrap_or("?").to_owned() }),
        other => return Err(ConfigError::UnsupportedScheme { scheme: other.to_owned() }),
    }
    if url.cannot_be_a_base() || url.host().is_none() {
        return Err(ConfigError::NoHost { url: raw.to_owned() });
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ConfigError::QueryOrFragment { url: raw.to_owned() });
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::CallQuery;

    fn client(base: &str, allow_http: bool) -> Result<Client, ApiError> {
        Client::builder(base, Credentials::new("a@b.c", "k")).allow_http(allow_http).build()
    }

    #[test]
    fn base_urls_are_checked() {
        let cases = [
            ("https://fuse.plumvoice.com/api", false, None),
            ("http://127.0.0.1:8080/api", false, None),
            ("http://localhost:1/", false, None),
            ("http://[::1]:1/api", false, None),
            ("http://example.com/api", false, Some("allow plain http")),
            ("http://example.com/api", true, None),
            ("ftp://example.com/", false, Some("not supported")),
            ("not a url", false, Some("is not a URL")),
            ("https://u:p@example.com/", false, Some("must not carry credentials")),
        ];
        for (url, allow, want) in cases {
            match (client(url, allow), want) {
                (Ok(_), None) => {}
                (Err(e), Some(needle)) => {
                    let chain = crate::error_chain(&e);
                    assert!(chain.contains(needle), "{url}: {chain}");
                }
                (Ok(_), Some(n)) => panic!("{url} accepted, wanted error containing {n}"),
                (Err(e), None) => panic!("{url} refused: {e}"),
            }
        }
    }

    #[test]
    fn page_urls() {
        let q = CallQuery::new(100, 200).expect("valid").with_number(Some("6177123000".into()));
        for base in ["https://h/api", "https://h/api/"] {
            let c = client(base, false).expect("valid");
            let url = c.page_url(&q.page(50, 150).expect("valid"));
            assert_eq!(url.as_str(), "https://h/api/calls/100/200?number=6177123000&limit=50&offset=150");
        }
    }

    #[test]
    fn missing_credentials_are_config_errors() {
        let err =
            Client::builder(DEFAULT_BASE_URL, Credentials::new("", "k")).build().expect_err("empty email");
        assert!(matches!(err, ApiError::InvalidConfig(ConfigError::EmptyEmail)), "{err:?}");
        let err =
            Client::builder(DEFAULT_BASE_URL, Credentials::new("a@b", "")).build().expect_err("empty key");
        assert!(matches!(err, ApiError::InvalidConfig(ConfigError::EmptyDeveloperKey)), "{err:?}");
        // Library errors name the setting, never a CLI flag or variable.
        for err in [err, ApiError::RateLimited { retry_after: None }] {
            let chain = crate::error_chain(&err);
            assert!(!chain.contains("--") && !chain.contains("PLUM_"), "{chain}");
        }
    }
}
