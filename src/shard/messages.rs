//! What shards say to each other over the mesh.
//!
//! Everything here is `Send`: it crosses cores inside a batch. Message bodies travel as
//! `Arc<Message>` (whose body is a `Bytes` slice of the publisher's read buffer), never copied.

use crate::broker::queue::{ChannelRef, ConsumerKey, MessageId, SharedMessage};
use crate::broker::{AmqpError, ConnId, QueueId, ShardId, TopologyChange};
use crate::protocol::FieldTable;

/// Defined below the shard and the session, which both handle it (`conn_sink`).
pub use crate::conn_sink::DeliverEntry;

pub type RequestId = u64;

/// One entry of a mesh batch.
pub enum MeshMsg {
    /// A request that expects exactly one `Reply` with the same id.
    Request {
        from: ShardId,
        id: RequestId,
        body: Request,
    },
    Reply {
        id: RequestId,
        body: Reply,
    },
    /// A routed message for one or more queues owned by the receiving shard.
    Publish(PublishEntry),
    /// A message for a consumer whose connection lives on the receiving shard.
    Deliver(DeliverEntry),
    /// Settlement of delivered messages, sent to the queue's owner. One-way: the channel already
    /// answered its client; ordering with other traffic on the link is what matters.
    Settle {
        queue: QueueId,
        op: SettleOp,
    },
    /// The owner shard finished with a confirmed publish (all its queues accepted it or not).
    Confirm(ConfirmRef, bool),
    /// A queue was deleted under a consumer: tell its channel (basic.cancel to the client).
    ConsumerCancelled {
        channel: ChannelRef,
        consumer: ConsumerKey,
    },
    /// Graceful shutdown, phase 1: sent by shard 0 to every shard when a signal arrives; each
    /// shard closes its connections (which may still need shard 0 for cleanup).
    Shutdown,
    /// Phase 2: a shard has no connections left (sent to shard 0).
    Drained,
    /// Phase 3: every shard drained; stop the executor (sent by shard 0).
    Stop,
}

/// Identifies one publish awaiting a publisher confirm on a channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfirmRef {
    pub channel: ChannelRef,
    pub seq: u64,
}

pub struct PublishEntry {
    pub queues: Vec<QueueId>,
    pub message: SharedMessage,
    pub confirm: Option<ConfirmRef>,
}

pub enum SettleOp {
    Ack(Vec<MessageId>),
    Reject {
        ids: Vec<MessageId>,
        requeue: bool,
    },
    /// A delivery its consumer's connection turned away: that consumer is gone for good.
    Refused {
        consumer: ConsumerKey,
        id: MessageId,
    },
}

/// Requests. Topology requests go to shard 0; queue requests go to the queue's owner; `Apply`
/// goes from shard 0 to every other shard.
pub enum Request {
    Topology(TopologyOp),
    Apply {
        changes: Vec<TopologyChange>,
    },
    /// Start-up: the topology shard 0 recovered from its log (sent before anyone listens).
    StartupTopology {
        changes: Vec<TopologyChange>,
    },
    /// Answered once everything sent before it on the link is applied and this shard's message
    /// log is durable (tx.commit).
    Barrier,
    Queue {
        queue: QueueId,
        op: QueueOp,
    },
    /// A direct reply for a reply consumer on the receiving shard: `Applied` when delivered,
    /// `Failed` when the consumer is gone.
    DirectReply {
        address: super::direct_reply::ReplyAddress,
        message: SharedMessage,
    },
    /// Start-up, to a queue owner: unsettled enqueues of its queues found in another log
    /// (`shard::adopt`). `Applied` once they are durable in the owner's log.
    Adopt {
        messages: Vec<super::adopt::AdoptedMessage>,
    },
    /// Start-up, to shard 0: the sender finished recovering. `Applied` once every shard has,
    /// so no shard listens while another still hands messages over.
    Recovered,
}

pub enum Reply {
    Topology(Result<TopologyOk, AmqpError>),
    Applied,
    Failed(String),
    Queue(Result<QueueOk, AmqpError>),
}

/// A topology request, validated and applied by shard 0.
pub enum TopologyOp {
    ExchangeDeclare {
        vhost: String,
        name: String,
        kind: String,
        passive: bool,
        durable: bool,
        auto_delete: bool,
        internal: bool,
        arguments: FieldTable,
    },
    ExchangeDelete {
        vhost: String,
        name: String,
        if_unused: bool,
    },
    QueueDeclare {
        vhost: String,
        name: String,
        passive: bool,
        durable: bool,
        exclusive: bool,
        auto_delete: bool,
        arguments: FieldTable,
        conn: ConnId,
    },
    QueueDelete {
        vhost: String,
        name: String,
        if_unused: bool,
        if_empty: bool,
        conn: ConnId,
    },
    /// queue.bind / queue.unbind / exchange.bind / exchange.unbind.
    Binding {
        vhost: String,
        bind: bool,
        source: String,
        destination: String,
        destination_is_queue: bool,
        routing_key: String,
        arguments: FieldTable,
        conn: ConnId,
    },
    /// The last consumer of an auto-delete queue went away.
    AutoDeleteQueue { queue: QueueId },
    /// A connection closed: its exclusive queues go.
    ConnectionClosed { conn: ConnId },
}

pub enum TopologyOk {
    Done,
    QueueDeclared {
        name: String,
        queue: QueueId,
        owner: ShardId,
    },
    QueueDeleted {
        message_count: u32,
    },
}

/// A request to the shard that owns a queue.
pub enum QueueOp {
    /// Counts for a passive declare: not a use of the queue (x-expires keeps counting).
    Counts,
    /// Counts for a (re)declare: renews the queue's x-expires lease.
    Declared,
    Consume {
        key: ConsumerKey,
        channel: ChannelRef,
        prefetch: u16,
        no_ack: bool,
        exclusive: bool,
        priority: i32,
    },
    /// Remove a consumer; the reply says whether an auto-delete queue is now unused.
    Cancel {
        key: ConsumerKey,
    },
    Get {
        channel: ChannelRef,
        no_ack: bool,
    },
    Purge,
    /// Remove the queue object if the conditions hold (checked atomically on the owner).
    Delete {
        if_unused: bool,
        if_empty: bool,
    },
    /// A channel closed: drop its consumers, requeue its unacked messages in order.
    ChannelClosed {
        channel: ChannelRef,
    },
    /// basic.recover(requeue=true).
    Recover {
        channel: ChannelRef,
    },
}

pub enum QueueOk {
    Counts { messages: u32, consumers: u32 },
    Consumed,
    Cancelled { auto_delete_now: bool },
    Got(Option<GotMessage>),
    Purged(u32),
    Deleted(u32),
    Done { auto_delete_now: bool },
}

pub struct GotMessage {
    pub message_id: MessageId,
    pub message: SharedMessage,
    pub redelivered: bool,
    pub remaining: u32,
}
