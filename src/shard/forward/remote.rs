//! Queues another node leads, used from here: counts (passive declare), purge, delete, and
//! consumers (basic.consume, basic.get, cancel, recover, a channel closing), each asked of the
//! queue's node through the gateways as a `Request` with one `Answer`; deliveries come back as
//! `Deliver` records, acks, nacks, rejects and write credit go as `Settle` records.
//!
//! On the queue's node the asking node's consumers and channels are stood in for: a proxy
//! connection id per (peer, remote connection) on the gateway shard (no connection has it, so
//! `route_delivery` finds none there and hands the delivery here), a local consumer key per
//! remote one. The queue treats them as any consumer: prefetch, write credit
//! (`CONSUMER_UNWRITTEN_BYTES_MAX`, reported written by the consumer's connection), requeue on
//! channel close. When the link to the peer goes down in either direction, the queue's node
//! closes every proxy channel of that peer (its unacked messages are requeued) and the
//! consumer's node cancels its consumers of that peer's queues (basic.cancel to the client).

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use super::super::messages::{queue_op, DeliverEntry, MeshMsg, SettleOp};
use super::super::sync::{oneshot, OneshotSender};
use super::super::{NoReply, Shard, ShardCall, ELSEWHERE};
use super::wire::{encode, Record, RemoteAnswer, RemoteOp};
use crate::broker::queue::{ChannelRef, ConsumerKey};
use crate::broker::{AmqpError, QueueId, ShardId};
use crate::id_hash::IdMap;
use crate::limits::{
    CLUSTER_REMOTE_CONSUMERS_MAX, CLUSTER_REMOTE_REQUESTS_PENDING_MAX, QUEUE_ID_NODE_SHIFT,
    QUORUM_REATTACH_ATTEMPTS_MAX, QUORUM_REATTACH_RETRY_INTERVAL, RPC_TIMEOUT,
};
use crate::protocol::reply_code;

/// The gateway's side of remote queues.
#[derive(Default)]
pub struct RemoteState {
    /// Asking: this node's requests waiting for their answer.
    next_request: Cell<u64>,
    requests: RefCell<IdMap<u64, OneshotSender<Result<RemoteAnswer, AmqpError>>>>,
    /// Asking: this node's consumers of remote queues, with the queue's node and their channel.
    consumers: RefCell<IdMap<ConsumerKey, (usize, ChannelRef)>>,
    /// Asking: those of them on replicated quorum queues, with their consume (to attach them
    /// again to the queue's next leader, as RabbitMQ keeps them), and the ones whose leader
    /// was lost, waiting for the next (`quorum_group`). Within `consumers`' bound.
    quorum_consumers: RefCell<IdMap<ConsumerKey, (QueueId, RemoteOp)>>,
    quorum_waiting: RefCell<IdMap<ConsumerKey, (QueueId, RemoteOp)>>,
    /// Being attached to the new leader (retried while it is not serving yet).
    quorum_reattaching: RefCell<IdMap<ConsumerKey, (QueueId, RemoteOp)>>,
    /// Answering: the stand-ins for other nodes' connections and consumers.
    proxies: RefCell<Proxies>,
}

#[derive(Default)]
struct Proxies {
    /// (peer, its connection id) -> our proxy connection id.
    conns: HashMap<(usize, u64), u64>,
    by_proxy: IdMap<u64, ProxyConn>,
    /// (peer, its consumer key) -> our key, and back.
    keys: HashMap<(usize, ConsumerKey), ConsumerKey>,
    remote_keys: IdMap<ConsumerKey, (usize, ConsumerKey)>,
}

struct ProxyConn {
    peer: usize,
    remote_conn: u64,
    /// (channel, queue) pairs the queue may hold messages or consumers of.
    uses: HashSet<(u16, QueueId)>,
    /// Our consumer keys of this connection, with their (channel, queue).
    keys: HashMap<ConsumerKey, (u16, QueueId)>,
}

/// To the gateway: a request on a queue another node leads.
pub struct RemoteQueueRequest {
    pub queue: QueueId,
    pub op: RemoteOp,
}

impl ShardCall for RemoteQueueRequest {
    type Reply = Result<RemoteAnswer, AmqpError>;
    async fn handle(self, shard: &Rc<Shard>, _from: ShardId) -> Self::Reply {
        shard.ask_remote(self.queue, self.op).await
    }
}

impl Shard {
    fn remote(&self) -> &RemoteState {
        &self.features.forwarding.remote
    }

    /// Waits until member `node` has applied, and made durable, every publish this shard
    /// forwarded to it before now (for tx.commit): a `Barrier` request follows them on the same
    /// FIFO path (this shard's mesh link to the gateway, the gateway's link to the node).
    pub async fn node_barrier(self: &Rc<Self>, node: usize) -> Result<(), AmqpError> {
        // The request is addressed by a queue id that names the node (no queue has it).
        let addressed = (node as QueueId) << QUEUE_ID_NODE_SHIFT;
        self.remote_queue_op(addressed, RemoteOp::Barrier)
            .await
            .map(drop)
    }

    /// Asks the node that leads `queue` to apply `op` to it: its answer, or an error when it
    /// cannot be asked or does not answer in time.
    pub async fn remote_queue_op(
        self: &Rc<Self>,
        queue: QueueId,
        op: RemoteOp,
    ) -> Result<RemoteAnswer, AmqpError> {
        let gateway = self.topology_owner();
        if gateway == self.id {
            return self.ask_remote(queue, op).await;
        }
        match self.call(gateway, RemoteQueueRequest { queue, op }).await {
            Ok(answer) => answer,
            Err(NoReply) => Err(self.unreachable_error(queue)),
        }
    }

    /// The gateway: sends the request, waits for its answer, and keeps track of this node's
    /// remote consumers.
    async fn ask_remote(
        self: &Rc<Self>,
        queue: QueueId,
        op: RemoteOp,
    ) -> Result<RemoteAnswer, AmqpError> {
        if self.forget_quorum_consumer(op) {
            // It waited for a new leader: nothing of it is anywhere else.
            return Ok(RemoteAnswer::numbers(0, 0));
        }
        if self.leads_quorum_queue_here(queue) {
            // Boxed: `queue_op` reaches back here for a queue led elsewhere.
            return Box::pin(self.answer_as_asked(queue, self.id, op)).await;
        }
        let node = self
            .cluster_node()
            .ok_or_else(|| self.unreachable_error(queue))?;
        let remote = self.remote();
        if remote.requests.borrow().len() >= CLUSTER_REMOTE_REQUESTS_PENDING_MAX {
            return Err(self.unreachable_error(queue));
        }
        let id = remote.next_request.get() + 1;
        remote.next_request.set(id);
        let peer = self.node_of_queue(queue);
        let (sender, receiver) = oneshot();
        remote.requests.borrow_mut().insert(id, sender);
        let request = encode(&Record::Request { id, queue, op });
        if node.send_data(peer, request).is_none() {
            remote.requests.borrow_mut().remove(&id);
            return Err(self.unreachable_error(queue));
        }
        // Within the mesh's call timeout, so a shard that asked through us hears our answer.
        let limit = RPC_TIMEOUT / 2;
        let answer = glommio::timer::timeout(limit, async { Ok(receiver.await) })
            .await
            .ok()
            .flatten();
        remote.requests.borrow_mut().remove(&id);
        let answer = answer.unwrap_or_else(|| Err(self.unreachable_error(queue)));
        if answer.is_ok() {
            let mut consumers = remote.consumers.borrow_mut();
            match op {
                RemoteOp::Consume { key, channel, .. } => {
                    consumers.insert(key, (peer, channel));
                    // Member or not: the consumer follows the group's leader.
                    if self.is_replicated_id(queue) {
                        remote
                            .quorum_consumers
                            .borrow_mut()
                            .insert(key, (queue, op));
                    }
                }
                RemoteOp::Cancel { key } => {
                    consumers.remove(&key);
                }
                RemoteOp::ChannelClosed { channel } => {
                    consumers.retain(|_, (node, of)| !(*node == peer && *of == channel));
                }
                _ => {}
            }
        }
        answer
    }

    /// The gateway: every record but publishes and their confirms (`forward`).
    pub(super) fn remote_record(self: &Rc<Self>, peer: usize, record: Record) {
        match record {
            Record::Request { id, queue, op } => {
                let shard = self.clone();
                glommio::spawn_local(async move {
                    let answer = shard.answer_remote_op(peer, queue, op).await;
                    if let Some(node) = shard.cluster_node() {
                        // Dropped when the link is down: the asker times out.
                        let _ = node.send_data(peer, encode(&Record::Answer { id, answer }));
                    }
                })
                .detach();
            }
            Record::Answer { id, answer } => {
                let waiting = self.remote().requests.borrow_mut().remove(&id);
                if let Some(sender) = waiting {
                    sender.send(answer);
                }
            }
            Record::Deliver {
                key,
                channel,
                queue,
                message_id,
                redelivered,
                message,
            } => self.route_delivery(DeliverEntry {
                channel,
                consumer: key,
                queue,
                message_id,
                message,
                redelivered,
            }),
            Record::Settle { queue, op } => self.remote_settle(peer, queue, op),
            Record::Cancelled { key, channel } => {
                self.remote().consumers.borrow_mut().remove(&key);
                // A quorum queue's leader that stepped down: attached to the next one.
                let quorum = self.remote().quorum_consumers.borrow_mut().remove(&key);
                match quorum.filter(|&(queue, _)| self.is_replicated_id(queue)) {
                    Some((queue, op)) => {
                        self.remote()
                            .quorum_waiting
                            .borrow_mut()
                            .insert(key, (queue, op));
                        if self.node_of_queue(queue) != peer {
                            self.reattach_quorum_consumers(queue);
                        }
                    }
                    None => self.route_consumer_cancelled(channel, key),
                }
            }
            Record::Publish { .. } | Record::Confirm { .. } => {}
        }
    }

    // ---- the consumer's node ----------------------------------------------------------------

    /// Settles messages of a queue another node leads: over the gateway's link, in order with
    /// this shard's other traffic to it. Lost with a link that goes down (the queue's node
    /// then requeues everything our channels held).
    pub(in crate::shard) fn forward_settle(&self, queue: QueueId, op: SettleOp) {
        let gateway = self.topology_owner();
        if gateway != self.id {
            self.mesh
                .send(gateway, MeshMsg::ForwardSettle { queue, op });
            return;
        }
        if self.leads_quorum_queue_here(queue) {
            // Recorded elsewhere by the channel, led here since (a quorum queue's failover).
            self.apply_settle(queue, op);
            return;
        }
        if let Some(node) = self.cluster_node() {
            let peer = self.node_of_queue(queue);
            let _ = node.send_data(peer, encode(&Record::Settle { queue, op }));
        }
    }

    // ---- the queue's node -------------------------------------------------------------------

    /// Applies a peer's request to a queue we lead.
    async fn answer_remote_op(
        self: &Rc<Self>,
        peer: usize,
        queue: QueueId,
        op: RemoteOp,
    ) -> Result<RemoteAnswer, AmqpError> {
        if op == RemoteOp::Barrier {
            // About no queue: answered before the queue is looked up.
            return self.barrier_every_shard().await;
        }
        let owner = self.owner_of(queue);
        let known = self.topology.borrow().queue_by_id(queue).is_some();
        if !known || owner == ELSEWHERE {
            return Err(AmqpError::new(
                reply_code::NOT_FOUND,
                "NOT_FOUND - no such queue on the node that leads it".to_string(),
            ));
        }
        let numbers = RemoteAnswer::numbers;
        match op {
            RemoteOp::Count { .. } | RemoteOp::Purge | RemoteOp::Delete { .. } => {
                self.answer_as_asked(queue, owner, op).await
            }
            RemoteOp::Consume { key, channel, .. } => {
                let (local_key, local_channel) = self.proxy_consumer(peer, key, channel, queue)?;
                let Some(mut op) = consume_of(op) else {
                    return Ok(numbers(0, 0));
                };
                (op.key, op.channel) = (local_key, local_channel);
                if let Err(error) = self.queue_op(queue, owner, op).await {
                    self.forget_proxy_key(local_key);
                    return Err(error);
                }
                Ok(numbers(0, 0))
            }
            RemoteOp::Cancel { key } => {
                let local = self
                    .remote()
                    .proxies
                    .borrow()
                    .keys
                    .get(&(peer, key))
                    .copied();
                let Some(local) = local else {
                    return Ok(numbers(0, 0));
                };
                let unused = self
                    .queue_op(queue, owner, queue_op::Cancel { key: local })
                    .await?;
                self.forget_proxy_key(local);
                Ok(numbers(u32::from(unused), 0))
            }
            RemoteOp::Get { channel, no_ack } => {
                let local_channel =
                    self.proxy_channel(peer, channel, (!no_ack).then_some(queue))?;
                let op = queue_op::Get {
                    channel: local_channel,
                    no_ack,
                };
                let got = self.queue_op(queue, owner, op).await?;
                Ok(RemoteAnswer {
                    numbers: (0, 0),
                    got,
                })
            }
            RemoteOp::ChannelClosed { channel } => {
                let Some(local) = self.existing_proxy_channel(peer, channel) else {
                    return Ok(numbers(0, 0));
                };
                let op = queue_op::ChannelClosed { channel: local };
                let unused = self.queue_op(queue, owner, op).await?;
                self.forget_proxy_use(local, queue);
                Ok(numbers(u32::from(unused), 0))
            }
            RemoteOp::Recover { channel } => {
                let Some(local) = self.existing_proxy_channel(peer, channel) else {
                    return Ok(numbers(0, 0));
                };
                self.queue_op(queue, owner, queue_op::Recover { channel: local })
                    .await?;
                Ok(numbers(0, 0))
            }
            RemoteOp::Barrier => self.barrier_every_shard().await,
        }
    }

    /// A peer's `Barrier`: every shard here has applied what this gateway handed it before
    /// (each call travels behind it on the mesh link) and synced its log.
    async fn barrier_every_shard(self: &Rc<Self>) -> Result<RemoteAnswer, AmqpError> {
        for shard in 0..self.shard_count {
            self.barrier(shard).await?;
        }
        Ok(RemoteAnswer::numbers(0, 0))
    }

    /// This gateway hosts `queue`, a replicated quorum queue whose leadership moved here while
    /// a session of this node recorded it `ELSEWHERE` (its consumer, its channel).
    fn leads_quorum_queue_here(&self, queue: QueueId) -> bool {
        self.queues
            .borrow()
            .get(&queue)
            .is_some_and(|hosted| hosted.is_replicated())
    }

    /// `op` applied to `queue` (owned by shard `owner` here) with the keys and channels as
    /// given: a peer's count, purge or delete, and every operation of this node's own sessions
    /// on a replicated quorum queue whose leadership moved here.
    async fn answer_as_asked(
        self: &Rc<Self>,
        queue: QueueId,
        owner: ShardId,
        op: RemoteOp,
    ) -> Result<RemoteAnswer, AmqpError> {
        let numbers = RemoteAnswer::numbers;
        match op {
            RemoteOp::Count { renews_expiry } => {
                let counts = self
                    .queue_op(queue, owner, queue_op::Count { renews_expiry })
                    .await?;
                Ok(numbers(counts.messages, counts.consumers))
            }
            RemoteOp::Purge => Ok(numbers(
                self.queue_op(queue, owner, queue_op::Purge).await?,
                0,
            )),
            RemoteOp::Delete {
                if_unused,
                if_empty,
            } => {
                let op = queue_op::Delete {
                    if_unused,
                    if_empty,
                };
                Ok(numbers(self.queue_op(queue, owner, op).await?, 0))
            }
            RemoteOp::Consume { .. } => {
                if let Some(consume) = consume_of(op) {
                    self.queue_op(queue, owner, consume).await?;
                }
                Ok(numbers(0, 0))
            }
            RemoteOp::Cancel { key } => {
                let unused = self
                    .queue_op(queue, owner, queue_op::Cancel { key })
                    .await?;
                Ok(numbers(u32::from(unused), 0))
            }
            RemoteOp::Get { channel, no_ack } => {
                let got = self
                    .queue_op(queue, owner, queue_op::Get { channel, no_ack })
                    .await?;
                Ok(RemoteAnswer {
                    numbers: (0, 0),
                    got,
                })
            }
            RemoteOp::ChannelClosed { channel } => {
                let op = queue_op::ChannelClosed { channel };
                let unused = self.queue_op(queue, owner, op).await?;
                Ok(numbers(u32::from(unused), 0))
            }
            RemoteOp::Barrier => self.barrier_every_shard().await,
            RemoteOp::Recover { channel } => {
                self.queue_op(queue, owner, queue_op::Recover { channel })
                    .await?;
                Ok(numbers(0, 0))
            }
        }
    }

    /// Our stand-in for the peer's channel (made on first use); `queue`: the channel may hold
    /// messages of it from now on.
    fn proxy_channel(
        &self,
        peer: usize,
        channel: ChannelRef,
        queue: Option<QueueId>,
    ) -> Result<ChannelRef, AmqpError> {
        let mut proxies = self.remote().proxies.borrow_mut();
        let existing = proxies.conns.get(&(peer, channel.conn)).copied();
        let conn = match existing {
            Some(conn) => conn,
            None => {
                if proxies.by_proxy.len() >= CLUSTER_REMOTE_CONSUMERS_MAX {
                    return Err(too_many_remote());
                }
                let conn = self.new_id();
                proxies.conns.insert((peer, channel.conn), conn);
                let proxy = ProxyConn {
                    peer,
                    remote_conn: channel.conn,
                    uses: HashSet::new(),
                    keys: HashMap::new(),
                };
                proxies.by_proxy.insert(conn, proxy);
                conn
            }
        };
        if let (Some(queue), Some(proxy)) = (queue, proxies.by_proxy.get_mut(&conn)) {
            proxy.uses.insert((channel.channel, queue));
        }
        Ok(ChannelRef {
            conn,
            channel: channel.channel,
        })
    }

    fn existing_proxy_channel(&self, peer: usize, channel: ChannelRef) -> Option<ChannelRef> {
        let proxies = self.remote().proxies.borrow();
        let conn = *proxies.conns.get(&(peer, channel.conn))?;
        Some(ChannelRef {
            conn,
            channel: channel.channel,
        })
    }

    /// Our key and channel for the peer's consumer `key` on `channel`, of `queue`.
    fn proxy_consumer(
        &self,
        peer: usize,
        key: ConsumerKey,
        channel: ChannelRef,
        queue: QueueId,
    ) -> Result<(ConsumerKey, ChannelRef), AmqpError> {
        let local_channel = self.proxy_channel(peer, channel, Some(queue))?;
        let mut proxies = self.remote().proxies.borrow_mut();
        if proxies.keys.len() >= CLUSTER_REMOTE_CONSUMERS_MAX {
            return Err(too_many_remote());
        }
        if let Some(&local) = proxies.keys.get(&(peer, key)) {
            return Ok((local, local_channel));
        }
        let local = self.new_id();
        proxies.keys.insert((peer, key), local);
        proxies.remote_keys.insert(local, (peer, key));
        if let Some(proxy) = proxies.by_proxy.get_mut(&local_channel.conn) {
            proxy.keys.insert(local, (channel.channel, queue));
        }
        Ok((local, local_channel))
    }

    fn forget_proxy_key(&self, local: ConsumerKey) {
        let mut proxies = self.remote().proxies.borrow_mut();
        if let Some(remote) = proxies.remote_keys.remove(&local) {
            proxies.keys.remove(&remote);
        }
        for proxy in proxies.by_proxy.values_mut() {
            proxy.keys.remove(&local);
        }
    }

    /// The channel closed on `queue`: its consumers there are gone and it holds nothing of it.
    fn forget_proxy_use(&self, channel: ChannelRef, queue: QueueId) {
        let mut proxies = self.remote().proxies.borrow_mut();
        let Some(proxy) = proxies.by_proxy.get_mut(&channel.conn) else {
            return;
        };
        proxy.uses.remove(&(channel.channel, queue));
        let gone: Vec<ConsumerKey> = proxy
            .keys
            .iter()
            .filter(|(_, &(number, of))| number == channel.channel && of == queue)
            .map(|(&key, _)| key)
            .collect();
        for key in &gone {
            proxy.keys.remove(key);
        }
        let empty = proxy.uses.is_empty() && proxy.keys.is_empty();
        let (peer, remote_conn) = (proxy.peer, proxy.remote_conn);
        for key in gone {
            if let Some(remote) = proxies.remote_keys.remove(&key) {
                proxies.keys.remove(&remote);
            }
        }
        if empty {
            proxies.by_proxy.remove(&channel.conn);
            proxies.conns.remove(&(peer, remote_conn));
        }
    }

    /// A delivery for a connection this shard does not have: if it is a proxy, it goes to the
    /// peer's node. Handed back when it is not one or cannot be sent (the shard returns it to
    /// its queue, which drops the consumer).
    pub(in crate::shard) fn forward_delivery(&self, entry: DeliverEntry) -> Option<DeliverEntry> {
        let target = {
            let proxies = self.remote().proxies.borrow();
            let proxy = proxies.by_proxy.get(&entry.channel.conn);
            let remote_key = proxies.remote_keys.get(&entry.consumer);
            proxy
                .zip(remote_key)
                .map(|(proxy, &(_, key))| (proxy.peer, proxy.remote_conn, key))
        };
        let Some((peer, remote_conn, key)) = target else {
            return Some(entry);
        };
        let Some(node) = self.cluster_node() else {
            return Some(entry);
        };
        let record = Record::Deliver {
            key,
            channel: ChannelRef {
                conn: remote_conn,
                channel: entry.channel.channel,
            },
            queue: entry.queue,
            message_id: entry.message_id,
            redelivered: entry.redelivered,
            message: entry.message.clone(),
        };
        match node.send_data(peer, encode(&record)) {
            Some(_) => None,
            None => Some(entry),
        }
    }

    /// A consumer of a proxy connection was cancelled (its queue went): tell its node. False
    /// when `channel` is not a proxy's.
    pub(in crate::shard) fn forward_cancelled(
        &self,
        channel: ChannelRef,
        consumer: ConsumerKey,
    ) -> bool {
        let target = {
            let proxies = self.remote().proxies.borrow();
            let proxy = proxies.by_proxy.get(&channel.conn);
            let remote_key = proxies.remote_keys.get(&consumer);
            proxy
                .zip(remote_key)
                .map(|(proxy, &(_, key))| (proxy.peer, proxy.remote_conn, key))
        };
        let Some((peer, remote_conn, key)) = target else {
            return false;
        };
        self.forget_proxy_key(consumer);
        if let Some(node) = self.cluster_node() {
            let record = Record::Cancelled {
                key,
                channel: ChannelRef {
                    conn: remote_conn,
                    channel: channel.channel,
                },
            };
            let _ = node.send_data(peer, encode(&record));
        }
        true
    }

    /// A peer's settlement of one of our queues, its consumer keys made ours.
    fn remote_settle(&self, peer: usize, queue: QueueId, op: SettleOp) {
        let local = |key: ConsumerKey| {
            self.remote()
                .proxies
                .borrow()
                .keys
                .get(&(peer, key))
                .copied()
        };
        let op = match op {
            SettleOp::Refused { consumer, id } => match local(consumer) {
                Some(consumer) => SettleOp::Refused { consumer, id },
                None => return,
            },
            SettleOp::Written { consumer, bytes } => match local(consumer) {
                Some(consumer) => SettleOp::Written { consumer, bytes },
                None => return,
            },
            other => other,
        };
        let owner = self.owner_of(queue);
        if owner != ELSEWHERE {
            self.settle(queue, owner, op);
        }
    }

    // ---- either side, when a link goes down --------------------------------------------------

    /// A cancel or a channel closing forgets the quorum consumers it ends; `true` when the
    /// consumer cancelled was waiting for a new leader (so no node holds it).
    fn forget_quorum_consumer(&self, op: RemoteOp) -> bool {
        let remote = self.remote();
        match op {
            RemoteOp::Cancel { key } => {
                remote.quorum_consumers.borrow_mut().remove(&key);
                let reattaching = remote.quorum_reattaching.borrow_mut().remove(&key);
                remote.quorum_waiting.borrow_mut().remove(&key).is_some() || reattaching.is_some()
            }
            RemoteOp::ChannelClosed { channel } => {
                let of_channel = |(_, op): &(QueueId, RemoteOp)| matches!(op, RemoteOp::Consume { channel: c, .. } if *c == channel);
                remote
                    .quorum_consumers
                    .borrow_mut()
                    .retain(|_, entry| !of_channel(entry));
                remote
                    .quorum_waiting
                    .borrow_mut()
                    .retain(|_, entry| !of_channel(entry));
                remote
                    .quorum_reattaching
                    .borrow_mut()
                    .retain(|_, entry| !of_channel(entry));
                false
            }
            _ => false,
        }
    }

    /// `queue` (a replicated quorum queue) has a new leader: this node's consumers that lost
    /// the previous one are attached to it, on this node's own queue when it leads, else
    /// through its node. A follower hears of a new leader a moment before that leader serves,
    /// so an attach that fails is tried again (`QUORUM_REATTACH_ATTEMPTS_MAX`, every
    /// `QUORUM_REATTACH_RETRY_INTERVAL`); one that never succeeds, or whose consumer was
    /// cancelled meanwhile, ends there (basic.cancel to its client for the first).
    pub(in crate::shard) fn reattach_quorum_consumers(self: &Rc<Self>, queue: QueueId) {
        let keys: Vec<ConsumerKey> = {
            let mut waiting = self.remote().quorum_waiting.borrow_mut();
            let keys: Vec<ConsumerKey> = waiting
                .iter()
                .filter(|(_, (of, _))| *of == queue)
                .map(|(&key, _)| key)
                .collect();
            let mut reattaching = self.remote().quorum_reattaching.borrow_mut();
            for key in &keys {
                if let Some(entry) = waiting.remove(key) {
                    reattaching.insert(*key, entry);
                }
            }
            keys
        };
        for key in keys {
            let shard = self.clone();
            glommio::spawn_local(async move { shard.reattach_quorum_consumer(key).await }).detach();
        }
    }

    async fn reattach_quorum_consumer(self: &Rc<Self>, key: ConsumerKey) {
        for attempt in 1..=QUORUM_REATTACH_ATTEMPTS_MAX {
            // Cancelled (or its channel closed) meanwhile: nothing to attach.
            let Some((queue, op)) = self.remote().quorum_reattaching.borrow().get(&key).copied()
            else {
                return;
            };
            let Some(consume) = consume_of(op) else {
                return;
            };
            let channel = consume.channel;
            let attached = if self.leads_quorum_queue_here(queue) {
                self.remote().consumers.borrow_mut().remove(&key);
                self.handle_queue_op(queue, consume)
            } else {
                self.ask_remote(queue, op).await.map(drop)
            };
            match attached {
                Ok(()) => {
                    self.remote().quorum_reattaching.borrow_mut().remove(&key);
                    tracing::info!(
                        queue,
                        key,
                        attempt,
                        "quorum consumer attached to the new leader"
                    );
                    return;
                }
                Err(error) if attempt == QUORUM_REATTACH_ATTEMPTS_MAX => {
                    self.remote().quorum_reattaching.borrow_mut().remove(&key);
                    tracing::warn!(queue, key, %error.text, "quorum consumer not attached to the new leader: cancelled");
                    self.route_consumer_cancelled(channel, key);
                }
                Err(_) => glommio::timer::sleep(QUORUM_REATTACH_RETRY_INTERVAL).await,
            }
        }
    }

    /// The link to `peer` went down (either direction): our consumers of its queues are
    /// cancelled, and its channels here are closed (their unacked messages requeued).
    pub(super) fn remote_link_down(self: &Rc<Self>, peer: usize) {
        let cancelled: Vec<(ConsumerKey, ChannelRef)> = {
            let mut consumers = self.remote().consumers.borrow_mut();
            let gone: Vec<(ConsumerKey, ChannelRef)> = consumers
                .iter()
                .filter(|(_, (node, _))| *node == peer)
                .map(|(&key, &(_, channel))| (key, channel))
                .collect();
            for (key, _) in &gone {
                consumers.remove(key);
            }
            gone
        };
        for (key, channel) in cancelled {
            // A replicated quorum queue's consumer waits for the queue's next leader.
            let quorum = self.remote().quorum_consumers.borrow_mut().remove(&key);
            match quorum {
                Some(entry) => {
                    self.remote().quorum_waiting.borrow_mut().insert(key, entry);
                }
                None => self.route_consumer_cancelled(channel, key),
            }
        }
        // Its consumers are told, in case only its link to us failed and ours to it works.
        let mut told = Vec::new();
        let closed: Vec<(ChannelRef, QueueId)> = {
            let mut proxies = self.remote().proxies.borrow_mut();
            let conns: Vec<u64> = proxies
                .by_proxy
                .iter()
                .filter(|(_, proxy)| proxy.peer == peer)
                .map(|(&conn, _)| conn)
                .collect();
            let mut closed = Vec::new();
            for conn in conns {
                let Some(proxy) = proxies.by_proxy.remove(&conn) else {
                    continue;
                };
                proxies.conns.remove(&(peer, proxy.remote_conn));
                for (key, &(channel, _)) in &proxy.keys {
                    if let Some(remote) = proxies.remote_keys.remove(key) {
                        proxies.keys.remove(&remote);
                        let channel = ChannelRef {
                            conn: proxy.remote_conn,
                            channel,
                        };
                        told.push(Record::Cancelled {
                            key: remote.1,
                            channel,
                        });
                    }
                }
                let mut uses: Vec<(u16, QueueId)> = proxy.uses.into_iter().collect();
                uses.extend(proxy.keys.into_values());
                uses.sort_unstable();
                uses.dedup();
                closed.extend(
                    uses.into_iter()
                        .map(|(channel, queue)| (ChannelRef { conn, channel }, queue)),
                );
            }
            closed
        };
        if let Some(node) = self.cluster_node() {
            for record in &told {
                let _ = node.send_data(peer, encode(record));
            }
        }
        if closed.is_empty() {
            return;
        }
        tracing::warn!(
            peer,
            channels = closed.len(),
            "cluster link down: the peer's channels on our queues closed"
        );
        let shard = self.clone();
        glommio::spawn_local(async move {
            for (channel, queue) in closed {
                let owner = shard.owner_of(queue);
                if owner != ELSEWHERE {
                    let _ = shard
                        .queue_op(queue, owner, queue_op::ChannelClosed { channel })
                        .await;
                }
            }
        })
        .detach();
    }

    fn unreachable_error(&self, queue: QueueId) -> AmqpError {
        let members = self.members();
        let node = members.name_of_queue_node(queue);
        AmqpError::new(
            reply_code::INTERNAL_ERROR,
            format!("INTERNAL_ERROR - node {node}, which leads the queue, did not answer"),
        )
    }
}

/// The queue operation a `RemoteOp::Consume` asks for, with its own key and channel.
fn consume_of(op: RemoteOp) -> Option<queue_op::Consume> {
    let RemoteOp::Consume {
        key,
        channel,
        prefetch,
        no_ack,
        exclusive,
        priority,
    } = op
    else {
        return None;
    };
    Some(queue_op::Consume {
        key,
        channel,
        prefetch,
        no_ack,
        exclusive,
        priority,
    })
}

fn too_many_remote() -> AmqpError {
    AmqpError::new(
        reply_code::RESOURCE_ERROR,
        "RESOURCE_ERROR - too many consumers from other nodes on this node".to_string(),
    )
}
