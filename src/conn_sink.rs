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
}
