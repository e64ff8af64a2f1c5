//! An in-memory [`ManagementBackend`] for tests: one topology validated with the broker's own
//! `check_*` functions, queues as plain deques. Not a broker: no consumers, no persistence.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};

use futures_lite::future::BoxedLocal;

use super::apply::access_refusal;
use super::backend::{
    ChannelStats, ConnectionStats, ConsumerStats, GetAckMode, GotMessage, ImportError,
    ManagementBackend, NodeStats, Operation, Publish, QueueGet, QueueStats, StatsSnapshot,
};
use crate::broker::check_access_op;
use crate::broker::{
    check_bind, check_exchange_declare, check_exchange_delete, check_queue_declare,
    check_queue_delete, check_unbind, AmqpError, BindRequest, ExchangeDeclare, QueueDeclare,
    QueueId, Topology, TopologyChange,
};
use crate::protocol::BasicProperties;

/// The connection id the fake validates as: owns no exclusive queue.
const API_CONNECTION: u64 = u64::MAX;

struct StoredMessage {
    exchange: String,
    routing_key: String,
    redelivered: bool,
    properties: BasicProperties,
    body: Vec<u8>,
}

#[derive(Default, Clone, Copy)]
struct Counters {
    publish: u64,
    deliver_get: u64,
    ack: u64,
}

pub struct FakeBackend {
    topology: RefCell<Topology>,
    messages: RefCell<HashMap<QueueId, VecDeque<StoredMessage>>>,
    counters: RefCell<HashMap<QueueId, Counters>>,
    next_queue_id: Cell<QueueId>,
    /// Connections the test says are open; `close_connection` removes them.
    pub connections: RefCell<Vec<ConnectionStats>>,
    /// Channels and consumers the test says exist (shown as they are).
    pub channels: RefCell<Vec<ChannelStats>>,
    pub consumers: RefCell<Vec<ConsumerStats>>,
    /// Every close asked for: (name, reason).
    pub closed: RefCell<Vec<(String, String)>>,
}

impl Default for FakeBackend {
    fn default() -> FakeBackend {
        FakeBackend::new()
    }
}

impl FakeBackend {
    pub fn new() -> FakeBackend {
        FakeBackend {
            topology: RefCell::new(Topology::new_default()),
            messages: RefCell::new(HashMap::new()),
            counters: RefCell::new(HashMap::new()),
            next_queue_id: Cell::new(1),
            connections: RefCell::new(Vec::new()),
            channels: RefCell::new(Vec::new()),
            consumers: RefCell::new(Vec::new()),
            closed: RefCell::new(Vec::new()),
        }
    }

    pub fn topology_now(&self) -> Topology {
        self.topology.borrow().clone()
    }

    fn changes_for(&self, operation: &Operation) -> Result<Vec<TopologyChange>, AmqpError> {
        let topology = self.topology.borrow();
        match operation {
            Operation::Access(op) => check_access_op(&topology, op)
                .map(|plan| plan.changes)
                .map_err(|refused| access_refusal(&refused)),
            Operation::Policy(op) => crate::broker::check_policy_op(&topology, op)
                .map(|(_, change)| vec![change])
                .map_err(|refused| super::apply::policy_refusal(&refused)),
            Operation::Parameter(op) => crate::broker::check_parameter_op(&topology, op)
                .map(|(_, change)| vec![change])
                .map_err(|refused| super::apply::parameter_refusal(&refused)),
            Operation::DeclareExchange {
                vhost,
                name,
                kind,
                durable,
                auto_delete,
                internal,
                arguments,
            } => check_exchange_declare(
                &topology,
                &ExchangeDeclare {
                    vhost,
                    name,
                    kind,
                    passive: false,
                    durable: *durable,
                    auto_delete: *auto_delete,
                    internal: *internal,
                    arguments,
                },
            ),
            Operation::DeleteExchange {
                vhost,
                name,
                if_unused,
            } => check_exchange_delete(&topology, vhost, name, *if_unused),
            Operation::DeclareQueue {
                vhost,
                name,
                durable,
                auto_delete,
                arguments,
            } => {
                let new_id = self.next_queue_id.get();
                let changes = check_queue_declare(
                    &topology,
                    &QueueDeclare {
                        vhost,
                        name,
                        server_named: false,
                        passive: false,
                        durable: *durable,
                        exclusive: false,
                        auto_delete: *auto_delete,
                        arguments,
                        conn: API_CONNECTION,
                        new_id,
                        owner_shard: 0,
                        cluster_size: 1,
                        cluster_members: &[],
                        local_member: 0,
                    },
                )?;
                if !changes.is_empty() {
                    self.next_queue_id.set(new_id + 1);
                }
                Ok(changes)
            }
            Operation::DeleteQueue {
                vhost,
                name,
                if_unused: _,
                if_empty,
            } => {
                let id = topology.queue(vhost, name).map(|q| q.id);
                let depth = id.map_or(0, |id| {
                    self.messages.borrow().get(&id).map_or(0, VecDeque::len)
                });
                if *if_empty && depth > 0 {
                    return Err(AmqpError::new(
                        406,
                        format!(
                            "PRECONDITION_FAILED - queue '{name}' in vhost '{vhost}' not empty"
                        ),
                    ));
                }
                check_queue_delete(&topology, vhost, name, API_CONNECTION)
            }
            Operation::Bind { vhost, binding } => {
                check_bind(&topology, &bind_request(vhost, binding))
            }
            Operation::Unbind { vhost, binding } => {
                check_unbind(&topology, &bind_request(vhost, binding))
            }
            // The fake is a broker of one node: no group to change.
            Operation::QuorumMember { .. }
            | Operation::JoinCluster { .. }
            | Operation::ForgetClusterNode { .. } => Err(AmqpError::new(
                crate::protocol::reply_code::PRECONDITION_FAILED,
                "PRECONDITION_FAILED - not a cluster".to_string(),
            )),
        }
    }

    fn apply_now(&self, operation: &Operation) -> Result<(), AmqpError> {
        let changes = self.changes_for(operation)?;
        let mut topology = self.topology.borrow_mut();
        for change in &changes {
            if let TopologyChange::DeleteQueue { vhost, name } = change {
                if let Some(q) = topology.queue(vhost, name) {
                    self.messages.borrow_mut().remove(&q.id);
                }
            }
            topology.apply(change);
        }
        Ok(())
    }

    fn queue_id(&self, vhost: &str, name: &str) -> Result<QueueId, AmqpError> {
        self.topology
            .borrow()
            .queue(vhost, name)
            .map(|q| q.id)
            .ok_or_else(|| {
                AmqpError::new(
                    404,
                    format!("NOT_FOUND - no queue '{name}' in vhost '{vhost}'"),
                )
            })
    }

    fn publish_now(&self, p: &Publish) -> Result<bool, AmqpError> {
        let topology = self.topology.borrow();
        if topology.exchange(&p.vhost, &p.exchange).is_none() {
            return Err(AmqpError::new(
                404,
                format!(
                    "NOT_FOUND - no exchange '{}' in vhost '{}'",
                    p.exchange, p.vhost
                ),
            ));
        }
        let mut targets = Vec::new();
        topology.route(
            &p.vhost,
            &p.exchange,
            &p.routing_key,
            p.properties.headers.as_ref(),
            &mut targets,
        );
        for id in &targets {
            self.messages
                .borrow_mut()
                .entry(*id)
                .or_default()
                .push_back(StoredMessage {
                    exchange: p.exchange.clone(),
                    routing_key: p.routing_key.clone(),
                    redelivered: false,
                    properties: p.properties.clone(),
                    body: p.body.clone(),
                });
            self.counters.borrow_mut().entry(*id).or_default().publish += 1;
        }
        Ok(!targets.is_empty())
    }

    fn get_now(&self, request: &QueueGet) -> Result<Vec<GotMessage>, AmqpError> {
        let id = self.queue_id(&request.vhost, &request.queue)?;
        let mut all = self.messages.borrow_mut();
        let queue = all.entry(id).or_default();
        let mut taken = Vec::new();
        for _ in 0..request.count.min(queue.len()) {
            let Some(message) = queue.pop_front() else {
                break;
            };
            let got = GotMessage {
                exchange: message.exchange.clone(),
                routing_key: message.routing_key.clone(),
                redelivered: message.redelivered,
                message_count: queue.len() as u64,
                properties: message.properties.clone(),
                body: message.body.clone(),
            };
            taken.push((got, message));
        }
        let mut counters = self.counters.borrow_mut();
        let counter = counters.entry(id).or_default();
        counter.deliver_get += taken.len() as u64;
        let mut out = Vec::new();
        let mut requeue = Vec::new();
        for (got, mut message) in taken {
            match request.ack_mode {
                GetAckMode::RequeueTrue => {
                    message.redelivered = true;
                    requeue.push(message);
                }
                GetAckMode::RequeueFalse => counter.ack += 1,
                GetAckMode::RejectRequeueFalse => {}
            }
            out.push(got);
        }
        // Requeued messages go back to the head in their order, as a basic.reject(requeue).
        for message in requeue.into_iter().rev() {
            queue.push_front(message);
        }
        Ok(out)
    }

    fn stats_now(&self) -> StatsSnapshot {
        let topology = self.topology.borrow();
        let messages = self.messages.borrow();
        let counters = self.counters.borrow();
        let mut queues = Vec::new();
        for vhost in topology.vhost_names() {
            let Some(vh) = topology.vhost(vhost) else {
                continue;
            };
            for q in vh.queues.values() {
                let deque = messages.get(&q.id);
                let counter = counters.get(&q.id).copied().unwrap_or_default();
                let message_bytes: u64 =
                    deque.map_or(0, |d| d.iter().map(|m| m.body.len() as u64).sum());
                queues.push(QueueStats {
                    vhost: vhost.to_string(),
                    name: q.name.clone(),
                    messages_ready: deque.map_or(0, |d| d.len() as u64),
                    messages_unacknowledged: 0,
                    consumers: 0,
                    memory_bytes: message_bytes + 1024,
                    message_bytes,
                    publish_count: counter.publish,
                    deliver_get_count: counter.deliver_get,
                    ack_count: counter.ack,
                    ..QueueStats::default()
                });
            }
        }
        StatsSnapshot {
            node: NodeStats {
                name: "ringmq@localhost".to_string(),
                uptime_ms: 1000,
                memory_used_bytes: 1 << 20,
                memory_limit_bytes: 1 << 30,
                disk_free_bytes: 1 << 32,
                disk_free_limit_bytes: 50_000_000,
                alarms: Default::default(),
                shards: 1,
                file_descriptors_used: 10,
                sockets_used: 1,
                peers: Vec::new(),
                member_names: Vec::new(),
                quorum_leaders: Default::default(),
            },
            broker: fake_broker_stats(&queues, self.connections.borrow().len()),
            queues,
            connections: self.connections.borrow().clone(),
            channels: self.channels.borrow().clone(),
            consumers: self.consumers.borrow().clone(),
        }
    }
}

/// One shard hosting everything, a little busy, with a few delivery latencies and log batches
/// (fixed numbers, so tests can check what the shards endpoint makes of them).
fn fake_broker_stats(queues: &[QueueStats], connections: usize) -> super::backend::BrokerStats {
    let mut delivery = crate::metrics::Histogram::new(1_000);
    for latency_ns in [500, 1_500, 3_000, 3_000] {
        delivery.observe(latency_ns);
    }
    let mut batch = crate::metrics::Histogram::new(4_096);
    batch.observe(4_096);
    let mut fdatasync = crate::metrics::Histogram::new(1_000);
    fdatasync.observe(900_000);
    super::backend::BrokerStats {
        shards: vec![super::backend::ShardMetrics {
            shard: 0,
            busy_seconds: 1.5,
            busy_fraction: Some(0.25),
            links: Vec::new(),
            connections: connections as u64,
            queues: queues.len() as u64,
            messages_ready: queues.iter().map(|q| q.messages_ready).sum(),
            messages_unacknowledged: 0,
            delivery_latency_ns: Some(delivery),
            log_batch_bytes: Some(batch),
            log_fdatasync_ns: Some(fdatasync),
        }],
        ..Default::default()
    }
}

fn bind_request<'a>(vhost: &'a str, binding: &'a crate::broker::Binding) -> BindRequest<'a> {
    BindRequest {
        vhost,
        source: &binding.source,
        destination: &binding.destination,
        routing_key: &binding.routing_key,
        arguments: &binding.arguments,
        conn: API_CONNECTION,
    }
}

/// The fake is used behind an `Rc`; each method answers at once.
impl ManagementBackend for std::rc::Rc<FakeBackend> {
    fn topology(&self) -> BoxedLocal<Topology> {
        let topology = self.topology_now();
        Box::pin(async move { topology })
    }

    fn stats(&self) -> BoxedLocal<StatsSnapshot> {
        let stats = self.stats_now();
        Box::pin(async move { stats })
    }

    fn apply(&self, operation: Operation) -> BoxedLocal<Result<(), AmqpError>> {
        let result = self.apply_now(&operation);
        Box::pin(async move { result })
    }

    fn import(&self, operations: Vec<Operation>) -> BoxedLocal<Result<(), ImportError>> {
        let mut result = Ok(());
        for (index, operation) in operations.iter().enumerate() {
            if let Err(error) = self.apply_now(operation) {
                result = Err(ImportError { index, error });
                break;
            }
        }
        Box::pin(async move { result })
    }

    fn queue_get(&self, request: QueueGet) -> BoxedLocal<Result<Vec<GotMessage>, AmqpError>> {
        let result = self.get_now(&request);
        Box::pin(async move { result })
    }

    fn queue_purge(&self, vhost: String, queue: String) -> BoxedLocal<Result<u64, AmqpError>> {
        let result = self.queue_id(&vhost, &queue).map(|id| {
            self.messages
                .borrow_mut()
                .remove(&id)
                .map_or(0, |d| d.len() as u64)
        });
        Box::pin(async move { result })
    }

    fn publish(&self, publish: Publish) -> BoxedLocal<Result<bool, AmqpError>> {
        let result = self.publish_now(&publish);
        Box::pin(async move { result })
    }

    fn close_connection(&self, name: String, reason: String) -> BoxedLocal<bool> {
        let mut connections = self.connections.borrow_mut();
        let before = connections.len();
        connections.retain(|c| c.name != name);
        let closed = connections.len() != before;
        if closed {
            self.closed.borrow_mut().push((name, reason));
        }
        Box::pin(async move { closed })
    }

    /// The fake runs no shovels.
    fn shovels(&self) -> BoxedLocal<Vec<super::backend::ShovelStatus>> {
        Box::pin(async { Vec::new() })
    }
}
