//! With 2 shards, a publisher on one shard reaches a consumer on the other, for every exchange
//! type, and each publisher's order is kept. The broker reports a connection's shard as
//! `ringmq_shard` in connection.start's server properties; `shard_probe` reads it.

use crate::common;

use common::amqp::{
    self, assert_nothing_more, channel, confirming_channel, consume, next_delivery,
};
use common::shard_probe;
use common::{step, unique, Broker};
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ExchangeKind};

const SHARDS: usize = 2;
/// Connections opened at most while looking for one on every shard. SO_REUSEPORT spreads by
/// a hash of the 4-tuple, so the chance of missing a shard after this many is negligible.
const SHARD_SEARCH_CONNECTIONS_MAX: usize = 64;
const MESSAGES_PER_PUBLISHER: u32 = 200;

#[derive(Clone, Copy, Debug)]
enum Route {
    Default,
    Direct,
    Fanout,
    Topic,
    Headers,
}

const ROUTES: [Route; 5] = [
    Route::Default,
    Route::Direct,
    Route::Fanout,
    Route::Topic,
    Route::Headers,
];

/// One connection per shard, index = shard (all the same connection if the broker does not
/// report shards, e.g. an external RabbitMQ).
struct PerShard {
    connections: Vec<Connection>,
    /// Connections opened along the way, kept open so the spread stays as it was.
    _extra: Vec<Connection>,
}

async fn connection_per_shard(broker: &Broker) -> PerShard {
    let mut found: Vec<Option<Connection>> = (0..SHARDS).map(|_| None).collect();
    let mut extra = Vec::new();
    for _ in 0..SHARD_SEARCH_CONNECTIONS_MAX {
        let (connection, shard) = shard_probe::connect(broker.port()).await;
        let Some(shard) = shard else {
            assert!(
                broker.is_external(),
                "ringmq must report ringmq_shard in connection.start server properties"
            );
            return PerShard {
                connections: vec![connection],
                _extra: extra,
            };
        };
        let slot = found
            .get_mut(shard as usize)
            .unwrap_or_else(|| panic!("reported shard {shard} out of range"));
        if slot.is_none() {
            *slot = Some(connection);
        } else {
            extra.push(connection);
        }
        if found.iter().all(Option::is_some) {
            return PerShard {
                connections: found.into_iter().flatten().collect(),
                _extra: extra,
            };
        }
    }
    panic!("no connection landed on every shard in {SHARD_SEARCH_CONNECTIONS_MAX} attempts");
}

impl PerShard {
    fn on(&self, shard: usize) -> &Connection {
        let index = shard % self.connections.len();
        &self.connections[index]
    }
}

struct Target {
    exchange: String,
    routing_key: String,
    headers: FieldTable,
}

fn headers_for(key: &str) -> FieldTable {
    let mut table = FieldTable::default();
    table.insert(
        ShortString::from("route"),
        AMQPValue::LongString(LongString::from(key)),
    );
    table
}

/// Declares `queue` and whatever exchange and binding `route` needs; returns where to publish.
async fn setup_route(ch: &Channel, route: Route, queue: &str) -> Target {
    amqp::declare_queue(ch, queue, QueueDeclareOptions::default())
        .await
        .expect("queue.declare");
    let id = unique("x");
    let (kind, binding_key, routing_key, mut bind_args) = match route {
        Route::Default => {
            return Target {
                exchange: String::new(),
                routing_key: queue.to_owned(),
                headers: FieldTable::default(),
            }
        }
        Route::Direct => (
            ExchangeKind::Direct,
            id.clone(),
            id.clone(),
            FieldTable::default(),
        ),
        Route::Fanout => (
            ExchangeKind::Fanout,
            String::new(),
            id.clone(),
            FieldTable::default(),
        ),
        Route::Topic => (
            ExchangeKind::Topic,
            format!("cross.*.{id}"),
            format!("cross.any.{id}"),
            FieldTable::default(),
        ),
        Route::Headers => (
            ExchangeKind::Headers,
            String::new(),
            String::new(),
            headers_for(&id),
        ),
    };
    if matches!(route, Route::Headers) {
        bind_args.insert(
            ShortString::from("x-match"),
            AMQPValue::LongString(LongString::from("all")),
        );
    }
    let exchange = unique("cross-ex");
    amqp::declare_exchange(ch, &exchange, kind).await;
    step(
        "queue.bind",
        ch.queue_bind(
            queue,
            &exchange,
            &binding_key,
            QueueBindOptions::default(),
            bind_args,
        ),
    )
    .await
    .expect("queue.bind");
    Target {
        exchange,
        routing_key,
        headers: if matches!(route, Route::Headers) {
            headers_for(&id)
        } else {
            FieldTable::default()
        },
    }
}

/// Publishes `count` messages `"<publisher>:<seq>"` and waits for every confirm.
async fn publish_sequence(ch: &Channel, target: &Target, publisher: usize, count: u32) {
    let mut confirms = Vec::new();
    for seq in 0..count {
        let body = format!("{publisher}:{seq}");
        let props = BasicProperties::default().with_headers(target.headers.clone());
        let confirm = step(
            "publish",
            ch.basic_publish(
                &target.exchange,
                &target.routing_key,
                BasicPublishOptions::default(),
                body.as_bytes(),
                props,
            ),
        )
        .await
        .expect("publish");
        confirms.push(confirm);
    }
    for confirm in confirms {
        let confirmation = step("confirm", confirm).await.expect("confirm");
        assert!(confirmation.is_ack());
    }
}

fn parse_body(data: &[u8]) -> (usize, u32) {
    let text = std::str::from_utf8(data).expect("utf-8 body");
    let (publisher, seq) = text.split_once(':').expect("publisher:seq");
    (
        publisher.parse().expect("publisher"),
        seq.parse().expect("seq"),
    )
}

/// Receives `expected_per_publisher * publishers` messages and checks each publisher's
/// sequence arrives complete and in order.
async fn receive_in_order(
    consumer: &mut lapin::Consumer,
    publishers: usize,
    expected_per_publisher: u32,
    context: &str,
) {
    let mut next_seq = vec![0u32; publishers];
    for _ in 0..publishers as u32 * expected_per_publisher {
        let delivery = next_delivery(consumer).await;
        let (publisher, seq) = parse_body(&delivery.data);
        let expected = next_seq
            .get_mut(publisher)
            .unwrap_or_else(|| panic!("{context}: unknown publisher {publisher}"));
        assert_eq!(
            seq, *expected,
            "{context}: publisher {publisher} out of order"
        );
        *expected += 1;
    }
    assert_nothing_more(consumer).await;
}

/// Every (queue home, publisher, consumer) shard combination, for every exchange type.
#[tokio::test]
async fn every_route_reaches_every_shard_in_order() {
    let broker = Broker::start(SHARDS);
    let shards = connection_per_shard(&broker).await;
    for route in ROUTES {
        for home in 0..SHARDS {
            for publisher in 0..SHARDS {
                for consumer_shard in 0..SHARDS {
                    let context = format!(
                        "{route:?} queue@{home} publisher@{publisher} consumer@{consumer_shard}"
                    );
                    let queue = unique("cross");
                    let home_ch = channel(shards.on(home)).await;
                    let target = setup_route(&home_ch, route, &queue).await;
                    let consumer_ch = channel(shards.on(consumer_shard)).await;
                    let mut consumer = consume(&consumer_ch, &queue, true).await;
                    let publisher_ch = confirming_channel(shards.on(publisher)).await;
                    publish_sequence(&publisher_ch, &target, publisher, MESSAGES_PER_PUBLISHER)
                        .await;
                    let mut received = 0;
                    let mut next_seq = 0;
                    while received < MESSAGES_PER_PUBLISHER {
                        let delivery = next_delivery(&mut consumer).await;
                        let (from, seq) = parse_body(&delivery.data);
                        assert_eq!((from, seq), (publisher, next_seq), "{context}");
                        next_seq += 1;
                        received += 1;
                    }
                    assert_nothing_more(&mut consumer).await;
                    for ch in [home_ch, consumer_ch, publisher_ch] {
                        let _ = ch.close(200, "done").await;
                    }
                }
            }
        }
    }
}

/// Publishers on both shards at once into one queue: each one's order survives the merge.
#[tokio::test]
async fn concurrent_publishers_on_both_shards_keep_their_order() {
    let broker = Broker::start(SHARDS);
    let shards = connection_per_shard(&broker).await;
    for route in ROUTES {
        let queue = unique("merge");
        let home_ch = channel(shards.on(0)).await;
        let target = setup_route(&home_ch, route, &queue).await;
        let consumer_ch = channel(shards.on(1)).await;
        let mut consumer = consume(&consumer_ch, &queue, true).await;
        let mut publishers = Vec::new();
        for shard in 0..SHARDS {
            publishers.push(confirming_channel(shards.on(shard)).await);
        }
        let sends = publishers
            .iter()
            .enumerate()
            .map(|(shard, ch)| publish_sequence(ch, &target, shard, MESSAGES_PER_PUBLISHER));
        futures_util::future::join_all(sends).await;
        receive_in_order(
            &mut consumer,
            SHARDS,
            MESSAGES_PER_PUBLISHER,
            &format!("{route:?} merge"),
        )
        .await;
    }
}

/// A queue on one shard consumed from both: round-robin across shards, nothing lost or doubled.
#[tokio::test]
async fn consumers_on_both_shards_share_one_queue() {
    let broker = Broker::start(SHARDS);
    let shards = connection_per_shard(&broker).await;
    let queue = unique("shared");
    let home_ch = confirming_channel(shards.on(0)).await;
    amqp::declare_queue(&home_ch, &queue, QueueDeclareOptions::default())
        .await
        .expect("declare");
    let mut consumers = Vec::new();
    let mut channels = Vec::new();
    for shard in 0..SHARDS {
        let ch = channel(shards.on(shard)).await;
        consumers.push(consume(&ch, &queue, true).await);
        channels.push(ch);
    }
    let target = Target {
        exchange: String::new(),
        routing_key: queue.clone(),
        headers: FieldTable::default(),
    };
    let count = 100;
    publish_sequence(&home_ch, &target, 0, count).await;
    let mut seen = Vec::new();
    let mut per_consumer = vec![0u32; consumers.len()];
    while seen.len() < count as usize {
        let [a, b] = consumers.as_mut_slice() else {
            unreachable!("two consumers")
        };
        let (index, delivery) = tokio::select! {
            d = next_delivery(a) => (0, d),
            d = next_delivery(b) => (1, d),
        };
        per_consumer[index] += 1;
        seen.push(parse_body(&delivery.data).1);
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..count).collect::<Vec<_>>());
    if !broker.is_external() || shards.connections.len() == SHARDS {
        assert!(per_consumer.iter().all(|&n| n > 0), "{per_consumer:?}");
    }
}
