//! Policy and runtime parameter verbs: set_policy, clear_policy, set_parameter,
//! clear_parameter (list_policies, list_parameters are listings). RabbitMQ's shapes: PUT
//! /api/policies/{vhost}/{name} with pattern, definition, priority and apply-to; PUT
//! /api/parameters/{component}/{vhost}/{name} with value.

use serde_json::{json, Value};

use super::client::segment;
use super::error::CtlError;
use super::Context;

/// What `set_policy` was given, after parsing.
pub struct PolicySpec<'a> {
    pub vhost: &'a str,
    pub name: &'a str,
    pub pattern: &'a str,
    pub definition: &'a str,
    pub priority: i64,
    pub apply_to: &'a str,
}

fn path(vhost: &str, name: &str) -> String {
    format!("/policies/{}/{}", segment(vhost), segment(name))
}

pub fn set_policy(cx: &Context, spec: &PolicySpec<'_>) -> Result<String, CtlError> {
    let out = cx.info(&format!(
        "Setting policy \"{}\" for pattern \"{}\" to \"{}\" with priority \"{}\" for vhost \"{}\" ...",
        spec.name, spec.pattern, spec.definition, spec.priority, spec.vhost
    ));
    let definition: Value = serde_json::from_str(spec.definition)
        .map_err(|e| CtlError::Usage(format!("the policy definition is not JSON: {e}")))?;
    if !definition.is_object() {
        return Err(CtlError::Usage(
            "the policy definition must be a JSON object, e.g. '{\"max-length\":10}'".to_owned(),
        ));
    }
    let body = json!({
        "pattern": spec.pattern,
        "definition": definition,
        "priority": spec.priority,
        "apply-to": spec.apply_to,
    });
    cx.client.put(
        &path(spec.vhost, spec.name),
        &body,
        &format!("vhost '{}'", spec.vhost),
    )?;
    Ok(out)
}

pub fn clear_policy(cx: &Context, vhost: &str, name: &str) -> Result<String, CtlError> {
    let out = cx.info(&format!(
        "Clearing policy \"{name}\" on vhost \"{vhost}\" ..."
    ));
    cx.client.delete(
        &path(vhost, name),
        &format!("policy '{name}' in vhost '{vhost}'"),
    )?;
    Ok(out)
}

pub fn set_parameter(
    cx: &Context,
    vhost: &str,
    (component, name): (&str, &str),
    value: &str,
) -> Result<String, CtlError> {
    let out = cx.info(&format!(
        "Setting runtime parameter \"{name}\" for component \"{component}\" to \"{value}\" in vhost \"{vhost}\" ..."
    ));
    let value: Value = serde_json::from_str(value)
        .map_err(|e| CtlError::Usage(format!("the parameter value is not JSON: {e}")))?;
    cx.client.put(
        &parameter_path(vhost, component, name),
        &json!({ "value": value }),
        &format!("vhost '{vhost}'"),
    )?;
    Ok(out)
}

pub fn clear_parameter(
    cx: &Context,
    vhost: &str,
    component: &str,
    name: &str,
) -> Result<String, CtlError> {
    let out = cx.info(&format!(
        "Clearing runtime parameter \"{name}\" for component \"{component}\" on vhost \"{vhost}\" ..."
    ));
    cx.client.delete(
        &parameter_path(vhost, component, name),
        &format!("parameter '{name}' of component '{component}' in vhost '{vhost}'"),
    )?;
    Ok(out)
}

fn parameter_path(vhost: &str, component: &str, name: &str) -> String {
    format!(
        "/parameters/{}/{}/{}",
        segment(component),
        segment(vhost),
        segment(name)
    )
}
