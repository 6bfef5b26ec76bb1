//! `cargo xtask dist`: the release binary with its shell completions, man
//! pages and SHA-256 checksums, in one folder a maintainer can publish.
//!
//! The completions and man pages come from the built binary itself
//! (`plumline completions SHELL`, `plumline man --dir`), so they always
//! describe the flags of the binary they ship with.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};
use sha2::{Digest as _, Sha256};

use crate::{cargo, project_root, run};

/// Shells completed, and the file name each expects.
const COMPLETIONS: [(&str, &str); 5] = [
    ("bash", "plumline.bash"),
    ("zsh", "_plumline"),
    ("fish", "plumline.fish"),
    ("elvish", "plumline.elv"),
    ("powershell", "_plumline.ps1"),
];

/// The name of the checksum file, in `sha256sum -c` format.
pub const CHECKSUMS: &str = "SHA256SUMS";

const USAGE: &str = "\
cargo xtask dist [--binary PATH] [--out DIR]

Builds plumline in release mode (or takes the binary at PATH) and assembles
DIR/plumline-<version>-<os>-<arch>/ (default DIR: target/dist) with:
  plumline                 the binary
  completions/             bash, zsh, fish, elvish and PowerShell scripts
  man/man1/                plumline.1 and one page per command
  README.md
  SHA256SUMS               checksums of all of the above (sha256sum -c SHA256SUMS)";

/// Runs `cargo xtask dist` with its arguments.
pub fn dist(args: &[String]) -> anyhow::Result<()> {
    let mut binary = None;
    let mut out = project_root().join("target").join("dist");
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--binary" => binary = Some(PathBuf::from(it.next().context("--binary needs a PATH")?)),
            "--out" => out = PathBuf::from(it.next().context("--out needs a DIR")?),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown argument `{other}`\n\n{USAGE}"),
        }
    }
    let binary = if let Some(path) = binary {
        path
    } else {
        run(cargo().args(["build", "--release", "--locked", "-p", "plumline"]))?;
        project_root()
            .join("target")
            .join("release")
            .join(format!("plumline{}", std::env::consts::EXE_SUFFIX))
    };
    let folder = assemble(&binary, &out, &[project_root().join("README.md")])?;
    println!("{}", folder.display());
    Ok(())
}

/// Assembles the release folder for `binary` under `out`, with `extra`
/// files copied beside it; returns the folder.
pub fn assemble(binary: &Path, out: &Path, extra: &[PathBuf]) -> anyhow::Result<PathBuf> {
    let version = output_of(Command::new(binary).arg("--version"))?;
    let version = version.split_whitespace().nth(1).context("`plumline --version` printed no version")?;
    let name = format!("plumline-{version}-{}-{}", std::env::consts::OS, std::env::consts::ARCH);
    let folder = out.join(&name);
    if folder.exists() {
        fs::remove_dir_all(&folder).with_context(|| format!("removing the old {}", folder.display()))?;
    }
    let completions = folder.join("completions");
    let man = folder.join("man").join("man1");
    fs::create_dir_all(&completions).with_context(|| format!("creating {}", completions.display()))?;
    fs::create_dir_all(&man).with_context(|| format!("creating {}", man.display()))?;

    let shipped = folder.join(binary.file_name().context("the binary has no file name")?);
    fs::copy(binary, &shipped).with_context(|| format!("copying {}", binary.display()))?;
    for (shell, file) in COMPLETIONS {
        let script = output_of(Command::new(binary).args(["completions", shell]))?;
        fs::write(completions.join(file), script)
            .with_context(|| format!("writing the {shell} completions"))?;
    }
    let status = Command::new(binary)
        .args(["man", "--dir"])
        .arg(&man)
        .status()
        .with_context(|| format!("running {} man", binary.display()))?;
    if !status.success() {
        bail!("`{} man --dir {}` failed with {status}", binary.display(), man.display());
    }
    for file in extra {
        let target = folder.join(file.file_name().context("an extra file has no name")?);
        fs::copy(file, &target).with_context(|| format!("copying {}", file.display()))?;
    }
    let sums = checksums(&folder)?;
    fs::write(folder.join(CHECKSUMS), sums).context("writing the checksums")?;
    Ok(folder)
}

/// `sha256sum`-style lines (`<hex>  <path>`) for every file under `folder`,
/// by path.
pub fn checksums(folder: &Path) -> anyhow::Result<String> {
    let mut files = Vec::new();
    collect(folder, folder, &mut files)?;
    files.sort();
    let mut out = String::new();
    for rel in files {
        if rel == CHECKSUMS {
            continue;
        }
        let bytes = fs::read(folder.join(&rel)).with_context(|| format!("reading {rel}"))?;
        let _ = writeln!(out, "{}  {rel}", sha256_hex(&bytes));
    }
    Ok(out)
}

/// The SHA-256 of `bytes`, in lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn collect(root: &Path, dir: &Path, files: &mut Vec<String>) -> anyhow::Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            collect(root, &path, files)?;
        } else if let Ok(rel) = path.strip_prefix(root) {
            files.push(
                rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/"),
            );
        }
    }
    Ok(())
}

fn output_of(cmd: &mut Command) -> anyhow::Result<String> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().with_context(|| format!("cannot run {shown}"))?;
    if !out.status.success() {
        bail!("{shown} failed with {}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    String::from_utf8(out.stdout).with_context(|| format!("{shown} printed something that is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_known_vectors() {
        assert_eq!(sha256_hex(b""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    /// A stand-in for the release binary: answers --version, completions
    /// and man as plumline does, without building it.
    #[cfg(unix)]
    fn fake_binary(dir: &Path) -> PathBuf {
        use std::os::unix::fs::PermissionsExt as _;
        let path = dir.join("plumline");
        let script = r#"#!/bin/sh
case "$1" in
  --version) echo "plumline 9.8.7" ;;
  completions) echo "completion script for $2" ;;
  man) mkdir -p "$3" && echo ".TH plumline 1" > "$3/plumline.1" && echo ".TH plumline-verify 1" > "$3/plumline-verify.1" ;;
  *) exit 3 ;;
esac
"#;
        fs::write(&path, script).expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
        path
    }

    #[cfg(unix)]
    #[test]
    fn assembles_a_folder_with_checksums_of_everything() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let binary = fake_binary(tmp.path());
        let readme = tmp.path().join("README.md");
        fs::write(&readme, "# plumline\n").expect("readme");
        let out = tmp.path().join("dist");
        let folder = assemble(&binary, &out, std::slice::from_ref(&readme)).expect("assemble");
        let name = folder.file_name().expect("name").to_string_lossy().into_owned();
        assert!(name.starts_with("plumline-9.8.7-"), "{name}");
        assert_eq!(
            fs::read_to_string(folder.join("completions/_plumline")).expect("zsh"),
            "completion script for zsh\n"
        );
        let sums = fs::read_to_string(folder.join(CHECKSUMS)).expect("sums");
        let listed: Vec<&str> = sums.lines().map(|l| l.split_once("  ").expect("two spaces").1).collect();
        assert_eq!(
            listed,
            [
                "README.md",
                "completions/_plumline",
                "completions/_plumline.ps1",
                "completions/plumline.bash",
                "completions/plumline.elv",
                "completions/plumline.fish",
                "man/man1/plumline-verify.1",
                "man/man1/plumline.1",
                "plumline",
            ]
        );
        for line in sums.lines() {
            let (hex, rel) = line.split_once("  ").expect("line");
            assert_eq!(hex, sha256_hex(&fs::read(folder.join(rel)).expect("read")), "{rel}");
        }
        // Assembling again replaces the folder, leaving nothing stale.
        fs::write(folder.join("stale"), "x").expect("write");
        let again = assemble(&binary, &out, &[]).expect("again");
        assert_eq!(again, folder);
        assert!(!folder.join("stale").exists() && !folder.join("README.md").exists());
        // A binary that fails is an error, not a half folder reported as done.
        let broken = tmp.path().join("broken");
        fs::write(&broken, "#!/bin/sh\nexit 1\n").expect("write");
        {
            use std::os::unix::fs::PermissionsExt as _;
            fs::set_permissions(&broken, fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        assert!(assemble(&broken, &out, &[]).is_err());
    }
}
