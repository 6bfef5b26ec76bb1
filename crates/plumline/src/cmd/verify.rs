//! `plumline verify`: reconcile a lake with the API, day by day.

use std::fmt::Write as _;
use std::num::NonZeroUsize;
use std::sync::Arc;

use anyhow::Context as _;
use plumline_api::PageSize;
use plumline_export::{
    DayStatus, ExportOptions, ExportPlan, Lake, LakeVerifier, VerifyOptions, VerifyReport,
};
use serde::Serialize;

use crate::args::ApiArgs;
use crate::time::RangeArgs;

const AFTER_HELP: &str = "\
For each day of the range (whole days of --tz) and each --number, verify reads the row
count of the day's file from its Parquet footer and asks the API for the day's
total_calls (one limit=1 request). It also lists data files that no state records and
state that disagrees with its file. It only reads, unless --repair is given.

Exit status:
  0  every day matches the API
  1  a day differs or is missing (each is named)
  2  it could not check: the API or the store is unreachable, bad credentials, bad flags

Days still open at export time (younger than --settle) may differ until the next export
refreshes them: verify after they closed, e.g. a daily export and verify at 05:00.";

/// `--output` of `plumline verify`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    /// Aligned columns for people.
    Table,
    /// One JSON object.
    Json,
}

/// Flags of `plumline verify`.
#[derive(Debug, clap::Args)]
#[command(after_long_help = AFTER_HELP)]
pub struct Args {
    #[command(flatten)]
    range: RangeArgs,

    /// The lake: a directory, `file:///…`, `s3://bucket/prefix`, `gs://…` or `az://…`.
    #[arg(long, value_name = "DEST")]
    out: String,

    /// Check this deployment number's files; repeat for several (default: the unfiltered files).
    #[arg(long, value_name = "NUMBER")]
    number: Vec<String>,

    /// Most API requests and store reads in flight at once.
    #[arg(long, default_value = "8", value_name = "N", value_parser = super::at_least_one)]
    concurrency: NonZeroUsize,

    /// What to print.
    #[arg(long, short, value_enum, default_value_t = ReportFormat::Table)]
    output: ReportFormat,

    /// Re-export the days that are missing or hold fewer calls than the API lists, then check
    /// again. A day holding more calls than the API lists is kept (a re-export never shrinks a
    /// day): replace it with `export --overwrite --allow-shrink` if the API is right.
    #[arg(long)]
    repair: bool,

    /// Calls per API page when repairing (1..=10000).
    #[arg(long, default_value_t = PageSize::MAX, value_name = "N", value_parser = super::page_size)]
    page_size: PageSize,

    #[command(flatten)]
    api: ApiArgs,
}

/// The report as JSON, with its verdict.
#[derive(Debug, Serialize)]
struct ReportJson<'a> {
    complete: bool,
    #[serde(flatten)]
    report: &'a VerifyReport,
    /// Days re-exported by --repair.
    repaired: &'a [String],
}

/// Verifies; `Ok(true)` when every day matches.
///
/// # Cancel safety
/// Dropping the future while verifying abandons reads and requests only
/// (verification writes nothing); during `--repair`, it cancels the
/// day being re-exported as [`super::export::export`] says, and days
/// already repaired stay committed. No report is printed.
pub async fn run(args: Args) -> anyhow::Result<bool> {
    let (tz, range) = args.range.parse()?;
    let (start, end) = range.half_open_secs();
    let plan = ExportPlan::new(start, end, tz, &args.number)?;
    let destination = Lake::parse(&args.out)?;
    let client = Arc::new(args.api.client()?);
    let verifier = LakeVerifier::new(
        Arc::clone(&client),
        destination.clone(),
        VerifyOptions { concurrency: args.concurrency },
    );
    let checking = || format!("cannot verify {}", destination.display());
    let mut report = verifier.verify(&plan).await.with_context(checking)?;
    let mut repaired = Vec::new();
    if args.repair && !report.all_match() {
        let plans = report.repair_plans()?;
        for day in &plans {
            let Some(p) = day.partitions().first() else { continue };
            tracing::info!(day = %p.date(), number = p.number(), "repairing");
            let options = ExportOptions {
                concurrency: args.concurrency,
                page_size: args.page_size,
                overwrite: true,
                allow_shrink: false,
                ..ExportOptions::default()
            };
            let log = super::export::LogProgress::DEFAULT;
            match super::export::export(Arc::clone(&client), destination.clone(), options, day, log).await {
                Ok(_) => repaired.push(p.to_string()),
                // One day's failure does not stop the others; the check below names it.
                Err(error) => tracing::warn!(day = %p, error = format!("{error:#}"), "repair failed"),
            }
        }
        report = verifier.verify(&plan).await.with_context(checking)?;
    }
    let text = match args.output {
        ReportFormat::Table => render_table(&report, &repaired, args.repair),
        ReportFormat::Json => {
            let json = ReportJson { complete: report.all_match(), report: &report, repaired: &repaired };
            let mut text = serde_json::to_string_pretty(&json).context("encoding the report")?;
            text.push('\n');
            text
        }
    };
    print_out(&text);
    Ok(report.all_match())
}

#[allow(clippy::print_stdout, reason = "the CLI's result")]
fn print_out(text: &str) {
    print!("{text}");
}

fn render_table(report: &VerifyReport, repaired: &[String], repair: bool) -> String {
    let mut out = String::new();
    let number_width = report
        .days
        .iter()
        .map(|d| d.number.as_deref().map_or(5, str::len))
        .max()
        .unwrap_or(5)
        .max("NUMBER".len());
    let _ = writeln!(
        out,
        "{:<10}  {:<number_width$}  {:>10}  {:>10}  STATUS",
        "DATE", "NUMBER", "LAKE ROWS", "API TOTAL"
    );
    for d in &report.days {
        let number = d.number.as_deref().unwrap_or("(all)");
        let rows = d.lake_rows.map_or_else(|| "-".to_owned(), |r| r.to_string());
        let status = match (d.status, d.lake_rows) {
            (DayStatus::Match, _) => "match".to_owned(),
            (DayStatus::Missing, _) => format!("missing: no {}", d.file),
            (DayStatus::Differs, Some(rows)) if rows < d.api_total => {
                format!("differs: the lake holds {} fewer", d.api_total - rows)
            }
            (DayStatus::Differs, Some(rows)) => {
                format!("differs: the lake holds {} more", rows - d.api_total)
            }
            (DayStatus::Differs, None) => "differs".to_owned(),
        };
        let open = if d.closed == Some(false) { " (written while open)" } else { "" };
        let _ = writeln!(
            out,
            "{:<10}  {number:<number_width$}  {rows:>10}  {:>10}  {status}{open}",
            d.date.to_string(),
            d.api_total
        );
    }
    if !report.untracked_files.is_empty() {
        let _ = writeln!(
            out,
            "\nfiles that no state records (not written by plumline, or by a run killed before it recorded them):"
        );
        for f in &report.untracked_files {
            let _ = writeln!(out, "  {} ({} bytes)", f.file, f.bytes);
        }
    }
    if !report.state_mismatches.is_empty() {
        let _ = writeln!(out, "\nstate that disagrees with its file (the next export rewrites the day):");
        for m in &report.state_mismatches {
            let _ = writeln!(out, "  {}: {}", m.state, m.reason);
        }
    }
    if !repaired.is_empty() {
        let _ = writeln!(out, "\nrepaired: {}", repaired.join(", "));
    }
    let (matched, differs, missing) = report.counts();
    let _ = writeln!(
        out,
        "\n{} day partition(s) of {} from {} to {} ({}): {matched} match, {differs} differ, {missing} missing",
        report.days.len(),
        report.destination,
        report.first_day,
        report.last_day,
        report.tz
    );
    if !report.all_match() {
        let named: Vec<String> = report
            .bad_days()
            .map(|d| match &d.number {
                Some(n) => format!("{} (number {n}) {}", d.date, status_word(d.status)),
                None => format!("{} {}", d.date, status_word(d.status)),
            })
            .collect();
        let _ = writeln!(out, "incomplete: {}", named.join(", "));
        if !repair {
            let _ = writeln!(out, "run again with --repair to re-export the days that are missing or short");
        }
    }
    out
}

fn status_word(status: DayStatus) -> &'static str {
    match status {
        DayStatus::Match => "matches",
        DayStatus::Differs => "differs",
        DayStatus::Missing => "is missing",
    }
}
