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
