//! What a shard hands to a connection, as a narrow trait below both.
//!
//! The shard keeps its connections as `Rc<dyn ConnectionSink>` and never sees the session's
//! channels or consumers; the session implements the trait on its connection state. All four
//! calls are synchronous and happen on the connection's own executor (the shard routes to the
//! connection's shard first), between the session's awaits.

use crate::broker::queue::{ChannelRef, ConsumerKey, MessageId, SharedMessage};
use crate::broker::QueueId;

/// One message for one consumer, on its way to the consumer's connection (over the mesh when
/// the queue lives on another shard).
pub struct DeliverEntry {
    pub channel: ChannelRef,
    pub consumer: ConsumerKey,
    pub queue: QueueId,
    pub message_id: MessageId,
    pub message: SharedMessage,
    pub redelivered: bool,
}

/// What the management API shows of one connection, described by the connection itself on its
/// own shard (the shard's stats snapshot asks each; nothing is kept up to date for it).
#[derive(Debug, Clone, Default)]
pub struct ConnectionDescription {
    /// RabbitMQ's `"peer_host:peer_port -> host:port"`.
    pub name: String,
    pub vhost: String,
    pub user: String,
    pub peer: Option<std::net::SocketAddr>,
    pub local: Option<std::net::SocketAddr>,
    pub channels: Vec<ChannelDescription>,
    pub channel_max: u16,
    pub frame_max: u32,
    pub heartbeat_seconds: u16,
    pub connected_at_ms: u64,
    /// Bytes read from and written to the socket (TLS records included), so far.
    pub received_bytes: u64,
    pub sent_bytes: u64,
    /// Output the connection holds and has not written to its socket yet (encoded, or taken
    /// by its writer and not written): RabbitMQ's `send_pend`.
    pub send_pending_bytes: u64,
    pub client_properties: crate::protocol::FieldTable,
}

#[derive(Debug, Clone, Default)]
pub struct ChannelDescription {
    pub number: u16,
    /// basic.qos for each new consumer (global=false) and for the channel (global=true).
    pub prefetch_count: u16,
    pub global_prefetch_count: u16,
    pub confirm: bool,
    pub transactional: bool,
    pub messages_unacknowledged: u64,
    /// Publishes in confirm mode whose basic.ack/nack has not been written yet.
    pub messages_unconfirmed: u64,
    /// Publishes and acknowledgements held by an open transaction (tx.select) until commit.
    pub messages_uncommitted: u64,
    pub acks_uncommitted: u64,
    /// Publishes on the channel by exchange name.
    pub published: Vec<(String, u64)>,
    /// Consumer tags by the key queues know them under.
    pub consumer_tags: Vec<(ConsumerKey, String)>,
}

/// A connection, as seen by the shard that hosts it.
pub trait ConnectionSink {
    /// A delivery for one of the connection's consumers. Handed back when the channel or the
    /// consumer is gone, so the shard can return it to its queue.
    fn deliver(&self, entry: DeliverEntry) -> Result<(), DeliverEntry>;

    /// A direct reply-to message for reply consumer `consumer` of `channel`. False unless that
    /// is a live direct reply consumer (the publisher then returns the message).
    fn deliver_reply(&self, channel: u16, consumer: ConsumerKey, message: &SharedMessage) -> bool;

    /// One shard's part of the confirmed publish `seq` on `channel` is decided (`ok`: every
    /// queue there took it).
    fn confirm_decided(&self, channel: u16, seq: u64, ok: bool);

    /// The queue under `consumer` is gone: the consumer is cancelled.
    fn consumer_cancelled(&self, channel: u16, consumer: ConsumerKey);

    /// For the management API's listings. `None`: the connection does not describe itself yet
    /// (it is then listed by its id only).
    fn describe(&self) -> Option<ConnectionDescription> {
        None
    }

    /// Closes the connection with 320 CONNECTION_FORCED and `reason`, as RabbitMQ's
    /// `DELETE /api/connections/name`. False if the connection cannot be closed this way.
    fn close_forced(&self, reason: &str) -> bool {
        let _ = reason;
        false
    }

    /// Whether the connection is open in `vhost` (its connections close when it is deleted).
    fn in_vhost(&self, vhost: &str) -> bool {
        let _ = vhost;
        false
    }

    /// Whether the connection counts towards `vhost`'s `max-connections`: from the moment it
    /// asked connection.open for it (before it is admitted) until it ends.
    fn claims_vhost(&self, vhost: &str) -> bool {
        self.in_vhost(vhost)
    }
}
