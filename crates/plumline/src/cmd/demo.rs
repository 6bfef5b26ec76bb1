//! `plumline demo`: the main job end to end on an embedded simulator.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use jiff::Timestamp;
use jiff::tz::TimeZone;
use plumline_api::{Client, Credentials};
use plumline_export::{ExportOptions, ExportPlan, Lake, LakeSummary, summarize_lake};
use plumline_sim::{DEMO_EMAIL, DEMO_KEY, SimConfig, SimServer};

/// Flags of `plumline demo`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory for the demo's output; the lake goes into DIR/lake.
    #[arg(long, default_value = "./plumline-demo", value_name = "DIR")]
    dir: PathBuf,

    /// Mean calls per number per day in the simulated month.
    #[arg(long, default_value_t = 400.0, value_name = "N")]
    calls_per_day: f64,
}

/// Runs `plumline demo`: an embedded simulator on 127.0.0.1, an export of
/// its month into DIR/lake, and the lake read back.
///
/// # Cancel safety
/// Dropping the future drops the simulator's handle, which stops it in the
/// background, and cancels the export as [`super::export::export`] says:
/// committed days stay committed, so a rerun resumes.
pub async fn run(args: Args) -> anyhow::Result<()> {
    if !(args.calls_per_day.is_finite() && args.calls_per_day > 0.0) {
        anyhow::bail!("--calls-per-day must be a positive number");
    }
    // January 2025 with three generated numbers: fixed, so a second run finds
    // every day committed and the lake unchanged.
    let config = SimConfig::default().with_seed(2025).with_calls_per_day(args.calls_per_day);
    let (start, end) = (config.data_start, config.data_end);
    let server = SimServer::start(config, ([127, 0, 0, 1], 0).into())
        .await
        .context("cannot start the embedded simulator")?;
    let result = demo(&server, &args, start, end).await;
    server.shutdown().await;
    result
}

async fn demo(server: &SimServer, args: &Args, start: i64, end: i64) -> anyhow::Result<()> {
    let lake = args.dir.join("lake");
    let numbers = server.simulator().numbers().to_vec();
    let client = Client::builder(server.base_url(), Credentials::new(DEMO_EMAIL, DEMO_KEY)).build()?;
    let plan = ExportPlan::new(start, end, TimeZone::UTC, &numbers)?;
    let options = ExportOptions { settle: Duration::ZERO, ..ExportOptions::default() };
    let summary = super::export::export(
        Arc::new(client),
        Lake::local(&lake),
        options,
        &plan,
        super::export::LogProgress::Quiet,
    )
    .await?;
    let path = lake.clone();
    let read = tokio::task::spawn_blocking(move || summarize_lake(&path))
        .await
        .context("reading the lake back")?
        .with_context(|| format!("reading the lake {} back", lake.display()))?;
    let mut out = String::new();
    let first = Timestamp::from_second(start).map(|t| t.to_string()).unwrap_or_default();
    let last = Timestamp::from_second(end).map(|t| t.to_string()).unwrap_or_default();
    let _ = writeln!(out, "plumline demo: an embedded simulator's calls from {first} to {last}");
    let _ = writeln!(out, "exported into {}", lake.display());
    let _ = writeln!(out, "  this run: {summary}");
    render(&mut out, &read);
    let glob = lake.join("*").join("*.parquet");
    let _ = writeln!(out, "\nQuery it with DuckDB (https://duckdb.org):");
    let _ = writeln!(
        out,
        "  duckdb -c \"SELECT date, number, type, count(*) AS calls, round(quantile_cont(duration_s, 0.9)) AS p90_s \
         FROM read_parquet('{}', hive_partitioning = true) GROUP BY ALL ORDER BY ALL\"",
        glob.display()
    );
    let _ = writeln!(out, "or with pyarrow:");
    let _ = writeln!(
        out,
        "  python3 -c \"import pyarrow.dataset as ds; print(ds.dataset('{}', format='parquet', partitioning='hive').to_table().num_rows)\"",
        lake.display()
    );
    let _ = writeln!(out, "Running `plumline demo` again is safe: committed days are skipped.");
    print_out(&out);
    Ok(())
}

#[allow(clippy::print_stdout, reason = "the demo's report")]
fn print_out(text: &str) {
    print!("{text}");
}

/// Writes the lake's figures: a bar per day, a table per number and type,
/// and duration percentiles.
fn render(out: &mut String, s: &LakeSummary) {
    let _ = writeln!(
        out,
        "\nThe lake, read back: {} calls in {} files over {} days",
        s.calls,
        s.files,
        s.per_day.len()
    );
    let _ = writeln!(out, "\nCalls per day");
    let max = s.per_day.values().copied().max().unwrap_or(0).max(1);
    for (day, n) in &s.per_day {
        let width = usize::try_from(n * 40 / max).unwrap_or(40);
        let _ = writeln!(out, "  {day}  {:<40}  {n:>7}", "█".repeat(width));
    }
    let types: std::collections::BTreeSet<&str> = s.per_number_type.keys().map(|(_, t)| t.as_str()).collect();
    let _ = writeln!(out, "\nCalls per number and type");
    let mut header = format!("  {:<14}", "number");
    for t in &types {
        let _ = write!(header, "{t:>10}");
    }
    let _ = writeln!(out, "{header}{:>10}", "total");
    for (number, total) in s.per_number() {
        let name = number.clone().unwrap_or_else(|| "(all)".into());
        let mut line = format!("  {name:<14}");
        for t in &types {
            let n = s.per_number_type.get(&(number.clone(), (*t).to_owned())).copied().unwrap_or(0);
            let _ = write!(line, "{n:>10}");
        }
        let _ = writeln!(out, "{line}{total:>10}");
    }
    let q = |p: f64| s.duration_quantile(p).map_or_else(|| "-".to_owned(), |d| format!("{d} s"));
    let _ = writeln!(out, "\nCall duration: p50 {}, p90 {}, p99 {}", q(0.5), q(0.9), q(0.99));
}
