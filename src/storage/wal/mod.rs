//! Per-shard write-ahead log: O_DIRECT segment files, crc32c-checked rkyv records, group commit.
//!
//! Layout on disk: `<dir>/s<shard>-<segment id, 20 digits>.wal`. Each segment starts with a
//! 4 KiB header block (written with plain std I/O before the first DMA open, which also keeps
//! glommio's io-poll probe away from empty files), followed by records (see `record`).
//! Segments are preallocated with fallocate and never reused: ids only grow.
//!
//! Contracts the broker relies on:
//! - `append_*` never does I/O; it assigns the record's LSN and on-disk position at once.
//! - `wait_durable(lsn)` resolves Ok once every record up to `lsn` was written and fdatasync'ed.
//! - I/O failure (disk full, EIO): every waiter whose LSN was not yet durable gets `Err(Io)`.
//!   The failed batch stays buffered, in place, and is written again (ahead of newer records) by
//!   the next flush, which the next `wait_durable` call starts. So a record reported failed may
//!   still become durable later (the broker nacks it; a republish may duplicate: at-least-once).
//!   While the failure lasts, appends fill the bounded buffer and then fail with `BufferFull`.
//! - Why retrying after a failed fdatasync is sound here (PostgreSQL's "fsyncgate" lesson is that
//!   it is not, for buffered writes: the kernel may drop the dirty pages and report the error
//!   once, so a later fsync succeeds over lost data): records are written with O_DIRECT, so no
//!   page of ours waits in the page cache to be dropped, and a retry writes the whole failed
//!   batch again from our own buffer before its own fdatasync. A success therefore covers bytes
//!   that were really sent again. The one buffered write, a new segment's header, is created
//!   again (truncated) when the batch that needed it is retried. If the filesystem gives up
//!   instead (ext4 aborting its journal), every later write fails and publishes stay nacked.
//! - A retried batch reclaims no segment: records appended while it failed (a copy-forward, an
//!   enqueue logged again) wait behind it, and the older copies they replace must stay on disk
//!   until they are durable.
//! - Writes are 4 KiB aligned: a batch that ends mid-block is padded with zeros, and the next
//!   batch rewrites that partial block (same bytes first, then its own), so no disk space is
//!   wasted at low load. A torn rewrite of the partial block cannot harm the earlier records in
//!   it because their bytes are rewritten identically.

pub mod fault;
mod live;
mod record;
mod recovery;
mod segment;
mod writer;

use crate::limits::{WAL_SEGMENT_SIZE_BYTES_MAX, WAL_SEGMENT_SIZE_BYTES_MIN};
use std::path::PathBuf;
use std::sync::Arc;

pub use record::{EnqueueRecord, OwnedEnqueue, RecordKind, SettleRecord};
pub use segment::{log_shards, remove_log};
pub use writer::{EnqueueBody, Wal};

/// The on-disk layout, for tools that write or repair segment files (the WAL fuzz target
/// mutates a real log and restores the checksums so mutations reach the record decoders).
pub mod format {
    pub use super::record::{checksum, record_bytes_for, RECORD_HEADER_BYTES};
    pub use super::segment::SEGMENT_HEADER_BYTES;
}

/// The `WalError::NotReadable` reasons that may pass (the record is not durable yet, or kept
/// moving): a reader may try again later. Every other reason is final.
pub const NOT_READABLE_YET: [&str; 2] = [
    "record not durable yet",
    "record kept moving while waiting for it to be durable",
];

/// Log sequence number: monotonically increasing per shard log, starting at 1.
pub type Lsn = u64;

/// Unit of every DMA write and of alignment of writes on disk.
pub const WAL_BLOCK_BYTES: usize = 4096;

/// Largest body piece one `Part` record carries (`WalOptions::new`'s default for
/// `part_body_bytes`): a large body goes through the batch a few parts at a time, under the
/// soft bound, instead of needing a batch (and a DMA buffer) as large as itself.
pub const WAL_PART_BODY_BYTES_DEFAULT: usize = 1 << 20;

#[derive(Debug, Clone)]
pub struct WalOptions {
    pub dir: PathBuf,
    pub shard: usize,
    /// Size every segment file is preallocated to (e.g. 64 MiB).
    pub segment_size_bytes: u64,
    /// Bound of one batch: appends beyond it (while a flush runs) fail with `BufferFull`.
    /// Also bounds the size of one record, so it must hold the largest message.
    pub write_buffer_bytes: usize,
    /// Pending bytes above which the log is `congested`: writers that can wait should, so batches
    /// (and the confirm latency of everything in them) stay near this size while the hard bound
    /// above still fits one large record. `WalOptions::new` sets half the write buffer.
    pub batch_soft_bytes: usize,
    /// Recovery returns enqueue bodies until their total would pass this; the enqueues after
    /// that come back with `body_loaded == false` (read them with `Wal::read_live`).
    /// `u64::MAX` (the default of `WalOptions::new`) returns every body.
    pub recovery_body_budget_bytes: u64,
    /// Bodies longer than this (given to `append_enqueue_body`) are written as a chain of
    /// `Part` records of at most this many body bytes each; see `record`.
    pub part_body_bytes: usize,
}

impl WalOptions {
    /// Options with every body returned by recovery.
    pub fn new(
        dir: PathBuf,
        shard: usize,
        segment_size_bytes: u64,
        write_buffer_bytes: usize,
    ) -> WalOptions {
        WalOptions {
            dir,
            shard,
            segment_size_bytes,
            write_buffer_bytes,
            batch_soft_bytes: write_buffer_bytes / 2,
            recovery_body_budget_bytes: u64::MAX,
            part_body_bytes: WAL_PART_BODY_BYTES_DEFAULT.min(write_buffer_bytes / 4),
        }
    }

    pub fn validate(&self) -> Result<(), WalError> {
        if self.segment_size_bytes < WAL_SEGMENT_SIZE_BYTES_MIN
            || self.segment_size_bytes > WAL_SEGMENT_SIZE_BYTES_MAX
            || !self
                .segment_size_bytes
                .is_multiple_of(WAL_BLOCK_BYTES as u64)
        {
            return Err(WalError::InvalidOptions(
                "segment_size_bytes must be a multiple of 4 KiB within [64 KiB, 1 GiB]",
            ));
        }
        if self.write_buffer_bytes < 4 * WAL_BLOCK_BYTES
            || self.write_buffer_bytes as u64 > self.segment_capacity_bytes()
        {
            return Err(WalError::InvalidOptions(
                "write_buffer_bytes must be at least 16 KiB and at most a segment's data area",
            ));
        }
        if self.batch_soft_bytes == 0 || self.batch_soft_bytes > self.write_buffer_bytes {
            return Err(WalError::InvalidOptions(
                "batch_soft_bytes must be positive and at most write_buffer_bytes",
            ));
        }
        if self.part_body_bytes == 0
            || self.part_body_bytes + record::PART_HEADER_BYTES > self.payload_bytes_max()
        {
            return Err(WalError::InvalidOptions(
                "part_body_bytes must be positive and a part record must fit the write buffer",
            ));
        }
        Ok(())
    }

    /// Bytes of records one segment can hold.
    pub(crate) fn segment_capacity_bytes(&self) -> u64 {
        self.segment_size_bytes - segment::SEGMENT_HEADER_BYTES
    }

    /// Largest payload one record may carry: a whole record plus the seal that may precede it in
    /// a batch, plus the partial block a batch starts with, must fit in the write buffer.
    pub(crate) fn payload_bytes_max(&self) -> usize {
        self.write_buffer_bytes
            - WAL_BLOCK_BYTES
            - record::SEAL_RECORD_BYTES
            - record::RECORD_HEADER_BYTES
            - record::RECORD_ALIGN_BYTES
    }
}

/// Where a record lives: enough to read it back with one read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RecordPos {
    pub segment: u64,
    pub offset: u64,
    /// Record bytes on disk (header + payload + padding).
    pub len: u32,
}

impl RecordPos {
    /// Named in errors about a key the log does not hold (segment ids start at 1).
    pub const UNKNOWN: RecordPos = RecordPos {
        segment: 0,
        offset: 0,
        len: 0,
    };
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveredEnqueue {
    pub lsn: Lsn,
    pub pos: RecordPos,
    /// With `body_loaded == false`, `record.body` is empty: the body stayed on disk (over
    /// `WalOptions::recovery_body_budget_bytes`, or chained: a chained body is never loaded by
    /// recovery); everything else in `record` is filled.
    pub record: OwnedEnqueue,
    pub body_loaded: bool,
    /// Length of the body on disk, loaded or not.
    pub body_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveredTopology {
    pub lsn: Lsn,
    pub payload: bytes::Bytes,
}

/// The live state found by `Wal::open`.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Enqueues not settled, in log order.
    pub enqueues: Vec<RecoveredEnqueue>,
    /// Every topology record still on disk, in log order.
    pub topology: Vec<RecoveredTopology>,
    /// Where a torn tail was cut, if one was.
    pub truncated_at: Option<(PathBuf, u64)>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WalStats {
    pub bytes_written: u64,
    pub flushes: u64,
    pub flush_failures: u64,
    /// Of the failed flushes, those whose write failed (a block, or creating a segment) and
    /// those whose fdatasync failed.
    pub write_errors: u64,
    pub fdatasync_errors: u64,
    /// Flushes that wrote a failed batch again (each retry counts, failed or not).
    pub flush_retries: u64,
    /// Reads of a record (page-in, basic.get of a paged head, copy-forward) that failed with an
    /// I/O error; a corrupt record is not counted here.
    pub read_errors: u64,
    /// The last flush failed: nothing is confirmed until one succeeds again.
    pub failing: bool,
    pub records_appended: u64,
    pub segments_live: u64,
    pub segments_deleted: u64,
    pub records_recovered: u64,
    pub bytes_recovered: u64,
    pub recovery_ms: u64,
    pub last_appended_lsn: Lsn,
    pub durable_lsn: Lsn,
    /// Copy-forward: enqueues re-appended, their bytes on disk, and segments it emptied of
    /// live enqueues (they are deleted once nothing later needs them).
    pub records_copied: u64,
    pub bytes_copied: u64,
    pub segments_compacted: u64,
    /// Copy-forward rounds stopped by a read error (the originals stay where they are).
    pub compaction_failures: u64,
    /// Enqueues recovered without their body (over the recovery body budget).
    pub bodies_left_on_disk: u64,
    /// Segments zero-filled ahead of use and rolled into (`segment::prepare`), and rolls that
    /// found none ready and created theirs fallocated.
    pub segments_prepared: u64,
    pub segments_unprepared: u64,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum WalError {
    #[error("wal i/o error ({op}) on {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: Arc<std::io::Error>,
    },
    #[error("wal corrupt: {file} at offset {offset}: {reason}")]
    Corrupt {
        file: PathBuf,
        offset: u64,
        reason: &'static str,
    },
    #[error("wal record of {bytes} payload bytes exceeds the limit of {max}")]
    RecordTooLarge { bytes: usize, max: usize },
    #[error("wal write buffer full ({pending_bytes} of {max} bytes pending): wait for durability and retry")]
    BufferFull { pending_bytes: usize, max: usize },
    #[error("too many tasks waiting for wal durability (max {max})")]
    TooManyWaiters { max: usize },
    #[error("wal record at {pos:?} is not readable: {reason}")]
    NotReadable {
        pos: RecordPos,
        reason: &'static str,
    },
    #[error("invalid wal options: {0}")]
    InvalidOptions(&'static str),
    #[error("wal record encoding failed: {0}")]
    Encode(String),
    #[error("wal record decoding failed: {0}")]
    Decode(String),
    #[error("wal is closed")]
    Closed,
}

impl WalError {
    pub(crate) fn io(op: &'static str, path: &std::path::Path, e: std::io::Error) -> Self {
        WalError::Io {
            op,
            path: path.to_path_buf(),
            source: Arc::new(e),
        }
    }

    pub(crate) fn glommio(
        op: &'static str,
        path: &std::path::Path,
        e: glommio::GlommioError<()>,
    ) -> Self {
        Self::io(op, path, e.into())
    }
}

#[cfg(test)]
mod tests;
