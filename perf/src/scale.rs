//! What a broker pays per object, not per message: `idle` opens `--connections` connections
//! that complete the handshake, open a channel and then sit idle (accept rate, broker RSS per
//! connection); `declare` declares `--queues` queues on one connection (declare rate, broker
//! RSS per queue), then deletes them (delete rate).
//!
//! RSS comes from `/proc/PID/status` of `--pid` (compare passes each broker's pid); without a
//! pid only the rates are reported.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use ringmq::protocol::{Method, QueueDeclare, QueueDelete};

use crate::client::{Conn, CHANNEL};
use crate::clock::pid_rss_bytes;
use crate::error::{PerfError, Result};
use crate::limits::{IDLE_OPENER_THREADS, RPC_PIPELINE_WINDOW};
use crate::opts::Opts;
use crate::report::Report;
use crate::scenarios::join;
use crate::topology;
use crate::url::AmqpUrl;

/// `--connections` idle connections: how fast the broker takes them, and what each costs it.
pub fn idle(opts: &Opts) -> Result<Vec<Report>> {
    let url = AmqpUrl::parse(&opts.url)?;
    let rss_before = opts.pid.and_then(pid_rss_bytes);
    let opened = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let openers: Vec<_> = (0..IDLE_OPENER_THREADS)
        .map(|i| {
            // Opener i opens connections i, i + T, i + 2T, ... so the counts differ by one at most.
            let count = (opts.connections + IDLE_OPENER_THREADS - 1 - i) / IDLE_OPENER_THREADS;
            let url = url.clone();
            let opened = Arc::clone(&opened);
            std::thread::spawn(move || -> Result<Vec<Conn>> {
                let mut conns = Vec::with_capacity(count);
                for _ in 0..count {
                    let mut conn = Conn::open(&url)?;
                    conn.shrink_buffers();
                    conns.push(conn);
                    opened.fetch_add(1, Ordering::Relaxed);
                }
                Ok(conns)
            })
        })
        .collect();
    let mut conns = Vec::with_capacity(opts.connections);
    let mut failure = None;
    for opener in openers {
        match join(opener) {
            Ok(mut some) => conns.append(&mut some),
            Err(e) => failure = failure.or(Some(e)),
        }
    }
    let open_seconds = started.elapsed().as_secs_f64();
    if let Some(e) = failure {
        let opened = opened.load(Ordering::Relaxed);
        close_all(conns);
        return Err(PerfError::Unexpected(format!(
            "{opened} of {} connections opened, then: {e}",
            opts.connections
        )));
    }
    // Every connection is still served once all are open: one round trip on each.
    let checked = Instant::now();
    for conn in &mut conns {
        topology::qos(conn, 0)?;
    }
    let check_seconds = checked.elapsed().as_secs_f64();
    let rss_open = opts.pid.and_then(pid_rss_bytes);

    let mut report = Report::new("idle", format!("connections={}", opts.connections));
    report.push("connections", conns.len() as f64);
    report.push("accept_conns_per_s", per_second(conns.len(), open_seconds));
    report.push("round_trips_per_s", per_second(conns.len(), check_seconds));
    push_rss(
        &mut report,
        (rss_before, rss_open),
        ("rss_open_mb", "rss_bytes_per_conn"),
        conns.len(),
    );
    close_all(conns);
    Ok(vec![report])
}

fn per_second(count: usize, seconds: f64) -> f64 {
    count as f64 / seconds.max(1e-9)
}

/// The broker's RSS before and after making `objects` objects, and the difference per object
/// (named `(after_mb, per_object)`); nothing when the RSS could not be read (no `--pid`).
fn push_rss(
    report: &mut Report,
    (before, after): (Option<u64>, Option<u64>),
    (after_name, per_object_name): (&str, &str),
    objects: usize,
) {
    if let (Some(before), Some(after)) = (before, after) {
        report.push("rss_before_mb", before as f64 / 1e6);
        report.push(after_name, after as f64 / 1e6);
        report.push(
            per_object_name,
            (after as f64 - before as f64) / objects.max(1) as f64,
        );
    }
}

fn close_all(conns: Vec<Conn>) {
    for conn in conns {
        conn.close();
    }
}

/// `--queues` queues declared on one connection, pipelined, then deleted the same way.
pub fn declare(opts: &Opts) -> Result<Vec<Report>> {
    let url = AmqpUrl::parse(&opts.url)?;
    let mut conn = Conn::open(&url)?;
    let prefix = topology::run_prefix("decl");
    let names: Vec<String> = (0..opts.queues).map(|i| format!("{prefix}-q{i}")).collect();
    let rss_before = opts.pid.and_then(pid_rss_bytes);

    let started = Instant::now();
    let declared = pipelined(
        &mut conn,
        &names,
        ("queue.declare-ok", is_declare_ok),
        |name| {
            QueueDeclare {
                queue: name.to_string(),
                durable: opts.persistent,
                ..QueueDeclare::default()
            }
            .into()
        },
    );
    let declare_seconds = started.elapsed().as_secs_f64();
    let rss_declared = opts.pid.and_then(pid_rss_bytes);

    let started = Instant::now();
    let deleted = pipelined(
        &mut conn,
        &names,
        ("queue.delete-ok", is_delete_ok),
        |name| {
            QueueDelete {
                queue: name.to_string(),
                ..QueueDelete::default()
            }
            .into()
        },
    );
    let delete_seconds = started.elapsed().as_secs_f64();
    conn.close();
    declared?;
    deleted?;

    let mut report = Report::new("declare", format!("queues={}", opts.queues));
    report.push(
        "declare_queues_per_s",
        per_second(names.len(), declare_seconds),
    );
    report.push(
        "delete_queues_per_s",
        per_second(names.len(), delete_seconds),
    );
    push_rss(
        &mut report,
        (rss_before, rss_declared),
        ("rss_declared_mb", "rss_bytes_per_queue"),
        names.len(),
    );
    Ok(vec![report])
}

fn is_declare_ok(method: &Method) -> bool {
    matches!(method, Method::QueueDeclareOk(_))
}

fn is_delete_ok(method: &Method) -> bool {
    matches!(method, Method::QueueDeleteOk(_))
}

/// Sends one method per name in windows of `RPC_PIPELINE_WINDOW`, collecting each window's
/// replies (the reply's AMQP name and its test) before the next.
fn pipelined(
    conn: &mut Conn,
    names: &[String],
    (reply, is_reply): (&'static str, fn(&Method) -> bool),
    method: impl Fn(&str) -> Method,
) -> Result<()> {
    for window in names.chunks(RPC_PIPELINE_WINDOW) {
        for name in window {
            conn.send(CHANNEL, method(name));
        }
        conn.flush()?;
        for _ in window {
            conn.wait_method(CHANNEL, reply, is_reply)?;
        }
    }
    Ok(())
}
