//! The `list_*` verbs and `status`: GET a collection, pick the requested columns, print.

use serde_json::Value;

use super::columns::{extract, Listing};
use super::error::CtlError;
use super::output::{cell_text, Formatter, Table};
use super::Context;

/// `list_queues -p VHOST name messages ...` and its siblings.
pub fn list(
    cx: &Context,
    listing: &Listing,
    vhost: &str,
    columns: &[String],
) -> Result<String, CtlError> {
    let selected = listing.select(columns)?;
    let what = format!("vhost '{vhost}'");
    let items = match cx.client.get(&listing.path(vhost), &what)? {
        Value::Array(items) => items,
        other => {
            return Err(CtlError::Other(format!(
                "expected a list of {} from the broker, got {other}",
                listing.noun
            )))
        }
    };
    let table = Table {
        columns: selected.iter().map(|(name, _)| name.clone()).collect(),
        rows: items
            .iter()
            .map(|item| {
                selected
                    .iter()
                    .map(|(_, field)| extract(item, *field))
                    .collect()
            })
            .collect(),
    };
    let banner = if listing.vhost_scoped {
        format!("Listing {} for vhost {vhost} ...", listing.noun)
    } else {
        format!("Listing {} ...", listing.noun)
    };
    let mut out = cx.info(&banner);
    out.push_str(&table.render(cx.formatter, cx.header));
    Ok(out)
}

/// `status`: the overview; json prints it whole, a table a few lines an operator reads first.
/// rabbitmqctl's `cluster_status`: the cluster's name, its (disc) nodes, the running ones.
pub fn cluster_status(cx: &Context) -> Result<String, CtlError> {
    let overview = cx.client.get("/overview", "the overview")?;
    let nodes = cx.client.get("/nodes", "the nodes")?;
    let text =
        |value: &Value, pointer: &str| cell_text(value.pointer(pointer).unwrap_or(&Value::Null));
    let listed = nodes.as_array().cloned().unwrap_or_default();
    let names = |running_only: bool| -> Vec<String> {
        listed
            .iter()
            .filter(|n| !running_only || n["running"].as_bool().unwrap_or(false))
            .map(|n| text(n, "/name"))
            .collect()
    };
    let (disk_nodes, running_nodes) = (names(false), names(true));
    let cluster_name = text(&overview, "/cluster_name");
    if cx.formatter == Formatter::Json {
        let json = serde_json::json!({
            "cluster_name": cluster_name,
            "disk_nodes": disk_nodes,
            "running_nodes": running_nodes,
        });
        return Ok(format!("{json}\n"));
    }
    let mut out = cx.info(&format!(
        "Cluster status of node {} ...",
        text(&overview, "/node")
    ));
    out.push_str(&format!(
        "Basics\n\nCluster name: {cluster_name}\n\nDisk Nodes\n\n"
    ));
    for name in &disk_nodes {
        out.push_str(&format!("{name}\n"));
    }
    out.push_str("\nRunning Nodes\n\n");
    for name in &running_nodes {
        out.push_str(&format!("{name}\n"));
    }
    Ok(out)
}

pub fn status(cx: &Context) -> Result<String, CtlError> {
    let overview = cx.client.get("/overview", "the overview")?;
    if cx.formatter == Formatter::Json {
        return Ok(format!("{overview}\n"));
    }
    let text = |pointer: &str| cell_text(overview.pointer(pointer).unwrap_or(&Value::Null));
    let mut out = cx.info(&format!("Status of node {} ...", text("/node")));
    let lines = [
        ("Product name", text("/product_name")),
        ("Product version", text("/product_version")),
        ("RabbitMQ version", text("/rabbitmq_version")),
        ("Node", text("/node")),
        ("Cluster name", text("/cluster_name")),
        ("Connections", text("/object_totals/connections")),
        ("Channels", text("/object_totals/channels")),
        ("Exchanges", text("/object_totals/exchanges")),
        ("Queues", text("/object_totals/queues")),
        ("Consumers", text("/object_totals/consumers")),
        ("Messages ready", text("/queue_totals/messages_ready")),
        (
            "Messages unacknowledged",
            text("/queue_totals/messages_unacknowledged"),
        ),
    ];
    for (label, value) in lines {
        out.push_str(&format!("{label}: {value}\n"));
    }
    Ok(out)
}
