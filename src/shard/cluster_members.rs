//! Joining and leaving the cluster, the shard's side (rabbitmqctl's `join_cluster` and
//! `forget_cluster_node`; the Raft side is `cluster/membership.rs`).
//!
//! A node started with `--node-name` and `--cluster-secret` and no `--peer` runs no cluster
//! code (its data path is a single node's) but keeps what it needs to join one. `join_cluster`
//! on it, while it is fresh (nothing but what its first boot made: nothing declared, deleted
//! or loaded since; RabbitMQ asks for `reset` first), asks the member named to add it;
//! once added it hands every shard the members (its own index among them, so the queues it
//! declares from then on carry it) and starts its Raft node, which catches up from the
//! members' log. `forget_cluster_node` on a member removes a member that is not running.
//! Every member change applied here reaches every shard of the node through
//! `Shard::spread_members`.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::rc::Rc;

use super::calls::ShardCall;
use super::messages::topology_op;
use super::owner::TopologyCall;
use super::quorum_members::refused;
use super::Shard;
use crate::broker::{AmqpError, QueueMeta, ShardId, TopologyChange};
use crate::cluster::{request_join, Members};
use crate::config::ClusterConfig;
use crate::limits::EARLIER_TRANSIENT_QUEUES_PER_ENTRY_MAX;

/// What a node that is in no cluster keeps to join one later.
#[derive(Clone)]
pub struct JoinSetup {
    pub config: ClusterConfig,
    pub data_dir: PathBuf,
    /// The cluster port is bound on each of these once it joined.
    pub listen: Vec<IpAddr>,
}

/// To every shard of the node: the cluster's members now.
pub(super) struct SetMembers(Members);

impl ShardCall for SetMembers {
    type Reply = ();
    async fn handle(self, shard: &Rc<Shard>, _from: ShardId) {
        shard.set_members(self.0);
    }
}

impl Shard {
    /// The topology owner of a node in no cluster, at start: it may join one later.
    pub fn allow_join(&self, setup: JoinSetup) {
        *self.replication.join_setup.borrow_mut() = Some(setup);
    }

    /// The topology owner: every shard of the node takes `members` (a node joined or left, or
    /// this one joined); answered once all have. The ids this node hands out continue in its
    /// own range, and the gateway keeps a forwarding slot per member index.
    pub(super) async fn spread_members(self: &Rc<Self>, members: Members) {
        let count = members.names().len();
        let receivers: Vec<_> = self
            .peers()
            .map(|peer| self.send_request(peer, SetMembers(members.clone())))
            .collect();
        self.set_members(members);
        self.queue_ids_in_own_range();
        self.grow_forwarding(count);
        for receiver in receivers {
            if receiver.await.is_none() {
                tracing::error!("a shard did not take the cluster's new members");
            }
        }
    }

    /// `join_cluster` on this node (its topology owner).
    async fn join_cluster(self: &Rc<Self>, node: &str, address: &str) -> Result<(), AmqpError> {
        if self.cluster_node().is_some() {
            return Err(refused(format!(
                "{} is a cluster member already; forget it on the cluster and start it with a \
                 fresh data directory to join another",
                self.members().local_name()
            )));
        }
        let setup = self
            .replication
            .join_setup
            .borrow()
            .clone()
            .ok_or_else(|| {
                refused(
                "this node was started without --cluster-secret: start it with --node-name and \
                 --cluster-secret (the cluster's) to join a cluster"
                    .to_string(),
            )
            })?;
        if !self.is_fresh() {
            return Err(refused(
                "this node is not fresh: it holds topology beyond its boot defaults (declared, \
                 recovered or loaded); join_cluster needs a node with a new data directory, as \
                 RabbitMQ needs `reset` first"
                    .to_string(),
            ));
        }
        let address = resolve(address)?;
        let membership = request_join(&setup.config, &setup.data_dir, node, address)
            .await
            .map_err(|e| refused(format!("cannot join {node}: {e}")))?;
        tracing::info!(
            node = membership.members().local_name(),
            index = membership.members().local_index(),
            via = node,
            "joined the cluster"
        );
        self.spread_members(membership.members().clone()).await;
        self.start_cluster(&setup.config, membership, &setup.data_dir, &setup.listen)
            .map_err(|e| {
                tracing::error!(%e, "the cluster node did not start after the join");
                super::internal_error(&format!("joined, but the cluster node did not start: {e}"))
            })
    }

    /// Whether this node's topology is what its first boot made: the built-in defaults and the
    /// default user, each change of which counts one revision, whether applied at the first
    /// boot or recovered at a later one. Anything declared, loaded or deleted since counts
    /// more.
    fn is_fresh(&self) -> bool {
        let first_boot = super::boot::access_boot().first_boot_changes().len();
        self.topology.borrow().revision() == first_boot as u64
    }

    /// `forget_cluster_node` on this node (its topology owner); then, as RabbitMQ, the
    /// forgotten node's classic queues leave the metadata.
    async fn forget_cluster_node(self: &Rc<Self>, node: &str) -> Result<(), AmqpError> {
        let cluster = self
            .cluster_node()
            .ok_or_else(|| refused("this node is not in a cluster".to_string()))?;
        let members = cluster.members();
        let index = members
            .index_of(node)
            .filter(|&i| members.is_member(i))
            .ok_or_else(|| refused(format!("{node} is not a member of this cluster")))?;
        if index == members.local_index() {
            return Err(refused(format!(
                "{node} is this node: run forget_cluster_node on another member"
            )));
        }
        if cluster.peer_is_up(index) {
            return Err(refused(format!(
                "{node} is running: stop it first (RabbitMQ forgets only a stopped node)"
            )));
        }
        self.leave_quorum_groups(node).await?;
        cluster.forget(node).await?;
        tracing::info!(node, index, "forgot a cluster member");
        self.remove_queues_of(index).await
    }

    /// As RabbitMQ's forget, the node leaves the groups of its replicated queues: each group's
    /// record loses it (`QuorumMembers`), and the group's leader applies that with a raft-rs
    /// RemoveNode (`reconcile_quorum_members`) once its group can commit. A group of that node
    /// alone keeps it (a group is never left empty).
    async fn leave_quorum_groups(self: &Rc<Self>, node: &str) -> Result<(), AmqpError> {
        let changes: Vec<TopologyChange> = {
            let topology = self.topology.borrow();
            let left = |meta: &QueueMeta| {
                let members = topology.quorum_group(meta.id)?.members.as_ref()?;
                let kept: Vec<String> = members.iter().filter(|m| *m != node).cloned().collect();
                (kept.len() < members.len() && !kept.is_empty()).then_some(
                    TopologyChange::QuorumMembers {
                        queue: meta.id,
                        members: kept,
                    },
                )
            };
            topology.all_queues().filter_map(left).collect()
        };
        for entry in changes.chunks(EARLIER_TRANSIENT_QUEUES_PER_ENTRY_MAX) {
            self.broadcast(entry.to_vec()).await?;
            tracing::info!(
                queues = entry.len(),
                "a forgotten member left quorum groups"
            );
        }
        Ok(())
    }

    /// The queues member `index` led that were on it only (classic, not mirrored): their
    /// messages left with it. Replicated queues keep their copies on the other members of
    /// their group (`delete_member` takes the node out of a group).
    async fn remove_queues_of(self: &Rc<Self>, index: usize) -> Result<(), AmqpError> {
        let queues: Vec<QueueMeta> = self
            .topology
            .borrow()
            .all_queues()
            .filter(|meta| Members::node_of_queue(meta.id) == index)
            .cloned()
            .collect();
        let changes: Vec<TopologyChange> = queues
            .into_iter()
            .filter(|meta| !self.is_replicated_quorum(meta))
            .map(|meta| TopologyChange::DeleteQueueIfId {
                vhost: meta.vhost,
                name: meta.name,
                id: meta.id,
            })
            .collect();
        for entry in changes.chunks(EARLIER_TRANSIENT_QUEUES_PER_ENTRY_MAX) {
            self.broadcast(entry.to_vec()).await?;
            tracing::info!(queues = entry.len(), "removed queues of a forgotten member");
        }
        Ok(())
    }
}

/// `HOST:PORT` as `--peer` takes it.
fn resolve(address: &str) -> Result<SocketAddr, AmqpError> {
    address
        .to_socket_addrs()
        .ok()
        .and_then(|mut addresses| addresses.next())
        .ok_or_else(|| refused(format!("{address:?} is not a HOST:PORT address")))
}

impl TopologyCall for topology_op::JoinCluster {
    type Ok = ();
    async fn decide(self, owner: &Rc<Shard>, _from: ShardId) -> Result<(), AmqpError> {
        owner.join_cluster(&self.node, &self.address).await
    }
}

impl TopologyCall for topology_op::ForgetClusterNode {
    type Ok = ();
    async fn decide(self, owner: &Rc<Shard>, _from: ShardId) -> Result<(), AmqpError> {
        owner.forget_cluster_node(&self.node).await
    }
}
