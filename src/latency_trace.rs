//! `--trace-latency`: where a message's time goes inside the broker, stage by stage.
//!
//! ringmq-perf stamps each body's first 8 bytes (big-endian) with the message's intended send
//! time on CLOCK_MONOTONIC. With the flag on, each stage reads that stamp from a sample of the
//! messages (one in `LATENCY_TRACE_SAMPLE_EVERY`, chosen by a hash of the stamp, so every stage
//! and every shard picks the same messages) and records "now - stamp" in a histogram of the
//! shard's thread. So no per-message state travels with the message, and a stage's p50 minus
//! the previous stage's p50 is the time spent between them. Reported per shard at shutdown.
//!
//! Off (the default) every stage costs one relaxed load of a flag set once at start-up.
//! The histograms are thread-local: a shard records only on its own thread, never shares them.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};

use hdrhistogram::Histogram;

use crate::limits::{
    LATENCY_TRACE_AGE_MAX_NS, LATENCY_TRACE_PENDING_MAX, LATENCY_TRACE_SAMPLE_EVERY,
};

static ENABLED: AtomicBool = AtomicBool::new(false);

/// The points a message passes, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The publisher's shard has the whole message (content complete), before routing.
    PublishParsed,
    /// A publish or delivery is pushed onto a mesh outbox.
    MeshSend,
    /// The outbox's flusher hands the batch holding it to the link.
    MeshFlush,
    /// The receiving shard takes it off the link.
    MeshReceive,
    /// It is in its queue (on the queue's shard), before dispatch.
    Enqueued,
    /// `basic.deliver` is encoded into the consumer connection's outbox.
    DeliveryEncoded,
    /// The write holding that delivery returned.
    SocketWritten,
    /// A persistent message's enqueue record is in the log's pending batch (the queue's shard).
    LogAppended,
    /// The flusher took the batch holding it and submits its write.
    LogWriteSubmitted,
    /// That write returned to the flusher, which submits the fdatasync.
    LogWriteDone,
    /// The fdatasync covering it returned to the flusher.
    LogSynced,
    /// The confirmer handed its confirm to the publisher's connection (or its shard's link).
    ConfirmReleased,
    /// Its `basic.ack` is encoded into the publisher connection's outbox.
    ConfirmEncoded,
    /// The write holding that `basic.ack` returned.
    ConfirmWritten,
}

const STAGES: [Stage; 14] = [
    Stage::PublishParsed,
    Stage::MeshSend,
    Stage::MeshFlush,
    Stage::MeshReceive,
    Stage::Enqueued,
    Stage::DeliveryEncoded,
    Stage::SocketWritten,
    Stage::LogAppended,
    Stage::LogWriteSubmitted,
    Stage::LogWriteDone,
    Stage::LogSynced,
    Stage::ConfirmReleased,
    Stage::ConfirmEncoded,
    Stage::ConfirmWritten,
];

thread_local! {
    static HISTOGRAMS: RefCell<Vec<Histogram<u64>>> = const { RefCell::new(Vec::new()) };
}

/// Turns tracing on for the whole process; called once, before the shards start.
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

#[inline]
pub fn is_enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Records `stage` for `body` if tracing is on and the body is a sampled stamp.
#[inline]
pub fn record(stage: Stage, body: &[u8]) {
    if is_enabled() {
        record_body(stage, body);
    }
}

/// The stamp of `body` when tracing is on and this message is one of the sample.
#[inline]
pub fn sampled(body: &[u8]) -> Option<u64> {
    if !is_enabled() {
        return None;
    }
    sampled_stamp(body)
}

#[cold]
fn record_body(stage: Stage, body: &[u8]) {
    if let Some(stamp) = sampled_stamp(body) {
        record_stamp(stage, stamp);
    }
}

fn sampled_stamp(body: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = body.get(..8)?.try_into().ok()?;
    let stamp = u64::from_be_bytes(bytes);
    // Fibonacci hashing: the top bits of the product spread evenly however the stamps are spaced.
    let hash = stamp.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (hash >> 32)
        .is_multiple_of(LATENCY_TRACE_SAMPLE_EVERY)
        .then_some(stamp)
}

/// Records "now - `stamp`" for `stage` (a stamp from [`sampled`]).
pub fn record_stamp(stage: Stage, stamp: u64) {
    let now = monotonic_ns();
    let Some(age) = now
        .checked_sub(stamp)
        .filter(|&a| a < LATENCY_TRACE_AGE_MAX_NS)
    else {
        return;
    };
    HISTOGRAMS.with(|cell| {
        let mut histograms = cell.borrow_mut();
        if histograms.is_empty() {
            // The bounds are constants that hdrhistogram accepts; an error leaves tracing off.
            *histograms = STAGES.iter().filter_map(|_| new_histogram()).collect();
        }
        if let Some(histogram) = histograms.get_mut(stage as usize) {
            histogram.saturating_record(age.max(1));
        }
    });
}

/// Records `stage` for each stamp.
pub fn record_stamps(stage: Stage, stamps: &[u64]) {
    for &stamp in stamps {
        record_stamp(stage, stamp);
    }
}

/// Stamps of sampled messages waiting for a later stage (a flush, a confirm), by a key: an LSN,
/// or a channel and publish sequence number. At most `LATENCY_TRACE_PENDING_MAX`; past it a
/// message is not traced further. Filled only while tracing is on.
#[derive(Debug, Default)]
pub struct Waiting {
    stamps: VecDeque<(u64, u64)>,
}

impl Waiting {
    pub fn push(&mut self, key: u64, stamp: u64) {
        if self.stamps.len() < LATENCY_TRACE_PENDING_MAX {
            self.stamps.push_back((key, stamp));
        }
    }

    /// The stamps of keys up to `key`, when keys were pushed in ascending order (LSNs).
    pub fn take_through(&mut self, key: u64) -> Vec<u64> {
        let mut taken = Vec::new();
        while let Some(&(k, stamp)) = self.stamps.front() {
            if k > key {
                break;
            }
            self.stamps.pop_front();
            taken.push(stamp);
        }
        taken
    }

    /// The stamp of exactly `key`, wherever it is.
    pub fn take(&mut self, key: u64) -> Option<u64> {
        let at = self.stamps.iter().position(|&(k, _)| k == key)?;
        self.stamps.remove(at).map(|(_, stamp)| stamp)
    }

    pub fn is_empty(&self) -> bool {
        self.stamps.is_empty()
    }
}

fn new_histogram() -> Option<Histogram<u64>> {
    Histogram::new_with_bounds(1, LATENCY_TRACE_AGE_MAX_NS, 3).ok()
}

/// Logs this thread's (shard's) stages: count, p50, p99, p99.9 in µs since the intended send.
pub fn report(shard: usize) {
    if !is_enabled() {
        return;
    }
    HISTOGRAMS.with(|cell| {
        for (stage, histogram) in STAGES.iter().zip(cell.borrow().iter()) {
            if histogram.is_empty() {
                continue;
            }
            tracing::info!(
                shard,
                stage = ?stage,
                samples = histogram.len(),
                p50_us = histogram.value_at_quantile(0.50) as f64 / 1000.0,
                p99_us = histogram.value_at_quantile(0.99) as f64 / 1000.0,
                p99_9_us = histogram.value_at_quantile(0.999) as f64 / 1000.0,
                "latency trace (µs since the intended send)"
            );
        }
    });
}

/// `--trace-latency` also runs this on every shard: it sleeps `SCHEDULER_LAG_PROBE_INTERVAL`
/// again and again and records how late each wake-up comes. A timer is served in the same
/// reactor poll as a socket's readiness, and the task it wakes queues behind the same runnable
/// tasks, so its lateness is what a publisher's frame waits before the shard reads it. Each
/// second it logs the lag's p99 and maximum, the connections the shard holds, and the time each
/// glommio task queue ran in that second (which kind of work held the shard).
pub async fn scheduler_lag_probe(shard: usize, connections: impl Fn() -> usize) {
    use crate::limits::SCHEDULER_LAG_PROBE_INTERVAL;
    let Some(mut lags) = new_histogram() else {
        return;
    };
    let mut window_start = std::time::Instant::now();
    while !PROBE_STOPPED.with(std::cell::Cell::get) {
        let asleep = std::time::Instant::now();
        glommio::timer::sleep(SCHEDULER_LAG_PROBE_INTERVAL).await;
        let late = asleep
            .elapsed()
            .saturating_sub(SCHEDULER_LAG_PROBE_INTERVAL);
        lags.saturating_record((late.as_nanos() as u64).max(1));
        if window_start.elapsed() < std::time::Duration::from_secs(1) {
            continue;
        }
        let queues: Vec<String> = glommio::executor()
            .all_task_queue_stats(Vec::new())
            .iter()
            .map(|q| format!("{:?}:{}us", q.index(), q.runtime().as_micros()))
            .collect();
        tracing::info!(
            shard,
            samples = lags.len(),
            lag_p99_us = lags.value_at_quantile(0.99) / 1000,
            lag_max_us = lags.max() / 1000,
            connections = connections(),
            queues = %queues.join(" "),
            "scheduler lag"
        );
        lags.reset();
        window_start = std::time::Instant::now();
    }
}

thread_local! {
    static PROBE_STOPPED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Ends this shard's [`scheduler_lag_probe`] at its next wake-up (the shard is stopping).
pub fn stop_scheduler_lag_probe() {
    PROBE_STOPPED.with(|stopped| stopped.set(true));
}

/// CLOCK_MONOTONIC in nanoseconds: the clock ringmq-perf stamps bodies with.
pub fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the struct we hand it; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    (now.tv_sec as u64) * 1_000_000_000 + now.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn about_one_stamp_in_sample_every_is_sampled_and_junk_is_not() {
        let sampled = (0..64_000u64)
            .filter(|i| sampled_stamp(&(1_000_000 + i * 100_000).to_be_bytes()).is_some())
            .count();
        assert!((500..=1_500).contains(&sampled), "{sampled} of 64000");
        assert_eq!(sampled_stamp(b"short"), None);
    }

    #[test]
    fn a_stamp_is_recorded_as_its_age_and_implausible_ones_are_not() {
        let now = monotonic_ns();
        record_stamp(Stage::MeshReceive, now - 2_000_000);
        record_stamp(Stage::MeshReceive, now + 60_000_000_000); // from the future
        record_stamp(Stage::MeshReceive, 0); // older than LATENCY_TRACE_AGE_MAX_NS (after boot)
        HISTOGRAMS.with(|cell| {
            let histograms = cell.borrow();
            let receive = &histograms[Stage::MeshReceive as usize];
            assert_eq!(receive.len(), 1);
            let age = receive.value_at_quantile(0.5);
            assert!((2_000_000..60_000_000_000).contains(&age), "{age}");
            assert!(histograms[Stage::PublishParsed as usize].is_empty());
        });
    }
}
