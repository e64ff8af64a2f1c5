//! Restarting on the same data directory with another `--shards` (issue 15, defect 1),
//! black-box: every durable queue and every confirmed persistent message comes back whatever
//! the new shard count, acks made after the change stay made when the count changes again, and
//! nothing is split or doubled. Each case runs with a clean stop and with `kill -9`.
//!
//! The shape of every case: 8 durable queues declared from 8 connections (on 2 shards, 4 on
//! each, so both shards own queues), 10 confirmed persistent messages each; restart with the
//! new count and check all 10 come back in order; ack 3 and restart back to the original
//! count; ack 2 more and restart with the new count again.

use crate::common;

use common::amqp::{
    assert_nothing_more, channel, confirming_channel, connect_url, consume, declare_queue,
    next_delivery, publish,
};
use common::{shard_probe, step, unique, Broker};
use lapin::options::{BasicAckOptions, QueueDeclareOptions};
use lapin::{BasicProperties, Connection};

const QUEUES: usize = 8;
const MESSAGES_PER_QUEUE: usize = 10;
const DELIVERY_MODE_PERSISTENT: u8 = 2;
/// Connections opened while looking for `QUEUES / 2` on each of two shards.
const CONNECTION_ATTEMPTS_MAX: usize = 64;

#[derive(Clone, Copy)]
enum Stop {
    Clean,
    Kill9,
}

/// One durable queue and the bodies it must hold, in delivery order.
struct Expected {
    queue: String,
    bodies: Vec<String>,
}

macro_rules! reshard_cases {
    ($($name:ident: $from:expr => $to:expr, $stop:expr;)*) => {$(
        #[tokio::test]
        async fn $name() {
            change_shard_count($from, $to, $stop).await;
        }
    )*};
}

reshard_cases! {
    two_to_one_clean: 2 => 1, Stop::Clean;
    two_to_one_kill9: 2 => 1, Stop::Kill9;
    one_to_two_clean: 1 => 2, Stop::Clean;
    one_to_two_kill9: 1 => 2, Stop::Kill9;
    two_to_two_clean: 2 => 2, Stop::Clean;
    two_to_two_kill9: 2 => 2, Stop::Kill9;
}

async fn change_shard_count(from: usize, to: usize, stop: Stop) {
    let mut broker = Broker::start(from);
    assert!(
        !broker.is_external(),
        "restarts need a ringmq the test starts"
    );
    let mut expected = declare_and_fill(&broker).await;

    restart(&mut broker, to, stop);
    check_then_ack(&broker, &mut expected, 3, "after 1st restart").await;

    restart(&mut broker, from, stop);
    check_then_ack(&broker, &mut expected, 2, "after 2nd restart").await;

    restart(&mut broker, to, stop);
    check_then_ack(&broker, &mut expected, 0, "after 3rd restart").await;
}

fn restart(broker: &mut Broker, shards: usize, stop: Stop) {
    match stop {
        Stop::Clean => {
            broker.stop();
        }
        Stop::Kill9 => broker.kill9(),
    }
    broker.restart_with_shards(shards);
}

fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(DELIVERY_MODE_PERSISTENT)
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

/// `QUEUES` connections; on 2 shards half on each (queues are placed on the declaring
/// connection's shard).
async fn spread_connections(broker: &Broker) -> Vec<Connection> {
    let per_shard = QUEUES / broker.shards();
    let mut counts = vec![0usize; broker.shards()];
    let mut kept = Vec::new();
    for _ in 0..CONNECTION_ATTEMPTS_MAX {
        if kept.len() == QUEUES {
            return kept;
        }
        let (connection, shard) = shard_probe::connect(broker.port()).await;
        let shard = shard.expect("ringmq reports its shard in connection.start") as usize;
        if counts[shard] < per_shard {
            counts[shard] += 1;
            kept.push(connection);
        }
    }
    assert_eq!(kept.len(), QUEUES, "connections per shard: {counts:?}");
    kept
}

async fn declare_and_fill(broker: &Broker) -> Vec<Expected> {
    let connections = spread_connections(broker).await;
    let mut expected = Vec::new();
    for (index, connection) in connections.iter().enumerate() {
        let queue = unique(&format!("reshard-{index}"));
        let ch = confirming_channel(connection).await;
        declare_queue(&ch, &queue, durable())
            .await
            .expect("declare durable queue");
        let mut bodies = Vec::new();
        for n in 0..MESSAGES_PER_QUEUE {
            let body = format!("{queue}/{n}");
            publish(&ch, "", &queue, body.as_bytes(), persistent()).await;
            bodies.push(body);
        }
        expected.push(Expected { queue, bodies });
    }
    for connection in connections {
        let _ = step("connection.close", connection.close(200, "bye")).await;
    }
    expected
}

/// Every queue holds exactly its expected bodies, in order; then the first `acks` of each are
/// acked and one more message is published to it and confirmed (its record comes after the
/// settles in the owner's log, so the acks are durable even before a `kill -9`). The rest stay
/// unacked and return to their queue when the connection closes.
async fn check_then_ack(broker: &Broker, expected: &mut [Expected], acks: usize, when: &str) {
    let connection = connect_url(&broker.url()).await;
    for (round, entry) in expected.iter_mut().enumerate() {
        check_queue(&connection, entry, acks, when, round).await;
    }
    let _ = step("connection.close", connection.close(200, "bye")).await;
}

async fn check_queue(
    connection: &Connection,
    entry: &mut Expected,
    acks: usize,
    when: &str,
    round: usize,
) {
    let queue = entry.queue.clone();
    let ch = channel(connection).await;
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let declared = declare_queue(&ch, &queue, passive)
        .await
        .unwrap_or_else(|e| panic!("{when}: queue {queue} should exist: {e}"));
    assert_eq!(
        declared.message_count() as usize,
        entry.bodies.len(),
        "{when}: message count of {queue}"
    );
    let mut consumer = consume(&ch, &queue, false).await;
    let mut deliveries = Vec::new();
    for want in &entry.bodies {
        let delivery = next_delivery(&mut consumer).await;
        let body = String::from_utf8_lossy(&delivery.data).into_owned();
        assert_eq!(&body, want, "{when}: body in {queue}");
        deliveries.push(delivery);
    }
    assert_nothing_more(&mut consumer).await;
    for delivery in deliveries.iter().take(acks) {
        step("basic.ack", delivery.acker.ack(BasicAckOptions::default()))
            .await
            .expect("basic.ack");
    }
    entry.bodies.drain(..acks.min(entry.bodies.len()));
    let confirming = confirming_channel(connection).await;
    let body = format!("{queue}/after-{when}-{round}");
    publish(&confirming, "", &queue, body.as_bytes(), persistent()).await;
    entry.bodies.push(body);
    // Unacked deliveries go back to the queue (in memory; their records stay live).
    let _ = step("channel.close", ch.close(200, "done")).await;
}

/// The files of shard `shard`'s message log in `data_dir`.
fn log_files(data_dir: &std::path::Path, shard: usize) -> Vec<std::path::PathBuf> {
    let dir = data_dir.join("messages");
    let prefix = format!("s{shard}-");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("read messages dir")
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".wal"))
        })
        .collect();
    files.sort();
    files
}

/// A hand-over interrupted after the copies were durable but before the originals were settled
/// (simulated by putting shard 1's log back as it was before a 2 -> 1 start): whether shard 1
/// exists again (2 shards: its replay finds records of queues shard 0 now owns) or not (1 shard:
/// its log is an orphan again), every message comes back exactly once.
#[tokio::test]
async fn interrupted_hand_over_neither_loses_nor_doubles() {
    let mut broker = Broker::start(2);
    assert!(
        !broker.is_external(),
        "restarts need a ringmq the test starts"
    );
    let mut expected = declare_and_fill(&broker).await;
    broker.stop();
    let backup = broker.data_dir().join("backup-s1");
    std::fs::create_dir_all(&backup).expect("create backup dir");
    let originals = log_files(&broker.data_dir(), 1);
    assert!(!originals.is_empty(), "shard 1 wrote a log");
    for file in &originals {
        let name = file.file_name().expect("file name");
        std::fs::copy(file, backup.join(name)).expect("back up shard 1's log");
    }
    let put_back = |data_dir: &std::path::Path| {
        for file in &originals {
            let name = file.file_name().expect("file name");
            std::fs::copy(backup.join(name), file).expect("put shard 1's log back");
        }
        assert!(!log_files(data_dir, 1).is_empty());
    };

    broker.restart_with_shards(1);
    broker.stop();
    assert!(
        log_files(&broker.data_dir(), 1).is_empty(),
        "an adopted orphan log is removed"
    );
    // No ack happened since: this is the state a crash between copy and settle leaves.
    put_back(&broker.data_dir());
    broker.restart_with_shards(1);
    check_then_ack(&broker, &mut expected, 0, "orphan log adopted twice").await;

    broker.stop();
    put_back(&broker.data_dir());
    broker.restart_with_shards(2);
    check_then_ack(
        &broker,
        &mut expected,
        3,
        "foreign records in shard 1's own log",
    )
    .await;

    broker.kill9();
    broker.restart_with_shards(1);
    check_then_ack(&broker, &mut expected, 0, "after acks, back on 1 shard").await;
    // Both hand-over paths ran (not merely a replay that happened to match).
    let log = broker.log_text();
    assert!(log.contains("log of a shard this run does not have: adopted and removed"));
    assert!(log.contains("records of queues other shards own: handed over"));
}
