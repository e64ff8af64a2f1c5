//! A hasher for the integer keys the queue assigns itself (message ids, consumer keys).
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
}

pub type IdBuildHasher = BuildHasherDefault<IdHasher>;
