//! A shard: one glommio executor pinned to one core, owning its connections, the queues placed on
//! it, and a full copy of the topology so it can route without asking anyone.
//!
//! Cross-shard work is always visible at the call site: `call` (a request with exactly one reply),
//! or `mesh.send` of a one-way entry whose effect the receiver owns (publish, deliver, settle).

mod adopt;
mod dead_letter;
mod delayed;
pub mod direct_reply;
mod expiry;
pub mod mesh;
pub mod messages;
mod owner;
mod paging;
mod queues;
pub mod shard_set;
mod storage;
pub mod sync;

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use crate::broker::queue::{ChannelRef, ConsumerKey, SharedMessage};
use crate::broker::{sender_selected, AmqpError, ConnId, QueueId, ShardId, Topology};
use crate::conn_sink::ConnectionSink;
use crate::id_hash::IdMap;
use crate::limits::RPC_TIMEOUT;
use crate::protocol::{reply_code, FieldTable};
use mesh::Mesh;
use messages::*;
use queues::HostedQueue;
use shard_set::ShardSet;
use sync::{oneshot, Notify, OneshotSender};

/// Bits of a connection id (and consumer key) below the shard number.
const SHARD_SHIFT: u32 = 48;

pub fn shard_of(conn_or_consumer: u64) -> ShardId {
    (conn_or_consumer >> SHARD_SHIFT) as ShardId
}

pub struct Shard {
    pub id: ShardId,
    pub shard_count: usize,
    pub topology: RefCell<Topology>,
    pub mesh: Rc<Mesh>,
    queues: RefCell<IdMap<QueueId, HostedQueue>>,
    conns: RefCell<IdMap<ConnId, Rc<dyn ConnectionSink>>>,
    next_local_id: Cell<u64>,
    next_request: Cell<RequestId>,
    pending_requests: RefCell<IdMap<RequestId, OneshotSender<Reply>>>,
    /// Scratch buffers of a publish, reused so routing allocates nothing in the steady state:
    /// the routed queues, the same as (owner shard, queue) sorted by shard, and the local ones.
    route_scratch: RefCell<Vec<QueueId>>,
    route_groups: RefCell<Vec<(ShardId, QueueId)>>,
    route_local: RefCell<Vec<QueueId>>,
    /// Deliveries turned away by their connection, waiting for `return_refused`.
    refused_deliveries: RefCell<Vec<DeliverEntry>>,
    returning_refused: Cell<bool>,
    owner: owner::OwnerState,
    pub storage: storage::ShardStorage,
    /// Queues over their memory budget: page-out, loaders, paged dead letters.
    pub pager: paging::Pager,
    /// Shards other than 0 wait for the recovered topology before recovering their messages.
    topology_ready: Cell<bool>,
    topology_arrived: Notify,
    /// Our own log is replayed: messages handed over from other logs may come in now.
    messages_ready: Cell<bool>,
    messages_recovered: Notify,
    /// Shards that finished recovering (counted on shard 0), so none listens before all have.
    recovered_shards: Cell<usize>,
    shard_recovered: Notify,
    /// Every message-TTL and x-expires deadline of the queues hosted here.
    timers: expiry::Timers,
    dead_letters: dead_letter::DeadLetters,
    /// Messages held by delayed exchanges until their `x-delay` passes.
    delayed: delayed::DelayedMessages,
    /// `--max-message-bytes`: content headers announcing more are refused.
    pub max_message_bytes: Cell<u64>,
    pub shutting_down: Cell<bool>,
    pub shutdown: Notify,
    /// Wakes the shutdown sequence when a connection goes away.
    conns_changed: Notify,
    /// Shards known to have drained their connections (counted on shard 0).
    drained_shards: Cell<usize>,
    stopping: Cell<bool>,
    stop: Notify,
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
            next_request: Cell::new(1),
            pending_requests: RefCell::new(IdMap::default()),
            route_scratch: RefCell::new(Vec::new()),
            route_groups: RefCell::new(Vec::new()),
            route_local: RefCell::new(Vec::new()),
            refused_deliveries: RefCell::new(Vec::new()),
            returning_refused: Cell::new(false),
            owner: owner::OwnerState::new(),
            storage: storage::ShardStorage::default(),
            pager: paging::Pager::new(u64::MAX),
            topology_ready: Cell::new(id == 0),
            topology_arrived: Notify::default(),
            messages_ready: Cell::new(false),
            messages_recovered: Notify::default(),
            recovered_shards: Cell::new(0),
            shard_recovered: Notify::default(),
            timers: expiry::Timers::default(),
            dead_letters: dead_letter::DeadLetters::default(),
            delayed: delayed::DelayedMessages::default(),
            max_message_bytes: Cell::new(crate::limits::MESSAGE_SIZE_DEFAULT_BYTES),
            shutting_down: Cell::new(false),
            shutdown: Notify::default(),
            conns_changed: Notify::default(),
            drained_shards: Cell::new(0),
            stopping: Cell::new(false),
            stop: Notify::default(),
        })
    }

    /// The shard's own tasks, started once it has recovered: the confirmer (confirms released
    /// as the log becomes durable), the pager and the timer.
    pub fn start_background_tasks(self: &Rc<Self>) {
        glommio::spawn_local(storage::run_confirmer(self.clone())).detach();
        glommio::spawn_local(paging::run_pager(self.clone())).detach();
        glommio::spawn_local(self.clone().run_timers()).detach();
    }

    /// A process-unique id for a connection or consumer created on this shard.
    pub fn new_id(&self) -> u64 {
        let n = self.next_local_id.get();
        self.next_local_id.set(n + 1);
        ((self.id as u64) << SHARD_SHIFT) | n
    }

    pub fn register_conn(&self, id: ConnId, conn: Rc<dyn ConnectionSink>) {
        self.conns.borrow_mut().insert(id, conn);
    }

    pub fn unregister_conn(&self, id: ConnId) {
        self.conns.borrow_mut().remove(&id);
        self.conns_changed.notify();
    }

    pub fn conn_count(&self) -> usize {
        self.conns.borrow().len()
    }

    fn conn(&self, id: ConnId) -> Option<Rc<dyn ConnectionSink>> {
        self.conns.borrow().get(&id).cloned()
    }

    // ---- requests with one reply ------------------------------------------------------------

    /// Sends `body` to shard `to` and waits for its reply. A request to ourselves is handled
    /// in place, so callers need not care where the answer comes from.
    pub async fn call(self: &Rc<Self>, to: ShardId, body: Request) -> Option<Reply> {
        if to == self.id {
            // Boxed: a local request may itself call (topology owner -> queue owner).
            return Some(Box::pin(self.handle_request(self.id, body)).await);
        }
        let receiver = self.send_request(to, body);
        glommio::timer::timeout(RPC_TIMEOUT, async { Ok(receiver.await) })
            .await
            .ok()
            .flatten()
    }

    /// Queues a request for `to` without waiting: the order of calls is the order on the link.
    fn send_request(&self, to: ShardId, body: Request) -> sync::OneshotReceiver<Reply> {
        let id = self.next_request.get();
        self.next_request.set(id + 1);
        let (tx, rx) = oneshot();
        self.pending_requests.borrow_mut().insert(id, tx);
        self.mesh.send(
            to,
            MeshMsg::Request {
                from: self.id,
                id,
                body,
            },
        );
        rx
    }

    async fn handle_request(self: &Rc<Self>, from: ShardId, body: Request) -> Reply {
        match body {
            Request::Topology(op) => Reply::Topology(self.owner_handle(from, op).await),
            Request::Apply { changes } => {
                self.apply_changes(&changes);
                Reply::Applied
            }
            Request::StartupTopology { changes } => {
                self.apply_changes(&changes);
                self.topology_ready.set(true);
                self.topology_arrived.notify();
                Reply::Applied
            }
            Request::Barrier => match self.storage.sync_messages().await {
                Ok(()) => Reply::Applied,
                Err(error) => Reply::Failed(error.to_string()),
            },
            Request::Queue { queue, op } => {
                Reply::Queue(self.handle_queue_request(queue, op).await)
            }
            Request::DirectReply { address, message } => {
                self.deliver_direct_reply_here(address, message)
            }
            Request::Adopt { messages } => match self.adopt_messages(messages).await {
                Ok(()) => Reply::Applied,
                Err(text) => Reply::Failed(text),
            },
            Request::Recovered => {
                self.count_recovered().await;
                Reply::Applied
            }
        }
    }

    /// A topology request from a session on this shard; shard 0 decides.
    pub async fn topology(self: &Rc<Self>, op: TopologyOp) -> Result<TopologyOk, AmqpError> {
        match self.call(0, Request::Topology(op)).await {
            Some(Reply::Topology(result)) => result,
            _ => Err(internal_error("topology request failed")),
        }
    }

    /// A request to the shard that owns `queue`.
    pub async fn queue_op(
        self: &Rc<Self>,
        queue: QueueId,
        owner: ShardId,
        op: QueueOp,
    ) -> Result<QueueOk, AmqpError> {
        match self.call(owner, Request::Queue { queue, op }).await {
            Some(Reply::Queue(result)) => result,
            _ => Err(internal_error("queue request failed")),
        }
    }

    // ---- one-way traffic --------------------------------------------------------------------

    /// Routes a message on our copy of the topology and hands it to every destination queue:
    /// queues here directly, other shards one mesh entry per shard naming all its queues.
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
        let mut groups = self.route_groups.take();
        groups.clear();
        {
            let mut destinations = self.route_scratch.borrow_mut();
            destinations.clear();
            let topology = self.topology.borrow();
            topology.route(
                vhost,
                exchange,
                message.routing_key(),
                headers.as_ref(),
                &mut destinations,
            );
            if let Some(headers) = headers.as_ref() {
                if sender_selected::has_extra_keys(Some(headers)) {
                    route_extra_keys(&topology, vhost, exchange, headers, &mut destinations);
                }
            }
            groups.extend(destinations.iter().filter_map(|&queue| {
                topology
                    .queue_by_id(queue)
                    .map(|meta| (meta.owner_shard, queue))
            }));
        }
        if groups.is_empty() {
            self.route_groups.replace(groups);
            return PublishOutcome {
                routed: false,
                remote_confirms: 0,
                refused: false,
                remote_shards: ShardSet::default(),
            };
        }
        if groups.len() > 1 {
            groups.sort_unstable();
        }
        let message = match headers.as_ref() {
            Some(headers) => sender_selected::without_bcc(&message, headers).unwrap_or(message),
            None => message,
        };
        let mut local_queues = self.route_local.take();
        let mut outcome = PublishOutcome {
            routed: true,
            remote_confirms: 0,
            refused: false,
            remote_shards: ShardSet::default(),
        };
        for group in groups.chunk_by(|a, b| a.0 == b.0) {
            let Some(&(shard, _)) = group.first() else {
                continue;
            };
            if shard == self.id {
                local_queues.clear();
                local_queues.extend(group.iter().map(|&(_, queue)| queue));
                let local = self.enqueue_local(&local_queues, &message);
                outcome.refused |= local.refused;
                if let (Some(lsn), Some(confirm)) = (local.lsn, confirm) {
                    self.storage.confirm_when_durable(lsn, confirm);
                    outcome.remote_confirms += 1;
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
        self.route_local.replace(local_queues);
        self.route_groups.replace(groups);
        outcome
    }

    /// Settles messages of `queue` (owned by `owner`), locally or across the mesh.
    pub fn settle(&self, queue: QueueId, owner: ShardId, op: SettleOp) {
        if owner == self.id {
            self.apply_settle(queue, op);
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
            None => Some(entry),
        };
        // The consumer went away while the message was on its way: put it back (a direct
        // reply has no queue to go back to).
        if let Some(entry) = refused.filter(|e| e.queue != direct_reply::DIRECT_REPLY_QUEUE_ID) {
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
                    let reply = shard.handle_request(from, body).await;
                    shard.mesh.send(from, MeshMsg::Reply { id, body: reply });
                })
                .detach();
            }
            MeshMsg::Reply { id, body } => {
                if let Some(tx) = self.pending_requests.borrow_mut().remove(&id) {
                    tx.send(body);
                }
            }
            MeshMsg::Publish(entry) => {
                let local = self.enqueue_local(&entry.queues, &entry.message);
                if let Some(confirm) = entry.confirm {
                    match local.lsn {
                        Some(lsn) if !local.refused => {
                            self.storage.confirm_when_durable(lsn, confirm)
                        }
                        _ => self.route_confirm(confirm, !local.refused),
                    }
                }
            }
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

    /// Start-up recovery, before listening: shard 0 replays the topology log (moving queues of
    /// shards this run does not have) and hands the result to every other shard; then each shard
    /// replays its own message log into its queues, adopts the logs of shards this run does not
    /// have, and hands records of queues other shards own to them (`adopt`). No shard returns
    /// before every shard has finished.
    pub async fn recover(self: &Rc<Self>, data_dir: &std::path::Path) -> Result<(), String> {
        if self.id == 0 {
            self.recover_and_share_topology(data_dir).await?;
        } else {
            while !self.topology_ready.get() {
                self.topology_arrived.wait().await;
            }
        }
        let foreign = self.recover_messages(data_dir).await?;
        self.messages_ready.set(true);
        self.messages_recovered.notify();
        self.adopt_orphan_logs(data_dir).await?;
        self.hand_over_foreign(foreign).await?;
        self.wait_all_recovered().await
    }

    async fn recover_and_share_topology(
        self: &Rc<Self>,
        data_dir: &std::path::Path,
    ) -> Result<(), String> {
        let changes = self.recover_topology(data_dir).await?;
        let receivers: Vec<_> = (1..self.shard_count)
            .map(|peer| {
                let changes = changes.clone();
                self.send_request(peer, Request::StartupTopology { changes })
            })
            .collect();
        for receiver in receivers {
            if !matches!(receiver.await, Some(Reply::Applied)) {
                return Err("a shard did not take the recovered topology".to_string());
            }
        }
        Ok(())
    }

    /// Tells shard 0 we are done and waits until every shard is (no RPC timeout: recovering a
    /// large log takes what it takes).
    async fn wait_all_recovered(self: &Rc<Self>) -> Result<(), String> {
        if self.id == 0 {
            self.count_recovered().await;
            return Ok(());
        }
        match self.send_request(0, Request::Recovered).await {
            Some(Reply::Applied) => Ok(()),
            _ => Err("shard 0 did not finish recovering".to_string()),
        }
    }

    /// Shard 0: one more shard finished recovering; returns once all have.
    async fn count_recovered(&self) {
        self.recovered_shards.set(self.recovered_shards.get() + 1);
        self.shard_recovered.notify();
        while self.recovered_shards.get() < self.shard_count {
            self.shard_recovered.wait().await;
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
        match self.call(to, Request::Barrier).await {
            Some(Reply::Applied) => Ok(()),
            Some(Reply::Failed(text)) => Err(internal_error(&text)),
            _ => Err(internal_error("barrier failed")),
        }
    }

    /// Stops accepting and tells every connection to close with CONNECTION_FORCED.
    pub fn begin_shutdown(&self) {
        if !self.shutting_down.replace(true) {
            self.shutdown.notify();
        }
    }

    /// Shard 0 relays a shutdown to every other shard.
    pub fn broadcast_shutdown(&self) {
        self.send_to_peers(|| MeshMsg::Shutdown);
        self.begin_shutdown();
    }

    fn send_to_peers(&self, msg: impl Fn() -> MeshMsg) {
        for peer in 0..self.shard_count {
            if peer != self.id {
                self.mesh.send(peer, msg());
            }
        }
    }

    /// Shutdown, seen from one shard: wait (bounded) for our connections to close, tell shard 0,
    /// and wait until shard 0 says every shard is done, so cleanup that needs another shard
    /// (exclusive queues, requeues) can still reach it.
    pub async fn shut_down(&self, drain_timeout: std::time::Duration) {
        while !self.shutting_down.get() {
            self.shutdown.wait().await;
        }
        let _ = glommio::timer::timeout(drain_timeout, async {
            while self.conn_count() > 0 {
                self.conns_changed.wait().await;
            }
            Ok(())
        })
        .await;
        if self.id == 0 {
            self.shard_drained();
        } else {
            self.mesh.send(0, MeshMsg::Drained);
        }
        let _ = glommio::timer::timeout(drain_timeout, async {
            while !self.stopping.get() {
                self.stop.wait().await;
            }
            Ok(())
        })
        .await;
        // Let the flushers hand over what is queued (shard 0's Stop messages above all).
        let _ = glommio::timer::timeout(drain_timeout, async {
            self.mesh.wait_until_empty().await;
            Ok(())
        })
        .await;
        self.log_paging_stats();
        self.storage.flush_all().await;
    }

    fn shard_drained(&self) {
        let drained = self.drained_shards.get() + 1;
        self.drained_shards.set(drained);
        if self.id == 0 && drained == self.shard_count {
            self.send_to_peers(|| MeshMsg::Stop);
            self.begin_stop();
        }
    }

    fn begin_stop(&self) {
        self.stopping.set(true);
        self.stop.notify();
    }
}

/// Adds the destinations of the message's CC and BCC routing keys to `destinations`.
fn route_extra_keys(
    topology: &Topology,
    vhost: &str,
    exchange: &str,
    headers: &FieldTable,
    destinations: &mut Vec<QueueId>,
) {
    let mut more = Vec::new();
    for key in sender_selected::extra_keys(headers) {
        topology.route(vhost, exchange, key, Some(headers), &mut more);
        destinations.extend_from_slice(&more);
    }
    destinations.sort_unstable();
    destinations.dedup();
}

pub fn internal_error(text: &str) -> AmqpError {
    AmqpError::new(
        reply_code::INTERNAL_ERROR,
        format!("INTERNAL_ERROR - {text}"),
    )
}
