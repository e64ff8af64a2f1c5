//! Message rates for the management API: each queue's publish, deliver_get and ack, and the
//! overview's five broker totals, as their counters' change over the last few seconds.
//!
//! Counters are read whenever the API takes a stats snapshot, and the rate is the change since
//! the newest reading at least [`RATE_WINDOW`] old (RabbitMQ samples every 5 s and shows the
//! change over that interval). Every shard serves the API and a browser's requests land on any
//! of them, so the readings are one store shared by all shards ([`SharedRates`]): with a store
//! per shard, a shard that happened to read the counters just after a change would answer 0
//! for it while another shard answered the rate. The store's mutex is taken by management
//! requests only, for one pass over the snapshot's queues; the data path never touches it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::backend::StatsSnapshot;
use super::objects::QueueRates;
use crate::limits::{
    RATE_READINGS_PER_COUNTER_MAX, RATE_READING_AGE_MAX, RATE_READING_SPACING, RATE_WINDOW,
};

/// The overview's publish, deliver_get, ack, confirm and redeliver rates.
pub type OverviewRates = [f64; 5];

/// One set of counters' recent readings, oldest first.
#[derive(Debug)]
struct Readings<const N: usize> {
    ring: VecDeque<(Instant, [u64; N])>,
}

impl<const N: usize> Default for Readings<N> {
    fn default() -> Self {
        Readings {
            ring: VecDeque::new(),
        }
    }
}

impl<const N: usize> Readings<N> {
    /// The per-second rates of `counts` read at `now`, then the reading kept.
    fn observe(&mut self, now: Instant, counts: [u64; N]) -> [f64; N] {
        let age = |at: Instant| now.saturating_duration_since(at);
        while self
            .ring
            .front()
            .is_some_and(|&(at, _)| age(at) > RATE_READING_AGE_MAX)
        {
            self.ring.pop_front();
        }
        let base = self
            .ring
            .iter()
            .rev()
            .find(|&&(at, _)| age(at) >= RATE_WINDOW)
            .or_else(|| {
                self.ring
                    .iter()
                    .find(|&&(at, _)| age(at) >= RATE_READING_SPACING)
            });
        let rates = match base {
            Some(&(at, before)) => {
                let seconds = age(at).as_secs_f64();
                std::array::from_fn(|i| counts[i].saturating_sub(before[i]) as f64 / seconds)
            }
            None => [0.0; N],
        };
        if self
            .ring
            .back()
            .is_none_or(|&(at, _)| age(at) >= RATE_READING_SPACING)
        {
            self.ring.push_back((now, counts));
        }
        // Once a later reading is a window old, the ones before it are never a base again.
        while self.ring.len() > 1 && age(self.ring[1].0) >= RATE_WINDOW {
            self.ring.pop_front();
        }
        while self.ring.len() > RATE_READINGS_PER_COUNTER_MAX {
            self.ring.pop_front();
        }
        rates
    }
}

#[derive(Default)]
struct RateStore {
    queues: HashMap<(String, String), Readings<3>>,
    overview: Readings<5>,
}

/// The readings every shard's API shares (see the module's note).
#[derive(Clone, Default)]
pub struct SharedRates(Arc<Mutex<RateStore>>);

impl SharedRates {
    /// Reads the snapshot's counters at `now`: each queue's rates and the overview's. Queues
    /// the snapshot no longer has are forgotten.
    pub fn observe(&self, stats: &StatsSnapshot, now: Instant) -> (QueueRates, OverviewRates) {
        // A panic elsewhere while holding the lock leaves readings, not broken invariants.
        let mut store = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut before = std::mem::take(&mut store.queues);
        let mut rates = QueueRates::with_capacity(stats.queues.len());
        for q in &stats.queues {
            let key = (q.vhost.clone(), q.name.clone());
            let mut readings = before.remove(&key).unwrap_or_default();
            let counts = [q.publish_count, q.deliver_get_count, q.ack_count];
            rates.insert(key.clone(), readings.observe(now, counts));
            store.queues.insert(key, readings);
        }
        let totals = &stats.broker.queues;
        let overview = store.overview.observe(
            now,
            [
                totals.published,
                totals.deliver_get(),
                totals.acked,
                stats.broker.publish.confirmed,
                totals.redelivered,
            ],
        );
        (rates, overview)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(start: Instant, millis: u64) -> Instant {
        start + Duration::from_millis(millis)
    }

    #[test]
    fn the_rate_is_the_change_over_the_window() {
        let start = Instant::now();
        let mut readings = Readings::<1>::default();
        assert_eq!(
            readings.observe(start, [0]),
            [0.0],
            "one reading is no rate"
        );
        assert_eq!(readings.observe(at(start, 500), [10]), [0.0], "too soon");
        assert_eq!(
            readings.observe(at(start, 2000), [20]),
            [10.0],
            "over 2 s so far"
        );
        for second in 3..=10u64 {
            readings.observe(at(start, second * 1000), [second * 10]);
        }
        // 10 per second throughout: the rate over the newest reading at least 5 s old.
        let [rate] = readings.observe(at(start, 11_000), [110]);
        assert_eq!(rate, 10.0);
        assert!(readings.ring.len() <= RATE_READINGS_PER_COUNTER_MAX);
    }

    #[test]
    fn a_change_read_just_after_it_happened_still_shows_in_the_next_rate() {
        // The browser's sequence that used to show 0: a reading, a publish, a reading a moment
        // later (too soon for a rate), then the next poll.
        let start = Instant::now();
        let mut readings = Readings::<1>::default();
        readings.observe(start, [0]);
        readings.observe(at(start, 300), [1]);
        let [rate] = readings.observe(at(start, 5_000), [1]);
        assert!(rate > 0.0, "the publish is within the window");
        let [later] = readings.observe(at(start, 10_500), [1]);
        assert_eq!(later, 0.0, "nothing published in the last window");
    }

    #[test]
    fn readings_long_unasked_are_not_a_base() {
        let start = Instant::now();
        let mut readings = Readings::<1>::default();
        readings.observe(start, [0]);
        let stale = start + RATE_READING_AGE_MAX + Duration::from_secs(1);
        assert_eq!(readings.observe(stale, [100]), [0.0]);
        assert_eq!(readings.ring.len(), 1, "only the new reading is kept");
    }

    #[test]
    fn a_counter_that_went_back_reads_as_no_traffic() {
        // A queue deleted and declared again under its name starts its counters at 0.
        let start = Instant::now();
        let mut readings = Readings::<1>::default();
        readings.observe(start, [50]);
        assert_eq!(readings.observe(at(start, 6_000), [3]), [0.0]);
    }

    #[test]
    fn shards_sharing_the_store_agree() {
        use crate::management::backend::QueueStats;
        let shared = SharedRates::default();
        let other_shard = shared.clone();
        let mut stats = StatsSnapshot::default();
        stats.queues.push(QueueStats {
            vhost: "/".into(),
            name: "q".into(),
            ..QueueStats::default()
        });
        let start = Instant::now();
        shared.observe(&stats, start);
        stats.queues[0].publish_count = 1;
        // The other shard reads the change at once; the first shard's next answer has it.
        other_shard.observe(&stats, at(start, 300));
        let (rates, _) = shared.observe(&stats, at(start, 5_000));
        assert!(rates[&("/".to_string(), "q".to_string())][0] > 0.0);
    }
}
