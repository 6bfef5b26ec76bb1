//! `plumline exporter`: serve Prometheus metrics of call counts and durations.

#![allow(clippy::print_stdout, reason = "the CLI prints where the metrics are served")]

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use plumline_api::DEFAULT_LIMIT;
use plumline_metrics::{BasicAuth, Metrics, MetricsServer, Poller, PollerConfig, TlsConfig, run_exporter};

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

Counting: every --interval the exporter queries each number from its last poll minus
--max-call-duration up to now, and counts each completed call once (by session_id).
Calls longer than --max-call-duration are missed. Figures lag by up to one interval.
The first poll counts calls that ended within --lookback.

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
    /// Address to serve metrics on: IP:PORT, [IPv6]:PORT, localhost:PORT, or :PORT for every interface.
    #[arg(long, default_value = DEFAULT_LISTEN, value_name = "ADDR")]
    listen: String,

    /// Deployment number to poll (repeat for several); default: the whole account, labelled by each
    /// inbound call's number (see --help).
    #[arg(long = "number", value_name = "NUMBER")]
    numbers: Vec<String>,

    /// Time between polls of the API (e.g. 30s, 1m); the figures lag by up to this much.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    interval: Duration,

    /// How far back the first poll counts: calls that ended earlier are not counted.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration, value_name = "DURATION")]
    lookback: Duration,

    /// The longest call expected: each poll reaches back this far, since the API lists calls by
    /// start once they end. Longer calls are not counted.
    #[arg(long, default_value = "4h", value_parser = humantime::parse_duration, value_name = "DURATION")]
    max_call_duration: Duration,

    /// Numbers polled at once.
    #[arg(long, default_value_t = 4, value_name = "N")]
    concurrency: usize,

    /// Calls per API request (1..=10000).
    #[arg(long, default_value_t = DEFAULT_LIMIT, value_name = "N")]
    page_size: u32,

    /// Session ids remembered per number to count overlapping polls once (~100 bytes each plus the id).
    #[arg(long, default_value_t = 200_000, value_name = "N")]
    max_tracked_calls: usize,

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

pub async fn run(args: Args) -> anyhow::Result<()> {
    let listen = parse_listen(&args.listen)?;
    let config = PollerConfig {
        numbers: args.numbers.iter().map(|n| n.trim().to_owned()).collect(),
        interval: args.interval,
        lookback: args.lookback,
        max_call_duration: args.max_call_duration,
        page_size: args.page_size,
        concurrency: args.concurrency,
        max_tracked_calls: args.max_tracked_calls,
    };
    config.validate()?;
    let auth = match &args.basic_auth_user {
        Some(user) => {
            let password = std::env::var(PASSWORD_ENV).ok().filter(|p| !p.is_empty()).with_context(|| {
                format!("--basic-auth-user needs a password: set {PASSWORD_ENV} in the environment")
            })?;
            Some(BasicAuth::new(user.clone(), password)?)
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
    let mut server = MetricsServer::bind(listen, Arc::clone(&metrics), auth).await?;
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
    let poller = Poller::new(client, metrics, config)?;
    run_exporter(poller, server, crate::signal::shutdown()).await?;
    tracing::info!("exporter stopped");
    Ok(())
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
