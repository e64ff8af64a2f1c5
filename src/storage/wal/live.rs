//! Which segments still matter: live enqueues per segment, and which segments' settles must
//! outlive which enqueues. Pure bookkeeping, shared by recovery and the writer.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{Lsn, RecordPos};

/// (queue, message) as named by enqueue and settle records.
pub type MessageKey = (u64, u64);

#[derive(Debug, Default, Clone)]
pub struct SegmentLive {
    pub live_enqueues: u64,
    /// On-disk bytes of those live enqueues: what copy-forward would have to rewrite.
    pub live_bytes: u64,
    /// Topology records are opaque to the WAL and never superseded here, so they pin their
    /// segment (see the compaction notes in `writer`).
    pub topology_records: u64,
    /// Older segments holding enqueues this segment's settles removed. While such a segment
    /// exists, deleting this one would resurrect those enqueues on recovery.
    pub settle_targets: BTreeSet<u64>,
}

#[derive(Debug, Default)]
pub struct Liveness {
    segments: BTreeMap<u64, SegmentLive>,
    /// Where the current copy of each live enqueue is.
    index: HashMap<MessageKey, LiveEnqueue>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveEnqueue {
    pub pos: RecordPos,
    pub lsn: Lsn,
}

impl Liveness {
    pub fn add_segment(&mut self, id: u64) {
        self.segments.entry(id).or_default();
    }

    /// Returns the LSN of an earlier enqueue of the same key that this one replaces, if any
    /// (copy-forward re-appends a record; the newest copy wins).
    pub fn on_enqueue(&mut self, pos: RecordPos, key: MessageKey, lsn: Lsn) -> Option<Lsn> {
        let replaced = self.index.insert(key, LiveEnqueue { pos, lsn });
        if let Some(old) = replaced {
            self.dec_live(old.pos);
        }
        if let Some(s) = self.segments.get_mut(&pos.segment) {
            s.live_enqueues += 1;
            s.live_bytes += u64::from(pos.len);
        }
        replaced.map(|old| old.lsn)
    }

    /// The current copy of a live enqueue.
    pub fn get(&self, key: MessageKey) -> Option<LiveEnqueue> {
        self.index.get(&key).copied()
    }

    /// Returns the settled enqueue's LSN, or None if the key was not live (a duplicate settle,
    /// or one whose enqueue was already reclaimed).
    pub fn on_settle(&mut self, segment: u64, key: MessageKey) -> Option<Lsn> {
        let LiveEnqueue { pos, lsn } = self.index.remove(&key)?;
        self.dec_live(pos);
        let target = pos.segment;
        if target != segment {
            if let Some(s) = self.segments.get_mut(&segment) {
                s.settle_targets.insert(target);
            }
        }
        Some(lsn)
    }

    pub fn on_topology(&mut self, segment: u64) {
        if let Some(s) = self.segments.get_mut(&segment) {
            s.topology_records += 1;
        }
    }

    fn dec_live(&mut self, pos: RecordPos) {
        if let Some(s) = self.segments.get_mut(&pos.segment) {
            debug_assert!(s.live_enqueues > 0 && s.live_bytes >= u64::from(pos.len));
            s.live_enqueues = s.live_enqueues.saturating_sub(1);
            s.live_bytes = s.live_bytes.saturating_sub(u64::from(pos.len));
        }
    }

    /// Segments below `current` that may be deleted, in the order they must be deleted
    /// (ascending: a settle's target goes before the segment holding the settle).
    pub fn reclaimable(&self, current: u64) -> Vec<u64> {
        let mut chosen: BTreeSet<u64> = BTreeSet::new();
        // Fixpoint: choosing a segment may free a later one whose settles targeted it. Each
        // pass either chooses a segment or stops, so passes are bounded by the segment count.
        loop {
            let before = chosen.len();
            for (&id, s) in self.segments.range(..current) {
                if chosen.contains(&id) || s.live_enqueues != 0 || s.topology_records != 0 {
                    continue;
                }
                let targets_gone = s
                    .settle_targets
                    .iter()
                    .all(|t| chosen.contains(t) || !self.segments.contains_key(t));
                if targets_gone {
                    chosen.insert(id);
                }
            }
            if chosen.len() == before {
                break;
            }
        }
        chosen.into_iter().collect()
    }

    pub fn remove_segment(&mut self, id: u64) {
        let removed = self.segments.remove(&id);
        debug_assert!(removed.is_none_or(|s| s.live_enqueues == 0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(segment: u64) -> RecordPos {
        RecordPos {
            segment,
            offset: 4096,
            len: 64,
        }
    }

    #[test]
    fn settle_in_later_segment_holds_it_until_target_goes() {
        let mut l = Liveness::default();
        for id in 1..=3 {
            l.add_segment(id);
        }
        l.on_enqueue(at(1), (1, 1), 1);
        l.on_enqueue(at(1), (1, 2), 2);
        l.on_enqueue(at(2), (1, 3), 3);
        // Segment 2 settles message 1 (in segment 1) and its own message 3.
        l.on_settle(2, (1, 1));
        l.on_settle(2, (1, 3));
        // 2 has no live enqueues but its settle targets 1, which still holds message 2.
        assert_eq!(l.reclaimable(3), Vec::<u64>::new());
        l.on_settle(3, (1, 2));
        assert_eq!(l.reclaimable(3), vec![1, 2]);
        assert_eq!(l.on_settle(3, (1, 2)), None, "double settle is ignored");
    }

    #[test]
    fn topology_pins_and_current_is_never_reclaimed() {
        let mut l = Liveness::default();
        l.add_segment(1);
        l.add_segment(2);
        l.on_topology(1);
        assert!(l.reclaimable(2).is_empty());
        assert!(l.reclaimable(10).contains(&2));
    }
}
