//! Topology (vhosts, users, exchanges, queue metadata, bindings) and routing.
//!
//! Every shard holds an identical [`Topology`]. The topology owner shard validates client
//! requests with the `check_*` functions in [`validate`] and turns them into
//! [`TopologyChange`]s; every shard applies the same changes in the same order with
//! [`Topology::apply`]. Nothing here does I/O.

mod access;
mod equivalence;
mod exchange;
mod headers;
pub mod mirror;
pub mod parameter;
pub mod persist;
pub mod policy;
pub mod queue;
pub mod quorum;
pub mod quorum_members;
pub mod sender_selected;
mod topic;
mod topology;
pub mod validate;

pub use access::{
    check_access_op, check_generated_queue_name, AccessOp, AccessOpError, AccessOutcome, AccessPlan,
};
pub use parameter::{
    check_parameter_op, Parameter, ParameterOp, ParameterOpError, SHOVEL_COMPONENT,
};
pub use policy::{
    check_policy_op, ApplyTo, InvalidPolicy, Policy, PolicyKind, PolicyOp, PolicyOpError,
    PolicyRequest, PolicyValue,
};
pub use topology::{Topology, DEFAULT_EXCHANGE, DEFAULT_USER, DEFAULT_VHOST};
pub use validate::{
    check_bind, check_exchange_declare, check_exchange_delete, check_queue_access,
    check_queue_declare, check_queue_delete, check_unbind, server_named_queue, BindRequest,
    ExchangeDeclare, QueueDeclare,
};

pub use crate::auth::{PasswordHash, Permission, TopicPermission};
use crate::protocol::{FieldTable, FieldValue};

/// Unique per connection in the process (shard in the top 16 bits).
pub type ConnId = u64;
/// Assigned by the owner shard, never reused in a process lifetime.
pub type QueueId = u64;
pub type ShardId = usize;

/// A channel or connection exception: RabbitMQ's reply code and text. The caller fills in the
/// class and method ids of the offending method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmqpError {
    pub code: u16,
    pub text: String,
}

impl AmqpError {
    pub fn new(code: u16, text: String) -> AmqpError {
        AmqpError { code, text }
    }
}

impl std::fmt::Display for AmqpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code, self.text)
    }
}

impl std::error::Error for AmqpError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExchangeKind {
    Direct,
    Fanout,
    Topic,
    Headers,
    /// `x-delayed-message` (RabbitMQ's delayed-message plugin): holds a message for its
    /// `x-delay` header's milliseconds, then routes it as its `x-delayed-type` argument says.
    Delayed,
}

/// The exchange type of the delayed-message plugin, and its argument naming the routing type.
pub const DELAYED_EXCHANGE_TYPE: &str = "x-delayed-message";
pub const X_DELAYED_TYPE: &str = "x-delayed-type";

impl ExchangeKind {
    pub fn parse(kind: &str) -> Option<ExchangeKind> {
        match kind {
            "direct" => Some(ExchangeKind::Direct),
            "fanout" => Some(ExchangeKind::Fanout),
            "topic" => Some(ExchangeKind::Topic),
            "headers" => Some(ExchangeKind::Headers),
            DELAYED_EXCHANGE_TYPE => Some(ExchangeKind::Delayed),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ExchangeKind::Direct => "direct",
            ExchangeKind::Fanout => "fanout",
            ExchangeKind::Topic => "topic",
            ExchangeKind::Headers => "headers",
            ExchangeKind::Delayed => DELAYED_EXCHANGE_TYPE,
        }
    }
}

impl ExchangeMeta {
    /// How the exchange routes: its kind, or for a delayed exchange its `x-delayed-type`
    /// (validated on declare; direct if absent on a path that skipped validation).
    pub fn routing_kind(&self) -> ExchangeKind {
        if self.kind != ExchangeKind::Delayed {
            return self.kind;
        }
        self.arguments
            .get(X_DELAYED_TYPE)
            .and_then(FieldValue::as_str)
            .and_then(ExchangeKind::parse)
            .filter(|kind| *kind != ExchangeKind::Delayed)
            .unwrap_or(ExchangeKind::Direct)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExchangeMeta {
    pub name: String,
    pub kind: ExchangeKind,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    pub arguments: FieldTable,
}

#[derive(Debug, Clone, PartialEq)]
pub struct QueueMeta {
    pub id: QueueId,
    pub name: String,
    pub vhost: String,
    pub owner_shard: ShardId,
    pub durable: bool,
    pub exclusive_owner: Option<ConnId>,
    pub auto_delete: bool,
    pub arguments: FieldTable,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Destination {
    Queue(String),
    Exchange(String),
}

impl Destination {
    pub fn name(&self) -> &str {
        match self {
            Destination::Queue(name) | Destination::Exchange(name) => name,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    pub source: String,
    pub destination: Destination,
    pub routing_key: String,
    pub arguments: FieldTable,
}

#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub name: String,
    pub password_hash: PasswordHash,
    pub tags: Vec<String>,
}

/// One validated mutation of the topology, applied in the same order on every shard.
#[derive(Debug, Clone, PartialEq)]
pub enum TopologyChange {
    AddVhost {
        name: String,
    },
    DeleteVhost {
        name: String,
    },
    PutUser(User),
    DeleteUser {
        name: String,
    },
    SetPermission {
        user: String,
        vhost: String,
        permission: Permission,
    },
    ClearPermission {
        user: String,
        vhost: String,
    },
    SetTopicPermission {
        user: String,
        vhost: String,
        permission: TopicPermission,
    },
    /// `exchange: None` clears the user's topic permissions on every exchange of the vhost.
    ClearTopicPermission {
        user: String,
        vhost: String,
        exchange: Option<String>,
    },
    DeclareExchange {
        vhost: String,
        exchange: ExchangeMeta,
    },
    DeleteExchange {
        vhost: String,
        name: String,
    },
    DeclareQueue {
        queue: QueueMeta,
    },
    DeleteQueue {
        vhost: String,
        name: String,
    },
    /// Deletes the queue of that name only while it is still the queue with this id: a
    /// restarted node removing the transient queues its previous run left in the replicated
    /// topology, without touching a queue of the same name declared since (on any node).
    /// Decided the same on every node, from the state the log built.
    DeleteQueueIfId {
        vhost: String,
        name: String,
        id: QueueId,
    },
    Bind {
        vhost: String,
        binding: Binding,
    },
    Unbind {
        vhost: String,
        binding: Binding,
    },
    /// Start-up only: the queue's recorded owner shard is beyond the shard count this broker
    /// runs with, so the topology owner hands it to a live one (its messages follow, see
    /// `shard::adopt`). Logged, so every later start agrees on the owner.
    MoveQueue {
        queue: QueueId,
        owner_shard: ShardId,
    },
    /// Decided with the `DeclareQueue` of a classic queue an `ha-mode` policy matched in a
    /// cluster (`mirror::mirrored_at_declare`), before it in the same entry: the queue is
    /// replicated over a group of every member, as a replicated quorum queue.
    MirrorQueue {
        queue: QueueId,
    },
    /// Decided with the `DeclareQueue` of a replicated queue, before it in the same entry (a
    /// shard applying the declare already knows its group): the group's members, the voters
    /// its Raft log starts from (`quorum_members`).
    QuorumGroup {
        queue: QueueId,
        members: Vec<String>,
    },
    /// `add_member` / `delete_member` / `grow`: the members the group is to have. Its serving
    /// leader changes the Raft configuration to match, one member at a time.
    QuorumMembers {
        queue: QueueId,
        members: Vec<String>,
    },
    /// The group's serving leader: it leads in `term`, with these voters applied. Nodes
    /// outside the group forward to it; a report of an older term is ignored.
    QuorumReport {
        queue: QueueId,
        report: quorum_members::GroupReport,
    },
    /// Creates or replaces a policy or operator policy.
    SetPolicy(Policy),
    ClearPolicy {
        kind: PolicyKind,
        vhost: String,
        name: String,
    },
    /// Creates or replaces a runtime parameter (a shovel).
    SetParameter(Parameter),
    ClearParameter {
        component: String,
        vhost: String,
        name: String,
    },
    /// Replaces a vhost's limits (`max-connections`, `max-queues`) as a whole.
    SetVhostLimits {
        vhost: String,
        limits: VhostLimits,
    },
}

/// RabbitMQ's vhost limits (`rabbit_vhost_limit`), as the operator set them: `None` is not
/// set; a negative value is kept (the management API shows it) and means no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VhostLimits {
    pub max_connections: Option<i64>,
    pub max_queues: Option<i64>,
}

/// A limit's name in the management API (`/api/vhost-limits/{vhost}/{name}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VhostLimitName {
    MaxConnections,
    MaxQueues,
}

impl VhostLimitName {
    pub fn parse(name: &str) -> Option<VhostLimitName> {
        match name {
            "max-connections" => Some(VhostLimitName::MaxConnections),
            "max-queues" => Some(VhostLimitName::MaxQueues),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            VhostLimitName::MaxConnections => "max-connections",
            VhostLimitName::MaxQueues => "max-queues",
        }
    }
}

impl VhostLimits {
    pub fn get(&self, name: VhostLimitName) -> Option<i64> {
        match name {
            VhostLimitName::MaxConnections => self.max_connections,
            VhostLimitName::MaxQueues => self.max_queues,
        }
    }

    pub fn set(&mut self, name: VhostLimitName, value: Option<i64>) {
        match name {
            VhostLimitName::MaxConnections => self.max_connections = value,
            VhostLimitName::MaxQueues => self.max_queues = value,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.max_connections.is_none() && self.max_queues.is_none()
    }

    /// The connection limit in force (RabbitMQ ignores a negative one).
    pub fn connection_limit(&self) -> Option<u64> {
        self.max_connections.and_then(|n| u64::try_from(n).ok())
    }

    /// The queue limit in force.
    pub fn queue_limit(&self) -> Option<u64> {
        self.max_queues.and_then(|n| u64::try_from(n).ok())
    }
}

impl TopologyChange {
    /// Whether applying it can change what some user may do (see `Topology::access_revision`).
    pub fn affects_access(&self) -> bool {
        matches!(
            self,
            TopologyChange::AddVhost { .. }
                | TopologyChange::DeleteVhost { .. }
                | TopologyChange::PutUser(_)
                | TopologyChange::DeleteUser { .. }
                | TopologyChange::SetPermission { .. }
                | TopologyChange::ClearPermission { .. }
                | TopologyChange::SetTopicPermission { .. }
                | TopologyChange::ClearTopicPermission { .. }
        )
    }

    /// Whether applying it can change some queue's or exchange's effective policy (see
    /// `Topology::policy_revision`).
    pub fn affects_policies(&self) -> bool {
        matches!(
            self,
            TopologyChange::SetPolicy(_) | TopologyChange::ClearPolicy { .. }
        )
    }
}

#[cfg(test)]
mod tests;
