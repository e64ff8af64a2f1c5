//! A connection's state that the shard reaches through `conn_sink::ConnectionSink`
//! (`session/sink.rs`): its output buffer and, per channel, what is needed to deliver messages
//! (delivery tags, unacked messages, consumers, confirms).
//!
//! The shard calls `deliver`/`confirm_done`/`consumer_cancelled` synchronously on the
//! connection's own executor; the session's reader task mutates the same state between awaits.
//!
//! Publisher confirms are not encoded when they are decided: they wait in `ready_confirms` until
//! the next write-out (the writer taking the outbox, or any other method or content being
//! queued, so they keep their place in the stream; deliveries never had an order against them),
//! where each channel's run of consecutive acks becomes one `basic.ack(multiple=true)`. Nothing
//! waits for more confirms: the writer is woken at once.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::rc::Rc;

use bytes::BytesMut;

use crate::broker::queue::{delivery_charge_bytes, ConsumerKey, MessageId, SharedMessage};
use crate::broker::{ConnId, QueueId, ShardId};
use crate::conn_sink::{ChannelDescription, ConnectionDescription};
use crate::id_hash::IdMap;
use crate::latency_trace::{self, Stage};
use crate::limits::{
    CHANNEL_EXCHANGE_COUNTERS_MAX, CONNECTION_UNWRITTEN_BYTES_MAX, CONSUMER_WRITTEN_REPORT_BYTES,
    FRAME_MAX_BYTES, OUTBOX_INITIAL_CAPACITY_BYTES, OUTBOX_RETAINED_CAPACITY_BYTES_MAX,
};
use crate::metrics::PublishCounters;
use crate::protocol::{self, BasicAck, BasicCancel, BasicNack, DeliverFields, Method};
use crate::shard::messages::DeliverEntry;
use crate::shard::sync::Notify;

pub struct ConnShared {
    pub id: ConnId,
    /// The shard's publish totals (one per shard, shared by its connections): received,
    /// routed, unroutable and confirmed are counted where the channel decides them.
    pub publish_counters: Rc<PublishCounters>,
    pub frame_max: Cell<u32>,
    /// The client announced `consumer_cancel_notify`: tell it when a queue goes under a consumer.
    pub cancel_notify: Cell<bool>,
    /// The client announced `connection.blocked`: tell it when an alarm blocks it.
    pub blocked_notify: Cell<bool>,
    outbox: RefCell<BytesMut>,
    /// Queue consumers with deliveries encoded since the writer last took the outbox
    /// (`Consumer::encoded_bytes` > 0), each once: their bytes go with that output.
    encoded_for: RefCell<Vec<(u16, ConsumerKey)>>,
    /// The connection's write credit, all its consumers together: what deliveries encoded and
    /// not yet written were charged (`delivery_charge_bytes`). At
    /// `CONNECTION_UNWRITTEN_BYTES_MAX` further deliveries wait unencoded in their consumer's
    /// `waiting`, and are encoded one per consumer in turn (`write_turns`) as writes return.
    unwritten_bytes: Cell<u64>,
    /// Of those, the charges encoded since the writer last took the outbox, and the charges of
    /// the output the writer took and has not reported written yet.
    encoded_charge_bytes: Cell<u64>,
    taken_charge_bytes: Cell<u64>,
    /// Consumers with deliveries waiting for write credit, each once, in turn order.
    write_turns: RefCell<VecDeque<(u16, ConsumerKey)>>,
    /// Confirms decided since the last write-out, in the order they were decided.
    ready_confirms: RefCell<Vec<ReadyConfirm>>,
    /// Wakes the writer task when the outbox gains bytes.
    pub writer_wake: Notify,
    /// `--trace-latency`: the stamp of a sampled delivery in the outbox, for the writer to
    /// record once the write holding it returns.
    pub traced_stamp: Cell<Option<u64>>,
    /// `--trace-latency`: sampled publishes whose confirms are not encoded yet, by channel and
    /// sequence number (`confirm_trace_key`), and the stamps of those encoded since the writer
    /// last took the outbox, for it to record once written.
    traced_confirms: RefCell<latency_trace::Waiting>,
    pub traced_confirms_encoded: RefCell<Vec<u64>>,
    /// The output the writer took and is writing (0 between writes), for `send_pend`.
    pub writing_bytes: Cell<usize>,
    /// Wakes a paused reader when the writer has flushed.
    pub flushed: Notify,
    /// Wakes a tx.commit whose channel's publishes are all confirmed (`channel::tx`).
    pub commit_confirmed: Notify,
    /// Set by the session when nothing more will be written: the writer flushes and stops.
    pub output_closed: Cell<bool>,
    /// Set once the handshake is done: the handshake's writer (in the admission task queue)
    /// writes what it holds and stops, so the open connection's writer can start in the data
    /// path's queue (`session::serve`).
    pub writer_handover: Cell<bool>,
    /// Close by draining: the client sent connection.close (it closes the socket after reading
    /// our close-ok), or its input could no longer be parsed while we waited for close-ok. Either
    /// way we read and discard until it closes (bounded) instead of closing first, so our last
    /// frames are not lost to a reset.
    pub drain_on_close: Cell<bool>,
    pub channels: RefCell<IdMap<u16, ChannelState>>,
    /// Who the connection is, once the handshake has opened it (for the management API's
    /// listing and for closing a deleted vhost's connections); channels are added when asked.
    pub opened: RefCell<Option<ConnectionDescription>>,
    /// The vhost connection.open asked for, set before the vhost's connection limit is
    /// checked so concurrent opens count each other (`shard::admission`).
    pub vhost_claim: RefCell<Option<String>>,
    /// Channels the consumer-timeout timer found holding an expired delivery; the frame loop
    /// closes them with 406 (`consumer_timeout`).
    pub timed_out_channels: RefCell<Vec<(u16, u64)>>,
    /// Set by an operator's close (management API, vhost deletion): the reason, and the wake-up
    /// of the session's frame loop, which then closes with 320 CONNECTION_FORCED.
    forced_close: RefCell<Option<String>>,
    pub forced: Notify,
    /// What the client said about itself in connection.start-ok (shown by the management API).
    pub client_properties: RefCell<crate::protocol::FieldTable>,
    /// Bytes the reader got from the socket and the writer wrote to it: plain counters, read
    /// only when the connection describes itself.
    pub received_bytes: Cell<u64>,
    pub sent_bytes: Cell<u64>,
}

#[derive(Default)]
pub struct ChannelState {
    /// channel.close was sent by us; only close/close-ok are processed until the client answers.
    pub closing: bool,
    pub next_delivery_tag: u64,
    /// Messages delivered and not yet settled, in delivery-tag order.
    pub unacked: VecDeque<Unacked>,
    /// The oldest unacked delivery tag the consumer-timeout timer saw, and when it first saw
    /// it (`session::consumer_timeout`): ages are measured by the timer, not per delivery.
    pub ack_watch: Option<(u64, std::time::Instant)>,
    pub consumers: IdMap<ConsumerKey, Consumer>,
    pub consumer_tags: HashMap<String, ConsumerKey>,
    /// basic.qos(global=false): the limit given to consumers created from now on.
    pub prefetch_per_consumer: u16,
    /// basic.qos(global=true): the channel-wide limit.
    pub prefetch_per_channel: u16,
    pub confirm: Option<Confirms>,
    pub last_queue: Option<String>,
    /// Deliveries waiting for room under the channel-wide prefetch limit (basic.qos global=true).
    /// Each consumer's own limit at its queue is at most the channel's, so this holds at most
    /// `prefetch_per_channel` entries per consumer.
    pub over_limit: VecDeque<DeliverEntry>,
    /// The session is handling a method of this channel: server-initiated basic.cancel waits in
    /// `deferred_cancels` so it never lands between a request and its reply (RabbitMQ sends the
    /// cancel for a deleted queue after queue.delete-ok).
    pub busy: bool,
    pub deferred_cancels: Vec<ConsumerKey>,
    /// A basic.publish whose content frames are still arriving.
    /// Boxed: it is handed on whole from the channel to routing (or a transaction), and a
    /// pointer moves where the few hundred bytes of the struct would be copied at each step.
    pub pending_publish: Option<Box<super::channel::PendingPublish>>,
    /// tx.select was issued: publishes and acks wait here for tx.commit.
    pub tx: Option<super::channel::TxBuffer>,
    /// A tx.commit under way: the confirms of its publishes (`channel::tx`).
    pub committing: Option<super::channel::CommitWait>,
    /// The channel's direct reply-to consumer (at most one per channel, as in RabbitMQ).
    pub reply_consumer: Option<ConsumerKey>,
    /// Publishes on this channel by exchange, for the management API (at most
    /// `CHANNEL_EXCHANGE_COUNTERS_MAX` exchanges).
    pub published: Vec<(String, u64)>,
}

impl ChannelState {
    /// One more publish to `exchange` (a channel usually publishes to one or two: the scan is
    /// a comparison or two).
    pub fn count_published(&mut self, exchange: &str) {
        // Most publishes go to the default exchange "": an empty String's pointer is dangling,
        // and glibc's AVX-512 memcmp of zero bytes still does a masked load from it, which the
        // CPU replays in microcode (the cost 7810ac8 removed from the exchange lookup). So
        // empty names are matched without calling memcmp.
        let same =
            |name: &str| name.len() == exchange.len() && (exchange.is_empty() || name == exchange);
        if let Some((_, count)) = self.published.iter_mut().find(|(name, _)| same(name)) {
            *count += 1;
        } else if self.published.len() < CHANNEL_EXCHANGE_COUNTERS_MAX {
            self.published.push((exchange.to_string(), 1));
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Unacked {
    pub tag: u64,
    pub queue: QueueId,
    pub owner: ShardId,
    pub message_id: MessageId,
}

pub struct Consumer {
    pub tag: String,
    pub target: ConsumerTarget,
    pub no_ack: bool,
    /// Until consume-ok is written, deliveries wait here so they never overtake it.
    pub held: Option<Vec<DeliverEntry>>,
    /// What the queue charged for deliveries encoded into the outbox since the writer last
    /// took it (`delivery_charge_bytes`), and for those written since the last report to the
    /// queue (`ConnShared::bodies_written`).
    pub encoded_bytes: u64,
    pub written_bytes: u64,
    /// Deliveries not encoded yet: the connection was at its write credit
    /// (`CONNECTION_UNWRITTEN_BYTES_MAX`) or this consumer already had some waiting.
    pub waiting: VecDeque<DeliverEntry>,
}

/// Bytes written for one queue consumer, to report to its queue (`SettleOp::Written`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WrittenReport {
    pub queue: QueueId,
    pub owner: ShardId,
    pub consumer: ConsumerKey,
    pub bytes: u64,
}

/// What a consumer consumes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsumerTarget {
    /// A queue, hosted by shard `owner`.
    Queue { queue: QueueId, owner: ShardId },
    /// Direct reply-to (`amq.rabbitmq.reply-to`): replies come straight from their publisher,
    /// no queue holds them, and nothing is ever acked or requeued.
    DirectReply,
}

impl ConsumerTarget {
    /// The queue and its owner, unless this is a reply consumer.
    pub fn queue(self) -> Option<(QueueId, ShardId)> {
        match self {
            ConsumerTarget::Queue { queue, owner } => Some((queue, owner)),
            ConsumerTarget::DirectReply => None,
        }
    }
}

pub struct Confirms {
    pub next_seq: u64,
    /// Publishes waiting for other shards or the log: seq -> (replies still expected, any
    /// refusal). Ordered, because the lowest one bounds which acks may be coalesced.
    pub pending: BTreeMap<u64, (u32, bool)>,
}

impl Confirms {
    pub fn new() -> Confirms {
        Confirms {
            next_seq: 1,
            pending: BTreeMap::new(),
        }
    }

    /// Every tag below this one is confirmed already or waits in `ready_confirms`: an ack with
    /// `multiple` may cover tags below it and no other.
    fn lowest_pending(&self) -> u64 {
        self.pending
            .first_key_value()
            .map_or(self.next_seq, |(&seq, _)| seq)
    }
}

/// A confirm that is decided but not yet encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ReadyConfirm {
    channel: u16,
    seq: u64,
    ok: bool,
}

/// One confirm frame; with `multiple`, it settles every unconfirmed tag up to `seq`.
/// One channel as the management API shows it.
fn describe_channel(
    number: u16,
    channel: &ChannelState,
    ready_confirms: u64,
) -> ChannelDescription {
    let (messages_uncommitted, acks_uncommitted) = channel
        .tx
        .as_ref()
        .map_or((0, 0), super::channel::TxBuffer::uncommitted);
    let pending = channel
        .confirm
        .as_ref()
        .map_or(0, |c| c.pending.len() as u64);
    ChannelDescription {
        number,
        prefetch_count: channel.prefetch_per_consumer,
        global_prefetch_count: channel.prefetch_per_channel,
        confirm: channel.confirm.is_some(),
        transactional: channel.tx.is_some(),
        messages_unacknowledged: channel.unacked.len() as u64,
        messages_unconfirmed: pending + ready_confirms,
        messages_uncommitted,
        acks_uncommitted,
        published: channel.published.clone(),
        consumer_tags: channel
            .consumers
            .iter()
            .map(|(key, consumer)| (*key, consumer.tag.clone()))
            .collect(),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ConfirmFrame {
    seq: u64,
    ok: bool,
    multiple: bool,
}

/// Encoded size of a basic.ack or basic.nack frame: header 7, class and method 4, tag 8, bits 1,
/// frame end 1. Ready confirms count as this much output for back-pressure.
const CONFIRM_FRAME_BYTES: usize = 21;

impl ConnShared {
    pub fn new(id: ConnId) -> ConnShared {
        ConnShared {
            id,
            publish_counters: Rc::default(),
            frame_max: Cell::new(FRAME_MAX_BYTES),
            cancel_notify: Cell::new(false),
            blocked_notify: Cell::new(false),
            outbox: RefCell::new(BytesMut::with_capacity(OUTBOX_INITIAL_CAPACITY_BYTES)),
            encoded_for: RefCell::new(Vec::new()),
            unwritten_bytes: Cell::new(0),
            encoded_charge_bytes: Cell::new(0),
            taken_charge_bytes: Cell::new(0),
            write_turns: RefCell::new(VecDeque::new()),
            ready_confirms: RefCell::new(Vec::new()),
            writer_wake: Notify::default(),
            traced_stamp: Cell::new(None),
            traced_confirms: RefCell::new(latency_trace::Waiting::default()),
            traced_confirms_encoded: RefCell::new(Vec::new()),
            writing_bytes: Cell::new(0),
            flushed: Notify::default(),
            commit_confirmed: Notify::default(),
            output_closed: Cell::new(false),
            writer_handover: Cell::new(false),
            drain_on_close: Cell::new(false),
            channels: RefCell::new(IdMap::default()),
            opened: RefCell::new(None),
            vhost_claim: RefCell::new(None),
            timed_out_channels: RefCell::new(Vec::new()),
            forced_close: RefCell::new(None),
            forced: Notify::default(),
            client_properties: RefCell::new(Default::default()),
            received_bytes: Cell::new(0),
            sent_bytes: Cell::new(0),
        }
    }

    /// Counts into the shard's publish totals instead of a connection-private one.
    pub fn with_publish_counters(mut self, counters: Rc<PublishCounters>) -> ConnShared {
        self.publish_counters = counters;
        self
    }

    /// The handshake is done: what the management API shows of the connection from now on.
    pub fn set_opened(&self, description: ConnectionDescription) {
        *self.opened.borrow_mut() = Some(description);
    }

    /// The connection's description with its channels as they are now.
    pub fn describe(&self) -> Option<ConnectionDescription> {
        let mut description = self.opened.borrow().clone()?;
        description.received_bytes = self.received_bytes.get();
        description.sent_bytes = self.sent_bytes.get();
        description.send_pending_bytes = (self.outbox_len() + self.writing_bytes.get()) as u64;
        let channels = self.channels.borrow();
        let ready = self.ready_confirms.borrow();
        let mut numbers: Vec<u16> = channels.keys().copied().collect();
        numbers.sort_unstable();
        description.channels = numbers
            .into_iter()
            .filter_map(|number| {
                let channel = channels.get(&number)?;
                // Decided but not yet encoded: unconfirmed until the writer takes them.
                let ready_here = ready.iter().filter(|c| c.channel == number).count();
                Some(describe_channel(number, channel, ready_here as u64))
            })
            .collect();
        Some(description)
    }

    /// Asks the session to close with 320 and `reason`; false before the handshake opened it.
    pub fn force_close(&self, reason: &str) -> bool {
        if self.opened.borrow().is_none() {
            return false;
        }
        self.forced_close
            .borrow_mut()
            .get_or_insert_with(|| reason.to_string());
        self.forced.notify();
        true
    }

    /// The reason of an operator's close, once asked.
    pub fn forced_close_reason(&self) -> Option<String> {
        self.forced_close.borrow().clone()
    }

    pub fn in_vhost(&self, vhost: &str) -> bool {
        self.opened
            .borrow()
            .as_ref()
            .is_some_and(|opened| opened.vhost == vhost)
    }

    pub fn send_method(&self, channel: u16, method: &Method) {
        self.write_ready_confirms();
        protocol::encode_method_frame(channel, method, &mut self.outbox.borrow_mut());
        self.writer_wake.notify();
    }

    pub fn send_content(&self, channel: u16, method: &Method, message: &SharedMessage) {
        self.write_ready_confirms();
        protocol::encode_content_raw(
            channel,
            method,
            message.raw_properties(),
            message.body(),
            self.frame_max.get(),
            &mut self.outbox.borrow_mut(),
        );
        self.writer_wake.notify();
    }

    pub fn send_raw(&self, bytes: &[u8]) {
        self.write_ready_confirms();
        self.outbox.borrow_mut().extend_from_slice(bytes);
        self.writer_wake.notify();
    }

    pub fn send_heartbeat(&self) {
        protocol::encode_heartbeat(&mut self.outbox.borrow_mut());
        self.writer_wake.notify();
    }

    /// Unsent output in bytes, ready confirms included.
    pub fn outbox_len(&self) -> usize {
        self.outbox.borrow().len() + self.ready_confirms.borrow().len() * CONFIRM_FRAME_BYTES
    }

    /// Everything written so far, for the writer task, with the consumers whose deliveries it
    /// holds and what each was charged for them (for `bodies_written` once it is written).
    /// A buffer that grew past `OUTBOX_RETAINED_CAPACITY_BYTES_MAX` is not kept: the output
    /// takes it whole and the outbox starts a small one, so the large allocation is freed once
    /// written (held alone, `bytes` would reuse it, resident, for the connection's life).
    pub fn take_output(&self) -> (BytesMut, Vec<(u16, ConsumerKey, u64)>) {
        self.write_ready_confirms();
        let output = {
            let mut outbox = self.outbox.borrow_mut();
            if outbox.capacity() > OUTBOX_RETAINED_CAPACITY_BYTES_MAX {
                let fresh = BytesMut::with_capacity(OUTBOX_INITIAL_CAPACITY_BYTES);
                std::mem::replace(&mut *outbox, fresh)
            } else {
                outbox.split()
            }
        };
        let charged = self.encoded_charge_bytes.take();
        self.taken_charge_bytes
            .set(self.taken_charge_bytes.get() + charged);
        (output, self.take_encoded_bytes())
    }

    /// What the connection's deliveries encoded and not yet written were charged.
    pub fn unwritten_bytes(&self) -> u64 {
        self.unwritten_bytes.get()
    }

    fn take_encoded_bytes(&self) -> Vec<(u16, ConsumerKey, u64)> {
        let consumers = std::mem::take(&mut *self.encoded_for.borrow_mut());
        if consumers.is_empty() {
            return Vec::new();
        }
        let mut channels = self.channels.borrow_mut();
        consumers
            .into_iter()
            .filter_map(|(channel_id, key)| {
                let consumer = channels.get_mut(&channel_id)?.consumers.get_mut(&key)?;
                let bytes = std::mem::take(&mut consumer.encoded_bytes);
                (bytes > 0).then_some((channel_id, key, bytes))
            })
            .collect()
    }

    /// The output taken with `encoded` is on the socket: what each consumer was charged for it
    /// counts as written; a consumer with `CONSUMER_WRITTEN_REPORT_BYTES` written is reported
    /// to its queue. Consumers gone meanwhile are skipped (their queue dropped them).
    pub fn bodies_written(&self, encoded: Vec<(u16, ConsumerKey, u64)>) -> Vec<WrittenReport> {
        let written = self.taken_charge_bytes.take();
        assert!(
            written <= self.unwritten_bytes.get(),
            "written more than was encoded"
        );
        self.unwritten_bytes
            .set(self.unwritten_bytes.get() - written);
        if written > 0 {
            self.encode_waiting();
        }
        if encoded.is_empty() {
            return Vec::new();
        }
        let mut channels = self.channels.borrow_mut();
        let mut reports = Vec::new();
        for (channel_id, key, bytes) in encoded {
            let Some(consumer) = channels
                .get_mut(&channel_id)
                .and_then(|channel| channel.consumers.get_mut(&key))
            else {
                continue;
            };
            consumer.written_bytes = consumer.written_bytes.saturating_add(bytes);
            if consumer.written_bytes < CONSUMER_WRITTEN_REPORT_BYTES {
                continue;
            }
            if let Some((queue, owner)) = consumer.target.queue() {
                reports.push(WrittenReport {
                    queue,
                    owner,
                    consumer: key,
                    bytes: std::mem::take(&mut consumer.written_bytes),
                });
            }
        }
        reports
    }

    /// A delivery for one of our consumers. Refused (handed back) when the channel or the consumer
    /// is gone, so the caller can requeue it.
    pub fn deliver(&self, entry: DeliverEntry) -> Result<(), DeliverEntry> {
        let mut channels = self.channels.borrow_mut();
        let Some(channel) = channels.get_mut(&entry.channel.channel) else {
            return Err(entry);
        };
        if channel.closing {
            return Err(entry);
        }
        let Some(consumer) = channel.consumers.get_mut(&entry.consumer) else {
            return Err(entry);
        };
        if let Some(held) = consumer.held.as_mut() {
            held.push(entry);
            return Ok(());
        }
        if !consumer.no_ack && channel.at_channel_limit() {
            channel.over_limit.push_back(entry);
            return Ok(());
        }
        if let Some(waiting) = channel
            .consumers
            .get_mut(&entry.consumer)
            .map(|consumer| &mut consumer.waiting)
            .filter(|waiting| {
                !waiting.is_empty() || self.unwritten_bytes.get() >= CONNECTION_UNWRITTEN_BYTES_MAX
            })
        {
            if waiting.is_empty() {
                self.write_turns
                    .borrow_mut()
                    .push_back((entry.channel.channel, entry.consumer));
            }
            waiting.push_back(entry);
            return Ok(());
        }
        self.encode_delivery(channel, entry);
        drop(channels);
        self.writer_wake.notify();
        Ok(())
    }

    /// Encodes one delivery for a consumer of `channel` and charges it to the consumer (for
    /// its queue's credit) and to the connection (for its own).
    fn encode_delivery(&self, channel: &mut ChannelState, entry: DeliverEntry) {
        let (delivery_tag, consumer_tag) = channel.record_delivery(&entry);
        self.encode_deliver(
            entry.channel.channel,
            consumer_tag,
            delivery_tag,
            entry.redelivered,
            &entry.message,
        );
        let charged = delivery_charge_bytes(entry.message.body_len() as u64);
        self.unwritten_bytes
            .set(self.unwritten_bytes.get().saturating_add(charged));
        self.encoded_charge_bytes
            .set(self.encoded_charge_bytes.get().saturating_add(charged));
        if let Some(consumer) = channel.consumers.get_mut(&entry.consumer) {
            if consumer.encoded_bytes == 0 {
                self.encoded_for
                    .borrow_mut()
                    .push((entry.channel.channel, entry.consumer));
            }
            consumer.encoded_bytes = consumer.encoded_bytes.saturating_add(charged);
        }
    }

    /// Write credit came back: encodes waiting deliveries, one per consumer in turn, while the
    /// connection is under `CONNECTION_UNWRITTEN_BYTES_MAX`, so every consumer of the
    /// connection moves however much another one has waiting. A consumer or channel gone
    /// meanwhile took its waiting deliveries with it (its queue requeued what it held).
    fn encode_waiting(&self) {
        let mut encoded = false;
        // Each turn either encodes one delivery or drops a turn: bounded by what waits.
        while self.unwritten_bytes.get() < CONNECTION_UNWRITTEN_BYTES_MAX {
            let Some((channel_id, key)) = self.write_turns.borrow_mut().pop_front() else {
                break;
            };
            let mut channels = self.channels.borrow_mut();
            let Some(channel) = channels.get_mut(&channel_id).filter(|c| !c.closing) else {
                continue;
            };
            let Some(consumer) = channel.consumers.get_mut(&key) else {
                continue;
            };
            let Some(entry) = consumer.waiting.pop_front() else {
                continue;
            };
            if !consumer.waiting.is_empty() {
                self.write_turns.borrow_mut().push_back((channel_id, key));
            }
            self.encode_delivery(channel, entry);
            encoded = true;
        }
        if encoded {
            self.writer_wake.notify();
        }
    }

    /// Encodes every delivery waiting for consumer `key` of `channel_id` whatever the credit:
    /// before its cancel goes out, so they precede it as they would have without the wait (a
    /// no-ack consumer's deliveries are its own already: its queue cannot take them back).
    /// Bounded by that consumer's own credit at its queue (`CONSUMER_UNWRITTEN_BYTES_MAX`).
    pub fn encode_waiting_for(&self, channel_id: u16, key: ConsumerKey) {
        let mut channels = self.channels.borrow_mut();
        let Some(channel) = channels.get_mut(&channel_id) else {
            return;
        };
        let waiting = match channel.consumers.get_mut(&key) {
            Some(consumer) => std::mem::take(&mut consumer.waiting),
            None => return,
        };
        if waiting.is_empty() {
            return;
        }
        for entry in waiting {
            self.encode_delivery(channel, entry);
        }
        drop(channels);
        self.writer_wake.notify();
    }

    /// `encode_waiting_for` the consumer that `tag` names on `channel_id` (basic.cancel).
    pub fn encode_waiting_for_tag(&self, channel_id: u16, tag: &str) {
        let key = self
            .channels
            .borrow()
            .get(&channel_id)
            .and_then(|channel| channel.consumer_tags.get(tag).copied());
        if let Some(key) = key {
            self.encode_waiting_for(channel_id, key);
        }
    }

    /// A direct reply for consumer `key` of channel `channel_id`: delivered at once (a reply
    /// consumer is no-ack and never held back). False when that is not a live reply consumer.
    pub fn deliver_reply(
        &self,
        channel_id: u16,
        key: ConsumerKey,
        message: &SharedMessage,
    ) -> bool {
        let mut channels = self.channels.borrow_mut();
        let Some(channel) = channels.get_mut(&channel_id) else {
            return false;
        };
        if channel.closing || channel.reply_consumer != Some(key) {
            return false;
        }
        let delivery_tag = channel.next_tag();
        let Some(consumer) = channel.consumers.get(&key) else {
            return false;
        };
        debug_assert_eq!(consumer.target, ConsumerTarget::DirectReply);
        self.encode_deliver(channel_id, &consumer.tag, delivery_tag, false, message);
        drop(channels);
        self.writer_wake.notify();
        true
    }

    /// Written straight from the message and the consumer's tag: nothing is copied but the
    /// bytes that go on the wire.
    fn encode_deliver(
        &self,
        channel_id: u16,
        consumer_tag: &str,
        delivery_tag: u64,
        redelivered: bool,
        message: &SharedMessage,
    ) {
        if let Some(stamp) = latency_trace::sampled(message.body()) {
            latency_trace::record_stamp(Stage::DeliveryEncoded, stamp);
            if self.traced_stamp.get().is_none() {
                self.traced_stamp.set(Some(stamp));
            }
        }
        let fields = DeliverFields {
            consumer_tag,
            delivery_tag,
            redelivered,
            exchange: message.exchange(),
            routing_key: message.routing_key(),
        };
        protocol::encode_deliver(
            channel_id,
            &fields,
            message.raw_properties(),
            message.body(),
            self.frame_max.get(),
            &mut self.outbox.borrow_mut(),
        );
    }

    /// Delivers what waited for channel-wide credit, as far as the limit now allows. Returns the
    /// entries whose consumer is gone, for the caller to requeue.
    pub fn release_over_limit(&self, channel_id: u16) -> Vec<DeliverEntry> {
        let mut refused = Vec::new();
        loop {
            let entry = {
                let mut channels = self.channels.borrow_mut();
                let Some(channel) = channels.get_mut(&channel_id) else {
                    break;
                };
                if channel.at_channel_limit() {
                    break;
                }
                let Some(entry) = channel.over_limit.pop_front() else {
                    break;
                };
                entry
            };
            if let Err(entry) = self.deliver(entry) {
                refused.push(entry);
            }
        }
        refused
    }

    /// Writes the deliveries held back until consume-ok went out.
    pub fn release_held(&self, channel_id: u16, key: ConsumerKey) {
        let held = {
            let mut channels = self.channels.borrow_mut();
            channels
                .get_mut(&channel_id)
                .and_then(|c| c.consumers.get_mut(&key))
                .and_then(|c| c.held.take())
                .unwrap_or_default()
        };
        for entry in held {
            // The consumer is live now, so this delivers (or hands back if it just vanished).
            if let Err(entry) = self.deliver(entry) {
                tracing::debug!(message = entry.message_id, "held delivery refused");
            }
        }
    }

    /// Another shard finished its part of a confirmed publish.
    pub fn confirm_done(&self, channel_id: u16, seq: u64, ok: bool) {
        let finished = {
            let mut channels = self.channels.borrow_mut();
            let Some(channel) = channels.get_mut(&channel_id) else {
                return;
            };
            if let Some(commit) = channel.committing.as_mut() {
                commit.decided(seq, ok);
                if commit.is_complete() {
                    self.commit_confirmed.notify();
                }
                return;
            }
            let Some(confirms) = channel.confirm.as_mut() else {
                return;
            };
            let Some((remaining, refused)) = confirms.pending.get_mut(&seq) else {
                return;
            };
            *remaining = remaining.saturating_sub(1);
            *refused |= !ok;
            if *remaining > 0 {
                return;
            }
            let refused = *refused;
            confirms.pending.remove(&seq);
            refused
        };
        self.send_confirm(channel_id, seq, !finished);
    }

    /// The publish `seq` of this channel is settled: confirmed (`ok`) or refused. Written at the
    /// next write-out, coalesced with the channel's other ready acks.
    pub fn send_confirm(&self, channel_id: u16, seq: u64, ok: bool) {
        if ok {
            self.publish_counters.count(|totals| totals.confirmed += 1);
        }
        self.ready_confirms.borrow_mut().push(ReadyConfirm {
            channel: channel_id,
            seq,
            ok,
        });
        self.writer_wake.notify();
    }

    /// `--trace-latency`: the publish `seq` of `channel_id` is a sampled message stamped `stamp`.
    pub fn trace_confirm(&self, channel_id: u16, seq: u64, stamp: u64) {
        let key = confirm_trace_key(channel_id, seq);
        self.traced_confirms.borrow_mut().push(key, stamp);
    }

    /// `--trace-latency`: records the encoding of the sampled confirms among `ready`.
    fn trace_confirms_encoded(&self, ready: &[ReadyConfirm]) {
        let mut traced = self.traced_confirms.borrow_mut();
        if traced.is_empty() {
            return;
        }
        for confirm in ready {
            if let Some(stamp) = traced.take(confirm_trace_key(confirm.channel, confirm.seq)) {
                latency_trace::record_stamp(Stage::ConfirmEncoded, stamp);
                self.traced_confirms_encoded.borrow_mut().push(stamp);
            }
        }
    }

    /// Encodes the ready confirms into the outbox, one frame per maximal run of acks per channel.
    fn write_ready_confirms(&self) {
        let mut ready = self.ready_confirms.borrow_mut();
        if ready.is_empty() {
            return;
        }
        if latency_trace::is_enabled() {
            self.trace_confirms_encoded(&ready);
        }
        // Usually sorted already (one channel, settled in order): the sort is then one pass.
        ready.sort_unstable_by_key(|confirm| (confirm.channel, confirm.seq));
        // Not borrowable only if a caller writes while holding the channel table; singles are
        // exact without knowing what is pending.
        let channels = self.channels.try_borrow().ok();
        let mut outbox = self.outbox.borrow_mut();
        for group in ready.chunk_by(|a, b| a.channel == b.channel) {
            let Some(first) = group.first() else {
                continue;
            };
            let lowest_pending = channels
                .as_ref()
                .and_then(|channels| channels.get(&first.channel))
                .and_then(|channel| channel.confirm.as_ref())
                .map_or(0, Confirms::lowest_pending);
            coalesce_confirms(group, lowest_pending, |frame| {
                let method = confirm_method(frame);
                protocol::encode_method_frame(first.channel, &method, &mut outbox);
            });
        }
        ready.clear();
    }

    /// The queue under one of our consumers was deleted.
    pub fn consumer_cancelled(&self, channel_id: u16, key: ConsumerKey) {
        let busy = self
            .channels
            .borrow()
            .get(&channel_id)
            .is_some_and(|channel| channel.busy);
        if !busy {
            self.encode_waiting_for(channel_id, key);
        }
        let tag = {
            let mut channels = self.channels.borrow_mut();
            let Some(channel) = channels.get_mut(&channel_id) else {
                return;
            };
            if channel.busy {
                channel.deferred_cancels.push(key);
                return;
            }
            let Some(consumer) = channel.consumers.remove(&key) else {
                return;
            };
            channel.consumer_tags.remove(&consumer.tag);
            if channel.reply_consumer == Some(key) {
                channel.reply_consumer = None;
            }
            consumer.tag
        };
        if self.cancel_notify.get() {
            let method = Method::BasicCancel(BasicCancel {
                consumer_tag: tag,
                no_wait: true,
            });
            self.send_method(channel_id, &method);
        }
    }
}

impl ConnShared {
    /// Marks the start or end of a method's handling; at the end, cancels that waited are sent.
    pub fn set_channel_busy(&self, channel_id: u16, busy: bool) {
        let deferred = {
            let mut channels = self.channels.borrow_mut();
            let Some(channel) = channels.get_mut(&channel_id) else {
                return;
            };
            channel.busy = busy;
            if busy {
                return;
            }
            std::mem::take(&mut channel.deferred_cancels)
        };
        for key in deferred {
            self.consumer_cancelled(channel_id, key);
        }
    }
}

/// The frames for one channel's ready confirms (sorted by tag). An ack may cover the acks before
/// it (`multiple`) only below `lowest_pending`, where every tag is confirmed or ready; a nack,
/// or a tag at or above `lowest_pending`, is sent alone and ends the run before it.
fn coalesce_confirms(
    ready: &[ReadyConfirm],
    lowest_pending: u64,
    mut emit: impl FnMut(ConfirmFrame),
) {
    debug_assert!(ready.windows(2).all(|pair| pair[0].seq < pair[1].seq));
    // The last tag of the current run of acks and how many acks it holds.
    let mut run: Option<(u64, usize)> = None;
    for confirm in ready {
        if confirm.ok && confirm.seq < lowest_pending {
            let length = run.map_or(0, |(_, length)| length);
            run = Some((confirm.seq, length + 1));
            continue;
        }
        if let Some(run) = run.take() {
            emit(run_frame(run));
        }
        emit(ConfirmFrame {
            seq: confirm.seq,
            ok: confirm.ok,
            multiple: false,
        });
    }
    if let Some(run) = run {
        emit(run_frame(run));
    }
}

/// A run of one ack is sent as a plain ack, as before coalescing.
fn run_frame((seq, length): (u64, usize)) -> ConfirmFrame {
    ConfirmFrame {
        seq,
        ok: true,
        multiple: length > 1,
    }
}

fn confirm_method(frame: ConfirmFrame) -> Method {
    if frame.ok {
        Method::BasicAck(BasicAck {
            delivery_tag: frame.seq,
            multiple: frame.multiple,
        })
    } else {
        Method::BasicNack(BasicNack {
            delivery_tag: frame.seq,
            multiple: false,
            requeue: false,
        })
    }
}

impl ChannelState {
    pub fn new() -> ChannelState {
        ChannelState {
            next_delivery_tag: 1,
            ..ChannelState::default()
        }
    }

    /// Whether the channel-wide prefetch limit is reached.
    pub fn at_channel_limit(&self) -> bool {
        self.prefetch_per_channel > 0
            && self.unacked.len() >= usize::from(self.prefetch_per_channel)
    }

    pub fn next_tag(&mut self) -> u64 {
        let tag = self.next_delivery_tag;
        self.next_delivery_tag += 1;
        tag
    }

    /// Assigns a delivery tag and remembers the message until it is settled (unless no-ack).
    /// Returns the tag and the consumer tag for the basic.deliver.
    fn record_delivery(&mut self, entry: &DeliverEntry) -> (u64, &str) {
        let tag = self.next_tag();
        let held_by_queue = self
            .consumers
            .get(&entry.consumer)
            .filter(|consumer| !consumer.no_ack)
            .and_then(|consumer| consumer.target.queue());
        if let Some((_, owner)) = held_by_queue {
            self.unacked.push_back(Unacked {
                tag,
                queue: entry.queue,
                owner,
                message_id: entry.message_id,
            });
        }
        let consumer_tag = self
            .consumers
            .get(&entry.consumer)
            .map_or("", |c| c.tag.as_str());
        (tag, consumer_tag)
    }

    /// Removes and returns the unacked messages an ack/nack/reject names; `None` when the tag is
    /// unknown (a PRECONDITION_FAILED for the caller).
    pub fn take_unacked(&mut self, tag: u64, multiple: bool) -> Option<Vec<Unacked>> {
        if multiple {
            let end = if tag == 0 {
                self.unacked.len()
            } else {
                self.unacked.partition_point(|u| u.tag <= tag)
            };
            if end == 0 && tag != 0 {
                return None;
            }
            return Some(self.unacked.drain(..end).collect());
        }
        let index = self.unacked.binary_search_by_key(&tag, |u| u.tag).ok()?;
        self.unacked.remove(index).map(|u| vec![u])
    }
}

/// A sampled confirm's key in `ConnShared::traced_confirms`: sequence numbers past 2^48 (years
/// of publishes on one channel) may alias, which costs a wrong trace sample, nothing else.
fn confirm_trace_key(channel_id: u16, seq: u64) -> u64 {
    (u64::from(channel_id) << 48) | (seq & ((1 << 48) - 1))
}

#[cfg(test)]
mod tests {
    use super::{coalesce_confirms, ConfirmFrame, ReadyConfirm};

    fn ready(tags: &[(u64, bool)]) -> Vec<ReadyConfirm> {
        tags.iter()
            .map(|&(seq, ok)| ReadyConfirm {
                channel: 1,
                seq,
                ok,
            })
            .collect()
    }

    fn frames(tags: &[(u64, bool)], lowest_pending: u64) -> Vec<(u64, bool, bool)> {
        let mut out = Vec::new();
        coalesce_confirms(&ready(tags), lowest_pending, |f: ConfirmFrame| {
            out.push((f.seq, f.ok, f.multiple))
        });
        out
    }

    #[test]
    fn consecutive_acks_become_one_multiple_ack() {
        let tags: Vec<_> = (1..=5).map(|seq| (seq, true)).collect();
        assert_eq!(frames(&tags, 6), [(5, true, true)]);
    }

    #[test]
    fn a_nack_breaks_the_run_and_goes_alone() {
        let tags = [
            (1, true),
            (2, true),
            (3, false),
            (4, true),
            (5, true),
            (6, false),
        ];
        assert_eq!(
            frames(&tags, 7),
            [
                (2, true, true),
                (3, false, false),
                (5, true, true),
                (6, false, false)
            ]
        );
    }

    #[test]
    fn acks_above_a_pending_tag_are_sent_singly() {
        // Tag 3 still waits for another shard: ack(5, multiple) would settle it too.
        let tags = [(1, true), (2, true), (4, true), (5, true)];
        assert_eq!(
            frames(&tags, 3),
            [(2, true, true), (4, true, false), (5, true, false)]
        );
    }

    #[test]
    fn a_lone_ack_is_not_multiple() {
        assert_eq!(frames(&[(7, true)], 8), [(7, true, false)]);
        // Tags confirmed earlier are no gap: ack(9, multiple) settles only 8 and 9.
        assert_eq!(frames(&[(8, true), (9, true)], 10), [(9, true, true)]);
    }

    #[test]
    fn unknown_channel_state_means_singles() {
        let tags = [(1, true), (2, true)];
        assert_eq!(frames(&tags, 0), [(1, true, false), (2, true, false)]);
    }
}

#[cfg(test)]
mod write_credit_tests {
    use super::*;
    use crate::broker::queue::{ChannelRef, Message, Route};
    use crate::protocol::BasicProperties;

    const KEY: ConsumerKey = 7;

    /// A no-ack consumer of queue 5 with nothing encoded or waiting.
    fn consumer(tag: &str) -> Consumer {
        Consumer {
            tag: tag.to_owned(),
            target: ConsumerTarget::Queue { queue: 5, owner: 0 },
            no_ack: true,
            held: None,
            encoded_bytes: 0,
            written_bytes: 0,
            waiting: VecDeque::new(),
        }
    }

    fn connection_with_consumer() -> ConnShared {
        let conn = ConnShared::new(1);
        let mut channel = ChannelState::new();
        channel.consumers.insert(KEY, consumer("c"));
        channel.consumer_tags.insert("c".to_owned(), KEY);
        conn.channels.borrow_mut().insert(1, channel);
        conn
    }

    fn entry(body_bytes: usize) -> DeliverEntry {
        entry_for(KEY, body_bytes)
    }

    fn entry_for(consumer: ConsumerKey, body_bytes: usize) -> DeliverEntry {
        let route = Route {
            exchange: "",
            routing_key: "q",
        };
        DeliverEntry {
            channel: ChannelRef {
                conn: 1,
                channel: 1,
            },
            consumer,
            queue: 5,
            message_id: 1,
            message: Message::new(route, &BasicProperties::default(), &vec![0; body_bytes]),
            redelivered: false,
        }
    }

    #[test]
    fn written_bytes_go_to_the_queue_once_past_the_report_threshold() {
        let conn = connection_with_consumer();
        let body_bytes = 64 * 1024;
        let charge = delivery_charge_bytes(body_bytes as u64);
        let mut deliveries = 0;
        // One delivery per write: nothing is reported below the threshold.
        let reports = loop {
            assert!(conn.deliver(entry(body_bytes)).is_ok());
            deliveries += 1;
            let (output, encoded) = conn.take_output();
            assert!(output.len() > body_bytes);
            assert_eq!(encoded, vec![(1, KEY, charge)]);
            let reports = conn.bodies_written(encoded);
            if !reports.is_empty() {
                break reports;
            }
        };
        assert_eq!(deliveries, CONSUMER_WRITTEN_REPORT_BYTES.div_ceil(charge));
        let report = WrittenReport {
            queue: 5,
            owner: 0,
            consumer: KEY,
            bytes: deliveries * charge,
        };
        assert_eq!(reports, vec![report]);
        // Encoded after the output was taken: it goes with the next output, not that one.
        let (_, encoded) = conn.take_output();
        assert!(encoded.is_empty());
        assert!(conn.deliver(entry(1)).is_ok());
        assert!(conn.deliver(entry(2)).is_ok());
        let (_, encoded) = conn.take_output();
        let both = delivery_charge_bytes(1) + delivery_charge_bytes(2);
        assert_eq!(encoded, vec![(1, KEY, both)]);
        // A consumer gone before its output was written is skipped.
        conn.channels.borrow_mut().clear();
        assert!(conn.bodies_written(encoded).is_empty());
    }

    /// Deliveries encoded into the connection's outbox so far (each takes a delivery tag).
    fn encoded_deliveries(conn: &ConnShared) -> u64 {
        conn.channels.borrow()[&1].next_delivery_tag - 1
    }

    #[test]
    fn a_connection_holds_at_most_its_write_credit_and_shares_it_between_its_consumers() {
        const OTHER: ConsumerKey = 8;
        let conn = connection_with_consumer();
        let other = consumer("other");
        conn.channels
            .borrow_mut()
            .get_mut(&1)
            .expect("channel")
            .consumers
            .insert(OTHER, other);
        let body_bytes = 256 * 1024;
        let charge = delivery_charge_bytes(body_bytes as u64);
        // One consumer is handed three times what the connection may hold, then the other one
        // message: the outbox stops at the connection's credit.
        let many = 3 * CONNECTION_UNWRITTEN_BYTES_MAX / charge;
        for _ in 0..many {
            assert!(conn.deliver(entry_for(KEY, body_bytes)).is_ok());
        }
        assert!(conn.deliver(entry_for(OTHER, body_bytes)).is_ok());
        assert!(conn.unwritten_bytes() < CONNECTION_UNWRITTEN_BYTES_MAX + charge);
        assert!((conn.outbox_len() as u64) < CONNECTION_UNWRITTEN_BYTES_MAX + charge);
        let encoded_at_first = encoded_deliveries(&conn);
        assert!(encoded_at_first < many);
        // Nothing is freed before a write returns.
        let (_, encoded) = conn.take_output();
        assert!(conn.deliver(entry_for(OTHER, body_bytes)).is_ok());
        assert_eq!(encoded_deliveries(&conn), encoded_at_first);
        // Once it is written, the consumers take turns: the other one's first waiting delivery
        // goes out with the first credit, not after the first consumer's backlog.
        conn.bodies_written(encoded);
        let (_, encoded) = conn.take_output();
        assert!(
            encoded.iter().any(|&(_, key, _)| key == OTHER),
            "the other consumer was served in its turn: {encoded:?}"
        );
        // Write after write, everything is encoded, never more than the credit at a time.
        let mut writes = 0;
        let mut encoded = encoded;
        while encoded_deliveries(&conn) < many + 2 {
            conn.bodies_written(encoded);
            assert!(conn.unwritten_bytes() < CONNECTION_UNWRITTEN_BYTES_MAX + charge);
            encoded = conn.take_output().1;
            writes += 1;
            assert!(writes <= many, "deliveries stuck waiting");
        }
        conn.bodies_written(encoded);
        assert_eq!(
            conn.unwritten_bytes(),
            0,
            "everything written is credited back"
        );
    }

    #[test]
    fn a_cancelled_consumer_gets_its_waiting_deliveries_before_the_cancel() {
        let conn = connection_with_consumer();
        let body_bytes = 1024 * 1024;
        let many = 2 * CONNECTION_UNWRITTEN_BYTES_MAX / delivery_charge_bytes(body_bytes as u64);
        for _ in 0..many {
            assert!(conn.deliver(entry(body_bytes)).is_ok());
        }
        assert!(encoded_deliveries(&conn) < many);
        conn.encode_waiting_for_tag(1, "c");
        assert_eq!(encoded_deliveries(&conn), many);
    }

    #[test]
    fn an_outbox_grown_past_its_retained_bound_is_not_kept() {
        let conn = connection_with_consumer();
        assert!(conn
            .deliver(entry(OUTBOX_RETAINED_CAPACITY_BYTES_MAX))
            .is_ok());
        let (output, _) = conn.take_output();
        assert!(output.capacity() > OUTBOX_RETAINED_CAPACITY_BYTES_MAX);
        assert!(conn.outbox.borrow().capacity() <= OUTBOX_INITIAL_CAPACITY_BYTES);
        // A small one is kept (split off, its spare capacity stays).
        assert!(conn.deliver(entry(16)).is_ok());
        let (output, _) = conn.take_output();
        assert!(output.capacity() <= OUTBOX_RETAINED_CAPACITY_BYTES_MAX);
    }
}
