//! The confirm scenario: persistent messages with publisher confirms, measured at the
//! publisher. Latency = when the basic.ack covering a tag arrives − that message's send time.
//!
//! Open loop (`--rate`/`--sweep`): the send time is the message's intended time on a fixed
//! schedule, so a broker that stalls confirms (or a sender that falls behind) shows up as
//! latency rather than as fewer samples. Max rate (`--max-rate`): at most `--confirm` messages
//! unconfirmed, latency from the actual send time, and the throughput that window sustains.
//!
//! Each publisher runs one thread that both sends and reads its confirms: it waits in ppoll
//! until its next send time or a confirm, whichever comes first, so confirms are timed when
//! they arrive, not when the sender next gets round to reading.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::client::Conn;
use crate::clock::{now_ns, pid_cpu_ns, process_cpu_ns};
use crate::error::{PerfError, Result};
use crate::limits::{
    BACKPRESSURE_NAP, CONFIRM_OUTSTANDING_MAX, CONFIRM_WAIT_MAX, PROGRESS_INTERVAL, SHUTDOWN_GRACE,
    WRITE_BATCH_BYTES_MAX, WRITE_BATCH_MESSAGES_MAX,
};
use crate::message::{Assembler, Event, Template, TemplateSpec};
use crate::opts::Opts;
use crate::progress::Progress;
use crate::report::Report;
use crate::scenarios::{declare_queues, join, spawn_worker};
use crate::schedule::OpenLoop;
use crate::topology;
use crate::tracker::ConfirmTracker;
use crate::url::AmqpUrl;
use crate::workers::{new_histogram, run_consumer, wait_until, ConsumerSpec, Shared};

pub fn confirm(opts: &Opts) -> Result<Vec<Report>> {
    let url = AmqpUrl::parse(&opts.url)?;
    if opts.max_rate {
        if opts.confirm == 0 {
            return Err(PerfError::Args(
                "--max-rate needs a --confirm window above 0".into(),
            ));
        }
        return Ok(vec![one_point(opts, &url, None)?]);
    }
    opts.rates()
        .into_iter()
        .map(|rate| one_point(opts, &url, Some(rate)))
        .collect()
}

/// One rate (or the max-rate run) on fresh queues.
fn one_point(opts: &Opts, url: &AmqpUrl, rate: Option<f64>) -> Result<Report> {
    let mut setup = Conn::open(url)?;
    let prefix = topology::run_prefix("conf");
    let queues = declare_queues(&mut setup, &prefix, opts.queues, opts.queue_kind())?;
    let report = run_point(opts, url, &queues, rate);
    topology::cleanup(&mut setup, &queues, None);
    setup.close();
    report
}

struct PublisherSpec {
    routing_key: String,
    size_bytes: usize,
    persistent: bool,
    /// None = max rate.
    schedule: Option<OpenLoop>,
    /// Unconfirmed messages allowed at once.
    window: u64,
    /// Max rate only: pause while this many messages are published but not yet consumed.
    backlog_max: Option<u64>,
    end: Instant,
    /// Messages sent before this are confirmed and counted but not put in the histogram.
    record_from_ns: u64,
}

struct PublisherResult {
    published: u64,
    acked: u64,
    nacked: u64,
    unexpected: u64,
    latency_ns: Histogram<u64>,
    /// Open loop: how late each message was written to the socket after its intended time
    /// (the tool's own share of the confirm latency).
    send_lag_ns: Histogram<u64>,
}

fn run_point(opts: &Opts, url: &AmqpUrl, queues: &[String], rate: Option<f64>) -> Result<Report> {
    let mut consumers = Vec::with_capacity(opts.consumers);
    for index in 0..opts.consumers {
        let mut conn = Conn::open(url)?;
        let queue = &queues[index % queues.len()];
        topology::consume(&mut conn, queue, opts.prefetch, opts.auto_ack)?;
        consumers.push(conn);
    }
    let mut publishers = Vec::with_capacity(opts.producers);
    for _ in 0..opts.producers {
        let mut conn = Conn::open(url)?;
        topology::confirm_select(&mut conn)?;
        publishers.push(conn);
    }
    let shared = std::sync::Arc::new(Shared::default());
    let duration = Duration::from_secs(opts.duration);
    let started = Instant::now();
    let start_ns = now_ns();
    let end = started + duration;
    let record_from_ns = start_ns + opts.warmup * 1_000_000_000;
    let cpu_before = process_cpu_ns();
    let broker_cpu_before = opts.pid.and_then(pid_cpu_ns);
    let consumer_threads: Vec<_> = consumers
        .into_iter()
        .map(|conn| {
            let spec = ConsumerSpec {
                auto_ack: opts.auto_ack,
                ack_every: opts.multiple_ack,
                end,
                count: None,
                warmup_until_ns: record_from_ns,
            };
            spawn_worker(&shared, move |s| run_consumer(conn, spec, s))
        })
        .collect();
    let publisher_count = publishers.len();
    let publisher_threads: Vec<_> = publishers
        .into_iter()
        .enumerate()
        .map(|(index, conn)| {
            let spec = PublisherSpec {
                routing_key: queues[index % queues.len()].clone(),
                size_bytes: opts.size,
                persistent: opts.persistent,
                schedule: rate
                    .map(|r| staggered_schedule(start_ns, r, index, publisher_count, duration)),
                window: if rate.is_some() {
                    CONFIRM_OUTSTANDING_MAX
                } else {
                    opts.confirm.min(CONFIRM_OUTSTANDING_MAX)
                },
                backlog_max: (rate.is_none() && opts.max_backlog > 0).then_some(opts.max_backlog),
                end,
                record_from_ns,
            };
            spawn_worker(&shared, move |s| run_publisher(conn, spec, s))
        })
        .collect();
    let mut progress = Progress::new("confirm", &shared);
    wait_until(end, PROGRESS_INTERVAL, &shared, || progress.tick());
    let seconds = started.elapsed().as_secs_f64().max(1e-9);
    let cpu_ns = process_cpu_ns() - cpu_before;
    let broker_cpu_ns = opts
        .pid
        .and_then(pid_cpu_ns)
        .zip(broker_cpu_before)
        .map(|(after, before)| after.saturating_sub(before));
    let published_at_end = shared.published.load(Ordering::Relaxed);
    let confirmed_at_end = shared.confirmed.load(Ordering::Relaxed);
    let consumed_at_end = shared.consumed.load(Ordering::Relaxed);
    progress.finish();

    let mut confirm_latency = new_histogram();
    let mut send_lag = new_histogram();
    let (mut published, mut acked, mut nacked, mut unexpected) = (0, 0, 0, 0);
    for handle in publisher_threads {
        let r = join(handle)?;
        published += r.published;
        acked += r.acked;
        nacked += r.nacked;
        unexpected += r.unexpected;
        // Same bounds everywhere, so adding cannot fail.
        let _ = confirm_latency.add(&r.latency_ns);
        let _ = send_lag.add(&r.send_lag_ns);
    }
    let mut e2e_latency = new_histogram();
    let mut consumed = 0;
    for handle in consumer_threads {
        let r = join(handle)?;
        consumed += r.consumed;
        let _ = e2e_latency.add(&r.latency_ns);
    }

    let label = match rate {
        Some(r) => format!("rate={r} publishers={publisher_count}"),
        None => format!(
            "max-rate window={} publishers={publisher_count}",
            opts.confirm
        ),
    };
    let mut report = Report::new("confirm", label);
    if let Some(r) = rate {
        report.push("rate_target", r);
    }
    report.push("published_msgs_per_s", published_at_end as f64 / seconds);
    report.push("confirmed_msgs_per_s", confirmed_at_end as f64 / seconds);
    report.push("consumed_msgs_per_s", consumed_at_end as f64 / seconds);
    report.push(
        "confirmed_mb_per_s",
        confirmed_at_end as f64 * opts.size as f64 / seconds / 1e6,
    );
    report.push_latency_as("confirm_latency", &confirm_latency);
    if let (Some(floor), false) = (opts.disk_floor_us_p99, confirm_latency.is_empty()) {
        let p99_us = confirm_latency.value_at_quantile(0.99) as f64 / 1000.0;
        report.push("confirm_p99_over_disk_p99", p99_us / floor);
    }
    report.push_latency_as("e2e_latency", &e2e_latency);
    if rate.is_some() {
        report.push_latency_as("send_lag", &send_lag);
    }
    report.push("published", published as f64);
    report.push("confirmed", acked as f64);
    report.push("nacked", nacked as f64);
    report.push(
        "unconfirmed",
        published.saturating_sub(acked + nacked) as f64,
    );
    report.push("unexpected_acks", unexpected as f64);
    report.push("consumed", consumed as f64);
    report.push("tool_cpu_percent", cpu_ns as f64 / 1e9 / seconds * 100.0);
    if let Some(ns) = broker_cpu_ns {
        report.push("broker_cpu_percent", ns as f64 / 1e9 / seconds * 100.0);
    }
    Ok(report)
}

/// Publisher `index` of `count` sends at `rate / count`, offset by `index / rate` so the
/// publishers interleave evenly instead of sending together.
fn staggered_schedule(
    start_ns: u64,
    rate: f64,
    index: usize,
    count: usize,
    duration: Duration,
) -> OpenLoop {
    let offset_ns = (index as f64 * 1e9 / rate) as u64;
    OpenLoop::new(start_ns + offset_ns, rate / count as f64, duration)
}

fn run_publisher(mut conn: Conn, spec: PublisherSpec, shared: &Shared) -> Result<PublisherResult> {
    let template = Template::new(&TemplateSpec {
        exchange: "",
        routing_key: &spec.routing_key,
        size_bytes: spec.size_bytes,
        persistent: spec.persistent,
        frame_max: conn.frame_max,
    });
    let limit = spec.schedule.as_ref().map_or(u64::MAX, OpenLoop::total);
    let write_deadline = spec.end + SHUTDOWN_GRACE;
    let mut confirms = Confirms {
        tracker: ConfirmTracker::default(),
        assembler: Assembler::default(),
        latency_ns: new_histogram(),
        record_from_ns: spec.record_from_ns,
    };
    let mut send_lag_ns = new_histogram();
    let mut sent: u64 = 0;
    while sent < limit && Instant::now() < spec.end && !shared.stopped() {
        if spec.backlog_max.is_some_and(|max| backlog(shared) >= max) {
            confirms.read(&mut conn, BACKPRESSURE_NAP, shared)?;
            continue;
        }
        let room = spec.window.saturating_sub(confirms.tracker.unsettled());
        let due = spec
            .schedule
            .as_ref()
            .map_or(u64::MAX, |s| s.due_by(now_ns()));
        let allowed = room
            .min(due.saturating_sub(sent))
            .min(limit - sent)
            .min(WRITE_BATCH_MESSAGES_MAX as u64);
        if allowed > 0 {
            let batch = write_batch(
                &mut conn,
                &template,
                &spec,
                &mut confirms.tracker,
                sent,
                allowed,
            );
            conn.flush_by(write_deadline)?;
            if let Some(schedule) = &spec.schedule {
                record_send_lag(schedule, sent, batch, spec.record_from_ns, &mut send_lag_ns);
            }
            sent += batch;
            shared.published.fetch_add(batch, Ordering::Relaxed);
        }
        let wait = match &spec.schedule {
            _ if room == 0 => CONFIRM_WAIT_MAX,
            Some(s) if sent < limit => {
                Duration::from_nanos(s.intended_ns(sent).saturating_sub(now_ns()))
                    .min(CONFIRM_WAIT_MAX)
            }
            _ => Duration::ZERO,
        };
        confirms.read(&mut conn, wait, shared)?;
    }
    while confirms.tracker.unsettled() > 0 && Instant::now() < write_deadline && !shared.stopped() {
        confirms.read(&mut conn, CONFIRM_WAIT_MAX, shared)?;
    }
    conn.close();
    Ok(PublisherResult {
        published: sent,
        acked: confirms.tracker.acked,
        nacked: confirms.tracker.nacked,
        unexpected: confirms.tracker.unexpected,
        latency_ns: confirms.latency_ns,
        send_lag_ns,
    })
}

/// Open loop: records, for messages `sent..sent + batch` just written, how long after their
/// intended time the write returned.
fn record_send_lag(
    schedule: &OpenLoop,
    sent: u64,
    batch: u64,
    record_from_ns: u64,
    histogram: &mut Histogram<u64>,
) {
    let written_ns = now_ns();
    for index in sent..sent + batch {
        let intended = schedule.intended_ns(index);
        if intended >= record_from_ns {
            histogram.saturating_record(written_ns.saturating_sub(intended).max(1));
        }
    }
}

/// Published but not yet consumed, over every publisher of the run.
fn backlog(shared: &Shared) -> u64 {
    let published = shared.published.load(Ordering::Relaxed);
    published.saturating_sub(shared.consumed.load(Ordering::Relaxed))
}

/// Encodes up to `allowed` publishes and records each one's send time; returns how many.
fn write_batch(
    conn: &mut Conn,
    template: &Template,
    spec: &PublisherSpec,
    tracker: &mut ConfirmTracker,
    sent: u64,
    allowed: u64,
) -> u64 {
    let stamp_now = now_ns();
    let mut batch = 0;
    while batch < allowed && conn.out.len() < WRITE_BATCH_BYTES_MAX {
        let stamp = spec
            .schedule
            .as_ref()
            .map_or(stamp_now, |s| s.intended_ns(sent + batch));
        template.write(stamp, &mut conn.out);
        tracker.published(stamp);
        batch += 1;
    }
    batch
}

struct Confirms {
    tracker: ConfirmTracker,
    assembler: Assembler,
    latency_ns: Histogram<u64>,
    record_from_ns: u64,
}

impl Confirms {
    /// Waits up to `wait` for the socket, then settles every confirm that arrived.
    fn read(&mut self, conn: &mut Conn, wait: Duration, shared: &Shared) -> Result<()> {
        if !conn.wait_readable(wait)? {
            return Ok(());
        }
        conn.fill()?;
        // Everything in this read arrived together; one clock read serves it all.
        let arrived_ns = now_ns();
        while let Some(frame) = conn.next_frame()? {
            if let Event::Confirmed {
                delivery_tag,
                multiple,
                nack,
            } = self.assembler.feed(frame)?
            {
                let settled = self.tracker.settle(
                    delivery_tag,
                    multiple,
                    nack,
                    arrived_ns,
                    self.record_from_ns,
                    &mut self.latency_ns,
                );
                shared.confirmed.fetch_add(settled.acked, Ordering::Relaxed);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staggered_publishers_interleave() {
        let duration = Duration::from_secs(1);
        let a = staggered_schedule(0, 4000.0, 0, 4, duration);
        let b = staggered_schedule(0, 4000.0, 1, 4, duration);
        let d = staggered_schedule(0, 4000.0, 3, 4, duration);
        assert_eq!(a.total(), 1000);
        // 4,000/s overall: one message every 250 µs, taking turns.
        assert_eq!(a.intended_ns(1), 1_000_000);
        assert_eq!(b.intended_ns(0), 250_000);
        assert_eq!(d.intended_ns(0), 750_000);
    }
}
