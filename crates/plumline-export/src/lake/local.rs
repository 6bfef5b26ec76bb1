//! [`LocalDir`]: a lake in a local directory.
//!
//! Small objects are written through a temp file and a rename (or a hard
//! link, which fails if the target exists, for create-if-absent), fsynced
//! only for state (claims are leases, worthless after a crash);
//! replace-if-unchanged holds an exclusive lock on a sibling `.lock` file
//! while it compares the content hash and renames. Data files are staged as
//! hidden temps named with the run's token, fsynced, and renamed into place
//! (then the directory is fsynced).

use std::fs::File;
use std::io::{self, Read as _, Seek as _, SeekFrom, Write as _};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use object_store::ObjectStore;
use object_store::path::Path as ObjPath;
use tracing::warn;

use super::layout::{is_temp_of, temp_name};
use super::{BoxFut, Destination, Stage, StageRecorder, StagedFile, Version, blocking};
use crate::error::ExportError;

/// Temp names of one process never repeat.
static SEQ: AtomicU64 = AtomicU64::new(0);

/// A lake in a local directory (created on first write).
#[derive(Debug, Clone)]
pub struct LocalDir {
    root: PathBuf,
    display: String,
}

impl LocalDir {
    /// The directory `root`.
    #[must_use]
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        let display = root.display().to_string();
        LocalDir { root, display }
    }

    fn path(&self, rel: &str) -> PathBuf {
        rel.split('/').fold(self.root.clone(), |p, part| p.join(part))
    }
}

/// A stable content hash (FNV-1a, 64 bits): the version of a local file.
fn content_version(bytes: &[u8]) -> Version {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    Version(format!("{h:016x}-{}", bytes.len()))
}

fn read_if_exists(path: &Path) -> Result<Option<Vec<u8>>, ExportError> {
    match std::fs::read(path) {
        Ok(raw) => Ok(Some(raw)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ExportError::io("reading", path, e)),
    }
}

/// A sibling temp of `target` for a small object.
fn small_temp(target: &Path) -> PathBuf {
    let name = target.file_name().and_then(|n| n.to_str()).unwrap_or("object");
    // The pid lets a later run of this machine see the writer is gone.
    let token = format!("{}-p{}", super::RunId::current().token, std::process::id());
    target.with_file_name(temp_name(name, &token, SEQ.fetch_add(1, Ordering::Relaxed)))
}

/// Writes `body` to a new temp beside `target` (fsynced if `durable`);
/// returns the temp.
fn write_temp(target: &Path, body: &[u8], durable: bool) -> Result<TempFile, ExportError> {
    let dir = target.parent().unwrap_or_else(|| Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| ExportError::io("creating", dir, e))?;
    let temp = TempFile::new(small_temp(target));
    let mut file = File::create(temp.path()).map_err(|e| ExportError::io("creating", temp.path(), e))?;
    file.write_all(body).map_err(|e| ExportError::io("writing", temp.path(), e))?;
    if durable {
        file.sync_all().map_err(|e| ExportError::io("syncing", temp.path(), e))?;
    }
    Ok(temp)
}

/// Writes `body` to `target` through a temp file and a rename; `durable`
/// adds the fsyncs that make it survive a power loss.
fn write_atomically(target: &Path, body: &[u8], durable: bool) -> Result<(), ExportError> {
    let temp = write_temp(target, body, durable)?;
    std::fs::rename(temp.path(), target).map_err(|e| ExportError::io("renaming into", target, e))?;
    temp.disarm();
    if durable { sync_dir(target.parent().unwrap_or_else(|| Path::new("."))) } else { Ok(()) }
}

/// Makes a rename in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), ExportError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| ExportError::io("syncing", dir, e))
}

impl Destination for LocalDir {
    fn display(&self) -> &str {
        &self.display
    }

    fn read(&self, rel: &str) -> BoxFut<'_, Result<Option<(Bytes, Version)>, ExportError>> {
        let path = self.path(rel);
        Box::pin(blocking(move || {
            Ok(read_if_exists(&path)?.map(|raw| {
                let version = content_version(&raw);
                (Bytes::from(raw), version)
            }))
        }))
    }

    fn create(&self, rel: &str, body: Bytes) -> BoxFut<'_, Result<Option<Version>, ExportError>> {
        let target = self.path(rel);
        Box::pin(blocking(move || {
            // Not fsynced: small objects created or replaced conditionally are
            // claims (leases, worthless after a crash) and the lake's zone
            // (recreated by the next run).
            let temp = write_temp(&target, &body, false)?;
            // A hard link never replaces an existing file: the atomic create.
            let created = match std::fs::hard_link(temp.path(), &target) {
                Ok(()) => true,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
                Err(e) => return Err(ExportError::io("creating", &target, e)),
            };
            drop(temp);
            Ok(created.then(|| content_version(&body)))
        }))
    }

    fn replace(
        &self,
        rel: &str,
        body: Bytes,
        expected: &Version,
    ) -> BoxFut<'_, Result<Option<Version>, ExportError>> {
        let target = self.path(rel);
        let expected = expected.clone();
        Box::pin(blocking(move || {
            let lock_path = target.with_extension("lock");
            let lock = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
                .map_err(|e| ExportError::io("opening", &lock_path, e))?;
            lock.lock().map_err(|e| ExportError::io("locking", &lock_path, e))?;
            let current = read_if_exists(&target)?;
            if current.as_deref().map(content_version) != Some(expected) {
                return Ok(None);
            }
            write_atomically(&target, &body, false)?;
            Ok(Some(content_version(&body)))
            // The lock is released when `lock` is closed.
        }))
    }

    fn write(&self, rel: &str, body: Bytes) -> BoxFut<'_, Result<(), ExportError>> {
        let target = self.path(rel);
        Box::pin(blocking(move || write_atomically(&target, &body, true)))
    }

    fn size(&self, rel: &str) -> BoxFut<'_, Result<Option<u64>, ExportError>> {
        let path = self.path(rel);
        Box::pin(blocking(move || match std::fs::metadata(&path) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ExportError::io("reading the size of", path, e)),
        }))
    }

    fn read_range(&self, rel: &str, range: Range<u64>) -> BoxFut<'_, Result<Bytes, ExportError>> {
        let path = self.path(rel);
        Box::pin(blocking(move || {
            let mut file = File::open(&path).map_err(|e| ExportError::io("opening", &path, e))?;
            file.seek(SeekFrom::Start(range.start)).map_err(|e| ExportError::io("reading", &path, e))?;
            let len = usize::try_from(range.end.saturating_sub(range.start)).unwrap_or(usize::MAX);
            let mut buf = vec![0; len];
            file.read_exact(&mut buf).map_err(|e| ExportError::io("reading", &path, e))?;
            Ok(Bytes::from(buf))
        }))
    }

    fn stage(
        &self,
        rel: &str,
        token: &str,
        record: StageRecorder,
    ) -> BoxFut<'_, Result<Box<dyn StagedFile>, ExportError>> {
        let target = self.path(rel);
        let (dir_rel, file) = rel.rsplit_once('/').unwrap_or(("", rel));
        let name = temp_name(file, token, SEQ.fetch_add(1, Ordering::Relaxed));
        let temp_rel = if dir_rel.is_empty() { name.clone() } else { format!("{dir_rel}/{name}") };
        let temp = self.path(&temp_rel);
        Box::pin(async move {
            // Write-ahead: the claim names the temp before it exists.
            record(Stage::Temp { path: temp_rel }).await?;
            let staged = blocking(move || {
                let dir = target.parent().unwrap_or_else(|| Path::new(".")).to_path_buf();
                std::fs::create_dir_all(&dir).map_err(|e| ExportError::io("creating", &dir, e))?;
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&temp)
                    .map_err(|e| ExportError::io("creating", &temp, e))?;
                Ok(LocalStaged { file, temp: TempFile::new(temp), target, dir })
            })
            .await?;
            Ok(Box::new(staged) as Box<dyn StagedFile>)
        })
    }

    fn discard(&self, stage: &Stage) -> BoxFut<'_, Result<(), ExportError>> {
        let path = match stage {
            Stage::Temp { path } => Some(self.path(path)),
            Stage::Upload { .. } => None,
        };
        Box::pin(blocking(move || {
            if let Some(path) = path {
                match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => {
                        return Err(ExportError::io("removing", path, e));
                    }
                    _ => {}
                }
            }
            Ok(())
        }))
    }

    fn sweep(&self, rel: &str, token: &str) -> BoxFut<'_, Result<usize, ExportError>> {
        let target = self.path(rel);
        let dir = target.parent().map_or_else(|| self.root.clone(), Path::to_path_buf);
        let own = format!(".{}.", target.file_name().and_then(|n| n.to_str()).unwrap_or_default());
        let token = token.to_owned();
        Box::pin(blocking(move || {
            let Ok(entries) = std::fs::read_dir(&dir) else { return Ok(0) };
            let mut removed = 0;
            for entry in entries.flatten() {
                if entry.file_name().to_str().is_some_and(|n| n.starts_with(&own) && is_temp_of(n, &token)) {
                    match std::fs::remove_file(entry.path()) {
                        Ok(()) => removed += 1,
                        Err(error) => {
                            warn!(path = %entry.path().display(), %error, "cannot remove a dead run's temp");
                        }
                    }
                }
            }
            Ok(removed)
        }))
    }

    fn sweep_stale(&self, dir_rel: &str) -> BoxFut<'_, Result<usize, ExportError>> {
        let dir = self.path(dir_rel);
        Box::pin(blocking(move || Ok(sweep_stale_small_temps(&dir))))
    }

    fn store(&self) -> Result<(Arc<dyn ObjectStore>, ObjPath), ExportError> {
        std::fs::create_dir_all(&self.root).map_err(|e| ExportError::io("creating", &self.root, e))?;
        let fs = object_store::local::LocalFileSystem::new_with_prefix(&self.root)
            .map_err(|e| ExportError::io("opening", &self.root, io::Error::other(e)))?;
        Ok((Arc::new(fs), ObjPath::default()))
    }

    fn local_root(&self) -> Option<&Path> {
        Some(&self.root)
    }
}

/// A small object's temp lives for the milliseconds of one write; one this
/// old belongs to a writer that died, whichever machine it ran on.
const SMALL_TEMP_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(600);

/// Deletes the small-object temps in `dir` whose writer is gone: older
/// than [`SMALL_TEMP_MAX_AGE`], or made by a process of this machine that
/// no longer exists. Returns how many.
fn sweep_stale_small_temps(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    let local = format!("r{}", super::claim::host_tag());
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !(name.starts_with('.') && Path::new(name).extension().is_some_and(|e| e == "tmp")) {
            continue;
        }
        // `.<file>.r<host><rand>-p<pid>-<seq>.tmp`
        let Some((rest, _seq)) = name.trim_end_matches(".tmp").rsplit_once('-') else { continue };
        let Some((token, pid)) = rest.rsplit_once("-p") else { continue };
        let Ok(pid) = pid.parse::<u32>() else { continue };
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > SMALL_TEMP_MAX_AGE));
        let dead_here = token.rsplit_once('.').is_some_and(|(_, t)| t.starts_with(&local))
            && pid != std::process::id()
            && super::claim::process_is_gone(pid);
        if (old || dead_here) && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// A local temp file that is deleted when dropped unless it was committed.
#[derive(Debug)]
pub(crate) struct TempFile {
    path: PathBuf,
    armed: bool,
}

impl TempFile {
    pub(crate) fn new(path: PathBuf) -> Self {
        TempFile { path, armed: true }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The file was renamed into place: nothing to clean up.
    pub(crate) fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        match std::fs::remove_file(&self.path) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => {
                warn!(path = %self.path.display(), %error, "cannot remove a temp file");
            }
            _ => {}
        }
    }
}

/// A day file being written to a hidden temp beside its final name.
#[derive(Debug)]
struct LocalStaged {
    file: File,
    temp: TempFile,
    target: PathBuf,
    dir: PathBuf,
}

impl StagedFile for LocalStaged {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.file.write_all(buf)
    }

    fn finish(&mut self) -> Result<u64, ExportError> {
        self.file.sync_all().map_err(|e| ExportError::io("syncing", self.temp.path(), e))?;
        Ok(self
            .file
            .metadata()
            .map_err(|e| ExportError::io("reading the size of", self.temp.path(), e))?
            .len())
    }

    fn commit(self: Box<Self>) -> BoxFut<'static, Result<(), ExportError>> {
        let LocalStaged { file, temp, target, dir } = *self;
        Box::pin(blocking(move || {
            drop(file);
            std::fs::rename(temp.path(), &target)
                .map_err(|e| ExportError::io("renaming into", &target, e))?;
            temp.disarm();
            sync_dir(&dir)
        }))
    }

    fn abort(self: Box<Self>) -> BoxFut<'static, Result<(), ExportError>> {
        let LocalStaged { file, temp, .. } = *self;
        Box::pin(blocking(move || {
            drop(file);
            drop(temp);
            Ok(())
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn create_and_replace_are_conditional() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lake = LocalDir::new(dir.path());
        let v1 = lake.create("_plumline/x.json", Bytes::from_static(b"one")).await.expect("create");
        let v1 = v1.expect("created");
        assert_eq!(lake.create("_plumline/x.json", Bytes::from_static(b"two")).await.expect("create"), None);
        let v2 = lake.replace("_plumline/x.json", Bytes::from_static(b"three"), &v1).await.expect("replace");
        let v2 = v2.expect("replaced");
        // A stale version no longer matches.
        assert_eq!(
            lake.replace("_plumline/x.json", Bytes::from_static(b"four"), &v1).await.expect("r"),
            None
        );
        let (body, version) = lake.read("_plumline/x.json").await.expect("read").expect("present");
        assert_eq!((body.as_ref(), version), (b"three".as_ref(), v2));
        // No temp is left beside it.
        let names: Vec<String> = std::fs::read_dir(dir.path().join("_plumline"))
            .expect("list")
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| Path::new(n).extension().is_some_and(|e| e == "tmp"))
            .collect();
        assert!(names.is_empty(), "{names:?}");
    }

    #[tokio::test]
    async fn racing_creates_let_exactly_one_win() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lake = Arc::new(LocalDir::new(dir.path()));
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let lake = Arc::clone(&lake);
                tokio::spawn(async move { lake.create("c.json", Bytes::from(format!("{i}"))).await })
            })
            .collect();
        let mut won = 0;
        for t in tasks {
            won += usize::from(t.await.expect("join").expect("create").is_some());
        }
        assert_eq!(won, 1);
    }
}
