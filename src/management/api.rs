//! Routing, authentication and access by user tag for RabbitMQ's management paths.
//!
//! Sans-IO: [`Api::handle`] takes a plain [`Request`] (the HTTP server fills it) and returns a
//! [`Response`]; the broker is reached only through [`ManagementBackend`].

use std::cell::Cell;
use std::rc::Rc;
use std::time::Instant;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::Bytes;
use serde_json::{json, Value};

use super::backend::{ManagementBackend, StatsSnapshot};
use super::listing::{ListError, Query};
use super::objects::{QueueRates, View};
use super::rates::{OverviewRates, SharedRates};
use crate::broker::{AmqpError, Topology, User};

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Still percent-encoded: segments are split before decoding, so `%2F` names vhost "/".
    pub path: String,
    pub query: String,
    pub authorization: Option<String>,
    /// The `X-Reason` header: the reason a force-closed connection is given.
    pub x_reason: Option<String>,
    pub body: Bytes,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(status: u16, value: &Value) -> Response {
        Response {
            status,
            headers: vec![("content-type", "application/json".to_string())],
            body: serde_json::to_vec(value).unwrap_or_default(),
        }
    }

    pub fn empty(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn error(status: u16, error: &str, reason: &str) -> Response {
        Response::json(status, &json!({ "error": error, "reason": reason }))
    }

    pub fn not_found() -> Response {
        Response::error(404, "Object Not Found", "Not Found")
    }

    pub fn bad_request(reason: &str) -> Response {
        Response::error(400, "bad_request", reason)
    }

    pub fn not_authorised(reason: &str) -> Response {
        Response::error(401, "not_authorised", reason)
    }

    pub fn method_not_allowed(allow: &str) -> Response {
        let mut response = Response::empty(405);
        response.headers.push(("allow", allow.to_string()));
        response
    }

    fn with_header(mut self, name: &'static str, value: String) -> Response {
        self.headers.push((name, value));
        self
    }

    /// A broker refusal as RabbitMQ's management plugin reports it: its code picks the status,
    /// the text loses its `CODE - ` prefix.
    pub fn from_amqp(error: &AmqpError) -> Response {
        let reason = error
            .text
            .split_once(" - ")
            .map_or(error.text.as_str(), |(_, rest)| rest);
        match error.code {
            404 => Response::error(404, "not_found", reason),
            403 => Response::not_authorised("Access refused."),
            _ => Response::bad_request(reason),
        }
    }
}

/// The management tags RabbitMQ knows; any one of them lets a user in.
const MANAGEMENT_TAGS: [&str; 4] = ["administrator", "monitoring", "policymaker", "management"];

/// The authenticated user of one request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub tags: Vec<String>,
}

impl Caller {
    fn has(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }

    pub fn is_administrator(&self) -> bool {
        self.has("administrator")
    }

    /// Monitoring sees every vhost's objects (administrator implies it).
    pub fn is_monitor(&self) -> bool {
        self.is_administrator() || self.has("monitoring")
    }

    pub fn is_policymaker(&self) -> bool {
        self.is_administrator() || self.has("policymaker")
    }
}

/// What one request may see and do, with the snapshots it was decided on.
pub struct Context {
    pub caller: Caller,
    pub topology: Topology,
    pub query: Query,
    /// The request's `X-Reason` header (RabbitMQ's close reason for DELETE of a connection).
    pub x_reason: Option<String>,
}

impl Context {
    /// Vhosts whose objects the caller may see: all for monitoring, else those it has
    /// permissions in (RabbitMQ's `list_login_vhosts`).
    pub fn visible_vhost(&self, vhost: &str) -> bool {
        self.topology.vhost_exists(vhost)
            && (self.caller.is_monitor()
                || self.topology.permission(&self.caller.name, vhost).is_some())
    }

    pub fn require_administrator(&self) -> Result<(), Response> {
        if self.caller.is_administrator() {
            Ok(())
        } else {
            Err(Response::not_authorised("Not administrator user"))
        }
    }

    /// Policies and parameters: an administrator, or a policymaker with access to `vhost`
    /// (RabbitMQ's `is_authorized_vhost` with the policymaker tag).
    pub fn require_policymaker_in(&self, vhost: &str) -> Result<(), Response> {
        let allowed = self.caller.is_administrator()
            || (self.caller.is_policymaker()
                && self.topology.can_access_vhost(&self.caller.name, vhost));
        if allowed {
            Ok(())
        } else {
            Err(Response::not_authorised(
                "User not authorised to access object",
            ))
        }
    }

    pub fn require_monitor(&self) -> Result<(), Response> {
        if self.caller.is_monitor() {
            Ok(())
        } else {
            Err(Response::not_authorised("Not monitor user"))
        }
    }

    /// The vhost exists (else 404) and the caller may act in it (else 401).
    pub fn require_vhost(&self, vhost: &str) -> Result<(), Response> {
        if !self.topology.vhost_exists(vhost) {
            return Err(Response::error(404, "not_found", "vhost_not_found"));
        }
        if self.caller.is_administrator()
            || self.topology.permission(&self.caller.name, vhost).is_some()
        {
            return Ok(());
        }
        Err(Response::not_authorised(
            "User not authorised to access virtual host",
        ))
    }

    /// As an AMQP operation by the caller would be checked: a permission regex over the name.
    pub fn require_access(
        &self,
        vhost: &str,
        kind: crate::auth::Operation,
        resource: crate::auth::ResourceKind,
        name: &str,
    ) -> Result<(), Response> {
        self.require_vhost(vhost)?;
        let refused = || Response::not_authorised("Access refused.");
        let Some(permission) = self.topology.permission(&self.caller.name, vhost) else {
            return Err(refused());
        };
        let topic = self.topology.topic_permissions(&self.caller.name, vhost);
        let compiled =
            crate::auth::VhostPermissions::compile(&self.caller.name, vhost, permission, topic)
                .map_err(|_| refused())?;
        let access = crate::auth::Access {
            operation: kind,
            kind: resource,
            name,
        };
        if compiled.allows(&access) {
            Ok(())
        } else {
            Err(refused())
        }
    }
}

pub struct Api {
    pub(super) backend: Rc<dyn ManagementBackend>,
    rates: SharedRates,
    /// The overview's rates as of this API's last [`Api::stats`].
    overview_rates: Cell<OverviewRates>,
}

impl Api {
    /// `rates` is the store every shard's API shares (one per broker).
    pub fn new(backend: Rc<dyn ManagementBackend>, rates: SharedRates) -> Api {
        Api {
            backend,
            rates,
            overview_rates: Cell::new([0.0; 5]),
        }
    }

    pub async fn handle(&self, request: Request) -> Response {
        if !is_api_path(&request.path) {
            return super::ui::serve(&request.method, &request.path);
        }
        let Some(segments) = split_path(&request.path) else {
            return Response::not_found();
        };
        let topology = self.backend.topology().await;
        let caller = match authenticate(&topology, request.authorization.as_deref()) {
            Ok(caller) => caller,
            Err(response) => return response,
        };
        let context = Context {
            caller,
            topology,
            query: Query::parse(&request.query),
            x_reason: request.x_reason,
        };
        let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
        match super::routes::route(self, &context, &request.method, &segments, &request.body).await
        {
            Ok(response) | Err(response) => response,
        }
    }

    /// A stats snapshot and each queue's rates over the last few seconds.
    pub(super) async fn stats(&self) -> (StatsSnapshot, QueueRates) {
        let stats = self.backend.stats().await;
        let (rates, overview) = self.rates.observe(&stats, Instant::now());
        self.overview_rates.set(overview);
        (stats, rates)
    }

    /// The overview's publish, deliver_get, ack, confirm and redeliver rates as of the last
    /// [`Api::stats`].
    pub(super) fn overview_rates(&self) -> OverviewRates {
        self.overview_rates.get()
    }

    pub(super) fn view<'a>(
        topology: &'a Topology,
        stats: &'a StatsSnapshot,
        rates: &'a QueueRates,
    ) -> View<'a> {
        View {
            topology,
            stats,
            rates,
        }
    }
}

/// `/api` and what is under it; every other path is the web UI's.
fn is_api_path(path: &str) -> bool {
    path.strip_prefix("/api")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// `/api/a/b%2Fc` → ["a", "b/c"]; `None` if it is not under /api or not UTF-8 once decoded.
fn split_path(path: &str) -> Option<Vec<String>> {
    let rest = path.strip_prefix("/api")?;
    if !(rest.is_empty() || rest.starts_with('/')) {
        return None;
    }
    rest.split('/')
        .skip(1)
        .filter(|segment| !segment.is_empty())
        .map(|segment| {
            percent_encoding::percent_decode_str(segment)
                .decode_utf8()
                .ok()
                .map(|s| s.into_owned())
        })
        .collect()
}

const REALM: &str = "Basic realm=\"RabbitMQ Management\"";

/// HTTP basic auth against the user's stored hash, then RabbitMQ's tag rule.
fn authenticate(topology: &Topology, authorization: Option<&str>) -> Result<Caller, Response> {
    let challenge =
        |response: Response| response.with_header("www-authenticate", REALM.to_string());
    let Some(header) = authorization else {
        return Err(challenge(Response::empty(401)));
    };
    let login_failed = || challenge(Response::error(401, "not_authorized", "Login failed"));
    let (name, password) = parse_basic(header).ok_or_else(login_failed)?;
    let user: &User = topology.user(&name).ok_or_else(login_failed)?;
    if !user.password_hash.verify(&password) {
        return Err(login_failed());
    }
    if !user
        .tags
        .iter()
        .any(|t| MANAGEMENT_TAGS.contains(&t.as_str()))
    {
        return Err(Response::not_authorised("Not management user"));
    }
    Ok(Caller {
        name: user.name.clone(),
        tags: user.tags.clone(),
    })
}

fn parse_basic(header: &str) -> Option<(String, String)> {
    let (scheme, encoded) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(BASE64.decode(encoded.trim()).ok()?).ok()?;
    let (name, password) = decoded.split_once(':')?;
    Some((name.to_string(), password.to_string()))
}

pub fn list_response(result: Result<Value, ListError>) -> Response {
    match result {
        Ok(value) => Response::json(200, &value),
        Err(error) => Response::error(400, error.error, &error.reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_and_decodes_segments() {
        assert_eq!(
            split_path("/api/queues/%2F/a%20b").unwrap(),
            vec!["queues", "/", "a b"]
        );
        assert_eq!(split_path("/api").unwrap(), Vec::<String>::new());
        assert!(split_path("/apis").is_none());
        assert!(split_path("/other").is_none());
        assert!(split_path("/api/%FF").is_none());
    }

    #[test]
    fn amqp_errors_map_as_rabbitmq() {
        let mismatch = AmqpError::new(
            406,
            "PRECONDITION_FAILED - inequivalent arg 'durable'".into(),
        );
        assert_eq!(
            Response::from_amqp(&mismatch).body,
            br#"{"error":"bad_request","reason":"inequivalent arg 'durable'"}"#.to_vec()
        );
        let missing = AmqpError::new(404, "NOT_FOUND - no queue 'q' in vhost '/'".into());
        assert_eq!(Response::from_amqp(&missing).status, 404);
    }
}
