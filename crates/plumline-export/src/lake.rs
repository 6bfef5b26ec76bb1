//! [`Destination`]: where the lake lives (a local directory or an object
//! store), how its files are named, and how a day is committed.
//!
//! # Layout
//!
//! ```text
//! DEST/date=YYYY-MM-DD/calls-all.parquet                 unfiltered export of that day
//! DEST/date=YYYY-MM-DD/calls-number-6175551234.parquet   export filtered by --number 6175551234
//! DEST/_plumline/days/<slug>/YYYY-MM-DD.json             resume state of each committed day
//! ```
//!
//! Each (day, number) pair owns exactly one file name, so exports of
//! different numbers share a lake without touching each other's files, and
//! re-exporting a day replaces its one file in a single rename (local) or
//! put (object store): a reader sees the old file or the new one, never both
//! and never a part. An unfiltered export (`calls-all`) holds every number's
//! calls, so do not mix unfiltered and filtered exports of the same days in
//! one lake unless readers filter on the `number` column (null when
//! unfiltered).
//!
//! Files in flight are local temp files named `.calls-….<pid>-<n>.tmp`: the
//! leading dot hides them from pyarrow and Spark, and they do not end in
//! `.parquet`, so `DuckDB`'s `*.parquet` glob (which also matches hidden files)
//! skips them. A killed run's temps are deleted by the next run. Object
//! stores get no temps: a file is uploaded in one put, or as a multipart
//! upload that is invisible until completed and aborted on failure.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use jiff::civil::Date;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};
use url::Url;

use crate::error::ExportError;
use crate::plan::DayPartition;
use crate::sink::{EncodedBody, EncodedFile, SinkTarget, Store};

/// Name of the state directory under DEST (a leading `_` hides it from
/// hive-partitioned readers).
pub const STATE_DIR: &str = "_plumline";

/// Files up to this size are uploaded with a single put; larger ones as a
/// multipart upload of parts this size.
const UPLOAD_PART_BYTES: usize = 16 * 1024 * 1024;

/// The hive partition directory of `date`: `date=YYYY-MM-DD`.
#[must_use]
pub fn partition_dir(date: Date) -> String {
    format!("date={date}")
}

/// The slug naming a number filter in file and state names: `all` when
/// unfiltered, else `number-` and the number with every character outside
/// `[A-Za-z0-9+-]` written as `_XX` (hex), so distinct numbers never share a
/// name.
#[must_use]
pub fn number_slug(number: Option<&str>) -> String {
    match number {
        None => "all".to_owned(),
        Some(n) => {
            let mut s = String::with_capacity(n.len() + 7);
            s.push_str("number-");
            for b in n.bytes() {
                if b.is_ascii_alphanumeric() || b == b'+' || b == b'-' {
                    s.push(char::from(b));
                } else {
                    s.push('_');
                    s.push(char::from(HEX[usize::from(b >> 4)]));
                    s.push(char::from(HEX[usize::from(b & 15)]));
                }
            }
            s
        }
    }
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// The data file name of a number filter: `calls-<slug>.parquet`.
#[must_use]
pub fn file_name(number: Option<&str>) -> String {
    format!("calls-{}.parquet", number_slug(number))
}

/// What the state records about a committed day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayState {
    /// `plumline-export` version that wrote the day.
    pub tool_version: String,
    /// The calendar day, `YYYY-MM-DD`.
    pub date: String,
    /// The number filter, if any.
    pub number: Option<String>,
    /// The time zone days are cut in.
    pub tz: String,
    /// First second of the API window (inclusive).
    pub window_start: i64,
    /// End of the window (exclusive).
    pub window_end: i64,
    /// The data file, relative to DEST.
    pub file: String,
    /// Rows in the file.
    pub rows: u64,
    /// Size of the file.
    pub bytes: u64,
    /// The API's `total_calls` for the window when it was fetched.
    pub api_total: u64,
    /// Whether the day was closed (outside the settle margin) when written;
    /// only closed days are skipped by later runs.
    pub closed: bool,
    /// When it was committed (UNIX seconds).
    pub committed_at: i64,
}

#[derive(Debug, Clone)]
enum Kind {
    Local { root: PathBuf },
    Store { store: Store, prefix: ObjPath },
}

/// Where the lake is written: a local directory or an object-store prefix.
///
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct Destination {
    kind: Kind,
    display: String,
}

static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

impl Destination {
    /// Parses DEST: a local path, `file:///…`, `s3://bucket/prefix`,
    /// `gs://bucket/prefix`, or `az://container/prefix` (also `abfs[s]://`).
    ///
    /// Object-store credentials, region and endpoint come from each cloud's
    /// standard environment (`AWS_*`, `GOOGLE_*`, `AZURE_*`), e.g.
    /// `AWS_ENDPOINT_URL` and `AWS_ALLOW_HTTP=true` for a local S3 server.
    ///
    /// # Errors
    /// [`ExportError::InvalidDestination`] for an unsupported scheme, a URL
    /// without a bucket, or a store that cannot be configured.
    pub fn parse(dest: &str) -> Result<Self, ExportError> {
        let dest = dest.trim();
        if dest.is_empty() {
            return Err(ExportError::InvalidDestination("--out is empty: pass a directory or a URL".into()));
        }
        if !dest.contains("://") {
            return Ok(Destination::local(dest));
        }
        let Some((store, prefix)) = crate::store::from_url(dest)? else {
            let url = Url::parse(dest).map_err(|e| {
                ExportError::InvalidDestination(format!("--out `{dest}` is not a valid URL: {e}"))
            })?;
            let path = url.to_file_path().map_err(|()| {
                ExportError::InvalidDestination(format!("--out `{dest}` is not a local file:/// URL"))
            })?;
            return Ok(Destination::local(path));
        };
        Ok(Destination {
            kind: Kind::Store { store, prefix },
            display: dest.trim_end_matches('/').to_owned(),
        })
    }

    /// A local directory (created if missing).
    #[must_use]
    pub fn local(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        let display = root.display().to_string();
        Destination { kind: Kind::Local { root }, display }
    }

    /// A prefix in any [`ObjectStore`]; `display` names it in messages.
    #[must_use]
    pub fn object_store(store: Arc<dyn ObjectStore>, prefix: ObjPath, display: impl Into<String>) -> Self {
        Destination { kind: Kind::Store { store, prefix }, display: display.into() }
    }

    /// How the destination is named in messages.
    #[must_use]
    pub fn display(&self) -> &str {
        &self.display
    }

    /// The lake as an object store and the prefix it lives under, for
    /// reading it back (a local lake is opened as a `LocalFileSystem`).
    ///
    /// # Errors
    /// [`ExportError::Io`] if a local root cannot be created or opened.
    pub fn store(&self) -> Result<(Arc<dyn ObjectStore>, ObjPath), ExportError> {
        match &self.kind {
            Kind::Local { root } => {
                std::fs::create_dir_all(root).map_err(|e| ExportError::io("creating", root, e))?;
                let fs = object_store::local::LocalFileSystem::new_with_prefix(root)
                    .map_err(|e| ExportError::io("opening", root, std::io::Error::other(e)))?;
                Ok((Arc::new(fs), ObjPath::default()))
            }
            Kind::Store { store, prefix } => Ok((Arc::clone(store), prefix.clone())),
        }
    }

    /// The local root, if the destination is local.
    #[must_use]
    pub fn local_root(&self) -> Option<&Path> {
        match &self.kind {
            Kind::Local { root } => Some(root),
            Kind::Store { .. } => None,
        }
    }

    fn relative_file(p: &DayPartition) -> String {
        format!("{}/{}", partition_dir(p.date()), file_name(p.number()))
    }

    fn relative_state(p: &DayPartition) -> String {
        format!("{STATE_DIR}/days/{}/{}.json", number_slug(p.number()), p.date())
    }

    fn obj(prefix: &ObjPath, relative: &str) -> ObjPath {
        relative.split('/').fold(prefix.clone(), |path, part| path.clone().join(part))
    }

    fn location(&self, relative: &str) -> String {
        format!("{}/{relative}", self.display)
    }

    /// Checks the destination is writable and deletes temp files a killed
    /// run of the same numbers left behind.
    pub(crate) async fn prepare(&self, slugs: Vec<String>) -> Result<(), ExportError> {
        match &self.kind {
            Kind::Local { root } => {
                let root = root.clone();
                blocking(move || prepare_local(&root, &slugs)).await
            }
            // Object stores have no temps; the first put shows whether we may write.
            Kind::Store { .. } => Ok(()),
        }
    }

    /// The state of a committed day, if there is one and its file is intact.
    pub(crate) async fn committed(&self, p: &DayPartition) -> Result<Option<DayState>, ExportError> {
        let rel_state = Self::relative_state(p);
        let rel_file = Self::relative_file(p);
        let (raw, size) = match &self.kind {
            Kind::Local { root } => {
                let (state_path, file_path) = (root.join(&rel_state), root.join(&rel_file));
                blocking(move || {
                    let raw = match std::fs::read(&state_path) {
                        Ok(raw) => raw,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((None, None)),
                        Err(e) => return Err(ExportError::io("reading", state_path, e)),
                    };
                    let size = std::fs::metadata(&file_path).ok().map(|m| m.len());
                    Ok((Some(raw), size))
                })
                .await?
            }
            Kind::Store { store, prefix } => {
                let raw = match store.get(&Self::obj(prefix, &rel_state)).await {
                    Ok(got) => Some(
                        got.bytes()
                            .await
                            .map_err(|e| ExportError::store("reading", self.location(&rel_state), e))?,
                    ),
                    Err(object_store::Error::NotFound { .. }) => None,
                    Err(e) => return Err(ExportError::store("reading", self.location(&rel_state), e)),
                };
                let size = match &raw {
                    Some(_) => store.head(&Self::obj(prefix, &rel_file)).await.ok().map(|m| m.size),
                    None => None,
                };
                (raw.map(|b| b.to_vec()), size)
            }
        };
        let Some(raw) = raw else { return Ok(None) };
        match serde_json::from_slice::<DayState>(&raw) {
            Ok(state) if size == Some(state.bytes) => Ok(Some(state)),
            Ok(_) => {
                warn!(day = %p.date(), number = p.number(), "state names a file that is missing or changed; exporting the day again");
                Ok(None)
            }
            Err(error) => {
                warn!(day = %p.date(), error = %plumline_api::error_chain(&error), "unreadable state; exporting the day again");
                Ok(None)
            }
        }
    }

    /// Opens the target the day's writer encodes into.
    pub(crate) async fn open(&self, p: &DayPartition) -> Result<SinkTarget, ExportError> {
        match &self.kind {
            Kind::Local { root } => {
                let dir = root.join(partition_dir(p.date()));
                let temp = dir.join(format!(
                    ".{}.{}-{}.tmp",
                    file_name(p.number()),
                    std::process::id(),
                    TEMP_SEQ.fetch_add(1, Ordering::Relaxed)
                ));
                blocking(move || {
                    std::fs::create_dir_all(&dir).map_err(|e| ExportError::io("creating", &dir, e))?;
                    let file = std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(&temp)
                        .map_err(|e| ExportError::io("creating", &temp, e))?;
                    Ok(SinkTarget::File { file, temp: crate::sink::TempFile::new(temp) })
                })
                .await
            }
            Kind::Store { .. } => Ok(SinkTarget::Memory(Vec::with_capacity(1 << 20))),
        }
    }

    /// Where a day's file ends up, for messages.
    pub(crate) fn file_location(&self, p: &DayPartition) -> String {
        self.location(&Self::relative_file(p))
    }

    /// Makes an encoded day file visible under its final name, atomically.
    pub(crate) async fn commit(&self, p: &DayPartition, file: EncodedFile) -> Result<String, ExportError> {
        let rel = Self::relative_file(p);
        match (&self.kind, file.body) {
            (Kind::Local { root }, EncodedBody::Local(temp)) => {
                let (dir, target) = (root.join(partition_dir(p.date())), root.join(&rel));
                blocking(move || {
                    std::fs::rename(temp.path(), &target)
                        .map_err(|e| ExportError::io("renaming into", &target, e))?;
                    temp.disarm();
                    sync_dir(&dir)
                })
                .await?;
            }
            (Kind::Store { store, prefix }, EncodedBody::Memory(buf)) => {
                upload(store, &Self::obj(prefix, &rel), Bytes::from(buf), &self.location(&rel)).await?;
            }
            _ => {
                return Err(ExportError::Worker("a day file was encoded for another destination".into()));
            }
        }
        debug!(day = %p.date(), file = %rel, "committed");
        Ok(rel)
    }

    /// Records a committed day (after its file is visible).
    pub(crate) async fn write_state(&self, p: &DayPartition, state: &DayState) -> Result<(), ExportError> {
        let rel = Self::relative_state(p);
        let body = serde_json::to_vec_pretty(state)
            .map_err(|source| ExportError::State { location: self.location(&rel), source })?;
        match &self.kind {
            Kind::Local { root } => {
                let target = root.join(&rel);
                blocking(move || write_atomically(&target, &body)).await
            }
            Kind::Store { store, prefix } => store
                .put(&Self::obj(prefix, &rel), PutPayload::from(body))
                .await
                .map(|_| ())
                .map_err(|e| ExportError::store("writing", self.location(&rel), e)),
        }
    }
}

/// Runs blocking file work off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ExportError> + Send + 'static,
) -> Result<T, ExportError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ExportError::worker(&e))?
}

fn prepare_local(root: &Path, slugs: &[String]) -> Result<(), ExportError> {
    let state = root.join(STATE_DIR);
    std::fs::create_dir_all(&state).map_err(|e| ExportError::io("creating", &state, e))?;
    let entries = std::fs::read_dir(root).map_err(|e| ExportError::io("listing", root, e))?;
    let prefixes: Vec<String> = slugs.iter().map(|s| format!(".calls-{s}.parquet.")).collect();
    let mut removed = 0usize;
    let mut sweep = |dir: &Path, is_ours: &dyn Fn(&str) -> bool| {
        let Ok(files) = std::fs::read_dir(dir) else { return };
        for file in files.flatten() {
            let name = file.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with('.') && has_suffix(name, ".tmp") && is_ours(name) {
                match std::fs::remove_file(file.path()) {
                    Ok(()) => removed += 1,
                    Err(error) => {
                        warn!(path = %file.path().display(), %error, "cannot remove a stale temp file");
                    }
                }
            }
        }
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name.to_str().is_some_and(|n| n.starts_with("date=")) {
            sweep(&entry.path(), &|n| prefixes.iter().any(|p| n.starts_with(p.as_str())));
        }
    }
    for slug in slugs {
        sweep(&state.join("days").join(slug), &|_| true);
    }
    if removed > 0 {
        info!(removed, "deleted temp files of an interrupted run");
    }
    Ok(())
}

fn has_suffix(name: &str, suffix: &str) -> bool {
    name.len() >= suffix.len() && name.as_bytes()[name.len() - suffix.len()..] == *suffix.as_bytes()
}

/// Writes `body` to `target` through a temp file, fsync and rename.
fn write_atomically(target: &Path, body: &[u8]) -> Result<(), ExportError> {
    use std::io::Write as _;
    let dir = target.parent().unwrap_or_else(|| Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| ExportError::io("creating", dir, e))?;
    let name = target.file_name().and_then(|n| n.to_str()).unwrap_or("state");
    let temp = crate::sink::TempFile::new(dir.join(format!(
        ".{name}.{}-{}.tmp",
        std::process::id(),
        TEMP_SEQ.fetch_add(1, Ordering::Relaxed)
    )));
    let mut file =
        std::fs::File::create(temp.path()).map_err(|e| ExportError::io("creating", temp.path(), e))?;
    file.write_all(body).map_err(|e| ExportError::io("writing", temp.path(), e))?;
    file.sync_all().map_err(|e| ExportError::io("syncing", temp.path(), e))?;
    std::fs::rename(temp.path(), target).map_err(|e| ExportError::io("renaming into", target, e))?;
    temp.disarm();
    sync_dir(dir)
}

/// Makes a rename in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), ExportError> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| ExportError::io("syncing", dir, e))
}

/// Uploads `body` in one put, or as a multipart upload that is aborted if
/// any part fails, so no orphaned upload is left behind.
async fn upload(store: &Store, path: &ObjPath, body: Bytes, location: &str) -> Result<(), ExportError> {
    upload_in_parts(store, path, body, location, UPLOAD_PART_BYTES).await
}

/// [`upload`] with the part size as a parameter, so tests can cross the
/// multipart threshold without 16 MB files.
async fn upload_in_parts(
    store: &Store,
    path: &ObjPath,
    body: Bytes,
    location: &str,
    part_bytes: usize,
) -> Result<(), ExportError> {
    if body.len() <= part_bytes {
        store
            .put(path, PutPayload::from(body))
            .await
            .map_err(|e| ExportError::store("uploading", location, e))?;
        return Ok(());
    }
    let upload = store
        .put_multipart(path)
        .await
        .map_err(|e| ExportError::store("starting the upload of", location, e))?;
    upload_parts(upload, body, location, part_bytes).await
}

/// Uploads `body` as the parts of `upload` and completes it; on any failure,
/// or if this future is dropped first, the upload is aborted.
async fn upload_parts(
    upload: Box<dyn object_store::MultipartUpload>,
    body: Bytes,
    location: &str,
    part_bytes: usize,
) -> Result<(), ExportError> {
    let mut guard = AbortOnDrop { upload: Some(upload), location: location.to_owned() };
    let Some(upload) = guard.upload.as_mut() else {
        return Err(ExportError::Worker("multipart upload vanished".into()));
    };
    // Parts go up concurrently; `Bytes::slice` shares the one buffer.
    let parts: Vec<_> = (0..body.len())
        .step_by(part_bytes.max(1))
        .map(|from| upload.put_part(PutPayload::from(body.slice(from..(from + part_bytes).min(body.len())))))
        .collect();
    futures::future::try_join_all(parts).await.map_err(|e| ExportError::store("uploading", location, e))?;
    upload.complete().await.map_err(|e| ExportError::store("completing the upload of", location, e))?;
    guard.upload = None;
    Ok(())
}

/// Aborts a multipart upload that did not complete, whether its future
/// failed or was dropped (another day failed, the run was cancelled), so no
/// orphaned upload is left behind to cost storage. S3 and GCS do not clean
/// those up by themselves.
struct AbortOnDrop {
    upload: Option<Box<dyn object_store::MultipartUpload>>,
    location: String,
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        let Some(mut upload) = self.upload.take() else { return };
        let location = std::mem::take(&mut self.location);
        // Drop cannot wait; the abort runs on the runtime if there still is one.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                match upload.abort().await {
                    Ok(()) => debug!(%location, "aborted an unfinished multipart upload"),
                    Err(error) => warn!(%location, %error, "could not abort an unfinished multipart upload"),
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn large_files_go_up_as_multipart_uploads_that_read_back_whole() {
        let store: Store = Arc::new(object_store::memory::InMemory::new());
        let body: Vec<u8> = (0..10_000u32).flat_map(u32::to_le_bytes).collect();
        for (name, part_bytes) in [("single.bin", body.len()), ("multi.bin", 4_096)] {
            let path = ObjPath::from(name);
            upload_in_parts(&store, &path, Bytes::from(body.clone()), name, part_bytes)
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let got = store.get(&path).await.expect("uploaded").bytes().await.expect("body");
            assert_eq!(got.as_ref(), body.as_slice(), "{name}");
        }
    }

    /// A multipart upload whose part number `fail_part` fails; records
    /// whether it was completed or aborted.
    #[derive(Debug)]
    struct FlakyUpload {
        fail_part: usize,
        /// Parts never finish (a stalled network), so the caller gives up.
        hang: bool,
        parts: usize,
        log: Arc<std::sync::Mutex<Vec<&'static str>>>,
    }

    type BoxFut<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

    impl object_store::MultipartUpload for FlakyUpload {
        fn put_part(&mut self, _data: PutPayload) -> object_store::UploadPart {
            self.parts += 1;
            let (fail, hang) = (self.parts == self.fail_part, self.hang);
            Box::pin(async move {
                if hang {
                    futures::future::pending::<()>().await;
                }
                if fail {
                    Err(object_store::Error::Generic { store: "test", source: "part failed".into() })
                } else {
                    Ok(())
                }
            })
        }

        fn complete<'life0, 'async_trait>(
            &'life0 mut self,
        ) -> BoxFut<'async_trait, object_store::Result<object_store::PutResult>>
        where
            'life0: 'async_trait,
            Self: 'async_trait,
        {
            self.log.lock().expect("log").push("complete");
            Box::pin(async {
                Ok(object_store::PutResult {
                    e_tag: None,
                    version: None,
                    extensions: object_store::Extensions::default(),
                })
            })
        }

        fn abort<'life0, 'async_trait>(&'life0 mut self) -> BoxFut<'async_trait, object_store::Result<()>>
        where
            'life0: 'async_trait,
            Self: 'async_trait,
        {
            self.log.lock().expect("log").push("abort");
            Box::pin(async { Ok(()) })
        }
    }

    #[tokio::test]
    async fn a_failed_multipart_upload_is_aborted_not_orphaned() {
        let body = Bytes::from(vec![7u8; 10_000]);
        // (part that fails (0: none), parts hang and the caller drops the
        // future, what the upload must see)
        for (fail_part, hang, want) in
            [(0, false, vec!["complete"]), (2, false, vec!["abort"]), (0, true, vec!["abort"])]
        {
            let log = Arc::new(std::sync::Mutex::new(Vec::new()));
            let upload = Box::new(FlakyUpload { fail_part, hang, parts: 0, log: Arc::clone(&log) });
            let run = upload_parts(upload, body.clone(), "s3://b/x.parquet", 4_096);
            match tokio::time::timeout(std::time::Duration::from_millis(50), run).await {
                Ok(result) => assert_eq!(result.is_ok(), fail_part == 0, "{result:?}"),
                Err(_) => assert!(hang, "only a hanging upload may time out"),
            }
            // The abort runs on a spawned task.
            for _ in 0..100 {
                if !log.lock().expect("log").is_empty() {
                    break;
                }
                tokio::task::yield_now().await;
            }
            assert_eq!(*log.lock().expect("log"), want, "failing part {fail_part}, hang {hang}");
        }
    }
}
