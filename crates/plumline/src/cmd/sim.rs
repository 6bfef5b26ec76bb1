//! `plumline sim`: a Fuse-compatible API simulator in the foreground.

#![allow(clippy::print_stdout, reason = "the CLI prints how to reach the simulator")]

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use plumline_api::Credentials;
use plumline_sim::{
    Behaviours, DEMO_EMAIL, DEMO_KEY, ErrorIn200, Faults, LaggingTotal, LongCalls, MovingSource, Mutation,
    Persistence, Region, SimConfig, SimServer, WindowSet,
};
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

    /// Runs of N calls share one start second (ties in `start`); 0 or 1: none forced.
    #[arg(long, default_value_t = 0, value_name = "N", help_heading = "Data")]
    ties: u32,

    /// Share of calls (0.0 to 1.0) that last long, from 30 minutes up to --long-call-max;
    /// with --live, the days they start in stay incomplete until they end.
    #[arg(long, value_name = "SHARE", help_heading = "Data")]
    long_calls: Option<f64>,

    /// The longest of the long calls (at most 18h).
    #[arg(long, default_value = "4h", value_parser = humantime::parse_duration, value_name = "DURATION", help_heading = "Data")]
    long_call_max: Duration,

    #[command(flatten)]
    behaviours: BehaviourArgs,
}

/// How the simulator answers beyond the happy path (`plumline_sim::Behaviours`).
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Behaviours")]
struct BehaviourArgs {
    /// Window slack: a query for [start, end] also lists calls starting up to this much outside it (e.g. 15m).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    slack: Duration,

    /// Answer 200 with {"error":"database error",...} for windows touching this UTC date
    /// (YYYY-MM-DD) or containing this instant (RFC 3339 or UNIX seconds); repeatable.
    #[arg(long, value_name = "WHEN")]
    error_in_200: Vec<String>,

    /// Only the first N requests of each such window fail (transient); 0: every request (persistent).
    #[arg(long, default_value_t = 0, value_name = "N")]
    error_in_200_requests: u64,

    /// Move the source: after chosen requests of a window, insert, remove or swap
    /// (remove one and insert one: the total stays) calls of that window.
    #[arg(long, value_name = "insert|remove|swap", value_parser = parse_mutation)]
    moving: Option<Mutation>,

    /// Where the source moves: `paged` (before the end of the page just served) or `anywhere`.
    #[arg(long, default_value = "paged", value_name = "paged|anywhere", value_parser = parse_region)]
    moving_region: Region,

    /// After which requests of a window (1-based, comma-separated) the source moves; then it stops.
    #[arg(
        long,
        default_value = "1",
        value_delimiter = ',',
        value_name = "N,...",
        help_heading = "Behaviours"
    )]
    moving_after: Vec<u64>,

    /// Mutations per step.
    #[arg(long, default_value_t = 1, value_name = "N")]
    moving_per_step: u32,

    /// Only windows touching this UTC date or containing this instant move; repeatable (default: all).
    #[arg(long, value_name = "WHEN")]
    moving_on: Vec<String>,

    /// Report total_calls this many below the listing (the listing stays complete) ...
    #[arg(long, value_name = "K")]
    lagging_total: Option<u64>,

    /// ... for the first N requests of each window.
    #[arg(long, default_value_t = 1, value_name = "N")]
    lagging_requests: u64,

    /// List calls with equal start in a different order on each request.
    #[arg(long)]
    shuffle_ties: bool,

    /// Serve at most N calls per page, whatever `limit` asks.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    page_cap: Option<u32>,

    /// Ignore `limit`: every call from `offset` on in one page.
    #[arg(long)]
    ignore_limit: bool,
}

fn parse_mutation(value: &str) -> Result<Mutation, String> {
    match value.to_ascii_lowercase().as_str() {
        "insert" => Ok(Mutation::Insert),
        "remove" => Ok(Mutation::Remove),
        "swap" => Ok(Mutation::Swap),
        other => Err(format!("unknown mutation `{other}`: expected insert, remove or swap")),
    }
}

fn parse_region(value: &str) -> Result<Region, String> {
    match value.to_ascii_lowercase().as_str() {
        "paged" => Ok(Region::Paged),
        "anywhere" => Ok(Region::Anywhere),
        other => Err(format!("unknown region `{other}`: expected paged or anywhere")),
    }
}

/// Windows from `WHEN`s: a date is that UTC day, anything else an instant.
fn window_set(values: &[String], flag: &str) -> anyhow::Result<WindowSet> {
    if values.is_empty() {
        return Ok(WindowSet::All);
    }
    let utc = parse_tz("UTC")?;
    let mut ranges = Vec::with_capacity(values.len());
    for value in values {
        let t = crate::time::TimeArg::parse(value)
            .and_then(|arg| arg.resolve(&utc, jiff::Timestamp::now()).map_err(|e| format!("{e:#}")))
            .map_err(|e| anyhow::anyhow!("{flag}: {e}"))?
            .as_second();
        if value.trim().parse::<jiff::civil::Date>().is_ok() {
            ranges.push((t, t + 86_399));
        } else {
            ranges.push((t, t));
        }
    }
    Ok(WindowSet::Overlapping(ranges))
}

fn behaviours(args: &BehaviourArgs) -> anyhow::Result<Behaviours> {
    let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    let error_in_200 = if args.error_in_200.is_empty() {
        None
    } else {
        let persistence = match args.error_in_200_requests {
            0 => Persistence::Always,
            n => Persistence::FirstRequests(n),
        };
        Some(ErrorIn200 {
            persistence,
            ..ErrorIn200::persistent(window_set(&args.error_in_200, "--error-in-200")?)
        })
    };
    let moving = match args.moving {
        None => None,
        Some(mutation) => Some(MovingSource {
            windows: window_set(&args.moving_on, "--moving-on")?,
            mutation,
            region: args.moving_region,
            after_requests: args.moving_after.clone(),
            per_step: args.moving_per_step,
        }),
    };
    Ok(Behaviours {
        slack_secs: secs(args.slack),
        error_in_200,
        moving,
        lagging_total: args.lagging_total.map(|lag| LaggingTotal {
            windows: WindowSet::All,
            lag,
            first_requests: args.lagging_requests,
        }),
        shuffle_ties: args.shuffle_ties,
        page_cap: args.page_cap,
        ignore_limit: args.ignore_limit,
    })
}

/// Runs `plumline sim`: serves the simulator in the foreground until
/// Ctrl-C or SIGTERM.
///
/// # Cancel safety
/// Dropping the future closes the listener and every connection at once
/// (as [`SimServer::serve_until`]); nothing keeps running. Ctrl-C and
/// SIGTERM do not drop it: they let requests in flight finish first.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let (data_start, data_end) = data_range(&args)?;
    let key_given = args.developer_key.is_some();
    let behaviours = behaviours(&args.behaviours)?;
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
        ties: args.ties,
        long_calls: args.long_calls.map(|share| LongCalls {
            share,
            max_secs: u32::try_from(args.long_call_max.as_secs()).unwrap_or(u32::MAX),
        }),
        behaviours,
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
