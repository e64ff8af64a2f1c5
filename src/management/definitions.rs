//! Definitions export and import in RabbitMQ 3.10.8's format.
//!
//! Imported: users (password_hash + hashing_algorithm, or password), vhosts, permissions,
//! topic_permissions, policies, exchanges, queues, bindings, and `parameters` of component
//! "shovel" (last, after the queues a shovel may name, so its own declare never races the
//! import's). Refused up front (400, nothing applied): a policy or parameter RabbitMQ would
//! refuse, a parameter of another component. `global_parameters`
//! are skipped: RabbitMQ exports its `internal_cluster_id` there, which names a cluster, not a
//! setting.

use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::api::{Api, Context, Response};
use super::backend::Operation;
use super::json::{json_to_table, loose_bool, table_to_json};
use super::objects::{self, RABBITMQ_VERSION};
use super::routes::{body_object, user_from_body, Reply};
use super::{parameters, policies, vhost_limits};
use crate::auth::{Permission, TopicPermission};
use crate::broker::{AccessOp, Binding, Destination, ParameterOp, PolicyKind, PolicyOp, Topology};
use crate::limits::MANAGEMENT_IMPORT_OPERATIONS_MAX;

pub async fn handle(
    api: &Api,
    cx: &Context,
    method: &str,
    vhost: Option<&str>,
    body: &Bytes,
) -> Reply {
    cx.require_administrator()?;
    if let Some(vhost) = vhost {
        if !cx.topology.vhost_exists(vhost) {
            return Err(Response::not_found());
        }
    }
    match method {
        "GET" | "HEAD" => Ok(Response::json(200, &export(&cx.topology, vhost))),
        "POST" => {
            let body = body_object(body)?;
            let operations = import_operations(&cx.topology, &body, vhost)
                .map_err(|r| Response::bad_request(&r))?;
            api.backend
                .import(operations)
                .await
                .map_err(|e| Response::from_amqp(&e.error))?;
            Ok(Response::empty(204))
        }
        _ => Err(Response::method_not_allowed("HEAD, GET, POST, OPTIONS")),
    }
}

/// The whole broker, or one vhost's objects (no users, vhosts or permissions, no `vhost` keys).
pub fn export(topology: &Topology, only: Option<&str>) -> Value {
    let mut vhosts: Vec<&str> = match only {
        Some(v) => vec![v],
        None => topology.vhost_names().collect(),
    };
    vhosts.sort_unstable();
    let with_vhost = only.is_none();
    let (mut queues, mut exchanges, mut bindings) = (Vec::new(), Vec::new(), Vec::new());
    for vhost in &vhosts {
        let Some(vh) = topology.vhost(vhost) else {
            continue;
        };
        let mut qs: Vec<_> = vh
            .queues
            .values()
            .filter(|q| q.exclusive_owner.is_none())
            .collect();
        qs.sort_by(|a, b| a.name.cmp(&b.name));
        for q in qs {
            let mut item = json!({"name": q.name, "durable": q.durable, "auto_delete": q.auto_delete, "arguments": table_to_json(&q.arguments)});
            if with_vhost {
                item["vhost"] = json!(vhost);
            }
            queues.push(item);
        }
        let mut xs: Vec<_> = vh
            .exchanges
            .values()
            .map(|x| &x.meta)
            .filter(|x| !x.name.is_empty() && !x.name.starts_with("amq."))
            .collect();
        xs.sort_by(|a, b| a.name.cmp(&b.name));
        for x in xs {
            let mut item = json!({"name": x.name, "type": x.kind.as_str(), "durable": x.durable, "auto_delete": x.auto_delete, "internal": x.internal, "arguments": table_to_json(&x.arguments)});
            if with_vhost {
                item["vhost"] = json!(vhost);
            }
            exchanges.push(item);
        }
        let mut sources: Vec<&String> = vh.exchanges.keys().filter(|n| !n.is_empty()).collect();
        sources.sort();
        for source in sources {
            // A HashMap inside the exchange: sorted, so an export is the same every time.
            let mut from = topology.bindings_from(vhost, source);
            from.sort_by(|a, b| {
                let key = |x: &Binding| {
                    (
                        objects::destination_type(&x.destination),
                        x.destination.name().to_string(),
                        x.routing_key.clone(),
                        format!("{:?}", x.arguments),
                    )
                };
                key(a).cmp(&key(b))
            });
            for b in from {
                let exclusive = matches!(&b.destination, Destination::Queue(q) if topology.queue(vhost, q).is_some_and(|q| q.exclusive_owner.is_some()));
                if exclusive {
                    continue;
                }
                let mut item = json!({"source": b.source, "destination": b.destination.name(), "destination_type": objects::destination_type(&b.destination), "routing_key": b.routing_key, "arguments": table_to_json(&b.arguments)});
                if with_vhost {
                    item["vhost"] = json!(vhost);
                }
                bindings.push(item);
            }
        }
    }
    // Operator policies are not part of RabbitMQ's definitions.
    let policies: Vec<Value> = vhosts
        .iter()
        .flat_map(|vhost| topology.policies_in(vhost))
        .filter(|p| p.kind == PolicyKind::Policy)
        .map(|p| scoped(policies::policy_json(p), with_vhost))
        .collect();
    let mut parameters = vhost_limits::definitions_items(topology, &vhosts, with_vhost);
    parameters.extend(
        vhosts
            .iter()
            .flat_map(|vhost| topology.parameters_in(vhost))
            .map(|p| scoped(parameters::parameter_json(p), with_vhost)),
    );
    if let Some(_vhost) = only {
        return json!({"rabbit_version": RABBITMQ_VERSION, "parameters": parameters, "policies": policies, "queues": queues, "exchanges": exchanges, "bindings": bindings});
    }
    let mut users: Vec<Value> = topology.users().map(objects::user).collect();
    users.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    let mut permissions: Vec<Value> = topology
        .all_permissions()
        .map(|(u, v, p)| objects::permission(u, v, p))
        .collect();
    permissions.sort_by_key(|p| (p["vhost"].to_string(), p["user"].to_string()));
    let mut topic_permissions: Vec<Value> = topology
        .all_topic_permissions()
        .map(|(u, v, p)| objects::topic_permission(u, v, p))
        .collect();
    topic_permissions.sort_by_key(|p| {
        (
            p["vhost"].to_string(),
            p["user"].to_string(),
            p["exchange"].to_string(),
        )
    });
    json!({
        "rabbit_version": RABBITMQ_VERSION,
        "rabbitmq_version": RABBITMQ_VERSION,
        "product_name": "ringmq",
        "product_version": env!("CARGO_PKG_VERSION"),
        "users": users,
        "vhosts": vhosts.iter().map(|v| json!({"name": v})).collect::<Vec<_>>(),
        "permissions": permissions,
        "topic_permissions": topic_permissions,
        "parameters": parameters,
        "global_parameters": [],
        "policies": policies,
        "queues": queues,
        "exchanges": exchanges,
        "bindings": bindings,
    })
}

/// A per-vhost export's items carry no `vhost` key.
fn scoped(mut item: Value, with_vhost: bool) -> Value {
    if !with_vhost {
        if let Some(map) = item.as_object_mut() {
            map.remove("vhost");
        }
    }
    item
}

fn items<'b>(body: &'b Map<String, Value>, key: &str) -> Result<&'b [Value], String> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(format!("{key} must be a list")),
    }
}

fn text<'v>(item: &'v Value, key: &str, kind: &str) -> Result<&'v str, String> {
    item.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{kind} without {key}"))
}

/// The operations an import performs, in RabbitMQ's order (users, vhosts, permissions, then
/// exchanges, queues, bindings). `only`: a per-vhost import puts every object into that vhost.
pub fn import_operations(
    topology: &Topology,
    body: &Map<String, Value>,
    only: Option<&str>,
) -> Result<Vec<Operation>, String> {
    let mut ops = Vec::new();
    let vhost_of = |item: &Value| -> Result<String, String> {
        match only {
            Some(v) => Ok(v.to_string()),
            None => Ok(text(item, "vhost", "object")?.to_string()),
        }
    };
    if only.is_none() {
        for item in items(body, "users")? {
            let name = text(item, "name", "user")?;
            let object = item.as_object().ok_or("user must be an object")?;
            let user = user_from_body(name, object, topology.user(name))
                .map_err(|r| String::from_utf8_lossy(&r.body).into_owned())?;
            ops.push(Operation::Access(AccessOp::PutUser(user)));
        }
        for item in items(body, "vhosts")? {
            ops.push(Operation::Access(AccessOp::AddVhost {
                name: text(item, "name", "vhost")?.to_string(),
            }));
        }
        for item in items(body, "permissions")? {
            let permission = Permission {
                configure: text(item, "configure", "permission")?.to_string(),
                write: text(item, "write", "permission")?.to_string(),
                read: text(item, "read", "permission")?.to_string(),
            };
            for pattern in [&permission.configure, &permission.write, &permission.read] {
                crate::auth::permissions::validate_pattern(pattern).map_err(|e| e.to_string())?;
            }
            ops.push(Operation::Access(AccessOp::SetPermission {
                user: text(item, "user", "permission")?.to_string(),
                vhost: vhost_of(item)?,
                permission,
            }));
        }
        for item in items(body, "topic_permissions")? {
            let permission = TopicPermission {
                exchange: text(item, "exchange", "topic permission")?.to_string(),
                write: text(item, "write", "topic permission")?.to_string(),
                read: text(item, "read", "topic permission")?.to_string(),
            };
            ops.push(Operation::Access(AccessOp::SetTopicPermission {
                user: text(item, "user", "topic permission")?.to_string(),
                vhost: vhost_of(item)?,
                permission,
            }));
        }
    }
    // After vhosts and permissions, before queues and exchanges, as RabbitMQ imports them.
    for item in items(body, "policies")? {
        let object = item.as_object().ok_or("policy must be an object")?;
        let vhost = vhost_of(item)?;
        let name = text(item, "name", "policy")?;
        let policy = policies::policy_from_json(PolicyKind::Policy, &vhost, name, object)
            .map_err(|r| String::from_utf8_lossy(&r.body).into_owned())?;
        ops.push(Operation::Policy(PolicyOp::Set(policy)));
    }
    let flag = |item: &Value, key: &str| {
        loose_bool(item.get(key), false).map_err(|_| format!("{key} must be a boolean"))
    };
    let arguments = |item: &Value| {
        json_to_table(item.get("arguments").unwrap_or(&Value::Null))
            .ok_or("arguments must be an object".to_string())
    };
    for item in items(body, "exchanges")? {
        ops.push(Operation::DeclareExchange {
            vhost: vhost_of(item)?,
            name: text(item, "name", "exchange")?.to_string(),
            kind: text(item, "type", "exchange")?.to_string(),
            durable: flag(item, "durable")?,
            auto_delete: flag(item, "auto_delete")?,
            internal: flag(item, "internal")?,
            arguments: arguments(item)?,
        });
    }
    for item in items(body, "queues")? {
        ops.push(Operation::DeclareQueue {
            vhost: vhost_of(item)?,
            name: text(item, "name", "queue")?.to_string(),
            durable: flag(item, "durable")?,
            auto_delete: flag(item, "auto_delete")?,
            arguments: arguments(item)?,
        });
    }
    for item in items(body, "bindings")? {
        let destination = text(item, "destination", "binding")?.to_string();
        let destination = match text(item, "destination_type", "binding")? {
            "queue" => Destination::Queue(destination),
            "exchange" => Destination::Exchange(destination),
            other => return Err(format!("unknown destination_type {other}")),
        };
        let binding = Binding {
            source: text(item, "source", "binding")?.to_string(),
            destination,
            routing_key: text(item, "routing_key", "binding")?.to_string(),
            arguments: arguments(item)?,
        };
        ops.push(Operation::Bind {
            vhost: vhost_of(item)?,
            binding,
        });
    }
    for item in items(body, "parameters")? {
        let object = item.as_object().ok_or("parameter must be an object")?;
        let vhost = vhost_of(item)?;
        let component = text(item, "component", "parameter")?;
        if component == vhost_limits::COMPONENT {
            let value = item.get("value").unwrap_or(&Value::Null);
            ops.extend(vhost_limits::import_item(&vhost, value)?);
            continue;
        }
        let name = text(item, "name", "parameter")?;
        let parameter = parameters::parameter_from_json(component, &vhost, name, object)
            .map_err(|r| String::from_utf8_lossy(&r.body).into_owned())?;
        ops.push(Operation::Parameter(ParameterOp::Set(parameter)));
    }
    if ops.len() > MANAGEMENT_IMPORT_OPERATIONS_MAX {
        return Err(format!(
            "more than {MANAGEMENT_IMPORT_OPERATIONS_MAX} objects in one import"
        ));
    }
    Ok(ops)
}
