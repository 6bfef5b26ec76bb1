//! `plumline sim`: a Fuse-compatible API simulator in the foreground.

#![allow(clippy::print_stdout, reason = "the CLI prints how to reach the simulator")]

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use plumline_api::Credentials;
use plumline_sim::{DEMO_EMAIL, DEMO_KEY, Faults, SimConfig, SimServer};
use tokio::net::TcpListener;

use crate::time::{TimeRange, parse_tz};

/// Flags of `plumline sim`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8765", value_name = "ADDR")]
    listen: SocketAddr,

    /// Seed of the generated data: the same seed serves the same calls.
    #[arg(long, default_value_t = 1, value_name = "N")]
    seed: u64,

    /// Deployment numbers to serve (comma-separated); default: generated ones.
    #[arg(long, value_delimiter = ',', value_name = "NUMBER")]
    numbers: Vec<String>,

    /// How many numbers to generate when --numbers is not given.
    #[arg(long, default_value_t = 3, value_name = "K")]
    generated_numbers: usize,

    /// Mean calls per number per day (varies by weekday and day).
    #[arg(long, default_value_t = 1000.0, value_name = "N")]
    calls_per_day: f64,

    /// Days of history, ending at the start of today (UTC); ignored with --from/--to.
    #[arg(long, default_value_t = 30, value_name = "DAYS")]
    days: u32,

    /// Data range start (calls start at or after it); same forms as `calls --start`.
    #[arg(long, requires = "to", value_name = "TIME")]
    from: Option<String>,

    /// Data range end (exclusive).
    #[arg(long, requires = "from", value_name = "TIME")]
    to: Option<String>,

    /// Live mode: list a call only once it has ended, as the real API does;
    /// the data runs from --days ago to a year ahead.
    #[arg(long)]
    live: bool,

    /// Encode loosely as some servers of this family do (numbers as strings, `log` as 1, extra fields).
    #[arg(long)]
    quirks: bool,

    /// Give ~2% of calls a `type` the vendor never documented.
    #[arg(long)]
    unknown_types: bool,

    /// Account email the simulator accepts.
    #[arg(long, default_value = DEMO_EMAIL, value_name = "EMAIL")]
    email: String,

    /// Developer key the simulator accepts.
    #[arg(long, env = "PLUM_SIM_DEVELOPER_KEY", hide_env_values = true, value_name = "KEY")]
    developer_key: Option<String>,

    /// Delay added to every answer (e.g. 100ms).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration, value_name = "DURATION", help_heading = "Faults")]
    latency: Duration,

    /// Share of requests answered 500 (0.0 to 1.0).
    #[arg(long, default_value_t = 0.0, value_name = "RATE", help_heading = "Faults")]
    error_rate: f64,

    /// Share of requests answered 429 with Retry-After.
    #[arg(long, default_value_t = 0.0, value_name = "RATE", help_heading = "Faults")]
    rate_limit_rate: f64,

    /// Share of connections dropped without an answer.
    #[arg(long, default_value_t = 0.0, value_name = "RATE", help_heading = "Faults")]
    reset_rate: f64,

    /// Share of answers whose body is cut short.
    #[arg(long, default_value_t = 0.0, value_name = "RATE", help_heading = "Faults")]
    truncate_rate: f64,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let (data_start, data_end) = data_range(&args)?;
    let key_given = args.developer_key.is_some();
    let config = SimConfig {
        seed: args.seed,
        numbers: args.numbers,
        generated_numbers: args.generated_numbers,
        calls_per_day: args.calls_per_day,
        data_start,
        data_end,
        credentials: Credentials::new(
            args.email.clone(),
            args.developer_key.unwrap_or_else(|| DEMO_KEY.to_owned()),
        ),
        quirks: args.quirks,
        unknown_types: args.unknown_types,
        live: args.live,
        faults: Faults {
            latency: args.latency,
            server_error_rate: args.error_rate,
            rate_limit_rate: args.rate_limit_rate,
            reset_rate: args.reset_rate,
            truncate_rate: args.truncate_rate,
        },
        ..SimConfig::default()
    };
    config.validate()?;
    let listener = TcpListener::bind(args.listen).await.with_context(|| {
        format!("cannot listen on {}: is the port in use? pick another with --listen", args.listen)
    })?;
    let addr = listener.local_addr().context("reading the bound address")?;
    let numbers = plumline_sim::Simulator::new(config.clone())?.numbers().join(", ");
    println!("plumline sim: serving the Fuse calls API at http://{addr}{}", plumline_sim::BASE_PATH);
    println!("  numbers: {numbers}");
    println!(
        "  try:     export PLUM_BASE_URL=http://{addr}{} PLUM_EMAIL={}",
        plumline_sim::BASE_PATH,
        args.email
    );
    if key_given {
        println!("           export PLUM_DEVELOPER_KEY=<the key you passed>");
    } else {
        println!("           export PLUM_DEVELOPER_KEY={DEMO_KEY}");
    }
    println!("           plumline calls --start {data_start} --end {data_end} --all");
    println!("  Ctrl-C stops it.");
    let stats = SimServer::serve_until(config, listener, crate::signal::shutdown()).await?;
    tracing::info!(?stats, "simulator stopped");
    Ok(())
}

fn data_range(args: &Args) -> anyhow::Result<(i64, i64)> {
    if let (Some(from), Some(to)) = (&args.from, &args.to) {
        let range = TimeRange::parse(from, to, &parse_tz("UTC")?)?;
        return Ok((range.start.as_second(), range.end.as_second()));
    }
    anyhow::ensure!(args.days > 0, "--days must be at least 1");
    let now = jiff::Timestamp::now().as_second();
    let today = now - now.rem_euclid(86_400);
    let start = today - i64::from(args.days) * 86_400;
    let end = if args.live { today + 365 * 86_400 } else { today };
    Ok((start, end))
}
