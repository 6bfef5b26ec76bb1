//! `cargo xtask`: the one entry point for maintenance.
//!
//! `cargo xtask ci` is what CI runs; if it passes locally, CI is green.

#![allow(clippy::print_stdout, clippy::print_stderr, reason = "xtask is a CLI")]

mod ci;
mod dist;
mod tidy;
mod tools;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context as _, bail};

const HELP: &str = "\
cargo xtask <task>

Tasks:
  ci          everything CI runs: fmt, clippy, doc (warnings denied), tidy, the whole test suite with
              its external tools (installed on demand), cargo-deny (offline checks)
  test        the whole test suite with its external tools, nothing else
  tools       install the external test tools only, pinned (.venv with pyarrow,
              duckdb, polars, pyspark, moto[server], boto3, azure-storage-blob;
              Azurite from npm in .ci-tools/; Debian's prometheus, Java 17
              and npm packages when missing; cargo-deny)
  bench       run the end-to-end export bench (release) and print a table
  tidy        repository hygiene checks (also a #[test])
  dist        release binary + completions + man pages + SHA256SUMS in one folder
              (target/dist/plumline-<version>-<os>-<arch>/; --binary PATH, --out DIR)
  deny        cargo deny check, including advisories (needs the internet)
  help        this text
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let task = args.first().map_or("help", String::as_str);
    let result = match task {
        "ci" => ci::ci(),
        "test" => ci::test(),
        "tools" => tools::install_all().and_then(|_| tools::ensure_cargo_deny()),
        "bench" => ci::bench(&args[1..]),
        "tidy" => tidy::check(&project_root()),
        "dist" => dist::dist(&args[1..]),
        "deny" => tools::ensure_cargo_deny().and_then(|()| run(cargo().args(["deny", "check"]))),
        "help" | "-h" | "--help" => {
            print!("{HELP}");
            Ok(())
        }
        other => Err(anyhow::anyhow!("unknown task `{other}`\n\n{HELP}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root (the parent of this crate).
#[must_use]
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// `cargo` as this xtask was run with, in the workspace root.
#[must_use]
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(project_root());
    cmd
}

/// Runs a command, echoing it, and fails with its status.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("$ {}", display(cmd));
    let status = cmd.status().with_context(|| format!("cannot start `{}`", display(cmd)))?;
    if !status.success() {
        bail!("`{}` failed with {status}", display(cmd));
    }
    Ok(())
}

fn display(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}
