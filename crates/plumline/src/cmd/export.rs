//! `plumline export`: a time range into a day-partitioned Parquet lake.

use std::io::IsTerminal as _;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use plumline_api::{DEFAULT_LIMIT, PageSource, validate_limit};
use plumline_export::{
    ExportEvent, ExportObserver, ExportOptions, ExportPlan, ExportSummary, Exporter, Lake, LakeOptions,
};

use crate::args::ApiArgs;
use crate::time::RangeArgs;

/// Flags of `plumline export`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    range: RangeArgs,

    /// Where the lake goes: a directory, `file:///…`, `s3://bucket/prefix`, `gs://…` or `az://…`
    /// (object-store credentials come from each cloud's standard environment).
    #[arg(long, value_name = "DEST")]
    out: String,

    /// Export only this deployment number; repeat for several (each gets its own file per day).
    #[arg(long, value_name = "NUMBER")]
    number: Vec<String>,

    /// Most API requests in flight at once, across all days.
    #[arg(long, default_value_t = 8, value_name = "N")]
    concurrency: usize,

    /// Calls per API page (1..=10000).
    #[arg(long, default_value_t = DEFAULT_LIMIT, value_name = "N")]
    page_size: u32,

    /// Export days again even when an earlier run committed them.
    #[arg(long)]
    overwrite: bool,

    /// Days ending less than this long ago are written but refreshed by the next run (e.g. 1h, 30m).
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration, value_name = "DURATION")]
    settle: Duration,

    /// Let a re-export replace a committed day with fewer calls (after the vendor purged old
    /// records, say). Without it such a day is kept and the run fails naming it.
    #[arg(long)]
    allow_shrink: bool,

    /// How long this run's claim on a day lives without renewal; another run takes over an
    /// expired claim. Must exceed the clock skew between machines writing one lake.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    claim_lease: Duration,

    /// How long to wait for another run's claim on a day before failing that day.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration, value_name = "DURATION")]
    claim_wait: Duration,

    /// Bytes of each part of an object-store multipart upload (stores require at least 5 MiB
    /// for all but the last part); a day's upload holds at most one part in memory.
    #[arg(long, default_value_t = NonZeroUsize::new(8 << 20).unwrap_or(NonZeroUsize::MIN), value_name = "BYTES")]
    upload_part_bytes: NonZeroUsize,

    #[command(flatten)]
    api: ApiArgs,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let (tz, range) = args.range.parse()?;
    validate_limit(args.page_size).map_err(|e| anyhow::anyhow!("--page-size: {e}"))?;
    let concurrency = NonZeroUsize::new(args.concurrency)
        .context("--concurrency must be at least 1: it is the number of API requests in flight")?;
    let (start, end_inclusive) = range.api_window();
    let plan = ExportPlan::new(start, end_inclusive + 1, tz, &args.number)?;
    let destination =
        Lake::parse_with(&args.out, &LakeOptions { upload_part_bytes: args.upload_part_bytes })?;
    let client = args.api.client()?;
    let options = ExportOptions {
        concurrency,
        page_size: args.page_size,
        overwrite: args.overwrite,
        settle: args.settle,
        allow_shrink: args.allow_shrink,
        claim_lease: args.claim_lease,
        claim_wait: args.claim_wait,
        ..ExportOptions::default()
    };
    let summary = export(Arc::new(client), destination, options, &plan, true).await?;
    print_summary(&summary, &args.out);
    Ok(())
}

/// Runs an export with the terminal's progress display; shared with `demo`.
/// Without a terminal, each committed day is logged when `log_days` is set.
pub async fn export<S: PageSource + 'static>(
    source: Arc<S>,
    destination: Lake,
    options: ExportOptions,
    plan: &ExportPlan,
    log_days: bool,
) -> anyhow::Result<ExportSummary> {
    let display = destination.display().to_owned();
    let exporter = Exporter::new(source, destination, options)?;
    let progress = Progress::new(log_days);
    // Ctrl-C and SIGTERM stop the run, and its unfinished uploads are aborted before the runtime ends.
    let result = exporter.run_until(plan, &progress, crate::signal::shutdown()).await;
    progress.finish();
    result.map_err(|e| {
        let hint = if e.is_transient() {
            "; the days committed so far are kept: run the same command again to resume"
        } else {
            ""
        };
        anyhow::Error::new(e).context(format!("export into {display} stopped{hint}"))
    })
}

#[allow(clippy::print_stdout, reason = "the CLI's result")]
fn print_summary(summary: &ExportSummary, dest: &str) {
    println!("exported into {dest}: {summary}");
    if summary.open > 0 {
        println!(
            "{} day(s) are still open (inside the settle margin) and will be refreshed by the next run",
            summary.open
        );
    }
}

/// Renders export events: a progress bar on a terminal, log lines otherwise.
struct Progress {
    bar: Option<ProgressBar>,
    calls: AtomicU64,
    log_days: bool,
}

impl Progress {
    fn new(log_days: bool) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} days  {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Progress { bar, calls: AtomicU64::new(0), log_days }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl ExportObserver for Progress {
    fn on_event(&self, event: &ExportEvent) {
        match event {
            ExportEvent::Planned { partitions, skipped } => {
                if let Some(bar) = &self.bar {
                    bar.set_length((partitions - skipped) as u64);
                }
                tracing::info!(partitions, skipped, "export planned");
            }
            ExportEvent::PageWritten { calls, .. } => {
                let total = self.calls.fetch_add(*calls, Ordering::Relaxed) + calls;
                if let Some(bar) = &self.bar {
                    let secs = bar.elapsed().as_secs_f64().max(1e-3);
                    bar.set_message(format!("{total} calls  {:.0} calls/s", total as f64 / secs));
                }
            }
            ExportEvent::DayRefetch { day, number, attempt, reason } => {
                tracing::warn!(day = %day, number = number.as_deref(), attempt, reason = %reason, "fetching a day again");
            }
            ExportEvent::DayCommitted { day, number, rows, bytes, closed } => match &self.bar {
                Some(bar) => bar.inc(1),
                None if self.log_days => {
                    tracing::info!(day = %day, number = number.as_deref(), rows, bytes, closed, "day committed");
                }
                None => {}
            },
            _ => {}
        }
    }
}
