//! `plumline calls`: print calls of a time range.

use std::io::{self, BufWriter, ErrorKind};

use anyhow::Context as _;
use futures::TryStreamExt as _;
use plumline_api::{BULK_PAGE_SIZE, CallQuery, DEFAULT_LIMIT, PageSize, all_pages};

use crate::args::ApiArgs;
use crate::output::{CallWriter, OutputFormat};
use crate::time::RangeArgs;

/// Flags of `plumline calls`.
#[derive(Debug, clap::Args)]
#[command(after_help = crate::EXIT_CODES)]
pub struct Args {
    #[command(flatten)]
    range: RangeArgs,

    /// Only calls of this deployment number.
    #[arg(long, value_name = "NUMBER")]
    number: Option<String>,

    /// Calls per page (1..=10000; default 1000); with --all, the page size (default 10000).
    #[arg(long, value_name = "N", value_parser = super::page_size)]
    limit: Option<PageSize>,

    /// Index of the first call of the page (without --all).
    #[arg(long, default_value_t = 0, value_name = "N", conflicts_with = "all")]
    offset: u64,

    /// Follow every page instead of printing one.
    #[arg(long)]
    all: bool,

    /// Output format.
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Table)]
    output: OutputFormat,

    #[command(flatten)]
    api: ApiArgs,
}

/// How far a listing got, for the error that stops it.
#[derive(Debug, Default)]
struct Reached {
    pages: u64,
    printed: u64,
    total: u64,
}

/// Runs `plumline calls`: one page, or with `--all` every page, written to
/// stdout as they arrive.
///
/// # Cancel safety
/// Dropping the future abandons the request in flight; what was already
/// written to stdout stays there (a table or CSV cut after the last whole
/// page, a JSON array left unclosed), and nothing else is left behind.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let (tz, range) = args.range.parse()?;
    let limit = args.limit.map_or(if args.all { BULK_PAGE_SIZE } else { DEFAULT_LIMIT }, PageSize::get);
    let client = args.api.client()?;
    let (start, end) = range.api_window();
    let query = CallQuery::new(start, end)?.with_number(args.number.clone());

    let stdout = io::stdout().lock();
    let mut writer = CallWriter::new(args.output, BufWriter::with_capacity(256 * 1024, stdout), tz);
    let mut reached = Reached::default();
    // Nothing reaches stdout before the first page has arrived: a run that
    // cannot reach the API prints no header, no `[`, nothing half written.
    let result: anyhow::Result<()> = async {
        if args.all {
            let mut pages = std::pin::pin!(all_pages(&client, query, limit));
            while let Some(page) = pages.try_next().await.context("fetching calls")? {
                if reached.pages == 0 {
                    writer.start()?;
                }
                reached.pages += 1;
                reached.total = page.total_calls;
                writer.write_calls(&page.calls)?;
                reached.printed += page.calls.len() as u64;
            }
            if reached.pages == 0 {
                writer.start()?;
            }
        } else {
            let page = client.fetch_page(&query.page(limit, args.offset)?).await.context("fetching calls")?;
            writer.start()?;
            reached = Reached { pages: 1, printed: page.calls.len() as u64, total: page.total_calls };
            writer.write_calls(&page.calls)?;
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => {
            let n = writer.finish()?;
            tracing::info!(printed = n, total_calls = reached.total, "done");
            if !args.all && args.offset + n < reached.total {
                tracing::info!("more calls remain: pass --all, or --offset {}", args.offset + n);
            }
            Ok(())
        }
        // `plumline calls … | head` closes stdout early; that is not an error.
        Err(e) if e.downcast_ref::<io::Error>().is_some_and(|io| io.kind() == ErrorKind::BrokenPipe) => {
            Ok(())
        }
        Err(e) if reached.pages > 0 => Err(e.context(format!(
            "stopped after {} page(s) with {} of {} calls printed: the output is incomplete",
            reached.pages, reached.printed, reached.total
        ))),
        Err(e) => Err(e),
    }
}
