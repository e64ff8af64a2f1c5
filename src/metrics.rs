//! Plain counters and histograms the data path keeps for the operator (Prometheus, the
//! management API's message rates). Each lives on one shard and is written only by it, with
//! `Cell`s or `&mut self`: no atomic, no lock. A snapshot copies them (they are `Copy`) when a
//! shard is asked for its statistics; rates and sums across shards are made by the reader.
//!
//! Depends on nothing else in the crate, so the broker, the log and the session may all keep
//! their own without importing each other.

use std::cell::Cell;

/// Buckets of every [`Histogram`]: bucket `i` counts values up to `first_bound << i`, so 24
/// buckets span a factor of 8 million (1 µs to 8 s, 4 KiB to 32 GiB).
pub const HISTOGRAM_BUCKETS: usize = 24;

/// A histogram with power-of-two bucket bounds in integer units (ns, bytes). `observe` is a
/// few instructions (a leading-zeros count and two adds).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Histogram {
    first_bound: u64,
    /// Not cumulative: `counts[i]` holds values in `(first_bound << (i-1), first_bound << i]`.
    counts: [u64; HISTOGRAM_BUCKETS],
    /// Every observation, including those past the last bucket (`+Inf` only).
    count: u64,
    sum: u64,
}

impl Histogram {
    /// `first_bound`: the upper bound of the first bucket, at least 1.
    pub const fn new(first_bound: u64) -> Histogram {
        Histogram {
            first_bound: if first_bound == 0 { 1 } else { first_bound },
            counts: [0; HISTOGRAM_BUCKETS],
            count: 0,
            sum: 0,
        }
    }

    pub fn observe(&mut self, value: u64) {
        let index = if value <= self.first_bound {
            0
        } else {
            // (value - 1) / first in [2^(i-1), 2^i) for value in (first << (i-1), first << i].
            let quotient = (value - 1) / self.first_bound;
            (u64::BITS - quotient.leading_zeros()) as usize
        };
        if let Some(bucket) = self.counts.get_mut(index) {
            *bucket += 1;
        }
        self.count += 1;
        self.sum = self.sum.saturating_add(value);
    }

    /// Adds `other`'s observations (the same bounds: histograms of one kind).
    pub fn merge(&mut self, other: &Histogram) {
        debug_assert_eq!(
            self.first_bound, other.first_bound,
            "merging unlike histograms"
        );
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts.iter()) {
            *mine += theirs;
        }
        self.count += other.count;
        self.sum = self.sum.saturating_add(other.sum);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn sum(&self) -> u64 {
        self.sum
    }

    /// (upper bound, observations at or below it), ascending, as Prometheus's `le` buckets
    /// (the `+Inf` bucket is [`Histogram::count`]).
    pub fn cumulative(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let mut total = 0;
        self.counts.iter().enumerate().map(move |(i, &n)| {
            total += n;
            (self.first_bound << i, total)
        })
    }

    /// The upper bound of the bucket holding the `quantile`-th observation (0 < q <= 1): an
    /// estimate within a factor of two, from above. None when empty or when it lies past the
    /// last bucket.
    pub fn quantile_upper_bound(&self, quantile: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((quantile.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        self.cumulative()
            .find(|&(_, at_or_below)| at_or_below >= rank)
            .map(|(bound, _)| bound)
    }
}

/// What one shard's publishers did, counted where the publishing channel decides it (RabbitMQ's
/// `rabbitmq_global_messages_*` of the same names).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublishTotals {
    pub received: u64,
    /// Of `received`, on channels in confirm mode.
    pub received_confirm: u64,
    pub routed: u64,
    pub unroutable_dropped: u64,
    pub unroutable_returned: u64,
    /// Publisher confirms sent as `basic.ack`.
    pub confirmed: u64,
}

/// [`PublishTotals`] behind a `Cell`: the shard and its sessions share one per shard (`Rc`).
#[derive(Debug, Default)]
pub struct PublishCounters(Cell<PublishTotals>);

impl PublishCounters {
    pub fn count(&self, update: impl FnOnce(&mut PublishTotals)) {
        let mut totals = self.0.get();
        update(&mut totals);
        self.0.set(totals);
    }

    pub fn totals(&self) -> PublishTotals {
        self.0.get()
    }
}

/// One queue's deliveries and settlements since it was declared (kept by the queue itself).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueTotals {
    pub published: u64,
    /// basic.deliver to consumers that acknowledge.
    pub delivered_manual_ack: u64,
    /// basic.deliver to no-ack consumers.
    pub delivered_auto_ack: u64,
    pub got_manual_ack: u64,
    pub got_auto_ack: u64,
    pub acked: u64,
    /// Deliveries and gets of messages marked redelivered.
    pub redelivered: u64,
}

impl QueueTotals {
    /// RabbitMQ's `deliver_get`: deliveries and gets, either ack mode.
    pub fn deliver_get(&self) -> u64 {
        self.delivered_manual_ack
            + self.delivered_auto_ack
            + self.got_manual_ack
            + self.got_auto_ack
    }

    pub fn add(&mut self, other: &QueueTotals) {
        self.published += other.published;
        self.delivered_manual_ack += other.delivered_manual_ack;
        self.delivered_auto_ack += other.delivered_auto_ack;
        self.got_manual_ack += other.got_manual_ack;
        self.got_auto_ack += other.got_auto_ack;
        self.acked += other.acked;
        self.redelivered += other.redelivered;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_fall_in_the_power_of_two_bucket_at_or_above_them() {
        let mut histogram = Histogram::new(1000);
        for value in [0, 1000, 1001, 2000, 2001, 4000, u64::MAX] {
            histogram.observe(value);
        }
        let buckets: Vec<(u64, u64)> = histogram.cumulative().take(4).collect();
        assert_eq!(buckets, vec![(1000, 2), (2000, 4), (4000, 6), (8000, 6)]);
        assert_eq!(histogram.count(), 7, "u64::MAX is counted in +Inf only");
        assert_eq!(histogram.cumulative().last().map(|(_, n)| n), Some(6));
    }

    #[test]
    fn quantiles_name_the_bucket_bound_at_or_above_them() {
        let mut histogram = Histogram::new(1000);
        assert_eq!(histogram.quantile_upper_bound(0.5), None);
        for value in [500, 1500, 1500, 3000] {
            histogram.observe(value);
        }
        assert_eq!(histogram.quantile_upper_bound(0.25), Some(1000));
        assert_eq!(histogram.quantile_upper_bound(0.5), Some(2000));
        assert_eq!(histogram.quantile_upper_bound(0.99), Some(4000));
        histogram.observe(u64::MAX);
        assert_eq!(
            histogram.quantile_upper_bound(1.0),
            None,
            "past the last bucket"
        );
    }

    #[test]
    fn merged_histograms_add_up() {
        let mut a = Histogram::new(10);
        let mut b = Histogram::new(10);
        a.observe(5);
        b.observe(15);
        b.observe(15);
        a.merge(&b);
        assert_eq!(a.count(), 3);
        assert_eq!(a.sum(), 35);
        assert_eq!(a.cumulative().nth(1), Some((20, 3)));
    }
}
