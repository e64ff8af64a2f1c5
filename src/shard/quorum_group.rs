//! Replicated quorum queues, the shard's side: a quorum queue whose group has more than one
//! member (the members recorded at its declare, `quorum_members.rs`) is a Raft group
//! (`cluster::Groups`, driven on the topology owner). Every member keeps a copy of the queue's
//! messages (`Replica`: what the committed entries left, by message id = the entry's log
//! index); the member its group elects hosts the queue on its topology owner shard and serves
//! it, the other members and the nodes outside the group record it `ELSEWHERE` and forward to
//! the leader as to any queue another node leads.
//!
//! ```text
//! publish ─► leader's topology owner: offer ─► propose Enqueue ─► (majority durable) commit
//!   ─► apply on every member: the copy takes it; on the leader the queue too, then dispatch
//!   ─► the publish's confirm (after the WAL's own when other queues here logged it)
//! ack / reject / expiry / delete on the leader ─► `log_forgotten` ─► propose Settle
//! return (delivery count raised) ─► propose Return (the message as it is stored again)
//! ```
//!
//! Entries: `Enqueue { message }` (properties and body), `Settle { ids }`, `Return { id,
//! message with its x-delivery-count }`. A publish not committed within
//! `QUORUM_COMMIT_TIMEOUT` is nacked; so is every waiting one when this node stops leading.
//! A settlement or return is proposed after the leader's queue applied it; lost with a leader
//! that died before it committed, the message is delivered again (at-least-once).
//!
//! Snapshots (the group's log compaction, issue 13): the copy is the queue's whole state at
//! the applied index, so a snapshot is the copy's messages by id (`encode_replica`: each with
//! its properties, where a return put its `x-delivery-count`); restoring one replaces the copy.
//!
//! Leader changes: the group reports this node's view after each `Ready`. A node starts
//! serving once its group says it may (it leads, committed in its term, applied everything):
//! it builds the queue from its copy, every message marked redelivered (the copy does not
//! record which were delivered), and tells its shards (owner shard, the leader for
//! forwarding). A node that stops leading drops its queue (its consumers get basic.cancel,
//! nothing is settled) and tells its shards the new leader when one is known.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU64;
use std::rc::{Rc, Weak};

use bytes::{Buf, BufMut, Bytes};

use super::calls::ShardCall;
use super::expiry::now_ms;
use super::forward::{put_message, take_message};
use super::messages::ConfirmRef;
use super::queues::HostedQueue;
use super::storage::EnqueueOutcome;
use super::sync::Notify;
use super::{Shard, ELSEWHERE};
use crate::broker::queue::{MessageId, SharedMessage};
use crate::broker::{quorum, QueueId, QueueMeta, ShardId, TopologyChange};
use crate::cluster::{GroupMachine, GroupView};
use crate::limits::{
    QUORUM_COMMIT_SWEEP_INTERVAL, QUORUM_COMMIT_TIMEOUT, QUORUM_CONFIRMS_PENDING_MAX,
    QUORUM_DECLARE_ELECTION_WAIT,
};
use crate::storage::Lsn;

/// One entry of a quorum queue's group log.
#[derive(Debug)]
enum GroupEntry {
    Enqueue(SharedMessage),
    Settle(Vec<MessageId>),
    Return(MessageId, SharedMessage),
}

const ENTRY_ENQUEUE: u8 = 1;
const ENTRY_SETTLE: u8 = 2;
const ENTRY_RETURN: u8 = 3;

fn encode_entry(entry: &GroupEntry) -> Vec<u8> {
    let mut out = Vec::new();
    match entry {
        GroupEntry::Enqueue(message) => {
            out.put_u8(ENTRY_ENQUEUE);
            put_message(&mut out, message);
        }
        GroupEntry::Settle(ids) => {
            out.put_u8(ENTRY_SETTLE);
            out.put_u32(ids.len() as u32);
            for &id in ids {
                out.put_u64(id);
            }
        }
        GroupEntry::Return(id, message) => {
            out.put_u8(ENTRY_RETURN);
            out.put_u64(*id);
            put_message(&mut out, message);
        }
    }
    out
}

fn decode_entry(data: &[u8]) -> Result<GroupEntry, &'static str> {
    let mut bytes = Bytes::copy_from_slice(data);
    let short = "short quorum entry";
    if !bytes.has_remaining() {
        return Err(short);
    }
    let entry = match bytes.get_u8() {
        ENTRY_ENQUEUE => GroupEntry::Enqueue(take_message(&mut bytes)?),
        ENTRY_SETTLE => {
            if bytes.remaining() < 4 {
                return Err(short);
            }
            let count = bytes.get_u32() as usize;
            if bytes.remaining() < count.saturating_mul(8) {
                return Err(short);
            }
            GroupEntry::Settle((0..count).map(|_| bytes.get_u64()).collect())
        }
        ENTRY_RETURN => {
            if bytes.remaining() < 8 {
                return Err(short);
            }
            let id = bytes.get_u64();
            GroupEntry::Return(id, take_message(&mut bytes)?)
        }
        _ => return Err("unknown quorum entry"),
    };
    if bytes.has_remaining() {
        return Err("trailing bytes after a quorum entry");
    }
    Ok(entry)
}

/// What committed entries left of one queue, on every member.
#[derive(Default)]
struct Replica {
    messages: BTreeMap<MessageId, SharedMessage>,
}

/// A confirmed publish waiting for its entries to commit.
struct Wait {
    parts: usize,
    refused: bool,
    lsn: Option<Lsn>,
    confirm: ConfirmRef,
    epoch: u64,
}

/// The topology owner's state for the replicated quorum queues of its node.
#[derive(Default)]
pub struct QuorumGroups {
    replicas: RefCell<HashMap<QueueId, Replica>>,
    waits: RefCell<HashMap<u64, Wait>>,
    /// Proposal sequence number -> the wait it belongs to.
    proposals: RefCell<HashMap<u64, u64>>,
    next_wait: Cell<u64>,
    /// Sweeps done (`QUORUM_COMMIT_SWEEP_INTERVAL` apart): the clock of the commit timeout.
    epoch: Cell<u64>,
    leader_heard: Notify,
    /// A group's report was applied here (`quorum_members`): a membership change waits for
    /// the one that shows it done.
    pub(super) report_heard: Notify,
}

/// The groups' committed entries and leader views reach the topology owner here.
pub struct GroupApplier(pub Weak<Shard>);

impl GroupMachine for GroupApplier {
    fn apply(&self, queue: QueueId, index: u64, data: &[u8], proposal: Option<u64>) {
        if let Some(shard) = self.0.upgrade() {
            shard.apply_quorum_entry(queue, index, data, proposal);
        }
    }

    fn view_changed(&self, queue: QueueId, view: GroupView) {
        if let Some(shard) = self.0.upgrade() {
            shard.quorum_view_changed(queue, view);
        }
    }

    fn snapshot(&self, queue: QueueId) -> Option<Vec<u8>> {
        let shard = self.0.upgrade()?;
        let replicas = shard.features.quorum.replicas.borrow();
        replicas.get(&queue).map(encode_replica)
    }

    fn restore(&self, queue: QueueId, state: &[u8]) -> Result<(), String> {
        let shard = self.0.upgrade().ok_or("the topology owner stopped")?;
        shard.restore_quorum_replica(queue, state)
    }

    fn voters_changed(&self, queue: QueueId, voters: &[usize]) {
        if let Some(shard) = self.0.upgrade() {
            shard.quorum_voters_changed(queue, voters);
        }
    }
}

const SNAPSHOT_FORMAT: u8 = 1;
/// The fewest bytes one message takes in a snapshot (id, empty names, properties and body):
/// a count announcing more messages than could fit is refused before anything is read.
const SNAPSHOT_MESSAGE_FIXED_BYTES: usize = 8 + 1 + 1 + 4 + 4;

/// `[u8 format][u64 count]` then `[u64 id][message]` per message, by id.
fn encode_replica(replica: &Replica) -> Vec<u8> {
    let mut out = Vec::new();
    out.put_u8(SNAPSHOT_FORMAT);
    out.put_u64(replica.messages.len() as u64);
    for (&id, message) in &replica.messages {
        out.put_u64(id);
        put_message(&mut out, message);
    }
    out
}

/// The messages of a snapshot, all or nothing (ids strictly rising, nothing after them).
fn decode_replica(data: &[u8]) -> Result<BTreeMap<MessageId, SharedMessage>, &'static str> {
    let mut bytes = Bytes::copy_from_slice(data);
    if bytes.remaining() < 9 {
        return Err("short quorum snapshot");
    }
    if bytes.get_u8() != SNAPSHOT_FORMAT {
        return Err("unknown quorum snapshot format");
    }
    let count = bytes.get_u64();
    if count > (bytes.remaining() / SNAPSHOT_MESSAGE_FIXED_BYTES) as u64 {
        return Err("a quorum snapshot announcing more messages than it holds");
    }
    let mut messages = BTreeMap::new();
    let mut previous = 0;
    for _ in 0..count {
        if bytes.remaining() < 8 {
            return Err("short quorum snapshot");
        }
        let id = bytes.get_u64();
        if id <= previous {
            return Err("quorum snapshot ids out of order");
        }
        previous = id;
        messages.insert(id, take_message(&mut bytes)?);
    }
    if bytes.has_remaining() {
        return Err("trailing bytes after a quorum snapshot");
    }
    Ok(messages)
}

/// To every shard of the node: the leader of a replicated quorum queue changed; `hosted_by`:
/// the shard hosting it here (this node leads), else `ELSEWHERE`.
#[derive(Clone, Copy)]
pub struct QuorumLeader {
    queue: QueueId,
    node: usize,
    hosted_by: ShardId,
}

impl ShardCall for QuorumLeader {
    type Reply = ();
    async fn handle(self, shard: &Rc<Shard>, _from: ShardId) {
        shard.note_quorum_leader(&self);
    }
}

impl Shard {
    /// A quorum queue whose group has more than one member, or a classic queue an `ha-mode`
    /// policy mirrored at declare (`broker::mirror`): replicated over a Raft group.
    pub(super) fn is_replicated_quorum(&self, meta: &QueueMeta) -> bool {
        let members = self.members().names().len();
        if members <= 1 {
            return false;
        }
        let topology = self.topology.borrow();
        // Declared with its group's members (`QuorumGroup`), or before groups had their own:
        // then a replicated quorum queue's group is every member.
        topology.quorum_group(meta.id).is_some()
            || topology.is_mirrored(meta.id)
            || (quorum::is_quorum(&meta.arguments)
                && quorum::group_size(&meta.arguments, members) > 1)
    }

    /// Whether this topology owner keeps a copy of `queue` (a replicated quorum queue).
    pub(super) fn has_quorum_replica(&self, queue: QueueId) -> bool {
        self.features.quorum.replicas.borrow().contains_key(&queue)
    }

    /// The topology owner, once the cluster runs: a group for every replicated quorum queue
    /// recovered, and the commit timeout sweeper.
    pub(super) fn start_quorum_groups(self: &Rc<Self>) -> Result<(), String> {
        let metas: Vec<QueueMeta> = {
            let topology = self.topology.borrow();
            topology
                .queues_owned_from(0)
                .into_iter()
                .filter_map(|(id, _)| topology.queue_by_id(id))
                .filter(|meta| self.is_replicated_quorum(meta))
                .cloned()
                .collect()
        };
        for meta in &metas {
            self.quorum_declared(meta, true)?;
            if !self.holds_quorum_group(meta.id) {
                if let Some(node) = self.cluster_node() {
                    node.groups().forget_files(meta.id);
                }
            }
        }
        let weak = Rc::downgrade(self);
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(QUORUM_COMMIT_SWEEP_INTERVAL).await;
                let Some(shard) = weak.upgrade() else {
                    return;
                };
                shard.quorum_sweep();
            }
        })
        .detach();
        Ok(())
    }

    /// The topology owner applied the declare of a replicated quorum queue (or, `at_declare`
    /// false, this node was added to its group): on its group's members, its group (the
    /// declaring node campaigns at once, at declare only) and an empty copy; a node outside
    /// the group holds nothing of it and forwards to its leader.
    pub(super) fn quorum_declared(&self, meta: &QueueMeta, at_declare: bool) -> Result<(), String> {
        let Some(node) = self.cluster_node() else {
            return Ok(()); // recovery before the cluster starts: `start_quorum_groups`
        };
        if !self.holds_quorum_group(meta.id) {
            return Ok(());
        }
        let voters = self.quorum_initial_voters(meta.id);
        self.features
            .quorum
            .replicas
            .borrow_mut()
            .entry(meta.id)
            .or_default();
        let local = self.members().local_index();
        let declared_here =
            at_declare && self.members().leads_queue(meta.id) && voters.contains(&local);
        node.groups().add(meta.id, &voters, declared_here)
    }

    /// The queue was deleted: its group, its log and its copy go.
    pub(super) fn quorum_deleted(&self, queue: QueueId) {
        if self
            .features
            .quorum
            .replicas
            .borrow_mut()
            .remove(&queue)
            .is_none()
        {
            return;
        }
        if let Some(node) = self.cluster_node() {
            node.groups().remove(queue);
        }
        self.set_quorum_leader(queue, None);
    }

    /// A declare of a replicated quorum queue answers once its group has a leader (or after
    /// `QUORUM_DECLARE_ELECTION_WAIT`), so a publish right after declare-ok has somewhere to go.
    pub(super) async fn await_quorum_leader(&self, queue: QueueId) {
        let deadline = std::time::Instant::now() + QUORUM_DECLARE_ELECTION_WAIT;
        while !self.knows_quorum_leader(queue) && self.has_quorum_replica(queue) {
            let now = std::time::Instant::now();
            if now >= deadline {
                tracing::warn!(
                    queue,
                    "quorum queue declared before its group elected a leader"
                );
                return;
            }
            let heard = self.features.quorum.leader_heard.wait();
            let _ = glommio::timer::timeout(deadline - now, async {
                heard.await;
                Ok(())
            })
            .await;
        }
    }

    fn propose_entry(&self, queue: QueueId, entry: &GroupEntry) -> Option<u64> {
        let node = self.cluster_node()?;
        node.groups().propose(queue, encode_entry(entry))
    }

    /// The leader's queue took `message` (admission passed): proposed as an Enqueue entry.
    pub(super) fn propose_enqueue(&self, queue: QueueId, message: &SharedMessage) -> Option<u64> {
        if self.features.quorum.waits.borrow().len() >= QUORUM_CONFIRMS_PENDING_MAX {
            return None;
        }
        self.propose_entry(queue, &GroupEntry::Enqueue(message.clone()))
    }

    /// The leader's queue settled `forgotten` for good and raised the delivery count of
    /// `recounted`: proposed to the group, for the copies.
    pub(super) fn propose_settled(
        &self,
        queue: QueueId,
        forgotten: Vec<MessageId>,
        recounted: Vec<(MessageId, SharedMessage, u64)>,
    ) {
        if !forgotten.is_empty()
            && self
                .propose_entry(queue, &GroupEntry::Settle(forgotten))
                .is_none()
        {
            tracing::warn!(
                queue,
                "a quorum settlement was not proposed (delivered again after a failover)"
            );
        }
        for (id, message, _) in recounted {
            let _ = self.propose_entry(queue, &GroupEntry::Return(id, message));
        }
    }

    /// `confirm` waits for the proposals `local` made (and its WAL record, if other queues
    /// here logged it). `false`: too many waiting, the publish is to be nacked.
    pub(super) fn wait_for_quorum(&self, local: EnqueueOutcome, confirm: ConfirmRef) -> bool {
        let quorum = &self.features.quorum;
        if quorum.waits.borrow().len() >= QUORUM_CONFIRMS_PENDING_MAX {
            return false;
        }
        let wait_id = quorum.next_wait.get() + 1;
        quorum.next_wait.set(wait_id);
        let mut proposals = quorum.proposals.borrow_mut();
        for &seq in &local.quorum_seqs {
            proposals.insert(seq, wait_id);
        }
        let wait = Wait {
            parts: local.quorum_seqs.len(),
            refused: local.refused,
            lsn: local.lsn,
            confirm,
            epoch: quorum.epoch.get(),
        };
        quorum.waits.borrow_mut().insert(wait_id, wait);
        true
    }

    fn quorum_proposal_committed(&self, seq: u64) {
        let quorum = &self.features.quorum;
        let Some(wait_id) = quorum.proposals.borrow_mut().remove(&seq) else {
            return; // no confirm waits for it, or it was nacked already
        };
        let done = {
            let mut waits = quorum.waits.borrow_mut();
            let Some(wait) = waits.get_mut(&wait_id) else {
                return;
            };
            wait.parts -= 1;
            if wait.parts > 0 {
                return;
            }
            waits.remove(&wait_id)
        };
        let Some(wait) = done else {
            return;
        };
        match (wait.refused, wait.lsn) {
            (false, Some(lsn)) => self.storage.confirm_when_durable_late(lsn, wait.confirm),
            (refused, _) => self.route_confirm(wait.confirm, !refused),
        }
    }

    /// Every waiting confirm is nacked (this node stopped leading: its entries may or may not
    /// commit under the next leader).
    fn nack_quorum_waits(&self) {
        let quorum = &self.features.quorum;
        quorum.proposals.borrow_mut().clear();
        let waits: Vec<Wait> = quorum.waits.borrow_mut().drain().map(|(_, w)| w).collect();
        for wait in waits {
            self.route_confirm(wait.confirm, false);
        }
    }

    /// Nacks confirms whose entries did not commit within `QUORUM_COMMIT_TIMEOUT`.
    fn quorum_sweep(&self) {
        let quorum = &self.features.quorum;
        let epoch = quorum.epoch.get() + 1;
        quorum.epoch.set(epoch);
        let sweeps = (QUORUM_COMMIT_TIMEOUT.as_millis()
            / QUORUM_COMMIT_SWEEP_INTERVAL.as_millis().max(1)) as u64;
        let expired: Vec<(u64, Wait)> = {
            let mut waits = quorum.waits.borrow_mut();
            let old: Vec<u64> = waits
                .iter()
                .filter(|(_, w)| w.epoch + sweeps <= epoch)
                .map(|(&id, _)| id)
                .collect();
            old.into_iter()
                .filter_map(|id| waits.remove(&id).map(|w| (id, w)))
                .collect()
        };
        if expired.is_empty() {
            return;
        }
        tracing::warn!(
            nacked = expired.len(),
            "quorum publishes not committed in time: nacked"
        );
        let gone: std::collections::HashSet<u64> = expired.iter().map(|(id, _)| *id).collect();
        quorum
            .proposals
            .borrow_mut()
            .retain(|_, wait| !gone.contains(wait));
        for (_, wait) in expired {
            self.route_confirm(wait.confirm, false);
        }
    }

    /// A snapshot of `queue`'s group from its leader (or this node's own, at start): the copy
    /// becomes what it holds. A node serving the queue never gets one (a leader is never sent
    /// a snapshot); if it did, it stops serving first, as the copy it built from changes.
    fn restore_quorum_replica(&self, queue: QueueId, state: &[u8]) -> Result<(), String> {
        let messages = decode_replica(state).map_err(str::to_string)?;
        let hosting = self
            .queues
            .borrow()
            .get(&queue)
            .is_some_and(HostedQueue::is_replicated);
        if hosting {
            tracing::warn!(queue, "a quorum snapshot arrived while serving the queue");
            self.stop_serving(queue);
        }
        let mut replicas = self.features.quorum.replicas.borrow_mut();
        let replica = replicas
            .get_mut(&queue)
            .ok_or_else(|| format!("no copy of quorum queue {queue} here"))?;
        replica.messages = messages;
        Ok(())
    }

    /// A committed entry of `queue`'s group, on every member, in log order.
    fn apply_quorum_entry(&self, queue: QueueId, index: u64, data: &[u8], proposal: Option<u64>) {
        let entry = match decode_entry(data) {
            Ok(entry) => entry,
            Err(error) => {
                tracing::error!(
                    queue,
                    index,
                    error,
                    "a committed quorum entry cannot be read; skipped"
                );
                return;
            }
        };
        let hosted = {
            let mut replicas = self.features.quorum.replicas.borrow_mut();
            let Some(replica) = replicas.get_mut(&queue) else {
                return;
            };
            match entry {
                GroupEntry::Enqueue(message) => {
                    replica.messages.insert(index, message.clone());
                    let mut queues = self.queues.borrow_mut();
                    match queues.get_mut(&queue).filter(|h| h.is_replicated()) {
                        Some(hosted) => {
                            hosted.queue.publish_replicated(index, message, now_ms());
                            true
                        }
                        None => false,
                    }
                }
                GroupEntry::Settle(ids) => {
                    for id in ids {
                        replica.messages.remove(&id);
                    }
                    false
                }
                GroupEntry::Return(id, message) => {
                    if let Some(kept) = replica.messages.get_mut(&id) {
                        *kept = message;
                    }
                    false
                }
            }
        };
        if hosted {
            self.dispatch(queue);
        }
        if let Some(seq) = proposal {
            self.quorum_proposal_committed(seq);
        }
    }

    /// This node's view of `queue`'s group changed: start or stop serving, and tell every
    /// shard here who leads.
    fn quorum_view_changed(self: &Rc<Self>, queue: QueueId, view: GroupView) {
        let local = self.members().local_index();
        let hosting = self
            .queues
            .borrow()
            .get(&queue)
            .is_some_and(HostedQueue::is_replicated);
        if view.serving && !hosting {
            self.start_serving(queue);
            self.report_quorum_leader(queue, view.term);
            // A change the previous leader had not finished.
            self.reconcile_quorum_members(queue);
        } else if !view.serving && hosting {
            self.stop_serving(queue);
        }
        // A leader not serving yet keeps the previous target: nothing is hosted there yet.
        let node = match view.leader {
            Some(leader) if leader == local && !view.serving => None,
            other => other,
        };
        let Some(node) = node else {
            return;
        };
        tracing::info!(
            queue,
            leader = node,
            term = view.term,
            "quorum queue leader"
        );
        let hosted_by = if view.serving { self.id } else { ELSEWHERE };
        let change = QuorumLeader {
            queue,
            node,
            hosted_by,
        };
        self.note_quorum_leader(&change);
        for peer in self.peers() {
            drop(self.send_request(peer, change));
        }
        if view.serving {
            self.dispatch(queue);
        }
        self.reattach_quorum_consumers(queue);
    }

    /// Any shard: the queue's owner in this shard's topology copy, and the node forwarding
    /// sends to.
    fn note_quorum_leader(&self, change: &QuorumLeader) {
        self.set_quorum_leader(change.queue, Some(change.node));
        let move_queue = TopologyChange::MoveQueue {
            queue: change.queue,
            owner_shard: change.hosted_by,
        };
        self.topology.borrow_mut().apply(&move_queue);
        self.features.quorum.leader_heard.notify();
    }

    /// This node leads: the queue is built from the copy; every message may have been
    /// delivered by the previous leader, so each is marked redelivered.
    fn start_serving(&self, queue: QueueId) {
        let Some(meta) = self.topology.borrow().queue_by_id(queue).cloned() else {
            return;
        };
        let arguments = self.topology.borrow().effective_queue_arguments(&meta);
        let mut hosted = HostedQueue::replicated(&meta, &arguments);
        let now = now_ms();
        if let Some(replica) = self.features.quorum.replicas.borrow().get(&queue) {
            for (&id, message) in &replica.messages {
                if let Some(position) = NonZeroU64::new(id) {
                    hosted
                        .queue
                        .restore(id, message.clone(), position, now, now);
                }
            }
        }
        tracing::info!(
            queue,
            messages = hosted.queue.message_count(),
            "quorum queue: this node leads it now"
        );
        self.queues.borrow_mut().insert(queue, hosted);
    }

    /// This node no longer leads: the queue goes (its consumers are cancelled; nothing is
    /// settled, the copy stays) and waiting confirms are nacked.
    pub(super) fn stop_serving(&self, queue: QueueId) {
        let Some(hosted) = self.queues.borrow_mut().remove(&queue) else {
            return;
        };
        tracing::info!(queue, "quorum queue: this node no longer leads it");
        for spec in hosted.queue.consumers() {
            self.route_consumer_cancelled(spec.channel, spec.key);
        }
        self.nack_quorum_waits();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::queue::{Message, Route};
    use crate::protocol::BasicProperties;

    fn message(body: &[u8]) -> SharedMessage {
        let route = Route {
            exchange: "",
            routing_key: "q",
        };
        Message::new(route, &BasicProperties::default(), body)
    }

    #[test]
    fn entries_round_trip_and_garbage_is_refused() {
        let entries = [
            GroupEntry::Enqueue(message(b"hello")),
            GroupEntry::Settle(vec![1, 5, 9]),
            GroupEntry::Return(4, message(b"again")),
        ];
        for entry in &entries {
            let bytes = encode_entry(entry);
            let back = decode_entry(&bytes).unwrap();
            assert_eq!(encode_entry(&back), bytes);
            for cut in 0..bytes.len() {
                assert!(decode_entry(&bytes[..cut]).is_err(), "cut at {cut}");
            }
        }
        assert!(decode_entry(&[9]).is_err());
        assert!(decode_entry(&[ENTRY_SETTLE, 0xff, 0xff, 0xff, 0xff]).is_err());
    }

    #[test]
    fn a_snapshot_round_trips_and_garbage_is_refused() {
        let mut replica = Replica::default();
        replica.messages.insert(3, message(b"ready"));
        replica.messages.insert(7, message(b"returned once"));
        replica.messages.insert(12, message(&[0xab; 3000]));
        let bytes = encode_replica(&replica);
        let back = decode_replica(&bytes).unwrap();
        assert_eq!(back.keys().copied().collect::<Vec<_>>(), vec![3, 7, 12]);
        assert_eq!(back[&12].body(), &[0xab; 3000][..]);
        assert_eq!(encode_replica(&Replica { messages: back }), bytes);
        for cut in 0..bytes.len() {
            assert!(decode_replica(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(decode_replica(&trailing).is_err());
        let mut format = bytes.clone();
        format[0] = 9;
        assert!(decode_replica(&format).is_err());
        // A count far beyond what follows is refused before anything is allocated for it.
        let mut count = bytes.clone();
        count[1..9].copy_from_slice(&u64::MAX.to_be_bytes());
        assert!(decode_replica(&count).is_err());
        // Ids out of order (the second one rewritten below the first).
        let mut order = Vec::new();
        order.put_u8(SNAPSHOT_FORMAT);
        order.put_u64(2);
        order.put_u64(5);
        put_message(&mut order, &message(b"a"));
        order.put_u64(5);
        put_message(&mut order, &message(b"b"));
        assert!(decode_replica(&order).is_err());
        assert!(decode_replica(&encode_replica(&Replica::default()))
            .unwrap()
            .is_empty());
    }
}
