//! Prometheus text format (version 0.0.4) on its own port, as the rabbitmq_prometheus plugin
//! serves it (15692): `/metrics` aggregated over the node, `/metrics/per-object` with one
//! series per queue (`vhost`, `queue`), channel (`channel`, the channel's name as the management
//! API shows it) and connection (`channel` too: RabbitMQ labels its connection series with the
//! connection process under that name), and `/metrics/detailed?family=F&vhost=V` with only the
//! families asked for, one series per object, named `rabbitmq_detailed_*` (RabbitMQ 3.10's
//! endpoint; `vhost` filters the queue families). RabbitMQ's metric names, types, help texts and
//! units where the concept is the same (existing Grafana dashboards read them), and `ringmq_`
//! metrics that only a thread-per-core broker has (per-shard busy time, mesh links, log batches
//! and fdatasync, enqueue-to-deliver latency). A RabbitMQ family whose value ringmq does not
//! have (process reductions, packet counts, per-channel delivery counts, churn counters) is left
//! out rather than shown as a zero.
//!
//! No authentication, as rabbitmq_prometheus: the port is for scrapers (bind it with
//! `--management-listen` or `--prometheus-port 0` to turn it off). Statistics come from the
//! same backend door as the management API: one snapshot per shard per scrape.

use std::fmt::Write;
use std::rc::Rc;

use super::api::{Request, Response};
use super::backend::{ChannelStats, ConnectionStats, ManagementBackend, QueueStats, StatsSnapshot};
use super::listing::Query;
use super::objects::RABBITMQ_VERSION;
use crate::metrics::Histogram;

/// The Prometheus text format's content type.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Nanoseconds per second, for histograms kept in ns and shown in seconds.
const NANOS_PER_SECOND: f64 = 1e9;

/// `/metrics` sums objects over the node; `/metrics/per-object` labels each;
/// `/metrics/detailed` labels each of the families asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Aggregated,
    PerObject,
    Detailed(Detailed),
}

/// What `/metrics/detailed` was asked for: RabbitMQ's family (table) names, and the vhosts the
/// queue families are limited to (none given: every vhost).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Detailed {
    pub families: Vec<String>,
    pub vhosts: Vec<String>,
}

impl Detailed {
    pub fn from_query(query: &str) -> Detailed {
        let query = Query::parse(query);
        Detailed {
            families: query.all("family").map(str::to_string).collect(),
            vhosts: query.all("vhost").map(str::to_string).collect(),
        }
    }

    fn wants(&self, groups: &[&str]) -> bool {
        groups.iter().any(|g| self.families.iter().any(|f| f == g))
    }

    fn shows_vhost(&self, vhost: &str) -> bool {
        self.vhosts.is_empty() || self.vhosts.iter().any(|v| v == vhost)
    }
}

/// The prefix RabbitMQ gives `/metrics/detailed`'s families instead of `rabbitmq_`.
const DETAILED_PREFIX: &str = "rabbitmq_detailed_";

/// The scrape endpoint; one per shard, like the management API.
pub struct Metrics {
    backend: Rc<dyn ManagementBackend>,
}

impl Metrics {
    pub fn new(backend: Rc<dyn ManagementBackend>) -> Metrics {
        Metrics { backend }
    }

    pub async fn handle(&self, request: Request) -> Response {
        let scope = match request.path.trim_end_matches('/') {
            "/metrics" => Scope::Aggregated,
            "/metrics/per-object" => Scope::PerObject,
            "/metrics/detailed" => Scope::Detailed(Detailed::from_query(&request.query)),
            _ => return Response::not_found(),
        };
        if request.method != "GET" && request.method != "HEAD" {
            return Response::error(405, "method_not_allowed", "GET only");
        }
        let snapshot = self.backend.stats().await;
        Response {
            status: 200,
            headers: vec![("content-type", CONTENT_TYPE.to_string())],
            body: render(&snapshot, &scope).into_bytes(),
        }
    }
}

/// Writes families in order; every family gets its HELP and TYPE once, before its samples.
struct Writer {
    out: String,
}

impl Writer {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (label, text)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{label}=\"{}\"", escape(text));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", number(value));
    }

    /// A family of one unlabelled sample.
    fn single(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// `scale`: the histogram's unit per shown unit (1e9 for ns shown as seconds).
    fn histogram(&mut self, name: &str, help: &str, histogram: &Histogram, scale: f64) {
        self.family(name, "histogram", help);
        let bucket = format!("{name}_bucket");
        for (bound, count) in histogram.cumulative() {
            let le = number(bound as f64 / scale);
            self.sample(&bucket, &[("le", &le)], count as f64);
        }
        self.sample(&bucket, &[("le", "+Inf")], histogram.count() as f64);
        self.sample(&format!("{name}_sum"), &[], histogram.sum() as f64 / scale);
        self.sample(&format!("{name}_count"), &[], histogram.count() as f64);
    }
}

/// Label values escape backslash, double quote and newline (the text format's rule).
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Integers without a fraction, others as Rust prints them (never exponent-free garbage).
fn number(value: f64) -> String {
    if value.is_finite() && value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

pub fn render(snapshot: &StatsSnapshot, scope: &Scope) -> String {
    let mut w = Writer { out: String::new() };
    if let Scope::Detailed(detailed) = scope {
        object_families(&mut w, snapshot, scope, detailed);
        return w.out;
    }
    info(&mut w, snapshot);
    objects(&mut w, snapshot);
    object_families(&mut w, snapshot, scope, &Detailed::default());
    channel_totals(&mut w, snapshot, scope);
    global_totals(&mut w, snapshot);
    shards(&mut w, snapshot);
    log_failures(&mut w, snapshot);
    histograms(&mut w, snapshot);
    w.out
}

fn info(w: &mut Writer, snapshot: &StatsSnapshot) {
    let node = snapshot.node.name.as_str();
    // RabbitMQ declares both info families untyped.
    w.family(
        "rabbitmq_identity_info",
        "untyped",
        "RabbitMQ node & cluster identity info",
    );
    w.sample(
        "rabbitmq_identity_info",
        &[
            ("rabbitmq_node", node),
            ("rabbitmq_cluster", node),
            ("rabbitmq_cluster_permanent_id", node),
        ],
        1.0,
    );
    w.family(
        "rabbitmq_build_info",
        "untyped",
        "RabbitMQ & Erlang/OTP version info",
    );
    w.sample(
        "rabbitmq_build_info",
        &[
            ("rabbitmq_version", RABBITMQ_VERSION),
            ("ringmq_version", env!("CARGO_PKG_VERSION")),
            ("erlang_version", "none"),
        ],
        1.0,
    );
    w.single(
        "rabbitmq_erlang_uptime_seconds",
        "gauge",
        "Node uptime",
        snapshot.node.uptime_ms as f64 / 1000.0,
    );
    w.single(
        "rabbitmq_process_resident_memory_bytes",
        "gauge",
        "Memory used in bytes",
        snapshot.node.memory_used_bytes as f64,
    );
    w.single(
        "rabbitmq_process_open_fds",
        "gauge",
        "Open file descriptors",
        snapshot.node.file_descriptors_used as f64,
    );
}

fn objects(w: &mut Writer, snapshot: &StatsSnapshot) {
    let count = |n: usize| n as f64;
    w.single(
        "rabbitmq_connections",
        "gauge",
        "Connections currently open",
        count(snapshot.connections.len()),
    );
    w.single(
        "rabbitmq_channels",
        "gauge",
        "Channels currently open",
        count(snapshot.channels.len()),
    );
    w.single(
        "rabbitmq_consumers",
        "gauge",
        "Consumers currently connected",
        count(snapshot.consumers.len()),
    );
    w.single(
        "rabbitmq_queues",
        "gauge",
        "Queues available",
        count(snapshot.queues.len()),
    );
}

/// Where a per-object family's values come from: one sample per queue, channel or connection
/// of the snapshot (per object), or their sum (aggregated).
enum Source {
    Queue(fn(&QueueStats) -> u64),
    Channel(fn(&ChannelStats) -> u64),
    Connection(fn(&ConnectionStats) -> u64),
}

/// A family with one sample per object. `groups`: the RabbitMQ families (tables)
/// `/metrics/detailed?family=` selects it by; none: not in the detailed endpoint.
struct ObjectFamily {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    groups: &'static [&'static str],
    source: Source,
}

const QUEUE_COARSE: &[&str] = &["queue_coarse_metrics"];
const QUEUE_METRICS: &[&str] = &["queue_metrics"];
const CHANNEL_METRICS: &[&str] = &["channel_metrics"];
const CONNECTION_COARSE: &[&str] = &["connection_coarse_metrics"];
const CONNECTION_METRICS: &[&str] = &["connection_metrics"];
const CHANNEL_EXCHANGE: &[&str] = &["channel_exchange_metrics"];

const OBJECT_FAMILIES: [ObjectFamily; 19] = [
    ObjectFamily {
        name: "rabbitmq_queue_messages_ready",
        kind: "gauge",
        help: "Messages ready to be delivered to consumers",
        groups: QUEUE_COARSE,
        source: Source::Queue(|q| q.messages_ready),
    },
    ObjectFamily {
        name: "rabbitmq_queue_messages_unacked",
        kind: "gauge",
        help: "Messages delivered to consumers but not yet acknowledged",
        groups: QUEUE_COARSE,
        source: Source::Queue(|q| q.messages_unacknowledged),
    },
    ObjectFamily {
        name: "rabbitmq_queue_messages",
        kind: "gauge",
        help: "Sum of ready and unacknowledged messages - total queue depth",
        groups: QUEUE_COARSE,
        source: Source::Queue(|q| q.messages_ready + q.messages_unacknowledged),
    },
    ObjectFamily {
        name: "rabbitmq_queue_consumers",
        kind: "gauge",
        help: "Consumers on a queue",
        groups: &["queue_consumer_count", "queue_metrics"],
        source: Source::Queue(|q| q.consumers),
    },
    ObjectFamily {
        name: "rabbitmq_queue_messages_ready_bytes",
        kind: "gauge",
        help: "Size in bytes of ready messages",
        groups: QUEUE_METRICS,
        source: Source::Queue(|q| q.message_bytes),
    },
    ObjectFamily {
        name: "rabbitmq_queue_messages_paged_out_bytes",
        kind: "gauge",
        help: "Size in bytes of messages paged out to disk",
        groups: QUEUE_METRICS,
        source: Source::Queue(|q| q.paged_bytes),
    },
    // RabbitMQ's is per channel, queue and exchange; ours per queue, so not in `detailed`.
    ObjectFamily {
        name: "rabbitmq_queue_messages_published_total",
        kind: "counter",
        help: "Total number of messages published to queues",
        groups: &[],
        source: Source::Queue(|q| q.totals.published),
    },
    ObjectFamily {
        name: "ringmq_queue_messages_delivered_total",
        kind: "counter",
        help: "Total number of messages delivered or fetched from a queue, either ack mode",
        groups: &[],
        source: Source::Queue(|q| q.totals.deliver_get()),
    },
    ObjectFamily {
        name: "ringmq_queue_messages_acked_total",
        kind: "counter",
        help: "Total number of messages acknowledged to a queue",
        groups: &[],
        source: Source::Queue(|q| q.totals.acked),
    },
    ObjectFamily {
        name: "rabbitmq_channel_consumers",
        kind: "gauge",
        help: "Consumers on a channel",
        groups: CHANNEL_METRICS,
        source: Source::Channel(|c| c.consumer_count),
    },
    ObjectFamily {
        name: "rabbitmq_channel_messages_unacked",
        kind: "gauge",
        help: "Delivered but not yet acknowledged messages",
        groups: CHANNEL_METRICS,
        source: Source::Channel(|c| c.messages_unacknowledged),
    },
    ObjectFamily {
        name: "rabbitmq_channel_messages_unconfirmed",
        kind: "gauge",
        help: "Published but not yet confirmed messages",
        groups: CHANNEL_METRICS,
        source: Source::Channel(|c| c.messages_unconfirmed),
    },
    ObjectFamily {
        name: "rabbitmq_channel_messages_uncommitted",
        kind: "gauge",
        help: "Messages received in a transaction but not yet committed",
        groups: CHANNEL_METRICS,
        source: Source::Channel(|c| c.messages_uncommitted),
    },
    ObjectFamily {
        name: "rabbitmq_channel_acks_uncommitted",
        kind: "gauge",
        help: "Message acknowledgements in a transaction not yet committed",
        groups: CHANNEL_METRICS,
        source: Source::Channel(|c| c.acks_uncommitted),
    },
    ObjectFamily {
        name: "rabbitmq_consumer_prefetch",
        kind: "gauge",
        help: "Limit of unacknowledged messages for each consumer",
        groups: CHANNEL_METRICS,
        source: Source::Channel(|c| u64::from(c.prefetch_count)),
    },
    ObjectFamily {
        name: "rabbitmq_channel_prefetch",
        kind: "gauge",
        help: "Total limit of unacknowledged messages for all consumers on a channel",
        groups: CHANNEL_METRICS,
        source: Source::Channel(|c| u64::from(c.global_prefetch_count)),
    },
    ObjectFamily {
        name: "rabbitmq_connection_incoming_bytes_total",
        kind: "counter",
        help: "Total number of bytes received on a connection",
        groups: CONNECTION_COARSE,
        source: Source::Connection(|c| c.received_bytes),
    },
    ObjectFamily {
        name: "rabbitmq_connection_outgoing_bytes_total",
        kind: "counter",
        help: "Total number of bytes sent on a connection",
        groups: CONNECTION_COARSE,
        source: Source::Connection(|c| c.sent_bytes),
    },
    ObjectFamily {
        name: "rabbitmq_connection_channels",
        kind: "gauge",
        help: "Channels on a connection",
        groups: CONNECTION_METRICS,
        source: Source::Connection(|c| c.channels),
    },
];

/// Publishes per channel and exchange (RabbitMQ's channel_exchange_metrics); aggregated, it is
/// the node's total (`channel_totals`), closed channels included.
const CHANNEL_PUBLISHED: &str = "rabbitmq_channel_messages_published_total";
const CHANNEL_PUBLISHED_HELP: &str =
    "Total number of messages published into an exchange on a channel";

/// A family's name in `scope`: `rabbitmq_detailed_*` on the detailed endpoint.
fn shown_name(name: &'static str, scope: &Scope) -> std::borrow::Cow<'static, str> {
    match (scope, name.strip_prefix("rabbitmq_")) {
        (Scope::Detailed(_), Some(rest)) => format!("{DETAILED_PREFIX}{rest}").into(),
        _ => name.into(),
    }
}

/// The channel's name as the management API shows it, its `channel` label.
fn channel_name(channel: &ChannelStats) -> String {
    format!("{} ({})", channel.connection_name, channel.number)
}

/// Every per-object family `scope` shows: summed (aggregated), one sample per object, or the
/// families `detailed` asks for (queues of its vhosts only).
fn object_families(w: &mut Writer, snapshot: &StatsSnapshot, scope: &Scope, detailed: &Detailed) {
    let is_detailed = matches!(scope, Scope::Detailed(_));
    for family in &OBJECT_FAMILIES {
        if is_detailed && !detailed.wants(family.groups) {
            continue;
        }
        let name = shown_name(family.name, scope);
        w.family(&name, family.kind, family.help);
        if *scope == Scope::Aggregated {
            w.sample(&name, &[], family.source.sum(snapshot) as f64);
        } else {
            family.source.each(w, &name, snapshot, detailed);
        }
    }
    if *scope != Scope::Aggregated && (!is_detailed || detailed.wants(CHANNEL_EXCHANGE)) {
        let name = shown_name(CHANNEL_PUBLISHED, scope);
        w.family(&name, "counter", CHANNEL_PUBLISHED_HELP);
        for channel in &snapshot.channels {
            let label = channel_name(channel);
            for (exchange, count) in &channel.published {
                let labels = [
                    ("channel", label.as_str()),
                    ("vhost", channel.vhost.as_str()),
                    ("exchange", exchange.as_str()),
                ];
                w.sample(&name, &labels, *count as f64);
            }
        }
    }
}

impl Source {
    fn sum(&self, snapshot: &StatsSnapshot) -> u64 {
        match self {
            Source::Queue(value) => snapshot.queues.iter().map(value).sum(),
            Source::Channel(value) => snapshot.channels.iter().map(value).sum(),
            Source::Connection(value) => snapshot.connections.iter().map(value).sum(),
        }
    }

    fn each(&self, w: &mut Writer, name: &str, snapshot: &StatsSnapshot, detailed: &Detailed) {
        match self {
            Source::Queue(value) => {
                for queue in snapshot
                    .queues
                    .iter()
                    .filter(|q| detailed.shows_vhost(&q.vhost))
                {
                    let labels = [
                        ("vhost", queue.vhost.as_str()),
                        ("queue", queue.name.as_str()),
                    ];
                    w.sample(name, &labels, value(queue) as f64);
                }
            }
            Source::Channel(value) => {
                for channel in &snapshot.channels {
                    let label = channel_name(channel);
                    w.sample(name, &[("channel", &label)], value(channel) as f64);
                }
            }
            Source::Connection(value) => {
                for connection in &snapshot.connections {
                    let labels = [("channel", connection.name.as_str())];
                    w.sample(name, &labels, value(connection) as f64);
                }
            }
        }
    }
}

/// rabbitmq_prometheus's channel counters, which RabbitMQ sums over channels in `/metrics`;
/// ours are kept by the queues (plus those of deleted queues), so they are the same sums (and
/// not per channel: RabbitMQ's per-object series of these are per channel and queue).
fn channel_totals(w: &mut Writer, snapshot: &StatsSnapshot, scope: &Scope) {
    let totals = &snapshot.broker.queues;
    let families = [
        (
            CHANNEL_PUBLISHED,
            CHANNEL_PUBLISHED_HELP,
            snapshot.broker.publish.received,
        ),
        (
            "rabbitmq_channel_messages_delivered_ack_total",
            "Total number of messages delivered to consumers in manual acknowledgement mode",
            totals.delivered_manual_ack,
        ),
        (
            "rabbitmq_channel_messages_delivered_total",
            "Total number of messages delivered to consumers in automatic acknowledgement mode",
            totals.delivered_auto_ack,
        ),
        (
            "rabbitmq_channel_get_ack_total",
            "Total number of messages fetched with basic.get in manual acknowledgement mode",
            totals.got_manual_ack,
        ),
        (
            "rabbitmq_channel_get_total",
            "Total number of messages fetched with basic.get in automatic acknowledgement mode",
            totals.got_auto_ack,
        ),
        (
            "rabbitmq_channel_messages_redelivered_total",
            "Total number of messages redelivered to consumers",
            totals.redelivered,
        ),
        (
            "rabbitmq_channel_messages_acked_total",
            "Total number of messages acknowledged by consumers",
            totals.acked,
        ),
    ];
    for (name, help, value) in families {
        // Per object, publishes are counted per channel (`object_families`).
        if name == CHANNEL_PUBLISHED && *scope != Scope::Aggregated {
            continue;
        }
        w.single(name, "counter", help, value as f64);
    }
}

/// RabbitMQ's `rabbitmq_global_*` counters (label `protocol`, as RabbitMQ 3.10).
fn global_totals(w: &mut Writer, snapshot: &StatsSnapshot) {
    let publish = &snapshot.broker.publish;
    let queues = &snapshot.broker.queues;
    let families = [
        (
            "rabbitmq_global_messages_received_total",
            "Total number of messages received from publishers",
            publish.received,
        ),
        (
            "rabbitmq_global_messages_received_confirm_total",
            "Total number of messages received from publishers expecting confirmations",
            publish.received_confirm,
        ),
        (
            "rabbitmq_global_messages_routed_total",
            "Total number of messages routed to queues or streams",
            publish.routed,
        ),
        (
            "rabbitmq_global_messages_unroutable_dropped_total",
            "Total number of messages published as non-mandatory into an exchange and dropped as unroutable",
            publish.unroutable_dropped,
        ),
        (
            "rabbitmq_global_messages_unroutable_returned_total",
            "Total number of messages published as mandatory into an exchange and returned to the publisher as unroutable",
            publish.unroutable_returned,
        ),
        (
            "rabbitmq_global_messages_confirmed_total",
            "Total number of messages confirmed to publishers",
            publish.confirmed,
        ),
        (
            "rabbitmq_global_messages_delivered_total",
            "Total number of messages delivered to consumers",
            queues.deliver_get(),
        ),
        (
            "rabbitmq_global_messages_delivered_consume_manual_ack_total",
            "Total number of messages delivered to consumers using basic.consume with manual acknowledgment",
            queues.delivered_manual_ack,
        ),
        (
            "rabbitmq_global_messages_delivered_consume_auto_ack_total",
            "Total number of messages delivered to consumers using basic.consume with automatic acknowledgment",
            queues.delivered_auto_ack,
        ),
        (
            "rabbitmq_global_messages_delivered_get_manual_ack_total",
            "Total number of messages delivered to consumers using basic.get with manual acknowledgment",
            queues.got_manual_ack,
        ),
        (
            "rabbitmq_global_messages_delivered_get_auto_ack_total",
            "Total number of messages delivered to consumers using basic.get with automatic acknowledgment",
            queues.got_auto_ack,
        ),
        (
            "rabbitmq_global_messages_redelivered_total",
            "Total number of messages redelivered to consumers",
            queues.redelivered,
        ),
        (
            "rabbitmq_global_messages_acknowledged_total",
            "Total number of messages acknowledged by consumers",
            queues.acked,
        ),
    ];
    for (name, help, value) in families {
        w.family(name, "counter", help);
        // RabbitMQ counts what queues do per queue type too; ringmq's queues are classic.
        let by_queue = name.contains("_delivered_")
            || name.ends_with("_redelivered_total")
            || name.ends_with("_acknowledged_total");
        let labels: &[(&str, &str)] = if by_queue {
            &[
                ("protocol", "amqp091"),
                ("queue_type", "rabbit_classic_queue"),
            ]
        } else {
            &[("protocol", "amqp091")]
        };
        w.sample(name, labels, value as f64);
    }
}

fn shards(w: &mut Writer, snapshot: &StatsSnapshot) {
    let shards = &snapshot.broker.shards;
    let ids: Vec<String> = shards.iter().map(|s| s.shard.to_string()).collect();
    w.family(
        "ringmq_shard_busy_seconds_total",
        "counter",
        "Time the shard's executor spent polling and running tasks (not spinning or parked)",
    );
    for (shard, id) in shards.iter().zip(&ids) {
        w.sample(
            "ringmq_shard_busy_seconds_total",
            &[("shard", id)],
            shard.busy_seconds,
        );
    }
    w.family(
        "ringmq_shard_busy_ratio",
        "gauge",
        "Fraction of wall time the shard was busy since it was last asked for statistics",
    );
    for (shard, id) in shards.iter().zip(&ids) {
        if let Some(fraction) = shard.busy_fraction {
            w.sample("ringmq_shard_busy_ratio", &[("shard", id)], fraction);
        }
    }
    type LinkValue = fn(&super::backend::LinkMetrics) -> u64;
    let link_families: [(&str, &str, &str, LinkValue); 3] = [
        (
            "ringmq_mesh_link_outbox_messages",
            "gauge",
            "Messages waiting in the outbox of the mesh link from shard to peer",
            |l| l.outbox_messages,
        ),
        (
            "ringmq_mesh_link_outbox_bytes",
            "gauge",
            "Bytes waiting in the outbox of the mesh link from shard to peer",
            |l| l.outbox_bytes,
        ),
        (
            "ringmq_mesh_link_stalls_total",
            "counter",
            "Batches that found the mesh link from shard to peer full and waited for room",
            |l| l.stalls,
        ),
    ];
    for (name, kind, help, value) in link_families {
        w.family(name, kind, help);
        for (shard, id) in shards.iter().zip(&ids) {
            for link in &shard.links {
                let peer = link.peer.to_string();
                w.sample(name, &[("shard", id), ("peer", &peer)], value(link) as f64);
            }
        }
    }
}

/// The message logs' failures (ringmq's own: rabbitmq_prometheus has no such series).
fn log_failures(w: &mut Writer, snapshot: &StatsSnapshot) {
    let failures = &snapshot.broker.log_failures;
    let counters: [(&str, &str, u64); 6] = [
        (
            "ringmq_log_write_errors_total",
            "Message log flushes whose write failed (a block, or creating a segment)",
            failures.write_errors,
        ),
        (
            "ringmq_log_fdatasync_errors_total",
            "Message log flushes whose fdatasync failed",
            failures.fdatasync_errors,
        ),
        (
            "ringmq_log_read_errors_total",
            "Message log reads that failed with an I/O error",
            failures.read_errors,
        ),
        (
            "ringmq_log_flush_retries_total",
            "Message log flushes that wrote a failed batch again",
            failures.flush_retries,
        ),
        (
            "ringmq_log_read_retries_total",
            "Paged messages whose read failed and was tried again (they stayed queued)",
            failures.read_retries,
        ),
        (
            "ringmq_log_compaction_failures_total",
            "Copy-forward rounds of the message log stopped by a read error",
            failures.compaction_failures,
        ),
    ];
    for (name, help, value) in counters {
        w.single(name, "counter", help, value as f64);
    }
    w.single(
        "ringmq_log_failing",
        "gauge",
        "1 while a shard's message log is failing (its last flush failed: nothing is confirmed)",
        f64::from(u8::from(failures.failing)),
    );
}

fn histograms(w: &mut Writer, snapshot: &StatsSnapshot) {
    let broker = &snapshot.broker;
    if let Some(latency) = &broker.delivery_latency_ns {
        w.histogram(
            "ringmq_queue_enqueue_to_deliver_seconds",
            "Time from enqueue on the queue's shard to delivery, one sampled message per queue at a time",
            latency,
            NANOS_PER_SECOND,
        );
    }
    if let Some(batch) = &broker.log_batch_bytes {
        w.histogram(
            "ringmq_log_batch_bytes",
            "Bytes written by each group commit of the message log",
            batch,
            1.0,
        );
    }
    if let Some(sync) = &broker.log_fdatasync_ns {
        w.histogram(
            "ringmq_log_fdatasync_seconds",
            "Time of each group commit's fdatasync",
            sync,
            NANOS_PER_SECOND,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::management::backend::BrokerStats;

    fn snapshot() -> StatsSnapshot {
        let mut latency = Histogram::new(1000);
        latency.observe(1500);
        StatsSnapshot {
            queues: vec![
                QueueStats {
                    vhost: "/".into(),
                    name: "a\"b".into(),
                    messages_ready: 3,
                    ..QueueStats::default()
                },
                QueueStats {
                    vhost: "v".into(),
                    name: "c".into(),
                    messages_ready: 4,
                    ..QueueStats::default()
                },
            ],
            channels: vec![ChannelStats {
                connection_name: "1.2.3.4:5 -> 6.7.8.9:5672".into(),
                number: 2,
                vhost: "v".into(),
                consumer_count: 1,
                messages_unconfirmed: 5,
                global_prefetch_count: 10,
                published: vec![("x".into(), 8), (String::new(), 1)],
                ..ChannelStats::default()
            }],
            connections: vec![ConnectionStats {
                name: "1.2.3.4:5 -> 6.7.8.9:5672".into(),
                channels: 1,
                received_bytes: 100,
                sent_bytes: 200,
                ..ConnectionStats::default()
            }],
            broker: BrokerStats {
                delivery_latency_ns: Some(latency),
                ..BrokerStats::default()
            },
            ..StatsSnapshot::default()
        }
    }

    const CHANNEL: &str = "channel=\"1.2.3.4:5 -> 6.7.8.9:5672 (2)\"";
    const CONNECTION: &str = "channel=\"1.2.3.4:5 -> 6.7.8.9:5672\"";

    #[test]
    fn channels_and_connections_summed_or_labelled() {
        let text = render(&snapshot(), &Scope::Aggregated);
        assert!(
            text.contains("\nrabbitmq_channel_messages_unconfirmed 5\n"),
            "{text}"
        );
        assert!(text.contains("\nrabbitmq_connection_incoming_bytes_total 100\n"));
        let text = render(&snapshot(), &Scope::PerObject);
        for sample in [
            format!("rabbitmq_channel_consumers{{{CHANNEL}}} 1\n"),
            format!("rabbitmq_channel_prefetch{{{CHANNEL}}} 10\n"),
            format!("rabbitmq_channel_messages_published_total{{{CHANNEL},vhost=\"v\",exchange=\"x\"}} 8\n"),
            format!("rabbitmq_channel_messages_published_total{{{CHANNEL},vhost=\"v\",exchange=\"\"}} 1\n"),
            format!("rabbitmq_connection_outgoing_bytes_total{{{CONNECTION}}} 200\n"),
            format!("rabbitmq_connection_channels{{{CONNECTION}}} 1\n"),
        ] {
            assert!(text.contains(&sample), "{sample} in {text}");
        }
        assert!(
            !text.contains("\nrabbitmq_channel_messages_published_total "),
            "{text}"
        );
    }

    #[test]
    fn detailed_shows_the_families_asked_for_and_the_vhosts() {
        let detailed =
            Detailed::from_query("family=queue_coarse_metrics&family=channel_metrics&vhost=v");
        let text = render(&snapshot(), &Scope::Detailed(detailed));
        assert!(
            text.contains("rabbitmq_detailed_queue_messages_ready{vhost=\"v\",queue=\"c\"} 4\n"),
            "{text}"
        );
        assert!(
            !text.contains("queue=\"a"),
            "vhost / is filtered out: {text}"
        );
        assert!(text.contains(&format!(
            "rabbitmq_detailed_channel_messages_unconfirmed{{{CHANNEL}}} 5\n"
        )));
        for absent in [
            "rabbitmq_detailed_queue_consumers",
            "connection",
            "rabbitmq_queues",
            "ringmq_",
            "identity",
        ] {
            assert!(!text.contains(absent), "{absent} in {text}");
        }
        let text = render(&snapshot(), &Scope::Detailed(Detailed::default()));
        assert_eq!(text, "", "no family asked for");
    }

    #[test]
    fn log_failures_are_counters_and_failing_a_gauge() {
        let mut snapshot = snapshot();
        snapshot.broker.log_failures = crate::management::backend::LogFailures {
            failing: true,
            write_errors: 3,
            fdatasync_errors: 1,
            read_retries: 7,
            ..Default::default()
        };
        let text = render(&snapshot, &Scope::Aggregated);
        for line in [
            "# TYPE ringmq_log_write_errors_total counter\nringmq_log_write_errors_total 3\n",
            "\nringmq_log_fdatasync_errors_total 1\n",
            "\nringmq_log_read_retries_total 7\n",
            "\nringmq_log_read_errors_total 0\n",
            "# TYPE ringmq_log_failing gauge\nringmq_log_failing 1\n",
        ] {
            assert!(text.contains(line), "{line:?} not in:\n{text}");
        }
    }

    #[test]
    fn aggregated_sums_queues_and_per_object_labels_them() {
        let text = render(&snapshot(), &Scope::Aggregated);
        assert!(
            text.contains("\nrabbitmq_queue_messages_ready 7\n"),
            "{text}"
        );
        let text = render(&snapshot(), &Scope::PerObject);
        assert!(
            text.contains("rabbitmq_queue_messages_ready{vhost=\"/\",queue=\"a\\\"b\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("rabbitmq_queue_messages_ready{vhost=\"v\",queue=\"c\"} 4\n"));
    }

    #[test]
    fn histograms_are_cumulative_in_seconds() {
        let text = render(&snapshot(), &Scope::Aggregated);
        let name = "ringmq_queue_enqueue_to_deliver_seconds";
        assert!(
            text.contains(&format!("{name}_bucket{{le=\"0.000001\"}} 0\n")),
            "{text}"
        );
        assert!(text.contains(&format!("{name}_bucket{{le=\"0.000002\"}} 1\n")));
        assert!(text.contains(&format!("{name}_bucket{{le=\"+Inf\"}} 1\n")));
        assert!(text.contains(&format!("{name}_sum 0.0000015\n")));
        assert!(text.contains(&format!("{name}_count 1\n")));
    }

    #[test]
    fn every_family_has_help_and_type_once() {
        let text = render(&snapshot(), &Scope::PerObject);
        let types: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE ")).collect();
        let mut names: Vec<&str> = types
            .iter()
            .filter_map(|l| l.split_whitespace().nth(2))
            .collect();
        let before = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), before, "a family declared twice");
        let helps = text.lines().filter(|l| l.starts_with("# HELP ")).count();
        assert_eq!(helps, before);
    }
}
