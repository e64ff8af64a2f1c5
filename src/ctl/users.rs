//! User verbs: add_user, delete_user, change_password, set_user_tags.

use serde_json::{json, Value};

use super::client::segment;
use super::error::CtlError;
use super::Context;

fn path(name: &str) -> String {
    format!("/users/{}", segment(name))
}

fn what(name: &str) -> String {
    format!("user '{name}'")
}

/// rabbitmqctl refuses to overwrite an existing user; so do we (the API's PUT would).
pub fn add_user(cx: &Context, name: &str, password: &str) -> Result<String, CtlError> {
    let mut out = cx.info(&format!("Adding user \"{name}\" ..."));
    match cx.client.get(&path(name), &what(name)) {
        Ok(_) => return Err(CtlError::Other(format!("user '{name}' already exists"))),
        Err(CtlError::NotFound { .. }) => {}
        Err(other) => return Err(other),
    }
    let body = json!({ "password": password, "tags": "" });
    cx.client.put(&path(name), &body, &what(name))?;
    out.push_str(&cx.info(
        "Done. Don't forget to grant the user permissions to some virtual hosts! \
         See 'ringmqctl set_permissions --help' to learn more.",
    ));
    Ok(out)
}

pub fn delete_user(cx: &Context, name: &str) -> Result<String, CtlError> {
    let out = cx.info(&format!("Deleting user \"{name}\" ..."));
    cx.client.delete(&path(name), &what(name))?;
    Ok(out)
}

/// Keeps the user's tags: the API's PUT replaces the whole user.
pub fn change_password(cx: &Context, name: &str, password: &str) -> Result<String, CtlError> {
    let out = cx.info(&format!("Changing password for user \"{name}\" ..."));
    let existing = cx.client.get(&path(name), &what(name))?;
    let tags = existing
        .get("tags")
        .cloned()
        .unwrap_or(Value::Array(Vec::new()));
    let body = json!({ "password": password, "tags": tags_text(&tags) });
    cx.client.put(&path(name), &body, &what(name))?;
    Ok(out)
}

/// Keeps the user's password: its hash is sent back with the new tags (RabbitMQ's API would
/// otherwise leave the user without a password).
pub fn set_user_tags(cx: &Context, name: &str, tags: &[String]) -> Result<String, CtlError> {
    let out = cx.info(&format!(
        "Setting tags for user \"{name}\" to [{}] ...",
        tags.join(", ")
    ));
    let existing = cx.client.get(&path(name), &what(name))?;
    let mut body = json!({ "tags": tags.join(",") });
    for key in ["password_hash", "hashing_algorithm"] {
        if let (Some(value), Some(object)) = (existing.get(key), body.as_object_mut()) {
            object.insert(key.to_owned(), value.clone());
        }
    }
    cx.client.put(&path(name), &body, &what(name))?;
    Ok(out)
}

/// Tags as the API returns them (a list, or a comma-separated string before 3.9) as a PUT's
/// comma-separated string.
fn tags_text(tags: &Value) -> String {
    match tags {
        Value::String(text) => text.clone(),
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(","),
        _ => String::new(),
    }
}
