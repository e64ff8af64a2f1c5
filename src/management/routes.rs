//! The path table and the handlers of RabbitMQ's management endpoints.
//!
//! Every handler returns `Result<Response, Response>`: `Err` is an early refusal (401, 404,
//! 400) so checks read top to bottom with `?`.

use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::api::{list_response, Api, Context, Response};
use super::backend::{GetAckMode, NodeStats, Operation, Publish, QueueGet, StatsSnapshot};
use super::json::{
    decode_payload, json_to_properties, json_to_table, loose_bool, loose_integer, payload_to_json,
    properties_to_json, rate,
};
use super::listing::{reply_list, select_columns_one};
use super::objects::{self, exchange_from_path, View, RABBITMQ_VERSION};
use super::policies;
use crate::auth::{
    HashingAlgorithm, Operation as AccessOperation, PasswordHash, Permission, ResourceKind,
    TopicPermission,
};
use crate::broker::{AccessOp, Binding, Destination, PolicyKind, User};
use crate::limits::MANAGEMENT_GET_COUNT_MAX;

pub type Reply = Result<Response, Response>;

const ALLOW_READ: &str = "HEAD, GET, OPTIONS";
const ALLOW_OBJECT: &str = "HEAD, GET, PUT, DELETE, OPTIONS";
const ALLOW_POST: &str = "POST, OPTIONS";
const ALLOW_BINDINGS: &str = "HEAD, GET, POST, OPTIONS";
const ALLOW_BINDING: &str = "HEAD, GET, DELETE, OPTIONS";
const ALLOW_DELETE: &str = "DELETE, OPTIONS";
const ALLOW_MEMBER: &str = "PUT, DELETE, OPTIONS";
const ALLOW_JOIN: &str = "POST, OPTIONS";

fn is_read(method: &str) -> bool {
    method == "GET" || method == "HEAD"
}

pub async fn route(api: &Api, cx: &Context, method: &str, path: &[&str], body: &Bytes) -> Reply {
    let read = is_read(method);
    match (path, method) {
        (["overview"], _) if read => overview(api, cx).await,
        (["ringmq", "shards"], _) if read => super::shards::shards(api, cx).await,
        (["ringmq", "shards"], _) => Err(Response::method_not_allowed(ALLOW_READ)),
        (["ringmq", "queues", vhost, name, "members", node], "PUT" | "DELETE") => {
            quorum_member(api, cx, method == "PUT", [vhost, name, node]).await
        }
        (["ringmq", "queues", _, _, "members", _], _) => {
            Err(Response::method_not_allowed(ALLOW_MEMBER))
        }
        (["ringmq", "cluster", "join"], "POST") => join_cluster(api, cx, body).await,
        (["ringmq", "cluster", "join"], _) => Err(Response::method_not_allowed(ALLOW_JOIN)),
        (["ringmq", "cluster", "nodes", node], "DELETE") => {
            cx.require_administrator()?;
            let node = node.to_string();
            apply(api, Operation::ForgetClusterNode { node }).await?;
            Ok(Response::empty(204))
        }
        (["ringmq", "cluster", "nodes", _], _) => Err(Response::method_not_allowed(ALLOW_DELETE)),
        (["overview"], _) => Err(Response::method_not_allowed(ALLOW_READ)),
        (["cluster-name"], _) if read => {
            Ok(Response::json(200, &json!({"name": api_node(api).await})))
        }
        (["whoami"], _) if read => Ok(Response::json(
            200,
            &json!({"name": cx.caller.name, "tags": cx.caller.tags}),
        )),
        (["nodes"], _) if read => nodes(api, cx, None).await,
        (["nodes", name], _) if read => nodes(api, cx, Some(name)).await,
        (["extensions"], _) if read => Ok(Response::json(200, &json!([]))),
        (["vhosts"], _) if read => vhosts(api, cx).await,
        (["vhosts"], _) => Err(Response::method_not_allowed(ALLOW_READ)),
        (["vhosts", name], _) => vhost(api, cx, method, name).await,
        (["vhost-limits"], _) if read => super::vhost_limits::list(cx, None),
        (["vhost-limits", vhost], _) if read => super::vhost_limits::list(cx, Some(vhost)),
        (["vhost-limits", vhost, name], _) => {
            super::vhost_limits::one(api, cx, method, (vhost, name), body).await
        }
        (["vhosts", vhost, "permissions"], _) if read => permissions_list(cx, |_, v| v == *vhost),
        (["vhosts", vhost, "topic-permissions"], _) if read => {
            topic_permissions_list(cx, |_, v| v == *vhost)
        }
        (["vhosts", vhost, "connections"], _) if read => connections(api, cx, Some(vhost)).await,
        (["vhosts", vhost, "channels"], _) if read => channels(api, cx, Some(vhost), None).await,
        (["users"], _) if read => users(cx),
        (["users"], _) => Err(Response::method_not_allowed(ALLOW_READ)),
        (["users", name], _) => user(api, cx, method, name, body).await,
        (["users", name, "permissions"], _) if read => permissions_list(cx, |u, _| u == *name),
        (["users", name, "topic-permissions"], _) if read => {
            topic_permissions_list(cx, |u, _| u == *name)
        }
        (["permissions"], _) if read => permissions_list(cx, |_, _| true),
        (["permissions", vhost, name], _) => permission(api, cx, method, vhost, name, body).await,
        (["topic-permissions"], _) if read => topic_permissions_list(cx, |_, _| true),
        (["topic-permissions", vhost, name], _) => {
            topic_permission(api, cx, method, vhost, name, body).await
        }
        (["exchanges"], _) if read => exchanges(api, cx, None).await,
        (["exchanges", vhost], _) if read => exchanges(api, cx, Some(vhost)).await,
        (["exchanges", vhost, name], _) => {
            exchange(api, cx, method, vhost, exchange_from_path(name), body).await
        }
        (["exchanges", vhost, name, "publish"], "POST") => {
            publish(api, cx, vhost, exchange_from_path(name), body).await
        }
        (["exchanges", _, _, "publish"], _) => Err(Response::method_not_allowed(ALLOW_POST)),
        (["exchanges", vhost, name, "bindings", side], _) if read => {
            exchange_bindings(api, cx, vhost, exchange_from_path(name), side).await
        }
        (["queues"], _) if read => queues(api, cx, None).await,
        (["queues", vhost], _) if read => queues(api, cx, Some(vhost)).await,
        (["queues", vhost, name], _) => queue(api, cx, method, vhost, name, body).await,
        (["queues", vhost, name, "get"], "POST") => queue_get(api, cx, vhost, name, body).await,
        (["queues", _, _, "get"], _) => Err(Response::method_not_allowed(ALLOW_POST)),
        (["queues", vhost, name, "contents"], "DELETE") => queue_purge(api, cx, vhost, name).await,
        (["queues", _, _, "contents"], _) => Err(Response::method_not_allowed(ALLOW_DELETE)),
        (["queues", vhost, name, "bindings"], _) if read => {
            queue_bindings(api, cx, vhost, name).await
        }
        (["bindings"], _) if read => bindings(api, cx, None).await,
        (["bindings", vhost], _) if read => bindings(api, cx, Some(vhost)).await,
        (["bindings", vhost, "e", source, kind @ ("q" | "e"), destination], _) => {
            let destination = destination_of(kind, destination);
            bindings_between(
                api,
                cx,
                method,
                vhost,
                exchange_from_path(source),
                destination,
                body,
            )
            .await
        }
        (["bindings", vhost, "e", source, kind @ ("q" | "e"), destination, props], _) => {
            let destination = destination_of(kind, destination);
            binding(
                api,
                cx,
                method,
                vhost,
                exchange_from_path(source),
                destination,
                props,
            )
            .await
        }
        (["connections"], _) if read => connections(api, cx, None).await,
        (["connections", name], _) => connection(api, cx, method, name).await,
        (["connections", name, "channels"], _) if read => channels(api, cx, None, Some(name)).await,
        (["channels"], _) if read => channels(api, cx, None, None).await,
        (["channels", name], _) if read => channel(api, cx, name).await,
        (["consumers"], _) if read => consumers(api, cx, None).await,
        (["consumers", vhost], _) if read => consumers(api, cx, Some(vhost)).await,
        (["definitions"], _) => super::definitions::handle(api, cx, method, None, body).await,
        (["definitions", vhost], _) => {
            super::definitions::handle(api, cx, method, Some(vhost), body).await
        }
        (["health", "checks", check @ ("alarms" | "local-alarms")], _) if read => {
            alarms_check(api, *check == "local-alarms").await
        }
        (["health", "checks", "message-log"], _) if read => message_log_check(api).await,
        (["aliveness-test", vhost], _) if read => aliveness(api, cx, vhost).await,
        ([section @ ("policies" | "operator-policies")], _) if read => {
            policies::list(cx, policy_kind(section), None)
        }
        ([section @ ("policies" | "operator-policies"), vhost], _) if read => {
            policies::list(cx, policy_kind(section), Some(vhost))
        }
        ([section @ ("policies" | "operator-policies"), vhost, name], _) => {
            policies::object(api, cx, method, policy_kind(section), vhost, name, body).await
        }
        (["policies" | "operator-policies"], _) | (["policies" | "operator-policies", _], _) => {
            Err(Response::method_not_allowed(ALLOW_READ))
        }
        (["global-parameters"], _) if read => Ok(Response::json(200, &json!([]))),
        (["parameters"], _) if read => super::parameters::list(cx, None, None),
        (["parameters", component], _) if read => {
            super::parameters::list(cx, Some(component), None)
        }
        (["parameters", component, vhost], _) if read => {
            super::parameters::list(cx, Some(component), Some(vhost))
        }
        (["parameters", component, vhost, name], _) => {
            super::parameters::object(api, cx, method, (component, vhost, name), body).await
        }
        (["parameters", ..], _) => Err(Response::method_not_allowed(ALLOW_READ)),
        (["shovels"], _) if read => super::parameters::shovels(api, cx, None).await,
        (["shovels", vhost], _) if read => super::parameters::shovels(api, cx, Some(vhost)).await,
        (["shovels", "vhost", vhost, name], _) if read => {
            super::parameters::shovel(api, cx, vhost, name).await
        }
        (["queues" | "exchanges" | "bindings" | "consumers" | "connections" | "channels"], _)
        | (["queues" | "exchanges" | "bindings" | "consumers", _], _) => {
            Err(Response::method_not_allowed(ALLOW_READ))
        }
        _ => Err(Response::not_found()),
    }
}

fn policy_kind(section: &str) -> PolicyKind {
    if section == "operator-policies" {
        PolicyKind::Operator
    } else {
        PolicyKind::Policy
    }
}

fn destination_of(kind: &str, name: &str) -> Destination {
    if kind == "q" {
        Destination::Queue(name.to_string())
    } else {
        Destination::Exchange(exchange_from_path(name).to_string())
    }
}

async fn api_node(api: &Api) -> String {
    api.stats().await.0.node.name
}

/// The body as a JSON object; an empty body is `{}`.
pub fn body_object(body: &Bytes) -> Result<Map<String, Value>, Response> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(Response::bad_request("not_json")),
    }
}

/// RabbitMQ's `[{key_missing,a},{key_missing,b}]`.
pub fn require_keys(body: &Map<String, Value>, keys: &[&str]) -> Result<(), Response> {
    let missing: Vec<String> = keys
        .iter()
        .filter(|k| !body.contains_key(**k))
        .map(|k| format!("{{key_missing,{k}}}"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(Response::bad_request(&format!("[{}]", missing.join(","))))
}

fn bool_field(body: &Map<String, Value>, key: &str, default: bool) -> Result<bool, Response> {
    loose_bool(body.get(key), default)
        .map_err(|reason| Response::json(400, &json!({"error": "bad_request", "reason": reason})))
}

fn string_field<'b>(body: &'b Map<String, Value>, key: &str) -> Option<&'b str> {
    body.get(key).and_then(Value::as_str)
}

fn arguments_field(body: &Map<String, Value>) -> Result<crate::protocol::FieldTable, Response> {
    json_to_table(body.get("arguments").unwrap_or(&Value::Null))
        .ok_or_else(|| Response::bad_request("arguments must be an object"))
}

/// Read access to one vhost's objects: 404 if it is missing, 401 if not visible.
fn require_readable_vhost(cx: &Context, vhost: &str) -> Result<(), Response> {
    if !cx.topology.vhost_exists(vhost) {
        return Err(Response::not_found());
    }
    if !cx.visible_vhost(vhost) {
        return Err(Response::not_authorised(
            "User not authorised to access virtual host",
        ));
    }
    Ok(())
}

fn visible_vhosts(
    cx: &Context,
    view: &View<'_>,
    only: Option<&str>,
) -> Result<Vec<String>, Response> {
    match only {
        Some(vhost) => {
            require_readable_vhost(cx, vhost)?;
            Ok(vec![vhost.to_string()])
        }
        None => Ok(view
            .vhosts()
            .into_iter()
            .filter(|v| cx.visible_vhost(v))
            .collect()),
    }
}

pub(super) async fn apply(api: &Api, operation: Operation) -> Result<(), Response> {
    api.backend
        .apply(operation)
        .await
        .map_err(|e| Response::from_amqp(&e))
}

fn created_or_updated(existed: bool) -> Response {
    Response::empty(if existed { 204 } else { 201 })
}

fn object(cx: &Context, value: Value) -> Reply {
    Ok(Response::json(200, &select_columns_one(value, &cx.query)))
}

async fn overview(api: &Api, cx: &Context) -> Reply {
    let (stats, rates) = api.stats().await;
    let view = Api::view(&cx.topology, &stats, &rates);
    let vhosts = visible_vhosts(cx, &view, None)?;
    let in_scope = |vhost: &str| vhosts.iter().any(|v| v == vhost);
    let queues: Vec<_> = stats.queues.iter().filter(|q| in_scope(&q.vhost)).collect();
    let ready: u64 = queues.iter().map(|q| q.messages_ready).sum();
    let unacked: u64 = queues.iter().map(|q| q.messages_unacknowledged).sum();
    let exchanges: usize = vhosts.iter().map(|v| view.exchanges(v).len()).sum();
    let queue_count: usize = vhosts.iter().map(|v| view.queues(v).len()).sum();
    let exchange_types: Vec<Value> = ["direct", "fanout", "headers", "topic"]
        .iter()
        .map(|name| json!({"name": name, "description": format!("AMQP {name} exchange, as per the AMQP specification"), "enabled": true}))
        .collect();
    let value = json!({
        "management_version": RABBITMQ_VERSION,
        "rates_mode": "basic",
        "sample_retention_policies": {"global": [600, 3600, 28800, 86400], "basic": [600, 3600], "detailed": [600]},
        "exchange_types": exchange_types,
        "product_version": env!("CARGO_PKG_VERSION"),
        "product_name": "ringmq",
        "rabbitmq_version": RABBITMQ_VERSION,
        "cluster_name": cluster_name(&stats.node),
        "erlang_version": "none",
        "erlang_full_version": "none",
        "release_series_support_status": "supported",
        "disable_stats": false,
        "enable_queue_totals": false,
        "message_stats": overview_message_stats(&stats, api.overview_rates()),
        "churn_rates": {},
        "queue_totals": {
            "messages": ready + unacked, "messages_details": {"rate": 0.0},
            "messages_ready": ready, "messages_ready_details": {"rate": 0.0},
            "messages_unacknowledged": unacked, "messages_unacknowledged_details": {"rate": 0.0},
        },
        "object_totals": {
            "channels": stats.channels.iter().filter(|c| in_scope(&c.vhost)).count(),
            "connections": stats.connections.iter().filter(|c| in_scope(&c.vhost)).count(),
            "consumers": stats.consumers.iter().filter(|c| in_scope(&c.vhost)).count(),
            "exchanges": exchanges,
            "queues": queue_count,
        },
        "statistics_db_event_queue": 0,
        "node": stats.node.name,
        "listeners": cluster_listeners(&stats.node),
        "contexts": [],
    });
    object(cx, value)
}

/// RabbitMQ 3.10.8's alarm health checks: 200 `ok`, or 503 with the alarms in effect (one
/// node: the cluster-wide and the local check differ only in the reason's wording).
async fn alarms_check(api: &Api, local: bool) -> Reply {
    let (stats, _) = api.stats().await;
    let node = &stats.node;
    let resources = node.alarms.resources();
    if resources.is_empty() {
        return Ok(Response::json(200, &json!({"status": "ok"})));
    }
    let alarms: Vec<_> = resources
        .iter()
        .map(|resource| json!({"node": node.name, "resource": resource}))
        .collect();
    let reason = if local {
        "resource alarm(s) in effect on the node"
    } else {
        "resource alarm(s) in effect in the cluster"
    };
    Ok(Response::json(
        503,
        &json!({"status": "failed", "reason": reason, "alarms": alarms}),
    ))
}

/// ringmq's own health check, in the shape of RabbitMQ's (3.10 has none for its message
/// store): 200 `ok`, or 503 while a shard's message log is failing (its last flush failed, so
/// it confirms nothing), with the node's error counts.
async fn message_log_check(api: &Api) -> Reply {
    let (stats, _) = api.stats().await;
    let failures = &stats.broker.log_failures;
    if !failures.failing {
        return Ok(Response::json(200, &json!({"status": "ok"})));
    }
    Ok(Response::json(
        503,
        &json!({
            "status": "failed",
            "reason": "the message log is failing on the node: publishes are nacked",
            "node": stats.node.name,
            "message_log": log_failures_json(failures),
        }),
    ))
}

/// The message logs' failure counts (node object, health check).
fn log_failures_json(failures: &super::backend::LogFailures) -> Value {
    json!({
        "failing": failures.failing,
        "write_errors": failures.write_errors,
        "fdatasync_errors": failures.fdatasync_errors,
        "read_errors": failures.read_errors,
        "flush_retries": failures.flush_retries,
        "read_retries": failures.read_retries,
        "compaction_failures": failures.compaction_failures,
    })
}

/// The broker's totals (queues deleted since included) and their rates.
fn overview_message_stats(stats: &StatsSnapshot, rates: [f64; 5]) -> Value {
    let totals = &stats.broker.queues;
    let [publish, deliver_get, ack, confirm, redeliver] = rates;
    json!({
        "confirm": stats.broker.publish.confirmed,
        "confirm_details": rate(confirm),
        "redeliver": totals.redelivered,
        "redeliver_details": rate(redeliver),
        "publish": totals.published,
        "publish_details": rate(publish),
        "deliver_get": totals.deliver_get(),
        "deliver_get_details": rate(deliver_get),
        "ack": totals.acked,
        "ack_details": rate(ack),
    })
}

/// RabbitMQ names a cluster after a member's node name; every member agrees on the first.
fn cluster_name(node: &NodeStats) -> &str {
    node.peers
        .iter()
        .map(|(name, _)| name.as_str())
        .chain(std::iter::once(node.name.as_str()))
        .min()
        .unwrap_or(&node.name)
}

/// Each member's inter-node listener, as RabbitMQ's overview lists its `clustering` ones.
fn cluster_listeners(node: &NodeStats) -> Value {
    if node.peers.is_empty() {
        return json!([]);
    }
    let names =
        std::iter::once(node.name.as_str()).chain(node.peers.iter().map(|(n, _)| n.as_str()));
    Value::Array(
        names
            .map(|name| json!({"node": name, "protocol": "clustering"}))
            .collect(),
    )
}

/// A member other than this node: what RabbitMQ shows of a node it does not hold stats for.
fn peer_node(name: &str, running: bool) -> Value {
    json!({"name": name, "type": "disc", "running": running, "partitions": []})
}

async fn nodes(api: &Api, cx: &Context, only: Option<&str>) -> Reply {
    cx.require_monitor()?;
    let (stats, _) = api.stats().await;
    let node = &stats.node;
    if let Some((name, running)) = node
        .peers
        .iter()
        .find(|(name, _)| Some(name.as_str()) == only)
    {
        return object(cx, peer_node(name, *running));
    }
    if only.is_some_and(|name| name != node.name) {
        return Err(Response::not_found());
    }
    let value = json!({
        "name": node.name,
        "type": "disc",
        "running": true,
        "uptime": node.uptime_ms,
        "mem_used": node.memory_used_bytes,
        "mem_limit": node.memory_limit_bytes,
        "mem_alarm": node.alarms.memory,
        "disk_free": node.disk_free_bytes,
        "disk_free_limit": node.disk_free_limit_bytes,
        "disk_free_alarm": node.alarms.disk,
        "fd_used": node.file_descriptors_used,
        "sockets_used": node.sockets_used,
        "processors": node.shards,
        "rates_mode": "basic",
        "partitions": [],
        "applications": [],
        "contexts": [],
        "enabled_plugins": ["rabbitmq_management"],
        // ringmq's own: RabbitMQ's node object has no error counts for its message store.
        "message_log": log_failures_json(&stats.broker.log_failures),
        "auth_mechanisms": [{"name": "PLAIN", "description": "SASL PLAIN authentication mechanism", "enabled": true}, {"name": "AMQPLAIN", "description": "QPid AMQPLAIN mechanism", "enabled": true}],
    });
    if only.is_some() {
        return object(cx, value);
    }
    let mut items = vec![value];
    items.extend(
        node.peers
            .iter()
            .map(|(name, running)| peer_node(name, *running)),
    );
    Ok(list_response(reply_list(items, &cx.query, &["name"])))
}

async fn vhosts(api: &Api, cx: &Context) -> Reply {
    let (stats, rates) = api.stats().await;
    let view = Api::view(&cx.topology, &stats, &rates);
    let items = visible_vhosts(cx, &view, None)?
        .iter()
        .map(|v| view.vhost(v))
        .collect();
    Ok(list_response(reply_list(items, &cx.query, &["name"])))
}

async fn vhost(api: &Api, cx: &Context, method: &str, name: &str) -> Reply {
    let exists = cx.topology.vhost_exists(name);
    match method {
        "GET" | "HEAD" => {
            require_readable_vhost(cx, name)?;
            let (stats, rates) = api.stats().await;
            object(cx, Api::view(&cx.topology, &stats, &rates).vhost(name))
        }
        "PUT" => {
            cx.require_administrator()?;
            if exists {
                return Ok(Response::empty(204));
            }
            apply(
                api,
                Operation::Access(AccessOp::AddVhost {
                    name: name.to_string(),
                }),
            )
            .await?;
            // RabbitMQ gives the creating user full permissions on the new vhost.
            let grant = Operation::Access(AccessOp::SetPermission {
                user: cx.caller.name.clone(),
                vhost: name.to_string(),
                permission: Permission::full(),
            });
            apply(api, grant).await?;
            Ok(Response::empty(201))
        }
        "DELETE" => {
            cx.require_administrator()?;
            if !exists {
                return Err(Response::not_found());
            }
            apply(
                api,
                Operation::Access(AccessOp::DeleteVhost {
                    name: name.to_string(),
                }),
            )
            .await?;
            Ok(Response::empty(204))
        }
        _ => Err(Response::method_not_allowed(ALLOW_OBJECT)),
    }
}

fn users(cx: &Context) -> Reply {
    cx.require_administrator()?;
    let items = cx.topology.users().map(objects::user).collect();
    Ok(list_response(reply_list(items, &cx.query, &["name"])))
}

async fn user(api: &Api, cx: &Context, method: &str, name: &str, body: &Bytes) -> Reply {
    cx.require_administrator()?;
    let existing = cx.topology.user(name);
    match method {
        "GET" | "HEAD" => object(cx, objects::user(existing.ok_or_else(Response::not_found)?)),
        "PUT" => {
            let body = body_object(body)?;
            let user = user_from_body(name, &body, existing)?;
            apply(api, Operation::Access(AccessOp::PutUser(user))).await?;
            Ok(created_or_updated(existing.is_some()))
        }
        "DELETE" => {
            existing.ok_or_else(Response::not_found)?;
            apply(
                api,
                Operation::Access(AccessOp::DeleteUser {
                    name: name.to_string(),
                }),
            )
            .await?;
            Ok(Response::empty(204))
        }
        _ => Err(Response::method_not_allowed(ALLOW_OBJECT)),
    }
}

/// `PUT /api/users/U` and definitions' users: `tags` (a comma-separated string or a list),
/// and `password`, or `password_hash` with `hashing_algorithm`, or neither (an existing user
/// keeps its hash; a new one has no password).
pub fn user_from_body(
    name: &str,
    body: &Map<String, Value>,
    existing: Option<&User>,
) -> Result<User, Response> {
    let tags = match body.get("tags") {
        None => return Err(Response::bad_request("tags_not_present")),
        Some(Value::String(text)) => text
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        Some(_) => return Err(Response::bad_request("tags must be a string or a list")),
    };
    let algorithm = match string_field(body, "hashing_algorithm") {
        None => HashingAlgorithm::Sha256,
        Some(text) => HashingAlgorithm::from_rabbit_name(text).ok_or_else(|| {
            Response::bad_request(&format!("unsupported hashing_algorithm {text}"))
        })?,
    };
    let password_hash = if let Some(password) = string_field(body, "password") {
        PasswordHash::new(algorithm, password)
    } else if let Some(hash) = string_field(body, "password_hash") {
        PasswordHash::from_encoded(algorithm, hash)
            .map_err(|e| Response::bad_request(&e.to_string()))?
    } else {
        existing.map_or_else(PasswordHash::none, |u| u.password_hash.clone())
    };
    Ok(User {
        name: name.to_string(),
        password_hash,
        tags,
    })
}

fn permissions_list(cx: &Context, keep: impl Fn(&str, &str) -> bool) -> Reply {
    cx.require_administrator()?;
    let items = cx
        .topology
        .all_permissions()
        .filter(|(u, v, _)| keep(u, v))
        .map(|(u, v, p)| objects::permission(u, v, p))
        .collect();
    Ok(list_response(reply_list(
        items,
        &cx.query,
        &["vhost", "user"],
    )))
}

fn topic_permissions_list(cx: &Context, keep: impl Fn(&str, &str) -> bool) -> Reply {
    cx.require_administrator()?;
    let items = cx
        .topology
        .all_topic_permissions()
        .filter(|(u, v, _)| keep(u, v))
        .map(|(u, v, p)| objects::topic_permission(u, v, p))
        .collect();
    Ok(list_response(reply_list(
        items,
        &cx.query,
        &["vhost", "user", "exchange"],
    )))
}

fn regex_field(body: &Map<String, Value>, key: &str) -> Result<String, Response> {
    let pattern = string_field(body, key).unwrap_or("").to_string();
    crate::auth::permissions::validate_pattern(&pattern)
        .map_err(|e| Response::bad_request(&format!("invalid_regexp: {}", e.reason)))?;
    Ok(pattern)
}

async fn permission(
    api: &Api,
    cx: &Context,
    method: &str,
    vhost: &str,
    name: &str,
    body: &Bytes,
) -> Reply {
    cx.require_administrator()?;
    let existing = cx.topology.permission(name, vhost);
    match method {
        "GET" | "HEAD" => {
            let p = existing.ok_or_else(Response::not_found)?;
            object(cx, objects::permission(name, vhost, p))
        }
        "PUT" => {
            let body = body_object(body)?;
            require_keys(&body, &["configure", "write", "read"])?;
            let permission = Permission {
                configure: regex_field(&body, "configure")?,
                write: regex_field(&body, "write")?,
                read: regex_field(&body, "read")?,
            };
            if cx.topology.user(name).is_none() || !cx.topology.vhost_exists(vhost) {
                return Err(Response::bad_request("vhost_or_user_not_found"));
            }
            let operation = Operation::Access(AccessOp::SetPermission {
                user: name.to_string(),
                vhost: vhost.to_string(),
                permission,
            });
            apply(api, operation).await?;
            Ok(created_or_updated(existing.is_some()))
        }
        "DELETE" => {
            existing.ok_or_else(Response::not_found)?;
            apply(
                api,
                Operation::Access(AccessOp::ClearPermission {
                    user: name.to_string(),
                    vhost: vhost.to_string(),
                }),
            )
            .await?;
            Ok(Response::empty(204))
        }
        _ => Err(Response::method_not_allowed(ALLOW_OBJECT)),
    }
}

async fn topic_permission(
    api: &Api,
    cx: &Context,
    method: &str,
    vhost: &str,
    name: &str,
    body: &Bytes,
) -> Reply {
    cx.require_administrator()?;
    let existing = cx.topology.topic_permissions(name, vhost);
    match method {
        "GET" | "HEAD" => {
            if existing.is_empty() {
                return Err(Response::not_found());
            }
            let items: Vec<Value> = existing
                .iter()
                .map(|p| objects::topic_permission(name, vhost, p))
                .collect();
            Ok(Response::json(200, &Value::Array(items)))
        }
        "PUT" => {
            let body = body_object(body)?;
            require_keys(&body, &["exchange", "write", "read"])?;
            let exchange = string_field(&body, "exchange").unwrap_or("").to_string();
            let existed = existing.iter().any(|p| p.exchange == exchange);
            let permission = TopicPermission {
                exchange,
                write: regex_field(&body, "write")?,
                read: regex_field(&body, "read")?,
            };
            if cx.topology.user(name).is_none() || !cx.topology.vhost_exists(vhost) {
                return Err(Response::bad_request("vhost_or_user_not_found"));
            }
            let operation = Operation::Access(AccessOp::SetTopicPermission {
                user: name.to_string(),
                vhost: vhost.to_string(),
                permission,
            });
            apply(api, operation).await?;
            Ok(created_or_updated(existed))
        }
        "DELETE" => {
            if existing.is_empty() {
                return Err(Response::not_found());
            }
            let operation = Operation::Access(AccessOp::ClearTopicPermission {
                user: name.to_string(),
                vhost: vhost.to_string(),
                exchange: None,
            });
            apply(api, operation).await?;
            Ok(Response::empty(204))
        }
        _ => Err(Response::method_not_allowed(ALLOW_OBJECT)),
    }
}

async fn exchanges(api: &Api, cx: &Context, only: Option<&str>) -> Reply {
    let (stats, rates) = api.stats().await;
    let view = Api::view(&cx.topology, &stats, &rates);
    let mut items = Vec::new();
    for vhost in visible_vhosts(cx, &view, only)? {
        items.extend(
            view.exchanges(&vhost)
                .into_iter()
                .map(|x| view.exchange(&vhost, x)),
        );
    }
    Ok(list_response(reply_list(
        items,
        &cx.query,
        &["vhost", "name"],
    )))
}

async fn exchange(
    api: &Api,
    cx: &Context,
    method: &str,
    vhost: &str,
    name: &str,
    body: &Bytes,
) -> Reply {
    let existing = cx.topology.exchange(vhost, name);
    match method {
        "GET" | "HEAD" => {
            require_readable_vhost(cx, vhost)?;
            let exchange = existing.ok_or_else(Response::not_found)?;
            let (stats, rates) = api.stats().await;
            object(
                cx,
                Api::view(&cx.topology, &stats, &rates).exchange_detail(vhost, exchange),
            )
        }
        "PUT" => {
            cx.require_access(
                vhost,
                AccessOperation::Configure,
                ResourceKind::Exchange,
                name,
            )?;
            let body = body_object(body)?;
            require_keys(&body, &["type"])?;
            let operation = Operation::DeclareExchange {
                vhost: vhost.to_string(),
                name: name.to_string(),
                kind: string_field(&body, "type").unwrap_or("").to_string(),
                durable: bool_field(&body, "durable", false)?,
                auto_delete: bool_field(&body, "auto_delete", false)?,
                internal: bool_field(&body, "internal", false)?,
                arguments: arguments_field(&body)?,
            };
            apply(api, operation).await?;
            Ok(created_or_updated(existing.is_some()))
        }
        "DELETE" => {
            cx.require_access(
                vhost,
                AccessOperation::Configure,
                ResourceKind::Exchange,
                name,
            )?;
            if existing.is_none() {
                return Err(Response::not_found());
            }
            let if_unused = cx.query.get("if-unused") == Some("true");
            let operation = Operation::DeleteExchange {
                vhost: vhost.to_string(),
                name: name.to_string(),
                if_unused,
            };
            apply(api, operation).await?;
            Ok(Response::empty(204))
        }
        _ => Err(Response::method_not_allowed(ALLOW_OBJECT)),
    }
}

async fn publish(api: &Api, cx: &Context, vhost: &str, exchange: &str, body: &Bytes) -> Reply {
    cx.require_access(
        vhost,
        AccessOperation::Write,
        ResourceKind::Exchange,
        exchange,
    )?;
    let body = body_object(body)?;
    require_keys(
        &body,
        &["routing_key", "properties", "payload", "payload_encoding"],
    )?;
    if cx.topology.exchange(vhost, exchange).is_none() {
        return Err(Response::bad_request(&format!(
            "404 NOT_FOUND - no exchange '{exchange}' in vhost '{vhost}'"
        )));
    }
    let properties =
        json_to_properties(&body["properties"]).map_err(|e| Response::bad_request(&e))?;
    let payload = decode_payload(
        string_field(&body, "payload").unwrap_or(""),
        string_field(&body, "payload_encoding").unwrap_or(""),
    )
    .map_err(|e| Response::bad_request(&e))?;
    let publish = Publish {
        vhost: vhost.to_string(),
        exchange: exchange.to_string(),
        routing_key: string_field(&body, "routing_key").unwrap_or("").to_string(),
        properties,
        body: payload,
    };
    let routed = api
        .backend
        .publish(publish)
        .await
        .map_err(|e| Response::from_amqp(&e))?;
    Ok(Response::json(200, &json!({ "routed": routed })))
}

async fn exchange_bindings(api: &Api, cx: &Context, vhost: &str, name: &str, side: &str) -> Reply {
    require_readable_vhost(cx, vhost)?;
    if cx.topology.exchange(vhost, name).is_none() {
        return Err(Response::not_found());
    }
    let (stats, rates) = api.stats().await;
    let view = Api::view(&cx.topology, &stats, &rates);
    let keep = |b: &Binding| match side {
        "source" => b.source == name,
        "destination" => b.destination == Destination::Exchange(name.to_string()),
        _ => false,
    };
    if side != "source" && side != "destination" {
        return Err(Response::not_found());
    }
    let items = view
        .bindings(vhost)
        .iter()
        .filter(|b| keep(b))
        .map(|b| objects::binding(vhost, b))
        .collect();
    Ok(list_response(reply_list(items, &cx.query, &[])))
}

async fn queues(api: &Api, cx: &Context, only: Option<&str>) -> Reply {
    let (stats, rates) = api.stats().await;
    let view = Api::view(&cx.topology, &stats, &rates);
    let mut items = Vec::new();
    for vhost in visible_vhosts(cx, &view, only)? {
        items.extend(view.queues(&vhost).into_iter().map(|q| view.queue(q)));
    }
    Ok(list_response(reply_list(
        items,
        &cx.query,
        &["vhost", "name"],
    )))
}

async fn queue(
    api: &Api,
    cx: &Context,
    method: &str,
    vhost: &str,
    name: &str,
    body: &Bytes,
) -> Reply {
    let existing = cx.topology.queue(vhost, name);
    match method {
        "GET" | "HEAD" => {
            require_readable_vhost(cx, vhost)?;
            let queue = existing.ok_or_else(Response::not_found)?;
            let (stats, rates) = api.stats().await;
            object(
                cx,
                Api::view(&cx.topology, &stats, &rates).queue_detail(queue),
            )
        }
        "PUT" => {
            cx.require_access(vhost, AccessOperation::Configure, ResourceKind::Queue, name)?;
            let body = body_object(body)?;
            let operation = Operation::DeclareQueue {
                vhost: vhost.to_string(),
                name: name.to_string(),
                durable: bool_field(&body, "durable", false)?,
                auto_delete: bool_field(&body, "auto_delete", false)?,
                arguments: arguments_field(&body)?,
            };
            apply(api, operation).await?;
            Ok(created_or_updated(existing.is_some()))
        }
        "DELETE" => {
            cx.require_access(vhost, AccessOperation::Configure, ResourceKind::Queue, name)?;
            if existing.is_none() {
                return Err(Response::not_found());
            }
            let operation = Operation::DeleteQueue {
                vhost: vhost.to_string(),
                name: name.to_string(),
                if_unused: cx.query.get("if-unused") == Some("true"),
                if_empty: cx.query.get("if-empty") == Some("true"),
            };
            apply(api, operation).await?;
            Ok(Response::empty(204))
        }
        _ => Err(Response::method_not_allowed(ALLOW_OBJECT)),
    }
}

/// `ringmqctl add_member` (PUT) / `delete_member` (DELETE): an administrator's, as
/// `rabbitmq-queues` needs the node's own rights. 204 once the group's leader applied it.
async fn quorum_member(api: &Api, cx: &Context, add: bool, path: [&str; 3]) -> Reply {
    cx.require_administrator()?;
    let [vhost, name, node] = path;
    let operation = Operation::QuorumMember {
        vhost: vhost.to_string(),
        name: name.to_string(),
        node: node.to_string(),
        add,
    };
    apply(api, operation).await?;
    Ok(Response::empty(204))
}

/// `ringmqctl join_cluster`: `{"node": NAME, "address": "HOST:PORT"}`, an administrator's.
/// 204 once this node is a member.
async fn join_cluster(api: &Api, cx: &Context, body: &Bytes) -> Reply {
    cx.require_administrator()?;
    let body = body_object(body)?;
    require_keys(&body, &["node", "address"])?;
    let text = |key: &str| body.get(key).and_then(Value::as_str).map(str::to_string);
    let (Some(node), Some(address)) = (text("node"), text("address")) else {
        return Err(Response::bad_request("node and address are strings"));
    };
    apply(api, Operation::JoinCluster { node, address }).await?;
    Ok(Response::empty(204))
}

fn ack_mode(text: &str) -> Option<GetAckMode> {
    match text {
        "ack_requeue_true" | "reject_requeue_true" => Some(GetAckMode::RequeueTrue),
        "ack_requeue_false" => Some(GetAckMode::RequeueFalse),
        "reject_requeue_false" => Some(GetAckMode::RejectRequeueFalse),
        _ => None,
    }
}

async fn queue_get(api: &Api, cx: &Context, vhost: &str, name: &str, body: &Bytes) -> Reply {
    cx.require_access(vhost, AccessOperation::Read, ResourceKind::Queue, name)?;
    let body = body_object(body)?;
    require_keys(&body, &["count", "ackmode", "encoding"])?;
    let count = loose_integer(body.get("count"))
        .and_then(|c| usize::try_from(c).ok())
        .filter(|c| *c <= MANAGEMENT_GET_COUNT_MAX)
        .ok_or_else(|| {
            Response::bad_request(&format!(
                "count must be an integer up to {MANAGEMENT_GET_COUNT_MAX}"
            ))
        })?;
    let ack_mode = ack_mode(string_field(&body, "ackmode").unwrap_or(""))
        .ok_or_else(|| Response::bad_request("unknown ackmode"))?;
    let force_base64 = match string_field(&body, "encoding") {
        Some("auto") => false,
        Some("base64") => true,
        _ => return Err(Response::bad_request("encoding must be auto or base64")),
    };
    let truncate = loose_integer(body.get("truncate")).and_then(|t| usize::try_from(t).ok());
    if cx.topology.queue(vhost, name).is_none() {
        return Err(Response::error(
            404,
            "not_found",
            &format!("NOT_FOUND - no queue '{name}' in vhost '{vhost}'"),
        ));
    }
    let request = QueueGet {
        vhost: vhost.to_string(),
        queue: name.to_string(),
        count,
        ack_mode,
    };
    let messages = api
        .backend
        .queue_get(request)
        .await
        .map_err(|e| Response::from_amqp(&e))?;
    let items: Vec<Value> = messages
        .iter()
        .map(|m| {
            let shown = &m.body[..truncate.map_or(m.body.len(), |t| t.min(m.body.len()))];
            let (payload, encoding) = payload_to_json(shown, force_base64);
            json!({
                "payload_bytes": m.body.len(),
                "redelivered": m.redelivered,
                "exchange": m.exchange,
                "routing_key": m.routing_key,
                "message_count": m.message_count,
                "properties": properties_to_json(&m.properties),
                "payload": payload,
                "payload_encoding": encoding,
            })
        })
        .collect();
    Ok(Response::json(200, &Value::Array(items)))
}

async fn queue_purge(api: &Api, cx: &Context, vhost: &str, name: &str) -> Reply {
    cx.require_access(vhost, AccessOperation::Read, ResourceKind::Queue, name)?;
    if cx.topology.queue(vhost, name).is_none() {
        return Err(Response::not_found());
    }
    api.backend
        .queue_purge(vhost.to_string(), name.to_string())
        .await
        .map_err(|e| Response::from_amqp(&e))?;
    Ok(Response::empty(204))
}

async fn queue_bindings(api: &Api, cx: &Context, vhost: &str, name: &str) -> Reply {
    require_readable_vhost(cx, vhost)?;
    if cx.topology.queue(vhost, name).is_none() {
        return Err(Response::not_found());
    }
    let (stats, rates) = api.stats().await;
    let view = Api::view(&cx.topology, &stats, &rates);
    let target = Destination::Queue(name.to_string());
    let items = view
        .bindings(vhost)
        .iter()
        .filter(|b| b.destination == target)
        .map(|b| objects::binding(vhost, b))
        .collect();
    Ok(list_response(reply_list(items, &cx.query, &[])))
}

async fn bindings(api: &Api, cx: &Context, only: Option<&str>) -> Reply {
    let (stats, rates) = api.stats().await;
    let view = Api::view(&cx.topology, &stats, &rates);
    let mut items = Vec::new();
    for vhost in visible_vhosts(cx, &view, only)? {
        items.extend(
            view.bindings(&vhost)
                .iter()
                .map(|b| objects::binding(&vhost, b)),
        );
    }
    Ok(list_response(reply_list(items, &cx.query, &[])))
}

/// The bindings from `source` to `destination` (GET), or a new one (POST).
async fn bindings_between(
    api: &Api,
    cx: &Context,
    method: &str,
    vhost: &str,
    source: &str,
    destination: Destination,
    body: &Bytes,
) -> Reply {
    match method {
        "GET" | "HEAD" => {
            require_readable_vhost(cx, vhost)?;
            let (stats, rates) = api.stats().await;
            let view = Api::view(&cx.topology, &stats, &rates);
            let items = view
                .bindings(vhost)
                .iter()
                .filter(|b| b.source == source && b.destination == destination)
                .map(|b| objects::binding(vhost, b))
                .collect();
            Ok(list_response(reply_list(items, &cx.query, &[])))
        }
        "POST" => {
            require_binding_access(cx, vhost, source, &destination)?;
            let body = body_object(body)?;
            let binding = Binding {
                source: source.to_string(),
                destination: destination.clone(),
                routing_key: string_field(&body, "routing_key").unwrap_or("").to_string(),
                arguments: arguments_field(&body)?,
            };
            let props = objects::properties_key(&binding);
            apply(
                api,
                Operation::Bind {
                    vhost: vhost.to_string(),
                    binding,
                },
            )
            .await?;
            let location = format!("{}/{props}", encode_segment(destination.name()));
            Ok(Response::empty(201).with_location(location))
        }
        _ => Err(Response::method_not_allowed(ALLOW_BINDINGS)),
    }
}

/// As `queue.bind`: write on the destination, read on the source.
fn require_binding_access(
    cx: &Context,
    vhost: &str,
    source: &str,
    destination: &Destination,
) -> Result<(), Response> {
    let resource = match destination {
        Destination::Queue(_) => ResourceKind::Queue,
        Destination::Exchange(_) => ResourceKind::Exchange,
    };
    cx.require_access(vhost, AccessOperation::Write, resource, destination.name())?;
    cx.require_access(vhost, AccessOperation::Read, ResourceKind::Exchange, source)
}

async fn binding(
    api: &Api,
    cx: &Context,
    method: &str,
    vhost: &str,
    source: &str,
    destination: Destination,
    props: &str,
) -> Reply {
    let found = || {
        cx.topology
            .bindings_from(vhost, source)
            .into_iter()
            .find(|b| b.destination == destination && objects::properties_key(b) == props)
    };
    match method {
        "GET" | "HEAD" => {
            require_readable_vhost(cx, vhost)?;
            let binding = found().ok_or_else(Response::not_found)?;
            object(cx, objects::binding(vhost, &binding))
        }
        "DELETE" => {
            require_binding_access(cx, vhost, source, &destination)?;
            let binding = found().ok_or_else(Response::not_found)?;
            apply(
                api,
                Operation::Unbind {
                    vhost: vhost.to_string(),
                    binding,
                },
            )
            .await?;
            Ok(Response::empty(204))
        }
        _ => Err(Response::method_not_allowed(ALLOW_BINDING)),
    }
}

fn encode_segment(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Monitoring sees every connection; any other user only its own (RabbitMQ's rule).
fn sees_connection(cx: &Context, user: &str) -> bool {
    cx.caller.is_monitor() || cx.caller.name == user
}

async fn connections(api: &Api, cx: &Context, vhost: Option<&str>) -> Reply {
    if let Some(vhost) = vhost {
        require_readable_vhost(cx, vhost)?;
    }
    let (stats, rates) = api.stats().await;
    let view = Api::view(&cx.topology, &stats, &rates);
    let items = stats
        .connections
        .iter()
        .filter(|c| sees_connection(cx, &c.user) && vhost.is_none_or(|v| c.vhost == v))
        .map(|c| view.connection(c))
        .collect();
    Ok(list_response(reply_list(items, &cx.query, &["name"])))
}

async fn connection(api: &Api, cx: &Context, method: &str, name: &str) -> Reply {
    let (stats, rates) = api.stats().await;
    let Some(found) = stats
        .connections
        .iter()
        .find(|c| c.name == name && sees_connection(cx, &c.user))
    else {
        return Err(Response::not_found());
    };
    match method {
        "GET" | "HEAD" => object(
            cx,
            Api::view(&cx.topology, &stats, &rates).connection(found),
        ),
        "DELETE" => {
            if !cx.caller.is_administrator() && cx.caller.name != found.user {
                return Err(Response::not_authorised("Not administrator user"));
            }
            // RabbitMQ's rabbit_mgmt_wm_connection: the X-Reason header, else its default.
            let reason = cx
                .x_reason
                .clone()
                .unwrap_or_else(|| "Closed via management plugin".to_string());
            if !api.backend.close_connection(name.to_string(), reason).await {
                return Err(Response::not_found());
            }
            Ok(Response::empty(204))
        }
        _ => Err(Response::method_not_allowed(ALLOW_BINDING)),
    }
}

async fn channels(api: &Api, cx: &Context, vhost: Option<&str>, connection: Option<&str>) -> Reply {
    if let Some(vhost) = vhost {
        require_readable_vhost(cx, vhost)?;
    }
    let (stats, rates) = api.stats().await;
    let view = Api::view(&cx.topology, &stats, &rates);
    let items = stats
        .channels
        .iter()
        .filter(|c| sees_connection(cx, &c.user))
        .filter(|c| {
            vhost.is_none_or(|v| c.vhost == v) && connection.is_none_or(|n| c.connection_name == n)
        })
        .map(|c| view.channel(c))
        .collect();
    Ok(list_response(reply_list(items, &cx.query, &["name"])))
}

async fn channel(api: &Api, cx: &Context, name: &str) -> Reply {
    let (stats, rates) = api.stats().await;
    let view = Api::view(&cx.topology, &stats, &rates);
    let found = stats
        .channels
        .iter()
        .find(|c| {
            sees_connection(cx, &c.user) && format!("{} ({})", c.connection_name, c.number) == name
        })
        .ok_or_else(Response::not_found)?;
    object(cx, view.channel(found))
}

async fn consumers(api: &Api, cx: &Context, only: Option<&str>) -> Reply {
    let (stats, rates) = api.stats().await;
    let view = Api::view(&cx.topology, &stats, &rates);
    let vhosts = visible_vhosts(cx, &view, only)?;
    let items = stats
        .consumers
        .iter()
        .filter(|c| vhosts.contains(&c.vhost))
        .map(|c| view.consumer(c))
        .collect();
    Ok(list_response(reply_list(
        items,
        &cx.query,
        &["queue.vhost", "queue.name", "consumer_tag"],
    )))
}

/// RabbitMQ's aliveness test: declare `aliveness-test`, publish to it, get the message back.
async fn aliveness(api: &Api, cx: &Context, vhost: &str) -> Reply {
    cx.require_vhost(vhost)?;
    const QUEUE: &str = "aliveness-test";
    const PAYLOAD: &[u8] = b"test_message";
    let failed =
        |reason: String| Response::json(503, &json!({"status": "failed", "reason": reason}));
    let declare = Operation::DeclareQueue {
        vhost: vhost.to_string(),
        name: QUEUE.to_string(),
        durable: false,
        auto_delete: false,
        arguments: Default::default(),
    };
    api.backend
        .apply(declare)
        .await
        .map_err(|e| failed(e.text))?;
    let publish = Publish {
        vhost: vhost.to_string(),
        exchange: String::new(),
        routing_key: QUEUE.to_string(),
        properties: Default::default(),
        body: PAYLOAD.to_vec(),
    };
    api.backend
        .publish(publish)
        .await
        .map_err(|e| failed(e.text))?;
    let get = QueueGet {
        vhost: vhost.to_string(),
        queue: QUEUE.to_string(),
        count: 1,
        ack_mode: GetAckMode::RequeueFalse,
    };
    let got = api
        .backend
        .queue_get(get)
        .await
        .map_err(|e| failed(e.text))?;
    if got.first().is_some_and(|m| m.body == PAYLOAD) {
        Ok(Response::json(200, &json!({"status": "ok"})))
    } else {
        Err(failed("aliveness-test message not received".to_string()))
    }
}

impl Response {
    fn with_location(mut self, location: String) -> Response {
        self.headers.push(("location", location));
        self
    }
}
