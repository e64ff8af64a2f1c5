//! Seeded random operations against a naive reference queue: same inputs, same outputs.
//!
//! The reference keeps everything in plain vectors and picks the next consumer by scanning:
//! highest priority, then the smallest "turn ticket" (a consumer draws a new ticket whenever it
//! joins the back of the line: when added, after a delivery that leaves it credit, and when a
//! settle unblocks it). That is the ring semantics, stated without rings.

use super::Route;
use super::*;
use crate::protocol::BasicProperties;
use bytes::Bytes;

const CHANNELS: [ChannelRef; 3] = [
    ChannelRef {
        conn: 1,
        channel: 1,
    },
    ChannelRef {
        conn: 1,
        channel: 2,
    },
    ChannelRef {
        conn: 2,
        channel: 1,
    },
];
const CONSUMERS_MAX: u32 = 4;
const OPERATIONS: usize = 4_000;
const SEEDS: u64 = 12;

/// splitmix64: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn channel(&mut self) -> ChannelRef {
        CHANNELS[self.below(CHANNELS.len() as u64) as usize]
    }
}

struct ModelConsumer {
    spec: ConsumerSpec,
    in_flight: u32,
    ticket: u64,
}

impl ModelConsumer {
    fn has_credit(&self) -> bool {
        self.spec.no_ack
            || self.spec.prefetch == 0
            || self.in_flight < u32::from(self.spec.prefetch)
    }
}

struct ModelHeld {
    id: MessageId,
    message: SharedMessage,
    channel: ChannelRef,
    consumer: Option<ConsumerKey>,
}

#[derive(Default)]
struct Model {
    next_id: MessageId,
    ready: Vec<(MessageId, SharedMessage, bool)>,
    unacked: Vec<ModelHeld>,
    consumers: Vec<ModelConsumer>,
    tickets: u64,
    had_consumers: bool,
    delivered: usize,
}

type Got = Option<(MessageId, SharedMessage, bool)>;

impl Model {
    fn new() -> Model {
        Model {
            next_id: 1,
            ..Model::default()
        }
    }

    fn ticket(&mut self) -> u64 {
        self.tickets += 1;
        self.tickets
    }

    fn publish(&mut self, message: SharedMessage) -> MessageId {
        let id = self.next_id;
        self.next_id += 1;
        self.ready.push((id, message, false));
        id
    }

    fn add_consumer(&mut self, spec: ConsumerSpec) -> Result<(), ConsumeError> {
        if self.consumers.iter().any(|c| c.spec.exclusive) {
            return Err(ConsumeError::ExclusiveInUse);
        }
        if spec.exclusive && !self.consumers.is_empty() {
            return Err(ConsumeError::AlreadyConsumers);
        }
        if self.consumers.len() >= CONSUMERS_MAX as usize {
            return Err(ConsumeError::TooManyConsumers { max: CONSUMERS_MAX });
        }
        let ticket = self.ticket();
        self.consumers.push(ModelConsumer {
            spec,
            in_flight: 0,
            ticket,
        });
        self.had_consumers = true;
        Ok(())
    }

    fn remove_consumer(&mut self, key: ConsumerKey) -> bool {
        let before = self.consumers.len();
        self.consumers.retain(|c| c.spec.key != key);
        before != self.consumers.len()
    }

    fn dispatch(&mut self, out: &mut Vec<Delivery>, max: usize) {
        for _ in 0..max {
            if self.ready.is_empty() {
                return;
            }
            let Some(index) = (0..self.consumers.len())
                .filter(|&i| self.consumers[i].has_credit())
                .min_by_key(|&i| {
                    (
                        -i64::from(self.consumers[i].spec.priority),
                        self.consumers[i].ticket,
                    )
                })
            else {
                return;
            };
            self.ready.sort_by_key(|(id, _, _)| *id);
            let (id, message, redelivered) = self.ready.remove(0);
            let spec = self.consumers[index].spec.clone();
            if !spec.no_ack {
                self.consumers[index].in_flight += 1;
                self.unacked.push(ModelHeld {
                    id,
                    message: message.clone(),
                    channel: spec.channel,
                    consumer: Some(spec.key),
                });
            }
            if self.consumers[index].has_credit() {
                self.consumers[index].ticket = self.ticket();
            }
            self.delivered += 1;
            out.push(Delivery {
                consumer: spec.key,
                channel: spec.channel,
                message_id: id,
                message,
                redelivered,
            });
        }
    }

    fn basic_get(&mut self, no_ack: bool, channel: ChannelRef) -> Got {
        if self.ready.is_empty() {
            return None;
        }
        self.ready.sort_by_key(|(id, _, _)| *id);
        let (id, message, redelivered) = self.ready.remove(0);
        if !no_ack {
            self.unacked.push(ModelHeld {
                id,
                message: message.clone(),
                channel,
                consumer: None,
            });
        }
        Some((id, message, redelivered))
    }

    fn take(&mut self, id: MessageId) -> Option<ModelHeld> {
        let index = self.unacked.iter().position(|held| held.id == id)?;
        let held = self.unacked.remove(index);
        let ticket = self.tickets + 1;
        if let Some(consumer) = self
            .consumers
            .iter_mut()
            .find(|c| Some(c.spec.key) == held.consumer)
        {
            let was_blocked = !consumer.has_credit();
            consumer.in_flight -= 1;
            if was_blocked {
                consumer.ticket = ticket;
                self.tickets = ticket;
            }
        }
        Some(held)
    }

    fn ack(&mut self, ids: &[MessageId]) {
        for &id in ids {
            self.take(id);
        }
    }

    fn reject(&mut self, ids: &[MessageId], requeue: bool) -> Vec<SharedMessage> {
        let mut dropped = Vec::new();
        for &id in ids {
            if let Some(held) = self.take(id) {
                if requeue {
                    self.ready.push((id, held.message, true));
                } else {
                    dropped.push(held.message);
                }
            }
        }
        dropped
    }

    fn requeue_channel(&mut self, channel: ChannelRef) {
        let mut ids: Vec<MessageId> = self
            .unacked
            .iter()
            .filter(|held| held.channel == channel)
            .map(|held| held.id)
            .collect();
        ids.sort_unstable();
        self.reject(&ids, true);
    }

    fn channel_closed(&mut self, channel: ChannelRef) {
        self.consumers.retain(|c| c.spec.channel != channel);
        self.requeue_channel(channel);
    }

    fn purge(&mut self) -> u32 {
        let count = self.ready.len() as u32;
        self.ready.clear();
        count
    }

    fn drain_all(&mut self) -> Vec<SharedMessage> {
        let mut held: Vec<MessageId> = self.unacked.iter().map(|held| held.id).collect();
        held.sort_unstable();
        let mut all: Vec<(MessageId, SharedMessage)> = held
            .into_iter()
            .filter_map(|id| self.take(id))
            .map(|held| (held.id, held.message))
            .collect();
        all.extend(self.ready.drain(..).map(|(id, message, _)| (id, message)));
        all.sort_by_key(|(id, _)| *id);
        all.into_iter().map(|(_, message)| message).collect()
    }

    fn ready_bytes(&self) -> u64 {
        self.ready.iter().map(|(_, m, _)| m.body_len() as u64).sum()
    }
}

fn same_messages(left: &[SharedMessage], right: &[SharedMessage]) -> bool {
    left.len() == right.len() && left.iter().zip(right).all(|(l, r)| l.ptr_eq(r))
}

fn same_deliveries(left: &[Delivery], right: &[Delivery]) -> bool {
    left.len() == right.len()
        && left.iter().zip(right).all(|(l, r)| {
            (l.consumer, l.channel, l.message_id, l.redelivered)
                == (r.consumer, r.channel, r.message_id, r.redelivered)
                && l.message.ptr_eq(&r.message)
        })
}

fn same_got(left: &Got, right: &Got) -> bool {
    match (left, right) {
        (None, None) => true,
        (Some((li, lm, lr)), Some((ri, rm, rr))) => li == ri && lr == rr && lm.ptr_eq(rm),
        _ => false,
    }
}

/// A few ids to settle: mostly held ones, sometimes repeated or unknown.
fn pick_ids(rng: &mut Rng, model: &Model) -> Vec<MessageId> {
    let count = rng.below(4) as usize;
    (0..count)
        .map(|_| {
            if model.unacked.is_empty() || rng.chance(10) {
                rng.below(model.next_id + 2)
            } else {
                model.unacked[rng.below(model.unacked.len() as u64) as usize].id
            }
        })
        .collect()
}

fn random_spec(rng: &mut Rng, key: ConsumerKey) -> ConsumerSpec {
    ConsumerSpec {
        key,
        prefetch: rng.below(4) as u16,
        no_ack: rng.chance(10),
        exclusive: rng.chance(4),
        priority: rng.below(3) as i32 - 1,
        channel: rng.channel(),
    }
}

fn step(rng: &mut Rng, queue: &mut Queue, model: &mut Model, next_key: &mut ConsumerKey) {
    let operation = rng.below(100);
    match operation {
        0..=29 => {
            let body = Bytes::from(vec![0u8; rng.below(16) as usize]);
            let message = Message::new(
                Route {
                    exchange: "",
                    routing_key: "",
                },
                &BasicProperties::default(),
                &body,
            );
            assert_eq!(queue.publish(message.clone()), model.publish(message));
        }
        30..=44 => {
            let max = if rng.chance(50) {
                usize::MAX
            } else {
                rng.below(4) as usize
            };
            let (mut got, mut want) = (Vec::new(), Vec::new());
            queue.dispatch(&mut got, max);
            model.dispatch(&mut want, max);
            assert!(
                same_deliveries(&got, &want),
                "dispatch: {got:?} vs {want:?}"
            );
        }
        45..=51 => {
            *next_key += 1;
            let spec = random_spec(rng, *next_key);
            assert_eq!(queue.add_consumer(spec.clone()), model.add_consumer(spec));
        }
        52..=55 => {
            let key = rng.below(*next_key + 2);
            assert_eq!(queue.remove_consumer(key), model.remove_consumer(key));
        }
        56..=61 => {
            let (no_ack, channel) = (rng.chance(30), rng.channel());
            let got = queue.basic_get(no_ack, channel);
            assert!(same_got(&got, &model.basic_get(no_ack, channel)));
        }
        62..=77 => {
            let ids = pick_ids(rng, model);
            queue.ack(&ids);
            model.ack(&ids);
        }
        78..=91 => {
            let (ids, requeue) = (pick_ids(rng, model), rng.chance(70));
            let got = queue.reject(&ids, requeue);
            assert!(same_messages(&got, &model.reject(&ids, requeue)));
        }
        92..=94 => {
            let channel = rng.channel();
            queue.channel_closed(channel);
            model.channel_closed(channel);
        }
        95..=97 => {
            let channel = rng.channel();
            queue.recover(channel);
            model.requeue_channel(channel);
        }
        98 => assert_eq!(queue.purge(), model.purge()),
        _ => {
            if rng.chance(20) {
                assert!(same_messages(&queue.drain_all(), &model.drain_all()));
            }
        }
    }
}

fn check_same_state(queue: &Queue, model: &Model) {
    queue.check_invariants();
    assert_eq!(queue.message_count() as usize, model.ready.len());
    assert_eq!(queue.unacked_count() as usize, model.unacked.len());
    assert_eq!(queue.consumer_count() as usize, model.consumers.len());
    assert_eq!(queue.ready_bytes(), model.ready_bytes());
    assert_eq!(queue.is_unused(), model.consumers.is_empty());
    assert_eq!(queue.has_had_consumers(), model.had_consumers);
}

#[test]
fn matches_reference_model() {
    let mut deliveries = 0usize;
    for seed in 0..SEEDS {
        let mut rng = Rng(seed);
        let mut queue = Queue::new(QueueLimits {
            consumers_max: CONSUMERS_MAX,
            ..QueueLimits::default()
        });
        let mut model = Model::new();
        let mut next_key = 0;
        for _ in 0..OPERATIONS {
            step(&mut rng, &mut queue, &mut model, &mut next_key);
            check_same_state(&queue, &model);
        }
        deliveries += model.delivered;
    }
    // Guard against a generator that stopped exercising dispatch.
    assert!(deliveries > 1_000, "only {deliveries} deliveries");
}
