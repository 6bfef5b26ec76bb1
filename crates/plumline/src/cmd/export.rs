//! Placeholder until the subcommand lands.

/// Flags.
#[derive(Debug, clap::Args)]
pub struct Args {}

#[allow(clippy::unused_async, reason = "placeholder")]
pub async fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("not built yet")
}
