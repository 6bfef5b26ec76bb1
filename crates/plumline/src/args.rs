//! Flags shared by the subcommands that talk to the API.

use std::num::NonZeroU32;
use std::time::Duration;

use anyhow::Context as _;
use plumline_api::{ApiError, Client, ConfigError, Credentials, DEFAULT_BASE_URL, RetryPolicy, WireFormat};

/// Where the API is and who we are to it.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "API")]
pub struct ApiArgs {
    /// Base URL of the Fuse API.
    #[arg(long, env = "PLUM_BASE_URL", default_value = DEFAULT_BASE_URL, value_name = "URL")]
    pub base_url: String,

    /// Fuse account email (HTTP Basic user).
    #[arg(long, env = "PLUM_EMAIL", value_name = "EMAIL")]
    pub email: Option<String>,

    /// Developer key from Account Settings (HTTP Basic password); prefer the
    /// environment variable so the key stays out of shell history.
    #[arg(long, env = "PLUM_DEVELOPER_KEY", hide_env_values = true, value_name = "KEY")]
    pub developer_key: Option<String>,

    /// Body format asked of the API.
    #[arg(long, env = "PLUM_WIRE_FORMAT", default_value = "json", value_name = "json|xml")]
    pub wire_format: WireFormat,

    /// Allow plain http:// to a host that is not loopback (credentials travel unencrypted).
    #[arg(long)]
    pub allow_http: bool,

    /// Timeout of one API request, body included (e.g. 30s, 2m).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub request_timeout: Duration,

    /// Attempts per page, including the first; transient errors (5xx, 429, resets, timeouts) are retried with backoff.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=100), value_name = "N")]
    pub max_attempts: u32,

    /// Cap on API requests per second (default: no cap).
    #[arg(long, env = "PLUM_MAX_RPS", value_name = "N")]
    pub max_rps: Option<NonZeroU32>,
}

impl ApiArgs {
    /// Credentials from flags or environment, with an error that says how to set them.
    pub fn credentials(&self) -> anyhow::Result<Credentials> {
        let email = self.email.as_deref().map(str::trim).filter(|e| !e.is_empty()).context(
            "no account email: pass --email or set PLUM_EMAIL (try `plumline demo` to run without an account)",
        )?;
        let key = self.developer_key.as_deref().filter(|k| !k.is_empty()).context(
            "no developer key: set PLUM_DEVELOPER_KEY (or pass --developer-key); find it in Fuse under Account Settings",
        )?;
        Ok(Credentials::new(email, key))
    }

    /// A client configured from these flags.
    pub fn client(&self) -> anyhow::Result<Client> {
        let retry = RetryPolicy { max_attempts: self.max_attempts, ..RetryPolicy::default() };
        Ok(Client::builder(&self.base_url, self.credentials()?)
            .wire_format(self.wire_format)
            .allow_http(self.allow_http)
            .request_timeout(self.request_timeout)
            .retry_policy(retry)
            .requests_per_second(self.max_rps)
            .build()?)
    }
}

/// What the user can do about an API error, in this CLI's flags: the
/// library's errors name settings, the CLI names the flags that set them.
/// Empty when no flag helps.
pub fn flag_hint(error: &ApiError) -> &'static str {
    match error {
        ApiError::InvalidConfig(ConfigError::PlainHttp { .. }) => " (pass --allow-http to allow it)",
        ApiError::InvalidConfig(ConfigError::CredentialsInBaseUrl) => {
            " (pass --email and --developer-key, or PLUM_EMAIL and PLUM_DEVELOPER_KEY, instead)"
        }
        ApiError::InvalidConfig(ConfigError::EmptyEmail) => " (set --email or PLUM_EMAIL)",
        ApiError::InvalidConfig(ConfigError::EmptyDeveloperKey) => {
            " (set PLUM_DEVELOPER_KEY or pass --developer-key)"
        }
        ApiError::Unauthorized { .. } => {
            " (check --email / PLUM_EMAIL and --developer-key / PLUM_DEVELOPER_KEY)"
        }
        ApiError::RateLimited { .. } => " (lower --concurrency or set --max-rps)",
        ApiError::Timeout(_) => " (raise --request-timeout or lower --concurrency)",
        ApiError::RetriesExhausted { last, .. } => flag_hint(last),
        _ => "",
    }
}

/// The flag that changes what an export error is about, as a hint; the
/// library names no flags.
pub fn export_hint(error: &plumline_export::ExportError) -> &'static str {
    use plumline_export::{ExportError, PlanError};
    match error {
        ExportError::WouldShrink { .. } => " (pass --allow-shrink to replace it)",
        ExportError::InvalidDestination(_) => " (check --out)",
        ExportError::InvalidPlan(plan) => match plan {
            PlanError::BlankNumber | PlanError::RepeatedNumber { .. } => " (check --number)",
            PlanError::BeforeEpoch { .. }
            | PlanError::EmptyRange { .. }
            | PlanError::OutsideCalendar { .. } => " (check --start, --end and --tz)",
            _ => " (check --start, --end, --tz and --number)",
        },
        ExportError::TimeZoneMismatch { .. } => " (pass --tz with the lake's zone, or another --out)",
        ExportError::ClaimHeld { .. } => " (or raise --claim-wait)",
        ExportError::Inconsistent { .. } => " (or lower --page-size)",
        ExportError::DaysFailed { failures, .. } => {
            failures.iter().map(export_hint).find(|h| !h.is_empty()).unwrap_or("")
        }
        ExportError::Api { source, .. } => flag_hint(source),
        _ => "",
    }
}

/// The flag hint for the first API or export error in `error`'s chain, if any.
pub fn chain_hint(error: &anyhow::Error) -> &'static str {
    error
        .chain()
        .find_map(|e| {
            e.downcast_ref::<plumline_export::ExportError>()
                .map(export_hint)
                .or_else(|| e.downcast_ref::<ApiError>().map(flag_hint))
        })
        .unwrap_or("")
}

#[cfg(test)]
mod tests {
    use plumline_export::{DestinationError, ExportError, PlanError};

    use super::*;

    #[test]
    fn library_errors_get_the_flags_that_change_them() {
        let day = "2025-01-05".parse().expect("date");
        let shrink = || ExportError::WouldShrink { day, number: None, current: 10, new: 5 };
        let failed = ExportError::DaysFailed { failures: vec![shrink()], summary: Box::default() };
        let cases: Vec<(anyhow::Error, &str)> = vec![
            (anyhow::Error::new(shrink()).context("export stopped"), "--allow-shrink"),
            (anyhow::Error::new(failed).context("export stopped"), "--allow-shrink"),
            (anyhow::Error::new(ExportError::from(DestinationError::Empty)), "--out"),
            (anyhow::Error::new(ExportError::from(PlanError::BlankNumber)), "--number"),
            (anyhow::Error::new(ExportError::from(PlanError::EmptyRange { start: 1, end: 0 })), "--start"),
            (anyhow::Error::new(ApiError::Unauthorized { status: 401, message: None }), "--email"),
            (anyhow::anyhow!("something else"), ""),
        ];
        for (error, flag) in cases {
            let hint = chain_hint(&error);
            assert!(
                if flag.is_empty() { hint.is_empty() } else { hint.contains(flag) },
                "{error:#}: {hint:?}"
            );
        }
    }
}
