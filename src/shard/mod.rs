//! A shard: one glommio executor pinned to one core, owning its connections, the queues placed on
//! it, and a full copy of the topology so it can route without asking anyone.
//!
//! Cross-shard work is always visible at the call site: `call` (a request with exactly one reply),
//! or `mesh.send` of a one-way entry whose effect the receiver owns (publish, deliver, settle).

mod access;
mod admission;
mod adopt;
mod alarms;
pub mod boot;
mod calls;
mod cluster_members;
mod dead_letter;
mod delayed;
pub mod direct_reply;
mod expiry;
mod forward;
mod lifecycle;
pub mod mesh;
pub mod messages;
mod node_down;
mod owner;
mod paging;
mod policy;
pub mod probe;
mod queues;
mod quorum_group;
mod quorum_members;
mod replication;
pub mod shard_set;
mod shovel;
mod stats;
mod storage;
pub mod sync;

use std::cell::{Cell, Ref, RefCell};
use std::rc::Rc;

use crate::broker::queue::{ChannelRef, ConsumerKey, SharedMessage};
use crate::broker::{sender_selected, AmqpError, ConnId, QueueId, ShardId, Topology};
use crate::conn_sink::ConnectionSink;
use crate::id_hash::IdMap;
use crate::limits::RPC_TIMEOUT;
use crate::protocol::reply_code;
use mesh::Mesh;
use messages::*;
use queues::HostedQueue;
use shard_set::ShardSet;
use sync::OneshotReceiver;

pub use calls::ShardCall;
pub use cluster_members::JoinSetup;
pub use forward::{RemoteAnswer, RemoteOp};
pub use owner::TopologyCall;
pub use queues::QueueCall;
pub use replication::ELSEWHERE;
pub use stats::{CloseConnection, ProbeStats, QueueConsumer, QueueDepth, ShardStats, StatsRequest};

/// Bits of a connection id (and consumer key) below the shard number.
const SHARD_SHIFT: u32 = 48;
/// The shard number's bits (`SHARDS_MAX` is 256).
const SHARD_MASK: u64 = 0xff;
/// Bits below the node's index in the cluster: a connection of another node never has the id of
/// one of ours, though they meet in the replicated topology (an exclusive queue's owner is
/// compared with a connection of whichever node a client uses).
const NODE_SHIFT: u32 = 56;
const _: () = assert!(crate::limits::SHARDS_MAX as u64 <= SHARD_MASK + 1);
const _: () = assert!(crate::limits::CLUSTER_NODES_MAX as u64 <= 1 << (64 - NODE_SHIFT));

pub fn shard_of(conn_or_consumer: u64) -> ShardId {
    ((conn_or_consumer >> SHARD_SHIFT) & SHARD_MASK) as ShardId
}

/// The shard that owns the topology: it validates and applies every change, broadcasts it to the
/// others and keeps the topology log. One shard of this process today; the cluster's Raft group
/// takes the role over later, so callers ask [`Shard::topology_owner`], never for a number.
const TOPOLOGY_OWNER: ShardId = 0;

/// The shard that counts this process's start-up and shutdown phases (every shard recovered,
/// every shard drained). Local to the process, unlike the topology owner.
const COORDINATOR: ShardId = 0;

/// A call got no answer within `RPC_TIMEOUT` (or the other shard stopped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoReply;

/// The core of a shard: ids, calls, the mesh, routing and queue hosting. Start-up and shutdown
/// phases live in `lifecycle`; each feature's state in its own struct under `features`, reached
/// only through that feature's module.
pub struct Shard {
    id: ShardId,
    shard_count: usize,
    topology: RefCell<Topology>,
    mesh: Rc<Mesh>,
    queues: RefCell<IdMap<QueueId, HostedQueue>>,
    conns: RefCell<IdMap<ConnId, Rc<dyn ConnectionSink>>>,
    next_local_id: Cell<u64>,
    calls: calls::PendingCalls,
    route_scratch: RouteScratch,
    /// Deliveries turned away by their connection, waiting for `return_refused`.
    refused_deliveries: RefCell<Vec<DeliverEntry>>,
    returning_refused: Cell<bool>,
    owner: owner::OwnerState,
    storage: storage::ShardStorage,
    /// `--max-message-bytes`: content headers announcing more are refused.
    max_message_bytes: Cell<u64>,
    lifecycle: lifecycle::Lifecycle,
    features: Features,
    /// Counters and histograms for the operator (`probe`), read by `stats`.
    probe: probe::Probe,
    /// This node among the cluster's, and the Raft node on the topology owner (`replication`).
    replication: replication::Replication,
}

/// Scratch buffers of a publish, reused so routing allocates nothing in the steady state: the
/// routed queues, the same as (owner shard, queue) sorted by shard, and the local ones.
#[derive(Default)]
struct RouteScratch {
    destinations: RefCell<Vec<QueueId>>,
    groups: RefCell<Vec<(ShardId, QueueId)>>,
    local: RefCell<Vec<QueueId>>,
}

/// What the features layered on the core keep, one struct per feature module. The core calls
/// them at fixed points only: publish (`delayed` hold, then CC/BCC in routing), after a queue
/// changes (`expiry`, length limits and `dead_letter`, then `paging`), and the per-shard timer.
struct Features {
    /// Every message-TTL, x-expires and delay deadline of this shard (`expiry`).
    timers: expiry::Timers,
    dead_letters: dead_letter::DeadLetters,
    /// Messages held by delayed exchanges until their `x-delay` passes.
    delayed: delayed::DelayedMessages,
    /// Queues over their memory budget: page-out, loaders, paged dead letters.
    pager: paging::Pager,
    /// Memory and disk alarms as this shard last sampled them.
    alarms: alarms::Alarms,
    /// The shovels this shard runs (`shovel`).
    shovels: crate::shovel::Shovels,
    /// Publishes to queues other nodes lead: this shard's credit, and on the topology owner of
    /// a clustered node the gateway's per-peer state (`forward`).
    forwarding: forward::Forwarding,
    /// Replicated quorum queues' copies and their waiting confirms, on the topology owner of
    /// a clustered node (`quorum_group`).
    quorum: quorum_group::QuorumGroups,
}

pub struct PublishOutcome {
    pub routed: bool,
    /// `Confirm`s still to come for this publish: one per other shard it went to, plus one when
    /// it waits for our own log to be durable.
    pub remote_confirms: u32,
    /// A queue here refused it: the confirm is a nack.
    pub refused: bool,
    /// The other shards the message was sent to.
    pub remote_shards: ShardSet,
    /// The other nodes it was forwarded to, one bit per member index.
    pub remote_nodes: u32,
}

impl PublishOutcome {
    /// Nothing routed, nothing to wait for (what each destination adds to).
    pub fn unrouted() -> PublishOutcome {
        PublishOutcome {
            routed: false,
            remote_confirms: 0,
            refused: false,
            remote_shards: ShardSet::default(),
            remote_nodes: 0,
        }
    }
}

impl Shard {
    pub fn new(id: ShardId, shard_count: usize, topology: Topology) -> Rc<Shard> {
        Rc::new(Shard {
            id,
            shard_count,
            topology: RefCell::new(topology),
            mesh: Rc::new(Mesh::new(id, shard_count)),
            queues: RefCell::new(IdMap::default()),
            conns: RefCell::new(IdMap::default()),
            next_local_id: Cell::new(1),
            calls: calls::PendingCalls::default(),
            route_scratch: RouteScratch::default(),
            refused_deliveries: RefCell::new(Vec::new()),
            returning_refused: Cell::new(false),
            owner: owner::OwnerState::new(),
            storage: storage::ShardStorage::default(),
            max_message_bytes: Cell::new(crate::limits::MESSAGE_SIZE_DEFAULT_BYTES),
            lifecycle: lifecycle::Lifecycle::new(id == TOPOLOGY_OWNER),
            features: Features {
                timers: expiry::Timers::default(),
                dead_letters: dead_letter::DeadLetters::default(),
                delayed: delayed::DelayedMessages::default(),
                pager: paging::Pager::new(u64::MAX),
                alarms: alarms::Alarms::default(),
                shovels: crate::shovel::Shovels::default(),
                forwarding: forward::Forwarding::default(),
                quorum: quorum_group::QuorumGroups::default(),
            },
            probe: probe::Probe::default(),
            replication: replication::Replication::default(),
        })
    }

    /// `--queue-memory-bytes`: body bytes of ready messages a queue keeps in RAM.
    pub fn set_queue_memory_bytes(&self, bytes: u64) {
        self.features.pager.set_queue_memory_bytes(bytes);
    }

    pub fn set_max_message_bytes(&self, bytes: u64) {
        self.max_message_bytes.set(bytes);
    }

    /// Where this shard's sessions count what their publishers did.
    pub fn publish_counters(&self) -> Rc<crate::metrics::PublishCounters> {
        self.probe.publish_counters()
    }

    pub fn id(&self) -> ShardId {
        self.id
    }

    pub fn shard_count(&self) -> usize {
        self.shard_count
    }

    pub fn topology_owner(&self) -> ShardId {
        TOPOLOGY_OWNER
    }

    pub fn is_topology_owner(&self) -> bool {
        self.id == self.topology_owner()
    }

    fn coordinator(&self) -> ShardId {
        COORDINATOR
    }

    fn is_coordinator(&self) -> bool {
        self.id == self.coordinator()
    }

    /// Our copy of the topology, to read. Never held across an `.await`: the topology owner's
    /// broadcasts apply to it between tasks.
    pub fn topology(&self) -> Ref<'_, Topology> {
        self.topology.borrow()
    }

    /// `--max-message-bytes`: content headers announcing more are refused.
    pub fn max_message_bytes(&self) -> u64 {
        self.max_message_bytes.get()
    }

    /// Back-pressure for a reader: returns once the mesh outboxes are under their bound and the
    /// message log's batch has room (a full batch would refuse appends, i.e. nacks).
    pub async fn wait_for_room(&self) {
        self.mesh.wait_for_room().await;
        self.storage.wait_for_room().await;
        self.wait_for_forward_credit().await;
    }

    /// A process-unique id for a connection or consumer created on this shard.
    pub fn new_id(&self) -> u64 {
        let n = self.next_local_id.get();
        self.next_local_id.set(n + 1);
        let node = self.members().local_index() as u64;
        (node << NODE_SHIFT) | ((self.id as u64) << SHARD_SHIFT) | n
    }

    pub fn register_conn(&self, id: ConnId, conn: Rc<dyn ConnectionSink>) {
        self.conns.borrow_mut().insert(id, conn);
    }

    pub fn unregister_conn(&self, id: ConnId) {
        self.conns.borrow_mut().remove(&id);
        self.lifecycle.conns_changed.notify();
    }

    pub fn conn_count(&self) -> usize {
        self.conns.borrow().len()
    }

    /// A deleted vhost's connections on this shard close with 320, as RabbitMQ's.
    fn close_connections_in_vhost(&self, vhost: &str) {
        let reason = format!("vhost '{vhost}' is deleted");
        let conns: Vec<Rc<dyn ConnectionSink>> = self.conns.borrow().values().cloned().collect();
        for conn in conns.iter().filter(|conn| conn.in_vhost(vhost)) {
            conn.close_forced(&reason);
        }
    }

    fn conn(&self, id: ConnId) -> Option<Rc<dyn ConnectionSink>> {
        self.conns.borrow().get(&id).cloned()
    }

    // ---- requests with one reply ------------------------------------------------------------

    /// Sends `request` to shard `to` and waits (up to `RPC_TIMEOUT`) for its reply. A request to
    /// ourselves is handled in place, so callers need not care where the answer comes from.
    pub async fn call<C: ShardCall>(
        self: &Rc<Self>,
        to: ShardId,
        request: C,
    ) -> Result<C::Reply, NoReply> {
        if to == self.id {
            // Boxed: a local request may itself call (topology owner -> queue owner).
            return Ok(Box::pin(request.handle(self, self.id)).await);
        }
        let (id, receiver) = self.send_registered_request(to, request);
        let reply = glommio::timer::timeout(RPC_TIMEOUT, async { Ok(receiver.await) })
            .await
            .ok()
            .flatten();
        if reply.is_none() {
            // Nobody waits for this id any more: a late reply must not find an entry.
            self.calls.forget(id);
        }
        reply.ok_or(NoReply)
    }

    /// Queues a request for `to` without waiting: the order of calls is the order on the link.
    /// The receiver yields `None` only if the shard stops before answering.
    fn send_request<C: ShardCall>(&self, to: ShardId, request: C) -> OneshotReceiver<C::Reply> {
        self.send_registered_request(to, request).1
    }

    /// `send_request`, also giving the request's id (to forget it on a timeout).
    fn send_registered_request<C: ShardCall>(
        &self,
        to: ShardId,
        request: C,
    ) -> (RequestId, OneshotReceiver<C::Reply>) {
        let (id, receiver) = self.calls.register::<C::Reply>();
        self.mesh.send(
            to,
            MeshMsg::Request {
                from: self.id,
                id,
                body: Box::new(request),
            },
        );
        (id, receiver)
    }

    /// A topology operation, decided by the topology owner.
    pub async fn topology_op<O: TopologyCall>(self: &Rc<Self>, op: O) -> Result<O::Ok, AmqpError> {
        let owner = self.topology_owner();
        match self.call(owner, TopologyRequest(op)).await {
            Ok(result) => result,
            Err(NoReply) => Err(internal_error("topology request failed")),
        }
    }

    /// An operation on `queue`, applied by `owner`, the shard hosting it.
    pub async fn queue_op<O: QueueCall>(
        self: &Rc<Self>,
        queue: QueueId,
        owner: ShardId,
        op: O,
    ) -> Result<O::Ok, AmqpError> {
        if owner == ELSEWHERE {
            // Asked of the node that leads it, where that is implemented (counts, purge,
            // delete).
            return match op.remote() {
                Some((remote, answer)) => self.remote_queue_op(queue, remote).await.map(answer),
                None => Err(self.elsewhere_error(queue)),
            };
        }
        match self.call(owner, QueueRequest { queue, op }).await {
            Ok(result) => result,
            Err(NoReply) => Err(internal_error("queue request failed")),
        }
    }

    // ---- one-way traffic --------------------------------------------------------------------

    /// Routes a message on our copy of the topology and hands it to every destination queue:
    /// queues here directly, other shards one mesh entry per shard naming all its queues, other
    /// nodes one forward per node (through the gateway, `forward`).
    /// Features hook in at fixed points, in this order: a delayed exchange may hold the message
    /// (`delayed`); routing adds CC/BCC destinations and strips BCC (`sender_selected`); each
    /// queue admits it (dedup, length limits, `x-overflow`) and dead-letters what it drops.
    pub fn publish(
        &self,
        vhost: &str,
        exchange: &str,
        message: SharedMessage,
        confirm: Option<ConfirmRef>,
    ) -> PublishOutcome {
        if let Some(held) = self.hold_if_delayed(vhost, exchange, &message, confirm) {
            return held;
        }
        self.route_now(vhost, exchange, message, confirm)
    }

    /// [`Shard::publish`] without the delayed-exchange hold.
    fn route_now(
        &self,
        vhost: &str,
        exchange: &str,
        message: SharedMessage,
        confirm: Option<ConfirmRef>,
    ) -> PublishOutcome {
        // Decoded once, and only when the message has headers (headers exchange, CC/BCC).
        let headers = message.headers();
        // Taken out of their cells rather than borrowed: enqueueing may dead-letter, and a
        // nested route must not find them borrowed. Put back at the end, so the steady state
        // allocates nothing here.
        let mut groups = self.route_scratch.groups.take();
        groups.clear();
        {
            let mut destinations = self.route_scratch.destinations.borrow_mut();
            destinations.clear();
            let topology = self.topology.borrow();
            topology.route(
                vhost,
                exchange,
                message.routing_key(),
                headers.as_ref(),
                &mut destinations,
            );
            // Feature hook: CC/BCC add the destinations of their routing keys.
            if let Some(headers) = headers.as_ref() {
                sender_selected::add_destinations(
                    &topology,
                    vhost,
                    exchange,
                    headers,
                    &mut destinations,
                );
            }
            groups.extend(destinations.iter().filter_map(|&queue| {
                topology
                    .queue_by_id(queue)
                    .map(|meta| (meta.owner_shard, queue))
            }));
        }
        let mut outcome = PublishOutcome::unrouted();
        if groups.is_empty() {
            self.route_scratch.groups.replace(groups);
            return outcome;
        }
        outcome.routed = true;
        if groups.len() > 1 {
            groups.sort_unstable();
        }
        // Feature hook: BCC is removed before any queue sees the message.
        let message = match headers.as_ref() {
            Some(headers) => sender_selected::without_bcc(&message, headers).unwrap_or(message),
            None => message,
        };
        // Queues other nodes lead sort last (owner `ELSEWHERE`), by queue id, so by node.
        let here = groups.partition_point(|&(owner, _)| owner != ELSEWHERE);
        self.enqueue_groups(&groups[..here], &message, confirm, &mut outcome);
        let remote = &groups[here..];
        for group in remote.chunk_by(|a, b| self.node_of_queue(a.1) == self.node_of_queue(b.1)) {
            let Some(&(_, first)) = group.first() else {
                continue;
            };
            let queues = group.iter().map(|&(_, queue)| queue).collect();
            let node = self.node_of_queue(first);
            if self.forward_publish(node, queues, message.clone(), confirm) {
                outcome.remote_confirms += u32::from(confirm.is_some());
                outcome.remote_nodes |= 1 << node;
            } else {
                outcome.refused = true;
            }
        }
        self.route_scratch.groups.replace(groups);
        outcome
    }

    /// Hands `message` to every queue of `groups` ((owner shard, queue), sorted, all on this
    /// node): queues here directly, each other shard one mesh entry naming all its queues.
    fn enqueue_groups(
        &self,
        groups: &[(ShardId, QueueId)],
        message: &SharedMessage,
        confirm: Option<ConfirmRef>,
        outcome: &mut PublishOutcome,
    ) {
        let mut local_queues = self.route_scratch.local.take();
        for group in groups.chunk_by(|a, b| a.0 == b.0) {
            let Some(&(shard, _)) = group.first() else {
                continue;
            };
            if shard == self.id {
                local_queues.clear();
                local_queues.extend(group.iter().map(|&(_, queue)| queue));
                let local = self.enqueue_local(&local_queues, message);
                outcome.refused |= local.refused;
                if let Some(confirm) = confirm {
                    if !local.quorum_seqs.is_empty() {
                        // A replicated quorum queue here: the confirm waits for its group.
                        let waits = self.wait_for_quorum(local, confirm);
                        outcome.refused |= !waits;
                        outcome.remote_confirms += u32::from(waits);
                    } else if let Some(lsn) = local.lsn {
                        self.storage.confirm_when_durable(lsn, confirm);
                        outcome.remote_confirms += 1;
                    }
                }
            } else {
                outcome.remote_confirms += u32::from(confirm.is_some());
                outcome.remote_shards.insert(shard);
                // The one allocation of a cross-shard publish: the entry owns its queue list.
                let entry = PublishEntry {
                    queues: group.iter().map(|&(_, queue)| queue).collect(),
                    message: message.clone(),
                    confirm,
                };
                self.mesh.send(shard, MeshMsg::Publish(entry));
            }
        }
        self.route_scratch.local.replace(local_queues);
    }

    /// Settles messages of `queue` (owned by `owner`), locally or across the mesh.
    pub fn settle(&self, queue: QueueId, owner: ShardId, op: SettleOp) {
        if owner == self.id {
            self.apply_settle(queue, op);
        } else if owner == ELSEWHERE {
            self.forward_settle(queue, op);
        } else {
            self.mesh.send(owner, MeshMsg::Settle { queue, op });
        }
    }

    /// Hands a delivery to its consumer's connection, here or on another shard.
    fn route_delivery(&self, entry: DeliverEntry) {
        let shard = shard_of(entry.channel.conn);
        if shard != self.id {
            self.mesh.send(shard, MeshMsg::Deliver(entry));
            return;
        }
        let refused = match self.conn(entry.channel.conn) {
            Some(conn) => conn.deliver(entry).err(),
            // A stand-in for another node's connection (`forward`), or gone.
            None => self.forward_delivery(entry),
        };
        // The consumer went away while the message was on its way: put it back (direct
        // replies never come this way: `deliver_direct_reply_here`).
        if let Some(entry) = refused {
            self.refused_deliveries.borrow_mut().push(entry);
            self.return_refused();
        }
    }

    /// Returns refused deliveries to their queues, iteratively: a local return dispatches
    /// again, and that dispatch may be refused again (it used to recurse until the stack
    /// overflowed). Refusals made while this runs are queued and taken by the same loop. It
    /// ends: each return removes the refused consumer from its queue, so a queue refuses at
    /// most what it handed a dead consumer before hearing of it.
    fn return_refused(&self) {
        if self.returning_refused.replace(true) {
            return;
        }
        loop {
            let Some(entry) = self.refused_deliveries.borrow_mut().pop() else {
                break;
            };
            let owner = self.owner_of(entry.queue);
            let op = SettleOp::Refused {
                consumer: entry.consumer,
                id: entry.message_id,
            };
            self.settle(entry.queue, owner, op);
        }
        self.returning_refused.set(false);
    }

    pub(crate) fn route_confirm(&self, confirm: ConfirmRef, ok: bool) {
        let shard = shard_of(confirm.channel.conn);
        if shard != self.id {
            self.mesh.send(shard, MeshMsg::Confirm(confirm, ok));
        } else if confirm.channel.conn == forward::FORWARDED_CONN {
            self.forwarded_part_decided(confirm, ok);
        } else if let Some(conn) = self.conn(confirm.channel.conn) {
            conn.confirm_decided(confirm.channel.channel, confirm.seq, ok);
        }
    }

    fn route_consumer_cancelled(&self, channel: ChannelRef, consumer: ConsumerKey) {
        let shard = shard_of(channel.conn);
        if shard != self.id {
            self.mesh
                .send(shard, MeshMsg::ConsumerCancelled { channel, consumer });
        } else if let Some(conn) = self.conn(channel.conn) {
            conn.consumer_cancelled(channel.channel, consumer);
        } else {
            self.forward_cancelled(channel, consumer);
        }
    }

    pub fn owner_of(&self, queue: QueueId) -> ShardId {
        self.topology
            .borrow()
            .queue_by_id(queue)
            .map(|m| m.owner_shard)
            .unwrap_or(self.id)
    }

    // ---- the mesh receive side --------------------------------------------------------------

    pub fn handle_mesh(self: &Rc<Self>, msg: MeshMsg) {
        match msg {
            MeshMsg::Request { from, id, body } => {
                let shard = self.clone();
                glommio::spawn_local(async move {
                    let reply = body.handle_erased(shard.clone(), from).await;
                    shard.mesh.send(from, MeshMsg::Reply { id, body: reply });
                })
                .detach();
            }
            MeshMsg::Reply { id, body } => self.calls.complete(id, body),
            MeshMsg::Publish(entry) => {
                let local = self.enqueue_local(&entry.queues, &entry.message);
                if let Some(confirm) = entry.confirm {
                    if !local.quorum_seqs.is_empty() {
                        if !self.wait_for_quorum(local, confirm) {
                            self.route_confirm(confirm, false);
                        }
                        return;
                    }
                    match local.lsn {
                        Some(lsn) if !local.refused => {
                            self.storage.confirm_when_durable(lsn, confirm)
                        }
                        _ => self.route_confirm(confirm, !local.refused),
                    }
                }
            }
            MeshMsg::Forward(entry) => self.forward_from_mesh(entry),
            MeshMsg::ForwardCredit(bytes) => self.forward_credit_returned(bytes),
            MeshMsg::ForwardSettle { queue, op } => self.forward_settle(queue, op),
            MeshMsg::Deliver(entry) => self.route_delivery(entry),
            MeshMsg::Settle { queue, op } => self.apply_settle(queue, op),
            MeshMsg::Confirm(confirm, ok) => self.route_confirm(confirm, ok),
            MeshMsg::ConsumerCancelled { channel, consumer } => {
                self.route_consumer_cancelled(channel, consumer)
            }
            MeshMsg::Shutdown => self.begin_shutdown(),
            MeshMsg::Drained => self.shard_drained(),
            MeshMsg::Stop => self.begin_stop(),
        }
    }

    /// Waits until everything this connection sent to shard `to` is applied there and durable in
    /// that shard's log (for tx.commit).
    pub async fn barrier(self: &Rc<Self>, to: ShardId) -> Result<(), AmqpError> {
        if to == self.id {
            return self
                .storage
                .sync_messages()
                .await
                .map_err(|e| internal_error(&format!("message log: {e}")));
        }
        match self.call(to, Barrier).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(text)) => Err(internal_error(&text)),
            Err(NoReply) => Err(internal_error("barrier failed")),
        }
    }

    fn send_to_peers(&self, msg: impl Fn() -> MeshMsg) {
        for peer in self.peers() {
            self.mesh.send(peer, msg());
        }
    }

    /// Every shard but this one.
    fn peers(&self) -> impl Iterator<Item = ShardId> {
        let me = self.id;
        (0..self.shard_count).filter(move |&peer| peer != me)
    }
}

impl ShardCall for Barrier {
    type Reply = Result<(), String>;
    async fn handle(self, shard: &Rc<Shard>, _from: ShardId) -> Result<(), String> {
        shard
            .storage
            .sync_messages()
            .await
            .map_err(|error| error.to_string())
    }
}

pub fn internal_error(text: &str) -> AmqpError {
    AmqpError::new(
        reply_code::INTERNAL_ERROR,
        format!("INTERNAL_ERROR - {text}"),
    )
}
