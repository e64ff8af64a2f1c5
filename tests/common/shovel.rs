//! Dynamic shovels through the management API, as RabbitMQ's shovel plugin serves them
//! (`/api/parameters/shovel/VHOST/NAME`, `/api/shovels`), for any broker that has them.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;

use super::admin::{encode, Admin};
use super::transfer::POLL_INTERVAL;

/// A parameter's value as the suites set it: amqp091 at both ends, `on-confirm` acks, at most
/// `prefetch` in flight, a 1 s reconnect delay; `destination` holds the `dest-*` keys.
pub fn on_confirm(
    src_uri: &str,
    src_queue: &str,
    dest_uri: &str,
    destination: Value,
    prefetch: usize,
) -> Value {
    let mut value = serde_json::json!({
        "src-protocol": "amqp091",
        "src-uri": src_uri,
        "src-queue": src_queue,
        "dest-protocol": "amqp091",
        "dest-uri": dest_uri,
        "ack-mode": "on-confirm",
        "src-prefetch-count": prefetch,
        "reconnect-delay": 1,
    });
    for (key, item) in destination.as_object().expect("destination keys") {
        value[key] = item.clone();
    }
    value
}

/// PUT `/api/parameters/shovel/VHOST/NAME` with `{"value": value}`: (status, body).
pub fn put(admin: &Admin, vhost: &str, name: &str, value: &Value) -> (u16, String) {
    let body = serde_json::json!({ "value": value }).to_string();
    admin.request("PUT", &path(vhost, name), Some(&body))
}

/// DELETE the shovel's parameter: (status, body).
pub fn delete(admin: &Admin, vhost: &str, name: &str) -> (u16, String) {
    admin.request("DELETE", &path(vhost, name), None)
}

pub fn path(vhost: &str, name: &str) -> String {
    format!("/parameters/shovel/{}/{}", encode(vhost), encode(name))
}

/// The status object of the shovel (vhost, name) in `GET /api/shovels`, if listed.
pub fn status(admin: &Admin, vhost: &str, name: &str) -> Option<Value> {
    let all = admin.get_json("/shovels");
    all.as_array()
        .unwrap_or_else(|| panic!("/api/shovels is not a list: {all}"))
        .iter()
        .find(|s| s["vhost"] == vhost && s["name"] == name)
        .cloned()
}

/// The shovel's status once it is in `state` (None while it is in another or not listed).
pub fn in_state(admin: &Admin, vhost: &str, name: &str, state: &str) -> Option<Value> {
    status(admin, vhost, name).filter(|s| s["state"] == state)
}

/// The status of shovel `name` in vhost "/" once it is in `state`, polled for at most `timeout`;
/// a timeout fails the test naming the statuses seen meanwhile.
pub async fn wait_state(admin: &Admin, name: &str, state: &str, timeout: Duration) -> Value {
    let mut seen = Vec::new();
    let found = tokio::time::timeout(timeout, async {
        loop {
            if let Some(status) = in_state(admin, "/", name, state) {
                return status;
            }
            let now = status(admin, "/", name);
            if seen.last() != Some(&now) {
                seen.push(now);
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("shovel {name} not {state} within {timeout:?}; seen {seen:?}"))
}

/// An object's keys, for comparing shapes.
pub fn keys(object: &Value) -> BTreeSet<String> {
    object
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {object}"))
        .keys()
        .cloned()
        .collect()
}

/// `keys` of a status must be RabbitMQ's for its state: these always, plus `extra`.
pub fn assert_status_keys(status: &Value, extra: &[&str]) {
    let expected: BTreeSet<String> = ["node", "timestamp", "name", "vhost", "type", "state"]
        .iter()
        .chain(extra)
        .map(|k| (*k).to_owned())
        .collect();
    assert_eq!(keys(status), expected, "status object: {status}");
    assert_eq!(status["type"], "dynamic", "{status}");
}
