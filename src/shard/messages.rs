//! What shards say to each other over the mesh.
//!
//! Everything here is `Send`: it crosses cores inside a batch. A message travels as its
//! one-word handle (`SharedMessage`: one `ThinArc` allocation holding header, properties and
//! body, see docs/architecture.md "Data path"): a reference count goes up, nothing is copied.

use super::calls::{AnyReply, ErasedCall};
use crate::broker::queue::{ChannelRef, ConsumerKey, MessageId, SharedMessage};
use crate::broker::{QueueId, ShardId, TopologyChange};

/// Defined below the shard and the session, which both handle it (`conn_sink`).
pub use crate::conn_sink::DeliverEntry;

pub type RequestId = u64;

/// One entry of a mesh batch.
pub enum MeshMsg {
    /// A request that expects exactly one `Reply` with the same id (`shard::calls`).
    Request {
        from: ShardId,
        id: RequestId,
        body: Box<dyn ErasedCall>,
    },
    /// The answer to the request `id`, of the reply type that request declared.
    Reply { id: RequestId, body: AnyReply },
    /// A routed message for one or more queues owned by the receiving shard.
    Publish(PublishEntry),
    /// To the gateway (the topology owner of a clustered node): a publish for queues another
    /// node leads, to forward over the cluster link (`shard::forward`).
    Forward(super::forward::ForwardEntry),
    /// To the gateway: a settlement (ack, reject, refused delivery, bytes written) of a queue
    /// another node leads, to forward to it.
    ForwardSettle { queue: QueueId, op: SettleOp },
    /// From the gateway: forwarded publish bytes of the receiving shard left for their node
    /// (or were refused); that much credit is back.
    ForwardCredit(usize),
    /// A message for a consumer whose connection lives on the receiving shard.
    Deliver(DeliverEntry),
    /// Settlement of delivered messages, sent to the queue's owner. One-way: the channel already
    /// answered its client; ordering with other traffic on the link is what matters.
    Settle { queue: QueueId, op: SettleOp },
    /// The owner shard finished with a confirmed publish (all its queues accepted it or not).
    Confirm(ConfirmRef, bool),
    /// A queue was deleted under a consumer: tell its channel (basic.cancel to the client).
    ConsumerCancelled {
        channel: ChannelRef,
        consumer: ConsumerKey,
    },
    /// Graceful shutdown, phase 1: sent by the coordinator shard to every shard when a signal
    /// arrives; each shard closes its connections (which may still need the topology owner for
    /// cleanup).
    Shutdown,
    /// Phase 2: a shard has no connections left (sent to the coordinator).
    Drained,
    /// Phase 3: every shard drained; stop the executor (sent by the coordinator).
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
    /// The consumer's connection wrote this many body bytes of its deliveries to the socket:
    /// the queue may hand it that much more (`CONSUMER_UNWRITTEN_BYTES_MAX`).
    Written {
        consumer: ConsumerKey,
        bytes: u64,
    },
}

/// The topology owner broadcasts changes to every other shard; answered once applied.
pub struct ApplyChanges {
    pub changes: Vec<TopologyChange>,
}

/// Start-up: the topology the topology owner recovered from its log (sent before anyone
/// listens).
pub struct StartupTopology {
    pub changes: Vec<TopologyChange>,
}

/// Answered once everything sent before it on the link is applied and this shard's message log
/// is durable (tx.commit); `Err` carries the log's error.
pub struct Barrier;

/// A direct reply for a reply consumer on the receiving shard: `true` when delivered, `false`
/// when the consumer is gone.
pub struct DirectReply {
    pub address: super::direct_reply::ReplyAddress,
    pub message: SharedMessage,
}

/// Start-up, to a queue owner: unsettled enqueues of its queues found in another log
/// (`shard::adopt`). `Ok` once they are durable in the owner's log.
pub struct Adopt {
    pub messages: Vec<super::adopt::AdoptedMessage>,
}

/// Start-up, to the topology owner: the sender finished recovering. Answered once every shard
/// has, so no shard listens while another still hands messages over.
pub struct Recovered;

/// A topology operation for the topology owner, which validates and applies it
/// ([`super::TopologyCall`] names each one's answer).
pub struct TopologyRequest<O>(pub O);

/// An operation on a queue, for the shard that owns it ([`super::QueueCall`] names each one's
/// answer).
pub struct QueueRequest<O> {
    pub queue: QueueId,
    pub op: O,
}

/// Topology operations, validated and applied by the topology owner.
pub mod topology_op {
    use crate::broker::{ConnId, QueueId, ShardId};
    use crate::protocol::FieldTable;

    /// Answers `()`.
    pub struct ExchangeDeclare {
        pub vhost: String,
        pub name: String,
        pub kind: String,
        pub passive: bool,
        pub durable: bool,
        pub auto_delete: bool,
        pub internal: bool,
        pub arguments: FieldTable,
    }

    /// Answers `()`.
    pub struct ExchangeDelete {
        pub vhost: String,
        pub name: String,
        pub if_unused: bool,
    }

    /// Answers [`QueueDeclared`].
    pub struct QueueDeclare {
        pub vhost: String,
        pub name: String,
        pub passive: bool,
        pub durable: bool,
        pub exclusive: bool,
        pub auto_delete: bool,
        pub arguments: FieldTable,
        pub conn: ConnId,
        /// A server-named declare by this user: the generated name needs configure (and read,
        /// with a dead-letter exchange) before it is declared, as RabbitMQ checks `amq.gen-…`.
        /// The session cannot check it: the name is made here.
        pub authorize_generated_name_for: Option<String>,
    }

    pub struct QueueDeclared {
        pub name: String,
        pub queue: QueueId,
        pub owner: ShardId,
    }

    /// `join_cluster` (`shard/cluster_members.rs`): this node, fresh, asks member `node` at
    /// its cluster `address` (`HOST:PORT`) to add it. Answers `()` once it is a member and
    /// runs its Raft node.
    pub struct JoinCluster {
        pub node: String,
        pub address: String,
    }

    /// `forget_cluster_node`: member `node`, not running, leaves the cluster. Answers `()`
    /// once applied here.
    pub struct ForgetClusterNode {
        pub node: String,
    }

    /// `add_member` / `delete_member` of a quorum queue (`shard/quorum_members.rs`).
    /// Answers `()` once the group's leader applied it.
    pub struct QuorumMemberChange {
        pub vhost: String,
        pub name: String,
        /// A cluster member's name.
        pub node: String,
        /// Added, else removed.
        pub add: bool,
    }

    /// Answers the number of messages deleted with the queue.
    pub struct QueueDelete {
        pub vhost: String,
        pub name: String,
        pub if_unused: bool,
        pub if_empty: bool,
        pub conn: ConnId,
    }

    /// queue.bind / queue.unbind / exchange.bind / exchange.unbind. Answers `()`.
    pub struct Binding {
        pub vhost: String,
        pub bind: bool,
        pub source: String,
        pub destination: String,
        pub destination_is_queue: bool,
        pub routing_key: String,
        pub arguments: FieldTable,
        pub conn: ConnId,
    }

    /// The last consumer of an auto-delete queue went away. Answers `()`.
    pub struct AutoDeleteQueue {
        pub queue: QueueId,
    }

    /// A user, vhost or permission change (management, definitions). Answers the outcome, or
    /// why the operation is refused (`broker::AccessOpError`, not an AMQP error).
    pub struct Access {
        pub op: crate::broker::AccessOp,
    }

    /// A policy or operator policy set or cleared (management, definitions). Answers the
    /// outcome, or why it is refused (`broker::PolicyOpError`).
    pub struct PolicyChange {
        pub op: crate::broker::PolicyOp,
    }

    /// A runtime parameter (a shovel) set or cleared (management, definitions, a finished
    /// shovel). Answers the outcome, or why it is refused (`broker::ParameterOpError`).
    pub struct ParameterChange {
        pub op: crate::broker::ParameterOp,
    }

    /// A connection closed: its exclusive queues go. Answers `()`.
    pub struct ConnectionClosed {
        pub conn: ConnId,
    }
}

/// Operations on a queue, applied by the shard that owns it.
pub mod queue_op {
    use crate::broker::queue::{ChannelRef, ConsumerKey};

    /// Answers [`Counts`]. A passive declare is not a use of the queue (x-expires keeps
    /// counting); a (re)declare renews its lease.
    pub struct Count {
        pub renews_expiry: bool,
    }

    pub struct Counts {
        pub messages: u32,
        pub consumers: u32,
    }

    /// Answers `()`.
    pub struct Consume {
        pub key: ConsumerKey,
        pub channel: ChannelRef,
        pub prefetch: u16,
        pub no_ack: bool,
        pub exclusive: bool,
        pub priority: i32,
    }

    /// Removes a consumer; answers whether an auto-delete queue is now unused.
    pub struct Cancel {
        pub key: ConsumerKey,
    }

    /// Answers the message, if any.
    pub struct Get {
        pub channel: ChannelRef,
        pub no_ack: bool,
    }

    /// Answers the number of messages purged.
    pub struct Purge;

    /// Removes the queue object if the conditions hold (checked atomically on the owner);
    /// answers the number of messages it held.
    pub struct Delete {
        pub if_unused: bool,
        pub if_empty: bool,
    }

    /// A channel closed: drop its consumers, requeue its unacked messages in order. Answers
    /// whether an auto-delete queue is now unused.
    pub struct ChannelClosed {
        pub channel: ChannelRef,
    }

    /// basic.recover(requeue=true). Answers `()`.
    pub struct Recover {
        pub channel: ChannelRef,
    }
}

pub struct GotMessage {
    pub message_id: MessageId,
    pub message: SharedMessage,
    pub redelivered: bool,
    pub remaining: u32,
}
