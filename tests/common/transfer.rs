//! Numbered persistent messages moved between brokers (the shovel suites): publish them with a
//! window of confirms, poll for a state with a deadline, drain a queue, and check the ids that
//! arrived against the ids that were sent.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::publisher_confirm::PublisherConfirm;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel};

use super::step;

/// Publishes run at most this many ahead of their confirms.
pub const CONFIRM_WINDOW: usize = 1000;
/// Pause between two looks of [`eventually`].
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Ids shown when a check fails.
const IDS_SHOWN_MAX: usize = 5;
const DELIVERY_MODE_PERSISTENT: u8 = 2;

/// `prefix-0` … `prefix-(count-1)`.
pub fn ids(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix}-{i}")).collect()
}

/// Publishes one persistent message per id (its `message_id` and body) on a confirming
/// channel; every confirm must be an ack.
pub async fn publish_ids(ch: &Channel, exchange: &str, routing_key: &str, ids: &[String]) {
    let mut in_flight: VecDeque<PublisherConfirm> = VecDeque::with_capacity(CONFIRM_WINDOW);
    for id in ids {
        let properties = BasicProperties::default()
            .with_delivery_mode(DELIVERY_MODE_PERSISTENT)
            .with_message_id(id.as_str().into());
        let confirm = step(
            "basic.publish",
            ch.basic_publish(
                exchange,
                routing_key,
                BasicPublishOptions::default(),
                id.as_bytes(),
                properties,
            ),
        )
        .await
        .expect("basic.publish");
        in_flight.push_back(confirm);
        if in_flight.len() >= CONFIRM_WINDOW {
            settle(in_flight.pop_front()).await;
        }
    }
    while !in_flight.is_empty() {
        settle(in_flight.pop_front()).await;
    }
}

async fn settle(confirm: Option<PublisherConfirm>) {
    let Some(confirm) = confirm else { return };
    let confirmation = step("publisher confirm", confirm).await.expect("confirm");
    assert!(confirmation.is_ack(), "publish not acked: {confirmation:?}");
}

/// (ready messages, consumers) of a queue, from a passive declare (exact on any broker).
pub async fn queue_counts(ch: &Channel, queue: &str) -> (u32, u32) {
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let declared = step(
        "queue.declare passive",
        ch.queue_declare(queue, passive, FieldTable::default()),
    )
    .await
    .unwrap_or_else(|e| panic!("queue {queue}: {e}"));
    (declared.message_count(), declared.consumer_count())
}

/// Consumes exactly `count` messages from `queue` (no-ack) and returns their message ids.
pub async fn drain_ids(ch: &Channel, queue: &str, count: usize) -> Vec<String> {
    let options = BasicConsumeOptions {
        no_ack: true,
        ..BasicConsumeOptions::default()
    };
    let mut consumer = step(
        "basic.consume",
        ch.basic_consume(queue, "", options, FieldTable::default()),
    )
    .await
    .expect("basic.consume");
    let mut received = Vec::with_capacity(count);
    while received.len() < count {
        let delivery = step("delivery", consumer.next())
            .await
            .expect("the consumer ended")
            .expect("delivery");
        let id = delivery
            .properties
            .message_id()
            .as_ref()
            .map(|id| id.as_str().to_owned())
            .expect("every message carries its id");
        received.push(id);
    }
    received
}

/// Every sent id arrived at least once and nothing else did. Returns the number of extra
/// copies (messages that came more than once: redeliveries).
pub fn extra_copies(received: &[String], sent: &[String]) -> usize {
    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(sent.len());
    for id in received {
        *seen.entry(id.as_str()).or_default() += 1;
    }
    let sent_set: HashSet<&str> = sent.iter().map(String::as_str).collect();
    let strangers: Vec<&str> = seen
        .keys()
        .copied()
        .filter(|id| !sent_set.contains(id))
        .take(IDS_SHOWN_MAX)
        .collect();
    assert!(
        strangers.is_empty(),
        "ids never sent arrived: {strangers:?}"
    );
    let missing: Vec<&str> = sent
        .iter()
        .map(String::as_str)
        .filter(|id| !seen.contains_key(id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} sent messages were lost, e.g. {:?}",
        missing.len(),
        sent.len(),
        &missing[..missing.len().min(IDS_SHOWN_MAX)]
    );
    received.len() - seen.len()
}

/// Polls `look` until it returns Some, for at most `timeout` (then the test fails naming
/// `what`).
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut look: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(found) = look().await {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?}: {what}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}
