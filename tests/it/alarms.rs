//! Resource alarms, black-box: a memory watermark and a disk free limit block publishing
//! connections (`connection.blocked` to clients that asked for it, silence to others), consumers
//! keep consuming, and publishing resumes once the alarm clears.
//!
//! Publishers here are raw AMQP over std sockets (so the test sees every frame the broker sends
//! and notices when the broker stops reading); queues are declared and drained with lapin.

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use common::{admin::Admin, amqp, filesystem, unique, Broker};
use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueDeclareOptions};
use lapin::types::FieldTable;

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;
const BODY_BYTES: usize = 256 * 1024;
/// The memory watermark of the memory test, in MiB: 256 by default so the test is quick on a
/// 2-core CI machine; the 1 GiB with `RINGMQ_TEST_ALARM_WATERMARK_MIB=1024`.
const WATERMARK_MIB_DEFAULT: u64 = 256;
/// What the broker may hold above its watermark while publishers are blocked: content read
/// between two samples (`ALARM_SAMPLE_CONTENT_BYTES_MAX`, 16 MiB), a read chunk and a frame per
/// connection, socket buffers, and the allocator's slack.
const RSS_MARGIN_BYTES: u64 = 64 * MIB;
const WAIT: Duration = Duration::from_secs(40);
const IO_TIMEOUT: Duration = Duration::from_secs(5);

// ---- a raw publisher -----------------------------------------------------------------------

fn frame(kind: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out.push(0xCE);
    out
}

fn method(class: u16, id: u16, args: &[u8]) -> Vec<u8> {
    let mut payload = class.to_be_bytes().to_vec();
    payload.extend_from_slice(&id.to_be_bytes());
    payload.extend_from_slice(args);
    frame(1, if class == 10 { 0 } else { 1 }, &payload)
}

fn shortstr(out: &mut Vec<u8>, text: &str) {
    out.push(text.len() as u8);
    out.extend_from_slice(text.as_bytes());
}

fn longstr(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// One frame read off the socket: (type, channel, class, method) for methods.
fn read_frame(stream: &mut TcpStream) -> std::io::Result<(u8, u16, u16)> {
    let mut header = [0u8; 7];
    stream.read_exact(&mut header)?;
    let size = u32::from_be_bytes([header[3], header[4], header[5], header[6]]) as usize;
    let mut payload = vec![0u8; size + 1];
    stream.read_exact(&mut payload)?;
    if header[0] == 1 && size >= 4 {
        let class = u16::from_be_bytes([payload[0], payload[1]]);
        let id = u16::from_be_bytes([payload[2], payload[3]]);
        return Ok((1, class, id));
    }
    Ok((header[0], 0, 0))
}

fn expect_method(stream: &mut TcpStream, class: u16, id: u16) {
    loop {
        let (kind, c, m) = read_frame(stream).expect("handshake frame");
        if kind == 1 {
            assert_eq!((c, m), (class, id), "handshake method");
            return;
        }
    }
}

/// Opens a connection and channel 1; `capability`: announce `connection.blocked`.
fn raw_connect(port: u16, capability: bool) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    stream.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
    stream.write_all(b"AMQP\x00\x00\x09\x01").expect("header");
    expect_method(&mut stream, 10, 10);
    let mut capabilities = Vec::new();
    if capability {
        shortstr(&mut capabilities, "connection.blocked");
        capabilities.extend_from_slice(b"t\x01");
    }
    let mut properties = Vec::new();
    shortstr(&mut properties, "capabilities");
    properties.push(b'F');
    longstr(&mut properties, &capabilities);
    let mut start_ok = Vec::new();
    longstr(&mut start_ok, &properties);
    shortstr(&mut start_ok, "PLAIN");
    longstr(&mut start_ok, b"\0guest\0guest");
    shortstr(&mut start_ok, "en_US");
    stream
        .write_all(&method(10, 11, &start_ok))
        .expect("start-ok");
    expect_method(&mut stream, 10, 30);
    // channel_max as offered: RabbitMQ (and ringmq) refuse 0 when the server has a limit.
    let mut tune_ok = 2047u16.to_be_bytes().to_vec();
    tune_ok.extend_from_slice(&131_072u32.to_be_bytes());
    tune_ok.extend_from_slice(&0u16.to_be_bytes());
    stream
        .write_all(&method(10, 31, &tune_ok))
        .expect("tune-ok");
    let mut open = Vec::new();
    shortstr(&mut open, "/");
    open.extend_from_slice(&[0, 0]);
    stream.write_all(&method(10, 40, &open)).expect("open");
    expect_method(&mut stream, 10, 41);
    stream
        .write_all(&method(20, 10, &[0]))
        .expect("channel.open");
    expect_method(&mut stream, 20, 11);
    stream
}

/// basic.publish + header + one body frame, to the default exchange.
fn publish_frames(queue: &str, body: &[u8]) -> Vec<u8> {
    let mut args = 0u16.to_be_bytes().to_vec();
    shortstr(&mut args, "");
    shortstr(&mut args, queue);
    args.push(0);
    let mut out = method(60, 40, &args);
    let mut header = 60u16.to_be_bytes().to_vec();
    header.extend_from_slice(&0u16.to_be_bytes());
    header.extend_from_slice(&(body.len() as u64).to_be_bytes());
    header.extend_from_slice(&0u16.to_be_bytes());
    out.extend(frame(2, 1, &header));
    // Body frames within the negotiated frame_max (131072 with its 8 bytes of framing).
    for part in body.chunks(64 * 1024) {
        out.extend(frame(3, 1, part));
    }
    out
}

/// A publisher thread pushing `total_bytes` into `queue` as fast as the broker reads, and a
/// reader thread reporting `connection.blocked` (true) / `unblocked` (false).
struct Publisher {
    sent_bytes: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    events: mpsc::Receiver<bool>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Publisher {
    fn start(port: u16, capability: bool, queue: &str, total_bytes: u64) -> Publisher {
        let stream = raw_connect(port, capability);
        let mut reader = stream.try_clone().expect("clone");
        reader.set_read_timeout(None).expect("no timeout");
        let (events_tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            while let Ok((kind, class, id)) = read_frame(&mut reader) {
                if kind == 1 && class == 10 && (id == 60 || id == 61) {
                    let _ = events_tx.send(id == 60);
                }
            }
        });
        let sent_bytes = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let frames = publish_frames(queue, &vec![7u8; BODY_BYTES]);
        let (sent, stopped) = (sent_bytes.clone(), stop.clone());
        let mut stream = stream;
        let writer = std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) && sent.load(Ordering::Relaxed) < total_bytes {
                match stream.write_all(&frames) {
                    Ok(()) => {
                        sent.fetch_add(BODY_BYTES as u64, Ordering::Relaxed);
                    }
                    // Blocked: the broker stopped reading and the socket buffers are full.
                    Err(e)
                        if e.kind() == std::io::ErrorKind::WouldBlock
                            || e.kind() == std::io::ErrorKind::TimedOut => {}
                    Err(_) => return,
                }
            }
            let _ = stream.shutdown(std::net::Shutdown::Both);
        });
        Publisher {
            sent_bytes,
            stop,
            events,
            writer: Some(writer),
        }
    }

    fn sent(&self) -> u64 {
        self.sent_bytes.load(Ordering::Relaxed)
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

fn resident_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|kib| kib.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

fn health_alarms(broker: &Broker) -> (u16, String) {
    Admin::for_broker(broker).request("GET", "/health/checks/alarms", None)
}

/// Consumes `queue` (no-ack) until `publisher` is told `connection.unblocked`; returns whether
/// the event was a block (it must not be), the publisher, the consumer and how many it consumed.
async fn drain_until_unblocked(
    channel: &lapin::Channel,
    queue: &str,
    publisher: Publisher,
) -> (bool, Publisher, lapin::Consumer, u64) {
    let mut consumer = channel
        .basic_consume(
            queue,
            "drain",
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let (unblocked_tx, mut unblocked_rx) = tokio::sync::oneshot::channel();
    let events = std::thread::spawn(move || {
        let event = next_event(&publisher, "connection.unblocked");
        let _ = unblocked_tx.send(());
        (event, publisher)
    });
    let mut consumed = 0u64;
    loop {
        tokio::select! {
            _ = &mut unblocked_rx => break,
            delivery = tokio::time::timeout(WAIT, consumer.next()) => {
                delivery.expect("a delivery while draining").expect("stream").expect("delivery");
                consumed += 1;
            }
        }
    }
    let (event, publisher) = events.join().expect("events thread");
    (event, publisher, consumer, consumed)
}

/// Waits for a publisher's next event, failing after `WAIT`.
fn next_event(publisher: &Publisher, what: &str) -> bool {
    publisher
        .events
        .recv_timeout(WAIT)
        .unwrap_or_else(|_| panic!("no {what} within {WAIT:?}"))
}

/// Polls `condition` every 50 ms until it holds or `WAIT` passes.
fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {WAIT:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---- memory --------------------------------------------------------------------------------

fn watermark_bytes() -> u64 {
    std::env::var("RINGMQ_TEST_ALARM_WATERMARK_MIB")
        .ok()
        .and_then(|mib| mib.parse::<u64>().ok())
        .unwrap_or(WATERMARK_MIB_DEFAULT)
        * MIB
}

// Publishers push twice the watermark each into a queue nobody consumes, with paging off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_alarm_blocks_publishers_until_a_consumer_drains() {
    let watermark = watermark_bytes();
    let watermark_arg = watermark.to_string();
    let broker = Broker::start_with_args(
        1,
        &[
            "--memory-high-watermark",
            &watermark_arg,
            "--queue-memory-bytes",
            "8589934592",
        ],
    );
    let pid = broker.pid().expect("our own broker");
    let queue = unique("alarm-mem");
    let connection = amqp::connect(&broker).await;
    let channel = amqp::channel(&connection).await;
    channel
        .queue_declare(
            &queue,
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("declare");

    let told = Publisher::start(broker.port(), true, &queue, 2 * watermark);
    let silent = Publisher::start(broker.port(), false, &queue, 2 * watermark);
    assert!(next_event(&told, "connection.blocked"), "blocked first");
    let blocked_at = Instant::now();

    // Blocked: RSS stays under the watermark plus the margin, and nobody's publishes advance.
    let mut peak = 0;
    let (told_sent, silent_sent) = (told.sent(), silent.sent());
    eventually("a quiet second", || {
        peak = peak.max(resident_bytes(pid));
        blocked_at.elapsed() > Duration::from_secs(2)
    });
    let stalled_told = told.sent() - told_sent;
    let stalled_silent = silent.sent() - silent_sent;
    println!(
        "memory alarm: peak RSS {} MiB while blocked (watermark {} MiB, margin {} MiB); \
         publishes advancing while blocked: {} KiB / {} KiB; sent before block {} MiB + {} MiB",
        peak / MIB,
        watermark / MIB,
        RSS_MARGIN_BYTES / MIB,
        stalled_told / 1024,
        stalled_silent / 1024,
        told_sent / MIB,
        silent_sent / MIB
    );
    assert!(
        peak < watermark + RSS_MARGIN_BYTES,
        "RSS {peak} over the bound"
    );
    // Socket buffers may take a few more messages; a read connection would take hundreds.
    assert!(
        stalled_told <= 32 * BODY_BYTES as u64,
        "blocked publisher advanced"
    );
    assert!(
        stalled_silent <= 32 * BODY_BYTES as u64,
        "unread publisher advanced"
    );
    assert!(silent.events.try_recv().is_err(), "no capability, no frame");
    let (status, body) = health_alarms(&broker);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("resource alarm(s) in effect in the cluster") && body.contains("memory"));
    let (_, nodes) = Admin::for_broker(&broker).request("GET", "/nodes", None);
    assert!(nodes.contains("\"mem_alarm\":true"), "{nodes}");

    // A consumer on another connection drains while the publishers are blocked.
    let drain = amqp::channel(&connection).await;
    let (event, told, mut consumer, consumed) = drain_until_unblocked(&drain, &queue, told).await;
    assert!(!event, "connection.unblocked after the drain");
    assert!(consumed > 0);
    println!("memory alarm: cleared after {consumed} messages consumed");

    // Publishing resumes for both (blocked again whenever memory passes the watermark), while
    // the consumer keeps receiving: deliveries never stop for the alarm.
    let resumed_from = (told.sent(), silent.sent());
    let drained = tokio::spawn(async move {
        let mut count = 0u64;
        while let Ok(Some(Ok(_))) =
            tokio::time::timeout(Duration::from_secs(2), consumer.next()).await
        {
            count += 1;
        }
        count
    });
    let resumed_at = Instant::now();
    let publishers = tokio::task::spawn_blocking(move || {
        eventually("publishing to resume", || {
            told.sent() > resumed_from.0 + 64 * MIB && silent.sent() > resumed_from.1 + 64 * MIB
        });
        (told, silent)
    })
    .await
    .expect("resume");
    let resumed_in = resumed_at.elapsed();
    // Stop publishing: the consumer empties the queue, and the alarm is clear at the end.
    drop(publishers);
    let consumed_after = drained.await.expect("drain task");
    let rss_after = resident_bytes(pid);
    println!(
        "memory alarm: both publishers advanced 64 MiB in {resumed_in:?} after the clear; \
         {consumed_after} more consumed; RSS {} MiB once drained",
        rss_after / MIB
    );
    assert!(consumed_after > 0, "the consumer kept receiving");
    eventually("the alarm to be clear once drained", || {
        health_alarms(&broker).0 == 200
    });
    connection.close(200, "bye").await.expect("close");
}

// ---- disk ----------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_alarm_blocks_publishers_before_the_disk_fills() {
    let filesystem = match filesystem::SmallFilesystem::make(256 * MIB) {
        Ok(filesystem) => filesystem,
        Err(reason) => {
            println!("skipped: cannot make a small filesystem: {reason}");
            return;
        }
    };
    std::fs::create_dir_all(filesystem.data_dir()).expect("data dir");
    let free_at_start = filesystem.free_bytes();
    // The log preallocates 32 MiB segments: the limit sits a few segments below the free space.
    let limit_bytes = free_at_start.saturating_sub(128 * MIB);
    let limit = limit_bytes.to_string();
    let broker = Broker::start_in(
        1,
        Some(&filesystem.data_dir()),
        &["--disk-free-limit", &limit, "--queue-memory-bytes", "0"],
    );
    let queue = unique("alarm-disk");
    let connection = amqp::connect(&broker).await;
    let channel = amqp::channel(&connection).await;
    channel
        .queue_declare(
            &queue,
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("declare");

    // Lazy queue: every transient body is written to the log, so the disk fills.
    let publisher = Publisher::start(broker.port(), true, &queue, GIB);
    let blocked = publisher
        .events
        .recv_timeout(WAIT)
        .expect("connection.blocked");
    assert!(blocked);
    let free_when_blocked = filesystem.free_bytes();
    println!(
        "disk alarm: blocked with {} MiB free (limit {} MiB, filesystem {} MiB free at start)",
        free_when_blocked / MIB,
        limit_bytes / MIB,
        free_at_start / MIB
    );
    assert!(free_when_blocked > 0, "blocked before ENOSPC");
    let (status, body) = health_alarms(&broker);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("disk"), "{body}");
    assert!(!broker.log_text().contains("No space left"), "no ENOSPC");

    // Consuming settles the messages; the log reclaims its segments and the alarm clears.
    let (event, publisher, consumer, _) = drain_until_unblocked(&channel, &queue, publisher).await;
    assert!(!event, "connection.unblocked once space is back");
    drop(publisher);
    drop(consumer);
    connection.close(200, "bye").await.expect("close");
    let mut broker = broker;
    broker.stop();
}
