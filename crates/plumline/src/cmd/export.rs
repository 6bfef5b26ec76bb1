//! `plumline export`: a time range into a day-partitioned Parquet lake.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::IsTerminal as _;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use jiff::Timestamp;
use jiff::civil::Date;
use plumline_api::{LONGEST_CALL, PageSize, PageSource};
use plumline_export::{
    ExportEvent, ExportObserver, ExportOptions, ExportPlan, ExportSummary, Lake, LakeOptions, Pipeline,
};
use serde::Serialize;

use crate::args::ApiArgs;
use crate::output::set_active_bar;
use crate::time::RangeArgs;

/// How often a progress line is logged when stderr is not a terminal, by default.
const PLAIN_PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// `--output` of `plumline export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SummaryFormat {
    /// A summary a person can read.
    Text,
    /// One JSON object (the same as --summary-json writes).
    Json,
}

/// Flags of `plumline export`.
#[derive(Debug, clap::Args)]
#[command(after_help = crate::EXIT_CODES)]
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
    #[arg(long, default_value = "8", value_name = "N", value_parser = super::at_least_one)]
    concurrency: NonZeroUsize,

    /// Days worked on at once (default: --concurrency, clamped to 2..=8); each holds a
    /// writer's row group in memory.
    #[arg(long, value_name = "N", value_parser = super::at_least_one)]
    days_in_flight: Option<NonZeroUsize>,

    /// Calls per API page (1..=10000).
    #[arg(long, default_value_t = PageSize::MAX, value_name = "N", value_parser = super::page_size)]
    page_size: PageSize,

    /// Export days again even when an earlier run committed them.
    #[arg(long)]
    overwrite: bool,

    /// Let a re-export replace a committed day with fewer calls (the vendor purged old records,
    /// say); without it such a day is kept and the run fails naming it.
    #[arg(long)]
    allow_shrink: bool,

    /// Read every closed day twice and commit it only when both reads list the same calls
    /// (else read it again, then fail naming the day). Catches a source that changes pages
    /// already read under a stable total (a call removed and another added, a call edited),
    /// which one read cannot see; costs twice the API requests. Without it, days whose request
    /// budget has room (up to about 10,000 calls) get that second read anyway.
    #[arg(long)]
    reread: bool,

    /// The longest call expected (the exporter's --max-call-duration means the same): the API
    /// lists a call once it has ended, under its start, so a day is complete only this long
    /// after its end. Younger days are written but refreshed by the next run (e.g. 4h, 30m).
    #[arg(long, default_value_t = humantime::Duration::from(LONGEST_CALL), value_name = "DURATION")]
    settle: humantime::Duration,

    /// What to print on stdout at the end.
    #[arg(long, short, value_enum, default_value_t = SummaryFormat::Text)]
    output: SummaryFormat,

    /// When stderr is not a terminal (cron, systemd, Kubernetes), log a progress line this often.
    #[arg(long, default_value_t = humantime::Duration::from(PLAIN_PROGRESS_EVERY), value_name = "DURATION")]
    progress_every: humantime::Duration,

    /// Also write the summary as JSON to FILE (for orchestrators), whatever --output says.
    #[arg(long, value_name = "FILE")]
    summary_json: Option<PathBuf>,

    /// How long this run's claim on a day lives without renewal; another run takes over an
    /// expired claim. Must exceed the clock skew between machines writing one lake.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    claim_lease: Duration,

    /// How long to wait for another run's claim on a day before failing that day.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration, value_name = "DURATION")]
    claim_wait: Duration,

    /// Bytes of each part of an object-store multipart upload (stores require at least 5 MiB
    /// for all but the last part); a day's upload holds at most one part in memory.
    #[arg(long, default_value_t = LakeOptions::default().upload_part_bytes, value_name = "BYTES")]
    upload_part_bytes: NonZeroUsize,

    #[command(flatten)]
    api: ApiArgs,
}

/// Runs `plumline export` and prints its summary.
///
/// # Cancel safety
/// As [`export`]: dropping the future abandons the days in flight, and
/// committed days stay committed, so a rerun resumes; no summary is
/// written. Ctrl-C and SIGTERM do not drop it: they stop the run through
/// [`export`], which then aborts unfinished uploads.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let (tz, range) = args.range.parse()?;
    let (start, end) = range.half_open_secs();
    let plan = ExportPlan::new(start, end, tz, &args.number)?;
    let destination =
        Lake::parse_with(&args.out, &LakeOptions { upload_part_bytes: args.upload_part_bytes })?;
    let client = args.api.client()?;
    let options = ExportOptions {
        concurrency: args.concurrency,
        days_in_flight: args.days_in_flight,
        page_size: args.page_size,
        overwrite: args.overwrite,
        allow_shrink: args.allow_shrink,
        reread: args.reread,
        settle: args.settle.into(),
        claim_lease: args.claim_lease,
        claim_wait: args.claim_wait,
        ..ExportOptions::default()
    };
    let log = LogProgress::Every(args.progress_every.into());
    let summary = export(Arc::new(client), destination, options, &plan, log).await?;
    let json = SummaryJson::new(&summary, &args.out, &plan);
    if let Some(path) = &args.summary_json {
        write_json_file(path, &json)?;
    }
    match args.output {
        SummaryFormat::Text => print_out(&render_summary(&summary, &args.out, &plan)),
        SummaryFormat::Json => {
            let mut text = serde_json::to_string_pretty(&json).context("encoding the summary")?;
            text.push('\n');
            print_out(&text);
        }
    }
    Ok(())
}

/// The JSON summary: the library's [`ExportSummary`] and where it went.
#[derive(Debug, Serialize)]
struct SummaryJson<'a> {
    destination: &'a str,
    tz: &'a str,
    /// The range exported (after widening to whole days), UNIX seconds.
    start: i64,
    end: i64,
    #[serde(flatten)]
    summary: &'a ExportSummary,
}

impl<'a> SummaryJson<'a> {
    fn new(summary: &'a ExportSummary, destination: &'a str, plan: &'a ExportPlan) -> Self {
        SummaryJson { destination, tz: plan.tz_name(), start: plan.start(), end: plan.end(), summary }
    }
}

/// Writes `value` as JSON to `path` through a temp file and a rename, so
/// a reader never sees half a summary.
fn write_json_file(path: &Path, value: &impl Serialize) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(value).context("encoding the summary")?;
    text.push('\n');
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    std::fs::write(&temp, text).with_context(|| format!("writing --summary-json {}", temp.display()))?;
    std::fs::rename(&temp, path).with_context(|| {
        let _ = std::fs::remove_file(&temp);
        format!("writing --summary-json {}", path.display())
    })
}

/// What an export logs when stderr is not a terminal.
#[derive(Debug, Clone, Copy)]
pub enum LogProgress {
    /// Nothing but warnings (the demo prints its own report).
    Quiet,
    /// Each committed day, and a progress line this often.
    Every(Duration),
}

impl LogProgress {
    /// The default for commands run by schedulers.
    pub const DEFAULT: LogProgress = LogProgress::Every(PLAIN_PROGRESS_EVERY);
}

/// Runs an export with the terminal's progress display; shared with `demo`
/// and `verify --repair`. Without a terminal, it logs as `log` says.
/// Ctrl-C and SIGTERM stop it through [`plumline_export::Pipeline::run_until`].
///
/// # Cancel safety
/// Dropping the future drops the [`plumline_export::Pipeline`] mid-run, as
/// its `run` documents: in-flight requests are abandoned, local temps
/// deleted, committed days stay committed and claims expire, but the
/// aborts of unfinished object-store uploads are not run (they stay on the
/// process's cleanup list). The progress bar is left as drawn, and the
/// progress ticker task, when logging periodically, is not aborted: it
/// keeps logging until the runtime ends.
pub async fn export<S: PageSource + 'static>(
    source: Arc<S>,
    destination: Lake,
    options: ExportOptions,
    plan: &ExportPlan,
    log: LogProgress,
) -> anyhow::Result<ExportSummary> {
    let display = destination.display().to_owned();
    let pipeline = Pipeline::new(source, destination, options)?;
    let log_days = matches!(log, LogProgress::Every(_));
    let progress = Arc::new(Progress::new(log_days));
    let period = match log {
        LogProgress::Every(period) if progress.bar.is_none() && !period.is_zero() => Some(period),
        _ => None,
    };
    let ticker = period.map(|period| {
        let progress = Arc::clone(&progress);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(period);
            every.tick().await;
            loop {
                every.tick().await;
                progress.log_line();
            }
        })
    });
    // Ctrl-C and SIGTERM stop the run, and its unfinished uploads are aborted before the runtime ends.
    let result = pipeline.run_until(plan, &*progress, crate::signal::shutdown()).await;
    if let Some(ticker) = ticker {
        ticker.abort();
    }
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
fn print_out(text: &str) {
    print!("{text}");
}

fn utc(secs: i64) -> String {
    Timestamp::from_second(secs).map_or_else(|_| secs.to_string(), |t| t.to_string())
}

/// The summary a person reads.
fn render_summary(summary: &ExportSummary, dest: &str, plan: &ExportPlan) -> String {
    let mut out = format!("exported into {dest}: {summary}\n");
    for w in &summary.widened {
        let _ = writeln!(
            out,
            "--{} {} fell inside a day: widened to {} (exports work in whole days of {})",
            w.bound,
            utc(w.requested),
            utc(w.widened_to),
            plan.tz_name()
        );
    }
    if !summary.open_days.is_empty() {
        let _ = writeln!(
            out,
            "{} day(s) are still open (younger than --settle) and will be refreshed by the next run:",
            summary.open_days.len()
        );
        for d in &summary.open_days {
            let number = d.number.as_deref().map(|n| format!(" (number {n})")).unwrap_or_default();
            let _ = writeln!(out, "  {}{number}: closes at {}", d.date, utc(d.closes_at));
        }
    }
    if summary.out_of_window > 0 {
        let _ = writeln!(
            out,
            "the API returned {} call(s) outside the windows asked for; they were not filed there",
            summary.out_of_window
        );
    }
    out
}

/// Calls counted against the totals each day's first page announced.
#[derive(Debug, Default)]
struct Counts {
    /// Day partitions this run works on (planned minus skipped).
    partitions: usize,
    started: usize,
    committed: usize,
    /// `total_calls` per (day, number), from the latest first page.
    totals: HashMap<(Date, Option<String>), u64>,
    /// Sum of `totals` per day, and calls written per day (events name the
    /// day, not the number).
    day_total: HashMap<Date, u64>,
    day_written: HashMap<Date, u64>,
    /// Σ over days of min(written, total): a refetch never counts twice.
    done: u64,
    known_total: u64,
}

impl Counts {
    fn credited(&self, day: Date) -> u64 {
        let (w, t) = (self.day_written.get(&day).copied(), self.day_total.get(&day).copied());
        w.unwrap_or(0).min(t.unwrap_or(0))
    }

    fn day_started(&mut self, day: Date, number: Option<String>, total: u64) {
        let before = self.credited(day);
        let previous = self.totals.insert((day, number), total);
        if previous.is_none() {
            self.started += 1;
        }
        let day_total = self.day_total.entry(day).or_default();
        *day_total = *day_total - previous.unwrap_or(0) + total;
        self.known_total = self.known_total - previous.unwrap_or(0) + total;
        self.done = self.done - before + self.credited(day);
    }

    fn page_written(&mut self, day: Date, calls: u64) {
        let before = self.credited(day);
        *self.day_written.entry(day).or_default() += calls;
        self.done = self.done - before + self.credited(day);
    }

    /// The calls this run will likely write: the totals known, plus the
    /// days not started yet at the average of those started.
    fn expected(&self) -> u64 {
        let pending = self.partitions.saturating_sub(self.started) as u64;
        match self.started as u64 {
            0 => self.known_total,
            started => self.known_total + pending * self.known_total / started,
        }
    }
}

/// Renders export events: a progress bar on a terminal, log lines otherwise.
struct Progress {
    bar: Option<ProgressBar>,
    counts: Mutex<Counts>,
    started: Instant,
    log_days: bool,
}

impl Progress {
    fn new(log_days: bool) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {human_pos}/{human_len} calls  {msg}  ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        set_active_bar(bar.clone());
        Progress { bar, counts: Mutex::new(Counts::default()), started: Instant::now(), log_days }
    }

    fn finish(&self) {
        set_active_bar(None);
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

    fn update(&self, f: impl FnOnce(&mut Counts)) {
        let Ok(mut counts) = self.counts.lock() else { return };
        f(&mut counts);
        if let Some(bar) = &self.bar {
            bar.set_length(counts.expected().max(counts.done));
            bar.set_position(counts.done);
            let millis = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX).max(1);
            let rate = counts.done.saturating_mul(1000) / millis;
            bar.set_message(format!(
                "{} calls/s  {}/{} days",
                indicatif::HumanCount(rate),
                counts.committed,
                counts.partitions
            ));
        }
    }

    /// One plain progress line (no terminal).
    fn log_line(&self) {
        let Ok(counts) = self.counts.lock() else { return };
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = counts.done as f64 / secs;
        let expected = counts.expected().max(counts.done);
        let eta = if rate > 0.0 {
            humantime::format_duration(Duration::from_secs_f64(
                ((expected - counts.done) as f64 / rate).round(),
            ))
            .to_string()
        } else {
            "unknown".to_owned()
        };
        tracing::info!(
            calls = counts.done,
            expected,
            days = counts.committed,
            of_days = counts.partitions,
            calls_per_sec = rate.round(),
            eta = %eta,
            "export progress"
        );
    }
}

impl ExportObserver for Progress {
    fn on_event(&self, event: &ExportEvent) {
        match event {
            ExportEvent::Planned { partitions, skipped } => {
                self.update(|c| c.partitions = partitions - skipped);
                tracing::info!(partitions, skipped, "export planned");
            }
            ExportEvent::DayStarted { day, number, total_calls } => {
                self.update(|c| c.day_started(*day, number.clone(), *total_calls));
            }
            ExportEvent::PageWritten { day, calls } => self.update(|c| c.page_written(*day, *calls)),
            ExportEvent::DayRefetch { day, number, attempt, reason } => {
                tracing::warn!(day = %day, number = number.as_deref(), attempt, reason = %reason, "fetching a day again");
            }
            ExportEvent::DayCommitted { day, number, rows, bytes, closed } => {
                self.update(|c| c.committed += 1);
                if self.bar.is_none() && self.log_days {
                    tracing::info!(day = %day, number = number.as_deref(), rows, bytes, closed, "day committed");
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settle_defaults_to_the_longest_call() {
        assert_eq!(humantime::Duration::from(LONGEST_CALL).to_string(), "4h");
    }

    #[test]
    fn calls_count_against_announced_totals_and_refetches_do_not_double() {
        let d = |s: &str| s.parse::<Date>().expect("date");
        let mut c = Counts { partitions: 4, ..Counts::default() };
        assert_eq!(c.expected(), 0);
        c.day_started(d("2025-01-01"), None, 100);
        assert_eq!(c.expected(), 400, "three days not started, at the average of one");
        c.page_written(d("2025-01-01"), 60);
        assert_eq!(c.done, 60);
        // A refetch announces the day again and pages it from the start.
        c.day_started(d("2025-01-01"), None, 110);
        c.page_written(d("2025-01-01"), 110);
        assert_eq!(c.done, 110, "never more than the day's total");
        assert_eq!(c.started, 1);
        c.day_started(d("2025-01-02"), None, 90);
        c.page_written(d("2025-01-02"), 90);
        assert_eq!((c.done, c.known_total, c.expected()), (200, 200, 400));
    }
}
