//! Joining and leaving a running cluster (`ringmqctl join_cluster`, `forget_cluster_node`),
//! over four network namespaces the test makes (as tests/it/cluster.rs, whose AMQP client role
//! it uses): three nodes started with `--peer`, a fourth with only `--node-name` and
//! `--cluster-secret`.
//!
//! In order: the fourth node's join is refused with a wrong secret, then while it holds a
//! declared queue (not fresh); with a fresh data directory it joins through node 1. Then every
//! node lists four running nodes (`/api/nodes`, `cluster_status`), the new node has the
//! topology declared before it joined, a queue declared on it is seen everywhere, publishes on
//! it to node 1's queue are forwarded and confirmed, and publishes on node 2 to its queue reach
//! it. Node 1 and the new node restart with the same flags and are still four; a quorum queue
//! over four has the new node in its group. Forgetting the new node while it runs is refused;
//! stopped, it is forgotten: three nodes listed everywhere, its classic queue gone, the quorum
//! queue's group without it (still confirming), the three still commit; restarted, it is
//! refused by the others and confirms nothing.
//!
//! Every wait is bounded; the brokers stop when the cluster drops. Skipped (with a printed
//! reason) when not root or without `ip` or `curl`.

use crate::common;

use common::cluster::{
    eventually, node_name, Cluster, Layout, Namespaces, CLUSTER_PORT, CONVERGE_TIMEOUT, NODES,
    SECRET,
};
use common::netns;
use common::Broker;

const LAYOUT: Layout = Layout {
    namespace_prefix: "ringmq-jn",
    link_prefix: "jn",
    subnet: "10.213.21",
};
/// The node that joins (the fourth namespace).
const JOINER: usize = NODES;
const FORWARDED: usize = 20;

/// The joiner's flags: itself only, no `--peer`.
fn joiner_args(secret: &str) -> Vec<String> {
    vec![
        "--listen".to_string(),
        LAYOUT.address(JOINER),
        "--node-name".to_string(),
        node_name(JOINER),
        "--cluster-port".to_string(),
        CLUSTER_PORT.to_string(),
        "--cluster-secret".to_string(),
        secret.to_string(),
    ]
}

fn start(joiner_secret: &str) -> Cluster {
    let namespaces = Namespaces::create_sized(LAYOUT, NODES + 1);
    let mut brokers: Vec<Broker> = (0..NODES)
        .map(|i| {
            let args = LAYOUT.node_args(i, SECRET);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            Broker::start_with_launcher(1, &namespaces.nodes[i].launcher(), &args)
        })
        .collect();
    let args = joiner_args(joiner_secret);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let launcher = namespaces.nodes[JOINER].launcher();
    brokers.push(Broker::start_with_launcher(1, &launcher, &args));
    Cluster {
        brokers,
        namespaces,
        layout: LAYOUT,
    }
}

/// (name, running) of every node node `i`'s `/api/nodes` lists.
fn nodes_shown(cluster: &Cluster, i: usize) -> Vec<(String, bool)> {
    let (status, body) = cluster.http(i, "GET", "/api/nodes", None);
    if status != 200 {
        return Vec::new();
    }
    let nodes: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let mut shown: Vec<(String, bool)> = nodes
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| {
            let name = n["name"].as_str().unwrap_or_default().to_string();
            (name, n["running"].as_bool().unwrap_or(false))
        })
        .collect();
    shown.sort();
    shown
}

/// Waits until node `i` lists exactly the nodes `members` (indexes), `running` of them
/// running and the others not.
fn wait_nodes(cluster: &Cluster, i: usize, members: &[usize], running: &[usize]) {
    let mut expected: Vec<(String, bool)> = members
        .iter()
        .map(|&m| (node_name(m), running.contains(&m)))
        .collect();
    expected.sort();
    let what = format!("node {} listing {expected:?}", i + 1);
    eventually(&what, CONVERGE_TIMEOUT, || {
        nodes_shown(cluster, i) == expected
    });
}

fn join(cluster: &Cluster) -> common::ctl::CtlOutput {
    let member = format!("{}={}:{CLUSTER_PORT}", node_name(0), LAYOUT.address(0));
    cluster.ctl_output(JOINER, &["join_cluster", &member])
}

/// `forget_cluster_node` of the new node, on node 2.
fn forget_joiner(cluster: &Cluster) -> common::ctl::CtlOutput {
    cluster.ctl_output(1, &["forget_cluster_node", &node_name(JOINER)])
}

fn refused(output: &common::ctl::CtlOutput, text: &str) {
    assert_ne!(output.code, Some(0), "{output:?}");
    let said = format!("{}{}", output.stdout, output.stderr);
    assert!(said.contains(text), "expected {text:?} in {output:?}");
}

#[test]
fn a_node_joins_a_running_cluster_survives_restarts_and_is_forgotten() {
    if let Some(reason) = netns::skip_reason(&["curl"]) {
        eprintln!("SKIPPED cluster_join: {reason}");
        return;
    }
    let mut cluster = start("not-the-cluster-secret");
    let three: Vec<usize> = (0..NODES).collect();
    for i in 0..NODES {
        wait_nodes(&cluster, i, &three, &three);
    }
    // The first declare waits for the first leader.
    eventually("a declare on node 1", CONVERGE_TIMEOUT, || {
        cluster.client(0, "queue before-join") == "CLIENT-OK"
    });

    // Refusals: a wrong secret, then a node that is not fresh.
    refused(&join(&cluster), "refused this node");
    let args = joiner_args(SECRET);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    cluster.brokers[JOINER].restart_with_args(&args);
    cluster.client_ok(JOINER, "queue local-only");
    refused(&join(&cluster), "not fresh");
    for i in 0..NODES {
        wait_nodes(&cluster, i, &three, &three);
    }
    // Reset: a new data directory.
    cluster.brokers[JOINER].stop();
    let data = cluster.brokers[JOINER].data_dir();
    std::fs::remove_dir_all(&data).expect("remove the joiner's data");
    std::fs::create_dir_all(&data).expect("a new data directory");
    cluster.brokers[JOINER].restart_same_dir();

    join(&cluster).ok();
    let four: Vec<usize> = (0..=JOINER).collect();
    for i in 0..=JOINER {
        wait_nodes(&cluster, i, &four, &four);
    }
    let status = cluster.ctl(1, &["cluster_status"]);
    assert!(status.contains(&node_name(JOINER)), "{status}");
    joined_node_serves_clients(&cluster);

    // Membership survives restarts with the same flags, of an old member and of the new one.
    for restarted in [0, JOINER] {
        cluster.brokers[restarted].restart_same_dir();
        for i in 0..=JOINER {
            wait_nodes(&cluster, i, &four, &four);
        }
    }
    eventually("a declare after the restarts", CONVERGE_TIMEOUT, || {
        cluster.client(1, "queue after-restarts") == "CLIENT-OK"
    });
    eventually("the new node caught up", CONVERGE_TIMEOUT, || {
        cluster.client(JOINER, "passive-queue after-restarts") == "CLIENT-OK"
    });
    cluster.client_ok(JOINER, "passive-queue from-joiner");
    // A quorum queue over all four: the new node is one of its group.
    cluster.client_ok(0, "quorum-queue qq-all 4");
    eventually("qq-all's group of four", CONVERGE_TIMEOUT, || {
        group_of(&cluster, 0, "qq-all").len() == NODES + 1
    });

    forgotten(&mut cluster, &three);
}

/// The members node `i` shows for a quorum queue, in name order.
fn group_of(cluster: &Cluster, i: usize, queue: &str) -> Vec<String> {
    let mut members = crate::quorum_members::members_shown(cluster, i, queue);
    members.sort();
    members
}

/// The new node has what was declared before; its own declares are everyone's; publishes cross
/// to and from it.
fn joined_node_serves_clients(cluster: &Cluster) {
    eventually("the topology before the join", CONVERGE_TIMEOUT, || {
        cluster.client(JOINER, "passive-queue before-join") == "CLIENT-OK"
    });
    // Its first proposal waits for it to have heard of the leader.
    eventually("a declare on the new node", CONVERGE_TIMEOUT, || {
        cluster.client(JOINER, "queue from-joiner") == "CLIENT-OK"
    });
    for i in 0..NODES {
        eventually("the new node's queue everywhere", CONVERGE_TIMEOUT, || {
            cluster.client(i, "passive-queue from-joiner") == "CLIENT-OK"
        });
    }
    cluster.client_ok(JOINER, &format!("publish-many - before-join {FORWARDED}"));
    cluster.client_ok(0, &format!("count before-join {FORWARDED}"));
    cluster.client_ok(1, &format!("publish-many - from-joiner {FORWARDED}"));
    cluster.client_ok(JOINER, &format!("count from-joiner {FORWARDED}"));
}

/// Forget is refused while the node runs; stopped, it leaves: its queue goes, the three
/// commit alone, and back up it is refused.
fn forgotten(cluster: &mut Cluster, three: &[usize]) {
    refused(&forget_joiner(cluster), "running");
    cluster.brokers[JOINER].stop();
    let four: Vec<usize> = (0..=JOINER).collect();
    wait_nodes(cluster, 1, &four, three);
    // Node 4 may have led: the three may be electing, and a change is refused meanwhile.
    eventually("forget_cluster_node done", CONVERGE_TIMEOUT, || {
        let output = forget_joiner(cluster);
        output.code == Some(0) || output.stderr.contains("is not a member of this cluster")
    });
    for i in 0..NODES {
        wait_nodes(cluster, i, three, three);
        eventually("the forgotten node's queue gone", CONVERGE_TIMEOUT, || {
            cluster.client(i, "passive-queue from-joiner") == "CLIENT-ERR 404"
        });
    }
    eventually("a declare by the three", CONVERGE_TIMEOUT, || {
        cluster.client(2, "queue after-forget") == "CLIENT-OK"
    });
    // It left the quorum queue's group too (as RabbitMQ's forget), which still confirms.
    let names: Vec<String> = three.iter().map(|&i| node_name(i)).collect();
    for i in 0..NODES {
        eventually("qq-all's group without it", CONVERGE_TIMEOUT, || {
            group_of(cluster, i, "qq-all") == names
        });
    }
    cluster.client_ok(1, "publish-many - qq-all 10");
    // Back up with its old data: the others refuse it, so it reaches no majority.
    cluster.brokers[JOINER].restart_same_dir();
    let verdict = cluster.client(JOINER, "queue forgotten-declares");
    assert_eq!(
        verdict, "CLIENT-ERR 541",
        "the forgotten node commits nothing"
    );
    for i in 0..NODES {
        wait_nodes(cluster, i, three, three);
        cluster.client_ok(i, "passive-queue after-forget");
    }
}
