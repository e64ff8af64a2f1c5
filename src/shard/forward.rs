//! Any node serves any client: a publish routed here to a queue another node leads is
//! forwarded to that node over the cluster link (issue 13's "normal cluster mode").
//!
//! ```text
//! node A, publisher's shard ─ route_now: queues led by node B ─► Forward (mesh, credit taken)
//!   ─► A's topology owner (the gateway: it holds the Raft node and the peer links)
//!   ─► Record::Publish on the link's data queue ─► TCP ─► B's topology owner
//!   ─► B's queue owner shards (mesh PublishEntry, the confirm addressed to FORWARDED_CONN)
//!   ─► B's log durable / queue took it ─► Record::Confirm back ─► A's gateway ─► the channel
//! ```
//!
//! - Order: each hop is FIFO (mesh link, the gateway's data queue, one TCP connection, B's
//!   mesh links), so one publisher's messages reach each queue in the order it sent them.
//! - Bound: a shard may have `CLUSTER_FORWARD_CREDIT_BYTES_MAX` of forwarded publishes not yet
//!   handed to a peer's socket; past it its connections are not read (`wait_for_room`). The
//!   gateway hands the credit back when the link reports the bytes gone (`data_gone`).
//! - Confirms: A's gateway remembers each forwarded confirmed publish until B answers. A link
//!   that goes down nacks everything waiting on it, and so does an answer that takes longer
//!   than `CLUSTER_FORWARD_CONFIRM_TIMEOUT` (B's link back to us may be down while ours is up).
//!   B answers only once every queue there took the message (and its log is durable, for a
//!   persistent message on a durable queue): A never confirms what B did not take.
//!
//! Queues another node leads are also counted, purged, deleted and consumed from through the
//! gateway (`remote.rs`). The records are sans-IO (`wire.rs`): what comes from a peer is
//! checked, never trusted into a panic.

mod remote;
mod wire;

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::rc::{Rc, Weak};

use super::messages::{ConfirmRef, MeshMsg};
use super::sync::Notify;
use super::{PublishOutcome, Shard, ELSEWHERE};
use crate::broker::queue::{ChannelRef, SharedMessage};
use crate::broker::{QueueId, ShardId};
use crate::cluster::DataPath;
use crate::id_hash::IdMap;
use crate::limits::{
    CLUSTER_DATA_RECORD_BYTES_MAX, CLUSTER_FORWARD_CONFIRM_TIMEOUT,
    CLUSTER_FORWARD_CREDIT_BYTES_MAX, CLUSTER_FORWARD_PENDING_MAX, CLUSTER_FORWARD_SWEEP_INTERVAL,
};
use wire::{decode, encode, message_record_bytes, Record};
pub(super) use wire::{put_message, take_message};
pub use wire::{RemoteAnswer, RemoteOp};

/// The connection id confirms of forwarded publishes are addressed to on the queue's node: no
/// connection has it (ids count from 1 on each shard), and it names the topology owner's shard
/// (shard 0), where the gateway answers the publisher's node. Its channel is that node's
/// member index.
pub const FORWARDED_CONN: u64 = 0;

/// A publish for queues another node leads, on its way from the publisher's shard to the
/// gateway (this node's topology owner).
pub struct ForwardEntry {
    pub node: usize,
    pub queues: Vec<QueueId>,
    pub message: SharedMessage,
    pub confirm: Option<ConfirmRef>,
    /// The shard whose credit this took, and how much.
    pub origin: ShardId,
    pub credit_bytes: usize,
}

// ---- state ----------------------------------------------------------------------------------

/// What every shard keeps for forwarding (its credit), and what the gateway keeps per peer.
#[derive(Default)]
pub struct Forwarding {
    credit_used_bytes: Cell<usize>,
    credit_returned: Notify,
    /// The gateway's, by member index (empty elsewhere and without a cluster).
    peers: RefCell<Vec<PeerForwarding>>,
    /// Sweeps done (`CLUSTER_FORWARD_SWEEP_INTERVAL` apart): the clock of the timeouts.
    epoch: Cell<u64>,
    /// Received confirmed publishes waiting for their queues here: (peer, id) -> (answers
    /// still to come, refused so far).
    received: RefCell<HashMap<(usize, u64), (u32, bool)>>,
    /// Requests on remote queues and consumers of them (`remote`).
    remote: remote::RemoteState,
}

#[derive(Default)]
struct PeerForwarding {
    next_id: u64,
    /// Forwarded confirmed publishes waiting for the peer's answer.
    awaiting: IdMap<u64, ConfirmRef>,
    /// The same ids in the order sent, with the epoch they were sent in (timeouts).
    order: VecDeque<(u64, u64)>,
    /// Credit to hand back once the link's data has left up to `end`: (end, origin, bytes).
    credit: VecDeque<(u64, ShardId, usize)>,
}

/// The gateway's data path, handed to the Raft node (`cluster::DataPath`).
pub struct Gateway(pub Weak<Shard>);

impl DataPath for Gateway {
    fn received(&self, peer: usize, payload: Vec<u8>) -> Pin<Box<dyn Future<Output = ()> + '_>> {
        Box::pin(async move {
            if let Some(shard) = self.0.upgrade() {
                shard.forward_received(peer, payload).await;
            }
        })
    }

    fn data_gone(&self, peer: usize, total_bytes: u64) {
        if let Some(shard) = self.0.upgrade() {
            shard.forward_data_gone(peer, total_bytes);
        }
    }

    fn link_down(&self, peer: usize) {
        if let Some(shard) = self.0.upgrade() {
            shard.forward_link_down(peer);
        }
    }
}

impl Shard {
    /// The gateway, when the cluster starts: one entry per member, and the timeout sweeper.
    pub(super) fn start_forwarding(self: &Rc<Self>, member_count: usize) {
        let mut peers = self.features.forwarding.peers.borrow_mut();
        peers.clear();
        peers.resize_with(member_count, PeerForwarding::default);
        drop(peers);
        let weak = Rc::downgrade(self);
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(CLUSTER_FORWARD_SWEEP_INTERVAL).await;
                let Some(shard) = weak.upgrade() else {
                    return;
                };
                shard.forward_sweep();
            }
        })
        .detach();
    }

    /// A node joined: one forwarding slot per member index (the existing ones kept).
    pub(super) fn grow_forwarding(&self, member_count: usize) {
        let mut peers = self.features.forwarding.peers.borrow_mut();
        if peers.len() < member_count {
            peers.resize_with(member_count, PeerForwarding::default);
        }
    }

    /// Back-pressure: returns once this shard's forwarded publishes are under their credit.
    pub(super) async fn wait_for_forward_credit(&self) {
        let forwarding = &self.features.forwarding;
        while forwarding.credit_used_bytes.get() >= CLUSTER_FORWARD_CREDIT_BYTES_MAX {
            forwarding.credit_returned.wait().await;
        }
    }

    /// Publishes `message` to `queues`, all led by member `node`: handed to the gateway (here,
    /// or over the mesh). `false`: refused at once, here (the publish is nacked, nothing was
    /// sent); `true`: its confirm, if any, comes back later.
    pub(super) fn forward_publish(
        &self,
        node: usize,
        queues: Vec<QueueId>,
        message: SharedMessage,
        confirm: Option<ConfirmRef>,
    ) -> bool {
        let credit_bytes = message_record_bytes(queues.len(), &message);
        if credit_bytes > CLUSTER_DATA_RECORD_BYTES_MAX {
            tracing::warn!(
                bytes = message.body_len(),
                "a message too large to forward to another node was refused"
            );
            return false;
        }
        let forwarding = &self.features.forwarding;
        forwarding
            .credit_used_bytes
            .set(forwarding.credit_used_bytes.get() + credit_bytes);
        let entry = ForwardEntry {
            node,
            queues,
            message,
            confirm,
            origin: self.id,
            credit_bytes,
        };
        let gateway = self.topology_owner();
        if gateway != self.id {
            self.mesh.send(gateway, MeshMsg::Forward(entry));
            return true;
        }
        match self.forward_to_peer(&entry) {
            Ok(()) => true,
            Err(()) => {
                self.return_forward_credit(entry.origin, entry.credit_bytes);
                false
            }
        }
    }

    /// The gateway: a forward from another shard of this node.
    pub(super) fn forward_from_mesh(&self, entry: ForwardEntry) {
        if self.forward_to_peer(&entry).is_err() {
            self.return_forward_credit(entry.origin, entry.credit_bytes);
            if let Some(confirm) = entry.confirm {
                self.route_confirm(confirm, false);
            }
        }
    }

    /// The gateway: queues the publish on the peer's link. `Err`: refused (no cluster, the link
    /// is down or full, too many waiting for their confirm).
    fn forward_to_peer(&self, entry: &ForwardEntry) -> Result<(), ()> {
        let node = self.cluster_node().ok_or(())?;
        let forwarding = &self.features.forwarding;
        let id = {
            let mut peers = forwarding.peers.borrow_mut();
            let peer = peers.get_mut(entry.node).ok_or(())?;
            if entry.confirm.is_some() && peer.awaiting.len() >= CLUSTER_FORWARD_PENDING_MAX {
                return Err(());
            }
            peer.next_id += 1;
            peer.next_id
        };
        let payload = encode(&Record::Publish {
            id,
            confirm: entry.confirm.is_some(),
            queues: entry.queues.clone(),
            message: entry.message.clone(),
        });
        let end = node.send_data(entry.node, payload).ok_or(())?;
        let mut peers = forwarding.peers.borrow_mut();
        let peer = peers.get_mut(entry.node).ok_or(())?;
        peer.credit
            .push_back((end, entry.origin, entry.credit_bytes));
        if let Some(confirm) = entry.confirm {
            peer.awaiting.insert(id, confirm);
            peer.order.push_back((id, forwarding.epoch.get()));
        }
        Ok(())
    }

    fn return_forward_credit(&self, origin: ShardId, bytes: usize) {
        if origin != self.id {
            self.mesh.send(origin, MeshMsg::ForwardCredit(bytes));
            return;
        }
        self.forward_credit_returned(bytes);
    }

    /// Credit handed back by the gateway.
    pub(super) fn forward_credit_returned(&self, bytes: usize) {
        let forwarding = &self.features.forwarding;
        let used = forwarding.credit_used_bytes.get();
        assert!(bytes <= used, "more forward credit returned than taken");
        forwarding.credit_used_bytes.set(used - bytes);
        forwarding.credit_returned.notify();
    }

    fn forward_data_gone(&self, peer: usize, total_bytes: u64) {
        let mut returned: Vec<(ShardId, usize)> = Vec::new();
        {
            let mut peers = self.features.forwarding.peers.borrow_mut();
            let Some(state) = peers.get_mut(peer) else {
                return;
            };
            while let Some(&(end, origin, bytes)) = state.credit.front() {
                if end > total_bytes {
                    break;
                }
                state.credit.pop_front();
                match returned.iter_mut().find(|(o, _)| *o == origin) {
                    Some((_, sum)) => *sum += bytes,
                    None => returned.push((origin, bytes)),
                }
            }
        }
        for (origin, bytes) in returned {
            self.return_forward_credit(origin, bytes);
        }
    }

    /// Everything forwarded on the link and not answered is nacked: it may or may not have
    /// arrived, and a confirm for it can no longer be told from one for a later publish.
    fn forward_link_down(self: &Rc<Self>, peer: usize) {
        self.remote_link_down(peer);
        let waiting: Vec<ConfirmRef> = {
            let mut peers = self.features.forwarding.peers.borrow_mut();
            let Some(state) = peers.get_mut(peer) else {
                return;
            };
            state.order.clear();
            state.awaiting.drain().map(|(_, confirm)| confirm).collect()
        };
        if !waiting.is_empty() {
            tracing::warn!(
                peer,
                nacked = waiting.len(),
                "cluster link down: forwarded publishes nacked"
            );
        }
        for confirm in waiting {
            self.route_confirm(confirm, false);
        }
    }

    /// Nacks forwarded publishes whose node did not answer within the timeout.
    fn forward_sweep(&self) {
        let forwarding = &self.features.forwarding;
        let epoch = forwarding.epoch.get() + 1;
        forwarding.epoch.set(epoch);
        let sweeps = (CLUSTER_FORWARD_CONFIRM_TIMEOUT.as_millis()
            / CLUSTER_FORWARD_SWEEP_INTERVAL.as_millis().max(1)) as u64;
        let mut expired = Vec::new();
        for state in forwarding.peers.borrow_mut().iter_mut() {
            while let Some(&(id, sent)) = state.order.front() {
                if sent + sweeps > epoch {
                    break;
                }
                state.order.pop_front();
                if let Some(confirm) = state.awaiting.remove(&id) {
                    expired.push(confirm);
                }
            }
        }
        if !expired.is_empty() {
            tracing::warn!(
                nacked = expired.len(),
                "forwarded publishes not answered in time: nacked"
            );
        }
        for confirm in expired {
            self.route_confirm(confirm, false);
        }
    }

    /// The gateway: a data frame from member `peer`.
    async fn forward_received(self: Rc<Self>, peer: usize, payload: Vec<u8>) {
        let record = match decode(payload) {
            Ok(record) => record,
            Err(error) => {
                tracing::warn!(peer, error, "a malformed forwarded record was dropped");
                return;
            }
        };
        match record {
            Record::Publish {
                id,
                confirm,
                queues,
                message,
            } => {
                // Our shards' back-pressure reaches the peer's socket: the link waits for this.
                self.mesh.wait_for_room().await;
                self.storage.wait_for_room().await;
                self.take_forwarded(peer, id, confirm, &queues, message);
            }
            Record::Confirm { id, ok } => self.forwarded_answer(peer, id, ok),
            other => self.remote_record(peer, other),
        }
    }

    /// A confirm from the queue's node for a publish we forwarded.
    fn forwarded_answer(&self, peer: usize, id: u64, ok: bool) {
        let confirm = {
            let mut peers = self.features.forwarding.peers.borrow_mut();
            peers
                .get_mut(peer)
                .and_then(|state| state.awaiting.remove(&id))
        };
        // Unknown: already nacked (link down, timed out); the nack stands.
        if let Some(confirm) = confirm {
            self.route_confirm(confirm, ok);
        }
    }

    /// The queue's node: a publish forwarded to queues we lead, put in each.
    fn take_forwarded(
        &self,
        peer: usize,
        id: u64,
        confirm: bool,
        queues: &[QueueId],
        message: SharedMessage,
    ) {
        if confirm
            && self.features.forwarding.received.borrow().len() >= CLUSTER_FORWARD_PENDING_MAX
        {
            self.answer_forwarded(peer, id, false);
            return;
        }
        let mut groups: Vec<(ShardId, QueueId)> = {
            let topology = self.topology.borrow();
            queues
                .iter()
                .filter_map(|&queue| topology.queue_by_id(queue).map(|m| (m.owner_shard, queue)))
                .collect()
        };
        // A queue this node does not lead (a replicated quorum queue whose leader moved while
        // the publish was on its way): the publish is refused, never acked unqueued.
        let not_here = groups.iter().any(|&(owner, _)| owner == ELSEWHERE);
        groups.retain(|&(owner, _)| owner != ELSEWHERE);
        groups.sort_unstable();
        let reference = confirm.then_some(ConfirmRef {
            channel: ChannelRef {
                conn: FORWARDED_CONN,
                channel: peer as u16,
            },
            seq: id,
        });
        let mut outcome = PublishOutcome::unrouted();
        outcome.refused = not_here;
        self.enqueue_groups(&groups, &message, reference, &mut outcome);
        if !confirm {
            return;
        }
        if outcome.remote_confirms == 0 {
            self.answer_forwarded(peer, id, !outcome.refused);
        } else {
            let previous = self
                .features
                .forwarding
                .received
                .borrow_mut()
                .insert((peer, id), (outcome.remote_confirms, outcome.refused));
            assert!(
                previous.is_none(),
                "a forwarded publish id is received once"
            );
        }
    }

    /// The queue's node: one shard's part of a forwarded publish is decided (`route_confirm`
    /// of a confirm addressed to `FORWARDED_CONN`).
    pub(super) fn forwarded_part_decided(&self, confirm: ConfirmRef, ok: bool) {
        let peer = usize::from(confirm.channel.channel);
        let key = (peer, confirm.seq);
        let done = {
            let mut received = self.features.forwarding.received.borrow_mut();
            let Some((remaining, refused)) = received.get_mut(&key) else {
                return;
            };
            *refused |= !ok;
            *remaining -= 1;
            let outcome = (*remaining == 0).then_some(!*refused);
            if outcome.is_some() {
                received.remove(&key);
            }
            outcome
        };
        if let Some(ok) = done {
            self.answer_forwarded(peer, confirm.seq, ok);
        }
    }

    fn answer_forwarded(&self, peer: usize, id: u64, ok: bool) {
        if let Some(node) = self.cluster_node() {
            // Refused when the link back is down: the publisher's node times it out (a nack).
            let _ = node.send_data(peer, encode(&Record::Confirm { id, ok }));
        }
    }
}
