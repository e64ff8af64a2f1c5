//! The ready messages of a queue: one FIFO per priority level, each kept sorted by MessageId,
//! plus an index of the entries that carry a deadline (TTL).
//!
//! Publishes append at the back of their level (ids only grow); requeued messages go back to
//! their place by id, which is at or near the front in the common case, where
//! `VecDeque::insert` is cheap. A queue without `x-max-priority` has exactly one level.

use std::collections::{BTreeSet, VecDeque};
use std::num::NonZeroU64;

use super::{MessageId, SharedMessage, WalPosition};

/// Levels of a priority queue: `x-max-priority` is at most 255, so levels 0..=255.
pub const PRIORITY_LEVELS_MAX: usize = 256;

/// One ready message. Kept small: it is paid once per queued message.
#[derive(Debug, Clone)]
pub struct ReadyEntry {
    pub id: MessageId,
    pub message: SharedMessage,
    /// Where the message sits in this shard's WAL when it is durable (not written yet: always None).
    pub persisted: Option<WalPosition>,
    /// True once the message was delivered with acknowledgement required and then requeued.
    pub redelivered: bool,
    /// The message's level: its `priority` property clamped to the queue's maximum.
    pub level: u8,
    /// Wall-clock milliseconds since the Unix epoch after which the message is expired: absolute,
    /// so it means the same after a restart once the WAL records it. NonZero keeps the Option
    /// free; see [`deadline`].
    pub deadline_ms: Option<NonZeroU64>,
}

/// Paid once per queued message: five words.
pub const READY_ENTRY_SIZE_MAX_BYTES: usize = 40;
const _: () = assert!(std::mem::size_of::<ReadyEntry>() <= READY_ENTRY_SIZE_MAX_BYTES);

/// A deadline as stored: 0 ms (only a test clock has one) becomes 1.
pub fn deadline(ms: u64) -> NonZeroU64 {
    NonZeroU64::new(ms).unwrap_or(NonZeroU64::MIN)
}

impl ReadyEntry {
    fn body_bytes(&self) -> u64 {
        self.message.body_len() as u64
    }
}

#[derive(Debug)]
pub struct ReadyQueue {
    /// Index = level; the highest non-empty level is served first.
    levels: Vec<VecDeque<ReadyEntry>>,
    len: usize,
    /// Sum of the body sizes of the entries, for x-max-length-bytes and memory accounting.
    bytes: u64,
    /// (deadline, id, level) of every entry with a deadline: finds expired entries anywhere.
    deadlines: BTreeSet<(u64, MessageId, u8)>,
}

impl Default for ReadyQueue {
    fn default() -> ReadyQueue {
        ReadyQueue::new(1)
    }
}

impl ReadyQueue {
    /// `levels`: 1 for a plain queue, `x-max-priority + 1` for a priority queue.
    pub fn new(levels: usize) -> ReadyQueue {
        let levels = levels.clamp(1, PRIORITY_LEVELS_MAX);
        ReadyQueue {
            levels: (0..levels).map(|_| VecDeque::new()).collect(),
            len: 0,
            bytes: 0,
            deadlines: BTreeSet::new(),
        }
    }

    /// The highest level a message may use.
    pub fn level_max(&self) -> u8 {
        u8::try_from(self.levels.len() - 1).unwrap_or(u8::MAX)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// A freshly published message: its id is the largest so far.
    pub fn push_back(&mut self, mut entry: ReadyEntry) {
        let level = self.level_index(entry.level);
        entry.level = level as u8;
        self.account_in(&entry);
        let queue = &mut self.levels[level];
        debug_assert!(queue.back().is_none_or(|last| last.id < entry.id));
        queue.push_back(entry);
    }

    /// The next message to deliver: the oldest of the highest non-empty level.
    pub fn pop_front(&mut self) -> Option<ReadyEntry> {
        let entry = self
            .levels
            .iter_mut()
            .rev()
            .find_map(|level| level.pop_front())?;
        self.account_out(&entry);
        Some(entry)
    }

    /// Puts a requeued message back in MessageId order within its level.
    pub fn insert_sorted(&mut self, mut entry: ReadyEntry) {
        let index = self.level_index(entry.level);
        entry.level = index as u8;
        self.account_in(&entry);
        let level = &mut self.levels[index];
        let at = match level.front() {
            None => 0,
            Some(first) if entry.id < first.id => 0,
            Some(_) => level.partition_point(|queued| queued.id < entry.id),
        };
        debug_assert!(level.get(at).is_none_or(|next| next.id != entry.id));
        level.insert(at, entry);
    }

    /// The earliest deadline of any ready message.
    pub fn next_deadline(&self) -> Option<u64> {
        self.deadlines.first().map(|(deadline, _, _)| *deadline)
    }

    /// Removes one message whose deadline is before `now_ms`, wherever it sits.
    pub fn pop_expired(&mut self, now_ms: u64) -> Option<ReadyEntry> {
        let &(deadline, id, level) = self.deadlines.first()?;
        if deadline >= now_ms {
            return None;
        }
        let entry = self.remove(level, id);
        debug_assert!(entry.is_some(), "deadline index names a missing entry");
        if entry.is_none() {
            // Never expected; keep the index from naming it forever.
            self.deadlines.pop_first();
        }
        entry
    }

    /// Removes every ready message, in id order.
    pub fn drain(&mut self) -> Vec<ReadyEntry> {
        let mut all: Vec<ReadyEntry> = self.levels.iter_mut().flat_map(|l| l.drain(..)).collect();
        all.sort_unstable_by_key(|entry| entry.id);
        self.len = 0;
        self.bytes = 0;
        self.deadlines.clear();
        all
    }

    fn remove(&mut self, level: u8, id: MessageId) -> Option<ReadyEntry> {
        let queue = self.levels.get_mut(usize::from(level))?;
        let entry = if queue.front().is_some_and(|first| first.id == id) {
            queue.pop_front()
        } else {
            // O(level length): only a message expiring before older ones lands here.
            let at = queue.partition_point(|queued| queued.id < id);
            match queue.get(at) {
                Some(found) if found.id == id => queue.remove(at),
                _ => None,
            }
        }?;
        self.account_out(&entry);
        Some(entry)
    }

    /// Always < `levels.len()` (which is 1..=256), so it fits a u8 and indexes safely.
    fn level_index(&self, level: u8) -> usize {
        usize::from(level).min(self.levels.len() - 1)
    }

    fn account_in(&mut self, entry: &ReadyEntry) {
        self.len += 1;
        self.bytes += entry.body_bytes();
        if let Some(deadline) = entry.deadline_ms {
            self.deadlines
                .insert((deadline.get(), entry.id, entry.level));
        }
    }

    fn account_out(&mut self, entry: &ReadyEntry) {
        self.len -= 1;
        self.bytes -= entry.body_bytes();
        if let Some(deadline) = entry.deadline_ms {
            self.deadlines
                .remove(&(deadline.get(), entry.id, entry.level));
        }
    }

    /// Test support: sorted, unique ids per level, exact counters and deadline index.
    #[cfg(test)]
    pub fn check_invariants(&self) {
        let mut len = 0;
        let mut bytes = 0;
        let mut deadlines = 0;
        for (index, level) in self.levels.iter().enumerate() {
            for (left, right) in level.iter().zip(level.iter().skip(1)) {
                assert!(left.id < right.id, "ready queue out of order");
            }
            for entry in level {
                assert_eq!(usize::from(entry.level), index, "entry on the wrong level");
                len += 1;
                bytes += entry.body_bytes();
                if let Some(deadline) = entry.deadline_ms {
                    deadlines += 1;
                    assert!(self
                        .deadlines
                        .contains(&(deadline.get(), entry.id, entry.level)));
                }
            }
        }
        assert_eq!(len, self.len);
        assert_eq!(bytes, self.bytes);
        assert_eq!(deadlines, self.deadlines.len());
    }

    /// Test support: ids in delivery order.
    #[cfg(test)]
    pub fn ids(&self) -> Vec<MessageId> {
        self.levels
            .iter()
            .rev()
            .flat_map(|level| level.iter().map(|entry| entry.id))
            .collect()
    }
}
