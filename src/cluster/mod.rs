//! Cluster membership and Raft-replicated metadata.
//!
//! The nodes are first given by configuration (`--node-name`, `--peer`, `--cluster-secret`);
//! nodes join and leave later through the topology's own Raft group (`membership.rs`). The
//! topology changes the topology owner used to apply and broadcast on its own become the
//! entries of one Raft group across the nodes (TiKV's raft-rs, sans-IO, driven here on the
//! topology owner's executor): a change is proposed on any node (raft-rs forwards a follower's
//! proposal to the leader), committed by a majority, then applied on every node in log order.
//! The proposer answers its client once its own node has applied it.
//!
//! One narrow door each way: the shard proposes through [`Node::propose`] and is handed
//! committed changes through [`StateMachine`]; this module never imports the shard, the
//! session, net or management (`tests/it/import_graph.rs`). Nothing here runs on a node that is
//! in no cluster (no `--peer`, never joined) but `request_join`, when it is asked to join one.

mod frame;
mod group;
mod handshake;
mod link;
mod log;
mod membership;
mod node;
mod snapshot;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

pub use group::{GroupMachine, GroupView, Groups, MemberChange};
pub use membership::{request_join, Membership};
pub use node::{Node, NodeOptions, PeerState};

use crate::broker::{AmqpError, QueueId, TopologyChange};
use crate::config::ClusterConfig;
use crate::limits::QUEUE_ID_NODE_SHIFT;

/// The nodes of the cluster as every node sees them. A member's index (its Raft id less one,
/// the node part of its queues' ids) never changes: the members `--peer` names get theirs from
/// the sorted names, so all agree without talking; a node that joins later takes the next unused
/// index, in log order (`membership.rs`); a forgotten member's index is never given again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Members {
    /// By index.
    names: Vec<String>,
    /// By index: where the member's cluster port is (`None` for this node).
    addresses: Vec<Option<SocketAddr>>,
    /// By index: removed from the cluster (`forget_cluster_node`).
    forgotten: Vec<bool>,
    local: usize,
}

impl Members {
    pub fn new(config: &ClusterConfig) -> Members {
        let mut names: Vec<String> = config.peers.iter().map(|p| p.name.clone()).collect();
        names.push(config.node_name.clone());
        names.sort_unstable();
        let local = names
            .iter()
            .position(|n| *n == config.node_name)
            .unwrap_or(0);
        let addresses = names
            .iter()
            .map(|name| {
                let peer = config.peers.iter().find(|p| p.name == *name);
                peer.map(|p| p.address)
            })
            .collect();
        let forgotten = vec![false; names.len()];
        Members {
            names,
            addresses,
            forgotten,
            local,
        }
    }

    /// A cluster of one named `name` (tests, and every shard before start-up sets it).
    pub fn single(name: &str) -> Members {
        Members {
            names: vec![name.to_string()],
            addresses: vec![None],
            forgotten: vec![false],
            local: 0,
        }
    }

    /// Tests: node `ringmq@b` of a cluster with `ringmq@a` (whose ids are not node a's).
    #[cfg(test)]
    pub fn b_of_two() -> Members {
        Members::new(&crate::config::ClusterConfig {
            node_name: "ringmq@b".to_string(),
            port: 1,
            peers: vec![crate::config::PeerConfig {
                name: "ringmq@a".to_string(),
                address: std::net::SocketAddr::from(([127, 0, 0, 1], 1)),
            }],
            secret: None,
            quorum_compact_bytes: crate::limits::QUORUM_GROUP_COMPACT_BYTES,
        })
    }

    pub fn local_name(&self) -> &str {
        &self.names[self.local]
    }

    /// Every index's name, forgotten members' too (their queues' ids still name them).
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The member of that name (a forgotten one only when no current member has it).
    pub fn index_of(&self, name: &str) -> Option<usize> {
        let mut named = (0..self.names.len()).filter(|&i| self.names[i] == name);
        let first = named.clone().find(|&i| !self.forgotten[i]);
        first.or_else(|| named.next())
    }

    pub fn local_index(&self) -> usize {
        self.local
    }

    /// Whether index `index` is a member now (not forgotten, not unknown).
    pub fn is_member(&self, index: usize) -> bool {
        self.forgotten.get(index) == Some(&false)
    }

    /// The current members' indexes, in index order.
    pub fn current(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.names.len()).filter(|&i| !self.forgotten[i])
    }

    pub fn current_count(&self) -> usize {
        self.current().count()
    }

    /// Where member `index`'s cluster port is, when this node knows it.
    pub fn address_of(&self, index: usize) -> Option<SocketAddr> {
        self.addresses.get(index).copied().flatten()
    }

    /// The index the next node to join takes: indexes are never given twice.
    pub fn next_index(&self) -> usize {
        self.names.len()
    }

    /// `name` joins at the next index; returns it.
    fn add(&mut self, name: &str, address: Option<SocketAddr>) -> usize {
        self.names.push(name.to_string());
        self.addresses.push(address);
        self.forgotten.push(false);
        self.names.len() - 1
    }

    /// Member `index` leaves; its index stays taken.
    fn forget(&mut self, index: usize) {
        if let Some(forgotten) = self.forgotten.get_mut(index) {
            *forgotten = true;
        }
    }

    pub fn is_clustered(&self) -> bool {
        self.current_count() > 1
    }

    /// The first queue id this node hands out (ids carry their node above `QUEUE_ID_NODE_SHIFT`).
    pub fn queue_id_base(&self) -> QueueId {
        (self.local as QueueId) << QUEUE_ID_NODE_SHIFT
    }

    /// The node that leads a queue: read from its id.
    pub fn node_of_queue(queue: QueueId) -> usize {
        (queue >> QUEUE_ID_NODE_SHIFT) as usize
    }

    pub fn leads_queue(&self, queue: QueueId) -> bool {
        Members::node_of_queue(queue) == self.local
    }

    pub fn name_of_queue_node(&self, queue: QueueId) -> &str {
        self.names
            .get(Members::node_of_queue(queue))
            .map_or("an unknown node", String::as_str)
    }
}

/// The data door: traffic forwarded between nodes (publishes to queues another node leads,
/// their confirms, requests on such queues and their answers), implemented on the shard side
/// (`shard/forward.rs`) and called on the topology owner's executor. What a payload holds is
/// the shard's business; this module only carries it, bounded, over the peer links.
pub trait DataPath {
    /// One data frame from member `peer`. Nothing more is read from that peer's connection
    /// until the future is ready: the receiver's back-pressure reaches the sender's socket.
    fn received(&self, peer: usize, payload: Vec<u8>) -> Pin<Box<dyn Future<Output = ()> + '_>>;

    /// Of the data queued for member `peer` (`Node::send_data`), the first `total_bytes` since
    /// start have left: written to its socket, or dropped with a connection that failed.
    /// Cumulative, never backwards.
    fn data_gone(&self, peer: usize, total_bytes: u64);

    /// The outbound link to member `peer` went down: what was sent on it may or may not have
    /// arrived, and nothing more is accepted until it is up again.
    fn link_down(&self, peer: usize);
}

/// What committed changes are applied to: the topology owner (every shard's copy, the
/// topology log), implemented on the shard side. `Err`: the entry was refused as a whole, a
/// decision that must depend only on the state the log built (so every node makes the same
/// one); the proposer's client gets the error.
pub trait StateMachine {
    fn apply(
        &self,
        changes: Vec<TopologyChange>,
    ) -> Pin<Box<dyn Future<Output = Result<(), AmqpError>> + '_>>;

    /// At start-up, each entry of this node's Raft log, in log order: those it applied before
    /// it stopped are not applied again (what of them was durable is in the shard's own
    /// log), the others are once committed. The machine learns from them what the durable
    /// state cannot tell: the ids and names of the transient queues this node's previous run
    /// declared, which its peers may still list.
    fn logged_before(&self, changes: &[TopologyChange]);

    /// The cluster's members changed (a node joined or was forgotten), in log order: every
    /// shard has the new list before the next entry is applied.
    fn members_changed(&self, members: Members) -> Pin<Box<dyn Future<Output = ()> + '_>>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PeerConfig;

    #[test]
    fn members_agree_on_indexes_and_queue_ids_carry_their_node() {
        let peer = |name: &str| PeerConfig {
            name: name.to_string(),
            address: "127.0.0.1:1".parse().unwrap(),
        };
        let config = |me: &str, others: [&str; 2]| ClusterConfig {
            node_name: me.to_string(),
            port: 1,
            peers: others.iter().map(|n| peer(n)).collect(),
            secret: None,
            quorum_compact_bytes: crate::limits::QUORUM_GROUP_COMPACT_BYTES,
        };
        let b = Members::new(&config("ringmq@b", ["ringmq@c", "ringmq@a"]));
        let c = Members::new(&config("ringmq@c", ["ringmq@a", "ringmq@b"]));
        assert_eq!(b.names(), c.names());
        assert_eq!((b.local_index(), c.local_index()), (1, 2));
        let id = b.queue_id_base() + 7;
        assert!(b.leads_queue(id) && !c.leads_queue(id));
        assert_eq!(c.name_of_queue_node(id), "ringmq@b");
        let one = Members::single("ringmq@x");
        assert_eq!(one.queue_id_base(), 0);
        assert!(one.leads_queue(42) && !one.is_clustered());
    }
}
