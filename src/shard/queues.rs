//! The queues a shard owns: applying publishes, settlements and queue requests, and dispatching
//! deliveries to consumers (wherever their connections live).

use std::num::NonZeroU64;
use std::rc::Rc;
use std::time::Instant;

use super::calls::ShardCall;
use super::expiry::now_ms;
use super::messages::{queue_op, GotMessage, QueueRequest, SettleOp};
use super::storage::{self, EnqueueOutcome};
use super::{DeliverEntry, Shard};
use crate::broker::queue::{
    Admission, ConsumeError, ConsumerSpec, DeathReason, Delivery, MessageId, Queue, QueueConfig,
    QueueLimits, RestoreTimes, SharedMessage,
};
use crate::broker::{AmqpError, QueueId, QueueMeta, ShardId};
use crate::limits::DISPATCH_BATCH_MAX;
use crate::protocol::{reply_code, FieldTable};
use crate::storage::Lsn;

pub struct HostedQueue {
    pub(super) queue: Queue,
    auto_delete: bool,
    /// Its messages survive a restart (those it logged).
    durable: bool,
    /// Which messages published to it are written to the shard's log.
    logs: Logs,
    /// One message at a time is timed from enqueue to delivery (`Probe`'s latency histogram):
    /// one clock read per sample, not per message. Replaced by the next publish that finds the
    /// queue empty (then the sampled one was delivered, taken or dropped).
    latency_sample: Option<(MessageId, Instant)>,
}

/// What a hosted queue writes to the shard's log at publish (paging writes others later).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Logs {
    /// A non-durable or exclusive queue.
    Nothing,
    /// A durable classic queue: its persistent messages.
    Persistent,
    /// A quorum queue: every message, as RabbitMQ's quorum queues whatever the delivery mode.
    Every,
    /// A replicated quorum queue (on its group's leader): nothing goes to the shard's log;
    /// every message, settlement and return is an entry of the queue's Raft group instead
    /// (`quorum_group`).
    Group,
}

/// Where a message a queue accepted was logged.
enum Logged {
    Nothing,
    Wal(Lsn),
    /// Proposed to the queue's group: this sequence number commits or not.
    Group(u64),
}

impl HostedQueue {
    /// `memory_bytes_max`: body bytes of ready messages kept in RAM (the shard's
    /// `--queue-memory-bytes`); past it the newest are paged out.
    /// `arguments`: the queue's own with its policies folded in
    /// (`Topology::effective_queue_arguments`).
    pub fn new(meta: &QueueMeta, arguments: &FieldTable, memory_bytes_max: u64) -> HostedQueue {
        let limits = QueueLimits {
            memory_bytes_max,
            ..QueueLimits::default()
        };
        let durable = meta.durable && meta.exclusive_owner.is_none();
        HostedQueue {
            queue: Queue::with_config(limits, QueueConfig::from_arguments(arguments)),
            auto_delete: meta.auto_delete,
            durable,
            logs: match (durable, crate::broker::quorum::is_quorum(&meta.arguments)) {
                (false, _) => Logs::Nothing,
                (true, false) => Logs::Persistent,
                (true, true) => Logs::Every,
            },
            latency_sample: None,
        }
    }

    /// The queue of a replicated quorum queue on its group's leader: never paged (its
    /// messages' `persisted` positions are the group's log indexes, not the shard's WAL).
    pub(super) fn replicated(meta: &QueueMeta, arguments: &FieldTable) -> HostedQueue {
        let mut hosted = HostedQueue::new(meta, arguments, u64::MAX);
        hosted.logs = Logs::Group;
        hosted
    }

    pub(super) fn is_replicated(&self) -> bool {
        self.logs == Logs::Group
    }

    /// `message` is written to the log when published here: one match, as the two flags it
    /// replaced, so a classic queue's publish decides as fast as before.
    fn logs_at_publish(&self, message: &SharedMessage) -> bool {
        match self.logs {
            Logs::Nothing => false,
            Logs::Persistent => storage::is_persistent(message),
            Logs::Every | Logs::Group => true,
        }
    }

    /// Starts timing `id` unless a sample is in flight (a queue that was empty has none left).
    fn sample_latency(&mut self, id: MessageId, was_empty: bool) {
        if self.latency_sample.is_none() || was_empty {
            self.latency_sample = Some((id, Instant::now()));
        }
    }

    fn auto_delete_now(&self) -> bool {
        self.auto_delete && self.queue.has_had_consumers() && self.queue.consumer_count() == 0
    }
}

impl Shard {
    pub(super) fn host_queue(&self, id: QueueId, meta: &QueueMeta) {
        let arguments = self.topology.borrow().effective_queue_arguments(meta);
        let budget = self.features.pager.queue_memory_bytes();
        self.queues
            .borrow_mut()
            .entry(id)
            .or_insert_with(|| HostedQueue::new(meta, &arguments, budget));
        self.queue_used(id);
    }

    /// The policy set changed: every hosted queue's limits are made again from its arguments
    /// and the policies matching it now. A queue whose limits moved is dispatched at once, so
    /// a lower max-length trims it now (dead-lettering as its overflow says), as in RabbitMQ.
    /// Bounded by the queues hosted here; runs only on a policy change, never per message.
    pub(super) fn apply_policies(&self) {
        let ids: Vec<QueueId> = self.queues.borrow().keys().copied().collect();
        for id in ids {
            let config = {
                let topology = self.topology.borrow();
                let Some(meta) = topology.queue_by_id(id) else {
                    continue;
                };
                QueueConfig::from_arguments(&topology.effective_queue_arguments(meta))
            };
            let changed = self
                .queues
                .borrow_mut()
                .get_mut(&id)
                .is_some_and(|hosted| hosted.queue.reconfigure(config));
            if changed {
                self.queue_used(id);
                self.dispatch(id);
            }
        }
    }

    pub(super) fn hosts_durable_queue(&self, id: QueueId) -> bool {
        self.queues
            .borrow()
            .get(&id)
            .is_some_and(|hosted| hosted.durable)
    }

    /// Start-up: a queue moved to another shard (`TopologyChange::MoveQueue`) before any
    /// message was restored: it is dropped here without settling anything, since its messages
    /// now belong to the new owner's log.
    pub(super) fn release_queue(&self, id: QueueId) {
        if let Some(hosted) = self.queues.borrow_mut().remove(&id) {
            // Moves are applied before any message is restored: messages here would be a second
            // copy of what the new owner's log holds.
            assert_eq!(hosted.queue.message_count(), 0, "moved queue had messages");
        }
    }

    /// Removes a queue we own; its consumers are told (basic.cancel) and its messages dropped.
    /// Returns the number of ready messages it held.
    pub(super) fn unhost_queue(&self, id: QueueId) -> Option<u32> {
        let mut hosted = self.queues.borrow_mut().remove(&id)?;
        self.probe.retire(&hosted.queue.totals());
        self.features.timers.clear_queue(id);
        let count = hosted.queue.message_count();
        // Its persisted messages are gone for good: settle them in the log (a replicated
        // queue's are in its group's log, which goes with the queue).
        hosted.queue.drain_all();
        let forgotten = hosted.queue.take_forgotten();
        if !hosted.is_replicated() {
            self.storage.log_settle(id, &forgotten);
        }
        // drain_all leaves the consumers in place so they can be told.
        for spec in hosted.queue.consumers() {
            self.route_consumer_cancelled(spec.channel, spec.key);
        }
        Some(count)
    }

    /// Puts `message` in each of `queues` (all ours). A queue may refuse it (x-overflow
    /// reject-publish, or its log record could not be written): the publisher's confirm becomes
    /// a nack. A persistent message in a durable queue is logged first; its confirm waits for
    /// the returned LSN to be durable.
    pub(super) fn enqueue_local(
        &self,
        queues: &[QueueId],
        message: &SharedMessage,
    ) -> EnqueueOutcome {
        let mut outcome = EnqueueOutcome::default();
        for &id in queues {
            match self.offer(id, message) {
                Some((Admission::Accept, logged)) => {
                    match logged {
                        Logged::Nothing => {}
                        Logged::Wal(lsn) => outcome.lsn = Some(lsn),
                        Logged::Group(seq) => outcome.quorum_seqs.push(seq),
                    }
                    crate::latency_trace::record(
                        crate::latency_trace::Stage::Enqueued,
                        message.body(),
                    );
                    self.dispatch(id);
                }
                Some((Admission::Refuse, _)) => outcome.refused = true,
                Some((Admission::Duplicate, _)) => {}
                Some((Admission::RefuseDeadLetter, _)) => {
                    outcome.refused = true;
                    self.dead_letter(id, DeathReason::MaxLen, vec![message.clone()]);
                }
                // Deleted while the message was being routed; or a replicated quorum queue
                // whose leadership left this node meanwhile: then it is refused (nacked).
                None => outcome.refused |= self.is_replicated_id(id),
            }
        }
        outcome
    }

    /// Admission, then the log record (persistent message or quorum queue, durable queue),
    /// then the queue.
    fn offer(&self, id: QueueId, message: &SharedMessage) -> Option<(Admission, Logged)> {
        let limited = self.queues.borrow().get(&id)?.queue.has_length_limit();
        if limited {
            // Expired messages must not take room.
            self.expire_queue(id);
        }
        let mut queues = self.queues.borrow_mut();
        let hosted = queues.get_mut(&id)?;
        let now = now_ms();
        let Ok(dedup_key) = hosted.queue.check_duplicate(message, now) else {
            return Some((Admission::Duplicate, Logged::Nothing));
        };
        let admission = hosted.queue.admit(message);
        if admission != Admission::Accept {
            return Some((admission, Logged::Nothing));
        }
        let was_empty = hosted.queue.message_count() == 0;
        if !hosted.logs_at_publish(message) {
            hosted.queue.remember_key(dedup_key, now);
            let message_id = hosted.queue.publish_at(message.clone(), now);
            hosted.sample_latency(message_id, was_empty);
            return Some((Admission::Accept, Logged::Nothing));
        }
        if hosted.logs == Logs::Group {
            // Enqueued when its entry commits (`apply_quorum_entry`), not now.
            return Some(match self.propose_enqueue(id, message) {
                Some(seq) => {
                    hosted.queue.remember_key(dedup_key, now);
                    (Admission::Accept, Logged::Group(seq))
                }
                None => (Admission::Refuse, Logged::Nothing),
            });
        }
        let message_id = hosted.queue.next_message_id();
        match self.storage.log_enqueue(id, message_id, message, now) {
            Ok(lsn) => {
                self.storage.append_succeeded();
                if let Some(stamp) = crate::latency_trace::sampled(message.body()) {
                    self.storage.trace_logged(lsn, stamp);
                }
                hosted.queue.remember_key(dedup_key, now);
                let persisted = NonZeroU64::new(lsn);
                hosted
                    .queue
                    .publish_persisted(message.clone(), persisted, now);
                hosted.sample_latency(message_id, was_empty);
                Some((Admission::Accept, Logged::Wal(lsn)))
            }
            Err(error) => {
                let what = "message log append (persistent messages refused)";
                self.storage.append_failed(what, &error);
                Some((Admission::Refuse, Logged::Nothing))
            }
        }
    }

    /// Start-up: a message recovered from the log goes back to its queue (paged when its body
    /// stayed in the log: `body_on_disk_bytes`). False when the queue is not (or no longer)
    /// ours.
    pub(super) fn restore_message(
        &self,
        id: QueueId,
        message_id: MessageId,
        message: SharedMessage,
        lsn: NonZeroU64,
        enqueued_ms: u64,
        body_on_disk_bytes: Option<u64>,
    ) -> bool {
        let mut queues = self.queues.borrow_mut();
        let Some(hosted) = queues.get_mut(&id).filter(|hosted| hosted.durable) else {
            return false;
        };
        let now = now_ms();
        match body_on_disk_bytes {
            None => hosted
                .queue
                .restore(message_id, message, lsn, now, enqueued_ms),
            Some(bytes) => {
                let times = RestoreTimes {
                    now_ms: now,
                    enqueued_ms,
                };
                hosted
                    .queue
                    .restore_paged(message_id, message, bytes, lsn, times)
            }
        }
        true
    }

    /// Writes settle records for the persisted messages that left queue `id` for good, and
    /// stores again those whose delivery count changed (the newest record of an id wins).
    /// Non-durable queues have persisted messages too: those written when paged out.
    /// Paged messages dropped towards a dead-letter exchange go to the pager to be read first.
    pub(super) fn log_forgotten(&self, id: QueueId) {
        let (forgotten, recounted, paged_dropped, logs) =
            match self.queues.borrow_mut().get_mut(&id) {
                Some(hosted) => (
                    hosted.queue.take_forgotten(),
                    hosted.queue.take_recounted(),
                    hosted.queue.take_paged_dropped(),
                    hosted.logs,
                ),
                None => return,
            };
        if logs == Logs::Group {
            self.propose_settled(id, forgotten, recounted);
            return;
        }
        self.dead_letter_paged(id, paged_dropped);
        self.storage.log_settle(id, &forgotten);
        for (message_id, message, enqueued_ms) in recounted {
            if let Err(error) = self
                .storage
                .log_enqueue(id, message_id, &message, enqueued_ms)
            {
                tracing::warn!(queue = id, %error, "cannot store a delivery count; it restarts after a restart");
            }
        }
    }

    /// Delivers what consumer credit allows. Deliveries are collected first and routed after the
    /// queue borrow ends, because routing a local delivery touches the connection's state.
    /// Feature hooks, in this order: expiry drops what is past its TTL first (it must not be
    /// delivered); after delivering, length limits drop the overflow (dead-lettered), and paging
    /// moves bodies out of or back into memory.
    pub(super) fn dispatch(&self, id: QueueId) {
        self.expire_queue(id);
        self.dispatch_ready(id);
        let dropped = match self.queues.borrow_mut().get_mut(&id) {
            Some(hosted) => hosted.queue.enforce_length(),
            None => Vec::new(),
        };
        self.log_forgotten(id);
        self.dead_letter(id, DeathReason::MaxLen, dropped);
        self.page_out_queue(id);
        self.want_load(id);
    }

    fn dispatch_ready(&self, id: QueueId) {
        loop {
            let mut deliveries = Vec::new();
            match self.queues.borrow_mut().get_mut(&id) {
                Some(hosted) => {
                    hosted.queue.dispatch(&mut deliveries, DISPATCH_BATCH_MAX);
                    self.observe_latency_sample(hosted, &deliveries);
                }
                None => return,
            }
            // Routed after the borrow ends: a local delivery touches the connection's state.
            let produced = deliveries.len();
            for d in deliveries {
                self.route_delivery(DeliverEntry {
                    channel: d.channel,
                    consumer: d.consumer,
                    queue: id,
                    message_id: d.message_id,
                    message: d.message,
                    redelivered: d.redelivered,
                });
            }
            if produced < DISPATCH_BATCH_MAX {
                self.log_forgotten(id); // no-ack deliveries settle at once
                return;
            }
        }
    }

    fn observe_latency_sample(&self, hosted: &mut HostedQueue, deliveries: &[Delivery]) {
        let Some((sampled, since)) = hosted.latency_sample else {
            return;
        };
        if deliveries.iter().any(|d| d.message_id == sampled) {
            self.probe.observe_delivery_latency(since.elapsed());
            hosted.latency_sample = None;
        }
    }

    pub(super) fn apply_settle(&self, id: QueueId, op: SettleOp) {
        let dropped = {
            let mut queues = self.queues.borrow_mut();
            let Some(hosted) = queues.get_mut(&id) else {
                return;
            };
            match op {
                SettleOp::Ack(ids) => {
                    hosted.queue.ack(&ids);
                    Vec::new()
                }
                SettleOp::Reject { ids, requeue } => hosted.queue.reject(&ids, requeue),
                SettleOp::Refused { consumer, id } => {
                    hosted.queue.refused(consumer, id);
                    Vec::new()
                }
                SettleOp::Written { consumer, bytes } => {
                    hosted.queue.written(consumer, bytes);
                    Vec::new()
                }
            }
        };
        self.queue_changed(id, dropped);
    }

    /// The feature hooks after an operation changed queue `id`, in this order: the log settles
    /// what left it and re-stores changed delivery counts; dead-lettering takes what was
    /// `rejected` and what went over `x-delivery-limit`; then `dispatch`.
    fn queue_changed(&self, id: QueueId, rejected: Vec<SharedMessage>) {
        self.log_forgotten(id);
        self.dead_letter(id, DeathReason::Rejected, rejected);
        self.dead_letter_over_limit(id);
        self.dispatch(id);
    }

    /// Dead-letters what the queue dropped for `x-delivery-limit` while requeueing.
    fn dead_letter_over_limit(&self, id: QueueId) {
        let over = match self.queues.borrow_mut().get_mut(&id) {
            Some(hosted) => hosted.queue.take_over_delivery_limit(),
            None => return,
        };
        self.dead_letter(id, DeathReason::DeliveryLimit, over);
    }

    /// Answers a request about a queue we own. basic.get first reads a paged head back; the
    /// rest is synchronous: the queue is ours alone.
    async fn handle_queue_request<O: QueueCall>(
        self: &Rc<Self>,
        id: QueueId,
        op: O,
    ) -> Result<O::Ok, AmqpError> {
        if op.reads_head() {
            self.load_head(id).await;
        }
        self.handle_queue_op(id, op)
    }

    /// Answers a request about a queue we own. Synchronous: the queue is ours alone.
    pub(super) fn handle_queue_op<O: QueueCall>(
        self: &Rc<Self>,
        id: QueueId,
        op: O,
    ) -> Result<O::Ok, AmqpError> {
        // Expired messages are neither counted nor handed to basic.get.
        self.expire_queue(id);
        let uses_queue = op.uses_queue();
        let removes_queue = op.removes_queue();
        let result = {
            let mut queues = self.queues.borrow_mut();
            // Not an invariant: the request was addressed by the caller's copy of the topology,
            // which may predate the queue's deletion (or its move to another shard).
            let Some(hosted) = queues.get_mut(&id) else {
                return Err(AmqpError::new(
                    reply_code::NOT_FOUND,
                    "NOT_FOUND - queue was deleted".to_string(),
                ));
            };
            op.apply(hosted)?
        };
        if removes_queue {
            self.unhost_queue(id);
            return Ok(result);
        }
        if uses_queue {
            self.queue_used(id);
        }
        self.queue_changed(id, Vec::new());
        Ok(result)
    }
}

/// An operation on one queue, applied by the shard hosting it. Implemented by each type of
/// `messages::queue_op`; `Ok` is its answer.
/// A queue operation as asked of the node that leads the queue, and how its answer reads back
/// (`QueueCall::remote`).
pub type RemoteUse<T> = Option<(super::RemoteOp, fn(super::RemoteAnswer) -> T)>;

pub trait QueueCall: Send + 'static {
    type Ok: Send + 'static;
    fn apply(self, hosted: &mut HostedQueue) -> Result<Self::Ok, AmqpError>;
    /// A use of the queue renews its x-expires lease.
    fn uses_queue(&self) -> bool {
        true
    }
    /// The head must be in memory (paged back in) before `apply`.
    fn reads_head(&self) -> bool {
        false
    }
    /// After a successful `apply` the queue object goes.
    fn removes_queue(&self) -> bool {
        false
    }
    /// The same operation on a queue another node leads (asked of that node, `forward`), with
    /// how its answer reads back. `None`: not available for such a queue.
    fn remote(&self) -> RemoteUse<Self::Ok> {
        None
    }
}

impl<O: QueueCall> ShardCall for QueueRequest<O> {
    type Reply = Result<O::Ok, AmqpError>;
    async fn handle(self, shard: &Rc<Shard>, _from: ShardId) -> Self::Reply {
        shard.handle_queue_request(self.queue, self.op).await
    }
}

impl QueueCall for queue_op::Count {
    type Ok = queue_op::Counts;
    fn uses_queue(&self) -> bool {
        self.renews_expiry
    }
    fn remote(&self) -> RemoteUse<queue_op::Counts> {
        let op = super::RemoteOp::Count {
            renews_expiry: self.renews_expiry,
        };
        Some((op, |answer| queue_op::Counts {
            messages: answer.numbers.0,
            consumers: answer.numbers.1,
        }))
    }
    fn apply(self, hosted: &mut HostedQueue) -> Result<queue_op::Counts, AmqpError> {
        Ok(queue_op::Counts {
            messages: hosted.queue.message_count(),
            consumers: hosted.queue.consumer_count(),
        })
    }
}

impl QueueCall for queue_op::Consume {
    type Ok = ();
    fn remote(&self) -> RemoteUse<()> {
        let op = super::RemoteOp::Consume {
            key: self.key,
            channel: self.channel,
            prefetch: self.prefetch,
            no_ack: self.no_ack,
            exclusive: self.exclusive,
            priority: self.priority,
        };
        Some((op, |_| ()))
    }
    fn apply(self, hosted: &mut HostedQueue) -> Result<(), AmqpError> {
        let spec = ConsumerSpec {
            key: self.key,
            prefetch: self.prefetch,
            no_ack: self.no_ack,
            exclusive: self.exclusive,
            priority: self.priority,
            channel: self.channel,
        };
        hosted.queue.add_consumer(spec).map_err(consume_error)
    }
}

impl QueueCall for queue_op::Cancel {
    /// Whether an auto-delete queue is now unused.
    type Ok = bool;
    fn remote(&self) -> RemoteUse<bool> {
        let op = super::RemoteOp::Cancel { key: self.key };
        Some((op, |answer| answer.numbers.0 != 0))
    }
    fn apply(self, hosted: &mut HostedQueue) -> Result<bool, AmqpError> {
        hosted.queue.remove_consumer(self.key);
        Ok(hosted.auto_delete_now())
    }
}

impl QueueCall for queue_op::Get {
    type Ok = Option<GotMessage>;
    fn remote(&self) -> RemoteUse<Option<GotMessage>> {
        let op = super::RemoteOp::Get {
            channel: self.channel,
            no_ack: self.no_ack,
        };
        Some((op, |answer| answer.got))
    }
    fn reads_head(&self) -> bool {
        true
    }
    fn apply(self, hosted: &mut HostedQueue) -> Result<Option<GotMessage>, AmqpError> {
        let queue = &mut hosted.queue;
        let got = queue.basic_get(self.no_ack, self.channel);
        let remaining = queue.message_count();
        Ok(got.map(|(message_id, message, redelivered)| GotMessage {
            message_id,
            message,
            redelivered,
            remaining,
        }))
    }
}

impl QueueCall for queue_op::Purge {
    /// Messages purged.
    type Ok = u32;
    fn remote(&self) -> RemoteUse<u32> {
        Some((super::RemoteOp::Purge, |answer| answer.numbers.0))
    }
    fn apply(self, hosted: &mut HostedQueue) -> Result<u32, AmqpError> {
        Ok(hosted.queue.purge())
    }
}

impl QueueCall for queue_op::Delete {
    /// Messages the queue held.
    type Ok = u32;
    fn removes_queue(&self) -> bool {
        true
    }
    fn remote(&self) -> RemoteUse<u32> {
        let op = super::RemoteOp::Delete {
            if_unused: self.if_unused,
            if_empty: self.if_empty,
        };
        Some((op, |answer| answer.numbers.0))
    }
    fn apply(self, hosted: &mut HostedQueue) -> Result<u32, AmqpError> {
        let queue = &hosted.queue;
        if self.if_unused && !queue.is_unused() {
            return Err(AmqpError::new(
                reply_code::PRECONDITION_FAILED,
                "PRECONDITION_FAILED - queue in use".to_string(),
            ));
        }
        if self.if_empty && queue.message_count() > 0 {
            return Err(AmqpError::new(
                reply_code::PRECONDITION_FAILED,
                "PRECONDITION_FAILED - queue not empty".to_string(),
            ));
        }
        Ok(queue.message_count())
    }
}

impl QueueCall for queue_op::ChannelClosed {
    /// Whether an auto-delete queue is now unused.
    type Ok = bool;
    fn remote(&self) -> RemoteUse<bool> {
        let op = super::RemoteOp::ChannelClosed {
            channel: self.channel,
        };
        Some((op, |answer| answer.numbers.0 != 0))
    }
    fn apply(self, hosted: &mut HostedQueue) -> Result<bool, AmqpError> {
        hosted.queue.channel_closed(self.channel);
        Ok(hosted.auto_delete_now())
    }
}

impl QueueCall for queue_op::Recover {
    type Ok = ();
    fn remote(&self) -> RemoteUse<()> {
        let op = super::RemoteOp::Recover {
            channel: self.channel,
        };
        Some((op, |_| ()))
    }
    fn apply(self, hosted: &mut HostedQueue) -> Result<(), AmqpError> {
        hosted.queue.recover(self.channel);
        Ok(())
    }
}

fn consume_error(error: ConsumeError) -> AmqpError {
    let text = match error {
        ConsumeError::ExclusiveInUse => {
            "ACCESS_REFUSED - queue has an exclusive consumer".to_string()
        }
        ConsumeError::AlreadyConsumers => {
            "ACCESS_REFUSED - cannot obtain exclusive access to queue, it has consumers".to_string()
        }
        #[allow(unreachable_patterns)]
        _ => "ACCESS_REFUSED - cannot consume".to_string(),
    };
    AmqpError::new(reply_code::ACCESS_REFUSED, text)
}
