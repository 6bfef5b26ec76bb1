//! `ci`, `test` and `bench`.

use std::time::Instant;

use crate::{cargo, run, tidy, tools};

/// Everything CI runs, in order, timing each step.
pub fn ci() -> anyhow::Result<()> {
    let started = Instant::now();
    let mut timings = Vec::new();
    let mut step = |name: &str, f: &mut dyn FnMut() -> anyhow::Result<()>| -> anyhow::Result<()> {
        eprintln!("\n==> {name}");
        let t = Instant::now();
        f()?;
        timings.push((name.to_owned(), t.elapsed()));
        Ok(())
    };
    step("fmt", &mut || run(cargo().args(["fmt", "--all", "--", "--check"])))?;
    step("clippy", &mut || {
        run(cargo().args(["clippy", "--workspace", "--all-targets", "--locked", "--", "-D", "warnings"]))
    })?;
    step("doc (warnings denied)", &mut || {
        run(cargo().args(["doc", "--no-deps", "--workspace", "--locked"]).env("RUSTDOCFLAGS", "-D warnings"))
    })?;
    step("tidy", &mut || tidy::check(&crate::project_root()))?;
    step("test", &mut test)?;
    step("deny (licenses, bans, sources)", &mut || {
        tools::ensure_cargo_deny()?;
        run(cargo().args(["deny", "check", "licenses", "bans", "sources"]))
    })?;
    eprintln!("\nci passed in {:.0?}:", started.elapsed());
    for (name, took) in timings {
        eprintln!("  {name:<32} {took:>8.1?}");
    }
    Ok(())
}

/// The whole test suite, with the external tools the end-to-end tests need.
pub fn test() -> anyhow::Result<()> {
    let tools = tools::install_all()?;
    let mut cmd = cargo();
    cmd.args(["test", "--workspace", "--all-targets", "--locked"])
        .env("PLUMLINE_REQUIRE_EXTERNAL", "1")
        .env("PLUMLINE_TEST_PYTHON", &tools.python)
        .env("PLUMLINE_TEST_PROMTOOL", &tools.promtool)
        .env("PLUMLINE_TEST_PROMETHEUS", &tools.prometheus)
        .env("PLUMLINE_TEST_AZURITE", &tools.azurite);
    run(&mut cmd)?;
    // Doc tests are not part of --all-targets.
    run(cargo().args(["test", "--workspace", "--doc", "--locked"]))
}

/// The end-to-end export bench in release mode; prints its table.
/// The object-store scenarios start moto from the test venv, which this
/// installs if missing.
pub fn bench(extra: &[String]) -> anyhow::Result<()> {
    let tools = tools::install_all()?;
    run(cargo()
        .args(["run", "--release", "--locked", "-p", "benches", "--bin", "export-e2e", "--"])
        .args(extra)
        .env("PLUMLINE_BENCH_PYTHON", &tools.python))
}
