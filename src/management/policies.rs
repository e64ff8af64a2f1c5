//! `/api/policies` and `/api/operator-policies` as RabbitMQ 3.10.8 answers them, and the
//! policy JSON shared with definitions.
//!
//! Who may do what (checked against RabbitMQ): every management user lists the policies of
//! the vhosts it sees; reading, setting or clearing one policy takes the administrator tag,
//! or policymaker with access to the vhost (401 `User not authorised to access object`);
//! operator policies are set, read and cleared by administrators only (401 `Not
//! administrator user`).

use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::api::{list_response, Api, Context, Response};
use super::backend::Operation;
use super::listing::reply_list;
use super::routes::{apply, body_object, require_keys, Reply};
use crate::broker::{Policy, PolicyKind, PolicyOp, PolicyRequest, PolicyValue};

const ALLOW_OBJECT: &str = "HEAD, GET, PUT, DELETE, OPTIONS";

/// GET `/api/policies[/vhost]` (or operator policies): sorted by priority, lowest first, as
/// RabbitMQ's `sort_by_priority`.
pub fn list(cx: &Context, kind: PolicyKind, only: Option<&str>) -> Reply {
    if let Some(vhost) = only {
        if !cx.topology.vhost_exists(vhost) {
            return Err(Response::not_found());
        }
        if !cx.visible_vhost(vhost) {
            return Err(Response::not_authorised(
                "User not authorised to access virtual host",
            ));
        }
    }
    let mut policies: Vec<&Policy> = cx
        .topology
        .all_policies()
        .filter(|p| p.kind == kind && only.is_none_or(|v| p.vhost == v))
        .filter(|p| cx.visible_vhost(&p.vhost))
        .collect();
    policies.sort_by(|a, b| (a.priority, &a.vhost, &a.name).cmp(&(b.priority, &b.vhost, &b.name)));
    let items: Vec<Value> = policies.into_iter().map(policy_json).collect();
    // Already in RabbitMQ's order: no default sort key.
    Ok(list_response(reply_list(items, &cx.query, &[])))
}

/// GET, PUT, DELETE `/api/policies/vhost/name` (or operator policies).
pub async fn object(
    api: &Api,
    cx: &Context,
    method: &str,
    kind: PolicyKind,
    vhost: &str,
    name: &str,
    body: &Bytes,
) -> Reply {
    authorize(cx, kind, vhost)?;
    let existing = cx.topology.policy(kind, vhost, name);
    match method {
        "GET" | "HEAD" => {
            let policy = existing.ok_or_else(Response::not_found)?;
            Ok(Response::json(200, &policy_json(policy)))
        }
        "PUT" => {
            if !cx.topology.vhost_exists(vhost) {
                return Err(Response::error(404, "not_found", "vhost_not_found"));
            }
            let body = body_object(body)?;
            let policy = policy_from_json(kind, vhost, name, &body)?;
            apply(api, Operation::Policy(PolicyOp::Set(policy))).await?;
            Ok(Response::empty(if existing.is_some() { 204 } else { 201 }))
        }
        "DELETE" => {
            existing.ok_or_else(Response::not_found)?;
            let op = PolicyOp::Clear {
                kind,
                vhost: vhost.to_string(),
                name: name.to_string(),
            };
            apply(api, Operation::Policy(op)).await?;
            Ok(Response::empty(204))
        }
        _ => Err(Response::method_not_allowed(ALLOW_OBJECT)),
    }
}

fn authorize(cx: &Context, kind: PolicyKind, vhost: &str) -> Result<(), Response> {
    match kind {
        PolicyKind::Operator => cx.require_administrator(),
        PolicyKind::Policy => cx.require_policymaker_in(vhost),
    }
}

/// A PUT body (`pattern`, `definition`, optional `priority` and `apply-to`) as a validated
/// policy; a refusal is RabbitMQ's 400 with its text (HTML-escaped for policies, as the
/// management plugin escapes them; operator policy texts come back unescaped).
pub fn policy_from_json(
    kind: PolicyKind,
    vhost: &str,
    name: &str,
    body: &Map<String, Value>,
) -> Result<Policy, Response> {
    require_keys(body, &["pattern", "definition"])?;
    let definition = match body.get("definition") {
        Some(Value::Object(map)) => map
            .iter()
            .map(|(key, value)| (key.clone(), policy_value(value)))
            .collect(),
        other => {
            let shown = other.map_or_else(String::new, Value::to_string);
            return Err(refusal(
                kind,
                &format!("Validation failed\n\ndefinition must be a dictionary: {shown}\n"),
            ));
        }
    };
    let request = PolicyRequest {
        kind,
        vhost: vhost.to_string(),
        name: name.to_string(),
        pattern: body
            .get("pattern")
            .map_or(PolicyValue::Other("undefined".into()), policy_value),
        apply_to: body.get("apply-to").map(policy_value),
        priority: body.get("priority").map(policy_value),
        definition,
    };
    Policy::validate(request).map_err(|invalid| refusal(kind, &invalid.to_string()))
}

fn refusal(kind: PolicyKind, text: &str) -> Response {
    match kind {
        PolicyKind::Policy => Response::bad_request(&escape_html(text)),
        PolicyKind::Operator => Response::bad_request(text),
    }
}

pub(super) fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A JSON value as a definition value; kinds no key accepts keep Erlang's rendering of them
/// for the refusal text.
fn policy_value(value: &Value) -> PolicyValue {
    match value {
        Value::String(text) => PolicyValue::Text(text.clone()),
        Value::Number(n) => match n.as_i64() {
            Some(n) => PolicyValue::Integer(n),
            None => PolicyValue::Other(n.to_string()),
        },
        Value::Null => PolicyValue::Other("null".into()),
        Value::Bool(b) => PolicyValue::Other(b.to_string()),
        Value::Array(items) => {
            let texts: Option<Vec<String>> = items
                .iter()
                .map(|item| item.as_str().map(str::to_string))
                .collect();
            texts.map_or_else(|| PolicyValue::Other(value.to_string()), PolicyValue::List)
        }
        other => PolicyValue::Other(other.to_string()),
    }
}

pub fn definition_json(definition: &crate::broker::policy::PolicyDefinition) -> Value {
    let map: Map<String, Value> = definition
        .iter()
        .map(|(key, value)| {
            let value = match value {
                PolicyValue::Integer(n) => json!(n),
                PolicyValue::Text(t) | PolicyValue::Other(t) => json!(t),
                PolicyValue::List(items) => json!(items),
            };
            (key.clone(), value)
        })
        .collect();
    Value::Object(map)
}

/// RabbitMQ's policy object (also the `policies` items of a definitions export).
pub fn policy_json(policy: &Policy) -> Value {
    json!({
        "vhost": policy.vhost,
        "name": policy.name,
        "pattern": policy.pattern,
        "apply-to": policy.apply_to.as_str(),
        "definition": definition_json(&policy.definition),
        "priority": policy.priority,
    })
}
