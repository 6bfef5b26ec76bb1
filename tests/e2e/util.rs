//! Helpers shared by the end-to-end tests.

#![allow(dead_code, reason = "each area uses a different subset")]

use std::path::PathBuf;
use std::process::{Command, Output};

/// The path of an external tool named by environment variable `var`
/// (`PLUMLINE_TEST_PYTHON`, `PLUMLINE_TEST_PROMTOOL`, `PLUMLINE_TEST_PROMETHEUS`).
///
/// `cargo xtask ci` installs the tools and sets these variables together with
/// `PLUMLINE_REQUIRE_EXTERNAL=1`, under which a missing tool fails the test.
/// Under a bare `cargo test` a missing tool skips the test with a note on
/// stderr, so contributors without the tools can still run the rest.
pub fn external_tool(var: &str) -> Option<PathBuf> {
    match std::env::var_os(var).map(PathBuf::from) {
        Some(path) if path.exists() => Some(path),
        found => {
            let required = std::env::var("PLUMLINE_REQUIRE_EXTERNAL").is_ok_and(|v| v == "1");
            assert!(
                !required,
                "{var} is {found:?}, which does not exist, and PLUMLINE_REQUIRE_EXTERNAL=1: run `cargo xtask ci` to install it"
            );
            #[allow(clippy::print_stderr, reason = "a skipped test must say so")]
            {
                eprintln!("SKIPPED: {var} is not set; run `cargo xtask ci` to run this test with its tools");
            }
            None
        }
    }
}

/// Runs a command and returns its output, panicking with the command line,
/// status, stdout and stderr when it fails, so a failure can be diagnosed
/// without rerunning.
pub fn run_ok(cmd: &mut Command) -> Output {
    let output = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        output.status.success(),
        "command failed: {cmd:?}\nstatus: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A free TCP port on 127.0.0.1 (bound then released; good enough for tests
/// that start a server of their own on it right away).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port on 127.0.0.1");
    listener.local_addr().expect("local addr").port()
}

/// The `plumline` binary that `cargo test --workspace` builds next to this
/// test binary (`target/<profile>/plumline`), or `None` (the test skips) when
/// it was not built: run `cargo build -p plumline` first when testing only
/// this crate. Under `PLUMLINE_REQUIRE_EXTERNAL=1` a missing binary fails.
pub fn plumline_bin() -> Option<PathBuf> {
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/<profile>/deps/e2e-<hash> -> target/<profile>/plumline
    let bin = exe.parent().and_then(std::path::Path::parent).map(|dir| dir.join("plumline"));
    match bin {
        Some(bin) if bin.is_file() => Some(bin),
        found => {
            let required = std::env::var("PLUMLINE_REQUIRE_EXTERNAL").is_ok_and(|v| v == "1");
            assert!(!required, "the plumline binary is not at {found:?}: `cargo test --workspace` builds it");
            #[allow(clippy::print_stderr, reason = "a skipped test must say so")]
            {
                eprintln!("SKIPPED: no plumline binary at {found:?}; run `cargo build -p plumline` first");
            }
            None
        }
    }
}

/// `plumline` with `args`, talking to the simulator at `base_url` with the
/// demo credentials, with no `RUST_LOG`, no stdin and no cloud variables from
/// the caller's environment (a test adds the ones it means).
pub fn plumline(bin: &std::path::Path, base_url: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .env("PLUM_BASE_URL", base_url)
        .env("PLUM_EMAIL", plumline_sim::DEMO_EMAIL)
        .env("PLUM_DEVELOPER_KEY", plumline_sim::DEMO_KEY)
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null());
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if ["AWS_", "AZURE_", "GOOGLE_", "STORAGE_EMULATOR_HOST"].iter().any(|p| name.starts_with(p)) {
            cmd.env_remove(name.as_ref());
        }
    }
    cmd
}

/// Runs a command on tokio's blocking pool (so an in-process server on the
/// test's runtime keeps serving) and returns its output; see [`run_ok`].
pub async fn run_ok_async(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || run_ok(&mut cmd)).await.expect("the command's thread")
}
