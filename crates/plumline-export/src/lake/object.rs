//! [`ObjectPrefix`]: a lake under a prefix of an object store (S3, GCS,
//! Azure, or any [`LakeObjectStore`]).
//!
//! Small objects use conditional puts: create-if-absent is
//! `PutMode::Create` (`If-None-Match: *`), replace-if-unchanged is
//! `PutMode::Update` with the `ETag` read (`If-Match`). Data files stream
//! into a multipart upload part by part (never a whole day in memory); the
//! upload id is recorded in the run's claim before the first part, so a run
//! that takes the claim over can abort an upload a killed run left. A file
//! smaller than one part goes up in a single put.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt as _, PutMode, PutOptions, PutPayload, UpdateVersion};
use tracing::debug;

use super::{BoxFut, Destination, PENDING_ABORTS, Stage, StageRecorder, StagedFile, Version};
use crate::error::ExportError;

/// Size of each part of a multipart upload (stores require at least 5 MiB
/// for all but the last part). Bounds a day's upload buffer.
pub(crate) const PART_BYTES: usize = 8 * 1024 * 1024;

/// An object store that also exposes multipart uploads by id (S3, GCS,
/// Azure and the in-memory store do).
pub trait LakeObjectStore: ObjectStore + MultipartStore {}

impl<T: ObjectStore + MultipartStore> LakeObjectStore for T {}

/// A lake under `prefix` in an object store.
#[derive(Debug)]
pub struct ObjectPrefix {
    store: Arc<dyn LakeObjectStore>,
    prefix: ObjPath,
    display: String,
    part_bytes: usize,
}

impl ObjectPrefix {
    /// The lake under `prefix` of `store`; `display` names it in messages.
    #[must_use]
    pub fn new(store: Arc<dyn LakeObjectStore>, prefix: ObjPath, display: impl Into<String>) -> Self {
        ObjectPrefix { store, prefix, display: display.into(), part_bytes: PART_BYTES }
    }

    fn path(&self, rel: &str) -> ObjPath {
        rel.split('/').fold(self.prefix.clone(), |path, part| path.clone().join(part))
    }

    fn location(&self, rel: &str) -> String {
        format!("{}/{rel}", self.display)
    }

    /// Parts of `part_bytes` instead of 8 MiB (stores require at least
    /// 5 MiB but for the last part; tests with the in-memory store use less).
    #[must_use]
    pub fn with_part_bytes(mut self, part_bytes: usize) -> Self {
        self.part_bytes = part_bytes;
        self
    }
}

fn version_of(e_tag: Option<String>, location: &str) -> Result<Version, ExportError> {
    e_tag.map(Version).ok_or_else(|| ExportError::ObjectStore {
        action: "reading the ETag of",
        location: location.to_owned(),
        source: object_store::Error::NotSupported { source: "the store returns no ETag".into() },
    })
}

impl Destination for ObjectPrefix {
    fn display(&self) -> &str {
        &self.display
    }

    fn read(&self, rel: &str) -> BoxFut<'_, Result<Option<(Bytes, Version)>, ExportError>> {
        let (path, location) = (self.path(rel), self.location(rel));
        Box::pin(async move {
            let got = match self.store.get(&path).await {
                Ok(got) => got,
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(ExportError::store("reading", location, e)),
            };
            let version = version_of(got.meta.e_tag.clone(), &location)?;
            let body = got.bytes().await.map_err(|e| ExportError::store("reading", &location, e))?;
            Ok(Some((body, version)))
        })
    }

    fn create(&self, rel: &str, body: Bytes) -> BoxFut<'_, Result<Option<Version>, ExportError>> {
        let (path, location) = (self.path(rel), self.location(rel));
        Box::pin(async move {
            let opts = PutOptions { mode: PutMode::Create, ..PutOptions::default() };
            match self.store.put_opts(&path, PutPayload::from(body), opts).await {
                Ok(put) => version_of(put.e_tag, &location).map(Some),
                Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => {
                    Ok(None)
                }
                Err(e) => Err(ExportError::store("creating", location, e)),
            }
        })
    }

    fn replace(
        &self,
        rel: &str,
        body: Bytes,
        expected: &Version,
    ) -> BoxFut<'_, Result<Option<Version>, ExportError>> {
        let (path, location) = (self.path(rel), self.location(rel));
        let version = UpdateVersion { e_tag: Some(expected.0.clone()), version: None };
        Box::pin(async move {
            let opts = PutOptions { mode: PutMode::Update(version), ..PutOptions::default() };
            match self.store.put_opts(&path, PutPayload::from(body), opts).await {
                Ok(put) => version_of(put.e_tag, &location).map(Some),
                Err(object_store::Error::Precondition { .. } | object_store::Error::NotFound { .. }) => {
                    Ok(None)
                }
                Err(e) => Err(ExportError::store("replacing", location, e)),
            }
        })
    }

    fn write(&self, rel: &str, body: Bytes) -> BoxFut<'_, Result<(), ExportError>> {
        let (path, location) = (self.path(rel), self.location(rel));
        Box::pin(async move {
            self.store
                .put(&path, PutPayload::from(body))
                .await
                .map(|_| ())
                .map_err(|e| ExportError::store("writing", location, e))
        })
    }

    fn size(&self, rel: &str) -> BoxFut<'_, Result<Option<u64>, ExportError>> {
        let (path, location) = (self.path(rel), self.location(rel));
        Box::pin(async move {
            match self.store.head(&path).await {
                Ok(meta) => Ok(Some(meta.size)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(ExportError::store("reading the size of", location, e)),
            }
        })
    }

    fn read_range(&self, rel: &str, range: Range<u64>) -> BoxFut<'_, Result<Bytes, ExportError>> {
        let (path, location) = (self.path(rel), self.location(rel));
        Box::pin(async move {
            self.store.get_range(&path, range).await.map_err(|e| ExportError::store("reading", location, e))
        })
    }

    fn stage(
        &self,
        rel: &str,
        _token: &str,
        record: StageRecorder,
    ) -> BoxFut<'_, Result<Box<dyn StagedFile>, ExportError>> {
        let staged = ObjectStaged {
            store: Arc::clone(&self.store),
            path: self.path(rel),
            rel: rel.to_owned(),
            location: self.location(rel),
            runtime: tokio::runtime::Handle::current(),
            record,
            part_bytes: self.part_bytes,
            buf: Vec::new(),
            upload: None,
            bytes: 0,
        };
        Box::pin(async move { Ok(Box::new(staged) as Box<dyn StagedFile>) })
    }

    fn discard(&self, stage: &Stage) -> BoxFut<'_, Result<(), ExportError>> {
        let stage = stage.clone();
        Box::pin(async move {
            let Stage::Upload { path, id } = stage else { return Ok(()) };
            let location = self.location(&path);
            match self.store.abort_multipart(&self.path(&path), &id).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                    debug!(%location, "aborted a dead run's upload");
                    Ok(())
                }
                Err(e) => Err(ExportError::store("aborting a dead run's upload of", location, e)),
            }
        })
    }

    fn sweep(&self, _rel: &str, _token: &str) -> BoxFut<'_, Result<usize, ExportError>> {
        Box::pin(async { Ok(0) })
    }

    fn store(&self) -> Result<(Arc<dyn ObjectStore>, ObjPath), ExportError> {
        let store: Arc<dyn ObjectStore> = Arc::clone(&self.store) as Arc<dyn ObjectStore>;
        Ok((store, self.prefix.clone()))
    }
}

/// A day file streaming into the store: parts of `part_bytes` go up as they
/// fill, from the encoder's thread.
struct ObjectStaged {
    store: Arc<dyn LakeObjectStore>,
    path: ObjPath,
    rel: String,
    location: String,
    runtime: tokio::runtime::Handle,
    record: StageRecorder,
    part_bytes: usize,
    buf: Vec<u8>,
    /// The upload's id and its parts so far, once the file outgrew a part.
    upload: Option<(String, Vec<PartId>)>,
    bytes: u64,
}

impl std::fmt::Debug for ObjectStaged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStaged")
            .field("location", &self.location)
            .field("buffered", &self.buf.len())
            .field("upload", &self.upload.as_ref().map(|(id, parts)| (id, parts.len())))
            .finish_non_exhaustive()
    }
}

impl ObjectStaged {
    /// Uploads the buffer as the next part, starting the upload (and
    /// recording its id in the claim) first if need be. Blocking.
    fn flush_part(&mut self) -> Result<(), ExportError> {
        if self.upload.is_none() {
            let id = self
                .runtime
                .block_on(self.store.create_multipart(&self.path))
                .map_err(|e| ExportError::store("starting the upload of", &self.location, e))?;
            // Set before recording, so a failed record still aborts it.
            self.upload = Some((id.clone(), Vec::new()));
            self.runtime.block_on((self.record)(Stage::Upload { path: self.rel.clone(), id }))?;
        }
        let Some((id, parts)) = self.upload.as_mut() else { return Ok(()) };
        let payload = PutPayload::from(std::mem::take(&mut self.buf));
        let part = self
            .runtime
            .block_on(self.store.put_part(&self.path, id, parts.len(), payload))
            .map_err(|e| ExportError::store("uploading a part of", &self.location, e))?;
        parts.push(part);
        crate::failpoint::hit("part-uploaded");
        self.buf = Vec::with_capacity(self.part_bytes);
        Ok(())
    }

    fn abort_upload(&mut self) -> Option<BoxFut<'static, Result<(), ExportError>>> {
        let (id, _) = self.upload.take()?;
        let (store, path, location) = (Arc::clone(&self.store), self.path.clone(), self.location.clone());
        Some(Box::pin(async move {
            store
                .abort_multipart(&path, &id)
                .await
                .map_err(|e| ExportError::store("aborting the upload of", location, e))
        }))
    }
}

impl StagedFile for ObjectStaged {
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.buf.extend_from_slice(buf);
        self.bytes += buf.len() as u64;
        if self.buf.len() >= self.part_bytes {
            self.flush_part().map_err(std::io::Error::other)?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<u64, ExportError> {
        if self.upload.is_some() && !self.buf.is_empty() {
            self.flush_part()?;
        }
        Ok(self.bytes)
    }

    fn commit(mut self: Box<Self>) -> BoxFut<'static, Result<(), ExportError>> {
        let upload = self.upload.take();
        let body = std::mem::take(&mut self.buf);
        let (store, path, location) = (Arc::clone(&self.store), self.path.clone(), self.location.clone());
        Box::pin(async move {
            match upload {
                Some((id, parts)) => {
                    if let Err(e) = store.complete_multipart(&path, &id, parts).await {
                        // Completing failed: nothing became visible; abort.
                        let _ = store.abort_multipart(&path, &id).await;
                        return Err(ExportError::store("completing the upload of", location, e));
                    }
                }
                None => {
                    store
                        .put(&path, PutPayload::from(body))
                        .await
                        .map_err(|e| ExportError::store("uploading", location, e))?;
                }
            }
            Ok(())
        })
    }

    fn abort(mut self: Box<Self>) -> BoxFut<'static, Result<(), ExportError>> {
        match self.abort_upload() {
            Some(abort) => abort,
            None => Box::pin(async { Ok(()) }),
        }
    }
}

impl Drop for ObjectStaged {
    fn drop(&mut self) {
        // Abandoned mid-way (a cancelled day): the lake's cleanup aborts it.
        if let Some(abort) = self.abort_upload() {
            PENDING_ABORTS.push(abort);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use object_store::memory::InMemory;

    use super::*;
    use crate::lake::Lake;

    fn recorder(log: &Arc<Mutex<Vec<Stage>>>) -> StageRecorder {
        let log = Arc::clone(log);
        Arc::new(move |stage| {
            log.lock().expect("log").push(stage);
            Box::pin(async { Ok(()) })
        })
    }

    /// An in-memory lake with 4 KiB parts.
    fn small_parts() -> (Arc<InMemory>, Arc<ObjectPrefix>) {
        let store = Arc::new(InMemory::new());
        let as_lake = Arc::clone(&store) as Arc<dyn LakeObjectStore>;
        let dest = ObjectPrefix::new(as_lake, ObjPath::from("lake"), "mem://lake").with_part_bytes(4096);
        (store, Arc::new(dest))
    }

    /// `len` bytes of a known pattern.
    fn body(len: usize) -> Vec<u8> {
        (0..len).map(|i| u8::try_from(i % 251).expect("byte")).collect()
    }

    /// Stages `len` bytes of `rel` through the blocking writer path.
    async fn stage_bytes(
        dest: &Arc<ObjectPrefix>,
        rel: &str,
        len: usize,
        log: &Arc<Mutex<Vec<Stage>>>,
    ) -> Box<dyn StagedFile> {
        let mut staged = dest.stage(rel, "rtest", recorder(log)).await.expect("stage");
        tokio::task::spawn_blocking(move || {
            for chunk in body(len).chunks(1000) {
                staged.write_all(chunk).expect("write");
            }
            staged.finish().expect("finish");
            staged
        })
        .await
        .expect("writer")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn files_stream_up_in_parts_recorded_before_the_first() {
        let (store, dest) = small_parts();
        for (rel, len, uploads) in
            [("date=2025-01-01/small.parquet", 3000, 0), ("date=2025-01-01/big.parquet", 10_500, 1)]
        {
            let log = Arc::new(Mutex::new(Vec::new()));
            let staged = stage_bytes(&dest, rel, len, &log).await;
            assert!(dest.size(rel).await.expect("head").is_none(), "{rel}: visible before its commit");
            staged.commit().await.expect("commit");
            let got = store.get(&dest.path(rel)).await.expect("get").bytes().await.expect("body");
            assert_eq!(got.as_ref(), body(len).as_slice(), "{rel}");
            let recorded = log.lock().expect("log").clone();
            assert_eq!(recorded.len(), uploads, "{rel}: {recorded:?}");
            assert!(
                recorded.iter().all(|s| matches!(s, Stage::Upload { path, .. } if path == rel)),
                "{recorded:?}"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn abandoned_and_dead_uploads_are_aborted() {
        let (store, dest) = small_parts();
        let upload_id = |log: &Arc<Mutex<Vec<Stage>>>| match log.lock().expect("log").first() {
            Some(Stage::Upload { id, .. }) => id.clone(),
            other => panic!("no upload recorded: {other:?}"),
        };
        let alive = |id: String, rel: &'static str| {
            let (store, path) = (Arc::clone(&store), dest.path(rel));
            async move { store.put_part(&path, &id, 99, PutPayload::from_static(b"x")).await.is_ok() }
        };
        // Dropped mid-way (a cancelled day): the lake's cleanup aborts it.
        let log = Arc::new(Mutex::new(Vec::new()));
        let staged = stage_bytes(&dest, "a.parquet", 9000, &log).await;
        let id = upload_id(&log);
        assert!(alive(id.clone(), "a.parquet").await, "the upload exists while staged");
        drop(staged);
        Lake::new(Arc::clone(&dest) as Arc<dyn Destination>).cleanup().await;
        assert!(!alive(id, "a.parquet").await, "a dropped upload was not aborted");
        // Recorded by a run that died: a later run discards it by id.
        let log = Arc::new(Mutex::new(Vec::new()));
        let staged = stage_bytes(&dest, "b.parquet", 9000, &log).await;
        let id = upload_id(&log);
        std::mem::forget(staged);
        let stage = log.lock().expect("log")[0].clone();
        dest.discard(&stage).await.expect("discard");
        assert!(!alive(id, "b.parquet").await, "a dead run's upload was not aborted");
        assert!(store.head(&dest.path("b.parquet")).await.is_err(), "nothing became visible");
    }
}
