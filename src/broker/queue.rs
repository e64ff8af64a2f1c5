//! One queue's state machine: ready messages, unacknowledged messages, consumers and their credit.
//!
//! Sans-IO and single-threaded: the shard that owns the queue calls in and gets back what must
//! happen (deliveries, messages to dead-letter). Nothing here blocks, allocates per message beyond
//! table growth, or panics on caller input: unknown ids and keys are ignored.
//!
//! A message is in exactly one of two places: `ready` (sorted by MessageId, waiting for a
//! consumer) or `unacked` (delivered, held by a channel until ack/reject/recover/close).

mod config;
mod consumers;
mod dead_letter;
mod dedup;
mod delivery_limit;
mod length;
mod message;
mod paging;
mod ready;

#[cfg(test)]
mod feature_tests;
#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod tests;

use crate::limits::{CONSUMER_UNWRITTEN_BYTES_MAX, QUEUE_CONSUMERS_MAX};
use std::collections::HashMap;
use std::num::NonZeroU64;

use crate::id_hash::IdBuildHasher;
use crate::metrics::QueueTotals;
pub use config::{parse_expiration, ExpirationError, Overflow, QueueConfig, MESSAGE_TTL_MAX_MS};
pub use consumers::delivery_charge_bytes;
use consumers::ConsumerSet;
pub use dead_letter::{dead_lettered, is_cycle, Death, DeathReason};
pub use dedup::{DedupCache, DedupConfig, DedupKey, X_DEDUPLICATION_HEADER};
pub use delivery_limit::X_DELIVERY_COUNT;
use delivery_limit::{stored_delivery_count, Return};
pub use length::Admission;
pub use message::{Message, Route, SharedMessage, DELIVERY_MODE_PERSISTENT};
use ready::{deadline, ReadyEntry, ReadyQueue};
pub use ready::{PagedRef, PAGE_READ_AHEAD_MESSAGES};

/// Per-queue, monotonically increasing from 1: also the FIFO order key.
pub type MessageId = u64;
/// Unique per consumer in the process (assigned by the caller).
pub type ConsumerKey = u64;
/// A durable message's place in the shard's WAL. NonZero so `Option<WalPosition>` costs 8 bytes.
pub type WalPosition = NonZeroU64;

/// The channel a consumer or a basic.get belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChannelRef {
    pub conn: u64,
    pub channel: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerSpec {
    pub key: ConsumerKey,
    /// Unsettled messages the consumer may hold; 0 = unlimited.
    pub prefetch: u16,
    pub no_ack: bool,
    pub exclusive: bool,
    /// x-priority: higher is served first; default 0.
    pub priority: i32,
    pub channel: ChannelRef,
}

#[derive(Debug, Clone)]
pub struct Delivery {
    pub consumer: ConsumerKey,
    /// Where the delivery goes: the consumer's channel (saves the runtime a lookup).
    pub channel: ChannelRef,
    pub message_id: MessageId,
    pub message: SharedMessage,
    pub redelivered: bool,
}

/// Why basic.consume was refused; the first two map to 403 ACCESS_REFUSED at the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsumeError {
    #[error("queue has an exclusive consumer")]
    ExclusiveInUse,
    #[error("exclusive consume requested but the queue has consumers")]
    AlreadyConsumers,
    #[error("queue has reached its limit of {max} consumers")]
    TooManyConsumers { max: u32 },
    #[error("consumer key already registered on this queue")]
    DuplicateKey,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    pub consumers_max: u32,
    /// Body bytes of ready messages kept in memory; past it the newest are paged out
    /// (`u64::MAX`: never). `x-queue-mode=lazy` makes it 0 for one queue.
    pub memory_bytes_max: u64,
    /// Body bytes delivered to one consumer and not yet reported written by its connection,
    /// past which the consumer takes no more (`ConsumerSet`); at least 1.
    pub consumer_unwritten_bytes_max: u64,
}

impl Default for QueueLimits {
    fn default() -> QueueLimits {
        QueueLimits {
            consumers_max: QUEUE_CONSUMERS_MAX,
            memory_bytes_max: u64::MAX,
            consumer_unwritten_bytes_max: CONSUMER_UNWRITTEN_BYTES_MAX,
        }
    }
}

/// When a recovered message is put back: the restart's clock and the original publish (its
/// TTL counts from there), both wall-clock ms since the Unix epoch.
#[derive(Debug, Clone, Copy)]
pub struct RestoreTimes {
    pub now_ms: u64,
    pub enqueued_ms: u64,
}

/// A loaded ready message the host should page out: log it unless `persisted`, then call
/// [`Queue::page_out`].
#[derive(Debug, Clone)]
pub struct PageOut {
    pub at: PagedRef,
    pub message: SharedMessage,
    pub persisted: Option<WalPosition>,
}

/// A delivered message waiting for its channel to settle it.
#[derive(Debug)]
struct Unacked {
    message: SharedMessage,
    channel: ChannelRef,
    /// None for basic.get: no consumer credit to give back.
    consumer: Option<ConsumerKey>,
    persisted: Option<WalPosition>,
    /// Kept so a requeued message keeps its original deadline. NonZero keeps this entry at
    /// 64 bytes; a deadline of 0 ms (only a test clock has one) is stored as 1.
    deadline_ms: Option<NonZeroU64>,
}

#[derive(Debug)]
pub struct Queue {
    ready: ReadyQueue,
    unacked: HashMap<MessageId, Unacked, IdBuildHasher>,
    consumers: ConsumerSet,
    next_id: MessageId,
    had_consumers: bool,
    /// Persisted messages that left the queue for good since the last `take_forgotten`: the host
    /// writes their settle records. Every way out (ack, drop, purge, no-ack delivery, delete)
    /// goes through `forget`, so none is missed.
    forgotten: Vec<MessageId>,
    config: QueueConfig,
    /// Returns per message, for `x-delivery-limit` and quorum queues only (see `delivery_limit`).
    delivery_counts: HashMap<MessageId, u32, IdBuildHasher>,
    /// Persisted messages whose delivery count changed since the last `take_recounted`, as they
    /// must be stored again (count in `x-delivery-count`) with their original enqueue time, so
    /// the count survives a restart.
    recounted: Vec<(MessageId, SharedMessage, u64)>,
    /// Dropped by the delivery limit, waiting for the host to dead-letter them.
    over_delivery_limit: Vec<SharedMessage>,
    /// Recently seen message keys, for `x-message-deduplication`.
    dedup: Option<DedupCache>,
    /// Wall-clock ms of the last [`Queue::expire`]: the time publishes are stamped with.
    now_ms: u64,
    /// Body bytes of ready messages kept in memory (see [`QueueLimits::memory_bytes_max`]).
    memory_bytes_max: u64,
    /// The shard's budget, kept so a policy can turn lazy mode on and off again.
    memory_budget_bytes: u64,
    /// Paged messages dropped (expired, over the length limit) from a queue with a dead-letter
    /// exchange: the host reads each back, dead-letters it, then settles it (the settle must
    /// come after the read, which needs the record).
    paged_dropped: Vec<(MessageId, DeathReason)>,
    /// Published, delivered, got, acked since the queue was declared (the operator's rates).
    totals: QueueTotals,
}

impl Queue {
    pub fn new(limits: QueueLimits) -> Queue {
        Queue::with_config(limits, QueueConfig::default())
    }

    pub fn with_config(limits: QueueLimits, config: QueueConfig) -> Queue {
        let mut consumers =
            ConsumerSet::new(limits.consumers_max, limits.consumer_unwritten_bytes_max);
        if config.single_active_consumer {
            consumers.set_single_active();
        }
        let dedup = config.deduplication.map(DedupCache::new);
        let memory_bytes_max = if config.lazy {
            0
        } else {
            limits.memory_bytes_max
        };
        Queue {
            ready: ReadyQueue::new(config.priority_levels()),
            unacked: HashMap::default(),
            consumers,
            next_id: 1,
            had_consumers: false,
            forgotten: Vec::new(),
            config,
            delivery_counts: HashMap::default(),
            recounted: Vec::new(),
            over_delivery_limit: Vec::new(),
            dedup,
            now_ms: 0,
            memory_bytes_max,
            memory_budget_bytes: limits.memory_bytes_max,
            paged_dropped: Vec::new(),
            totals: QueueTotals::default(),
        }
    }

    /// Counters since the queue was declared (not since a restart: recovery restores none).
    pub fn totals(&self) -> QueueTotals {
        self.totals
    }

    pub fn config(&self) -> &QueueConfig {
        &self.config
    }

    /// A policy changed what the queue's arguments come to: the new limits apply from now on
    /// (the host's next dispatch enforces lengths; messages already queued keep their
    /// deadlines, as in RabbitMQ). What no policy sets (priorities, single active consumer,
    /// deduplication) stays as declared. Returns whether anything changed.
    pub fn reconfigure(&mut self, mut config: QueueConfig) -> bool {
        config.max_priority = self.config.max_priority;
        config.single_active_consumer = self.config.single_active_consumer;
        config.deduplication = self.config.deduplication;
        if config == self.config {
            return false;
        }
        self.memory_bytes_max = if config.lazy {
            0
        } else {
            self.memory_budget_bytes
        };
        if !config.counts_returns {
            self.delivery_counts.clear();
        }
        self.config = config;
        true
    }

    /// Enqueues at the clock of the last [`Queue::expire`] (callers expire first, which both
    /// advances the clock and keeps expired messages from counting against limits).
    pub fn publish(&mut self, message: SharedMessage) -> MessageId {
        self.publish_persisted(message, None, self.now_ms)
    }

    /// Publishes a message whose enqueue record is in the WAL at `persisted` (None: transient).
    /// `now_ms` (wall-clock ms since the Unix epoch) advances the queue's clock, as in `publish_at`.
    pub fn publish_persisted(
        &mut self,
        message: SharedMessage,
        persisted: Option<WalPosition>,
        now_ms: u64,
    ) -> MessageId {
        let id = self.next_id;
        self.publish_entry(id, message, persisted, now_ms);
        id
    }

    /// Publishes a message of a replicated quorum queue under the id its group gave it (the
    /// entry's log index, which is also its `persisted` position: the group's log holds it,
    /// nothing of it is in the shard's WAL). Ids come in log order; one older than the newest
    /// (never expected) is inserted in order rather than trusted.
    pub fn publish_replicated(&mut self, id: MessageId, message: SharedMessage, now_ms: u64) {
        let Some(persisted) = WalPosition::new(id) else {
            return;
        };
        if id < self.next_id {
            self.restore(id, message, persisted, now_ms, now_ms);
            return;
        }
        self.publish_entry(id, message, Some(persisted), now_ms);
    }

    fn publish_entry(
        &mut self,
        id: MessageId,
        message: SharedMessage,
        persisted: Option<WalPosition>,
        now_ms: u64,
    ) {
        self.now_ms = self.now_ms.max(now_ms);
        self.next_id = id + 1;
        self.totals.published += 1;
        let level = self.level_of(&message);
        let deadline_ms = self
            .ttl_ms(&message)
            .map(|ttl| deadline(self.now_ms.saturating_add(ttl)));
        self.ready.push_back(ReadyEntry {
            id,
            body_bytes: ReadyEntry::body_len(&message),
            message: Some(message),
            persisted,
            redelivered: false,
            level,
            deadline_ms,
        });
    }

    /// The id the next publish will get (the host logs it before publishing).
    pub fn next_message_id(&self) -> MessageId {
        self.next_id
    }

    /// Puts back a message recovered from the WAL with its original id. It may have been
    /// delivered before the restart, so it comes back marked redelivered (the flag means
    /// "may have been delivered before").
    /// A TTL counts from `enqueued_ms` (the original publish, stored in the log); the
    /// deduplication window of the message's key counts again from the restart (`now_ms`).
    pub fn restore(
        &mut self,
        id: MessageId,
        message: SharedMessage,
        persisted: WalPosition,
        now_ms: u64,
        enqueued_ms: u64,
    ) {
        self.restore_entry(id, message, persisted, now_ms, enqueued_ms, None);
    }

    /// [`Queue::restore`] of a message whose body stayed in the log (recovery's body budget):
    /// `message` has an empty body, `body_bytes` is the real length; the entry is paged.
    pub fn restore_paged(
        &mut self,
        id: MessageId,
        message: SharedMessage,
        body_bytes: u64,
        persisted: WalPosition,
        times: RestoreTimes,
    ) {
        let body_bytes = u32::try_from(body_bytes).unwrap_or(u32::MAX);
        let RestoreTimes {
            now_ms,
            enqueued_ms,
        } = times;
        self.restore_entry(
            id,
            message,
            persisted,
            now_ms,
            enqueued_ms,
            Some(body_bytes),
        );
    }

    fn restore_entry(
        &mut self,
        id: MessageId,
        message: SharedMessage,
        persisted: WalPosition,
        now_ms: u64,
        enqueued_ms: u64,
        paged_body_bytes: Option<u32>,
    ) {
        self.now_ms = self.now_ms.max(now_ms);
        if let Ok(key) = self.check_duplicate(&message, self.now_ms) {
            self.remember_key(key, self.now_ms);
        }
        if self.config.counts_returns {
            if let Some(count) = stored_delivery_count(&message) {
                self.delivery_counts.insert(id, count);
            }
        }
        let level = self.level_of(&message);
        // The TTL counts from the original publish, not from the restart.
        let deadline_ms = self
            .ttl_ms(&message)
            .map(|ttl| deadline(enqueued_ms.saturating_add(ttl)));
        self.ready.insert_sorted(ReadyEntry {
            id,
            body_bytes: paged_body_bytes.unwrap_or_else(|| ReadyEntry::body_len(&message)),
            message: paged_body_bytes.is_none().then_some(message),
            persisted: Some(persisted),
            redelivered: true,
            level,
            deadline_ms,
        });
        self.next_id = self.next_id.max(id + 1);
    }

    /// Persisted messages that left the queue for good since the last call.
    pub fn take_forgotten(&mut self) -> Vec<MessageId> {
        std::mem::take(&mut self.forgotten)
    }

    /// Persisted messages whose delivery count changed since the last call: (id, the message
    /// with its `x-delivery-count`, its enqueue time in wall-clock ms) for the host to re-log.
    pub fn take_recounted(&mut self) -> Vec<(MessageId, SharedMessage, u64)> {
        std::mem::take(&mut self.recounted)
    }

    fn forget(&mut self, id: MessageId, persisted: Option<WalPosition>) {
        if !self.delivery_counts.is_empty() {
            self.delivery_counts.remove(&id);
        }
        if persisted.is_some() {
            self.forgotten.push(id);
        }
    }

    /// Publishes stamped with `now_ms` (wall-clock ms since the Unix epoch), advancing the clock.
    pub fn publish_at(&mut self, message: SharedMessage, now_ms: u64) -> MessageId {
        self.publish_persisted(message, None, now_ms)
    }

    /// The message's priority clamped to the queue's maximum (RabbitMQ treats a higher one as
    /// the maximum); always 0 in a queue without `x-max-priority`.
    fn level_of(&self, message: &Message) -> u8 {
        message.priority().unwrap_or(0).min(self.ready.level_max())
    }

    /// The lower of the queue's `x-message-ttl` and the message's `expiration`.
    fn ttl_ms(&self, message: &Message) -> Option<u64> {
        let own = message.expiration_ms();
        match (self.config.message_ttl_ms, own) {
            (Some(queue), Some(own)) => Some(queue.min(own)),
            (queue, own) => queue.or(own),
        }
    }

    /// Advances the clock to `now_ms` and removes every ready message whose deadline passed,
    /// wherever it sits, returning them (oldest deadline first) for dead-lettering. Unacked
    /// messages do not expire; they are checked again if they are requeued.
    pub fn expire(&mut self, now_ms: u64) -> Vec<SharedMessage> {
        self.now_ms = self.now_ms.max(now_ms);
        let mut expired = Vec::new();
        while let Some(entry) = self.ready.pop_expired(self.now_ms) {
            if let Some(message) = self.drop_entry(entry, DeathReason::Expired) {
                expired.push(message);
            }
        }
        expired
    }

    /// When the next ready message expires: the caller's timer should call [`Queue::expire`]
    /// once the clock is past it.
    pub fn next_deadline(&self) -> Option<u64> {
        self.ready.next_deadline()
    }

    /// Appends to `out` as many deliveries as consumer credit allows, at most `max`.
    /// Call after anything that may allow deliveries (publish, consume, ack, reject, recover).
    pub fn dispatch(&mut self, out: &mut Vec<Delivery>, max: usize) {
        for _ in 0..max {
            // A paged head waits for the loader: nothing behind it may overtake it.
            if self.ready.is_empty() || self.ready.head_paged().is_some() {
                return;
            }
            // Charged to the consumer until its connection reports the bytes written.
            let Some(body_bytes) = self.ready.head_body_bytes() else {
                return;
            };
            let Some(turn) = self.consumers.take_turn(delivery_charge_bytes(body_bytes)) else {
                return;
            };
            let Some((entry, message)) = self.pop_loaded() else {
                return;
            };
            let message = self.stamp_delivery_count(entry.id, message);
            if turn.no_ack {
                self.totals.delivered_auto_ack += 1;
                self.forget(entry.id, entry.persisted);
            } else {
                self.totals.delivered_manual_ack += 1;
                self.hold(&entry, &message, turn.channel, Some(turn.key));
            }
            self.totals.redelivered += u64::from(entry.redelivered);
            out.push(Delivery {
                consumer: turn.key,
                channel: turn.channel,
                message_id: entry.id,
                message,
                redelivered: entry.redelivered,
            });
        }
    }

    pub fn add_consumer(&mut self, spec: ConsumerSpec) -> Result<(), ConsumeError> {
        self.consumers.add(spec)?;
        self.had_consumers = true;
        Ok(())
    }

    /// The consumer's unacked messages stay unacked, owned by its channel.
    pub fn remove_consumer(&mut self, key: ConsumerKey) -> bool {
        self.consumers.remove(key).is_some()
    }

    /// basic.get: the oldest ready message. Unless `no_ack`, it stays unacked, owned by `channel`.
    /// None also while the oldest is paged: the host loads it first (see [`Queue::head_paged`]).
    pub fn basic_get(
        &mut self,
        no_ack: bool,
        channel: ChannelRef,
    ) -> Option<(MessageId, SharedMessage, bool)> {
        let (entry, message) = self.pop_loaded()?;
        let message = self.stamp_delivery_count(entry.id, message);
        if no_ack {
            self.totals.got_auto_ack += 1;
            self.forget(entry.id, entry.persisted);
        } else {
            self.totals.got_manual_ack += 1;
            self.hold(&entry, &message, channel, None);
        }
        self.totals.redelivered += u64::from(entry.redelivered);
        Some((entry.id, message, entry.redelivered))
    }

    /// The head's entry and message, unless the head is paged (then nothing is taken).
    fn pop_loaded(&mut self) -> Option<(ReadyEntry, SharedMessage)> {
        if self.ready.head_paged().is_some() {
            return None;
        }
        let mut entry = self.ready.pop_front()?;
        let message = entry.message.take()?;
        Some((entry, message))
    }

    /// Settles: removed for good. Unknown ids (already settled, never delivered) are ignored.
    pub fn ack(&mut self, ids: &[MessageId]) {
        for id in ids {
            if let Some(unacked) = self.unacked.remove(id) {
                self.totals.acked += 1;
                self.release_credit(&unacked);
                self.forget(*id, unacked.persisted);
            }
        }
    }

    /// `requeue`: back in MessageId order, marked redelivered. Otherwise the messages are
    /// dropped and returned, in the order of `ids`, for dead-lettering. Unknown ids are ignored.
    pub fn reject(&mut self, ids: &[MessageId], requeue: bool) -> Vec<SharedMessage> {
        let mut dropped = Vec::new();
        for &id in ids {
            let Some(unacked) = self.unacked.remove(&id) else {
                continue;
            };
            self.release_credit(&unacked);
            if requeue {
                self.requeue(id, unacked);
            } else {
                self.forget(id, unacked.persisted);
                dropped.push(unacked.message);
            }
        }
        dropped
    }

    /// A delivery to `consumer` was turned away by its connection: the consumer is gone there
    /// (consumer keys are never reused), so it goes here too, or the next dispatch would hand it
    /// the same message again. The message returns only if that consumer still holds it: a late
    /// refusal of a message already requeued and delivered elsewhere is ignored.
    pub fn refused(&mut self, consumer: ConsumerKey, id: MessageId) {
        if self
            .unacked
            .get(&id)
            .is_some_and(|held| held.consumer == Some(consumer))
        {
            if let Some(unacked) = self.unacked.remove(&id) {
                self.release_credit(&unacked);
                self.requeue(id, unacked);
            }
        }
        self.consumers.remove(consumer);
    }

    /// `consumer`'s connection wrote `bytes` of the bodies delivered to it: it may take more
    /// (`ConsumerSet::written`). The host dispatches afterwards.
    pub fn written(&mut self, consumer: ConsumerKey, bytes: u64) {
        self.consumers.written(consumer, bytes);
    }

    /// A channel closed: its consumers go, its unacked messages return to the ready queue in order.
    pub fn channel_closed(&mut self, channel: ChannelRef) {
        self.consumers.remove_channel(channel);
        self.requeue_channel(channel);
    }

    /// basic.recover(requeue=true): the channel's unacked messages return to the ready queue.
    pub fn recover(&mut self, channel: ChannelRef) {
        self.requeue_channel(channel);
    }

    /// Drops the ready messages (unacked ones stay) and returns how many were dropped.
    pub fn purge(&mut self) -> u32 {
        let count = self.ready.len();
        let purged: Vec<(MessageId, Option<WalPosition>)> = self
            .ready
            .drain()
            .into_iter()
            .map(|e| (e.id, e.persisted))
            .collect();
        for (id, persisted) in purged {
            self.forget(id, persisted);
        }
        saturate_u32(count)
    }

    /// Ready messages (not unacked): what queue.declare-ok reports.
    pub fn message_count(&self) -> u32 {
        saturate_u32(self.ready.len())
    }

    pub fn consumer_count(&self) -> u32 {
        saturate_u32(self.consumers.len())
    }

    pub fn unacked_count(&self) -> u32 {
        saturate_u32(self.unacked.len())
    }

    /// Sum of the body sizes of the ready messages.
    pub fn ready_bytes(&self) -> u64 {
        self.ready.bytes()
    }

    pub fn is_unused(&self) -> bool {
        self.consumers.len() == 0
    }

    /// For auto-delete: true once a consumer was ever added.
    pub fn has_had_consumers(&self) -> bool {
        self.had_consumers
    }

    /// In no particular order.
    pub fn consumers(&self) -> impl Iterator<Item = &ConsumerSpec> {
        self.consumers.iter()
    }

    /// On delete: every message, ready (paged ones only settled, not returned) and unacked, in
    /// MessageId order. Consumers are left in
    /// place so the caller can still notify them through [`Queue::consumers`].
    pub fn drain_all(&mut self) -> Vec<SharedMessage> {
        self.delivery_counts.clear();
        let mut unacked: Vec<(MessageId, Unacked)> = self.unacked.drain().collect();
        unacked.sort_unstable_by_key(|(id, _)| *id);
        for (id, held) in &unacked {
            self.release_credit(held);
            if held.persisted.is_some() {
                self.forgotten.push(*id);
            }
        }
        let mut unacked = unacked.into_iter().peekable();
        let mut all = Vec::with_capacity(self.ready.len() + unacked.len());
        for entry in self.ready.drain() {
            while let Some((_, held)) = unacked.next_if(|(id, _)| *id < entry.id) {
                all.push(held.message);
            }
            if entry.persisted.is_some() {
                self.forgotten.push(entry.id);
            }
            all.extend(entry.message);
        }
        all.extend(unacked.map(|(_, held)| held.message));
        all
    }

    fn hold(
        &mut self,
        entry: &ReadyEntry,
        message: &SharedMessage,
        channel: ChannelRef,
        consumer: Option<ConsumerKey>,
    ) {
        let previous = self.unacked.insert(
            entry.id,
            Unacked {
                message: message.clone(),
                channel,
                consumer,
                persisted: entry.persisted,
                deadline_ms: entry.deadline_ms,
            },
        );
        // Two deliveries of one message unacked at once: one ack would settle both.
        assert!(previous.is_none(), "message {} held twice", entry.id);
    }

    fn release_credit(&mut self, unacked: &Unacked) {
        if let Some(key) = unacked.consumer {
            self.consumers.release(key);
        }
    }

    fn requeue(&mut self, id: MessageId, unacked: Unacked) {
        if let Return::OverLimit = self.count_return(id) {
            self.forget(id, unacked.persisted);
            self.over_delivery_limit.push(unacked.message);
            return;
        }
        if unacked.persisted.is_some() && self.config.counts_returns {
            let enqueued_ms = unacked
                .deadline_ms
                .map(NonZeroU64::get)
                .zip(self.ttl_ms(&unacked.message))
                .map_or(self.now_ms, |(deadline, ttl)| deadline.saturating_sub(ttl));
            let stamped = self.stamp_delivery_count(id, unacked.message.clone());
            self.recounted.push((id, stamped, enqueued_ms));
        }
        self.ready.insert_sorted(ReadyEntry {
            id,
            body_bytes: ReadyEntry::body_len(&unacked.message),
            persisted: unacked.persisted,
            redelivered: true,
            // The level is recomputed rather than stored: the configuration never changes.
            level: self.level_of(&unacked.message),
            deadline_ms: unacked.deadline_ms,
            message: Some(unacked.message),
        });
    }

    /// O(unacked) scan: channel close and recover are rare next to ack, which this keeps O(1).
    fn requeue_channel(&mut self, channel: ChannelRef) {
        let mut ids: Vec<MessageId> = self
            .unacked
            .iter()
            .filter(|(_, held)| held.channel == channel)
            .map(|(id, _)| *id)
            .collect();
        // Oldest first, so consumers unblocked by this rejoin their turn order deterministically.
        ids.sort_unstable();
        for id in ids {
            if let Some(unacked) = self.unacked.remove(&id) {
                self.release_credit(&unacked);
                self.requeue(id, unacked);
            }
        }
    }

    /// Test support: every cross-structure invariant.
    #[cfg(test)]
    fn check_invariants(&self) {
        self.ready.check_invariants();
        self.consumers.check_invariants();
        for id in self.ready.ids() {
            assert!(
                !self.unacked.contains_key(&id),
                "message {id} ready and unacked"
            );
            assert!(id < self.next_id);
        }
        for spec in self.consumers.iter() {
            let held = self
                .unacked
                .values()
                .filter(|held| held.consumer == Some(spec.key))
                .count();
            assert_eq!(self.consumers.in_flight(spec.key), Some(held as u32));
            if spec.prefetch > 0 && !spec.no_ack {
                assert!(held <= usize::from(spec.prefetch), "prefetch exceeded");
            }
            if spec.no_ack {
                assert_eq!(held, 0);
            }
        }
    }
}

fn saturate_u32(count: usize) -> u32 {
    u32::try_from(count).unwrap_or(u32::MAX)
}
