//! The device's floor for a durable confirm: one 4 KiB O_DIRECT write followed by fdatasync,
//! repeated, timed one by one. A broker that group-commits cannot confirm a lone message
//! faster than this; its confirm p99 over this p99 is what the broker itself adds.
//!
//! The writes go round a preallocated file, sequentially like a log, so the file system does
//! not allocate blocks (or update the size) during the measurement; the file is filled with
//! real data first because some virtual disks treat never-written blocks specially.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;

use crate::error::{PerfError, Result};
use crate::limits::{
    DISK_BLOCK_BYTES, DISK_FILL_CHUNK_BYTES, DISK_FLOOR_FILE_BYTES_MAX, DISK_FLOOR_WRITES_MAX,
};
use crate::report::Report;
use crate::workers::new_histogram;

#[derive(Args, Debug, Clone)]
pub struct DiskFloorOpts {
    /// Directory on the device to measure (e.g. where the broker keeps its data).
    #[arg(long)]
    pub dir: PathBuf,
    /// Measured write+fdatasync pairs.
    #[arg(long, default_value_t = 2000)]
    pub writes: u64,
    /// Pairs done first and left out of the histogram.
    #[arg(long, default_value_t = 100)]
    pub warmup_writes: u64,
    /// Size of the preallocated file the writes go round, in MiB.
    #[arg(long, default_value_t = 64)]
    pub file_mb: u64,
}

impl DiskFloorOpts {
    fn file_bytes(&self) -> Result<u64> {
        let bytes = self.file_mb.saturating_mul(1 << 20);
        if !(1..=DISK_FLOOR_FILE_BYTES_MAX).contains(&bytes) {
            return Err(PerfError::Args("--file-mb out of range".into()));
        }
        let total = self.writes.saturating_add(self.warmup_writes);
        if !(1..=DISK_FLOOR_WRITES_MAX).contains(&total) || self.writes == 0 {
            return Err(PerfError::Args("--writes out of range".into()));
        }
        Ok(bytes)
    }
}

/// Removes the scratch file however the measurement ends.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

pub fn disk_floor(opts: &DiskFloorOpts) -> Result<Report> {
    let file_bytes = opts.file_bytes()?;
    let scratch = Scratch(
        opts.dir
            .join(format!("ringmq-perf-disk-floor-{}.tmp", std::process::id())),
    );
    preallocate(&scratch.0, file_bytes)?;
    let file = open_direct(&scratch.0)?;
    let mut buffer = vec![0u8; 2 * DISK_BLOCK_BYTES];
    let block = aligned_block(&mut buffer)?;
    let blocks = file_bytes / DISK_BLOCK_BYTES as u64;
    let mut latency = new_histogram();
    let started = Instant::now();
    let total = opts.writes + opts.warmup_writes;
    let mut measured_from = started;
    for index in 0..total {
        if index == opts.warmup_writes {
            measured_from = Instant::now();
        }
        // A different first word per write, so no layer can skip an unchanged block.
        block[..8].copy_from_slice(&index.to_le_bytes());
        let offset = (index % blocks) * DISK_BLOCK_BYTES as u64;
        let before = Instant::now();
        file.write_all_at(block, offset)?;
        file.sync_data()?;
        let ns = before.elapsed().as_nanos() as u64;
        if index >= opts.warmup_writes {
            latency.saturating_record(ns.max(1));
        }
    }
    let seconds = measured_from.elapsed().as_secs_f64().max(1e-9);
    let mut report = Report::new("disk-floor", format!("{}", opts.dir.display()));
    report.push("block_bytes", DISK_BLOCK_BYTES as f64);
    report.push("syncs_per_s", opts.writes as f64 / seconds);
    report.push_latency_as("disk_latency", &latency);
    Ok(report)
}

/// Writes the whole file with non-zero data through the page cache and makes it durable.
fn preallocate(path: &Path, file_bytes: u64) -> Result<()> {
    let mut file = File::create(path)?;
    let chunk = vec![0xA5u8; DISK_FILL_CHUNK_BYTES];
    let mut written = 0u64;
    while written < file_bytes {
        let step = (file_bytes - written).min(DISK_FILL_CHUNK_BYTES as u64) as usize;
        file.write_all(&chunk[..step])?;
        written += step as u64;
    }
    file.sync_all()?;
    Ok(())
}

fn open_direct(path: &Path) -> Result<File> {
    OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .map_err(|e| {
            PerfError::Unexpected(format!(
                "cannot open {} with O_DIRECT (tmpfs and some file systems refuse it): {e}",
                path.display()
            ))
        })
}

/// The 4 KiB-aligned block inside `buffer` (which must hold two blocks). O_DIRECT needs the
/// memory aligned as well as the offset and length.
fn aligned_block(buffer: &mut [u8]) -> Result<&mut [u8]> {
    let skip = buffer.as_ptr().align_offset(DISK_BLOCK_BYTES);
    let block = buffer
        .get_mut(skip..skip + DISK_BLOCK_BYTES)
        .ok_or_else(|| PerfError::Unexpected("cannot align the disk-floor buffer".into()))?;
    block.fill(0x5A);
    Ok(block)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_is_aligned_and_full_size() {
        let mut buffer = vec![0u8; 2 * DISK_BLOCK_BYTES];
        let block = aligned_block(&mut buffer).unwrap();
        assert_eq!(block.len(), DISK_BLOCK_BYTES);
        assert_eq!(block.as_ptr() as usize % DISK_BLOCK_BYTES, 0);
        assert!(block.iter().all(|&b| b == 0x5A));
    }

    #[test]
    fn measures_and_cleans_up() {
        // The temp dir is on a real disk here; where it is tmpfs the O_DIRECT open fails.
        let dir = std::env::temp_dir();
        let opts = DiskFloorOpts {
            dir: dir.clone(),
            writes: 20,
            warmup_writes: 2,
            file_mb: 1,
        };
        match disk_floor(&opts) {
            Ok(report) => {
                assert_eq!(report.get("disk_latency_samples"), Some(20.0));
                assert!(report.get("disk_latency_us_p99").unwrap() > 0.0);
            }
            // Not every test machine's temp dir takes O_DIRECT; that must be an error, not a panic.
            Err(PerfError::Unexpected(message)) => assert!(message.contains("O_DIRECT")),
            Err(other) => panic!("{other}"),
        }
        let leftover = format!("ringmq-perf-disk-floor-{}.tmp", std::process::id());
        assert!(!dir.join(leftover).exists());
    }

    #[test]
    fn bounds_are_checked() {
        let opts = DiskFloorOpts {
            dir: PathBuf::from("."),
            writes: 0,
            warmup_writes: 0,
            file_mb: 1,
        };
        assert!(opts.file_bytes().is_err());
        let opts = DiskFloorOpts {
            file_mb: 1 << 20,
            writes: 1,
            ..opts
        };
        assert!(opts.file_bytes().is_err());
    }
}
