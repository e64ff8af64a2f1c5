//! Large messages (issue 9, item 2), black-box: `--max-message-bytes` (default 128 MiB, as
//! RabbitMQ 3.x), a 128 MiB persistent message logged in parts, confirmed, surviving `kill -9`
//! and redelivered intact with the broker's peak memory bounded, a 22 MB transient round trip,
//! RabbitMQ's reply to a body one byte over the limit, and the flag's validation.
//!
//! Against RabbitMQ (`RINGMQ_TEST_EXTERNAL_PORT=5682`) the tests that need no restart or flag
//! run too; the over-the-limit test then uses RabbitMQ's default limit (128 MiB).

use crate::common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::amqp::{channel, confirming_channel, connect, consume, declare_queue};
use common::{step, unique, Broker};
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::BasicProperties;

const PRECONDITION_FAILED: u16 = 406;
const DELIVERY_MODE_TRANSIENT: u8 = 1;
const DELIVERY_MODE_PERSISTENT: u8 = 2;
const MAX_MESSAGE_BYTES_DEFAULT: usize = 128 * 1024 * 1024;
/// A 128 MiB publish, its confirm or its delivery may take longer than one ordinary step on a
/// loaded 2-core machine (it is written to disk in 1 MiB parts, each flush an fdatasync).
const LARGE_STEP_TIMEOUT: Duration = Duration::from_secs(60);
/// Peak resident memory allowed to the broker while one 128 MiB message goes through it (in,
/// logged, confirmed; after the restart: read back from the log and delivered), as a multiple
/// of the body: the session's received frames and the message's own copy, the page-in copy and
/// the outbox copy, never a batch or a DMA buffer the size of the body (measured: 2.1-2.4x).
const PEAK_RSS_BODY_MULTIPLE_MAX: u64 = 3;

per_shard_count_mut!(persistent_128_mib_survives_kill9_intact_with_bounded_memory);

macro_rules! per_shard_count_with_args {
    ($args:expr; $($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn shards_1() {
                let broker = $crate::common::Broker::start_with_args(1, $args);
                super::$name(&broker).await;
            }
            #[tokio::test]
            async fn shards_2() {
                let broker = $crate::common::Broker::start_with_args(2, $args);
                super::$name(&broker).await;
            }
        }
    )*};
}

per_shard_count_with_args!(&[]; transient_22_mb_round_trip);
per_shard_count_with_args!(&["--max-message-bytes", "1048576"]; one_byte_over_the_max_gets_rabbitmq_reply);

/// Deterministic, not compressible, different for each seed.
fn body_of(bytes: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut body = Vec::with_capacity(bytes);
    while body.len() < bytes {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        body.extend_from_slice(&state.to_le_bytes());
    }
    body.truncate(bytes);
    body
}

async fn large_step<F: std::future::Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(LARGE_STEP_TIMEOUT, fut).await {
        Ok(output) => output,
        Err(_) => panic!("{what}: no answer within {LARGE_STEP_TIMEOUT:?}"),
    }
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

fn properties(delivery_mode: u8) -> BasicProperties {
    BasicProperties::default().with_delivery_mode(delivery_mode)
}

async fn publish_confirmed_large(ch: &lapin::Channel, queue: &str, body: &[u8], mode: u8) {
    let confirm = large_step(
        "basic.publish (large)",
        ch.basic_publish(
            "",
            queue,
            BasicPublishOptions::default(),
            body,
            properties(mode),
        ),
    )
    .await
    .expect("basic.publish");
    let confirmation = large_step("confirm of the large publish", confirm)
        .await
        .expect("confirm");
    assert!(
        confirmation.is_ack(),
        "large publish not acked: {confirmation:?}"
    );
}

/// Peak resident set of a process (kB in /proc, returned in bytes).
fn peak_rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM line");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("VmHWM value");
    kib * 1024
}

fn assert_peak_rss_bounded(broker: &Broker, what: &str, body_bytes: usize) {
    let Some(pid) = broker.pid() else {
        return;
    };
    let peak = peak_rss_bytes(pid);
    let bound = PEAK_RSS_BODY_MULTIPLE_MAX * body_bytes as u64;
    eprintln!("{what}: broker peak RSS {} MiB", peak >> 20);
    assert!(
        peak <= bound,
        "{what}: broker peak RSS {} MiB over {} MiB ({PEAK_RSS_BODY_MULTIPLE_MAX} x the body)",
        peak >> 20,
        bound >> 20
    );
}

async fn consume_one(connection: &lapin::Connection, queue: &str) -> lapin::message::Delivery {
    let ch = channel(connection).await;
    let mut consumer = consume(&ch, queue, false).await;
    let delivery = large_step("the large delivery", next_delivery_unbounded(&mut consumer)).await;
    step("ack", delivery.acker.ack(BasicAckOptions::default()))
        .await
        .expect("ack");
    delivery
}

async fn next_delivery_unbounded(consumer: &mut lapin::Consumer) -> lapin::message::Delivery {
    use futures_util::StreamExt;
    match consumer.next().await {
        Some(Ok(delivery)) => delivery,
        other => panic!("consumer ended: {other:?}"),
    }
}

async fn persistent_128_mib_survives_kill9_intact_with_bounded_memory(broker: &mut Broker) {
    if broker.is_external() {
        return; // needs a restart and the broker's pid
    }
    let queue = unique("large-durable");
    let body = body_of(MAX_MESSAGE_BYTES_DEFAULT, 9);
    let checksum = crc32c::crc32c(&body);
    {
        let connection = connect(broker).await;
        let ch = confirming_channel(&connection).await;
        declare_queue(&ch, &queue, durable())
            .await
            .expect("queue.declare");
        let started = Instant::now();
        publish_confirmed_large(&ch, &queue, &body, DELIVERY_MODE_PERSISTENT).await;
        eprintln!(
            "128 MiB persistent publish confirmed in {:?}",
            started.elapsed()
        );
        assert_peak_rss_bounded(broker, "publish and log", body.len());
        broker.kill9();
    }
    drop(body);
    broker.restart_same_dir();
    let connection = connect(broker).await;
    let started = Instant::now();
    let delivery = consume_one(&connection, &queue).await;
    eprintln!("128 MiB recovered and delivered in {:?}", started.elapsed());
    assert_eq!(delivery.data.len(), MAX_MESSAGE_BYTES_DEFAULT);
    assert_eq!(crc32c::crc32c(&delivery.data), checksum, "body changed");
    assert!(
        delivery.redelivered,
        "recovered messages are marked redelivered"
    );
    assert_eq!(
        delivery.properties.delivery_mode(),
        &Some(DELIVERY_MODE_PERSISTENT)
    );
    assert_peak_rss_bounded(
        broker,
        "recovery, page-in and delivery",
        MAX_MESSAGE_BYTES_DEFAULT,
    );
}

async fn transient_22_mb_round_trip(broker: &Broker) {
    let connection = connect(broker).await;
    let ch = confirming_channel(&connection).await;
    let queue = unique("large-transient");
    declare_queue(&ch, &queue, QueueDeclareOptions::default())
        .await
        .expect("queue.declare");
    let body = body_of(22_000_000, 22);
    publish_confirmed_large(&ch, &queue, &body, DELIVERY_MODE_TRANSIENT).await;
    let delivery = consume_one(&connection, &queue).await;
    assert_eq!(delivery.data.len(), body.len());
    assert!(delivery.data == body, "body changed");
    step(
        "delete queue",
        ch.queue_delete(&queue, QueueDeleteOptions::default()),
    )
    .await
    .expect("queue.delete");
}

/// RabbitMQ checks the size once the body is in and closes the channel (not the connection)
/// with 406 and "message size N is larger than configured max size M".
async fn one_byte_over_the_max_gets_rabbitmq_reply(broker: &Broker) {
    // RabbitMQ runs with its default; ringmq was started with --max-message-bytes 1048576.
    let max = if broker.is_external() {
        MAX_MESSAGE_BYTES_DEFAULT
    } else {
        1024 * 1024
    };
    let connection = connect(broker).await;
    let setup = channel(&connection).await;
    let queue = unique("large-over");
    declare_queue(&setup, &queue, QueueDeclareOptions::default())
        .await
        .expect("queue.declare");
    // The confirm of the refused publish is where lapin reports the channel's close.
    let ch = confirming_channel(&connection).await;
    let over = body_of(max + 1, 1);
    let published = large_step(
        "basic.publish (over the max)",
        ch.basic_publish(
            "",
            &queue,
            BasicPublishOptions::default(),
            &over,
            properties(DELIVERY_MODE_TRANSIENT),
        ),
    )
    .await;
    drop(over);
    let after = match published {
        Ok(confirm) => large_step("confirm of the refused publish", confirm).await,
        Err(error) => Err(error),
    };
    let error = after.expect_err("the channel must be closed");
    let lapin::Error::ProtocolError(amqp) = &error else {
        panic!("expected the server's channel.close, got {error:?}");
    };
    assert_eq!(amqp.get_id(), PRECONDITION_FAILED, "{error:?}");
    assert_eq!(
        amqp.get_message().as_str(),
        format!(
            "PRECONDITION_FAILED - message size {} is larger than configured max size {max}",
            max + 1
        )
    );
    // A channel error: the connection and its other channels go on; exactly the max passes.
    assert!(connection.status().connected());
    let ok = confirming_channel(&connection).await;
    let at_max = body_of(max, 2);
    publish_confirmed_large(&ok, &queue, &at_max, DELIVERY_MODE_TRANSIENT).await;
    let declared = step(
        "queue.declare passive",
        setup.queue_declare(
            &queue,
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .expect("declare");
    assert_eq!(declared.message_count(), 1);
    step(
        "delete queue",
        setup.queue_delete(&queue, QueueDeleteOptions::default()),
    )
    .await
    .expect("queue.delete");
}

/// Out-of-range values are refused at start with exit status 2, from the flag and the file.
#[test]
fn max_message_bytes_out_of_range_is_refused_with_exit_2() {
    let dir = std::env::temp_dir().join(unique("ringmq-large-config"));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("ringmq.toml");
    std::fs::write(&file, "max_message_bytes = 536870913\n").expect("config file");
    let file_arg = file.to_str().expect("utf-8 path").to_owned();
    let cases: [&[&str]; 4] = [
        &["--max-message-bytes", "1023"],
        &["--max-message-bytes", "536870913"],
        &["--max-message-bytes", "64MiB"],
        &["--config", &file_arg],
    ];
    for args in cases {
        let child = Command::new(env!("CARGO_BIN_EXE_ringmq"))
            .args(args)
            .args(["--data-dir", dir.join("data").to_str().expect("utf-8")])
            .args([
                "--listen",
                "127.0.0.1",
                "--port",
                &common::free_port().to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run ringmq");
        let pid = child.id();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = done_tx.send(child.wait_with_output());
        });
        let output = match done_rx.recv_timeout(common::BROKER_READY_TIMEOUT) {
            Ok(output) => output.expect("wait for ringmq"),
            Err(_) => {
                // SAFETY: kill(2) on our own child, not yet reaped (its waiter still runs).
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGKILL);
                }
                panic!("{args:?}: ringmq did not refuse the value (still running)");
            }
        };
        let status = output.status;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("invalid max-message-bytes"),
            "{args:?}: {stderr}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
