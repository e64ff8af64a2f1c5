//! Replay at open: verify every record, cut a torn tail, refuse on corruption, rebuild liveness.
//!
//! Torn versus corrupt: a bad record at offset X (expected LSN `e`) is a torn tail when every
//! valid record after it (rest of the segment and all later segments) belongs to the same write
//! batch, i.e. has `batch_lsn <= e`: that batch was the last one and was never acknowledged as
//! durable. A valid record with `batch_lsn > e` proves a later batch was written, which only
//! happens after the bad record's batch was fdatasync'ed: that is corruption.
//! Consequence to know: a bit flip inside the very last batch, after it was made durable, is
//! indistinguishable from a torn write and is truncated (the flipped record and its batch
//! siblings after it are lost).
//!
//! Chained enqueues: parts are gathered per chain as they are met (a chain may span segments);
//! its terminal makes the enqueue live, with its body left on disk (read by `Wal::read_live`).
//! Parts never terminated (a chain cut by a crash, or given up) are ignored and pin nothing. A
//! terminal whose parts are not all there is tolerated only if a later record settles or
//! replaces it (its parts' segments may have been reclaimed first); one still live at the end
//! is corruption.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::io::DmaFile;

use super::live::{Liveness, MessageKey};
use super::record::{
    self, BadRecord, ChainHeader, PartHeader, RecordHeader, RecordKind, RECORD_ALIGN_BYTES,
};
use super::segment::{self, SegmentHeader, SEGMENT_HEADER_BYTES};
use super::{
    Lsn, RecordPos, Recovered, RecoveredEnqueue, RecoveredTopology, WalError, WalOptions,
    WAL_BLOCK_BYTES,
};
use crate::limits::WAL_RECOVERY_READ_BYTES;

/// Where appends continue after recovery.
#[derive(Debug)]
pub struct Tail {
    pub segment: u64,
    pub offset: u64,
    /// Bytes of the last partial block, `[align_down(offset), offset)`: the next write rewrites them.
    pub partial: Vec<u8>,
}

pub struct RecoveredLog {
    pub recovered: Recovered,
    pub live: Liveness,
    pub files: BTreeMap<u64, Rc<DmaFile>>,
    /// None: the last segment is sealed (or there is none); appends need a new segment.
    pub tail: Option<Tail>,
    pub last_segment_id: u64,
    pub next_lsn: Lsn,
    pub records: u64,
    pub bytes: u64,
    pub bodies_left_on_disk: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentEnd {
    Sealed {
        lsn: Lsn,
    },
    /// No valid record with the expected LSN at `at`.
    Open {
        at: u64,
        expected_lsn: Lsn,
        reason: &'static str,
    },
}

/// Walks the records of one segment buffer, calling `apply` for each valid one in order.
pub fn scan(
    buf: &[u8],
    first_lsn: Lsn,
    payload_bytes_max: usize,
    mut apply: impl FnMut(u64, &RecordHeader, &[u8]) -> Result<(), WalError>,
) -> Result<SegmentEnd, WalError> {
    let mut offset = SEGMENT_HEADER_BYTES as usize;
    let mut expected = first_lsn;
    // Each step consumes at least one header, so the loop is bounded by buf.len() / 32.
    loop {
        let rest = buf.get(offset..).unwrap_or(&[]);
        let decoded = match record::decode(rest, payload_bytes_max) {
            Ok(d) => d,
            Err(bad) => return Ok(open_end(offset, expected, bad.reason())),
        };
        let (header, payload) = decoded;
        if header.lsn != expected || header.batch_lsn > header.lsn {
            return Ok(open_end(offset, expected, "unexpected lsn"));
        }
        apply(offset as u64, &header, payload)?;
        offset += header.record_bytes();
        expected += 1;
        if header.kind == RecordKind::Seal {
            return Ok(SegmentEnd::Sealed { lsn: header.lsn });
        }
    }
}

fn open_end(at: usize, expected_lsn: Lsn, reason: &'static str) -> SegmentEnd {
    SegmentEnd::Open {
        at: at as u64,
        expected_lsn,
        reason,
    }
}

/// First offset at or after `from` holding a valid record written by a batch later than the one
/// that held `expected_lsn`.
pub fn find_later_batch(
    buf: &[u8],
    from: usize,
    expected_lsn: Lsn,
    payload_bytes_max: usize,
) -> Option<usize> {
    let start = from.next_multiple_of(RECORD_ALIGN_BYTES);
    // Past the last non-zero byte lies only the zeroed preallocation, where no record can be:
    // stop there instead of trying a decode every 16 bytes of it.
    let end = buf.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
    (start..end).step_by(RECORD_ALIGN_BYTES).find(|&off| {
        match record::decode(&buf[off..], payload_bytes_max) {
            Ok((h, _)) => h.lsn >= expected_lsn && h.batch_lsn > expected_lsn,
            Err(BadRecord::Truncated) | Err(_) => false,
        }
    })
}

struct Replay<'a> {
    opts: &'a WalOptions,
    out: RecoveredLog,
    enqueues: BTreeMap<Lsn, RecoveredEnqueue>,
    /// Bytes of the bodies held in `enqueues`: kept within `recovery_body_budget_bytes` at
    /// every step of the replay, not only at its end.
    bodies_bytes: u64,
    /// Chains whose terminal has not been met yet, by chain id (LSN of the first part).
    chains: HashMap<Lsn, ChainParts>,
    /// Live terminals whose parts are missing, by LSN: where they are, for the error.
    incomplete: BTreeMap<Lsn, (PathBuf, u64)>,
}

struct ChainParts {
    key: MessageKey,
    parts: Vec<RecordPos>,
    body_bytes: u64,
}

pub async fn recover(opts: &WalOptions) -> Result<RecoveredLog, WalError> {
    std::fs::create_dir_all(&opts.dir).map_err(|e| WalError::io("create dir", &opts.dir, e))?;
    let ids = segment::list_segments(&opts.dir, opts.shard)?;
    let mut r = Replay {
        opts,
        out: RecoveredLog {
            recovered: Recovered::default(),
            live: Liveness::default(),
            files: BTreeMap::new(),
            tail: None,
            last_segment_id: ids.last().copied().unwrap_or(0),
            next_lsn: 1,
            records: 0,
            bytes: 0,
            bodies_left_on_disk: 0,
        },
        enqueues: BTreeMap::new(),
        bodies_bytes: 0,
        chains: HashMap::new(),
        incomplete: BTreeMap::new(),
    };
    for (i, &id) in ids.iter().enumerate() {
        let path = segment::segment_path(&opts.dir, opts.shard, id);
        let file = segment::open(&path).await?;
        let buf = segment::read_all(&file, &path).await?;
        let is_last = i + 1 == ids.len();
        let Some(header) = SegmentHeader::decode(&buf) else {
            if is_last {
                // Crash while creating the segment: nothing was ever written to it.
                remove_segment(&path, file).await?;
                break;
            }
            return Err(corrupt(&path, 0, "bad segment header"));
        };
        if header.id != id
            || header.shard as usize != opts.shard
            || header.first_lsn < r.out.next_lsn
        {
            return Err(corrupt(
                &path,
                0,
                "segment header does not match its place in the log",
            ));
        }
        r.out.live.add_segment(id);
        r.out.next_lsn = header.first_lsn;
        let end = scan(
            &buf,
            header.first_lsn,
            opts.payload_bytes_max(),
            |off, h, p| r.apply(id, off, h, p),
        )?;
        r.out.bytes += buf.len() as u64;
        r.out.files.insert(id, file.clone());
        match end {
            SegmentEnd::Sealed { lsn } => r.out.next_lsn = lsn + 1,
            SegmentEnd::Open {
                at,
                expected_lsn,
                reason,
            } => {
                r.out.next_lsn = expected_lsn;
                r.end_open(&path, &file, &buf, at, expected_lsn, reason, &ids[i + 1..])
                    .await?;
                r.out.tail = Some(Tail {
                    segment: id,
                    offset: at,
                    partial: tail_partial(&buf, at),
                });
                break;
            }
        }
    }
    for (_, chain) in r.chains.drain() {
        r.out.live.drop_parts(&chain.parts);
    }
    if let Some((_, (path, offset))) = r.incomplete.pop_first() {
        return Err(corrupt(&path, offset, "chained enqueue is missing parts"));
    }
    let mut out = r.out;
    out.bodies_left_on_disk = r.enqueues.values().filter(|e| !e.body_loaded).count() as u64;
    out.recovered.enqueues = r.enqueues.into_values().collect();
    Ok(out)
}

fn tail_partial(buf: &[u8], at: u64) -> Vec<u8> {
    let block_start = at - at % WAL_BLOCK_BYTES as u64;
    buf.get(block_start as usize..at as usize)
        .unwrap_or(&[])
        .to_vec()
}

fn corrupt(path: &Path, offset: u64, reason: &'static str) -> WalError {
    WalError::Corrupt {
        file: path.to_path_buf(),
        offset,
        reason,
    }
}

async fn remove_segment(path: &Path, file: Rc<DmaFile>) -> Result<(), WalError> {
    drop(file);
    std::fs::remove_file(path).map_err(|e| WalError::io("remove segment", path, e))?;
    Ok(())
}

impl Replay<'_> {
    fn apply(
        &mut self,
        segment: u64,
        offset: u64,
        h: &RecordHeader,
        payload: &[u8],
    ) -> Result<(), WalError> {
        self.out.records += 1;
        let path = || segment::segment_path(&self.opts.dir, self.opts.shard, segment);
        match h.kind {
            RecordKind::Enqueue => {
                let a = record::access_enqueue(payload)
                    .map_err(|_| corrupt(&path(), offset, "undecodable enqueue payload"))?;
                let body_bytes = a.body.len() as u64;
                let body_loaded = self
                    .bodies_bytes
                    .checked_add(body_bytes)
                    .is_some_and(|total| total <= self.opts.recovery_body_budget_bytes);
                let owned = if body_loaded {
                    self.bodies_bytes += body_bytes;
                    record::to_owned_enqueue(a)
                } else {
                    record::to_owned_enqueue_without_body(a)
                };
                let key = (owned.queue, owned.message);
                let pos = RecordPos {
                    segment,
                    offset,
                    len: h.record_bytes() as u32,
                };
                if let Some(old) = self.out.live.on_enqueue(pos, key, h.lsn) {
                    self.forget(old);
                }
                self.enqueues.insert(
                    h.lsn,
                    RecoveredEnqueue {
                        lsn: h.lsn,
                        pos,
                        record: owned,
                        body_loaded,
                        body_bytes,
                    },
                );
            }
            RecordKind::Settle => {
                let a = record::access_settle(payload)
                    .map_err(|_| corrupt(&path(), offset, "undecodable settle payload"))?;
                let queue = a.queue.to_native();
                for m in a.messages.iter() {
                    if let Some(lsn) = self.out.live.on_settle(segment, (queue, m.to_native())) {
                        self.forget(lsn);
                    }
                }
            }
            RecordKind::Topology => {
                self.out.live.on_topology(segment);
                self.out.recovered.topology.push(RecoveredTopology {
                    lsn: h.lsn,
                    payload: bytes::Bytes::copy_from_slice(payload),
                });
            }
            RecordKind::Part => {
                let pos = RecordPos {
                    segment,
                    offset,
                    len: h.record_bytes() as u32,
                };
                let Some((part, body)) = PartHeader::decode(payload) else {
                    return Err(corrupt(&path(), offset, "undecodable part payload"));
                };
                self.gather_part(h.lsn, pos, part, body.len() as u64);
            }
            RecordKind::EnqueueChained => {
                let pos = RecordPos {
                    segment,
                    offset,
                    len: h.record_bytes() as u32,
                };
                let decoded = ChainHeader::decode(payload)
                    .and_then(|(chain, meta)| Some((chain, record::access_enqueue(meta).ok()?)));
                let Some((chain, a)) = decoded else {
                    return Err(corrupt(
                        &path(),
                        offset,
                        "undecodable chained enqueue payload",
                    ));
                };
                let owned = record::to_owned_enqueue_without_body(a);
                self.end_chain(h.lsn, pos, chain, owned, path());
            }
            RecordKind::Seal => {}
        }
        Ok(())
    }

    /// Adds a part to its chain (a first part starts one); a part out of order breaks its
    /// chain, whose terminal then finds it incomplete. A part of an unknown chain (its first
    /// parts reclaimed with their dead chain) is ignored.
    fn gather_part(&mut self, lsn: Lsn, pos: RecordPos, part: PartHeader, body_bytes: u64) {
        let key = (part.queue, part.message);
        if part.index == 0 {
            if part.chain != 0 {
                return;
            }
            self.out.live.on_part(pos);
            let parts = vec![pos];
            self.chains.insert(
                lsn,
                ChainParts {
                    key,
                    parts,
                    body_bytes,
                },
            );
            return;
        }
        let Some(chain) = self.chains.get_mut(&part.chain) else {
            return;
        };
        if chain.key == key && chain.parts.len() == part.index as usize {
            chain.parts.push(pos);
            chain.body_bytes += body_bytes;
            self.out.live.on_part(pos);
        } else if let Some(broken) = self.chains.remove(&part.chain) {
            self.out.live.drop_parts(&broken.parts);
        }
    }

    /// A chain's terminal: the enqueue is live, its body left on disk.
    fn end_chain(
        &mut self,
        lsn: Lsn,
        pos: RecordPos,
        header: ChainHeader,
        owned: record::OwnedEnqueue,
        path: PathBuf,
    ) {
        let key = (owned.queue, owned.message);
        let chain = self.chains.remove(&header.chain);
        let complete = chain.as_ref().is_some_and(|c| {
            c.key == key
                && c.parts.len() == header.parts as usize
                && c.body_bytes == header.body_bytes
        });
        let replaced = match chain {
            Some(chain) if complete => {
                let parts: std::rc::Rc<[RecordPos]> = chain.parts.into();
                self.out.live.on_enqueue_chained(pos, key, lsn, parts)
            }
            other => {
                if let Some(chain) = other {
                    self.out.live.drop_parts(&chain.parts);
                }
                self.incomplete.insert(lsn, (path, pos.offset));
                self.out.live.on_enqueue(pos, key, lsn)
            }
        };
        if let Some(old) = replaced {
            self.forget(old);
        }
        if complete {
            self.enqueues.insert(
                lsn,
                RecoveredEnqueue {
                    lsn,
                    pos,
                    record: owned,
                    body_loaded: false,
                    body_bytes: header.body_bytes,
                },
            );
        }
    }

    /// Drops an enqueue settled or superseded later in the log, returning its body's budget.
    fn forget(&mut self, lsn: Lsn) {
        self.incomplete.remove(&lsn);
        if let Some(e) = self.enqueues.remove(&lsn) {
            if e.body_loaded {
                self.bodies_bytes = self.bodies_bytes.saturating_sub(e.body_bytes);
            }
        }
    }

    /// The segment ends without a seal at `at`: decide torn tail or corruption, and on a torn
    /// tail, erase the torn bytes and drop later (necessarily torn) segments.
    #[allow(clippy::too_many_arguments)]
    async fn end_open(
        &mut self,
        path: &Path,
        file: &Rc<DmaFile>,
        buf: &[u8],
        at: u64,
        expected_lsn: Lsn,
        reason: &'static str,
        later: &[u64],
    ) -> Result<(), WalError> {
        let max = self.opts.payload_bytes_max();
        if find_later_batch(buf, at as usize + RECORD_ALIGN_BYTES, expected_lsn, max).is_some() {
            return Err(corrupt(path, at, reason));
        }
        let mut later_paths: Vec<(PathBuf, Rc<DmaFile>)> = Vec::new();
        for &id in later {
            let p = segment::segment_path(&self.opts.dir, self.opts.shard, id);
            let f = segment::open(&p).await?;
            let b = segment::read_all(&f, &p).await?;
            if find_later_batch(&b, SEGMENT_HEADER_BYTES as usize, expected_lsn, max).is_some() {
                return Err(corrupt(path, at, reason));
            }
            later_paths.push((p, f));
        }
        let last_nonzero = buf
            .get(at as usize..)
            .unwrap_or(&[])
            .iter()
            .rposition(|b| *b != 0)
            .map(|i| at as usize + i);
        if let Some(last) = last_nonzero {
            zero_torn(path, file, buf, at, last).await?;
            self.out.recovered.truncated_at = Some((path.to_path_buf(), at));
        }
        for (p, f) in later_paths {
            remove_segment(&p, f).await?;
            self.out
                .recovered
                .truncated_at
                .get_or_insert((path.to_path_buf(), at));
        }
        if !later.is_empty() {
            segment::sync_dir(&self.opts.dir)?;
        }
        Ok(())
    }
}

/// Overwrites `[at, last]` with zeros (keeping the valid bytes before `at` in the first block),
/// so stale torn records can never be mistaken for log content after new appends.
async fn zero_torn(
    path: &Path,
    file: &Rc<DmaFile>,
    buf: &[u8],
    at: u64,
    last: usize,
) -> Result<(), WalError> {
    let block = WAL_BLOCK_BYTES;
    let start = at as usize - at as usize % block;
    let end = (last + 1)
        .next_multiple_of(block)
        .min(buf.len().next_multiple_of(block));
    let mut pos = start;
    while pos < end {
        let len = (end - pos).min(WAL_RECOVERY_READ_BYTES);
        let mut chunk = vec![0u8; len];
        if pos == start {
            let keep = at as usize - start;
            chunk[..keep].copy_from_slice(&buf[start..at as usize]);
        }
        segment::write_padded(file, path, pos as u64, &chunk).await?;
        pos += len;
    }
    file.fdatasync()
        .await
        .map_err(|e| WalError::glommio("fdatasync", path, e))
}
