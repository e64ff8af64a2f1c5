//! The six classic messaging patterns, end to end with a real client, against 1 and 2 shards.

use crate::common;

use common::amqp::{
    self, assert_nothing_more, bind, channel, confirming_channel, connect, consume,
    declare_exchange, next_delivery, publish,
};
use common::{step, unique, Broker};
use lapin::options::*;
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel, ExchangeKind};

per_shard_count!(
    simple,
    work_queue_fair_dispatch,
    fanout_pub_sub,
    direct_routing,
    topics,
    rpc
);

async fn declare_queue(ch: &Channel, name: &str) {
    amqp::declare_queue(ch, name, QueueDeclareOptions::default())
        .await
        .expect("queue.declare");
}

/// A private server-named queue, as subscribers in pub/sub and RPC clients use.
async fn declare_private_queue(ch: &Channel) -> String {
    let options = QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..Default::default()
    };
    let queue = amqp::declare_queue(ch, "", options)
        .await
        .expect("queue.declare");
    queue.name().to_string()
}

async fn next_body(consumer: &mut lapin::Consumer) -> Vec<u8> {
    next_delivery(consumer).await.data
}

async fn simple(broker: &Broker) {
    let connection = connect(broker).await;
    let ch = confirming_channel(&connection).await;
    let queue = unique("hello");
    declare_queue(&ch, &queue).await;
    publish(&ch, "", &queue, b"Hello World!", BasicProperties::default()).await;

    let consumer_connection = connect(broker).await;
    let consumer_ch = channel(&consumer_connection).await;
    let mut consumer = consume(&consumer_ch, &queue, true).await;
    let delivery = next_delivery(&mut consumer).await;
    assert_eq!(delivery.data, b"Hello World!");
    assert_eq!(delivery.exchange.as_str(), "");
    assert_eq!(delivery.routing_key.as_str(), queue);
    assert!(!delivery.redelivered);
    assert_nothing_more(&mut consumer).await;
}

/// prefetch=1: a consumer holding an unacked message gets nothing more until it acks, and
/// the other consumer takes the rest of the work meanwhile.
async fn work_queue_fair_dispatch(broker: &Broker) {
    let connection = connect(broker).await;
    let publisher = confirming_channel(&connection).await;
    let queue = unique("task_queue");
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    step(
        "queue.declare durable",
        publisher.queue_declare(&queue, durable, FieldTable::default()),
    )
    .await
    .expect("queue.declare");

    let slow_ch = channel(&connection).await;
    let fast_ch = channel(&connection).await;
    for ch in [&slow_ch, &fast_ch] {
        step("basic.qos", ch.basic_qos(1, BasicQosOptions::default()))
            .await
            .expect("basic.qos");
    }
    let mut slow = consume(&slow_ch, &queue, false).await;
    // The slow consumer takes its first task and sits on it.
    publish(&publisher, "", &queue, b"task-0", persistent()).await;
    let held = next_delivery(&mut slow).await;
    assert_eq!(held.data, b"task-0");

    let mut fast = consume(&fast_ch, &queue, false).await;
    for i in 1..=5 {
        let body = format!("task-{i}");
        publish(&publisher, "", &queue, body.as_bytes(), persistent()).await;
    }
    for i in 1..=5 {
        let delivery = next_delivery(&mut fast).await;
        assert_eq!(delivery.data, format!("task-{i}").as_bytes());
        step("ack", delivery.ack(BasicAckOptions::default()))
            .await
            .expect("ack");
    }
    assert_nothing_more(&mut slow).await;

    // Once the slow one acks, it is eligible again: both split the next tasks.
    step("ack held", held.ack(BasicAckOptions::default()))
        .await
        .expect("ack");
    for i in 6..=9 {
        let body = format!("task-{i}");
        publish(&publisher, "", &queue, body.as_bytes(), persistent()).await;
    }
    let mut seen = Vec::new();
    let mut slow_got = 0;
    while seen.len() < 4 {
        tokio::select! {
            d = next_delivery(&mut slow) => {
                slow_got += 1;
                seen.push(d.data.clone());
                d.ack(BasicAckOptions::default()).await.expect("ack");
            }
            d = next_delivery(&mut fast) => {
                seen.push(d.data.clone());
                d.ack(BasicAckOptions::default()).await.expect("ack");
            }
        }
    }
    seen.sort();
    let expected: Vec<Vec<u8>> = (6..=9).map(|i| format!("task-{i}").into_bytes()).collect();
    assert_eq!(seen, expected);
    assert!(slow_got > 0, "the slow consumer got none of the later work");
}

fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

async fn fanout_pub_sub(broker: &Broker) {
    let exchange = unique("logs");
    let connection = connect(broker).await;
    let publisher = confirming_channel(&connection).await;
    declare_exchange(&publisher, &exchange, ExchangeKind::Fanout).await;

    let mut subscribers = Vec::new();
    for _ in 0..3 {
        let sub_connection = connect(broker).await;
        let ch = channel(&sub_connection).await;
        let queue = declare_private_queue(&ch).await;
        bind(&ch, &queue, &exchange, "").await;
        let consumer = consume(&ch, &queue, true).await;
        subscribers.push((sub_connection, ch, consumer));
    }
    for i in 0..3 {
        let body = format!("log-{i}");
        publish(
            &publisher,
            &exchange,
            "ignored",
            body.as_bytes(),
            Default::default(),
        )
        .await;
    }
    for (_, _, consumer) in &mut subscribers {
        for i in 0..3 {
            assert_eq!(next_body(consumer).await, format!("log-{i}").as_bytes());
        }
        assert_nothing_more(consumer).await;
    }
}

async fn direct_routing(broker: &Broker) {
    let exchange = unique("direct_logs");
    let connection = connect(broker).await;
    let publisher = confirming_channel(&connection).await;
    declare_exchange(&publisher, &exchange, ExchangeKind::Direct).await;

    let ch = channel(&connection).await;
    let errors_only = declare_private_queue(&ch).await;
    bind(&ch, &errors_only, &exchange, "error").await;
    let everything = declare_private_queue(&ch).await;
    for key in ["info", "warning", "error"] {
        bind(&ch, &everything, &exchange, key).await;
    }
    let mut errors_consumer = consume(&ch, &errors_only, true).await;
    let mut all_consumer = consume(&ch, &everything, true).await;

    for key in ["info", "error", "debug", "warning"] {
        publish(
            &publisher,
            &exchange,
            key,
            key.as_bytes(),
            Default::default(),
        )
        .await;
    }
    assert_eq!(next_body(&mut errors_consumer).await, b"error");
    assert_nothing_more(&mut errors_consumer).await;
    for key in ["info", "error", "warning"] {
        let delivery = next_delivery(&mut all_consumer).await;
        assert_eq!(delivery.data, key.as_bytes());
        assert_eq!(delivery.routing_key.as_str(), key);
    }
    assert_nothing_more(&mut all_consumer).await;
}

async fn topics(broker: &Broker) {
    let exchange = unique("topic_logs");
    let connection = connect(broker).await;
    let publisher = confirming_channel(&connection).await;
    declare_exchange(&publisher, &exchange, ExchangeKind::Topic).await;
    let ch = channel(&connection).await;

    // (binding keys, routing keys published in order, the ones that must arrive)
    let cases: [(&[&str], &[&str]); 5] = [
        (
            &["*.orange.*"],
            &[
                "quick.orange.rabbit",
                "lazy.orange.elephant",
                "quick.orange.fox",
            ],
        ),
        (
            &["*.*.rabbit", "lazy.#"],
            &[
                "quick.orange.rabbit",
                "lazy.orange.elephant",
                "lazy.brown.fox",
                "lazy.pink.rabbit",
                "lazy.orange.male.rabbit",
                "lazy",
            ],
        ),
        (
            &["#"],
            &[
                "quick.orange.rabbit",
                "lazy.orange.elephant",
                "quick.orange.fox",
                "quick.brown.fox",
                "lazy.brown.fox",
                "lazy.pink.rabbit",
                "quick.orange.male.rabbit",
                "lazy.orange.male.rabbit",
                "orange",
                "lazy",
                "",
            ],
        ),
        (
            &["#.rabbit"],
            &[
                "quick.orange.rabbit",
                "lazy.pink.rabbit",
                "quick.orange.male.rabbit",
                "lazy.orange.male.rabbit",
            ],
        ),
        (
            &["lazy.*.#"],
            &[
                "lazy.orange.elephant",
                "lazy.brown.fox",
                "lazy.pink.rabbit",
                "lazy.orange.male.rabbit",
            ],
        ),
    ];
    let published = [
        "quick.orange.rabbit",
        "lazy.orange.elephant",
        "quick.orange.fox",
        "lazy.brown.fox",
        "lazy.pink.rabbit",
        "quick.brown.fox",
        "quick.orange.male.rabbit",
        "lazy.orange.male.rabbit",
        "orange",
        "lazy",
        "",
    ];
    let mut consumers = Vec::new();
    for (binding_keys, _) in &cases {
        let queue = declare_private_queue(&ch).await;
        for key in *binding_keys {
            bind(&ch, &queue, &exchange, key).await;
        }
        consumers.push(consume(&ch, &queue, true).await);
    }
    for key in published {
        publish(
            &publisher,
            &exchange,
            key,
            key.as_bytes(),
            Default::default(),
        )
        .await;
    }
    for ((binding_keys, matching), consumer) in cases.iter().zip(&mut consumers) {
        // Every published key that matches, in publish order (a message bound twice arrives once).
        let expected: Vec<&str> = published
            .iter()
            .copied()
            .filter(|key| matching.contains(key))
            .collect();
        for key in expected {
            let delivery = next_delivery(consumer).await;
            assert_eq!(
                delivery.routing_key.as_str(),
                key,
                "binding {binding_keys:?}"
            );
        }
        assert_nothing_more(consumer).await;
    }
}

async fn rpc(broker: &Broker) {
    let rpc_queue = unique("rpc_queue");
    let server_connection = connect(broker).await;
    let server_ch = channel(&server_connection).await;
    declare_queue(&server_ch, &rpc_queue).await;
    step(
        "basic.qos",
        server_ch.basic_qos(1, BasicQosOptions::default()),
    )
    .await
    .expect("qos");
    let mut requests = consume(&server_ch, &rpc_queue, false).await;

    let client_connection = connect(broker).await;
    let client_ch = confirming_channel(&client_connection).await;
    let callback_queue = declare_private_queue(&client_ch).await;
    let mut replies = consume(&client_ch, &callback_queue, true).await;

    for n in [5u64, 10, 20] {
        let correlation_id = unique("corr");
        let props = BasicProperties::default()
            .with_reply_to(ShortString::from(callback_queue.clone()))
            .with_correlation_id(ShortString::from(correlation_id.clone()));
        publish(&client_ch, "", &rpc_queue, n.to_string().as_bytes(), props).await;

        let request = next_delivery(&mut requests).await;
        let reply_to = request
            .properties
            .reply_to()
            .clone()
            .expect("reply_to kept");
        let request_corr = request
            .properties
            .correlation_id()
            .clone()
            .expect("correlation_id kept");
        let asked: u64 = String::from_utf8_lossy(&request.data)
            .parse()
            .expect("number");
        let answer = fib(asked).to_string();
        let reply_props = BasicProperties::default().with_correlation_id(request_corr);
        let confirm = step(
            "publish reply",
            server_ch.basic_publish(
                "",
                reply_to.as_str(),
                BasicPublishOptions::default(),
                answer.as_bytes(),
                reply_props,
            ),
        )
        .await
        .expect("publish reply");
        drop(confirm);
        step("ack request", request.ack(BasicAckOptions::default()))
            .await
            .expect("ack");

        let reply = next_delivery(&mut replies).await;
        assert_eq!(
            reply
                .properties
                .correlation_id()
                .as_ref()
                .map(|c| c.as_str()),
            Some(correlation_id.as_str())
        );
        assert_eq!(reply.data, fib(n).to_string().as_bytes());
    }
}

fn fib(n: u64) -> u64 {
    (0..n).fold((0u64, 1u64), |(a, b), _| (b, a + b)).0
}
