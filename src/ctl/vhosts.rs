//! Vhost and permission verbs: add_vhost, delete_vhost, set_permissions, clear_permissions.

use serde_json::json;

use super::client::segment;
use super::error::CtlError;
use super::Context;

fn vhost_path(name: &str) -> String {
    format!("/vhosts/{}", segment(name))
}

pub fn add_vhost(cx: &Context, name: &str) -> Result<String, CtlError> {
    let out = cx.info(&format!("Adding vhost \"{name}\" ..."));
    cx.client
        .put(&vhost_path(name), &json!({}), &format!("vhost '{name}'"))?;
    Ok(out)
}

pub fn delete_vhost(cx: &Context, name: &str) -> Result<String, CtlError> {
    let out = cx.info(&format!("Deleting vhost \"{name}\" ..."));
    cx.client
        .delete(&vhost_path(name), &format!("vhost '{name}'"))?;
    Ok(out)
}

fn permission_path(vhost: &str, user: &str) -> String {
    format!("/permissions/{}/{}", segment(vhost), segment(user))
}

/// `set_permissions -p VHOST USER CONF WRITE READ` (rabbitmqctl's order: configure, write, read).
pub fn set_permissions(
    cx: &Context,
    vhost: &str,
    user: &str,
    patterns: [&str; 3],
) -> Result<String, CtlError> {
    let out = cx.info(&format!(
        "Setting permissions for user \"{user}\" in vhost \"{vhost}\" ..."
    ));
    let [configure, write, read] = patterns;
    let body = json!({ "configure": configure, "write": write, "read": read });
    cx.client.put(
        &permission_path(vhost, user),
        &body,
        &format!("vhost '{vhost}' or user '{user}'"),
    )?;
    Ok(out)
}

pub fn clear_permissions(cx: &Context, vhost: &str, user: &str) -> Result<String, CtlError> {
    let out = cx.info(&format!(
        "Clearing permissions for user \"{user}\" in vhost \"{vhost}\" ..."
    ));
    cx.client.delete(
        &permission_path(vhost, user),
        &format!("permission of user '{user}' in vhost '{vhost}'"),
    )?;
    Ok(out)
}
