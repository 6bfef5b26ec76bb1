//! `plumline man`: the manual page (roff), on stdout or one file per command.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;

const AFTER_HELP: &str = "\
Read it with `plumline man | man -l -`, or install the pages of every command with
`plumline man --dir /usr/local/share/man/man1`. `cargo xtask dist` ships them too.";

/// Flags of `plumline man`.
#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct Args {
    /// Write plumline.1 and one page per command (plumline-export.1, …) into DIR instead
    /// of printing plumline.1.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// Renders the pages of `cli`, the whole command tree.
pub fn run(args: &Args, cli: clap::Command) -> anyhow::Result<()> {
    if let Some(dir) = &args.dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        return clap_mangen::generate_to(cli, dir)
            .with_context(|| format!("writing man pages into {}", dir.display()));
    }
    let mut page = Vec::new();
    clap_mangen::Man::new(cli).render(&mut page).context("rendering the man page")?;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&page).and_then(|()| stdout.flush()).context("writing the man page")
}
