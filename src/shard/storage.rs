//! A shard's durable storage: its message log (enqueues and settlements of persistent messages in
//! durable queues it owns) and, on the topology owner, the topology log (durable exchanges,
//! queues, bindings, users, vhosts). Both are `storage::Wal`s; this module decides what goes in
//! them and releases publisher confirms only once their records are durable.
//!
//! Confirms wait in `pending` in LSN order; one task per shard (`run_confirmer`) waits for the
//! newest pending LSN and then releases everything up to it. With group commit that is one flush
//! per batch, however many publishes it holds.

use std::cell::{OnceCell, RefCell};
use std::collections::VecDeque;
use std::path::Path;
use std::rc::Rc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::messages::ConfirmRef;
use super::sync::Notify;
use super::Shard;
use crate::broker::persist::{decode_change, encode_change};
use crate::broker::queue::{Message, MessageId, Route};
use crate::broker::{QueueId, TopologyChange};
use crate::failure_log::{self, FailureEpisode};
use crate::limits::{
    META_SEGMENT_SIZE_BYTES, META_WRITE_BUFFER_BYTES, WAL_BATCH_SOFT_BYTES, WAL_PART_BODY_BYTES,
    WAL_SEGMENT_SIZE_BYTES, WAL_WRITE_BUFFER_BYTES,
};
use crate::metrics::Histogram;
use crate::protocol::BasicProperties;
use crate::storage::{
    EnqueueBody, EnqueueRecord, Lsn, OwnedEnqueue, RecoveredEnqueue, SettleRecord, Wal, WalError,
    WalOptions,
};

#[derive(Default)]
pub struct ShardStorage {
    messages: OnceCell<Wal>,
    topology: OnceCell<Wal>,
    /// Confirms waiting for their record to be durable, in LSN order.
    pending: RefCell<VecDeque<(Lsn, ConfirmRef)>>,
    pending_added: Notify,
    /// The stored properties blob of the enqueue being written, reused across enqueues.
    enqueue_scratch: RefCell<Vec<u8>>,
    /// Appends the log refused (its batch full while the disk fails), logged per episode.
    append_episode: RefCell<FailureEpisode>,
    /// `--trace-latency`: sampled messages logged here whose confirms wait, by LSN.
    traced: RefCell<crate::latency_trace::Waiting>,
}

/// What became of a message on this shard's queues.
#[derive(Default)]
pub struct EnqueueOutcome {
    /// Proposals to replicated quorum queues' groups (`quorum_group`): its confirm waits for
    /// each to commit. Empty (no allocation) for every other queue.
    pub quorum_seqs: Vec<u64>,
    /// The newest WAL record written for it: its confirm waits for this to be durable.
    pub lsn: Option<Lsn>,
    /// A queue could not take it (its record could not be written): the publisher gets a nack.
    pub refused: bool,
}

pub fn is_persistent(message: &Message) -> bool {
    message.is_persistent()
}

impl Shard {
    /// Queue `queue` logs its transient messages too (a quorum queue): they survive a
    /// restart. Start-up and resharding only: a topology lookup.
    pub(super) fn logs_every_message(&self, queue: QueueId) -> bool {
        self.topology
            .borrow()
            .queue_by_id(queue)
            .is_some_and(|meta| crate::broker::quorum::is_quorum(&meta.arguments))
    }
}

/// The log keeps a handle to a large body while it writes it in parts: the message's one
/// allocation, shared, never copied for it.
struct MessageBody(Message);

impl EnqueueBody for MessageBody {
    fn body(&self) -> &[u8] {
        self.0.body()
    }
}

impl ShardStorage {
    fn messages(&self) -> Option<&Wal> {
        self.messages.get()
    }

    pub(super) fn message_log(&self) -> Option<&Wal> {
        self.messages.get()
    }

    /// The topology log's batch is over its soft bound: wait for a flush before appending more.
    pub fn topology_congested(&self) -> bool {
        self.topology.get().is_some_and(Wal::congested)
    }

    /// Waits until everything appended to the topology log so far is durable.
    pub async fn sync_topology(&self) -> Result<(), WalError> {
        match self.topology.get() {
            Some(wal) => wal.wait_durable(wal.stats().last_appended_lsn).await,
            None => Ok(()),
        }
    }

    /// Writes the enqueue record of `message` for `queue` (not yet durable). The stored
    /// properties blob starts with the enqueue time (wall-clock ms, big-endian u64), so a TTL
    /// keeps counting from the original publish across a restart. A large body is written in
    /// parts over the coming flushes; the LSN returned is durable once all of it is.
    pub fn log_enqueue(
        &self,
        queue: QueueId,
        message_id: MessageId,
        message: &Message,
        enqueued_ms: u64,
    ) -> Result<Lsn, WalError> {
        let Some(wal) = self.messages() else {
            return Err(WalError::Closed);
        };
        // The blob is the enqueue time, then the properties as received.
        let mut properties = self.enqueue_scratch.borrow_mut();
        properties.clear();
        properties.extend_from_slice(&enqueued_ms.to_be_bytes());
        properties.extend_from_slice(message.raw_properties());
        let record = EnqueueRecord {
            queue,
            message: message_id,
            exchange: message.exchange(),
            routing_key: message.routing_key(),
            properties: &properties,
            body: &[],
        };
        let body = Rc::new(MessageBody(message.clone()));
        wal.append_enqueue_body(&record, body)
    }

    /// Reads a paged message's body back from the log (the current copy of its enqueue record).
    pub async fn read_message(
        &self,
        queue: QueueId,
        message_id: MessageId,
    ) -> Result<Message, PageInError> {
        let Some(wal) = self.messages() else {
            return Err(PageInError::Log(WalError::Closed));
        };
        let record = wal
            .read_live(queue, message_id)
            .await
            .map_err(PageInError::Log)?;
        decode_stored(record)
            .map(|(_, message)| message)
            .map_err(PageInError::Stored)
    }

    /// Writes a settle record for messages that left `queue` for good. Not waited for: a settle
    /// lost in a crash only means the message is delivered again (at-least-once).
    pub fn log_settle(&self, queue: QueueId, messages: &[MessageId]) {
        if messages.is_empty() {
            return;
        }
        if let Some(wal) = self.messages() {
            match wal.append_settle(&SettleRecord { queue, messages }) {
                Ok(_) => self.append_succeeded(),
                Err(error) => self.append_failed(
                    "message log append (settlements may be redelivered after a restart)",
                    &error,
                ),
            }
        }
    }

    /// `--trace-latency`: the enqueue at `lsn` is of a sampled message stamped `stamp`; the log
    /// records its flush stages and the confirmer its release.
    pub fn trace_logged(&self, lsn: Lsn, stamp: u64) {
        crate::latency_trace::record_stamp(crate::latency_trace::Stage::LogAppended, stamp);
        if let Some(wal) = self.messages() {
            wal.trace(lsn, stamp);
        }
        self.traced.borrow_mut().push(lsn, stamp);
    }

    /// Releases `confirm` once `lsn` is durable.
    /// `confirm_when_durable` for an LSN that may be older than confirms queued since (a quorum
    /// publish whose group committed after later publishes were logged): it waits for the
    /// newest queued one too, which is later than needed and never earlier.
    pub fn confirm_when_durable_late(&self, lsn: Lsn, confirm: ConfirmRef) {
        let newest = self
            .pending
            .borrow()
            .back()
            .map_or(lsn, |&(newest, _)| newest);
        self.confirm_when_durable(lsn.max(newest), confirm);
    }

    pub fn confirm_when_durable(&self, lsn: Lsn, confirm: ConfirmRef) {
        let mut pending = self.pending.borrow_mut();
        // The confirmer releases the front while it is durable: an older LSN behind a newer
        // one would be confirmed before its record is on disk, or never.
        assert!(
            pending.back().is_none_or(|&(newest, _)| newest <= lsn),
            "confirm LSNs go backwards: {lsn} after {:?}",
            pending.back().map(|(newest, _)| newest)
        );
        pending.push_back((lsn, confirm));
        drop(pending);
        self.pending_added.notify();
    }

    /// The message log's batch buffer is over half full: publishers on this shard should wait
    /// for a flush (`sync_messages`) before adding more, rather than get nacks when it is full.
    /// The message log's (batch bytes, fdatasync ns) histograms; None without a log.
    /// An append the log refused: one warning per episode, not per publish or settle.
    pub fn append_failed(&self, what: &str, error: &WalError) {
        let note = self.append_episode.borrow_mut().failed(Instant::now());
        failure_log::warn(note, what, error);
    }

    /// An append the log took: ends an episode of refusals (one cheap test otherwise).
    pub fn append_succeeded(&self) {
        let mut episode = self.append_episode.borrow_mut();
        if episode.is_failing() {
            if let Some(recovery) = episode.succeeded(Instant::now()) {
                failure_log::recovered(recovery, "message log append");
            }
        }
    }

    /// The message log's counters (errors, retries, whether it is failing now).
    pub fn log_stats(&self) -> Option<crate::storage::WalStats> {
        self.messages().map(Wal::stats)
    }

    pub fn log_histograms(&self) -> Option<(Histogram, Histogram)> {
        self.messages().map(Wal::histograms)
    }

    pub fn log_congested(&self) -> bool {
        self.messages().is_some_and(Wal::congested)
    }

    /// Back-pressure for messages arriving from other shards: while the log batch is congested,
    /// stop taking them off the mesh link until a flush empties it. The link fills, then the
    /// sending shard's outbox, and its publishers pause (`Mesh::wait_for_room`) instead of
    /// getting nacks for a full batch here.
    /// Sessions on this shard wait here too before reading more publishes.
    pub async fn wait_for_room(&self) {
        while self.log_congested() {
            if self.sync_messages().await.is_err() {
                break; // the log failed: appends will be refused and nacked, as they must
            }
            // A chain queued behind the one just made durable is fed by the flusher task:
            // let it run even when the sync above was already satisfied.
            futures_lite::future::yield_now().await;
        }
    }

    /// Waits until everything appended to the message log so far is durable.
    pub async fn sync_messages(&self) -> Result<(), WalError> {
        match self.messages() {
            Some(wal) => wal.wait_durable(wal.stats().last_appended_lsn).await,
            None => Ok(()),
        }
    }

    /// Shutdown: makes everything appended durable, settle records included (they are not
    /// waited for while running), so a clean stop never brings acked messages back.
    pub async fn flush_all(&self) {
        if let Err(error) = self.sync_messages().await {
            tracing::error!(%error, "message log flush at shutdown failed");
        }
        if let Some(wal) = self.topology.get() {
            if let Err(error) = wal.wait_durable(wal.stats().last_appended_lsn).await {
                tracing::error!(%error, "topology log flush at shutdown failed");
            }
        }
    }

    /// Appends a durable topology change (the topology owner). Returns its LSN.
    pub fn log_topology(&self, change: &TopologyChange) -> Result<Lsn, WalError> {
        let Some(wal) = self.topology.get() else {
            return Err(WalError::Closed);
        };
        let mut payload = BytesMut::new();
        encode_change(change, &mut payload);
        wal.append_topology(&payload)
    }

    pub async fn topology_durable(&self, lsn: Lsn) -> Result<(), WalError> {
        match self.topology.get() {
            Some(wal) => wal.wait_durable(lsn).await,
            None => Ok(()),
        }
    }
}

/// Releases confirms as their records become durable; nacks them if the log failed.
pub async fn run_confirmer(shard: Rc<Shard>) {
    loop {
        let newest = shard.storage.pending.borrow().back().map(|(lsn, _)| *lsn);
        let Some(target) = newest else {
            let added = shard.storage.pending_added.wait();
            if shard.storage.pending.borrow().is_empty() {
                added.await;
            }
            continue;
        };
        let durable = match shard.storage.messages() {
            Some(wal) => wal.wait_durable(target).await,
            None => Err(WalError::Closed),
        };
        if let Err(error) = &durable {
            // The log itself logs the failure once per episode (`failure_log`); this is per
            // publish batch.
            tracing::debug!(%error, "message log write failed: nacking the affected publishes");
        }
        loop {
            let next = {
                let mut pending = shard.storage.pending.borrow_mut();
                match pending.front() {
                    Some((lsn, _)) if *lsn <= target => pending.pop_front(),
                    _ => None,
                }
            };
            let Some((_, confirm)) = next else {
                break;
            };
            shard.route_confirm(confirm, durable.is_ok());
        }
        if crate::latency_trace::is_enabled() {
            let released = shard.storage.traced.borrow_mut().take_through(target);
            crate::latency_trace::record_stamps(
                crate::latency_trace::Stage::ConfirmReleased,
                &released,
            );
        }
    }
}

/// Why a paged message could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum PageInError {
    #[error("{0}")]
    Log(WalError),
    #[error("stored record unreadable: {0}")]
    Stored(String),
    #[error("read cancelled")]
    Cancelled,
}

impl PageInError {
    /// The same read may succeed later: the disk failed this once (EIO), the record waits for a
    /// flush the log failed, the log is closing. The message must stay queued: dropping it
    /// would settle a confirmed message for good over a passing fault. Only a record that is
    /// corrupt, undecodable or gone from the log is unreadable for good.
    pub fn may_pass(&self) -> bool {
        match self {
            PageInError::Cancelled => true,
            PageInError::Stored(_) => false,
            PageInError::Log(error) => match error {
                WalError::Io { .. }
                | WalError::Closed
                | WalError::BufferFull { .. }
                | WalError::TooManyWaiters { .. } => true,
                WalError::NotReadable { reason, .. } => {
                    crate::storage::wal::NOT_READABLE_YET.contains(reason)
                }
                WalError::Corrupt { .. }
                | WalError::RecordTooLarge { .. }
                | WalError::InvalidOptions(_)
                | WalError::Encode(_)
                | WalError::Decode(_) => false,
            },
        }
    }
}

/// A stored enqueue as a message, with its enqueue time (wall-clock ms).
pub(super) fn decode_stored(record: OwnedEnqueue) -> Result<(u64, Message), String> {
    let (enqueued_ms, properties) = split_stored_properties(&record.properties)
        .ok_or_else(|| "stored properties too short".to_string())?;
    let decoded = BasicProperties::decode(&mut properties.clone())
        .map_err(|error| format!("unreadable stored properties: {error}"))?;
    let route = Route {
        exchange: &record.exchange,
        routing_key: &record.routing_key,
    };
    let message = Message::from_wire(route, &decoded, &properties, [&record.body[..]]);
    Ok((enqueued_ms, message))
}

/// Splits a stored properties blob into the enqueue time and the AMQP-encoded properties.
fn split_stored_properties(stored: &Bytes) -> Option<(u64, Bytes)> {
    let time: [u8; 8] = stored.get(..8)?.try_into().ok()?;
    Some((u64::from_be_bytes(time), stored.slice(8..)))
}

pub(super) fn wal_options(
    dir: &Path,
    shard: usize,
    segment: u64,
    buffer: usize,
    soft: usize,
) -> WalOptions {
    let options = WalOptions::new(dir.to_path_buf(), shard, segment, buffer);
    WalOptions {
        batch_soft_bytes: soft,
        part_body_bytes: options.part_body_bytes.min(WAL_PART_BODY_BYTES),
        ..options
    }
}

impl Shard {
    /// The topology owner at start-up: replays the topology log into our copy. Returns the
    /// changes, for the other shards.
    pub async fn recover_topology(&self, data_dir: &Path) -> Result<Vec<TopologyChange>, String> {
        let dir = data_dir.join("topology");
        let options = wal_options(
            &dir,
            0,
            META_SEGMENT_SIZE_BYTES,
            META_WRITE_BUFFER_BYTES,
            META_WRITE_BUFFER_BYTES / 2,
        );
        let (wal, recovered) = Wal::open(options)
            .await
            .map_err(|e| format!("cannot open the topology log in {}: {e}", dir.display()))?;
        let mut changes = Vec::with_capacity(recovered.topology.len());
        for record in recovered.topology {
            let change = decode_change(record.payload).map_err(|e| {
                format!(
                    "topology log in {} at lsn {}: {e}",
                    dir.display(),
                    record.lsn
                )
            })?;
            changes.push(change);
        }
        let _ = self.storage.topology.set(wal);
        let fresh = changes.is_empty();
        self.apply_changes(&changes);
        if fresh {
            // RabbitMQ's default_user: on a fresh data directory only.
            self.create_default_user(&mut changes).await?;
        }
        self.seed_owner_counters(&changes);
        self.rehome_queues(&mut changes).await?;
        tracing::info!(changes = changes.len(), "topology recovered");
        Ok(changes)
    }

    /// Opens this shard's message log and puts every unsettled persistent message back in its
    /// queue, in log order, marked redelivered. Returns the records of queues another shard
    /// owns, untouched, for `hand_over_foreign`.
    pub async fn recover_messages(&self, data_dir: &Path) -> Result<Vec<RecoveredEnqueue>, String> {
        let started = Instant::now();
        let dir = data_dir.join("messages");
        let options = wal_options(
            &dir,
            self.id,
            WAL_SEGMENT_SIZE_BYTES,
            WAL_WRITE_BUFFER_BYTES,
            WAL_BATCH_SOFT_BYTES,
        );
        // Bodies beyond one queue's budget stay on disk: the loaders read them when needed,
        // so a backlog larger than RAM can restart.
        let mut options = options;
        options.recovery_body_budget_bytes = self.features.pager.queue_memory_bytes();
        let (wal, recovered) = Wal::open(options).await.map_err(|e| {
            format!(
                "cannot open the message log of shard {} in {}: {e}",
                self.id,
                dir.display()
            )
        })?;
        if let Some((file, offset)) = &recovered.truncated_at {
            tracing::warn!(file = %file.display(), offset, "torn write at the end of the log: truncated");
        }
        let _ = self.storage.messages.set(wal);
        let mut restored = 0u64;
        let mut restored_bytes = 0u64;
        let mut orphans: Vec<(QueueId, MessageId)> = Vec::new();
        let mut restored_queues = std::collections::BTreeSet::new();
        let mut foreign = Vec::new();
        for entry in recovered.enqueues {
            let key = (entry.record.queue, entry.record.message);
            if self.foreign_owner(key.0).is_some() {
                foreign.push(entry);
                continue;
            }
            let Some(lsn) = std::num::NonZeroU64::new(entry.lsn) else {
                continue;
            };
            let body_on_disk_bytes = (!entry.body_loaded).then_some(entry.body_bytes);
            let (enqueued_ms, message) = match decode_stored(entry.record) {
                Ok(decoded) => decoded,
                Err(error) => {
                    tracing::error!(queue = key.0, message = key.1, %error, "message dropped");
                    orphans.push(key);
                    continue;
                }
            };
            // A transient message (or one of a non-durable queue, gone with it) was only
            // written to free memory (paging): it does not survive a restart. A quorum
            // queue's were logged at publish and come back.
            if !is_persistent(&message) && !self.logs_every_message(key.0) {
                orphans.push(key);
                continue;
            }
            restored_bytes += entry.body_bytes;
            if key.0 == super::delayed::DELAYED_LOG_QUEUE {
                // Held in memory until due: the body is needed now.
                let message = match body_on_disk_bytes {
                    None => message,
                    Some(_) => match self.storage.read_message(key.0, key.1).await {
                        Ok(message) => message,
                        // Refuse the start rather than settle a message over a passing fault.
                        Err(error) if error.may_pass() => {
                            return Err(format!(
                                "shard {}: cannot read delayed message {} back: {error}",
                                self.id, key.1
                            ))
                        }
                        Err(error) => {
                            tracing::error!(message = key.1, %error, "delayed message unreadable; dropped");
                            orphans.push(key);
                            continue;
                        }
                    },
                };
                if self.restore_delayed(key.1, message) {
                    restored += 1;
                } else {
                    orphans.push(key);
                }
                continue;
            }
            if self.restore_message(key.0, key.1, message, lsn, enqueued_ms, body_on_disk_bytes) {
                restored += 1;
                restored_queues.insert(key.0);
            } else {
                orphans.push(key);
            }
        }
        // Messages of queues that no longer exist: settle them so their segments can go.
        for (queue, message) in orphans {
            self.storage.log_settle(queue, &[message]);
        }
        // Messages whose TTL ran out while the broker was down go now; the rest arm the timer.
        // Then each queue keeps only its memory budget of bodies.
        for queue in restored_queues {
            self.expire_queue(queue);
            self.page_out_queue(queue);
            self.want_load(queue);
        }
        let stats = self
            .storage
            .messages()
            .map(|w| w.stats())
            .unwrap_or_default();
        tracing::info!(
            shard = self.id,
            messages = restored,
            bytes = restored_bytes,
            log_bytes = stats.bytes_recovered,
            ms = started.elapsed().as_millis() as u64,
            foreign = foreign.len(),
            "messages recovered"
        );
        Ok(foreign)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::queue::ChannelRef;

    fn confirm(seq: u64) -> ConfirmRef {
        ConfirmRef {
            channel: ChannelRef {
                conn: 1,
                channel: 1,
            },
            seq,
        }
    }

    #[test]
    fn confirms_wait_in_lsn_order() {
        let storage = ShardStorage::default();
        storage.confirm_when_durable(4, confirm(1));
        storage.confirm_when_durable(4, confirm(2));
        storage.confirm_when_durable(9, confirm(3));
        assert_eq!(storage.pending.borrow().len(), 3);
    }

    /// An older LSN queued behind a newer one would be confirmed before it is durable.
    #[test]
    #[should_panic(expected = "confirm LSNs go backwards")]
    fn a_confirm_lsn_going_backwards_stops_the_process() {
        let storage = ShardStorage::default();
        storage.confirm_when_durable(9, confirm(1));
        storage.confirm_when_durable(4, confirm(2));
    }
}
