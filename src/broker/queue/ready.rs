//! The ready messages of a queue: one FIFO per priority level, each kept sorted by MessageId,
//! plus an index of the entries that carry a deadline (TTL).
//!
//! Publishes append at the back of their level (ids only grow); requeued messages go back to
//! their place by id, which is at or near the front in the common case, where
//! `VecDeque::insert` is cheap. A queue without `x-max-priority` has exactly one level.
//!
//! Paging: an entry is either loaded (its `Arc<Message>` is here) or paged (index only: the
//! body lives in the shard's log). Each level tracks the run of loaded entries at its front
//! (what can be delivered without a read) and how many loaded entries sit behind the first
//! paged one. Pages go out from the back (newest first) and come in at the front, so in the
//! steady state a level is `[loaded run][paged...]` and both ends are O(1) to find.
//! The read-ahead window (the first `PAGE_READ_AHEAD_MESSAGES` / `PAGE_READ_AHEAD_BYTES` in
//! delivery order) is what the loader fills and what page-out never takes, so the two never
//! undo each other's work.

use crate::limits::{PAGE_OUT_SCAN_MAX, PAGE_READ_AHEAD_BYTES, PRIORITY_LEVELS_MAX};
use std::collections::{BTreeSet, VecDeque};
use std::num::NonZeroU64;

use super::{MessageId, SharedMessage, WalPosition};
use crate::limits::MESSAGE_SIZE_MAX_BYTES;

/// Messages at the head of a paging queue kept loaded ahead of delivery.
pub const PAGE_READ_AHEAD_MESSAGES: usize = 256;

// A body length always fits the entry's u32.
const _: () = assert!(MESSAGE_SIZE_MAX_BYTES <= u32::MAX as u64);

/// One ready message. Kept small: it is paid once per queued message, paged or not.
#[derive(Debug, Clone)]
pub struct ReadyEntry {
    pub id: MessageId,
    /// None: paged out, the body is only in the log (at `persisted`).
    pub message: Option<SharedMessage>,
    /// Body length, kept when paged: length limits count paged bodies too.
    pub body_bytes: u32,
    /// Where the message sits in this shard's log (its LSN), when it was written there: a
    /// persistent message of a durable queue, or any message once paged out.
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
    pub fn body_len(message: &SharedMessage) -> u32 {
        u32::try_from(message.body_len()).unwrap_or(u32::MAX)
    }

    fn body_bytes(&self) -> u64 {
        u64::from(self.body_bytes)
    }

    pub fn is_paged(&self) -> bool {
        self.message.is_none()
    }
}

/// Names a paged entry for the loader: where to put its body once read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PagedRef {
    pub id: MessageId,
    pub level: u8,
}

#[derive(Debug, Default)]
struct Level {
    entries: VecDeque<ReadyEntry>,
    /// Length of the run of loaded entries at the front (maximal: the next one is paged).
    loaded_front: usize,
    /// Body bytes of that run.
    front_bytes: u64,
    /// Loaded entries after the run (behind a paged one).
    loaded_behind: usize,
}

impl Level {
    fn find(&self, id: MessageId) -> Option<usize> {
        if self.entries.front().is_some_and(|first| first.id == id) {
            return Some(0);
        }
        let at = self.entries.partition_point(|queued| queued.id < id);
        self.entries
            .get(at)
            .is_some_and(|e| e.id == id)
            .then_some(at)
    }

    fn insert_at(&mut self, at: usize, entry: ReadyEntry) {
        if entry.is_paged() {
            if at < self.loaded_front {
                self.cut_front(at);
            }
        } else if at <= self.loaded_front {
            // By maximality the entry now after it is paged (or absent): the run just grows.
            self.loaded_front += 1;
            self.front_bytes += entry.body_bytes();
        } else {
            self.loaded_behind += 1;
        }
        self.entries.insert(at, entry);
    }

    fn remove_at(&mut self, at: usize) -> Option<ReadyEntry> {
        let entry = self.entries.remove(at)?;
        if !entry.is_paged() {
            if at < self.loaded_front {
                self.loaded_front -= 1;
                self.front_bytes -= entry.body_bytes();
            } else {
                self.loaded_behind -= 1;
            }
        } else if at == self.loaded_front {
            self.extend_front();
        }
        Some(entry)
    }

    /// Paged -> loaded.
    fn fill_at(&mut self, at: usize, message: SharedMessage) -> bool {
        let Some(entry) = self.entries.get_mut(at) else {
            return false;
        };
        if !entry.is_paged() {
            return false;
        }
        entry.message = Some(message);
        let bytes = entry.body_bytes();
        if at == self.loaded_front {
            self.loaded_front += 1;
            self.front_bytes += bytes;
            self.extend_front();
        } else {
            self.loaded_behind += 1;
        }
        true
    }

    /// Loaded -> paged, now at `persisted` in the log.
    fn page_out_at(&mut self, at: usize, persisted: WalPosition) -> Option<u64> {
        if self.entries.get(at).is_none_or(ReadyEntry::is_paged) {
            return None;
        }
        if at < self.loaded_front {
            self.cut_front(at);
        }
        self.loaded_behind -= 1;
        let entry = self.entries.get_mut(at)?;
        entry.message = None;
        entry.persisted = Some(persisted);
        Some(entry.body_bytes())
    }

    /// The front run ends at `at` (exclusive): the entries in `[at, loaded_front)` now count
    /// as loaded behind. O(loaded_front - at), which is 1 for the usual page-out from its end.
    fn cut_front(&mut self, at: usize) {
        for entry in self.entries.range(at..self.loaded_front) {
            self.front_bytes -= entry.body_bytes();
        }
        self.loaded_behind += self.loaded_front - at;
        self.loaded_front = at;
    }

    fn extend_front(&mut self) {
        while let Some(entry) = self.entries.get(self.loaded_front) {
            if entry.is_paged() {
                break;
            }
            self.loaded_front += 1;
            self.front_bytes += entry.body_bytes();
            self.loaded_behind -= 1;
        }
    }

    fn fully_loaded(&self) -> bool {
        self.loaded_front == self.entries.len()
    }

    /// The newest loaded entry behind a paged one, if one is within `PAGE_OUT_SCAN_MAX` of
    /// the back.
    fn newest_loaded_behind(&self) -> Option<usize> {
        if self.loaded_behind == 0 {
            return None;
        }
        let len = self.entries.len();
        (self.loaded_front..len)
            .rev()
            .take(PAGE_OUT_SCAN_MAX)
            .find(|&at| self.entries.get(at).is_some_and(|e| !e.is_paged()))
    }
}

#[derive(Debug)]
pub struct ReadyQueue {
    /// Index = level; the highest non-empty level is served first.
    levels: Vec<Level>,
    len: usize,
    /// Sum of the body sizes of the entries, paged ones included, for x-max-length-bytes.
    bytes: u64,
    /// Sum of the body sizes of the loaded entries: what the queue holds in memory.
    loaded_bytes: u64,
    /// Paged entries.
    paged: usize,
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
            levels: (0..levels).map(|_| Level::default()).collect(),
            len: 0,
            bytes: 0,
            loaded_bytes: 0,
            paged: 0,
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

    pub fn loaded_bytes(&self) -> u64 {
        self.loaded_bytes
    }

    pub fn paged_len(&self) -> usize {
        self.paged
    }

    /// A freshly published message: its id is the largest so far.
    pub fn push_back(&mut self, mut entry: ReadyEntry) {
        let level = self.level_index(entry.level);
        entry.level = level as u8;
        self.account_in(&entry);
        let queue = &mut self.levels[level];
        // Settles and requeues find messages by id with a binary search.
        assert!(
            queue.entries.back().is_none_or(|last| last.id < entry.id),
            "ready queue out of id order"
        );
        let at = queue.entries.len();
        queue.insert_at(at, entry);
    }

    /// The next message in delivery order (loaded or not): the oldest of the highest
    /// non-empty level.
    pub fn pop_front(&mut self) -> Option<ReadyEntry> {
        let entry = self
            .levels
            .iter_mut()
            .rev()
            .find(|level| !level.entries.is_empty())?
            .remove_at(0)?;
        self.account_out(&entry);
        Some(entry)
    }

    /// The next message to deliver, when it is paged: delivery waits for the loader.
    pub fn head_paged(&self) -> Option<PagedRef> {
        let level = self.levels.iter().rev().find(|l| !l.entries.is_empty())?;
        let head = level.entries.front()?;
        head.is_paged().then_some(PagedRef {
            id: head.id,
            level: head.level,
        })
    }

    /// Body bytes of the next message in delivery order (loaded or not).
    pub fn head_body_bytes(&self) -> Option<u64> {
        let level = self.levels.iter().rev().find(|l| !l.entries.is_empty())?;
        level.entries.front().map(ReadyEntry::body_bytes)
    }

    /// Puts a requeued (or recovered) message back in MessageId order within its level.
    pub fn insert_sorted(&mut self, mut entry: ReadyEntry) {
        let index = self.level_index(entry.level);
        entry.level = index as u8;
        self.account_in(&entry);
        let level = &mut self.levels[index];
        let at = match level.entries.front() {
            None => 0,
            Some(first) if entry.id < first.id => 0,
            Some(_) => level.entries.partition_point(|queued| queued.id < entry.id),
        };
        assert!(
            level.entries.get(at).is_none_or(|next| next.id != entry.id),
            "message {} ready twice",
            entry.id
        );
        level.insert_at(at, entry);
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
        let mut all: Vec<ReadyEntry> = Vec::with_capacity(self.len);
        for level in &mut self.levels {
            all.extend(level.entries.drain(..));
            *level = Level::default();
        }
        all.sort_unstable_by_key(|entry| entry.id);
        self.len = 0;
        self.bytes = 0;
        self.loaded_bytes = 0;
        self.paged = 0;
        self.deadlines.clear();
        all
    }

    /// Removes one entry (a paged one whose body could not be read back).
    pub fn remove(&mut self, level: u8, id: MessageId) -> Option<ReadyEntry> {
        let queue = self.levels.get_mut(usize::from(level))?;
        let at = queue.find(id)?;
        let entry = queue.remove_at(at)?;
        self.account_out(&entry);
        Some(entry)
    }

    /// Gives a paged entry its body back. False when it is gone or already loaded.
    pub fn fill(&mut self, at: PagedRef, message: SharedMessage) -> bool {
        let Some(level) = self.levels.get_mut(usize::from(at.level)) else {
            return false;
        };
        let Some(index) = level.find(at.id) else {
            return false;
        };
        if !level.fill_at(index, message) {
            return false;
        }
        let bytes = level.entries.get(index).map_or(0, ReadyEntry::body_bytes);
        self.loaded_bytes += bytes;
        self.paged -= 1;
        true
    }

    /// Drops the body of a loaded entry whose record is at `persisted` in the log.
    pub fn page_out(&mut self, at: PagedRef, persisted: WalPosition) -> bool {
        let Some(level) = self.levels.get_mut(usize::from(at.level)) else {
            return false;
        };
        let Some(index) = level.find(at.id) else {
            return false;
        };
        let Some(bytes) = level.page_out_at(index, persisted) else {
            return false;
        };
        self.loaded_bytes -= bytes;
        self.paged += 1;
        true
    }

    /// The loaded entry to page out next while more than `budget_bytes` are loaded: the newest
    /// in delivery order outside the read-ahead window. None when within budget or when
    /// everything loaded is within the window.
    pub fn page_out_candidate(&self, budget_bytes: u64) -> Option<&ReadyEntry> {
        if self.loaded_bytes <= budget_bytes {
            return None;
        }
        // Lowest level first: it is served last.
        for (index, level) in self.levels.iter().enumerate() {
            if let Some(at) = level.newest_loaded_behind() {
                return level.entries.get(at);
            }
            if level.loaded_front == 0 {
                continue;
            }
            let last = level.loaded_front - 1;
            let entry = level.entries.get(last)?;
            if self.in_read_ahead(index, last, level.front_bytes - entry.body_bytes()) {
                // Every loaded entry above is further ahead: protected too.
                return None;
            }
            return Some(entry);
        }
        None
    }

    /// Whether the entry at `at` of the front run of level `index`, with `bytes_before` body
    /// bytes ahead of it in its level, is within the read-ahead window.
    fn in_read_ahead(&self, index: usize, at: usize, bytes_before: u64) -> bool {
        let mut messages = at;
        let mut bytes = bytes_before;
        for level in self.levels.iter().skip(index + 1) {
            if !level.fully_loaded() {
                return false; // behind a paged entry: the loader has not got there
            }
            messages += level.entries.len();
            bytes += level.front_bytes;
        }
        messages < PAGE_READ_AHEAD_MESSAGES && bytes < PAGE_READ_AHEAD_BYTES
    }

    /// Appends to `out` (at most `max`) the paged entries the loader should read now: those
    /// within the read-ahead window, in delivery order. Empty when the window is loaded.
    pub fn to_load(&self, max: usize, out: &mut Vec<PagedRef>) {
        let mut messages = 0usize;
        let mut bytes = 0u64;
        for level in self.levels.iter().rev() {
            if level.fully_loaded() {
                messages += level.entries.len();
                bytes += level.front_bytes;
                continue;
            }
            messages += level.loaded_front;
            bytes += level.front_bytes;
            // Only this level: lower ones wait until it is loaded through.
            for entry in level.entries.range(level.loaded_front..) {
                let room = messages == 0
                    || (messages < PAGE_READ_AHEAD_MESSAGES && bytes < PAGE_READ_AHEAD_BYTES);
                if out.len() >= max || !room {
                    return;
                }
                if entry.is_paged() {
                    out.push(PagedRef {
                        id: entry.id,
                        level: entry.level,
                    });
                }
                messages += 1;
                bytes += entry.body_bytes();
            }
            return;
        }
    }

    /// True when `to_load` would name something.
    pub fn wants_load(&self) -> bool {
        if self.paged == 0 {
            return false;
        }
        let mut one = Vec::with_capacity(1);
        self.to_load(1, &mut one);
        !one.is_empty()
    }

    /// Always < `levels.len()` (which is 1..=256), so it fits a u8 and indexes safely.
    fn level_index(&self, level: u8) -> usize {
        usize::from(level).min(self.levels.len() - 1)
    }

    fn account_in(&mut self, entry: &ReadyEntry) {
        self.len += 1;
        self.bytes += entry.body_bytes();
        if entry.is_paged() {
            self.paged += 1;
        } else {
            self.loaded_bytes += entry.body_bytes();
        }
        if let Some(deadline) = entry.deadline_ms {
            self.deadlines
                .insert((deadline.get(), entry.id, entry.level));
        }
    }

    fn account_out(&mut self, entry: &ReadyEntry) {
        self.len -= 1;
        self.bytes -= entry.body_bytes();
        if entry.is_paged() {
            self.paged -= 1;
        } else {
            self.loaded_bytes -= entry.body_bytes();
        }
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
        let mut loaded_bytes = 0;
        let mut paged = 0;
        let mut deadlines = 0;
        for (index, level) in self.levels.iter().enumerate() {
            let entries = &level.entries;
            for (left, right) in entries.iter().zip(entries.iter().skip(1)) {
                assert!(left.id < right.id, "ready queue out of order");
            }
            let run = entries.iter().take_while(|e| !e.is_paged()).count();
            assert_eq!(level.loaded_front, run, "front run length");
            let run_bytes: u64 = entries.iter().take(run).map(ReadyEntry::body_bytes).sum();
            assert_eq!(level.front_bytes, run_bytes, "front run bytes");
            let behind = entries.iter().skip(run).filter(|e| !e.is_paged()).count();
            assert_eq!(level.loaded_behind, behind, "loaded entries behind");
            for entry in entries {
                assert_eq!(usize::from(entry.level), index, "entry on the wrong level");
                len += 1;
                bytes += entry.body_bytes();
                match &entry.message {
                    Some(message) => {
                        assert_eq!(ReadyEntry::body_len(message), entry.body_bytes);
                        loaded_bytes += entry.body_bytes();
                    }
                    None => {
                        assert!(entry.persisted.is_some(), "paged entry not in the log");
                        paged += 1;
                    }
                }
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
        assert_eq!(loaded_bytes, self.loaded_bytes);
        assert_eq!(paged, self.paged);
        assert_eq!(deadlines, self.deadlines.len());
    }

    /// Test support: ids in delivery order.
    #[cfg(test)]
    pub fn ids(&self) -> Vec<MessageId> {
        self.levels
            .iter()
            .rev()
            .flat_map(|level| level.entries.iter().map(|entry| entry.id))
            .collect()
    }

    /// Test support: ids of the paged entries in delivery order.
    #[cfg(test)]
    pub fn paged_ids(&self) -> Vec<MessageId> {
        self.levels
            .iter()
            .rev()
            .flat_map(|level| level.entries.iter().filter(|e| e.is_paged()).map(|e| e.id))
            .collect()
    }
}

#[cfg(test)]
#[path = "ready_tests.rs"]
mod tests;
