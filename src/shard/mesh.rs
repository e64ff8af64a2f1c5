//! The mesh: one bounded SPSC channel per ordered pair of shards, carrying batches.
//!
//! Contract of a link `a -> b`: only shard `a` sends, only shard `b` receives, items are batches
//! (`Vec<MeshMsg>`) in FIFO order. Senders on shard `a` never touch the channel directly: they push
//! onto `a`'s outbox for `b` (a plain `Vec`, synchronous, so the order of pushes is the order on the
//! wire), and one flusher task per link moves the whole outbox as one batch. When the channel is
//! full the flusher waits and the outbox grows; past `MESH_OUTBOX_SOFT_MAX_MESSAGES` the connections
//! of shard `a` stop reading from their sockets until it drains (`wait_for_room`), so a slow shard
//! slows its publishers through TCP instead of growing memory.

use std::cell::RefCell;
use std::rc::Rc;

use glommio::channels::shared_channel::{
    self, ConnectedReceiver, ConnectedSender, SharedReceiver, SharedSender,
};

use super::messages::MeshMsg;
use super::sync::Notify;
use crate::broker::ShardId;
use crate::limits::{
    MESH_BATCH_MAX_MESSAGES, MESH_LINK_CAPACITY_BATCHES, MESH_OUTBOX_SOFT_MAX_MESSAGES,
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

/// One shard's side of the mesh: an outbox per peer plus the wake-ups of its flusher tasks.
pub struct Mesh {
    me: ShardId,
    outboxes: Vec<RefCell<Batch>>,
    outbox_ready: Vec<Notify>,
    drained: Notify,
}

impl Mesh {
    pub fn new(me: ShardId, shard_count: usize) -> Mesh {
        Mesh {
            me,
            outboxes: (0..shard_count).map(|_| RefCell::new(Vec::new())).collect(),
            outbox_ready: (0..shard_count).map(|_| Notify::default()).collect(),
            drained: Notify::default(),
        }
    }

    /// Queues `msg` for shard `to`. Synchronous: the order of calls is the order of delivery.
    pub fn send(&self, to: ShardId, msg: MeshMsg) {
        debug_assert_ne!(to, self.me, "a shard does not send to itself over the mesh");
        let Some(outbox) = self.outboxes.get(to) else {
            return;
        };
        let mut outbox = outbox.borrow_mut();
        outbox.push(msg);
        if outbox.len() == 1 {
            self.outbox_ready[to].notify();
        }
    }

    pub fn is_congested(&self) -> bool {
        self.outboxes
            .iter()
            .any(|o| o.borrow().len() >= MESH_OUTBOX_SOFT_MAX_MESSAGES)
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
            if sender.send(batch).await.is_err() {
                return; // the peer is gone: shutdown
            }
            self.drained.notify();
        }
    }

    fn take_batch(&self, to: ShardId) -> Batch {
        let mut outbox = self.outboxes[to].borrow_mut();
        if outbox.len() <= MESH_BATCH_MAX_MESSAGES {
            std::mem::take(&mut *outbox)
        } else {
            outbox.drain(..MESH_BATCH_MAX_MESSAGES).collect()
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
