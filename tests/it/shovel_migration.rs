//! How a RabbitMQ user moves to ringmq: a shovel on ringmq consumes 100,000 persistent
//! messages from a private RabbitMQ 3.10.8 node (Debian's rabbitmq-server, `common::rabbitmq`)
//! and publishes them into a ringmq queue with `ack-mode: on-confirm`. ringmq, which runs the
//! shovel, is killed (-9) once mid-transfer and restarted: the shovel's parameter comes back
//! from the topology log, the shovel resumes and, with `src-delete-after: queue-length`,
//! clears its own parameter when done. None lost; the only extra copies are redeliveries of
//! what was in flight at the kill.
//!
//! RabbitMQ's own shovel plugin is the oracle for the API's shapes: the same bad definition is
//! refused with the same status and text by both, a shovel whose source refuses connections
//! stays `starting` on both, and the status objects have the same keys.
//!
//! Skipped, with the reason printed, when rabbitmq-server is not installed.

use crate::common;

use std::time::{Duration, Instant};

use common::admin::{encode, Admin};
use common::rabbitmq::{rabbitmq_installed, RabbitMq, RABBITMQ_SERVER};
use common::shovel::keys;
use common::transfer::{drain_ids, eventually, extra_copies, ids, publish_ids, queue_counts};
use common::{amqp, Broker};
use lapin::options::QueueDeclareOptions;
use serde_json::{json, Value};

const MESSAGES: usize = 100_000;
/// In flight at once, and so the most extra copies one kill can cause.
const PREFETCH: usize = 1000;
/// ringmq is killed once this many messages have arrived (a quarter of the way).
const KILL_AT_MESSAGES: u64 = 25_000;
/// Bound on the whole transfer, restart included.
const MIGRATION_TIMEOUT: Duration = Duration::from_secs(300);
/// Bound on a shovel (RabbitMQ's or ringmq's) reaching a state.
const STATE_TIMEOUT: Duration = Duration::from_secs(20);
const SOURCE_QUEUE: &str = "legacy";
const DESTINATION_QUEUE: &str = "migrated";

/// A queue's `messages` on a ringmq broker; 0 while it does not exist yet.
fn ringmq_messages(admin: &Admin, queue: &str) -> u64 {
    let (status, text) = admin.request("GET", &format!("/queues/%2F/{}", encode(queue)), None);
    if status != 200 {
        return 0;
    }
    let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    value["messages"].as_u64().unwrap_or(0)
}

fn shovel(src_uri: &str, src_queue: &str, dest_uri: &str, dest_queue: &str) -> Value {
    let destination = json!({ "dest-queue": dest_queue });
    common::shovel::on_confirm(src_uri, src_queue, dest_uri, destination, PREFETCH)
}

async fn wait_state(admin: &Admin, name: &str, state: &str) -> Value {
    common::shovel::wait_state(admin, name, state, STATE_TIMEOUT).await
}

#[tokio::test(flavor = "multi_thread")]
async fn migrate_from_rabbitmq_with_a_restart() {
    if !rabbitmq_installed() {
        eprintln!("SKIPPED shovel_migration: rabbitmq-server is not installed ({RABBITMQ_SERVER})");
        return;
    }
    let started = Instant::now();
    let rabbit = RabbitMq::start_with_plugins(&[
        "rabbitmq_management",
        "rabbitmq_shovel",
        "rabbitmq_shovel_management",
    ]);
    let rabbit_admin = rabbit.admin();
    let mut ringmq = Broker::start(2);
    let ringmq_admin = Admin::for_broker(&ringmq);
    let booted = started.elapsed();

    let rabbit_uri = format!("amqp://guest:guest@127.0.0.1:{}/%2f", rabbit.port);
    let rabbit_connection = amqp::connect_url(&rabbit_uri).await;
    let publisher = amqp::confirming_channel(&rabbit_connection).await;
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    amqp::declare_queue(&publisher, SOURCE_QUEUE, durable)
        .await
        .expect("source queue");
    let sent = ids("legacy", 0..MESSAGES);
    publish_ids(&publisher, "", SOURCE_QUEUE, &sent).await;
    let published = started.elapsed();

    let oracle_running = oracle_shapes(&rabbit, &rabbit_admin, &ringmq_admin).await;

    let mut value = shovel(&rabbit_uri, SOURCE_QUEUE, "amqp://", DESTINATION_QUEUE);
    value["src-delete-after"] = json!("queue-length");
    let (code, text) = common::shovel::put(&ringmq_admin, "/", "migrate", &value);
    assert_eq!(code, 201, "{text}");
    let running = wait_state(&ringmq_admin, "migrate", "running").await;
    assert_eq!(keys(&running), keys(&oracle_running), "ringmq {running}");

    eventually("a quarter moved", MIGRATION_TIMEOUT, || {
        let moved = ringmq_messages(&ringmq_admin, DESTINATION_QUEUE);
        std::future::ready((moved >= KILL_AT_MESSAGES).then_some(()))
    })
    .await;
    ringmq.kill9();
    let killed_at = started.elapsed();
    let (left, _) = queue_counts(&publisher, SOURCE_QUEUE).await;
    assert!(
        left > 0,
        "the kill came after the transfer: nothing left at RabbitMQ"
    );
    ringmq.restart_same_dir();

    // Recovered from the topology log, the shovel finishes and clears its own parameter.
    let parameter = common::shovel::path("/", "migrate");
    eventually("the shovel finished", MIGRATION_TIMEOUT, || {
        let (code, _) = ringmq_admin.request("GET", &parameter, None);
        std::future::ready((code == 404).then_some(()))
    })
    .await;
    let transferred = started.elapsed();
    let drained = eventually("RabbitMQ's queue drained", STATE_TIMEOUT, || {
        let channel = publisher.clone();
        async move {
            let counts = queue_counts(&channel, SOURCE_QUEUE).await;
            (counts.1 == 0).then_some(counts)
        }
    })
    .await;
    assert_eq!(drained, (0, 0), "(ready, consumers) left at RabbitMQ");

    let connection = amqp::connect(&ringmq).await;
    let ch = amqp::channel(&connection).await;
    let (count, _) = queue_counts(&ch, DESTINATION_QUEUE).await;
    let received = drain_ids(&ch, DESTINATION_QUEUE, count as usize).await;
    let extra = extra_copies(&received, &sent);
    eprintln!(
        "migration: {MESSAGES} messages, {extra} redelivered copies; brokers up {booted:?}, \
         published {:?}, killed at {:?} ({left} left at RabbitMQ), transfer done {:?}, \
         drained {:?} (total)",
        published - booted,
        killed_at - published,
        transferred - killed_at,
        started.elapsed()
    );
    assert!(
        extra <= PREFETCH,
        "{extra} copies beyond the {PREFETCH} in flight at the kill"
    );
    drop(connection);
    drop(rabbit_connection);
    drop(ringmq);
    drop(rabbit);
}

/// RabbitMQ's shovel plugin and ringmq answer the same refusals alike, and their status
/// objects have the same keys. Returns RabbitMQ's running status object (queue to queue).
async fn oracle_shapes(rabbit: &RabbitMq, rabbit_admin: &Admin, ringmq_admin: &Admin) -> Value {
    let local = "amqp://";
    let bad_uri = shovel("foo://x", "q", local, "q2");
    let mut no_source = shovel(local, "q", local, "q2");
    no_source
        .as_object_mut()
        .expect("object")
        .remove("src-queue");
    for bad in [&bad_uri, &no_source] {
        let theirs = common::shovel::put(rabbit_admin, "/", "oracle-bad", bad);
        let ours = common::shovel::put(ringmq_admin, "/", "oracle-bad", bad);
        assert_eq!(
            theirs.0, ours.0,
            "status: RabbitMQ {theirs:?}, ringmq {ours:?}"
        );
        let reason = |text: &str| -> Value {
            serde_json::from_str::<Value>(text).unwrap_or(Value::Null)["reason"].clone()
        };
        assert_eq!(
            reason(&theirs.1),
            reason(&ours.1),
            "RabbitMQ {theirs:?}, ringmq {ours:?}"
        );
    }

    let refused_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address").port()
    };
    let down = shovel(
        &format!("amqp://127.0.0.1:{refused_port}"),
        "q",
        local,
        "q2",
    );
    // A source that refuses connections: RabbitMQ stays `starting` through its retries, the
    // timestamp renewed by each; so must ringmq.
    let mut retrying = Vec::new();
    for admin in [rabbit_admin, ringmq_admin] {
        let (code, text) = common::shovel::put(admin, "/", "oracle-down", &down);
        assert_eq!(code, 201, "{text}");
        let first = wait_state(admin, "oracle-down", "starting").await;
        let retried = eventually("a retry of oracle-down", STATE_TIMEOUT, || {
            let now = common::shovel::status(admin, "/", "oracle-down").expect("listed");
            assert_eq!(now["state"], "starting", "{now}");
            std::future::ready((now["timestamp"] != first["timestamp"]).then_some(now))
        })
        .await;
        retrying.push(retried);
        assert_eq!(common::shovel::delete(admin, "/", "oracle-down").0, 204);
    }
    assert_eq!(
        keys(&retrying[0]),
        keys(&retrying[1]),
        "RabbitMQ {}, ringmq {}",
        retrying[0],
        retrying[1]
    );

    let oracle = shovel(local, "oracle-src", local, "oracle-dst");
    let (code, text) = common::shovel::put(rabbit_admin, "/", "oracle", &oracle);
    assert_eq!(code, 201, "{text}");
    let running = wait_state(rabbit_admin, "oracle", "running").await;
    eprintln!(
        "RabbitMQ {}: running {running}, retrying {}",
        rabbit.node, retrying[0]
    );
    assert_eq!(common::shovel::delete(rabbit_admin, "/", "oracle").0, 204);
    running
}
