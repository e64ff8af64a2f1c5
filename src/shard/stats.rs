//! One shard's statistics for the management API, built on the shard's own executor from what
//! it already holds (its hosted queues, its connections, and the plain counters of its queues
//! and its `probe`), so the data path keeps no lock and no atomic for it. The API gathers every shard's snapshot with one typed call each and
//! merges them; nothing is cached between requests.

use std::rc::Rc;

use super::calls::ShardCall;
use super::mesh::LinkStats;
use super::probe::BusyReading;
use super::Shard;
use crate::broker::queue::{ChannelRef, ConsumerKey};
use crate::broker::{ConnId, QueueId, ShardId};
use crate::conn_sink::ConnectionDescription;
use crate::limits::CONNECTIONS_PER_SHARD_MAX;
use crate::metrics::{Histogram, PublishTotals, QueueTotals};

/// Asks one shard for its [`ShardStats`].
pub struct StatsRequest;

#[derive(Debug, Clone, Default)]
pub struct ShardStats {
    pub shard: ShardId,
    pub queues: Vec<QueueDepth>,
    pub consumers: Vec<QueueConsumer>,
    /// Connections hosted here, by id; `None` where the connection does not describe itself.
    pub connections: Vec<(ConnId, Option<ConnectionDescription>)>,
    /// The shard's own counters (None only in a default value).
    pub probe: Option<ProbeStats>,
    /// The topology owner of a clustered node: every member and whether it is reachable.
    pub cluster_nodes: Vec<crate::cluster::PeerState>,
}

/// What the shard counts besides its queues (see `probe`).
#[derive(Debug, Clone)]
pub struct ProbeStats {
    pub publish: PublishTotals,
    /// Totals of the queues this shard deleted.
    pub retired: QueueTotals,
    pub delivery_latency_ns: Histogram,
    pub busy: BusyReading,
    pub links: Vec<LinkStats>,
    /// The message log's (batch bytes, fdatasync ns) histograms.
    pub log: Option<(Histogram, Histogram)>,
    /// The message log's counters (None without a log), and paged reads tried again.
    pub log_stats: Option<crate::storage::WalStats>,
    pub page_in_read_retries: u64,
}

/// A hosted queue's depth, by id (the caller names it from its topology copy).
#[derive(Debug, Clone, Default)]
pub struct QueueDepth {
    pub queue: QueueId,
    pub messages_ready: u64,
    pub messages_unacknowledged: u64,
    pub consumers: u64,
    pub ready_bytes: u64,
    /// Of `ready_bytes`, bodies paged out to the log.
    pub paged_bytes: u64,
    pub totals: QueueTotals,
}

#[derive(Debug, Clone)]
pub struct QueueConsumer {
    pub queue: QueueId,
    pub key: ConsumerKey,
    pub channel: ChannelRef,
    pub prefetch: u16,
    pub no_ack: bool,
    pub exclusive: bool,
}

impl ShardCall for StatsRequest {
    type Reply = ShardStats;
    async fn handle(self, shard: &Rc<Shard>, _from: ShardId) -> ShardStats {
        shard.stats_snapshot()
    }
}

impl Shard {
    /// Synchronous: one pass over this shard's queues and connections between two tasks.
    fn stats_snapshot(&self) -> ShardStats {
        let mut stats = ShardStats {
            shard: self.id,
            cluster_nodes: self
                .cluster_node()
                .map(|n| n.peer_states())
                .unwrap_or_default(),
            ..ShardStats::default()
        };
        for (&id, hosted) in self.queues.borrow().iter() {
            let queue = &hosted.queue;
            stats.queues.push(QueueDepth {
                queue: id,
                messages_ready: u64::from(queue.message_count()),
                messages_unacknowledged: u64::from(queue.unacked_count()),
                consumers: u64::from(queue.consumer_count()),
                ready_bytes: queue.ready_bytes(),
                paged_bytes: queue.ready_bytes().saturating_sub(queue.loaded_bytes()),
                totals: queue.totals(),
            });
            stats
                .consumers
                .extend(queue.consumers().map(|spec| QueueConsumer {
                    queue: id,
                    key: spec.key,
                    channel: spec.channel,
                    prefetch: spec.prefetch,
                    no_ack: spec.no_ack,
                    exclusive: spec.exclusive,
                }));
        }
        stats.probe = Some(ProbeStats {
            publish: self.probe.publish().totals(),
            retired: self.probe.retired(),
            delivery_latency_ns: self.probe.delivery_latency_ns(),
            busy: self.probe.read_busy(),
            links: self.mesh.link_stats(),
            log: self.storage.log_histograms(),
            log_stats: self.storage.log_stats(),
            page_in_read_retries: self.features.pager.stats().read_retries,
        });
        let conns = self.conns.borrow();
        for (&id, conn) in conns.iter().take(CONNECTIONS_PER_SHARD_MAX) {
            stats.connections.push((id, conn.describe()));
        }
        stats
    }

    /// Force-closes connection `conn` if it is hosted here (`DELETE /api/connections/name`).
    pub fn close_connection_forced(&self, conn: ConnId, reason: &str) -> bool {
        match self.conn(conn) {
            Some(sink) => sink.close_forced(reason),
            None => false,
        }
    }
}

/// Closes one connection on the shard that hosts it; answers whether it was closed.
pub struct CloseConnection {
    pub conn: ConnId,
    pub reason: String,
}

impl ShardCall for CloseConnection {
    type Reply = bool;
    async fn handle(self, shard: &Rc<Shard>, _from: ShardId) -> bool {
        shard.close_connection_forced(self.conn, &self.reason)
    }
}
