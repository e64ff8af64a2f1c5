//! Adaptive spin before park (`--spin-mode adaptive`, issue 11).
//!
//! glommio's spin is fixed when the executor is built: an idle shard spins `--spin-us` before
//! it parks, whatever else the machine is doing. Measured on 2 cores with the clients beside the
//! broker (tuning.md §6), that wins at 10,000 msg/s (a parked shard pays a wake-up per message)
//! and loses at 50,000 (messages come closer than the spin, the shard never parks, and the
//! clients' threads wait for its core). Neither fixed value serves both.
//!
//! Here the executor parks at once, and one task per shard does the spinning: woken by
//! [`touch`] (the data path did work a peer asked for: a socket read, a mesh batch), it keeps
//! the executor polling I/O by yielding its task queue until `--spin-us` passes without work.
//! It stops spinning for `SPIN_BACKOFF` once other threads of the machine wait for a CPU,
//! read from the kernel's CPU pressure (`/proc/pressure/cpu`, "some": time in which at least
//! one runnable thread waited): spinning then takes a core someone wants. Without the
//! pressure file it spins as the fixed mode does.

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::future::poll_fn;
use std::os::unix::fs::FileExt;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use crate::limits::{SPIN_BACKOFF, SPIN_PRESSURE_CHECK_INTERVAL, SPIN_PRESSURE_FRACTION_MAX};

/// The kernel's CPU pressure (PSI), cumulative.
const PRESSURE_FILE: &str = "/proc/pressure/cpu";

thread_local! {
    static SPINNER: Spinner = Spinner::default();
}

/// The executor-local state [`touch`] and [`run`] share.
#[derive(Default)]
struct Spinner {
    /// `run` is running on this executor (otherwise `touch` does nothing).
    enabled: Cell<bool>,
    /// Work happened since `run` last looked.
    touched: Cell<bool>,
    /// `run` waiting for work.
    waiting: RefCell<Option<Waker>>,
}

/// The data path did work a peer asked for: an adaptive spinner spins from now on for its
/// window. A cell write when no spinner runs or it already spins.
pub fn touch() {
    SPINNER.with(|spinner| {
        if !spinner.enabled.get() {
            return;
        }
        spinner.touched.set(true);
        if let Some(waker) = spinner.waiting.borrow_mut().take() {
            waker.wake();
        }
    });
}

fn take_touched() -> bool {
    SPINNER.with(|spinner| spinner.touched.replace(false))
}

/// Ready at the next [`touch`] (at once if there was one since the last look).
async fn touched() {
    poll_fn(|context| {
        SPINNER.with(|spinner| {
            if spinner.touched.replace(false) {
                Poll::Ready(())
            } else {
                *spinner.waiting.borrow_mut() = Some(context.waker().clone());
                Poll::Pending
            }
        })
    })
    .await
}

/// The spinner task of one shard, for the executor's life: spins `window` after each burst
/// of work, unless the machine's CPUs are wanted.
pub async fn run(window: Duration) {
    SPINNER.with(|spinner| spinner.enabled.set(true));
    let mut pressure = Pressure::open();
    loop {
        touched().await;
        if spin(window, &mut pressure).await == Spun::Contended {
            // Sleeping, not waiting on `touch`: the touches meanwhile cost a cell write each.
            glommio::timer::sleep(SPIN_BACKOFF).await;
            take_touched();
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spun {
    /// `window` passed without work.
    Idle,
    /// Other threads waited for a CPU while we spun.
    Contended,
}

/// Keeps the executor polling until `window` passes without a [`touch`]: each yield of this
/// task queue sends glommio round its loop, which polls I/O before it runs tasks again.
async fn spin(window: Duration, pressure: &mut Option<Pressure>) -> Spun {
    let started = Instant::now();
    let mut last_work = started;
    let mut next_check = started + SPIN_PRESSURE_CHECK_INTERVAL;
    if let Some(pressure) = pressure.as_mut() {
        pressure.mark(started);
    }
    loop {
        glommio::executor().yield_task_queue_now().await;
        let now = Instant::now();
        if take_touched() {
            last_work = now;
        }
        if now.duration_since(last_work) > window {
            return Spun::Idle;
        }
        if now >= next_check {
            next_check = now + SPIN_PRESSURE_CHECK_INTERVAL;
            if pressure.as_mut().is_some_and(|p| p.wanted_since_mark(now)) {
                return Spun::Contended;
            }
        }
    }
}

/// `/proc/pressure/cpu`'s "some" total, read again at each check.
struct Pressure {
    file: File,
    /// The total (µs) and when it was read, at the last mark.
    marked: (u64, Instant),
}

impl Pressure {
    fn open() -> Option<Pressure> {
        let file = File::open(PRESSURE_FILE).ok()?;
        let total = read_some_total(&file)?;
        Some(Pressure {
            file,
            marked: (total, Instant::now()),
        })
    }

    fn mark(&mut self, now: Instant) {
        if let Some(total) = read_some_total(&self.file) {
            self.marked = (total, now);
        }
    }

    /// Other threads waited for a CPU for more than `SPIN_PRESSURE_FRACTION_MAX` of the time
    /// since the mark (then the mark moves to now).
    fn wanted_since_mark(&mut self, now: Instant) -> bool {
        let Some(total) = read_some_total(&self.file) else {
            return false;
        };
        let (before, at) = self.marked;
        self.marked = (total, now);
        let elapsed_micros = now.duration_since(at).as_micros() as f64;
        let waited_micros = total.saturating_sub(before) as f64;
        elapsed_micros > 0.0 && waited_micros / elapsed_micros > SPIN_PRESSURE_FRACTION_MAX
    }
}

/// The "some" line's `total=` (µs), read from the start of the file.
fn read_some_total(file: &File) -> Option<u64> {
    let mut buffer = [0u8; 256];
    let length = file.read_at(&mut buffer, 0).ok()?;
    parse_some_total(std::str::from_utf8(&buffer[..length]).ok()?)
}

fn parse_some_total(text: &str) -> Option<u64> {
    let line = text.lines().find(|line| line.starts_with("some "))?;
    let total = line
        .split_whitespace()
        .find_map(|f| f.strip_prefix("total="))?;
    total.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_some_total_is_read_from_the_pressure_text() {
        let text = "some avg10=98.74 avg60=93.57 avg300=96.30 total=16936138045\n\
                    full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";
        assert_eq!(parse_some_total(text), Some(16_936_138_045));
        assert_eq!(parse_some_total("full total=3\n"), None);
        assert_eq!(parse_some_total("some avg10=1.00 total=x\n"), None);
    }

    #[test]
    fn touch_without_a_spinner_does_nothing_and_with_one_is_seen_once() {
        touch();
        assert!(!take_touched(), "no spinner runs on this thread");
        SPINNER.with(|spinner| spinner.enabled.set(true));
        touch();
        assert!(take_touched());
        assert!(!take_touched());
        SPINNER.with(|spinner| spinner.enabled.set(false));
    }
}
