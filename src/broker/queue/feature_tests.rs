//! Priorities, TTL and (later) length limits, at the queue level with a hand-driven clock.

use super::Route;
use super::*;
use crate::protocol::BasicProperties;
use bytes::Bytes;

const CHANNEL: ChannelRef = ChannelRef {
    conn: 1,
    channel: 1,
};

fn message_with(priority: Option<u8>, expiration: Option<&str>) -> SharedMessage {
    Message::new(
        Route {
            exchange: "",
            routing_key: "q",
        },
        &BasicProperties {
            priority,
            expiration: expiration.map(str::to_owned),
            ..BasicProperties::default()
        },
        &Bytes::from_static(b"body"),
    )
}

fn priority_queue(max_priority: u8) -> Queue {
    Queue::with_config(
        QueueLimits::default(),
        QueueConfig {
            max_priority,
            ..QueueConfig::default()
        },
    )
}

fn ttl_queue(message_ttl_ms: Option<u64>) -> Queue {
    Queue::with_config(
        QueueLimits::default(),
        QueueConfig {
            message_ttl_ms,
            ..QueueConfig::default()
        },
    )
}

fn get_all(queue: &mut Queue) -> Vec<MessageId> {
    let mut ids = Vec::new();
    while let Some((id, _, _)) = queue.basic_get(true, CHANNEL) {
        ids.push(id);
        queue.check_invariants();
    }
    ids
}

#[test]
fn higher_priority_first_fifo_within_a_priority() {
    let mut queue = priority_queue(10);
    let low1 = queue.publish(message_with(Some(3), None));
    let high = queue.publish(message_with(Some(6), None));
    let low2 = queue.publish(message_with(Some(3), None));
    let none = queue.publish(message_with(None, None));
    queue.check_invariants();
    assert_eq!(get_all(&mut queue), vec![high, low1, low2, none]);
}

#[test]
fn priority_above_the_maximum_counts_as_the_maximum() {
    let mut queue = priority_queue(5);
    let at_max = queue.publish(message_with(Some(5), None));
    let above = queue.publish(message_with(Some(200), None));
    let below = queue.publish(message_with(Some(4), None));
    assert_eq!(get_all(&mut queue), vec![at_max, above, below]);
}

#[test]
fn plain_queue_ignores_priority() {
    let mut queue = Queue::new(QueueLimits::default());
    let ids: Vec<_> = [1, 9, 5]
        .into_iter()
        .map(|p| queue.publish(message_with(Some(p), None)))
        .collect();
    assert_eq!(get_all(&mut queue), ids);
}

#[test]
fn requeued_message_returns_to_its_place_in_its_priority() {
    let mut queue = priority_queue(10);
    let low1 = queue.publish(message_with(Some(1), None));
    let high1 = queue.publish(message_with(Some(9), None));
    let high2 = queue.publish(message_with(Some(9), None));
    let low2 = queue.publish(message_with(Some(1), None));
    // Take the two high ones and one low one, requeue all of them.
    let taken: Vec<_> = (0..3)
        .filter_map(|_| queue.basic_get(false, CHANNEL).map(|(id, _, _)| id))
        .collect();
    assert_eq!(taken, vec![high1, high2, low1]);
    queue.reject(&[low1, high2, high1], true);
    queue.check_invariants();
    assert_eq!(get_all(&mut queue), vec![high1, high2, low1, low2]);
}

#[test]
fn expired_messages_are_removed_wherever_they_sit() {
    let mut queue = ttl_queue(None);
    queue.expire(1_000);
    let long = queue.publish(message_with(None, Some("10000")));
    let short = queue.publish(message_with(None, Some("100")));
    let forever = queue.publish(message_with(None, None));
    assert_eq!(queue.next_deadline(), Some(1_100));
    // At the deadline the message is still alive; one ms later it is gone.
    assert!(queue.expire(1_100).is_empty());
    assert_eq!(queue.expire(1_101).len(), 1);
    queue.check_invariants();
    assert_eq!(queue.message_count(), 2);
    assert_eq!(queue.next_deadline(), Some(11_000));
    assert_eq!(get_all(&mut queue), vec![long, forever]);
    let _ = short;
}

#[test]
fn the_lower_of_queue_and_message_ttl_wins() {
    let mut queue = ttl_queue(Some(500));
    queue.expire(0);
    queue.publish(message_with(None, Some("100")));
    queue.publish(message_with(None, Some("900")));
    queue.publish(message_with(None, None));
    assert_eq!(queue.expire(101).len(), 1);
    assert_eq!(queue.expire(501).len(), 2);
    assert_eq!(queue.message_count(), 0);
    queue.check_invariants();
}

#[test]
fn ttl_zero_delivers_only_to_a_waiting_consumer() {
    let mut queue = ttl_queue(Some(0));
    queue.expire(50);
    queue.publish(message_with(None, None));
    assert_eq!(queue.expire(51).len(), 1);
    let mut spec = ConsumerSpec {
        key: 1,
        prefetch: 0,
        no_ack: true,
        exclusive: false,
        priority: 0,
        channel: CHANNEL,
    };
    spec.no_ack = true;
    queue.add_consumer(spec).unwrap();
    queue.publish(message_with(None, None));
    let mut out = Vec::new();
    queue.dispatch(&mut out, 10);
    assert_eq!(out.len(), 1);
}

#[test]
fn requeued_message_keeps_its_deadline_and_expires_in_the_queue() {
    let mut queue = ttl_queue(Some(100));
    queue.expire(0);
    let id = queue.publish(message_with(None, None));
    assert!(queue.basic_get(false, CHANNEL).is_some());
    // Unacked messages do not expire ...
    assert!(queue.expire(500).is_empty());
    // ... but once requeued, a passed deadline removes them.
    queue.reject(&[id], true);
    assert_eq!(queue.expire(500).len(), 1);
    assert_eq!(queue.message_count(), 0);
    queue.check_invariants();
}

#[test]
fn priority_and_ttl_together() {
    let mut queue = Queue::with_config(
        QueueLimits::default(),
        QueueConfig {
            max_priority: 5,
            message_ttl_ms: Some(1_000),
            ..QueueConfig::default()
        },
    );
    queue.expire(0);
    queue.publish(message_with(Some(1), None));
    let high = queue.publish(message_with(Some(5), Some("10")));
    let low = queue.publish(message_with(Some(1), None));
    assert_eq!(queue.expire(11).len(), 1);
    queue.check_invariants();
    assert_eq!(queue.expire(1_001).len(), 2);
    assert!(get_all(&mut queue).is_empty());
    let _ = (high, low);
}

fn limited(max_length: Option<u64>, max_length_bytes: Option<u64>, overflow: Overflow) -> Queue {
    Queue::with_config(
        QueueLimits::default(),
        QueueConfig {
            max_length,
            max_length_bytes,
            overflow,
            ..QueueConfig::default()
        },
    )
}

#[test]
fn drop_head_keeps_the_newest() {
    let mut queue = limited(Some(2), None, Overflow::DropHead);
    let ids: Vec<_> = (0..4)
        .map(|_| {
            assert_eq!(queue.admit(&message_with(None, None)), Admission::Accept);
            let id = queue.publish(message_with(None, None));
            queue.enforce_length();
            id
        })
        .collect();
    queue.check_invariants();
    assert_eq!(get_all(&mut queue), ids[2..].to_vec());
}

#[test]
fn drop_head_by_bytes_returns_the_dropped() {
    // Bodies are 4 bytes: 10 bytes hold two.
    let mut queue = limited(None, Some(10), Overflow::DropHead);
    for _ in 0..3 {
        queue.publish(message_with(None, None));
    }
    assert_eq!(queue.enforce_length().len(), 1);
    assert_eq!(queue.ready_bytes(), 8);
    queue.check_invariants();
}

#[test]
fn reject_publish_refuses_when_full_and_dlx_variant_says_so() {
    let mut queue = limited(Some(1), None, Overflow::RejectPublish);
    assert_eq!(queue.admit(&message_with(None, None)), Admission::Accept);
    queue.publish(message_with(None, None));
    assert_eq!(queue.admit(&message_with(None, None)), Admission::Refuse);
    // Never drops under reject-publish.
    assert!(queue.enforce_length().is_empty());
    let mut queue = limited(None, Some(4), Overflow::RejectPublishDlx);
    queue.publish(message_with(None, None));
    assert_eq!(
        queue.admit(&message_with(None, None)),
        Admission::RefuseDeadLetter
    );
    // Unacked messages do not count.
    assert!(queue.basic_get(false, CHANNEL).is_some());
    assert_eq!(queue.admit(&message_with(None, None)), Admission::Accept);
}

#[test]
fn max_length_zero_still_feeds_a_waiting_consumer() {
    let mut queue = limited(Some(0), None, Overflow::DropHead);
    queue
        .add_consumer(ConsumerSpec {
            key: 1,
            prefetch: 0,
            no_ack: false,
            exclusive: false,
            priority: 0,
            channel: CHANNEL,
        })
        .unwrap();
    queue.publish(message_with(None, None));
    let mut out = Vec::new();
    queue.dispatch(&mut out, 10);
    assert!(queue.enforce_length().is_empty());
    assert_eq!(out.len(), 1);
}

fn consumer_spec(key: ConsumerKey, prefetch: u16, priority: i32) -> ConsumerSpec {
    ConsumerSpec {
        key,
        prefetch,
        no_ack: false,
        exclusive: false,
        priority,
        channel: ChannelRef {
            conn: key,
            channel: 1,
        },
    }
}

fn receivers(queue: &mut Queue) -> Vec<(ConsumerKey, MessageId)> {
    let mut out = Vec::new();
    queue.dispatch(&mut out, usize::MAX);
    queue.check_invariants();
    out.iter().map(|d| (d.consumer, d.message_id)).collect()
}

#[test]
fn single_active_consumer_takes_over_in_order() {
    let mut queue = Queue::with_config(
        QueueLimits::default(),
        QueueConfig {
            single_active_consumer: true,
            ..QueueConfig::default()
        },
    );
    queue.add_consumer(consumer_spec(1, 2, 0)).unwrap();
    // A later, higher-priority consumer still waits its turn.
    queue.add_consumer(consumer_spec(2, 0, 10)).unwrap();
    for _ in 0..4 {
        queue.publish(message_with(None, None));
    }
    assert_eq!(receivers(&mut queue), vec![(1, 1), (1, 2)]);
    queue.ack(&[1]);
    assert_eq!(receivers(&mut queue), vec![(1, 3)]);
    // The active consumer goes (its channel closes): its unacked message returns first and the
    // next consumer gets everything, in order.
    queue.channel_closed(ChannelRef {
        conn: 1,
        channel: 1,
    });
    assert_eq!(receivers(&mut queue), vec![(2, 2), (2, 3), (2, 4)]);
    assert_eq!(queue.consumer_count(), 1);
}
