//! The management API's one door into the broker: a small typed trait the shards implement.
//!
//! Handlers never touch a shard, a queue or a session. They read a [`Topology`] snapshot and a
//! [`StatsSnapshot`], and ask for changes as [`Operation`]s; the implementation over the shards
//! sends those to the topology owner (shard 0) and the queues' owners, exactly as an AMQP
//! channel's declare or purge travels. Futures are local (`!Send`): the server runs on a glommio
//! executor and one connection's task never leaves it.

use std::collections::HashMap;

use futures_lite::future::BoxedLocal;

use crate::broker::{AccessOp, AmqpError, Binding, ParameterOp, PolicyOp, QueueId, Topology};
use crate::metrics::{Histogram, PublishTotals, QueueTotals};
use crate::protocol::{BasicProperties, FieldTable};
pub use crate::shovel::{ShovelState, ShovelStatus};

pub use crate::auth::{Permission, TopicPermission};
pub use crate::broker::User;

/// A change the API asks for. The backend validates it as the AMQP method of the same name
/// (`broker::check_*`: RabbitMQ's codes and texts), so a refusal is an [`AmqpError`].
#[derive(Debug, Clone, PartialEq)]
pub enum Operation {
    /// Users, vhosts and their permissions, as the broker's own access operations.
    Access(AccessOp),
    /// Policies and operator policies (validated already: `broker::Policy::validate`).
    Policy(PolicyOp),
    /// Runtime parameters (shovels; the value validated already: `shovel::definition`).
    Parameter(ParameterOp),
    /// As `exchange.declare` (not passive): an existing equivalent exchange is no change.
    DeclareExchange {
        vhost: String,
        name: String,
        kind: String,
        durable: bool,
        auto_delete: bool,
        internal: bool,
        arguments: FieldTable,
    },
    DeleteExchange {
        vhost: String,
        name: String,
        if_unused: bool,
    },
    /// As `queue.declare` (not passive, not exclusive: the API has no connection to own one).
    DeclareQueue {
        vhost: String,
        name: String,
        durable: bool,
        auto_delete: bool,
        arguments: FieldTable,
    },
    DeleteQueue {
        vhost: String,
        name: String,
        if_unused: bool,
        if_empty: bool,
    },
    Bind {
        vhost: String,
        binding: Binding,
    },
    Unbind {
        vhost: String,
        binding: Binding,
    },
    /// `rabbitmq-queues add_member` (`add`) / `delete_member`: ringmq's own route, as RabbitMQ
    /// 3.10's API has none (`PUT|DELETE /api/ringmq/queues/VHOST/NAME/members/NODE`).
    QuorumMember {
        vhost: String,
        name: String,
        node: String,
        add: bool,
    },
    /// `rabbitmqctl join_cluster`, on the node that joins: member `node` at its cluster
    /// `address` (`HOST:PORT`) adds it (`POST /api/ringmq/cluster/join`).
    JoinCluster {
        node: String,
        address: String,
    },
    /// `rabbitmqctl forget_cluster_node`, on a member: `node` leaves
    /// (`DELETE /api/ringmq/cluster/nodes/NODE`).
    ForgetClusterNode {
        node: String,
    },
}

/// How `basic.get` through the API settles what it took (RabbitMQ's `ackmode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GetAckMode {
    /// Taken and requeued (the message stays; it is marked redelivered).
    RequeueTrue,
    /// Taken and acknowledged (removed).
    RequeueFalse,
    /// Taken and rejected without requeue (dead-lettered if the queue says so).
    RejectRequeueFalse,
}

#[derive(Debug, Clone, PartialEq)]
pub struct QueueGet {
    pub vhost: String,
    pub queue: String,
    pub count: usize,
    pub ack_mode: GetAckMode,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GotMessage {
    pub exchange: String,
    pub routing_key: String,
    pub redelivered: bool,
    /// Messages left in the queue after this one was taken.
    pub message_count: u64,
    pub properties: BasicProperties,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Publish {
    pub vhost: String,
    pub exchange: String,
    pub routing_key: String,
    pub properties: BasicProperties,
    pub body: Vec<u8>,
}

/// Plain counters since the queue was declared (rates are computed by the API from two
/// snapshots, never on the data path).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueStats {
    pub vhost: String,
    pub name: String,
    pub messages_ready: u64,
    pub messages_unacknowledged: u64,
    pub consumers: u64,
    pub memory_bytes: u64,
    pub message_bytes: u64,
    pub publish_count: u64,
    pub deliver_get_count: u64,
    pub ack_count: u64,
    /// The counters above and more, as the queue keeps them.
    pub totals: QueueTotals,
    /// Of `message_bytes`, bodies paged out to the log.
    pub paged_bytes: u64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConnectionStats {
    /// RabbitMQ's `"peer_host:peer_port -> host:port"`; what DELETE /api/connections/N names.
    pub name: String,
    pub vhost: String,
    pub user: String,
    pub peer_host: String,
    pub peer_port: u16,
    pub host: String,
    pub port: u16,
    pub channels: u64,
    pub channel_max: u16,
    pub frame_max: u32,
    pub heartbeat_seconds: u16,
    pub connected_at_ms: u64,
    pub received_bytes: u64,
    pub sent_bytes: u64,
    /// RabbitMQ's `send_pend`: bytes the broker holds for the socket and has not written.
    pub send_pending_bytes: u64,
    pub client_properties: FieldTable,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChannelStats {
    pub connection_name: String,
    pub number: u16,
    pub vhost: String,
    pub user: String,
    pub consumer_count: u64,
    pub messages_unacknowledged: u64,
    /// Publishes not yet confirmed; publishes and acks held by an open transaction.
    pub messages_unconfirmed: u64,
    pub messages_uncommitted: u64,
    pub acks_uncommitted: u64,
    /// basic.qos per consumer (global=false) and per channel (global=true); 0: no limit.
    pub prefetch_count: u16,
    pub global_prefetch_count: u16,
    pub confirm: bool,
    pub transactional: bool,
    /// Publishes on the channel by exchange name (RabbitMQ's channel_exchange_metrics).
    pub published: Vec<(String, u64)>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConsumerStats {
    pub vhost: String,
    pub queue: String,
    pub consumer_tag: String,
    pub connection_name: String,
    pub channel_number: u16,
    pub ack_required: bool,
    pub exclusive: bool,
    pub prefetch_count: u16,
    pub arguments: FieldTable,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeStats {
    /// RabbitMQ's `name@host` node name.
    pub name: String,
    pub uptime_ms: u64,
    pub memory_used_bytes: u64,
    /// The memory high watermark in bytes, and the disk free limit and free space.
    pub memory_limit_bytes: u64,
    pub disk_free_bytes: u64,
    pub disk_free_limit_bytes: u64,
    /// Resource alarms in effect on this node.
    pub alarms: crate::alarm::AlarmSet,
    pub shards: u64,
    pub file_descriptors_used: u64,
    pub sockets_used: u64,
    /// The other members of the cluster (name, reachable now); empty in a cluster of one.
    pub peers: Vec<(String, bool)>,
    /// Every member index's name (`cluster::Members::names`: a node that joined later has the
    /// next index, whatever its name); empty in a cluster of one.
    pub member_names: Vec<String>,
    /// Each replicated quorum queue's leader (its member index) as last heard on this node.
    pub quorum_leaders: HashMap<QueueId, usize>,
}

/// One shard's own figures, for the `ringmq_` metrics only a thread-per-core broker has.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ShardMetrics {
    pub shard: usize,
    /// Executor time spent polling and running tasks (not spinning, not parked).
    pub busy_seconds: f64,
    /// Busy fraction of wall time since the shard was last asked (None the first time).
    pub busy_fraction: Option<f64>,
    pub links: Vec<LinkMetrics>,
    /// Client connections and queues this shard hosts.
    pub connections: u64,
    pub queues: u64,
    /// Ready and unacknowledged messages in the queues it hosts.
    pub messages_ready: u64,
    pub messages_unacknowledged: u64,
    /// This shard's own enqueue-to-deliver (ns), log batch (bytes) and fdatasync (ns)
    /// histograms, since it started.
    pub delivery_latency_ns: Option<Histogram>,
    pub log_batch_bytes: Option<Histogram>,
    pub log_fdatasync_ns: Option<Histogram>,
}

/// The mesh link from one shard to `peer`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LinkMetrics {
    pub peer: usize,
    pub outbox_messages: u64,
    pub outbox_bytes: u64,
    /// Batches that found the link full and waited.
    pub stalls: u64,
}

/// The broker's totals over every shard (queues deleted since included).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BrokerStats {
    pub publish: PublishTotals,
    pub queues: QueueTotals,
    /// Enqueue-to-deliver latency of sampled messages, in ns.
    pub delivery_latency_ns: Option<Histogram>,
    pub log_batch_bytes: Option<Histogram>,
    pub log_fdatasync_ns: Option<Histogram>,
    /// The message logs' failures, every shard's summed.
    pub log_failures: LogFailures,
    pub shards: Vec<ShardMetrics>,
}

/// What a failing disk has done to the message logs, for the operator: counts since start, and
/// whether any shard's log is failing now (its last flush failed: it confirms nothing).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogFailures {
    pub failing: bool,
    pub write_errors: u64,
    pub fdatasync_errors: u64,
    pub read_errors: u64,
    /// Flushes that wrote a failed batch again.
    pub flush_retries: u64,
    /// Paged messages whose read failed and was tried again (they stayed queued).
    pub read_retries: u64,
    /// Copy-forward rounds stopped by a read error.
    pub compaction_failures: u64,
}

impl LogFailures {
    pub fn add(&mut self, other: &LogFailures) {
        self.failing |= other.failing;
        self.write_errors += other.write_errors;
        self.fdatasync_errors += other.fdatasync_errors;
        self.read_errors += other.read_errors;
        self.flush_retries += other.flush_retries;
        self.read_retries += other.read_retries;
        self.compaction_failures += other.compaction_failures;
    }
}

/// Everything the read endpoints show besides the topology, gathered off the data path.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatsSnapshot {
    pub node: NodeStats,
    pub broker: BrokerStats,
    pub queues: Vec<QueueStats>,
    pub connections: Vec<ConnectionStats>,
    pub channels: Vec<ChannelStats>,
    pub consumers: Vec<ConsumerStats>,
}

/// An import that stopped: the operation at `index` was refused; those before it were applied
/// (RabbitMQ's import is not transactional either).
#[derive(Debug, Clone, PartialEq)]
pub struct ImportError {
    pub index: usize,
    pub error: AmqpError,
}

pub trait ManagementBackend {
    /// A copy of the topology as the serving shard sees it.
    fn topology(&self) -> BoxedLocal<Topology>;
    fn stats(&self) -> BoxedLocal<StatsSnapshot>;
    /// Validates and applies one change; returns once every shard applied it (as an AMQP
    /// `*-ok`), so a read that follows sees it.
    fn apply(&self, operation: Operation) -> BoxedLocal<Result<(), AmqpError>>;
    /// Definitions import: the operations in order, stopping at the first refusal.
    fn import(&self, operations: Vec<Operation>) -> BoxedLocal<Result<(), ImportError>>;
    fn queue_get(&self, request: QueueGet) -> BoxedLocal<Result<Vec<GotMessage>, AmqpError>>;
    /// Returns how many ready messages were removed.
    fn queue_purge(&self, vhost: String, queue: String) -> BoxedLocal<Result<u64, AmqpError>>;
    /// Returns whether the message reached at least one queue.
    fn publish(&self, publish: Publish) -> BoxedLocal<Result<bool, AmqpError>>;
    /// Force-closes a connection (320 CONNECTION_FORCED with `reason`); false if none has that
    /// name.
    fn close_connection(&self, name: String, reason: String) -> BoxedLocal<bool>;
    /// Every shovel this broker runs, by (vhost, name).
    fn shovels(&self) -> BoxedLocal<Vec<ShovelStatus>>;
}
