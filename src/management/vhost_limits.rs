//! `/api/vhost-limits`: RabbitMQ's vhost limits (`max-connections`, `max-queues`), as its
//! management plugin's `rabbit_mgmt_wm_limits` (list) and `rabbit_mgmt_wm_limit` (one limit).
//! The limits live with the vhost in the replicated topology (and its log); the session and
//! queue declaration enforce them. Definitions carry them as RabbitMQ exports them: a
//! `parameters` item of component `vhost-limits`, name `limits`, whose value holds every limit
//! the vhost has.

use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::api::{Api, Context, Response};
use super::backend::Operation;
use super::routes::{apply, body_object, require_keys, Reply};
use crate::broker::{AccessOp, Topology, VhostLimitName, VhostLimits};

/// The runtime-parameter component RabbitMQ keeps vhost limits under, and the one name it
/// gives them there.
pub const COMPONENT: &str = "vhost-limits";
const PARAMETER_NAME: &str = "limits";

const LIMIT_NAMES: [VhostLimitName; 2] =
    [VhostLimitName::MaxConnections, VhostLimitName::MaxQueues];

const ALLOW_PUT_DELETE: &str = "PUT, DELETE, OPTIONS";

/// `GET /api/vhost-limits[/{vhost}]`: the vhosts (visible to the caller) with any limit set.
pub fn list(cx: &Context, only: Option<&str>) -> Reply {
    if let Some(vhost) = only {
        cx.require_vhost(vhost)?;
    }
    let items: Vec<Value> = cx
        .topology
        .vhosts_with_limits()
        .into_iter()
        .filter(|(vhost, _)| only.is_none_or(|o| o == *vhost) && cx.visible_vhost(vhost))
        .map(|(vhost, limits)| json!({"vhost": vhost, "value": limits_json(&limits)}))
        .collect();
    Ok(Response::json(200, &Value::Array(items)))
}

fn limits_json(limits: &VhostLimits) -> Value {
    let mut value = Map::new();
    for name in LIMIT_NAMES {
        if let Some(n) = limits.get(name) {
            value.insert(name.as_str().to_string(), json!(n));
        }
    }
    Value::Object(value)
}

/// `PUT` (`{"value": N}`) and `DELETE /api/vhost-limits/{vhost}/{name}`: administrators only.
pub async fn one(
    api: &Api,
    cx: &Context,
    method: &str,
    (vhost, name): (&str, &str),
    body: &Bytes,
) -> Reply {
    cx.require_administrator()?;
    cx.require_vhost(vhost)?;
    let value = match method {
        "PUT" => {
            let body = body_object(body)?;
            require_keys(&body, &["value"])?;
            let value = body.get("value").and_then(integer).ok_or_else(|| {
                Response::bad_request(&format!("Validation failed\n\n{name} should be a number\n"))
            })?;
            Some(value)
        }
        "DELETE" => None,
        _ => return Err(Response::method_not_allowed(ALLOW_PUT_DELETE)),
    };
    let Some(limit) = VhostLimitName::parse(name) else {
        return Err(Response::bad_request(&format!(
            "Validation failed\n\nUnrecognised terms [{{<<\"{name}\">>,{}}}] in limits\n",
            value.unwrap_or(0)
        )));
    };
    let operation = Operation::Access(AccessOp::SetVhostLimit {
        vhost: vhost.to_string(),
        name: limit,
        value,
    });
    apply(api, operation).await?;
    Ok(Response::empty(204))
}

/// A JSON integer, or a string holding one (RabbitMQ's decoder takes both).
fn integer(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Definitions export: one `parameters` item per vhost of `vhosts` that has a limit (with its
/// `vhost` key only when `with_vhost`, as the other items of a per-vhost export).
pub fn definitions_items(topology: &Topology, vhosts: &[&str], with_vhost: bool) -> Vec<Value> {
    topology
        .vhosts_with_limits()
        .into_iter()
        .filter(|(vhost, _)| vhosts.contains(vhost))
        .map(|(vhost, limits)| {
            let mut item = json!({
                "value": limits_json(&limits),
                "component": COMPONENT,
                "name": PARAMETER_NAME,
            });
            if with_vhost {
                item["vhost"] = json!(vhost);
            }
            item
        })
        .collect()
}

/// Definitions import: a `vhost-limits` item's value as one operation per limit it names (a
/// limit it leaves out is left as it is). Refused with RabbitMQ's validation texts.
pub fn import_item(vhost: &str, value: &Value) -> Result<Vec<Operation>, String> {
    let Value::Object(limits) = value else {
        return Err(format!(
            "Validation failed\n\nvalue should be a JSON object, actually was {value}\n"
        ));
    };
    let mut operations = Vec::with_capacity(limits.len());
    for (key, limit) in limits {
        let Some(name) = VhostLimitName::parse(key) else {
            return Err(format!(
                "Validation failed\n\nUnrecognised terms [{{<<\"{key}\">>,{limit}}}] in limits\n"
            ));
        };
        let Some(n) = integer(limit) else {
            return Err(format!(
                "Validation failed\n\n{key} should be a number, actually was {limit}\n"
            ));
        };
        operations.push(Operation::Access(AccessOp::SetVhostLimit {
            vhost: vhost.to_string(),
            name,
            value: Some(n),
        }));
    }
    Ok(operations)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_item_round_trip() {
        let ops = import_item("/", &json!({"max-connections": 7, "max-queues": "3"}))
            .expect("valid limits");
        let mut topology = Topology::new_default();
        for op in &ops {
            let Operation::Access(op) = op else {
                panic!("not an access operation")
            };
            let plan = crate::broker::check_access_op(&topology, op).expect("applies");
            for change in &plan.changes {
                topology.apply(change);
            }
        }
        let items = definitions_items(&topology, &["/"], true);
        assert_eq!(
            items,
            vec![json!({"value": {"max-connections": 7, "max-queues": 3},
                        "vhost": "/", "component": "vhost-limits", "name": "limits"})]
        );
        assert!(definitions_items(&topology, &["other"], true).is_empty());
        let refused = import_item("/", &json!({"max-channels": 1})).expect_err("unknown");
        assert!(refused.contains("Unrecognised terms"), "{refused}");
        let refused = import_item("/", &json!({"max-queues": "many"})).expect_err("not a number");
        assert!(refused.contains("should be a number"), "{refused}");
    }
}
