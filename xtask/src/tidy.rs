//! Repository hygiene that tests and clippy do not cover.
//!
//! Runs as `cargo xtask tidy` and as a `#[test]`, so a plain `cargo test`
//! catches it too.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::Command;

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

    // The invariants of ARCHITECTURE.md that the build can check.
    for msg in architecture_problems(root)? {
        problem(msg);
    }

    if problems.is_empty() { Ok(()) } else { bail!("tidy found problems:\n{problems}") }
}

/// The invariants of ARCHITECTURE.md that tidy enforces: the dependency
/// directions (from `cargo metadata`), the simulator's place in the CLI,
/// and the cancellation docs of every `pub async fn`.
fn architecture_problems(root: &Path) -> anyhow::Result<Vec<String>> {
    let mut problems = Vec::new();
    // The dependency directions of ARCHITECTURE.md, from `cargo metadata`.
    let metadata = cargo_metadata(root)?;
    for msg in dependency_problems(&metadata, root)? {
        problems.push(msg);
    }

    // In the CLI, only the subcommands that embed the simulator use it.
    let mut cli_files = Vec::new();
    find_files(&root.join("crates/plumline/src"), &mut |path| {
        if path.extension().is_some_and(|e| e == "rs") {
            let shown = path.strip_prefix(root).unwrap_or(path).to_string_lossy().replace('\\', "/");
            cli_files.push((shown, fs::read_to_string(path).unwrap_or_default()));
        }
    })?;
    for msg in sim_use_problems(&cli_files) {
        problems.push(msg);
    }

    // Every `pub async fn` says what dropping its future does.
    let crates_dir = root.join("crates");
    let mut sources = Vec::new();
    for entry in fs::read_dir(&crates_dir).context("reading crates/")? {
        let src = entry?.path().join("src");
        find_files(&src, &mut |path| {
            if path.extension().is_some_and(|e| e == "rs") {
                sources.push(path.to_path_buf());
            }
        })?;
    }
    sources.sort();
    for path in &sources {
        let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let shown = path.strip_prefix(root).unwrap_or(path).display().to_string();
        for msg in cancel_safety_problems(&shown, &text) {
            problems.push(msg);
        }
    }
    Ok(problems)
}

/// The production crates: every member under `crates/`. `xtask`, `benches`
/// and `tests` are internal tools and exempt.
const PRODUCTION: [&str; 5] =
    ["plumline-api", "plumline-sim", "plumline-export", "plumline-metrics", "plumline"];

/// The CLI: the one crate that may depend on the crates in [`CLI_ONLY`] and
/// on the simulator (for `plumline demo` and `plumline sim`).
const CLI: &str = "plumline";

/// Normal dependencies only the CLI may have (ARCHITECTURE.md, `plumline`:
/// the only crate that installs global state and prints).
const CLI_ONLY: [&str; 3] = ["clap", "indicatif", "tracing-subscriber"];

/// HTTP client and server crates, which the export crate does without (its
/// object stores speak HTTP through `object_store`).
const HTTP: [&str; 3] = ["reqwest", "hyper", "hyper-util"];

/// The CLI's files that may use `plumline_sim`.
const SIM_USERS_IN_CLI: [&str; 2] = ["crates/plumline/src/cmd/demo.rs", "crates/plumline/src/cmd/sim.rs"];

/// `cargo metadata --no-deps` of the workspace at `root`.
fn cargo_metadata(root: &Path) -> anyhow::Result<serde_json::Value> {
    let output = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline", "--manifest-path"])
        .arg(root.join("Cargo.toml"))
        .current_dir(root)
        .output()
        .context("cannot run `cargo metadata`")?;
    if !output.status.success() {
        bail!("`cargo metadata` failed: {}", String::from_utf8_lossy(&output.stderr).trim());
    }
    serde_json::from_slice(&output.stdout).context("parsing `cargo metadata`")
}

/// The dependency directions ARCHITECTURE.md states, checked on the direct
/// normal (not dev, not build) dependencies of the workspace's members in
/// `metadata` (`cargo metadata --format-version 1` JSON) at `root`.
fn dependency_problems(metadata: &serde_json::Value, root: &Path) -> anyhow::Result<Vec<String>> {
    let mut problems = Vec::new();
    let packages = metadata["packages"].as_array().context("`cargo metadata` has no `packages`")?;
    let mut seen = Vec::new();
    for package in packages {
        let name = package["name"].as_str().context("a package without a name")?;
        let manifest = Path::new(package["manifest_path"].as_str().unwrap_or_default());
        // Only the members under `crates/` are production crates.
        if !manifest.starts_with(root.join("crates")) {
            continue;
        }
        seen.push(name.to_owned());
        let normal = package["dependencies"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|d| d["kind"].is_null())
            .filter_map(|d| d["name"].as_str());
        for dep in normal {
            if name == "plumline-api"
                && (dep.starts_with("arrow") || dep == "parquet" || dep.starts_with("prometheus"))
            {
                problems.push(format!(
                    "crate `{name}` depends on `{dep}`: ARCHITECTURE.md says the API crate knows nothing of \
                     Arrow, Parquet or Prometheus"
                ));
            } else if dep.starts_with("prometheus") && name != "plumline-metrics" {
                problems.push(format!(
                    "crate `{name}` depends on `{dep}`: ARCHITECTURE.md says `plumline-metrics` is the only \
                     crate that knows Prometheus"
                ));
            }
            if name == "plumline-export" && HTTP.contains(&dep) {
                problems.push(format!(
                    "crate `{name}` depends on `{dep}`: ARCHITECTURE.md says the export crate never builds \
                     HTTP requests; it pages through `PageSource`"
                ));
            }
            if dep == "plumline-sim" && name != CLI {
                problems.push(format!(
                    "crate `{name}` depends on `{dep}`: ARCHITECTURE.md says the simulator is a library for \
                     tests, benches, the demo and `plumline sim`; production code never depends on it (a \
                     dev-dependency is fine)"
                ));
            }
            if CLI_ONLY.contains(&dep) && name != CLI {
                problems.push(format!(
                    "crate `{name}` depends on `{dep}`: ARCHITECTURE.md says only the CLI (`plumline`) \
                     parses flags, shows progress and installs the tracing subscriber"
                ));
            }
        }
    }
    for expected in PRODUCTION {
        if !seen.iter().any(|s| s == expected) {
            problems.push(format!(
                "`cargo metadata` does not list the production crate `{expected}` under crates/"
            ));
        }
    }
    Ok(problems)
}

/// Files of the CLI (`(path from the root, text)`) that use `plumline_sim`
/// outside [`SIM_USERS_IN_CLI`].
fn sim_use_problems(files: &[(String, String)]) -> Vec<String> {
    files
        .iter()
        .filter(|(shown, text)| {
            text.contains("plumline_sim::") && !SIM_USERS_IN_CLI.contains(&shown.as_str())
        })
        .map(|(shown, _)| {
            format!(
                "{shown} uses `plumline_sim`: ARCHITECTURE.md says production code paths never depend on the \
                 simulator; in the CLI only {SIM_USERS_IN_CLI:?} (`plumline demo`, `plumline sim`) may"
            )
        })
        .collect()
}

/// Every `pub async fn` in `text` (a Rust file shown as `shown`) must have a
/// `# Cancel safety` heading in the doc comment right above it (attributes
/// may stand between).
fn cancel_safety_problems(shown: &str, text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut problems = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(rest) = line.trim_start().strip_prefix("pub async fn ") else { continue };
        let fn_name = rest.split(|c: char| !(c.is_alphanumeric() || c == '_')).next().unwrap_or_default();
        let mut documented = false;
        let mut in_attribute = false;
        for above in lines[..i].iter().rev().map(|l| l.trim()) {
            if in_attribute {
                if above.contains(['{', '}', ';']) {
                    break;
                }
                in_attribute = !above.starts_with("#[");
            } else if let Some(doc) = above.strip_prefix("///") {
                if doc.trim() == "# Cancel safety" {
                    documented = true;
                    break;
                }
            } else if above.starts_with("#[") {
                // A one-line attribute.
            } else if above.ends_with(']') {
                // The last line of an attribute spread over several lines.
                in_attribute = true;
            } else {
                break;
            }
        }
        if !documented {
            problems.push(format!(
                "{shown}:{}: `pub async fn {fn_name}` has no `# Cancel safety` section in its doc comment \
                 (ARCHITECTURE.md: public async fns document what dropping them does)",
                i + 1
            ));
        }
    }
    problems
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
    use std::path::Path;

    use super::{cancel_safety_problems, dependency_problems, sim_use_problems};

    #[test]
    fn tidy() {
        if let Err(e) = super::check(&crate::project_root()) {
            panic!("{e:#}");
        }
    }

    /// A fake `cargo metadata` of a workspace at `/ws` as ARCHITECTURE.md
    /// wants it, plus the dependencies `extra` (`(name, kind)`) of
    /// `crate_name`.
    fn workspace(crate_name: &str, extra: &[(&str, Option<&str>)]) -> serde_json::Value {
        let package = |name: &str, folder: &str, deps: &[(&str, Option<&str>)]| {
            let deps: Vec<serde_json::Value> = deps
                .iter()
                .chain(if name == crate_name { extra } else { &[] })
                .map(|(dep, kind)| serde_json::json!({ "name": dep, "kind": kind, "optional": false }))
                .collect();
            serde_json::json!({
                "name": name,
                "manifest_path": format!("/ws/{folder}/Cargo.toml"),
                "dependencies": deps,
            })
        };
        serde_json::json!({
            "workspace_root": "/ws",
            "packages": [
                package("plumline-api", "crates/plumline-api", &[("reqwest", None), ("plumline-sim", Some("dev"))]),
                package("plumline-sim", "crates/plumline-sim", &[("plumline-api", None), ("hyper", None)]),
                package("plumline-export", "crates/plumline-export", &[("parquet", None), ("plumline-sim", Some("dev"))]),
                package("plumline-metrics", "crates/plumline-metrics", &[("prometheus", None), ("plumline-sim", Some("dev"))]),
                package(
                    "plumline",
                    "crates/plumline",
                    &[("clap", None), ("indicatif", None), ("tracing-subscriber", None), ("plumline-sim", None)],
                ),
                package("xtask", "xtask", &[("clap", None)]),
                package("benches", "benches", &[("plumline-sim", None), ("tracing-subscriber", None)]),
                package("tests", "tests", &[("plumline-sim", Some("dev"))]),
            ],
        })
    }

    fn dependency_check(metadata: &serde_json::Value) -> Vec<String> {
        match dependency_problems(metadata, Path::new("/ws")) {
            Ok(problems) => problems,
            Err(e) => panic!("{e:#}"),
        }
    }

    #[test]
    fn the_workspace_as_documented_passes_the_dependency_check() {
        assert_eq!(dependency_check(&workspace("", &[])), Vec::<String>::new());
        // Dev-dependencies and build tools are free to use anything.
        let dev = workspace("plumline-api", &[("arrow-array", Some("dev")), ("prometheus", Some("dev"))]);
        assert_eq!(dependency_check(&dev), Vec::<String>::new());
    }

    #[test]
    fn the_api_crate_may_not_depend_on_arrow_parquet_or_prometheus() {
        for dep in ["arrow-array", "arrow-schema", "parquet", "prometheus"] {
            let problems = dependency_check(&workspace("plumline-api", &[(dep, None)]));
            assert_eq!(problems.len(), 1, "{dep}: {problems:?}");
            assert!(
                problems[0].contains(&format!("crate `plumline-api` depends on `{dep}`")),
                "{problems:?}"
            );
            assert!(problems[0].contains("ARCHITECTURE.md"), "{problems:?}");
        }
    }

    #[test]
    fn only_the_metrics_crate_may_depend_on_prometheus() {
        for other in ["plumline-sim", "plumline-export", "plumline"] {
            let problems = dependency_check(&workspace(other, &[("prometheus", None)]));
            assert_eq!(problems.len(), 1, "{other}: {problems:?}");
            assert!(
                problems[0].contains(&format!("crate `{other}` depends on `prometheus`")),
                "{problems:?}"
            );
        }
    }

    #[test]
    fn the_export_crate_may_not_depend_on_an_http_crate() {
        for dep in ["reqwest", "hyper", "hyper-util"] {
            let problems = dependency_check(&workspace("plumline-export", &[(dep, None)]));
            assert_eq!(problems.len(), 1, "{dep}: {problems:?}");
            assert!(
                problems[0].contains(&format!("crate `plumline-export` depends on `{dep}`")),
                "{problems:?}"
            );
        }
    }

    #[test]
    fn only_the_cli_may_depend_on_the_simulator() {
        for library in ["plumline-api", "plumline-export", "plumline-metrics"] {
            let problems = dependency_check(&workspace(library, &[("plumline-sim", None)]));
            assert_eq!(problems.len(), 1, "{library}: {problems:?}");
            assert!(
                problems[0].contains(&format!("crate `{library}` depends on `plumline-sim`")),
                "{problems:?}"
            );
        }
    }

    #[test]
    fn only_the_cli_may_depend_on_clap_indicatif_and_tracing_subscriber() {
        for library in ["plumline-api", "plumline-sim", "plumline-export", "plumline-metrics"] {
            for dep in ["clap", "indicatif", "tracing-subscriber"] {
                let problems = dependency_check(&workspace(library, &[(dep, None)]));
                assert_eq!(problems.len(), 1, "{library} {dep}: {problems:?}");
                assert!(
                    problems[0].contains(&format!("crate `{library}` depends on `{dep}`")),
                    "{problems:?}"
                );
            }
        }
    }

    #[test]
    fn a_missing_production_crate_is_reported() {
        let mut m = workspace("", &[]);
        if let Some(packages) = m["packages"].as_array_mut() {
            packages.retain(|p| p["name"] != "plumline-metrics");
        }
        let problems = dependency_check(&m);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("`plumline-metrics`"), "{problems:?}");
    }

    #[test]
    fn only_demo_and_sim_of_the_cli_use_the_simulator() {
        let files = |path: &str| {
            vec![
                ("crates/plumline/src/cmd/demo.rs".to_owned(), "use plumline_sim::SimServer;".to_owned()),
                ("crates/plumline/src/cmd/sim.rs".to_owned(), "plumline_sim::BASE_PATH".to_owned()),
                ("crates/plumline/src/main.rs".to_owned(), r#"let f = "plumline_sim=info";"#.to_owned()),
                (path.to_owned(), "let s = plumline_sim::Simulator::new(c);".to_owned()),
            ]
        };
        assert_eq!(sim_use_problems(&files("crates/plumline/src/cmd/demo.rs")), Vec::<String>::new());
        let problems = sim_use_problems(&files("crates/plumline/src/cmd/export.rs"));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("crates/plumline/src/cmd/export.rs uses `plumline_sim`"),
            "{problems:?}"
        );
    }

    #[test]
    fn a_pub_async_fn_without_a_cancel_safety_section_is_reported() {
        let source = "\
/// Does a thing.
///
/// # Errors
/// Sometimes.
pub async fn undocumented() {}

/// # Cancel safety
/// Dropping it is fine.
fn sync_one() {}
pub async fn after_code() {}

impl X {
    /// Serves.
    ///
    /// # Cancel safety
    /// Dropping the future closes the listener.
    #[must_use]
    #[allow(
        clippy::too_many_arguments,
        reason = \"test\"
    )]
    pub async fn documented(&self) {}

    pub(crate) async fn internal() {}
    async fn private() {}
}
";
        let problems = cancel_safety_problems("src/x.rs", source);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with("src/x.rs:5: `pub async fn undocumented`"), "{problems:?}");
        assert!(problems[1].starts_with("src/x.rs:10: `pub async fn after_code`"), "{problems:?}");
        assert!(problems.iter().all(|p| p.contains("# Cancel safety")), "{problems:?}");
    }
}
