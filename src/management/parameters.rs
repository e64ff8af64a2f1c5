//! `/api/parameters` (component "shovel", RabbitMQ's `rabbitmq_shovel` parameters) and
//! `/api/shovels` (`rabbitmq_shovel_management`'s status objects) as RabbitMQ 3.10.8 answers
//! them, and the parameter JSON definitions share.
//!
//! Who may do what: reading, setting or clearing a parameter takes the administrator tag, or
//! policymaker with access to the vhost (401 `User not authorised to access object`), as
//! RabbitMQ's `is_authorized_policies`; listings show the vhosts the caller sees. Shovel status
//! takes the monitoring (or administrator) tag (`is_authorized_monitor`, 401 `Not monitor
//! user`) and shows the shovels of the vhosts the caller has permissions in, as
//! `rabbit_shovel_mgmt`'s `filter_vhost_user`.

use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::api::{list_response, Api, Context, Response};
use super::backend::{Operation, ShovelState, ShovelStatus};
use super::listing::reply_list;
use super::routes::{apply, body_object, require_keys, Reply};
use crate::broker::{Parameter, ParameterOp, SHOVEL_COMPONENT};

const ALLOW_OBJECT: &str = "HEAD, GET, PUT, DELETE, OPTIONS";

/// GET `/api/parameters[/component[/vhost]]`.
pub fn list(cx: &Context, component: Option<&str>, only: Option<&str>) -> Reply {
    if let Some(vhost) = only {
        if !cx.topology.vhost_exists(vhost) {
            return Err(Response::not_found());
        }
    }
    if !cx.caller.is_policymaker() {
        return Err(Response::not_authorised(
            "User not authorised to access object",
        ));
    }
    let items: Vec<Value> = cx
        .topology
        .all_parameters()
        .filter(|p| component.is_none_or(|c| p.component == c))
        .filter(|p| only.is_none_or(|v| p.vhost == v))
        .filter(|p| cx.visible_vhost(&p.vhost))
        .map(parameter_json)
        .collect();
    Ok(list_response(reply_list(items, &cx.query, &[])))
}

/// GET, PUT, DELETE `/api/parameters/component/vhost/name`.
pub async fn object(
    api: &Api,
    cx: &Context,
    method: &str,
    (component, vhost, name): (&str, &str, &str),
    body: &Bytes,
) -> Reply {
    cx.require_policymaker_in(vhost)?;
    let existing = cx.topology.parameter(component, vhost, name);
    match method {
        "GET" | "HEAD" => {
            let parameter = existing.ok_or_else(Response::not_found)?;
            Ok(Response::json(200, &parameter_json(parameter)))
        }
        "PUT" => {
            if !cx.topology.vhost_exists(vhost) {
                return Err(Response::error(404, "not_found", "vhost_not_found"));
            }
            let body = body_object(body)?;
            let parameter = parameter_from_json(component, vhost, name, &body)?;
            apply(api, Operation::Parameter(ParameterOp::Set(parameter))).await?;
            Ok(Response::empty(if existing.is_some() { 204 } else { 201 }))
        }
        "DELETE" => {
            existing.ok_or_else(Response::not_found)?;
            let op = ParameterOp::Clear {
                component: component.to_string(),
                vhost: vhost.to_string(),
                name: name.to_string(),
            };
            apply(api, Operation::Parameter(op)).await?;
            Ok(Response::empty(204))
        }
        _ => Err(Response::method_not_allowed(ALLOW_OBJECT)),
    }
}

/// A PUT body (`{"value": {...}}`) or a definitions item as a validated parameter; a refusal
/// is RabbitMQ's 400 with its text (HTML-escaped, as the management plugin sends it).
pub fn parameter_from_json(
    component: &str,
    vhost: &str,
    name: &str,
    body: &Map<String, Value>,
) -> Result<Parameter, Response> {
    if component != SHOVEL_COMPONENT {
        return Err(validation_failed(&[format!(
            "component {component} not found"
        )]));
    }
    require_keys(body, &["value"])?;
    let value = body.get("value").cloned().unwrap_or(Value::Null);
    crate::shovel::definition::validate(name, &value).map_err(|lines| validation_failed(&lines))?;
    Ok(Parameter {
        component: component.to_string(),
        vhost: vhost.to_string(),
        name: name.to_string(),
        value: value.to_string(),
    })
}

fn validation_failed(lines: &[String]) -> Response {
    let mut text = String::from("Validation failed\n\n");
    for line in lines {
        text.push_str(line);
        text.push('\n');
    }
    Response::bad_request(&super::policies::escape_html(&text))
}

/// RabbitMQ's parameter object (also the `parameters` items of a definitions export).
pub fn parameter_json(parameter: &Parameter) -> Value {
    let value: Value = serde_json::from_str(&parameter.value).unwrap_or(Value::Null);
    json!({
        "value": value,
        "vhost": parameter.vhost,
        "component": parameter.component,
        "name": parameter.name,
    })
}

/// GET `/api/shovels[/vhost]`.
pub async fn shovels(api: &Api, cx: &Context, only: Option<&str>) -> Reply {
    cx.require_monitor()?;
    if let Some(vhost) = only {
        if !cx.topology.vhost_exists(vhost) {
            return Err(Response::not_found());
        }
    }
    let node = api.stats().await.0.node.name.clone();
    let items: Vec<Value> = api
        .backend
        .shovels()
        .await
        .iter()
        .filter(|s| only.is_none_or(|v| s.vhost == v))
        .filter(|s| shows_shovels_of(cx, &s.vhost))
        .map(|s| shovel_json(s, &node))
        .collect();
    Ok(list_response(reply_list(items, &cx.query, &[])))
}

/// GET `/api/shovels/vhost/VHOST/NAME`: one status object.
pub async fn shovel(api: &Api, cx: &Context, vhost: &str, name: &str) -> Reply {
    cx.require_monitor()?;
    if !shows_shovels_of(cx, vhost) {
        return Err(Response::not_found());
    }
    let node = api.stats().await.0.node.name.clone();
    let statuses = api.backend.shovels().await;
    let status = statuses
        .iter()
        .find(|s| s.vhost == vhost && s.name == name)
        .ok_or_else(Response::not_found)?;
    Ok(Response::json(200, &shovel_json(status, &node)))
}

/// A dynamic shovel is listed to users who may log in to its vhost (administrators included).
fn shows_shovels_of(cx: &Context, vhost: &str) -> bool {
    cx.topology.can_access_vhost(&cx.caller.name, vhost)
}

/// RabbitMQ's status object: ends only while running, the reason once terminated. URIs are
/// shown without their credentials.
pub fn shovel_json(status: &ShovelStatus, node: &str) -> Value {
    let mut item = json!({
        "node": node,
        "timestamp": status.timestamp(),
        "name": status.name,
        "vhost": status.vhost,
        "type": "dynamic",
        "state": status.state.as_str(),
    });
    match status.state {
        ShovelState::Starting => {}
        ShovelState::Terminated => {
            item["reason"] = json!(status.reason.clone().unwrap_or_default());
        }
        ShovelState::Running => {
            item["src_uri"] = json!(crate::shovel::uri::without_credentials(&status.src_uri));
            item["src_protocol"] = json!("amqp091");
            item["dest_protocol"] = json!("amqp091");
            item["dest_uri"] = json!(crate::shovel::uri::without_credentials(&status.dest_uri));
            let optional = [
                ("src_queue", &status.src_queue),
                ("src_exchange", &status.src_exchange),
                ("src_exchange_key", &status.src_exchange_key),
                ("dest_queue", &status.dest_queue),
                ("dest_exchange", &status.dest_exchange),
                ("dest_exchange_key", &status.dest_exchange_key),
            ];
            for (key, value) in optional {
                if let Some(value) = value {
                    item[key] = json!(value);
                }
            }
        }
    }
    item
}
