//! The management API over blocking HTTP: one request at a time, each bounded by
//! `CTL_REQUEST_TIMEOUT`, answers read up to `CTL_RESPONSE_BYTES_MAX`. Every failure becomes a
//! `CtlError` with the exit code it deserves; nothing here panics on what the broker sends.

use std::io::Read;

use base64::Engine as _;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde_json::Value;

use super::error::CtlError;
use crate::limits::{CTL_REQUEST_TIMEOUT, CTL_RESPONSE_BYTES_MAX};

/// Where and as whom to talk: `--url`, `--username`, `--password` after env and defaults.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub url: String,
    pub username: String,
    pub password: String,
}

pub struct Client {
    base: String,
    username: String,
    authorization: String,
    agent: ureq::Agent,
}

/// One name as one URL path segment (`/` becomes `%2F`), as the API expects vhosts and names.
pub fn segment(name: &str) -> String {
    utf8_percent_encode(name, NON_ALPHANUMERIC).to_string()
}

impl Client {
    pub fn new(endpoint: &Endpoint) -> Client {
        let credentials = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", endpoint.username, endpoint.password));
        Client {
            base: endpoint.url.trim_end_matches('/').to_owned(),
            username: endpoint.username.clone(),
            authorization: format!("Basic {credentials}"),
            agent: ureq::AgentBuilder::new()
                .timeout(CTL_REQUEST_TIMEOUT)
                .build(),
        }
    }

    /// GET `path` (under `/api`); `what` names the object for a 404.
    pub fn get(&self, path: &str, what: &str) -> Result<Value, CtlError> {
        self.send(Request::new("GET", path, what))
    }

    pub fn put(&self, path: &str, body: &Value, what: &str) -> Result<Value, CtlError> {
        self.send(Request::new("PUT", path, what).body(body.to_string()))
    }

    pub fn post(&self, path: &str, body: String, what: &str) -> Result<Value, CtlError> {
        self.send(Request::new("POST", path, what).body(body))
    }

    pub fn delete(&self, path: &str, what: &str) -> Result<Value, CtlError> {
        self.send(Request::new("DELETE", path, what))
    }

    /// DELETE with a header, e.g. `X-Reason` for close_connection.
    pub fn delete_with_header(
        &self,
        path: &str,
        what: &str,
        header: (&str, &str),
    ) -> Result<Value, CtlError> {
        self.send(Request::new("DELETE", path, what).header(header))
    }

    fn send(&self, request: Request<'_>) -> Result<Value, CtlError> {
        let url = format!("{}/api{}", self.base, request.path);
        let mut call = self
            .agent
            .request(request.method, &url)
            .set("authorization", &self.authorization)
            .set("content-type", "application/json");
        if let Some((name, value)) = request.header {
            call = call.set(name, value);
        }
        let result = match request.body {
            Some(body) => call.send_string(&body),
            None => call.call(),
        };
        match result {
            Ok(response) => parse_body(&read_body(response)?),
            Err(ureq::Error::Status(status, response)) => {
                let reason = reason_of(&read_body(response).unwrap_or_default());
                Err(self.status_error(status, reason, request.what))
            }
            Err(ureq::Error::Transport(transport)) => Err(CtlError::Unreachable {
                url: self.base.clone(),
                reason: transport.to_string(),
            }),
        }
    }

    fn status_error(&self, status: u16, reason: String, what: &str) -> CtlError {
        match status {
            401 | 403 => CtlError::Auth {
                status,
                user: self.username.clone(),
                reason,
            },
            404 => CtlError::NotFound {
                what: what.to_owned(),
            },
            _ => CtlError::Api { status, reason },
        }
    }
}

struct Request<'a> {
    method: &'a str,
    path: &'a str,
    what: &'a str,
    body: Option<String>,
    header: Option<(&'a str, &'a str)>,
}

impl<'a> Request<'a> {
    fn new(method: &'a str, path: &'a str, what: &'a str) -> Request<'a> {
        Request {
            method,
            path,
            what,
            body: None,
            header: None,
        }
    }

    fn body(mut self, body: String) -> Request<'a> {
        self.body = Some(body);
        self
    }

    fn header(mut self, header: (&'a str, &'a str)) -> Request<'a> {
        self.header = Some(header);
        self
    }
}

fn read_body(response: ureq::Response) -> Result<String, CtlError> {
    let mut text = String::new();
    response
        .into_reader()
        .take(CTL_RESPONSE_BYTES_MAX)
        .read_to_string(&mut text)
        .map_err(|e| CtlError::Other(format!("reading the broker's answer: {e}")))?;
    Ok(text)
}

/// An empty answer (201, 204) is `null`; anything else must be JSON.
fn parse_body(text: &str) -> Result<Value, CtlError> {
    if text.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(text)
        .map_err(|e| CtlError::Other(format!("the broker's answer is not JSON: {e}")))
}

/// RabbitMQ's error bodies are `{"error": ..., "reason": ...}`; anything else is shown as is.
fn reason_of(text: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(text).ok();
    match parsed.as_ref().and_then(|v| v.get("reason")) {
        Some(Value::String(reason)) => reason.clone(),
        Some(other) => other.to_string(),
        None if text.trim().is_empty() => "no reason given".to_owned(),
        None => text.trim().to_owned(),
    }
}
