//! The one-line progress meter on stderr: rates since the last redraw.

use std::io::Write;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::report::format_value;
use crate::workers::Shared;

pub struct Progress<'a> {
    name: &'a str,
    shared: &'a Shared,
    started: Instant,
    last: Instant,
    last_published: u64,
    last_consumed: u64,
}

impl<'a> Progress<'a> {
    pub fn new(name: &'a str, shared: &'a Shared) -> Progress<'a> {
        let now = Instant::now();
        Progress {
            name,
            shared,
            started: now,
            last: now,
            last_published: 0,
            last_consumed: 0,
        }
    }

    pub fn tick(&mut self) {
        let now = Instant::now();
        let seconds = (now - self.last).as_secs_f64().max(1e-9);
        let published = self.shared.published.load(Ordering::Relaxed);
        let consumed = self.shared.consumed.load(Ordering::Relaxed);
        let line = format!(
            "\r{} {:>4.0}s  published {:>12}/s  consumed {:>12}/s   ",
            self.name,
            (now - self.started).as_secs_f64(),
            format_value(((published - self.last_published) as f64 / seconds).round()),
            format_value(((consumed - self.last_consumed) as f64 / seconds).round()),
        );
        let _ = std::io::stderr().write_all(line.as_bytes());
        self.last = now;
        self.last_published = published;
        self.last_consumed = consumed;
    }

    /// `tick` at most once per `interval` (for callers that poll faster).
    pub fn tick_every(&mut self, interval: Duration) {
        if self.last.elapsed() >= interval {
            self.tick();
        }
    }

    pub fn finish(&mut self) {
        let _ = std::io::stderr().write_all(b"\n");
    }
}
