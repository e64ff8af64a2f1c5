//! Publisher-confirm bookkeeping for one channel: the send time of every unsettled delivery
//! tag, and the latency of each as its basic.ack (or nack) arrives.
//!
//! Tags on a channel in confirm mode count from 1 in publish order, so the send times live in
//! a deque indexed by `tag - first_tag`. A single (non-multiple) ack may settle a tag in the
//! middle; its slot becomes `None` and is dropped once it reaches the front.

use std::collections::VecDeque;

use hdrhistogram::Histogram;

/// What settling one ack or nack did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Settled {
    pub acked: u64,
    pub nacked: u64,
}

#[derive(Debug)]
pub struct ConfirmTracker {
    /// The delivery tag of `sent_ns[0]`.
    first_tag: u64,
    /// Send time (ns, process clock) per published tag from `first_tag`; `None` once settled.
    sent_ns: VecDeque<Option<u64>>,
    unsettled: u64,
    pub acked: u64,
    pub nacked: u64,
    /// Acks naming a tag that was never published or is already settled.
    pub unexpected: u64,
}

impl Default for ConfirmTracker {
    fn default() -> Self {
        ConfirmTracker {
            first_tag: 1,
            sent_ns: VecDeque::new(),
            unsettled: 0,
            acked: 0,
            nacked: 0,
            unexpected: 0,
        }
    }
}

impl ConfirmTracker {
    /// Records the next tag's send time (intended time in open loop, actual time otherwise).
    pub fn published(&mut self, sent_ns: u64) {
        self.sent_ns.push_back(Some(sent_ns));
        self.unsettled += 1;
    }

    /// Published and neither acked nor nacked yet.
    pub fn unsettled(&self) -> u64 {
        self.unsettled
    }

    /// Applies one basic.ack/basic.nack that arrived at `now_ns`. Acked tags sent at or after
    /// `record_from_ns` go into `latency_ns`; nacks are only counted.
    pub fn settle(
        &mut self,
        delivery_tag: u64,
        multiple: bool,
        nack: bool,
        now_ns: u64,
        record_from_ns: u64,
        latency_ns: &mut Histogram<u64>,
    ) -> Settled {
        let mut settled = Settled::default();
        let mut take = |sent: u64| {
            if nack {
                settled.nacked += 1;
            } else {
                settled.acked += 1;
                if sent >= record_from_ns {
                    latency_ns.saturating_record(now_ns.saturating_sub(sent).max(1));
                }
            }
        };
        if multiple {
            // Tag 0 with multiple set means "everything outstanding" (AMQP 0-9-1, basic.ack).
            let through = if delivery_tag == 0 {
                u64::MAX
            } else {
                delivery_tag
            };
            while self.first_tag <= through {
                let Some(slot) = self.sent_ns.pop_front() else {
                    break;
                };
                self.first_tag += 1;
                if let Some(sent) = slot {
                    take(sent);
                }
            }
        } else {
            let slot = delivery_tag
                .checked_sub(self.first_tag)
                .and_then(|index| usize::try_from(index).ok())
                .and_then(|index| self.sent_ns.get_mut(index))
                .and_then(Option::take);
            match slot {
                Some(sent) => take(sent),
                None => self.unexpected += 1,
            }
            while let Some(None) = self.sent_ns.front() {
                self.sent_ns.pop_front();
                self.first_tag += 1;
            }
        }
        self.unsettled -= settled.acked + settled.nacked;
        self.acked += settled.acked;
        self.nacked += settled.nacked;
        settled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workers::new_histogram;

    #[test]
    fn multiple_ack_settles_every_tag_up_to_it() {
        let mut t = ConfirmTracker::default();
        let mut h = new_histogram();
        for sent in [100, 200, 300, 400] {
            t.published(sent);
        }
        assert_eq!(t.unsettled(), 4);
        let s = t.settle(3, true, false, 1_000, 0, &mut h);
        assert_eq!(
            s,
            Settled {
                acked: 3,
                nacked: 0
            }
        );
        assert_eq!(t.unsettled(), 1);
        assert_eq!(h.len(), 3);
        assert_eq!(h.max(), h.highest_equivalent(900));
        assert_eq!(h.min(), h.lowest_equivalent(700));
        // Tag 3 again: nothing left to settle at or below it.
        assert_eq!(
            t.settle(3, true, false, 2_000, 0, &mut h),
            Settled::default()
        );
        t.settle(4, true, false, 2_000, 0, &mut h);
        assert_eq!((t.unsettled(), t.acked, h.len()), (0, 4, 4));
    }

    #[test]
    fn single_acks_out_of_order_and_nacks() {
        let mut t = ConfirmTracker::default();
        let mut h = new_histogram();
        for sent in 0..5 {
            t.published(sent * 10);
        }
        t.settle(2, false, false, 100, 0, &mut h);
        t.settle(4, false, true, 100, 0, &mut h);
        assert_eq!((t.acked, t.nacked, t.unsettled()), (1, 1, 3));
        t.settle(1, false, false, 100, 0, &mut h);
        // Tags 1 and 2 settled: the front moved past both.
        assert_eq!(t.first_tag, 3);
        t.settle(2, false, false, 100, 0, &mut h);
        t.settle(99, false, false, 100, 0, &mut h);
        assert_eq!(t.unexpected, 2);
        t.settle(0, true, false, 100, 0, &mut h);
        assert_eq!((t.acked, t.nacked, t.unsettled()), (4, 1, 0));
        assert_eq!(h.len(), 4);
    }

    #[test]
    fn warmup_sends_are_counted_not_recorded() {
        let mut t = ConfirmTracker::default();
        let mut h = new_histogram();
        t.published(10);
        t.published(50);
        t.settle(2, true, false, 60, 50, &mut h);
        assert_eq!((t.acked, h.len()), (2, 1));
    }
}
