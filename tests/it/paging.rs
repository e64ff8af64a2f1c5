//! Queues over their memory budget (`--queue-memory-bytes`, `x-queue-mode=lazy`), black-box:
//! backlogs many times the budget are served whole and in order, by consumers and basic.get,
//! across a restart, and through TTL expiry to a dead-letter exchange.
//!
//! Every test reads the broker's shutdown line `queue paging stats` to check that messages
//! really were paged out and read back, so none can pass with paging silently off.

use crate::common;

use common::amqp::{channel, confirming_channel, connect, consume, get, next_delivery};
use common::{step, unique, Broker};
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};

/// The tiny budget the tests run with: far below every backlog they build.
const BUDGET_BYTES: &str = "65536";
const BODY_BYTES: usize = 4096;
/// 20 MB of 4 KiB bodies.
const BIG_BACKLOG_MESSAGES: u32 = 5000;
const DELIVERY_MODE_TRANSIENT: u8 = 1;
const DELIVERY_MODE_PERSISTENT: u8 = 2;
const PREFETCH: u16 = 64;

fn small_budget_broker() -> Broker {
    Broker::start_with_args(1, &["--queue-memory-bytes", BUDGET_BYTES])
}

/// A body that names its index and differs from every other one in every byte position.
fn body(index: u32) -> Vec<u8> {
    let mut bytes = index.to_be_bytes().to_vec();
    bytes.extend((0..BODY_BYTES - 4).map(|j| ((index as usize * 31 + j * 7) % 251) as u8));
    bytes
}

fn props(mode: u8) -> BasicProperties {
    BasicProperties::default().with_delivery_mode(mode)
}

fn mode_of(index: u32) -> u8 {
    if index.is_multiple_of(2) {
        DELIVERY_MODE_PERSISTENT
    } else {
        DELIVERY_MODE_TRANSIENT
    }
}

async fn declare(ch: &Channel, name: &str, durable: bool, args: FieldTable) {
    let options = QueueDeclareOptions {
        durable,
        ..Default::default()
    };
    step("queue.declare", ch.queue_declare(name, options, args))
        .await
        .expect("queue.declare");
}

/// Publishes `indexes` to the default exchange with key `queue`, pipelined, then waits for
/// every confirm (all must be acks).
async fn publish_all(
    ch: &Channel,
    queue: &str,
    indexes: impl Iterator<Item = u32>,
    mode: impl Fn(u32) -> u8,
) {
    let mut confirms = Vec::new();
    for index in indexes {
        let confirm = step(
            "basic.publish",
            ch.basic_publish(
                "",
                queue,
                BasicPublishOptions::default(),
                &body(index),
                props(mode(index)),
            ),
        )
        .await
        .expect("basic.publish");
        confirms.push(confirm);
    }
    for confirm in confirms {
        let confirmation = step("confirm", confirm).await.expect("confirm");
        assert!(confirmation.is_ack(), "publish nacked");
    }
}

/// Consumes exactly `expected` (in this order) from `queue`, checking every body.
async fn consume_expect(ch: &Channel, queue: &str, expected: &[u32]) {
    step(
        "basic.qos",
        ch.basic_qos(PREFETCH, BasicQosOptions::default()),
    )
    .await
    .expect("basic.qos");
    let mut consumer = consume(ch, queue, false).await;
    for &index in expected {
        let delivery = next_delivery(&mut consumer).await;
        let got = delivery
            .data
            .get(..4)
            .map(|b| u32::from_be_bytes(b.try_into().unwrap()));
        assert_eq!(got, Some(index), "out of order");
        assert!(delivery.data == body(index), "body {index} damaged");
        step("ack", delivery.ack(BasicAckOptions::default()))
            .await
            .expect("ack");
    }
    common::amqp::assert_nothing_more(&mut consumer).await;
}

/// Stops the broker and sums its shutdown counters: (paged out, paged out with a write, paged in).
fn stop_and_read_stats(broker: &mut Broker) -> (u64, u64, u64) {
    let stats = stop_and_read_counters(broker, &["paged_out", "paged_out_written", "paged_in"]);
    (stats[0], stats[1], stats[2])
}

/// Stops the broker and sums the named counters of its `queue paging stats` lines.
fn stop_and_read_counters(broker: &mut Broker, names: &[&str]) -> Vec<u64> {
    broker.stop();
    let log = strip_colours(&broker.log_text());
    let field = |line: &str, name: &str| -> u64 {
        line.split_whitespace()
            .find_map(|word| word.strip_prefix(&format!("{name}=")))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let mut totals = vec![0; names.len()];
    for line in log.lines().filter(|l| l.contains("queue paging stats")) {
        for (total, name) in totals.iter_mut().zip(names) {
            *total += field(line, name);
        }
    }
    totals
}

/// The log is written with ANSI colours around field names.
fn strip_colours(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ ... m
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Messages the read-ahead window keeps loaded whatever the budget (see the broker's
/// `PAGE_READ_AHEAD_MESSAGES`; 256 bodies of 4 KiB are within its byte bound).
const WINDOW_MESSAGES: u64 = 256;

fn lazy_args() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-mode".into(), AMQPValue::LongString("lazy".into()));
    args
}

#[tokio::test]
async fn backlog_of_20_mb_mixed_persistence_is_served_whole_and_in_order() {
    let mut broker = small_budget_broker();
    let queue = unique("paging-big");
    {
        let connection = connect(&broker).await;
        let ch = confirming_channel(&connection).await;
        declare(&ch, &queue, true, FieldTable::default()).await;
        publish_all(&ch, &queue, 0..BIG_BACKLOG_MESSAGES, mode_of).await;
        let expected: Vec<u32> = (0..BIG_BACKLOG_MESSAGES).collect();
        consume_expect(&ch, &queue, &expected).await;
    }
    let (paged_out, written, paged_in) = stop_and_read_stats(&mut broker);
    // The budget holds 16 bodies; nearly everything went out and came back.
    let most = u64::from(BIG_BACKLOG_MESSAGES) * 9 / 10;
    assert!(paged_out >= most, "paged out only {paged_out}");
    assert!(paged_in >= most, "paged in only {paged_in}");
    // The transient half had to be written at page-out time.
    assert!(
        written >= most / 2 - 100,
        "written at page-out only {written}"
    );
}

#[tokio::test]
async fn lazy_queue_pages_transient_messages_with_the_default_budget() {
    let mut broker = Broker::start(1);
    let queue = unique("paging-lazy");
    let count = 2000;
    {
        let connection = connect(&broker).await;
        let ch = confirming_channel(&connection).await;
        declare(&ch, &queue, false, lazy_args()).await;
        publish_all(&ch, &queue, 0..count, |_| DELIVERY_MODE_TRANSIENT).await;
        let expected: Vec<u32> = (0..count).collect();
        consume_expect(&ch, &queue, &expected).await;
    }
    let (paged_out, written, paged_in) = stop_and_read_stats(&mut broker);
    // Only the read-ahead (at most 256 messages, 2 MiB) stays in memory.
    let beyond_window = u64::from(count) - WINDOW_MESSAGES;
    assert!(paged_out >= beyond_window, "paged out only {paged_out}");
    assert!(written >= beyond_window, "written only {written}");
    assert!(paged_in >= beyond_window, "paged in only {paged_in}");
}

#[tokio::test]
async fn restart_brings_a_paged_persistent_backlog_back_and_drops_transient() {
    let mut broker = small_budget_broker();
    let queue = unique("paging-restart");
    let count = 2000;
    {
        let connection = connect(&broker).await;
        let ch = confirming_channel(&connection).await;
        declare(&ch, &queue, true, FieldTable::default()).await;
        publish_all(&ch, &queue, 0..count, mode_of).await;
    }
    let (paged_out, written, _) = stop_and_read_stats(&mut broker);
    assert!(
        paged_out >= u64::from(count) - WINDOW_MESSAGES,
        "paged out only {paged_out}"
    );
    assert!(written > 0, "no transient message was written at page-out");
    broker.restart_same_dir();
    {
        let connection = connect(&broker).await;
        let ch = channel(&connection).await;
        let expected: Vec<u32> = (0..count)
            .filter(|&i| mode_of(i) == DELIVERY_MODE_PERSISTENT)
            .collect();
        consume_expect(&ch, &queue, &expected).await;
    }
    // Recovered beyond the budget, so read back again after the restart (the first run had
    // no consumer, so whatever was read back was read in the second).
    let (_, _, paged_in) = stop_and_read_stats(&mut broker);
    assert!(paged_in > 0, "nothing was read back after the restart");
    // A second restart: everything was acked, transient records were settled at recovery.
    broker.restart_same_dir();
    let connection = connect(&broker).await;
    let ch = channel(&connection).await;
    assert!(
        get(&ch, &queue, true).await.is_none(),
        "settled messages came back"
    );
}

#[tokio::test]
async fn basic_get_reads_paged_messages_back_in_order() {
    let mut broker = small_budget_broker();
    let queue = unique("paging-get");
    let count = 500;
    {
        let connection = connect(&broker).await;
        let ch = confirming_channel(&connection).await;
        declare(&ch, &queue, true, FieldTable::default()).await;
        publish_all(&ch, &queue, 0..count, mode_of).await;
        for index in 0..count {
            let got = get(&ch, &queue, false)
                .await
                .expect("basic.get-empty too early");
            assert!(got.delivery.data == body(index), "get {index}: wrong body");
            step("ack", got.delivery.ack(BasicAckOptions::default()))
                .await
                .expect("ack");
        }
        assert!(get(&ch, &queue, true).await.is_none());
    }
    let (paged_out, _, paged_in) = stop_and_read_stats(&mut broker);
    assert!(
        paged_out >= u64::from(count) - WINDOW_MESSAGES,
        "paged out only {paged_out}"
    );
    assert!(
        paged_in >= u64::from(count) - WINDOW_MESSAGES,
        "paged in only {paged_in}"
    );
}

#[tokio::test]
async fn expired_paged_messages_reach_the_dead_letter_queue_intact() {
    let mut broker = small_budget_broker();
    let queue = unique("paging-ttl");
    let dead = unique("paging-dlq");
    let count = 800u32;
    {
        let connection = connect(&broker).await;
        let ch = confirming_channel(&connection).await;
        declare(&ch, &dead, true, FieldTable::default()).await;
        let mut args = FieldTable::default();
        // Long enough for the whole backlog to be queued (and paged) before the first expires.
        args.insert("x-message-ttl".into(), AMQPValue::LongInt(1500));
        args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString("".into()),
        );
        args.insert(
            "x-dead-letter-routing-key".into(),
            AMQPValue::LongString(dead.as_str().into()),
        );
        declare(&ch, &queue, true, args).await;
        publish_all(&ch, &queue, 0..count, mode_of).await;
        let mut consumer = consume(&ch, &dead, true).await;
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..count {
            let delivery = next_delivery(&mut consumer).await;
            let index = u32::from_be_bytes(delivery.data[..4].try_into().unwrap());
            assert!(delivery.data == body(index), "dead letter {index} damaged");
            let headers = delivery.properties.headers().clone().unwrap_or_default();
            assert!(
                headers.inner().contains_key("x-death"),
                "no x-death on {index}"
            );
            assert!(seen.insert(index), "dead letter {index} twice");
        }
        assert_eq!(seen.len(), count as usize);
        common::amqp::assert_nothing_more(&mut consumer).await;
    }
    let stats = stop_and_read_counters(&mut broker, &["paged_out", "dead_lettered"]);
    let beyond_window = u64::from(count) - WINDOW_MESSAGES;
    assert!(stats[0] >= beyond_window, "paged out only {}", stats[0]);
    // Dead letters read back from the log (not loaded when they expired).
    assert!(stats[1] > 0, "no paged message was dead-lettered");
    // Every expired message was settled: nothing comes back.
    broker.restart_same_dir();
    let connection = connect(&broker).await;
    let ch = channel(&connection).await;
    assert!(
        get(&ch, &queue, true).await.is_none(),
        "expired messages came back"
    );
}
