//! The driver: decides a method or content frame with the sans-IO parts (`dispatch`,
//! `content`, `publish`) and carries out what they leave to do: shard calls and writes.
//!
//! The frames of steady publishing and acking (basic.publish, its content, basic.ack, nack and
//! reject) go through the `*_now` functions, which need no `.await` unless something in them
//! has to wait; that part comes back as a [`Rest`] for [`Session::finish_rest`]. Why: an async
//! handler builds its whole nested future (channel close, queue calls, transactions: kilobytes
//! of state) and moves the frame into it before it runs, and a 16 B message is three frames.

use bytes::Bytes;

use super::consume::CancelledConsumer;
use super::content::{self, ContentHeader, ContentStep};
use super::publish::{self, Next};
use super::settle::{self, QueueSettle};
use super::{
    channel_not_open, confirm, dispatch, Action, Change, CommitWait, ConsumeAction, Ctx, Fault,
    PendingPublish, TxBuffer,
};
use crate::broker::queue::{ChannelRef, SharedMessage};
use crate::broker::{QueueId, ShardId};
use crate::limits::TX_COMMIT_CONFIRM_TIMEOUT;
use crate::protocol::{
    reply_code, BasicGetEmpty, BasicGetOk, BasicPublish, BasicReturn, Method, QueueDeclareOk,
    QueueDeleteOk, QueuePurgeOk, TxCommitOk,
};
use crate::session::state::ChannelState;
use crate::session::Session;
use crate::shard::direct_reply::ReplyAddress;
use crate::shard::messages::{queue_op, topology_op, SettleOp};
use crate::shard::shard_set::ShardSet;

impl Session {
    fn channel_ref(&self, channel: u16) -> ChannelRef {
        ChannelRef {
            conn: self.conn.id,
            channel,
        }
    }

    fn with_channel<R>(&self, channel: u16, f: impl FnOnce(&mut ChannelState) -> R) -> Option<R> {
        self.conn.channels.borrow_mut().get_mut(&channel).map(f)
    }

    fn send_reply(&self, channel: u16, method: Option<Method>) {
        if let Some(method) = method {
            self.conn.send_method(channel, &method);
        }
    }

    pub(in crate::session) async fn channel_method(
        &mut self,
        channel: u16,
        method: Method,
    ) -> Result<(), Fault> {
        let action = self.decide(channel, method)?;
        self.perform(channel, action).await
    }

    /// A method of an open channel, decided and, when its action needs no shard call (a publish
    /// waiting for its content, settlements), carried out here; the channel is busy meanwhile,
    /// as `Session::handle_channel_method` keeps it. The rest, with the channel still busy when
    /// an action is left, is for `finish_rest`.
    pub(in crate::session) fn channel_method_now(
        &mut self,
        channel: u16,
        method: Method,
    ) -> Option<Rest> {
        let ids = MethodIds(method.class_id(), method.method_id());
        self.conn.set_channel_busy(channel, true);
        let action = match self.decide(channel, method) {
            Ok(action) => action,
            Err(fault) => {
                self.conn.set_channel_busy(channel, false);
                return Some(Rest::Failed {
                    channel,
                    fault,
                    ids,
                });
            }
        };
        match action {
            Action::Reply(ok) => self.send_reply(channel, ok),
            Action::Settle(settles) => {
                self.apply_settles(settles);
                self.release_over_limit(channel);
            }
            action => {
                return Some(Rest::Perform {
                    channel,
                    action: Box::new(action),
                    ids,
                })
            }
        }
        self.conn.set_channel_busy(channel, false);
        None
    }

    /// Carries out what a `*_now` handler left to do.
    pub(in crate::session) async fn finish_rest(&mut self, rest: Rest) -> Result<(), Fault> {
        match rest {
            Rest::Perform {
                channel,
                action,
                ids,
            } => {
                let result = self.perform(channel, *action).await;
                self.conn.set_channel_busy(channel, false);
                self.method_outcome(channel, result, ids).await
            }
            Rest::Failed {
                channel,
                fault,
                ids,
            } => self.method_outcome(channel, Err(fault), ids).await,
            Rest::CloseChannel { channel, fault } => {
                self.close_channel(channel, fault).await;
                Ok(())
            }
            Rest::DirectReply {
                channel,
                mandatory,
                message,
                confirm_seq,
            } => {
                self.publish_direct_reply(channel, mandatory, message, confirm_seq)
                    .await;
                Ok(())
            }
            Rest::ConfirmRoom { channel } => {
                self.wait_for_confirm_room(channel).await;
                Ok(())
            }
        }
    }

    /// A method's result: an error names the method unless it names another already; a hard one
    /// closes the connection (`Err`), any other the channel.
    pub(in crate::session) async fn method_outcome(
        &mut self,
        channel: u16,
        result: Result<(), Fault>,
        MethodIds(class_id, method_id): MethodIds,
    ) -> Result<(), Fault> {
        let Err(mut fault) = result else {
            return Ok(());
        };
        if fault.class_id == 0 {
            fault.class_id = class_id;
            fault.method_id = method_id;
        }
        if fault.is_hard() {
            return Err(fault);
        }
        self.close_channel(channel, fault).await;
        Ok(())
    }

    /// The decision, with the shard's topology and the channel's state borrowed for it only.
    fn decide(&self, channel: u16, method: Method) -> Result<Action, Fault> {
        let topology = self.shard.topology();
        let new_id = || self.shard.new_id();
        let ctx = Ctx {
            channel: self.channel_ref(channel),
            user: &self.user,
            vhost: &self.vhost,
            topology: &topology,
            authorizer: &*self.authorizer,
            new_id: &new_id,
        };
        let mut channels = self.conn.channels.borrow_mut();
        let state = channels
            .get_mut(&channel)
            .ok_or_else(|| channel_not_open(channel))?;
        dispatch::decide(&ctx, state, method)
    }

    async fn perform(&mut self, channel: u16, action: Action) -> Result<(), Fault> {
        match action {
            Action::Reply(ok) => self.send_reply(channel, ok),
            Action::Topology { change, ok } => {
                self.change_topology(change).await?;
                self.send_reply(channel, ok);
            }
            Action::DeclareQueue { op, count } => self.declare_queue(channel, op, count).await?,
            Action::DeleteQueue { op, no_wait } => {
                let message_count = self.shard.topology_op(op).await?;
                let ok = Method::QueueDeleteOk(QueueDeleteOk { message_count });
                self.send_reply(channel, (!no_wait).then_some(ok));
            }
            Action::Purge {
                queue,
                owner,
                no_wait,
            } => {
                let message_count = self.shard.queue_op(queue, owner, queue_op::Purge).await?;
                let ok = Method::QueuePurgeOk(QueuePurgeOk { message_count });
                self.send_reply(channel, (!no_wait).then_some(ok));
            }
            Action::Consume(consume) => self.consume(channel, consume).await?,
            Action::Cancel { cancelled, ok } => {
                if let Some(cancelled) = cancelled {
                    self.cancel(cancelled).await?;
                }
                self.send_reply(channel, ok);
            }
            Action::Get {
                queue,
                owner,
                no_ack,
            } => self.get(channel, queue, owner, no_ack).await?,
            Action::Settle(settles) => {
                self.apply_settles(settles);
                self.release_over_limit(channel);
            }
            Action::Recover { queues, ok } => {
                self.send_reply(channel, ok);
                self.recover(channel, queues).await;
            }
            Action::Commit(buffer) => {
                self.tx_commit(channel, buffer).await?;
                self.conn
                    .send_method(channel, &Method::TxCommitOk(TxCommitOk {}));
            }
        }
        Ok(())
    }

    // ---- queues -----------------------------------------------------------------------------

    async fn change_topology(&self, change: Change) -> Result<(), Fault> {
        match change {
            Change::ExchangeDeclare(op) => self.shard.topology_op(op).await?,
            Change::ExchangeDelete(op) => self.shard.topology_op(op).await?,
            Change::Binding(op) => self.shard.topology_op(op).await?,
        }
        Ok(())
    }

    async fn declare_queue(
        &mut self,
        channel: u16,
        op: topology_op::QueueDeclare,
        count: Option<queue_op::Count>,
    ) -> Result<(), Fault> {
        let topology_op::QueueDeclared { name, queue, owner } = self.shard.topology_op(op).await?;
        self.with_channel(channel, |c| c.last_queue = Some(name.clone()));
        let Some(count) = count else {
            return Ok(());
        };
        // A queue another node leads answers with that node's counts (`Shard::queue_op`).
        let queue_op::Counts {
            messages: message_count,
            consumers: consumer_count,
        } = self.shard.queue_op(queue, owner, count).await?;
        let ok = Method::QueueDeclareOk(QueueDeclareOk {
            queue: name,
            message_count,
            consumer_count,
        });
        self.conn.send_method(channel, &ok);
        Ok(())
    }

    // ---- consumers --------------------------------------------------------------------------

    /// The consumer is in the channel already; its queue is told, and takes it back out if the
    /// queue refuses it.
    async fn consume(&mut self, channel: u16, consume: ConsumeAction) -> Result<(), Fault> {
        let ConsumeAction {
            key,
            tag,
            queue,
            owner,
            op,
            no_wait,
        } = consume;
        if let Err(error) = self.shard.queue_op(queue, owner, op).await {
            self.with_channel(channel, |c| super::consume::unregister(c, &tag));
            return Err(error.into());
        }
        if !no_wait {
            let ok = Method::BasicConsumeOk(crate::protocol::BasicConsumeOk { consumer_tag: tag });
            self.conn.send_method(channel, &ok);
            self.conn.release_held(channel, key);
        }
        Ok(())
    }

    async fn cancel(&mut self, cancelled: CancelledConsumer) -> Result<(), Fault> {
        let CancelledConsumer {
            key,
            queue,
            owner,
            orphans,
        } = cancelled;
        for entry in orphans {
            let op = SettleOp::Reject {
                ids: vec![entry.message_id],
                requeue: true,
            };
            self.shard.settle(entry.queue, owner, op);
        }
        let auto_delete_now = self.shard.queue_op(queue, owner, queue_op::Cancel { key });
        if matches!(auto_delete_now.await, Ok(true)) {
            self.shard
                .topology_op(topology_op::AutoDeleteQueue { queue })
                .await?;
        }
        Ok(())
    }

    async fn get(
        &mut self,
        channel: u16,
        queue: QueueId,
        owner: ShardId,
        no_ack: bool,
    ) -> Result<(), Fault> {
        let op = queue_op::Get {
            channel: self.channel_ref(channel),
            no_ack,
        };
        let Some(got) = self.shard.queue_op(queue, owner, op).await? else {
            self.conn
                .send_method(channel, &Method::BasicGetEmpty(BasicGetEmpty {}));
            return Ok(());
        };
        let tag = self
            .with_channel(channel, |c| {
                settle::record_get(c, queue, owner, got.message_id, no_ack)
            })
            .unwrap_or(0);
        let ok = Method::BasicGetOk(BasicGetOk {
            delivery_tag: tag,
            redelivered: got.redelivered,
            exchange: got.message.exchange().to_owned(),
            routing_key: got.message.routing_key().to_owned(),
            message_count: got.remaining,
        });
        self.conn.send_content(channel, &ok, &got.message);
        Ok(())
    }

    // ---- settlements ------------------------------------------------------------------------

    fn apply_settles(&self, settles: Vec<QueueSettle>) {
        for QueueSettle { queue, owner, op } in settles {
            self.shard.settle(queue, owner, op);
        }
    }

    /// Hands over deliveries that waited for channel-wide credit; requeues those whose consumer
    /// went away meanwhile.
    fn release_over_limit(&self, channel: u16) {
        for entry in self.conn.release_over_limit(channel) {
            let op = SettleOp::Reject {
                ids: vec![entry.message_id],
                requeue: true,
            };
            self.shard
                .settle(entry.queue, self.shard.owner_of(entry.queue), op);
        }
    }

    async fn recover(&mut self, channel: u16, queues: Vec<(QueueId, ShardId)>) {
        for (queue, owner) in queues {
            let op = queue_op::Recover {
                channel: self.channel_ref(channel),
            };
            let _ = self.shard.queue_op(queue, owner, op).await;
        }
    }

    // ---- content and publishing -------------------------------------------------------------

    /// A content header: an `Err` closes the connection.
    pub(in crate::session) fn content_header_now(
        &mut self,
        channel: u16,
        header: ContentHeader,
    ) -> Result<Option<Rest>, Fault> {
        let max_bytes = self.shard.max_message_bytes();
        let step = self
            .with_channel(channel, |c| content::on_header(c, header, max_bytes))
            .ok_or_else(|| channel_not_open(channel))??;
        Ok(self.content_step_now(channel, step))
    }

    /// A content body frame: an `Err` closes the connection.
    pub(in crate::session) fn content_body_now(
        &mut self,
        channel: u16,
        payload: Bytes,
    ) -> Result<Option<Rest>, Fault> {
        let step = self
            .with_channel(channel, |c| content::on_body(c, payload))
            .ok_or_else(|| channel_not_open(channel))??;
        Ok(self.content_step_now(channel, step))
    }

    fn content_step_now(&mut self, channel: u16, step: ContentStep) -> Option<Rest> {
        match step {
            ContentStep::Ignored | ContentStep::Incomplete => None,
            ContentStep::Refused(fault) => Some(Rest::CloseChannel {
                channel,
                fault: at_publish(fault),
            }),
            ContentStep::Complete(pending) => self.publish_now(channel, pending),
        }
    }

    /// The whole message is here: route it (or buffer it in a transaction).
    fn publish_now(&mut self, channel: u16, mut pending: Box<PendingPublish>) -> Option<Rest> {
        let channel_ref = self.channel_ref(channel);
        let user = &self.user;
        let decided = self.with_channel(channel, |state| {
            let message = publish::build_message(user, channel_ref, state, &mut pending)?;
            publish::next(state, pending, message)
        })?;
        let next = match decided {
            Ok(next) => next,
            Err(fault) => {
                return Some(Rest::CloseChannel {
                    channel,
                    fault: at_publish(fault),
                })
            }
        };
        match next {
            Next::Buffered => None,
            Next::DirectReply {
                mandatory,
                message,
                confirm_seq,
            } => Some(Rest::DirectReply {
                channel,
                mandatory,
                message,
                confirm_seq,
            }),
            Next::Route {
                pending,
                message,
                confirm_seq,
            } => {
                if let Err(fault) = self.route_publish(channel, &pending, message, confirm_seq) {
                    return Some(Rest::CloseChannel {
                        channel,
                        fault: at_publish(fault),
                    });
                }
                let at_limit = self
                    .with_channel(channel, |c| confirm::at_pending_limit(c))
                    .unwrap_or(false);
                at_limit.then_some(Rest::ConfirmRoom { channel })
            }
        }
    }

    /// Routes one message; answers mandatory returns and publisher confirms. Returns the other
    /// shards the message went to, or the refusal of a queue another node leads.
    fn route_publish(
        &self,
        channel: u16,
        pending: &PendingPublish,
        message: SharedMessage,
        confirm_seq: Option<u64>,
    ) -> Result<Reached, Fault> {
        let confirm = confirm_seq.map(|seq| crate::shard::messages::ConfirmRef {
            channel: self.channel_ref(channel),
            seq,
        });
        crate::latency_trace::record(crate::latency_trace::Stage::PublishParsed, message.body());
        let outcome = self
            .shard
            .publish(&self.vhost, &pending.exchange, message.clone(), confirm);
        // One look at the channel: in a tx.commit the confirm is the commit's own
        // (`CommitWait`); otherwise the client's, decided now (`Some`) or later.
        let publisher_confirm = confirm_seq.and_then(|seq| {
            self.with_channel(channel, |c| match c.committing.as_mut() {
                Some(commit) => {
                    commit.routed(seq, outcome.remote_confirms, outcome.refused);
                    None
                }
                None => Some((
                    seq,
                    confirm::routed(c, seq, outcome.remote_confirms, outcome.refused),
                )),
            })
            .flatten()
        });
        self.count_publish(
            publisher_confirm.is_some(),
            outcome.routed,
            pending.mandatory,
        );
        if !outcome.routed && pending.mandatory {
            self.send_return(channel, &message);
        }
        if let Some((seq, now)) = publisher_confirm {
            if let Some(stamp) = crate::latency_trace::sampled(message.body()) {
                self.conn.trace_confirm(channel, seq, stamp);
            }
            if let Some(ok) = now {
                self.conn.send_confirm(channel, seq, ok);
            }
        }
        Ok(Reached {
            shards: outcome.remote_shards,
            nodes: outcome.remote_nodes,
        })
    }

    /// RabbitMQ's global publish counters: received, then routed or unroutable (returned when
    /// mandatory, else dropped).
    fn count_publish(&self, confirming: bool, routed: bool, mandatory: bool) {
        self.conn.publish_counters.count(|totals| {
            totals.received += 1;
            totals.received_confirm += u64::from(confirming);
            match (routed, mandatory) {
                (true, _) => totals.routed += 1,
                (false, true) => totals.unroutable_returned += 1,
                (false, false) => totals.unroutable_dropped += 1,
            }
        });
    }

    fn send_return(&self, channel: u16, message: &SharedMessage) {
        let returned = Method::BasicReturn(BasicReturn {
            reply_code: reply_code::NO_ROUTE,
            reply_text: "NO_ROUTE".to_string(),
            exchange: message.exchange().to_owned(),
            routing_key: message.routing_key().to_owned(),
        });
        self.conn.send_content(channel, &returned, message);
    }

    /// Back-pressure on confirms: while the channel has as many publishes waiting for other
    /// shards or the log as it may, nothing more is read from the connection.
    async fn wait_for_confirm_room(&self, channel: u16) {
        loop {
            let flushed = self.conn.flushed.wait();
            let at_limit = self
                .with_channel(channel, |c| confirm::at_pending_limit(c))
                .unwrap_or(false);
            if !at_limit || self.conn.output_closed.get() || self.shard.is_shutting_down() {
                return;
            }
            futures_lite::future::or(flushed, self.shard.wait_for_shutdown()).await;
        }
    }

    /// Publishes a reply straight to its consumer. A reply nobody takes is returned when
    /// mandatory; either way the publisher's confirm is an ack, as for any unroutable message.
    async fn publish_direct_reply(
        &self,
        channel: u16,
        mandatory: bool,
        message: SharedMessage,
        confirm_seq: Option<u64>,
    ) {
        let delivered = match ReplyAddress::parse(message.routing_key()) {
            Some(address) => {
                self.shard
                    .deliver_direct_reply(address, message.clone())
                    .await
            }
            None => false,
        };
        self.count_publish(confirm_seq.is_some(), delivered, mandatory);
        if !delivered && mandatory {
            self.send_return(channel, &message);
        }
        if let Some(seq) = confirm_seq {
            self.conn.send_confirm(channel, seq, true);
        }
    }

    async fn tx_commit(&mut self, channel: u16, buffer: TxBuffer) -> Result<(), Fault> {
        self.with_channel(channel, |c| c.committing = Some(CommitWait::default()));
        let routed = self.tx_route(channel, buffer).await;
        let confirmed = match routed {
            Ok(()) => self.tx_confirmed(channel).await,
            Err(fault) => Err(fault),
        };
        self.with_channel(channel, |c| c.committing = None);
        confirmed
    }

    /// What tx.commit applies: the publishes, each with a confirm of the commit's own, then
    /// the settlements, then the barriers.
    async fn tx_route(&mut self, channel: u16, buffer: TxBuffer) -> Result<(), Fault> {
        let mut remote_shards = ShardSet::default();
        let mut remote_nodes = 0u32;
        for (pending, message) in buffer.publishes {
            if crate::shard::direct_reply::is_direct_reply(&pending.exchange, &pending.routing_key)
            {
                self.publish_direct_reply(channel, pending.mandatory, message, None)
                    .await;
                continue;
            }
            let seq = self
                .with_channel(channel, |c| c.committing.as_mut().map(CommitWait::next_seq))
                .flatten();
            let reached = self.route_publish(channel, &pending, message, seq)?;
            remote_shards.union_with(&reached.shards);
            remote_nodes |= reached.nodes;
        }
        for (taken, how) in buffer.settles {
            self.apply_settles(settle::by_queue(taken, how));
        }
        // commit-ok is a promise: everything is applied and durable first. A barrier request
        // travels behind the publishes on each FIFO link; our own log is synced too, and so
        // is every shard of each other node the publishes were forwarded to.
        self.shard.barrier(self.shard.id()).await?;
        for shard in remote_shards
            .iter()
            .filter(|&shard| shard != self.shard.id())
        {
            self.shard.barrier(shard).await?;
        }
        for node in (0..u32::BITS as usize).filter(|node| remote_nodes & (1 << node) != 0) {
            self.shard.node_barrier(node).await?;
        }
        Ok(())
    }

    /// Waits, within `TX_COMMIT_CONFIRM_TIMEOUT`, until every publish of the commit is
    /// confirmed; a refused one fails it (RabbitMQ's 406 "partial tx completion").
    async fn tx_confirmed(&self, channel: u16) -> Result<(), Fault> {
        let deadline = std::time::Instant::now() + TX_COMMIT_CONFIRM_TIMEOUT;
        loop {
            let confirmed = self.conn.commit_confirmed.wait();
            let state = self.with_channel(channel, |c| {
                c.committing
                    .as_ref()
                    .map(|commit| commit.is_complete().then(|| commit.outcome()))
            });
            match state.flatten() {
                None => return Err(commit_unconfirmed("its channel is gone")),
                Some(Some(outcome)) => return outcome,
                Some(None) => {}
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if glommio::timer::timeout(left, async {
                confirmed.await;
                Ok(())
            })
            .await
            .is_err()
            {
                return Err(commit_unconfirmed(
                    "its publishes were not confirmed in time",
                ));
            }
        }
    }
}

/// Where a publish went besides this shard: other shards of this node, other nodes (bits).
struct Reached {
    shards: ShardSet,
    nodes: u32,
}

fn commit_unconfirmed(why: &str) -> Fault {
    Fault::new(
        reply_code::INTERNAL_ERROR,
        format!("INTERNAL_ERROR - tx.commit failed: {why}"),
    )
}

/// Content errors belong to the basic.publish they complete.
fn at_publish(fault: Fault) -> Fault {
    fault.with_method(BasicPublish::CLASS_ID, BasicPublish::METHOD_ID)
}

/// A method's class and method ids, for the error that closes its channel or connection.
#[derive(Clone, Copy)]
pub(in crate::session) struct MethodIds(pub u16, pub u16);

/// What a frame handled without waiting leaves for `Session::finish_rest`.
pub(in crate::session) enum Rest {
    /// A method whose action needs the shard; its channel is busy until it is performed.
    /// Boxed: `Rest` is returned by every steady frame, and the actions that get here (declares,
    /// consumes, commits) are the rare ones, so they pay the allocation.
    Perform {
        channel: u16,
        action: Box<Action>,
        ids: MethodIds,
    },
    /// The method's decision failed.
    Failed {
        channel: u16,
        fault: Fault,
        ids: MethodIds,
    },
    /// A content frame or its publish was refused: the channel closes with this error.
    CloseChannel { channel: u16, fault: Fault },
    /// A reply for a direct reply-to consumer, handed over by the shard.
    DirectReply {
        channel: u16,
        mandatory: bool,
        message: SharedMessage,
        confirm_seq: Option<u64>,
    },
    /// The publish filled the channel's confirm window: nothing more is read until it has room.
    ConfirmRoom { channel: u16 },
}
