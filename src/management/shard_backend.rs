//! The management API over the real shards, through the doors an AMQP channel uses: the
//! shard's topology replica to read, `topology_op` to change it (validated and logged by the
//! topology owner, as a declare), `queue_op` for a queue's owner, `publish` to route, and two
//! typed calls of its own (`shard::StatsRequest`, `shard::CloseConnection`). Nothing here
//! reaches into a shard's state, and the data path keeps nothing for the API: statistics are
//! built on each shard's executor when asked.

use std::collections::HashMap;
use std::rc::Rc;
use std::time::Instant;

use futures_lite::future::BoxedLocal;

use super::apply::{apply_operation, OperationError};
use super::backend::{
    BrokerStats, ChannelStats, ConnectionStats, ConsumerStats, GetAckMode, GotMessage, ImportError,
    LinkMetrics, LogFailures, ManagementBackend, NodeStats, Operation, Publish, QueueGet,
    QueueStats, ShardMetrics, StatsSnapshot,
};
use crate::broker::queue::{ChannelRef, Message, Route};
use crate::broker::{AmqpError, ConnId, QueueId, ShardId, Topology};
use crate::conn_sink::ConnectionDescription;
use crate::metrics::Histogram;
use crate::protocol::reply_code;
use crate::shard::messages::{queue_op, SettleOp};
use crate::shard::{CloseConnection, Shard, ShardStats, StatsRequest};

/// The channel number the API's `basic.get`s hold messages on until it settles them.
const API_CHANNEL: u16 = 1;

pub struct ShardBackend {
    shard: Rc<Shard>,
    /// The API's own connection id on this shard: never registered, it only names the channel
    /// a `basic.get` takes messages on, and owns no exclusive queue.
    conn: ConnId,
    started: Instant,
}

impl ShardBackend {
    pub fn new(shard: Rc<Shard>) -> ShardBackend {
        let conn = shard.new_id();
        ShardBackend {
            shard,
            conn,
            started: Instant::now(),
        }
    }

    async fn apply_one(&self, operation: Operation) -> Result<(), AmqpError> {
        apply_operation(&self.shard, operation)
            .await
            .map_err(OperationError::into_amqp)
    }

    /// The queue's id and owner shard, from our replica.
    fn locate(&self, vhost: &str, name: &str) -> Result<(QueueId, ShardId), AmqpError> {
        let topology = self.shard.topology();
        match topology.queue(vhost, name) {
            Some(meta) => Ok((meta.id, meta.owner_shard)),
            None => Err(AmqpError::new(
                reply_code::NOT_FOUND,
                format!("NOT_FOUND - no queue '{name}' in vhost '{vhost}'"),
            )),
        }
    }

    async fn get(&self, request: QueueGet) -> Result<Vec<GotMessage>, AmqpError> {
        let (queue, owner) = self.locate(&request.vhost, &request.queue)?;
        let channel = ChannelRef {
            conn: self.conn,
            channel: API_CHANNEL,
        };
        let mut taken = Vec::new();
        let mut ids = Vec::new();
        // Each message is taken unacknowledged and all are settled at the end, so a requeued
        // one is not taken again by the same request.
        while taken.len() < request.count {
            let op = queue_op::Get {
                channel,
                no_ack: false,
            };
            let Some(got) = self.shard.queue_op(queue, owner, op).await? else {
                break;
            };
            ids.push(got.message_id);
            taken.push(GotMessage {
                exchange: got.message.exchange().to_string(),
                routing_key: got.message.routing_key().to_string(),
                redelivered: got.redelivered,
                message_count: u64::from(got.remaining),
                properties: got.message.properties(),
                body: got.message.body().to_vec(),
            });
        }
        if !ids.is_empty() {
            let settle = match request.ack_mode {
                GetAckMode::RequeueFalse => SettleOp::Ack(ids),
                GetAckMode::RequeueTrue => SettleOp::Reject { ids, requeue: true },
                GetAckMode::RejectRequeueFalse => SettleOp::Reject {
                    ids,
                    requeue: false,
                },
            };
            self.shard.settle(queue, owner, settle);
        }
        Ok(taken)
    }

    async fn purge(&self, vhost: String, name: String) -> Result<u64, AmqpError> {
        let (queue, owner) = self.locate(&vhost, &name)?;
        let purged = self.shard.queue_op(queue, owner, queue_op::Purge).await?;
        Ok(u64::from(purged))
    }

    fn publish_now(&self, publish: &Publish) -> Result<bool, AmqpError> {
        if self
            .shard
            .topology()
            .exchange(&publish.vhost, &publish.exchange)
            .is_none()
        {
            return Err(AmqpError::new(
                reply_code::NOT_FOUND,
                format!(
                    "NOT_FOUND - no exchange '{}' in vhost '{}'",
                    publish.exchange, publish.vhost
                ),
            ));
        }
        let route = Route {
            exchange: &publish.exchange,
            routing_key: &publish.routing_key,
        };
        let message = Message::new(route, &publish.properties, &publish.body);
        let outcome = self
            .shard
            .publish(&publish.vhost, &publish.exchange, message, None);
        Ok(outcome.routed)
    }

    /// Every shard's snapshot, asked of all at once; a shard that does not answer in time is
    /// left out rather than failing the listing.
    async fn gather(&self) -> Vec<ShardStats> {
        // All requests leave before the first answer is awaited: one round trip, not N.
        let calls: Vec<_> = (0..self.shard.shard_count())
            .map(|to| {
                let shard = self.shard.clone();
                glommio::spawn_local(async move { shard.call(to, StatsRequest).await })
            })
            .collect();
        let mut gathered = Vec::with_capacity(calls.len());
        for call in calls {
            if let Ok(stats) = call.await {
                gathered.push(stats);
            }
        }
        gathered
    }

    async fn stats_now(&self) -> StatsSnapshot {
        let shards = self.gather().await;
        let topology = self.shard.topology().clone();
        let name = self.shard.members().local_name().to_string();
        let peers = shards
            .iter()
            .flat_map(|s| s.cluster_nodes.iter())
            .filter(|node| node.name != name)
            .map(|node| (node.name.clone(), node.running))
            .collect();
        merge(&topology, &shards, self.node(name, shards.len(), peers))
    }

    fn node(&self, name: String, shards: usize, peers: Vec<(String, bool)>) -> NodeStats {
        let limits = self.shard.alarm_limits();
        let sample = self.shard.alarm_sample();
        NodeStats {
            name,
            uptime_ms: self.started.elapsed().as_millis() as u64,
            memory_used_bytes: crate::alarm::probe::resident_memory_bytes().unwrap_or(0),
            memory_limit_bytes: limits.memory_limit_bytes,
            disk_free_bytes: sample.disk_free_bytes.unwrap_or(0),
            disk_free_limit_bytes: limits.disk_free_limit_bytes,
            alarms: self.shard.alarms(),
            shards: shards as u64,
            file_descriptors_used: open_descriptors(),
            sockets_used: 0,
            peers,
            member_names: self.shard.members().names().to_vec(),
            quorum_leaders: self.shard.quorum_leaders(),
        }
    }

    async fn close(&self, name: String, reason: String) -> bool {
        for stats in self.gather().await {
            let found = stats
                .connections
                .iter()
                .find(|(id, description)| connection_name(*id, description.as_ref()) == name);
            if let Some((conn, _)) = found {
                let call = CloseConnection {
                    conn: *conn,
                    reason,
                };
                return self.shard.call(stats.shard, call).await.unwrap_or(false);
            }
        }
        false
    }
}

/// A refused access operation as RabbitMQ's management plugin answers it.
fn connection_name(id: ConnId, description: Option<&ConnectionDescription>) -> String {
    match description {
        Some(description) => description.name.clone(),
        None => format!("connection {id:#x}"),
    }
}

/// One snapshot from every shard's: queues named from the topology, connections and channels
/// from their own descriptions, consumers from the queues that hold them.
fn merge(topology: &Topology, shards: &[ShardStats], node: NodeStats) -> StatsSnapshot {
    let mut snapshot = StatsSnapshot {
        node,
        ..StatsSnapshot::default()
    };
    let mut connections: HashMap<ConnId, ConnectionStats> = HashMap::new();
    let mut tags: HashMap<(ConnId, u64), String> = HashMap::new();
    for stats in shards {
        for (id, description) in &stats.connections {
            let (connection, channels) = connection_stats(*id, description.as_ref());
            for (channel, consumer_tags) in channels {
                for (key, tag) in consumer_tags {
                    tags.insert((*id, key), tag);
                }
                snapshot.channels.push(channel);
            }
            connections.insert(*id, connection);
        }
    }
    for stats in shards {
        for depth in &stats.queues {
            let Some(meta) = topology.queue_by_id(depth.queue) else {
                continue;
            };
            snapshot.queues.push(QueueStats {
                vhost: meta.vhost.clone(),
                name: meta.name.clone(),
                messages_ready: depth.messages_ready,
                messages_unacknowledged: depth.messages_unacknowledged,
                consumers: depth.consumers,
                memory_bytes: depth.ready_bytes,
                message_bytes: depth.ready_bytes,
                publish_count: depth.totals.published,
                deliver_get_count: depth.totals.deliver_get(),
                ack_count: depth.totals.acked,
                totals: depth.totals,
                paged_bytes: depth.paged_bytes,
            });
        }
        for consumer in &stats.consumers {
            let Some(meta) = topology.queue_by_id(consumer.queue) else {
                continue;
            };
            let conn = consumer.channel.conn;
            let connection = connections.get(&conn);
            let tag = tags
                .get(&(conn, consumer.key))
                .cloned()
                .unwrap_or_else(|| format!("consumer {:#x}", consumer.key));
            snapshot.consumers.push(ConsumerStats {
                vhost: meta.vhost.clone(),
                queue: meta.name.clone(),
                consumer_tag: tag,
                connection_name: connection.map_or_else(String::new, |c| c.name.clone()),
                channel_number: consumer.channel.channel,
                ack_required: !consumer.no_ack,
                exclusive: consumer.exclusive,
                prefetch_count: consumer.prefetch,
                arguments: Default::default(),
            });
        }
    }
    snapshot.connections = connections.into_values().collect();
    snapshot.connections.sort_by(|a, b| a.name.cmp(&b.name));
    snapshot.broker = broker_stats(shards);
    snapshot
}

/// Every shard's probe and queue totals summed; histograms merged; per-shard figures kept apart.
fn broker_stats(shards: &[ShardStats]) -> BrokerStats {
    let mut broker = BrokerStats::default();
    let merge = |into: &mut Option<Histogram>, from: &Histogram| match into {
        Some(histogram) => histogram.merge(from),
        None => *into = Some(*from),
    };
    for stats in shards {
        for depth in &stats.queues {
            broker.queues.add(&depth.totals);
        }
        let Some(probe) = &stats.probe else {
            continue;
        };
        broker.queues.add(&probe.retired);
        let publish = &mut broker.publish;
        publish.received += probe.publish.received;
        publish.received_confirm += probe.publish.received_confirm;
        publish.routed += probe.publish.routed;
        publish.unroutable_dropped += probe.publish.unroutable_dropped;
        publish.unroutable_returned += probe.publish.unroutable_returned;
        publish.confirmed += probe.publish.confirmed;
        merge(&mut broker.delivery_latency_ns, &probe.delivery_latency_ns);
        if let Some((batch_bytes, fdatasync_ns)) = &probe.log {
            merge(&mut broker.log_batch_bytes, batch_bytes);
            merge(&mut broker.log_fdatasync_ns, fdatasync_ns);
        }
        let log = probe.log_stats.unwrap_or_default();
        broker.log_failures.add(&LogFailures {
            failing: log.failing,
            write_errors: log.write_errors,
            fdatasync_errors: log.fdatasync_errors,
            read_errors: log.read_errors,
            flush_retries: log.flush_retries,
            read_retries: probe.page_in_read_retries,
            compaction_failures: log.compaction_failures,
        });
        broker.shards.push(ShardMetrics {
            shard: stats.shard,
            busy_seconds: probe.busy.busy_seconds,
            busy_fraction: probe.busy.busy_fraction,
            links: probe
                .links
                .iter()
                .map(|link| LinkMetrics {
                    peer: link.peer,
                    outbox_messages: link.outbox_messages,
                    outbox_bytes: link.outbox_bytes,
                    stalls: link.stalls,
                })
                .collect(),
            connections: stats.connections.len() as u64,
            queues: stats.queues.len() as u64,
            messages_ready: stats.queues.iter().map(|q| q.messages_ready).sum(),
            messages_unacknowledged: stats.queues.iter().map(|q| q.messages_unacknowledged).sum(),
            delivery_latency_ns: Some(probe.delivery_latency_ns),
            log_batch_bytes: probe.log.map(|(batch, _)| batch),
            log_fdatasync_ns: probe.log.map(|(_, fdatasync)| fdatasync),
        });
    }
    broker.shards.sort_by_key(|shard| shard.shard);
    broker
}

type ChannelWithTags = (ChannelStats, Vec<(u64, String)>);

fn connection_stats(
    id: ConnId,
    description: Option<&ConnectionDescription>,
) -> (ConnectionStats, Vec<ChannelWithTags>) {
    let name = connection_name(id, description);
    let Some(d) = description else {
        let stats = ConnectionStats {
            name,
            ..ConnectionStats::default()
        };
        return (stats, Vec::new());
    };
    let channels = d
        .channels
        .iter()
        .map(|c| {
            let stats = ChannelStats {
                connection_name: name.clone(),
                number: c.number,
                vhost: d.vhost.clone(),
                user: d.user.clone(),
                consumer_count: c.consumer_tags.len() as u64,
                messages_unacknowledged: c.messages_unacknowledged,
                messages_unconfirmed: c.messages_unconfirmed,
                messages_uncommitted: c.messages_uncommitted,
                acks_uncommitted: c.acks_uncommitted,
                prefetch_count: c.prefetch_count,
                global_prefetch_count: c.global_prefetch_count,
                published: c.published.clone(),
                confirm: c.confirm,
                transactional: c.transactional,
            };
            (stats, c.consumer_tags.clone())
        })
        .collect();
    let stats = ConnectionStats {
        name,
        vhost: d.vhost.clone(),
        user: d.user.clone(),
        peer_host: d.peer.map_or_else(String::new, |a| a.ip().to_string()),
        peer_port: d.peer.map_or(0, |a| a.port()),
        host: d.local.map_or_else(String::new, |a| a.ip().to_string()),
        port: d.local.map_or(0, |a| a.port()),
        channels: d.channels.len() as u64,
        channel_max: d.channel_max,
        frame_max: d.frame_max,
        heartbeat_seconds: d.heartbeat_seconds,
        connected_at_ms: d.connected_at_ms,
        received_bytes: d.received_bytes,
        sent_bytes: d.sent_bytes,
        send_pending_bytes: d.send_pending_bytes,
        client_properties: d.client_properties.clone(),
    };
    (stats, channels)
}

/// Resident set size from /proc (a small procfs read, no disk I/O).
fn open_descriptors() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |entries| entries.count() as u64)
}

impl ManagementBackend for ShardBackend {
    fn topology(&self) -> BoxedLocal<Topology> {
        let topology = self.shard.topology().clone();
        Box::pin(async move { topology })
    }

    fn stats(&self) -> BoxedLocal<StatsSnapshot> {
        let this = self.clone_handle();
        Box::pin(async move { this.stats_now().await })
    }

    fn apply(&self, operation: Operation) -> BoxedLocal<Result<(), AmqpError>> {
        let this = self.clone_handle();
        Box::pin(async move { this.apply_one(operation).await })
    }

    fn import(&self, operations: Vec<Operation>) -> BoxedLocal<Result<(), ImportError>> {
        let this = self.clone_handle();
        Box::pin(async move {
            for (index, operation) in operations.into_iter().enumerate() {
                if let Err(error) = this.apply_one(operation).await {
                    return Err(ImportError { index, error });
                }
            }
            Ok(())
        })
    }

    fn queue_get(&self, request: QueueGet) -> BoxedLocal<Result<Vec<GotMessage>, AmqpError>> {
        let this = self.clone_handle();
        Box::pin(async move { this.get(request).await })
    }

    fn queue_purge(&self, vhost: String, queue: String) -> BoxedLocal<Result<u64, AmqpError>> {
        let this = self.clone_handle();
        Box::pin(async move { this.purge(vhost, queue).await })
    }

    fn publish(&self, publish: Publish) -> BoxedLocal<Result<bool, AmqpError>> {
        let result = self.publish_now(&publish);
        Box::pin(async move { result })
    }

    fn close_connection(&self, name: String, reason: String) -> BoxedLocal<bool> {
        let this = self.clone_handle();
        Box::pin(async move { this.close(name, reason).await })
    }

    fn shovels(&self) -> BoxedLocal<Vec<super::backend::ShovelStatus>> {
        let shard = self.shard.clone();
        Box::pin(async move { shard.shovel_statuses().await })
    }
}

impl ShardBackend {
    /// The futures outlive `&self`; the backend is a few words, so each request holds a copy.
    fn clone_handle(&self) -> ShardBackend {
        ShardBackend {
            shard: self.shard.clone(),
            conn: self.conn,
            started: self.started,
        }
    }
}
