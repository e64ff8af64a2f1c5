//! A queue over its memory budget: which ready messages are paged out (index only, body in the
//! shard's log), which the host should load back, and what happens to a paged message that
//! leaves without being delivered. Sans-IO: the host does the log writes and reads.

use super::ready::ReadyEntry;
use super::{DeathReason, MessageId, PageOut, PagedRef, Queue, SharedMessage, WalPosition};

impl Queue {
    /// The next loaded message to page out, while the queue holds more than its budget in
    /// memory. The host writes it to the log unless it is there (`persisted`), then calls
    /// [`Queue::page_out`]; calling again before that names the same message.
    pub fn page_out_candidate(&self) -> Option<PageOut> {
        let entry = self.ready.page_out_candidate(self.memory_bytes_max)?;
        Some(PageOut {
            at: PagedRef {
                id: entry.id,
                level: entry.level,
            },
            message: entry.message.clone()?,
            persisted: entry.persisted,
        })
    }

    /// Drops the body of a ready message whose record is at `persisted` in the log. From now
    /// on it leaves the queue through `forget` like any persisted message (its settle is
    /// logged). False when it is no longer ready or already paged.
    pub fn page_out(&mut self, at: PagedRef, persisted: WalPosition) -> bool {
        self.ready.page_out(at, persisted)
    }

    /// The next message in delivery order, when it is paged: deliveries wait for it.
    pub fn head_paged(&self) -> Option<PagedRef> {
        self.ready.head_paged()
    }

    /// Appends to `out` (at most `max`) the paged messages to read back now, in delivery order.
    pub fn to_load(&self, max: usize, out: &mut Vec<PagedRef>) {
        self.ready.to_load(max, out);
    }

    pub fn wants_load(&self) -> bool {
        self.ready.wants_load()
    }

    /// A body read back from the log. False when the message left meanwhile (or was loaded).
    pub fn fill(&mut self, at: PagedRef, message: SharedMessage) -> bool {
        self.ready.fill(at, message)
    }

    /// A paged message whose body cannot be read back: it leaves the queue (its settle is
    /// logged so it does not come back at recovery either).
    pub fn drop_unreadable(&mut self, at: PagedRef) -> bool {
        match self.ready.remove(at.level, at.id) {
            Some(entry) => {
                self.forget(entry.id, entry.persisted);
                true
            }
            None => false,
        }
    }

    /// Paged messages dropped (expired, over the length limit) since the last call, for a
    /// queue with a dead-letter exchange: read each back, dead-letter it, then settle it.
    pub fn take_paged_dropped(&mut self) -> Vec<(MessageId, DeathReason)> {
        std::mem::take(&mut self.paged_dropped)
    }

    /// Body bytes of the ready messages held in memory.
    pub fn loaded_bytes(&self) -> u64 {
        self.ready.loaded_bytes()
    }

    /// Ready messages whose body is only in the log.
    pub fn paged_count(&self) -> usize {
        self.ready.paged_len()
    }

    /// A ready message leaves without being delivered: its message for dead-lettering when
    /// loaded. A paged one is settled at once, or, when it is to be dead-lettered, handed to
    /// the host (`take_paged_dropped`), which needs its record to read it first.
    pub(super) fn drop_entry(
        &mut self,
        entry: ReadyEntry,
        reason: DeathReason,
    ) -> Option<SharedMessage> {
        match entry.message {
            Some(message) => {
                self.forget(entry.id, entry.persisted);
                Some(message)
            }
            None if self.config.dead_letter_exchange.is_some() => {
                if !self.delivery_counts.is_empty() {
                    self.delivery_counts.remove(&entry.id);
                }
                self.paged_dropped.push((entry.id, reason));
                None
            }
            None => {
                self.forget(entry.id, entry.persisted);
                None
            }
        }
    }
}
