//! [`ParquetSink`]: one day's Parquet file, encoded on a blocking thread.

use std::io::{self, Write};
use std::sync::atomic::{AtomicUsize, Ordering};

use arrow_array::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use tokio::sync::{Notify, mpsc};
use tracing::debug;

use crate::batch::lake_schema;
use crate::error::{ExportError, PlanError};
use crate::lake::StagedFile;

/// Settings of the Parquet files the export writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParquetOptions {
    /// Most rows in one row group. The writer holds the encoded row group in
    /// memory until it is full, so this bounds each writer's memory.
    pub max_row_group_rows: usize,
    /// zstd level (1 is fast and already ~12x smaller than the JSON).
    pub zstd_level: i32,
}

impl Default for ParquetOptions {
    fn default() -> Self {
        ParquetOptions { max_row_group_rows: 64 * 1024, zstd_level: 1 }
    }
}

/// The writer properties of one day file: zstd, dictionaries for the
/// low-cardinality columns (not for `session_id`, which is unique),
/// page statistics, bounded row groups, and `metadata` as key/value
/// metadata.
pub(crate) fn writer_properties(
    options: &ParquetOptions,
    metadata: Vec<KeyValue>,
) -> Result<WriterProperties, ExportError> {
    let level = ZstdLevel::try_new(options.zstd_level)
        .map_err(|source| PlanError::ZstdLevel { level: options.zstd_level, source })?;
    Ok(WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_dictionary_enabled(true)
        .set_column_dictionary_enabled(ColumnPath::from("session_id"), false)
        .set_statistics_enabled(EnabledStatistics::Page)
        // Smaller than the 1 MiB defaults: each of the nine columns holds a
        // data page and a dictionary page in progress per open writer.
        .set_data_page_size_limit(PAGE_BYTES)
        .set_dictionary_page_size_limit(PAGE_BYTES)
        .set_max_row_group_row_count(Some(options.max_row_group_rows.max(1)))
        .set_key_value_metadata(Some(metadata))
        .build())
}

/// The staged file as the Parquet writer's [`Write`] target.
#[derive(Debug)]
pub(crate) struct StagedWriter(Box<dyn StagedFile>);

impl Write for StagedWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write_all(buf)?;
        Ok(buf.len())
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.write_all(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A complete, durable day file, not yet visible to readers.
#[derive(Debug)]
pub(crate) struct EncodedFile {
    pub(crate) rows: u64,
    pub(crate) bytes: u64,
    pub(crate) staged: Box<dyn StagedFile>,
}

enum Message {
    Batch(RecordBatch),
    Finish,
}

/// One day's Parquet file being written.
///
/// Batches go through a bounded channel to a blocking thread that runs the
/// `parquet` crate's [`ArrowWriter`], so encoding never blocks the async
/// workers and a slow writer slows the sender (backpressure).
///
/// Dropping the sink without finishing it abandons the file: the
/// thread stops and drops its staged file (a local temp is deleted; an
/// upload is aborted by the lake's cleanup).
///
/// ## Memory Usage
/// At most [`SINK_CHANNEL_BATCHES`] batches wait in the channel. The
/// thread buffers up to 8 MiB of Arrow batches (about 80,000 calls), or
/// [`ParquetOptions::max_row_group_rows`] rows, before it opens the Parquet writer,
/// which then holds one encoded row group (zstd-compressed pages of about
/// 15 bytes per call) plus a compression context and page buffers per
/// column; a day smaller than a row group opens its writer only when
/// complete, so few writers are open at once. The encoded bytes stream into
/// the staged file: a local temp, or an object-store upload that buffers at
/// most one part (8 MiB) before sending it. No buffer grows with the day.
#[derive(Debug)]
pub struct ParquetSink {
    tx: mpsc::Sender<Message>,
    handle: tokio::task::JoinHandle<Result<EncodedFile, ExportError>>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Message::Batch(b) => write!(f, "Batch({} rows)", b.num_rows()),
            Message::Finish => f.write_str("Finish"),
        }
    }
}

/// Target size of a data or dictionary page in progress, per column.
const PAGE_BYTES: usize = 256 * 1024;

/// Arrow bytes a writer thread buffers before it opens the Parquet writer:
/// a day smaller than this is encoded in one go when complete (so many
/// small days in flight hold few open writers); a larger day opens its
/// writer here and streams from then on.
const PENDING_BYTES: usize = 8 << 20;

/// Writer threads alive now; [`writers_idle`] waits for none.
static LIVE_WRITERS: AtomicUsize = AtomicUsize::new(0);
static WRITERS_GONE: Notify = Notify::const_new();

/// Counts one writer thread while it lives.
struct WriterGuard;

impl WriterGuard {
    fn new() -> Self {
        LIVE_WRITERS.fetch_add(1, Ordering::SeqCst);
        WriterGuard
    }
}

impl Drop for WriterGuard {
    fn drop(&mut self) {
        if LIVE_WRITERS.fetch_sub(1, Ordering::SeqCst) == 1 {
            WRITERS_GONE.notify_waiters();
        }
    }
}

/// Waits until every writer thread has ended (an abandoned day's thread
/// finishes its current step, then drops its staged file), so what they
/// leave for cleanup is there before cleanup runs.
///
/// # Cancel safety
/// Dropping the future stops waiting; nothing else.
pub(crate) async fn writers_idle() {
    loop {
        let gone = WRITERS_GONE.notified();
        tokio::pin!(gone);
        gone.as_mut().enable();
        if LIVE_WRITERS.load(Ordering::SeqCst) == 0 {
            return;
        }
        gone.await;
    }
}

/// Batches buffered between a day's pager and its writer thread.
pub const SINK_CHANNEL_BATCHES: usize = 2;

impl ParquetSink {
    /// Starts the writer thread for `target`.
    pub(crate) fn spawn(target: Box<dyn StagedFile>, properties: WriterProperties, location: String) -> Self {
        let (tx, mut rx) = mpsc::channel::<Message>(SINK_CHANNEL_BATCHES);
        let loc = location;
        let max_buffered_rows = properties.max_row_group_row_count().unwrap_or(usize::MAX);
        let max_buffered_bytes = PENDING_BYTES;
        let live = WriterGuard::new();
        let handle = tokio::task::spawn_blocking(move || {
            // Dropped last, after the staged file: an abandoned upload is on
            // the cleanup list before the writer counts as gone.
            let _live = live;
            let parquet_err =
                |source| ExportError::Parquet { action: "writing", location: loc.clone(), source };
            // The writer (with a zstd context and page buffers per column,
            // tens of MB) opens only once a row group's worth of rows has
            // arrived or the day is complete: most days are encoded in one go,
            // so open writers stay few however many days are in flight.
            let mut pending: Vec<RecordBatch> = Vec::new();
            let (mut pending_rows, mut pending_bytes) = (0usize, 0usize);
            let mut rows = 0u64;
            let mut finished = false;
            // The day was abandoned when the sender goes before `Finish`.
            let mut next = || match rx.blocking_recv() {
                Some(Message::Batch(batch)) => Ok(Some(batch)),
                Some(Message::Finish) => Ok(None),
                None => Err(ExportError::Cancelled),
            };
            while !finished && pending_rows < max_buffered_rows && pending_bytes < max_buffered_bytes {
                match next()? {
                    Some(batch) => {
                        rows += batch.num_rows() as u64;
                        pending_rows += batch.num_rows();
                        pending_bytes += batch.get_array_memory_size();
                        pending.push(batch);
                    }
                    None => finished = true,
                }
            }
            let mut writer = ArrowWriter::try_new(StagedWriter(target), lake_schema(), Some(properties))
                .map_err(parquet_err)?;
            for batch in pending.drain(..) {
                writer.write(&batch).map_err(parquet_err)?;
            }
            while !finished {
                match next()? {
                    Some(batch) => {
                        rows += batch.num_rows() as u64;
                        writer.write(&batch).map_err(parquet_err)?;
                    }
                    None => finished = true,
                }
            }
            // Writes the footer and hands back the target.
            let target = writer.into_inner().map_err(parquet_err)?;
            let StagedWriter(mut staged) = target;
            let bytes = staged.finish()?;
            debug!(location = %loc, rows, bytes, "file encoded");
            Ok(EncodedFile { rows, bytes, staged })
        });
        ParquetSink { tx, handle }
    }

    /// Queues one batch, waiting while the writer is behind.
    ///
    /// # Errors
    /// The writer's error, if it failed.
    ///
    /// # Cancel safety
    /// Dropping the future may lose the batch; the sink is then unusable
    /// for a complete file and should be dropped.
    pub async fn write(&mut self, batch: RecordBatch) -> Result<(), ExportError> {
        if self.tx.send(Message::Batch(batch)).await.is_ok() {
            return Ok(());
        }
        // The thread stopped early, so with an error (it ends well only
        // after `Finish`, which `finish` sends as it consumes the sink).
        Err(self.join().await.err().unwrap_or(ExportError::Cancelled))
    }

    /// Ends the file and waits until it is encoded and durable.
    ///
    /// # Errors
    /// The writer's error, if it failed.
    ///
    /// # Cancel safety
    /// Dropping the future abandons the file (a temp file is deleted).
    pub(crate) async fn finish(mut self) -> Result<EncodedFile, ExportError> {
        // A closed channel means the thread already failed; `join` reports it.
        let _ = self.tx.send(Message::Finish).await;
        self.join().await
    }

    /// Abandons the file and waits until the writer let go of it.
    ///
    /// # Cancel safety
    /// Dropping the future still abandons the file, in the background.
    pub(crate) async fn abort(self) {
        let ParquetSink { tx, handle } = self;
        drop(tx);
        let _ = handle.await;
    }

    async fn join(&mut self) -> Result<EncodedFile, ExportError> {
        match (&mut self.handle).await {
            Ok(result) => result,
            Err(e) => Err(ExportError::Task(e)),
        }
    }
}
