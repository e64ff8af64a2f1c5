//! Segment files: naming, the header block, creation and whole-file reads.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::io::{DmaFile, OpenOptions};
use rkyv::util::AlignedVec;

use super::fault::{self, FaultOp};
use super::{Lsn, WalError, WAL_BLOCK_BYTES};
use crate::limits::{WAL_RECOVERY_READ_BYTES, WAL_ZERO_FILL_CHUNK_BYTES};

pub const SEGMENT_HEADER_BYTES: u64 = WAL_BLOCK_BYTES as u64;
const SEGMENT_MAGIC: &[u8; 8] = b"RINGMQWL";
const SEGMENT_VERSION: u32 = 1;
/// Encoded header fields: magic, version, shard, id, first_lsn, crc.
const SEGMENT_HEADER_USED_BYTES: usize = 8 + 4 + 4 + 8 + 8 + 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub shard: u32,
    pub id: u64,
    /// LSN the first record of this segment carries: lets recovery check continuity.
    pub first_lsn: Lsn,
}

impl SegmentHeader {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; SEGMENT_HEADER_BYTES as usize];
        b[0..8].copy_from_slice(SEGMENT_MAGIC);
        b[8..12].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&self.shard.to_le_bytes());
        b[16..24].copy_from_slice(&self.id.to_le_bytes());
        b[24..32].copy_from_slice(&self.first_lsn.to_le_bytes());
        let crc = crc32c::crc32c(&b[..32]);
        b[32..36].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Option<SegmentHeader> {
        let h = b.get(..SEGMENT_HEADER_USED_BYTES)?;
        let crc = u32::from_le_bytes(h[32..36].try_into().ok()?);
        if &h[0..8] != SEGMENT_MAGIC || crc32c::crc32c(&h[..32]) != crc {
            return None;
        }
        if u32::from_le_bytes(h[8..12].try_into().ok()?) != SEGMENT_VERSION {
            return None;
        }
        Some(SegmentHeader {
            shard: u32::from_le_bytes(h[12..16].try_into().ok()?),
            id: u64::from_le_bytes(h[16..24].try_into().ok()?),
            first_lsn: u64::from_le_bytes(h[24..32].try_into().ok()?),
        })
    }
}

pub fn segment_path(dir: &Path, shard: usize, id: u64) -> PathBuf {
    dir.join(format!("s{shard}-{id:020}.wal"))
}

/// Where one open log (`instance`, unique in the process) zero-fills the next segment of
/// `shard`'s log before it is needed (`prepare`). Not a segment name (no `.wal` suffix):
/// recovery and `log_shards` never read it. Per instance, so a log dropped and reopened in the
/// same process (a test's crash) never removes the new instance's file.
pub fn prepared_path(dir: &Path, shard: usize, instance: u64) -> PathBuf {
    dir.join(format!("{}{instance}.wal.tmp", prepared_prefix(shard)))
}

fn prepared_prefix(shard: usize) -> String {
    format!("s{shard}-next-")
}

/// Segment ids of this shard found in `dir`, ascending.
pub fn list_segments(dir: &Path, shard: usize) -> Result<Vec<u64>, WalError> {
    let prefix = format!("s{shard}-");
    let entries = std::fs::read_dir(dir).map_err(|e| WalError::io("read_dir", dir, e))?;
    let mut ids = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| WalError::io("read_dir", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(rest) = name.strip_prefix(&prefix) else {
            continue;
        };
        let Some(digits) = rest.strip_suffix(".wal") else {
            continue;
        };
        if let Ok(id) = digits.parse::<u64>() {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// Shard numbers that have at least one segment in `dir` (a missing `dir` has none), ascending.
pub fn log_shards(dir: &Path) -> Result<Vec<usize>, WalError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(WalError::io("read_dir", dir, e)),
    };
    let mut shards = std::collections::BTreeSet::new();
    for entry in entries {
        let entry = entry.map_err(|e| WalError::io("read_dir", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let parsed = name
            .strip_prefix('s')
            .and_then(|rest| rest.strip_suffix(".wal"))
            .and_then(|rest| rest.split_once('-'))
            .filter(|(_, id)| id.parse::<u64>().is_ok())
            .and_then(|(shard, _)| shard.parse::<usize>().ok());
        if let Some(shard) = parsed {
            shards.insert(shard);
        }
    }
    Ok(shards.into_iter().collect())
}

/// Deletes every segment of `shard`'s log in `dir`, oldest first. Call only on a closed log
/// holding no live enqueue. Oldest first because a settle never precedes its enqueue: a crash
/// part-way leaves a suffix of the log, in which every enqueue still has its settle after it.
pub fn remove_log(dir: &Path, shard: usize) -> Result<(), WalError> {
    for id in list_segments(dir, shard)? {
        let path = segment_path(dir, shard, id);
        std::fs::remove_file(&path).map_err(|e| WalError::io("remove segment", &path, e))?;
    }
    remove_stale_prepared(dir, shard);
    sync_dir(dir)
}

/// Deletes a prepared next segment, if it is there (it holds nothing of the log).
pub fn remove_prepared(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(error = %e, path = %path.display(), "cannot remove a prepared wal segment")
        }
    }
}

/// Deletes every prepared next segment of `shard` in `dir`: left by a process that stopped
/// without closing its log (one per crash; nothing reads them).
pub fn remove_stale_prepared(dir: &Path, shard: usize) {
    let prefix = prepared_prefix(shard);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let stale = name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(|rest| rest.strip_suffix(".wal.tmp"))
            .is_some_and(|instance| instance.parse::<u64>().is_ok());
        if stale {
            remove_prepared(&entry.path());
        }
    }
}

/// Makes the next segment of a log ahead of use: `path` (`prepared_path`), `size_bytes` long,
/// every block written with zeros and fdatasync'ed. ext4 (and XFS) keep fallocated space as
/// unwritten extents: the first write into each block then converts it, a metadata change that
/// a later fdatasync must commit to the journal, and on ext4 an O_DIRECT write into unwritten
/// space cannot complete inline (tuning.md §5). Written once here, in the background, the
/// segment's log writes are plain overwrites and its fdatasyncs flush the device only.
/// `closed` is asked between chunks: a closing log stops the fill (the caller removes the file).
pub async fn prepare(
    path: &Path,
    size_bytes: u64,
    closed: impl Fn() -> bool,
) -> Result<Rc<DmaFile>, WalError> {
    // Real data in the file before its first DMA open (glommio's io-poll probe misreads an
    // empty file); a failed earlier preparation left nothing worth keeping.
    std::fs::File::create(path)
        .and_then(|mut f| f.write_all(&[0u8; WAL_BLOCK_BYTES]))
        .map_err(|e| WalError::io("prepare segment", path, e))?;
    let file = open(path).await?;
    file.pre_allocate(size_bytes, false)
        .await
        .map_err(|e| WalError::glommio("fallocate", path, e))?;
    let zeros = Rc::new(zero_buffer(&file, WAL_ZERO_FILL_CHUNK_BYTES));
    let mut offset = SEGMENT_HEADER_BYTES;
    // Bounded: one chunk per `WAL_ZERO_FILL_CHUNK_BYTES` of a segment (at most
    // `WAL_SEGMENT_SIZE_BYTES_MAX`); sizes are whole blocks (`WalOptions::validate`).
    while offset < size_bytes {
        if closed() {
            return Err(WalError::Closed);
        }
        let left = (size_bytes - offset) as usize;
        let chunk = if left >= zeros.len() {
            zeros.clone()
        } else {
            Rc::new(zero_buffer(&file, left))
        };
        let written = file
            .write_rc_at(chunk, offset)
            .await
            .map_err(|e| WalError::glommio("zero-fill", path, e))?;
        if written == 0 {
            return Err(WalError::io(
                "zero-fill",
                path,
                std::io::Error::new(std::io::ErrorKind::WriteZero, "short O_DIRECT write"),
            ));
        }
        offset += written as u64;
    }
    file.fdatasync()
        .await
        .map_err(|e| WalError::glommio("fdatasync", path, e))?;
    Ok(file)
}

fn zero_buffer(file: &DmaFile, bytes: usize) -> glommio::io::DmaBuffer {
    let mut buffer = file.alloc_dma_buffer(bytes);
    buffer.as_bytes_mut().fill(0);
    buffer
}

/// Makes a prepared file (`prepare`) the segment `header` names: the header block written and
/// fdatasync'ed first, then the rename (directory synced), so a segment name on disk always
/// has its header, as with `create`. The fault checks are `create`'s: one per segment.
pub async fn install(
    dir: &Path,
    from: &Path,
    file: Rc<DmaFile>,
    header: SegmentHeader,
) -> Result<Rc<DmaFile>, WalError> {
    let path = segment_path(dir, header.shard as usize, header.id);
    fault::check(FaultOp::Create, &path).map_err(|e| WalError::io("create segment", &path, e))?;
    let encoded = header.encode();
    let mut block = file.alloc_dma_buffer(encoded.len());
    block.as_bytes_mut().copy_from_slice(&encoded);
    let written = file
        .write_at(block, 0)
        .await
        .map_err(|e| WalError::glommio("write segment header", &path, e))?;
    if written != encoded.len() {
        return Err(WalError::io(
            "write segment header",
            &path,
            std::io::Error::new(std::io::ErrorKind::WriteZero, "short O_DIRECT write"),
        ));
    }
    file.fdatasync()
        .await
        .map_err(|e| WalError::glommio("fdatasync", &path, e))?;
    std::fs::rename(from, &path).map_err(|e| WalError::io("rename segment", &path, e))?;
    sync_dir(dir)?;
    Ok(file)
}

/// Creates a segment: header block via std I/O (synced, directory synced so the name survives a
/// power loss), then the DMA open and the preallocation.
pub async fn create(
    dir: &Path,
    header: SegmentHeader,
    size_bytes: u64,
) -> Result<Rc<DmaFile>, WalError> {
    let path = segment_path(dir, header.shard as usize, header.id);
    fault::check(FaultOp::Create, &path).map_err(|e| WalError::io("create segment", &path, e))?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        // An id is only ever assigned once; a file already there is a failed earlier attempt
        // at creating this very segment, holding nothing durable.
        .truncate(true)
        .open(&path)
        .map_err(|e| WalError::io("create segment", &path, e))?;
    f.write_all(&header.encode())
        .and_then(|_| f.sync_all())
        .map_err(|e| WalError::io("write segment header", &path, e))?;
    drop(f);
    sync_dir(dir)?;
    let file = open(&path).await?;
    file.pre_allocate(size_bytes, false)
        .await
        .map_err(|e| WalError::glommio("fallocate", &path, e))?;
    Ok(file)
}

pub async fn open(path: &Path) -> Result<Rc<DmaFile>, WalError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .dma_open(path)
        .await
        .map_err(|e| WalError::glommio("dma open", path, e))?;
    Ok(Rc::new(file))
}

pub fn sync_dir(dir: &Path) -> Result<(), WalError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| WalError::io("fsync dir", dir, e))
}

/// Reads a whole segment into a 16-byte aligned buffer (so archives can be read in place),
/// `WAL_RECOVERY_READ_BYTES` at a time.
pub async fn read_all(file: &DmaFile, path: &Path) -> Result<AlignedVec<16>, WalError> {
    let size = file
        .file_size()
        .await
        .map_err(|e| WalError::glommio("stat", path, e))?;
    let mut buf = AlignedVec::<16>::with_capacity(size as usize);
    let mut pos = 0u64;
    while pos < size {
        let want = WAL_RECOVERY_READ_BYTES.min((size - pos) as usize);
        fault::check(FaultOp::Read, path).map_err(|e| WalError::io("read segment", path, e))?;
        let read = file
            .read_at(pos, want)
            .await
            .map_err(|e| WalError::glommio("read segment", path, e))?;
        if read.is_empty() {
            break;
        }
        buf.extend_from_slice(&read);
        pos += read.len() as u64;
    }
    Ok(buf)
}

/// Writes `data` at the block-aligned `offset`, zero-padding it to a whole number of blocks.
/// Returns the bytes written (padding included).
pub async fn write_padded(
    file: &DmaFile,
    path: &Path,
    offset: u64,
    data: &[u8],
) -> Result<usize, WalError> {
    debug_assert!(offset.is_multiple_of(WAL_BLOCK_BYTES as u64));
    let len = data.len().next_multiple_of(WAL_BLOCK_BYTES);
    let mut buf = file.alloc_dma_buffer(len);
    let bytes = buf.as_bytes_mut();
    bytes[..data.len()].copy_from_slice(data);
    bytes[data.len()..].fill(0);
    if let Err(error) = fault::check(FaultOp::Write, path) {
        write_torn(file, offset, bytes).await;
        return Err(WalError::io("write", path, error));
    }
    let written = file
        .write_at(buf, offset)
        .await
        .map_err(|e| WalError::glommio("write", path, e))?;
    if written != len {
        return Err(WalError::io(
            "write",
            path,
            std::io::Error::new(std::io::ErrorKind::WriteZero, "short O_DIRECT write"),
        ));
    }
    Ok(len)
}

/// An injected write failure tears the write as a failing device does: the first half of its
/// blocks reach the file (whatever happens to them), the rest does not.
async fn write_torn(file: &DmaFile, offset: u64, bytes: &[u8]) {
    let torn = bytes.len() / WAL_BLOCK_BYTES / 2 * WAL_BLOCK_BYTES;
    if torn == 0 {
        return;
    }
    let mut half = file.alloc_dma_buffer(torn);
    half.as_bytes_mut().copy_from_slice(&bytes[..torn]);
    let _ = file.write_at(half, offset).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_rejects_flips() {
        let h = SegmentHeader {
            shard: 3,
            id: 42,
            first_lsn: 1000,
        };
        let b = h.encode();
        assert_eq!(SegmentHeader::decode(&b), Some(h));
        for bit in 0..(SEGMENT_HEADER_USED_BYTES * 8) {
            let mut c = b.clone();
            c[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(SegmentHeader::decode(&c), None, "bit {bit}");
        }
    }
}
