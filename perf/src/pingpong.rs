//! The machine's floor: the same open-loop schedule and stamps as the latency scenario, sent
//! over loopback TCP to an echo thread in this process. Broker latency minus this is what the
//! broker adds.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::clock::{now_ns, process_cpu_ns};
use crate::error::{PerfError, Result};
use crate::limits::{
    PROGRESS_INTERVAL, READ_CHUNK_BYTES, SHUTDOWN_GRACE, SOCKET_READ_TIMEOUT,
    WRITE_BATCH_MESSAGES_MAX,
};
use crate::opts::Opts;
use crate::progress::Progress;
use crate::report::Report;
use crate::scenarios::{join, spawn_worker};
use crate::schedule::OpenLoop;
use crate::workers::{new_histogram, wait_until, Shared};

/// Each ping is the 8-byte intended send time and the 8-byte sequence number.
const PING_BYTES: usize = 16;

pub fn pingpong(opts: &Opts) -> Result<Vec<Report>> {
    opts.rates()
        .into_iter()
        .map(|rate| one_rate(opts, rate))
        .collect()
}

fn one_rate(opts: &Opts, rate: f64) -> Result<Report> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let address = listener.local_addr()?;
    let duration = Duration::from_secs(opts.duration);
    let client = TcpStream::connect_timeout(&address, SOCKET_READ_TIMEOUT)?;
    let (server, _) = listener.accept()?;
    for stream in [&client, &server] {
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(SOCKET_READ_TIMEOUT))?;
        stream.set_write_timeout(Some(SOCKET_READ_TIMEOUT))?;
    }
    let shared = std::sync::Arc::new(Shared::default());
    let started = Instant::now();
    let start_ns = now_ns();
    let end = started + duration;
    let cpu_before = process_cpu_ns();
    let echo = spawn_worker(&shared, move |s| echo(server, end + SHUTDOWN_GRACE, s));
    let writer = client.try_clone()?;
    let schedule = OpenLoop::new(start_ns, rate, duration);
    let sender = spawn_worker(&shared, move |s| send(writer, &schedule, end, s));
    let warmup_until_ns = start_ns + opts.warmup * 1_000_000_000;
    let receiver = spawn_worker(&shared, move |s| receive(client, end, warmup_until_ns, s));
    let mut progress = Progress::new("pingpong", &shared);
    wait_until(end, PROGRESS_INTERVAL, &shared, || progress.tick());
    let seconds = started.elapsed().as_secs_f64().max(1e-9);
    let cpu_ns = process_cpu_ns() - cpu_before;
    progress.finish();
    let sent = join(sender)?;
    let latency = join(receiver)?;
    // The echo ends when the client socket closes (dropped by the receiver) or at its deadline.
    join(echo)?;
    let mut report = Report::new("pingpong", format!("rate={rate}"));
    report.push("rate_target", rate);
    report.push("published_msgs_per_s", sent as f64 / seconds);
    report.push(
        "consumed_msgs_per_s",
        shared.consumed.load(Ordering::Relaxed) as f64 / seconds,
    );
    report.push_latency(&latency);
    report.push("tool_cpu_percent", cpu_ns as f64 / 1e9 / seconds * 100.0);
    Ok(report)
}

fn echo(mut stream: TcpStream, deadline: Instant, shared: &Shared) -> Result<()> {
    let mut buf = vec![0u8; READ_CHUNK_BYTES];
    while Instant::now() < deadline && !shared.stopped() {
        match stream.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => stream.write_all(&buf[..n])?,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn send(mut stream: TcpStream, schedule: &OpenLoop, end: Instant, shared: &Shared) -> Result<u64> {
    let mut out = Vec::with_capacity(WRITE_BATCH_MESSAGES_MAX * PING_BYTES);
    let mut sent = 0u64;
    while sent < schedule.total() && Instant::now() < end && !shared.stopped() {
        let due = schedule.due_by(now_ns());
        if due <= sent {
            schedule.wait_for(sent);
            continue;
        }
        let batch_end = due.min(sent + WRITE_BATCH_MESSAGES_MAX as u64);
        out.clear();
        for index in sent..batch_end {
            out.extend_from_slice(&schedule.intended_ns(index).to_be_bytes());
            out.extend_from_slice(&index.to_be_bytes());
        }
        stream.write_all(&out)?;
        shared
            .published
            .fetch_add(batch_end - sent, Ordering::Relaxed);
        sent = batch_end;
    }
    Ok(sent)
}

fn receive(
    mut stream: TcpStream,
    end: Instant,
    warmup_until_ns: u64,
    shared: &Shared,
) -> Result<Histogram<u64>> {
    let mut latency = new_histogram();
    let mut buf = vec![0u8; READ_CHUNK_BYTES];
    // Bytes of a ping split across two reads wait here for the rest.
    let mut carry = Vec::with_capacity(PING_BYTES);
    while Instant::now() < end && !shared.stopped() {
        let n = match stream.read(&mut buf) {
            Ok(0) => return Err(PerfError::Eof),
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        let arrived_ns = now_ns();
        carry.extend_from_slice(&buf[..n]);
        let whole = carry.len() / PING_BYTES * PING_BYTES;
        for ping in carry[..whole].chunks_exact(PING_BYTES) {
            let mut stamp = [0u8; 8];
            stamp.copy_from_slice(&ping[..8]);
            let stamp = u64::from_be_bytes(stamp);
            if stamp >= warmup_until_ns {
                latency.saturating_record(arrived_ns.saturating_sub(stamp).max(1));
            }
        }
        shared
            .consumed
            .fetch_add((whole / PING_BYTES) as u64, Ordering::Relaxed);
        carry.drain(..whole);
    }
    Ok(latency)
}
