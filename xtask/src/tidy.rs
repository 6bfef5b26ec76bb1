//! Repository hygiene that tests and clippy do not cover.
//!
//! Runs as `cargo xtask tidy` and as a `#[test]`, so a plain `cargo test`
//! catches it too.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use anyhow::{Context as _, bail};

/// Checks the tree at `root`; the error lists every problem found.
pub fn check(root: &Path) -> anyhow::Result<()> {
    let mut problems = String::new();
    let mut problem = |msg: String| {
        let _ = writeln!(problems, "  - {msg}");
    };

    // Every member inherits the workspace lints and dependencies.
    let mut manifests =
        vec![root.join("xtask/Cargo.toml"), root.join("benches/Cargo.toml"), root.join("tests/Cargo.toml")];
    for entry in fs::read_dir(root.join("crates")).context("reading crates/")? {
        let dir = entry?.path();
        if dir.is_dir() {
            let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let manifest = dir.join("Cargo.toml");
            let text =
                fs::read_to_string(&manifest).with_context(|| format!("reading {}", manifest.display()))?;
            if !text.contains(&format!("name = \"{name}\"")) {
                problem(format!("crates/{name}: the folder name must be the package name"));
            }
            manifests.push(manifest);
        }
    }
    for manifest in &manifests {
        let text = fs::read_to_string(manifest).with_context(|| format!("reading {}", manifest.display()))?;
        let shown = manifest.strip_prefix(root).unwrap_or(manifest).display();
        if !text.contains("[lints]\nworkspace = true") {
            problem(format!("{shown}: missing `[lints] workspace = true`"));
        }
        for line in section(&text, "dependencies").chain(section(&text, "dev-dependencies")) {
            if line.contains('=') && !line.contains("workspace = true") && !line.trim_start().starts_with('#')
            {
                problem(format!("{shown}: `{}` must come from [workspace.dependencies]", line.trim()));
            }
        }
    }

    // ARCHITECTURE.md names every crate, so the code map stays true.
    let architecture = fs::read_to_string(root.join("ARCHITECTURE.md")).context("reading ARCHITECTURE.md")?;
    for manifest in manifests.iter().filter(|m| m.starts_with(root.join("crates"))) {
        if let Some(name) = manifest.parent().and_then(Path::file_name) {
            let name = name.to_string_lossy();
            if !architecture.contains(&format!("`{name}`")) {
                problem(format!("ARCHITECTURE.md does not describe crate `{name}`"));
            }
        }
    }

    // README opens with the two commands a new user needs.
    let readme = fs::read_to_string(root.join("README.md")).context("reading README.md")?;
    let first_block: Vec<&str> = readme
        .split("```")
        .nth(1)
        .unwrap_or_default()
        .lines()
        .skip(1)
        .map(|l| l.split(" #").next().unwrap_or_default().trim())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    if first_block != ["cargo run -p plumline -- demo", "cargo xtask ci"] {
        problem(format!(
            "README.md's first code block must be the demo and test commands, found {first_block:?}"
        ));
    }

    // .ci/run calls the README's test command and little else.
    let ci = fs::read_to_string(root.join(".ci/run")).context("reading .ci/run")?;
    if !ci.lines().any(|l| l.trim_start().starts_with("cargo xtask ci") || l.contains("exec cargo xtask ci"))
    {
        problem(".ci/run must run `cargo xtask ci`".to_owned());
    }

    // Every metric name of the contract is defined by the exporter crate.
    let metrics_src = read_tree(&root.join("crates/plumline-metrics/src"))?;
    for name in [
        "plum_fuse_calls_total",
        "plum_fuse_call_duration_seconds",
        "plum_fuse_up",
        "plum_fuse_exporter_last_success_timestamp_seconds",
    ] {
        if !metrics_src.contains(name) {
            problem(format!("crates/plumline-metrics does not define the contract's metric `{name}`"));
        }
    }

    // No generated data committed by accident.
    for dir in ["crates", "tests", "benches", "deploy"] {
        find_files(&root.join(dir), &mut |path| {
            if path.extension().is_some_and(|e| e == "parquet") {
                problem(format!("{}: Parquet output must not live in the tree", path.display()));
            }
        })?;
    }

    if problems.is_empty() { Ok(()) } else { bail!("tidy found problems:\n{problems}") }
}

/// The lines of a TOML `[name]` table.
fn section<'a>(text: &'a str, name: &str) -> impl Iterator<Item = &'a str> {
    let header = format!("[{name}]");
    text.lines()
        .skip_while(move |l| l.trim() != header)
        .skip(1)
        .take_while(|l| !l.trim_start().starts_with('['))
}

fn read_tree(dir: &Path) -> anyhow::Result<String> {
    let mut all = String::new();
    find_files(dir, &mut |path| {
        if path.extension().is_some_and(|e| e == "rs") {
            all.push_str(&fs::read_to_string(path).unwrap_or_default());
        }
    })?;
    Ok(all)
}

fn find_files(dir: &Path, f: &mut dyn FnMut(&Path)) -> anyhow::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "target" || n == ".venv") {
                continue;
            }
            find_files(&path, f)?;
        } else {
            f(&path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn tidy() {
        if let Err(e) = super::check(&crate::project_root()) {
            panic!("{e:#}");
        }
    }
}
