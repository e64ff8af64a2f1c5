//! Start-up on a data directory written with another shard count.
//!
//! The rule: a queue's messages live in the log of the shard that owns it (the topology says
//! which). Two things can break it when the shard count changes:
//! - A queue whose recorded owner is a shard this run does not have. The topology owner moves it,
//!   before anything listens, to `adopter_of(owner)` and logs the move
//!   (`TopologyChange::MoveQueue`), so every later start (with whatever shard count) agrees on
//!   the owner; a queue never has two owners, since an owner that exists is never changed.
//! - A log of such a shard, `s<k>-*.wal` with `k >= shard_count` (an orphan log). Shard
//!   `adopter_of(k)` opens it and hands each unsettled enqueue to its queue's owner, which
//!   re-appends it to its own log (same queue id and message id, a new LSN of that log) and
//!   restores it; once those copies are durable the originals are settled in the orphan log,
//!   and once that is durable the orphan log is deleted. From then on the owner's log alone
//!   holds the messages, so acks settle them where their enqueue is.
//!
//! A crash part-way leaves copies and originals both live. The next start hands the originals
//! over again and the owner skips every key its log already holds (`Wal::holds_live`): nothing
//! is lost or doubled. If the orphan shard exists again by then (e.g. 2 -> 1, crash, 2), its
//! own replay finds records of queues another shard owns (foreign records) and hands them over
//! the same way. No client can ack a copy before the original is settled durably: everything
//! here happens before any shard listens (`wait_all_recovered`), and a failure refuses the
//! start.
//!
//! Held delayed messages of an orphan log go to the adopter's own store under a new arrival
//! number (those numbers are per shard), so a crash between the copy and the settle can hold
//! one twice (a duplicate, never a loss).

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroU64;
use std::path::Path;
use std::rc::Rc;

use super::calls::ShardCall;
use super::delayed::DELAYED_LOG_QUEUE;
use super::messages::Adopt;
use super::storage::{decode_stored, is_persistent, wal_options};
use super::Shard;
use crate::broker::queue::{MessageId, SharedMessage};
use crate::broker::{QueueId, ShardId, TopologyChange};
use crate::limits::{
    ADOPT_BATCH_BYTES_MAX, ADOPT_BATCH_MESSAGES_MAX, WAL_BATCH_SOFT_BYTES, WAL_SEGMENT_SIZE_BYTES,
    WAL_WRITE_BUFFER_BYTES,
};
use crate::storage::{self, RecoveredEnqueue, SettleRecord, Wal};

/// The live shard that takes over the queues and the log of shard `shard` (which may be live
/// itself: then it is its own adopter).
pub fn adopter_of(shard: ShardId, shard_count: usize) -> ShardId {
    debug_assert!(shard_count > 0);
    shard % shard_count
}

/// One unsettled enqueue on its way to its queue's owner.
pub struct AdoptedMessage {
    pub queue: QueueId,
    pub message_id: MessageId,
    pub message: SharedMessage,
    pub enqueued_ms: u64,
}

/// Handed-over messages per destination shard, with their body bytes (the batch bound).
#[derive(Default)]
struct Outgoing {
    messages: Vec<AdoptedMessage>,
    bytes: usize,
}

impl Outgoing {
    fn is_full(&self) -> bool {
        self.messages.len() >= ADOPT_BATCH_MESSAGES_MAX || self.bytes >= ADOPT_BATCH_BYTES_MAX
    }
}

impl Shard {
    /// The topology owner, after replaying the topology: queues owned by shards this run does not
    /// have move to live ones, durably, before the topology goes to the other shards. The moves
    /// are added to `changes`.
    pub(super) async fn rehome_queues(
        &self,
        changes: &mut Vec<TopologyChange>,
    ) -> Result<(), String> {
        let moves: Vec<TopologyChange> = self
            .topology
            .borrow()
            .queues_owned_from(self.shard_count)
            .into_iter()
            .filter(|&(_, owner)| owner != super::ELSEWHERE)
            .map(|(queue, owner)| TopologyChange::MoveQueue {
                queue,
                owner_shard: adopter_of(owner, self.shard_count),
            })
            .collect();
        for change in &moves {
            if self.storage.topology_congested() {
                self.storage.sync_topology().await.map_err(log_error)?;
            }
            self.storage.log_topology(change).map_err(log_error)?;
            self.apply_changes(std::slice::from_ref(change));
            if let TopologyChange::MoveQueue { queue, owner_shard } = change {
                tracing::info!(
                    queue,
                    owner_shard,
                    shards = self.shard_count,
                    "queue moved to a live shard"
                );
            }
        }
        self.storage.sync_topology().await.map_err(log_error)?;
        changes.extend(moves);
        Ok(())
    }

    /// The owner of `queue` when it is a queue of the topology owned by another shard.
    pub(super) fn foreign_owner(&self, queue: QueueId) -> Option<ShardId> {
        self.topology
            .borrow()
            .queue_by_id(queue)
            .map(|meta| meta.owner_shard)
            .filter(|&owner| owner != self.id)
    }

    /// Opens and hands over every orphan log this shard adopts, then deletes it.
    pub(super) async fn adopt_orphan_logs(self: &Rc<Self>, data_dir: &Path) -> Result<(), String> {
        let dir = data_dir.join("messages");
        let shards = storage::log_shards(&dir).map_err(|e| e.to_string())?;
        let orphans = shards.into_iter().filter(|&shard| {
            shard >= self.shard_count && adopter_of(shard, self.shard_count) == self.id
        });
        for orphan in orphans {
            let mut options = wal_options(
                &dir,
                orphan,
                WAL_SEGMENT_SIZE_BYTES,
                WAL_WRITE_BUFFER_BYTES,
                WAL_BATCH_SOFT_BYTES,
            );
            // As for our own log: bodies past the budget are read one batch at a time.
            options.recovery_body_budget_bytes = self.features.pager.queue_memory_bytes();
            let context = |e: storage::WalError| format!("orphan log of shard {orphan}: {e}");
            let (wal, recovered) = Wal::open(options).await.map_err(context)?;
            let messages = recovered.enqueues.len();
            self.hand_over(&wal, recovered.enqueues).await?;
            wal.close().await.map_err(context)?;
            storage::remove_log(&dir, orphan).map_err(context)?;
            tracing::info!(
                shard = self.id,
                orphan,
                messages,
                "log of a shard this run does not have: adopted and removed"
            );
        }
        Ok(())
    }

    /// Hands records of our own log whose queues other shards own to those owners.
    pub(super) async fn hand_over_foreign(
        self: &Rc<Self>,
        foreign: Vec<RecoveredEnqueue>,
    ) -> Result<(), String> {
        if foreign.is_empty() {
            return Ok(());
        }
        let count = foreign.len();
        let Some(wal) = self.storage.message_log() else {
            return Err("message log closed during recovery".to_string());
        };
        self.hand_over(wal, foreign).await?;
        tracing::info!(
            shard = self.id,
            messages = count,
            "records of queues other shards own: handed over"
        );
        Ok(())
    }

    /// Sends each enqueue of `source` to its queue's owner and settles it in `source` once the
    /// owner's copy is durable; enqueues of queues that are gone (or unreadable, or transient)
    /// are settled. Returns once every settle is durable.
    async fn hand_over(
        self: &Rc<Self>,
        source: &Wal,
        enqueues: Vec<RecoveredEnqueue>,
    ) -> Result<(), String> {
        let mut outgoing: BTreeMap<ShardId, Outgoing> = BTreeMap::new();
        for entry in enqueues {
            let key = (entry.record.queue, entry.record.message);
            let owner = match key.0 {
                DELAYED_LOG_QUEUE => Some(self.id),
                queue => self
                    .topology
                    .borrow()
                    .queue_by_id(queue)
                    .map(|m| m.owner_shard),
            };
            let keeps_transient = self.logs_every_message(key.0);
            let adopted = match owner {
                Some(_) => read_adopted(source, entry, keeps_transient).await,
                None => None,
            };
            let (Some(owner), Some(adopted)) = (owner, adopted) else {
                settle(source, key.0, &[key.1]).await?;
                continue;
            };
            let batch = outgoing.entry(owner).or_default();
            batch.bytes += adopted.message.body().len();
            batch.messages.push(adopted);
            if batch.is_full() {
                let full = std::mem::take(batch);
                self.send_adopted(source, owner, full).await?;
            }
        }
        for (owner, batch) in outgoing {
            self.send_adopted(source, owner, batch).await?;
        }
        source
            .wait_durable(source.stats().last_appended_lsn)
            .await
            .map_err(|e| format!("settling handed-over messages: {e}"))
    }

    /// One batch to `owner`; once it answered (its copies durable), the originals are settled.
    async fn send_adopted(
        self: &Rc<Self>,
        source: &Wal,
        owner: ShardId,
        batch: Outgoing,
    ) -> Result<(), String> {
        if batch.messages.is_empty() {
            return Ok(());
        }
        let mut settled: BTreeMap<QueueId, Vec<MessageId>> = BTreeMap::new();
        for message in &batch.messages {
            settled
                .entry(message.queue)
                .or_default()
                .push(message.message_id);
        }
        let answer = if owner == self.id {
            self.adopt_messages(batch.messages).await
        } else {
            // No RPC timeout: the owner answers once its own log is replayed, however long.
            let request = Adopt {
                messages: batch.messages,
            };
            match self.send_request(owner, request).await {
                Some(answer) => answer,
                None => Err(format!("shard {owner} did not answer")),
            }
        };
        answer.map_err(|e| format!("handing messages over to shard {owner}: {e}"))?;
        for (queue, ids) in settled {
            settle(source, queue, &ids).await?;
        }
        Ok(())
    }

    /// The owner's side: copies into our log (keys it already holds are copies from an earlier,
    /// interrupted start) and into the queues; returns once the copies are durable.
    pub(super) async fn adopt_messages(&self, messages: Vec<AdoptedMessage>) -> Result<(), String> {
        while !self.lifecycle.messages_ready.get() {
            self.lifecycle.messages_recovered.wait().await;
        }
        let mut queues = BTreeSet::new();
        for adopted in messages {
            if self.storage.log_congested() {
                self.storage.sync_messages().await.map_err(log_error)?;
            }
            if adopted.queue == DELAYED_LOG_QUEUE {
                self.adopt_delayed(adopted.message, adopted.enqueued_ms)
                    .map_err(log_error)?;
                continue;
            }
            let queue = adopted.queue;
            if self.adopt_message(adopted)? {
                queues.insert(queue);
            }
        }
        self.storage.sync_messages().await.map_err(log_error)?;
        // As after replaying our own log: overdue messages go, the rest keep the memory budget.
        for queue in queues {
            self.expire_queue(queue);
            self.page_out_queue(queue);
            self.want_load(queue);
        }
        Ok(())
    }

    /// Appends one handed-over message to our log and restores it. False when it stays out:
    /// its queue is not a durable one of ours, or our log holds that key already.
    fn adopt_message(&self, adopted: AdoptedMessage) -> Result<bool, String> {
        let AdoptedMessage {
            queue,
            message_id,
            message,
            enqueued_ms,
        } = adopted;
        if !self.hosts_durable_queue(queue) {
            return Ok(false);
        }
        let copied = self
            .storage
            .message_log()
            .is_some_and(|wal| wal.holds_live(queue, message_id));
        if copied {
            return Ok(false);
        }
        let lsn = self
            .storage
            .log_enqueue(queue, message_id, &message, enqueued_ms)
            .map_err(log_error)?;
        let lsn = NonZeroU64::new(lsn).ok_or("the log returned lsn 0")?;
        Ok(self.restore_message(queue, message_id, message, lsn, enqueued_ms, None))
    }
}

impl ShardCall for Adopt {
    /// `Ok` once the messages are durable in our log.
    type Reply = Result<(), String>;
    async fn handle(self, shard: &Rc<Shard>, _from: ShardId) -> Self::Reply {
        shard.adopt_messages(self.messages).await
    }
}

/// The message of a recovered enqueue, its body read back when recovery left it on disk.
/// None when it cannot come back (unreadable, or transient: only paged, never promised;
/// `keeps_transient`: a quorum queue's, logged at publish, comes back).
async fn read_adopted(
    source: &Wal,
    entry: RecoveredEnqueue,
    keeps_transient: bool,
) -> Option<AdoptedMessage> {
    let (queue, message_id) = (entry.record.queue, entry.record.message);
    let record = if entry.body_loaded {
        entry.record
    } else {
        match source.read_live(queue, message_id).await {
            Ok(record) => record,
            Err(error) => {
                tracing::error!(queue, message = message_id, %error, "message unreadable; dropped");
                return None;
            }
        }
    };
    let (enqueued_ms, message) = match decode_stored(record) {
        Ok(decoded) => decoded,
        Err(error) => {
            tracing::error!(queue, message = message_id, %error, "message dropped");
            return None;
        }
    };
    if !is_persistent(&message) && !keeps_transient {
        return None;
    }
    Some(AdoptedMessage {
        queue,
        message_id,
        message,
        enqueued_ms,
    })
}

/// Settles `ids` of `queue` in `source`, waiting for a flush when its batch is congested.
async fn settle(source: &Wal, queue: QueueId, ids: &[MessageId]) -> Result<(), String> {
    if source.congested() {
        source
            .wait_durable(source.stats().last_appended_lsn)
            .await
            .map_err(log_error)?;
    }
    source
        .append_settle(&SettleRecord {
            queue,
            messages: ids,
        })
        .map(|_| ())
        .map_err(log_error)
}

fn log_error(error: storage::WalError) -> String {
    error.to_string()
}
