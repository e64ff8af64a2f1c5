//! More RabbitMQ features, black-box, against 1 and 2 shards: x-delivery-limit, alternate
//! exchanges, user_id validation, CC/BCC, direct reply-to, delayed messages, deduplication.
//!
//! As in tests/it/features.rs: with 2 shards the queue lives on one shard ("home") and the
//! publisher on the other ("away"). Waits are bounded polls, never sleeps used to synchronise.

use crate::common;

use std::time::Duration;

use common::amqp::{
    assert_nothing_more, channel, confirming_channel, consume, expect_code, get, next_delivery,
    publish, publish_confirmed,
};
use common::fixtures::*;
use common::{step, unique, Broker};
use lapin::options::*;
use lapin::types::{AMQPValue, FieldArray, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection};

const PRECONDITION_FAILED: u16 = 406;
/// Connections opened at most while looking for one on each of two shards.
/// Longest a poll waits for something due within a few hundred ms.
const ARRIVAL_WAIT: Duration = Duration::from_secs(5);
const POLL_INTERVAL: Duration = Duration::from_millis(20);

per_shard_count!(
    delivery_limit_dead_letters_after_too_many_returns,
    delivery_limit_bad_arguments_are_406,
    alternate_exchange_takes_unroutable_messages,
    mandatory_returned_only_when_the_alternate_does_not_route,
    user_id_must_match_the_login_user,
    cc_and_bcc_add_routing_keys_and_bcc_is_stripped,
    cc_on_the_default_exchange_names_queues,
    cc_that_is_not_an_array_is_406,
    cc_keys_route_dead_letters_too,
    direct_reply_to_rpc_round_trip,
    direct_reply_to_gone_consumer_is_returned,
    direct_reply_to_bad_uses_are_406,
    delayed_messages_routed_when_their_delay_passes,
    delayed_exchange_routes_by_its_delayed_type,
    delayed_exchange_bad_arguments_are_406,
    deduplication_drops_repeats_and_still_confirms,
    deduplication_window_is_bounded_by_size_and_ttl,
    deduplication_bad_arguments_are_406,
);

fn header_int(props: &BasicProperties, key: &str) -> Option<i64> {
    match header(props.headers().as_ref()?, key)? {
        AMQPValue::LongLongInt(n) => Some(*n),
        AMQPValue::LongInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortInt(n) => Some(i64::from(*n)),
        _ => None,
    }
}

async fn declare_with(ch: &Channel, name: &str, arguments: FieldTable) -> lapin::Result<u32> {
    step(
        "queue.declare",
        ch.queue_declare(name, QueueDeclareOptions::default(), arguments),
    )
    .await
    .map(|queue| queue.message_count())
}

async fn declare_plain(ch: &Channel, name: &str) {
    declare_with(ch, name, FieldTable::default())
        .await
        .expect("declare");
}

/// Polls basic.get until a message arrives, failing after [`ARRIVAL_WAIT`].
async fn wait_for_message(ch: &Channel, queue: &str) -> lapin::message::BasicGetMessage {
    let deadline = tokio::time::Instant::now() + ARRIVAL_WAIT;
    loop {
        if let Some(message) = get(ch, queue, false).await {
            return message;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing arrived in {queue} within {ARRIVAL_WAIT:?}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

async fn get_body(ch: &Channel, queue: &str) -> Option<Vec<u8>> {
    get(ch, queue, true).await.map(|m| m.delivery.data)
}

/// Sends a request that fails with a channel error and returns its result, following up with a
/// basic.get when the failure only shows on the next call (publish errors are asynchronous).
async fn channel_error_after<T>(
    ch: &Channel,
    queue: &str,
    result: lapin::Result<T>,
) -> lapin::Result<()> {
    match result {
        Ok(_) => step(
            "basic.get after the failing call",
            ch.basic_get(queue, BasicGetOptions { no_ack: true }),
        )
        .await
        .map(|_| ()),
        Err(error) => Err(error),
    }
}

// ---- x-delivery-limit -------------------------------------------------------------------------

async fn delivery_limit_dead_letters_after_too_many_returns(broker: &Broker) {
    let pair = pair(broker).await;
    let home = channel(&pair.home).await;
    let away = confirming_channel(&pair.away).await;
    let dead = unique("limit-dead");
    declare_plain(&away, &dead).await;
    let work = unique("limit-work");
    let arguments = args(&[
        ("x-delivery-limit", long(2)),
        ("x-dead-letter-exchange", text("")),
        ("x-dead-letter-routing-key", text(&dead)),
    ]);
    declare_with(&home, &work, arguments)
        .await
        .expect("declare");
    publish(&away, "", &work, b"poison", BasicProperties::default()).await;
    let reader = channel(&pair.away).await;
    // Delivered three times (the first plus two redeliveries), returned each time.
    for expected in [None, Some(1), Some(2)] {
        let got = get(&reader, &work, false).await.expect("work message");
        assert_eq!(
            header_int(&got.delivery.properties, "x-delivery-count"),
            expected
        );
        let nack = BasicNackOptions {
            multiple: false,
            requeue: true,
        };
        step("nack", reader.basic_nack(got.delivery.delivery_tag, nack))
            .await
            .expect("nack");
    }
    let dead_letter = wait_for_message(&away, &dead).await;
    assert_eq!(dead_letter.delivery.data, b"poison");
    let headers = dead_letter
        .delivery
        .properties
        .headers()
        .clone()
        .expect("headers");
    assert_eq!(
        header_text(&headers, "x-first-death-reason").as_deref(),
        Some("delivery_limit")
    );
    assert!(
        get(&reader, &work, true).await.is_none(),
        "work queue empty"
    );
}

async fn delivery_limit_bad_arguments_are_406(broker: &Broker) {
    let connection = common::amqp::connect(broker).await;
    for bad in [long(-1), text("3")] {
        let ch = channel(&connection).await;
        let result = declare_with(
            &ch,
            &unique("bad-limit"),
            args(&[("x-delivery-limit", bad)]),
        )
        .await;
        expect_code("bad x-delivery-limit", result, PRECONDITION_FAILED);
    }
}

// ---- alternate exchange -----------------------------------------------------------------------

fn mandatory() -> BasicPublishOptions {
    BasicPublishOptions {
        mandatory: true,
        ..Default::default()
    }
}

async fn declare_exchange_with(ch: &Channel, name: &str, kind: &str, arguments: FieldTable) {
    step(
        "exchange.declare",
        ch.exchange_declare(
            name,
            lapin::ExchangeKind::Custom(kind.to_string()),
            ExchangeDeclareOptions::default(),
            arguments,
        ),
    )
    .await
    .expect("exchange.declare");
}

async fn alternate_exchange_takes_unroutable_messages(broker: &Broker) {
    let pair = pair(broker).await;
    let home = channel(&pair.home).await;
    let away = confirming_channel(&pair.away).await;
    let alternate = unique("ae");
    declare_exchange_with(&home, &alternate, "fanout", FieldTable::default()).await;
    let main = unique("ae-main");
    let arguments = args(&[("alternate-exchange", text(&alternate))]);
    declare_exchange_with(&home, &main, "direct", arguments).await;
    let bound = unique("ae-bound");
    let unrouted = unique("ae-unrouted");
    declare_plain(&home, &bound).await;
    declare_plain(&home, &unrouted).await;
    common::amqp::bind(&home, &bound, &main, "k").await;
    common::amqp::bind(&home, &unrouted, &alternate, "").await;

    let confirmation = publish_confirmed(
        &away,
        &main,
        "k",
        mandatory(),
        b"routed",
        BasicProperties::default(),
    )
    .await;
    assert!(confirmation.take_message().is_none(), "routed: no return");
    let confirmation = publish_confirmed(
        &away,
        &main,
        "other",
        mandatory(),
        b"lost",
        BasicProperties::default(),
    )
    .await;
    assert!(confirmation.is_ack());
    assert!(
        confirmation.take_message().is_none(),
        "the alternate routed it: no return"
    );
    assert_eq!(
        get_body(&away, &bound).await.as_deref(),
        Some(&b"routed"[..])
    );
    assert!(get_body(&away, &bound).await.is_none());
    let got = get(&away, &unrouted, true)
        .await
        .expect("in the alternate's queue");
    assert_eq!(got.delivery.data, b"lost");
    assert_eq!(got.delivery.exchange.as_str(), main, "keeps its exchange");
    assert_eq!(got.delivery.routing_key.as_str(), "other");
}

async fn mandatory_returned_only_when_the_alternate_does_not_route(broker: &Broker) {
    let pair = pair(broker).await;
    let home = channel(&pair.home).await;
    let away = confirming_channel(&pair.away).await;
    // An alternate with no bindings routes nothing either.
    let alternate = unique("ae-empty");
    declare_exchange_with(&home, &alternate, "direct", FieldTable::default()).await;
    let main = unique("ae-main");
    let arguments = args(&[("alternate-exchange", text(&alternate))]);
    declare_exchange_with(&home, &main, "topic", arguments).await;
    let confirmation = publish_confirmed(
        &away,
        &main,
        "a.b",
        mandatory(),
        b"nowhere",
        BasicProperties::default(),
    )
    .await;
    assert!(confirmation.is_ack(), "unroutable is still acked");
    let returned = confirmation.take_message().expect("basic.return");
    assert_eq!(returned.reply_code, 312);
    assert_eq!(returned.data, b"nowhere");
    // An alternate that does not exist is the same as none.
    let dangling = unique("ae-dangling");
    let arguments = args(&[("alternate-exchange", text(&unique("missing")))]);
    declare_exchange_with(&home, &dangling, "fanout", arguments).await;
    let confirmation = publish_confirmed(
        &away,
        &dangling,
        "",
        mandatory(),
        b"x",
        BasicProperties::default(),
    )
    .await;
    assert!(confirmation.take_message().is_some(), "returned");
}

// ---- user_id ----------------------------------------------------------------------------------

async fn user_id_must_match_the_login_user(broker: &Broker) {
    let pair = pair(broker).await;
    let home = channel(&pair.home).await;
    let queue = unique("user-id");
    declare_plain(&home, &queue).await;
    let away = confirming_channel(&pair.away).await;
    let own = BasicProperties::default().with_user_id(ShortString::from("guest"));
    publish(&away, "", &queue, b"mine", own).await;
    let got = get(&away, &queue, true).await.expect("message");
    assert_eq!(
        got.delivery
            .properties
            .user_id()
            .as_ref()
            .map(|u| u.as_str()),
        Some("guest")
    );

    let ch = confirming_channel(&pair.away).await;
    let forged = BasicProperties::default().with_user_id(ShortString::from("admin"));
    let published = step(
        "basic.publish",
        ch.basic_publish(
            "",
            &queue,
            BasicPublishOptions::default(),
            b"forged",
            forged,
        ),
    )
    .await;
    let result = match published {
        Ok(confirm) => step("confirm", confirm).await.map(|_| ()),
        Err(error) => Err(error),
    };
    let result = channel_error_after(&ch, &queue, result).await;
    expect_code("forged user_id", result, PRECONDITION_FAILED);
    assert!(
        get(&away, &queue, true).await.is_none(),
        "forged message not enqueued"
    );
}

// ---- CC / BCC ---------------------------------------------------------------------------------

fn key_array(keys: &[&str]) -> AMQPValue {
    AMQPValue::FieldArray(FieldArray::from(
        keys.iter().map(|k| text(k)).collect::<Vec<_>>(),
    ))
}

async fn cc_and_bcc_add_routing_keys_and_bcc_is_stripped(broker: &Broker) {
    let pair = pair(broker).await;
    let home = channel(&pair.home).await;
    let away = confirming_channel(&pair.away).await;
    let exchange = unique("cc-x");
    declare_exchange_with(&home, &exchange, "direct", FieldTable::default()).await;
    // One queue on each side, so the extra keys cross the mesh too.
    let (main, cc, bcc, other) = (
        unique("cc-main"),
        unique("cc-cc"),
        unique("cc-bcc"),
        unique("cc-other"),
    );
    declare_plain(&home, &main).await;
    declare_plain(&away, &cc).await;
    declare_plain(&home, &bcc).await;
    declare_plain(&away, &other).await;
    for (queue, key) in [
        (&main, "main"),
        (&cc, "cc"),
        (&bcc, "bcc"),
        (&other, "other"),
    ] {
        common::amqp::bind(&home, queue, &exchange, key).await;
    }
    let headers = args(&[
        ("CC", key_array(&["cc", "nowhere"])),
        ("BCC", key_array(&["bcc", "main"])),
        ("app", text("kept")),
    ]);
    let props = BasicProperties::default().with_headers(headers);
    publish(&away, &exchange, "main", b"m", props).await;
    for queue in [&main, &cc, &bcc] {
        let got = get(&away, queue, true).await.expect("a copy");
        assert_eq!(got.delivery.data, b"m");
        assert_eq!(
            got.delivery.routing_key.as_str(),
            "main",
            "routing key unchanged"
        );
        let headers = got.delivery.properties.headers().clone().expect("headers");
        assert!(header(&headers, "BCC").is_none(), "BCC stripped in {queue}");
        assert_eq!(header(&headers, "CC"), Some(&key_array(&["cc", "nowhere"])));
        assert_eq!(header_text(&headers, "app").as_deref(), Some("kept"));
        assert!(
            get(&away, queue, true).await.is_none(),
            "one copy per queue"
        );
    }
    assert!(get(&away, &other, true).await.is_none());
}

async fn cc_on_the_default_exchange_names_queues(broker: &Broker) {
    let pair = pair(broker).await;
    let home = channel(&pair.home).await;
    let away = confirming_channel(&pair.away).await;
    let (first, second) = (unique("cc-default-1"), unique("cc-default-2"));
    declare_plain(&home, &first).await;
    declare_plain(&away, &second).await;
    let headers = args(&[("BCC", key_array(&[&second]))]);
    let confirmation = publish_confirmed(
        &away,
        "",
        &unique("missing"),
        mandatory(),
        b"bcc-only",
        BasicProperties::default().with_headers(headers),
    )
    .await;
    assert!(
        confirmation.take_message().is_none(),
        "routed by BCC: no return"
    );
    assert_eq!(
        get_body(&home, &second).await.as_deref(),
        Some(&b"bcc-only"[..])
    );
    assert!(get(&home, &first, true).await.is_none());
}

/// RabbitMQ dead-letters with the message's routing keys, CC included, unless the queue sets
/// x-dead-letter-routing-key (which replaces them all and drops CC).
async fn cc_keys_route_dead_letters_too(broker: &Broker) {
    let pair = pair(broker).await;
    let home = channel(&pair.home).await;
    let away = confirming_channel(&pair.away).await;
    let dlx = unique("cc-dlx");
    declare_exchange_with(&home, &dlx, "direct", FieldTable::default()).await;
    let (main, cc) = (unique("cc-dead-main"), unique("cc-dead-cc"));
    declare_plain(&home, &main).await;
    declare_plain(&away, &cc).await;
    common::amqp::bind(&home, &main, &dlx, "main").await;
    common::amqp::bind(&home, &cc, &dlx, "cc").await;
    let work = unique("cc-work");
    let arguments = args(&[
        ("x-dead-letter-exchange", text(&dlx)),
        ("x-message-ttl", long(0)),
    ]);
    declare_with(&home, &work, arguments)
        .await
        .expect("declare");
    let headers = args(&[("CC", key_array(&["cc"]))]);
    let props = BasicProperties::default().with_headers(headers);
    // The dead letter goes by the original key (the queue's name, bound nowhere on the DLX)
    // and by the CC key "cc": only `cc` gets it.
    publish(&away, "", &work, b"expired", props).await;
    let got = wait_for_message(&away, &cc).await;
    assert_eq!(got.delivery.data, b"expired");
    assert!(get(&away, &main, true).await.is_none());
}

async fn cc_that_is_not_an_array_is_406(broker: &Broker) {
    let connection = common::amqp::connect(broker).await;
    let queue = unique("cc-bad");
    declare_plain(&channel(&connection).await, &queue).await;
    for name in ["CC", "BCC"] {
        let ch = confirming_channel(&connection).await;
        let headers = args(&[(name, text(&queue))]);
        let published = step(
            "basic.publish",
            ch.basic_publish(
                "",
                &queue,
                BasicPublishOptions::default(),
                b"bad",
                BasicProperties::default().with_headers(headers),
            ),
        )
        .await;
        let result = match published {
            Ok(confirm) => step("confirm", confirm).await.map(|_| ()),
            Err(error) => Err(error),
        };
        let result = channel_error_after(&ch, &queue, result).await;
        expect_code(&format!("{name} as a string"), result, PRECONDITION_FAILED);
    }
}

// ---- direct reply-to --------------------------------------------------------------------------

const REPLY_TO: &str = "amq.rabbitmq.reply-to";

async fn reply_consumer(ch: &Channel) -> lapin::Consumer {
    consume(ch, REPLY_TO, true).await
}

/// The server side of one RPC: takes the request from `queue` and answers `reply_to`.
async fn serve_one(server: &Channel, queue: &str, options: BasicPublishOptions) -> (String, bool) {
    let request = wait_for_message(server, queue).await;
    let reply_to = request
        .delivery
        .properties
        .reply_to()
        .as_ref()
        .map(|r| r.as_str().to_string())
        .expect("reply_to set");
    let mut answer = b"re: ".to_vec();
    answer.extend_from_slice(&request.delivery.data);
    let confirmation = publish_confirmed(
        server,
        "",
        &reply_to,
        options,
        &answer,
        BasicProperties::default(),
    )
    .await;
    step(
        "ack request",
        request.delivery.ack(BasicAckOptions::default()),
    )
    .await
    .expect("ack");
    (reply_to, confirmation.take_message().is_some())
}

async fn direct_reply_to_rpc_round_trip(broker: &Broker) {
    let pair = pair(broker).await;
    // The server (and its queue) on one shard, the client on the other.
    let server = confirming_channel(&pair.home).await;
    let requests = unique("rpc");
    declare_plain(&server, &requests).await;
    let client = channel(&pair.away).await;
    let mut replies = reply_consumer(&client).await;
    for n in 0..3 {
        let body = format!("request-{n}");
        let props = BasicProperties::default().with_reply_to(ShortString::from(REPLY_TO));
        step(
            "publish request",
            client.basic_publish(
                "",
                &requests,
                BasicPublishOptions::default(),
                body.as_bytes(),
                props,
            ),
        )
        .await
        .expect("publish");
        let (reply_to, returned) = serve_one(&server, &requests, mandatory()).await;
        assert!(reply_to.starts_with("amq.rabbitmq.reply-to."), "{reply_to}");
        assert!(!returned, "reply to a live consumer is not returned");
        let reply = next_delivery(&mut replies).await;
        assert_eq!(reply.data, format!("re: {body}").as_bytes());
        assert_eq!(reply.routing_key.as_str(), reply_to);
    }
    assert_nothing_more(&mut replies).await;
}

async fn direct_reply_to_gone_consumer_is_returned(broker: &Broker) {
    let pair = pair(broker).await;
    let server = confirming_channel(&pair.home).await;
    let requests = unique("rpc-gone");
    declare_plain(&server, &requests).await;
    let client = channel(&pair.away).await;
    let _replies = reply_consumer(&client).await;
    let props = BasicProperties::default().with_reply_to(ShortString::from(REPLY_TO));
    step(
        "publish request",
        client.basic_publish(
            "",
            &requests,
            BasicPublishOptions::default(),
            b"late",
            props,
        ),
    )
    .await
    .expect("publish");
    // Wait until the request is queued, then let the client go away before the answer.
    let request = wait_for_message(&server, &requests).await;
    step("close client channel", client.close(200, "bye"))
        .await
        .expect("close");
    let reply_to = request
        .delivery
        .properties
        .reply_to()
        .as_ref()
        .map(|r| r.as_str().to_string())
        .expect("reply_to");
    let confirmation = publish_confirmed(
        &server,
        "",
        &reply_to,
        mandatory(),
        b"too late",
        BasicProperties::default(),
    )
    .await;
    assert!(confirmation.is_ack());
    let returned = confirmation
        .take_message()
        .expect("returned: consumer gone");
    assert_eq!(returned.reply_code, 312);
    // A made-up address is just as unroutable.
    let confirmation = publish_confirmed(
        &server,
        "",
        "amq.rabbitmq.reply-to.not-an-address",
        mandatory(),
        b"x",
        BasicProperties::default(),
    )
    .await;
    assert!(
        confirmation.take_message().is_some(),
        "returned: bad address"
    );
}

async fn direct_reply_to_bad_uses_are_406(broker: &Broker) {
    let connection = common::amqp::connect(broker).await;
    // Consuming with acknowledgements.
    let ch = channel(&connection).await;
    let result = step(
        "basic.consume",
        ch.basic_consume(
            REPLY_TO,
            "",
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await;
    expect_code(
        "reply consumer with acks",
        result.map(|_| ()),
        PRECONDITION_FAILED,
    );
    // Publishing a request without a reply consumer on the channel.
    let queue = unique("rpc-no-consumer");
    declare_plain(&channel(&connection).await, &queue).await;
    let ch = confirming_channel(&connection).await;
    let props = BasicProperties::default().with_reply_to(ShortString::from(REPLY_TO));
    let published = step(
        "basic.publish",
        ch.basic_publish("", &queue, BasicPublishOptions::default(), b"r", props),
    )
    .await;
    let result = match published {
        Ok(confirm) => step("confirm", confirm).await.map(|_| ()),
        Err(error) => Err(error),
    };
    let result = channel_error_after(&ch, &queue, result).await;
    expect_code(
        "reply_to without a reply consumer",
        result,
        PRECONDITION_FAILED,
    );
}

// ---- delayed messages -------------------------------------------------------------------------

fn delayed_args(routing: &str) -> FieldTable {
    args(&[("x-delayed-type", text(routing))])
}

fn with_delay(ms: i64) -> BasicProperties {
    BasicProperties::default().with_headers(args(&[("x-delay", long(ms))]))
}

/// Message count from a passive declare.
async fn queue_count(connection: &Connection, name: &str) -> u32 {
    let ch = channel(connection).await;
    let options = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let count = step(
        "passive queue.declare",
        ch.queue_declare(name, options, FieldTable::default()),
    )
    .await
    .expect("queue exists")
    .message_count();
    let _ = ch.close(200, "done").await;
    count
}

async fn wait_for_count(connection: &Connection, name: &str, expected: u32) {
    let deadline = tokio::time::Instant::now() + ARRIVAL_WAIT;
    loop {
        let count = queue_count(connection, name).await;
        if count == expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "queue {name}: {count} messages, expected {expected} within {ARRIVAL_WAIT:?}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

async fn delayed_messages_routed_when_their_delay_passes(broker: &Broker) {
    let pair = pair(broker).await;
    let home = channel(&pair.home).await;
    let away = confirming_channel(&pair.away).await;
    let exchange = unique("delayed");
    declare_exchange_with(
        &home,
        &exchange,
        "x-delayed-message",
        delayed_args("direct"),
    )
    .await;
    let queue = unique("delayed-q");
    declare_plain(&home, &queue).await;
    common::amqp::bind(&home, &queue, &exchange, "k").await;
    publish(&away, &exchange, "k", b"long", with_delay(1500)).await;
    publish(&away, &exchange, "k", b"short", with_delay(200)).await;
    publish(&away, &exchange, "k", b"now", BasicProperties::default()).await;
    publish(&away, &exchange, "k", b"negative", with_delay(-5)).await;
    // Not routed before its time: only the undelayed messages are there yet.
    assert_eq!(queue_count(&pair.home, &queue).await, 2);
    wait_for_count(&pair.home, &queue, 4).await;
    let mut order = Vec::new();
    while let Some(body) = get_body(&home, &queue).await {
        order.push(String::from_utf8_lossy(&body).into_owned());
    }
    assert_eq!(order, ["now", "negative", "short", "long"]);
}

async fn delayed_exchange_routes_by_its_delayed_type(broker: &Broker) {
    let pair = pair(broker).await;
    let home = channel(&pair.home).await;
    let away = confirming_channel(&pair.away).await;
    let exchange = unique("delayed-topic");
    declare_exchange_with(&home, &exchange, "x-delayed-message", delayed_args("topic")).await;
    let (matched, other) = (unique("delayed-match"), unique("delayed-other"));
    declare_plain(&home, &matched).await;
    declare_plain(&away, &other).await;
    common::amqp::bind(&home, &matched, &exchange, "a.*").await;
    common::amqp::bind(&home, &other, &exchange, "b.#").await;
    publish(&away, &exchange, "a.x", b"later", with_delay(100)).await;
    wait_for_count(&pair.home, &matched, 1).await;
    assert_eq!(queue_count(&pair.home, &other).await, 0);
    let got = get(&home, &matched, true).await.expect("routed");
    assert_eq!(got.delivery.data, b"later");
    assert_eq!(got.delivery.exchange.as_str(), exchange);
    assert_eq!(got.delivery.routing_key.as_str(), "a.x");
}

async fn delayed_exchange_bad_arguments_are_406(broker: &Broker) {
    let connection = common::amqp::connect(broker).await;
    for arguments in [
        FieldTable::default(),
        delayed_args("bogus"),
        delayed_args("x-delayed-message"),
        args(&[("x-delayed-type", long(1))]),
    ] {
        let ch = channel(&connection).await;
        let result = step(
            "exchange.declare",
            ch.exchange_declare(
                &unique("bad-delayed"),
                lapin::ExchangeKind::Custom("x-delayed-message".into()),
                ExchangeDeclareOptions::default(),
                arguments.clone(),
            ),
        )
        .await;
        expect_code(
            &format!("x-delayed-type {arguments:?}"),
            result,
            PRECONDITION_FAILED,
        );
    }
    // Redeclared with another routing type.
    let name = unique("delayed-redeclare");
    let ch = channel(&connection).await;
    declare_exchange_with(&ch, &name, "x-delayed-message", delayed_args("fanout")).await;
    let result = step(
        "exchange.declare",
        ch.exchange_declare(
            &name,
            lapin::ExchangeKind::Custom("x-delayed-message".into()),
            ExchangeDeclareOptions::default(),
            delayed_args("direct"),
        ),
    )
    .await;
    expect_code("other x-delayed-type", result, PRECONDITION_FAILED);
}

// ---- deduplication ----------------------------------------------------------------------------

fn with_id(id: &str) -> BasicProperties {
    BasicProperties::default().with_message_id(ShortString::from(id))
}

fn with_dedup_header(value: AMQPValue) -> BasicProperties {
    BasicProperties::default().with_headers(args(&[("x-deduplication-header", value)]))
}

fn dedup_args(cache_size: i64, ttl_ms: Option<i64>) -> FieldTable {
    let mut entries = vec![
        ("x-message-deduplication", AMQPValue::Boolean(true)),
        ("x-cache-size", long(cache_size)),
    ];
    if let Some(ttl) = ttl_ms {
        entries.push(("x-cache-ttl", long(ttl)));
    }
    args(&entries)
}

async fn bodies(ch: &Channel, queue: &str) -> Vec<String> {
    let mut order = Vec::new();
    while let Some(body) = get_body(ch, queue).await {
        order.push(String::from_utf8_lossy(&body).into_owned());
    }
    order
}

async fn deduplication_drops_repeats_and_still_confirms(broker: &Broker) {
    let pair = pair(broker).await;
    let home = channel(&pair.home).await;
    let queue = unique("dedup");
    declare_with(&home, &queue, dedup_args(100, None))
        .await
        .expect("declare");
    let away = confirming_channel(&pair.away).await;
    // `publish` asserts an ack for every one of these, duplicates included.
    publish(&away, "", &queue, b"a", with_id("1")).await;
    publish(&away, "", &queue, b"a-retry", with_id("1")).await;
    publish(&away, "", &queue, b"b", with_id("2")).await;
    publish(&away, "", &queue, b"plain", BasicProperties::default()).await;
    publish(&away, "", &queue, b"plain", BasicProperties::default()).await;
    // The header wins over message_id.
    publish(
        &away,
        "",
        &queue,
        b"h",
        with_dedup_header(text("k")).with_message_id("1".into()),
    )
    .await;
    publish(&away, "", &queue, b"h-retry", with_dedup_header(text("k"))).await;
    publish(&away, "", &queue, b"n", with_dedup_header(long(7))).await;
    publish(&away, "", &queue, b"n-retry", with_dedup_header(long(7))).await;
    assert_eq!(
        bodies(&away, &queue).await,
        ["a", "b", "plain", "plain", "h", "n"]
    );
    // Consumed messages stay in the window: a late retry is still a duplicate.
    publish(&away, "", &queue, b"a-late", with_id("1")).await;
    assert!(get(&away, &queue, true).await.is_none());
}

async fn deduplication_window_is_bounded_by_size_and_ttl(broker: &Broker) {
    let pair = pair(broker).await;
    let home = channel(&pair.home).await;
    let away = confirming_channel(&pair.away).await;
    let sized = unique("dedup-size");
    declare_with(&home, &sized, dedup_args(2, None))
        .await
        .expect("declare");
    for id in ["1", "2", "3", "1"] {
        publish(&away, "", &sized, id.as_bytes(), with_id(id)).await;
    }
    assert_eq!(
        bodies(&away, &sized).await,
        ["1", "2", "3", "1"],
        "1 pushed out by 3"
    );

    let timed = unique("dedup-ttl");
    declare_with(&home, &timed, dedup_args(100, Some(100)))
        .await
        .expect("declare");
    publish(&away, "", &timed, b"first", with_id("x")).await;
    // Retry until the key has left the window (bounded): then it is accepted again.
    let deadline = tokio::time::Instant::now() + ARRIVAL_WAIT;
    loop {
        publish(&away, "", &timed, b"retry", with_id("x")).await;
        if queue_count(&pair.away, &timed).await == 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "x-cache-ttl never let the key go"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    assert_eq!(bodies(&away, &timed).await, ["first", "retry"]);
}

async fn deduplication_bad_arguments_are_406(broker: &Broker) {
    let connection = common::amqp::connect(broker).await;
    let enabled = ("x-message-deduplication", AMQPValue::Boolean(true));
    let cases: Vec<Vec<(&str, AMQPValue)>> = vec![
        vec![enabled.clone()],
        vec![enabled.clone(), ("x-cache-size", long(0))],
        vec![enabled.clone(), ("x-cache-size", long(-1))],
        vec![enabled.clone(), ("x-cache-size", text("10"))],
        vec![enabled.clone(), ("x-cache-size", long(1_000_000_000))],
        vec![
            enabled.clone(),
            ("x-cache-size", long(10)),
            ("x-cache-ttl", long(0)),
        ],
        vec![
            enabled.clone(),
            ("x-cache-size", long(10)),
            ("x-cache-ttl", text("5")),
        ],
        vec![
            ("x-message-deduplication", text("yes")),
            ("x-cache-size", long(10)),
        ],
    ];
    for case in cases {
        let ch = channel(&connection).await;
        let result = declare_with(&ch, &unique("bad-dedup"), args(&case)).await;
        expect_code(&format!("{case:?}"), result, PRECONDITION_FAILED);
    }
}

/// Durable delayed messages: a persistent message held by a durable delayed exchange is routed
/// after a restart (a transient one is not kept).
mod delayed_message_survives_restart {
    #[tokio::test]
    async fn shards_1() {
        super::delayed_survives_restart(1).await;
    }
    #[tokio::test]
    async fn shards_2() {
        super::delayed_survives_restart(2).await;
    }
}

async fn delayed_survives_restart(shards: usize) {
    let mut broker = Broker::start(shards);
    if broker.is_external() {
        return;
    }
    let exchange = unique("delayed-durable");
    let queue = unique("delayed-durable-q");
    {
        let pair = pair(&broker).await;
        let home = channel(&pair.home).await;
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        step(
            "exchange.declare",
            home.exchange_declare(
                &exchange,
                lapin::ExchangeKind::Custom("x-delayed-message".into()),
                durable,
                delayed_args("direct"),
            ),
        )
        .await
        .expect("declare exchange");
        let options = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        step(
            "queue.declare",
            home.queue_declare(&queue, options, FieldTable::default()),
        )
        .await
        .expect("declare queue");
        common::amqp::bind(&home, &queue, &exchange, "k").await;
        let away = confirming_channel(&pair.away).await;
        let persistent = with_delay(1500).with_delivery_mode(2);
        publish(&away, &exchange, "k", b"kept", persistent).await;
        publish(&away, &exchange, "k", b"transient", with_delay(1500)).await;
        assert_eq!(queue_count(&pair.home, &queue).await, 0, "still held");
    }
    broker.restart_same_dir();
    let connection = common::amqp::connect(&broker).await;
    wait_for_count(&connection, &queue, 1).await;
    let ch = channel(&connection).await;
    assert_eq!(get_body(&ch, &queue).await.as_deref(), Some(&b"kept"[..]));
    // Routed once: its log record was settled, so a second restart does not bring it back.
    drop(ch);
    drop(connection);
    broker.restart_same_dir();
    let connection = common::amqp::connect(&broker).await;
    assert_eq!(queue_count(&connection, &queue).await, 0);
}

/// A durable deduplicating queue rebuilds its window from the messages it recovers.
mod deduplication_survives_restart {
    #[tokio::test]
    async fn shards_1() {
        super::dedup_survives_restart(1).await;
    }
    #[tokio::test]
    async fn shards_2() {
        super::dedup_survives_restart(2).await;
    }
}

async fn dedup_survives_restart(shards: usize) {
    let mut broker = Broker::start(shards);
    if broker.is_external() {
        return;
    }
    let queue = unique("dedup-durable");
    let options = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    {
        let pair = pair(&broker).await;
        let home = channel(&pair.home).await;
        step(
            "queue.declare",
            home.queue_declare(&queue, options, dedup_args(10, None)),
        )
        .await
        .expect("declare");
        let away = confirming_channel(&pair.away).await;
        publish(
            &away,
            "",
            &queue,
            b"once",
            with_id("1").with_delivery_mode(2),
        )
        .await;
    }
    broker.restart_same_dir();
    let connection = common::amqp::connect(&broker).await;
    let ch = confirming_channel(&connection).await;
    publish(
        &ch,
        "",
        &queue,
        b"retry",
        with_id("1").with_delivery_mode(2),
    )
    .await;
    assert_eq!(bodies(&ch, &queue).await, ["once"]);
}
