//! The `Wal` handle: appends into a bounded in-memory batch, one flusher task per log writes
//! whole batches (group commit without timers), reclamation of fully settled segments.
//!
//! Group commit: appends only buffer and wake the flusher. The flusher takes everything
//! appended so far as one batch, writes it (one DMA write per segment touched) and hands it to a
//! sync task of its own (fdatasync, then `finish`); then it takes whatever accumulated meanwhile.
//! A lone record at low load is flushed at once; under load the batch grows by itself up to
//! `write_buffer_bytes`.
//!
//! Overlapped flushes: up to `WAL_FLUSHES_IN_FLIGHT_MAX` batches are between "taken" and
//! "finished" at once, so the next batch's write starts while the previous fdatasync is in
//! flight instead of after it. Writes stay one after another (a batch's first block rewrites the
//! previous batch's partial last block), and each fdatasync is issued after its own batch's
//! write returned, so it covers that batch and every earlier one. Sync tasks finish in batch
//! order (each waits for its predecessor), so the durable LSN only moves forward and a confirm
//! is released only by the fdatasync that covers it. When one fails, every later batch already
//! taken joins the failed batch (`Inner::finish`): the retry rewrites them all, in order.
//!
//! Chained (multi-part) enqueues: see `chain`.
//!
//! Segments ahead of use: a preparer task zero-fills the next segment under a temporary name
//! (`segment::prepare`) once the current one is `WAL_PREPARE_AT_PERCENT` full, and the flush
//! that rolls into it only writes its header and renames it (`segment::install`), so log writes
//! never land in fallocated (unwritten) space. Without one ready the roll creates the segment
//! as before (fallocated only). A fresh log's first segment is prepared at open.
//!
//! Compaction / copy-forward: see `compact`. Topology records would need a snapshot record kind
//! from their owner before they can be dropped: today they pin their segment.

mod chain;
mod compact;

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Instant;

use glommio::io::DmaFile;
use rkyv::util::AlignedVec;

pub use chain::EnqueueBody;

use super::fault::{self, FaultOp};
use super::live::Liveness;
use super::record::{
    self, EnqueueRecord, OwnedEnqueue, RecordKind, SettleRecord, SEAL_RECORD_BYTES,
};
use super::recovery::{self, Tail};
use super::segment::{self, SegmentHeader, SEGMENT_HEADER_BYTES};
use crate::failure_log::{self, FailureEpisode};
use crate::latency_trace::{self, Stage};
use crate::metrics::Histogram;

use super::{
    Lsn, RecordPos, Recovered, WalError, WalOptions, WalStats, NOT_READABLE_YET, WAL_BLOCK_BYTES,
};
use crate::limits::{
    WAL_FLUSHES_IN_FLIGHT_MAX, WAL_PREPARE_AT_PERCENT, WAL_PREPARE_RETRY_DELAY,
    WAL_READ_LIVE_ATTEMPTS_MAX, WAL_WAITERS_MAX,
};

/// Numbers the open logs of the process, for their prepared segments' names.
static PREPARED_INSTANCES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// First bucket of the batch-size histogram: one 4 KiB block.
pub const WAL_BATCH_BYTES_FIRST_BOUND: u64 = 4096;
/// First bucket of the fdatasync histogram: 16 µs (in ns).
pub const WAL_FDATASYNC_NS_FIRST_BOUND: u64 = 16_000;

/// Contiguous bytes of one segment, starting at a block boundary. The first bytes may be a
/// copy of the previous batch's partial last block.
#[derive(Debug)]
struct Chunk {
    segment: u64,
    file_offset: u64,
    data: Vec<u8>,
}

#[derive(Debug, Default)]
struct Batch {
    chunks: Vec<Chunk>,
    bytes: usize,
    first_lsn: Lsn,
    last_lsn: Lsn,
    /// Log position just past the last record.
    end: (u64, u64),
}

/// A successful flush: bytes written, segments created.
type Flushed = (u64, Vec<(u64, Rc<DmaFile>)>);

/// One flush: a batch, the segments it must create first, the segments to delete after it.
struct Job {
    batch: Batch,
    /// The batch is one whose flush failed before.
    retry: bool,
    create: Vec<(u64, Lsn)>,
    reclaim: Vec<u64>,
    /// `--trace-latency`: stamps of the sampled messages in this batch.
    traced: Vec<u64>,
    /// `Inner::fail_seq` when the job was taken: a flush that failed since (an earlier batch
    /// still in flight then) makes this one part of the failed batch whatever its own result.
    fail_seq: u64,
}

struct Inner {
    opts: WalOptions,
    payload_bytes_max: usize,
    next_lsn: Lsn,
    durable_lsn: Lsn,
    /// Position up to which the log is durable: (segment, offset).
    durable_pos: (u64, u64),
    cur_segment: u64,
    cur_offset: u64,
    /// `[align_down(cur_offset), cur_offset)` of the current segment as of the last batch taken.
    partial: Vec<u8>,
    pending: Batch,
    /// A batch whose write failed: rewritten, alone, on the next `wait_durable`.
    failed: Option<Batch>,
    retry_requested: bool,
    /// Segments given an id but not created on disk yet: id -> first LSN.
    new_segments: BTreeMap<u64, Lsn>,
    files: BTreeMap<u64, Rc<DmaFile>>,
    live: Liveness,
    waiters: Vec<Waker>,
    flusher_waker: Option<Waker>,
    fail_seq: u64,
    failed_through: Lsn,
    last_error: Option<WalError>,
    /// What the flusher has logged of the current run of failed flushes (`failure_log`).
    flush_episode: FailureEpisode,
    closed: bool,
    stats: WalStats,
    /// Bytes of each batch written (padding included) and the fdatasync time of each flush,
    /// for the operator (`Wal::histograms`).
    batch_bytes: Histogram,
    fdatasync_ns: Histogram,
    scratch: AlignedVec,
    /// Set by every successful flush: the compactor looks for segments to copy forward.
    compact_requested: bool,
    compactor_waker: Option<Waker>,
    /// Copy-forward waiting for room in the batch (`compact::wait_copy_room`).
    copy_room_waker: Option<Waker>,
    /// Chained enqueues not fully appended yet, oldest first; only the front one is fed.
    streams: VecDeque<chain::Stream>,
    /// Chained enqueues fully appended, not yet durable: (barrier, LSN of the terminal record).
    finishing: VecDeque<(Lsn, Lsn)>,
    /// `--trace-latency`: sampled messages appended and not yet taken into a flush, by LSN.
    traced: latency_trace::Waiting,
    /// Batches taken by the flusher and not yet finished (written, syncing, or waiting for an
    /// earlier one to finish); at most `WAL_FLUSHES_IN_FLIGHT_MAX`.
    flushes_in_flight: usize,
    /// The next segment, zero-filled at `prepared_path` (the preparer task).
    prepared: Option<Rc<DmaFile>>,
    prepared_path: std::path::PathBuf,
    /// The flusher is installing the prepared file: the preparer must not reuse its path.
    installing: bool,
    preparer_waker: Option<Waker>,
    /// After a failed preparation, the next is not tried before this.
    prepare_retry_at: Option<Instant>,
    prepare_episode: FailureEpisode,
    /// Test hook: simulates a crash between a copy-forward and the deletion it allows.
    #[cfg(test)]
    reclaim_paused: bool,
}

/// The per-shard write-ahead log. `!Send`: it lives on one executor.
pub struct Wal {
    inner: Rc<RefCell<Inner>>,
    flusher: RefCell<Option<glommio::task::JoinHandle<()>>>,
    compactor: RefCell<Option<glommio::task::JoinHandle<()>>>,
    preparer: RefCell<Option<glommio::task::JoinHandle<()>>>,
}

impl Wal {
    /// Opens (creating the dir and first segment if needed) and replays the log. See `recovery`
    /// for the torn-tail versus corruption rule.
    pub async fn open(opts: WalOptions) -> Result<(Wal, Recovered), WalError> {
        opts.validate()?;
        let started = Instant::now();
        let mut log = recovery::recover(&opts).await?;
        segment::remove_stale_prepared(&opts.dir, opts.shard);
        let recovered = std::mem::take(&mut log.recovered);
        let (cur_segment, cur_offset, partial) = match log.tail.take() {
            Some(Tail {
                segment,
                offset,
                partial,
            }) => (segment, offset, partial),
            None => {
                let id = log.last_segment_id + 1;
                let header = SegmentHeader {
                    shard: opts.shard as u32,
                    id,
                    first_lsn: log.next_lsn,
                };
                let file = first_segment(&opts, header).await?;
                log.files.insert(id, file);
                log.live.add_segment(id);
                (id, SEGMENT_HEADER_BYTES, Vec::new())
            }
        };
        let stats = WalStats {
            records_recovered: log.records,
            bodies_left_on_disk: log.bodies_left_on_disk,
            bytes_recovered: log.bytes,
            last_appended_lsn: log.next_lsn - 1,
            durable_lsn: log.next_lsn - 1,
            ..WalStats::default()
        };
        let prepared_path = segment::prepared_path(
            &opts.dir,
            opts.shard,
            PREPARED_INSTANCES.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        );
        let inner = Inner {
            payload_bytes_max: opts.payload_bytes_max(),
            opts,
            next_lsn: log.next_lsn,
            durable_lsn: log.next_lsn - 1,
            durable_pos: (cur_segment, cur_offset),
            cur_segment,
            cur_offset,
            partial,
            pending: Batch::default(),
            batch_bytes: Histogram::new(WAL_BATCH_BYTES_FIRST_BOUND),
            fdatasync_ns: Histogram::new(WAL_FDATASYNC_NS_FIRST_BOUND),
            failed: None,
            flush_episode: FailureEpisode::default(),
            retry_requested: false,
            new_segments: BTreeMap::new(),
            files: log.files,
            live: log.live,
            waiters: Vec::new(),
            flusher_waker: None,
            fail_seq: 0,
            failed_through: 0,
            last_error: None,
            closed: false,
            stats,
            scratch: AlignedVec::new(),
            compact_requested: true,
            compactor_waker: None,
            copy_room_waker: None,
            streams: VecDeque::new(),
            finishing: VecDeque::new(),
            traced: latency_trace::Waiting::default(),
            flushes_in_flight: 0,
            prepared: None,
            prepared_path,
            installing: false,
            preparer_waker: None,
            prepare_retry_at: None,
            prepare_episode: FailureEpisode::default(),
            #[cfg(test)]
            reclaim_paused: false,
        };
        let inner = Rc::new(RefCell::new(inner));
        let reclaim = inner.borrow().live.reclaimable(cur_segment);
        reclaim_segments(&inner, &reclaim).await;
        let task = glommio::spawn_local(flusher(inner.clone())).detach();
        let compactor = glommio::spawn_local(compact::compactor(inner.clone())).detach();
        let preparer = glommio::spawn_local(preparer(inner.clone())).detach();
        let wal = Wal {
            inner,
            flusher: RefCell::new(Some(task)),
            compactor: RefCell::new(Some(compactor)),
            preparer: RefCell::new(Some(preparer)),
        };
        wal.inner.borrow_mut().stats.recovery_ms = started.elapsed().as_millis() as u64;
        tracing::info!(
            shard = wal.inner.borrow().opts.shard,
            messages = recovered.enqueues.len(),
            topology = recovered.topology.len(),
            bytes = wal.inner.borrow().stats.bytes_recovered,
            ms = wal.inner.borrow().stats.recovery_ms,
            "wal recovered"
        );
        Ok((wal, recovered))
    }

    /// Buffers an enqueue; no I/O. Returns its LSN and where it will live on disk.
    pub fn append_enqueue(&self, r: &EnqueueRecord) -> Result<(Lsn, RecordPos), WalError> {
        let mut g = self.inner.borrow_mut();
        let mut scratch = std::mem::take(&mut g.scratch);
        let result = record::serialize_enqueue(r, &mut scratch)
            .and_then(|_| g.append(RecordKind::Enqueue, &scratch));
        g.scratch = scratch;
        let (lsn, pos) = result?;
        g.live.on_enqueue(pos, (r.queue, r.message), lsn);
        Ok((lsn, pos))
    }

    pub fn append_settle(&self, r: &SettleRecord) -> Result<Lsn, WalError> {
        let mut g = self.inner.borrow_mut();
        let mut scratch = std::mem::take(&mut g.scratch);
        let result = record::serialize_settle(r, &mut scratch)
            .and_then(|_| g.append(RecordKind::Settle, &scratch));
        g.scratch = scratch;
        let (lsn, pos) = result?;
        for &m in r.messages {
            g.live.on_settle(pos.segment, (r.queue, m));
            g.cancel_stream((r.queue, m));
        }
        Ok(lsn)
    }

    pub fn append_topology(&self, payload: &[u8]) -> Result<Lsn, WalError> {
        let mut g = self.inner.borrow_mut();
        let (lsn, pos) = g.append(RecordKind::Topology, payload)?;
        g.live.on_topology(pos.segment);
        Ok(lsn)
    }

    /// `--trace-latency`: the record at `lsn` carries a sampled message stamped `stamp`; the
    /// flusher records its write and fdatasync stages.
    pub fn trace(&self, lsn: Lsn, stamp: u64) {
        self.inner.borrow_mut().traced.push(lsn, stamp);
    }

    /// Resolves once every record up to `lsn` is written and fdatasync'ed; Err if the flush that
    /// carried it failed (see the module contract: a later flush retries those records).
    pub async fn wait_durable(&self, lsn: Lsn) -> Result<(), WalError> {
        let fail_seq = {
            let mut g = self.inner.borrow_mut();
            if g.reported_durable_lsn() >= lsn {
                return Ok(());
            }
            if g.failed.is_some() {
                g.retry_requested = true;
                g.wake_flusher();
            }
            g.fail_seq
        };
        poll_fn(|cx| {
            let mut g = self.inner.borrow_mut();
            if g.reported_durable_lsn() >= lsn {
                return Poll::Ready(Ok(()));
            }
            if g.fail_seq != fail_seq && g.failed_through >= lsn {
                return Poll::Ready(Err(g.last_error.clone().unwrap_or(WalError::Closed)));
            }
            if g.closed {
                return Poll::Ready(Err(WalError::Closed));
            }
            if g.waiters.len() >= WAL_WAITERS_MAX {
                return Poll::Ready(Err(WalError::TooManyWaiters {
                    max: WAL_WAITERS_MAX,
                }));
            }
            g.waiters.push(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Whether an enqueue with this key is live (appended and not settled).
    pub fn holds_live(&self, queue: u64, message: u64) -> bool {
        self.inner.borrow().live.get((queue, message)).is_some()
    }

    /// Reads the current copy of a live enqueue by key (for queues paged out of memory, and for
    /// enqueues recovered without their body). Waits for the record to be durable first.
    /// Copy-forward may move a record while we wait: the key is looked up again after each wait,
    /// at most `WAL_READ_LIVE_ATTEMPTS_MAX` times.
    pub async fn read_live(&self, queue: u64, message: u64) -> Result<OwnedEnqueue, WalError> {
        for _ in 0..WAL_READ_LIVE_ATTEMPTS_MAX {
            let (live, parts, durable_lsn, streaming) = {
                let g = self.inner.borrow();
                let key = (queue, message);
                let streaming = g.stream_barrier(key);
                (g.live.get(key), g.live.parts(key), g.durable_lsn, streaming)
            };
            if let Some(barrier) = streaming {
                // Its newest copy is a chain still being appended: read that one.
                self.wait_durable(barrier).await?;
                continue;
            }
            let Some(live) = live else {
                return Err(WalError::NotReadable {
                    pos: RecordPos::UNKNOWN,
                    reason: "no live enqueue with that key",
                });
            };
            if live.lsn > durable_lsn {
                self.wait_durable(live.lsn).await?;
                continue;
            }
            let read = match parts {
                None => self.read_enqueue(live.pos).await?,
                Some(parts) => self.read_chained(live, &parts).await?,
            };
            if (read.queue, read.message) != (queue, message) {
                return Err(WalError::Corrupt {
                    file: self.segment_path(live.pos.segment),
                    offset: live.pos.offset,
                    reason: "enqueue record holds another key than the index says",
                });
            }
            return Ok(read);
        }
        Err(WalError::NotReadable {
            pos: RecordPos::UNKNOWN,
            reason: NOT_READABLE_YET[1],
        })
    }

    fn segment_path(&self, id: u64) -> std::path::PathBuf {
        let g = self.inner.borrow();
        segment::segment_path(&g.opts.dir, g.opts.shard, id)
    }

    /// Reads a durable enqueue back by position. Positions change when copy-forward moves a
    /// record: callers that keep messages out of memory should prefer `read_live`.
    pub async fn read_enqueue(&self, at: RecordPos) -> Result<OwnedEnqueue, WalError> {
        let (header, payload, path) = self.read_record(at).await?;
        let corrupt = |reason| WalError::Corrupt {
            file: path.clone(),
            offset: at.offset,
            reason,
        };
        if header.kind != RecordKind::Enqueue {
            return Err(corrupt("not an enqueue record"));
        }
        let archived = record::access_enqueue(&payload[..])?;
        Ok(record::to_owned_enqueue(archived))
    }

    /// Reads and checks one durable record: its header, the bytes read (the payload is at
    /// `RECORD_HEADER_BYTES..`, 16-byte aligned in memory), and its file.
    async fn read_record(
        &self,
        at: RecordPos,
    ) -> Result<(record::RecordHeader, RecordBytes, std::path::PathBuf), WalError> {
        let (file, path, payload_bytes_max) = {
            let g = self.inner.borrow();
            let not = |reason| WalError::NotReadable { pos: at, reason };
            let file = g
                .files
                .get(&at.segment)
                .cloned()
                .ok_or(not("segment not live"))?;
            if (at.segment, at.offset + u64::from(at.len)) > g.durable_pos {
                return Err(not(NOT_READABLE_YET[0]));
            }
            let path = segment::segment_path(&g.opts.dir, g.opts.shard, at.segment);
            (file, path, g.payload_bytes_max)
        };
        let read = read_checked(&file, path, at, payload_bytes_max, "read record").await;
        count_read_error(&self.inner, &read);
        read
    }

    /// Test hook: where the parts of a live chained enqueue are.
    #[cfg(test)]
    pub(super) fn parts_of(&self, queue: u64, message: u64) -> Option<Vec<RecordPos>> {
        let parts = self.inner.borrow().live.parts((queue, message));
        parts.map(|p| p.to_vec())
    }

    /// Test hook: while paused, segments freed by a flush stay on disk (as after a crash right
    /// before their deletion).
    #[cfg(test)]
    pub(super) fn pause_reclaim(&self, paused: bool) {
        self.inner.borrow_mut().reclaim_paused = paused;
    }

    /// Bytes appended and waiting for the next flush (bounded by `write_buffer_bytes`): callers
    /// that can wait should, before appending more, once this nears the bound.
    pub fn pending_bytes(&self) -> usize {
        self.inner.borrow().pending.bytes
    }

    /// The batch is over its soft bound: writers that can wait for a flush should.
    /// A chained enqueue being appended counts as congestion: it holds the log's spare room
    /// until its last part is in, and each shard takes one large body at a time that way.
    pub fn congested(&self) -> bool {
        let g = self.inner.borrow();
        g.pending.bytes > g.opts.batch_soft_bytes || !g.streams.is_empty()
    }

    /// (bytes per batch written, fdatasync nanoseconds per flush) since the log was opened.
    pub fn histograms(&self) -> (Histogram, Histogram) {
        let g = self.inner.borrow();
        (g.batch_bytes, g.fdatasync_ns)
    }

    pub fn stats(&self) -> WalStats {
        let g = self.inner.borrow();
        WalStats {
            segments_live: (g.files.len() + g.new_segments.len()) as u64,
            last_appended_lsn: g.next_lsn - 1,
            durable_lsn: g.reported_durable_lsn(),
            ..g.stats
        }
    }

    /// Makes everything appended durable, then stops the flusher.
    pub async fn close(self) -> Result<(), WalError> {
        let last = self.inner.borrow().next_lsn - 1;
        let flushed = self.wait_durable(last).await;
        self.inner.borrow_mut().shut();
        let tasks = [
            self.flusher.borrow_mut().take(),
            self.compactor.borrow_mut().take(),
            self.preparer.borrow_mut().take(),
        ];
        for task in tasks.into_iter().flatten() {
            task.await;
        }
        flushed
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        self.inner.borrow_mut().shut();
    }
}

impl Inner {
    fn shut(&mut self) {
        self.closed = true;
        self.wake_flusher();
        if let Some(w) = self.compactor_waker.take() {
            w.wake();
        }
        if let Some(w) = self.copy_room_waker.take() {
            w.wake();
        }
        self.wake_preparer();
        self.waiters.drain(..).for_each(Waker::wake);
    }

    fn register_created(&mut self, created: Vec<(u64, Rc<DmaFile>)>) {
        for (id, file) in created {
            self.new_segments.remove(&id);
            self.files.insert(id, file);
        }
    }

    /// Appends `job`'s batch to the failed one (it was taken after it, so it goes after it).
    fn join_failed(&mut self, job: &mut Job) {
        let batch = std::mem::take(&mut job.batch);
        let Some(failed) = self.failed.as_mut() else {
            // Only a failure sets `fail_seq` and `failed` together, and only a retry (taken
            // after every earlier flush finished) clears it.
            unreachable!("fail_seq moved without a failed batch");
        };
        assert!(
            batch.first_lsn == 0 || batch.first_lsn > failed.last_lsn,
            "a batch joins the failed one out of order: {} after {}",
            batch.first_lsn,
            failed.last_lsn
        );
        failed.chunks.extend(batch.chunks);
        failed.bytes += batch.bytes;
        if batch.last_lsn != 0 {
            failed.last_lsn = batch.last_lsn;
            failed.end = batch.end;
        }
    }

    fn wake_preparer(&mut self) {
        if let Some(w) = self.preparer_waker.take() {
            w.wake();
        }
    }

    /// The preparer should zero-fill the next segment now: none is ready or being installed,
    /// the current one is `WAL_PREPARE_AT_PERCENT` full, and no failure asks it to wait.
    fn wants_prepared(&self, now: Instant) -> bool {
        self.prepared.is_none()
            && !self.installing
            && self.prepare_retry_at.is_none_or(|at| now >= at)
            && self.cur_offset * 100 >= self.opts.segment_size_bytes * WAL_PREPARE_AT_PERCENT
    }

    /// The prepared next segment for a roll, if one is ready; the preparer waits until
    /// `installed` is called.
    fn take_prepared(&mut self) -> Option<Rc<DmaFile>> {
        let file = self.prepared.take()?;
        self.installing = true;
        Some(file)
    }

    fn installed(&mut self) {
        self.installing = false;
        self.wake_preparer();
    }

    fn wake_flusher(&mut self) {
        if let Some(w) = self.flusher_waker.take() {
            w.wake();
        }
    }

    /// Places one record in the pending batch: assigns LSN and position, rolls the segment
    /// (with a seal record) when the record and a later seal would not fit.
    fn append(&mut self, kind: RecordKind, payload: &[u8]) -> Result<(Lsn, RecordPos), WalError> {
        self.append_pieces(kind, &[payload])
    }

    /// `append` of a payload given in pieces (a part header and a slice of a body).
    fn append_pieces(
        &mut self,
        kind: RecordKind,
        pieces: &[&[u8]],
    ) -> Result<(Lsn, RecordPos), WalError> {
        if self.closed {
            return Err(WalError::Closed);
        }
        let payload_len: usize = pieces.iter().map(|p| p.len()).sum();
        if payload_len > self.payload_bytes_max {
            return Err(WalError::RecordTooLarge {
                bytes: payload_len,
                max: self.payload_bytes_max,
            });
        }
        let record_bytes = record::record_bytes_for(payload_len);
        let roll = self.cur_offset + (record_bytes + SEAL_RECORD_BYTES) as u64
            > self.opts.segment_size_bytes;
        let prefix = if self.has_chunk_for_current() {
            0
        } else {
            self.partial.len()
        };
        let need = prefix + record_bytes + if roll { SEAL_RECORD_BYTES } else { 0 };
        if self.pending.bytes + need > self.opts.write_buffer_bytes {
            return Err(WalError::BufferFull {
                pending_bytes: self.pending.bytes,
                max: self.opts.write_buffer_bytes,
            });
        }
        if roll {
            self.push_record(RecordKind::Seal, &[]);
            self.cur_segment += 1;
            self.cur_offset = SEGMENT_HEADER_BYTES;
            self.partial.clear();
            self.new_segments.insert(self.cur_segment, self.next_lsn);
            self.live.add_segment(self.cur_segment);
        }
        let pos = RecordPos {
            segment: self.cur_segment,
            offset: self.cur_offset,
            len: record_bytes as u32,
        };
        let lsn = self.push_record(kind, pieces);
        self.stats.records_appended += 1;
        self.wake_flusher();
        Ok((lsn, pos))
    }

    fn has_chunk_for_current(&self) -> bool {
        self.pending
            .chunks
            .last()
            .is_some_and(|c| c.segment == self.cur_segment)
    }

    fn push_record(&mut self, kind: RecordKind, payload: &[&[u8]]) -> Lsn {
        if !self.has_chunk_for_current() {
            let file_offset = self.cur_offset - self.cur_offset % WAL_BLOCK_BYTES as u64;
            // The partial block rewritten at `file_offset` must be exactly the bytes before
            // `cur_offset`: anything else writes records over others.
            assert_eq!(self.partial.len() as u64, self.cur_offset - file_offset);
            let data = std::mem::take(&mut self.partial);
            self.pending.bytes += data.len();
            self.pending.chunks.push(Chunk {
                segment: self.cur_segment,
                file_offset,
                data,
            });
        }
        let lsn = self.next_lsn;
        self.next_lsn += 1;
        if self.pending.first_lsn == 0 {
            self.pending.first_lsn = lsn;
        }
        let batch_lsn = self.pending.first_lsn;
        // Recovery trusts both: LSNs ascend by one, a record's batch starts at or before it.
        assert!(
            lsn > self.pending.last_lsn && lsn > self.durable_lsn,
            "lsn {lsn} not above the batch's {} and the durable {}",
            self.pending.last_lsn,
            self.durable_lsn
        );
        assert!(
            batch_lsn <= lsn,
            "batch lsn {batch_lsn} above its record's {lsn}"
        );
        let Some(chunk) = self.pending.chunks.last_mut() else {
            unreachable!("a chunk for the current segment was just ensured");
        };
        let before = chunk.data.len();
        record::encode_into(&mut chunk.data, kind, lsn, batch_lsn, payload);
        let added = chunk.data.len() - before;
        assert_eq!(chunk.file_offset + before as u64, self.cur_offset);
        self.cur_offset += added as u64;
        self.pending.bytes += added;
        self.pending.last_lsn = lsn;
        self.pending.end = (self.cur_segment, self.cur_offset);
        lsn
    }

    /// The next flush, if there is one to do now.
    fn take_job(&mut self) -> Option<Job> {
        let retry = self.failed.is_some();
        let batch = if retry {
            // Only once every batch taken before the failure has finished: those still in flight
            // join the failed batch first (`finish`).
            if !self.retry_requested || self.flushes_in_flight > 0 {
                return None;
            }
            self.retry_requested = false;
            self.failed.take()?
        } else {
            if self.pending.chunks.is_empty() {
                return None;
            }
            let batch = std::mem::take(&mut self.pending);
            if let Some(last) = batch
                .chunks
                .last()
                .filter(|c| c.segment == self.cur_segment)
            {
                let from = (self.cur_offset
                    - self.cur_offset % WAL_BLOCK_BYTES as u64
                    - last.file_offset) as usize;
                self.partial = last.data.get(from..).unwrap_or(&[]).to_vec();
            }
            batch
        };
        let create = batch
            .chunks
            .iter()
            .filter_map(|c| {
                self.new_segments
                    .get(&c.segment)
                    .map(|&lsn| (c.segment, lsn))
            })
            .collect();
        let oldest_written = batch.chunks.first().map_or(self.cur_segment, |c| c.segment);
        // Computed now, acted on after this batch is durable: the settles that freed these
        // segments are all in this batch or earlier ones. Not for a retried batch: records
        // appended since it failed (a copy-forward appended while it was in flight, an enqueue
        // logged again) are in the pending batch behind it, and the segment their older copy
        // lives in must outlive them being durable. The flush of that batch reclaims.
        let reclaim = if retry {
            Vec::new()
        } else {
            self.live.reclaimable(oldest_written.min(self.cur_segment))
        };
        if retry {
            self.stats.flush_retries += 1;
        }
        let traced = self.traced.take_through(batch.last_lsn);
        Some(Job {
            batch,
            retry,
            create,
            reclaim,
            traced,
            fail_seq: self.fail_seq,
        })
    }

    fn finish(&mut self, mut job: Job, result: Result<Flushed, WalError>) -> bool {
        assert!(
            self.flushes_in_flight > 0,
            "a flush finished that was never taken"
        );
        self.flushes_in_flight -= 1;
        if job.fail_seq != self.fail_seq {
            // An earlier batch, in flight when this one was taken, failed: this one's records
            // follow it on disk, so they are written again with it, whatever became of them.
            if let Ok((_, created)) = result {
                self.register_created(created);
            }
            self.join_failed(&mut job);
            self.flush_finished();
            return false;
        }
        let ok = match result {
            Ok((bytes, created)) => {
                self.register_created(created);
                assert!(
                    job.batch.last_lsn >= self.durable_lsn,
                    "durable lsn goes backwards: {} after {}",
                    job.batch.last_lsn,
                    self.durable_lsn
                );
                self.durable_lsn = job.batch.last_lsn;
                self.durable_pos = job.batch.end;
                while let Some(&(_, terminal)) = self.finishing.front() {
                    if terminal > self.durable_lsn {
                        break;
                    }
                    self.finishing.pop_front();
                }
                self.stats.flushes += 1;
                self.stats.failing = false;
                if let Some(recovery) = self.flush_episode.succeeded(Instant::now()) {
                    failure_log::recovered(recovery, "wal flush");
                }
                self.stats.bytes_written += bytes;
                self.batch_bytes.observe(bytes);
                self.compact_requested = true;
                if let Some(w) = self.compactor_waker.take() {
                    w.wake();
                }
                self.wake_preparer();
                true
            }
            Err(e) => {
                let note = self.flush_episode.failed(Instant::now());
                failure_log::warn(note, "wal flush", &e);
                self.stats.flush_failures += 1;
                self.stats.failing = true;
                match &e {
                    WalError::Io {
                        op: "fdatasync", ..
                    } => self.stats.fdatasync_errors += 1,
                    _ => self.stats.write_errors += 1,
                }
                debug_assert!(
                    job.retry || self.failed.is_none(),
                    "one failed batch at a time"
                );
                self.fail_seq += 1;
                self.failed_through = self.next_lsn - 1;
                self.last_error = Some(e);
                self.failed = Some(job.batch);
                false
            }
        };
        self.flush_finished();
        ok
    }

    /// Wakes whoever waits for a flush: copy-forward first (it looks for an empty batch), then
    /// the flusher and the durability waiters.
    fn flush_finished(&mut self) {
        if let Some(w) = self.copy_room_waker.take() {
            w.wake();
        }
        self.wake_flusher();
        self.waiters.drain(..).for_each(Waker::wake);
    }
}

async fn flusher(inner: Rc<RefCell<Inner>>) {
    let mut previous: Option<glommio::task::JoinHandle<()>> = None;
    loop {
        let job = poll_fn(|cx| {
            let mut g = inner.borrow_mut();
            if g.closed {
                return Poll::Ready(None);
            }
            if g.flushes_in_flight < WAL_FLUSHES_IN_FLIGHT_MAX {
                g.feed_streams();
                if let Some(job) = g.take_job() {
                    g.flushes_in_flight += 1;
                    return Poll::Ready(Some(job));
                }
            }
            g.flusher_waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
        let Some(job) = job else { break };
        let written = write_job(&inner, &job).await;
        let sync = sync_and_finish(inner.clone(), job, written, previous.take());
        previous = Some(glommio::spawn_local(sync).detach());
    }
    if let Some(last) = previous {
        last.await;
    }
}

/// The second half of a flush: the fdatasync of a written batch (none when its write failed),
/// then, once the batch before it has finished, `finish` and the reclamation it allows.
async fn sync_and_finish(
    inner: Rc<RefCell<Inner>>,
    mut job: Job,
    written: Result<Written, WalError>,
    previous: Option<glommio::task::JoinHandle<()>>,
) {
    let result = match written {
        Ok(written) => sync_job(&inner, &job, &written.files)
            .await
            .map(|()| (written.bytes, written.created)),
        Err(error) => Err(error),
    };
    if let Some(previous) = previous {
        previous.await;
    }
    let reclaim = std::mem::take(&mut job.reclaim);
    let ok = inner.borrow_mut().finish(job, result);
    #[cfg(test)]
    let ok = ok && !inner.borrow().reclaim_paused;
    if ok {
        reclaim_segments(&inner, &reclaim).await;
    }
}

/// A batch written: its bytes, the segments created for it, every file it touched.
struct Written {
    bytes: u64,
    created: Vec<(u64, Rc<DmaFile>)>,
    files: BTreeMap<u64, Rc<DmaFile>>,
}

/// Creates the segments the batch needs, writes each chunk, fdatasyncs every file touched.
/// Returns bytes written and the segments created.
async fn write_job(inner: &Rc<RefCell<Inner>>, job: &Job) -> Result<Written, WalError> {
    let (opts, mut files) = {
        let g = inner.borrow();
        let files: BTreeMap<u64, Rc<DmaFile>> = job
            .batch
            .chunks
            .iter()
            .filter_map(|c| g.files.get(&c.segment).map(|f| (c.segment, f.clone())))
            .collect();
        (g.opts.clone(), files)
    };
    let mut created = Vec::new();
    for &(id, first_lsn) in &job.create {
        let header = SegmentHeader {
            shard: opts.shard as u32,
            id,
            first_lsn,
        };
        let prepared = inner.borrow_mut().take_prepared();
        let file = match prepared {
            Some(file) => {
                let from = inner.borrow().prepared_path.clone();
                let installed = segment::install(&opts.dir, &from, file, header).await;
                let mut g = inner.borrow_mut();
                g.installed();
                g.stats.segments_prepared += u64::from(installed.is_ok());
                drop(g);
                installed?
            }
            None => {
                inner.borrow_mut().stats.segments_unprepared += 1;
                segment::create(&opts.dir, header, opts.segment_size_bytes).await?
            }
        };
        // Registered at once, not when the batch is durable: the next batch may be taken while
        // this one's fdatasync is in flight, and must write into this file, not create it again.
        inner
            .borrow_mut()
            .register_created(vec![(id, file.clone())]);
        files.insert(id, file.clone());
        created.push((id, file));
    }
    let mut bytes = 0u64;
    latency_trace::record_stamps(Stage::LogWriteSubmitted, &job.traced);
    for chunk in &job.batch.chunks {
        let path = segment::segment_path(&opts.dir, opts.shard, chunk.segment);
        let file = files.get(&chunk.segment).ok_or_else(|| {
            WalError::io(
                "write",
                &path,
                std::io::Error::other("segment file not open"),
            )
        })?;
        bytes += segment::write_padded(file, &path, chunk.file_offset, &chunk.data).await? as u64;
    }
    latency_trace::record_stamps(Stage::LogWriteDone, &job.traced);
    Ok(Written {
        bytes,
        created,
        files,
    })
}

/// fdatasyncs every file a written batch touched (issued after its write returned, so it also
/// covers every batch written before it).
async fn sync_job(
    inner: &Rc<RefCell<Inner>>,
    job: &Job,
    files: &BTreeMap<u64, Rc<DmaFile>>,
) -> Result<(), WalError> {
    let (dir, shard) = {
        let g = inner.borrow();
        (g.opts.dir.clone(), g.opts.shard)
    };
    let sync_started = std::time::Instant::now();
    for (id, file) in files {
        let path = segment::segment_path(&dir, shard, *id);
        fault::check(FaultOp::Fdatasync, &path).map_err(|e| WalError::io("fdatasync", &path, e))?;
        file.fdatasync()
            .await
            .map_err(|e| WalError::glommio("fdatasync", &path, e))?;
    }
    let sync_ns = u64::try_from(sync_started.elapsed().as_nanos()).unwrap_or(u64::MAX);
    inner.borrow_mut().fdatasync_ns.observe(sync_ns);
    latency_trace::record_stamps(Stage::LogSynced, &job.traced);
    Ok(())
}

/// A fresh log's first segment: zero-filled like every later one when it can be (see
/// `preparer`), else created fallocated as a roll without a prepared segment does.
async fn first_segment(opts: &WalOptions, header: SegmentHeader) -> Result<Rc<DmaFile>, WalError> {
    let instance = PREPARED_INSTANCES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = segment::prepared_path(&opts.dir, opts.shard, instance);
    match segment::prepare(&path, opts.segment_size_bytes, || false).await {
        Ok(file) => segment::install(&opts.dir, &path, file, header).await,
        Err(error) => {
            tracing::debug!(%error, "cannot zero-fill the first wal segment; fallocating it");
            segment::remove_prepared(&path);
            segment::create(&opts.dir, header, opts.segment_size_bytes).await
        }
    }
}

/// Zero-fills the next segment ahead of use (module doc): one at a time, started once the
/// current segment is `WAL_PREPARE_AT_PERCENT` full and asked again after each flush. A failed
/// preparation is logged once per episode and tried again after `WAL_PREPARE_RETRY_DELAY`;
/// rolls meanwhile create their segment fallocated. At close the prepared file is removed.
async fn preparer(inner: Rc<RefCell<Inner>>) {
    let (path, size) = {
        let g = inner.borrow();
        (g.prepared_path.clone(), g.opts.segment_size_bytes)
    };
    loop {
        let go = poll_fn(|cx| {
            let mut g = inner.borrow_mut();
            if g.closed {
                return Poll::Ready(false);
            }
            if g.wants_prepared(Instant::now()) {
                return Poll::Ready(true);
            }
            g.preparer_waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
        if !go {
            break;
        }
        let result = segment::prepare(&path, size, || inner.borrow().closed).await;
        let mut g = inner.borrow_mut();
        match result {
            Ok(file) => {
                g.prepared = Some(file);
                g.prepare_retry_at = None;
                if let Some(recovery) = g.prepare_episode.succeeded(Instant::now()) {
                    failure_log::recovered(recovery, "wal segment preparation");
                }
            }
            Err(WalError::Closed) => {}
            Err(error) => {
                let now = Instant::now();
                g.prepare_retry_at = Some(now + WAL_PREPARE_RETRY_DELAY);
                let note = g.prepare_episode.failed(now);
                failure_log::warn(note, "wal segment preparation", &error);
            }
        }
    }
    inner.borrow_mut().prepared = None;
    segment::remove_prepared(&path);
}

/// Deletes segments in the given (ascending) order; stops at the first failure so a settle is
/// never deleted before its target.
async fn reclaim_segments(inner: &Rc<RefCell<Inner>>, ids: &[u64]) {
    for &id in ids {
        let (file, path) = {
            let mut g = inner.borrow_mut();
            if !g.live.has_segment(id) {
                // Chosen by an earlier batch too (both were in flight), and deleted by it.
                continue;
            }
            g.live.remove_segment(id);
            g.stats.segments_deleted += 1;
            (
                g.files.remove(&id),
                segment::segment_path(&g.opts.dir, g.opts.shard, id),
            )
        };
        drop(file);
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!(error = %e, path = %path.display(), "wal segment delete failed");
            return;
        }
    }
}

/// Counts a read that failed with an I/O error (the operator's `read_errors`).
fn count_read_error<T>(inner: &RefCell<Inner>, read: &Result<T, WalError>) {
    if let Err(WalError::Io { .. }) = read {
        inner.borrow_mut().stats.read_errors += 1;
    }
}

/// A record as read back: the DMA read and how many payload bytes follow its header.
struct RecordBytes {
    read: glommio::io::ReadResult,
    payload_bytes: usize,
}

impl std::ops::Deref for RecordBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        let start = record::RECORD_HEADER_BYTES;
        &self.read[start..start + self.payload_bytes]
    }
}

/// Reads one record at `at` from `file` and checks its header and crc32c; the caller has found
/// the file (and checked durability) under its borrow. Shared by readers and copy-forward.
async fn read_checked(
    file: &DmaFile,
    path: std::path::PathBuf,
    at: RecordPos,
    payload_bytes_max: usize,
    what: &'static str,
) -> Result<(record::RecordHeader, RecordBytes, std::path::PathBuf), WalError> {
    fault::check(FaultOp::Read, &path).map_err(|e| WalError::io(what, &path, e))?;
    let read = file
        .read_at(at.offset, at.len as usize)
        .await
        .map_err(|e| WalError::glommio(what, &path, e))?;
    let (header, payload) =
        record::decode(&read, payload_bytes_max).map_err(|bad| WalError::Corrupt {
            file: path.clone(),
            offset: at.offset,
            reason: bad.reason(),
        })?;
    let payload_bytes = payload.len();
    Ok((
        header,
        RecordBytes {
            read,
            payload_bytes,
        },
        path,
    ))
}
