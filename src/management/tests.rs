//! The API against the in-memory backend, compared with RabbitMQ 3.10.8's answers to the same
//! requests (tests/fixtures/management, captured from the oracle by the script in its README).

use std::rc::Rc;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::Bytes;
use serde_json::{json, Value};

use super::api::{Api, Request, Response};
use super::fake::FakeBackend;
use super::rates::SharedRates;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/management");

fn fixture(name: &str) -> Value {
    let text = std::fs::read_to_string(format!("{FIXTURES}/{name}")).expect("fixture");
    serde_json::from_str(&text).expect("fixture is JSON")
}

struct Harness {
    api: Api,
    backend: Rc<FakeBackend>,
}

impl Harness {
    fn new() -> Harness {
        let backend = Rc::new(FakeBackend::new());
        Harness {
            api: Api::new(Rc::new(backend.clone()), SharedRates::default()),
            backend,
        }
    }

    fn call_as(
        &self,
        user: &str,
        password: &str,
        method: &str,
        target: &str,
        body: &str,
    ) -> Response {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let request = Request {
            method: method.to_string(),
            path: path.to_string(),
            query: query.to_string(),
            authorization: Some(format!(
                "Basic {}",
                BASE64.encode(format!("{user}:{password}"))
            )),
            x_reason: None,
            body: Bytes::from(body.to_string()),
        };
        futures_lite::future::block_on(self.api.handle(request))
    }

    fn call(&self, method: &str, target: &str, body: &str) -> Response {
        self.call_as("guest", "guest", method, target, body)
    }

    fn status(&self, method: &str, target: &str, body: &str) -> u16 {
        self.call(method, target, body).status
    }

    fn json(&self, target: &str) -> Value {
        let response = self.call("GET", target, "");
        assert_eq!(
            response.status,
            200,
            "GET {target}: {}",
            String::from_utf8_lossy(&response.body)
        );
        serde_json::from_slice(&response.body).unwrap()
    }
}

fn body_json(response: &Response) -> Value {
    serde_json::from_slice(&response.body).unwrap_or(Value::Null)
}

/// Every key RabbitMQ wrote is in ours with the same value, except `volatile` keys (rates,
/// node names, memory, timestamps: compared by JSON type only) and `absent` keys (RabbitMQ
/// internals ringmq does not have: Erlang GC, backing queue status).
fn assert_like(ours: &Value, theirs: &Value, volatile: &[&str], absent: &[&str], path: &str) {
    match (ours, theirs) {
        (Value::Object(o), Value::Object(t)) => {
            for (key, value) in t {
                if absent.contains(&key.as_str()) {
                    continue;
                }
                let at = format!("{path}.{key}");
                let Some(mine) = o.get(key) else {
                    panic!("{at}: missing (RabbitMQ has {value})")
                };
                if volatile.contains(&key.as_str()) {
                    assert_eq!(
                        kind(mine),
                        kind(value),
                        "{at}: type differs ({mine} vs {value})"
                    );
                } else {
                    assert_like(mine, value, volatile, absent, &at);
                }
            }
        }
        (Value::Array(o), Value::Array(t)) => {
            assert_eq!(o.len(), t.len(), "{path}: length ({ours} vs {theirs})");
            for (index, (mine, value)) in o.iter().zip(t).enumerate() {
                assert_like(mine, value, volatile, absent, &format!("{path}[{index}]"));
            }
        }
        _ => assert_eq!(ours, theirs, "{path}"),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

const VOLATILE: &[&str] = &[
    "rate",
    "node",
    "memory",
    "user_who_performed_action",
    "password_hash",
    "cluster_state",
];
/// RabbitMQ-internal queue fields and stats ringmq does not keep.
const QUEUE_ABSENT: &[&str] = &[
    "backing_queue_status",
    "garbage_collection",
    "reductions",
    "reductions_details",
    "idle_since",
    "message_bytes_paged_out",
    "message_bytes_persistent",
    "message_bytes_ram",
    "message_bytes_ready",
    "message_bytes_unacknowledged",
    "messages_paged_out",
    "messages_persistent",
    "messages_ram",
    "messages_ready_ram",
    "messages_unacknowledged_ram",
];

/// The same steps as the capture: statuses as RabbitMQ answered them (statuses.txt).
fn build_scenario(h: &Harness) {
    let steps: &[(&str, &str, &str, u16)] = &[
        ("PUT", "/api/vhosts/mgmt-fx", "", 201),
        ("PUT", "/api/vhosts/mgmt-fx", "", 204),
        (
            "PUT",
            "/api/users/mgmt-u",
            r#"{"password":"pw","tags":"monitoring"}"#,
            201,
        ),
        (
            "PUT",
            "/api/users/mgmt-u",
            r#"{"password":"pw","tags":"monitoring"}"#,
            204,
        ),
        (
            "PUT",
            "/api/permissions/mgmt-fx/mgmt-u",
            r#"{"configure":".*","write":".*","read":".*"}"#,
            201,
        ),
        (
            "PUT",
            "/api/permissions/mgmt-fx/mgmt-u",
            r#"{"configure":".*","write":".*","read":".*"}"#,
            204,
        ),
        (
            "PUT",
            "/api/permissions/mgmt-fx/guest",
            r#"{"configure":".*","write":".*","read":".*"}"#,
            204,
        ),
        (
            "PUT",
            "/api/topic-permissions/mgmt-fx/mgmt-u",
            r#"{"exchange":"amq.topic","write":"^a","read":".*"}"#,
            201,
        ),
        (
            "PUT",
            "/api/exchanges/mgmt-fx/mgmt-x",
            r#"{"type":"topic","durable":true,"auto_delete":false,"internal":false,"arguments":{}}"#,
            201,
        ),
        (
            "PUT",
            "/api/exchanges/mgmt-fx/mgmt-x",
            r#"{"type":"topic","durable":true}"#,
            204,
        ),
        (
            "PUT",
            "/api/exchanges/mgmt-fx/mgmt-x",
            r#"{"type":"direct","durable":true}"#,
            400,
        ),
        (
            "PUT",
            "/api/queues/mgmt-fx/mgmt-q",
            r#"{"durable":true,"arguments":{"x-max-length":10}}"#,
            201,
        ),
        (
            "PUT",
            "/api/queues/mgmt-fx/mgmt-q",
            r#"{"durable":true,"arguments":{"x-max-length":10}}"#,
            204,
        ),
        (
            "POST",
            "/api/bindings/mgmt-fx/e/mgmt-x/q/mgmt-q",
            r#"{"routing_key":"a.b","arguments":{}}"#,
            201,
        ),
        (
            "POST",
            "/api/bindings/mgmt-fx/e/mgmt-x/q/mgmt-q",
            r#"{"routing_key":"a.c","arguments":{}}"#,
            201,
        ),
        (
            "POST",
            "/api/bindings/mgmt-fx/e/mgmt-x/e/amq.fanout",
            r#"{"routing_key":"k"}"#,
            201,
        ),
    ];
    for (method, path, body, status) in steps {
        let response = h.call(method, path, body);
        assert_eq!(
            response.status,
            *status,
            "{method} {path}: {}",
            String::from_utf8_lossy(&response.body)
        );
    }
    let publish =
        |body: &str| body_json(&h.call("POST", "/api/exchanges/mgmt-fx/mgmt-x/publish", body));
    assert_eq!(
        publish(
            r#"{"properties":{"delivery_mode":2,"headers":{"h":1}},"routing_key":"a.b","payload":"hello","payload_encoding":"string"}"#
        ),
        json!({"routed": true})
    );
    assert_eq!(
        publish(
            r#"{"properties":{},"routing_key":"none","payload":"x","payload_encoding":"string"}"#
        ),
        fixture("publish_unrouted.json")
    );
    assert_eq!(
        publish(
            r#"{"properties":{},"routing_key":"a.b","payload":"aGk=","payload_encoding":"base64"}"#
        ),
        fixture("publish_routed.json")
    );
}

#[test]
fn objects_match_rabbitmq() {
    let h = Harness::new();
    build_scenario(&h);
    assert_like(
        &h.json("/api/queues/mgmt-fx/mgmt-q"),
        &fixture("queue.json"),
        VOLATILE,
        QUEUE_ABSENT,
        "queue",
    );
    assert_like(
        &h.json("/api/queues/mgmt-fx"),
        &fixture("queues_vhost.json"),
        VOLATILE,
        QUEUE_ABSENT,
        "queues",
    );
    assert_like(
        &h.json("/api/queues/mgmt-fx?page=1&page_size=100&name=mgmt&use_regex=false"),
        &fixture("queues_paged.json"),
        VOLATILE,
        QUEUE_ABSENT,
        "paged",
    );
    assert_eq!(
        h.json("/api/queues/mgmt-fx?columns=name,messages"),
        fixture("queues_columns.json")
    );
    // RabbitMQ counts an exchange's publishes in and out; ringmq keeps no per-exchange stats.
    assert_like(
        &h.json("/api/exchanges/mgmt-fx/mgmt-x"),
        &fixture("exchange.json"),
        VOLATILE,
        &["message_stats"],
        "exchange",
    );
    assert_eq!(
        h.json("/api/bindings/mgmt-fx"),
        fixture("bindings_vhost.json")
    );
    assert_eq!(
        h.json("/api/bindings/mgmt-fx/e/mgmt-x/q/mgmt-q/a.b"),
        fixture("binding_props.json")
    );
    assert_eq!(
        h.json("/api/exchanges/mgmt-fx/mgmt-x/bindings/source"),
        fixture("exchange_bindings_source.json")
    );
    assert_eq!(
        h.json("/api/queues/mgmt-fx/mgmt-q/bindings"),
        fixture("queue_bindings.json")
    );
    // RabbitMQ's vhost also counts publishes and confirms per vhost; ringmq does not (yet).
    assert_like(
        &h.json("/api/vhosts/mgmt-fx"),
        &fixture("vhost.json"),
        VOLATILE,
        &["message_stats"],
        "vhost",
    );
    assert_like(
        &h.json("/api/users/mgmt-u"),
        &fixture("user.json"),
        VOLATILE,
        &[],
        "user",
    );
    assert_eq!(h.json("/api/whoami"), fixture("whoami.json"));
    assert_eq!(
        h.json("/api/permissions/mgmt-fx/mgmt-u"),
        fixture("permission.json")
    );
    assert_eq!(
        h.json("/api/topic-permissions/mgmt-fx/mgmt-u"),
        fixture("topic_permission.json")
    );
    assert_eq!(
        h.json("/api/users/mgmt-u/permissions"),
        fixture("user_permissions.json")
    );
    assert_eq!(
        h.json("/api/health/checks/alarms"),
        fixture("health_alarms.json")
    );
    assert_eq!(
        h.json("/api/health/checks/local-alarms"),
        fixture("health_local_alarms.json")
    );
    assert_eq!(
        h.json("/api/aliveness-test/mgmt-fx"),
        fixture("aliveness.json")
    );
    let overview = h.json("/api/overview");
    for key in [
        "management_version",
        "rabbitmq_version",
        "rates_mode",
        "exchange_types",
    ] {
        assert_eq!(
            overview[key],
            fixture("overview.json")[key],
            "overview.{key}"
        );
    }
    assert_eq!(overview["object_totals"]["queues"], 2);
}

fn sorted(mut value: Value) -> Value {
    for key in ["queues", "exchanges", "bindings"] {
        if let Some(Value::Array(items)) = value.get_mut(key) {
            items.sort_by_key(|item| item.to_string());
        }
    }
    value
}

#[test]
fn definitions_match_rabbitmq_and_round_trip() {
    let h = Harness::new();
    build_scenario(&h);
    assert_eq!(h.status("GET", "/api/aliveness-test/mgmt-fx", ""), 200);
    assert_eq!(
        sorted(h.json("/api/definitions/mgmt-fx")),
        sorted(fixture("definitions_vhost.json"))
    );

    // RabbitMQ's whole export imports as is: its users log in with their passwords.
    let fresh = Harness::new();
    let export = std::fs::read_to_string(format!("{FIXTURES}/definitions.json")).unwrap();
    let response = fresh.call("POST", "/api/definitions", &export);
    assert_eq!(
        response.status,
        204,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    let topology = fresh.backend.topology_now();
    assert!(topology.user("mgmt-u").unwrap().password_hash.verify("pw"));
    assert!(topology.queue("mgmt-fx", "mgmt-q").is_some());
    assert_eq!(topology.bindings_from("mgmt-fx", "mgmt-x").len(), 3);
    assert_eq!(topology.topic_permissions("pu", "probe").len(), 2);
    assert_eq!(
        fresh
            .call_as("mgmt-u", "pw", "GET", "/api/whoami", "")
            .status,
        200,
        "an imported monitoring user logs in"
    );
    // And ours imports into a fresh one, giving the same export.
    let ours = fresh.call("GET", "/api/definitions", "");
    let again = Harness::new();
    assert_eq!(
        again.status(
            "POST",
            "/api/definitions",
            std::str::from_utf8(&ours.body).unwrap()
        ),
        204
    );
    assert_eq!(
        body_json(&again.call("GET", "/api/definitions", "")),
        body_json(&ours)
    );
    // A policy RabbitMQ refuses (empty definition): refused before anything is applied.
    let with_policy = r#"{"vhosts":[{"name":"mgmt-p"}],"policies":[{"vhost":"/","name":"p","pattern":".*","definition":{}}]}"#;
    let response = again.call("POST", "/api/definitions", with_policy);
    assert_eq!(response.status, 400);
    assert!(!again.backend.topology_now().vhost_exists("mgmt-p"));
    // A valid one is imported after its vhost, and exported in RabbitMQ's shape.
    let with_policy = r#"{"vhosts":[{"name":"mgmt-p"}],"policies":[{"vhost":"mgmt-p","name":"p","pattern":"^q","apply-to":"queues","definition":{"max-length":3},"priority":2}]}"#;
    assert_eq!(
        again.call("POST", "/api/definitions", with_policy).status,
        204
    );
    let exported = body_json(&again.call("GET", "/api/definitions", ""));
    assert_eq!(
        exported["policies"],
        serde_json::json!([{"vhost":"mgmt-p","name":"p","pattern":"^q","apply-to":"queues","definition":{"max-length":3},"priority":2}])
    );
}

#[test]
fn errors_match_rabbitmq() {
    let h = Harness::new();
    build_scenario(&h);
    let cases: &[(&str, &str, &str, u16, &str)] = &[
        (
            "PUT",
            "/api/exchanges/mgmt-fx/mgmt-x",
            r#"{"type":"direct","durable":true}"#,
            400,
            "exchange_put_mismatch.json",
        ),
        (
            "PUT",
            "/api/queues/mgmt-fx/mgmt-q",
            r#"{"durable":false}"#,
            400,
            "queue_put_mismatch.json",
        ),
        (
            "PUT",
            "/api/queues/mgmt-fx/mgmt-q2",
            "{bad json",
            400,
            "bad_json.json",
        ),
        (
            "PUT",
            "/api/exchanges/mgmt-fx/mgmt-y",
            r#"{"type":"nope"}"#,
            400,
            "exchange_bad_type.json",
        ),
        (
            "PUT",
            "/api/queues/mgmt-missing/q",
            "{}",
            404,
            "queue_missing_vhost.json",
        ),
        ("GET", "/api/queues/mgmt-fx/nope", "", 404, "not_found.json"),
        (
            "POST",
            "/api/queues/mgmt-fx/mgmt-q/get",
            r#"{"count":5}"#,
            400,
            "queue_get_bad.json",
        ),
    ];
    for (method, path, body, status, expected) in cases {
        let response = h.call(method, path, body);
        assert_eq!(response.status, *status, "{method} {path}");
        assert_eq!(body_json(&response), fixture(expected), "{method} {path}");
    }
    let response = h.call("POST", "/api/vhosts", "");
    assert_eq!(
        (response.status, response.headers.clone()),
        (405, vec![("allow", "HEAD, GET, OPTIONS".to_string())])
    );
    assert_eq!(h.call("PATCH", "/api/queues", "").status, 405);
    // From the oracle, not saved as files: reasons RabbitMQ 3.10.8 gives.
    let expect = |method: &str, path: &str, body: &str, status: u16, value: Value| {
        let response = h.call(method, path, body);
        assert_eq!(
            (response.status, body_json(&response)),
            (status, value),
            "{method} {path}"
        );
    };
    expect(
        "PUT",
        "/api/exchanges/%2F/amq.mgmt-x",
        r#"{"type":"direct"}"#,
        401,
        json!({"error":"not_authorised","reason":"Access refused."}),
    );
    expect(
        "DELETE",
        "/api/exchanges/%2F/amq.direct",
        "",
        401,
        json!({"error":"not_authorised","reason":"Access refused."}),
    );
    expect(
        "POST",
        "/api/bindings/%2F/e/amq.direct/q/mgmt-none",
        r#"{"routing_key":"x"}"#,
        404,
        json!({"error":"not_found","reason":"no queue 'mgmt-none' in vhost '/'"}),
    );
    expect(
        "POST",
        "/api/bindings/%2F/e/mgmt-nonex/q/mgmt-none",
        r#"{"routing_key":"x"}"#,
        404,
        json!({"error":"not_found","reason":"no exchange 'mgmt-nonex' in vhost '/'"}),
    );
    expect(
        "PUT",
        "/api/queues/%2F/mgmt-q9",
        r#"{"durable":"yes"}"#,
        400,
        json!({"error":"bad_request","reason":["not_boolean","yes"]}),
    );
    expect(
        "PUT",
        "/api/users/mgmt-w",
        r#"{"passwordx":"a"}"#,
        400,
        json!({"error":"bad_request","reason":"tags_not_present"}),
    );
    expect(
        "PUT",
        "/api/permissions/%2F/mgmt-nouser",
        r#"{"configure":".*","write":".*","read":".*"}"#,
        400,
        json!({"error":"bad_request","reason":"vhost_or_user_not_found"}),
    );
    expect(
        "POST",
        "/api/exchanges/%2F/mgmt-nonex/publish",
        r#"{"properties":{},"routing_key":"a","payload":"x","payload_encoding":"string"}"#,
        400,
        json!({"error":"bad_request","reason":"404 NOT_FOUND - no exchange 'mgmt-nonex' in vhost '/'"}),
    );
    expect(
        "POST",
        "/api/queues/%2F/mgmt-nonex/get",
        r#"{"count":1,"ackmode":"ack_requeue_true","encoding":"auto"}"#,
        404,
        json!({"error":"not_found","reason":"NOT_FOUND - no queue 'mgmt-nonex' in vhost '/'"}),
    );
    expect(
        "DELETE",
        "/api/queues/%2F/mgmt-nonex/contents",
        "",
        404,
        fixture("not_found.json"),
    );
    expect(
        "DELETE",
        "/api/connections/nonex",
        "",
        404,
        fixture("not_found.json"),
    );
    expect("GET", "/api/nothing", "", 404, fixture("not_found.json"));
    expect(
        "GET",
        "/api/queues?page=0",
        "",
        400,
        json!({"error":"invalid_pagination_parameters","reason":"Invalid pagination parameters: page number 0, page size undefined"}),
    );
}

#[test]
fn get_and_purge_match_rabbitmq() {
    let h = Harness::new();
    build_scenario(&h);
    let get = r#"{"count":5,"ackmode":"ack_requeue_true","encoding":"auto","truncate":50000}"#;
    let response = h.call("POST", "/api/queues/mgmt-fx/mgmt-q/get", get);
    assert_eq!(body_json(&response), fixture("queue_get.json"));
    // Requeued: a second get sees them again, redelivered.
    let again = body_json(&h.call("POST", "/api/queues/mgmt-fx/mgmt-q/get", get));
    assert_eq!(again[0]["redelivered"], true);
    assert_eq!(
        h.status("DELETE", "/api/queues/mgmt-fx/mgmt-q/contents", ""),
        204
    );
    assert_eq!(h.json("/api/queues/mgmt-fx/mgmt-q")["messages"], 0);
}

#[test]
fn access_by_tag_as_rabbitmq() {
    let h = Harness::new();
    build_scenario(&h);
    let users = [("mgmt-none", ""), ("mgmt-m", "management")];
    for (name, tags) in users {
        let body = format!(r#"{{"password":"pw","tags":"{tags}"}}"#);
        assert_eq!(h.status("PUT", &format!("/api/users/{name}"), &body), 201);
    }
    assert_eq!(h.status("PUT", "/api/vhosts/mgmt-a", ""), 201);
    assert_eq!(
        h.status(
            "PUT",
            "/api/permissions/mgmt-a/mgmt-m",
            r#"{"configure":"^c","write":".*","read":".*"}"#
        ),
        201
    );
    let as_user = |user: &str, method: &str, path: &str| {
        let response = h.call_as(user, "pw", method, path, "{}");
        (response.status, body_json(&response))
    };
    assert_eq!(
        as_user("mgmt-none", "GET", "/api/overview"),
        (
            401,
            json!({"error":"not_authorised","reason":"Not management user"})
        )
    );
    let (status, _) = as_user("mgmt-none", "GET", "/api/whoami");
    assert_eq!(status, 401);
    let monitoring_users =
        std::fs::read_to_string(format!("{FIXTURES}/monitoring_users.txt")).unwrap();
    let expected: Value = serde_json::from_str(monitoring_users.lines().last().unwrap()).unwrap();
    assert_eq!(
        as_user("mgmt-u", "GET", "/api/users"),
        (401, expected.clone())
    );
    assert_eq!(
        as_user("mgmt-u", "PUT", "/api/vhosts/mgmt-other"),
        (401, expected)
    );
    assert_eq!(as_user("mgmt-u", "GET", "/api/queues").0, 200);
    assert_eq!(as_user("mgmt-m", "GET", "/api/queues"), (200, json!([])));
    assert_eq!(
        as_user("mgmt-m", "GET", "/api/queues/mgmt-fx"),
        (
            401,
            json!({"error":"not_authorised","reason":"User not authorised to access virtual host"})
        )
    );
    assert_eq!(
        as_user("mgmt-m", "PUT", "/api/queues/mgmt-a/q1"),
        (
            401,
            json!({"error":"not_authorised","reason":"Access refused."})
        )
    );
    assert_eq!(as_user("mgmt-m", "PUT", "/api/queues/mgmt-a/c1").0, 201);
    assert_eq!(
        as_user("mgmt-m", "GET", "/api/nodes"),
        (
            401,
            json!({"error":"not_authorised","reason":"Not monitor user"})
        )
    );
    assert_eq!(
        as_user("mgmt-m", "GET", "/api/definitions"),
        (
            401,
            json!({"error":"not_authorised","reason":"Not administrator user"})
        )
    );
    let (_, vhosts) = as_user("mgmt-m", "GET", "/api/vhosts");
    assert_eq!(vhosts.as_array().unwrap().len(), 1);
    // Wrong password and no credentials, as RabbitMQ.
    let wrong = h.call_as("guest", "nope", "GET", "/api/overview", "");
    assert_eq!(
        (wrong.status, body_json(&wrong)),
        (
            401,
            json!({"error":"not_authorized","reason":"Login failed"})
        )
    );
    let anonymous = futures_lite::future::block_on(h.api.handle(Request {
        method: "GET".into(),
        path: "/api/overview".into(),
        query: String::new(),
        authorization: None,
        x_reason: None,
        body: Bytes::new(),
    }));
    assert_eq!(anonymous.status, 401);
    assert!(anonymous
        .headers
        .iter()
        .any(|(k, v)| *k == "www-authenticate" && v == "Basic realm=\"RabbitMQ Management\""));
}

#[test]
fn deletes_as_rabbitmq() {
    let h = Harness::new();
    build_scenario(&h);
    let steps: &[(&str, &str, u16)] = &[
        ("DELETE", "/api/bindings/mgmt-fx/e/mgmt-x/q/mgmt-q/a.b", 204),
        ("DELETE", "/api/bindings/mgmt-fx/e/mgmt-x/q/mgmt-q/a.b", 404),
        ("DELETE", "/api/queues/mgmt-fx/mgmt-q", 204),
        ("DELETE", "/api/queues/mgmt-fx/mgmt-q", 404),
        ("DELETE", "/api/exchanges/mgmt-fx/mgmt-x", 204),
        ("DELETE", "/api/users/mgmt-u", 204),
        ("DELETE", "/api/users/mgmt-u", 404),
        ("DELETE", "/api/vhosts/mgmt-fx", 204),
        ("DELETE", "/api/vhosts/mgmt-fx", 404),
    ];
    for (method, path, status) in steps {
        assert_eq!(h.status(method, path, ""), *status, "{method} {path}");
    }
}

#[test]
fn http_server_serves_and_enforces_its_bounds() {
    use super::http::{serve, ServerOptions};
    use std::io::{Read, Write};
    use std::time::Duration;

    let listener_address = std::sync::mpsc::channel();
    let (stop_sender, stop_receiver) = std::sync::mpsc::channel::<()>();
    let server = std::thread::spawn(move || {
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let listener = glommio::net::TcpListener::bind("127.0.0.1:0").unwrap();
                listener_address
                    .0
                    .send(listener.local_addr().unwrap())
                    .unwrap();
                let backend = Rc::new(FakeBackend::new());
                let api = Rc::new(Api::new(Rc::new(backend), SharedRates::default()));
                let options = ServerOptions {
                    connections_max: 4,
                    request_body_bytes_max: 1024,
                    header_read_timeout: Duration::from_millis(300),
                };
                let stop = async move {
                    while stop_receiver.try_recv().is_err() {
                        glommio::timer::sleep(Duration::from_millis(10)).await;
                    }
                };
                serve(listener, api, options, stop).await;
            })
            .unwrap()
            .join()
            .unwrap();
    });
    let address = listener_address
        .1
        .recv_timeout(Duration::from_secs(10))
        .unwrap();
    let connect = || {
        let stream = std::net::TcpStream::connect(address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
    };
    let exchange = |request: &str| {
        let mut stream = connect();
        stream.write_all(request.as_bytes()).unwrap();
        let mut reply = String::new();
        let _ = stream.read_to_string(&mut reply);
        reply
    };
    let auth = format!("Authorization: Basic {}\r\n", BASE64.encode("guest:guest"));
    let reply = exchange(&format!(
        "GET /api/vhosts/%2F HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"
    ));
    assert!(reply.starts_with("HTTP/1.1 200 OK"), "{reply}");
    assert!(reply.contains("\"name\":\"/\""), "{reply}");
    // A body over the bound is refused with 413, not read whole.
    let big = "x".repeat(4096);
    let reply = exchange(&format!(
        "PUT /api/vhosts/big HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{big}",
        big.len()
    ));
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    // A client that never finishes its headers is cut off after the header read timeout.
    let mut silent = connect();
    silent.write_all(b"GET /api/overview HTTP/1.1\r\n").unwrap();
    let started = std::time::Instant::now();
    let mut sink = Vec::new();
    let _ = silent.read_to_end(&mut sink);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "header read timeout did not fire"
    );
    stop_sender.send(()).unwrap();
    server.join().unwrap();
}

#[test]
fn connections_channels_consumers_match_rabbitmq() {
    use super::backend::{ChannelStats, ConnectionStats, ConsumerStats};
    use crate::protocol::{FieldTable, FieldValue};
    let h = Harness::new();
    let name = "127.0.0.1:50728 -> 127.0.0.1:5682".to_string();
    let mut client_properties = FieldTable::default();
    client_properties.insert(
        "product",
        FieldValue::LongString(Bytes::from_static(b"mgmt-capture")),
    );
    h.backend.connections.borrow_mut().push(ConnectionStats {
        name: name.clone(),
        vhost: "/".into(),
        user: "guest".into(),
        peer_host: "127.0.0.1".into(),
        peer_port: 50728,
        host: "127.0.0.1".into(),
        port: 5682,
        channels: 0,
        channel_max: 2047,
        frame_max: 131072,
        heartbeat_seconds: 0,
        connected_at_ms: 1,
        received_bytes: 113,
        sent_bytes: 537,
        send_pending_bytes: 0,
        client_properties,
    });
    h.backend.channels.borrow_mut().push(ChannelStats {
        connection_name: name.clone(),
        number: 1,
        vhost: "/".into(),
        user: "guest".into(),
        consumer_count: 1,
        messages_unacknowledged: 0,
        prefetch_count: 5,
        confirm: false,
        transactional: false,
        ..ChannelStats::default()
    });
    h.backend.consumers.borrow_mut().push(ConsumerStats {
        vhost: "/".into(),
        queue: "mgmt-cq".into(),
        consumer_tag: "mgmt-ctag".into(),
        connection_name: name,
        channel_number: 1,
        ack_required: true,
        exclusive: false,
        prefetch_count: 5,
        arguments: FieldTable::default(),
    });
    let volatile = [VOLATILE, &["connected_at"]].concat();
    // RabbitMQ-internal process and TLS fields ringmq does not have.
    let absent = [
        "garbage_collection",
        "reductions",
        "reductions_details",
        "idle_since",
        "recv_cnt",
        "send_cnt",
        "peer_cert_issuer",
        "peer_cert_subject",
        "peer_cert_validity",
        "ssl_cipher",
        "ssl_hash",
        "ssl_key_exchange",
        "ssl_protocol",
        "pending_raft_commands",
    ];
    assert_like(
        &h.json("/api/connections"),
        &fixture("connections_open.json"),
        &volatile,
        &absent,
        "connections",
    );
    assert_like(
        &h.json("/api/channels"),
        &fixture("channels_open.json"),
        &volatile,
        &absent,
        "channels",
    );
    assert_like(
        &h.json("/api/consumers"),
        &fixture("consumers_open.json"),
        &volatile,
        &absent,
        "consumers",
    );
    assert_eq!(
        h.status(
            "DELETE",
            "/api/connections/127.0.0.1%3A50728%20-%3E%20127.0.0.1%3A5682",
            ""
        ),
        204
    );
    assert_eq!(h.backend.closed.borrow().len(), 1);
    assert_eq!(h.json("/api/connections"), json!([]));
}

fn unauthenticated(h: &Harness, method: &str, path: &str) -> Response {
    futures_lite::future::block_on(h.api.handle(Request {
        method: method.into(),
        path: path.into(),
        query: String::new(),
        authorization: None,
        x_reason: None,
        body: Bytes::new(),
    }))
}

fn content_type(response: &Response) -> &str {
    response
        .headers
        .iter()
        .find(|(name, _)| *name == "content-type")
        .map_or("", |(_, value)| value.as_str())
}

#[test]
fn the_ui_is_served_beside_the_api() {
    let h = Harness::new();
    let page = unauthenticated(&h, "GET", "/");
    assert_eq!(page.status, 200);
    assert_eq!(content_type(&page), "text/html; charset=utf-8");
    assert!(String::from_utf8_lossy(&page.body).contains("/js/app.js"));
    let script = unauthenticated(&h, "GET", "/js/queues.js");
    assert_eq!(
        (script.status, content_type(&script)),
        (200, "text/javascript; charset=utf-8")
    );
    let style = unauthenticated(&h, "GET", "/css/ringmq.css");
    assert_eq!(
        (style.status, content_type(&style)),
        (200, "text/css; charset=utf-8")
    );
    assert_eq!(unauthenticated(&h, "GET", "/js/missing.js").status, 404);
    assert_eq!(unauthenticated(&h, "GET", "/apis").status, 404);
    assert_eq!(unauthenticated(&h, "DELETE", "/").status, 405);
    // The API still answers under /api, with its own authentication.
    assert_eq!(unauthenticated(&h, "GET", "/api/overview").status, 401);
    assert_eq!(unauthenticated(&h, "GET", "/api/index.html").status, 401);
    let overview = h.call("GET", "/api/overview", "");
    assert_eq!(
        (overview.status, content_type(&overview)),
        (200, "application/json")
    );
    assert_eq!(h.status("GET", "/api/no-such-thing", ""), 404);
    assert_eq!(h.status("GET", "/api/js/app.js", ""), 404);
}

#[test]
fn shards_endpoint_shows_each_shards_figures() {
    let h = Harness::new();
    assert_eq!(h.status("PUT", "/api/queues/%2F/q1", "{}"), 201);
    assert_eq!(h.status("PUT", "/api/queues/%2F/q2", "{}"), 201);
    let value = h.json("/api/ringmq/shards");
    let shard = &value["shards"][0];
    assert_eq!(shard["shard"], 0);
    assert_eq!(shard["busy_fraction"], 0.25);
    assert_eq!(shard["queues"], 2);
    assert_eq!(shard["connections"], 0);
    assert_eq!(shard["links"], json!([]));
    let latency = &shard["enqueue_to_deliver_ns"];
    assert_eq!(latency["count"], 4);
    assert_eq!(latency["p50"], 2_000);
    assert_eq!(latency["p99"], 4_000);
    assert_eq!(latency["buckets"][0], json!([1_000, 1]));
    assert_eq!(shard["log_batch_bytes"]["p99"], 4_096);
    assert_eq!(shard["log_fdatasync_ns"]["p50"], 1_024_000);
    assert_eq!(value["publish_to_deliver"], Value::Null);
    assert!(value["publish_to_deliver_note"]
        .as_str()
        .is_some_and(|note| note.contains("--trace-latency")));
    assert_eq!(h.status("POST", "/api/ringmq/shards", "{}"), 405);
}

#[test]
fn shards_endpoint_is_for_monitoring_users_only() {
    let h = Harness::new();
    for (name, tags) in [("ui-m", "management"), ("ui-mon", "monitoring")] {
        let body = format!(r#"{{"password":"pw","tags":"{tags}"}}"#);
        assert_eq!(h.status("PUT", &format!("/api/users/{name}"), &body), 201);
    }
    let refused = h.call_as("ui-m", "pw", "GET", "/api/ringmq/shards", "");
    assert_eq!(
        (refused.status, body_json(&refused)),
        (
            401,
            json!({"error":"not_authorised","reason":"Not monitor user"})
        )
    );
    assert_eq!(
        h.call_as("ui-mon", "pw", "GET", "/api/ringmq/shards", "")
            .status,
        200
    );
    assert_eq!(
        h.call_as("ui-mon", "wrong", "GET", "/api/ringmq/shards", "")
            .status,
        401
    );
    assert_eq!(unauthenticated(&h, "GET", "/api/ringmq/shards").status, 401);
}

#[test]
fn overview_counts_confirms_and_redeliveries() {
    let h = Harness::new();
    let stats = &h.json("/api/overview")["message_stats"];
    for key in ["publish", "deliver_get", "ack", "confirm", "redeliver"] {
        assert!(stats[key].is_u64(), "{key}: {stats}");
        assert!(stats[format!("{key}_details")]["rate"].is_number(), "{key}");
    }
}
