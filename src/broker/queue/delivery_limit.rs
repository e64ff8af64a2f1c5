//! `x-delivery-limit`, as RabbitMQ quorum queues count it: every return of a delivered message
//! to the queue (reject/nack with requeue, recover, channel close) adds one to its delivery
//! count; a redelivery carries the count in its `x-delivery-count` header; a message returned
//! when its count is already past the limit is dead-lettered (reason `delivery_limit`).
//!
//! Counts live in a side table keyed by message id, filled only for queues with a limit or of
//! type quorum (`QueueConfig::counts_returns`: RabbitMQ's quorum queues count returns and
//! stamp `x-delivery-count` without a limit too) and only for messages returned at least once,
//! so the ready/unacked entries stay their size.

use crate::protocol::FieldValue;

use super::{Message, MessageId, Queue, SharedMessage};

pub const X_DELIVERY_COUNT: &str = "x-delivery-count";

/// The delivery count a stored (re-logged) message carries, if any.
pub(super) fn stored_delivery_count(message: &Message) -> Option<u32> {
    let count = message.headers()?.get(X_DELIVERY_COUNT)?.as_i64()?;
    u32::try_from(count).ok()
}

/// What a returned message does next.
pub(super) enum Return {
    Requeue,
    OverLimit,
}

impl Queue {
    /// Counts a return of message `id`; OverLimit when it may not be delivered again.
    pub(super) fn count_return(&mut self, id: MessageId) -> Return {
        if !self.config.counts_returns {
            return Return::Requeue;
        }
        let count = self.delivery_counts.entry(id).or_insert(0);
        *count = count.saturating_add(1);
        if self
            .config
            .delivery_limit
            .is_some_and(|limit| u64::from(*count) > limit)
        {
            Return::OverLimit
        } else {
            Return::Requeue
        }
    }

    /// The message as it is delivered: with `x-delivery-count` when it was returned before.
    /// Copies the properties (not the body), which only redeliveries pay.
    pub(super) fn stamp_delivery_count(
        &self,
        id: MessageId,
        message: SharedMessage,
    ) -> SharedMessage {
        let Some(&count) = self.delivery_counts.get(&id) else {
            return message;
        };
        let mut properties = message.properties();
        let mut headers = properties.headers.take().unwrap_or_default();
        headers.insert(X_DELIVERY_COUNT, FieldValue::LongLongInt(i64::from(count)));
        properties.headers = Some(headers);
        message.with_properties(&properties)
    }

    /// Messages dropped for exceeding the delivery limit since the last call: the host
    /// dead-letters them.
    pub fn take_over_delivery_limit(&mut self) -> Vec<SharedMessage> {
        std::mem::take(&mut self.over_delivery_limit)
    }
}

#[cfg(test)]
mod tests {
    use crate::broker::queue::Route;
    use bytes::Bytes;

    use super::*;
    use crate::broker::queue::{ChannelRef, QueueConfig, QueueLimits};
    use crate::protocol::BasicProperties;

    const CHANNEL: ChannelRef = ChannelRef {
        conn: 1,
        channel: 1,
    };

    fn limited(limit: u64) -> Queue {
        Queue::with_config(
            QueueLimits::default(),
            QueueConfig {
                delivery_limit: Some(limit),
                counts_returns: true,
                ..QueueConfig::default()
            },
        )
    }

    fn message() -> SharedMessage {
        Message::new(
            Route {
                exchange: "",
                routing_key: "q",
            },
            &BasicProperties::default(),
            &Bytes::from_static(b"body"),
        )
    }

    fn count_header(message: &Message) -> Option<i64> {
        message.headers()?.get(X_DELIVERY_COUNT)?.as_i64()
    }

    #[test]
    fn returned_past_the_limit_is_dropped_for_dead_lettering() {
        let mut queue = limited(2);
        let id = queue.publish(message());
        for expected in [None, Some(1), Some(2)] {
            let (got, delivered, _) = queue.basic_get(false, CHANNEL).expect("ready");
            assert_eq!(got, id);
            assert_eq!(count_header(&delivered), expected);
            assert!(queue.reject(&[id], true).is_empty());
            queue.check_invariants();
        }
        assert!(
            queue.basic_get(false, CHANNEL).is_none(),
            "third return drops it"
        );
        assert_eq!(queue.take_over_delivery_limit().len(), 1);
        assert!(queue.take_over_delivery_limit().is_empty());
        assert!(queue.delivery_counts.is_empty());
    }

    #[test]
    fn channel_close_counts_as_a_return_and_ack_forgets_the_count() {
        let mut queue = limited(0);
        let id = queue.publish(message());
        queue.basic_get(false, CHANNEL).expect("ready");
        queue.channel_closed(CHANNEL);
        assert_eq!(queue.message_count(), 0);
        assert_eq!(queue.take_over_delivery_limit().len(), 1);

        let mut queue = limited(5);
        let id2 = queue.publish(message());
        assert_ne!(id, 0);
        queue.basic_get(false, CHANNEL).expect("ready");
        queue.recover(CHANNEL);
        queue.basic_get(false, CHANNEL).expect("ready again");
        queue.ack(&[id2]);
        assert!(queue.delivery_counts.is_empty());
    }

    #[test]
    fn without_a_limit_nothing_is_counted() {
        let mut queue = Queue::new(QueueLimits::default());
        let id = queue.publish(message());
        for _ in 0..10 {
            let (_, delivered, _) = queue.basic_get(false, CHANNEL).expect("ready");
            assert_eq!(count_header(&delivered), None);
            queue.reject(&[id], true);
        }
        assert!(queue.delivery_counts.is_empty());
    }

    #[test]
    fn a_quorum_queue_counts_returns_without_a_limit() {
        let mut arguments = crate::protocol::FieldTable::default();
        arguments.insert("x-queue-type", FieldValue::LongString("quorum".into()));
        let config = QueueConfig::from_arguments(&arguments);
        assert!(config.counts_returns && config.delivery_limit.is_none());
        let mut queue = Queue::with_config(QueueLimits::default(), config);
        let id = queue.publish(message());
        for expected in [None, Some(1), Some(2), Some(3)] {
            let (_, delivered, _) = queue.basic_get(false, CHANNEL).expect("never dropped");
            assert_eq!(count_header(&delivered), expected);
            queue.reject(&[id], true);
        }
        assert!(queue.take_over_delivery_limit().is_empty());
    }
}
