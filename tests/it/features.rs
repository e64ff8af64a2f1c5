//! RabbitMQ queue features, black-box, against 1 and 2 shards: priorities, TTL, x-expires ...
//!
//! With 2 shards each test declares its queue on one shard ("home") and publishes from the
//! other ("away"), so every feature is exercised across the mesh. Timing tests use short TTLs
//! and poll with a bounded deadline; they never sleep to synchronise.

use crate::common;

use std::time::Duration;

use common::amqp::{
    assert_nothing_more, channel, confirming_channel, consume, expect_code, get, next_delivery,
    publish,
};
use common::fixtures::*;
use common::{step, unique, Broker};
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection};

const PRECONDITION_FAILED: u16 = 406;
const NOT_FOUND: u16 = 404;
/// Connections opened at most while looking for one on each of two shards.
/// Longest a poll waits for an expiry that is due within a few hundred ms.
const EXPIRY_WAIT: Duration = Duration::from_secs(5);
const POLL_INTERVAL: Duration = Duration::from_millis(20);

per_shard_count!(
    priority_higher_first_fifo_within,
    priority_requeue_keeps_priority_order,
    priority_bad_arguments_are_406,
    message_ttl_expires_messages,
    expired_message_removed_before_reaching_head,
    lower_of_queue_and_message_ttl_wins,
    expired_messages_never_delivered_to_consumer,
    bad_expiration_is_406,
    bad_ttl_arguments_are_406,
    queue_expires_when_unused,
    queue_with_consumer_does_not_expire,
    dead_letter_on_reject_with_x_death,
    dead_letter_on_expiry_with_routing_key,
    dead_letter_retry_pattern_counts_deaths,
    dead_letter_cycle_without_reject_is_dropped,
    max_length_drop_head_dead_letters_oldest,
    max_length_bytes_drops_head,
    reject_publish_nacks_the_publisher,
    reject_publish_dlx_nacks_and_dead_letters,
    bad_length_arguments_are_406,
    single_active_consumer_hands_over_on_cancel,
    consumer_priority_serves_highest_first,
);

async fn declare_with(ch: &Channel, name: &str, arguments: FieldTable) -> lapin::Result<u32> {
    step(
        "queue.declare",
        ch.queue_declare(name, QueueDeclareOptions::default(), arguments),
    )
    .await
    .map(|queue| queue.message_count())
}

/// Message count from a passive declare (which does not renew x-expires); Err if gone.
async fn passive_count(connection: &Connection, name: &str) -> lapin::Result<u32> {
    let ch = channel(connection).await;
    let options = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let result = step(
        "passive queue.declare",
        ch.queue_declare(name, options, FieldTable::default()),
    )
    .await
    .map(|queue| queue.message_count());
    if result.is_ok() {
        let _ = ch.close(200, "done").await;
    }
    result
}

/// Polls until the queue's message count is `expected`, failing after [`EXPIRY_WAIT`].
async fn wait_for_count(connection: &Connection, name: &str, expected: u32) {
    let deadline = tokio::time::Instant::now() + EXPIRY_WAIT;
    loop {
        let count = passive_count(connection, name).await.expect("queue exists");
        if count == expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "queue {name}: {count} messages, expected {expected} within {EXPIRY_WAIT:?}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

fn with_priority(priority: u8) -> BasicProperties {
    BasicProperties::default().with_priority(priority)
}

fn with_expiration(ms: &str) -> BasicProperties {
    BasicProperties::default().with_expiration(ShortString::from(ms))
}

async fn get_body(ch: &Channel, queue: &str) -> Option<Vec<u8>> {
    get(ch, queue, true).await.map(|m| m.delivery.data)
}

// ---- priorities -----------------------------------------------------------------------------

async fn priority_higher_first_fifo_within(broker: &Broker) {
    let pair = pair(broker).await;
    let home = channel(&pair.home).await;
    let queue = unique("prio");
    declare_with(&home, &queue, args(&[("x-max-priority", long(10))]))
        .await
        .expect("declare priority queue");
    let away = confirming_channel(&pair.away).await;
    let sent: [(&[u8], Option<u8>); 6] = [
        (b"low-1", Some(3)),
        (b"high", Some(6)),
        (b"low-2", Some(3)),
        (b"none", None),
        (b"top", Some(9)),
        (b"over-max", Some(200)), // above x-max-priority: treated as the maximum
    ];
    for (body, priority) in sent {
        let props = priority.map_or_else(BasicProperties::default, with_priority);
        publish(&away, "", &queue, body, props).await;
    }
    let mut consumer = consume(&away, &queue, false).await;
    let mut order = Vec::new();
    for _ in 0..sent.len() {
        let delivery = next_delivery(&mut consumer).await;
        order.push(String::from_utf8_lossy(&delivery.data).into_owned());
        step("ack", delivery.ack(BasicAckOptions::default()))
            .await
            .expect("ack");
    }
    assert_eq!(
        order,
        ["over-max", "top", "high", "low-1", "low-2", "none"],
        "priority order"
    );
}

async fn priority_requeue_keeps_priority_order(broker: &Broker) {
    let pair = pair(broker).await;
    let home = channel(&pair.home).await;
    let queue = unique("prio-requeue");
    declare_with(&home, &queue, args(&[("x-max-priority", long(5))]))
        .await
        .expect("declare");
    let away = confirming_channel(&pair.away).await;
    for (body, priority) in [(b"a1", 1u8), (b"b5", 5), (b"c1", 1), (b"d5", 5)] {
        publish(&away, "", &queue, body, with_priority(priority)).await;
    }
    let reader = channel(&pair.away).await;
    let mut tags = Vec::new();
    for _ in 0..3 {
        let got = get(&reader, &queue, false).await.expect("a message");
        tags.push(got.delivery.delivery_tag);
    }
    let nack = BasicNackOptions {
        multiple: true,
        requeue: true,
    };
    step("nack multiple", reader.basic_nack(tags[2], nack))
        .await
        .expect("nack");
    let mut order = Vec::new();
    while let Some(body) = get_body(&reader, &queue).await {
        order.push(String::from_utf8_lossy(&body).into_owned());
    }
    assert_eq!(order, ["b5", "d5", "a1", "c1"]);
}

async fn priority_bad_arguments_are_406(broker: &Broker) {
    let connection = common::amqp::connect(broker).await;
    for bad in [long(256), long(-1), text("ten")] {
        let ch = channel(&connection).await;
        let result = declare_with(&ch, &unique("bad-prio"), args(&[("x-max-priority", bad)])).await;
        expect_code("bad x-max-priority", result, PRECONDITION_FAILED);
    }
}

// ---- TTL --------------------------------------------------------------------------------------

async fn message_ttl_expires_messages(broker: &Broker) {
    let pair = pair(broker).await;
    let home = channel(&pair.home).await;
    let queue = unique("ttl");
    declare_with(&home, &queue, args(&[("x-message-ttl", long(100))]))
        .await
        .expect("declare");
    let away = confirming_channel(&pair.away).await;
    for _ in 0..3 {
        publish(
            &away,
            "",
            &queue,
            b"short-lived",
            BasicProperties::default(),
        )
        .await;
    }
    wait_for_count(&pair.away, &queue, 0).await;
    assert!(
        get_body(&away, &queue).await.is_none(),
        "expired message got"
    );
}

async fn expired_message_removed_before_reaching_head(broker: &Broker) {
    let pair = pair(broker).await;
    let home = channel(&pair.home).await;
    let queue = unique("ttl-mid");
    declare_with(&home, &queue, FieldTable::default())
        .await
        .expect("declare");
    let away = confirming_channel(&pair.away).await;
    publish(&away, "", &queue, b"stays", BasicProperties::default()).await;
    publish(&away, "", &queue, b"goes", with_expiration("50")).await;
    publish(&away, "", &queue, b"stays-too", with_expiration("600000")).await;
    // The expiring message sits behind one that never expires: still removed on time.
    wait_for_count(&pair.home, &queue, 2).await;
    assert_eq!(
        get_body(&away, &queue).await.as_deref(),
        Some(&b"stays"[..])
    );
    assert_eq!(
        get_body(&away, &queue).await.as_deref(),
        Some(&b"stays-too"[..])
    );
    assert!(get_body(&away, &queue).await.is_none());
}

async fn lower_of_queue_and_message_ttl_wins(broker: &Broker) {
    let pair = pair(broker).await;
    let home = channel(&pair.home).await;
    let away = confirming_channel(&pair.away).await;
    // Queue TTL long, message TTL short.
    let queue = unique("ttl-msg-wins");
    declare_with(&home, &queue, args(&[("x-message-ttl", long(600_000))]))
        .await
        .expect("declare");
    publish(&away, "", &queue, b"m", with_expiration("50")).await;
    publish(&away, "", &queue, b"q", BasicProperties::default()).await;
    wait_for_count(&pair.home, &queue, 1).await;
    // Queue TTL short, message TTL long.
    let queue = unique("ttl-queue-wins");
    declare_with(&home, &queue, args(&[("x-message-ttl", long(50))]))
        .await
        .expect("declare");
    publish(&away, "", &queue, b"m", with_expiration("600000")).await;
    wait_for_count(&pair.home, &queue, 0).await;
}

async fn expired_messages_never_delivered_to_consumer(broker: &Broker) {
    let pair = pair(broker).await;
    let home = channel(&pair.home).await;
    let queue = unique("ttl-consume");
    declare_with(&home, &queue, FieldTable::default())
        .await
        .expect("declare");
    let away = confirming_channel(&pair.away).await;
    publish(&away, "", &queue, b"old", with_expiration("30")).await;
    wait_for_count(&pair.home, &queue, 0).await;
    publish(&away, "", &queue, b"fresh", BasicProperties::default()).await;
    let consumer_channel = channel(&pair.away).await;
    let mut consumer = consume(&consumer_channel, &queue, true).await;
    assert_eq!(next_delivery(&mut consumer).await.data, b"fresh");
    assert_nothing_more(&mut consumer).await;
}

async fn bad_expiration_is_406(broker: &Broker) {
    let connection = common::amqp::connect(broker).await;
    let queue = unique("bad-exp");
    declare_with(&channel(&connection).await, &queue, FieldTable::default())
        .await
        .expect("declare");
    for bad in ["abc", "-1", "10x", ""] {
        let ch = confirming_channel(&connection).await;
        let published = step(
            "basic.publish",
            ch.basic_publish(
                "",
                &queue,
                BasicPublishOptions::default(),
                b"x",
                with_expiration(bad),
            ),
        )
        .await;
        let result = match published {
            Ok(confirm) => step("confirm", confirm).await.map(|_| ()),
            Err(error) => Err(error),
        };
        // The channel is closed with 406; the confirm wait or the next call reports it.
        let result = match result {
            Ok(()) => step(
                "basic.get after bad publish",
                ch.basic_get(&queue, BasicGetOptions { no_ack: true }),
            )
            .await
            .map(|_| ()),
            Err(error) => Err(error),
        };
        expect_code(&format!("expiration {bad:?}"), result, PRECONDITION_FAILED);
    }
    assert_eq!(passive_count(&connection, &queue).await.expect("queue"), 0);
}

async fn bad_ttl_arguments_are_406(broker: &Broker) {
    let connection = common::amqp::connect(broker).await;
    let cases = [
        ("x-message-ttl", long(-1)),
        ("x-message-ttl", text("1000")),
        ("x-expires", long(0)),
        ("x-expires", long(-5)),
        ("x-expires", text("soon")),
    ];
    for (key, value) in cases {
        let ch = channel(&connection).await;
        let result = declare_with(&ch, &unique("bad-ttl"), args(&[(key, value.clone())])).await;
        expect_code(&format!("{key} = {value:?}"), result, PRECONDITION_FAILED);
    }
}

// ---- x-expires --------------------------------------------------------------------------------

/// Polls (passive declare, which is not a use) until the queue is gone.
async fn wait_until_deleted(connection: &Connection, name: &str) {
    let deadline = tokio::time::Instant::now() + EXPIRY_WAIT;
    loop {
        match passive_count(connection, name).await {
            Err(error) => {
                expect_code::<()>("queue gone", Err(error), NOT_FOUND);
                return;
            }
            Ok(_) => assert!(
                tokio::time::Instant::now() < deadline,
                "queue {name} still exists after {EXPIRY_WAIT:?}"
            ),
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

async fn queue_expires_when_unused(broker: &Broker) {
    let pair = pair(broker).await;
    let home = channel(&pair.home).await;
    let queue = unique("expires");
    declare_with(&home, &queue, args(&[("x-expires", long(150))]))
        .await
        .expect("declare");
    let away = confirming_channel(&pair.away).await;
    publish(
        &away,
        "",
        &queue,
        b"kept-until-deleted",
        BasicProperties::default(),
    )
    .await;
    wait_until_deleted(&pair.away, &queue).await;
}

async fn queue_with_consumer_does_not_expire(broker: &Broker) {
    let pair = pair(broker).await;
    let home = channel(&pair.home).await;
    let queue = unique("expires-consumed");
    // A lease long enough for the consumer to attach from the other shard on a loaded machine.
    declare_with(&home, &queue, args(&[("x-expires", long(1000))]))
        .await
        .expect("declare");
    let consumer_channel = channel(&pair.away).await;
    let consumer = consume(&consumer_channel, &queue, true).await;
    // Over two lease lengths with a consumer: the queue must still be there.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        passive_count(&pair.home, &queue).await.is_ok(),
        "queue expired under a consumer"
    );
    step(
        "basic.cancel",
        consumer_channel.basic_cancel(consumer.tag().as_str(), BasicCancelOptions::default()),
    )
    .await
    .expect("cancel");
    wait_until_deleted(&pair.home, &queue).await;
}

// ---- dead-lettering -------------------------------------------------------------------------

/// The `x-death` entries of a delivery's headers, newest first.
fn x_death(props: &BasicProperties) -> Vec<FieldTable> {
    let Some(headers) = props.headers() else {
        return Vec::new();
    };
    match header(headers, "x-death") {
        Some(AMQPValue::FieldArray(entries)) => entries
            .as_slice()
            .iter()
            .filter_map(|entry| match entry {
                AMQPValue::FieldTable(table) => Some(table.clone()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn death_count(entry: &FieldTable) -> Option<i64> {
    match header(entry, "count")? {
        AMQPValue::LongLongInt(n) => Some(*n),
        AMQPValue::LongInt(n) => Some(i64::from(*n)),
        _ => None,
    }
}

/// Polls basic.get until a message arrives, failing after [`EXPIRY_WAIT`].
async fn wait_for_message(ch: &Channel, queue: &str) -> lapin::message::BasicGetMessage {
    let deadline = tokio::time::Instant::now() + EXPIRY_WAIT;
    loop {
        if let Some(message) = get(ch, queue, false).await {
            return message;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing arrived in {queue} within {EXPIRY_WAIT:?}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

async fn declare_plain(ch: &Channel, name: &str) {
    declare_with(ch, name, FieldTable::default())
        .await
        .expect("declare");
}

async fn dead_letter_on_reject_with_x_death(broker: &Broker) {
    let pair = pair(broker).await;
    let home = channel(&pair.home).await;
    let dlx = unique("dlx");
    common::amqp::declare_exchange(&home, &dlx, lapin::ExchangeKind::Fanout).await;
    let dead = unique("dead");
    // The dead-letter queue lives on the other shard: the dead letter crosses the mesh.
    let away = confirming_channel(&pair.away).await;
    declare_plain(&away, &dead).await;
    common::amqp::bind(&away, &dead, &dlx, "").await;
    let work = unique("work");
    declare_with(
        &home,
        &work,
        args(&[("x-dead-letter-exchange", text(&dlx))]),
    )
    .await
    .expect("declare work");
    let headers = args(&[("app", text("kept"))]);
    publish(
        &away,
        "",
        &work,
        b"refused",
        BasicProperties::default().with_headers(headers),
    )
    .await;
    let got = get(&away, &work, false).await.expect("work message");
    step(
        "reject",
        away.basic_reject(
            got.delivery.delivery_tag,
            BasicRejectOptions { requeue: false },
        ),
    )
    .await
    .expect("reject");
    let dead_letter = wait_for_message(&away, &dead).await;
    assert_eq!(dead_letter.delivery.data, b"refused");
    assert_eq!(dead_letter.delivery.exchange.as_str(), dlx);
    assert_eq!(dead_letter.delivery.routing_key.as_str(), work);
    let props = &dead_letter.delivery.properties;
    let deaths = x_death(props);
    assert_eq!(deaths.len(), 1, "x-death: {deaths:?}");
    let entry = &deaths[0];
    assert_eq!(death_count(entry), Some(1));
    assert_eq!(header_text(entry, "reason").as_deref(), Some("rejected"));
    assert_eq!(header_text(entry, "queue").as_deref(), Some(work.as_str()));
    assert_eq!(header_text(entry, "exchange").as_deref(), Some(""));
    assert!(matches!(
        header(entry, "time"),
        Some(AMQPValue::Timestamp(_))
    ));
    match header(entry, "routing-keys") {
        Some(AMQPValue::FieldArray(keys)) => assert_eq!(
            keys.as_slice(),
            &[AMQPValue::LongString(LongString::from(work.as_str()))]
        ),
        other => panic!("routing-keys: {other:?}"),
    }
    let headers = props.headers().as_ref().expect("headers");
    assert_eq!(header_text(headers, "app").as_deref(), Some("kept"));
    assert_eq!(
        header_text(headers, "x-first-death-reason").as_deref(),
        Some("rejected")
    );
    assert_eq!(
        header_text(headers, "x-first-death-queue").as_deref(),
        Some(work.as_str())
    );
    assert_eq!(
        header_text(headers, "x-first-death-exchange").as_deref(),
        Some("")
    );
    assert_eq!(
        header_text(headers, "x-last-death-queue").as_deref(),
        Some(work.as_str())
    );
}

async fn dead_letter_on_expiry_with_routing_key(broker: &Broker) {
    let pair = pair(broker).await;
    let home = channel(&pair.home).await;
    let away = confirming_channel(&pair.away).await;
    let parked = unique("parked");
    declare_plain(&away, &parked).await;
    let work = unique("ttl-work");
    let arguments = args(&[
        ("x-dead-letter-exchange", text("")),
        ("x-dead-letter-routing-key", text(&parked)),
    ]);
    declare_with(&home, &work, arguments)
        .await
        .expect("declare");
    publish(&away, "", &work, b"late", with_expiration("40")).await;
    let dead_letter = wait_for_message(&away, &parked).await;
    assert_eq!(dead_letter.delivery.routing_key.as_str(), parked);
    let props = &dead_letter.delivery.properties;
    assert_eq!(props.expiration(), &None, "expiration removed");
    let deaths = x_death(props);
    assert_eq!(
        header_text(&deaths[0], "reason").as_deref(),
        Some("expired")
    );
    assert_eq!(
        header_text(&deaths[0], "original-expiration").as_deref(),
        Some("40")
    );
}

async fn dead_letter_retry_pattern_counts_deaths(broker: &Broker) {
    let pair = pair(broker).await;
    let home = channel(&pair.home).await;
    let away = confirming_channel(&pair.away).await;
    let work = unique("retry-work");
    let retry = unique("retry-wait");
    declare_with(
        &home,
        &work,
        args(&[
            ("x-dead-letter-exchange", text("")),
            ("x-dead-letter-routing-key", text(&retry)),
        ]),
    )
    .await
    .expect("declare work");
    declare_with(
        &away,
        &retry,
        args(&[
            ("x-message-ttl", long(30)),
            ("x-dead-letter-exchange", text("")),
            ("x-dead-letter-routing-key", text(&work)),
        ]),
    )
    .await
    .expect("declare retry");
    publish(&away, "", &work, b"job", BasicProperties::default()).await;
    let mut last = None;
    for attempt in 1..=2i64 {
        let got = wait_for_message(&away, &work).await;
        if attempt == 2 {
            last = Some(got.delivery.properties.clone());
        }
        step(
            "reject",
            away.basic_reject(
                got.delivery.delivery_tag,
                BasicRejectOptions { requeue: false },
            ),
        )
        .await
        .expect("reject");
    }
    // Second arrival: rejected once in work, expired once in retry.
    let deaths = x_death(&last.expect("second delivery"));
    let summary: Vec<_> = deaths
        .iter()
        .map(|e| {
            (
                header_text(e, "queue").unwrap_or_default(),
                header_text(e, "reason").unwrap_or_default(),
                death_count(e).unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (retry.clone(), "expired".to_string(), 1),
            (work.clone(), "rejected".to_string(), 1)
        ]
    );
    // Third arrival: both entries count 2; the latest death (expiry in retry) is first.
    let got = wait_for_message(&away, &work).await;
    let deaths = x_death(&got.delivery.properties);
    assert_eq!(
        header_text(&deaths[0], "queue").as_deref(),
        Some(retry.as_str())
    );
    assert_eq!(death_count(&deaths[0]), Some(2));
    assert_eq!(death_count(&deaths[1]), Some(2));
}

async fn dead_letter_cycle_without_reject_is_dropped(broker: &Broker) {
    let pair = pair(broker).await;
    let home = channel(&pair.home).await;
    let away = confirming_channel(&pair.away).await;
    let dlx = unique("cycle-x");
    common::amqp::declare_exchange(&home, &dlx, lapin::ExchangeKind::Fanout).await;
    let looping = unique("cycle");
    declare_with(
        &home,
        &looping,
        args(&[
            ("x-message-ttl", long(30)),
            ("x-dead-letter-exchange", text(&dlx)),
        ]),
    )
    .await
    .expect("declare");
    let observer = unique("observer");
    declare_plain(&away, &observer).await;
    common::amqp::bind(&home, &looping, &dlx, "").await;
    common::amqp::bind(&home, &observer, &dlx, "").await;
    publish(&away, "", &looping, b"once", BasicProperties::default()).await;
    // The observer gets the dead letter; the expiring queue would cycle, so it does not.
    wait_for_count(&pair.home, &observer, 1).await;
    tokio::time::sleep(common::ABSENCE_TIMEOUT).await;
    assert_eq!(
        passive_count(&pair.home, &observer)
            .await
            .expect("observer"),
        1
    );
    assert_eq!(passive_count(&pair.home, &looping).await.expect("cycle"), 0);
}

// ---- length limits ----------------------------------------------------------------------------

async fn bodies(ch: &Channel, queue: &str) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(body) = get_body(ch, queue).await {
        out.push(String::from_utf8_lossy(&body).into_owned());
    }
    out
}

async fn publish_expect(ch: &Channel, queue: &str, body: &[u8], ack: bool) {
    let confirmation = common::amqp::publish_confirmed(
        ch,
        "",
        queue,
        BasicPublishOptions::default(),
        body,
        BasicProperties::default(),
    )
    .await;
    assert_eq!(
        confirmation.is_ack(),
        ack,
        "confirm for {:?}: {confirmation:?}",
        String::from_utf8_lossy(body)
    );
}

async fn max_length_drop_head_dead_letters_oldest(broker: &Broker) {
    let pair = pair(broker).await;
    let home = channel(&pair.home).await;
    let away = confirming_channel(&pair.away).await;
    let overflow = unique("overflow");
    declare_plain(&away, &overflow).await;
    let queue = unique("maxlen");
    let arguments = args(&[
        ("x-max-length", long(2)),
        ("x-dead-letter-exchange", text("")),
        ("x-dead-letter-routing-key", text(&overflow)),
    ]);
    declare_with(&home, &queue, arguments)
        .await
        .expect("declare");
    for body in ["m1", "m2", "m3", "m4"] {
        publish_expect(&away, &queue, body.as_bytes(), true).await;
    }
    assert_eq!(bodies(&away, &queue).await, ["m3", "m4"]);
    wait_for_count(&pair.home, &overflow, 2).await;
    let first = get(&away, &overflow, true).await.expect("dead letter");
    assert_eq!(first.delivery.data, b"m1");
    let deaths = x_death(&first.delivery.properties);
    assert_eq!(header_text(&deaths[0], "reason").as_deref(), Some("maxlen"));
    assert_eq!(bodies(&away, &overflow).await, ["m2"]);
}

async fn max_length_bytes_drops_head(broker: &Broker) {
    let pair = pair(broker).await;
    let home = channel(&pair.home).await;
    let away = confirming_channel(&pair.away).await;
    let queue = unique("maxbytes");
    declare_with(&home, &queue, args(&[("x-max-length-bytes", long(10))]))
        .await
        .expect("declare");
    for body in ["aaaa", "bbbb", "cccc"] {
        publish_expect(&away, &queue, body.as_bytes(), true).await;
    }
    assert_eq!(bodies(&away, &queue).await, ["bbbb", "cccc"]);
}

async fn reject_publish_nacks_the_publisher(broker: &Broker) {
    let pair = pair(broker).await;
    let home = channel(&pair.home).await;
    let queue = unique("reject-publish");
    let arguments = args(&[
        ("x-max-length", long(1)),
        ("x-overflow", text("reject-publish")),
    ]);
    declare_with(&home, &queue, arguments)
        .await
        .expect("declare");
    for connection in [&pair.away, &pair.home] {
        let ch = confirming_channel(connection).await;
        publish_expect(&ch, &queue, b"fits", true).await;
        publish_expect(&ch, &queue, b"refused", false).await;
        assert_eq!(bodies(&ch, &queue).await, ["fits"]);
    }
}

async fn reject_publish_dlx_nacks_and_dead_letters(broker: &Broker) {
    let pair = pair(broker).await;
    let home = channel(&pair.home).await;
    let away = confirming_channel(&pair.away).await;
    let parked = unique("parked");
    declare_plain(&away, &parked).await;
    let queue = unique("reject-dlx");
    let arguments = args(&[
        ("x-max-length", long(1)),
        ("x-overflow", text("reject-publish-dlx")),
        ("x-dead-letter-exchange", text("")),
        ("x-dead-letter-routing-key", text(&parked)),
    ]);
    declare_with(&home, &queue, arguments)
        .await
        .expect("declare");
    publish_expect(&away, &queue, b"fits", true).await;
    publish_expect(&away, &queue, b"refused", false).await;
    let dead = wait_for_message(&away, &parked).await;
    assert_eq!(dead.delivery.data, b"refused");
    let deaths = x_death(&dead.delivery.properties);
    assert_eq!(header_text(&deaths[0], "reason").as_deref(), Some("maxlen"));
    assert_eq!(bodies(&away, &queue).await, ["fits"]);
}

async fn bad_length_arguments_are_406(broker: &Broker) {
    let connection = common::amqp::connect(broker).await;
    let cases = [
        ("x-max-length", long(-1)),
        ("x-max-length", text("10")),
        ("x-max-length-bytes", long(-1)),
        ("x-overflow", text("drop-tail")),
        ("x-overflow", long(1)),
        ("x-dead-letter-exchange", long(1)),
    ];
    for (key, value) in cases {
        let ch = channel(&connection).await;
        let result = declare_with(&ch, &unique("bad-len"), args(&[(key, value.clone())])).await;
        expect_code(&format!("{key} = {value:?}"), result, PRECONDITION_FAILED);
    }
}

// ---- consumers --------------------------------------------------------------------------------

async fn consume_with(ch: &Channel, queue: &str, arguments: FieldTable) -> lapin::Consumer {
    let options = BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    step(
        "basic.consume",
        ch.basic_consume(queue, "", options, arguments),
    )
    .await
    .expect("basic.consume")
}

async fn single_active_consumer_hands_over_on_cancel(broker: &Broker) {
    let pair = pair(broker).await;
    let home = channel(&pair.home).await;
    let queue = unique("sac");
    declare_with(
        &home,
        &queue,
        args(&[("x-single-active-consumer", AMQPValue::Boolean(true))]),
    )
    .await
    .expect("declare");
    let first_channel = channel(&pair.away).await;
    let mut first = consume_with(&first_channel, &queue, FieldTable::default()).await;
    let second_channel = channel(&pair.home).await;
    let mut second = consume_with(&second_channel, &queue, FieldTable::default()).await;
    let publisher = confirming_channel(&pair.away).await;
    for body in ["1", "2"] {
        publish(
            &publisher,
            "",
            &queue,
            body.as_bytes(),
            BasicProperties::default(),
        )
        .await;
    }
    assert_eq!(next_delivery(&mut first).await.data, b"1");
    assert_eq!(next_delivery(&mut first).await.data, b"2");
    step(
        "basic.cancel",
        first_channel.basic_cancel(first.tag().as_str(), BasicCancelOptions::default()),
    )
    .await
    .expect("cancel");
    publish(&publisher, "", &queue, b"3", BasicProperties::default()).await;
    assert_eq!(next_delivery(&mut second).await.data, b"3");
    assert_nothing_more(&mut second).await;

    let ch = channel(&pair.home).await;
    let result = declare_with(
        &ch,
        &unique("bad-sac"),
        args(&[("x-single-active-consumer", text("yes"))]),
    )
    .await;
    expect_code(
        "x-single-active-consumer = \"yes\"",
        result,
        PRECONDITION_FAILED,
    );
}

async fn consumer_priority_serves_highest_first(broker: &Broker) {
    let pair = pair(broker).await;
    let home = channel(&pair.home).await;
    let queue = unique("consumer-prio");
    declare_plain(&home, &queue).await;
    let low_channel = channel(&pair.away).await;
    let mut low = consume_with(&low_channel, &queue, args(&[("x-priority", long(0))])).await;
    let high_channel = channel(&pair.home).await;
    let mut high = consume_with(&high_channel, &queue, args(&[("x-priority", long(10))])).await;
    let publisher = confirming_channel(&pair.away).await;
    for body in ["a", "b", "c"] {
        publish(
            &publisher,
            "",
            &queue,
            body.as_bytes(),
            BasicProperties::default(),
        )
        .await;
    }
    for expected in ["a", "b", "c"] {
        assert_eq!(next_delivery(&mut high).await.data, expected.as_bytes());
    }
    assert_nothing_more(&mut low).await;
}
