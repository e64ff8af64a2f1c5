//! A set of shards, one bit per possible shard: which shards a publish or a transaction touched.
//! A plain `u64` mask would overflow past 64 shards, while a host may run up to `SHARDS_MAX`.

use crate::broker::ShardId;
use crate::limits::SHARDS_MAX;

const WORD_BITS: usize = u64::BITS as usize;
const WORDS: usize = SHARDS_MAX.div_ceil(WORD_BITS);

const _: () = assert!(WORDS * WORD_BITS >= SHARDS_MAX, "every shard id has a bit");
const _: () = assert!(
    SHARD_SET_BYTES <= 64,
    "a shard set is returned by value on the publish path"
);
const SHARD_SET_BYTES: usize = WORDS * std::mem::size_of::<u64>();

#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct ShardSet([u64; WORDS]);

impl ShardSet {
    pub fn insert(&mut self, shard: ShardId) {
        assert!(shard < SHARDS_MAX, "shard {shard} beyond SHARDS_MAX");
        self.0[shard / WORD_BITS] |= 1 << (shard % WORD_BITS);
    }

    pub fn contains(&self, shard: ShardId) -> bool {
        shard < SHARDS_MAX && self.0[shard / WORD_BITS] & (1 << (shard % WORD_BITS)) != 0
    }

    pub fn union_with(&mut self, other: &ShardSet) {
        for (word, other) in self.0.iter_mut().zip(other.0) {
            *word |= other;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|&word| word == 0)
    }

    pub fn len(&self) -> usize {
        self.0.iter().map(|word| word.count_ones() as usize).sum()
    }

    /// The members in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = ShardId> + '_ {
        self.0.iter().enumerate().flat_map(|(index, &word)| {
            let mut rest = word;
            std::iter::from_fn(move || {
                if rest == 0 {
                    return None;
                }
                let bit = rest.trailing_zeros() as usize;
                rest &= rest - 1;
                Some(index * WORD_BITS + bit)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_every_shard_up_to_the_maximum() {
        let mut set = ShardSet::default();
        assert!(set.is_empty());
        for shard in (0..SHARDS_MAX).step_by(3) {
            set.insert(shard);
        }
        // 63/64 and 127/128 sit on word boundaries; the old u64 mask overflowed at 64.
        for shard in [63, 64, 127, 128, SHARDS_MAX - 1] {
            set.insert(shard);
        }
        let expected: Vec<ShardId> = {
            let mut all: Vec<ShardId> = (0..SHARDS_MAX).step_by(3).collect();
            all.extend([63, 64, 127, 128, SHARDS_MAX - 1]);
            all.sort_unstable();
            all.dedup();
            all
        };
        assert_eq!(set.iter().collect::<Vec<_>>(), expected);
        assert_eq!(set.len(), expected.len());
        for shard in 0..SHARDS_MAX {
            assert_eq!(set.contains(shard), expected.contains(&shard), "{shard}");
        }
        assert!(!set.contains(SHARDS_MAX));
    }

    #[test]
    fn union_keeps_both_sides() {
        let mut left = ShardSet::default();
        left.insert(1);
        left.insert(80);
        let mut right = ShardSet::default();
        right.insert(80);
        right.insert(200);
        left.union_with(&right);
        assert_eq!(left.iter().collect::<Vec<_>>(), vec![1, 80, 200]);
        assert_eq!(right.iter().collect::<Vec<_>>(), vec![80, 200]);
    }

    #[test]
    #[should_panic(expected = "beyond SHARDS_MAX")]
    fn a_shard_beyond_the_maximum_is_refused() {
        ShardSet::default().insert(SHARDS_MAX);
    }
}
