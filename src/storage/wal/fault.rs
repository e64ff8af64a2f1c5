//! Injected I/O errors under the log, for tests only: compiled into the crate's unit tests and
//! into builds with the `fault-injection` feature (`tests/it/disk_eio.rs`); every other build gets
//! the inline no-op at the bottom, so a release broker cannot be made to fail this way.
//!
//! Why a layer and not a device: the disk-fault issue asks for EIO during append, fdatasync and
//! compaction, ideally from a `dm-flakey`/`dm-error` device. The kernels the project runs on
//! (Firecracker guests) have no device-mapper, no fault-injection framework
//! (`CONFIG_FAULT_INJECTION`), and no null_blk/nbd/ublk to fake one with, so the errors are
//! raised here instead, at exactly the calls the log makes to the kernel: the DMA write of a
//! batch chunk, the fdatasync after it, the reads (recovery, readers, copy-forward) and the
//! creation of a segment. An injected write is torn the way a failing device tears it: the
//! first half of its blocks reach the file, then the call fails with EIO.
//!
//! Two ways to arm it:
//! - unit tests: `inject(dir, plan)` for the logs in `dir` (tests run in parallel threads, so a
//!   plan names its directory), `clear(dir)`;
//! - a broker process: `RINGMQ_WAL_FAULTS_FILE=PATH`, a file the test writes; each call reads
//!   it and fails the operations it names (words: `write`, `fdatasync`, `read`, `create`).
//!   A missing or empty file injects nothing. Read at every call: test builds only.

use std::path::Path;

/// An operation of the log on its files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultOp {
    Write,
    Fdatasync,
    Read,
    Create,
}

#[cfg(any(test, feature = "fault-injection"))]
mod armed {
    use super::FaultOp;
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    /// What fails in one directory: the operations, after `pass` more successes of them.
    #[derive(Debug, Clone, Default)]
    pub struct FaultPlan {
        pub ops: Vec<FaultOp>,
        /// Calls of a listed operation that still succeed before the failures start.
        pub pass: u64,
    }

    static PLANS: Mutex<Vec<(PathBuf, FaultPlan)>> = Mutex::new(Vec::new());

    pub fn inject(dir: &Path, plan: FaultPlan) {
        let mut plans = PLANS.lock().unwrap_or_else(|p| p.into_inner());
        plans.retain(|(d, _)| d != dir);
        plans.push((dir.to_path_buf(), plan));
    }

    pub fn clear(dir: &Path) {
        let mut plans = PLANS.lock().unwrap_or_else(|p| p.into_inner());
        plans.retain(|(d, _)| d != dir);
    }

    pub fn injected(op: FaultOp, path: &Path) -> bool {
        from_plans(op, path) || from_file(op)
    }

    fn from_plans(op: FaultOp, path: &Path) -> bool {
        let mut plans = PLANS.lock().unwrap_or_else(|p| p.into_inner());
        let Some((_, plan)) = plans.iter_mut().find(|(dir, _)| path.starts_with(dir)) else {
            return false;
        };
        if !plan.ops.contains(&op) {
            return false;
        }
        if plan.pass > 0 {
            plan.pass -= 1;
            return false;
        }
        true
    }

    fn from_file(op: FaultOp) -> bool {
        let Some(file) = std::env::var_os("RINGMQ_WAL_FAULTS_FILE") else {
            return false;
        };
        let word = match op {
            FaultOp::Write => "write",
            FaultOp::Fdatasync => "fdatasync",
            FaultOp::Read => "read",
            FaultOp::Create => "create",
        };
        std::fs::read_to_string(file)
            .map(|text| text.split_whitespace().any(|w| w == word))
            .unwrap_or(false)
    }
}

#[cfg(any(test, feature = "fault-injection"))]
pub use armed::{clear, inject, FaultPlan};

/// EIO when a test armed `op` for `path`.
#[cfg(any(test, feature = "fault-injection"))]
pub fn check(op: FaultOp, path: &Path) -> std::io::Result<()> {
    if armed::injected(op, path) {
        return Err(std::io::Error::from_raw_os_error(libc::EIO));
    }
    Ok(())
}

#[cfg(not(any(test, feature = "fault-injection")))]
#[inline(always)]
pub fn check(_op: FaultOp, _path: &Path) -> std::io::Result<()> {
    Ok(())
}
