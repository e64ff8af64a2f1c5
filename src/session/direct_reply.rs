//! The session side of direct reply-to (see `shard::direct_reply`): the reply consumer, the
//! `reply_to` rewrite on requests, and publishing replies.

use super::state::Consumer;
use super::{Fault, Session};
use crate::broker::queue::{ConsumerKey, SharedMessage};
use crate::limits::CONSUMERS_PER_CHANNEL_MAX;
use crate::protocol::{
    reply_code, BasicConsume, BasicConsumeOk, BasicProperties, BasicReturn, Method,
};
use crate::shard::direct_reply::{ReplyAddress, DIRECT_REPLY_QUEUE_ID, REPLY_TO_QUEUE};

fn precondition_failed(text: &str) -> Fault {
    Fault::new(
        reply_code::PRECONDITION_FAILED,
        format!("PRECONDITION_FAILED - {text}"),
    )
}

impl Session {
    /// The channel's reply consumer, if it has one (at most one per channel).
    fn reply_consumer(&self, channel: u16) -> Option<ConsumerKey> {
        let channels = self.conn.channels.borrow();
        let state = channels.get(&channel)?;
        state
            .consumers
            .iter()
            .find(|(_, consumer)| consumer.queue == DIRECT_REPLY_QUEUE_ID)
            .map(|(key, _)| *key)
    }

    /// basic.consume on `amq.rabbitmq.reply-to`: no queue, no round trip; RabbitMQ requires
    /// no-ack (a reply cannot be requeued anywhere) and one such consumer per channel.
    pub(super) fn consume_direct_reply(
        &mut self,
        channel: u16,
        m: BasicConsume,
    ) -> Result<(), Fault> {
        if !m.no_ack {
            return Err(precondition_failed("reply consumer cannot acknowledge"));
        }
        if self.reply_consumer(channel).is_some() {
            return Err(precondition_failed("reply consumer already set"));
        }
        let key = self.shard.new_id();
        let tag = if m.consumer_tag.is_empty() {
            format!("amq.ctag-{key:x}")
        } else {
            m.consumer_tag
        };
        let owner = self.shard.id();
        let added = self.with_channel_state(channel, |c| {
            if c.consumer_tags.contains_key(&tag) {
                return Err(Fault::new(
                    reply_code::NOT_ALLOWED,
                    format!("NOT_ALLOWED - attempt to reuse consumer tag '{tag}'"),
                ));
            }
            if c.consumers.len() >= CONSUMERS_PER_CHANNEL_MAX {
                return Err(Fault::new(
                    reply_code::RESOURCE_ERROR,
                    "RESOURCE_ERROR - too many consumers on this channel",
                ));
            }
            c.consumer_tags.insert(tag.clone(), key);
            c.consumers.insert(
                key,
                Consumer {
                    tag: tag.clone(),
                    queue: DIRECT_REPLY_QUEUE_ID,
                    owner,
                    no_ack: true,
                    held: None,
                },
            );
            Ok(())
        });
        added.unwrap_or(Ok(()))?;
        if !m.no_wait {
            let ok = Method::BasicConsumeOk(BasicConsumeOk { consumer_tag: tag });
            self.conn.send_method(channel, &ok);
        }
        Ok(())
    }

    /// A request naming `amq.rabbitmq.reply-to` gets the channel's reply address instead; 406
    /// when the channel has no reply consumer. True when the properties were rewritten.
    pub(super) fn rewrite_reply_to(
        &self,
        channel: u16,
        properties: &mut BasicProperties,
    ) -> Result<bool, Fault> {
        if properties.reply_to.as_deref() != Some(REPLY_TO_QUEUE) {
            return Ok(false);
        }
        let Some(consumer) = self.reply_consumer(channel) else {
            return Err(precondition_failed("fast reply consumer does not exist"));
        };
        let address = ReplyAddress {
            channel: crate::broker::queue::ChannelRef {
                conn: self.conn.id,
                channel,
            },
            consumer,
        };
        properties.reply_to = Some(address.encode());
        Ok(true)
    }

    /// Publishes a reply straight to its consumer. A reply nobody takes is returned when
    /// mandatory; either way the publisher's confirm is an ack, as for any unroutable message.
    pub(super) async fn publish_direct_reply(
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
        if !delivered && mandatory {
            let returned = Method::BasicReturn(BasicReturn {
                reply_code: reply_code::NO_ROUTE,
                reply_text: "NO_ROUTE".to_string(),
                exchange: message.exchange().to_owned(),
                routing_key: message.routing_key().to_owned(),
            });
            self.conn.send_content(channel, &returned, &message);
        }
        if let Some(seq) = confirm_seq {
            self.conn.send_confirm(channel, seq, true);
        }
    }

    fn with_channel_state<R>(
        &self,
        channel: u16,
        f: impl FnOnce(&mut super::state::ChannelState) -> R,
    ) -> Option<R> {
        self.conn.channels.borrow_mut().get_mut(&channel).map(f)
    }
}
