//! Limits on what a client can make the broker hold (issue 12): each one hit and refused with
//! RabbitMQ 3.10.8's reply code and text, and not hit just below it. Tests that need broker
//! flags are skipped against an external broker (`RINGMQ_TEST_EXTERNAL_PORT`); the others
//! check the rule itself against RabbitMQ.

use crate::common;

use std::time::{Duration, Instant};

use common::admin::{encode, Admin};
use common::amqp;
use common::raw::*;
use common::{Broker, STEP_TIMEOUT};
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;

const PRECONDITION_FAILED: u16 = 406;

per_shard_count!(
    tune_ok_above_the_offered_limits_is_530,
    vhost_connection_limit_refuses_at_connection_open,
    vhost_queue_limit_refuses_new_queues,
);

/// Starts ringmq with `args`, or `None` against an external broker (which has its own flags).
fn start_with(shards: usize, args: &[&str]) -> Option<Broker> {
    let broker = Broker::start_with_args(shards, args);
    (!broker.is_external()).then_some(broker)
}

/// Header, start-ok as guest, and the server's tune.
fn authenticated(broker: &Broker) -> (Raw, Tune) {
    let mut raw = Raw::connect(broker);
    raw.authenticate("guest", "guest");
    let tune = raw.read_tune();
    (raw, tune)
}

/// A raw connection opened on `vhost` with the server's own tune values (heartbeat off).
fn open_raw(broker: &Broker, vhost: &str) -> Raw {
    let (mut raw, tune) = authenticated(broker);
    raw.send_tune_ok(Tune {
        heartbeat: 0,
        ..tune
    });
    raw.open_vhost(vhost);
    raw.expect_method(10, 41);
    raw
}

/// rabbit_reader's validate_negotiated_integer_value: 0 ("no limit") or more than offered is
/// refused with 530 on connection.tune; the offered values themselves are fine.
async fn tune_ok_above_the_offered_limits_is_530(broker: &Broker) {
    let (mut raw, tune) = authenticated(broker);
    assert_eq!(tune.channel_max, 2047, "RabbitMQ's default channel_max");
    assert_eq!(tune.frame_max, 131_072, "RabbitMQ's default frame_max");
    raw.send_tune_ok(Tune {
        channel_max: 0,
        ..tune
    });
    let close = raw.expect_connection_close();
    assert_eq!(close.code, NOT_ALLOWED);
    assert_eq!(
        close.text,
        "NOT_ALLOWED - negotiated channel_max = 0 (no limit) is higher than the maximum allowed value (2047)"
    );

    let (mut raw, tune) = authenticated(broker);
    raw.send_tune_ok(Tune {
        frame_max: tune.frame_max + 1,
        ..tune
    });
    let close = raw.expect_connection_close();
    assert_eq!(close.code, NOT_ALLOWED);
    assert_eq!(
        close.text,
        "NOT_ALLOWED - negotiated frame_max = 131073 is higher than the maximum allowed value (131072)"
    );

    let (mut raw, tune) = authenticated(broker);
    raw.send_tune_ok(Tune {
        frame_max: 4095,
        ..tune
    });
    let close = raw.expect_connection_close();
    assert_eq!(close.code, NOT_ALLOWED);
    assert_eq!(
        close.text,
        "NOT_ALLOWED - negotiated frame_max = 4095 is lower than the minimum allowed value (4096)"
    );

    // Exactly the offered values, and the smallest frame_max, are accepted.
    let mut raw = open_raw(broker, "/");
    raw.open_channel(1);
    let (mut raw, tune) = authenticated(broker);
    raw.send_tune_ok(Tune {
        frame_max: 4096,
        channel_max: 1,
        heartbeat: 0,
    });
    let _ = tune;
    raw.open_vhost("/");
    raw.expect_method(10, 41);
    raw.open_channel(1);
}

/// `--channel-max 3`: offered in tune; a fourth channel is RabbitMQ's create_channel refusal
/// (530 on the connection), while three work.
#[tokio::test]
async fn channel_count_past_channel_max_is_530() {
    for shards in common::SHARD_COUNTS {
        let Some(broker) = start_with(shards, &["--channel-max", "3"]) else {
            return;
        };
        let (mut raw, tune) = authenticated(&broker);
        assert_eq!(tune.channel_max, 3);
        raw.send_tune_ok(Tune {
            heartbeat: 0,
            ..tune
        });
        raw.open_vhost("/");
        raw.expect_method(10, 41);
        for channel in [1, 2, 3] {
            raw.open_channel(channel);
        }
        raw.send_method(4, 20, 10, Args::default().short_str(""));
        let close = raw.expect_connection_close();
        assert_eq!(close.code, NOT_ALLOWED);
        assert_eq!(
            close.text,
            "NOT_ALLOWED - number of channels opened (3) has reached the negotiated channel_max (3)"
        );
    }
}

/// `--frame-max` and `--heartbeat` are what connection.tune offers.
#[tokio::test]
async fn frame_max_and_heartbeat_flags_are_offered() {
    let Some(broker) = start_with(1, &["--frame-max", "65536", "--heartbeat", "7"]) else {
        return;
    };
    let (mut raw, tune) = authenticated(&broker);
    assert_eq!((tune.frame_max, tune.heartbeat), (65_536, 7));
    raw.send_tune_ok(Tune {
        frame_max: 131_072,
        ..tune
    });
    let close = raw.expect_connection_close();
    assert_eq!(
        close.text,
        "NOT_ALLOWED - negotiated frame_max = 131072 is higher than the maximum allowed value (65536)"
    );
}

/// RabbitMQ's handshake_timeout: a peer that connects and sends nothing is closed; one that
/// finishes in time is served.
#[tokio::test]
async fn silent_peer_is_closed_after_the_handshake_timeout() {
    let Some(broker) = start_with(1, &["--handshake-timeout-ms", "500"]) else {
        return;
    };
    let mut silent = Raw::connect(&broker);
    let waited = silent.time_until_eof(Duration::from_secs(5));
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_secs(3),
        "closed after {waited:?}, want about 500 ms"
    );
    // Half-way through the handshake is not enough either.
    let (mut stalled, _tune) = authenticated(&broker);
    let waited = stalled.time_until_eof(Duration::from_secs(5));
    assert!(waited < Duration::from_secs(3), "closed after {waited:?}");
    let mut prompt = open_raw(&broker, "/");
    prompt.open_channel(1);
}

/// Heartbeat 1 s negotiated, then silence: the broker hangs up within about two intervals.
#[tokio::test]
async fn missed_heartbeats_close_the_socket_within_two_intervals() {
    let broker = Broker::start(1);
    let (mut raw, tune) = authenticated(&broker);
    raw.send_tune_ok(Tune {
        heartbeat: 1,
        ..tune
    });
    raw.open_vhost("/");
    raw.expect_method(10, 41);
    let waited = raw.time_until_eof(Duration::from_secs(10));
    assert!(
        waited < Duration::from_secs(4),
        "closed {waited:?} after the last frame, want about 2 s"
    );
}

/// `--connection-max 2` (RabbitMQ's connection_max): counted over every shard; the third
/// connection is refused at connection.open with 530, and a slot freed is usable again.
#[tokio::test]
async fn connection_max_counts_every_shard() {
    for shards in common::SHARD_COUNTS {
        let Some(broker) = start_with(shards, &["--connection-max", "2"]) else {
            return;
        };
        let first = open_raw(&broker, "/");
        let second = open_raw(&broker, "/");
        let (mut third, tune) = authenticated(&broker);
        third.send_tune_ok(Tune {
            heartbeat: 0,
            ..tune
        });
        third.open_vhost("/");
        let close = third.expect_connection_close();
        assert_eq!(close.code, NOT_ALLOWED);
        assert_eq!(
            close.text,
            "NOT_ALLOWED - connection refused: node connection limit (2) is reached"
        );
        drop(first);
        // The broker notices the closed socket on its own time: poll with a deadline.
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            let (mut again, tune) = authenticated(&broker);
            again.send_tune_ok(Tune {
                heartbeat: 0,
                ..tune
            });
            again.open_vhost("/");
            let (_, method) = again.read_method();
            if (method.class, method.method) == (10, 41) {
                break;
            }
            assert!(Instant::now() < deadline, "slot never freed");
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(second);
    }
}

/// A fresh vhost guest may use, so the limits tests do not depend on other connections.
fn fresh_vhost(admin: &Admin, prefix: &str) -> String {
    let vhost = common::unique(prefix);
    admin.put_vhost(&vhost);
    admin.set_permissions(&vhost, "guest", ".*", ".*", ".*");
    vhost
}

/// `PUT /api/vhost-limits/{vhost}/max-connections`: the connection past it is refused at
/// connection.open with RabbitMQ's text; the one at it is not; `DELETE` lifts it.
async fn vhost_connection_limit_refuses_at_connection_open(broker: &Broker) {
    let admin = Admin::for_broker(broker);
    let vhost = fresh_vhost(&admin, "limits-conns");
    let path = format!("/vhost-limits/{}/max-connections", encode(&vhost));
    let (status, text) = admin.request("PUT", &path, Some(r#"{"value": 1}"#));
    assert_eq!(status, 204, "{text}");
    let (status, text) = admin.request("GET", &format!("/vhost-limits/{}", encode(&vhost)), None);
    assert_eq!(status, 200);
    let listed: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(
        listed,
        serde_json::json!([{"vhost": vhost, "value": {"max-connections": 1}}])
    );

    let first = open_raw(broker, &vhost);
    let (mut second, tune) = authenticated(broker);
    second.send_tune_ok(Tune {
        heartbeat: 0,
        ..tune
    });
    second.open_vhost(&vhost);
    let close = second.expect_connection_close();
    assert_eq!(close.code, NOT_ALLOWED);
    assert_eq!(
        close.text,
        format!(
            "NOT_ALLOWED - access to vhost '{vhost}' refused for user 'guest': connection limit (1) is reached"
        )
    );
    // Other vhosts are not limited.
    let _elsewhere = open_raw(broker, "/");

    let (status, _) = admin.request("DELETE", &path, None);
    assert_eq!(status, 204);
    let _now_fine = open_raw(broker, &vhost);
    drop(first);
    admin.delete_vhost(&vhost);
}

/// `max-queues`: new queues past it are refused with 406 and RabbitMQ's text; redeclaring an
/// existing one is not a new queue.
async fn vhost_queue_limit_refuses_new_queues(broker: &Broker) {
    let admin = Admin::for_broker(broker);
    let vhost = fresh_vhost(&admin, "limits-queues");
    let path = format!("/vhost-limits/{}/max-queues", encode(&vhost));
    let (status, text) = admin.request("PUT", &path, Some(r#"{"value": 2}"#));
    assert_eq!(status, 204, "{text}");
    let url = format!(
        "amqp://guest:guest@127.0.0.1:{}/{}",
        broker.port(),
        encode(&vhost)
    );
    let connection = amqp::connect_url(&url).await;
    let ch = amqp::channel(&connection).await;
    for name in ["q1", "q2", "q1"] {
        amqp::declare_queue(&ch, name, QueueDeclareOptions::default())
            .await
            .expect("declare under max-queues");
    }
    let refused = ch
        .queue_declare("q3", QueueDeclareOptions::default(), FieldTable::default())
        .await;
    amqp::expect_code_and_text(
        "declare past max-queues",
        refused,
        PRECONDITION_FAILED,
        &format!("PRECONDITION_FAILED - cannot declare queue 'q3': queue limit in vhost '{vhost}' (2) is reached"),
    );
    let (status, _) = admin.request("DELETE", &path, None);
    assert_eq!(status, 204);
    let ch = amqp::channel(&connection).await;
    amqp::declare_queue(&ch, "q3", QueueDeclareOptions::default())
        .await
        .expect("declare once the limit is gone");
    let _ = connection.close(200, "bye").await;
    admin.delete_vhost(&vhost);
}

/// Limits survive a restart with the vhost (the topology log).
#[tokio::test]
async fn vhost_limits_are_durable() {
    let mut broker = Broker::start(2);
    if broker.is_external() {
        return;
    }
    let admin = Admin::for_broker(&broker);
    let vhost = fresh_vhost(&admin, "limits-durable");
    let path = format!("/vhost-limits/{}/max-queues", encode(&vhost));
    let (status, _) = admin.request("PUT", &path, Some(r#"{"value": 5}"#));
    assert_eq!(status, 204);
    broker.restart_same_dir();
    let admin = Admin::for_broker(&broker);
    let (_, text) = admin.request("GET", "/vhost-limits", None);
    let listed: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(
        listed,
        serde_json::json!([{"vhost": vhost, "value": {"max-queues": 5}}])
    );
}

/// The next method on the connection, skipping content and heartbeat frames.
fn next_method_skipping_content(raw: &mut Raw) -> (u16, Method) {
    for _ in 0..FRAMES_PER_WAIT_MAX {
        let frame = raw.read_frame();
        if frame.kind != FRAME_METHOD {
            continue;
        }
        let method = Method {
            class: u16::from_be_bytes([frame.payload[0], frame.payload[1]]),
            method: u16::from_be_bytes([frame.payload[2], frame.payload[3]]),
            args: frame.payload[4..].to_vec(),
        };
        return (frame.channel, method);
    }
    panic!("no method in {FRAMES_PER_WAIT_MAX} frames");
}

/// basic.deliver's delivery tag (after the consumer tag).
fn delivery_tag(deliver: &Method) -> u64 {
    let tag_at = 1 + deliver.args[0] as usize;
    u64::from_be_bytes(
        deliver.args[tag_at..tag_at + 8]
            .try_into()
            .expect("8 bytes"),
    )
}

/// RabbitMQ's consumer_timeout: a delivery left unacked past it closes the channel with 406
/// and RabbitMQ's text, and the message goes back to its queue; acked in time, nothing happens.
#[tokio::test]
async fn unacked_delivery_past_consumer_timeout_closes_the_channel() {
    let Some(broker) = start_with(1, &["--consumer-timeout-ms", "500"]) else {
        return;
    };
    let queue = common::unique("ack-timeout");
    // Not auto-delete (as the raw helper's queue is): it must outlive the consumer's channel.
    let connection = amqp::connect(&broker).await;
    let producer = amqp::confirming_channel(&connection).await;
    amqp::declare_queue(&producer, &queue, QueueDeclareOptions::default())
        .await
        .expect("declare");
    let mut consumer = open_raw(&broker, "/");
    consumer.open_channel(1);
    let consume = Args::default()
        .u16(0)
        .short_str(&queue)
        .short_str("c")
        .u8(0)
        .u32(0);
    consumer.send_method(1, 60, 20, consume);
    consumer.expect_method(60, 21);

    // Acked in time (well inside 500 ms), over twice the timeout: the channel stays open.
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1200) {
        amqp::publish(&producer, "", &queue, b"prompt", Default::default()).await;
        let (_, deliver) = next_method_skipping_content(&mut consumer);
        assert_eq!((deliver.class, deliver.method), (60, 60), "basic.deliver");
        let ack = Args::default()
            .u32(0)
            .u32(delivery_tag(&deliver) as u32)
            .u8(0);
        consumer.send_method(1, 60, 80, ack);
        std::thread::sleep(Duration::from_millis(100));
    }

    // Not acked: closed after the timeout, at most two quarter-timeout ticks late.
    amqp::publish(&producer, "", &queue, b"late", Default::default()).await;
    let delivered = Instant::now();
    let (_, deliver) = next_method_skipping_content(&mut consumer);
    assert_eq!((deliver.class, deliver.method), (60, 60), "basic.deliver");
    let (channel, close) = next_method_skipping_content(&mut consumer);
    let waited = delivered.elapsed();
    assert_eq!(
        (channel, close.class, close.method),
        (1, 20, 40),
        "channel.close"
    );
    let code = u16::from_be_bytes([close.args[0], close.args[1]]);
    let text_len = close.args[2] as usize;
    let text = String::from_utf8_lossy(&close.args[3..3 + text_len]).into_owned();
    assert_eq!(code, PRECONDITION_FAILED);
    assert_eq!(
        text,
        "PRECONDITION_FAILED - delivery acknowledgement on channel 1 timed out. Timeout value used: 500 ms. This timeout value can be configured, see consumers doc guide to learn more"
    );
    assert!(
        waited >= Duration::from_millis(450) && waited < Duration::from_secs(3),
        "closed after {waited:?}"
    );
    consumer.send_method(1, 20, 41, Args::default());
    // The message was requeued.
    let deadline = Instant::now() + STEP_TIMEOUT;
    let again = loop {
        if let Some(message) = amqp::get(&producer, &queue, true).await {
            break message;
        }
        assert!(Instant::now() < deadline, "never requeued");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(&again.delivery.data[..], b"late");
    assert!(again.delivery.redelivered);
}

/// VmRSS of a process, in bytes.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kib * 1024
}

/// Bytes a producer pushes at a consumer that never reads its socket.
const SLOW_READER_PUSH_BYTES: usize = 200 * 1024 * 1024;
const SLOW_READER_MESSAGE_BYTES: usize = 64 * 1024;
/// Growth allowed over the RSS before the push: the outbox bound (4 MiB), the consumer's
/// prefetch window (100 × 64 KiB), the log's write buffers and the read-ahead, with room.
const SLOW_READER_RSS_MARGIN_BYTES: u64 = 64 * 1024 * 1024;
/// Bodies a no-ack consumer that never reads may take off its queue: the broker's unwritten
/// bound (4 MiB) and the loopback socket's send and receive buffers (4 MiB and a few
/// hundred KiB while nothing is read), with room.
const SLOW_READER_NO_ACK_TAKEN_BYTES_MAX: usize = 24 * 1024 * 1024;

/// A consumer that never reads its socket: the broker's memory stays bounded (its outbox and
/// the consumer's prefetch), and the queue backs up (paged to the log) instead.
#[tokio::test]
async fn slow_reader_backs_up_its_queue_not_broker_memory() {
    slow_reader(SlowReader::Prefetch(100)).await;
}

/// The same with no prefetch to stop it: a no-ack consumer takes what its connection has
/// written (`CONSUMER_UNWRITTEN_BYTES_MAX` ahead), so its queue backs up too.
#[tokio::test]
async fn a_no_ack_slow_reader_backs_up_its_queue_too() {
    slow_reader(SlowReader::NoAck).await;
}

#[derive(Clone, Copy)]
enum SlowReader {
    Prefetch(u16),
    NoAck,
}

async fn slow_reader(kind: SlowReader) {
    let Some(broker) = start_with(1, &["--queue-memory-bytes", "1048576"]) else {
        return;
    };
    let pid = broker.pid().expect("pid");
    let queue = common::unique("slow-reader");
    let mut reader = open_raw(&broker, "/");
    reader.open_channel(1);
    reader.declare_queue(1, &queue);
    // basic.qos (with a prefetch), then basic.consume; after consume-ok the socket is never read.
    let no_ack_bit = match kind {
        SlowReader::Prefetch(prefetch) => {
            reader.send_method(1, 60, 10, Args::default().u32(0).u16(prefetch).u8(0));
            reader.expect_method(60, 11);
            0
        }
        SlowReader::NoAck => 2,
    };
    let consume = Args::default()
        .u16(0)
        .short_str(&queue)
        .short_str("slow")
        .u8(no_ack_bit)
        .u32(0);
    reader.send_method(1, 60, 20, consume);
    reader.expect_method(60, 21);

    let connection = amqp::connect(&broker).await;
    let ch = amqp::confirming_channel(&connection).await;
    let body = vec![7u8; SLOW_READER_MESSAGE_BYTES];
    let before = rss_bytes(pid);
    let mut peak = before;
    for sent in 0..SLOW_READER_PUSH_BYTES / SLOW_READER_MESSAGE_BYTES {
        amqp::publish(&ch, "", &queue, &body, Default::default()).await;
        if sent % 256 == 0 {
            peak = peak.max(rss_bytes(pid));
        }
    }
    peak = peak.max(rss_bytes(pid));
    let depth = ch
        .queue_declare(
            &queue,
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("passive declare")
        .message_count();
    eprintln!(
        "slow reader: rss before {} MiB, peak {} MiB, queue depth {depth}",
        before >> 20,
        peak >> 20
    );
    assert!(
        peak <= before + SLOW_READER_RSS_MARGIN_BYTES,
        "RSS grew from {before} to {peak} bytes"
    );
    let pushed = (SLOW_READER_PUSH_BYTES / SLOW_READER_MESSAGE_BYTES) as u32;
    // What may leave the queue: the prefetch window with room, or for no-ack the unwritten
    // bound plus what the socket buffers took (a few MiB each way on loopback).
    let taken_max = match kind {
        SlowReader::Prefetch(_) => 200,
        SlowReader::NoAck => SLOW_READER_NO_ACK_TAKEN_BYTES_MAX / SLOW_READER_MESSAGE_BYTES,
    };
    assert!(
        depth >= pushed - taken_max as u32,
        "queue depth {depth} of {pushed}"
    );
    drop(reader);
    let _ = connection.close(200, "bye").await;
}

/// Consumers on the one connection that never reads, each on a queue of its own.
const MANY_CONSUMERS: usize = 32;
const MANY_CONSUMERS_MESSAGE_BYTES: usize = 256 * 1024;
/// Per queue: more than one consumer's credit (`CONSUMER_UNWRITTEN_BYTES_MAX`, 4 MiB).
const MANY_CONSUMERS_MESSAGES_PER_QUEUE: usize = 20;
/// The connection's write credit (`CONNECTION_UNWRITTEN_BYTES_MAX`, 8 MiB): what it may hold
/// encoded and unwritten, all its consumers together (32 consumers × 4 MiB without it).
const CONNECTION_UNWRITTEN_BYTES_MAX: u64 = 8 * 1024 * 1024;

/// Many consumers on one connection that does not read its socket: the broker holds at most
/// the connection's write credit of output for it (RabbitMQ's `send_pend` in the management
/// API), not each consumer's credit over again, and the consumers' queues back up instead.
#[tokio::test]
async fn many_consumers_on_a_connection_that_does_not_read_share_its_write_credit() {
    let Some(broker) = start_with(1, &[]) else {
        return;
    };
    let pid = broker.pid().expect("pid");
    let prefix = common::unique("credit");
    let queues: Vec<String> = (0..MANY_CONSUMERS)
        .map(|i| format!("{prefix}-{i}"))
        .collect();
    let mut reader = open_raw(&broker, "/");
    reader.open_channel(1);
    for (i, queue) in queues.iter().enumerate() {
        reader.declare_queue(1, queue);
        // basic.consume with acks and no prefetch: only write credit bounds what it takes.
        let consume = Args::default()
            .u16(0)
            .short_str(queue)
            .short_str(&format!("c{i}"))
            .u8(0)
            .u32(0);
        reader.send_method(1, 60, 20, consume);
        reader.expect_method(60, 21);
    }
    // From here on the reader's socket is never read.
    let connection = amqp::connect(&broker).await;
    let ch = amqp::confirming_channel(&connection).await;
    let body = vec![3u8; MANY_CONSUMERS_MESSAGE_BYTES];
    let before = rss_bytes(pid);
    for _ in 0..MANY_CONSUMERS_MESSAGES_PER_QUEUE {
        for queue in &queues {
            amqp::publish(&ch, "", queue, &body, Default::default()).await;
        }
    }
    // Every publish is confirmed, so routed and dispatched (one shard: synchronously).
    let after = rss_bytes(pid);
    let connections = Admin::for_broker(&broker).get_json("/connections");
    let send_pend_max = connections
        .as_array()
        .expect("connections")
        .iter()
        .filter_map(|c| c["send_pend"].as_u64())
        .max()
        .expect("send_pend");
    let queued: u64 = queues
        .iter()
        .map(|queue| {
            let path = format!("/queues/%2f/{}", encode(queue));
            Admin::for_broker(&broker).get_json(&path)["messages"]
                .as_u64()
                .unwrap_or(0)
        })
        .sum();
    eprintln!(
        "{MANY_CONSUMERS} consumers on one connection that does not read: send_pend {} KiB, \
         rss {} -> {} MiB, {queued} messages queued or unacked",
        send_pend_max >> 10,
        before >> 20,
        after >> 20
    );
    let one_delivery = MANY_CONSUMERS_MESSAGE_BYTES as u64 + 1024;
    assert!(
        send_pend_max <= CONNECTION_UNWRITTEN_BYTES_MAX + one_delivery,
        "the connection holds {send_pend_max} bytes of output"
    );
    // Nothing was dropped to keep within it: every message is still queued or unacked.
    assert_eq!(
        queued,
        (MANY_CONSUMERS * MANY_CONSUMERS_MESSAGES_PER_QUEUE) as u64
    );
    drop(reader);
    let _ = connection.close(200, "bye").await;
}
