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

#[cfg(test)]
mod tests {
    use std::num::NonZeroU64;

    use bytes::Bytes;

    use super::super::*;
    use crate::protocol::{BasicProperties, FieldTable, FieldValue};

    const CHANNEL: ChannelRef = ChannelRef {
        conn: 1,
        channel: 1,
    };

    fn message(body: &'static [u8]) -> SharedMessage {
        let route = Route {
            exchange: "",
            routing_key: "q",
        };
        Message::new(route, &BasicProperties::default(), body)
    }

    fn lazy_queue(arguments: &[(&str, FieldValue)]) -> Queue {
        let mut table = FieldTable::default();
        table.insert(
            "x-queue-mode",
            FieldValue::LongString(Bytes::from_static(b"lazy")),
        );
        for (key, value) in arguments {
            table.insert(*key, value.clone());
        }
        Queue::with_config(QueueLimits::default(), QueueConfig::from_arguments(&table))
    }

    /// Pages every candidate out as the host would (the LSN is the message id here).
    fn page_out_all(queue: &mut Queue) -> usize {
        let mut paged = 0;
        while let Some(candidate) = queue.page_out_candidate() {
            let position = candidate
                .persisted
                .unwrap_or(NonZeroU64::new(candidate.at.id).unwrap());
            assert!(queue.page_out(candidate.at, position));
            paged += 1;
        }
        queue.check_invariants();
        paged
    }

    fn consumer() -> ConsumerSpec {
        ConsumerSpec {
            key: 1,
            prefetch: 0,
            no_ack: true,
            exclusive: false,
            priority: 0,
            channel: CHANNEL,
        }
    }

    #[test]
    fn dispatch_waits_at_a_paged_head_and_resumes_in_order() {
        let mut queue = lazy_queue(&[]);
        let count = PAGE_READ_AHEAD_MESSAGES as u64 + 10;
        for _ in 0..count {
            queue.publish(message(b"body"));
        }
        assert_eq!(
            page_out_all(&mut queue),
            10,
            "only what is outside the window"
        );
        queue.add_consumer(consumer()).unwrap();
        let mut out = Vec::new();
        queue.dispatch(&mut out, usize::MAX);
        assert_eq!(out.len(), PAGE_READ_AHEAD_MESSAGES);
        let head = queue.head_paged().expect("paged head");
        assert_eq!(head.id, PAGE_READ_AHEAD_MESSAGES as u64 + 1);
        let mut wanted = Vec::new();
        queue.to_load(usize::MAX, &mut wanted);
        assert_eq!(wanted.len(), 10);
        // Loaded out of order: delivery still follows ids.
        for at in wanted.iter().rev() {
            assert!(queue.fill(*at, message(b"body")));
        }
        queue.check_invariants();
        out.clear();
        queue.dispatch(&mut out, usize::MAX);
        let ids: Vec<u64> = out.iter().map(|d| d.message_id).collect();
        assert_eq!(
            ids,
            ((PAGE_READ_AHEAD_MESSAGES as u64 + 1)..=count).collect::<Vec<_>>()
        );
        // Transient messages paged out got a log record: their settle is logged on delivery.
        assert_eq!(queue.take_forgotten().len(), 10);
    }

    #[test]
    fn expired_paged_messages_wait_for_their_read_when_dead_lettered() {
        let dlx = (
            "x-dead-letter-exchange",
            FieldValue::LongString(Bytes::from_static(b"dlx")),
        );
        let ttl = ("x-message-ttl", FieldValue::LongInt(10));
        for with_dlx in [false, true] {
            let mut queue = if with_dlx {
                lazy_queue(&[dlx.clone(), ttl.clone()])
            } else {
                lazy_queue(std::slice::from_ref(&ttl))
            };
            let count = PAGE_READ_AHEAD_MESSAGES as u64 + 5;
            for _ in 0..count {
                queue.publish_at(message(b"body"), 1000);
            }
            assert_eq!(page_out_all(&mut queue), 5);
            let expired = queue.expire(2000);
            assert_eq!(
                expired.len(),
                PAGE_READ_AHEAD_MESSAGES,
                "loaded ones at once"
            );
            let dropped = queue.take_paged_dropped();
            let forgotten = queue.take_forgotten();
            if with_dlx {
                assert_eq!(dropped.len(), 5);
                assert!(dropped.iter().all(|(_, r)| *r == DeathReason::Expired));
                assert!(forgotten.is_empty(), "settled before it was read");
            } else {
                assert!(dropped.is_empty());
                assert_eq!(forgotten.len(), 5);
            }
            assert_eq!(queue.message_count(), 0);
            queue.check_invariants();
        }
    }

    #[test]
    fn restored_without_body_counts_its_bytes_and_loads_on_demand() {
        let mut queue = Queue::new(QueueLimits::default());
        let times = RestoreTimes {
            now_ms: 1,
            enqueued_ms: 1,
        };
        let lsn = NonZeroU64::new(7).unwrap();
        queue.restore_paged(3, message(b""), 1000, lsn, times);
        queue.restore(4, message(b"loaded"), lsn, 1, 1);
        assert_eq!(queue.ready_bytes(), 1006);
        assert_eq!(queue.loaded_bytes(), 6);
        assert_eq!(queue.paged_count(), 1);
        assert!(
            queue.basic_get(true, CHANNEL).is_none(),
            "paged head needs a read"
        );
        let head = queue.head_paged().unwrap();
        assert!(queue.wants_load());
        assert!(queue.drop_unreadable(head));
        assert_eq!(queue.take_forgotten(), vec![3]);
        let (id, got, redelivered) = queue.basic_get(true, CHANNEL).unwrap();
        assert_eq!((id, got.body(), redelivered), (4, &b"loaded"[..], true));
        queue.check_invariants();
    }

    #[test]
    fn length_limits_count_paged_bodies() {
        let max = ("x-max-length-bytes", FieldValue::LongInt(2000));
        let mut queue = lazy_queue(&[max]);
        for _ in 0..PAGE_READ_AHEAD_MESSAGES + 100 {
            queue.publish(message(b"0123456789"));
            page_out_all(&mut queue);
            queue.enforce_length();
        }
        assert_eq!(queue.ready_bytes(), 2000);
        assert_eq!(queue.message_count(), 200);
        queue.check_invariants();
    }
}
