//! Installing what the end-to-end tests need on a fresh machine.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

use crate::{project_root, run};

/// Paths of the installed external tools.
#[derive(Debug)]
pub struct Tools {
    pub python: PathBuf,
    pub promtool: PathBuf,
    pub prometheus: PathBuf,
}

/// Python packages the lake and object-store tests use.
const PYTHON_PACKAGES: &[&str] = &["pyarrow", "duckdb", "moto[server]"];

/// Installs (if missing) the venv, Prometheus and cargo-deny.
pub fn install_all() -> anyhow::Result<Tools> {
    let python = ensure_venv()?;
    let (promtool, prometheus) = ensure_prometheus()?;
    Ok(Tools { python, promtool, prometheus })
}

fn ensure_venv() -> anyhow::Result<PathBuf> {
    let venv = project_root().join(".venv");
    let python = venv.join("bin").join("python");
    let check = "import pyarrow, duckdb, moto.server";
    if python.exists() && Command::new(&python).args(["-c", check]).output().is_ok_and(|o| o.status.success())
    {
        return Ok(python);
    }
    let system_python = which(&["python3", "python"])
        .context("no python3 on PATH: install Python 3.9+ (e.g. apt-get install python3-venv)")?;
    run(Command::new(system_python).args(["-m", "venv"]).arg(&venv))?;
    run(Command::new(&python)
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
        .args(PYTHON_PACKAGES))?;
    Ok(python)
}

fn ensure_prometheus() -> anyhow::Result<(PathBuf, PathBuf)> {
    if let (Some(promtool), Some(prometheus)) = (which(&["promtool"]), which(&["prometheus"])) {
        return Ok((promtool, prometheus));
    }
    if !is_root() {
        bail!(
            "promtool/prometheus not found: install Debian's `prometheus` package (sudo apt-get install prometheus) and rerun"
        );
    }
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends", "prometheus"])
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    // The package may start a system service on 9090; our tests start their own on free ports.
    match (which(&["promtool"]), which(&["prometheus"])) {
        (Some(promtool), Some(prometheus)) => Ok((promtool, prometheus)),
        _ => bail!("installed `prometheus` but promtool/prometheus are still not on PATH"),
    }
}

/// Installs cargo-deny with `cargo install --locked` if it is missing.
pub fn ensure_cargo_deny() -> anyhow::Result<()> {
    let present = crate::cargo().args(["deny", "--version"]).output().is_ok_and(|o| o.status.success());
    if !present {
        run(crate::cargo().args(["install", "--locked", "cargo-deny"]))?;
    }
    Ok(())
}

fn which(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names
        .iter()
        .find_map(|name| std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| is_executable(p)))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    path.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}
