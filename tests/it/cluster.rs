//! Three ringmq nodes in a cluster, each in a network namespace the test makes (veth pairs to a
//! bridge in a hub namespace of its own, addresses the test assigns; never the host's own
//! interfaces), killed on drop with their namespaces.
//!
//! One scenario, in order: topology declared on node 1 (exchange, queue, binding over AMQP; a
//! user, a vhost, an exchange, a queue and a binding over the management API) is seen on nodes 2
//! and 3 (passive declares, the API); `/api/nodes`, `cluster_status` and the overview list all
//! three; any node serves any client (queues of every exchange type declared on node 1, confirmed
//! publishes on node 2 forwarded to node 1, counts, consumers, basic.get, purge and delete on
//! node 3; node 1 killed while node 2 publishes to it: nacks, and no acked message lost, judged
//! from both clients' histories by tests/cluster/history.rs); the
//! Raft leader is killed
//! with SIGKILL, the two others elect a new one within `ELECTION_BOUND`, confirm declares and
//! show it as not running; the killed node restarts and catches up; a node whose link is set
//! down inside its namespace answers a declare with 541 at once while the two others commit,
//! and after the link is back it catches up and its refused declare exists nowhere; a node
//! restarted with a wrong secret is refused and learns nothing new; with two nodes down the one
//! left confirms no declare (541 within `MINORITY_ANSWER_BOUND`, never an ok, never a hang).
//!
//! Clients run in the nodes' namespaces: AMQP as this test binary re-run under
//! `ip netns exec` with only `client_role` selected (as tests/it/netns_login.rs), HTTP as curl.
//! Skipped (with a printed reason) when not root or without `ip` or `curl`.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::history::{Event, History, MessageId};
use common::amqp;
use common::cluster::{eventually, node_name, Cluster, Layout, CONVERGE_TIMEOUT, NODES};
use common::ctl::{run_bounded, CTL_RUN_TIMEOUT};
use common::netns;
use lapin::options::{
    BasicPublishOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};

/// A follower that hears nothing from the leader for 1-2 s (10-20 ticks of 100 ms) starts an
/// election; pre-vote and vote take a round trip. Generous for a loaded 2-core CI machine.
const ELECTION_BOUND: Duration = Duration::from_secs(4);
/// A change proposed where no majority is reachable is refused at once (or, if the majority was
/// lost after it was proposed, after the node's 5 s propose timeout); this bounds the answer,
/// client start-up in the namespace included.
const MINORITY_ANSWER_BOUND: Duration = Duration::from_secs(12);
const CLIENT_URL_ENV: &str = "RINGMQ_CLUSTER_CLIENT_URL";
const CLIENT_ACTION_ENV: &str = "RINGMQ_CLUSTER_CLIENT_ACTION";
/// This suite's names and addresses (tests/it/haproxy.rs has its own).
const LAYOUT: Layout = Layout {
    namespace_prefix: "ringmq",
    link_prefix: "rq",
    subnet: "10.213.9",
};

impl Cluster {
    /// Runs this binary's `client_role` in node `i`'s namespace: `CLIENT-OK` or
    /// `CLIENT-ERR <code>` on its stdout.
    pub(crate) fn client(&self, i: usize, action: &str) -> String {
        run_client(self.client_command(i, action), i, action)
    }

    /// The command `client` runs (it may be run on another thread).
    pub(crate) fn client_command(&self, i: usize, action: &str) -> Command {
        let url = format!(
            "amqp://guest:guest@127.0.0.1:{}/%2f",
            self.brokers[i].port()
        );
        let mut command =
            self.namespaces.nodes[i].rerun_test(&netns::test_name(module_path!(), "client_role"));
        command
            .env(CLIENT_URL_ENV, url)
            .env(CLIENT_ACTION_ENV, action);
        command
    }

    /// As [`Cluster::client`], with the client's whole output.
    pub(crate) fn client_output(&self, i: usize, action: &str) -> (String, String) {
        run_client_output(self.client_command(i, action), i, action)
    }

    pub(crate) fn client_ok(&self, i: usize, action: &str) {
        assert_eq!(
            self.client(i, action),
            "CLIENT-OK",
            "{action} on node {}",
            i + 1
        );
    }

    /// A declare of `queue` on node `i`, which cannot reach a majority: an error reply (541,
    /// RabbitMQ's internal_error for a metadata store that cannot commit), within the bound.
    fn minority_refuses(&self, i: usize, queue: &str) {
        let started = Instant::now();
        let verdict = self.client(i, &format!("queue {queue}"));
        assert_eq!(verdict, "CLIENT-ERR 541", "a declare without a majority");
        assert!(
            started.elapsed() < MINORITY_ANSWER_BOUND,
            "answered after {:?}",
            started.elapsed()
        );
    }

    /// `queue` does not exist on node `i` (a passive declare is 404).
    fn assert_absent(&self, i: usize, queue: &str) {
        let verdict = self.client(i, &format!("passive-queue {queue}"));
        assert_eq!(verdict, "CLIENT-ERR 404", "{queue} on node {}", i + 1);
    }

    /// The leader node `i` last logged, if any.
    pub(crate) fn logged_leader(&self, i: usize, since_byte: usize) -> Option<String> {
        let log = self.brokers[i].log_text();
        let recent = log.get(since_byte..).unwrap_or_default();
        recent
            .lines()
            .rev()
            .filter_map(|line| line.split("cluster leader changed leader=").nth(1))
            .find_map(|rest| rest.split_whitespace().next())
            .map(str::to_string)
    }

    fn log_length(&self, i: usize) -> usize {
        self.brokers[i].log_text().len()
    }
}

/// Runs a client command (`Cluster::client_command`) and returns its verdict line.
pub(crate) fn run_client(command: Command, i: usize, action: &str) -> String {
    run_client_output(command, i, action).0
}

/// As [`run_client`], with the client's whole output (its history lines, for
/// `tests/cluster/history.rs`).
pub(crate) fn run_client_output(command: Command, i: usize, action: &str) -> (String, String) {
    let output = run_bounded(command, CTL_RUN_TIMEOUT);
    assert_eq!(
        output.code,
        Some(0),
        "client {action:?} on node {i}: {output:?}"
    );
    // The harness prints `test client_role ... ` on the verdict's line.
    let verdict = output
        .stdout
        .lines()
        .find_map(|l| l.find("CLIENT-").map(|at| l[at..].trim().to_string()));
    let verdict = verdict.unwrap_or_else(|| panic!("no client verdict: {output:?}"));
    (verdict, output.stdout)
}

fn index_of(name: &str) -> usize {
    (0..NODES)
        .find(|&i| node_name(i) == name)
        .unwrap_or_else(|| panic!("no node {name}"))
}

#[test]
fn three_nodes_replicate_fail_over_catch_up_and_refuse() {
    if let Some(reason) = netns::skip_reason(&["curl"]) {
        eprintln!("SKIPPED cluster: {reason}");
        return;
    }
    let mut cluster = Cluster::start(LAYOUT);
    let is_member =
        |name: &Option<String>| name.as_deref().is_some_and(|n| n.starts_with("ringmq@n"));
    eventually("a first leader", CONVERGE_TIMEOUT, || {
        (0..NODES).all(|i| is_member(&cluster.logged_leader(i, 0)))
    });
    // A node proposes only while it reaches the leader and a majority: wait for every link.
    for i in 0..NODES {
        cluster.wait_running(i, NODES);
    }
    declared_on_one_seen_on_all(&cluster);
    shown_as_one_cluster(&cluster);
    concurrent_declares_agree(&cluster);
    quorum_queue_of_one_member(&cluster);

    // Any node serves any client: node 1 leads the queues, node 2 publishes, node 3 counts,
    // purges and deletes them; then node 1 is killed while node 2 publishes to it.
    publishes_forwarded_for_every_pattern(&cluster);
    messages_larger_than_a_frame_forwarded(&cluster);
    transaction_committed_across_nodes(&cluster);
    queue_node_killed_while_publishing(&mut cluster);
    transient_queue_of_a_quick_restart_removed(&mut cluster);

    let (dead, survivors) = leader_killed(&mut cluster);

    // The killed node restarts and catches up with what it missed.
    cluster.brokers[dead].restart_same_dir();
    eventually("the restarted node caught up", CONVERGE_TIMEOUT, || {
        cluster.client(dead, "passive-queue after-failover") == "CLIENT-OK"
    });
    for i in 0..NODES {
        cluster.wait_running(i, NODES);
    }

    links_cut(&cluster, dead, &survivors);

    // A node holding the wrong secret is refused and learns nothing new.
    let outsider = survivors[1];
    let args = LAYOUT.node_args(outsider, "not-the-cluster-secret");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    cluster.brokers[outsider].restart_with_args(&args);
    let member = survivors[0];
    eventually(
        "a declare confirmed without the outsider",
        CONVERGE_TIMEOUT,
        || cluster.client(member, "queue while-outsider") == "CLIENT-OK",
    );
    eventually("the restarted node learned it", CONVERGE_TIMEOUT, || {
        cluster.client(dead, "passive-queue while-outsider") == "CLIENT-OK"
    });
    assert_eq!(
        cluster.client(outsider, "passive-queue while-outsider"),
        "CLIENT-ERR 404",
        "the node with the wrong secret learned a change"
    );
    eventually("the refusal logged", CONVERGE_TIMEOUT, || {
        cluster.brokers[member]
            .log_text()
            .contains("cluster peer refused")
    });

    // Two nodes down: the one left confirms no declare, and answers with an error in time.
    cluster.brokers[outsider].stop();
    cluster.brokers[dead].stop();
    cluster.minority_refuses(member, "in-minority");
    cluster.assert_absent(member, "in-minority");
}

/// Confirmed messages published to the quorum queue of one member.
const QUORUM_MESSAGES: usize = 200;

/// Quorum queues in the cluster besides the replicated ones (tests/it/quorum.rs; groups
/// smaller than the cluster in tests/it/quorum_members.rs): a group of one is declared on
/// node 1, fed with confirmed publishes from node 2 and drained in order on node 3; node 3's
/// API shows its type, leader and members.
fn quorum_queue_of_one_member(cluster: &Cluster) {
    cluster.client_ok(0, "quorum-queue qq-one 1");
    eventually(
        "the quorum queue on nodes 2 and 3",
        CONVERGE_TIMEOUT,
        || (1..NODES).all(|i| cluster.client(i, "passive-queue qq-one") == "CLIENT-OK"),
    );
    cluster.client_ok(1, &format!("publish-many - qq-one {QUORUM_MESSAGES}"));
    cluster.client_ok(2, &format!("count qq-one {QUORUM_MESSAGES}"));
    let (status, body) = cluster.http(2, "GET", "/api/queues/%2F/qq-one", None);
    assert_eq!(status, 200, "{body}");
    let queue: serde_json::Value = serde_json::from_str(&body).expect("a queue object");
    assert_eq!(queue["type"], "quorum", "{body}");
    assert_eq!(queue["leader"], node_name(0).as_str(), "{body}");
    assert_eq!(
        queue["members"],
        serde_json::json!([node_name(0)]),
        "{body}"
    );
    cluster.client_ok(2, &format!("drain qq-one {QUORUM_MESSAGES}"));
    cluster.client_ok(0, "count qq-one 0");
}

/// The exchange types, each with a queue bound on node 1 (`patterns`), and the default
/// exchange: (exchange, routing key, queue).
const PATTERNS: [(&str, &str, &str); 5] = [
    ("fwd.direct", "d", "fwd-direct"),
    ("fwd.fanout", "any", "fwd-fanout"),
    ("fwd.topic", "t.x", "fwd-topic"),
    ("fwd.headers", "ignored", "fwd-headers"),
    ("", "fwd-default", "fwd-default"),
];
/// Confirmed persistent messages published per pattern.
const FORWARDED_PER_PATTERN: usize = 300;
/// Delivered to a consumer on node 3 that closes its connection without acking them.
const HELD_UNACKED: usize = 20;

/// Declared on node 1, published on node 2 (confirms, mandatory: no return, as the only route
/// is on another node), counted on node 3 (its passive declare answers with node 1's count)
/// and consumed on node 3 in the order published: first a consumer that takes some and closes
/// its connection without acking (node 1 has them back), then one that drains and acks. One
/// queue is read with basic.get, purged and deleted from node 3.
fn publishes_forwarded_for_every_pattern(cluster: &Cluster) {
    cluster.client_ok(0, "patterns");
    for (_, _, queue) in PATTERNS {
        eventually(
            "the pattern queues on nodes 2 and 3",
            CONVERGE_TIMEOUT,
            || {
                (1..NODES)
                    .all(|i| cluster.client(i, &format!("passive-queue {queue}")) == "CLIENT-OK")
            },
        );
    }
    for (exchange, key, _) in PATTERNS {
        let exchange = if exchange.is_empty() { "-" } else { exchange };
        cluster.client_ok(
            1,
            &format!("publish-many {exchange} {key} {FORWARDED_PER_PATTERN}"),
        );
    }
    for (_, _, queue) in PATTERNS {
        cluster.client_ok(2, &format!("count {queue} {FORWARDED_PER_PATTERN}"));
    }
    for (_, _, queue) in &PATTERNS[..4] {
        cluster.client_ok(
            2,
            &format!("hold {queue} {HELD_UNACKED} {FORWARDED_PER_PATTERN}"),
        );
        eventually(
            "unacked messages requeued on node 1",
            CONVERGE_TIMEOUT,
            || cluster.client(0, &format!("count {queue} {FORWARDED_PER_PATTERN}")) == "CLIENT-OK",
        );
        cluster.client_ok(2, &format!("drain {queue} {FORWARDED_PER_PATTERN}"));
        cluster.client_ok(0, &format!("count {queue} 0"));
    }
    cluster.client_ok(2, "get-first fwd-default");
    let left = FORWARDED_PER_PATTERN - 1;
    cluster.client_ok(0, &format!("count fwd-default {left}"));
    cluster.client_ok(2, &format!("purge fwd-default {left}"));
    cluster.client_ok(0, "count fwd-default 0");
    cluster.client_ok(2, "delete fwd-default");
    for i in 0..NODES {
        eventually(
            "the deleted queue gone everywhere",
            CONVERGE_TIMEOUT,
            || cluster.client(i, "passive-queue fwd-default") == "CLIENT-ERR 404",
        );
    }
}

/// A message larger than one inter-node frame (4 MiB) crosses the cluster links in pieces:
/// published with confirms on node 2 to a queue node 1 leads, then read on node 3 both by
/// basic.get (an answer record) and by a consumer (a delivery record).
const LARGE_MESSAGE_BYTES: usize = 9 * 1024 * 1024 + 7;

fn messages_larger_than_a_frame_forwarded(cluster: &Cluster) {
    cluster.client_ok(0, "queue large-q");
    eventually("large-q on nodes 2 and 3", CONVERGE_TIMEOUT, || {
        (1..NODES).all(|i| cluster.client(i, "passive-queue large-q") == "CLIENT-OK")
    });
    for _ in 0..2 {
        cluster.client_ok(1, &format!("publish-large large-q {LARGE_MESSAGE_BYTES}"));
    }
    cluster.client_ok(0, "count large-q 2");
    cluster.client_ok(2, &format!("get-large large-q {LARGE_MESSAGE_BYTES}"));
    cluster.client_ok(2, &format!("consume-large large-q {LARGE_MESSAGE_BYTES}"));
    cluster.client_ok(0, "count large-q 0");
}

/// Persistent messages published in a transaction on node 2 to a queue node 1 leads: the
/// commit-ok waits for node 1 to have them durable (a barrier behind them on the link), so
/// they are all there when it comes.
const TX_MESSAGES: usize = 50;

fn transaction_committed_across_nodes(cluster: &Cluster) {
    cluster.client_ok(0, "queue tx-q");
    eventually("tx-q on node 2", CONVERGE_TIMEOUT, || {
        cluster.client(1, "passive-queue tx-q") == "CLIENT-OK"
    });
    cluster.client_ok(1, &format!("tx-publish tx-q {TX_MESSAGES}"));
    cluster.client_ok(0, &format!("count tx-q {TX_MESSAGES}"));
    cluster.client_ok(2, &format!("drain tx-q {TX_MESSAGES}"));
}

/// Node 2 publishes confirmed persistent messages to a durable queue node 1 leads; node 1 is
/// killed with SIGKILL mid-stream. The publisher sees nacks (or a channel error), and every
/// message it saw acked is in the queue after node 1 restarts, in order, once.
fn queue_node_killed_while_publishing(cluster: &mut Cluster) {
    cluster.client_ok(0, "queue killed-q");
    eventually("killed-q on node 2", CONVERGE_TIMEOUT, || {
        cluster.client(1, "passive-queue killed-q") == "CLIENT-OK"
    });
    let action = "publish-until-nack killed-q 1";
    let command = cluster.client_command(1, action);
    let publisher = std::thread::spawn(move || run_client_output(command, 1, action));
    eventually(
        "node 1 holding forwarded messages",
        CONVERGE_TIMEOUT,
        || {
            let (status, body) = cluster.http(0, "GET", "/api/queues/%2F/killed-q", None);
            status == 200 && json_number(&body, "messages").is_some_and(|n| n >= 200)
        },
    );
    cluster.brokers[0].kill9();
    let (verdict, output) = publisher.join().expect("the publishing client");
    let acked = verdict
        .strip_prefix("CLIENT-OK acked ")
        .unwrap_or_else(|| panic!("publisher verdict: {verdict}"));
    eprintln!("acked before and around the kill: {acked}");
    let mut history = History::default();
    history.read(&output).expect("the publisher's history");
    cluster.brokers[0].restart_same_dir();
    for i in 0..NODES {
        cluster.wait_running(i, NODES);
    }
    let (verdict, output) = cluster.client_output(0, "drain-history killed-q 1");
    assert!(verdict.starts_with("CLIENT-OK"), "{verdict}");
    history.read(&output).expect("the consumer's history");
    let verdict = history.check();
    eprintln!("killed-q: {verdict}");
    assert!(verdict.confirmed > 0, "nothing confirmed: {verdict}");
    verdict.assert_sound();
    eventually(
        "every node knows the leader again",
        CONVERGE_TIMEOUT,
        || (0..NODES).all(|i| cluster.logged_leader(i, 0).is_some()),
    );
}

/// Node 3 is killed and restarted at once, before the leader's sweep can see it gone (two
/// sweeps, 5-10 s): the transient queue it declared before is removed all the same, by the
/// restarted node itself, while a survivor's transient queue stays.
fn transient_queue_of_a_quick_restart_removed(cluster: &mut Cluster) {
    let restarted = 2;
    let body = r#"{"durable":false}"#;
    for (i, queue) in [(restarted, "before-quick-restart"), (0, "of-a-survivor")] {
        let path = format!("/api/queues/%2F/{queue}");
        eventually(&format!("PUT {path}"), CONVERGE_TIMEOUT, || {
            let (status, _) = cluster.http(i, "PUT", &path, Some(body));
            (200..300).contains(&status)
        });
    }
    for i in 0..NODES {
        eventually("the transient queues seen", CONVERGE_TIMEOUT, || {
            cluster.client(i, "passive-queue before-quick-restart") == "CLIENT-OK"
                && cluster.client(i, "passive-queue of-a-survivor") == "CLIENT-OK"
        });
    }
    cluster.brokers[restarted].kill9();
    cluster.brokers[restarted].restart_same_dir();
    for i in 0..NODES {
        cluster.wait_running(i, NODES);
    }
    // Listed from the topology each node holds (a passive declare would ask the queue's node).
    for i in 0..NODES {
        eventually(
            "the previous run's transient queue removed",
            CONVERGE_TIMEOUT,
            || {
                let (status, _) =
                    cluster.http(i, "GET", "/api/queues/%2F/before-quick-restart", None);
                status == 404
            },
        );
    }
    // (The restarted node itself does not know it: README "Known limits".)
    for i in (0..NODES).filter(|&i| i != restarted) {
        cluster.client_ok(i, "passive-queue of-a-survivor");
    }
    assert!(
        cluster.brokers[restarted]
            .log_text()
            .contains("removed transient queues this node's previous run left"),
        "the restarted node proposed the removal"
    );
}

/// The number after `"key":` in a JSON text (the first occurrence).
pub(crate) fn json_number(body: &str, key: &str) -> Option<u64> {
    let pattern = format!("\"{key}\":");
    let at = body.find(&pattern)? + pattern.len();
    let digits: String = body[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Exchange, queue, binding over AMQP and a user over the API on node 1; a vhost, exchange,
/// queue and binding over the API on node 1: each seen on nodes 2 and 3 through AMQP and the
/// API.
fn declared_on_one_seen_on_all(cluster: &Cluster) {
    cluster.client_ok(0, "declare cx cq");
    let puts = [
        ("/api/users/alice", r#"{"password":"alice-pw","tags":""}"#),
        ("/api/vhosts/v1", "{}"),
        (
            "/api/exchanges/%2F/apix",
            r#"{"type":"direct","durable":true}"#,
        ),
        ("/api/queues/%2F/apiq", r#"{"durable":true}"#),
    ];
    for (path, body) in puts {
        let (status, text) = cluster.http(0, "PUT", path, Some(body));
        assert_eq!(status, 201, "PUT {path} on node 1: {text}");
    }
    let bind = r#"{"routing_key":"apiq"}"#;
    let (status, text) = cluster.http(0, "POST", "/api/bindings/%2F/e/apix/q/apiq", Some(bind));
    assert_eq!(status, 201, "binding over the API on node 1: {text}");
    // A follower learns of a commit on the leader's next message: seen within a bound.
    for i in 1..NODES {
        eventually(
            "node 1's declares on another node",
            CONVERGE_TIMEOUT,
            || {
                cluster.client(i, "passive cx cq") == "CLIENT-OK"
                    && cluster.client(i, "passive apix apiq") == "CLIENT-OK"
            },
        );
        for path in ["/api/users/alice", "/api/vhosts/v1", "/api/queues/%2F/cq"] {
            let (status, body) = cluster.http(i, "GET", path, None);
            assert_eq!(status, 200, "GET {path} on node {}: {body}", i + 1);
        }
        for (exchange, queue) in [("cx", "cq"), ("apix", "apiq")] {
            let path = format!("/api/bindings/%2F/e/{exchange}/q/{queue}");
            let (status, body) = cluster.http(i, "GET", &path, None);
            let key = format!(r#""routing_key":"{queue}""#);
            assert!(
                status == 200 && body.contains(&key),
                "binding {exchange}->{queue} on node {}: {status} {body}",
                i + 1
            );
        }
    }
}

/// The same queue name declared at once on two nodes with different arguments: each node
/// decided against its own copy, but only one declare may win. Whatever the interleaving,
/// exactly one client gets declare-ok and the other 406 PRECONDITION_FAILED (inequivalent
/// arg), and every node ends with the winner's arguments.
fn concurrent_declares_agree(cluster: &Cluster) {
    let racers: Vec<_> = [(0, 10), (1, 20)]
        .into_iter()
        .map(|(i, length)| {
            let action = format!("queue-max-length raced {length}");
            let command = cluster.client_command(i, &action);
            std::thread::spawn(move || run_client(command, i, &action))
        })
        .collect();
    let verdicts: Vec<String> = racers
        .into_iter()
        .map(|racer| racer.join().expect("a racing client"))
        .collect();
    let won = verdicts.iter().filter(|v| *v == "CLIENT-OK").count();
    let refused = verdicts.iter().filter(|v| *v == "CLIENT-ERR 406").count();
    assert_eq!((won, refused), (1, 1), "racing declares: {verdicts:?}");
    let winner = if verdicts[0] == "CLIENT-OK" { 10 } else { 20 };
    let expected = format!(r#""x-max-length":{winner}"#);
    for i in 0..NODES {
        eventually(
            "the winner's arguments everywhere",
            CONVERGE_TIMEOUT,
            || {
                let (status, body) = cluster.http(i, "GET", "/api/queues/%2F/raced", None);
                status == 200 && body.contains(&expected)
            },
        );
    }
}

/// `/api/nodes`, `ringmqctl cluster_status` and the overview agree on the three members.
fn shown_as_one_cluster(cluster: &Cluster) {
    let (_, nodes) = cluster.http(1, "GET", "/api/nodes", None);
    for i in 0..NODES {
        assert!(
            nodes.contains(&node_name(i)),
            "{} in /api/nodes: {nodes}",
            node_name(i)
        );
    }
    let status = cluster.ctl(2, &["cluster_status"]);
    assert!(status.contains("Cluster name: ringmq@n1"), "{status}");
    for i in 0..NODES {
        assert!(
            status.contains(&node_name(i)),
            "{} in cluster_status: {status}",
            node_name(i)
        );
    }
    let (_, overview) = cluster.http(2, "GET", "/api/overview", None);
    assert!(
        overview.contains(r#""cluster_name":"ringmq@n1""#),
        "{overview}"
    );
}

/// SIGKILL of the Raft leader: the two others elect a new one within the bound, still commit
/// declares, and both show the killed node as not running. Returns (killed, survivors).
fn leader_killed(cluster: &mut Cluster) -> (usize, Vec<usize>) {
    // A transient and a durable queue of each node, one of which is about to die.
    for i in 0..NODES {
        for (kind, durable) in [("transient", false), ("durable", true)] {
            let body = format!(r#"{{"durable":{durable}}}"#);
            let path = format!("/api/queues/%2F/{kind}-of-{i}");
            // Retried: the previous step may have left an election under way.
            eventually(&format!("PUT {path}"), CONVERGE_TIMEOUT, || {
                let (status, _) = cluster.http(i, "PUT", &path, Some(&body));
                (200..300).contains(&status)
            });
        }
    }
    for i in 0..NODES {
        for j in 0..NODES {
            let action = format!("passive-queue transient-of-{j}");
            eventually("every node's queues seen", CONVERGE_TIMEOUT, || {
                cluster.client(i, &action) == "CLIENT-OK"
            });
        }
    }
    // The leader every node names (no election under way).
    let mut leader = String::new();
    eventually("one leader named by every node", CONVERGE_TIMEOUT, || {
        let named: Vec<Option<String>> = (0..NODES).map(|i| cluster.logged_leader(i, 0)).collect();
        match &named[0] {
            Some(first) if named.iter().all(|n| n.as_ref() == Some(first)) => {
                leader = first.clone();
                true
            }
            _ => false,
        }
    });
    let dead = index_of(&leader);
    let survivors: Vec<usize> = (0..NODES).filter(|&i| i != dead).collect();
    let marks: Vec<usize> = survivors.iter().map(|&i| cluster.log_length(i)).collect();
    cluster.brokers[dead].kill9();
    let elected = eventually("a new leader after the kill", ELECTION_BOUND, || {
        survivors.iter().zip(&marks).all(|(&i, &mark)| {
            cluster
                .logged_leader(i, mark)
                .is_some_and(|name| name.starts_with("ringmq@n") && name != leader)
        })
    });
    eprintln!("new leader elected {elected:?} after the leader was killed");
    for &i in &survivors {
        cluster.wait_running(i, NODES - 1);
    }
    // Each survivor's proposal commits through the new majority.
    for &i in &survivors {
        let queue = format!("after-failover-{i}");
        cluster.client_ok(i, &format!("queue {queue}"));
    }
    cluster.client_ok(survivors[0], "queue after-failover");
    // The dead node's transient queue goes from the topology (RabbitMQ's node-down); its
    // durable one stays, and so do the survivors' transient ones.
    for &i in &survivors {
        let transient = format!("passive-queue transient-of-{dead}");
        eventually(
            "the dead node's transient queue removed",
            CONVERGE_TIMEOUT,
            || cluster.client(i, &transient) == "CLIENT-ERR 404",
        );
        let path = format!("/api/queues/%2F/durable-of-{dead}");
        let (status, body) = cluster.http(i, "GET", &path, None);
        assert_eq!(
            status, 200,
            "the dead node's durable queue is listed: {body}"
        );
        for &j in &survivors {
            cluster.client_ok(i, &format!("passive-queue transient-of-{j}"));
        }
    }
    for &i in &survivors {
        for &j in &survivors {
            let action = format!("passive-queue after-failover-{j}");
            eventually(&action, CONVERGE_TIMEOUT, || {
                cluster.client(i, &action) == "CLIENT-OK"
            });
        }
    }
    (dead, survivors)
}

/// Node `cut`'s link to the bridge is set down inside its namespace: it sees itself alone and
/// answers a declare with an error at once, the two others commit without it and show it as
/// not running; once the link is back it catches up, and its refused declare exists nowhere.
fn links_cut(cluster: &Cluster, cut: usize, others: &[usize]) {
    cluster.namespaces.set_link(cut, false);
    cluster.wait_running(cut, 1);
    for &i in others {
        cluster.wait_running(i, NODES - 1);
    }
    cluster.minority_refuses(cut, "while-cut-off");
    eventually(
        "a declare confirmed while a node is cut off",
        CONVERGE_TIMEOUT,
        || cluster.client(others[0], "queue while-cut") == "CLIENT-OK",
    );
    cluster.namespaces.set_link(cut, true);
    eventually("the cut-off node caught up", CONVERGE_TIMEOUT, || {
        cluster.client(cut, "passive-queue while-cut") == "CLIENT-OK"
    });
    for i in 0..NODES {
        cluster.wait_running(i, NODES);
        cluster.assert_absent(i, "while-cut-off");
    }
}

/// The AMQP side, when re-run by the test above in a node's namespace; a no-op otherwise.
/// Prints `CLIENT-OK`, or `CLIENT-ERR <reply code>` when the broker refused.
#[tokio::test]
async fn client_role() {
    let Ok(url) = std::env::var(CLIENT_URL_ENV) else {
        return;
    };
    let action = std::env::var(CLIENT_ACTION_ENV).unwrap_or_default();
    let words: Vec<&str> = action.split_whitespace().collect();
    let connection = common::step(
        "connect",
        Connection::connect(&url, ConnectionProperties::default()),
    )
    .await
    .expect("connect");
    // Publishing or consuming through a failover may outlast one step (a confirm can wait
    // for the commit timeout): those have a bound of their own, within the runner's.
    let bound = match words.first() {
        Some(&"publish-through" | &"consume-through" | &"publish-padded" | &"drain-padded") => {
            CLIENT_THROUGH_BOUND
        }
        _ => common::STEP_TIMEOUT,
    };
    let result = tokio::time::timeout(bound, act(&connection, &words))
        .await
        .unwrap_or_else(|_| panic!("timed out after {bound:?}: {action}"));
    match result {
        Ok(()) => println!("CLIENT-OK"),
        Err(error) => match amqp::reply_code(&error) {
            Some(code) => println!("CLIENT-ERR {code}"),
            None => panic!("{action}: {error:?}"),
        },
    }
}

async fn act(connection: &Connection, words: &[&str]) -> lapin::Result<()> {
    let channel = connection.create_channel().await?;
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let none = FieldTable::default;
    match words {
        ["declare", exchange, queue] => {
            let options = ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            };
            channel
                .exchange_declare(exchange, ExchangeKind::Direct, options, none())
                .await?;
            channel.queue_declare(queue, durable, none()).await?;
            let bind = QueueBindOptions::default();
            channel
                .queue_bind(queue, exchange, queue, bind, none())
                .await
        }
        ["passive", exchange, queue] => {
            let options = ExchangeDeclareOptions {
                passive: true,
                ..ExchangeDeclareOptions::default()
            };
            channel
                .exchange_declare(exchange, ExchangeKind::Direct, options, none())
                .await?;
            channel
                .queue_declare(queue, passive, none())
                .await
                .map(drop)
        }
        ["queue", queue] => channel
            .queue_declare(queue, durable, none())
            .await
            .map(drop),
        ["queue-max-length", queue, length] => {
            let mut arguments = FieldTable::default();
            let length: i64 = length.parse().expect("a length");
            arguments.insert("x-max-length".into(), AMQPValue::LongLongInt(length));
            channel
                .queue_declare(queue, durable, arguments)
                .await
                .map(drop)
        }
        ["quorum-queue", queue, size] => {
            let mut arguments = FieldTable::default();
            arguments.insert(
                "x-queue-type".into(),
                AMQPValue::LongString("quorum".into()),
            );
            let size: i64 = size.parse().expect("a group size");
            arguments.insert(
                "x-quorum-initial-group-size".into(),
                AMQPValue::LongLongInt(size),
            );
            channel
                .queue_declare(queue, durable, arguments)
                .await
                .map(drop)
        }
        ["passive-queue", queue] => channel
            .queue_declare(queue, passive, none())
            .await
            .map(drop),
        ["publish", exchange, key] => {
            channel
                .confirm_select(lapin::options::ConfirmSelectOptions::default())
                .await?;
            let confirm = channel
                .basic_publish(
                    exchange,
                    key,
                    BasicPublishOptions::default(),
                    b"to another node",
                    BasicProperties::default(),
                )
                .await?;
            confirm.await?;
            // A confirm (even a nack) without the channel closing would be a silent drop:
            // ask again on the same channel to see whether it is still open.
            channel.queue_declare(key, passive, none()).await.map(drop)
        }
        ["publish-through", queue, publisher, start, seconds, rest @ ..] => {
            let plan = PublishPlan {
                publisher: publisher.parse().expect("a publisher id"),
                start: start.parse().expect("a first number"),
                bound: Duration::from_secs(seconds.parse().expect("seconds")),
                through_failure: rest == ["through"],
            };
            let outcome = publish_through(connection, queue, plan).await;
            println!("CLIENT-OK {outcome}");
            Ok(())
        }
        other => forwarding_act(&channel, other).await,
    }
}

/// What one `publish-through` client publishes.
struct PublishPlan {
    /// Its messages are `publisher:sequence` in the history.
    publisher: u32,
    /// The first sequence number.
    start: usize,
    /// Publishes for at least this long.
    bound: Duration,
    /// Then goes on until a confirm arrived after a failure (a nack or a failed channel): the
    /// publisher saw the failover through. At most `PUBLISH_THROUGH_MAX` in all.
    through_failure: bool,
}

/// Within the client's own bound (`CLIENT_THROUGH_BOUND`), with room for the last window's
/// confirms (a publish that cannot commit is nacked after the broker's commit timeout, 5 s).
const PUBLISH_THROUGH_MAX: Duration = Duration::from_secs(12);
/// The bound of a client that publishes or consumes through a failover (within the runner's
/// `CTL_RUN_TIMEOUT`, 30 s).
const CLIENT_THROUGH_BOUND: Duration = Duration::from_secs(25);

/// Prints one history line (`tests/cluster/history.rs`) on the client's stdout.
fn record(event: Event) {
    println!("{}", event.line());
}

/// Confirmed persistent publishes of `m-START`, `m-START+1`, ... (message ids
/// `PUBLISHER:SEQUENCE`, each send, confirm and nack recorded in the history), paced (a small
/// window, then a pause), going on through nacks and channel errors (a new channel): what a
/// publisher does while the queue's leader fails over. `acked RANGES nacked RANGES next N`.
async fn publish_through(connection: &Connection, queue: &str, plan: PublishPlan) -> String {
    const WINDOW: usize = 10;
    // Pacing, not synchronisation: about 400 messages a second, so the drain afterwards
    // stays within the client's bound.
    const PAUSE: Duration = Duration::from_millis(25);
    let started = Instant::now();
    let (mut acked, mut nacked) = (Vec::new(), Vec::new());
    let mut next = plan.start;
    // (a failure was seen, a confirm came after the last failure)
    let (mut failed, mut recovered) = (false, false);
    let more = |failed: bool, recovered: bool| {
        let elapsed = started.elapsed();
        elapsed < PUBLISH_THROUGH_MAX
            && (elapsed < plan.bound || (plan.through_failure && !(failed && recovered)))
    };
    while more(failed, recovered) {
        let Ok(channel) = connection.create_channel().await else {
            break;
        };
        let options = lapin::options::ConfirmSelectOptions::default();
        if channel.confirm_select(options).await.is_err() {
            tokio::time::sleep(PAUSE).await;
            continue;
        }
        let mut channel_failed = false;
        while !channel_failed && more(failed, recovered) {
            let mut window = Vec::with_capacity(WINDOW);
            for _ in 0..WINDOW {
                let message = (plan.publisher, next as u64);
                let properties = persistent_with_kind().with_message_id(history_id(message));
                record(Event::Sent { message });
                let options = BasicPublishOptions::default();
                let published = channel
                    .basic_publish("", queue, options, &numbered(next), properties)
                    .await;
                next += 1;
                match published {
                    Ok(confirm) => window.push((next - 1, confirm)),
                    Err(_) => {
                        record(Event::Unconfirmed { message });
                        nacked.push(next - 1);
                        channel_failed = true;
                        break;
                    }
                }
            }
            for (number, confirm) in window {
                let message = (plan.publisher, number as u64);
                match confirm.await {
                    Ok(confirmation) if confirmation.is_ack() => {
                        record(Event::Confirmed { message });
                        acked.push(number);
                        recovered = failed;
                    }
                    outcome => {
                        record(Event::Unconfirmed { message });
                        nacked.push(number);
                        channel_failed |= outcome.is_err();
                        (failed, recovered) = (true, false);
                    }
                }
            }
            tokio::time::sleep(PAUSE).await;
        }
    }
    format!(
        "acked {} nacked {} next {next}",
        ranges(&acked),
        ranges(&nacked)
    )
}

/// A history message id as a message's `message-id`: `PUBLISHER:SEQUENCE`.
fn history_id((publisher, sequence): MessageId) -> lapin::types::ShortString {
    format!("{publisher}:{sequence}").into()
}

/// The history message a delivery carries: its `PUBLISHER:SEQUENCE` message id. One without
/// (published by a client that keeps no history) is publisher 0, which sends nothing, so the
/// checker reports it as invented.
fn delivered_message(delivery: &lapin::message::Delivery) -> MessageId {
    let named = delivery.properties.message_id().as_ref().and_then(|id| {
        let (publisher, sequence) = id.as_str().split_once(':')?;
        Some((publisher.parse().ok()?, sequence.parse().ok()?))
    });
    named.unwrap_or_else(|| {
        let body = std::str::from_utf8(&delivery.data).unwrap_or_default();
        let number = body.strip_prefix("m-").and_then(|n| n.parse().ok());
        (0, number.unwrap_or(u64::MAX))
    })
}

/// A set of history messages as one word: `P:RANGES/P:RANGES` (`none` when empty).
pub(crate) fn message_set(messages: &BTreeSet<MessageId>) -> String {
    let mut by_publisher: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for &(publisher, sequence) in messages {
        let sequence = usize::try_from(sequence).expect("a sequence number");
        by_publisher.entry(publisher).or_default().push(sequence);
    }
    if by_publisher.is_empty() {
        return "none".to_string();
    }
    let parts: Vec<String> = by_publisher
        .iter()
        .map(|(publisher, sequences)| format!("{publisher}:{}", ranges(sequences)))
        .collect();
    parts.join("/")
}

fn parse_message_set(text: &str) -> BTreeSet<MessageId> {
    if text == "none" {
        return BTreeSet::new();
    }
    let mut messages = BTreeSet::new();
    for part in text.split('/') {
        let (publisher, sequences) = part.split_once(':').expect("PUBLISHER:RANGES");
        let publisher: u32 = publisher.parse().expect("a publisher id");
        for sequence in parse_ranges(sequences) {
            messages.insert((publisher, sequence as u64));
        }
    }
    messages
}

/// `m-<i>`, the body of the i-th message a client action publishes.
fn numbered(i: usize) -> Vec<u8> {
    format!("m-{i}").into_bytes()
}

fn number_of(body: &[u8]) -> usize {
    let text = std::str::from_utf8(body).expect("a UTF-8 body");
    let digits = text.strip_prefix("m-").expect("a numbered body");
    digits.parse().expect("a number")
}

/// A body of `bytes` bytes, a pattern of prime period (251): a piece lost, doubled or moved
/// across a frame boundary shows.
fn large_body(bytes: usize) -> Vec<u8> {
    (0..bytes).map(|i| (i % 251) as u8).collect()
}

fn persistent_with_kind() -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert("kind".into(), AMQPValue::LongString("h".into()));
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_headers(headers)
}

/// Acked sequence numbers as ranges: `0-41,43-50`.
pub(crate) fn ranges(numbers: &[usize]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut iter = numbers.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        out.push(format!("{start}-{end}"));
    }
    if out.is_empty() {
        return "none".to_string();
    }
    out.join(",")
}

pub(crate) fn parse_ranges(text: &str) -> Vec<usize> {
    if text == "none" {
        return Vec::new();
    }
    let mut numbers = Vec::new();
    for range in text.split(',') {
        let (start, end) = range.split_once('-').expect("a range");
        let (start, end): (usize, usize) = (start.parse().unwrap(), end.parse().unwrap());
        numbers.extend(start..=end);
    }
    numbers
}

/// The client actions of the forwarding scenario.
async fn forwarding_act(channel: &lapin::Channel, words: &[&str]) -> lapin::Result<()> {
    use lapin::options::{BasicConsumeOptions, QueueDeleteOptions, QueuePurgeOptions};
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    match words {
        ["patterns"] => {
            let kinds = [
                ExchangeKind::Direct,
                ExchangeKind::Fanout,
                ExchangeKind::Topic,
                ExchangeKind::Headers,
            ];
            let keys = ["d", "", "t.*", ""];
            for (((exchange, _, queue), kind), key) in PATTERNS.iter().zip(kinds).zip(keys) {
                let options = ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                };
                channel
                    .exchange_declare(exchange, kind.clone(), options, FieldTable::default())
                    .await?;
                channel
                    .queue_declare(queue, durable, FieldTable::default())
                    .await?;
                let mut arguments = FieldTable::default();
                if kind == ExchangeKind::Headers {
                    arguments.insert("x-match".into(), AMQPValue::LongString("all".into()));
                    arguments.insert("kind".into(), AMQPValue::LongString("h".into()));
                }
                channel
                    .queue_bind(queue, exchange, key, QueueBindOptions::default(), arguments)
                    .await?;
            }
            let (_, _, default_queue) = PATTERNS[4];
            channel
                .queue_declare(default_queue, durable, FieldTable::default())
                .await
                .map(drop)
        }
        ["publish-many", exchange, key, count] => {
            let exchange = if *exchange == "-" { "" } else { exchange };
            let count: usize = count.parse().expect("a count");
            channel
                .confirm_select(lapin::options::ConfirmSelectOptions::default())
                .await?;
            let mandatory = BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            };
            let mut confirms = Vec::with_capacity(count);
            for i in 0..count {
                let properties = persistent_with_kind();
                confirms.push(
                    channel
                        .basic_publish(exchange, key, mandatory, &numbered(i), properties)
                        .await?,
                );
            }
            for (i, confirm) in confirms.into_iter().enumerate() {
                let confirmation = confirm.await?;
                assert!(
                    matches!(
                        confirmation,
                        lapin::publisher_confirm::Confirmation::Ack(None)
                    ),
                    "message {i} to {exchange:?}/{key}: {confirmation:?}"
                );
            }
            Ok(())
        }
        ["count", queue, expected] => {
            let expected: u32 = expected.parse().expect("a count");
            let declared = channel
                .queue_declare(queue, passive, FieldTable::default())
                .await?;
            assert_eq!(declared.message_count(), expected, "messages in {queue}");
            Ok(())
        }
        ["hold", queue, count, total] => {
            // Takes `count` with a prefetch of `count` and acks none: the queue's node hands
            // out no more (its ready count, asked from here, is the rest). The connection
            // closes when the client exits, which must requeue them on the queue's node.
            use futures_util::StreamExt;
            let count: u16 = count.parse().expect("a count");
            channel
                .basic_qos(count, lapin::options::BasicQosOptions::default())
                .await?;
            let mut consumer = channel
                .basic_consume(
                    queue,
                    "hold",
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            for i in 0..usize::from(count) {
                let delivery = consumer.next().await.expect("a delivery")?;
                assert_eq!(number_of(&delivery.data), i, "{queue}: in published order");
            }
            let total: u32 = total.parse().expect("a count");
            let declared = channel
                .queue_declare(queue, passive, FieldTable::default())
                .await?;
            let held = u32::from(count);
            assert_eq!(
                declared.message_count(),
                total - held,
                "{queue}: prefetch {held}"
            );
            Ok(())
        }
        ["get-first", queue] => {
            let got = channel
                .basic_get(queue, lapin::options::BasicGetOptions::default())
                .await?
                .expect("a message");
            assert_eq!(number_of(&got.delivery.data), 0);
            got.delivery
                .ack(lapin::options::BasicAckOptions::default())
                .await
        }
        ["drain", queue, count] => {
            let count: usize = count.parse().expect("a count");
            let got = drain(channel, queue, count).await?;
            assert_eq!(
                got,
                (0..count).collect::<Vec<_>>(),
                "{queue}: in published order"
            );
            Ok(())
        }
        ["drain-history", queue, consumer] => {
            // Takes what the queue holds now, recording each delivery for the history check.
            let declared = channel
                .queue_declare(queue, passive, FieldTable::default())
                .await?;
            let consumer: u32 = consumer.parse().expect("a consumer id");
            let count = declared.message_count() as usize;
            drain_recorded(channel, queue, consumer, count).await
        }
        ["consume-through", queue, consumer, confirmed] => {
            // One consumer, attached through a failover of the queue's leader, until every
            // confirmed message came (at least once); each delivery recorded for the history
            // check, which judges them.
            let consumer: u32 = consumer.parse().expect("a consumer id");
            let confirmed = parse_message_set(confirmed);
            let outcome = consume_through(channel, queue, consumer, confirmed).await?;
            println!("CLIENT-OK {outcome}");
            Ok(())
        }
        ["purge", queue, expected] => {
            let expected: u32 = expected.parse().expect("a count");
            let purged = channel
                .queue_purge(queue, QueuePurgeOptions::default())
                .await?;
            assert_eq!(purged, expected, "purged from {queue}");
            Ok(())
        }
        ["delete", queue] => channel
            .queue_delete(queue, QueueDeleteOptions::default())
            .await
            .map(drop),
        ["publish-until-nack", queue, publisher] => {
            publish_until_nack(channel, queue, publisher.parse().expect("a publisher id")).await;
            Ok(())
        }
        ["tx-publish", queue, count] => {
            let count: usize = count.parse().expect("a count");
            channel.tx_select().await?;
            for i in 0..count {
                channel
                    .basic_publish(
                        "",
                        queue,
                        BasicPublishOptions::default(),
                        &numbered(i),
                        persistent_with_kind(),
                    )
                    .await?;
            }
            channel.tx_commit().await
        }
        ["publish-large", queue, bytes] => {
            channel
                .confirm_select(lapin::options::ConfirmSelectOptions::default())
                .await?;
            let body = large_body(bytes.parse().expect("a size"));
            let confirmation = channel
                .basic_publish(
                    "",
                    queue,
                    BasicPublishOptions::default(),
                    &body,
                    persistent_with_kind(),
                )
                .await?
                .await?;
            assert!(
                matches!(
                    confirmation,
                    lapin::publisher_confirm::Confirmation::Ack(None)
                ),
                "{} bytes to {queue}: {confirmation:?}",
                body.len()
            );
            Ok(())
        }
        ["get-large", queue, bytes] => {
            let got = channel
                .basic_get(queue, lapin::options::BasicGetOptions::default())
                .await?
                .expect("a message");
            assert!(
                got.delivery.data == large_body(bytes.parse().expect("a size")),
                "{queue}: a body of {} bytes, not the one published",
                got.delivery.data.len()
            );
            got.delivery
                .ack(lapin::options::BasicAckOptions::default())
                .await
        }
        ["consume-large", queue, bytes] => {
            use futures_util::StreamExt;
            let mut consumer = channel
                .basic_consume(
                    queue,
                    "large",
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            let delivery = consumer.next().await.expect("a delivery")?;
            assert!(
                delivery.data == large_body(bytes.parse().expect("a size")),
                "{queue}: a body of {} bytes, not the one published",
                delivery.data.len()
            );
            delivery
                .ack(lapin::options::BasicAckOptions::default())
                .await
        }
        ["publish-padded", queue, start, end, bytes] => {
            let (start, end): (usize, usize) = (
                start.parse().expect("a first"),
                end.parse().expect("an end"),
            );
            let bytes: usize = bytes.parse().expect("a size");
            publish_padded(channel, queue, start..end, bytes).await
        }
        ["drain-padded", queue, start, end, bytes] => {
            let (start, end): (usize, usize) = (
                start.parse().expect("a first"),
                end.parse().expect("an end"),
            );
            let bytes: usize = bytes.parse().expect("a size");
            let again = drain_padded(channel, queue, start..end, bytes).await?;
            println!("CLIENT-OK again {again}");
            Ok(())
        }
        other => panic!("unknown client action {other:?}"),
    }
}

/// `m-<i>:` then `large_body`'s pattern up to `bytes` bytes: numbered, and a body damaged on
/// its way (through a snapshot) shows.
fn padded(i: usize, bytes: usize) -> Vec<u8> {
    let mut body = format!("m-{i}:").into_bytes();
    let pattern = large_body(bytes.saturating_sub(body.len()));
    body.extend_from_slice(&pattern);
    body
}

/// The number of a `padded` body, checked whole.
fn padded_number(body: &[u8], bytes: usize) -> usize {
    let colon = body.iter().position(|&b| b == b':').expect("a padded body");
    let number = number_of(&body[..colon]);
    assert!(
        body == padded(number, bytes),
        "message {number}: its body changed"
    );
    number
}

/// Confirmed persistent publishes of `padded` messages `numbers`, all acked.
async fn publish_padded(
    channel: &lapin::Channel,
    queue: &str,
    numbers: std::ops::Range<usize>,
    bytes: usize,
) -> lapin::Result<()> {
    channel
        .confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await?;
    let mut confirms = Vec::with_capacity(numbers.len());
    for i in numbers {
        let body = padded(i, bytes);
        let properties = persistent_with_kind();
        let options = BasicPublishOptions::default();
        let confirm = channel
            .basic_publish("", queue, options, &body, properties)
            .await?;
        confirms.push((i, confirm));
    }
    for (i, confirm) in confirms {
        let confirmation = confirm.await?;
        assert!(
            matches!(
                confirmation,
                lapin::publisher_confirm::Confirmation::Ack(None)
            ),
            "message {i} to {queue}: {confirmation:?}"
        );
    }
    Ok(())
}

/// Consumes and acks until every one of `numbers` came, first deliveries in order; a message
/// delivered again must be flagged redelivered, and nothing outside `numbers` may come.
/// Returns how many deliveries were repeats.
async fn drain_padded(
    channel: &lapin::Channel,
    queue: &str,
    numbers: std::ops::Range<usize>,
    bytes: usize,
) -> lapin::Result<usize> {
    use futures_util::StreamExt;
    use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
    channel.basic_qos(64, BasicQosOptions::default()).await?;
    let mut consumer = channel
        .basic_consume(
            queue,
            "drain-padded",
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut next = numbers.start;
    let mut again = 0;
    while next < numbers.end {
        let delivery = consumer.next().await.expect("a delivery")?;
        let number = padded_number(&delivery.data, bytes);
        if number < next && numbers.contains(&number) {
            assert!(
                delivery.redelivered,
                "message {number} twice, not flagged redelivered"
            );
            again += 1;
        } else {
            assert_eq!(number, next, "{queue}: first deliveries in published order");
            next += 1;
        }
        delivery.ack(BasicAckOptions::default()).await?;
    }
    // Closed, not dropped: close-ok comes after the broker took every ack before it. A process
    // exiting with deliveries it did not read resets the connection, and acks still in the
    // broker's socket buffer would be lost (those messages delivered again).
    channel.close(200, "drained").await?;
    Ok(again)
}

/// How long `consume-through` waits for the confirmed messages it has not seen: then it stops
/// and the history check names what never came (within `CLIENT_THROUGH_BOUND`).
const CONSUME_THROUGH_MAX: Duration = Duration::from_secs(20);

/// The `consume-through` action: consumes and acks, recording each delivery, until every
/// message of `confirmed` was delivered or `CONSUME_THROUGH_MAX` passed; returns `consumed N
/// again M missing K` (distinct messages, deliveries of one seen before, confirmed ones not
/// seen).
async fn consume_through(
    channel: &lapin::Channel,
    queue: &str,
    consumer: u32,
    mut confirmed: BTreeSet<MessageId>,
) -> lapin::Result<String> {
    use futures_util::StreamExt;
    use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
    channel.basic_qos(64, BasicQosOptions::default()).await?;
    let mut stream = channel
        .basic_consume(
            queue,
            "through",
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut seen = BTreeSet::new();
    let mut again = 0;
    let deadline = tokio::time::Instant::now() + CONSUME_THROUGH_MAX;
    while !confirmed.is_empty() {
        let Ok(next) = tokio::time::timeout_at(deadline, stream.next()).await else {
            break;
        };
        // A broker's basic.cancel ends the stream: a consumer that was not kept attached.
        let delivery = next.expect("the consumer was cancelled")?;
        let message = delivered_message(&delivery);
        record(Event::Delivered {
            consumer,
            message,
            redelivered: delivery.redelivered,
        });
        confirmed.remove(&message);
        if !seen.insert(message) {
            again += 1;
        }
        delivery.ack(BasicAckOptions::default()).await?;
    }
    Ok(format!(
        "consumed {} again {again} missing {}",
        seen.len(),
        confirmed.len()
    ))
}

/// Consumes `count` messages and acks them, recording each delivery.
async fn drain_recorded(
    channel: &lapin::Channel,
    queue: &str,
    consumer: u32,
    count: usize,
) -> lapin::Result<()> {
    use futures_util::StreamExt;
    use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
    channel.basic_qos(64, BasicQosOptions::default()).await?;
    let mut stream = channel
        .basic_consume(
            queue,
            "drain-history",
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    for _ in 0..count {
        let delivery = stream.next().await.expect("a delivery")?;
        record(Event::Delivered {
            consumer,
            message: delivered_message(&delivery),
            redelivered: delivery.redelivered,
        });
        delivery.ack(BasicAckOptions::default()).await?;
    }
    Ok(())
}

/// Consumes `count` messages and acks them; their numbers in delivery order.
async fn drain(channel: &lapin::Channel, queue: &str, count: usize) -> lapin::Result<Vec<usize>> {
    use futures_util::StreamExt;
    use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
    channel.basic_qos(64, BasicQosOptions::default()).await?;
    let mut consumer = channel
        .basic_consume(
            queue,
            "drain",
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut got = Vec::with_capacity(count);
    while got.len() < count {
        let delivery = consumer.next().await.expect("a delivery")?;
        got.push(number_of(&delivery.data));
        delivery.ack(BasicAckOptions::default()).await?;
    }
    Ok(got)
}

/// Confirmed persistent publishes in windows until one is nacked, the channel fails, or the
/// time bound passes, each send, confirm and nack recorded in the history (messages
/// `PUBLISHER:0`, `PUBLISHER:1`, ...); prints the acked numbers (`CLIENT-OK acked RANGES`).
async fn publish_until_nack(channel: &lapin::Channel, queue: &str, publisher: u32) {
    const WINDOW: usize = 32;
    // Within the client's step timeout (common::STEP_TIMEOUT).
    const PUBLISHING_BOUND: Duration = Duration::from_secs(7);
    let started = Instant::now();
    let mut acked = Vec::new();
    let mut next = 0;
    let selected = channel
        .confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await;
    'publishing: while selected.is_ok() && started.elapsed() < PUBLISHING_BOUND {
        let mut window = Vec::with_capacity(WINDOW);
        for _ in 0..WINDOW {
            let message = (publisher, next as u64);
            let properties = persistent_with_kind().with_message_id(history_id(message));
            record(Event::Sent { message });
            let options = BasicPublishOptions::default();
            match channel
                .basic_publish("", queue, options, &numbered(next), properties)
                .await
            {
                Ok(confirm) => window.push((next, confirm)),
                Err(_) => {
                    record(Event::Unconfirmed { message });
                    break;
                }
            }
            next += 1;
        }
        let mut nacked = window.is_empty();
        for (number, confirm) in window {
            let message = (publisher, number as u64);
            match confirm.await {
                Ok(confirmation) if confirmation.is_ack() => {
                    record(Event::Confirmed { message });
                    acked.push(number);
                }
                _ => {
                    record(Event::Unconfirmed { message });
                    nacked = true;
                }
            }
        }
        if nacked {
            break 'publishing;
        }
    }
    println!("CLIENT-OK acked {}", ranges(&acked));
}
