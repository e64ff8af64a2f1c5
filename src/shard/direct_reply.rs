//! Direct reply-to (RabbitMQ's `amq.rabbitmq.reply-to`): an RPC client consumes (no-ack) from
//! the pseudo-queue, a request it publishes gets `reply_to` rewritten to an address naming its
//! connection, channel and consumer, and a reply published to the default exchange with that
//! address as routing key goes straight to the consumer's channel. No queue exists.
//!
//! The address carries the connection id, whose top bits are its shard, so the reply finds its
//! way without a lookup table. Delivery is a request with a reply (`Request::DirectReply`) so
//! the publisher learns whether the consumer still exists (a mandatory reply to a gone
//! consumer is returned, as in RabbitMQ).

use std::rc::Rc;

use super::messages::{DeliverEntry, Reply, Request};
use super::{shard_of, Shard};
use crate::broker::queue::{ChannelRef, ConsumerKey, SharedMessage};
use crate::broker::QueueId;

/// The pseudo-queue consumed from and named in `reply_to` by the requester.
pub const REPLY_TO_QUEUE: &str = "amq.rabbitmq.reply-to";
/// What a rewritten `reply_to` (and so a reply's routing key) starts with.
pub const REPLY_TO_PREFIX: &str = "amq.rabbitmq.reply-to.";
/// Stands for "no queue" in a reply consumer and its deliveries: queue ids are assigned from 1
/// upwards and never come near it.
pub const DIRECT_REPLY_QUEUE_ID: QueueId = QueueId::MAX;
/// Hex digits of a u64, the longest part of an address.
const ADDRESS_PART_DIGITS_MAX: usize = 16;

/// Where a direct reply goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyAddress {
    pub channel: ChannelRef,
    pub consumer: ConsumerKey,
}

impl ReplyAddress {
    /// The `reply_to` value: the prefix and an opaque token.
    pub fn encode(&self) -> String {
        format!(
            "{REPLY_TO_PREFIX}{:x}.{:x}.{:x}",
            self.channel.conn, self.channel.channel, self.consumer
        )
    }

    /// The address in a reply's routing key; None for anything we did not hand out.
    pub fn parse(routing_key: &str) -> Option<ReplyAddress> {
        let token = routing_key.strip_prefix(REPLY_TO_PREFIX)?;
        let mut parts = token.split('.');
        let mut next = || -> Option<u64> {
            let part = parts.next()?;
            if part.is_empty() || part.len() > ADDRESS_PART_DIGITS_MAX {
                return None;
            }
            u64::from_str_radix(part, 16).ok()
        };
        let conn = next()?;
        let channel = u16::try_from(next()?).ok()?;
        let consumer = next()?;
        if parts.next().is_some() {
            return None;
        }
        Some(ReplyAddress {
            channel: ChannelRef { conn, channel },
            consumer,
        })
    }
}

pub fn is_direct_reply(exchange: &str, routing_key: &str) -> bool {
    exchange.is_empty() && routing_key.starts_with(REPLY_TO_PREFIX)
}

impl Shard {
    /// Delivers a reply to the consumer at `address`, wherever its connection lives. False when
    /// the consumer is gone (or the address was never ours).
    pub async fn deliver_direct_reply(
        self: &Rc<Self>,
        address: ReplyAddress,
        message: SharedMessage,
    ) -> bool {
        let to = shard_of(address.channel.conn);
        if to >= self.shard_count {
            return false;
        }
        let request = Request::DirectReply { address, message };
        matches!(self.call(to, request).await, Some(Reply::Applied))
    }

    /// The receiving side: hands the reply to the consumer if it is a live reply consumer.
    pub(super) fn deliver_direct_reply_here(
        &self,
        address: ReplyAddress,
        message: SharedMessage,
    ) -> Reply {
        let Some(conn) = self.conn(address.channel.conn) else {
            return Reply::Failed("reply consumer gone".to_string());
        };
        let entry = DeliverEntry {
            channel: address.channel,
            consumer: address.consumer,
            queue: DIRECT_REPLY_QUEUE_ID,
            message_id: 0,
            message,
            redelivered: false,
        };
        match conn.deliver_direct_reply(entry) {
            Ok(()) => Reply::Applied,
            Err(_) => Reply::Failed("reply consumer gone".to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_round_trips_and_junk_is_refused() {
        let address = ReplyAddress {
            channel: ChannelRef {
                conn: (3 << 48) | 17,
                channel: 65_535,
            },
            consumer: u64::MAX,
        };
        let encoded = address.encode();
        assert!(is_direct_reply("", &encoded));
        assert!(!is_direct_reply("amq.direct", &encoded));
        assert_eq!(ReplyAddress::parse(&encoded), Some(address));
        for junk in [
            "amq.rabbitmq.reply-to",
            "amq.rabbitmq.reply-to.",
            "amq.rabbitmq.reply-to.1.2",
            "amq.rabbitmq.reply-to.1.2.3.4",
            "amq.rabbitmq.reply-to.1.10000.3",
            "amq.rabbitmq.reply-to.1..3",
            "amq.rabbitmq.reply-to.g.1.3",
            "amq.rabbitmq.reply-to.11111111111111111.1.3",
            "other.1.2.3",
        ] {
            assert_eq!(ReplyAddress::parse(junk), None, "{junk}");
        }
    }
}
