//! More shards than a shard mask of 64 bits holds: 80 shards, unpinned (`--pin none`) so they
//! run on a 2-core machine. Queues are placed on every shard (a queue lives on the shard of the
//! connection that declared it; connections land by SO_REUSEPORT hashing, and the broker reports
//! each one's shard), then one transaction, confirmed publishes and a fanout touch all of them.
//! One broker for the whole file: 80 shards preallocate 80 message logs (2.5 GiB of unwritten
//! extents), which should not be multiplied by parallel tests.

use crate::common;

use std::collections::BTreeMap;

use common::amqp::{self, channel, confirming_channel, get};
use common::shard_probe;
use common::{step, unique, Broker};
use lapin::options::*;
use lapin::{BasicProperties, Channel, Connection, ExchangeKind};

const SHARDS: usize = 80;
/// Connections opened at most while looking for one on every shard. Coupon collector: about
/// 400 are needed on average; missing a shard after this many has odds of about 1 in 2 million.
const PROBE_CONNECTIONS_MAX: usize = 1500;
/// Connections opened at once while probing.
const PROBE_BATCH: usize = 40;

/// One connection per shard, found by probing; extra connections are closed as they come.
async fn connection_per_shard(broker: &Broker) -> BTreeMap<u32, Connection> {
    let mut per_shard = BTreeMap::new();
    let mut opened = 0;
    while per_shard.len() < SHARDS && opened < PROBE_CONNECTIONS_MAX {
        let port = broker.port();
        let batch: Vec<_> = (0..PROBE_BATCH)
            .map(|_| tokio::spawn(shard_probe::connect(port)))
            .collect();
        opened += PROBE_BATCH;
        for probe in batch {
            let (connection, shard) = probe.await.expect("probe task");
            let shard = shard.expect("ringmq reports ringmq_shard in connection.start");
            assert!(
                (shard as usize) < SHARDS,
                "reported shard {shard} out of range"
            );
            match per_shard.entry(shard) {
                std::collections::btree_map::Entry::Vacant(slot) => {
                    slot.insert(connection);
                }
                std::collections::btree_map::Entry::Occupied(_) => {
                    let _ = step("close extra connection", connection.close(200, "")).await;
                }
            }
        }
    }
    assert_eq!(
        per_shard.len(),
        SHARDS,
        "connections on every shard after {opened} attempts"
    );
    per_shard
}

/// One queue declared from each shard's connection, so there is a queue on every shard.
async fn queue_per_shard(per_shard: &BTreeMap<u32, Connection>) -> Vec<String> {
    let mut queues = Vec::with_capacity(per_shard.len());
    for (shard, connection) in per_shard {
        let ch = channel(connection).await;
        let name = unique(&format!("shard-count-q{shard}"));
        amqp::declare_queue(&ch, &name, QueueDeclareOptions::default())
            .await
            .expect("queue.declare");
        let _ = step("close declaring channel", ch.close(200, "")).await;
        queues.push(name);
    }
    queues
}

/// basic.get on every queue finds exactly `expected(queue)` and then nothing.
async fn assert_each_holds(ch: &Channel, queues: &[String], expected: impl Fn(&str) -> String) {
    for queue in queues {
        let message = get(ch, queue, true).await;
        let message = message.unwrap_or_else(|| panic!("{queue}: no message"));
        assert_eq!(
            String::from_utf8_lossy(&message.delivery.data),
            expected(queue),
            "{queue}"
        );
        assert!(
            get(ch, queue, true).await.is_none(),
            "{queue}: one message only"
        );
    }
}

#[tokio::test]
async fn eighty_shards_transaction_confirms_and_fanout_reach_every_shard() {
    let started = std::time::Instant::now();
    let broker = Broker::start_with_args(SHARDS, &["--pin", "none"]);
    let ready_ms = started.elapsed().as_millis();
    let per_shard = connection_per_shard(&broker).await;
    let queues = queue_per_shard(&per_shard).await;
    let probed_ms = started.elapsed().as_millis();
    let home = per_shard.values().next().expect("a connection");

    // tx.commit-ok only after every touched shard applied the transaction.
    let tx = channel(home).await;
    step("tx.select", tx.tx_select()).await.expect("tx.select");
    for queue in &queues {
        let body = format!("tx {queue}");
        let publish = tx.basic_publish(
            "",
            queue,
            BasicPublishOptions::default(),
            body.as_bytes(),
            BasicProperties::default(),
        );
        step("publish in tx", publish).await.expect("publish");
    }
    step("tx.commit", tx.tx_commit()).await.expect("tx.commit");
    assert_each_holds(&tx, &queues, |queue| format!("tx {queue}")).await;

    // Every publish to every shard is confirmed.
    let confirming = confirming_channel(home).await;
    let mut confirms = Vec::with_capacity(queues.len());
    for queue in &queues {
        let body = format!("confirmed {queue}");
        let publish = confirming.basic_publish(
            "",
            queue,
            BasicPublishOptions::default(),
            body.as_bytes(),
            BasicProperties::default(),
        );
        confirms.push(step("confirmed publish", publish).await.expect("publish"));
    }
    for confirm in confirms {
        let confirmation = step("publisher confirm", confirm).await.expect("confirm");
        assert!(confirmation.is_ack(), "{confirmation:?}");
    }
    assert_each_holds(&confirming, &queues, |queue| format!("confirmed {queue}")).await;

    // One fanout publish reaches a queue on every shard, and is confirmed once all took it.
    let fanout = unique("shard-count-fanout");
    amqp::declare_exchange(&confirming, &fanout, ExchangeKind::Fanout).await;
    for queue in &queues {
        amqp::bind(&confirming, queue, &fanout, "").await;
    }
    amqp::publish(
        &confirming,
        &fanout,
        "",
        b"everyone",
        BasicProperties::default(),
    )
    .await;
    assert_each_holds(&confirming, &queues, |_| "everyone".to_string()).await;

    for queue in &queues {
        let delete = confirming.queue_delete(queue, QueueDeleteOptions::default());
        step("queue.delete", delete).await.expect("queue.delete");
    }
    let _ = step(
        "delete fanout",
        confirming.exchange_delete(&fanout, Default::default()),
    )
    .await;
    for connection in per_shard.values() {
        let _ = step("close", connection.close(200, "")).await;
    }
    eprintln!(
        "80 shards: ready in {ready_ms} ms, connections on every shard in {} ms, all done in {} ms",
        probed_ms - ready_ms,
        started.elapsed().as_millis()
    );
}
