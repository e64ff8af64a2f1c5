//! The producer and consumer loops. Each owns one already-opened connection and runs on its
//! own thread until its deadline or count; shared state is three atomics.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use ringmq::protocol::BasicAck;

use crate::client::{Conn, CHANNEL};
use crate::clock::now_ns;
use crate::error::Result;
use crate::limits::{
    BACKPRESSURE_NAP, HISTOGRAM_SIGFIGS, LATENCY_NS_MAX, SHUTDOWN_GRACE, WRITE_BATCH_BYTES_MAX,
    WRITE_BATCH_MESSAGES_MAX,
};
use crate::message::{Assembler, Event, Template, TemplateSpec};
use crate::schedule::OpenLoop;

/// What every worker of one run can see. `stop` ends everyone early when one fails.
#[derive(Default)]
pub struct Shared {
    pub published: AtomicU64,
    pub consumed: AtomicU64,
    /// Publisher confirms (acks) received; only the confirm scenario keeps it.
    pub confirmed: AtomicU64,
    pub stop: AtomicBool,
}

impl Shared {
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

pub fn new_histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts; a failure here is a bug in limits.rs.
    Histogram::new_with_bounds(1, LATENCY_NS_MAX, HISTOGRAM_SIGFIGS)
        .expect("LATENCY_NS_MAX and HISTOGRAM_SIGFIGS are valid histogram bounds")
}

pub struct ProducerSpec {
    pub exchange: String,
    /// Cycled through, one per message.
    pub routing_keys: Vec<String>,
    pub size_bytes: usize,
    pub persistent: bool,
    /// Unconfirmed messages allowed at once; 0 = no confirms.
    pub confirm_window: u64,
    /// Open loop at this rate (msg/s) starting at `start_ns`; None = as fast as allowed.
    pub rate: Option<f64>,
    pub start_ns: u64,
    pub end: Instant,
    pub count: Option<u64>,
    /// Closed-loop bound: pause while published × `fanout_factor` − consumed exceeds this.
    pub backlog_max: Option<u64>,
    pub fanout_factor: u64,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct ProducerResult {
    pub published: u64,
    pub confirmed: u64,
    pub nacked: u64,
}

struct Confirms {
    acked_upto: u64,
    nacked: u64,
    assembler: Assembler,
}

impl Confirms {
    /// One read's worth of confirms (blocks at most the socket read timeout).
    fn read(&mut self, conn: &mut Conn) -> Result<()> {
        conn.fill()?;
        while let Some(frame) = conn.next_frame()? {
            if let Event::Confirmed {
                delivery_tag, nack, ..
            } = self.assembler.feed(frame)?
            {
                // Brokers confirm in order on a channel; a single out-of-order ack only makes
                // the window look fuller than it is for a moment.
                self.acked_upto = self.acked_upto.max(delivery_tag);
                self.nacked += u64::from(nack);
            }
        }
        Ok(())
    }
}

pub fn run_producer(mut conn: Conn, spec: ProducerSpec, shared: &Shared) -> Result<ProducerResult> {
    let templates: Vec<Template> = spec
        .routing_keys
        .iter()
        .map(|key| {
            Template::new(&TemplateSpec {
                exchange: &spec.exchange,
                routing_key: key,
                size_bytes: spec.size_bytes,
                persistent: spec.persistent,
                frame_max: conn.frame_max,
            })
        })
        .collect();
    let schedule = spec
        .rate
        .map(|rate| OpenLoop::new(spec.start_ns, rate, spec.end - Instant::now()));
    let mut limit = spec.count.unwrap_or(u64::MAX);
    if let Some(s) = &schedule {
        limit = limit.min(s.total());
    }
    let write_deadline = spec.end + SHUTDOWN_GRACE;
    let mut confirms = Confirms {
        acked_upto: 0,
        nacked: 0,
        assembler: Assembler::default(),
    };
    let mut sent: u64 = 0;
    while sent < limit && Instant::now() < spec.end && !shared.stopped() {
        let mut allowed = (WRITE_BATCH_MESSAGES_MAX as u64).min(limit - sent);
        if let Some(s) = &schedule {
            let due = s.due_by(now_ns());
            if due <= sent {
                s.wait_for(sent);
                continue;
            }
            allowed = allowed.min(due - sent);
        }
        if spec.confirm_window > 0 {
            let outstanding = sent - confirms.acked_upto;
            if outstanding >= spec.confirm_window {
                confirms.read(&mut conn)?;
                continue;
            }
            allowed = allowed.min(spec.confirm_window - outstanding);
        }
        if let Some(max) = spec.backlog_max {
            let produced = shared.published.load(Ordering::Relaxed) * spec.fanout_factor;
            let in_flight = produced.saturating_sub(shared.consumed.load(Ordering::Relaxed));
            if in_flight >= max {
                std::thread::sleep(BACKPRESSURE_NAP);
                continue;
            }
        }
        let batch = write_batch(&mut conn, &templates, schedule.as_ref(), sent, allowed);
        conn.flush_by(write_deadline)?;
        sent += batch;
        shared.published.fetch_add(batch, Ordering::Relaxed);
    }
    if spec.confirm_window > 0 {
        while confirms.acked_upto < sent && Instant::now() < write_deadline && !shared.stopped() {
            confirms.read(&mut conn)?;
        }
    }
    conn.close();
    Ok(ProducerResult {
        published: sent,
        confirmed: confirms.acked_upto,
        nacked: confirms.nacked,
    })
}

/// Encodes up to `allowed` publishes into the write buffer; returns how many.
fn write_batch(
    conn: &mut Conn,
    templates: &[Template],
    schedule: Option<&OpenLoop>,
    sent: u64,
    allowed: u64,
) -> u64 {
    let stamp_now = now_ns();
    let mut batch = 0;
    while batch < allowed && conn.out.len() < WRITE_BATCH_BYTES_MAX {
        let index = sent + batch;
        let stamp = schedule.map_or(stamp_now, |s| s.intended_ns(index));
        let template = &templates[(index % templates.len() as u64) as usize];
        template.write(stamp, &mut conn.out);
        batch += 1;
    }
    batch
}

pub struct ConsumerSpec {
    pub auto_ack: bool,
    /// Manual ack: one basic.ack (multiple when > 1) per this many deliveries.
    pub ack_every: u64,
    pub end: Instant,
    pub count: Option<u64>,
    /// Deliveries stamped before this are counted but not put in the histogram.
    pub warmup_until_ns: u64,
}

pub struct ConsumerResult {
    pub consumed: u64,
    pub body_bytes: u64,
    pub latency_ns: Histogram<u64>,
}

pub fn run_consumer(mut conn: Conn, spec: ConsumerSpec, shared: &Shared) -> Result<ConsumerResult> {
    let mut assembler = Assembler::default();
    let mut result = ConsumerResult {
        consumed: 0,
        body_bytes: 0,
        latency_ns: new_histogram(),
    };
    let mut unacked = 0u64;
    let mut last_tag = 0u64;
    let limit = spec.count.unwrap_or(u64::MAX);
    let write_deadline = spec.end + SHUTDOWN_GRACE;
    while result.consumed < limit && Instant::now() < spec.end && !shared.stopped() {
        conn.fill()?;
        // Everything in this read arrived together; one clock read serves it all.
        let arrived_ns = now_ns();
        let before = result.consumed;
        while let Some(frame) = conn.next_frame()? {
            let Event::Delivered {
                delivery_tag,
                body_bytes,
                stamp_ns,
            } = assembler.feed(frame)?
            else {
                continue;
            };
            result.consumed += 1;
            result.body_bytes += body_bytes;
            if let Some(stamp) = stamp_ns.filter(|&s| s >= spec.warmup_until_ns) {
                result
                    .latency_ns
                    .saturating_record(arrived_ns.saturating_sub(stamp).max(1));
            }
            if !spec.auto_ack {
                unacked += 1;
                last_tag = delivery_tag;
                if unacked >= spec.ack_every {
                    send_ack(&mut conn, last_tag, spec.ack_every > 1);
                    unacked = 0;
                }
            }
        }
        conn.flush_by(write_deadline)?;
        shared
            .consumed
            .fetch_add(result.consumed - before, Ordering::Relaxed);
    }
    if unacked > 0 {
        send_ack(&mut conn, last_tag, true);
        conn.flush_by(write_deadline)?;
    }
    conn.close();
    Ok(result)
}

fn send_ack(conn: &mut Conn, delivery_tag: u64, multiple: bool) {
    conn.send(
        CHANNEL,
        BasicAck {
            delivery_tag,
            multiple,
        },
    );
}

/// Sleeps until `end` in steps, calling `tick` after each so the caller can draw progress.
pub fn wait_until(end: Instant, step: Duration, shared: &Shared, mut tick: impl FnMut()) {
    loop {
        let now = Instant::now();
        if now >= end || shared.stopped() {
            return;
        }
        std::thread::sleep(step.min(end - now));
        tick();
    }
}
