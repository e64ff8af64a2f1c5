use super::Route;
use super::*;
use crate::protocol::BasicProperties;
use bytes::Bytes;

const CHANNEL_A: ChannelRef = ChannelRef {
    conn: 1,
    channel: 1,
};
const CHANNEL_B: ChannelRef = ChannelRef {
    conn: 2,
    channel: 1,
};

fn message(body: &'static [u8]) -> SharedMessage {
    Message::new(
        Route {
            exchange: "",
            routing_key: "q",
        },
        &BasicProperties::default(),
        &Bytes::from_static(body),
    )
}

fn consumer(key: ConsumerKey, prefetch: u16, channel: ChannelRef) -> ConsumerSpec {
    ConsumerSpec {
        key,
        prefetch,
        no_ack: false,
        exclusive: false,
        priority: 0,
        channel,
    }
}

fn publish_n(queue: &mut Queue, count: usize) -> Vec<MessageId> {
    (0..count).map(|_| queue.publish(message(b"x"))).collect()
}

fn dispatch(queue: &mut Queue) -> Vec<Delivery> {
    let mut out = Vec::new();
    queue.dispatch(&mut out, usize::MAX);
    queue.check_invariants();
    out
}

fn pairs(deliveries: &[Delivery]) -> Vec<(ConsumerKey, MessageId)> {
    deliveries
        .iter()
        .map(|delivery| (delivery.consumer, delivery.message_id))
        .collect()
}

#[test]
fn fifo_order_to_one_consumer() {
    let mut queue = Queue::new(QueueLimits::default());
    let ids = publish_n(&mut queue, 5);
    assert_eq!(ids, vec![1, 2, 3, 4, 5]);
    queue.add_consumer(consumer(7, 0, CHANNEL_A)).unwrap();
    let out = dispatch(&mut queue);
    assert_eq!(
        pairs(&out),
        ids.iter().map(|&id| (7, id)).collect::<Vec<_>>()
    );
    assert!(out
        .iter()
        .all(|delivery| !delivery.redelivered && delivery.channel == CHANNEL_A));
}

#[test]
fn round_robin_across_equal_consumers() {
    let mut queue = Queue::new(QueueLimits::default());
    for key in 1..=3 {
        queue.add_consumer(consumer(key, 0, CHANNEL_A)).unwrap();
    }
    publish_n(&mut queue, 7);
    let out = dispatch(&mut queue);
    let keys: Vec<_> = out.iter().map(|delivery| delivery.consumer).collect();
    assert_eq!(keys, vec![1, 2, 3, 1, 2, 3, 1]);
    // The turn carries over between dispatch calls.
    publish_n(&mut queue, 2);
    let keys: Vec<_> = dispatch(&mut queue).iter().map(|d| d.consumer).collect();
    assert_eq!(keys, vec![2, 3]);
}

#[test]
fn prefetch_one_is_fair_dispatch() {
    let mut queue = Queue::new(QueueLimits::default());
    queue.add_consumer(consumer(1, 1, CHANNEL_A)).unwrap();
    queue.add_consumer(consumer(2, 1, CHANNEL_B)).unwrap();
    publish_n(&mut queue, 6);
    assert_eq!(pairs(&dispatch(&mut queue)), vec![(1, 1), (2, 2)]);
    // Nothing more until someone acks.
    assert!(dispatch(&mut queue).is_empty());
    assert_eq!(queue.message_count(), 4);
    assert_eq!(queue.unacked_count(), 2);
    // Consumer 2 is fast: it gets everything while 1 is still busy.
    queue.ack(&[2]);
    assert_eq!(pairs(&dispatch(&mut queue)), vec![(2, 3)]);
    queue.ack(&[3]);
    assert_eq!(pairs(&dispatch(&mut queue)), vec![(2, 4)]);
    queue.ack(&[1, 4]);
    assert_eq!(pairs(&dispatch(&mut queue)), vec![(1, 5), (2, 6)]);
}

#[test]
fn prefetch_zero_is_unlimited_and_prefetch_n_caps() {
    let mut queue = Queue::new(QueueLimits::default());
    queue.add_consumer(consumer(1, 0, CHANNEL_A)).unwrap();
    publish_n(&mut queue, 1000);
    assert_eq!(dispatch(&mut queue).len(), 1000);
    assert_eq!(queue.unacked_count(), 1000);

    let mut queue = Queue::new(QueueLimits::default());
    queue.add_consumer(consumer(1, 3, CHANNEL_A)).unwrap();
    publish_n(&mut queue, 10);
    assert_eq!(dispatch(&mut queue).len(), 3);
    queue.ack(&[1, 2]);
    assert_eq!(pairs(&dispatch(&mut queue)), vec![(1, 4), (1, 5)]);
}

#[test]
fn dispatch_respects_max() {
    let mut queue = Queue::new(QueueLimits::default());
    queue.add_consumer(consumer(1, 0, CHANNEL_A)).unwrap();
    publish_n(&mut queue, 10);
    let mut out = Vec::new();
    queue.dispatch(&mut out, 4);
    assert_eq!(out.len(), 4);
    queue.dispatch(&mut out, 0);
    assert_eq!(out.len(), 4);
    assert_eq!(queue.message_count(), 6);
}

#[test]
fn no_ack_consumer_forgets_delivered_messages() {
    let mut queue = Queue::new(QueueLimits::default());
    let mut spec = consumer(1, 1, CHANNEL_A);
    spec.no_ack = true; // prefetch does not apply to no_ack consumers
    queue.add_consumer(spec).unwrap();
    publish_n(&mut queue, 5);
    assert_eq!(dispatch(&mut queue).len(), 5);
    assert_eq!(queue.unacked_count(), 0);
    assert_eq!(queue.message_count(), 0);
    queue.channel_closed(CHANNEL_A);
    assert_eq!(queue.message_count(), 0);
}

#[test]
fn a_consumer_takes_no_more_than_its_unwritten_bound_until_writes_are_reported() {
    // Two deliveries of a 10-byte body fit under the bound, the third does not.
    let charge = delivery_charge_bytes(10);
    let mut queue = Queue::new(QueueLimits {
        consumer_unwritten_bytes_max: 2 * charge,
        ..QueueLimits::default()
    });
    let mut no_ack = consumer(1, 0, CHANNEL_A);
    no_ack.no_ack = true;
    queue.add_consumer(no_ack).unwrap();
    queue.add_consumer(consumer(2, 0, CHANNEL_B)).unwrap();
    for _ in 0..8 {
        queue.publish(message(b"0123456789"));
    }
    // Turns alternate; each consumer stops at its bound, acked or not; the rest stays queued.
    let first = dispatch(&mut queue);
    assert_eq!(pairs(&first), vec![(1, 1), (2, 2), (1, 3), (2, 4)]);
    assert_eq!(queue.message_count(), 4);
    // An ack gives back prefetch, not bytes: consumer 2 still waits for its writes.
    queue.ack(&[2]);
    assert!(dispatch(&mut queue).is_empty());
    // A report of one delivery written lets exactly one more go.
    queue.written(1, charge);
    assert_eq!(pairs(&dispatch(&mut queue)), vec![(1, 5)]);
    queue.written(2, 2 * charge);
    assert_eq!(pairs(&dispatch(&mut queue)), vec![(2, 6), (2, 7)]);
    // Unknown consumers (cancelled while their deliveries were written) are ignored.
    queue.written(99, charge);
    queue.check_invariants();
}

#[test]
fn a_message_larger_than_the_unwritten_bound_still_goes_alone() {
    let mut queue = Queue::new(QueueLimits {
        consumer_unwritten_bytes_max: 1,
        ..QueueLimits::default()
    });
    let mut spec = consumer(1, 0, CHANNEL_A);
    spec.no_ack = true;
    queue.add_consumer(spec).unwrap();
    publish_n(&mut queue, 3);
    assert_eq!(pairs(&dispatch(&mut queue)), vec![(1, 1)]);
    queue.written(1, delivery_charge_bytes(1));
    assert_eq!(pairs(&dispatch(&mut queue)), vec![(1, 2)]);
}

#[test]
fn exclusive_consumer_rules() {
    let mut queue = Queue::new(QueueLimits::default());
    let mut exclusive = consumer(1, 0, CHANNEL_A);
    exclusive.exclusive = true;
    queue.add_consumer(exclusive.clone()).unwrap();
    assert_eq!(
        queue.add_consumer(consumer(2, 0, CHANNEL_B)),
        Err(ConsumeError::ExclusiveInUse)
    );
    assert!(queue.remove_consumer(1));
    queue.add_consumer(consumer(2, 0, CHANNEL_B)).unwrap();
    exclusive.key = 3;
    assert_eq!(
        queue.add_consumer(exclusive),
        Err(ConsumeError::AlreadyConsumers)
    );
    assert_eq!(queue.consumer_count(), 1);
}

#[test]
fn consumer_limits_and_duplicates() {
    let mut queue = Queue::new(QueueLimits {
        consumers_max: 2,
        ..QueueLimits::default()
    });
    queue.add_consumer(consumer(1, 0, CHANNEL_A)).unwrap();
    assert_eq!(
        queue.add_consumer(consumer(1, 0, CHANNEL_A)),
        Err(ConsumeError::DuplicateKey)
    );
    queue.add_consumer(consumer(2, 0, CHANNEL_A)).unwrap();
    assert_eq!(
        queue.add_consumer(consumer(3, 0, CHANNEL_A)),
        Err(ConsumeError::TooManyConsumers { max: 2 })
    );
    assert!(!queue.remove_consumer(3));
}

#[test]
fn consumer_priorities() {
    let mut queue = Queue::new(QueueLimits::default());
    let mut low = consumer(1, 0, CHANNEL_A);
    low.priority = -1;
    let mut high_a = consumer(2, 2, CHANNEL_A);
    high_a.priority = 10;
    let mut high_b = consumer(3, 1, CHANNEL_B);
    high_b.priority = 10;
    queue.add_consumer(low).unwrap();
    queue.add_consumer(high_a).unwrap();
    queue.add_consumer(high_b).unwrap();
    publish_n(&mut queue, 6);
    // Round-robin among the high ones until they are blocked, then the low one gets the rest.
    assert_eq!(
        pairs(&dispatch(&mut queue)),
        vec![(2, 1), (3, 2), (2, 3), (1, 4), (1, 5), (1, 6)]
    );
    // Credit returns to a high consumer: it is preferred again.
    queue.ack(&[2]);
    publish_n(&mut queue, 2);
    assert_eq!(pairs(&dispatch(&mut queue)), vec![(3, 7), (1, 8)]);
}

#[test]
fn requeue_keeps_message_id_order() {
    let mut queue = Queue::new(QueueLimits::default());
    queue.add_consumer(consumer(1, 0, CHANNEL_A)).unwrap();
    publish_n(&mut queue, 8);
    dispatch(&mut queue);
    // Interleaved nacks, out of order, across several calls; one is dropped.
    assert!(queue.reject(&[6, 2], true).is_empty());
    queue.ack(&[1, 3]);
    assert_eq!(queue.reject(&[5], false).len(), 1);
    queue.reject(&[8, 4, 4, 99], true);
    queue.check_invariants();
    publish_n(&mut queue, 1); // id 9, newer than every requeued one
    let out = dispatch(&mut queue);
    assert_eq!(
        out.iter()
            .map(|d| (d.message_id, d.redelivered))
            .collect::<Vec<_>>(),
        vec![(2, true), (4, true), (6, true), (8, true), (9, false)]
    );
    assert_eq!(queue.unacked_count(), 6); // 2, 4, 6, 7, 8, 9
}

#[test]
fn channel_closed_requeues_in_order_and_keeps_other_channels() {
    let mut queue = Queue::new(QueueLimits::default());
    queue.add_consumer(consumer(1, 0, CHANNEL_A)).unwrap();
    queue.add_consumer(consumer(2, 0, CHANNEL_B)).unwrap();
    publish_n(&mut queue, 6);
    dispatch(&mut queue); // 1,3,5 -> consumer 1 (A); 2,4,6 -> consumer 2 (B)
    assert!(queue.basic_get(false, CHANNEL_A).is_none(), "nothing ready");
    queue.ack(&[3]);
    queue.channel_closed(CHANNEL_A);
    assert_eq!(queue.consumer_count(), 1);
    assert_eq!(queue.message_count(), 2);
    assert_eq!(queue.unacked_count(), 3);
    // Consumer 2 holds 2,4,6 and has unlimited credit: it takes 1 and 5 now, in order.
    assert_eq!(pairs(&dispatch(&mut queue)), vec![(2, 1), (2, 5)]);
    // Closing the other channel requeues everything it held, in id order.
    queue.channel_closed(CHANNEL_B);
    assert_eq!(queue.unacked_count(), 0);
    queue.add_consumer(consumer(3, 0, CHANNEL_A)).unwrap();
    let out = dispatch(&mut queue);
    assert_eq!(
        out.iter().map(|d| d.message_id).collect::<Vec<_>>(),
        vec![1, 2, 4, 5, 6]
    );
    assert!(out.iter().all(|d| d.redelivered));
}

#[test]
fn removed_consumer_messages_stay_unacked_with_the_channel() {
    let mut queue = Queue::new(QueueLimits::default());
    queue.add_consumer(consumer(1, 1, CHANNEL_A)).unwrap();
    publish_n(&mut queue, 3);
    dispatch(&mut queue);
    assert!(queue.remove_consumer(1));
    assert_eq!(queue.unacked_count(), 1);
    assert!(queue.is_unused());
    assert!(queue.has_had_consumers());
    queue.ack(&[1]); // credit release for a gone consumer is ignored
    assert_eq!(queue.unacked_count(), 0);
    let (id, _, _) = queue.basic_get(false, CHANNEL_A).unwrap();
    queue.remove_consumer(1);
    queue.recover(CHANNEL_A);
    assert_eq!(queue.message_count(), 2);
    let (again, _, redelivered) = queue.basic_get(true, CHANNEL_A).unwrap();
    assert_eq!((again, redelivered), (id, true));
}

#[test]
fn recover_returns_credit_and_redelivers() {
    let mut queue = Queue::new(QueueLimits::default());
    queue.add_consumer(consumer(1, 2, CHANNEL_A)).unwrap();
    publish_n(&mut queue, 3);
    assert_eq!(dispatch(&mut queue).len(), 2);
    queue.recover(CHANNEL_A);
    let out = dispatch(&mut queue);
    assert_eq!(
        out.iter()
            .map(|d| (d.message_id, d.redelivered))
            .collect::<Vec<_>>(),
        vec![(1, true), (2, true)]
    );
}

#[test]
fn basic_get_with_and_without_ack() {
    let mut queue = Queue::new(QueueLimits::default());
    assert!(queue.basic_get(false, CHANNEL_A).is_none());
    publish_n(&mut queue, 3);
    let (id, _, redelivered) = queue.basic_get(false, CHANNEL_A).unwrap();
    assert_eq!((id, redelivered), (1, false));
    assert_eq!(queue.unacked_count(), 1);
    let (id, _, _) = queue.basic_get(true, CHANNEL_A).unwrap();
    assert_eq!(id, 2);
    assert_eq!(queue.unacked_count(), 1);
    queue.reject(&[1], true);
    let (id, _, redelivered) = queue.basic_get(false, CHANNEL_B).unwrap();
    assert_eq!((id, redelivered), (1, true));
    queue.check_invariants();
}

#[test]
fn purge_leaves_unacked_and_counts() {
    let mut queue = Queue::new(QueueLimits::default());
    queue.add_consumer(consumer(1, 2, CHANNEL_A)).unwrap();
    queue.publish(message(b"abc"));
    queue.publish(message(b"de"));
    queue.publish(message(b"fghi"));
    queue.publish(message(b""));
    assert_eq!(queue.ready_bytes(), 9);
    dispatch(&mut queue);
    assert_eq!(queue.ready_bytes(), 4);
    assert_eq!(queue.purge(), 2);
    assert_eq!(queue.purge(), 0);
    assert_eq!((queue.message_count(), queue.unacked_count()), (0, 2));
    assert_eq!(queue.ready_bytes(), 0);
    queue.reject(&[1], true);
    assert_eq!((queue.message_count(), queue.ready_bytes()), (1, 3));
    queue.check_invariants();
}

#[test]
fn drain_all_returns_everything_in_id_order() {
    let mut queue = Queue::new(QueueLimits::default());
    queue.add_consumer(consumer(1, 2, CHANNEL_A)).unwrap();
    let bodies: [&'static [u8]; 5] = [b"1", b"2", b"3", b"4", b"5"];
    for body in bodies {
        queue.publish(message(body));
    }
    dispatch(&mut queue); // 1, 2 unacked
    queue.reject(&[1], true); // 1 ready again, 3 delivered
    dispatch(&mut queue);
    let drained: Vec<_> = queue
        .drain_all()
        .iter()
        .map(|m| m.body().to_vec())
        .collect();
    assert_eq!(drained, bodies.to_vec());
    assert_eq!((queue.message_count(), queue.unacked_count()), (0, 0));
    assert_eq!(queue.consumers().count(), 1);
}

#[test]
fn fanout_shares_one_message() {
    let shared = message(b"payload");
    let mut first = Queue::new(QueueLimits::default());
    let mut second = Queue::new(QueueLimits::default());
    first.publish(shared.clone());
    second.publish(shared.clone());
    let (_, got, _) = first.basic_get(true, CHANNEL_A).unwrap();
    assert!(got.ptr_eq(&shared));
}

#[test]
fn entry_sizes() {
    let ready = std::mem::size_of::<ReadyEntry>();
    let unacked = std::mem::size_of::<(MessageId, Unacked)>();
    println!("ready entry {ready} bytes, unacked entry {unacked} bytes (+1 control byte)");
    assert!(ready <= 40, "ready entry is {ready} bytes");
    assert!(unacked <= 64, "unacked entry is {unacked} bytes");
}

#[test]
fn a_refused_delivery_drops_its_consumer_and_goes_to_the_next() {
    let mut queue = Queue::new(QueueLimits::default());
    queue.add_consumer(consumer(1, 0, CHANNEL_A)).unwrap();
    queue.add_consumer(consumer(2, 1, CHANNEL_B)).unwrap();
    let ids = publish_n(&mut queue, 3);
    let first = dispatch(&mut queue);
    assert_eq!(pairs(&first), vec![(1, ids[0]), (2, ids[1]), (1, ids[2])]);
    // Consumer 1's connection turned both away: it is gone, its messages come back in order
    // and go to consumer 2 as its credit allows, never to consumer 1 again.
    queue.refused(1, ids[0]);
    queue.refused(1, ids[2]);
    queue.check_invariants();
    assert!(
        dispatch(&mut queue).is_empty(),
        "consumer 2 is at its prefetch"
    );
    queue.ack(&[ids[1]]);
    let next = dispatch(&mut queue);
    assert_eq!(pairs(&next), vec![(2, ids[0])]);
    assert!(next[0].redelivered);
    queue.ack(&[ids[0]]);
    assert_eq!(pairs(&dispatch(&mut queue)), vec![(2, ids[2])]);
    assert_eq!(queue.consumer_count(), 1);
}

#[test]
fn a_late_refusal_of_a_message_held_elsewhere_is_ignored() {
    let mut queue = Queue::new(QueueLimits::default());
    queue.add_consumer(consumer(1, 0, CHANNEL_A)).unwrap();
    let id = publish_n(&mut queue, 1)[0];
    assert_eq!(pairs(&dispatch(&mut queue)), vec![(1, id)]);
    // The channel closed first: the message went back and on to consumer 2.
    queue.channel_closed(CHANNEL_A);
    queue.add_consumer(consumer(2, 0, CHANNEL_B)).unwrap();
    assert_eq!(pairs(&dispatch(&mut queue)), vec![(2, id)]);
    // Consumer 1's refusal of its copy arrives late: consumer 2 keeps the message.
    queue.refused(1, id);
    queue.check_invariants();
    assert!(
        dispatch(&mut queue).is_empty(),
        "not requeued from under consumer 2"
    );
    assert_eq!(queue.message_count(), 0);
}
