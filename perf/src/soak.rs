//! `ringmq-perf soak`: mixed load for a long time against a broker that `perf/soak.sh` kills
//! with -9 and restarts every few minutes, checking at the end that every confirmed persistent
//! message reached every durable queue it was routed to.
//!
//! The load, from `PUBLISHERS` confirming publishers at `--rate` msg/s together, cycles through
//! `ROUTES` by sequence number, so which queues a message must reach is a function of its
//! (stream, seq) and nothing per message is stored beyond two bits:
//! persistent messages to 10 durable queues (default exchange), to a fanout exchange bound to
//! four, to a topic exchange bound to three by pattern, into a durable queue with a 1 s TTL that
//! dead-letters to another; transient messages to a non-durable queue and to the durable ones
//! (not checked: a kill -9 may lose them). 20 queues; every one but the TTL queue has a consumer
//! that comes and goes (connected for a while, then away while its queue fills).
//!
//! Each body starts with the send time (ns), the stream and the sequence number. Consumers mark
//! what arrived (redeliveries included: a message delivered before a crash and again after it
//! counts once), publishers mark what was confirmed. Connections lost to a restart reconnect
//! with a backoff; an unconfirmed publish in flight then is unknown, never counted.
//! Every `SAMPLE_INTERVAL` a sample is taken (broker RSS and open fds from `/proc/<pid>`, the
//! pid re-read from `--pid-file` as restarts change it; end-to-end and confirm p99 over the
//! interval); every minute a line is printed; at the end a JSON series and a PNG.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use clap::Args;
use hdrhistogram::Histogram;
use plotters::prelude::*;
use ringmq::protocol::{
    encode_body_frames, encode_header_frame, encode_method_frame, BasicAck, BasicProperties,
    BasicPublish, FieldTable, FieldValue, Frame, Method, QueueDeclare, CONTENT_CLASS_ID,
};

use crate::client::{check_close, Conn, CHANNEL};
use crate::clock::now_ns;
use crate::error::{PerfError, Result};
use crate::limits::{
    SOAK_ACK_EVERY, SOAK_CONFIRM_WINDOW_MAX, SOAK_DRAIN_TIMEOUT, SOAK_RECONNECT_DELAY_MAX,
    SOAK_RECONNECT_DELAY_MIN, SOAK_SAMPLE_INTERVAL,
};
use crate::topology;
use crate::url::AmqpUrl;

const PUBLISHERS: usize = 4;
const QUEUES: usize = 20;
const FANOUT: &str = "soak.fanout";
const TOPIC: &str = "soak.topic";
/// Queue 17 holds messages for `TTL_MS`, then dead-letters them to queue 18.
const TTL_QUEUE: usize = 17;
const DEAD_LETTER_QUEUE: usize = 18;
/// Queue 19 is not durable (declared again after each restart by its consumer).
const TRANSIENT_QUEUE: usize = 19;
const TTL_MS: i32 = 1000;
/// Body prefix: send time (8), stream (1), sequence (8).
const HEAD_BYTES: usize = 17;

#[derive(Args, Debug, Clone)]
pub struct SoakOpts {
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    pub url: String,
    /// Seconds of load (the drain after it is extra).
    #[arg(long, default_value_t = 1800)]
    pub duration: u64,
    /// Messages per second, all publishers together.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Body bytes (at least 17: the head each message carries).
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    /// A file holding the broker's pid (rewritten by soak.sh at each restart).
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// Where to write the samples (JSON) and their plot (PNG).
    #[arg(long)]
    pub series: Option<PathBuf>,
    #[arg(long)]
    pub png: Option<PathBuf>,
}

/// Where the message with sequence number `seq` goes: the exchange, routing key, whether it is
/// persistent, and the durable queues that must get it once it is confirmed.
fn route(seq: u64) -> (&'static str, String, bool, Vec<usize>) {
    let direct = (seq / 10 % 10) as usize;
    match seq % 10 {
        0..=3 => ("", queue_name(direct), true, vec![direct]),
        4 => (FANOUT, String::new(), true, vec![10, 11, 12, 13]),
        5 => (TOPIC, "a.b".into(), true, vec![14, 15]),
        6 => (TOPIC, "k.c".into(), true, vec![16]),
        7 => ("", queue_name(TTL_QUEUE), true, vec![DEAD_LETTER_QUEUE]),
        8 => ("", queue_name(TRANSIENT_QUEUE), false, Vec::new()),
        _ => ("", queue_name(direct), false, Vec::new()),
    }
}

fn queue_name(index: usize) -> String {
    format!("soak-q{index:02}")
}

/// Bits by sequence number, growing as sequence numbers do.
#[derive(Default)]
struct Bits(Vec<u64>);

impl Bits {
    fn set(&mut self, index: u64) {
        let word = (index / 64) as usize;
        if word >= self.0.len() {
            self.0.resize(word + 1, 0);
        }
        self.0[word] |= 1 << (index % 64);
    }

    fn get(&self, index: u64) -> bool {
        self.0
            .get((index / 64) as usize)
            .is_some_and(|w| w & (1 << (index % 64)) != 0)
    }
}

/// What every thread shares.
struct Ledger {
    stop_publishing: AtomicBool,
    stop_consuming: AtomicBool,
    /// Per stream: confirmed sequence numbers, and the next one to publish.
    confirmed: Vec<Mutex<Bits>>,
    next_seq: Vec<AtomicU64>,
    /// Per queue, per stream: sequence numbers delivered.
    received: Vec<Vec<Mutex<Bits>>>,
    published: AtomicU64,
    confirms: AtomicU64,
    nacks: AtomicU64,
    delivered: AtomicU64,
    reconnects: AtomicU64,
    /// End-to-end (first deliveries) and confirm latency over the current sample, ns.
    e2e_ns: Mutex<Histogram<u64>>,
    confirm_ns: Mutex<Histogram<u64>>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1_000, 600_000_000_000, 3).expect("histogram bounds")
}

impl Ledger {
    fn new() -> Ledger {
        Ledger {
            stop_publishing: AtomicBool::new(false),
            stop_consuming: AtomicBool::new(false),
            confirmed: (0..PUBLISHERS).map(|_| Mutex::default()).collect(),
            next_seq: (0..PUBLISHERS).map(|_| AtomicU64::new(0)).collect(),
            received: (0..QUEUES)
                .map(|_| (0..PUBLISHERS).map(|_| Mutex::default()).collect())
                .collect(),
            published: AtomicU64::new(0),
            confirms: AtomicU64::new(0),
            nacks: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            e2e_ns: Mutex::new(histogram()),
            confirm_ns: Mutex::new(histogram()),
        }
    }

    /// (queue, stream, seq) of confirmed messages not (yet) delivered where they must be.
    fn missing(&self, limit: usize) -> (u64, Vec<(usize, usize, u64)>) {
        let mut count = 0;
        let mut first = Vec::new();
        for stream in 0..PUBLISHERS {
            let published = self.next_seq[stream].load(Ordering::Relaxed);
            let confirmed = lock(&self.confirmed[stream]);
            let received: Vec<_> = self.received.iter().map(|q| lock(&q[stream])).collect();
            for seq in 0..published {
                if !confirmed.get(seq) {
                    continue;
                }
                for queue in route(seq).3 {
                    if !received[queue].get(seq) {
                        count += 1;
                        if first.len() < limit {
                            first.push((queue, stream, seq));
                        }
                    }
                }
            }
        }
        (count, first)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Connects, retrying with a doubling delay while the broker is down, until `stop` is set.
fn connect(url: &AmqpUrl, stop: &AtomicBool) -> Option<Conn> {
    let mut delay = SOAK_RECONNECT_DELAY_MIN;
    while !stop.load(Ordering::Relaxed) {
        match Conn::open(url) {
            Ok(conn) => return Some(conn),
            Err(_) => {
                std::thread::sleep(delay);
                delay = (delay * 2).min(SOAK_RECONNECT_DELAY_MAX);
            }
        }
    }
    None
}

fn declare_topology(url: &AmqpUrl) -> Result<()> {
    let mut conn = Conn::open(url)?;
    let names: Vec<String> = (0..QUEUES).map(queue_name).collect();
    topology::cleanup(&mut conn, &names, Some(FANOUT));
    topology::cleanup(&mut conn, &[], Some(TOPIC));
    for (index, name) in names.iter().enumerate() {
        declare(&mut conn, index, name)?;
    }
    topology::declare_exchange(&mut conn, FANOUT, "fanout", true)?;
    topology::declare_exchange(&mut conn, TOPIC, "topic", true)?;
    let fanout: Vec<_> = (10..14).map(|q| (queue_name(q), String::new())).collect();
    topology::bind_all(&mut conn, FANOUT, &fanout)?;
    let topic = [(14, "a.*"), (15, "*.b"), (16, "#.c")].map(|(q, p)| (queue_name(q), p.into()));
    topology::bind_all(&mut conn, TOPIC, &topic)?;
    conn.close();
    Ok(())
}

fn declare(conn: &mut Conn, index: usize, name: &str) -> Result<()> {
    let mut arguments = FieldTable::default();
    if index == TTL_QUEUE {
        arguments.insert("x-message-ttl", FieldValue::LongInt(TTL_MS));
        arguments.insert(
            "x-dead-letter-exchange",
            FieldValue::LongString(bytes::Bytes::new()),
        );
        arguments.insert(
            "x-dead-letter-routing-key",
            FieldValue::LongString(queue_name(DEAD_LETTER_QUEUE).into_bytes().into()),
        );
    }
    conn.send(
        CHANNEL,
        QueueDeclare {
            queue: name.to_string(),
            durable: index != TRANSIENT_QUEUE,
            arguments,
            ..QueueDeclare::default()
        },
    );
    conn.rpc(CHANNEL, "queue.declare-ok", |m| {
        matches!(m, Method::QueueDeclareOk(_))
    })?;
    Ok(())
}

/// One publisher: open loop at `rate`, confirms tracked by delivery tag.
fn publisher(url: AmqpUrl, ledger: Arc<Ledger>, stream: usize, rate: f64, size: usize) {
    let interval = Duration::from_secs_f64(1.0 / rate);
    let started = Instant::now();
    let mut sent: u64 = 0;
    let mut body = vec![b'x'; size.max(HEAD_BYTES)];
    while let Some(mut conn) = connect(&url, &ledger.stop_publishing) {
        if topology::confirm_select(&mut conn).is_err() {
            ledger.reconnects.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        // (delivery tag, seq, send time) of the publishes not settled yet, in tag order.
        let mut in_flight: VecDeque<(u64, u64, u64)> = VecDeque::new();
        let mut next_tag = 1u64;
        let result = (|| -> Result<()> {
            while !ledger.stop_publishing.load(Ordering::Relaxed) {
                let due = started + interval.mul_f64(sent as f64);
                let now = Instant::now();
                if now >= due && in_flight.len() < SOAK_CONFIRM_WINDOW_MAX {
                    let seq = ledger.next_seq[stream].fetch_add(1, Ordering::Relaxed);
                    let stamp = now_ns();
                    encode(&mut conn.out, &mut body, stamp, stream, seq, conn.frame_max);
                    conn.flush()?;
                    in_flight.push_back((next_tag, seq, stamp));
                    next_tag += 1;
                    sent += 1;
                    ledger.published.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let wait = due.saturating_duration_since(now).min(SOAK_SAMPLE_INTERVAL);
                if conn.wait_readable(wait)? && conn.fill()? {
                    while let Some(frame) = conn.next_frame()? {
                        let Frame::Method { method, .. } = frame else {
                            continue;
                        };
                        check_close(&method)?;
                        if let Some((tag, multiple, nack)) = confirm_of(&method) {
                            settle(&ledger, stream, &mut in_flight, tag, multiple, nack);
                        }
                    }
                }
            }
            Ok(())
        })();
        if result.is_err() {
            ledger.reconnects.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        // Wait a little for the last confirms, then leave.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !in_flight.is_empty() && Instant::now() < deadline {
            if !matches!(conn.wait_readable(SOAK_SAMPLE_INTERVAL), Ok(true)) {
                continue;
            }
            if !matches!(conn.fill(), Ok(true)) {
                break;
            }
            while let Ok(Some(frame)) = conn.next_frame() {
                if let Frame::Method { method, .. } = frame {
                    if let Some((tag, multiple, nack)) = confirm_of(&method) {
                        settle(&ledger, stream, &mut in_flight, tag, multiple, nack);
                    }
                }
            }
        }
        conn.close();
        return;
    }
}

/// Settles `tag` (and every tag below it when `multiple`): `in_flight` holds (tag, seq, send
/// time) in tag order.
fn settle(
    ledger: &Ledger,
    stream: usize,
    in_flight: &mut VecDeque<(u64, u64, u64)>,
    tag: u64,
    multiple: bool,
    nack: bool,
) {
    let now = now_ns();
    let mut settled = Vec::new();
    if multiple {
        while in_flight.front().is_some_and(|&(t, _, _)| t <= tag) {
            settled.extend(in_flight.pop_front());
        }
    } else if let Ok(index) = in_flight.binary_search_by_key(&tag, |&(t, _, _)| t) {
        settled.extend(in_flight.remove(index));
    }
    let mut confirmed = lock(&ledger.confirmed[stream]);
    let mut latency = lock(&ledger.confirm_ns);
    for (_, seq, stamp) in settled {
        if nack {
            ledger.nacks.fetch_add(1, Ordering::Relaxed);
        } else {
            confirmed.set(seq);
            ledger.confirms.fetch_add(1, Ordering::Relaxed);
            let _ = latency.record(now.saturating_sub(stamp).max(1_000));
        }
    }
}

/// The confirm in `method`, if it is one: (tag, multiple, nack).
fn confirm_of(method: &Method) -> Option<(u64, bool, bool)> {
    match method {
        Method::BasicAck(a) => Some((a.delivery_tag, a.multiple, false)),
        Method::BasicNack(n) => Some((n.delivery_tag, n.multiple, true)),
        _ => None,
    }
}

fn encode(
    out: &mut BytesMut,
    body: &mut [u8],
    stamp: u64,
    stream: usize,
    seq: u64,
    frame_max: u32,
) {
    let (exchange, routing_key, persistent, _) = route(seq);
    body[..8].copy_from_slice(&stamp.to_be_bytes());
    body[8] = stream as u8;
    body[9..17].copy_from_slice(&seq.to_be_bytes());
    let publish = Method::BasicPublish(BasicPublish {
        exchange: exchange.to_string(),
        routing_key,
        mandatory: false,
        immediate: false,
    });
    encode_method_frame(CHANNEL, &publish, out);
    let properties = BasicProperties {
        delivery_mode: Some(if persistent { 2 } else { 1 }),
        ..BasicProperties::default()
    };
    encode_header_frame(
        CHANNEL,
        CONTENT_CLASS_ID,
        body.len() as u64,
        &properties,
        out,
    );
    encode_body_frames(CHANNEL, body, frame_max, out);
}

/// One queue's consumer: connected for a while, then away, again and again; acks every
/// `SOAK_ACK_EVERY` deliveries (multiple).
fn consumer(url: AmqpUrl, ledger: Arc<Ledger>, queue: usize) {
    let name = queue_name(queue);
    let mut round: u64 = queue as u64;
    while let Some(mut conn) = connect(&url, &ledger.stop_consuming) {
        round += 1;
        // Connected 5..40 s, then away 1..6 s (a fixed pseudo-random walk per queue).
        let mix = round.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
        let draining = ledger.stop_publishing.load(Ordering::Relaxed);
        let stay = Duration::from_secs(5 + mix % 36);
        let away = Duration::from_secs(1 + mix % 6);
        let result = (|| -> Result<()> {
            if queue == TRANSIENT_QUEUE {
                declare(&mut conn, queue, &name)?;
            }
            topology::consume(&mut conn, &name, 200, false)?;
            let until = Instant::now() + stay;
            let mut delivery: Option<(u64, bool, [u8; HEAD_BYTES], usize)> = None;
            let mut unacked = 0u64;
            let mut last_tag = 0u64;
            while (draining || Instant::now() < until)
                && !ledger.stop_consuming.load(Ordering::Relaxed)
            {
                if conn.wait_readable(SOAK_SAMPLE_INTERVAL)? && conn.fill()? {
                    while let Some(frame) = conn.next_frame()? {
                        match frame {
                            Frame::Method { method, .. } => {
                                check_close(&method)?;
                                if let Method::BasicDeliver(d) = method {
                                    delivery =
                                        Some((d.delivery_tag, d.redelivered, [0; HEAD_BYTES], 0));
                                }
                            }
                            Frame::Body { payload, .. } => {
                                if let Some((_, _, head, have)) = delivery.as_mut() {
                                    let take = (HEAD_BYTES - *have).min(payload.len());
                                    head[*have..*have + take].copy_from_slice(&payload[..take]);
                                    *have += take;
                                    if *have == HEAD_BYTES {
                                        let (tag, redelivered, head, _) =
                                            delivery.take().expect("pending");
                                        arrived(&ledger, queue, redelivered, &head);
                                        last_tag = tag;
                                        unacked += 1;
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                }
                if unacked >= SOAK_ACK_EVERY
                    || (unacked > 0 && !conn.wait_readable(Duration::ZERO)?)
                {
                    conn.send(
                        CHANNEL,
                        BasicAck {
                            delivery_tag: last_tag,
                            multiple: true,
                        },
                    );
                    conn.flush()?;
                    unacked = 0;
                }
            }
            Ok(())
        })();
        if result.is_err() {
            ledger.reconnects.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        conn.close();
        if !ledger.stop_publishing.load(Ordering::Relaxed) {
            std::thread::sleep(away);
        }
    }
}

fn arrived(ledger: &Ledger, queue: usize, redelivered: bool, head: &[u8; HEAD_BYTES]) {
    ledger.delivered.fetch_add(1, Ordering::Relaxed);
    let stamp = u64::from_be_bytes(head[..8].try_into().expect("8 bytes"));
    let stream = head[8] as usize;
    let seq = u64::from_be_bytes(head[9..17].try_into().expect("8 bytes"));
    if let Some(bits) = ledger.received.get(queue).and_then(|q| q.get(stream)) {
        lock(bits).set(seq);
    }
    if !redelivered && queue != DEAD_LETTER_QUEUE {
        let _ = lock(&ledger.e2e_ns).record(now_ns().saturating_sub(stamp).max(1_000));
    }
}

/// One sample of the run.
#[derive(Debug, Clone, serde::Serialize)]
struct Sample {
    seconds: u64,
    rss_mib: Option<f64>,
    fds: Option<u64>,
    published: u64,
    confirmed: u64,
    nacked: u64,
    delivered: u64,
    reconnects: u64,
    e2e_p99_ms: Option<f64>,
    confirm_p99_ms: Option<f64>,
}

fn broker_pid(pid_file: Option<&Path>) -> Option<u32> {
    std::fs::read_to_string(pid_file?).ok()?.trim().parse().ok()
}

fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn open_fds(pid: u32) -> Option<u64> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64)
}

fn p99_ms(histogram: &Mutex<Histogram<u64>>) -> Option<f64> {
    let mut h = lock(histogram);
    let p99 = (!h.is_empty()).then(|| h.value_at_quantile(0.99) as f64 / 1e6);
    h.reset();
    p99
}

fn sample(ledger: &Ledger, started: Instant, pid_file: Option<&Path>) -> Sample {
    let pid = broker_pid(pid_file);
    Sample {
        seconds: started.elapsed().as_secs(),
        rss_mib: pid.and_then(rss_mib),
        fds: pid.and_then(open_fds),
        published: ledger.published.load(Ordering::Relaxed),
        confirmed: ledger.confirms.load(Ordering::Relaxed),
        nacked: ledger.nacks.load(Ordering::Relaxed),
        delivered: ledger.delivered.load(Ordering::Relaxed),
        reconnects: ledger.reconnects.load(Ordering::Relaxed),
        e2e_p99_ms: p99_ms(&ledger.e2e_ns),
        confirm_p99_ms: p99_ms(&ledger.confirm_ns),
    }
}

fn print_line(s: &Sample) {
    let show = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
    println!(
        "soak t={:>5}s rss_mib={} fds={} published={} confirmed={} nacked={} delivered={} reconnects={} e2e_p99_ms={} confirm_p99_ms={}",
        s.seconds,
        show(s.rss_mib),
        s.fds.map_or("-".to_string(), |f| f.to_string()),
        s.published,
        s.confirmed,
        s.nacked,
        s.delivered,
        s.reconnects,
        show(s.e2e_p99_ms),
        show(s.confirm_p99_ms)
    );
}

pub fn soak(opts: &SoakOpts) -> Result<()> {
    if opts.size < HEAD_BYTES || !(opts.rate.is_finite() && opts.rate > 0.0) || opts.duration == 0 {
        return Err(PerfError::Args(
            "soak: --size >= 17, --rate > 0, --duration > 0".into(),
        ));
    }
    let url = AmqpUrl::parse(&opts.url)?;
    declare_topology(&url)?;
    let ledger = Arc::new(Ledger::new());
    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    for queue in (0..QUEUES).filter(|&q| q != TTL_QUEUE) {
        let (url, ledger) = (url.clone(), ledger.clone());
        threads.push(std::thread::spawn(move || consumer(url, ledger, queue)));
    }
    let mut publishers = Vec::new();
    for stream in 0..PUBLISHERS {
        let (url, ledger) = (url.clone(), ledger.clone());
        let (rate, size) = (opts.rate / PUBLISHERS as f64, opts.size);
        publishers.push(std::thread::spawn(move || {
            publisher(url, ledger, stream, rate, size)
        }));
    }
    let started = Instant::now();
    let pid_file = opts.pid_file.as_deref();
    let mut samples = Vec::new();
    let load_until = started + Duration::from_secs(opts.duration);
    let mut next_sample = started + SOAK_SAMPLE_INTERVAL;
    while Instant::now() < load_until {
        std::thread::sleep(next_sample.saturating_duration_since(Instant::now()));
        next_sample += SOAK_SAMPLE_INTERVAL;
        let s = sample(&ledger, started, pid_file);
        if s.seconds % 60 < SOAK_SAMPLE_INTERVAL.as_secs() {
            print_line(&s);
        }
        samples.push(s);
    }
    ledger.stop_publishing.store(true, Ordering::Relaxed);
    for thread in publishers {
        let _ = thread.join();
    }
    // Drain: consumers stay connected until every confirmed message arrived, or the timeout.
    let drain_started = Instant::now();
    let (mut missing, mut first) = ledger.missing(10);
    while missing > 0 && drain_started.elapsed() < SOAK_DRAIN_TIMEOUT {
        std::thread::sleep(SOAK_SAMPLE_INTERVAL);
        (missing, first) = ledger.missing(10);
    }
    ledger.stop_consuming.store(true, Ordering::Relaxed);
    for thread in threads {
        let _ = thread.join();
    }
    let last = sample(&ledger, started, pid_file);
    print_line(&last);
    samples.push(last.clone());
    summarize(&samples, missing, &first, drain_started.elapsed());
    if let Some(path) = &opts.series {
        let json = serde_json::to_string_pretty(&samples)
            .map_err(|e| PerfError::Unexpected(e.to_string()))?;
        std::fs::write(path, json)?;
    }
    if let Some(path) = &opts.png {
        plot(&samples, path)?;
    }
    if missing > 0 {
        return Err(PerfError::Unexpected(format!(
            "{missing} confirmed messages never arrived"
        )));
    }
    Ok(())
}

fn summarize(samples: &[Sample], missing: u64, first: &[(usize, usize, u64)], drain: Duration) {
    let rss: Vec<f64> = samples.iter().filter_map(|s| s.rss_mib).collect();
    let fds: Vec<u64> = samples.iter().filter_map(|s| s.fds).collect();
    let e2e: Vec<f64> = samples.iter().filter_map(|s| s.e2e_p99_ms).collect();
    let max = |v: &[f64]| v.iter().copied().fold(f64::NAN, f64::max);
    let min = |v: &[f64]| v.iter().copied().fold(f64::NAN, f64::min);
    let last = samples.last();
    println!(
        "soak summary: published={} confirmed={} nacked={} delivered={} reconnects={} missing_confirmed={missing} drain_s={:.0}",
        last.map_or(0, |s| s.published),
        last.map_or(0, |s| s.confirmed),
        last.map_or(0, |s| s.nacked),
        last.map_or(0, |s| s.delivered),
        last.map_or(0, |s| s.reconnects),
        drain.as_secs_f64()
    );
    println!(
        "soak summary: rss_mib min={:.1} max={:.1} first={:.1} last={:.1}; fds min={} max={}; e2e_p99_ms min={:.1} max={:.1}",
        min(&rss),
        max(&rss),
        rss.first().copied().unwrap_or(f64::NAN),
        rss.last().copied().unwrap_or(f64::NAN),
        fds.iter().min().copied().unwrap_or(0),
        fds.iter().max().copied().unwrap_or(0),
        min(&e2e),
        max(&e2e)
    );
    for (queue, stream, seq) in first {
        println!(
            "soak missing: queue {} stream {stream} seq {seq}",
            queue_name(*queue)
        );
    }
}

/// Two panels over time: broker RSS, and end-to-end / confirm p99 (log scale).
fn plot(samples: &[Sample], out: &Path) -> Result<()> {
    crate::plot::load_font()?;
    let draw_error = |e: &dyn std::fmt::Display| PerfError::Unexpected(format!("plot: {e}"));
    let root = BitMapBackend::new(out, (1000, 800)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| draw_error(&e))?;
    let (top, bottom) = root.split_vertically(400);
    let minutes = |s: &Sample| s.seconds as f64 / 60.0;
    let x_max = samples.last().map_or(1.0, minutes).max(1.0);
    let rss: Vec<(f64, f64)> = samples
        .iter()
        .filter_map(|s| Some((minutes(s), s.rss_mib?)))
        .collect();
    let rss_max = rss.iter().map(|p| p.1).fold(1.0, f64::max) * 1.2;
    let mut chart = ChartBuilder::on(&top)
        .caption(
            "soak: broker RSS (kill -9 + restart every 5 min)",
            ("sans-serif", 20),
        )
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..x_max, 0f64..rss_max)
        .map_err(|e| draw_error(&e))?;
    chart
        .configure_mesh()
        .x_desc("minutes")
        .y_desc("RSS (MiB)")
        .draw()
        .map_err(|e| draw_error(&e))?;
    chart
        .draw_series(LineSeries::new(rss, RGBColor(31, 119, 180).stroke_width(2)))
        .map_err(|e| draw_error(&e))?;
    let series = [
        (
            "end-to-end p99",
            RGBColor(214, 39, 40),
            samples
                .iter()
                .filter_map(|s| Some((minutes(s), s.e2e_p99_ms?)))
                .collect::<Vec<_>>(),
        ),
        (
            "confirm p99",
            RGBColor(44, 160, 44),
            samples
                .iter()
                .filter_map(|s| Some((minutes(s), s.confirm_p99_ms?)))
                .collect(),
        ),
    ];
    let y_max = series
        .iter()
        .flat_map(|s| s.2.iter().map(|p| p.1))
        .fold(1.0, f64::max)
        * 2.0;
    let mut chart = ChartBuilder::on(&bottom)
        .caption("p99 latency per 10 s", ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..x_max, (0.01f64..y_max).log_scale())
        .map_err(|e| draw_error(&e))?;
    chart
        .configure_mesh()
        .x_desc("minutes")
        .y_desc("ms (log)")
        .draw()
        .map_err(|e| draw_error(&e))?;
    for (name, color, points) in series {
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(|e| draw_error(&e))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| draw_error(&e))?;
    root.present().map_err(|e| draw_error(&e))?;
    Ok(())
}
