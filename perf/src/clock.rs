//! One monotonic clock (CLOCK_MONOTONIC): producers stamp bodies with it and consumers (threads
//! of the same process) read it, so no clock sync is involved.

/// CLOCK_MONOTONIC in nanoseconds (u64 nanoseconds last 584 years). The same clock on every
/// process of the machine, so a broker run with `--trace-latency` can read the stamp in a body
/// and tell how long ago the message was meant to be sent.
pub fn now_ns() -> u64 {
    ringmq::latency_trace::monotonic_ns()
}

/// CPU time (user + system) this process has used, in nanoseconds.
pub fn process_cpu_ns() -> u64 {
    // SAFETY: getrusage only writes the struct we hand it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid pointer cannot fail.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    if rc != 0 {
        return 0;
    }
    let micros = |tv: libc::timeval| tv.tv_sec as u64 * 1_000_000 + tv.tv_usec as u64;
    (micros(usage.ru_utime) + micros(usage.ru_stime)) * 1000
}

/// CPU time of another process (the broker) from /proc/PID/stat, in nanoseconds.
pub fn pid_cpu_ns(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; fields are counted after its closing parenthesis.
    let after_name = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = u64::try_from(ticks).ok().filter(|&t| t > 0)?;
    Some((utime + stime) * 1_000_000_000 / ticks)
}

/// Resident set size of a process from /proc/PID/status, in bytes.
pub fn pid_rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Asks the kernel to wake our sleeps on time: the default 50 µs timer slack would show up as
/// latency in an open-loop schedule at 100k msg/s (10 µs apart).
pub fn tighten_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes an integer and affects only the calling thread.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_visible() {
        let pid = std::process::id();
        assert!(pid_rss_bytes(pid).unwrap() > 0);
        assert!(pid_cpu_ns(pid).is_some());
        assert!(now_ns() <= now_ns());
        assert!(pid_rss_bytes(u32::MAX).is_none());
    }
}
