//! Quorum group snapshots (log compaction, issue 13): what a node keeps of a group below the
//! entries of its log.
//!
//! - The data: the machine's bytes sealed in `[u8 version][u32 crc32c][payload]` ([`seal`],
//!   [`open`]), so a snapshot damaged on disk or on the wire is refused, never applied.
//! - The file `cluster/quorum-<queue>.snapshot`: `[u8 version][u32 crc32c][protobuf Snapshot]`
//!   (Raft's metadata: index, term, voters; and the sealed data), replaced whole: temp file,
//!   fdatasync, rename, directory fsync ([`write_file`]), so a crash leaves the old one or the
//!   new one.
//! - [`GroupStorage`]: raft-rs's `MemStorage` for the entries, plus the last snapshot, which
//!   is what a leader sends a follower that needs entries it no longer has (`MemStorage`'s own
//!   `snapshot()` carries no data).

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;
use std::rc::Rc;

use glommio::io::{BufferedFile, Directory};
use protobuf::Message as _;
use raft::eraftpb::{Entry, Snapshot};
use raft::storage::MemStorage;
use raft::{GetEntriesContext, RaftState, Storage, StorageError};

use crate::limits::{QUORUM_SNAPSHOT_BYTES_MAX, QUORUM_SNAPSHOT_DATA_BYTES_MAX};

const DATA_VERSION: u8 = 1;
const FILE_VERSION: u8 = 1;
const HEADER_BYTES: usize = 5;

/// Seals a machine's snapshot payload (version, checksum). `None` when it is over
/// `QUORUM_SNAPSHOT_DATA_BYTES_MAX` (it could not travel in one snapshot message).
pub fn seal(payload: &[u8]) -> Option<Vec<u8>> {
    if payload.len() + HEADER_BYTES > QUORUM_SNAPSHOT_DATA_BYTES_MAX {
        return None;
    }
    Some(envelope(DATA_VERSION, payload))
}

/// The payload of sealed snapshot data, or why it is refused.
pub fn open(data: &[u8]) -> Result<&[u8], String> {
    unwrap_envelope(DATA_VERSION, data, "snapshot data")
}

fn envelope(version: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_BYTES + payload.len());
    out.push(version);
    out.extend_from_slice(&crc32c::crc32c(payload).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

fn unwrap_envelope<'a>(version: u8, bytes: &'a [u8], what: &str) -> Result<&'a [u8], String> {
    let Some((header, payload)) = bytes.split_at_checked(HEADER_BYTES) else {
        return Err(format!(
            "{what}: {} bytes, shorter than its header",
            bytes.len()
        ));
    };
    if header[0] != version {
        return Err(format!(
            "{what}: version {} (this build reads {version})",
            header[0]
        ));
    }
    let crc = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    if crc32c::crc32c(payload) != crc {
        return Err(format!("{what}: checksum mismatch"));
    }
    Ok(payload)
}

/// Replaces the snapshot file at `path` with `snapshot`, durably (see the module docs).
pub fn write_file(path: &Path, snapshot: &Snapshot) -> Result<(), String> {
    let bytes = snapshot.write_to_bytes().map_err(|e| e.to_string())?;
    replace_file(path, &envelope(FILE_VERSION, &bytes))
}

/// As [`write_file`], through the executor's io_uring (see [`replace_file_async`]).
pub async fn write_file_async(path: &Path, snapshot: &Snapshot) -> Result<(), String> {
    let bytes = snapshot.write_to_bytes().map_err(|e| e.to_string())?;
    replace_file_async(path, envelope(FILE_VERSION, &bytes)).await
}

/// The snapshot kept at `path`: `None` when there is none; `Err` when it cannot be trusted.
pub fn read_file(path: &Path) -> Result<Option<Snapshot>, String> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot open {}: {e}", path.display())),
    };
    let size = file
        .metadata()
        .map_err(|e| format!("cannot stat {}: {e}", path.display()))?
        .len();
    if size > QUORUM_SNAPSHOT_BYTES_MAX as u64 {
        return Err(format!(
            "{} is {size} bytes, more than the {QUORUM_SNAPSHOT_BYTES_MAX} read back",
            path.display()
        ));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    file.read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let what = path.display().to_string();
    let payload = unwrap_envelope(FILE_VERSION, &bytes, &what)?;
    let snapshot = Snapshot::parse_from_bytes(payload).map_err(|e| format!("{what}: {e}"))?;
    open(snapshot.get_data()).map_err(|e| format!("{what}: {e}"))?;
    if snapshot.get_metadata().index == 0 {
        return Err(format!("{what}: a snapshot at index 0"));
    }
    Ok(Some(snapshot))
}

/// Writes `bytes` to `path` so that a crash leaves either the old file or the new one whole:
/// a temp file beside it, fdatasync, rename over it, fsync of the directory (the rename).
pub fn replace_file(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let fail = |what: &str, e: std::io::Error| format!("{what} {}: {e}", path.display());
    let temp = path.with_extension("tmp");
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temp)
        .map_err(|e| fail("cannot create the temp file of", e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_data())
        .map_err(|e| fail("cannot write the temp file of", e))?;
    drop(file);
    std::fs::rename(&temp, path).map_err(|e| fail("cannot rename over", e))?;
    sync_parent(path)
}

/// As [`replace_file`], with the writes and syncs through the executor's io_uring, so the
/// executor serves its other tasks while they run. The rename is a plain system call: a
/// metadata change, quick, and glommio's own would wait for the blocking pool, which the
/// coordinator's signal wait holds.
pub async fn replace_file_async(path: &Path, bytes: Vec<u8>) -> Result<(), String> {
    let fail = |what: &str, e: &dyn std::fmt::Display| format!("{what} {}: {e}", path.display());
    let temp = path.with_extension("tmp");
    let file = BufferedFile::create(&temp)
        .await
        .map_err(|e| fail("cannot create the temp file of", &e))?;
    let length = bytes.len();
    let written = file
        .write_at(bytes, 0)
        .await
        .map_err(|e| fail("cannot write the temp file of", &e))?;
    if written != length {
        // A regular file takes a buffered write whole unless the disk is full.
        let short = format!("{written} of {length} bytes written (disk full?)");
        return Err(fail("cannot write the temp file of", &short));
    }
    file.fdatasync()
        .await
        .map_err(|e| fail("cannot fdatasync the temp file of", &e))?;
    file.close()
        .await
        .map_err(|e| fail("cannot close the temp file of", &e))?;
    std::fs::rename(&temp, path).map_err(|e| fail("cannot rename over", &e))?;
    let parent = path.parent().unwrap_or(Path::new("."));
    let fsync_failed =
        |e: &dyn std::fmt::Display| format!("cannot fsync the directory {}: {e}", parent.display());
    let dir = Directory::open(parent)
        .await
        .map_err(|e| fsync_failed(&e))?;
    dir.sync().await.map_err(|e| fsync_failed(&e))?;
    dir.close().await.map_err(|e| fsync_failed(&e))
}

fn sync_parent(path: &Path) -> Result<(), String> {
    let parent = path.parent().unwrap_or(Path::new("."));
    File::open(parent)
        .and_then(|dir| dir.sync_all())
        .map_err(|e| format!("cannot fsync the directory {}: {e}", parent.display()))
}

/// raft-rs storage of one group: the entries in `MemStorage`, the last snapshot beside them.
#[derive(Clone)]
pub struct GroupStorage {
    mem: MemStorage,
    snapshot: Rc<RefCell<Option<Snapshot>>>,
}

impl GroupStorage {
    pub fn new(mem: MemStorage) -> GroupStorage {
        GroupStorage {
            mem,
            snapshot: Rc::new(RefCell::new(None)),
        }
    }

    pub fn mem(&self) -> &MemStorage {
        &self.mem
    }

    /// The snapshot a follower behind the log is sent from now on.
    pub fn set_snapshot(&self, snapshot: Snapshot) {
        *self.snapshot.borrow_mut() = Some(snapshot);
    }

    /// The index of the last snapshot (0: none).
    pub fn snapshot_index(&self) -> u64 {
        self.snapshot
            .borrow()
            .as_ref()
            .map_or(0, |s| s.get_metadata().index)
    }
}

impl Storage for GroupStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        self.mem.initial_state()
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        self.mem.entries(low, high, max_size, context)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        self.mem.term(idx)
    }

    fn first_index(&self) -> raft::Result<u64> {
        self.mem.first_index()
    }

    fn last_index(&self) -> raft::Result<u64> {
        self.mem.last_index()
    }

    /// The snapshot kept (its data is `Bytes`: a clone shares it). None yet, or one older than
    /// asked for: temporarily unavailable, which raft-rs answers by trying again later (any
    /// other error would be fatal to it).
    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        match &*self.snapshot.borrow() {
            Some(snapshot) if snapshot.get_metadata().index >= request_index.max(1) => {
                Ok(snapshot.clone())
            }
            _ => Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::eraftpb::ConfState;

    fn entry(index: u64, term: u64) -> Entry {
        let mut entry = Entry::default();
        entry.set_index(index);
        entry.set_term(term);
        entry
    }

    fn snapshot_at(index: u64, term: u64, payload: &[u8]) -> Snapshot {
        let mut snapshot = Snapshot::default();
        snapshot.set_data(seal(payload).unwrap().into());
        let meta = snapshot.mut_metadata();
        meta.index = index;
        meta.term = term;
        meta.set_conf_state(ConfState::from((vec![1, 2, 3], vec![])));
        snapshot
    }

    #[test]
    fn sealed_data_round_trips_and_damage_is_refused() {
        let sealed = seal(b"ready messages").unwrap();
        assert_eq!(open(&sealed).unwrap(), b"ready messages");
        for at in 0..sealed.len() {
            let mut damaged = sealed.clone();
            damaged[at] ^= 0x40;
            assert!(open(&damaged).is_err(), "a flipped bit at {at}");
        }
        for cut in 0..HEADER_BYTES {
            assert!(open(&sealed[..cut]).is_err(), "cut at {cut}");
        }
        assert!(open(&sealed[..sealed.len() - 1]).is_err());
        assert!(seal(&vec![0; QUORUM_SNAPSHOT_DATA_BYTES_MAX]).is_none());
    }

    #[test]
    fn the_file_is_replaced_whole_and_a_damaged_one_refused() {
        let dir = std::env::temp_dir().join(format!("ringmq-snapshot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("quorum-7.snapshot");
        let _ = std::fs::remove_file(&path);
        assert!(read_file(&path).unwrap().is_none());
        write_file(&path, &snapshot_at(5, 2, b"first")).unwrap();
        write_file(&path, &snapshot_at(9, 3, b"second")).unwrap();
        let back = read_file(&path).unwrap().unwrap();
        assert_eq!(back.get_metadata().index, 9);
        assert_eq!(open(back.get_data()).unwrap(), b"second");
        assert!(!path.with_extension("tmp").exists());
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(read_file(&path).is_err());
        std::fs::write(&path, [FILE_VERSION]).unwrap();
        assert!(read_file(&path).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn group_storage_answers_with_its_snapshot_and_the_entries_after_it() {
        let mem = MemStorage::new_with_conf_state(ConfState::from((vec![1, 2, 3], vec![])));
        let storage = GroupStorage::new(mem);
        let unavailable = || raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable);
        assert_eq!(storage.snapshot(0, 2), Err(unavailable()));
        storage
            .mem()
            .wl()
            .append(&(1..=10).map(|i| entry(i, 1)).collect::<Vec<_>>())
            .unwrap();
        storage.mem().wl().compact(6).unwrap();
        storage.set_snapshot(snapshot_at(6, 1, b"state at 6"));
        assert_eq!(storage.first_index(), Ok(6));
        assert_eq!(storage.last_index(), Ok(10));
        assert_eq!(storage.term(6), Ok(1));
        assert!(storage.term(5).is_err());
        let got = storage.snapshot(0, 2).unwrap();
        assert_eq!(got.get_metadata().index, 6);
        assert_eq!(open(got.get_data()).unwrap(), b"state at 6");
        assert_eq!(storage.snapshot(6, 2).unwrap().get_metadata().index, 6);
        assert_eq!(storage.snapshot(7, 2), Err(unavailable()));
        let context = GetEntriesContext::empty(false);
        let entries = storage.entries(6, 11, raft::NO_LIMIT, context).unwrap();
        assert_eq!(entries.len(), 5);
        // A follower installing it: the entries go, the snapshot's index is the new base.
        let follower = MemStorage::new_with_conf_state(ConfState::from((vec![1, 2, 3], vec![])));
        follower.wl().apply_snapshot(got).unwrap();
        assert_eq!(follower.first_index(), Ok(7));
        assert_eq!(follower.term(6), Ok(1));
        assert_eq!(storage.snapshot_index(), 6);
    }
}
