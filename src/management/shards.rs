//! `GET /api/ringmq/shards`: what each shard (one executor, one core) is doing, for the UI's
//! Shards page and for operators' scripts. ringmq's own endpoint: RabbitMQ has no shards.
//!
//! Every figure is one the shards already keep for Prometheus (`shard::probe`, the log's
//! histograms, the queues' depths), read from the same stats snapshot the other endpoints use:
//! nothing here adds work to the data path. Histograms are cumulative since the shard started
//! and come with their buckets, so a reader that polls can take the difference of two readings
//! for a live window (the UI does).

use serde_json::{json, Value};

use super::api::{Api, Context, Response};
use super::backend::ShardMetrics;
use super::routes::Reply;
use crate::metrics::Histogram;

/// What is not measured without a cost on the data path, said where the numbers are shown.
pub const PUBLISH_TO_DELIVER_NOTE: &str = "publish-to-deliver percentiles are measured only \
with --trace-latency (a clock read per sampled message at each stage, reported in the log at \
shutdown); always on they would cost the publish path a clock read per message, so this page \
shows enqueue-to-deliver instead (one sampled message per queue at a time)";

pub async fn shards(api: &Api, cx: &Context) -> Reply {
    cx.require_monitor()?;
    let (stats, _) = api.stats().await;
    let shards: Vec<Value> = stats.broker.shards.iter().map(shard_json).collect();
    Ok(Response::json(
        200,
        &json!({
            "node": stats.node.name,
            "shards": shards,
            "publish_to_deliver": Value::Null,
            "publish_to_deliver_note": PUBLISH_TO_DELIVER_NOTE,
        }),
    ))
}

fn shard_json(shard: &ShardMetrics) -> Value {
    let links: Vec<Value> = shard
        .links
        .iter()
        .map(|link| {
            json!({
                "peer": link.peer,
                "outbox_messages": link.outbox_messages,
                "outbox_bytes": link.outbox_bytes,
                "stalls": link.stalls,
            })
        })
        .collect();
    json!({
        "shard": shard.shard,
        "busy_seconds": shard.busy_seconds,
        "busy_fraction": shard.busy_fraction,
        "connections": shard.connections,
        "queues": shard.queues,
        "messages_ready": shard.messages_ready,
        "messages_unacknowledged": shard.messages_unacknowledged,
        "links": links,
        "enqueue_to_deliver_ns": shard.delivery_latency_ns.as_ref().map(histogram_json),
        "log_batch_bytes": shard.log_batch_bytes.as_ref().map(histogram_json),
        "log_fdatasync_ns": shard.log_fdatasync_ns.as_ref().map(histogram_json),
    })
}

/// Count, sum, p50/p99/p99.9 (bucket upper bounds; null past the last bucket) and the
/// cumulative buckets `[upper bound, observations at or below it]`.
pub fn histogram_json(histogram: &Histogram) -> Value {
    let buckets: Vec<[u64; 2]> = histogram
        .cumulative()
        .map(|(bound, count)| [bound, count])
        .collect();
    json!({
        "count": histogram.count(),
        "sum": histogram.sum(),
        "p50": histogram.quantile_upper_bound(0.5),
        "p99": histogram.quantile_upper_bound(0.99),
        "p999": histogram.quantile_upper_bound(0.999),
        "buckets": buckets,
    })
}
