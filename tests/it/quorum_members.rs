//! Quorum queue groups smaller than the cluster, over three nodes (network namespaces, as
//! tests/it/quorum.rs, with tests/it/cluster.rs's AMQP client role):
//!
//! 1. `x-quorum-initial-group-size: 2` declared on node 1: every node's API shows the same two
//!    members (node 1 first), the third node (the outsider) holds no copy (no group log), yet
//!    serves clients: confirmed publishes on it reach the leader, a consumer on the other
//!    member drains them in order.
//! 2. The second member killed with SIGKILL: one of two is no majority, so a publisher on the
//!    outsider gets no confirm (nacks only); restarted, the group elects again and confirms
//!    resume; a consumer on the outsider then gets every confirmed message (judged by
//!    tests/cluster/history.rs).
//! 3. The outsider restarted: its recorded members are the same, and it still forwards.
//!
//! Every wait is bounded; the brokers stop when the cluster drops. Skipped (with a printed
//! reason) when not root or without `ip` or `curl`.

use crate::common;

use std::time::Instant;

use crate::cluster::{message_set, parse_ranges, ranges};
use crate::history::History;
use crate::quorum::logged_quorum_leader;
use common::cluster::{eventually, node_name, Cluster, Layout, CONVERGE_TIMEOUT, NODES};
use common::netns;

/// This suite's names and addresses (the other cluster suites have their own).
const LAYOUT: Layout = Layout {
    namespace_prefix: "ringmq-qm",
    link_prefix: "qm",
    subnet: "10.213.14",
};
const QUEUE: &str = "qq-two";
/// Confirmed messages of the first pass (published on the outsider).
const MESSAGES: usize = 200;
const NO_MAJORITY_PUBLISHER: u32 = 201;
const RESUMED_PUBLISHER: u32 = 202;
const CONSUMER: u32 = 1;

/// The queue as node `i`'s API shows it.
pub(crate) fn queue_json(cluster: &Cluster, i: usize, queue: &str) -> serde_json::Value {
    let (status, body) = cluster.http(i, "GET", &format!("/api/queues/%2F/{queue}"), None);
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("a queue object")
}

/// The member names node `i` shows for `queue`.
pub(crate) fn members_shown(cluster: &Cluster, i: usize, queue: &str) -> Vec<String> {
    let shown = queue_json(cluster, i, queue);
    shown["members"]
        .as_array()
        .map(|names| {
            names
                .iter()
                .filter_map(|n| n.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether node `i` has a quorum group log (a copy of some replicated queue).
pub(crate) fn holds_group_log(cluster: &Cluster, i: usize) -> bool {
    let dir = cluster.brokers[i].data_dir().join("cluster");
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            name.starts_with("quorum-") && name.ends_with(".log")
        })
}

/// `acked RANGES nacked RANGES ...` of a publishing client.
fn acked_and_nacked(verdict: &str) -> (Vec<usize>, Vec<usize>) {
    let words: Vec<&str> = verdict.split_whitespace().collect();
    match words.as_slice() {
        ["CLIENT-OK", "acked", acked, "nacked", nacked, ..] => {
            (parse_ranges(acked), parse_ranges(nacked))
        }
        _ => panic!("publisher verdict: {verdict}"),
    }
}

pub(crate) fn started_cluster(layout: Layout) -> Cluster {
    let cluster = Cluster::start(layout);
    eventually("a first cluster leader", CONVERGE_TIMEOUT, || {
        (0..NODES).all(|i| cluster.logged_leader(i, 0).is_some())
    });
    for i in 0..NODES {
        cluster.wait_running(i, NODES);
    }
    cluster
}

#[test]
fn a_group_of_two_on_three_nodes_serves_every_node_and_needs_both() {
    if let Some(reason) = netns::skip_reason(&["curl"]) {
        eprintln!("SKIPPED quorum_members (group of two): {reason}");
        return;
    }
    let started = Instant::now();
    let mut cluster = started_cluster(LAYOUT);

    // 1. Declared on node 1 with two members; the same members on every node.
    cluster.client_ok(0, &format!("quorum-queue {QUEUE} 2"));
    let members = members_shown(&cluster, 0, QUEUE);
    assert_eq!(members.len(), 2, "{members:?}");
    assert_eq!(members[0], node_name(0), "the declaring node first");
    let member = (1..NODES)
        .find(|&i| members.contains(&node_name(i)))
        .expect("a second member");
    let outsider = (1..NODES).find(|&i| i != member).expect("the outsider");
    for i in 0..NODES {
        eventually("every node shows the members", CONVERGE_TIMEOUT, || {
            members_shown(&cluster, i, QUEUE) == members
        });
        let shown = queue_json(&cluster, i, QUEUE);
        assert_eq!(shown["type"], "quorum", "{shown}");
    }
    eventually("the outsider names the leader", CONVERGE_TIMEOUT, || {
        queue_json(&cluster, outsider, QUEUE)["leader"] == node_name(0).as_str()
    });
    assert!(holds_group_log(&cluster, 0) && holds_group_log(&cluster, member));
    assert!(
        !holds_group_log(&cluster, outsider),
        "the outsider holds a copy"
    );
    // Published with confirms on the outsider, consumed in order on the other member.
    cluster.client_ok(outsider, &format!("publish-many - {QUEUE} {MESSAGES}"));
    cluster.client_ok(member, &format!("count {QUEUE} {MESSAGES}"));
    cluster.client_ok(member, &format!("drain {QUEUE} {MESSAGES}"));
    cluster.client_ok(outsider, &format!("count {QUEUE} 0"));

    // 2. One of two members is no majority: nothing is confirmed until it is back.
    cluster.brokers[member].kill9();
    cluster.wait_running(0, NODES - 1);
    let mut history = History::default();
    let action = format!("publish-until-nack {QUEUE} {NO_MAJORITY_PUBLISHER}");
    let (verdict, output) = cluster.client_output(outsider, &action);
    assert_eq!(
        verdict, "CLIENT-OK acked none",
        "confirmed without a majority"
    );
    history
        .read(&output)
        .expect("the stalled publisher's history");
    let marks: Vec<usize> = [0, member]
        .iter()
        .map(|&i| cluster.brokers[i].log_text().len())
        .collect();
    cluster.brokers[member].restart_same_dir();
    for i in 0..NODES {
        cluster.wait_running(i, NODES);
    }
    eventually("the group leads again", CONVERGE_TIMEOUT, || {
        let named: Vec<Option<usize>> = [0, member]
            .iter()
            .zip(&marks)
            .map(|(&i, &mark)| logged_quorum_leader(&cluster, i, mark))
            .collect();
        named[0].is_some() && named[0] == named[1]
    });
    let action = format!("publish-through {QUEUE} {RESUMED_PUBLISHER} 0 1 through");
    let (verdict, output) = cluster.client_output(outsider, &action);
    history
        .read(&output)
        .expect("the resumed publisher's history");
    let (acked, nacked) = acked_and_nacked(&verdict);
    eprintln!(
        "after the member's return: acked {} nacked {}",
        ranges(&acked),
        ranges(&nacked)
    );
    assert!(!acked.is_empty(), "no confirm once the member is back");
    let confirmed = message_set(&history.confirmed());
    let action = format!("consume-through {QUEUE} {CONSUMER} {confirmed}");
    let (verdict, output) = cluster.client_output(outsider, &action);
    assert!(verdict.starts_with("CLIENT-OK"), "{verdict}");
    history.read(&output).expect("the consumer's history");
    let verdict = history.check();
    eprintln!("group of two: {verdict}");
    verdict.assert_sound();

    // 3. The outsider restarted: the same members, and it still forwards to the leader.
    cluster.brokers[outsider].restart_same_dir();
    for i in 0..NODES {
        cluster.wait_running(i, NODES);
    }
    assert_eq!(members_shown(&cluster, outsider, QUEUE), members);
    assert!(!holds_group_log(&cluster, outsider));
    cluster.client_ok(outsider, &format!("publish-many - {QUEUE} 10"));
    eprintln!("quorum_members (group of two): {:?}", started.elapsed());
}

/// The membership test's names and addresses.
const CHANGES_LAYOUT: Layout = Layout {
    namespace_prefix: "ringmq-qg",
    link_prefix: "qg",
    subnet: "10.213.15",
};
const GROWN: &str = "qq-grown";
const GROWN_MESSAGES: usize = 300;

/// `ringmqctl ARGS` on node `i`: its exit code and what it said.
fn ctl(cluster: &Cluster, i: usize, args: &[&str]) -> (Option<i32>, String) {
    let output = cluster.ctl_output(i, args);
    (output.code, format!("{}{}", output.stdout, output.stderr))
}

fn members_everywhere(cluster: &Cluster, queue: &str, expected: &[String]) {
    for i in 0..NODES {
        eventually(
            &format!("node {} shows members {expected:?}", i + 1),
            CONVERGE_TIMEOUT,
            || members_shown(cluster, i, queue) == expected,
        );
    }
}

/// `rabbitmq-queues`' membership verbs (ringmqctl add_member / grow / delete_member): a group
/// of one on node 1 with confirmed messages is grown to three (add_member from node 2, then
/// grow from node 3); the original leader killed with SIGKILL, the two others elect a leader
/// that serves every confirmed message in order; node 1 deleted from the group while down
/// (restarted, its copy goes), then the serving leader deleted (it hands over first); the
/// API's `members` follows on every node, and the last member cannot be deleted. What RabbitMQ refuses is refused with a non-zero
/// exit: a classic queue, a node not in the cluster, the last member.
#[test]
fn members_are_added_and_deleted_as_rabbitmq_queues_does() {
    if let Some(reason) = netns::skip_reason(&["curl"]) {
        eprintln!("SKIPPED quorum_members (membership changes): {reason}");
        return;
    }
    let started = Instant::now();
    let mut cluster = started_cluster(CHANGES_LAYOUT);
    let [n1, n2, n3] = [node_name(0), node_name(1), node_name(2)];
    cluster.client_ok(0, &format!("quorum-queue {GROWN} 1"));
    members_everywhere(&cluster, GROWN, std::slice::from_ref(&n1));
    cluster.client_ok(1, &format!("publish-many - {GROWN} {GROWN_MESSAGES}"));

    // Refusals first: nothing changes.
    cluster.client_ok(0, "queue classic-q");
    let (code, said) = ctl(&cluster, 1, &["add_member", "classic-q", &n2]);
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("not a quorum queue"), "{said}");
    let (code, said) = ctl(&cluster, 1, &["add_member", GROWN, "ringmq@elsewhere"]);
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("not a node of this cluster"), "{said}");
    let (code, said) = ctl(&cluster, 1, &["delete_member", GROWN, &n1]);
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("last member"), "{said}");
    let (code, said) = ctl(
        &cluster,
        1,
        &["add_member", "-p", "/", "no-such-queue", &n2],
    );
    assert_eq!(code, Some(1), "{said}");

    // Grown to three: from another node each time; the answer comes once the leader applied it.
    let (code, said) = ctl(&cluster, 1, &["add_member", GROWN, &n2]);
    assert_eq!(code, Some(0), "{said}");
    members_everywhere(&cluster, GROWN, &[n1.clone(), n2.clone()]);
    let (code, said) = ctl(&cluster, 2, &["grow", &n3, "all"]);
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains(GROWN), "{said}");
    members_everywhere(&cluster, GROWN, &[n1.clone(), n2.clone(), n3.clone()]);
    assert!((0..NODES).all(|i| holds_group_log(&cluster, i)));

    // The original leader killed: the two added members serve every confirmed message.
    let marks: Vec<usize> = (1..NODES)
        .map(|i| cluster.brokers[i].log_text().len())
        .collect();
    cluster.brokers[0].kill9();
    let mut leader = None;
    eventually(
        "a new leader among the added members",
        CONVERGE_TIMEOUT,
        || {
            let named: Vec<Option<usize>> = (1..NODES)
                .zip(&marks)
                .map(|(i, &mark)| logged_quorum_leader(&cluster, i, mark))
                .collect();
            leader = named[0].filter(|&l| l != 0 && named[1] == Some(l));
            leader.is_some()
        },
    );
    let leader = leader.expect("a leader");
    let other = if leader == 1 { 2 } else { 1 };
    cluster.client_ok(other, &format!("count {GROWN} {GROWN_MESSAGES}"));
    cluster.client_ok(other, &format!("drain {GROWN} {GROWN_MESSAGES}"));
    cluster.client_ok(leader, &format!("count {GROWN} 0"));

    // Node 1 deleted from the group while it is down (the two others commit it); restarted,
    // it drops the copy its previous run left and shows the new members.
    let (code, said) = ctl(&cluster, other, &["delete_member", GROWN, &n1]);
    assert_eq!(code, Some(0), "{said}");
    assert!(
        holds_group_log(&cluster, 0),
        "node 1 was down: its files are there"
    );
    cluster.brokers[0].restart_same_dir();
    for i in 0..NODES {
        cluster.wait_running(i, NODES);
    }
    members_everywhere(&cluster, GROWN, &[n2.clone(), n3.clone()]);
    eventually("node 1's copy gone", CONVERGE_TIMEOUT, || {
        !holds_group_log(&cluster, 0)
    });
    // The leader itself deleted: it hands over first.
    let leader_name = node_name(leader);
    let (code, said) = ctl(&cluster, 0, &["delete_member", GROWN, &leader_name]);
    assert_eq!(code, Some(0), "{said}");
    let last = node_name(other);
    members_everywhere(&cluster, GROWN, std::slice::from_ref(&last));
    let (code, said) = ctl(&cluster, 0, &["delete_member", GROWN, &last]);
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("last member"), "{said}");
    // Still served from every node: published on node 1, consumed on the removed leader.
    cluster.client_ok(0, &format!("publish-many - {GROWN} 20"));
    cluster.client_ok(leader, &format!("drain {GROWN} 20"));
    eprintln!(
        "quorum_members (membership changes): {:?}",
        started.elapsed()
    );
}
