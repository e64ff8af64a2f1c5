//! Reading the system: the machine's memory, the cgroup's limit, this process's resident
//! memory, and the free space of a filesystem. Every reader returns `None` rather than fail:
//! an unreadable file never stops the broker, it only leaves an alarm where it was.

use std::path::Path;

/// `MemTotal` of `/proc/meminfo`, in bytes.
pub fn machine_memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    meminfo_total_bytes(&text)
}

fn meminfo_total_bytes(text: &str) -> Option<u64> {
    let line = text.lines().find(|line| line.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// The memory limit of this process's cgroup: v2's `memory.max`, else v1's
/// `memory.limit_in_bytes`. `None` when there is none ("max", or v1's huge "unlimited").
pub fn cgroup_memory_limit_bytes() -> Option<u64> {
    let membership = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    for line in membership.lines() {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        let file = if controllers.is_empty() {
            format!("/sys/fs/cgroup{path}/memory.max")
        } else if controllers.split(',').any(|c| c == "memory") {
            format!("/sys/fs/cgroup/memory{path}/memory.limit_in_bytes")
        } else {
            continue;
        };
        if let Some(limit) = std::fs::read_to_string(file)
            .ok()
            .and_then(|text| cgroup_limit_value(&text))
        {
            return Some(limit);
        }
    }
    None
}

/// v1 writes "no limit" as the largest page-aligned i64.
const CGROUP_V1_UNLIMITED_BYTES: u64 = 1 << 62;

fn cgroup_limit_value(text: &str) -> Option<u64> {
    let bytes: u64 = text.trim().parse().ok()?;
    (bytes < CGROUP_V1_UNLIMITED_BYTES).then_some(bytes)
}

/// Resident memory of this process (`/proc/self/statm`'s second field, in pages).
pub fn resident_memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = text.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page_bytes = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages.checked_mul(u64::try_from(page_bytes).ok()?)
}

/// Bytes an unprivileged writer may still use on the filesystem holding `path` (`statvfs`'s
/// `f_bavail`, as RabbitMQ's disk monitor reports "available").
pub fn filesystem_free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: `stats` is plain data written by statvfs; `path` is a valid C string.
    let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut stats) } != 0 {
        return None;
    }
    (stats.f_bavail as u64).checked_mul(stats.f_frsize as u64)
}

/// Gives freed heap pages back to the kernel, so resident memory falls once queues drain and
/// the memory alarm can clear (glibc keeps freed chunks mapped; RabbitMQ's allocator has the
/// same problem and its `allocated` strategy exists for it). Costly enough (it walks every
/// arena) to be called only while the memory alarm is in effect.
pub fn release_free_memory() {
    // SAFETY: malloc_trim has no preconditions; it only returns unused memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_and_cgroup_values_are_read_and_unlimited_is_none() {
        let meminfo = "MemTotal:       24683360 kB\nMemFree:        16977456 kB\n";
        assert_eq!(meminfo_total_bytes(meminfo), Some(24_683_360 * 1024));
        assert_eq!(meminfo_total_bytes("nothing"), None);
        assert_eq!(cgroup_limit_value("1073741824\n"), Some(1 << 30));
        assert_eq!(cgroup_limit_value("max\n"), None);
        assert_eq!(cgroup_limit_value("9223372036854771712\n"), None);
    }

    #[test]
    fn this_process_and_its_filesystem_can_be_read() {
        assert!(resident_memory_bytes().is_some_and(|bytes| bytes > 0));
        assert!(machine_memory_bytes().is_some_and(|bytes| bytes > 0));
        assert!(filesystem_free_bytes(Path::new("/")).is_some());
        assert_eq!(filesystem_free_bytes(Path::new("/no/such/dir")), None);
    }
}
