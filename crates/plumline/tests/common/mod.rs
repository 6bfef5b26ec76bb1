//! Helpers for the CLI tests: run the real binary against an in-process
//! simulator, and print everything on failure.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::process::{Command, Output, Stdio};

use plumline_sim::{DEMO_EMAIL, DEMO_KEY, SimConfig, SimServer};

/// A simulator on 127.0.0.1, port 0.
pub async fn sim(config: SimConfig) -> SimServer {
    SimServer::start(config, "127.0.0.1:0".parse().expect("addr")).await.expect("simulator starts")
}

/// `plumline` with the environment pointing at `server` and nothing
/// inherited that could change its behaviour.
pub fn plumline(server: &SimServer) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_plumline"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("PLUM_BASE_URL", server.base_url())
        .env("PLUM_EMAIL", DEMO_EMAIL)
        .env("PLUM_DEVELOPER_KEY", DEMO_KEY)
        .stdin(Stdio::null());
    cmd
}

/// A simulator on its own runtime, for tests that block on the binary
/// (plain `#[test]`s); shut down on drop.
pub struct BlockingSim {
    server: Option<SimServer>,
    runtime: tokio::runtime::Runtime,
}

impl BlockingSim {
    pub fn start(config: SimConfig) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let server = Some(runtime.block_on(sim(config)));
        BlockingSim { server, runtime }
    }

    pub fn server(&self) -> &SimServer {
        self.server.as_ref().expect("running")
    }

    /// `plumline` pointed at this simulator, as [`plumline`].
    pub fn plumline(&self) -> Command {
        plumline(self.server())
    }
}

impl Drop for BlockingSim {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            self.runtime.block_on(server.shutdown());
        }
    }
}

/// Runs `cmd` on this thread (for plain `#[test]`s; see [`output`]).
pub fn output_blocking(mut cmd: Command) -> (Command, Output) {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    (cmd, out)
}

/// Runs on this thread and expects success; returns the output.
pub fn run_ok_blocking(cmd: Command) -> Output {
    let (cmd, out) = output_blocking(cmd);
    assert!(out.status.success(), "expected success\n{}", describe(&cmd, &out));
    out
}

/// The binary with an empty environment.
pub fn plumline_bare() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_plumline"));
    cmd.env_clear().env("PATH", std::env::var_os("PATH").unwrap_or_default()).stdin(Stdio::null());
    cmd
}

/// Runs `cmd` off the async runtime (the simulator keeps serving).
pub async fn output(mut cmd: Command) -> (Command, Output) {
    tokio::task::spawn_blocking(move || {
        let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
        (cmd, out)
    })
    .await
    .expect("runner thread")
}

/// Describes a run for assertion messages.
pub fn describe(cmd: &Command, out: &Output) -> String {
    format!(
        "command: {cmd:?}\nstatus: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs and expects success; returns stdout.
pub async fn run_ok(cmd: Command) -> String {
    let (cmd, out) = output(cmd).await;
    assert!(out.status.success(), "expected success\n{}", describe(&cmd, &out));
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

/// Runs and expects a clean failure: non-zero exit, no panic, and an
/// `error: …` line on stderr containing `needle`. Returns stderr.
pub async fn run_err(cmd: Command, needle: &str) -> String {
    let (cmd, out) = output(cmd).await;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let ctx = describe(&cmd, &out);
    assert!(!out.status.success(), "expected failure\n{ctx}");
    assert!(!stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"), "panicked\n{ctx}");
    let error_lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(error_lines.len(), 1, "expected exactly one `error:` line\n{ctx}");
    assert!(error_lines[0].contains(needle), "error line lacks {needle:?}\n{ctx}");
    stderr
}
