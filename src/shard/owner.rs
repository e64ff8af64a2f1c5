//! The topology owner (`Shard::topology_owner`) validates every change against its copy, applies
//! it, and broadcasts it to every other shard, answering the client only after all have applied
//! it, so a publish that follows a `bind-ok` on any shard is routed by that binding.
//!
//! Validation and the local apply happen without an `.await` in between, so two requests never
//! validate against the same stale state; broadcasts leave in that same order on FIFO links.

use std::cell::Cell;
use std::future::Future;
use std::rc::Rc;

use super::calls::ShardCall;
use super::messages::{queue_op, topology_op, ApplyChanges, TopologyRequest};
use super::Shard;
use crate::broker::{self, AmqpError, Destination, ShardId, TopologyChange};
use crate::limits::CLUSTER_DECIDE_ATTEMPTS_MAX;

pub struct OwnerState {
    next_queue_id: Cell<u64>,
    next_server_name: Cell<u64>,
}

impl OwnerState {
    pub fn new() -> OwnerState {
        // Server-generated queue names must not repeat across restarts (a durable amq.gen-…
        // queue may have survived), so the name counter starts from the clock.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        OwnerState {
            next_queue_id: Cell::new(0),
            next_server_name: Cell::new(seed),
        }
    }

    fn take(counter: &Cell<u64>) -> u64 {
        let n = counter.get() + 1;
        counter.set(n);
        n
    }
}

/// A topology operation: decided on the topology owner, against its copy, and answered with
/// `Ok`. Implemented by each type of `messages::topology_op`.
pub trait TopologyCall: Send + 'static {
    type Ok: Send + 'static;
    /// Runs on the topology owner; `from` is the shard of the asking connection.
    fn decide(
        self,
        owner: &Rc<Shard>,
        from: ShardId,
    ) -> impl Future<Output = Result<Self::Ok, AmqpError>>;
}

impl<O: TopologyCall> ShardCall for TopologyRequest<O> {
    type Reply = Result<O::Ok, AmqpError>;
    async fn handle(self, shard: &Rc<Shard>, from: ShardId) -> Self::Reply {
        // Two shards deciding would validate against different states and fork the topology.
        assert!(
            shard.is_topology_owner(),
            "a topology request reached a shard that does not own the topology"
        );
        self.0.decide(shard, from).await
    }
}

impl ShardCall for ApplyChanges {
    type Reply = ();
    async fn handle(self, shard: &Rc<Shard>, _from: ShardId) {
        shard.apply_changes(&self.changes);
    }
}

impl TopologyCall for topology_op::ExchangeDeclare {
    type Ok = ();
    async fn decide(self, owner: &Rc<Shard>, _from: ShardId) -> Result<(), AmqpError> {
        let request = broker::ExchangeDeclare {
            vhost: &self.vhost,
            name: &self.name,
            kind: &self.kind,
            passive: self.passive,
            durable: self.durable,
            auto_delete: self.auto_delete,
            internal: self.internal,
            arguments: &self.arguments,
        };
        let mut attempts = 0;
        loop {
            attempts += 1;
            let changes = broker::check_exchange_declare(&owner.topology.borrow(), &request)?;
            match owner.broadcast(changes).await {
                Err(error)
                    if Shard::is_conflict(&error) && attempts < CLUSTER_DECIDE_ATTEMPTS_MAX => {}
                outcome => return outcome,
            }
        }
    }
}

impl TopologyCall for topology_op::ExchangeDelete {
    type Ok = ();
    async fn decide(self, owner: &Rc<Shard>, _from: ShardId) -> Result<(), AmqpError> {
        let changes = broker::check_exchange_delete(
            &owner.topology.borrow(),
            &self.vhost,
            &self.name,
            self.if_unused,
        )?;
        owner.broadcast(changes).await
    }
}

impl TopologyCall for topology_op::QueueDeclare {
    type Ok = topology_op::QueueDeclared;
    async fn decide(self, owner: &Rc<Shard>, from: ShardId) -> Result<Self::Ok, AmqpError> {
        let server_named = self.name.is_empty();
        let name = if server_named {
            broker::server_named_queue(OwnerState::take(&owner.owner.next_server_name))
        } else {
            self.name
        };
        if let (true, Some(user)) = (server_named, &self.authorize_generated_name_for) {
            let reads_too = self.arguments.get("x-dead-letter-exchange").is_some();
            broker::check_generated_queue_name(
                &owner.topology.borrow(),
                (user, &self.vhost),
                &name,
                reads_too,
            )?;
        }
        let cluster_members = owner.members().names().to_vec();
        let local_member = owner.members().local_index();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let request = broker::QueueDeclare {
                vhost: &self.vhost,
                name: &name,
                server_named,
                passive: self.passive,
                durable: self.durable,
                exclusive: self.exclusive,
                auto_delete: self.auto_delete,
                arguments: &self.arguments,
                conn: self.conn,
                new_id: OwnerState::take(&owner.owner.next_queue_id),
                owner_shard: from, // client-local placement: the declaring connection's shard
                cluster_size: cluster_members.len(),
                cluster_members: &cluster_members,
                local_member,
            };
            let changes = broker::check_queue_declare(&owner.topology.borrow(), &request)?;
            match owner.broadcast(changes).await {
                // Another node took the name first: decided again against the copy holding it.
                Err(error)
                    if Shard::is_conflict(&error) && attempts < CLUSTER_DECIDE_ATTEMPTS_MAX => {}
                outcome => break outcome?,
            }
        }
        let replicated = owner.topology.borrow().queue(&self.vhost, &name).cloned();
        if let Some(meta) = replicated.filter(|meta| owner.is_replicated_quorum(meta)) {
            owner.await_quorum_leader(meta.id).await;
        }
        let topology = owner.topology.borrow();
        let meta = topology
            .queue(&self.vhost, &name)
            .ok_or_else(|| super::internal_error("queue vanished while being declared"))?;
        Ok(topology_op::QueueDeclared {
            name,
            queue: meta.id,
            owner: meta.owner_shard,
        })
    }
}

impl TopologyCall for topology_op::QueueDelete {
    /// Messages deleted with the queue.
    type Ok = u32;
    async fn decide(self, owner: &Rc<Shard>, _from: ShardId) -> Result<u32, AmqpError> {
        let Some(meta) = owner
            .topology
            .borrow()
            .queue(&self.vhost, &self.name)
            .cloned()
        else {
            // RabbitMQ answers delete-ok for a queue that does not exist.
            return Ok(0);
        };
        broker::check_queue_access(&owner.topology.borrow(), &self.vhost, &self.name, self.conn)?;
        let op = queue_op::Delete {
            if_unused: self.if_unused,
            if_empty: self.if_empty,
        };
        let message_count = owner.queue_op(meta.id, meta.owner_shard, op).await?;
        owner.remove_queue(&self.vhost, &self.name, self.conn).await;
        Ok(message_count)
    }
}

impl TopologyCall for topology_op::Binding {
    type Ok = ();
    async fn decide(self, owner: &Rc<Shard>, _from: ShardId) -> Result<(), AmqpError> {
        let destination = if self.destination_is_queue {
            Destination::Queue(self.destination)
        } else {
            Destination::Exchange(self.destination)
        };
        let request = broker::BindRequest {
            vhost: &self.vhost,
            source: &self.source,
            destination: &destination,
            routing_key: &self.routing_key,
            arguments: &self.arguments,
            conn: self.conn,
        };
        // The topology borrow ends inside this block, before any await.
        let changes = {
            let topology = owner.topology.borrow();
            if self.bind {
                broker::check_bind(&topology, &request)?
            } else {
                broker::check_unbind(&topology, &request)?
            }
        };
        owner.broadcast(changes).await
    }
}

impl TopologyCall for topology_op::AutoDeleteQueue {
    type Ok = ();
    async fn decide(self, owner: &Rc<Shard>, _from: ShardId) -> Result<(), AmqpError> {
        let Some(meta) = owner.topology.borrow().queue_by_id(self.queue).cloned() else {
            return Ok(());
        };
        let op = queue_op::Delete {
            if_unused: true,
            if_empty: false,
        };
        // A new consumer may have arrived meanwhile: then the queue stays.
        if owner.queue_op(meta.id, meta.owner_shard, op).await.is_ok() {
            // As its owner: an exclusive auto-delete queue (a client's RPC reply queue) goes
            // with its last consumer too, not only with its connection.
            let conn = meta.exclusive_owner.unwrap_or(0);
            owner.remove_queue(&meta.vhost, &meta.name, conn).await;
        }
        Ok(())
    }
}

impl TopologyCall for topology_op::ConnectionClosed {
    type Ok = ();
    async fn decide(self, owner: &Rc<Shard>, _from: ShardId) -> Result<(), AmqpError> {
        let exclusive = owner.topology.borrow().queues_exclusive_to(self.conn);
        // Connection ids are unique within a node: another node's queue is never ours.
        for meta in exclusive.into_iter().filter(|m| owner.leads_queue(m.id)) {
            let op = queue_op::Delete {
                if_unused: false,
                if_empty: false,
            };
            let _ = owner.queue_op(meta.id, meta.owner_shard, op).await;
            owner.remove_queue(&meta.vhost, &meta.name, self.conn).await;
        }
        Ok(())
    }
}

impl Shard {
    /// Drops a queue from the topology everywhere (its bindings, and auto-delete exchanges left
    /// without bindings, go with it).
    pub(super) async fn remove_queue(self: &Rc<Self>, vhost: &str, name: &str, conn: u64) {
        let changes = broker::check_queue_delete(&self.topology.borrow(), vhost, name, conn);
        let result = match changes {
            Ok(changes) => self.broadcast(changes).await,
            Err(error) => Err(error),
        };
        if let Err(error) = result {
            tracing::warn!(queue = name, %error.text, "queue removal failed");
        }
    }

    /// Queue ids continue above every recovered one (start-up).
    pub(super) fn seed_owner_counters(&self, recovered: &[TopologyChange]) {
        self.queue_ids_in_own_range();
        self.note_queue_ids(recovered);
    }

    /// Each node hands out ids in its own range (`cluster::Members::queue_id_base`): at
    /// start-up, and when this node joined a cluster.
    pub(super) fn queue_ids_in_own_range(&self) {
        let counter = &self.owner.next_queue_id;
        counter.set(counter.get().max(self.members().queue_id_base()));
    }

    /// Queue ids continue above every id of this node's range that `changes` declare: the
    /// committed topology entries of the cluster name transient queues too, which this node's
    /// own log does not keep, and its peers may still list them after it restarted.
    pub(super) fn note_queue_ids(&self, changes: &[TopologyChange]) {
        let ours = changes.iter().filter_map(|change| match change {
            TopologyChange::DeclareQueue { queue } if self.leads_queue(queue.id) => Some(queue.id),
            _ => None,
        });
        if let Some(highest) = ours.max() {
            let counter = &self.owner.next_queue_id;
            counter.set(counter.get().max(highest));
        }
    }

    /// Whether a change concerns durable entities only, judged before it is applied: durable
    /// exchanges, durable non-exclusive queues, bindings between such, users and vhosts.
    fn is_durable_change(&self, change: &TopologyChange) -> bool {
        let topology = self.topology.borrow();
        let durable_queue = |vhost: &str, name: &str| {
            topology
                .queue(vhost, name)
                .is_some_and(|q| q.durable && q.exclusive_owner.is_none())
        };
        let durable_exchange =
            |vhost: &str, name: &str| topology.exchange(vhost, name).is_some_and(|x| x.durable);
        match change {
            TopologyChange::DeclareExchange { exchange, .. } => exchange.durable,
            TopologyChange::DeleteExchange { vhost, name } => durable_exchange(vhost, name),
            TopologyChange::DeclareQueue { queue } => {
                queue.durable && queue.exclusive_owner.is_none()
            }
            TopologyChange::DeleteQueue { vhost, name } => durable_queue(vhost, name),
            TopologyChange::Bind { vhost, binding } | TopologyChange::Unbind { vhost, binding } => {
                durable_exchange(vhost, &binding.source)
                    && match &binding.destination {
                        Destination::Queue(name) => durable_queue(vhost, name),
                        Destination::Exchange(name) => durable_exchange(vhost, name),
                    }
            }
            _ => true,
        }
    }

    /// A decided change: through the cluster when there is one (`replication`), else applied
    /// here and broadcast at once; returns once it is applied on every shard of this node.
    pub(super) async fn broadcast(
        self: &Rc<Self>,
        changes: Vec<TopologyChange>,
    ) -> Result<(), AmqpError> {
        if changes.is_empty() {
            return Ok(());
        }
        self.replicate(changes).await
    }

    /// Applies `changes` here, then on every other shard; returns once all have applied them and
    /// the durable ones are on disk, so a durable declare-ok is a promise.
    pub(super) async fn apply_everywhere(
        self: &Rc<Self>,
        changes: Vec<TopologyChange>,
    ) -> Result<(), AmqpError> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut durable_lsn = None;
        let mut applied = Vec::with_capacity(changes.len());
        for change in changes {
            // Decided against the copy as the changes before it left it; the other shards
            // get the decision.
            let Some(change) = self.topology.borrow().resolve(change) else {
                continue;
            };
            if self.is_durable_change(&change) {
                match self.storage.log_topology(&change) {
                    Ok(lsn) => durable_lsn = Some(lsn),
                    Err(error) => {
                        tracing::error!(%error, "cannot log a durable topology change");
                        return Err(super::internal_error("cannot write the topology log"));
                    }
                }
            }
            self.apply_changes(std::slice::from_ref(&change));
            applied.push(change);
        }
        let changes = applied;
        self.quorum_reports_applied(&changes);
        let receivers: Vec<_> = self
            .peers()
            .map(|peer| {
                let changes = changes.clone();
                self.send_request(peer, ApplyChanges { changes })
            })
            .collect();
        for receiver in receivers {
            if receiver.await.is_none() {
                tracing::error!("a shard did not acknowledge a topology change");
            }
        }
        if let Some(lsn) = durable_lsn {
            if let Err(error) = self.storage.topology_durable(lsn).await {
                tracing::error!(%error, "topology log write failed");
                return Err(super::internal_error("topology log write failed"));
            }
        }
        Ok(())
    }

    /// Applies replicated changes to our copy and creates or removes the queues we own.
    pub(super) fn apply_changes(&self, changes: &[TopologyChange]) {
        for change in changes {
            let localized = self.localize(change);
            let change = localized.as_ref().unwrap_or(change);
            let (removed_queue, deleted_queue) = match change {
                TopologyChange::DeleteQueue { vhost, name } => {
                    let topology = self.topology.borrow();
                    let meta = topology.queue(vhost, name);
                    (
                        meta.filter(|m| m.owner_shard == self.id).map(|m| m.id),
                        meta.map(|m| m.id),
                    )
                }
                _ => (None, None),
            };
            self.topology.borrow_mut().apply(change);
            if change.affects_policies() {
                self.apply_policies();
            }
            if let TopologyChange::DeclareQueue { queue: meta } = change {
                if meta.owner_shard == self.id {
                    self.host_queue(meta.id, meta);
                } else if self.is_topology_owner() && self.is_replicated_quorum(meta) {
                    if let Err(error) = self.quorum_declared(meta, true) {
                        tracing::error!(queue = meta.id, %error, "quorum queue group not started");
                    }
                }
            }
            if let Some(id) = removed_queue {
                self.unhost_queue(id);
            }
            if let Some(id) = deleted_queue {
                if self.is_topology_owner() {
                    self.quorum_deleted(id);
                }
            }
            if let TopologyChange::DeleteVhost { name } = change {
                self.close_connections_in_vhost(name);
            }
            if let TopologyChange::QuorumGroup { queue, .. }
            | TopologyChange::QuorumMembers { queue, .. }
            | TopologyChange::QuorumReport { queue, .. } = change
            {
                self.quorum_record_changed(*queue);
            }
            self.shovel_changed(change);
            if let TopologyChange::MoveQueue { queue, owner_shard } = change {
                if *owner_shard == self.id {
                    if let Some(meta) = self.topology.borrow().queue_by_id(*queue) {
                        self.host_queue(meta.id, meta);
                    }
                } else {
                    self.release_queue(*queue);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::{QueueMeta, Topology};
    use crate::cluster::Members;
    use crate::protocol::FieldTable;

    fn declare(id: u64, durable: bool) -> TopologyChange {
        TopologyChange::DeclareQueue {
            queue: QueueMeta {
                id,
                name: format!("q{id}"),
                vhost: "/".to_string(),
                owner_shard: 0,
                durable,
                exclusive_owner: None,
                auto_delete: false,
                arguments: FieldTable::default(),
            },
        }
    }

    #[test]
    fn ids_continue_above_this_nodes_transient_queues_of_the_raft_log() {
        let shard = Shard::new(0, 1, Topology::new_default());
        shard.set_members(Members::b_of_two());
        let base = shard.members().queue_id_base();
        assert_ne!(base, 0, "node b's ids are not node a's");
        // Start-up: the durable log held one queue of ours; the Raft log also named a
        // transient one above it, and the peer's own queues, whose ids are not ours to follow.
        shard.seed_owner_counters(&[declare(base + 3, true)]);
        let peer_index = shard.members().index_of("ringmq@a").expect("a member") as u64;
        let peers_id = peer_index << crate::limits::QUEUE_ID_NODE_SHIFT;
        assert!(!shard.leads_queue(peers_id + 500));
        shard.note_queue_ids(&[declare(base + 9, false), declare(peers_id + 500, false)]);
        assert_eq!(OwnerState::take(&shard.owner.next_queue_id), base + 10);
        // Lower ids heard later never move the counter back.
        shard.note_queue_ids(&[declare(base + 5, false)]);
        assert_eq!(OwnerState::take(&shard.owner.next_queue_id), base + 11);
    }
}
