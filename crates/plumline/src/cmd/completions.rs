//! `plumline completions SHELL`: a shell completion script on stdout.

use std::io::Write as _;

use anyhow::Context as _;
use clap_complete::Shell;

const AFTER_HELP: &str = "\
Install, for example:
  bash:  plumline completions bash > ~/.local/share/bash-completion/completions/plumline
  zsh:   plumline completions zsh > ~/.zfunc/_plumline   (with fpath+=~/.zfunc before compinit)
  fish:  plumline completions fish > ~/.config/fish/completions/plumline.fish
`cargo xtask dist` ships the scripts beside the release binary.";

/// Flags of `plumline completions`.
#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct Args {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: Shell,
}

/// Writes the script for `cli`, the whole command tree.
pub fn run(args: &Args, mut cli: clap::Command) -> anyhow::Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut cli, "plumline", &mut script);
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&script).and_then(|()| stdout.flush()).context("writing the completion script")
}
