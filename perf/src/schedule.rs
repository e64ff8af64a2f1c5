//! The open-loop send schedule: message `i` is due at `i / rate` seconds after the start,
//! whatever happened to message `i - 1`. Its intended time is what goes into the body, so a
//! sender that falls behind sends the backlog at once and the delay shows up as latency
//! (no coordinated omission).

use std::time::Duration;

use crate::clock::now_ns;

#[derive(Debug, Clone)]
pub struct OpenLoop {
    start_ns: u64,
    rate_per_s: f64,
    /// Messages whose intended time lies before `start_ns + duration`.
    total: u64,
}

impl OpenLoop {
    pub fn new(start_ns: u64, rate_per_s: f64, duration: Duration) -> OpenLoop {
        assert!(rate_per_s > 0.0);
        let total = (duration.as_secs_f64() * rate_per_s).floor() as u64;
        OpenLoop {
            start_ns,
            rate_per_s,
            total,
        }
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    /// When message `index` should be sent, in process nanoseconds.
    pub fn intended_ns(&self, index: u64) -> u64 {
        self.start_ns + (index as f64 * 1e9 / self.rate_per_s) as u64
    }

    /// How many messages should have been sent by `now_ns` (never more than `total`).
    pub fn due_by(&self, now_ns: u64) -> u64 {
        if now_ns < self.start_ns {
            return 0;
        }
        let elapsed_s = (now_ns - self.start_ns) as f64 / 1e9;
        let due = (elapsed_s * self.rate_per_s).floor() as u64 + 1;
        due.min(self.total)
    }

    /// Blocks until message `index` is due. It sleeps rather than spins: on a small machine the
    /// broker needs the core, and oversleeping only delays sends whose intended time is kept,
    /// so the delay is measured, not hidden.
    pub fn wait_for(&self, index: u64) {
        let target = self.intended_ns(index);
        let now = now_ns();
        if now < target {
            std::thread::sleep(Duration::from_nanos(target - now));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_schedule() {
        let s = OpenLoop::new(1_000, 1000.0, Duration::from_secs(2));
        assert_eq!(s.total(), 2000);
        assert_eq!(s.due_by(0), 0);
        assert_eq!(s.due_by(1_000), 1);
        assert_eq!(s.intended_ns(1), 1_000 + 1_000_000);
        // 10 ms late: everything due by then is sent at once.
        assert_eq!(s.due_by(1_000 + 10_000_000), 11);
        assert_eq!(s.due_by(u64::MAX / 2), 2000);
    }

    #[test]
    fn wait_for_past_returns() {
        let s = OpenLoop::new(0, 1e6, Duration::from_secs(1));
        s.wait_for(0);
    }
}
