//! The shard's side of the cluster door (`crate::cluster`): which node this is, which node
//! leads each queue (read from the queue's id), and, on the topology owner of a clustered
//! node, the Raft node every topology change is proposed through. Without `--peer` there is
//! no Raft node and a change is applied and broadcast as it always was.
//!
//! Queue contents stay on the node that leads the queue. This node's topology copy records a
//! queue led elsewhere with the owner shard [`ELSEWHERE`]: no shard here hosts it. A publish
//! routed to it is forwarded to its node, and counts, purge and delete are asked of that node
//! (`forward.rs`, through this node's topology owner, the gateway); consume and get are
//! refused with 540 NOT_IMPLEMENTED naming the node.

use std::cell::{OnceCell, Ref, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::path::Path;
use std::pin::Pin;
use std::rc::{Rc, Weak};

use super::cluster_members::JoinSetup;
use super::node_down::EarlierTransientQueues;
use super::Shard;
use crate::broker::{AmqpError, QueueId, ShardId, TopologyChange};
use crate::cluster::{
    DataPath, GroupMachine, Members, Membership, Node, NodeOptions, StateMachine,
};
use crate::config::ClusterConfig;
use crate::id_hash::IdMap;
use crate::protocol::reply_code;

/// The owner shard of a queue another node leads, in this node's topology copy.
pub const ELSEWHERE: ShardId = ShardId::MAX;

pub struct Replication {
    members: RefCell<Members>,
    /// The leader of each replicated quorum queue as this shard last heard it from its node's
    /// group (`quorum_group`); a queue missing here is led by the node its id names.
    quorum_leaders: RefCell<IdMap<QueueId, usize>>,
    /// The topology owner of a clustered node only.
    node: OnceCell<Rc<Node>>,
    /// The topology owner of a clustered node only: what its previous run left (`node_down`).
    pub(super) earlier_transient: RefCell<EarlierTransientQueues>,
    /// The topology owner of a node in no cluster that may join one (`cluster_members`).
    pub(super) join_setup: RefCell<Option<JoinSetup>>,
}

impl Default for Replication {
    fn default() -> Replication {
        Replication {
            members: RefCell::new(Members::single(&crate::config::default_node_name())),
            quorum_leaders: RefCell::new(IdMap::default()),
            node: OnceCell::new(),
            earlier_transient: RefCell::new(EarlierTransientQueues::default()),
            join_setup: RefCell::new(None),
        }
    }
}

/// Committed changes reach the topology owner here, in log order.
struct Applier(Weak<Shard>);

impl StateMachine for Applier {
    fn apply(
        &self,
        changes: Vec<TopologyChange>,
    ) -> Pin<Box<dyn Future<Output = Result<(), AmqpError>> + '_>> {
        Box::pin(async move {
            let Some(shard) = self.0.upgrade() else {
                return Err(super::internal_error("the broker is stopping"));
            };
            if let Some(conflict) = shard.conflict(&changes) {
                return Err(conflict);
            }
            // An entry of ours committed before a restart and applied only now.
            shard.note_queue_ids(&changes);
            let applied = shard.apply_everywhere(changes).await;
            if let Err(error) = &applied {
                tracing::error!(%error.text, "a committed topology change failed to apply here");
            }
            applied
        })
    }

    fn logged_before(&self, changes: &[TopologyChange]) {
        if let Some(shard) = self.0.upgrade() {
            shard.note_queue_ids(changes);
            let members = shard.members();
            shard
                .replication
                .earlier_transient
                .borrow_mut()
                .note(changes, &members);
        }
    }

    fn members_changed(&self, members: Members) -> Pin<Box<dyn Future<Output = ()> + '_>> {
        Box::pin(async move {
            if let Some(shard) = self.0.upgrade() {
                shard.spread_members(members).await;
            }
        })
    }
}

/// The text that marks a refusal by `Shard::conflict` (the proposer decides again).
const CONFLICT_TEXT: &str = "RESOURCE_LOCKED - declared at the same moment on another node";

impl Shard {
    /// Every shard, before recovery: the cluster's members and which one we are.
    pub fn set_members(&self, members: Members) {
        *self.replication.members.borrow_mut() = members;
    }

    pub fn members(&self) -> Ref<'_, Members> {
        self.replication.members.borrow()
    }

    /// The topology owner of a clustered node, after recovery: starts the Raft node, from
    /// then on every topology change goes through it.
    pub fn start_cluster(
        self: &Rc<Self>,
        config: &ClusterConfig,
        membership: Membership,
        data_dir: &Path,
        listen: &[IpAddr],
    ) -> Result<(), String> {
        assert!(
            self.is_topology_owner(),
            "the Raft node runs on the topology owner"
        );
        let machine: Rc<dyn StateMachine> = Rc::new(Applier(Rc::downgrade(self)));
        let data: Rc<dyn DataPath> = Rc::new(super::forward::Gateway(Rc::downgrade(self)));
        let groups: Rc<dyn GroupMachine> =
            Rc::new(super::quorum_group::GroupApplier(Rc::downgrade(self)));
        let node = Node::start(NodeOptions {
            config,
            membership,
            data_dir,
            listen,
            machine,
            data,
            groups,
        })?;
        self.start_forwarding(node.members().names().len());
        let _ = self.replication.node.set(node);
        self.start_transient_queue_sweeper();
        self.start_quorum_groups()
    }

    /// The Raft node, on the topology owner of a clustered node.
    pub fn cluster_node(&self) -> Option<Rc<Node>> {
        self.replication.node.get().cloned()
    }

    /// A topology change decided here: through Raft when clustered (answered once a majority
    /// committed it and this node applied it), else applied and broadcast at once.
    pub(super) async fn replicate(
        self: &Rc<Self>,
        changes: Vec<TopologyChange>,
    ) -> Result<(), AmqpError> {
        match self.replication.node.get().cloned() {
            Some(node) => node.propose(&changes).await,
            None => self.apply_everywhere(changes).await,
        }
    }

    /// A change as this node records it: a queue another node leads gets the owner
    /// [`ELSEWHERE`]. `None`: the change as it is.
    pub(super) fn localize(&self, change: &TopologyChange) -> Option<TopologyChange> {
        let members = self.replication.members.borrow();
        match change {
            // Hosted on the node its group elects, when it is elected (`quorum_group`).
            TopologyChange::DeclareQueue { queue } if self.is_replicated_quorum(queue) => {
                let mut queue = queue.clone();
                queue.owner_shard = ELSEWHERE;
                Some(TopologyChange::DeclareQueue { queue })
            }
            TopologyChange::DeclareQueue { queue } if !members.leads_queue(queue.id) => {
                let mut queue = queue.clone();
                queue.owner_shard = ELSEWHERE;
                Some(TopologyChange::DeclareQueue { queue })
            }
            TopologyChange::MoveQueue { queue, .. } if !members.leads_queue(*queue) => {
                Some(TopologyChange::MoveQueue {
                    queue: *queue,
                    owner_shard: ELSEWHERE,
                })
            }
            _ => None,
        }
    }

    /// A committed entry that no longer fits this node's copy at its place in the log: each node
    /// decides a declare against its own copy, so two nodes can both find a name free and both
    /// propose it; the entry committed second declares a name the first already took. It is
    /// refused as a whole (every node has the same copy at that index, so every node refuses
    /// it), and its proposer decides again against the copy that now holds the first
    /// (`is_conflict`): declare-ok when equivalent, else RabbitMQ's 406. A change applied again
    /// after a crash (same queue id, same exchange) is not a conflict.
    fn conflict(&self, changes: &[TopologyChange]) -> Option<AmqpError> {
        let topology = self.topology.borrow();
        let taken = changes.iter().find_map(|change| match change {
            TopologyChange::DeclareQueue { queue } => topology
                .queue(&queue.vhost, &queue.name)
                .filter(|current| current.id != queue.id)
                .map(|_| format!("queue '{}' in vhost '{}'", queue.name, queue.vhost)),
            TopologyChange::DeclareExchange { vhost, exchange } => topology
                .exchange(vhost, &exchange.name)
                .filter(|current| *current != exchange)
                .map(|_| format!("exchange '{}' in vhost '{vhost}'", exchange.name)),
            _ => None,
        })?;
        Some(AmqpError::new(
            reply_code::RESOURCE_LOCKED,
            format!("{CONFLICT_TEXT}: {taken}"),
        ))
    }

    /// Whether a change was refused by `conflict`: the declare is decided again.
    pub(super) fn is_conflict(error: &AmqpError) -> bool {
        error.code == reply_code::RESOURCE_LOCKED && error.text.starts_with(CONFLICT_TEXT)
    }

    /// The member index of the node leading `queue`: its group's leader as last heard here
    /// for a replicated quorum queue, else the node its id names.
    pub(super) fn node_of_queue(&self, queue: QueueId) -> usize {
        let leaders = self.replication.quorum_leaders.borrow();
        if leaders.is_empty() {
            return Members::node_of_queue(queue);
        }
        leaders
            .get(&queue)
            .copied()
            .unwrap_or_else(|| Members::node_of_queue(queue))
    }

    /// A replicated quorum queue's leader as heard from this node's group.
    pub(super) fn set_quorum_leader(&self, queue: QueueId, node: Option<usize>) {
        let mut leaders = self.replication.quorum_leaders.borrow_mut();
        match node {
            Some(node) => leaders.insert(queue, node),
            None => leaders.remove(&queue),
        };
    }

    /// Every replicated quorum queue's leader as heard here (for the management API).
    pub fn quorum_leaders(&self) -> HashMap<QueueId, usize> {
        let leaders = self.replication.quorum_leaders.borrow();
        leaders
            .iter()
            .map(|(&queue, &node)| (queue, node))
            .collect()
    }

    pub(super) fn knows_quorum_leader(&self, queue: QueueId) -> bool {
        self.replication
            .quorum_leaders
            .borrow()
            .contains_key(&queue)
    }

    /// Whether this node leads the queue (always, in a cluster of one).
    pub fn leads_queue(&self, queue: QueueId) -> bool {
        self.replication.members.borrow().leads_queue(queue)
    }

    /// The refusal of work on a queue another node leads.
    pub fn elsewhere_error(&self, queue: QueueId) -> AmqpError {
        let members = self.replication.members.borrow();
        let node = members.name_of_queue_node(queue);
        let name = self
            .topology
            .borrow()
            .queue_by_id(queue)
            .map(|q| q.name.clone());
        AmqpError::new(
            reply_code::NOT_IMPLEMENTED,
            format!(
                "NOT_IMPLEMENTED - queue '{}' is led by node {node}; consuming from a queue on \
                 another node is not implemented yet: connect to {node}",
                name.unwrap_or_default()
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::{ExchangeKind, ExchangeMeta, QueueMeta, Topology};
    use crate::protocol::FieldTable;

    fn queue(id: QueueId, name: &str) -> QueueMeta {
        QueueMeta {
            id,
            name: name.to_string(),
            vhost: "/".to_string(),
            owner_shard: 0,
            durable: true,
            exclusive_owner: None,
            auto_delete: false,
            arguments: FieldTable::default(),
        }
    }

    fn exchange(kind: ExchangeKind) -> TopologyChange {
        TopologyChange::DeclareExchange {
            vhost: "/".to_string(),
            exchange: ExchangeMeta {
                name: "x".to_string(),
                kind,
                durable: true,
                auto_delete: false,
                internal: false,
                arguments: FieldTable::default(),
            },
        }
    }

    #[test]
    fn a_name_taken_first_by_another_entry_is_a_conflict_and_a_replay_is_not() {
        let shard = Shard::new(0, 1, Topology::new_default());
        let first = TopologyChange::DeclareQueue {
            queue: queue(7, "q"),
        };
        for change in [&first, &exchange(ExchangeKind::Direct)] {
            shard.topology.borrow_mut().apply(change);
        }
        // The same entry again (a crash between apply and its applied record): not a conflict.
        assert!(shard.conflict(std::slice::from_ref(&first)).is_none());
        assert!(shard.conflict(&[exchange(ExchangeKind::Direct)]).is_none());
        // Another node's declare of the same names, decided before it saw the first.
        let raced = TopologyChange::DeclareQueue {
            queue: queue(9, "q"),
        };
        for change in [raced, exchange(ExchangeKind::Fanout)] {
            let error = shard.conflict(&[change]).expect("a conflict");
            assert_eq!(error.code, reply_code::RESOURCE_LOCKED);
            assert!(Shard::is_conflict(&error), "{}", error.text);
        }
        let other = TopologyChange::DeclareQueue {
            queue: queue(9, "other"),
        };
        assert!(shard.conflict(&[other]).is_none());
        let not_ours = AmqpError::new(reply_code::RESOURCE_LOCKED, "RESOURCE_LOCKED - x".into());
        assert!(!Shard::is_conflict(&not_ours));
    }

    #[test]
    fn ids_of_two_nodes_never_meet_and_still_name_their_shard() {
        use crate::config::{ClusterConfig, PeerConfig};
        let config = |me: &str, other: &str| ClusterConfig {
            node_name: me.to_string(),
            port: 1,
            peers: vec![PeerConfig {
                name: other.to_string(),
                address: "127.0.0.1:1".parse().unwrap(),
            }],
            secret: None,
            quorum_compact_bytes: crate::limits::QUORUM_GROUP_COMPACT_BYTES,
        };
        // The same shard number and the same count on both nodes.
        let a = Shard::new(3, 4, Topology::new_default());
        a.set_members(Members::new(&config("ringmq@a", "ringmq@b")));
        let b = Shard::new(3, 4, Topology::new_default());
        b.set_members(Members::new(&config("ringmq@b", "ringmq@a")));
        let (on_a, on_b) = (a.new_id(), b.new_id());
        assert_ne!(on_a, on_b);
        assert_eq!(
            (super::super::shard_of(on_a), super::super::shard_of(on_b)),
            (3, 3)
        );
        // A node of one (every single-node broker) keeps the ids it always had.
        let alone = Shard::new(3, 4, Topology::new_default());
        assert_eq!(alone.new_id() >> 48, 3);
    }
}
