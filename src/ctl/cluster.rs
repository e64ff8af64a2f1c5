//! rabbitmqctl's `join_cluster` and `forget_cluster_node`, over ringmq's own routes (RabbitMQ
//! 3.10's API has none): `POST /api/ringmq/cluster/join` on the node that joins (fresh, started
//! with `--node-name` and `--cluster-secret`), `DELETE /api/ringmq/cluster/nodes/NODE` on a
//! member.

use serde_json::json;

use super::client::segment;
use super::error::CtlError;
use super::Context;

/// `NAME=HOST:PORT`: the member to ask, and its cluster port's address (ringmq nodes do not
/// find each other by name, as `--peer` says).
pub fn parse_member(text: &str) -> Result<(&str, &str), CtlError> {
    match text.split_once('=') {
        Some((name, address)) if !name.is_empty() && address.contains(':') => Ok((name, address)),
        _ => Err(CtlError::Usage(format!(
            "the member to join is NAME=HOST:PORT (its cluster port), such as \
             ringmq@a=10.0.0.1:25672, not '{text}'"
        ))),
    }
}

pub fn join_cluster(cx: &Context, member: &str) -> Result<String, CtlError> {
    let (node, address) = parse_member(member)?;
    let out = cx.info(&format!("Clustering this node with {node}..."));
    let body = json!({"node": node, "address": address}).to_string();
    cx.client
        .post("/ringmq/cluster/join", body, &format!("node {node}"))?;
    Ok(out)
}

pub fn forget_cluster_node(cx: &Context, node: &str) -> Result<String, CtlError> {
    let out = cx.info(&format!("Removing node {node} from the cluster"));
    let path = format!("/ringmq/cluster/nodes/{}", segment(node));
    cx.client.delete(&path, &format!("node {node}"))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_member_is_a_name_and_an_address() {
        assert_eq!(
            parse_member("ringmq@a=10.0.0.1:25672").ok(),
            Some(("ringmq@a", "10.0.0.1:25672"))
        );
        assert!(parse_member("ringmq@a").is_err());
        assert!(parse_member("=10.0.0.1:25672").is_err());
        assert!(parse_member("ringmq@a=10.0.0.1").is_err());
    }
}
