//! Channel methods: everything a client does on channel > 0.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;

use super::state::{ChannelState, Confirms, Consumer, Unacked};
use super::{Fault, Session};
use crate::broker::queue::{ChannelRef, Message, Route, SharedMessage};
use crate::broker::{self, QueueId, ShardId};
use crate::limits::{CONSUMERS_PER_CHANNEL_MAX, MESSAGE_SIZE_MAX_BYTES, TX_OPERATIONS_MAX};
use crate::protocol::*;
use crate::shard::direct_reply::{is_direct_reply, DIRECT_REPLY_QUEUE_ID, REPLY_TO_QUEUE};
use crate::shard::messages::{queue_op, topology_op, ConfirmRef, DeliverEntry, SettleOp};
use crate::shard::shard_set::ShardSet;

/// A basic.publish waiting for its content header and body frames.
pub struct PendingPublish {
    exchange: String,
    routing_key: String,
    mandatory: bool,
    /// Taken when the message is built (a transaction keeps the rest for routing).
    properties: Option<BasicProperties>,
    /// The properties as received: stored and delivered as they are unless rewritten.
    raw_properties: Bytes,
    body_size: u64,
    /// The first body frame, and any further ones: one frame (the common case) needs no vector.
    first_part: Bytes,
    more_parts: Vec<Bytes>,
    received: u64,
}

/// A content header frame, as the session hands it to the channel.
pub struct ContentHeader {
    pub class_id: u16,
    pub body_size: u64,
    pub properties: BasicProperties,
    pub raw_properties: Bytes,
}

/// What a transaction has buffered until tx.commit.
#[derive(Default)]
pub struct TxBuffer {
    publishes: Vec<(PendingPublish, SharedMessage)>,
    settles: Vec<(Vec<Unacked>, Settle)>,
}

#[derive(Clone, Copy)]
enum Settle {
    Ack,
    Reject { requeue: bool },
}

fn fault(code: u16, text: impl Into<String>) -> Fault {
    Fault::new(code, text)
}

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

    /// Answers with `method` unless the client asked for no-wait.
    fn reply(&self, channel: u16, no_wait: bool, method: Method) {
        if !no_wait {
            self.conn.send_method(channel, &method);
        }
    }

    pub(super) async fn channel_method(
        &mut self,
        channel: u16,
        method: Method,
    ) -> Result<(), Fault> {
        if self
            .with_channel(channel, |c| c.pending_publish.is_some())
            .unwrap_or(false)
        {
            return Err(fault(
                reply_code::UNEXPECTED_FRAME,
                format!(
                    "UNEXPECTED_FRAME - expected content header, got {}",
                    method.name()
                ),
            ));
        }
        match method {
            Method::ChannelFlow(m) => {
                if !m.active {
                    return Err(fault(
                        reply_code::NOT_IMPLEMENTED,
                        "NOT_IMPLEMENTED - active=false",
                    ));
                }
                self.conn.send_method(
                    channel,
                    &Method::ChannelFlowOk(ChannelFlowOk { active: true }),
                );
            }
            Method::ChannelFlowOk(_) => {}
            Method::ExchangeDeclare(m) => {
                let op = topology_op::ExchangeDeclare {
                    vhost: self.vhost.clone(),
                    name: m.exchange,
                    kind: m.kind,
                    passive: m.passive,
                    durable: m.durable,
                    auto_delete: m.auto_delete,
                    internal: m.internal,
                    arguments: m.arguments,
                };
                self.shard.topology_op(op).await?;
                self.reply(
                    channel,
                    m.no_wait,
                    Method::ExchangeDeclareOk(ExchangeDeclareOk {}),
                );
            }
            Method::ExchangeDelete(m) => {
                let op = topology_op::ExchangeDelete {
                    vhost: self.vhost.clone(),
                    name: m.exchange,
                    if_unused: m.if_unused,
                };
                self.shard.topology_op(op).await?;
                self.reply(
                    channel,
                    m.no_wait,
                    Method::ExchangeDeleteOk(ExchangeDeleteOk {}),
                );
            }
            Method::ExchangeBind(m) => {
                self.binding(
                    true,
                    m.source,
                    m.destination,
                    false,
                    m.routing_key,
                    m.arguments,
                )
                .await?;
                self.reply(
                    channel,
                    m.no_wait,
                    Method::ExchangeBindOk(ExchangeBindOk {}),
                );
            }
            Method::ExchangeUnbind(m) => {
                self.binding(
                    false,
                    m.source,
                    m.destination,
                    false,
                    m.routing_key,
                    m.arguments,
                )
                .await?;
                self.reply(
                    channel,
                    m.no_wait,
                    Method::ExchangeUnbindOk(ExchangeUnbindOk {}),
                );
            }
            Method::QueueDeclare(m) => self.queue_declare(channel, m).await?,
            Method::QueueBind(m) => {
                let routing_key = self.routing_key_or_last_queue(channel, &m.queue, m.routing_key);
                let queue = self.queue_name(channel, m.queue)?;
                self.binding(true, m.exchange, queue, true, routing_key, m.arguments)
                    .await?;
                self.reply(channel, m.no_wait, Method::QueueBindOk(QueueBindOk {}));
            }
            Method::QueueUnbind(m) => {
                let routing_key = self.routing_key_or_last_queue(channel, &m.queue, m.routing_key);
                let queue = self.queue_name(channel, m.queue)?;
                self.binding(false, m.exchange, queue, true, routing_key, m.arguments)
                    .await?;
                self.conn
                    .send_method(channel, &Method::QueueUnbindOk(QueueUnbindOk {}));
            }
            Method::QueuePurge(m) => {
                let (queue, owner) = self.accessible_queue(channel, m.queue)?;
                let purged = self.shard.queue_op(queue, owner, queue_op::Purge).await?;
                let ok = Method::QueuePurgeOk(QueuePurgeOk {
                    message_count: purged,
                });
                self.reply(channel, m.no_wait, ok);
            }
            Method::QueueDelete(m) => {
                let name = self.queue_name(channel, m.queue)?;
                let op = topology_op::QueueDelete {
                    vhost: self.vhost.clone(),
                    name,
                    if_unused: m.if_unused,
                    if_empty: m.if_empty,
                    conn: self.conn.id,
                };
                let message_count = self.shard.topology_op(op).await?;
                self.reply(
                    channel,
                    m.no_wait,
                    Method::QueueDeleteOk(QueueDeleteOk { message_count }),
                );
            }
            Method::BasicQos(m) => {
                self.with_channel(channel, |c| {
                    if m.global {
                        c.prefetch_per_channel = m.prefetch_count;
                    } else {
                        c.prefetch_per_consumer = m.prefetch_count;
                    }
                });
                self.conn
                    .send_method(channel, &Method::BasicQosOk(BasicQosOk {}));
            }
            Method::BasicConsume(m) => self.basic_consume(channel, m).await?,
            Method::BasicCancel(m) => self.basic_cancel(channel, m).await?,
            Method::BasicPublish(m) => self.basic_publish(channel, m)?,
            Method::BasicGet(m) => self.basic_get(channel, m).await?,
            Method::BasicAck(m) => self.settle(channel, m.delivery_tag, m.multiple, Settle::Ack)?,
            Method::BasicReject(m) => self.settle(
                channel,
                m.delivery_tag,
                false,
                Settle::Reject { requeue: m.requeue },
            )?,
            Method::BasicNack(m) => self.settle(
                channel,
                m.delivery_tag,
                m.multiple,
                Settle::Reject { requeue: m.requeue },
            )?,
            Method::BasicRecover(_) => {
                // recover-ok goes first, as in RabbitMQ: clients drop deliveries they had
                // prefetched when recover-ok arrives, so redeliveries must come after it.
                self.conn
                    .send_method(channel, &Method::BasicRecoverOk(BasicRecoverOk {}));
                self.recover(channel).await;
            }
            Method::BasicRecoverAsync(_) => self.recover(channel).await,
            Method::ConfirmSelect(m) => {
                let in_tx = self
                    .with_channel(channel, |c| c.tx.is_some())
                    .unwrap_or(false);
                if in_tx {
                    return Err(fault(
                        reply_code::PRECONDITION_FAILED,
                        "PRECONDITION_FAILED - cannot switch from tx to confirm mode",
                    ));
                }
                self.with_channel(channel, |c| {
                    c.confirm.get_or_insert_with(Confirms::new);
                });
                self.reply(
                    channel,
                    m.nowait,
                    Method::ConfirmSelectOk(ConfirmSelectOk {}),
                );
            }
            Method::TxSelect(_) => {
                let in_confirm = self
                    .with_channel(channel, |c| c.confirm.is_some())
                    .unwrap_or(false);
                if in_confirm {
                    return Err(fault(
                        reply_code::PRECONDITION_FAILED,
                        "PRECONDITION_FAILED - cannot switch from confirm to tx mode",
                    ));
                }
                self.with_channel(channel, |c| {
                    c.tx.get_or_insert_with(TxBuffer::default);
                });
                self.conn
                    .send_method(channel, &Method::TxSelectOk(TxSelectOk {}));
            }
            Method::TxCommit(_) => {
                self.tx_commit(channel).await?;
                self.conn
                    .send_method(channel, &Method::TxCommitOk(TxCommitOk {}));
            }
            Method::TxRollback(_) => {
                let rolled_back = self.with_channel(channel, |c| match c.tx.as_mut() {
                    Some(tx) => {
                        // Acks are undone by putting the messages back in the unacked list.
                        let mut returned: Vec<Unacked> =
                            tx.settles.drain(..).flat_map(|(u, _)| u).collect();
                        tx.publishes.clear();
                        returned.extend(c.unacked.drain(..));
                        returned.sort_by_key(|u| u.tag);
                        c.unacked = returned.into();
                        true
                    }
                    None => false,
                });
                if rolled_back != Some(true) {
                    return Err(not_transactional());
                }
                self.conn
                    .send_method(channel, &Method::TxRollbackOk(TxRollbackOk {}));
            }
            other => {
                return Err(fault(
                    reply_code::COMMAND_INVALID,
                    format!(
                        "COMMAND_INVALID - unexpected method {} from a client",
                        other.name()
                    ),
                ))
            }
        }
        Ok(())
    }

    // ---- queues and bindings ----------------------------------------------------------------

    /// The queue a method names, or the channel's last declared queue when the name is empty.
    fn queue_name(&self, channel: u16, name: String) -> Result<String, Fault> {
        if !name.is_empty() {
            return Ok(name);
        }
        self.with_channel(channel, |c| c.last_queue.clone())
            .flatten()
            .ok_or_else(|| {
                fault(
                    reply_code::NOT_FOUND,
                    "NOT_FOUND - no previously declared queue",
                )
            })
    }

    fn routing_key_or_last_queue(&self, channel: u16, queue: &str, routing_key: String) -> String {
        if !routing_key.is_empty() || !queue.is_empty() {
            return routing_key;
        }
        // The spec: when both queue and routing key are empty, both mean the last declared queue.
        self.with_channel(channel, |c| c.last_queue.clone())
            .flatten()
            .unwrap_or_default()
    }

    /// Resolves a queue this connection may use: 404 when missing, 405 when exclusive to another.
    fn accessible_queue(&self, channel: u16, name: String) -> Result<(QueueId, ShardId), Fault> {
        let name = self.queue_name(channel, name)?;
        let topology = self.shard.topology();
        let meta = broker::check_queue_access(&topology, &self.vhost, &name, self.conn.id)?;
        Ok((meta.id, meta.owner_shard))
    }

    async fn binding(
        &self,
        bind: bool,
        source: String,
        destination: String,
        destination_is_queue: bool,
        routing_key: String,
        arguments: FieldTable,
    ) -> Result<(), Fault> {
        let op = topology_op::Binding {
            vhost: self.vhost.clone(),
            bind,
            source,
            destination,
            destination_is_queue,
            routing_key,
            arguments,
            conn: self.conn.id,
        };
        self.shard.topology_op(op).await?;
        Ok(())
    }

    async fn queue_declare(&mut self, channel: u16, m: QueueDeclare) -> Result<(), Fault> {
        let name = if m.queue.is_empty() && m.passive {
            self.queue_name(channel, m.queue)?
        } else {
            m.queue
        };
        let op = topology_op::QueueDeclare {
            vhost: self.vhost.clone(),
            name,
            passive: m.passive,
            durable: m.durable,
            exclusive: m.exclusive,
            auto_delete: m.auto_delete,
            arguments: m.arguments,
            conn: self.conn.id,
        };
        let topology_op::QueueDeclared { name, queue, owner } = self.shard.topology_op(op).await?;
        self.with_channel(channel, |c| c.last_queue = Some(name.clone()));
        if m.no_wait {
            return Ok(());
        }
        let count = queue_op::Count {
            renews_expiry: !m.passive,
        };
        let queue_op::Counts {
            messages: message_count,
            consumers: consumer_count,
        } = self.shard.queue_op(queue, owner, count).await?;
        self.conn.send_method(
            channel,
            &Method::QueueDeclareOk(QueueDeclareOk {
                queue: name,
                message_count,
                consumer_count,
            }),
        );
        Ok(())
    }

    // ---- consumers --------------------------------------------------------------------------

    async fn basic_consume(&mut self, channel: u16, m: BasicConsume) -> Result<(), Fault> {
        if m.queue == REPLY_TO_QUEUE {
            return self.consume_direct_reply(channel, m);
        }
        let (queue, owner) = self.accessible_queue(channel, m.queue)?;
        let key = self.shard.new_id();
        let tag = if m.consumer_tag.is_empty() {
            format!("amq.ctag-{key:x}")
        } else {
            m.consumer_tag
        };
        let priority = m
            .arguments
            .get("x-priority")
            .map(|v| v.as_i64().ok_or(()))
            .transpose()
            .map_err(|_| {
                fault(
                    reply_code::PRECONDITION_FAILED,
                    "PRECONDITION_FAILED - invalid arg 'x-priority': not an integer",
                )
            })?
            .unwrap_or(0)
            .clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32;
        let prefetch = self.with_channel(channel, |c| -> Result<u16, Fault> {
            if c.consumer_tags.contains_key(&tag) {
                return Err(fault(
                    reply_code::NOT_ALLOWED,
                    format!("NOT_ALLOWED - attempt to reuse consumer tag '{tag}'"),
                ));
            }
            if c.consumers.len() >= CONSUMERS_PER_CHANNEL_MAX {
                return Err(fault(
                    reply_code::RESOURCE_ERROR,
                    "RESOURCE_ERROR - too many consumers on this channel",
                ));
            }
            c.consumer_tags.insert(tag.clone(), key);
            c.consumers.insert(
                key,
                Consumer {
                    tag: tag.clone(),
                    queue,
                    owner,
                    no_ack: m.no_ack,
                    held: (!m.no_wait).then(Vec::new),
                },
            );
            // A channel-wide limit also bounds each consumer (it can never hold more alone).
            Ok(match (c.prefetch_per_consumer, c.prefetch_per_channel) {
                (0, global) => global,
                (own, 0) => own,
                (own, global) => own.min(global),
            })
        });
        let prefetch = prefetch.unwrap_or(Ok(0))?;
        let op = queue_op::Consume {
            key,
            channel: self.channel_ref(channel),
            prefetch,
            no_ack: m.no_ack,
            exclusive: m.exclusive,
            priority,
        };
        if let Err(error) = self.shard.queue_op(queue, owner, op).await {
            self.with_channel(channel, |c| {
                c.consumers.remove(&key);
                c.consumer_tags.remove(&tag);
            });
            return Err(error.into());
        }
        if !m.no_wait {
            let ok = Method::BasicConsumeOk(BasicConsumeOk { consumer_tag: tag });
            self.conn.send_method(channel, &ok);
            self.conn.release_held(channel, key);
        }
        Ok(())
    }

    async fn basic_cancel(&mut self, channel: u16, m: BasicCancel) -> Result<(), Fault> {
        let consumer = self.with_channel(channel, |c| {
            let key = c.consumer_tags.remove(&m.consumer_tag)?;
            c.consumers.remove(&key).map(|consumer| (key, consumer))
        });
        let consumer = consumer
            .flatten()
            .filter(|(_, consumer)| consumer.queue != DIRECT_REPLY_QUEUE_ID);
        if let Some((key, consumer)) = consumer {
            // Deliveries still waiting for channel-wide credit now have no consumer: requeued.
            let orphans: Vec<DeliverEntry> = self
                .with_channel(channel, |c| {
                    let (orphans, kept): (Vec<DeliverEntry>, _) =
                        c.over_limit.drain(..).partition(|e| e.consumer == key);
                    c.over_limit = VecDeque::from(kept);
                    orphans
                })
                .unwrap_or_default();
            for entry in orphans {
                let op = SettleOp::Reject {
                    ids: vec![entry.message_id],
                    requeue: true,
                };
                self.shard.settle(entry.queue, consumer.owner, op);
            }
            let op = queue_op::Cancel { key };
            let auto_delete_now = self
                .shard
                .queue_op(consumer.queue, consumer.owner, op)
                .await;
            if matches!(auto_delete_now, Ok(true)) {
                let queue = consumer.queue;
                self.shard
                    .topology_op(topology_op::AutoDeleteQueue { queue })
                    .await?;
            }
        }
        let ok = Method::BasicCancelOk(BasicCancelOk {
            consumer_tag: m.consumer_tag,
        });
        self.reply(channel, m.no_wait, ok);
        Ok(())
    }

    async fn basic_get(&mut self, channel: u16, m: BasicGet) -> Result<(), Fault> {
        let (queue, owner) = self.accessible_queue(channel, m.queue)?;
        let op = queue_op::Get {
            channel: self.channel_ref(channel),
            no_ack: m.no_ack,
        };
        let Some(got) = self.shard.queue_op(queue, owner, op).await? else {
            self.conn
                .send_method(channel, &Method::BasicGetEmpty(BasicGetEmpty {}));
            return Ok(());
        };
        let tag = self
            .with_channel(channel, |c| {
                let tag = c.next_tag();
                if !m.no_ack {
                    c.unacked.push_back(Unacked {
                        tag,
                        queue,
                        owner,
                        message_id: got.message_id,
                    });
                }
                tag
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

    fn settle(&mut self, channel: u16, tag: u64, multiple: bool, how: Settle) -> Result<(), Fault> {
        let taken = self
            .with_channel(channel, |c| {
                let taken = c.take_unacked(tag, multiple)?;
                match c.tx.as_mut() {
                    Some(tx) if tx.settles.len() < TX_OPERATIONS_MAX => {
                        tx.settles.push((taken, how));
                        Some(Vec::new())
                    }
                    _ => Some(taken),
                }
            })
            .flatten()
            .ok_or_else(|| {
                fault(
                    reply_code::PRECONDITION_FAILED,
                    format!("PRECONDITION_FAILED - unknown delivery tag {tag}"),
                )
            })?;
        self.apply_settle(taken, how);
        self.release_over_limit(channel);
        Ok(())
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

    /// Sends settlements to the queues' owners, one message per queue.
    fn apply_settle(&self, taken: Vec<Unacked>, how: Settle) {
        if taken.is_empty() {
            return;
        }
        let mut by_queue: HashMap<(QueueId, ShardId), Vec<u64>> = HashMap::new();
        for u in taken {
            by_queue
                .entry((u.queue, u.owner))
                .or_default()
                .push(u.message_id);
        }
        for ((queue, owner), ids) in by_queue {
            let op = match how {
                Settle::Ack => SettleOp::Ack(ids),
                Settle::Reject { requeue } => SettleOp::Reject { ids, requeue },
            };
            self.shard.settle(queue, owner, op);
        }
    }

    /// basic.recover: every unacked message of the channel goes back to its queue.
    async fn recover(&mut self, channel: u16) {
        let queues: Vec<(QueueId, ShardId)> = self
            .with_channel(channel, |c| {
                let mut queues: Vec<_> = c.unacked.drain(..).map(|u| (u.queue, u.owner)).collect();
                queues.sort_unstable();
                queues.dedup();
                queues
            })
            .unwrap_or_default();
        for (queue, owner) in queues {
            let op = queue_op::Recover {
                channel: self.channel_ref(channel),
            };
            let _ = self.shard.queue_op(queue, owner, op).await;
        }
    }

    // ---- publishing -------------------------------------------------------------------------

    fn basic_publish(&mut self, channel: u16, m: BasicPublish) -> Result<(), Fault> {
        if m.immediate {
            return Err(fault(
                reply_code::NOT_IMPLEMENTED,
                "NOT_IMPLEMENTED - immediate=true",
            ));
        }
        {
            let topology = self.shard.topology();
            let Some(exchange) = topology.exchange(&self.vhost, &m.exchange) else {
                return Err(fault(
                    reply_code::NOT_FOUND,
                    format!(
                        "NOT_FOUND - no exchange '{}' in vhost '{}'",
                        m.exchange, self.vhost
                    ),
                ));
            };
            if exchange.internal {
                return Err(fault(
                    reply_code::ACCESS_REFUSED,
                    format!(
                        "ACCESS_REFUSED - cannot publish to internal exchange '{}' in vhost '{}'",
                        m.exchange, self.vhost
                    ),
                ));
            }
        }
        self.with_channel(channel, |c| {
            c.pending_publish = Some(PendingPublish {
                exchange: m.exchange,
                routing_key: m.routing_key,
                mandatory: m.mandatory,
                properties: None,
                raw_properties: Bytes::new(),
                body_size: 0,
                first_part: Bytes::new(),
                more_parts: Vec::new(),
                received: 0,
            });
        });
        Ok(())
    }

    pub(super) async fn handle_content_header(
        &mut self,
        channel: u16,
        header: ContentHeader,
    ) -> Result<(), Fault> {
        let ContentHeader {
            class_id,
            body_size,
            properties,
            raw_properties,
        } = header;
        let state = self.with_channel(channel, |c| {
            if c.closing {
                return Ok(false);
            }
            let Some(pending) = c.pending_publish.as_mut() else {
                return Err(unexpected_content("content header"));
            };
            if pending.properties.is_some() || class_id != 60 {
                return Err(unexpected_content("content header"));
            }
            pending.properties = Some(properties);
            pending.raw_properties = raw_properties;
            pending.body_size = body_size;
            Ok(true)
        });
        match state {
            None => Err(channel_not_open(channel)),
            Some(Err(fault)) => Err(fault),
            Some(Ok(false)) => Ok(()),
            Some(Ok(true)) => {
                let max_bytes = self.shard.max_message_bytes();
                if body_size > max_bytes {
                    self.with_channel(channel, |c| c.pending_publish = None);
                    let text = message_too_large_text(body_size, max_bytes);
                    self.close_channel(
                        channel,
                        fault(reply_code::PRECONDITION_FAILED, text).with_ids(60, 40),
                    )
                    .await;
                    return Ok(());
                }
                if body_size == 0 {
                    self.finish_publish(channel).await;
                }
                Ok(())
            }
        }
    }

    pub(super) async fn handle_content_body(
        &mut self,
        channel: u16,
        payload: Bytes,
    ) -> Result<(), Fault> {
        let state = self.with_channel(channel, |c| {
            if c.closing {
                return Ok(false);
            }
            let Some(pending) = c.pending_publish.as_mut() else {
                return Err(unexpected_content("content body"));
            };
            if pending.properties.is_none() {
                return Err(unexpected_content("content body"));
            }
            pending.received += payload.len() as u64;
            if pending.received > pending.body_size {
                return Err(unexpected_content("content body beyond the declared size"));
            }
            if pending.first_part.is_empty() {
                pending.first_part = payload;
            } else {
                pending.more_parts.push(payload);
            }
            Ok(pending.received == pending.body_size)
        });
        match state {
            None => Err(channel_not_open(channel)),
            Some(Err(fault)) => Err(fault),
            Some(Ok(complete)) => {
                if complete {
                    self.finish_publish(channel).await;
                }
                Ok(())
            }
        }
    }

    /// The whole message is here: route it (or buffer it in a transaction).
    async fn finish_publish(&mut self, channel: u16) {
        let Some(Some(mut pending)) = self.with_channel(channel, |c| c.pending_publish.take())
        else {
            return;
        };
        let message = self.build_message(channel, &mut pending);
        // The message holds its own copy: what is left only routes it, and must not pin the
        // read buffers the frames were sliced from (a transaction keeps it until commit).
        pending.raw_properties = Bytes::new();
        pending.first_part = Bytes::new();
        pending.more_parts = Vec::new();
        let message = match message {
            Ok(message) => message,
            Err(fault) => {
                self.close_channel(channel, fault.with_ids(60, 40)).await;
                return;
            }
        };
        let in_tx = self.with_channel(channel, |c| c.tx.as_ref().map(|tx| tx.publishes.len()));
        match in_tx.flatten() {
            None => {
                let confirm_seq = self.with_channel(channel, |c| {
                    c.confirm.as_mut().map(|confirms| {
                        let seq = confirms.next_seq;
                        confirms.next_seq += 1;
                        seq
                    })
                });
                let confirm_seq = confirm_seq.flatten();
                if is_direct_reply(&pending.exchange, &pending.routing_key) {
                    self.publish_direct_reply(channel, pending.mandatory, message, confirm_seq)
                        .await;
                } else {
                    self.route_publish(channel, &pending, message, confirm_seq);
                }
            }
            Some(buffered) if buffered < TX_OPERATIONS_MAX => {
                self.with_channel(channel, |c| {
                    if let Some(tx) = c.tx.as_mut() {
                        tx.publishes.push((pending, message));
                    }
                });
            }
            Some(_) => {
                let text = "PRECONDITION_FAILED - too many operations in one transaction";
                self.close_channel(
                    channel,
                    fault(reply_code::PRECONDITION_FAILED, text).with_ids(60, 40),
                )
                .await;
            }
        }
    }

    fn build_message(
        &self,
        channel: u16,
        pending: &mut PendingPublish,
    ) -> Result<SharedMessage, Fault> {
        let mut properties = pending.properties.take().unwrap_or_default();
        let rewritten = self.rewrite_reply_to(channel, &mut properties)?;
        if let Some(expiration) = &properties.expiration {
            if let Err(error) = broker::queue::parse_expiration(expiration) {
                return Err(fault(
                    reply_code::PRECONDITION_FAILED,
                    format!("PRECONDITION_FAILED - invalid expiration '{expiration}': {error}"),
                ));
            }
        }
        if let Some(user_id) = &properties.user_id {
            if *user_id != self.user {
                return Err(fault(
                    reply_code::PRECONDITION_FAILED,
                    format!(
                        "PRECONDITION_FAILED - user_id property set to '{user_id}' but authenticated user was '{}'",
                        self.user
                    ),
                ));
            }
        }
        if let Err(reason) = broker::sender_selected::check(properties.headers.as_ref()) {
            return Err(fault(
                reply_code::PRECONDITION_FAILED,
                format!("PRECONDITION_FAILED - {reason}"),
            ));
        }
        let route = Route {
            exchange: &pending.exchange,
            routing_key: &pending.routing_key,
        };
        let body = std::iter::once(&pending.first_part)
            .chain(&pending.more_parts)
            .map(|part| part.as_ref());
        if rewritten {
            let mut raw = bytes::BytesMut::new();
            properties.encode(&mut raw);
            return Ok(Message::from_wire(route, &properties, &raw, body));
        }
        Ok(Message::from_wire(
            route,
            &properties,
            &pending.raw_properties,
            body,
        ))
    }

    /// Routes one message; answers mandatory returns and publisher confirms. Returns the other
    /// shards the message went to.
    fn route_publish(
        &self,
        channel: u16,
        pending: &PendingPublish,
        message: SharedMessage,
        confirm_seq: Option<u64>,
    ) -> ShardSet {
        let confirm = confirm_seq.map(|seq| ConfirmRef {
            channel: self.channel_ref(channel),
            seq,
        });
        let outcome = self
            .shard
            .publish(&self.vhost, &pending.exchange, message.clone(), confirm);
        if !outcome.routed && pending.mandatory {
            let returned = Method::BasicReturn(BasicReturn {
                reply_code: reply_code::NO_ROUTE,
                reply_text: "NO_ROUTE".to_string(),
                exchange: pending.exchange.clone(),
                routing_key: pending.routing_key.clone(),
            });
            self.conn.send_content(channel, &returned, &message);
        }
        let Some(seq) = confirm_seq else {
            return outcome.remote_shards;
        };
        if outcome.remote_confirms == 0 {
            self.conn.send_confirm(channel, seq, !outcome.refused);
        } else {
            self.with_channel(channel, |c| {
                if let Some(confirms) = c.confirm.as_mut() {
                    confirms
                        .pending
                        .insert(seq, (outcome.remote_confirms, outcome.refused));
                }
            });
        }
        outcome.remote_shards
    }

    async fn tx_commit(&mut self, channel: u16) -> Result<(), Fault> {
        let Some(Some(buffer)) = self.with_channel(channel, |c| c.tx.as_mut().map(std::mem::take))
        else {
            return Err(not_transactional());
        };
        let mut remote_shards = ShardSet::default();
        for (pending, message) in &buffer.publishes {
            if is_direct_reply(&pending.exchange, &pending.routing_key) {
                self.publish_direct_reply(channel, pending.mandatory, message.clone(), None)
                    .await;
                continue;
            }
            remote_shards.union_with(&self.route_publish(channel, pending, message.clone(), None));
        }
        for (taken, how) in buffer.settles {
            self.apply_settle(taken, how);
        }
        // commit-ok is a promise: everything is applied and durable first. A barrier request
        // travels behind the publishes on each FIFO link; our own log is synced too.
        self.shard.barrier(self.shard.id()).await?;
        for shard in remote_shards
            .iter()
            .filter(|&shard| shard != self.shard.id())
        {
            self.shard.barrier(shard).await?;
        }
        Ok(())
    }
}

impl Fault {
    fn with_ids(mut self, class_id: u16, method_id: u16) -> Fault {
        self.class_id = class_id;
        self.method_id = method_id;
        self
    }
}

fn not_transactional() -> Fault {
    fault(
        reply_code::PRECONDITION_FAILED,
        "PRECONDITION_FAILED - channel is not transactional",
    )
}

fn unexpected_content(what: &str) -> Fault {
    fault(
        reply_code::UNEXPECTED_FRAME,
        format!("UNEXPECTED_FRAME - unexpected {what}"),
    )
}

fn channel_not_open(channel: u16) -> Fault {
    fault(
        reply_code::CHANNEL_ERROR,
        format!("CHANNEL_ERROR - expected 'channel.open' on channel {channel}"),
    )
}

/// RabbitMQ's reply (rabbit_channel:check_msg_size): it says "configured" unless the limit is
/// its own ceiling.
fn message_too_large_text(body_size: u64, max_bytes: u64) -> String {
    let configured = if max_bytes == MESSAGE_SIZE_MAX_BYTES {
        ""
    } else {
        "configured "
    };
    format!(
        "PRECONDITION_FAILED - message size {body_size} is larger than {configured}max size {max_bytes}"
    )
}
