//! `plumline`: export Plum Fuse call logs to a Parquet lake and Prometheus.
//!
//! This crate is only the command line: flag definitions, validation and
//! glue over the library crates. It alone installs global state (the
//! runtime, the tracing subscriber, signal handling) and prints to stdout.

#![allow(
    clippy::doc_markdown,
    reason = "clap turns doc comments into --help text, where backticks would show"
)]

mod alloc;
mod args;
mod cmd;
mod output;
mod signal;
mod time;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{CommandFactory as _, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// The exit codes, for `--help` (the README says the same).
pub const EXIT_CODES: &str = "\
Exit status:
  0  success (verify: every day matches the API)
  1  the command failed: an `error:` line on stderr says why and what to do
     (verify: a day differs or is missing, each named)
  2  bad flags or values (verify: also when it could not check: API or store
     unreachable, bad credentials)";

/// Take call records out of Plum Fuse and put them where people can use them.
#[derive(Debug, Parser)]
#[command(name = "plumline", version, about, long_about = None, propagate_version = true)]
#[command(after_help = EXIT_CODES)]
struct Cli {
    /// More log output on stderr (-v: debug, -vv: trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true, help_heading = "Global options")]
    verbose: u8,

    /// Only errors on stderr.
    #[arg(short, long, global = true, conflicts_with = "verbose", help_heading = "Global options")]
    quiet: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the calls of a time range (one page, or every page with --all).
    Calls(cmd::calls::Args),
    /// Export a time range into a day-partitioned Parquet lake (local or object store).
    Export(cmd::export::Args),
    /// Serve Prometheus metrics: call counts and durations per number.
    Exporter(cmd::exporter::Args),
    /// Run a Fuse-compatible API simulator (for demos, tests and benchmarks).
    Sim(cmd::sim::Args),
    /// Reconcile a lake with the API: each day's rows against the API's total_calls.
    Verify(cmd::verify::Args),
    /// Run the main job end to end on an embedded simulator, no account needed.
    Demo(cmd::demo::Args),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(cmd::completions::Args),
    /// Print the manual page (roff), or write one page per command with --dir.
    Man(cmd::man::Args),
}

fn main() -> ExitCode {
    alloc::tune();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => return usage_error(&e),
    };
    // Commands that only print what clap knows need no runtime.
    match &cli.command {
        Command::Completions(args) => return finish(cmd::completions::run(args, Cli::command()), 1),
        Command::Man(args) => return finish(cmd::man::run(args, Cli::command()), 1),
        _ => {}
    }
    init_tracing(cli.verbose, cli.quiet);
    // verify says "could not check" with 2, as diff and cmp say "trouble".
    let error_code = if matches!(cli.command, Command::Verify(_)) { 2 } else { 1 };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            return fail(&anyhow::Error::new(e).context("cannot start the async runtime"), error_code);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Calls(args) => cmd::calls::run(args).await.map(|()| ExitCode::SUCCESS),
            Command::Export(args) => cmd::export::run(args).await.map(|()| ExitCode::SUCCESS),
            Command::Exporter(args) => cmd::exporter::run(args).await.map(|()| ExitCode::SUCCESS),
            Command::Sim(args) => cmd::sim::run(args).await.map(|()| ExitCode::SUCCESS),
            Command::Verify(args) => cmd::verify::run(args)
                .await
                .map(|complete| if complete { ExitCode::SUCCESS } else { ExitCode::from(1) }),
            Command::Demo(args) => cmd::demo::run(args).await.map(|()| ExitCode::SUCCESS),
            Command::Completions(_) | Command::Man(_) => Ok(ExitCode::SUCCESS),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => fail(&e, error_code),
    }
}

fn finish(result: anyhow::Result<()>, error_code: u8) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e, error_code),
    }
}

#[allow(clippy::print_stderr, reason = "the one place errors reach the user")]
fn fail(error: &anyhow::Error, code: u8) -> ExitCode {
    // `{:#}` prints the whole context chain on one line; library errors
    // name settings, so the flags that set them are added here.
    let hint = args::chain_hint(error);
    eprintln!("error: {error:#}{hint}");
    ExitCode::from(code)
}

/// Prints a clap usage error as one `error: …` line, like every other error.
#[allow(clippy::print_stderr, reason = "the one place usage errors reach the user")]
fn usage_error(error: &clap::Error) -> ExitCode {
    let rendered = error.render().to_string();
    let message = rendered
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:"))
        .filter(|l| !l.is_empty() && !l.starts_with("For more information"))
        .map(|l| l.strip_prefix("error: ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join(" ");
    eprintln!("error: {message} (see `plumline --help`)");
    ExitCode::from(2)
}

fn init_tracing(verbose: u8, quiet: bool) {
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn,plumline=info,plumline_export=info,plumline_metrics=info,plumline_sim=info",
        (false, 1) => {
            "info,plumline=debug,plumline_api=debug,plumline_export=debug,plumline_metrics=debug,plumline_sim=debug"
        }
        (false, _) => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| output::LogWriter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}
