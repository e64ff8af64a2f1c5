//! The connections scenario: one thread per connection, each publishing on an open-loop
//! schedule to its queue and consuming from it with no-ack on the same socket.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::client::Conn;
use crate::clock::{now_ns, process_cpu_ns};
use crate::error::Result;
use crate::limits::{PROGRESS_INTERVAL, SHUTDOWN_GRACE, SOCKET_READ_TIMEOUT};
use crate::message::{Assembler, Event, Template, TemplateSpec};
use crate::opts::Opts;
use crate::progress::Progress;
use crate::report::Report;
use crate::scenarios::join;
use crate::schedule::OpenLoop;
use crate::topology;
use crate::url::AmqpUrl;
use crate::workers::{new_histogram, wait_until, Shared};

/// Worker threads need little stack; thousands of them should not reserve gigabytes.
const CONNECTION_THREAD_STACK_BYTES: usize = 256 * 1024;
/// A connection wakes at least this often to send what is due even when nothing arrives.
const CONNECTION_POLL_MIN: Duration = Duration::from_millis(1);

pub fn run(opts: &Opts, url: &AmqpUrl, queues: &[String]) -> Result<Report> {
    let connect_started = Instant::now();
    let mut conns = Vec::with_capacity(opts.connections);
    for i in 0..opts.connections {
        let mut conn = Conn::open(url)?;
        topology::consume(&mut conn, &queues[i % queues.len()], opts.prefetch, true)?;
        let interval = Duration::from_secs_f64(1.0 / opts.rate);
        conn.set_read_timeout(interval.clamp(CONNECTION_POLL_MIN, SOCKET_READ_TIMEOUT))?;
        conns.push(conn);
    }
    let connect_seconds = connect_started.elapsed().as_secs_f64();
    let shared = std::sync::Arc::new(Shared::default());
    let started = Instant::now();
    let start_ns = now_ns();
    let end = started + Duration::from_secs(opts.duration);
    let warmup_until_ns = start_ns + opts.warmup * 1_000_000_000;
    let cpu_before = process_cpu_ns();
    let mut handles = Vec::with_capacity(conns.len());
    for (i, conn) in conns.into_iter().enumerate() {
        let template = Template::new(&TemplateSpec {
            exchange: "",
            routing_key: &queues[i % queues.len()],
            size_bytes: opts.size,
            persistent: opts.persistent,
            frame_max: conn.frame_max,
        });
        let schedule = OpenLoop::new(start_ns, opts.rate, Duration::from_secs(opts.duration));
        let worker_shared = shared.clone();
        let builder = std::thread::Builder::new().stack_size(CONNECTION_THREAD_STACK_BYTES);
        let handle = builder.spawn(move || {
            let result = one_connection(
                conn,
                &template,
                &schedule,
                end,
                warmup_until_ns,
                &worker_shared,
            );
            if result.is_err() {
                worker_shared.stop.store(true, Ordering::Relaxed);
            }
            result
        })?;
        handles.push(handle);
    }
    let mut progress = Progress::new("connections", &shared);
    wait_until(end, PROGRESS_INTERVAL, &shared, || progress.tick());
    let seconds = started.elapsed().as_secs_f64().max(1e-9);
    let cpu_ns = process_cpu_ns() - cpu_before;
    progress.finish();
    let mut latency = new_histogram();
    for handle in handles {
        let histogram = join(handle)?;
        let _ = latency.add(&histogram);
    }
    let mut report = Report::new(
        "connections",
        format!("connections={} queues={}", opts.connections, queues.len()),
    );
    report.push(
        "connect_per_s",
        opts.connections as f64 / connect_seconds.max(1e-9),
    );
    report.push(
        "published_msgs_per_s",
        shared.published.load(Ordering::Relaxed) as f64 / seconds,
    );
    report.push(
        "consumed_msgs_per_s",
        shared.consumed.load(Ordering::Relaxed) as f64 / seconds,
    );
    report.push_latency(&latency);
    report.push("tool_cpu_percent", cpu_ns as f64 / 1e9 / seconds * 100.0);
    Ok(report)
}

fn one_connection(
    mut conn: Conn,
    template: &Template,
    schedule: &OpenLoop,
    end: Instant,
    warmup_until_ns: u64,
    shared: &Shared,
) -> Result<hdrhistogram::Histogram<u64>> {
    let mut latency = new_histogram();
    let mut assembler = Assembler::default();
    let mut sent = 0u64;
    let write_deadline = end + SHUTDOWN_GRACE;
    while Instant::now() < end && !shared.stopped() {
        let due = schedule.due_by(now_ns());
        if due > sent {
            for index in sent..due {
                template.write(schedule.intended_ns(index), &mut conn.out);
            }
            conn.flush_by(write_deadline)?;
            shared.published.fetch_add(due - sent, Ordering::Relaxed);
            sent = due;
        }
        conn.fill()?;
        let arrived_ns = now_ns();
        let mut consumed = 0;
        while let Some(frame) = conn.next_frame()? {
            if let Event::Delivered { stamp_ns, .. } = assembler.feed(frame)? {
                consumed += 1;
                if let Some(stamp) = stamp_ns.filter(|&s| s >= warmup_until_ns) {
                    latency.saturating_record(arrived_ns.saturating_sub(stamp).max(1));
                }
            }
        }
        shared.consumed.fetch_add(consumed, Ordering::Relaxed);
    }
    conn.close();
    Ok(latency)
}
