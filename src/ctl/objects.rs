//! Verbs on live objects: close_connection, purge_queue, delete_queue.

use super::client::segment;
use super::error::CtlError;
use super::Context;

pub fn close_connection(cx: &Context, name: &str, explanation: &str) -> Result<String, CtlError> {
    let out = cx.info(&format!(
        "Closing connection \"{name}\", reason: {explanation}..."
    ));
    cx.client.delete_with_header(
        &format!("/connections/{}", segment(name)),
        &format!("connection '{name}'"),
        ("x-reason", explanation),
    )?;
    Ok(out)
}

fn queue_path(vhost: &str, name: &str) -> String {
    format!("/queues/{}/{}", segment(vhost), segment(name))
}

fn queue_what(vhost: &str, name: &str) -> String {
    format!("queue '{name}' in vhost '{vhost}'")
}

pub fn purge_queue(cx: &Context, vhost: &str, name: &str) -> Result<String, CtlError> {
    let out = cx.info(&format!("Purging queue '{name}' in vhost '{vhost}' ..."));
    cx.client.delete(
        &format!("{}/contents", queue_path(vhost, name)),
        &queue_what(vhost, name),
    )?;
    Ok(out)
}

/// What `delete_queue` may refuse on.
pub struct DeleteConditions {
    pub if_empty: bool,
    pub if_unused: bool,
}

pub fn delete_queue(
    cx: &Context,
    vhost: &str,
    name: &str,
    conditions: DeleteConditions,
) -> Result<String, CtlError> {
    let out = cx.info(&format!("Deleting queue '{name}' on vhost '{vhost}' ..."));
    let mut query = Vec::new();
    if conditions.if_empty {
        query.push("if-empty=true");
    }
    if conditions.if_unused {
        query.push("if-unused=true");
    }
    let mut path = queue_path(vhost, name);
    if !query.is_empty() {
        path = format!("{path}?{}", query.join("&"));
    }
    cx.client.delete(&path, &queue_what(vhost, name))?;
    Ok(out)
}
