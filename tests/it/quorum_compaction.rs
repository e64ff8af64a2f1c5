//! Quorum group log compaction (issue 13) over three nodes (network namespaces, as
//! tests/it/quorum.rs, with tests/it/cluster.rs's AMQP client role), every node started with
//! `--quorum-compact-bytes 65536`:
//!
//! 1. 2000 confirmed ~2 KiB messages to a replicated quorum queue, 500 consumed and acked:
//!    every node's group log file stays within twice the threshold plus 1 MiB, and every node
//!    has a snapshot file.
//! 2. A follower killed with SIGKILL, 2000 more confirmed: restarted, it is too far behind the
//!    leader's log and installs the leader's snapshot ("installed snapshot" in its log).
//! 3. That node made the leader, deterministically: the third node is stopped and a few marker
//!    messages confirmed (so the snapshot-restored node holds every committed entry, the only
//!    majority left being it and the leader), then the leader is killed and the third node
//!    restarted: its log lacks the markers, so Raft's vote goes only to the restored node.
//! 4. On it, messages 500..4010 drain in order, none missing, a repeat only when flagged
//!    redelivered, nothing left after.
//!
//! Every wait is bounded; the brokers stop when the cluster drops. Skipped (with a printed
//! reason) when not root or without `ip` or `curl`.

use crate::common;

use std::path::Path;
use std::time::Instant;

use crate::quorum::agreed_quorum_leader;
use common::cluster::{eventually, Cluster, Layout, CONVERGE_TIMEOUT, NODES, POLL_INTERVAL};
use common::netns;

/// This suite's names and addresses (the other cluster suites have their own).
const LAYOUT: Layout = Layout {
    namespace_prefix: "ringmq-qc",
    link_prefix: "qc",
    subnet: "10.213.13",
};
const COMPACT_BYTES: u64 = 64 * 1024;
/// What a group's log file may hold: a leader keeps entries for a live follower up to twice
/// the threshold, plus one turn's entries (the slack).
const LOG_BYTES_BOUND: u64 = 2 * COMPACT_BYTES + 1024 * 1024;
const BODY_BYTES: usize = 2048;
const FIRST_BATCH: usize = 2000;
const ACKED: usize = 500;
const SECOND_BATCH: usize = 2000;
/// Confirmed while the third node is down: the leader and the restored node both hold them.
const MARKERS: usize = 10;
const QUEUE: &str = "qq-compacted";

/// Node `i`'s group log size and whether it has a snapshot (the only quorum queue here).
fn group_files(dir: &Path) -> (Option<u64>, bool) {
    let mut log_bytes = None;
    let mut snapshot = false;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if !name.starts_with("quorum-") {
            continue;
        }
        if name.ends_with(".log") {
            log_bytes = entry.metadata().ok().map(|m| m.len());
        } else if name.ends_with(".snapshot") {
            snapshot = true;
        }
    }
    (log_bytes, snapshot)
}

fn cluster_dir(cluster: &Cluster, i: usize) -> std::path::PathBuf {
    cluster.brokers[i].data_dir().join("cluster")
}

/// Waits until every node of `nodes` has a snapshot and a log within the bound.
fn wait_compacted(cluster: &Cluster, nodes: &[usize], what: &str) {
    let files = || -> Vec<(usize, (Option<u64>, bool))> {
        nodes
            .iter()
            .map(|&i| (i + 1, group_files(&cluster_dir(cluster, i))))
            .collect()
    };
    let started = Instant::now();
    let done = |files: &[(usize, (Option<u64>, bool))]| {
        files
            .iter()
            .all(|(_, f)| matches!(f, (Some(bytes), true) if *bytes <= LOG_BYTES_BOUND))
    };
    while !done(&files()) {
        assert!(
            started.elapsed() < CONVERGE_TIMEOUT,
            "not within {CONVERGE_TIMEOUT:?}: {what}; (node, (log bytes, snapshot)) {:?}",
            files()
        );
        std::thread::sleep(POLL_INTERVAL);
    }
    eprintln!("{what} in {:?}: {:?}", started.elapsed(), files());
}

fn logged_since(cluster: &Cluster, i: usize, mark: usize, text: &str) -> bool {
    let log = cluster.brokers[i].log_text();
    log.get(mark..).unwrap_or_default().contains(text)
}

fn log_length(cluster: &Cluster, i: usize) -> usize {
    cluster.brokers[i].log_text().len()
}

fn publish(cluster: &Cluster, node: usize, from: usize, to: usize) {
    let action = format!("publish-padded {QUEUE} {from} {to} {BODY_BYTES}");
    cluster.client_ok(node, &action);
}

/// The leader every node of `alive` names since `marks`, within the bound.
fn wait_leader(cluster: &Cluster, alive: &[usize], marks: &[usize], what: &str) -> usize {
    let mut leader = None;
    eventually(what, CONVERGE_TIMEOUT, || {
        leader = agreed_quorum_leader(cluster, alive, marks, None);
        leader.is_some()
    });
    leader.expect("a leader")
}

#[test]
fn compacted_logs_stay_small_and_a_follower_behind_installs_the_snapshot() {
    if let Some(reason) = netns::skip_reason(&["curl"]) {
        eprintln!("SKIPPED quorum_compaction: {reason}");
        return;
    }
    let started = Instant::now();
    let threshold = COMPACT_BYTES.to_string();
    let mut cluster = Cluster::start_with_args(LAYOUT, &["--quorum-compact-bytes", &threshold]);
    eventually("a first cluster leader", CONVERGE_TIMEOUT, || {
        (0..NODES).all(|i| cluster.logged_leader(i, 0).is_some())
    });
    for i in 0..NODES {
        cluster.wait_running(i, NODES);
    }
    cluster.client_ok(0, &format!("quorum-queue {QUEUE} 3"));
    let all: Vec<usize> = (0..NODES).collect();
    let leader = wait_leader(&cluster, &all, &[0; NODES], "every node names a leader");
    let behind = (leader + 1) % NODES;
    let third = (leader + 2) % NODES;

    // 1. Logs compacted under load.
    publish(&cluster, leader, 0, FIRST_BATCH);
    let verdict = cluster
        .client_output(
            leader,
            &format!("drain-padded {QUEUE} 0 {ACKED} {BODY_BYTES}"),
        )
        .0;
    assert!(verdict.starts_with("CLIENT-OK again"), "{verdict}");
    wait_compacted(&cluster, &all, "every node's log compacted");

    // 2. A follower behind the compacted log gets the snapshot.
    cluster.brokers[behind].kill9();
    cluster.wait_running(leader, NODES - 1);
    publish(&cluster, leader, FIRST_BATCH, FIRST_BATCH + SECOND_BATCH);
    wait_compacted(&cluster, &[leader, third], "the majority's logs compacted");
    let mark = log_length(&cluster, behind);
    cluster.brokers[behind].restart_same_dir();
    let installed = eventually(
        "the restarted follower installs a snapshot",
        CONVERGE_TIMEOUT,
        || logged_since(&cluster, behind, mark, "installed snapshot"),
    );
    eprintln!(
        "node {} installed a snapshot {installed:?} after its restart",
        behind + 1
    );
    for i in 0..NODES {
        cluster.wait_running(i, NODES);
    }

    // 3. It leads: with the third node down, the markers commit on the leader and on it only.
    cluster.brokers[third].kill9();
    cluster.wait_running(leader, NODES - 1);
    let end = FIRST_BATCH + SECOND_BATCH + MARKERS;
    publish(&cluster, leader, FIRST_BATCH + SECOND_BATCH, end);
    let marks = [log_length(&cluster, behind), log_length(&cluster, third)];
    cluster.brokers[leader].kill9();
    cluster.brokers[third].restart_same_dir();
    let elected = wait_leader(
        &cluster,
        &[behind, third],
        &marks,
        "the two left name a leader",
    );
    assert_eq!(elected, behind, "the node holding the markers leads");
    eventually("the new leader serves", CONVERGE_TIMEOUT, || {
        logged_since(&cluster, behind, marks[0], "this node leads it now")
    });

    // 4. Everything not acked is there, in order, once.
    let action = format!("drain-padded {QUEUE} {ACKED} {end} {BODY_BYTES}");
    let verdict = cluster.client_output(behind, &action).0;
    assert!(verdict.starts_with("CLIENT-OK again"), "{verdict}");
    cluster.client_ok(behind, &format!("count {QUEUE} 0"));
    let mark = log_length(&cluster, leader);
    cluster.brokers[leader].restart_same_dir();
    let mut marks = [0; NODES];
    marks[leader] = mark;
    let named = wait_leader(
        &cluster,
        &all,
        &marks,
        "the restarted node names the leader",
    );
    assert_eq!(named, behind);
    eprintln!(
        "quorum compaction: {verdict}; whole test {:?}",
        started.elapsed()
    );
}
