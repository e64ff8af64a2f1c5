//! The mesh: one bounded SPSC channel per ordered pair of shards, carrying batches.
//!
//! Contract of a link `a -> b`: only shard `a` sends, only shard `b` receives, items are batches
//! (`Vec<MeshMsg>`) in FIFO order. Senders on shard `a` never touch the channel directly: they push
//! onto `a`'s outbox for `b` (a plain `Vec`, synchronous, so the order of pushes is the order on the
//! wire), and one flusher task per link moves the whole outbox as one batch. When the channel is
//! full the flusher waits and the outbox grows; past `MESH_OUTBOX_SOFT_MAX_MESSAGES` or
//! `MESH_OUTBOX_SOFT_MAX_BYTES` the connections of shard `a` stop reading from their sockets until it drains (`wait_for_room`), so a slow shard
//! slows its publishers through TCP instead of growing memory.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use glommio::channels::shared_channel::{
    self, ConnectedReceiver, ConnectedSender, SharedReceiver, SharedSender,
};

use glommio::{GlommioError, ResourceType};

use super::messages::MeshMsg;
use super::sync::Notify;
use crate::broker::{QueueId, ShardId};
use crate::latency_trace::{self, Stage};
use crate::limits::{
    MESH_BATCH_MAX_MESSAGES, MESH_LINK_CAPACITY_BATCHES, MESH_OUTBOX_SOFT_MAX_BYTES,
    MESH_OUTBOX_SOFT_MAX_MESSAGES,
};

pub type Batch = Vec<MeshMsg>;

/// The not-yet-connected ends of one shard's links, created before the executors start.
pub struct MeshEnds {
    /// `senders[b]` sends to shard b (None for ourselves).
    pub senders: Vec<Option<SharedSender<Batch>>>,
    /// `receivers[a]` receives from shard a (None for ourselves).
    pub receivers: Vec<Option<SharedReceiver<Batch>>>,
}

/// Builds the full mesh for `shard_count` shards: element `i` goes to shard `i`.
pub fn build(shard_count: usize) -> Vec<MeshEnds> {
    let mut ends: Vec<MeshEnds> = (0..shard_count)
        .map(|_| MeshEnds {
            senders: (0..shard_count).map(|_| None).collect(),
            receivers: (0..shard_count).map(|_| None).collect(),
        })
        .collect();
    for from in 0..shard_count {
        for to in 0..shard_count {
            if from != to {
                let (tx, rx) = shared_channel::new_bounded(MESH_LINK_CAPACITY_BATCHES);
                ends[from].senders[to] = Some(tx);
                ends[to].receivers[from] = Some(rx);
            }
        }
    }
    ends
}

/// What an entry holds in an outbox: its envelope, plus the message allocation of a publish or
/// a delivery (the bulk of the traffic; shared with the queues, so counted once per outbox it
/// waits in). Requests and replies count as their envelope: what they carry is bounded where
/// they are made (adoption batches by `ADOPT_BATCH_BYTES_MAX`, a get by the message size).
fn message_bytes(msg: &MeshMsg) -> usize {
    let carried = match msg {
        MeshMsg::Publish(entry) => {
            entry.message.allocated_bytes() + entry.queues.len() * std::mem::size_of::<QueueId>()
        }
        MeshMsg::Deliver(entry) => entry.message.allocated_bytes(),
        MeshMsg::Forward(entry) => entry.credit_bytes,
        _ => 0,
    };
    std::mem::size_of::<MeshMsg>() + carried
}

/// `--trace-latency`: publishes and deliveries carry a body that may hold a stamp.
pub(super) fn trace_message(stage: Stage, msg: &MeshMsg) {
    match msg {
        MeshMsg::Publish(entry) => latency_trace::record(stage, entry.message.body()),
        MeshMsg::Deliver(entry) => latency_trace::record(stage, entry.message.body()),
        _ => {}
    }
}

/// One shard's side of the mesh: an outbox per peer plus the wake-ups of its flusher tasks.
pub struct Mesh {
    me: ShardId,
    outboxes: Vec<RefCell<Batch>>,
    /// What each outbox holds, by [`message_bytes`].
    outbox_bytes: Vec<Cell<usize>>,
    outbox_ready: Vec<Notify>,
    drained: Notify,
    /// Per peer: batches that found the link full and had to wait for room (the operator's
    /// sign of a slow peer shard).
    stalls: Vec<Cell<u64>>,
}

/// One link's state for the operator: what waits in its outbox and how often it stalled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub peer: ShardId,
    pub outbox_messages: u64,
    pub outbox_bytes: u64,
    pub stalls: u64,
}

impl Mesh {
    pub fn new(me: ShardId, shard_count: usize) -> Mesh {
        Mesh {
            me,
            outboxes: (0..shard_count).map(|_| RefCell::new(Vec::new())).collect(),
            outbox_bytes: (0..shard_count).map(|_| Cell::new(0)).collect(),
            outbox_ready: (0..shard_count).map(|_| Notify::default()).collect(),
            drained: Notify::default(),
            stalls: (0..shard_count).map(|_| Cell::new(0)).collect(),
        }
    }

    /// Every link to a peer, by peer.
    pub fn link_stats(&self) -> Vec<LinkStats> {
        (0..self.outboxes.len())
            .filter(|&peer| peer != self.me)
            .map(|peer| LinkStats {
                peer,
                outbox_messages: self.outboxes[peer].borrow().len() as u64,
                outbox_bytes: self.outbox_bytes[peer].get() as u64,
                stalls: self.stalls[peer].get(),
            })
            .collect()
    }

    /// Queues `msg` for shard `to`. Synchronous: the order of calls is the order of delivery.
    pub fn send(&self, to: ShardId, msg: MeshMsg) {
        debug_assert_ne!(to, self.me, "a shard does not send to itself over the mesh");
        let Some(outbox) = self.outboxes.get(to) else {
            return;
        };
        if latency_trace::is_enabled() {
            trace_message(Stage::MeshSend, &msg);
        }
        let bytes = &self.outbox_bytes[to];
        bytes.set(bytes.get() + message_bytes(&msg));
        let mut outbox = outbox.borrow_mut();
        outbox.push(msg);
        if outbox.len() == 1 {
            self.outbox_ready[to].notify();
        }
    }

    /// An outbox is over its soft bound in messages or in bytes.
    pub fn is_congested(&self) -> bool {
        self.outboxes
            .iter()
            .zip(&self.outbox_bytes)
            .any(|(outbox, bytes)| {
                outbox.borrow().len() >= MESH_OUTBOX_SOFT_MAX_MESSAGES
                    || bytes.get() >= MESH_OUTBOX_SOFT_MAX_BYTES
            })
    }

    /// Waits until no outbox is over its soft bound.
    pub async fn wait_for_room(&self) {
        while self.is_congested() {
            self.drained.wait().await;
        }
    }

    /// Waits until every outbox has been handed to its link.
    pub async fn wait_until_empty(&self) {
        while self.outboxes.iter().any(|o| !o.borrow().is_empty()) {
            self.drained.wait().await;
        }
    }

    /// The flusher of link `me -> to`: runs until the channel closes.
    pub async fn run_flusher(self: Rc<Self>, to: ShardId, sender: ConnectedSender<Batch>) {
        loop {
            let ready = self.outbox_ready[to].wait();
            let batch = self.take_batch(to);
            if batch.is_empty() {
                ready.await;
                continue;
            }
            if latency_trace::is_enabled() {
                batch
                    .iter()
                    .for_each(|msg| trace_message(Stage::MeshFlush, msg));
            }
            // try_send first, so a full link is seen (and counted) before the flusher waits.
            match sender.try_send(batch) {
                Ok(()) => {}
                Err(GlommioError::WouldBlock(ResourceType::Channel(batch))) => {
                    self.stalls[to].set(self.stalls[to].get() + 1);
                    if sender.send(batch).await.is_err() {
                        return; // the peer is gone: shutdown
                    }
                }
                Err(_) => return, // the peer is gone: shutdown
            }
            self.drained.notify();
        }
    }

    fn take_batch(&self, to: ShardId) -> Batch {
        let mut outbox = self.outboxes[to].borrow_mut();
        let bytes = &self.outbox_bytes[to];
        if outbox.len() <= MESH_BATCH_MAX_MESSAGES {
            bytes.set(0);
            std::mem::take(&mut *outbox)
        } else {
            let batch: Batch = outbox.drain(..MESH_BATCH_MAX_MESSAGES).collect();
            let taken: usize = batch.iter().map(message_bytes).sum();
            bytes.set(bytes.get().saturating_sub(taken));
            batch
        }
    }

    /// Connects every link end of this shard. All ends are connected concurrently: a glommio
    /// channel end's `connect` waits for its peer, so connecting one by one would deadlock.
    pub async fn connect(
        ends: MeshEnds,
    ) -> (
        Vec<(ShardId, ConnectedSender<Batch>)>,
        Vec<(ShardId, ConnectedReceiver<Batch>)>,
    ) {
        let sender_tasks: Vec<_> = ends
            .senders
            .into_iter()
            .enumerate()
            .filter_map(|(peer, s)| s.map(|s| (peer, glommio::spawn_local(s.connect()))))
            .collect();
        let receiver_tasks: Vec<_> = ends
            .receivers
            .into_iter()
            .enumerate()
            .filter_map(|(peer, r)| r.map(|r| (peer, glommio::spawn_local(r.connect()))))
            .collect();
        let mut senders = Vec::new();
        for (peer, task) in sender_tasks {
            senders.push((peer, task.await));
        }
        let mut receivers = Vec::new();
        for (peer, task) in receiver_tasks {
            receivers.push((peer, task.await));
        }
        (senders, receivers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::queue::{Message, Route};
    use crate::limits::{MESH_OUTBOX_SOFT_MAX_BYTES, MESSAGE_SIZE_DEFAULT_BYTES};
    use crate::protocol::BasicProperties;
    use crate::shard::messages::PublishEntry;

    fn publish_of(body_bytes: usize) -> MeshMsg {
        let body = vec![7u8; body_bytes];
        let route = Route {
            exchange: "",
            routing_key: "q",
        };
        MeshMsg::Publish(PublishEntry {
            queues: vec![1],
            message: Message::new(route, &BasicProperties::default(), &body),
            confirm: None,
        })
    }

    #[test]
    fn an_outbox_is_congested_by_bytes_well_below_its_message_count() {
        let mesh = Mesh::new(0, 2);
        let body_bytes = 1024 * 1024;
        let entry_bytes = message_bytes(&publish_of(body_bytes));
        // The last of these crosses the bound; the ones before it stay under it.
        let messages = MESH_OUTBOX_SOFT_MAX_BYTES.div_ceil(entry_bytes);
        assert!(messages < MESH_OUTBOX_SOFT_MAX_MESSAGES);
        assert!((body_bytes as u64) < MESSAGE_SIZE_DEFAULT_BYTES);
        for _ in 0..messages - 1 {
            mesh.send(1, publish_of(body_bytes));
        }
        assert!(!mesh.is_congested(), "under the byte bound");
        mesh.send(1, publish_of(body_bytes));
        assert!(mesh.is_congested(), "past the byte bound");
        // Handing the outbox to the link accounts the bytes back.
        let taken = mesh.take_batch(1);
        assert_eq!(taken.len(), messages);
        assert!(!mesh.is_congested());
        assert_eq!(mesh.outbox_bytes[1].get(), 0);
    }

    #[test]
    fn a_batch_cut_off_a_long_outbox_takes_its_bytes_along() {
        let mesh = Mesh::new(1, 2);
        for _ in 0..MESH_BATCH_MAX_MESSAGES + 10 {
            mesh.send(0, publish_of(100));
        }
        let before = mesh.outbox_bytes[0].get();
        let batch = mesh.take_batch(0);
        assert_eq!(batch.len(), MESH_BATCH_MAX_MESSAGES);
        let left = mesh.outbox_bytes[0].get();
        assert_eq!(
            before - left,
            batch.iter().map(message_bytes).sum::<usize>()
        );
        assert_eq!(left, 10 * message_bytes(&publish_of(100)));
    }
}
