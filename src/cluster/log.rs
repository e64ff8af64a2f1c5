//! The Raft node's durable state: one append-only file of records `[u32 length][u32 crc32c]
//! [u8 kind][payload]` (entries, hard states, the applied index), made durable with fdatasync
//! before anything that depends on it leaves the node: a vote or an appended entry is never
//! acknowledged before it is on disk. Read back at start-up up to the first record that fails
//! its length or checksum (a torn tail), where the file is cut.
//!
//! The topology's log is never compacted: the file holds every entry since the cluster formed
//! (topology changes are few and small), which is also what lets a node that was down catch up
//! from any member's log. A quorum group's log is (`group.rs`): past its threshold the group
//! is snapshotted and the file replaced by one holding the hard state and the entries after
//! the snapshot (`RaftLog::rewrite`).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::os::unix::io::{FromRawFd, IntoRawFd};
use std::path::Path;
use std::rc::Rc;

use glommio::io::BufferedFile;

use protobuf::Message as _;
use raft::eraftpb::{Entry, HardState};

use crate::limits::RAFT_LOG_FILE_SIZE_MAX_BYTES;

const HEADER_BYTES: usize = 9;
const KIND_ENTRY: u8 = 1;
const KIND_HARD_STATE: u8 = 2;
const KIND_APPLIED: u8 = 3;

pub struct RaftLog {
    file: File,
    /// The same file for writes and fdatasyncs through the executor's io_uring
    /// (`take_pending`), made when first needed: it needs a running executor.
    ring_file: Option<Rc<BufferedFile>>,
    /// Records appended since the last `sync` or `take_pending`.
    pending: Vec<u8>,
    /// Bytes in the file and pending (a quorum group refuses proposals past its bound).
    size_bytes: u64,
}

/// What a previous run left.
#[derive(Default)]
pub struct Recovered {
    /// Contiguous by index, a later record for an index replacing it and what followed.
    pub entries: Vec<Entry>,
    pub hard_state: Option<HardState>,
    pub applied: u64,
}

impl RaftLog {
    pub fn open(path: &Path) -> Result<(RaftLog, Recovered), String> {
        let fail =
            |what: &str, e: &dyn std::fmt::Display| format!("{what} {}: {e}", path.display());
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| fail("cannot open the Raft log", &e))?;
        let size_bytes = file.metadata().map_err(|e| fail("cannot stat", &e))?.len();
        if size_bytes > RAFT_LOG_FILE_SIZE_MAX_BYTES {
            return Err(format!(
                "the Raft log {} is {size_bytes} bytes, more than the {RAFT_LOG_FILE_SIZE_MAX_BYTES} read back",
                path.display()
            ));
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| fail("cannot read the Raft log", &e))?;
        let (recovered, valid_bytes) = replay(&bytes);
        if valid_bytes < bytes.len() {
            tracing::warn!(
                cut_bytes = bytes.len() - valid_bytes,
                "Raft log: torn tail cut at the last whole record"
            );
            file.set_len(valid_bytes as u64)
                .map_err(|e| fail("cannot cut the Raft log", &e))?;
        }
        file.seek(SeekFrom::Start(valid_bytes as u64))
            .map_err(|e| fail("cannot seek the Raft log", &e))?;
        let log = RaftLog {
            file,
            ring_file: None,
            pending: Vec::new(),
            size_bytes: valid_bytes as u64,
        };
        Ok((log, recovered))
    }

    /// Replaces the file at `path` with one holding `hard_state` and `entries` only (after a
    /// snapshot), durably (temp file, fdatasync, rename, directory fsync); the log appends to
    /// the new file from then on. A crash leaves the old file or the new one, both valid
    /// beside the snapshot (entries it covers are skipped when the group is opened).
    pub fn rewrite(
        path: &Path,
        hard_state: &HardState,
        entries: &[Entry],
    ) -> Result<RaftLog, String> {
        let bytes = rewritten(hard_state, entries)?;
        super::snapshot::replace_file(path, &bytes)?;
        RaftLog::reopen_rewritten(path, bytes.len(), entries.len())
    }

    /// As [`RaftLog::rewrite`], with the file's writes and syncs through the executor's
    /// io_uring (a quorum group's compaction, on the topology owner's executor).
    pub async fn rewrite_async(
        path: &Path,
        hard_state: &HardState,
        entries: &[Entry],
    ) -> Result<RaftLog, String> {
        let bytes = rewritten(hard_state, entries)?;
        let length = bytes.len();
        super::snapshot::replace_file_async(path, bytes).await?;
        RaftLog::reopen_rewritten(path, length, entries.len())
    }

    /// Opens a file just rewritten with `entries` in `bytes` bytes, which must read back whole.
    fn reopen_rewritten(path: &Path, bytes: usize, entries: usize) -> Result<RaftLog, String> {
        let (log, recovered) = RaftLog::open(path)?;
        if log.size_bytes() != bytes as u64 || recovered.entries.len() != entries {
            // A short write would lose entries.
            return Err(format!(
                "the rewritten Raft log {} reads back {} bytes and {} entries, not {bytes} and {entries}",
                path.display(),
                log.size_bytes(),
                recovered.entries.len()
            ));
        }
        Ok(log)
    }

    pub fn append_entries(&mut self, entries: &[Entry]) -> Result<(), String> {
        for entry in entries {
            let bytes = entry.write_to_bytes().map_err(|e| e.to_string())?;
            self.record(KIND_ENTRY, &bytes);
        }
        Ok(())
    }

    pub fn set_hard_state(&mut self, hard_state: &HardState) -> Result<(), String> {
        let bytes = hard_state.write_to_bytes().map_err(|e| e.to_string())?;
        self.record(KIND_HARD_STATE, &bytes);
        Ok(())
    }

    pub fn set_applied(&mut self, index: u64) {
        self.record(KIND_APPLIED, &index.to_be_bytes());
    }

    /// Writes what was appended and waits for it to be durable (fdatasync), blocking the
    /// thread: the topology's log, whose changes are few.
    pub fn sync(&mut self) -> Result<(), String> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.file
            .write_all_at(&self.pending, self.written_bytes())
            .and_then(|()| self.file.sync_data())
            .map_err(|e| format!("cannot write the Raft log: {e}"))?;
        self.pending.clear();
        Ok(())
    }

    /// The records appended since the last write, handed over to be made durable by
    /// [`PendingWrite::durable`] without blocking the executor (a quorum group's log, written
    /// on every turn); `None` when there are none. The log counts them as written: nothing
    /// that depends on them may leave the node before `durable` returned `Ok`, and after an
    /// `Err` the log must not be used again. Must be called on a glommio executor.
    pub fn take_pending(&mut self) -> Result<Option<PendingWrite>, String> {
        if self.pending.is_empty() {
            return Ok(None);
        }
        let file = match &self.ring_file {
            Some(file) => file.clone(),
            None => {
                let fd = self
                    .file
                    .try_clone()
                    .map_err(|e| format!("cannot open the Raft log for io_uring: {e}"))?
                    .into_raw_fd();
                // SAFETY: `fd` is a descriptor this log just duplicated and owns nothing else
                // of; the BufferedFile takes it over and closes it when dropped.
                let file = Rc::new(unsafe { BufferedFile::from_raw_fd(fd) });
                self.ring_file = Some(file.clone());
                file
            }
        };
        let at = self.written_bytes();
        let bytes = std::mem::take(&mut self.pending);
        Ok(Some(PendingWrite { file, bytes, at }))
    }

    /// Bytes in the file, pending records excluded: where the next write goes.
    fn written_bytes(&self) -> u64 {
        self.size_bytes - self.pending.len() as u64
    }

    /// Bytes the log holds, written or pending.
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    fn record(&mut self, kind: u8, payload: &[u8]) {
        self.size_bytes += (HEADER_BYTES + payload.len()) as u64;
        put_record(&mut self.pending, kind, payload);
    }
}

/// Records of one log on their way to the disk (`RaftLog::take_pending`).
pub struct PendingWrite {
    file: Rc<BufferedFile>,
    bytes: Vec<u8>,
    /// The file offset they go at.
    at: u64,
}

impl PendingWrite {
    /// Writes the records and fdatasyncs the file through io_uring: the executor runs its
    /// other tasks (sessions, the other groups' writes) meanwhile.
    pub async fn durable(self) -> Result<(), String> {
        let PendingWrite { file, bytes, at } = self;
        let length = bytes.len();
        let written = file
            .write_at(bytes, at)
            .await
            .map_err(|e| format!("cannot write the Raft log: {e}"))?;
        if written != length {
            // A regular file takes a buffered write whole unless the disk is full.
            return Err(format!(
                "cannot write the Raft log: {written} of {length} bytes written (disk full?)"
            ));
        }
        file.fdatasync()
            .await
            .map_err(|e| format!("cannot fdatasync the Raft log: {e}"))
    }
}

/// The records of a log rewritten after a snapshot: `entries`, then `hard_state`.
fn rewritten(hard_state: &HardState, entries: &[Entry]) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    for entry in entries {
        let payload = entry.write_to_bytes().map_err(|e| e.to_string())?;
        put_record(&mut bytes, KIND_ENTRY, &payload);
    }
    let payload = hard_state.write_to_bytes().map_err(|e| e.to_string())?;
    put_record(&mut bytes, KIND_HARD_STATE, &payload);
    Ok(bytes)
}

fn put_record(out: &mut Vec<u8>, kind: u8, payload: &[u8]) {
    let length = (payload.len() + 1) as u32;
    let crc = crc32c::crc32c_append(crc32c::crc32c(&[kind]), payload);
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(&crc.to_be_bytes());
    out.push(kind);
    out.extend_from_slice(payload);
}

/// The state the records describe, and how many leading bytes are whole records.
fn replay(bytes: &[u8]) -> (Recovered, usize) {
    let mut recovered = Recovered::default();
    let mut at = 0;
    while let Some((kind, payload)) = next_record(&bytes[at..]) {
        if apply_record(&mut recovered, kind, payload).is_err() {
            break;
        }
        at += HEADER_BYTES + payload.len();
    }
    (recovered, at)
}

fn next_record(bytes: &[u8]) -> Option<(u8, &[u8])> {
    let header = bytes.get(..HEADER_BYTES)?;
    let length = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    let payload = bytes.get(HEADER_BYTES..HEADER_BYTES + length.checked_sub(1)?)?;
    let kind = header[8];
    (crc32c::crc32c_append(crc32c::crc32c(&[kind]), payload) == crc).then_some((kind, payload))
}

fn apply_record(recovered: &mut Recovered, kind: u8, payload: &[u8]) -> Result<(), ()> {
    match kind {
        KIND_ENTRY => {
            let entry = Entry::parse_from_bytes(payload).map_err(|_| ())?;
            let entries = &mut recovered.entries;
            // Raft replaces a conflicting suffix: an entry at index i drops what was at i and after.
            if let Some(first) = entries.first().map(Entry::get_index) {
                let keep = entry.get_index().saturating_sub(first) as usize;
                if keep > entries.len() {
                    return Err(());
                }
                entries.truncate(keep);
            }
            entries.push(entry);
        }
        KIND_HARD_STATE => {
            recovered.hard_state = Some(HardState::parse_from_bytes(payload).map_err(|_| ())?);
        }
        KIND_APPLIED => {
            let bytes: [u8; 8] = payload.try_into().map_err(|_| ())?;
            recovered.applied = recovered.applied.max(u64::from_be_bytes(bytes));
        }
        _ => return Err(()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn entry(index: u64, term: u64) -> Entry {
        let mut entry = Entry::default();
        entry.set_index(index);
        entry.set_term(term);
        entry.set_data(vec![index as u8].into());
        entry
    }

    #[test]
    fn entries_state_and_applied_survive_and_a_torn_tail_is_cut() {
        let dir = std::env::temp_dir().join(format!("ringmq-raft-log-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("raft.log");
        let _ = std::fs::remove_file(&path);
        {
            let (mut log, recovered) = RaftLog::open(&path).unwrap();
            assert!(recovered.entries.is_empty());
            log.append_entries(&[entry(1, 1), entry(2, 1), entry(3, 1)])
                .unwrap();
            // A new leader overwrites index 2 onwards.
            log.append_entries(&[entry(2, 2)]).unwrap();
            let mut hard_state = HardState::default();
            hard_state.set_term(2);
            hard_state.set_commit(2);
            log.set_hard_state(&hard_state).unwrap();
            log.set_applied(2);
            log.sync().unwrap();
        }
        let whole = std::fs::metadata(&path).unwrap().len();
        // A torn record at the tail.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(&[0, 0, 0, 9, 1, 2])
            .unwrap();
        let (_, recovered) = RaftLog::open(&path).unwrap();
        let terms: Vec<(u64, u64)> = recovered
            .entries
            .iter()
            .map(|e| (e.get_index(), e.get_term()))
            .collect();
        assert_eq!(terms, vec![(1, 1), (2, 2)]);
        assert_eq!(recovered.hard_state.unwrap().get_commit(), 2);
        assert_eq!(recovered.applied, 2);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), whole);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_rewritten_log_holds_only_what_follows_the_snapshot_and_grows_from_there() {
        let dir = std::env::temp_dir().join(format!("ringmq-raft-rewrite-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("quorum-1.log");
        let _ = std::fs::remove_file(&path);
        {
            let (mut log, _) = RaftLog::open(&path).unwrap();
            log.append_entries(&(1..=20).map(|i| entry(i, 1)).collect::<Vec<_>>())
                .unwrap();
            log.sync().unwrap();
        }
        let before = std::fs::metadata(&path).unwrap().len();
        let mut hard_state = HardState::default();
        hard_state.set_term(1);
        hard_state.set_commit(18);
        let mut log = RaftLog::rewrite(&path, &hard_state, &[entry(19, 1), entry(20, 1)]).unwrap();
        assert!(std::fs::metadata(&path).unwrap().len() < before / 4);
        log.append_entries(&[entry(21, 1)]).unwrap();
        log.sync().unwrap();
        let (_, recovered) = RaftLog::open(&path).unwrap();
        let indexes: Vec<u64> = recovered.entries.iter().map(Entry::get_index).collect();
        assert_eq!(indexes, vec![19, 20, 21]);
        assert_eq!(recovered.hard_state.unwrap().get_commit(), 18);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn records_taken_for_io_uring_read_back_after_blocking_ones_and_before_the_next() {
        let dir = std::env::temp_dir().join(format!("ringmq-raft-ring-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("quorum-2.log");
        let _ = std::fs::remove_file(&path);
        let written = path.clone();
        // A small io_memory: test executors share the 8 MiB locked-memory limit.
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(1 << 20)
            .spawn(move || async move {
                let (mut log, _) = RaftLog::open(&written).unwrap();
                log.append_entries(&[entry(1, 1)]).unwrap();
                log.sync().unwrap();
                log.append_entries(&[entry(2, 1), entry(3, 1)]).unwrap();
                let write = log.take_pending().unwrap().expect("records pending");
                assert!(log.take_pending().unwrap().is_none());
                write.durable().await.unwrap();
                log.append_entries(&[entry(4, 1)]).unwrap();
                log.take_pending()
                    .unwrap()
                    .unwrap()
                    .durable()
                    .await
                    .unwrap();
                log.append_entries(&[entry(5, 1)]).unwrap();
                log.sync().unwrap();
                assert_eq!(log.size_bytes(), std::fs::metadata(&written).unwrap().len());
            })
            .unwrap()
            .join()
            .unwrap();
        let (_, recovered) = RaftLog::open(&path).unwrap();
        let indexes: Vec<u64> = recovered.entries.iter().map(Entry::get_index).collect();
        assert_eq!(indexes, vec![1, 2, 3, 4, 5]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
