//! `/api/vhost-limits`: RabbitMQ's vhost limits (`max-connections`, `max-queues`), as its
//! management plugin's `rabbit_mgmt_wm_limits` (list) and `rabbit_mgmt_wm_limit` (one limit).
//! The limits live with the vhost in the replicated topology (and its log); the session and
//! queue declaration enforce them.

use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::api::{Api, Context, Response};
use super::backend::Operation;
use super::routes::{apply, body_object, require_keys, Reply};
use crate::broker::{AccessOp, VhostLimitName, VhostLimits};

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
    for name in [VhostLimitName::MaxConnections, VhostLimitName::MaxQueues] {
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
