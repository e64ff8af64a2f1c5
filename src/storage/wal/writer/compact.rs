//! Copy-forward compaction: keeps disk use bounded when a few long-lived messages (a straggler
//! never consumed, an unacked delivery) would otherwise pin their segment, and through the
//! settle records that target it, every segment after it.
//!
//! After each successful flush the compactor task picks the oldest segment that is old and
//! sparse enough (`WAL_COMPACT_AGE_SEGMENTS_MIN`, `WAL_COMPACT_LIVE_PERCENT_MAX`) or that roots
//! settle chains pinning dead segments (`WAL_COMPACT_PINNED_SEGMENTS_MIN`), reads its live
//! enqueues back from disk and re-appends their exact payload bytes (same queue/message key, new
//! LSN). `Liveness` then points the key at the copy and the old segment has nothing live left;
//! the flush that makes the copy durable computes its reclaim list after the copy was appended,
//! so the old segment is deleted only once the copy is durable.
//!
//! Crash safety: until the deletion both copies may be on disk; recovery lets the newest LSN of
//! a key win (and a settle after the copy removes it), so each message comes back exactly once.
//! Recovered order follows LSNs, so a copied message comes back later in the list than its
//! neighbours: callers order by message id (the broker's `Queue::restore` does).
//!
//! Bounds: one segment per round, at most `WAL_COMPACT_BATCH_PERCENT_MAX` of the write buffer
//! per round, appended only while the pending batch is below that share, never while a failed
//! batch waits for its retry. A copy re-checks the key after its read: a message settled or
//! re-logged by the broker meanwhile is not copied.
//!
//! A chained enqueue is copied part by part (one part read and held at a time, each appended
//! when the batch has copy room, waiting for flushes in between), then its terminal naming the
//! new chain. Until that terminal the old chain stays the live copy; if the key is settled or
//! replaced meanwhile the copy is given up (its parts become unreferenced).

use std::cell::RefCell;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::Poll;

use super::super::live::{CompactionPolicy, LiveEnqueue, MessageKey};
use super::super::record::{ChainHeader, PartHeader, PART_HEADER_BYTES};
use super::*;
use crate::limits::{
    WAL_COMPACT_AGE_SEGMENTS_MIN, WAL_COMPACT_BATCH_PERCENT_MAX, WAL_COMPACT_LIVE_PERCENT_MAX,
    WAL_COMPACT_PINNED_SEGMENTS_MIN,
};

/// What a round should do next after one copy attempt.
#[derive(Debug, PartialEq, Eq)]
enum Copied {
    Yes,
    /// Settled or replaced while its bytes were being read: nothing to move.
    Gone,
    /// The pending batch has no spare room: stop, the next flush starts another round.
    NoRoom,
}

pub(super) async fn compactor(inner: Rc<RefCell<Inner>>) {
    loop {
        let plan = poll_fn(|cx| {
            let mut g = inner.borrow_mut();
            if g.closed {
                return Poll::Ready(None);
            }
            if g.compact_requested {
                g.compact_requested = false;
                let plan = g.live.compaction_plan(g.compaction_policy());
                if !plan.is_empty() {
                    return Poll::Ready(Some(plan));
                }
            }
            g.compactor_waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
        let Some(plan) = plan else { return };
        if let Err(error) = copy_forward(&inner, &plan).await {
            let mut g = inner.borrow_mut();
            if !g.closed {
                tracing::warn!(%error, "wal copy-forward round failed; originals kept");
                g.stats.compaction_failures += 1;
            }
        }
    }
}

/// Copies the planned enqueues, in order, until the batch has no spare room.
async fn copy_forward(
    inner: &Rc<RefCell<Inner>>,
    plan: &[(MessageKey, LiveEnqueue)],
) -> Result<(), WalError> {
    for &(key, was) in plan {
        let parts = inner.borrow().live.parts(key);
        if let Some(parts) = parts {
            if copy_chain(inner, key, was, &parts).await? == Copied::NoRoom {
                return Ok(());
            }
            continue;
        }
        let (file, path, payload_bytes_max) = {
            let g = inner.borrow();
            if g.live.get(key) != Some(was) {
                continue;
            }
            let Some(file) = g.files.get(&was.pos.segment).cloned() else {
                continue;
            };
            let path = segment::segment_path(&g.opts.dir, g.opts.shard, was.pos.segment);
            (file, path, g.payload_bytes_max)
        };
        fault::check(FaultOp::Read, &path)
            .map_err(|e| WalError::io("read for copy-forward", &path, e))?;
        let read = file
            .read_at(was.pos.offset, was.pos.len as usize)
            .await
            .map_err(|e| WalError::glommio("read for copy-forward", &path, e))?;
        let corrupt = |reason| WalError::Corrupt {
            file: path.clone(),
            offset: was.pos.offset,
            reason,
        };
        let (header, payload) =
            record::decode(&read, payload_bytes_max).map_err(|bad| corrupt(bad.reason()))?;
        if header.kind != RecordKind::Enqueue || header.lsn != was.lsn {
            return Err(corrupt(
                "copy-forward found another record than the index says",
            ));
        }
        let archived = record::access_enqueue(payload)?;
        if (archived.queue.to_native(), archived.message.to_native()) != key {
            return Err(corrupt(
                "copy-forward found another key than the index says",
            ));
        }
        if inner.borrow_mut().copy_enqueue(key, was, payload)? == Copied::NoRoom {
            return Ok(());
        }
    }
    Ok(())
}

/// Copies one chained enqueue: its parts, then its terminal. Returns `Gone` if the key was
/// settled or replaced meanwhile.
async fn copy_chain(
    inner: &Rc<RefCell<Inner>>,
    key: MessageKey,
    was: LiveEnqueue,
    parts: &[RecordPos],
) -> Result<Copied, WalError> {
    let mut copy = ChainCopy {
        key,
        was,
        chain: 0,
        parts: Vec::new(),
        body_bytes: 0,
    };
    let result = copy_chain_parts(inner, &mut copy, parts).await;
    if !matches!(result, Ok(Copied::Yes)) {
        inner.borrow_mut().live.drop_parts(&copy.parts);
    }
    result
}

struct ChainCopy {
    key: MessageKey,
    was: LiveEnqueue,
    chain: Lsn,
    parts: Vec<RecordPos>,
    body_bytes: u64,
}

async fn copy_chain_parts(
    inner: &Rc<RefCell<Inner>>,
    copy: &mut ChainCopy,
    parts: &[RecordPos],
) -> Result<Copied, WalError> {
    let (terminal, terminal_bytes, path) = read_for_copy(inner, copy.was.pos).await?;
    let corrupt = |offset, reason| WalError::Corrupt {
        file: path.clone(),
        offset,
        reason,
    };
    let chain = match (terminal.kind, ChainHeader::decode(&terminal_bytes)) {
        (RecordKind::EnqueueChained, Some((chain, _))) if terminal.lsn == copy.was.lsn => chain,
        _ => {
            return Err(corrupt(
                copy.was.pos.offset,
                "copy-forward found another record than the index says",
            ))
        }
    };
    for (index, &at) in parts.iter().enumerate() {
        let (header, payload, part_path) = read_for_copy(inner, at).await?;
        let check = chain::PartCheck {
            key: copy.key,
            chain: chain.chain,
            index: index as u32,
        };
        let Some(piece) = check.body(&header, &payload) else {
            return Err(WalError::Corrupt {
                file: part_path,
                offset: at.offset,
                reason: "part record does not belong to its chain",
            });
        };
        let part = PartHeader {
            queue: copy.key.0,
            message: copy.key.1,
            chain: copy.chain,
            index: index as u32,
        };
        let bytes = record::record_bytes_for(PART_HEADER_BYTES + piece.len());
        if !wait_copy_room(inner, copy, bytes).await {
            return Ok(Copied::Gone);
        }
        let mut g = inner.borrow_mut();
        let (lsn, pos) = g.append_pieces(RecordKind::Part, &[&part.encode(), piece])?;
        g.live.on_part(pos);
        if index == 0 {
            copy.chain = lsn;
        }
        copy.parts.push(pos);
        copy.body_bytes += piece.len() as u64;
    }
    let Some((_, meta)) = ChainHeader::decode(&terminal_bytes) else {
        return Err(corrupt(copy.was.pos.offset, "undecodable chained enqueue"));
    };
    let header = ChainHeader {
        chain: copy.chain,
        parts: copy.parts.len() as u32,
        body_bytes: copy.body_bytes,
    };
    if header.body_bytes != chain.body_bytes || header.parts != chain.parts {
        return Err(corrupt(copy.was.pos.offset, "chain differs from its parts"));
    }
    let bytes = terminal_bytes
        .len()
        .next_multiple_of(record::RECORD_ALIGN_BYTES);
    if !wait_copy_room(inner, copy, bytes).await {
        return Ok(Copied::Gone);
    }
    let mut g = inner.borrow_mut();
    let pieces: [&[u8]; 2] = [&header.encode(), meta];
    let (lsn, pos) = g.append_pieces(RecordKind::EnqueueChained, &pieces)?;
    let new_parts: Rc<[RecordPos]> = std::mem::take(&mut copy.parts).into();
    g.live.on_enqueue_chained(pos, copy.key, lsn, new_parts);
    g.stats.records_copied += 1 + u64::from(header.parts);
    g.stats.bytes_copied += g.live.enqueue_bytes(copy.key, LiveEnqueue { pos, lsn });
    Ok(Copied::Yes)
}

async fn read_for_copy(
    inner: &Rc<RefCell<Inner>>,
    at: RecordPos,
) -> Result<(record::RecordHeader, RecordBytes, std::path::PathBuf), WalError> {
    let (file, path, payload_bytes_max) = {
        let g = inner.borrow();
        let Some(file) = g.files.get(&at.segment).cloned() else {
            return Err(WalError::NotReadable {
                pos: at,
                reason: "segment not live",
            });
        };
        let path = segment::segment_path(&g.opts.dir, g.opts.shard, at.segment);
        (file, path, g.payload_bytes_max)
    };
    let read = read_checked(&file, path, at, payload_bytes_max, "read for copy-forward").await;
    count_read_error(inner, &read);
    read
}

/// Waits (across flushes) until the batch has copy room for `bytes`; false once the chain
/// being copied is no longer the live copy of its key, or the log closed.
async fn wait_copy_room(inner: &Rc<RefCell<Inner>>, copy: &ChainCopy, bytes: usize) -> bool {
    // Each wait ends with a flush, which empties the batch: bounded by the flushes it takes.
    loop {
        let flushes = {
            let g = inner.borrow();
            if g.closed || g.live.get(copy.key) != Some(copy.was) {
                return false;
            }
            let room =
                g.pending.bytes + bytes <= g.copy_room_bytes() || g.pending.chunks.is_empty();
            if room && g.failed.is_none() {
                return true;
            }
            g.stats.flushes + g.stats.flush_failures
        };
        poll_fn(|cx| {
            let mut g = inner.borrow_mut();
            if g.closed || g.stats.flushes + g.stats.flush_failures != flushes {
                return Poll::Ready(());
            }
            // Woken ahead of the other waiters (`Inner::flush_finished`): right after a flush
            // the batch is empty unless someone appended first, and appenders woken by the
            // same flush would otherwise refill it before every look.
            g.copy_room_waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
    }
}

impl Inner {
    fn compaction_policy(&self) -> CompactionPolicy {
        CompactionPolicy {
            current: self.cur_segment,
            age_segments_min: WAL_COMPACT_AGE_SEGMENTS_MIN,
            live_bytes_max: self.opts.segment_capacity_bytes() * WAL_COMPACT_LIVE_PERCENT_MAX / 100,
            pinned_segments_min: WAL_COMPACT_PINNED_SEGMENTS_MIN,
            bytes_max: self.copy_room_bytes() as u64,
        }
    }

    fn copy_room_bytes(&self) -> usize {
        self.opts.batch_soft_bytes * WAL_COMPACT_BATCH_PERCENT_MAX / 100
    }

    /// Re-appends `payload` (the enqueue of `key` read from `was`) if `was` is still the live
    /// copy and the batch has room to spare.
    fn copy_enqueue(
        &mut self,
        key: MessageKey,
        was: LiveEnqueue,
        payload: &[u8],
    ) -> Result<Copied, WalError> {
        if self.live.get(key) != Some(was) {
            return Ok(Copied::Gone);
        }
        let bytes = was.pos.len as usize;
        let room = self.copy_room_bytes();
        let fits = self.pending.bytes + bytes <= room || self.pending.chunks.is_empty();
        if !fits || self.failed.is_some() {
            return Ok(Copied::NoRoom);
        }
        let (lsn, pos) = self.append(RecordKind::Enqueue, payload)?;
        debug_assert_eq!(pos.len, was.pos.len, "a copy has the same bytes");
        self.live.on_enqueue(pos, key, lsn);
        self.stats.records_copied += 1;
        self.stats.bytes_copied += u64::from(pos.len);
        if self.live.live_enqueues(was.pos.segment) == 0 {
            self.stats.segments_compacted += 1;
        }
        Ok(Copied::Yes)
    }
}
