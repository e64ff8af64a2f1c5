//! Quorum queues on one node, black-box: `x-queue-type: quorum` declared with RabbitMQ 3.10's
//! semantics (durable only; exclusive, auto-delete, priorities, lazy mode and
//! reject-publish-dlx refused with its 406 texts; `x-queue-type` compared on redeclare), a group
//! of one member (the node), redeliveries counted in `x-delivery-count` with or without
//! `x-delivery-limit`, and the management API's `type`, `leader` and `members`.
//!
//! Replicated over three nodes (each in a network namespace the test makes, as
//! tests/it/cluster.rs, whose AMQP client role it uses): declared on node 1, published with
//! confirms on node 2, consumed on node 3; then the queue's leader killed with SIGKILL during
//! confirmed publishing, ten rounds (each killed node restarted before the next): a new
//! leader within `QUORUM_ELECTION_BOUND`, the publisher on a surviving node gets confirms
//! again; then the leader cut off by its link going down (the majority elects a leader and
//! confirms, the cut-off node confirms nothing, and follows the new leader once healed); then
//! one more kill while a consumer on a surviving node drains: it stays attached. Every client
//! records its history (sends, confirms, nacks, deliveries) and the test judges the whole of
//! it with tests/cluster/history.rs: no confirmed message lost, none invented, none delivered
//! twice unless flagged redelivered, first deliveries in each publisher's order
//! (`RINGMQ_TEST_PLANT_LOSS=1` drops one confirmed message's deliveries from the history: the
//! test must then fail). Also over three nodes: the `ha-*` policy keys mirror a classic queue
//! (`ha_policies_mirror_classic_queues_through_a_kill`). A group of one used across nodes is in
//! tests/it/cluster.rs, groups smaller than the cluster and membership changes in
//! tests/it/quorum_members.rs.

use crate::common;

use std::time::{Duration, Instant};

use crate::cluster::{json_number, message_set, parse_ranges, ranges, run_client_output};
use crate::history::{Event, History, MessageId};
use common::cluster::{eventually, Cluster, Layout, CONVERGE_TIMEOUT, NODES};
use common::netns;

use common::admin::{encode, Admin};
use common::amqp::{
    channel, confirming_channel, connect, expect_code, expect_code_and_text, get, publish,
};
use common::fixtures::*;
use common::transfer::queue_counts;
use common::{raw, step, unique, Broker};
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};

const PRECONDITION_FAILED: u16 = 406;

per_shard_count!(
    declare_semantics_are_rabbitmqs,
    redeliveries_are_counted_then_dead_lettered_or_dropped,
);

per_shard_count_mut!(every_message_survives_a_restart);

fn quorum(extra: &[(&str, AMQPValue)]) -> FieldTable {
    let mut entries = vec![("x-queue-type", text("quorum"))];
    entries.extend(extra.iter().cloned());
    args(&entries)
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

async fn declare(
    ch: &Channel,
    name: &str,
    options: QueueDeclareOptions,
    arguments: FieldTable,
) -> lapin::Result<()> {
    step("queue.declare", ch.queue_declare(name, options, arguments))
        .await
        .map(drop)
}

fn header_int(props: &BasicProperties, key: &str) -> Option<i64> {
    match header(props.headers().as_ref()?, key)? {
        AMQPValue::LongLongInt(n) => Some(*n),
        AMQPValue::LongInt(n) => Some(i64::from(*n)),
        _ => None,
    }
}

async fn declare_semantics_are_rabbitmqs(broker: &Broker) {
    let connection = connect(broker).await;
    let name = unique("qq");
    let ch = channel(&connection).await;
    declare(&ch, &name, durable(), quorum(&[]))
        .await
        .expect("a durable quorum queue");
    declare(&ch, &name, durable(), quorum(&[]))
        .await
        .expect("an equivalent redeclare");
    let classic = declare(&ch, &name, durable(), FieldTable::default()).await;
    expect_code("redeclared as classic", classic, PRECONDITION_FAILED);
    let plain = unique("classic");
    let ch = channel(&connection).await;
    declare(&ch, &plain, durable(), FieldTable::default())
        .await
        .expect("a classic queue");
    let as_quorum = declare(&ch, &plain, durable(), quorum(&[])).await;
    expect_code("a classic queue redeclared as quorum", as_quorum, 406);

    let cases: [(&str, QueueDeclareOptions, FieldTable, &str); 7] = [
        (
            "non-durable",
            QueueDeclareOptions::default(),
            quorum(&[]),
            "invalid property 'non-durable' for",
        ),
        (
            "exclusive",
            QueueDeclareOptions {
                exclusive: true,
                ..durable()
            },
            quorum(&[]),
            "invalid property 'exclusive-owner' for",
        ),
        (
            "auto-delete",
            QueueDeclareOptions {
                auto_delete: true,
                ..durable()
            },
            quorum(&[]),
            "invalid property 'auto-delete' for",
        ),
        (
            "priorities",
            durable(),
            quorum(&[("x-max-priority", long(5))]),
            "invalid arg 'x-max-priority' for",
        ),
        (
            "lazy mode",
            durable(),
            quorum(&[("x-queue-mode", text("lazy"))]),
            "invalid arg 'x-queue-mode' for",
        ),
        (
            "reject-publish-dlx",
            durable(),
            quorum(&[("x-overflow", text("reject-publish-dlx"))]),
            "invalid arg 'x-overflow' with value 'reject-publish-dlx' for",
        ),
        (
            "a group of none",
            durable(),
            quorum(&[("x-quorum-initial-group-size", long(0))]),
            "invalid arg 'x-quorum-initial-group-size' for",
        ),
    ];
    for (case, options, arguments, text) in cases {
        let refused = unique("refused");
        let ch = channel(&connection).await;
        let result = declare(&ch, &refused, options, arguments).await;
        let suffix = if case == "a group of none" {
            format!(" queue '{refused}' in vhost '/': {{value_zero,0}}")
        } else {
            format!(" queue '{refused}' in vhost '/'")
        };
        expect_code_and_text(
            case,
            result,
            PRECONDITION_FAILED,
            &format!("PRECONDITION_FAILED - {text}{suffix}"),
        );
    }
    // A group of one (this node) is what a single node can give, asked for or not.
    let one = unique("qq-one");
    let ch = channel(&connection).await;
    declare(
        &ch,
        &one,
        durable(),
        quorum(&[("x-quorum-initial-group-size", long(1))]),
    )
    .await
    .expect("a group of one");
    let five = unique("qq-five");
    declare(
        &ch,
        &five,
        durable(),
        quorum(&[("x-quorum-initial-group-size", long(5))]),
    )
    .await
    .expect("five asked, the one node given");
    // A channel with a global prefetch limit may not consume from a quorum queue (540, the
    // connection closes); a per-consumer limit is fine. Checked on the wire: a client library
    // may report the close as its own channel state instead of the server's reply code.
    let port = broker.port();
    let queue = one.clone();
    let close = tokio::task::spawn_blocking(move || global_qos_consume_closes(port, &queue))
        .await
        .expect("the raw client");
    assert_eq!(close.code, 540, "{close:?}");
    assert!(
        close.text.contains("does not support global qos"),
        "{close:?}"
    );
    let ch = channel(&connection).await;
    step(
        "basic.qos",
        ch.basic_qos(10, BasicQosOptions { global: false }),
    )
    .await
    .expect("qos");
    step(
        "basic.consume",
        ch.basic_consume(
            &one,
            "per-consumer",
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .expect("a per-consumer prefetch consumes");
    // basic.get is refused on a quorum queue with a single active consumer.
    let single = unique("qq-single");
    let ch = channel(&connection).await;
    let arguments = quorum(&[("x-single-active-consumer", AMQPValue::Boolean(true))]);
    declare(&ch, &single, durable(), arguments)
        .await
        .expect("declare");
    let got = step(
        "basic.get",
        ch.basic_get(&single, BasicGetOptions { no_ack: true }),
    )
    .await;
    expect_code_and_text(
        "basic.get with a single active consumer",
        got,
        405,
        &format!(
            "RESOURCE_LOCKED - cannot obtain access to locked queue '{single}' in vhost '/'. \
             basic.get operations are not supported by quorum queues with single active \
             consumer"
        ),
    );
}

async fn returned(ch: &Channel, queue: &str) -> Option<i64> {
    let got = get(ch, queue, false).await.expect("a ready message");
    let count = header_int(&got.delivery.properties, "x-delivery-count");
    let nack = BasicNackOptions {
        multiple: false,
        requeue: true,
    };
    step("nack", ch.basic_nack(got.delivery.delivery_tag, nack))
        .await
        .expect("nack");
    count
}

async fn redeliveries_are_counted_then_dead_lettered_or_dropped(broker: &Broker) {
    let connection = connect(broker).await;
    let ch = confirming_channel(&connection).await;
    // No limit: counted all the same, never dropped.
    let unlimited = unique("qq-count");
    declare(&ch, &unlimited, durable(), quorum(&[]))
        .await
        .expect("declare");
    publish(&ch, "", &unlimited, b"again", BasicProperties::default()).await;
    for expected in [None, Some(1), Some(2), Some(3)] {
        assert_eq!(returned(&ch, &unlimited).await, expected);
    }
    // A limit and a dead-letter target: delivered 1 + limit times, then dead-lettered.
    let dead = unique("qq-dead");
    declare(&ch, &dead, durable(), FieldTable::default())
        .await
        .expect("declare");
    let limited = unique("qq-limited");
    let arguments = quorum(&[
        ("x-delivery-limit", long(2)),
        ("x-dead-letter-exchange", text("")),
        ("x-dead-letter-routing-key", text(&dead)),
    ]);
    declare(&ch, &limited, durable(), arguments)
        .await
        .expect("declare");
    publish(&ch, "", &limited, b"poison", BasicProperties::default()).await;
    for expected in [None, Some(1), Some(2)] {
        assert_eq!(returned(&ch, &limited).await, expected);
    }
    let dead_letter = poll_get(&ch, &dead).await;
    assert_eq!(dead_letter.delivery.data, b"poison");
    let headers = dead_letter.delivery.properties.headers().clone();
    let reason = headers.and_then(|h| header_text(&h, "x-first-death-reason"));
    assert_eq!(reason.as_deref(), Some("delivery_limit"));
    assert!(get(&ch, &limited, true).await.is_none(), "dead-lettered");
    // A limit and no dead-letter target: dropped.
    let dropping = unique("qq-drop");
    declare(
        &ch,
        &dropping,
        durable(),
        quorum(&[("x-delivery-limit", long(0))]),
    )
    .await
    .expect("declare");
    publish(&ch, "", &dropping, b"once", BasicProperties::default()).await;
    assert_eq!(returned(&ch, &dropping).await, None);
    assert!(get(&ch, &dropping, true).await.is_none(), "dropped");
}

/// A quorum queue logs every message, transient ones too (a classic durable queue keeps only
/// its persistent ones), and the delivery count of a returned one: all come back after a
/// restart, in order.
async fn every_message_survives_a_restart(broker: &mut Broker) {
    let queue = unique("qq-restart");
    let classic = unique("classic-restart");
    {
        let connection = connect(broker).await;
        let ch = confirming_channel(&connection).await;
        declare(&ch, &queue, durable(), quorum(&[]))
            .await
            .expect("declare");
        declare(&ch, &classic, durable(), FieldTable::default())
            .await
            .expect("declare");
        let persistent = BasicProperties::default().with_delivery_mode(2);
        publish(&ch, "", &queue, b"transient", BasicProperties::default()).await;
        publish(&ch, "", &queue, b"persistent", persistent).await;
        publish(&ch, "", &classic, b"transient", BasicProperties::default()).await;
        assert_eq!(returned(&ch, &queue).await, None);
    }
    broker.restart_same_dir();
    let connection = connect(broker).await;
    let ch = channel(&connection).await;
    let first = get(&ch, &queue, true).await.expect("the transient message");
    assert_eq!(first.delivery.data, b"transient");
    assert_eq!(
        header_int(&first.delivery.properties, "x-delivery-count"),
        Some(1)
    );
    let second = get(&ch, &queue, true)
        .await
        .expect("the persistent message");
    assert_eq!(second.delivery.data, b"persistent");
    assert!(get(&ch, &queue, true).await.is_none());
    assert!(
        get(&ch, &classic, true).await.is_none(),
        "a classic queue's transient message is gone"
    );
}

/// basic.get until a message is there (dead-lettering is asynchronous), bounded.
async fn poll_get(ch: &Channel, queue: &str) -> lapin::message::BasicGetMessage {
    const ATTEMPTS: usize = 250;
    const INTERVAL: std::time::Duration = std::time::Duration::from_millis(20);
    for _ in 0..ATTEMPTS {
        if let Some(message) = get(ch, queue, true).await {
            return message;
        }
        tokio::time::sleep(INTERVAL).await;
    }
    panic!("nothing arrived in {queue}");
}

#[test]
fn management_shows_the_group_of_one() {
    let broker = Broker::start(1);
    let admin = Admin::for_broker(&broker);
    let name = unique("qq-api");
    let body = r#"{"durable":true,"arguments":{"x-queue-type":"quorum"}}"#;
    let (status, text) =
        admin.request("PUT", &format!("/queues/%2F/{}", encode(&name)), Some(body));
    assert!((200..300).contains(&status), "{status} {text}");
    let node = admin.get_json("/overview")["node"].clone();
    assert!(node.is_string(), "{node}");
    let queue = admin.get_json(&format!("/queues/%2F/{}", encode(&name)));
    assert_eq!(queue["type"], "quorum", "{queue}");
    assert_eq!(queue["durable"], true, "{queue}");
    assert_eq!(queue["leader"], node, "{queue}");
    assert_eq!(queue["node"], node, "{queue}");
    assert_eq!(queue["members"], serde_json::json!([node]), "{queue}");
    assert_eq!(queue["online"], serde_json::json!([node]), "{queue}");
    let listed = admin.get_json("/queues/%2F");
    let entry = listed
        .as_array()
        .and_then(|all| all.iter().find(|q| q["name"] == name.as_str()))
        .cloned()
        .expect("listed");
    assert_eq!(entry["type"], "quorum");
    assert_eq!(entry["leader"], node);
    // A classic queue has none of them.
    let classic = unique("classic-api");
    let (status, _) = admin.request(
        "PUT",
        &format!("/queues/%2F/{}", encode(&classic)),
        Some(r#"{"durable":true}"#),
    );
    assert!((200..300).contains(&status));
    let classic = admin.get_json(&format!("/queues/%2F/{}", encode(&classic)));
    assert_eq!(classic["type"], "classic");
    assert!(classic.get("leader").is_none(), "{classic}");
    // Refusals over the API are RabbitMQ's 400 with the same reason.
    let transient = r#"{"durable":false,"arguments":{"x-queue-type":"quorum"}}"#;
    let refused = unique("qq-transient");
    let (status, text) = admin.request(
        "PUT",
        &format!("/queues/%2F/{}", encode(&refused)),
        Some(transient),
    );
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("invalid property 'non-durable'"), "{text}");
}

/// A policy holding a key quorum queues do not take (here `queue-mode`) skips them, as
/// RabbitMQ's `is_applicable`: the next matching policy applies instead. A classic queue
/// takes the first.
#[tokio::test]
async fn policies_with_keys_quorum_queues_do_not_take_skip_them() {
    let broker = Broker::start(1);
    let admin = Admin::for_broker(&broker);
    let prefix = unique("pol");
    let policies = [
        (
            format!("{prefix}-lazy"),
            r#""definition":{"max-length":1,"queue-mode":"lazy"},"priority":1"#,
        ),
        (
            format!("{prefix}-low"),
            r#""definition":{"max-length":2},"priority":0"#,
        ),
    ];
    for (name, rest) in &policies {
        let body = format!(r#"{{"pattern":"^{prefix}","apply-to":"queues",{rest}}}"#);
        let path = format!("/policies/%2F/{}", encode(name));
        let (status, text) = admin.request("PUT", &path, Some(&body));
        assert!((200..300).contains(&status), "{status} {text}");
    }
    let connection = connect(&broker).await;
    let ch = confirming_channel(&connection).await;
    let quorum_queue = format!("{prefix}-qq");
    let classic_queue = format!("{prefix}-classic");
    declare(&ch, &quorum_queue, durable(), quorum(&[]))
        .await
        .expect("declare");
    declare(&ch, &classic_queue, durable(), FieldTable::default())
        .await
        .expect("declare");
    for queue in [&quorum_queue, &classic_queue] {
        for body in [b"1", b"2", b"3"] {
            publish(&ch, "", queue, body, BasicProperties::default()).await;
        }
    }
    assert_eq!(
        queue_counts(&ch, &quorum_queue).await.0,
        2,
        "the low policy's max-length"
    );
    assert_eq!(
        queue_counts(&ch, &classic_queue).await.0,
        1,
        "the lazy policy's max-length"
    );
    let shown = admin.get_json(&format!("/queues/%2F/{}", encode(&quorum_queue)));
    assert_eq!(shown["policy"], policies[1].0.as_str(), "{shown}");
}

// ---- replicated over three nodes ------------------------------------------------------------

/// This suite's names and addresses (tests/it/cluster.rs and haproxy.rs have their own).
const REPLICATED_LAYOUT: Layout = Layout {
    namespace_prefix: "ringmq-qq",
    link_prefix: "qq",
    subnet: "10.213.11",
};
/// Confirmed messages of the first pass (declare on 1, publish on 2, consume on 3).
const REPLICATED_MESSAGES: usize = 200;
/// Leaders killed, one after the other (each restarted before the next round): the issue's
/// ten.
const FAILOVER_ROUNDS: usize = 10;
/// A group member that hears nothing from its leader for 1-2 s (10-20 ticks of 100 ms) starts
/// an election; pre-vote, vote and the new term's first entry take three round trips and as
/// many fdatasyncs. Measured from the kill to every survivor naming the new leader; generous
/// for a loaded 2-core machine running three brokers.
const QUORUM_ELECTION_BOUND: Duration = Duration::from_secs(5);
/// The publisher runs at least this long per round, then until it has a confirm after the
/// failover (the client bounds it).
const PUBLISH_SECONDS: u64 = 1;
/// The publishers of the partition round; a kill round's publisher is its round number + 1.
const MAJORITY_PUBLISHER: u32 = 101;
const MINORITY_PUBLISHER: u32 = 102;
/// The consumer that drains through the last failover.
const FINAL_CONSUMER: u32 = 1;
/// Set (to anything): the test drops every delivery of one confirmed message from the
/// history before judging it, and must then fail with that message lost.
const PLANT_LOSS_ENV: &str = "RINGMQ_TEST_PLANT_LOSS";
/// Messages the leader holds from a round's publisher before it is killed.
const BEFORE_KILL: u64 = 100;

/// The leader of the quorum queue node `i` last logged since `since_byte`.
pub(crate) fn logged_quorum_leader(
    cluster: &Cluster,
    i: usize,
    since_byte: usize,
) -> Option<usize> {
    let log = cluster.brokers[i].log_text();
    let recent = log.get(since_byte..).unwrap_or_default();
    recent
        .lines()
        .rev()
        .filter(|line| line.contains("quorum queue leader"))
        .find_map(|line| line.split(" leader=").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|index| index.parse().ok())
}

/// The leader every node of `alive` names (since their `marks`), other than `not`.
pub(crate) fn agreed_quorum_leader(
    cluster: &Cluster,
    alive: &[usize],
    marks: &[usize],
    not: Option<usize>,
) -> Option<usize> {
    let named: Vec<Option<usize>> = alive
        .iter()
        .zip(marks)
        .map(|(&i, &mark)| logged_quorum_leader(cluster, i, mark))
        .collect();
    let first = named.first().copied().flatten()?;
    let agreed = named.iter().all(|&n| n == Some(first));
    (agreed && Some(first) != not && alive.contains(&first)).then_some(first)
}

/// The messages node `i`'s API shows in `queue` (the leader hosts it).
pub(crate) fn messages_on(cluster: &Cluster, i: usize, queue: &str) -> Option<u64> {
    let (status, body) = cluster.http(i, "GET", &format!("/api/queues/%2F/{queue}"), None);
    (status == 200)
        .then(|| json_number(&body, "messages"))
        .flatten()
}

/// `acked RANGES nacked RANGES next N` from a `publish-through` client.
fn parse_publisher(verdict: &str) -> (Vec<usize>, Vec<usize>, usize) {
    let words: Vec<&str> = verdict.split_whitespace().collect();
    match words.as_slice() {
        ["CLIENT-OK", "acked", acked, "nacked", nacked, "next", next] => (
            parse_ranges(acked),
            parse_ranges(nacked),
            next.parse().expect("a count"),
        ),
        _ => panic!("publisher verdict: {verdict}"),
    }
}

/// Messages of the transaction published to the replicated queue.
const TX_MESSAGES: usize = 50;

#[test]
fn replicated_over_three_nodes_and_failing_over_loses_no_confirm() {
    if let Some(reason) = netns::skip_reason(&["curl"]) {
        eprintln!("SKIPPED quorum (replicated): {reason}");
        return;
    }
    let started = Instant::now();
    let mut cluster = Cluster::start(REPLICATED_LAYOUT);
    eventually("a first cluster leader", CONVERGE_TIMEOUT, || {
        (0..NODES).all(|i| cluster.logged_leader(i, 0).is_some())
    });
    for i in 0..NODES {
        cluster.wait_running(i, NODES);
    }
    let queue = "qq-replicated";
    cluster.client_ok(0, &format!("quorum-queue {queue} 3"));
    let all: Vec<usize> = (0..NODES).collect();
    let zero = vec![0; NODES];
    assert_eq!(
        agreed_quorum_leader(&cluster, &[0], &[0], None),
        Some(0),
        "the declaring node leads at declare-ok"
    );
    eventually(
        "every node names the first leader",
        CONVERGE_TIMEOUT,
        || agreed_quorum_leader(&cluster, &all, &zero, None) == Some(0),
    );
    cluster.client_ok(1, &format!("publish-many - {queue} {REPLICATED_MESSAGES}"));
    cluster.client_ok(2, &format!("count {queue} {REPLICATED_MESSAGES}"));
    cluster.client_ok(2, &format!("drain {queue} {REPLICATED_MESSAGES}"));
    cluster.client_ok(0, &format!("count {queue} 0"));
    // A transaction from a follower: its commit-ok waits for the group to commit each
    // publish (RabbitMQ's tx waits for confirms), so the leader counts them all at once.
    cluster.client_ok(1, &format!("tx-publish {queue} {TX_MESSAGES}"));
    cluster.client_ok(0, &format!("count {queue} {TX_MESSAGES}"));
    cluster.client_ok(2, &format!("drain {queue} {TX_MESSAGES}"));

    let mut history = History::default();
    let mut next = 0;
    for round in 0..FAILOVER_ROUNDS {
        next = kill_round(&mut cluster, queue, round, next, &mut history);
    }
    let rounds_done = started.elapsed();
    partition_isolating_the_leader(&cluster, queue, next, &mut history);
    // A consumer on a node that survives keeps consuming through one more failover: the
    // leader is killed while it consumes; it gets every confirmed message.
    let leader = agreed_quorum_leader(&cluster, &all, &zero, None).expect("a leader");
    let consumer_node = (leader + 1) % NODES;
    let total = messages_on(&cluster, leader, queue).expect("the queue on its leader");
    let confirmed = message_set(&history.confirmed());
    let action = format!("consume-through {queue} {FINAL_CONSUMER} {confirmed}");
    let command = cluster.client_command(consumer_node, &action);
    let consumer = std::thread::spawn(move || run_client_output(command, consumer_node, &action));
    eventually("the consumer a quarter through", CONVERGE_TIMEOUT, || {
        messages_on(&cluster, leader, queue).is_some_and(|n| n <= total * 3 / 4)
    });
    cluster.brokers[leader].kill9();
    let (verdict, output) = consumer.join().expect("the consuming client");
    eprintln!(
        "consumer through the failover of node {}: {verdict}",
        leader + 1
    );
    assert!(verdict.starts_with("CLIENT-OK"), "{verdict}");
    let output = match std::env::var_os(PLANT_LOSS_ENV) {
        Some(_) => plant_loss(&output, &history),
        None => output,
    };
    history.read(&output).expect("the consumer's history");
    cluster.brokers[leader].restart_same_dir();
    for i in 0..NODES {
        cluster.wait_running(i, NODES);
    }
    let verdict = history.check();
    eprintln!(
        "{FAILOVER_ROUNDS} kill rounds in {rounds_done:?}, whole test {:?}; {verdict}",
        started.elapsed()
    );
    assert!(verdict.confirmed > 0, "{verdict}");
    verdict.assert_sound();
}

/// One kill round: a publisher on a node that is not the leader publishes confirmed messages
/// (history recorded) while the leader is killed with SIGKILL; a new leader within
/// `QUORUM_ELECTION_BOUND`, confirms again after the failover; the killed node restarted and
/// following before the next round. Returns the next sequence number.
fn kill_round(
    cluster: &mut Cluster,
    queue: &str,
    round: usize,
    next: usize,
    history: &mut History,
) -> usize {
    let all: Vec<usize> = (0..NODES).collect();
    let zero = vec![0; NODES];
    let marks: Vec<usize> = (0..NODES)
        .map(|i| cluster.brokers[i].log_text().len())
        .collect();
    let leader = agreed_quorum_leader(cluster, &all, &zero, None).expect("a leader");
    let publisher_node = (leader + 1) % NODES;
    let before = messages_on(cluster, leader, queue).unwrap_or(0);
    let publisher = u32::try_from(round + 1).expect("a publisher id");
    let action = format!("publish-through {queue} {publisher} {next} {PUBLISH_SECONDS} through");
    let command = cluster.client_command(publisher_node, &action);
    let client = std::thread::spawn(move || run_client_output(command, publisher_node, &action));
    eventually(
        "the leader holding the round's first messages",
        CONVERGE_TIMEOUT,
        || messages_on(cluster, leader, queue).is_some_and(|n| n >= before + BEFORE_KILL),
    );
    cluster.brokers[leader].kill9();
    let survivors: Vec<usize> = (0..NODES).filter(|&i| i != leader).collect();
    let survivor_marks: Vec<usize> = survivors.iter().map(|&i| marks[i]).collect();
    let elected = eventually(
        "a new quorum leader after the kill",
        QUORUM_ELECTION_BOUND,
        || agreed_quorum_leader(cluster, &survivors, &survivor_marks, Some(leader)).is_some(),
    );
    let (verdict, output) = client.join().expect("the publishing client");
    history.read(&output).expect("the publisher's history");
    let (acked, nacked, published) = parse_publisher(&verdict);
    eprintln!(
        "round {round}: node {} killed, new leader in {elected:?}; acked {} nacked {}",
        leader + 1,
        ranges(&acked),
        ranges(&nacked)
    );
    assert!(!acked.is_empty(), "round {round}: nothing confirmed");
    if let Some(&first_nack) = nacked.first() {
        assert!(
            acked.iter().any(|&n| n > first_nack),
            "round {round}: no confirm after the failover"
        );
    }
    let mut since_restart = zero.clone();
    since_restart[leader] = cluster.brokers[leader].log_text().len();
    cluster.brokers[leader].restart_same_dir();
    let restarted = Instant::now();
    for i in 0..NODES {
        cluster.wait_running(i, NODES);
    }
    eventually(
        "the restarted node names the leader",
        CONVERGE_TIMEOUT,
        || agreed_quorum_leader(cluster, &all, &since_restart, None).is_some(),
    );
    eprintln!(
        "round {round}: restarted node back in {:?}",
        restarted.elapsed()
    );
    published
}

/// The consumer's output without any delivery of the first confirmed message: a loss planted
/// in the checker's input, which the check must report.
fn plant_loss(output: &str, history: &History) -> String {
    let planted: MessageId = *history.confirmed().first().expect("a confirmed message");
    eprintln!("planting a loss: every delivery of {planted:?} dropped from the history");
    output
        .lines()
        .filter(|line| {
            !matches!(
                Event::parse(line),
                Some(Ok(Event::Delivered { message, .. })) if message == planted
            )
        })
        .map(|line| format!("{line}\n"))
        .collect()
}

/// This test's names and addresses.
const MIRRORED_LAYOUT: Layout = Layout {
    namespace_prefix: "ringmq-ha",
    link_prefix: "ha",
    subnet: "10.213.12",
};

/// RabbitMQ's `ha-*` policy keys on a three-node cluster (`broker::mirror`): a classic durable
/// queue a policy with `ha-mode: all` matches at declare is replicated as a quorum queue is
/// (still `type: classic`, with RabbitMQ 3.10's `slave_nodes`); its leader killed, every
/// message confirmed before is consumed from a survivor. `ha-mode: exactly 2` mirrors on two
/// of the three, the declaring node the master; a policy set after a queue exists leaves it
/// unmirrored and says so in the log.
#[test]
fn ha_policies_mirror_classic_queues_through_a_kill() {
    if let Some(reason) = netns::skip_reason(&["curl"]) {
        eprintln!("SKIPPED quorum (ha policies): {reason}");
        return;
    }
    let mut cluster = Cluster::start(MIRRORED_LAYOUT);
    eventually("a first cluster leader", CONVERGE_TIMEOUT, || {
        (0..NODES).all(|i| cluster.logged_leader(i, 0).is_some())
    });
    for i in 0..NODES {
        cluster.wait_running(i, NODES);
    }
    let put_policy = |name: &str, body: &str| {
        let (status, text) =
            cluster.http(0, "PUT", &format!("/api/policies/%2F/{name}"), Some(body));
        assert!(
            (200..300).contains(&status),
            "policy {name}: {status} {text}"
        );
    };
    put_policy(
        "ha-all",
        r#"{"pattern":"^ha\\.","apply-to":"queues","definition":{"ha-mode":"all","ha-sync-mode":"automatic"}}"#,
    );
    put_policy(
        "ha-two",
        r#"{"pattern":"^two\\.","apply-to":"queues","definition":{"ha-mode":"exactly","ha-params":2}}"#,
    );
    // Mirrored on two of the three, the declaring node first (its master), as a quorum
    // group of two is.
    let durable = r#"{"durable":true}"#;
    let (status, body) = cluster.http(0, "PUT", "/api/queues/%2F/two.q", Some(durable));
    assert_eq!(status, 201, "{body}");
    eventually("two.q mirrored on one more node", CONVERGE_TIMEOUT, || {
        let (_, body) = cluster.http(2, "GET", "/api/queues/%2F/two.q", None);
        let shown: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        shown["node"] == common::cluster::node_name(0).as_str()
            && shown["slave_nodes"]
                .as_array()
                .is_some_and(|s| s.len() == 1)
    });
    // A queue declared before its policy stays as it was declared.
    cluster.client_ok(0, "queue late.q");
    put_policy(
        "ha-late",
        r#"{"pattern":"^late\\.","apply-to":"queues","definition":{"ha-mode":"all"}}"#,
    );
    assert!(
        cluster.brokers[0]
            .log_text()
            .contains("an ha-mode policy matches queues declared before it"),
        "the unmirrored queue not reported"
    );
    let queue = "ha.q";
    cluster.client_ok(0, &format!("queue {queue}"));
    let all: Vec<usize> = (0..NODES).collect();
    let zero = vec![0; NODES];
    eventually(
        "every node names the mirrored queue's leader",
        CONVERGE_TIMEOUT,
        || agreed_quorum_leader(&cluster, &all, &zero, None) == Some(0),
    );
    let (status, body) = cluster.http(2, "GET", &format!("/api/queues/%2F/{queue}"), None);
    assert_eq!(status, 200, "{body}");
    let shown: serde_json::Value = serde_json::from_str(&body).expect("a queue object");
    assert_eq!(shown["type"], "classic", "{body}");
    assert_eq!(shown["policy"], "ha-all", "{body}");
    let mirrors = serde_json::json!([common::cluster::node_name(1), common::cluster::node_name(2)]);
    assert_eq!(shown["slave_nodes"], mirrors, "{body}");
    let (_, late) = cluster.http(2, "GET", "/api/queues/%2F/late.q", None);
    assert!(!late.contains("slave_nodes"), "late.q mirrored: {late}");

    let mut history = History::default();
    let (verdict, output) = cluster.client_output(1, &format!("publish-through {queue} 1 0 1"));
    history.read(&output).expect("the publisher's history");
    let (acked, nacked, _) = parse_publisher(&verdict);
    assert!(!acked.is_empty() && nacked.is_empty(), "{verdict}");
    let marks: Vec<usize> = (1..NODES)
        .map(|i| cluster.brokers[i].log_text().len())
        .collect();
    cluster.brokers[0].kill9();
    let survivors = [1, 2];
    eventually(
        "a new leader of the mirrored queue",
        QUORUM_ELECTION_BOUND,
        || agreed_quorum_leader(&cluster, &survivors, &marks, Some(0)).is_some(),
    );
    let confirmed = message_set(&history.confirmed());
    let action = format!("consume-through {queue} {FINAL_CONSUMER} {confirmed}");
    let (verdict, output) = cluster.client_output(2, &action);
    assert!(verdict.starts_with("CLIENT-OK"), "{verdict}");
    history.read(&output).expect("the consumer's history");
    let verdict = history.check();
    eprintln!("mirrored classic queue through a kill: {verdict}");
    assert_eq!(verdict.confirmed, acked.len() as u64, "{verdict}");
    verdict.assert_sound();
}

/// The leader's link to the bridge is set down inside its namespace: the two others elect a
/// new leader and keep confirming, the cut-off leader confirms nothing; once the link is back
/// it follows the new leader's term. Both publishers' histories go to `history`.
fn partition_isolating_the_leader(
    cluster: &Cluster,
    queue: &str,
    next: usize,
    history: &mut History,
) {
    let all: Vec<usize> = (0..NODES).collect();
    let zero = vec![0; NODES];
    let leader = agreed_quorum_leader(cluster, &all, &zero, None).expect("a leader");
    let majority: Vec<usize> = (0..NODES).filter(|&i| i != leader).collect();
    let marks: Vec<usize> = (0..NODES)
        .map(|i| cluster.brokers[i].log_text().len())
        .collect();
    let majority_marks: Vec<usize> = majority.iter().map(|&i| marks[i]).collect();
    cluster.namespaces.set_link(leader, false);
    let elected = eventually(
        "a new quorum leader on the majority side",
        QUORUM_ELECTION_BOUND,
        || agreed_quorum_leader(cluster, &majority, &majority_marks, Some(leader)).is_some(),
    );
    eprintln!(
        "partition: node {} cut off, new leader in {elected:?}",
        leader + 1
    );
    // The minority confirms nothing (its entries cannot commit: nacked when it steps down or
    // after QUORUM_COMMIT_TIMEOUT).
    let action = format!("publish-until-nack {queue} {MINORITY_PUBLISHER}");
    let (minority, output) = cluster.client_output(leader, &action);
    assert_eq!(
        minority, "CLIENT-OK acked none",
        "the cut-off leader confirmed"
    );
    history
        .read(&output)
        .expect("the minority publisher's history");
    // The majority side confirms.
    let action = format!("publish-through {queue} {MAJORITY_PUBLISHER} {next} 2");
    let (verdict, output) = cluster.client_output(majority[0], &action);
    history
        .read(&output)
        .expect("the majority publisher's history");
    let (acked, nacked, _) = parse_publisher(&verdict);
    eprintln!(
        "partition: majority acked {} nacked {}",
        ranges(&acked),
        ranges(&nacked)
    );
    assert!(!acked.is_empty(), "the majority confirmed nothing");
    assert!(nacked.is_empty(), "the majority nacked {}", ranges(&nacked));
    let mut since_heal = zero.clone();
    since_heal[leader] = cluster.brokers[leader].log_text().len();
    cluster.namespaces.set_link(leader, true);
    for i in 0..NODES {
        cluster.wait_running(i, NODES);
    }
    eventually(
        "the healed node follows the new leader",
        CONVERGE_TIMEOUT,
        || agreed_quorum_leader(cluster, &all, &since_heal, Some(leader)).is_some(),
    );
}

/// Opens a raw connection, sets a global prefetch limit and consumes from `queue`; returns the
/// server's connection.close.
fn global_qos_consume_closes(port: u16, queue: &str) -> raw::Close {
    let mut client = raw::Raw::open_on(port);
    client.open_channel(1);
    // basic.qos: prefetch-size 0, prefetch-count 10, global.
    client.send_method(1, 60, 10, raw::Args::default().u32(0).u16(10).u8(1));
    client.expect_method(60, 11);
    // basic.consume: reserved, queue, consumer tag, no flags, no arguments.
    let consume = raw::Args::default()
        .u16(0)
        .short_str(queue)
        .short_str("global")
        .u8(0)
        .u32(0);
    client.send_method(1, 60, 20, consume);
    client.expect_connection_close()
}
