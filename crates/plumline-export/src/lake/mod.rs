//! The lake: where it lives (a [`Destination`]: a local directory or an
//! object-store prefix), how its files are named, and the protocols that
//! write it, claims, commit and state, written once over the destination.
//!
//! # Layout
//!
//! ```text
//! DEST/date=YYYY-MM-DD/calls-all.parquet                 unfiltered export of that day
//! DEST/date=YYYY-MM-DD/calls-number-6175551234.parquet   export filtered by number 6175551234
//! DEST/_plumline/lake.json                               the lake's time zone (first export)
//! DEST/_plumline/days/<slug>/YYYY-MM-DD.json             state of each committed day
//! DEST/_plumline/claims/<slug>/YYYY-MM-DD.json           who writes that day now (a lease)
//! ```
//!
//! Each (day, number) pair owns exactly one file name, so exports of
//! different numbers share a lake without touching each other's files, and
//! re-exporting a day replaces its one file in a single rename (local) or
//! completed upload (object store): a reader sees the old file or the new
//! one, never both and never a part.
//!
//! # Protocol
//! A run writes a day only under its claim ([`claim`]): a small object
//! created with create-if-absent, renewed as a lease with
//! replace-if-unchanged, taken over once expired, released when the day is
//! done. Under the claim it stages the file (a hidden temp file named with
//! the run's token, or a multipart upload whose id is written ahead into
//! the claim), checks it does not shrink the committed day, commits it
//! atomically, then writes the day's state.

mod claim;
mod layout;
mod local;
mod object;
mod state;

use std::fmt;
use std::future::Future;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use jiff::Timestamp;
use object_store::ObjectStore;
use object_store::path::Path as ObjPath;
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};
use url::Url;

pub use claim::RunId;
pub(crate) use claim::{Claim, ClaimSettings};
pub(crate) use layout::data_file;
pub use layout::{STATE_DIR, file_name, number_slug, partition_dir};
pub use local::LocalDir;
pub use object::{LakeObjectStore, ObjectPrefix};
pub use state::{DayState, LakeInfo};

use crate::error::{DestinationError, ExportError};
use crate::plan::DayPartition;

/// A boxed future, as the [`Destination`] trait returns them (it is used as
/// a trait object).
pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The version of a small object, for a conditional replace: an object
/// store's `ETag`, or a local file's content hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version(pub(crate) String);

/// A run's staged file, as its claim records it (write-ahead), so a run
/// that takes the claim over can remove what a killed run left.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Stage {
    /// A local temp file, relative to DEST.
    Temp {
        /// Its path relative to DEST.
        path: String,
    },
    /// An object-store multipart upload.
    Upload {
        /// The object it completes into, relative to DEST.
        path: String,
        /// The store's upload id.
        id: String,
    },
}

/// Records a [`Stage`] in the run's claim before the stage holds any data.
pub type StageRecorder = Arc<dyn Fn(Stage) -> BoxFut<'static, Result<(), ExportError>> + Send + Sync>;

/// Where a lake lives: the small set of operations the claim, commit and
/// state protocol is written over ([`LocalDir`], [`ObjectPrefix`]).
///
/// Paths are relative to DEST, `/`-separated. Small objects (state, claims)
/// are written whole and atomically; data files are staged and committed.
pub trait Destination: Send + Sync + fmt::Debug + 'static {
    /// How DEST is named in messages.
    fn display(&self) -> &str;

    /// A small object's bytes and version, or `None` if absent.
    fn read(&self, rel: &str) -> BoxFut<'_, Result<Option<(Bytes, Version)>, ExportError>>;

    /// Creates a small object only if it does not exist: its version, or
    /// `None` if it already existed (nothing written).
    fn create(&self, rel: &str, body: Bytes) -> BoxFut<'_, Result<Option<Version>, ExportError>>;

    /// Replaces a small object only if its version is still `expected`: the
    /// new version, or `None` if it changed or vanished (nothing written).
    fn replace(
        &self,
        rel: &str,
        body: Bytes,
        expected: &Version,
    ) -> BoxFut<'_, Result<Option<Version>, ExportError>>;

    /// Writes a small object, replacing whatever is there, atomically.
    fn write(&self, rel: &str, body: Bytes) -> BoxFut<'_, Result<(), ExportError>>;

    /// An object's size, or `None` if absent.
    fn size(&self, rel: &str) -> BoxFut<'_, Result<Option<u64>, ExportError>>;

    /// Bytes `range` of an object.
    fn read_range(&self, rel: &str, range: Range<u64>) -> BoxFut<'_, Result<Bytes, ExportError>>;

    /// Starts a data file that will become `rel` when committed. `token`
    /// names the run (temp names carry it); `record` is called with the
    /// stage before it holds any data.
    fn stage(
        &self,
        rel: &str,
        token: &str,
        record: StageRecorder,
    ) -> BoxFut<'_, Result<Box<dyn StagedFile>, ExportError>>;

    /// Removes what a dead run staged (a temp file, an unfinished upload).
    fn discard(&self, stage: &Stage) -> BoxFut<'_, Result<(), ExportError>>;

    /// Removes the temps of `rel` that the run `token` left (a dead run's,
    /// including one it had not recorded yet); temps of other files and
    /// runs are untouched. Object stores have no temps.
    fn sweep(&self, rel: &str, token: &str) -> BoxFut<'_, Result<usize, ExportError>>;

    /// Removes the small-object temps in the folder `dir_rel` whose
    /// writer died mid-write (a claim or state being written when the
    /// process was killed). Object stores have none.
    fn sweep_stale(&self, dir_rel: &str) -> BoxFut<'_, Result<usize, ExportError>> {
        let _ = dir_rel;
        Box::pin(async { Ok(0) })
    }

    /// The lake as an object store and the prefix it lives under, for
    /// reading it back.
    fn store(&self) -> Result<(Arc<dyn ObjectStore>, ObjPath), ExportError>;

    /// The local root, if the destination is a local directory.
    fn local_root(&self) -> Option<&Path> {
        None
    }
}

/// A data file being written: sync writes from the encoder's thread, then
/// an atomic commit. Dropped without [`commit`](StagedFile::commit) or
/// [`abort`](StagedFile::abort), it is abandoned (a temp deleted; an
/// upload aborted on the lake's cleanup list, see [`Lake::cleanup`]).
pub trait StagedFile: Send + fmt::Debug {
    /// Appends bytes (blocking; called from the encoder's thread).
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()>;

    /// Makes every byte durable, not yet visible: the file's size
    /// (blocking; the encoder's thread).
    fn finish(&mut self) -> Result<u64, ExportError>;

    /// Makes the file visible under its final name, atomically.
    fn commit(self: Box<Self>) -> BoxFut<'static, Result<(), ExportError>>;

    /// Removes the staged file.
    fn abort(self: Box<Self>) -> BoxFut<'static, Result<(), ExportError>>;
}

/// Aborts that could not be awaited where they arose (a staged upload
/// dropped by a cancelled day), run by [`Lake::cleanup`]. One list per
/// process: whoever cleans up aborts them all.
#[derive(Default)]
pub(crate) struct PendingAborts(Mutex<Vec<BoxFut<'static, Result<(), ExportError>>>>);

pub(crate) static PENDING_ABORTS: PendingAborts = PendingAborts(Mutex::new(Vec::new()));

impl fmt::Debug for PendingAborts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.lock().map_or(0, |p| p.len());
        f.debug_tuple("PendingAborts").field(&n).finish()
    }
}

impl PendingAborts {
    pub(crate) fn push(&self, abort: BoxFut<'static, Result<(), ExportError>>) {
        if let Ok(mut pending) = self.0.lock() {
            pending.push(abort);
        }
    }

    fn take(&self) -> Vec<BoxFut<'static, Result<(), ExportError>>> {
        self.0.lock().map(|mut p| std::mem::take(&mut *p)).unwrap_or_default()
    }
}

/// How a lake is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LakeOptions {
    /// Bytes of each part of an object-store multipart upload (8 MiB by
    /// default; stores require at least 5 MiB for all but the last part).
    /// A day's upload buffers at most one part.
    pub upload_part_bytes: std::num::NonZeroUsize,
}

impl Default for LakeOptions {
    fn default() -> Self {
        LakeOptions {
            upload_part_bytes: std::num::NonZeroUsize::new(object::PART_BYTES)
                .unwrap_or(std::num::NonZeroUsize::MIN),
        }
    }
}

/// A lake: a destination (a local directory or an object-store prefix)
/// and the protocols over it.
///
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct Lake {
    dest: Arc<dyn Destination>,
}

/// What the state says of a day.
#[derive(Debug)]
pub(crate) enum Committed {
    /// Committed with this state, and its file is intact.
    Yes(DayState),
    /// Not committed (no state, or a state that does not hold).
    No,
}

impl Lake {
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
        Lake::parse_with(dest, &LakeOptions::default())
    }

    /// [`Lake::parse`] with options.
    ///
    /// # Errors
    /// As [`Lake::parse`].
    pub fn parse_with(dest: &str, options: &LakeOptions) -> Result<Self, ExportError> {
        let dest = dest.trim();
        if dest.is_empty() {
            return Err(DestinationError::Empty.into());
        }
        if !dest.contains("://") {
            return Ok(Lake::local(dest));
        }
        let Some((store, prefix)) = crate::store::from_url(dest)? else {
            let url =
                Url::parse(dest).map_err(|source| DestinationError::Url { url: dest.to_owned(), source })?;
            let path =
                url.to_file_path().map_err(|()| DestinationError::NotLocal { url: dest.to_owned() })?;
            return Ok(Lake::local(path));
        };
        let prefix = ObjectPrefix::new(store, prefix, dest.trim_end_matches('/'))
            .with_part_bytes(options.upload_part_bytes.get());
        Ok(Lake::new(Arc::new(prefix)))
    }

    /// A local directory (created if missing).
    #[must_use]
    pub fn local(root: impl Into<PathBuf>) -> Self {
        Lake::new(Arc::new(LocalDir::new(root)))
    }

    /// A prefix in an object store; `display` names it in messages.
    #[must_use]
    pub fn object_store(
        store: Arc<dyn LakeObjectStore>,
        prefix: ObjPath,
        display: impl Into<String>,
    ) -> Self {
        Lake::new(Arc::new(ObjectPrefix::new(store, prefix, display)))
    }

    /// A lake over any destination.
    #[must_use]
    pub(crate) fn new(dest: Arc<dyn Destination>) -> Self {
        Lake { dest }
    }

    /// How the destination is named in messages.
    #[must_use]
    pub fn display(&self) -> &str {
        self.dest.display()
    }

    /// The destination.
    #[must_use]
    pub(crate) fn destination(&self) -> &Arc<dyn Destination> {
        &self.dest
    }

    /// The lake as an object store and its prefix, for reading it back.
    ///
    /// # Errors
    /// [`ExportError::Io`] if a local root cannot be created or opened.
    pub fn store(&self) -> Result<(Arc<dyn ObjectStore>, ObjPath), ExportError> {
        self.dest.store()
    }

    /// The local root, if the lake is local.
    #[must_use]
    pub fn local_root(&self) -> Option<&Path> {
        self.dest.local_root()
    }

    pub(crate) fn location(&self, rel: &str) -> String {
        format!("{}/{rel}", self.dest.display())
    }

    /// Runs the aborts of uploads abandoned by cancelled days, so none is
    /// left behind when the process exits. Idempotent.
    ///
    /// # Cancel safety
    /// Dropping the future leaves the remaining aborts undone.
    pub async fn cleanup(&self) {
        // Abandoned days' writer threads drop their uploads when they stop.
        if tokio::time::timeout(std::time::Duration::from_secs(60), crate::sink::writers_idle())
            .await
            .is_err()
        {
            warn!("writer threads still busy after 60 s; aborting the uploads abandoned so far");
        }
        let pending = PENDING_ABORTS.take();
        if pending.is_empty() {
            return;
        }
        debug!(n = pending.len(), "aborting abandoned uploads");
        for result in futures::future::join_all(pending).await {
            if let Err(error) = result {
                warn!(error = %plumline_api::error_chain(&error), "could not abort an abandoned upload");
            }
        }
    }

    /// Checks the lake is cut in `tz`, recording it if this is the lake's
    /// first export.
    ///
    /// # Errors
    /// [`ExportError::TimeZoneMismatch`] if the lake records another zone.
    /// Removes what killed runs left of small writes in the state folders
    /// of `slugs` (see [`Destination::sweep_stale`]).
    pub(crate) async fn sweep_stale(
        &self,
        slugs: impl IntoIterator<Item = String>,
    ) -> Result<(), ExportError> {
        let mut removed = self.dest.sweep_stale(STATE_DIR).await?;
        for slug in slugs {
            for kind in ["claims", "days"] {
                removed += self.dest.sweep_stale(&format!("{STATE_DIR}/{kind}/{slug}")).await?;
            }
        }
        if removed > 0 {
            info!(removed, "removed temp files that killed runs left");
        }
        Ok(())
    }

    pub(crate) async fn check_tz(&self, tz: &str) -> Result<(), ExportError> {
        let info = LakeInfo {
            tz: tz.to_owned(),
            created_by: crate::pipeline::TOOL_VERSION.to_owned(),
            created_at: Timestamp::now().as_second(),
        };
        let body = serde_json::to_vec_pretty(&info)
            .map_err(|source| ExportError::State { location: self.location(layout::LAKE_FILE), source })?;
        if self.dest.create(layout::LAKE_FILE, Bytes::from(body)).await?.is_some() {
            debug!(tz, "new lake: time zone recorded");
            return Ok(());
        }
        let Some((raw, _)) = self.dest.read(layout::LAKE_FILE).await? else {
            return Err(ExportError::State {
                location: self.location(layout::LAKE_FILE),
                source: serde::de::Error::custom("it vanished while being read"),
            });
        };
        let recorded: LakeInfo = serde_json::from_slice(&raw)
            .map_err(|source| ExportError::State { location: self.location(layout::LAKE_FILE), source })?;
        if recorded.tz != tz {
            return Err(ExportError::TimeZoneMismatch {
                lake: self.dest.display().to_owned(),
                recorded: recorded.tz,
                requested: tz.to_owned(),
            });
        }
        Ok(())
    }

    /// Whether a day is committed: a state that parses, names this window,
    /// zone and number, and whose file is there with the recorded size. A
    /// corrupt or stale state is reported (warning) and treated as absent.
    pub(crate) async fn committed(&self, p: &DayPartition, tz: &str) -> Result<Committed, ExportError> {
        let rel = layout::state_file(p);
        let Some((raw, _)) = self.dest.read(&rel).await? else { return Ok(Committed::No) };
        let state = match serde_json::from_slice::<DayState>(&raw) {
            Ok(state) => state,
            Err(error) => {
                warn!(day = %p.date(), number = p.number(), state = %self.location(&rel), %error, "unreadable state; exporting the day again");
                return Ok(Committed::No);
            }
        };
        let matches = state.window_start == p.window_start()
            && state.window_end == p.window_end()
            && state.tz == tz
            && state.number.as_deref() == p.number();
        if !matches {
            warn!(day = %p.date(), number = p.number(), "state is for another window, zone or number; exporting the day again");
            return Ok(Committed::No);
        }
        let size = self.dest.size(&layout::data_file(p)).await?;
        if size != Some(state.bytes) {
            warn!(day = %p.date(), number = p.number(), "state names a file that is missing or changed; exporting the day again");
            return Ok(Committed::No);
        }
        Ok(Committed::Yes(state))
    }

    /// Rows of the day's current file (from its Parquet footer), or `None`
    /// if there is none.
    pub(crate) async fn current_rows(&self, p: &DayPartition) -> Result<Option<u64>, ExportError> {
        let rel = layout::data_file(p);
        let Some(size) = self.dest.size(&rel).await? else { return Ok(None) };
        let location = self.location(&rel);
        let perr = |source| ExportError::Parquet { action: "reading", location: location.clone(), source };
        if size < 12 {
            return Err(perr(parquet::errors::ParquetError::General(format!(
                "{size} bytes is no parquet file"
            ))));
        }
        let tail = self.dest.read_range(&rel, size - 8..size).await?;
        if tail.len() != 8 || &tail[4..] != b"PAR1" {
            return Err(perr(parquet::errors::ParquetError::General("no parquet footer".into())));
        }
        let len = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
        if len + 12 > size {
            return Err(perr(parquet::errors::ParquetError::General("footer longer than the file".into())));
        }
        let footer = self.dest.read_range(&rel, size - 8 - len..size - 8).await?;
        let metadata =
            parquet::file::metadata::ParquetMetaDataReader::decode_metadata(&footer).map_err(perr)?;
        Ok(Some(u64::try_from(metadata.file_metadata().num_rows()).unwrap_or(0)))
    }

    /// Stages the day's file under `claim`.
    pub(crate) async fn stage(
        &self,
        p: &DayPartition,
        claim: &Claim,
    ) -> Result<Box<dyn StagedFile>, ExportError> {
        self.dest.stage(&layout::data_file(p), claim.token(), claim.recorder()).await
    }

    /// Where a day's file ends up, for messages.
    pub(crate) fn file_location(&self, p: &DayPartition) -> String {
        self.location(&layout::data_file(p))
    }

    /// Records a committed day (after its file is visible).
    pub(crate) async fn write_state(&self, p: &DayPartition, state: &DayState) -> Result<(), ExportError> {
        let rel = layout::state_file(p);
        let body = serde_json::to_vec_pretty(state)
            .map_err(|source| ExportError::State { location: self.location(&rel), source })?;
        self.dest.write(&rel, Bytes::from(body)).await
    }
}

/// Runs blocking file work off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ExportError> + Send + 'static,
) -> Result<T, ExportError> {
    tokio::task::spawn_blocking(f).await.map_err(ExportError::Task)?
}
