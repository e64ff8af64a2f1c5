//! Which segments still matter: live enqueues per segment, and which segments' settles must
//! outlive which enqueues. Pure bookkeeping, shared by recovery and the writer.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;

use super::{Lsn, RecordPos};

/// (queue, message) as named by enqueue and settle records.
pub type MessageKey = (u64, u64);

#[derive(Debug, Default, Clone)]
pub struct SegmentLive {
    /// Live enqueue records, and live parts of chained bodies (each pins its segment too).
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
    /// The body parts of the live enqueues that are chained, in order (their `EnqueueChained`
    /// record is the one in `index`). Parts are counted live from the moment they are appended
    /// (`on_part`), so a segment holding parts of a chain still being written is never reclaimed.
    chains: HashMap<MessageKey, Rc<[RecordPos]>>,
}

/// When a segment is worth copying forward (see `Liveness::compaction_plan`).
#[derive(Debug, Clone, Copy)]
pub struct CompactionPolicy {
    pub current: u64,
    pub age_segments_min: u64,
    pub live_bytes_max: u64,
    /// Dead segments (nothing live) kept only by settle chains that end at one live segment:
    /// this many and that segment is emptied, however dense.
    pub pinned_segments_min: usize,
    pub bytes_max: u64,
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
            self.drop_chain(key);
        }
        self.inc_live(pos);
        replaced.map(|old| old.lsn)
    }

    /// A chained enqueue's terminal record; its `parts` were counted by `on_part` already.
    pub fn on_enqueue_chained(
        &mut self,
        pos: RecordPos,
        key: MessageKey,
        lsn: Lsn,
        parts: Rc<[RecordPos]>,
    ) -> Option<Lsn> {
        let replaced = self.on_enqueue(pos, key, lsn);
        self.chains.insert(key, parts);
        replaced
    }

    /// A body part was appended (or found by recovery): it pins its segment until its chain is
    /// settled, replaced, or given up (`drop_parts`).
    pub fn on_part(&mut self, pos: RecordPos) {
        self.inc_live(pos);
    }

    /// Parts of a chain that will never be terminated (given up, or cut off at recovery).
    pub fn drop_parts(&mut self, parts: &[RecordPos]) {
        for &pos in parts {
            self.dec_live(pos);
        }
    }

    /// The body parts of a live chained enqueue, in order.
    pub fn parts(&self, key: MessageKey) -> Option<Rc<[RecordPos]>> {
        self.chains.get(&key).cloned()
    }

    fn drop_chain(&mut self, key: MessageKey) {
        if let Some(parts) = self.chains.remove(&key) {
            self.drop_parts(&parts);
        }
    }

    fn inc_live(&mut self, pos: RecordPos) {
        if let Some(s) = self.segments.get_mut(&pos.segment) {
            s.live_enqueues += 1;
            s.live_bytes += u64::from(pos.len);
        }
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
        // Only the terminal's segment must outlive this settle: parts without their terminal
        // are ignored by recovery.
        self.drop_chain(key);
        let target = pos.segment;
        if target != segment {
            if let Some(s) = self.segments.get_mut(&segment) {
                s.settle_targets.insert(target);
            }
        }
        Some(lsn)
    }

    pub fn live_enqueues(&self, segment: u64) -> u64 {
        self.segments.get(&segment).map_or(0, |s| s.live_enqueues)
    }

    /// The live enqueues copy-forward should move now, in disk order, until `bytes_max` (at
    /// least one record, so a large one is never stuck). They come from the oldest segment that
    /// is either sparse (at least `age_segments_min` behind `current`, live bytes at most
    /// `live_bytes_max`) or the root of settle chains pinning `pinned_segments_min` dead
    /// segments: emptying it frees them all.
    pub fn compaction_plan(&self, p: CompactionPolicy) -> Vec<(MessageKey, LiveEnqueue)> {
        let sparse = self
            .segments
            .iter()
            .take_while(|(&id, _)| id.saturating_add(p.age_segments_min) <= p.current)
            .find(|(_, s)| s.live_enqueues > 0 && s.live_bytes <= p.live_bytes_max)
            .map(|(&id, _)| id);
        let Some(oldest) = sparse.into_iter().chain(self.chain_root(p)).min() else {
            return Vec::new();
        };
        // One pass over the index, only when there is something to move; the oldest segment
        // alone is taken per round so a round's reads stay within one file.
        // A chained enqueue moves as a whole (parts and terminal) when any of it is there.
        let mut plan: Vec<(MessageKey, LiveEnqueue)> = self
            .index
            .iter()
            .filter(|(k, e)| e.pos.segment == oldest || self.chain_touches(**k, oldest))
            .map(|(k, e)| (*k, *e))
            .collect();
        plan.sort_unstable_by_key(|(k, e)| (self.first_offset(*k, *e, oldest), e.pos.offset));
        let mut bytes = 0u64;
        let keep = plan
            .iter()
            .take_while(|(k, e)| {
                let first = bytes == 0;
                bytes += self.enqueue_bytes(*k, *e);
                first || bytes <= p.bytes_max
            })
            .count();
        plan.truncate(keep);
        plan
    }

    fn chain_touches(&self, key: MessageKey, segment: u64) -> bool {
        self.chains
            .get(&key)
            .is_some_and(|parts| parts.iter().any(|p| p.segment == segment))
    }

    /// Where the enqueue's bytes start in `segment` (its first part there, else its record).
    fn first_offset(&self, key: MessageKey, e: LiveEnqueue, segment: u64) -> u64 {
        self.chains
            .get(&key)
            .and_then(|parts| parts.iter().find(|p| p.segment == segment))
            .map_or(e.pos.offset, |p| p.offset)
    }

    /// On-disk bytes of a live enqueue, its parts included.
    pub fn enqueue_bytes(&self, key: MessageKey, e: LiveEnqueue) -> u64 {
        let parts = self
            .chains
            .get(&key)
            .map_or(0, |parts| parts.iter().map(|p| u64::from(p.len)).sum());
        u64::from(e.pos.len) + parts
    }

    /// The oldest live segment that dead segments' settles target, if at least
    /// `pinned_segments_min` dead segments still wait for a target.
    fn chain_root(&self, p: CompactionPolicy) -> Option<u64> {
        let mut pinned = 0usize;
        let mut root: Option<u64> = None;
        for (_, s) in self.segments.range(..p.current) {
            if s.live_enqueues != 0 || s.topology_records != 0 {
                continue;
            }
            let mut waiting = false;
            for t in &s.settle_targets {
                let Some(target) = self.segments.get(t) else {
                    continue;
                };
                waiting = true;
                if target.live_enqueues > 0 {
                    root = Some(root.map_or(*t, |r| r.min(*t)));
                }
            }
            pinned += usize::from(waiting);
        }
        root.filter(|_| pinned >= p.pinned_segments_min)
    }

    pub fn on_topology(&mut self, segment: u64) {
        if let Some(s) = self.segments.get_mut(&segment) {
            s.topology_records += 1;
        }
    }

    fn dec_live(&mut self, pos: RecordPos) {
        if let Some(s) = self.segments.get_mut(&pos.segment) {
            // Counts below the truth would let compaction delete a segment with live records.
            assert!(
                s.live_enqueues > 0 && s.live_bytes >= u64::from(pos.len),
                "segment {} live count underflow",
                pos.segment
            );
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

    pub fn has_segment(&self, id: u64) -> bool {
        self.segments.contains_key(&id)
    }

    pub fn remove_segment(&mut self, id: u64) {
        let removed = self.segments.remove(&id);
        assert!(
            removed.is_none_or(|s| s.live_enqueues == 0),
            "segment {id} removed with live records"
        );
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

    #[test]
    fn compaction_plan_takes_the_oldest_sparse_segment_within_bounds() {
        let mut l = Liveness::default();
        for id in 1..=8 {
            l.add_segment(id);
        }
        let at = |segment, offset| RecordPos {
            segment,
            offset,
            len: 100,
        };
        // Segment 1: dense (5 records); 2: sparse (3 records); 7: sparse but too young.
        for m in 0..5 {
            l.on_enqueue(at(1, 4096 + m * 100), (1, m), m + 1);
        }
        for m in 0..3 {
            l.on_enqueue(at(2, 8192 - m * 100), (2, m), 10 + m);
        }
        l.on_enqueue(at(7, 4096), (3, 0), 20);
        let policy = CompactionPolicy {
            current: 8,
            age_segments_min: 4,
            live_bytes_max: 300,
            pinned_segments_min: 2,
            bytes_max: 150,
        };
        let plan = l.compaction_plan(policy);
        // Disk order, and the byte bound still lets one whole record through... plus none more.
        assert_eq!(plan.len(), 1);
        assert_eq!(plan[0].1.pos, at(2, 8192 - 200));
        let plan = l.compaction_plan(CompactionPolicy {
            bytes_max: 1000,
            ..policy
        });
        let keys: Vec<MessageKey> = plan.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, vec![(2, 2), (2, 1), (2, 0)]);
        // Copied forward: the key now lives in 8 and segment 2 has nothing left to move.
        for (k, e) in plan {
            l.on_enqueue(at(8, e.pos.offset), k, e.lsn + 100);
        }
        assert!(l.compaction_plan(policy).is_empty());
        assert_eq!(l.live_enqueues(2), 0);
    }

    #[test]
    fn compaction_plan_empties_a_dense_segment_that_pins_a_settle_chain() {
        let mut l = Liveness::default();
        for id in 1..=6 {
            l.add_segment(id);
        }
        let at = |segment| RecordPos {
            segment,
            offset: 4096,
            len: 1000,
        };
        // Segment 1 is dense and stays live; each later segment settles the previous one's
        // message, so 2..=4 are dead but pinned, in a chain ending at 1.
        l.on_enqueue(at(1), (9, 9), 1);
        for id in 1..=4u64 {
            l.on_enqueue(at(id), (1, id), 10 + id);
            l.on_settle(id + 1, (1, id));
        }
        assert!(l.reclaimable(6).is_empty());
        let policy = CompactionPolicy {
            current: 6,
            age_segments_min: 2,
            live_bytes_max: 100,
            pinned_segments_min: 3,
            bytes_max: 1 << 20,
        };
        let plan = l.compaction_plan(policy);
        assert_eq!(plan.len(), 1);
        assert_eq!(plan[0].0, (9, 9));
        let few = CompactionPolicy {
            pinned_segments_min: 5,
            ..policy
        };
        assert!(
            l.compaction_plan(few).is_empty(),
            "too short a chain to pay a copy"
        );
        l.on_enqueue(at(6), (9, 9), 100);
        assert_eq!(l.reclaimable(6), vec![1, 2, 3, 4, 5]);
    }
}
