//! The consumers of one queue and their prefetch credit.
//!
//! Dispatch order: the highest x-priority level that has a consumer with free credit wins;
//! within a level, consumers take turns (a ring). A consumer is in its level's ring exactly
//! when it has free credit, so picking the next consumer is O(1) per delivery (plus a scan over
//! the few distinct priority levels), and a consumer at its prefetch limit costs nothing until
//! one of its messages is settled.
//!
//! Credit is two-sided: prefetch (messages held unacked, RabbitMQ's `basic.qos`) and the body
//! bytes handed to the consumer's connection that it has not yet reported written to its socket
//! (`CONSUMER_UNWRITTEN_BYTES_MAX`, RabbitMQ's credit flow). The second applies to every
//! consumer, no-ack ones included, so a consumer slower than the publishers backs its queue up
//! rather than its connection's output.

use std::collections::{HashMap, VecDeque};

use super::{ChannelRef, ConsumeError, ConsumerKey, ConsumerSpec, IdBuildHasher};
use crate::limits::DELIVERY_FRAMING_CHARGE_BYTES;

/// What a delivery of `body_bytes` counts against its consumer's unwritten bytes, here and in
/// the connection that reports them written (both must count alike).
pub fn delivery_charge_bytes(body_bytes: u64) -> u64 {
    body_bytes.saturating_add(DELIVERY_FRAMING_CHARGE_BYTES)
}

/// One consumer, the messages it holds unsettled (no_ack consumers hold none), and the body
/// bytes delivered to it that its connection has not reported written.
#[derive(Debug)]
struct Consumer {
    spec: ConsumerSpec,
    in_flight: u32,
    unwritten_bytes: u64,
}

impl Consumer {
    fn has_credit(&self, unwritten_bytes_max: u64) -> bool {
        let prefetch_room = self.spec.no_ack
            || self.spec.prefetch == 0
            || self.in_flight < u32::from(self.spec.prefetch);
        prefetch_room && self.unwritten_bytes < unwritten_bytes_max
    }

    /// A message charged `charge_bytes` (`delivery_charge_bytes`) goes to this consumer.
    fn charge(&mut self, charge_bytes: u64) {
        if !self.spec.no_ack {
            self.in_flight += 1;
        }
        self.unwritten_bytes = self.unwritten_bytes.saturating_add(charge_bytes);
    }
}

/// All consumers sharing one x-priority.
#[derive(Debug)]
struct Level {
    priority: i32,
    /// Consumers of this level with free credit, in turn order.
    ready: VecDeque<ConsumerKey>,
    members: u32,
}

/// Who gets the next message: the consumer and where its deliveries go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Turn {
    pub key: ConsumerKey,
    pub channel: ChannelRef,
    pub no_ack: bool,
}

#[derive(Debug)]
pub(super) struct ConsumerSet {
    consumers: HashMap<ConsumerKey, Consumer, IdBuildHasher>,
    /// Sorted by priority, highest first; a level exists only while it has members.
    levels: Vec<Level>,
    /// Kept apart so basic.consume need not scan every consumer.
    exclusive: Option<ConsumerKey>,
    consumers_max: u32,
    /// `QueueLimits::consumer_unwritten_bytes_max`.
    unwritten_bytes_max: u64,
    /// `x-single-active-consumer`: only the oldest consumer (the front) receives; the next
    /// takes over when it goes. Empty unless the queue is single-active.
    single_active: Option<VecDeque<ConsumerKey>>,
}

impl ConsumerSet {
    pub fn new(consumers_max: u32, unwritten_bytes_max: u64) -> ConsumerSet {
        assert!(
            unwritten_bytes_max > 0,
            "a consumer must be able to take a message"
        );
        ConsumerSet {
            consumers: HashMap::default(),
            levels: Vec::new(),
            exclusive: None,
            consumers_max,
            unwritten_bytes_max,
            single_active: None,
        }
    }

    /// Makes this a single-active-consumer set. Call before adding consumers.
    pub fn set_single_active(&mut self) {
        debug_assert!(self.consumers.is_empty());
        self.single_active = Some(VecDeque::new());
    }

    /// The consumer that receives in a single-active set.
    pub fn active(&self) -> Option<ConsumerKey> {
        self.single_active.as_ref()?.front().copied()
    }

    pub fn len(&self) -> usize {
        self.consumers.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &ConsumerSpec> {
        self.consumers.values().map(|consumer| &consumer.spec)
    }

    pub fn add(&mut self, spec: ConsumerSpec) -> Result<(), ConsumeError> {
        if self.exclusive.is_some() {
            return Err(ConsumeError::ExclusiveInUse);
        }
        if spec.exclusive && !self.consumers.is_empty() {
            return Err(ConsumeError::AlreadyConsumers);
        }
        if self.consumers.contains_key(&spec.key) {
            return Err(ConsumeError::DuplicateKey);
        }
        if self.consumers.len() >= self.consumers_max as usize {
            return Err(ConsumeError::TooManyConsumers {
                max: self.consumers_max,
            });
        }
        let key = spec.key;
        if spec.exclusive {
            self.exclusive = Some(key);
        }
        let level = self.level_index_or_insert(spec.priority);
        self.levels[level].members += 1;
        // A new consumer has credit by definition: it holds nothing and has nothing unwritten.
        self.levels[level].ready.push_back(key);
        let consumer = Consumer {
            spec,
            in_flight: 0,
            unwritten_bytes: 0,
        };
        self.consumers.insert(key, consumer);
        if let Some(order) = self.single_active.as_mut() {
            order.push_back(key);
        }
        Ok(())
    }

    pub fn remove(&mut self, key: ConsumerKey) -> Option<ConsumerSpec> {
        let consumer = self.consumers.remove(&key)?;
        if self.exclusive == Some(key) {
            self.exclusive = None;
        }
        if let Some(order) = self.single_active.as_mut() {
            order.retain(|&queued| queued != key);
        }
        let Some(level) = self.level_index(consumer.spec.priority) else {
            debug_assert!(false, "consumer {key} has no level");
            return Some(consumer.spec);
        };
        // Removal is rare (basic.cancel, channel close); a linear retain keeps the hot path simple.
        self.levels[level].ready.retain(|&queued| queued != key);
        self.levels[level].members -= 1;
        if self.levels[level].members == 0 {
            debug_assert!(self.levels[level].ready.is_empty());
            self.levels.remove(level);
        }
        Some(consumer.spec)
    }

    /// Removes every consumer of `channel`.
    pub fn remove_channel(&mut self, channel: ChannelRef) {
        let keys: Vec<ConsumerKey> = self
            .consumers
            .values()
            .filter(|consumer| consumer.spec.channel == channel)
            .map(|consumer| consumer.spec.key)
            .collect();
        for key in keys {
            self.remove(key);
        }
    }

    /// Picks the consumer for the next message and charges it: one unit of prefetch credit
    /// (when it acknowledges) and `charge_bytes` until its connection reports them written.
    /// The consumer goes to the back of its ring if credit remains.
    pub fn take_turn(&mut self, charge_bytes: u64) -> Option<Turn> {
        if let Some(active) = self.active() {
            return self.take_active_turn(active, charge_bytes);
        }
        let level = self
            .levels
            .iter()
            .position(|level| !level.ready.is_empty())?;
        let key = self.levels[level].ready.pop_front()?;
        let unwritten_bytes_max = self.unwritten_bytes_max;
        let Some(consumer) = self.consumers.get_mut(&key) else {
            debug_assert!(false, "consumer {key} in a ring but not in the set");
            return None;
        };
        consumer.charge(charge_bytes);
        if consumer.has_credit(unwritten_bytes_max) {
            self.levels[level].ready.push_back(key);
        }
        Some(Turn {
            key,
            channel: consumer.spec.channel,
            no_ack: consumer.spec.no_ack,
        })
    }

    /// Single-active: only `active` may take a turn, whatever its place in its ring.
    fn take_active_turn(&mut self, active: ConsumerKey, charge_bytes: u64) -> Option<Turn> {
        let unwritten_bytes_max = self.unwritten_bytes_max;
        let consumer = self.consumers.get_mut(&active)?;
        if !consumer.has_credit(unwritten_bytes_max) {
            return None;
        }
        consumer.charge(charge_bytes);
        let turn = Turn {
            key: active,
            channel: consumer.spec.channel,
            no_ack: consumer.spec.no_ack,
        };
        if !consumer.has_credit(unwritten_bytes_max) {
            // Keep "in its ring exactly when it has credit" true for release().
            let priority = consumer.spec.priority;
            if let Some(level) = self.level_index(priority) {
                self.levels[level].ready.retain(|&queued| queued != active);
            }
        }
        Some(turn)
    }

    /// One message delivered to `key` was settled or requeued: give the credit back.
    /// Unknown keys are ignored: the consumer was cancelled while its messages stayed unacked.
    pub fn release(&mut self, key: ConsumerKey) {
        self.give_back(key, |consumer| {
            // Released twice means a message was settled twice: the unacked bookkeeping is broken.
            assert!(consumer.in_flight > 0, "credit released twice");
            consumer.in_flight -= 1;
        });
    }

    /// `key`'s connection wrote `bytes` of its deliveries to the socket. Unknown keys are
    /// ignored (the consumer went while its deliveries were being written).
    pub fn written(&mut self, key: ConsumerKey, bytes: u64) {
        self.give_back(key, |consumer| {
            // More written than delivered means the connection counts bytes it was never
            // charged: its report is not trusted past what is outstanding.
            debug_assert!(
                bytes <= consumer.unwritten_bytes,
                "written more than charged"
            );
            consumer.unwritten_bytes = consumer.unwritten_bytes.saturating_sub(bytes);
        });
    }

    /// Applies `give` to `key` and puts it back in its ring if that gave it credit again.
    fn give_back(&mut self, key: ConsumerKey, give: impl FnOnce(&mut Consumer)) {
        let unwritten_bytes_max = self.unwritten_bytes_max;
        let Some(consumer) = self.consumers.get_mut(&key) else {
            return;
        };
        let had_credit = consumer.has_credit(unwritten_bytes_max);
        give(consumer);
        if had_credit || !consumer.has_credit(unwritten_bytes_max) {
            return;
        }
        let priority = consumer.spec.priority;
        if let Some(level) = self.level_index(priority) {
            self.levels[level].ready.push_back(key);
        }
    }

    fn level_index(&self, priority: i32) -> Option<usize> {
        self.levels
            .binary_search_by(|level| priority.cmp(&level.priority))
            .ok()
    }

    fn level_index_or_insert(&mut self, priority: i32) -> usize {
        match self
            .levels
            .binary_search_by(|level| priority.cmp(&level.priority))
        {
            Ok(index) => index,
            Err(index) => {
                self.levels.insert(
                    index,
                    Level {
                        priority,
                        ready: VecDeque::new(),
                        members: 0,
                    },
                );
                index
            }
        }
    }

    /// Test support: the consumer's unsettled count, to check against the unacked table.
    #[cfg(test)]
    pub fn in_flight(&self, key: ConsumerKey) -> Option<u32> {
        self.consumers.get(&key).map(|consumer| consumer.in_flight)
    }

    /// Test support: every structural invariant of the set.
    #[cfg(test)]
    pub fn check_invariants(&self) {
        let mut members = 0;
        for pair in self.levels.windows(2) {
            assert!(pair[0].priority > pair[1].priority, "levels sorted, unique");
        }
        for level in &self.levels {
            assert!(level.members > 0, "empty level kept");
            members += level.members as usize;
            let mut seen = std::collections::HashSet::new();
            for key in &level.ready {
                assert!(seen.insert(*key), "consumer twice in a ring");
                let consumer = &self.consumers[key];
                assert_eq!(consumer.spec.priority, level.priority);
            }
        }
        assert_eq!(members, self.consumers.len());
        let exclusive: Vec<_> = self
            .iter()
            .filter(|spec| spec.exclusive)
            .map(|spec| spec.key)
            .collect();
        assert_eq!(exclusive, self.exclusive.into_iter().collect::<Vec<_>>());
        for consumer in self.consumers.values() {
            let level = &self.levels[self.level_index(consumer.spec.priority).unwrap()];
            let in_ring = level.ready.contains(&consumer.spec.key);
            assert_eq!(
                in_ring,
                consumer.has_credit(self.unwritten_bytes_max),
                "ring membership == credit"
            );
        }
    }
}
