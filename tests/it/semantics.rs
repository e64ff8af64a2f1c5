//! AMQP 0-9-1 semantics as RabbitMQ implements them, black-box, against 1 and 2 shards.
//! Each test uses fresh channels after an expected channel error (the error closes the channel).

use crate::common;

use common::amqp::{
    assert_nothing_more, bind, channel, confirming_channel, connect, consume, declare_exchange,
    declare_queue, expect_code, get, next_delivery, publish, publish_confirmed,
};
use common::{step, unique, Broker, ABSENCE_TIMEOUT};
use futures_util::StreamExt;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, ExchangeKind};

const NOT_FOUND: u16 = 404;
const ACCESS_REFUSED: u16 = 403;
const RESOURCE_LOCKED: u16 = 405;
const PRECONDITION_FAILED: u16 = 406;
const NO_ROUTE: u16 = 312;

per_shard_count!(
    queue_declare_passive_missing_is_404,
    queue_declare_inequivalent_is_406,
    exchange_declare_passive_missing_is_404,
    exchange_declare_inequivalent_is_406,
    exchange_declare_amq_prefix_is_403,
    exclusive_queue_locked_for_other_connections,
    server_named_queue,
    queue_delete_if_unused_and_if_empty,
    queue_purge_counts,
    message_and_consumer_counts,
    bind_and_unbind,
    exchange_to_exchange_binding,
    headers_exchange_all_and_any,
    mandatory_unroutable_is_returned_312,
    basic_get_and_get_empty,
    nack_multiple_requeue_keeps_order_and_marks_redelivered,
    reject_without_requeue_drops,
    unknown_delivery_tag_closes_channel_406,
    recover_redelivers_unacked,
    consumer_cancelled_when_queue_deleted,
    unacked_requeued_in_order_when_channel_closes,
    publisher_confirms_ack_every_publish,
    tx_commit_and_rollback,
    qos_per_consumer_and_global,
);

fn durable_false() -> QueueDeclareOptions {
    QueueDeclareOptions::default()
}

fn passive() -> QueueDeclareOptions {
    QueueDeclareOptions {
        passive: true,
        ..Default::default()
    }
}

async fn queue_declare_passive_missing_is_404(broker: &Broker) {
    let connection = connect(broker).await;
    let ch = channel(&connection).await;
    let result = declare_queue(&ch, &unique("missing"), passive()).await;
    expect_code("passive declare of a missing queue", result, NOT_FOUND);
    // The connection survives a channel error.
    let ch2 = channel(&connection).await;
    declare_queue(&ch2, &unique("after"), durable_false())
        .await
        .expect("declare on a new channel");
}

async fn queue_declare_inequivalent_is_406(broker: &Broker) {
    let connection = connect(broker).await;
    let ch = channel(&connection).await;
    let name = unique("q");
    declare_queue(&ch, &name, durable_false())
        .await
        .expect("declare");
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let result = declare_queue(&ch, &name, durable).await;
    expect_code(
        "redeclare with another durable flag",
        result,
        PRECONDITION_FAILED,
    );
}

async fn exchange_declare_passive_missing_is_404(broker: &Broker) {
    let connection = connect(broker).await;
    let ch = channel(&connection).await;
    let options = ExchangeDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let result = step(
        "exchange.declare passive",
        ch.exchange_declare(
            &unique("missing-ex"),
            ExchangeKind::Direct,
            options,
            FieldTable::default(),
        ),
    )
    .await;
    expect_code("passive declare of a missing exchange", result, NOT_FOUND);
}

async fn exchange_declare_inequivalent_is_406(broker: &Broker) {
    let connection = connect(broker).await;
    let ch = channel(&connection).await;
    let name = unique("ex");
    declare_exchange(&ch, &name, ExchangeKind::Direct).await;
    let result = step(
        "exchange.declare other type",
        ch.exchange_declare(
            &name,
            ExchangeKind::Fanout,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        ),
    )
    .await;
    expect_code("redeclare with another type", result, PRECONDITION_FAILED);
}

async fn exchange_declare_amq_prefix_is_403(broker: &Broker) {
    let connection = connect(broker).await;
    let ch = channel(&connection).await;
    let result = step(
        "exchange.declare amq.*",
        ch.exchange_declare(
            &format!("amq.{}", unique("x")),
            ExchangeKind::Direct,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        ),
    )
    .await;
    expect_code("declare an amq.* exchange", result, ACCESS_REFUSED);
    // The predeclared ones exist and can be declared passively.
    let ch2 = channel(&connection).await;
    for (name, kind) in [
        ("amq.direct", ExchangeKind::Direct),
        ("amq.fanout", ExchangeKind::Fanout),
        ("amq.topic", ExchangeKind::Topic),
        ("amq.headers", ExchangeKind::Headers),
        ("amq.match", ExchangeKind::Headers),
    ] {
        let options = ExchangeDeclareOptions {
            passive: true,
            ..Default::default()
        };
        step(
            "passive declare amq.*",
            ch2.exchange_declare(name, kind, options, FieldTable::default()),
        )
        .await
        .unwrap_or_else(|e| panic!("{name} should be predeclared: {e}"));
    }
}

async fn exclusive_queue_locked_for_other_connections(broker: &Broker) {
    let owner = connect(broker).await;
    let owner_ch = channel(&owner).await;
    let name = unique("exclusive");
    let exclusive = QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    declare_queue(&owner_ch, &name, exclusive)
        .await
        .expect("declare");

    let other = connect(broker).await;
    let ch = channel(&other).await;
    let result = declare_queue(&ch, &name, exclusive).await;
    expect_code("declare another's exclusive queue", result, RESOURCE_LOCKED);
    let ch = channel(&other).await;
    let result = step(
        "consume another's exclusive queue",
        ch.basic_consume(
            &name,
            "",
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await;
    expect_code("consume another's exclusive queue", result, RESOURCE_LOCKED);

    // Closing the owner deletes the queue.
    step("close owner", owner.close(200, "bye"))
        .await
        .expect("close");
    let ch = channel(&other).await;
    let result = declare_queue(&ch, &name, passive()).await;
    expect_code("exclusive queue gone with its owner", result, NOT_FOUND);
}

async fn server_named_queue(broker: &Broker) {
    let connection = connect(broker).await;
    let ch = channel(&connection).await;
    let first = declare_queue(&ch, "", durable_false())
        .await
        .expect("declare");
    let second = declare_queue(&ch, "", durable_false())
        .await
        .expect("declare");
    assert!(first.name().as_str().starts_with("amq.gen-"), "{first:?}");
    assert_ne!(first.name(), second.name());
    // A client may not declare a queue with the reserved prefix.
    let result = declare_queue(&ch, &format!("amq.{}", unique("q")), durable_false()).await;
    expect_code("declare an amq.* queue", result, ACCESS_REFUSED);
}

async fn queue_delete_if_unused_and_if_empty(broker: &Broker) {
    let connection = connect(broker).await;
    let publisher = confirming_channel(&connection).await;
    let name = unique("q");
    declare_queue(&publisher, &name, durable_false())
        .await
        .expect("declare");
    publish(&publisher, "", &name, b"x", Default::default()).await;

    let ch = channel(&connection).await;
    let if_empty = QueueDeleteOptions {
        if_empty: true,
        ..Default::default()
    };
    let result = step("delete if-empty", ch.queue_delete(&name, if_empty)).await;
    expect_code(
        "delete a non-empty queue if-empty",
        result,
        PRECONDITION_FAILED,
    );

    let consumer_ch = channel(&connection).await;
    let _consumer = consume(&consumer_ch, &name, false).await;
    let ch = channel(&connection).await;
    let if_unused = QueueDeleteOptions {
        if_unused: true,
        ..Default::default()
    };
    let result = step("delete if-unused", ch.queue_delete(&name, if_unused)).await;
    expect_code("delete a used queue if-unused", result, PRECONDITION_FAILED);

    step("close consumer channel", consumer_ch.close(200, "bye"))
        .await
        .expect("close");
    let ch = channel(&connection).await;
    let count = step(
        "delete",
        ch.queue_delete(&name, QueueDeleteOptions::default()),
    )
    .await
    .expect("delete");
    assert_eq!(count, 1, "message count of the deleted queue");
    // Deleting again is not an error.
    step(
        "delete again",
        ch.queue_delete(&name, QueueDeleteOptions::default()),
    )
    .await
    .expect("idempotent delete");
}

async fn queue_purge_counts(broker: &Broker) {
    let connection = connect(broker).await;
    let ch = confirming_channel(&connection).await;
    let name = unique("q");
    declare_queue(&ch, &name, durable_false())
        .await
        .expect("declare");
    for i in 0..3u8 {
        publish(&ch, "", &name, &[i], Default::default()).await;
    }
    let purged = step("purge", ch.queue_purge(&name, QueuePurgeOptions::default()))
        .await
        .expect("purge");
    assert_eq!(purged, 3);
    let queue = declare_queue(&ch, &name, passive()).await.expect("passive");
    assert_eq!(queue.message_count(), 0);
    assert!(get(&ch, &name, true).await.is_none());
}

async fn message_and_consumer_counts(broker: &Broker) {
    let connection = connect(broker).await;
    let ch = confirming_channel(&connection).await;
    let full = unique("full");
    declare_queue(&ch, &full, durable_false())
        .await
        .expect("declare");
    for _ in 0..2 {
        publish(&ch, "", &full, b"m", Default::default()).await;
    }
    let queue = declare_queue(&ch, &full, passive()).await.expect("passive");
    assert_eq!((queue.message_count(), queue.consumer_count()), (2, 0));

    let idle = unique("idle");
    declare_queue(&ch, &idle, durable_false())
        .await
        .expect("declare");
    let consumer_ch = channel(&connection).await;
    let _a = consume(&consumer_ch, &idle, false).await;
    let _b = consume(&consumer_ch, &idle, false).await;
    let queue = declare_queue(&ch, &idle, passive()).await.expect("passive");
    assert_eq!((queue.message_count(), queue.consumer_count()), (0, 2));
}

async fn bind_and_unbind(broker: &Broker) {
    let connection = connect(broker).await;
    let ch = confirming_channel(&connection).await;
    let exchange = unique("ex");
    declare_exchange(&ch, &exchange, ExchangeKind::Direct).await;
    let queue = unique("q");
    declare_queue(&ch, &queue, durable_false())
        .await
        .expect("declare");
    bind(&ch, &queue, &exchange, "k").await;
    publish(&ch, &exchange, "k", b"bound", Default::default()).await;
    let got = get(&ch, &queue, true).await.expect("routed while bound");
    assert_eq!(got.delivery.data, b"bound");

    step(
        "queue.unbind",
        ch.queue_unbind(&queue, &exchange, "k", FieldTable::default()),
    )
    .await
    .expect("unbind");
    let mandatory = BasicPublishOptions {
        mandatory: true,
        ..Default::default()
    };
    let confirmation = publish_confirmed(
        &ch,
        &exchange,
        "k",
        mandatory,
        b"unbound",
        Default::default(),
    )
    .await;
    let returned = confirmation.take_message().expect("returned after unbind");
    assert_eq!(returned.reply_code, NO_ROUTE);
    assert!(get(&ch, &queue, true).await.is_none());
}

async fn exchange_to_exchange_binding(broker: &Broker) {
    let connection = connect(broker).await;
    let ch = confirming_channel(&connection).await;
    let source = unique("src");
    let destination = unique("dst");
    declare_exchange(&ch, &source, ExchangeKind::Topic).await;
    declare_exchange(&ch, &destination, ExchangeKind::Fanout).await;
    step(
        "exchange.bind",
        ch.exchange_bind(
            &destination,
            &source,
            "a.#",
            ExchangeBindOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .expect("exchange.bind");
    let queue = unique("q");
    declare_queue(&ch, &queue, durable_false())
        .await
        .expect("declare");
    bind(&ch, &queue, &destination, "").await;

    publish(&ch, &source, "a.b", b"through", Default::default()).await;
    publish(&ch, &source, "b.a", b"not", Default::default()).await;
    let got = get(&ch, &queue, true).await.expect("routed via e2e");
    assert_eq!(got.delivery.data, b"through");
    assert!(get(&ch, &queue, true).await.is_none());

    step(
        "exchange.unbind",
        ch.exchange_unbind(
            &destination,
            &source,
            "a.#",
            ExchangeUnbindOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .expect("exchange.unbind");
    publish(&ch, &source, "a.b", b"after-unbind", Default::default()).await;
    assert!(get(&ch, &queue, true).await.is_none());
}

fn headers(pairs: &[(&str, &str)]) -> FieldTable {
    let mut table = FieldTable::default();
    for (k, v) in pairs {
        table.insert(
            ShortString::from(*k),
            AMQPValue::LongString(LongString::from(*v)),
        );
    }
    table
}

async fn headers_exchange_all_and_any(broker: &Broker) {
    let connection = connect(broker).await;
    let ch = confirming_channel(&connection).await;
    let exchange = unique("hdr");
    declare_exchange(&ch, &exchange, ExchangeKind::Headers).await;
    let all = unique("all");
    let any = unique("any");
    for (queue, mode) in [(&all, "all"), (&any, "any")] {
        declare_queue(&ch, queue, durable_false())
            .await
            .expect("declare");
        let mut args = headers(&[("format", "pdf"), ("type", "report")]);
        args.insert(
            ShortString::from("x-match"),
            AMQPValue::LongString(LongString::from(mode)),
        );
        step(
            "queue.bind headers",
            ch.queue_bind(queue, &exchange, "", QueueBindOptions::default(), args),
        )
        .await
        .expect("bind");
    }
    // (headers of the message, routed to the x-match=all queue, to the x-match=any queue)
    let cases: [HeadersCase; 4] = [
        (&[("format", "pdf"), ("type", "report")], true, true),
        (&[("format", "pdf")], false, true),
        (&[("format", "zip"), ("type", "log")], false, false),
        (
            &[("format", "pdf"), ("type", "report"), ("extra", "1")],
            true,
            true,
        ),
    ];
    for (i, (pairs, to_all, to_any)) in cases.iter().enumerate() {
        let props = BasicProperties::default().with_headers(headers(pairs));
        let body = format!("case-{i}");
        publish(&ch, &exchange, "", body.as_bytes(), props).await;
        for (queue, expected) in [(&all, to_all), (&any, to_any)] {
            let got = get(&ch, queue, true).await.map(|m| m.delivery.data.clone());
            let want = expected.then(|| body.clone().into_bytes());
            assert_eq!(got, want, "case {i} {pairs:?} into {queue}");
        }
    }
}

type HeadersCase = (&'static [(&'static str, &'static str)], bool, bool);

async fn mandatory_unroutable_is_returned_312(broker: &Broker) {
    let connection = connect(broker).await;
    let ch = confirming_channel(&connection).await;
    let mandatory = BasicPublishOptions {
        mandatory: true,
        ..Default::default()
    };
    let key = unique("nowhere");
    let confirmation =
        publish_confirmed(&ch, "", &key, mandatory, b"lost", Default::default()).await;
    assert!(
        confirmation.is_ack(),
        "an unroutable message is still acked"
    );
    let returned = confirmation.take_message().expect("basic.return");
    assert_eq!(returned.reply_code, NO_ROUTE);
    assert_eq!(returned.reply_text.as_str(), "NO_ROUTE");
    assert_eq!(returned.routing_key.as_str(), key);
    assert_eq!(returned.data, b"lost");
    // Not mandatory: silently dropped, still acked, channel fine.
    let confirmation = publish_confirmed(
        &ch,
        "",
        &key,
        BasicPublishOptions::default(),
        b"x",
        Default::default(),
    )
    .await;
    assert_eq!(
        confirmation,
        lapin::publisher_confirm::Confirmation::Ack(None)
    );
}

async fn basic_get_and_get_empty(broker: &Broker) {
    let connection = connect(broker).await;
    let ch = confirming_channel(&connection).await;
    let queue = unique("q");
    declare_queue(&ch, &queue, durable_false())
        .await
        .expect("declare");
    assert!(get(&ch, &queue, false).await.is_none(), "get-empty");
    let props = BasicProperties::default()
        .with_content_type(ShortString::from("text/plain"))
        .with_message_id(ShortString::from("id-1"))
        .with_priority(3)
        .with_timestamp(1_700_000_000)
        .with_headers(headers(&[("k", "v")]));
    publish(&ch, "", &queue, b"one", props.clone()).await;
    publish(&ch, "", &queue, b"two", Default::default()).await;
    let first = get(&ch, &queue, false).await.expect("first");
    assert_eq!(first.delivery.data, b"one");
    assert_eq!(first.message_count, 1, "messages left after this one");
    assert_eq!(first.delivery.properties, props, "properties kept as sent");
    assert!(!first.delivery.redelivered);
    step("ack", first.delivery.ack(BasicAckOptions::default()))
        .await
        .expect("ack");
    let second = get(&ch, &queue, true).await.expect("second");
    assert_eq!(
        (second.delivery.data.as_slice(), second.message_count),
        (&b"two"[..], 0)
    );
    assert!(get(&ch, &queue, false).await.is_none(), "get-empty again");
}

async fn fill(ch: &Channel, queue: &str, count: u8) {
    for i in 0..count {
        publish(ch, "", queue, &[b'm', b'0' + i], Default::default()).await;
    }
}

async fn nack_multiple_requeue_keeps_order_and_marks_redelivered(broker: &Broker) {
    let connection = connect(broker).await;
    let ch = confirming_channel(&connection).await;
    let queue = unique("q");
    declare_queue(&ch, &queue, durable_false())
        .await
        .expect("declare");
    fill(&ch, &queue, 4).await;

    let mut tags = Vec::new();
    for i in 0..3u8 {
        let msg = get(&ch, &queue, false).await.expect("get");
        assert_eq!(msg.delivery.data, [b'm', b'0' + i]);
        tags.push(msg.delivery.delivery_tag);
    }
    // Ack the first alone, then nack the rest with multiple + requeue.
    step("ack 1", ch.basic_ack(tags[0], BasicAckOptions::default()))
        .await
        .expect("ack");
    let nack = BasicNackOptions {
        multiple: true,
        requeue: true,
    };
    step("nack multiple", ch.basic_nack(tags[2], nack))
        .await
        .expect("nack");
    // m1, m2 come back ahead of m3 (requeued to their original positions).
    for (i, redelivered) in [(1u8, true), (2, true), (3, false)] {
        let msg = get(&ch, &queue, true).await.expect("get after nack");
        assert_eq!(msg.delivery.data, [b'm', b'0' + i]);
        assert_eq!(msg.delivery.redelivered, redelivered, "m{i}");
    }
    assert!(get(&ch, &queue, true).await.is_none());
}

async fn reject_without_requeue_drops(broker: &Broker) {
    let connection = connect(broker).await;
    let ch = confirming_channel(&connection).await;
    let queue = unique("q");
    declare_queue(&ch, &queue, durable_false())
        .await
        .expect("declare");
    fill(&ch, &queue, 2).await;
    let first = get(&ch, &queue, false).await.expect("get");
    step(
        "reject",
        first.delivery.reject(BasicRejectOptions { requeue: false }),
    )
    .await
    .expect("reject");
    let second = get(&ch, &queue, false).await.expect("get");
    assert_eq!(second.delivery.data, b"m1");
    step(
        "reject requeue",
        second.delivery.reject(BasicRejectOptions { requeue: true }),
    )
    .await
    .expect("reject");
    let again = get(&ch, &queue, true).await.expect("requeued");
    assert_eq!(again.delivery.data, b"m1");
    assert!(again.delivery.redelivered);
    assert!(get(&ch, &queue, true).await.is_none());
}

async fn unknown_delivery_tag_closes_channel_406(broker: &Broker) {
    let connection = connect(broker).await;
    let ch = channel(&connection).await;
    let queue = unique("q");
    declare_queue(&ch, &queue, durable_false())
        .await
        .expect("declare");
    // lapin reports a server channel.close to the channel's consumers, with its reply code.
    let mut consumer = consume(&ch, &queue, false).await;
    step(
        "ack unknown",
        ch.basic_ack(4242, BasicAckOptions::default()),
    )
    .await
    .expect("ack is asynchronous");
    match step("channel.close from the server", consumer.next()).await {
        Some(Err(e)) => assert_eq!(
            common::amqp::reply_code(&e),
            Some(PRECONDITION_FAILED),
            "{e:?}"
        ),
        other => panic!("expected the channel closed with 406, got {other:?}"),
    }
    assert!(!ch.status().connected(), "{:?}", ch.status().state());
    // The connection is unaffected.
    let ch2 = channel(&connection).await;
    declare_queue(&ch2, &unique("q"), durable_false())
        .await
        .expect("declare on a fresh channel");
}

async fn recover_redelivers_unacked(broker: &Broker) {
    let connection = connect(broker).await;
    let ch = confirming_channel(&connection).await;
    let queue = unique("q");
    declare_queue(&ch, &queue, durable_false())
        .await
        .expect("declare");
    fill(&ch, &queue, 2).await;
    let consumer_ch = channel(&connection).await;
    let mut consumer = consume(&consumer_ch, &queue, false).await;
    for i in 0..2u8 {
        let delivery = next_delivery(&mut consumer).await;
        assert_eq!(delivery.data, [b'm', b'0' + i]);
        assert!(!delivery.redelivered);
    }
    step(
        "basic.recover",
        consumer_ch.basic_recover(BasicRecoverOptions { requeue: true }),
    )
    .await
    .expect("recover");
    for i in 0..2u8 {
        let delivery = next_delivery(&mut consumer).await;
        assert_eq!(delivery.data, [b'm', b'0' + i]);
        assert!(delivery.redelivered);
        step("ack", delivery.ack(BasicAckOptions::default()))
            .await
            .expect("ack");
    }
    assert_nothing_more(&mut consumer).await;
}

async fn consumer_cancelled_when_queue_deleted(broker: &Broker) {
    let connection = connect(broker).await;
    let ch = channel(&connection).await;
    let queue = unique("q");
    declare_queue(&ch, &queue, durable_false())
        .await
        .expect("declare");
    let consumer_ch = channel(&connection).await;
    let mut consumer = consume(&consumer_ch, &queue, false).await;
    let other = connect(broker).await;
    let other_ch = channel(&other).await;
    step(
        "delete consumed queue",
        other_ch.queue_delete(&queue, QueueDeleteOptions::default()),
    )
    .await
    .expect("delete");
    // basic.cancel from the server ends the consumer's stream.
    let next = step("consumer cancel notification", consumer.next()).await;
    assert!(next.is_none(), "expected the stream to end, got {next:?}");
    assert!(consumer_ch.status().connected(), "the channel stays open");
}

async fn unacked_requeued_in_order_when_channel_closes(broker: &Broker) {
    let connection = connect(broker).await;
    let ch = confirming_channel(&connection).await;
    let queue = unique("q");
    declare_queue(&ch, &queue, durable_false())
        .await
        .expect("declare");
    fill(&ch, &queue, 5).await;
    let consumer_ch = channel(&connection).await;
    let mut consumer = consume(&consumer_ch, &queue, false).await;
    for i in 0..5u8 {
        let delivery = next_delivery(&mut consumer).await;
        assert_eq!(delivery.data, [b'm', b'0' + i]);
        if i == 2 {
            step("ack m2", delivery.ack(BasicAckOptions::default()))
                .await
                .expect("ack");
        }
    }
    step("close channel", consumer_ch.close(200, "bye"))
        .await
        .expect("close");
    for i in [0u8, 1, 3, 4] {
        let msg = get(&ch, &queue, true).await.expect("requeued");
        assert_eq!(msg.delivery.data, [b'm', b'0' + i]);
        assert!(msg.delivery.redelivered);
    }
    assert!(get(&ch, &queue, true).await.is_none());
}

async fn publisher_confirms_ack_every_publish(broker: &Broker) {
    let connection = connect(broker).await;
    let ch = confirming_channel(&connection).await;
    let queue = unique("q");
    declare_queue(&ch, &queue, durable_false())
        .await
        .expect("declare");
    let mut pending = Vec::new();
    for i in 0..100u32 {
        let confirm = step(
            "publish",
            ch.basic_publish(
                "",
                &queue,
                BasicPublishOptions::default(),
                &i.to_be_bytes(),
                Default::default(),
            ),
        )
        .await
        .expect("publish");
        pending.push(confirm);
    }
    for confirm in pending {
        assert!(step("confirm", confirm).await.expect("confirm").is_ack());
    }
    let returned = step("wait_for_confirms", ch.wait_for_confirms())
        .await
        .expect("confirms");
    assert!(returned.is_empty());
    let queue = declare_queue(&ch, &queue, passive())
        .await
        .expect("passive");
    assert_eq!(queue.message_count(), 100);
}

async fn tx_commit_and_rollback(broker: &Broker) {
    let connection = connect(broker).await;
    let tx = channel(&connection).await;
    let observer = channel(&connection).await;
    let queue = unique("q");
    declare_queue(&observer, &queue, durable_false())
        .await
        .expect("declare");
    step("tx.select", tx.tx_select()).await.expect("tx.select");

    let publish_in_tx = |body: &'static [u8]| {
        tx.basic_publish(
            "",
            &queue,
            BasicPublishOptions::default(),
            body,
            Default::default(),
        )
    };
    step("publish in tx", publish_in_tx(b"committed"))
        .await
        .expect("publish");
    assert!(
        get(&observer, &queue, true).await.is_none(),
        "not visible before commit"
    );
    step("tx.commit", tx.tx_commit()).await.expect("commit");
    let got = get(&observer, &queue, true)
        .await
        .expect("visible after commit");
    assert_eq!(got.delivery.data, b"committed");

    step("publish in tx", publish_in_tx(b"rolled-back"))
        .await
        .expect("publish");
    step("tx.rollback", tx.tx_rollback())
        .await
        .expect("rollback");
    assert!(get(&observer, &queue, true).await.is_none(), "rolled back");

    // Acks are transactional too: a rolled-back ack leaves the message unacked.
    step("publish in tx", publish_in_tx(b"acked-later"))
        .await
        .expect("publish");
    step("tx.commit", tx.tx_commit()).await.expect("commit");
    let msg = get(&tx, &queue, false).await.expect("get in tx");
    step("ack in tx", msg.delivery.ack(BasicAckOptions::default()))
        .await
        .expect("ack");
    step("tx.rollback", tx.tx_rollback())
        .await
        .expect("rollback");
    step("close tx channel", tx.close(200, "bye"))
        .await
        .expect("close");
    let back = get(&observer, &queue, true)
        .await
        .expect("ack was rolled back");
    assert_eq!(back.delivery.data, b"acked-later");
    assert!(back.delivery.redelivered);
}

/// Counts deliveries that arrive until nothing more comes for [`ABSENCE_TIMEOUT`].
async fn count_until_quiet(consumers: &mut [&mut lapin::Consumer]) -> Vec<usize> {
    let mut counts = vec![0; consumers.len()];
    loop {
        let mut got_one = false;
        for (i, consumer) in consumers.iter_mut().enumerate() {
            if let Ok(Some(delivery)) = tokio::time::timeout(ABSENCE_TIMEOUT, consumer.next()).await
            {
                delivery.expect("delivery");
                counts[i] += 1;
                got_one = true;
            }
        }
        if !got_one {
            return counts;
        }
    }
}

/// RabbitMQ's reading: global=false limits each new consumer; global=true limits the channel.
async fn qos_per_consumer_and_global(broker: &Broker) {
    let connection = connect(broker).await;
    let publisher = confirming_channel(&connection).await;
    let queues: Vec<String> = (0..2).map(|_| unique("q")).collect();
    for queue in &queues {
        declare_queue(&publisher, queue, durable_false())
            .await
            .expect("declare");
        fill(&publisher, queue, 5).await;
    }

    let per_consumer = channel(&connection).await;
    step(
        "qos 2",
        per_consumer.basic_qos(2, BasicQosOptions { global: false }),
    )
    .await
    .expect("qos");
    let mut a = consume(&per_consumer, &queues[0], false).await;
    let mut b = consume(&per_consumer, &queues[1], false).await;
    assert_eq!(count_until_quiet(&mut [&mut a, &mut b]).await, vec![2, 2]);
    step("close", per_consumer.close(200, "bye"))
        .await
        .expect("close");

    let global = channel(&connection).await;
    step(
        "qos 3 global",
        global.basic_qos(3, BasicQosOptions { global: true }),
    )
    .await
    .expect("qos");
    let mut c = consume(&global, &queues[0], false).await;
    let mut d = consume(&global, &queues[1], false).await;
    let counts = count_until_quiet(&mut [&mut c, &mut d]).await;
    assert_eq!(
        counts.iter().sum::<usize>(),
        3,
        "channel-wide limit {counts:?}"
    );
}
