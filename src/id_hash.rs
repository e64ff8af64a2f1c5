//! A hasher for integer keys the broker assigns itself (message, queue, connection, consumer and
//! request ids, channel numbers).
//!
//! SipHash is built to resist keys an attacker chooses; these keys are ours (monotonic ids,
//! keys handed out by the runtime), so one multiply is enough. The odd multiplier is a
//! bijection on the low bits (sequential ids land in distinct buckets) and spreads the high
//! bits, which the hash table uses as its per-slot tag.

use std::hash::{BuildHasherDefault, Hasher};

const MULTIPLIER: u64 = 0x9E37_79B9_7F4A_7C15;

#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only reached for non-integer keys; fold the bytes so the hasher stays correct.
        for &byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(byte)).wrapping_mul(MULTIPLIER);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = (self.0 ^ value).wrapping_mul(MULTIPLIER);
    }

    fn write_u32(&mut self, value: u32) {
        self.write_u64(u64::from(value));
    }

    fn write_u16(&mut self, value: u16) {
        self.write_u64(u64::from(value));
    }

    fn write_usize(&mut self, value: usize) {
        self.write_u64(value as u64);
    }
}

pub type IdBuildHasher = BuildHasherDefault<IdHasher>;

/// A `HashMap` keyed by our own integer ids.
pub type IdMap<K, V> = std::collections::HashMap<K, V, IdBuildHasher>;
