//! The ready messages of a queue, kept sorted by MessageId.
//!
//! Publishes append at the back (ids only grow); requeued messages go back to their place by
//! id, which is at or near the front in the common case, where `VecDeque::insert` is cheap.

use std::collections::VecDeque;

use super::{MessageId, SharedMessage, WalPosition};

/// One ready message. Kept small: it is paid once per queued message.
#[derive(Debug, Clone)]
pub struct ReadyEntry {
    pub id: MessageId,
    pub message: SharedMessage,
    /// Where the message sits in this shard's WAL when it is durable (not written yet: always None).
    pub persisted: Option<WalPosition>,
    /// True once the message was delivered with acknowledgement required and then requeued.
    pub redelivered: bool,
}

impl ReadyEntry {
    fn body_bytes(&self) -> u64 {
        self.message.body.len() as u64
    }
}

#[derive(Debug, Default)]
pub struct ReadyQueue {
    entries: VecDeque<ReadyEntry>,
    /// Sum of the body sizes of `entries`, for x-max-length-bytes and memory accounting.
    bytes: u64,
}

impl ReadyQueue {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// A freshly published message: its id is the largest so far.
    pub fn push_back(&mut self, entry: ReadyEntry) {
        debug_assert!(self.entries.back().is_none_or(|last| last.id < entry.id));
        self.bytes += entry.body_bytes();
        self.entries.push_back(entry);
    }

    pub fn pop_front(&mut self) -> Option<ReadyEntry> {
        let entry = self.entries.pop_front()?;
        self.bytes -= entry.body_bytes();
        Some(entry)
    }

    /// Puts a requeued message back in MessageId order.
    pub fn insert_sorted(&mut self, entry: ReadyEntry) {
        let at = match self.entries.front() {
            None => 0,
            Some(first) if entry.id < first.id => 0,
            Some(_) => self.entries.partition_point(|queued| queued.id < entry.id),
        };
        debug_assert!(self.entries.get(at).is_none_or(|next| next.id != entry.id));
        self.bytes += entry.body_bytes();
        self.entries.insert(at, entry);
    }

    /// Removes every ready message, in id order.
    pub fn drain(&mut self) -> impl Iterator<Item = ReadyEntry> + '_ {
        self.bytes = 0;
        self.entries.drain(..)
    }

    /// Test support: sorted, unique ids and an exact byte total.
    #[cfg(test)]
    pub fn check_invariants(&self) {
        for (left, right) in self.entries.iter().zip(self.entries.iter().skip(1)) {
            assert!(left.id < right.id, "ready queue out of order");
        }
        let bytes: u64 = self.entries.iter().map(ReadyEntry::body_bytes).sum();
        assert_eq!(bytes, self.bytes);
    }

    #[cfg(test)]
    pub fn ids(&self) -> Vec<MessageId> {
        self.entries.iter().map(|entry| entry.id).collect()
    }
}
