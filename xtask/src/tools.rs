//! Installing what the end-to-end tests need on a fresh machine.
//!
//! Every tool is pinned, and every step is idempotent: a tool already there
//! in the pinned version is left alone, and `apt-get update` runs at most
//! once, and only when a Debian package is missing.

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
    /// Azurite's blob service (`azurite-blob`, a node script).
    pub azurite: PathBuf,
}

/// Python packages the lake, object-store and reader tests use, pinned.
/// `pip index versions NAME` lists what `PyPI` offers.
const PYTHON_PACKAGES: &[(&str, &str, &str)] = &[
    // (requirement name, distribution name for importlib.metadata, version)
    ("pyarrow", "pyarrow", "26.0.1"),
    ("duckdb", "duckdb", "2.0.1"),
    ("polars", "polars", "2.1.0"),
    ("pyspark", "pyspark", "4.3.0"),
    ("moto[server]", "moto", "5.2.5"),
    ("boto3", "boto3", "1.44.8"),
    ("azure-storage-blob", "azure-storage-blob", "12.31.1"),
];

/// Azurite, Microsoft's Azure Storage emulator, from npm.
/// 3.35 is the newest whose `engines` admit Node.js 20, the machine's (3.36 wants 21, 3.37 wants 22).
const AZURITE_VERSION: &str = "3.35.0";

/// The Java that pyspark 4 runs on (Java 17 or later).
const JAVA_PACKAGE: &str = "openjdk-17-jre-headless";
const JAVA_MIN_MAJOR: u32 = 17;

/// Installs (if missing) the Debian packages (Prometheus, Java, npm), the
/// venv and Azurite.
pub fn install_all() -> anyhow::Result<Tools> {
    let mut apt = Vec::new();
    if which(&["promtool"]).is_none() || which(&["prometheus"]).is_none() {
        apt.push("prometheus");
    }
    if java_major().is_none_or(|major| major < JAVA_MIN_MAJOR) {
        apt.push(JAVA_PACKAGE);
    }
    if which(&["npm"]).is_none() || which(&["node"]).is_none() {
        apt.extend(["nodejs", "npm"]);
    }
    apt_install(&apt)?;
    let (Some(promtool), Some(prometheus)) = (which(&["promtool"]), which(&["prometheus"])) else {
        bail!("installed `prometheus` but promtool/prometheus are still not on PATH");
    };
    match java_major() {
        Some(major) if major >= JAVA_MIN_MAJOR => {}
        found => bail!(
            "pyspark needs Java {JAVA_MIN_MAJOR}+ on PATH, found {found:?}: install Debian's {JAVA_PACKAGE}"
        ),
    }
    let python = ensure_venv()?;
    let azurite = ensure_azurite()?;
    Ok(Tools { python, promtool, prometheus, azurite })
}

/// One `apt-get update` and one `apt-get install` for what is missing.
fn apt_install(packages: &[&str]) -> anyhow::Result<()> {
    if packages.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "missing tools: install Debian's {} (sudo apt-get install {}) and rerun",
            packages.join(", "),
            packages.join(" ")
        );
    }
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    // The prometheus package may start a system service on 9090; our tests
    // start their own on free ports.
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

/// The major version of `java` on PATH (`java -version` prints
/// `openjdk version "17.0.15" …` on stderr).
fn java_major() -> Option<u32> {
    let out = Command::new(which(&["java"])?).arg("-version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stderr);
    let version = text.split('"').nth(1)?;
    let major = version.strip_prefix("1.").unwrap_or(version);
    major.split(['.', '-', '+']).next()?.parse().ok()
}

fn ensure_venv() -> anyhow::Result<PathBuf> {
    let venv = project_root().join(".venv");
    let python = venv.join("bin").join("python");
    if !python.exists() {
        let system_python = which(&["python3", "python"])
            .context("no python3 on PATH: install Python 3.10+ (e.g. apt-get install python3-venv)")?;
        run(Command::new(system_python).args(["-m", "venv"]).arg(&venv))?;
    }
    // The pins, checked against what is installed: reinstall only on a mismatch.
    let want = python_list(PYTHON_PACKAGES.iter().map(|(_, dist, version)| (*dist, *version)));
    let check =
        format!("import importlib.metadata as m, sys\nsys.exit(any(m.version(n) != v for n, v in {want}))");
    if Command::new(&python).args(["-c", &check]).output().is_ok_and(|o| o.status.success()) {
        return Ok(python);
    }
    run(Command::new(&python)
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
        .args(PYTHON_PACKAGES.iter().map(|(req, _, version)| format!("{req}=={version}"))))?;
    Ok(python)
}

/// `[("a", "1"), …]` as a Python literal.
fn python_list<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let items: Vec<String> = pairs.map(|(a, b)| format!("({a:?}, {b:?})")).collect();
    format!("[{}]", items.join(", "))
}

/// Azurite in `.ci-tools/azurite` (npm, pinned); returns its blob service.
fn ensure_azurite() -> anyhow::Result<PathBuf> {
    let prefix = project_root().join(".ci-tools").join("azurite");
    let bin = prefix.join("node_modules").join(".bin").join("azurite-blob");
    let manifest = prefix.join("node_modules").join("azurite").join("package.json");
    let installed = std::fs::read_to_string(&manifest)
        .is_ok_and(|text| text.contains(&format!("\"version\": \"{AZURITE_VERSION}\"")));
    if installed && is_executable(&bin) {
        return Ok(bin);
    }
    std::fs::create_dir_all(&prefix).with_context(|| format!("creating {}", prefix.display()))?;
    run(Command::new("npm")
        .args(["install", "--prefix"])
        .arg(&prefix)
        .args(["--no-audit", "--no-fund", "--loglevel=error"])
        .arg(format!("azurite@{AZURITE_VERSION}")))?;
    if !is_executable(&bin) {
        bail!("npm installed azurite@{AZURITE_VERSION} but {} is missing", bin.display());
    }
    Ok(bin)
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
