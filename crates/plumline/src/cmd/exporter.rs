//! `plumline exporter`: serve Prometheus metrics of call counts and durations.

#![allow(clippy::print_stdout, reason = "the CLI prints where the metrics are served")]

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use plumline_api::PageSize;
use plumline_metrics::{
    BasicAuth, DEFAULT_NO_CALLS_ALERT_AFTER, Metrics, MetricsError, MetricsServer, NoCallsAlertConfig,
    Poller, PollerConfig, TlsConfig, run_exporter,
};

use crate::args::ApiArgs;

/// The default `--listen`: loopback only, so nothing is exposed until the
/// operator says so. The port sits in the exporter range (9100-9999, which
/// Prometheus' wiki has fully allocated, so any pick may be another
/// exporter's registration; override it with --listen).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9877";

/// The environment variable holding the basic-auth password.
pub const PASSWORD_ENV: &str = "PLUMLINE_EXPORTER_PASSWORD";

const AFTER_HELP: &str = "\
Labels: plum_fuse_calls_total and plum_fuse_call_duration_seconds carry `number` and
`direction` (the call's type). With --number, each number is polled on its own and is
its `number` label. Without, one query covers the whole account and `number` is the
deployment number of each inbound call (its dest); outbound and transfer calls name
outside parties, not the deployment, so they get number=\"unknown\": pass --number to
attribute them.

Values: the call families count the calls that ended since 00:00 UTC today, as the API
lists them, and reset at each UTC midnight, so a restarted exporter and a replica report
the same values (within one interval). Query them with increase() or rate() (which handle
the daily reset) and max by (number, direction) across replicas. On start the exporter
backfills from 00:00 UTC (progress in the log); until that is done it publishes no call
samples and plum_fuse_up is 0. Then every configured number has a series per direction,
0 until calls come. (This replaces the former --lookback.)

Counting: the API lists a call only once it has ended, but by its start, so every
--interval the exporter looks at each number from its last poll minus --max-call-duration
up to now, fetches only what is new there (cheap limit=1 counts, then only the small
windows whose count grew) and counts each call once (by session_id). Calls longer than
--max-call-duration are missed; its default is the export's --settle default, the longest
call expected. A call that ends just before midnight but is listed only after the last
poll of that day is not counted (it belongs to a day already reset). Figures lag by up
to one interval.

No calls: per number, plum_fuse_last_call_end_timestamp_seconds is the end of the latest
call counted since 00:00 UTC today (or that 00:00 UTC if none yet), and
plum_fuse_no_calls_alert_after_seconds is the window from --no-calls-alert-after (default
2h; NUMBER=DURATION overrides it for one number, repeatable). The PlumFuseNoCalls rule in
deploy/prometheus/alerts.yml fires when the time since the last call exceeds the window.
The quiet time restarts at 00:00 UTC, so windows must be shorter than 24h. Without
--number, the default applies to every number seen and each override's number is shown
from the start.

Endpoints: GET /metrics (Prometheus text format), GET /healthz (liveness), GET / (links).
With --basic-auth-user, /metrics and / require HTTP Basic auth with the password from
PLUMLINE_EXPORTER_PASSWORD; /healthz stays open.

TLS: with --tls-cert-file and --tls-key-file (PEM; both or neither) the exporter serves
HTTPS only on --listen, /healthz included, with basic auth on top if set; scrape it with
`scheme: https` and a `tls_config` that trusts the certificate. The files are read at
startup: restart the exporter after renewing them. Without them it serves plain HTTP:
keep it on loopback, or behind a TLS proxy. /metrics is gzipped for clients that send
Accept-Encoding: gzip (Prometheus does).

Bad credentials on the first poll stop the exporter with an error; API failures later
set plum_fuse_up to 0 and are retried with growing waits.";

/// Flags of `plumline exporter`.
#[derive(Debug, clap::Args)]
#[command(after_long_help = AFTER_HELP)]
pub struct Args {
    /// Address to serve metrics on: IP:PORT (an IPv6 address in brackets), localhost:PORT, or :PORT for every interface.
    #[arg(long, default_value = DEFAULT_LISTEN, value_name = "ADDR")]
    listen: String,

    /// Deployment number to poll (repeat for several); default: the whole account, labelled by each
    /// inbound call's number (see --help).
    #[arg(long = "number", value_name = "NUMBER")]
    numbers: Vec<String>,

    /// Time between polls of the API (e.g. 30s, 1m); the figures lag by up to this much.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    interval: Duration,

    /// The longest call expected: each poll reaches back this far before the previous one, since
    /// the API lists a call by its start once it ends. Longer calls are not counted. The default is
    /// the longest call the export's --settle also waits for.
    #[arg(long, default_value = "4h", value_parser = humantime::parse_duration, value_name = "DURATION")]
    max_call_duration: Duration,

    /// Numbers polled (and backfill windows fetched) at once.
    #[arg(long, default_value = "4", value_name = "N", value_parser = super::at_least_one)]
    concurrency: NonZeroUsize,

    /// Calls per API request when a window is fetched (1..=10000).
    #[arg(long, default_value_t = PageSize::MAX, value_name = "N", value_parser = super::page_size)]
    page_size: PageSize,

    /// Session ids remembered per number (the calls of --max-call-duration plus one interval; ~100
    /// bytes each plus the id); when full the number reaches back less far.
    #[arg(long, default_value = "200000", value_name = "N", value_parser = super::at_least_one)]
    max_tracked_calls: NonZeroUsize,

    /// Quiet time after which the "no calls" alert should fire (published as
    /// plum_fuse_no_calls_alert_after_seconds): DURATION for every number (default 2h), or
    /// NUMBER=DURATION for one (repeatable), e.g. --no-calls-alert-after 30m
    /// --no-calls-alert-after 6175550199=6h. Shorter than 24h.
    #[arg(long = "no-calls-alert-after", value_name = "[NUMBER=]DURATION", value_parser = parse_no_calls_alert_after)]
    no_calls_alert_after: Vec<NoCallsAlertAfter>,

    // A plain string, not a doc comment: the variable name reads better without backticks in --help.
    #[arg(
        long,
        value_name = "USER",
        help = "Require HTTP Basic auth on /metrics with this username; the password is read from PLUMLINE_EXPORTER_PASSWORD"
    )]
    basic_auth_user: Option<String>,

    /// Serve HTTPS with this PEM certificate chain (server certificate first); needs --tls-key-file.
    #[arg(long, value_name = "PATH")]
    tls_cert_file: Option<PathBuf>,

    /// The PEM private key (PKCS#8, PKCS#1 or SEC1) of --tls-cert-file.
    #[arg(long, value_name = "PATH")]
    tls_key_file: Option<PathBuf>,

    #[command(flatten)]
    api: ApiArgs,
}

/// Runs `plumline exporter`: binds `--listen`, then serves and polls until
/// Ctrl-C or SIGTERM.
///
/// # Cancel safety
/// Before the server is bound, dropping the future leaves nothing behind;
/// after, as [`plumline_metrics::run_exporter`]: polling stops at once and
/// the metrics server stops in the background. Ctrl-C and SIGTERM do not
/// drop it: they stop both gracefully.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let listen = parse_listen(&args.listen)?;
    let no_calls_alert = no_calls_alert_config(&args.no_calls_alert_after)?;
    let config = PollerConfig {
        numbers: args.numbers.iter().map(|n| n.trim().to_owned()).collect(),
        interval: args.interval,
        max_call_duration: args.max_call_duration,
        page_size: args.page_size,
        concurrency: args.concurrency,
        max_tracked_calls: args.max_tracked_calls,
        no_calls_alert,
    };
    config.validate().map_err(flag_words)?;
    let auth = match &args.basic_auth_user {
        Some(user) => {
            let password = std::env::var(PASSWORD_ENV).ok().filter(|p| !p.is_empty()).with_context(|| {
                format!("--basic-auth-user needs a password: set {PASSWORD_ENV} in the environment")
            })?;
            Some(BasicAuth::new(user.clone(), password).map_err(flag_words)?)
        }
        None => None,
    };
    let tls = match (&args.tls_cert_file, &args.tls_key_file) {
        (Some(cert), Some(key)) => Some(TlsConfig::from_pem_files(cert, key)?),
        (None, None) => None,
        (Some(_), None) => anyhow::bail!("--tls-cert-file needs --tls-key-file: give both or neither"),
        (None, Some(_)) => anyhow::bail!("--tls-key-file needs --tls-cert-file: give both or neither"),
    };
    let client = args.api.client()?;
    let metrics = Arc::new(Metrics::new()?);
    let mut server = MetricsServer::bind(listen, Arc::clone(&metrics), auth)
        .await
        .context("--listen: cannot serve metrics")?;
    if let Some(tls) = tls {
        server = server.with_tls(tls);
    }
    let addr = server.local_addr();
    tracing::info!(
        addr = %addr,
        scheme = server.scheme(),
        numbers = config.numbers.len(),
        interval_s = config.interval.as_secs_f64(),
        base_url = %client.base_url(),
        "exporter starting"
    );
    println!("serving metrics on {}://{addr}/metrics", server.scheme());
    let poller = Poller::new(client, metrics, config).map_err(flag_words)?;
    run_exporter(poller, server, crate::signal::shutdown()).await?;
    tracing::info!("exporter stopped");
    Ok(())
}

/// A configuration error of the library, in the words of the flags.
fn flag_words(error: MetricsError) -> anyhow::Error {
    match error {
        MetricsError::InvalidConfig { field, reason } => {
            let flag = match field {
                "interval" => "--interval",
                "max_call_duration" => "--max-call-duration",
                "numbers" => "--number",
                "no_calls_alert" => "--no-calls-alert-after",
                "basic_auth.username" => "--basic-auth-user",
                "basic_auth.password" => PASSWORD_ENV,
                other => other,
            };
            anyhow::anyhow!("{flag} {reason}")
        }
        other => other.into(),
    }
}

/// One `--no-calls-alert-after`: the default window, or one number's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoCallsAlertAfter {
    /// `DURATION`: every number without an override.
    Default(Duration),
    /// `NUMBER=DURATION`.
    Number(String, Duration),
}

/// Parses `DURATION` or `NUMBER=DURATION` (humantime durations, as
/// `--interval`); the range of the window is the library's to check.
fn parse_no_calls_alert_after(raw: &str) -> Result<NoCallsAlertAfter, String> {
    let duration = |text: &str| {
        humantime::parse_duration(text.trim()).map_err(|e| {
            format!("`{}` is not a duration ({e}): expected DURATION or NUMBER=DURATION, e.g. 2h or 6175550199=6h", text.trim())
        })
    };
    match raw.split_once('=') {
        None => duration(raw).map(NoCallsAlertAfter::Default),
        Some((number, window)) => {
            let number = number.trim();
            if number.is_empty() {
                return Err(format!("`{raw}` names no number: expected NUMBER=DURATION, e.g. 6175550199=6h"));
            }
            Ok(NoCallsAlertAfter::Number(number.to_owned(), duration(window)?))
        }
    }
}

/// The windows of every `--no-calls-alert-after`: at most one default
/// (else 2 h) and at most one override per number.
fn no_calls_alert_config(values: &[NoCallsAlertAfter]) -> anyhow::Result<NoCallsAlertConfig> {
    let mut default = None;
    let mut per_number = BTreeMap::new();
    for value in values {
        match value {
            NoCallsAlertAfter::Default(window) => {
                if default.replace(*window).is_some() {
                    anyhow::bail!(
                        "--no-calls-alert-after gives the default window twice: give one DURATION, and NUMBER=DURATION for the exceptions"
                    );
                }
            }
            NoCallsAlertAfter::Number(number, window) => {
                if per_number.insert(number.clone(), *window).is_some() {
                    anyhow::bail!("--no-calls-alert-after gives number {number} twice");
                }
            }
        }
    }
    Ok(NoCallsAlertConfig { default: default.unwrap_or(DEFAULT_NO_CALLS_ALERT_AFTER), per_number })
}

/// Parses `--listen` without DNS: an IP socket address, `localhost:PORT`,
/// or `:PORT` (every IPv4 interface, as Go exporters spell it).
fn parse_listen(raw: &str) -> anyhow::Result<SocketAddr> {
    let raw = raw.trim();
    let bad = || {
        anyhow::anyhow!(
            "--listen `{raw}` is not an address to listen on: expected IP:PORT (e.g. {DEFAULT_LISTEN}), \
             [IPv6]:PORT, localhost:PORT or :PORT"
        )
    };
    if let Ok(addr) = raw.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let (host, port) = raw.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    match host {
        "" => Ok((Ipv4Addr::UNSPECIFIED, port).into()),
        h if h.eq_ignore_ascii_case("localhost") => Ok((Ipv4Addr::LOCALHOST, port).into()),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_errors_name_the_flag() {
        let cases = [
            ("interval", "must be greater than zero", "--interval must be greater than zero"),
            ("numbers", "1 is given twice", "--number 1 is given twice"),
            ("basic_auth.password", "must not be empty", "PLUMLINE_EXPORTER_PASSWORD must not be empty"),
        ];
        for (field, reason, want) in cases {
            let got = flag_words(MetricsError::InvalidConfig { field, reason: reason.into() }).to_string();
            assert_eq!(got, want);
        }
    }

    #[test]
    fn no_calls_alert_after_values() {
        use NoCallsAlertAfter::{Default, Number};
        let mins = |m: u64| Duration::from_secs(m * 60);
        // (value, parsed or what the error says)
        let cases: [(&str, Result<NoCallsAlertAfter, &str>); 8] = [
            ("30m", Ok(Default(mins(30)))),
            ("2h 30m", Ok(Default(mins(150)))),
            ("6175550199=6h", Ok(Number("6175550199".into(), mins(360)))),
            (" 6175550199 = 90m ", Ok(Number("6175550199".into(), mins(90)))),
            ("soon", Err("`soon` is not a duration")),
            ("6175550199=", Err("`` is not a duration")),
            ("6175550199=6 hours?", Err("`6 hours?` is not a duration")),
            ("=6h", Err("names no number")),
        ];
        for (raw, want) in cases {
            match (parse_no_calls_alert_after(raw), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{raw}"),
                (Err(e), Err(needle)) => assert!(e.contains(needle), "{raw}: {e}"),
                (got, want) => panic!("{raw}: got {got:?}, want {want:?}"),
            }
        }
        let config =
            no_calls_alert_config(&[Number("1".into(), mins(360)), Default(mins(30))]).expect("valid");
        assert_eq!(config.default, mins(30));
        assert_eq!(config.window("1"), mins(360));
        assert_eq!(no_calls_alert_config(&[]).expect("valid"), NoCallsAlertConfig::default());
        for (values, needle) in [
            (vec![Default(mins(30)), Default(mins(60))], "default window twice"),
            (vec![Number("1".into(), mins(30)), Number("1".into(), mins(60))], "number 1 twice"),
        ] {
            let err = no_calls_alert_config(&values).expect_err("invalid").to_string();
            assert!(err.starts_with("--no-calls-alert-after") && err.contains(needle), "{err}");
        }
        let err =
            flag_words(MetricsError::InvalidConfig { field: "no_calls_alert", reason: "24h: x".into() });
        assert_eq!(err.to_string(), "--no-calls-alert-after 24h: x");
    }

    #[test]
    fn listen_addresses() {
        let cases = [
            ("127.0.0.1:9877", Some("127.0.0.1:9877")),
            ("[::1]:9877", Some("[::1]:9877")),
            (":9877", Some("0.0.0.0:9877")),
            ("localhost:0", Some("127.0.0.1:0")),
            (" 0.0.0.0:1 ", Some("0.0.0.0:1")),
            ("9877", None),
            ("127.0.0.1", None),
            ("127.0.0.1:99999", None),
            ("example.com:9877", None),
            ("not an address", None),
        ];
        for (raw, want) in cases {
            match (parse_listen(raw), want) {
                (Ok(addr), Some(want)) => assert_eq!(addr.to_string(), want, "{raw}"),
                (Err(e), None) => assert!(e.to_string().contains("--listen"), "{raw}: {e}"),
                (got, want) => panic!("{raw}: got {got:?}, want {want:?}"),
            }
        }
        assert_eq!(DEFAULT_LISTEN.parse::<SocketAddr>().ok().map(|a| a.ip().is_loopback()), Some(true));
    }
}
