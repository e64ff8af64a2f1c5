//! The delivery path when a consumer's channel closes while deliveries are in flight: nothing
//! is lost, a message seen twice is flagged redelivered the second time, and the broker stays
//! up. Closing a channel that consumes from several queues makes the broker wait on the way
//! (here: deleting durable auto-delete queues waits for the topology log), while a publisher
//! keeps the backlog queue dispatching; a queue that still listed the closed consumer used to
//! requeue and redeliver to it without end, recursively, until the stack overflowed.

use crate::common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use common::amqp::{self, channel, confirming_channel, connect};
use common::{step, unique, Broker, ABSENCE_TIMEOUT, STEP_TIMEOUT};
use futures_util::StreamExt;
use lapin::options::*;
use lapin::{BasicProperties, Channel, Consumer};
use tokio::sync::Notify;

per_shard_count!(closing_a_consumer_channel_mid_dispatch_loses_nothing);

/// Rounds of the scenario: the closed channel's queues are released in hash order, and the
/// backlog queue must not be the first of them for the bug to show (3 in 4 per round).
const ROUNDS: usize = 5;
const MESSAGES: usize = 3000;
/// Messages published while the channel closes, at most.
const PUBLISHED_DURING_CLOSE_MAX: usize = 20_000;
/// Publishes in flight at once while the channel closes.
const PUBLISH_WINDOW: usize = 20;
/// The consumer whose channel closes: a window larger than anything a round holds, so the
/// queue always has credit to hand it more.
const CLOSING_PREFETCH: u16 = u16::MAX;
/// The survivor: a small window, so the backlog outlives the close.
const SURVIVOR_PREFETCH: u16 = 10;
/// Acks the closing consumer sends before its channel closes.
const ACKS_BEFORE_CLOSE: usize = 300;
/// Extra queues the closing channel consumes from, each making the close wait on the way.
const SIDE_QUEUES: usize = 3;

async fn closing_a_consumer_channel_mid_dispatch_loses_nothing(broker: &Broker) {
    let closing_conn = connect(broker).await;
    let survivor_conn = connect(broker).await;
    for round in 0..ROUNDS {
        // Declared from the closing consumer's connection: on its shard, so deliveries to it are
        // local (the recursive case) rather than over the mesh.
        let setup = confirming_channel(&closing_conn).await;
        let queue = unique(&format!("delivery-path-{round}"));
        amqp::declare_queue(&setup, &queue, QueueDeclareOptions::default())
            .await
            .expect("declare backlog queue");
        publish_backlog(&setup, &queue).await;

        let closing = channel(&closing_conn).await;
        qos(&closing, CLOSING_PREFETCH).await;
        // Kept: a dropped lapin consumer cancels itself.
        let mut side_consumers = Vec::with_capacity(SIDE_QUEUES);
        for side in 0..SIDE_QUEUES {
            let name = unique(&format!("delivery-path-side-{round}-{side}"));
            let options = QueueDeclareOptions {
                durable: true,
                auto_delete: true,
                ..Default::default()
            };
            amqp::declare_queue(&closing, &name, options)
                .await
                .expect("declare side queue");
            side_consumers.push(amqp::consume(&closing, &name, false).await);
        }
        let mut closing_consumer = amqp::consume(&closing, &queue, false).await;

        let survivor = channel(&survivor_conn).await;
        qos(&survivor, SURVIVOR_PREFETCH).await;
        let survivor_consumer = amqp::consume(&survivor, &queue, false).await;
        let survivor_full = Arc::new(Notify::new());
        let closed = Arc::new(Notify::new());
        let (expected_tx, expected_rx) = tokio::sync::oneshot::channel();
        let survivor_task = tokio::spawn(survive(
            survivor_consumer,
            survivor_full.clone(),
            closed.clone(),
            expected_rx,
        ));

        let mut acked_by_closing = Vec::with_capacity(ACKS_BEFORE_CLOSE);
        while acked_by_closing.len() < ACKS_BEFORE_CLOSE {
            let delivery = amqp::next_delivery(&mut closing_consumer).await;
            step("ack", delivery.ack(BasicAckOptions::default()))
                .await
                .expect("ack");
            acked_by_closing.push(index_of(&delivery.data));
        }
        let stop = Arc::new(Notify::new());
        let publisher = tokio::spawn(publish_until_stopped(
            confirming_channel(&survivor_conn).await,
            queue.clone(),
            stop.clone(),
        ));
        // With the survivor's window full, the queue has only the closing consumer to offer
        // each new publish to.
        step("survivor window full", survivor_full.notified()).await;
        // Whatever the closing consumer holds unacked now goes back to the queue.
        step("close consumer channel", closing.close(200, "bye"))
            .await
            .expect("channel.close");
        closed.notify_one();
        drop(side_consumers);
        stop.notify_one();
        let published = step("publisher", publisher).await.expect("publisher task");
        let total = MESSAGES + published;
        let acked_distinct: HashSet<usize> = acked_by_closing.iter().copied().collect();
        let _ = expected_tx.send(total - acked_distinct.len());

        let seen = step("survivor sees every message", async {
            survivor_task.await.expect("survivor task")
        })
        .await;
        check_round(round, total, &acked_by_closing, seen);
        let _ = step("close survivor", survivor.close(200, "")).await;
        let delete = setup.queue_delete(&queue, QueueDeleteOptions::default());
        step("delete backlog queue", delete).await.expect("delete");
        let _ = step("close setup", setup.close(200, "")).await;
    }
    let _ = step("close", closing_conn.close(200, "")).await;
    let _ = step("close", survivor_conn.close(200, "")).await;
}

async fn qos(ch: &Channel, prefetch: u16) {
    step(
        "basic.qos",
        ch.basic_qos(prefetch, BasicQosOptions::default()),
    )
    .await
    .expect("basic.qos");
}

async fn publish_backlog(ch: &Channel, queue: &str) {
    let mut confirms = Vec::with_capacity(MESSAGES);
    for index in 0..MESSAGES {
        let body = index.to_string();
        let publish = ch.basic_publish(
            "",
            queue,
            BasicPublishOptions::default(),
            body.as_bytes(),
            BasicProperties::default(),
        );
        confirms.push(step("publish", publish).await.expect("publish"));
    }
    for confirm in confirms {
        let confirmation = step("confirm", confirm).await.expect("confirm");
        assert!(confirmation.is_ack(), "{confirmation:?}");
    }
}

/// Publishes (confirmed) messages numbered from MESSAGES on until `stop`; returns how many.
async fn publish_until_stopped(ch: Channel, queue: String, stop: Arc<Notify>) -> usize {
    let mut published = 0;
    let stopped = stop.notified();
    tokio::pin!(stopped);
    while published < PUBLISHED_DURING_CLOSE_MAX {
        let mut confirms = Vec::with_capacity(PUBLISH_WINDOW);
        for _ in 0..PUBLISH_WINDOW {
            let body = (MESSAGES + published).to_string();
            let publish = ch.basic_publish(
                "",
                &queue,
                BasicPublishOptions::default(),
                body.as_bytes(),
                BasicProperties::default(),
            );
            confirms.push(step("publish", publish).await.expect("publish"));
            published += 1;
        }
        for confirm in confirms {
            let confirmation = step("confirm", confirm).await.expect("confirm");
            assert!(confirmation.is_ack(), "{confirmation:?}");
        }
        if futures_util::poll!(stopped.as_mut()).is_ready() {
            break;
        }
    }
    let _ = step("close publisher", ch.close(200, "")).await;
    published
}

fn index_of(body: &[u8]) -> usize {
    let text = std::str::from_utf8(body).expect("utf-8 body");
    let index: usize = text.parse().expect("numeric body");
    assert!(
        index < MESSAGES + PUBLISHED_DURING_CLOSE_MAX,
        "body {index} out of range"
    );
    index
}

/// Fills its window and holds it (unacked) until `closed`, then acks everything; returns
/// (index, redelivered) for each delivery once it has seen `expected` distinct messages and
/// then nothing more for a quiet spell (a stray extra copy still shows), or at the deadline
/// (the caller names what is missing). Waiting for the count rather than for the first quiet
/// spell keeps a stalled, loaded machine from looking like a lost message.
async fn survive(
    mut consumer: Consumer,
    full: Arc<Notify>,
    closed: Arc<Notify>,
    expected: tokio::sync::oneshot::Receiver<usize>,
) -> Vec<(usize, bool)> {
    let mut held = Vec::with_capacity(usize::from(SURVIVOR_PREFETCH));
    while held.len() < usize::from(SURVIVOR_PREFETCH) {
        held.push(amqp::next_delivery(&mut consumer).await);
    }
    full.notify_one();
    step("consumer channel closed", closed.notified()).await;
    let mut seen = Vec::new();
    for delivery in held {
        step("survivor ack", delivery.ack(BasicAckOptions::default()))
            .await
            .expect("survivor ack");
        seen.push((index_of(&delivery.data), delivery.redelivered));
    }
    let expected = step("expected count", expected)
        .await
        .expect("the round sends its expected count");
    let mut distinct: HashSet<usize> = seen.iter().map(|&(index, _)| index).collect();
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
    loop {
        let until = if distinct.len() >= expected {
            deadline.min(quiet_until())
        } else {
            deadline
        };
        let next = tokio::time::timeout_at(until, consumer.next()).await;
        let Ok(Some(delivery)) = next else {
            // Complete and then quiet (or out of time): the caller checks completeness.
            return seen;
        };
        let delivery = delivery.expect("delivery");
        delivery
            .ack(BasicAckOptions::default())
            .await
            .expect("survivor ack");
        let index = index_of(&delivery.data);
        distinct.insert(index);
        seen.push((index, delivery.redelivered));
    }
}

fn quiet_until() -> tokio::time::Instant {
    tokio::time::Instant::now() + ABSENCE_TIMEOUT.max(std::time::Duration::from_secs(1))
}

/// Every message reached a consumer; any copy after the first is flagged redelivered.
fn check_round(round: usize, total: usize, acked_by_closing: &[usize], seen: Vec<(usize, bool)>) {
    let mut copies: HashMap<usize, usize> = HashMap::new();
    for &index in acked_by_closing {
        *copies.entry(index).or_default() += 1;
    }
    for (index, redelivered) in seen {
        let count = copies.entry(index).or_default();
        *count += 1;
        assert!(
            *count == 1 || redelivered,
            "round {round}: message {index} delivered again without the redelivered flag"
        );
    }
    let missing: Vec<usize> = (0..total).filter(|i| !copies.contains_key(i)).collect();
    assert!(
        missing.is_empty(),
        "round {round}: {} messages lost, first {:?}",
        missing.len(),
        missing.iter().take(10).collect::<Vec<_>>()
    );
}
