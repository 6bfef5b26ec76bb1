//! `plumline calls`: print calls of a time range.

use std::io::{self, BufWriter, ErrorKind};

use anyhow::Context as _;
use futures::TryStreamExt as _;
use plumline_api::{CallQuery, DEFAULT_LIMIT, all_pages, validate_limit};

use crate::args::ApiArgs;
use crate::output::{CallWriter, OutputFormat};
use crate::time::RangeArgs;

/// Flags of `plumline calls`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    range: RangeArgs,

    /// Only calls of this deployment number.
    #[arg(long, value_name = "NUMBER")]
    number: Option<String>,

    /// Calls per page (1..=10000); with --all, the page size.
    #[arg(long, default_value_t = DEFAULT_LIMIT, value_name = "N")]
    limit: u32,

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

pub async fn run(args: Args) -> anyhow::Result<()> {
    let (tz, range) = args.range.parse()?;
    validate_limit(args.limit).map_err(|e| anyhow::anyhow!("--limit: {e}"))?;
    let client = args.api.client()?;
    let (start, end) = range.api_window();
    let query = CallQuery::new(start, end)?.with_number(args.number.clone());

    let stdout = io::stdout().lock();
    let mut writer = CallWriter::new(args.output, BufWriter::with_capacity(256 * 1024, stdout), tz);
    let result: anyhow::Result<u64> = async {
        writer.start()?;
        if args.all {
            let mut pages = std::pin::pin!(all_pages(&client, query, args.limit));
            let mut total = 0;
            while let Some(page) = pages.try_next().await.context("fetching calls")? {
                total = page.total_calls;
                writer.write_calls(&page.calls)?;
            }
            Ok(total)
        } else {
            let page =
                client.fetch_page(&query.page(args.limit, args.offset)?).await.context("fetching calls")?;
            writer.write_calls(&page.calls)?;
            Ok(page.total_calls)
        }
    }
    .await;
    match result {
        Ok(total) => {
            let n = writer.finish()?;
            tracing::info!(printed = n, total_calls = total, "done");
            if !args.all && args.offset + n < total {
                tracing::info!("more calls remain: pass --all, or --offset {}", args.offset + n);
            }
            Ok(())
        }
        // `plumline calls … | head` closes stdout early; that is not an error.
        Err(e) if e.downcast_ref::<io::Error>().is_some_and(|io| io.kind() == ErrorKind::BrokenPipe) => {
            Ok(())
        }
        Err(e) => Err(e),
    }
}
