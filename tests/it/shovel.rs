//! Dynamic shovels, ringmq to ringmq: two brokers on loopback (their own ports and data
//! directories). A shovel set through the management API and one set with `ringmqctl
//! set_parameter shovel` move persistent messages from source queues on A to a queue and to an
//! exchange on B with `ack-mode: on-confirm`; B is killed (-9) mid-transfer and restarted; the
//! shovels reconnect with backoff and every message arrives, the only extra copies being
//! redeliveries of what was in flight at the kill. `/api/shovels` shows RabbitMQ's states and
//! shapes; clearing a parameter stops its shovel; refusals carry RabbitMQ's status codes.

use crate::common;

use std::time::Duration;

use common::admin::{encode, Admin};
use common::ctl::Ctl;
use common::shovel::{assert_status_keys, in_state, status};
use common::transfer::{drain_ids, eventually, extra_copies, ids, publish_ids, queue_counts};
use common::{amqp, step, unique, Broker};
use lapin::options::{ExchangeDeclareOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::ExchangeKind;
use serde_json::{json, Value};

/// Messages each shovel moves, published while it runs.
const MESSAGES: usize = 10_000;
/// The shovels' `src-prefetch-count`: at most this many in flight, so at most this many
/// extra copies per shovel after one kill.
const PREFETCH: usize = 200;
/// Bound on a whole transfer phase (a state the shovels must reach).
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound on a shovel reaching a state (its reconnect backoff stays under 30 s).
const STATE_TIMEOUT: Duration = Duration::from_secs(60);

fn queue_stat(admin: &Admin, queue: &str, key: &str) -> u64 {
    let path = format!("/queues/%2F/{}", encode(queue));
    let value = admin.get_json(&path);
    value[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{path}: no {key}: {value}"))
}

fn shovel_value(src_uri: &str, src_queue: &str, dest_uri: &str, dest: Value) -> Value {
    common::shovel::on_confirm(src_uri, src_queue, dest_uri, dest, PREFETCH)
}

async fn wait_state(admin: &Admin, name: &str, state: &str) -> Value {
    common::shovel::wait_state(admin, name, state, STATE_TIMEOUT).await
}

/// A running shovel's status: RabbitMQ's keys for both ends, `destination` naming the
/// destination's own (`dest_queue`, or `dest_exchange` and `dest_exchange_key`).
fn assert_running_keys(status: &Value, destination: &[&str]) {
    let ends = [
        "src_uri",
        "src_protocol",
        "dest_protocol",
        "dest_uri",
        "src_queue",
    ];
    let all: Vec<&str> = ends.iter().chain(destination).copied().collect();
    assert_status_keys(status, &all);
}

#[tokio::test(flavor = "multi_thread")]
async fn shovels_survive_a_destination_kill() {
    let source = Broker::start(2);
    let mut destination = Broker::start(2);
    let source_admin = Admin::for_broker(&source);
    let destination_admin = Admin::for_broker(&destination);
    let ctl = Ctl::for_broker(&source);

    let (q1, q2) = (unique("src-q"), unique("src-x"));
    let (dq1, dq2, dx) = (unique("dest-q"), unique("dest-xq"), unique("dest-x"));
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    let source_connection = amqp::connect(&source).await;
    let publisher = amqp::confirming_channel(&source_connection).await;
    for queue in [&q1, &q2] {
        amqp::declare_queue(&publisher, queue, durable)
            .await
            .expect("source queue");
    }
    {
        let connection = amqp::connect(&destination).await;
        let ch = amqp::channel(&connection).await;
        let durable_exchange = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        let declared = ch.exchange_declare(
            &dx,
            ExchangeKind::Direct,
            durable_exchange,
            FieldTable::default(),
        );
        step("exchange.declare", declared)
            .await
            .expect("exchange.declare");
        amqp::declare_queue(&ch, &dq2, durable)
            .await
            .expect("queue");
        amqp::bind(&ch, &dq2, &dx, "k2").await;
    }

    // S1 through the API, from this broker (`amqp://`) to a queue on B; S2 with ringmqctl,
    // from A's own URI to an exchange on B with a routing key of its own.
    let (s1, s2) = ("to-queue", "to-exchange");
    let value = shovel_value(
        "amqp://",
        &q1,
        &destination.url(),
        json!({"dest-queue": dq1}),
    );
    let (code, text) = common::shovel::put(&source_admin, "/", s1, &value);
    assert_eq!(code, 201, "{text}");
    let value = shovel_value(
        &source.url(),
        &q2,
        &destination.url(),
        json!({"dest-exchange": dx, "dest-exchange-key": "k2"}),
    );
    let set = ctl
        .run(&["set_parameter", "shovel", s2, &value.to_string()])
        .ok();
    assert!(set.contains("Setting runtime parameter"), "{set}");

    let running = wait_state(&source_admin, s1, "running").await;
    assert_running_keys(&running, &["dest_queue"]);
    assert_eq!(running["src_queue"], *q1);
    assert_eq!(running["dest_queue"], *dq1);
    assert_eq!(running["src_protocol"], "amqp091");
    let dest_uri = format!("amqp://127.0.0.1:{}/%2f", destination.port());
    assert_eq!(running["dest_uri"], *dest_uri, "credentials are not shown");
    let running = wait_state(&source_admin, s2, "running").await;
    assert_running_keys(&running, &["dest_exchange", "dest_exchange_key"]);
    let listed = ctl.json(&["shovel_status"]);
    for name in [s1, s2] {
        let row = listed
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["name"] == name))
            .unwrap_or_else(|| panic!("shovel_status without {name}: {listed}"));
        assert_eq!(row["state"], "running", "{row}");
    }
    let parameters = ctl.json(&["list_parameters"]);
    assert_eq!(parameters.as_array().map(Vec::len), Some(2), "{parameters}");
    let parameter = source_admin.get_json(&common::shovel::path("/", s1));
    assert_eq!(common::shovel::keys(&parameter).len(), 4, "{parameter}");
    assert_eq!(
        (
            &parameter["component"],
            &parameter["vhost"],
            &parameter["name"]
        ),
        (&json!("shovel"), &json!("/"), &json!(s1))
    );
    assert_eq!(parameter["value"]["dest-queue"], *dq1);

    // Publishers keep publishing while the shovels move messages; B dies a quarter of the way
    // through, with messages in flight, and comes back while A keeps queueing.
    let (ids1, ids2) = (ids("s1", 0..MESSAGES), ids("s2", 0..MESSAGES));
    let publishers: Vec<_> = [(q1.clone(), ids1.clone()), (q2.clone(), ids2.clone())]
        .into_iter()
        .map(|(queue, sent)| {
            let ch = publisher.clone();
            tokio::spawn(async move { publish_ids(&ch, "", &queue, &sent).await })
        })
        .collect();
    let quarter = (MESSAGES / 4) as u64;
    eventually("a quarter moved by each shovel", TRANSFER_TIMEOUT, || {
        let moving = queue_stat(&destination_admin, &dq1, "messages") >= quarter
            && queue_stat(&destination_admin, &dq2, "messages") >= quarter;
        std::future::ready(moving.then_some(()))
    })
    .await;
    destination.kill9();
    let in_flight = queue_stat(&source_admin, &q1, "messages_unacknowledged");
    // Each is `terminated` (with its reason) until its first retry, then `starting` while B
    // is down: one listing must show both terminated.
    let terminated = eventually("both shovels terminated", STATE_TIMEOUT, || {
        let both: Vec<Value> = [s1, s2]
            .iter()
            .filter_map(|name| in_state(&source_admin, "/", name, "terminated"))
            .collect();
        std::future::ready((both.len() == 2).then_some(both))
    })
    .await;
    for status in &terminated {
        assert_status_keys(status, &["reason"]);
        let reason = status["reason"].as_str().unwrap_or_default();
        assert!(reason.contains("destination"), "{status}");
    }
    destination.restart_same_dir();
    for task in publishers {
        tokio::time::timeout(TRANSFER_TIMEOUT, task)
            .await
            .expect("publishers done in time")
            .expect("publisher task");
    }

    // Everything leaves A (acknowledged there only once B confirmed it).
    for queue in [&q1, &q2] {
        eventually(&format!("{queue} emptied"), TRANSFER_TIMEOUT, || {
            std::future::ready((queue_stat(&source_admin, queue, "messages") == 0).then_some(()))
        })
        .await;
    }
    wait_state(&source_admin, s1, "running").await;

    // Clearing the parameters stops the shovels: their consumers leave A.
    let (code, text) = common::shovel::delete(&source_admin, "/", s1);
    assert_eq!(code, 204, "{text}");
    ctl.run(&["clear_parameter", "shovel", s2]).ok();
    for (name, queue) in [(s1, &q1), (s2, &q2)] {
        eventually(&format!("{name} stopped"), STATE_TIMEOUT, || {
            let gone = status(&source_admin, "/", name).is_none()
                && queue_stat(&source_admin, queue, "consumers") == 0;
            std::future::ready(gone.then_some(()))
        })
        .await;
    }
    let (code, _) = source_admin.request("GET", &common::shovel::path("/", s1), None);
    assert_eq!(code, 404);

    let connection = amqp::connect(&destination).await;
    let ch = amqp::channel(&connection).await;
    for (queue, sent) in [(&dq1, &ids1), (&dq2, &ids2)] {
        let (count, _) = queue_counts(&ch, queue).await;
        let received = drain_ids(&ch, queue, count as usize).await;
        let extra = extra_copies(&received, sent);
        eprintln!(
            "shovel into {queue}: {} sent, {} received, {extra} redelivered copies \
             ({in_flight} unacknowledged at the first source when B was killed)",
            sent.len(),
            received.len()
        );
        assert!(
            extra <= PREFETCH,
            "{extra} copies beyond the {PREFETCH} in flight at the kill"
        );
    }
    drop(source_connection);
}

/// A TCP listener that never answers: a shovel connecting to it stays `starting` until its
/// connect timeout.
fn silent_listener() -> std::net::TcpListener {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind a silent listener")
}

fn refused_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

#[tokio::test(flavor = "multi_thread")]
async fn states_and_refusals() {
    let broker = Broker::start(1);
    let admin = Admin::for_broker(&broker);
    let silent = silent_listener();
    let silent_uri = format!(
        "amqp://guest:guest@127.0.0.1:{}/%2f",
        silent.local_addr().expect("address").port()
    );
    let dest = json!({"dest-queue": "nowhere"});

    // Starting: connected, no connection.start yet. Clearing it stops it at once.
    let value = shovel_value(&silent_uri, "q", "amqp://", dest.clone());
    let (code, text) = common::shovel::put(&admin, "/", "silent", &value);
    assert_eq!(code, 201, "{text}");
    let starting = wait_state(&admin, "silent", "starting").await;
    assert_status_keys(&starting, &[]);
    let timestamp = starting["timestamp"].as_str().unwrap_or_default();
    assert!(
        timestamp.len() >= 18 && timestamp.as_bytes()[4] == b'-',
        "{timestamp}"
    );
    let (code, _) = common::shovel::put(&admin, "/", "silent", &value);
    assert_eq!(code, 204, "the same parameter again is an update");
    let (code, text) = common::shovel::delete(&admin, "/", "silent");
    assert_eq!(code, 204, "{text}");
    eventually("silent shovel gone", STATE_TIMEOUT, || {
        std::future::ready(status(&admin, "/", "silent").is_none().then_some(()))
    })
    .await;

    // Nothing listens at the source: as RabbitMQ's, the shovel stays `starting` through its
    // retries (each renews the timestamp), never `terminated`.
    let refused_uri = format!("amqp://127.0.0.1:{}", refused_port());
    let value = shovel_value(&refused_uri, "q", "amqp://", dest.clone());
    assert_eq!(common::shovel::put(&admin, "/", "refused", &value).0, 201);
    let first = wait_state(&admin, "refused", "starting").await;
    eventually("a retry of the refused shovel", STATE_TIMEOUT, || {
        let now = status(&admin, "/", "refused").expect("listed");
        assert_eq!(now["state"], "starting", "{now}");
        assert_status_keys(&now, &[]);
        std::future::ready((now["timestamp"] != first["timestamp"]).then_some(()))
    })
    .await;
    assert_eq!(common::shovel::delete(&admin, "/", "refused").0, 204);

    // Bad definitions: 400 with RabbitMQ's "Validation failed" lines.
    let bad_uri = shovel_value("foo://x", "q", "amqp://", dest.clone());
    let (code, text) = common::shovel::put(&admin, "/", "bad", &bad_uri);
    assert_eq!(code, 400, "{text}");
    let body: Value = serde_json::from_str(&text).expect("error body");
    assert_eq!(body["error"], "bad_request", "{body}");
    assert_eq!(
        body["reason"],
        "Validation failed\n\n\"foo://x\" not a valid URI: \
         {{unexpected_uri_scheme,\"foo\"},\"foo://x\"}\n",
        "{body}"
    );
    let unparsable = shovel_value("amqp://h:port", "q", "amqp://", dest.clone());
    let (code, text) = common::shovel::put(&admin, "/", "bad", &unparsable);
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("unable_to_parse_uri"), "{text}");
    let mut no_source = shovel_value("amqp://", "q", "amqp://", dest.clone());
    no_source
        .as_object_mut()
        .expect("object")
        .remove("src-queue");
    let (code, text) = common::shovel::put(&admin, "/", "bad", &no_source);
    assert_eq!(code, 400, "{text}");
    assert!(
        text.contains("Must specify 'src-exchange' or 'src-queue'"),
        "{text}"
    );
    let (code, _) = admin.request("GET", &common::shovel::path("/", "bad"), None);
    assert_eq!(code, 404, "nothing was stored");

    refusals_by_tag(
        &broker,
        &admin,
        &shovel_value(&silent_uri, "q", "amqp://", dest),
    )
    .await;
    drop(silent);
}

/// Who may set shovels and read their status: RabbitMQ's tags and codes.
async fn refusals_by_tag(broker: &Broker, admin: &Admin, value: &Value) {
    let password = "shovel-password";
    let users = [
        ("untagged", ""),
        ("manager", "management"),
        ("monitor", "monitoring"),
        ("policymaker", "policymaker"),
        ("outsider", "policymaker"),
    ];
    for (user, tags) in users {
        admin.put_user(user, password, tags);
        if user != "outsider" {
            admin.set_permissions("/", user, ".*", ".*", ".*");
        }
    }
    let as_user = |user: &str| Admin::new(broker.management_port(), user, password);
    let reason = |text: &str| -> String {
        let body: Value = serde_json::from_str(text).unwrap_or(Value::Null);
        body["reason"].as_str().unwrap_or_default().to_owned()
    };
    let put_as = |user: &str| common::shovel::put(&as_user(user), "/", "by-tag", value);

    let (code, text) = put_as("untagged");
    assert_eq!(
        (code, reason(&text)),
        (401, "Not management user".to_owned())
    );
    for user in ["manager", "monitor", "outsider"] {
        let (code, text) = put_as(user);
        assert_eq!(
            (code, reason(&text)),
            (401, "User not authorised to access object".to_owned()),
            "{user}"
        );
    }
    let (code, text) = as_user("manager").request("GET", "/shovels", None);
    assert_eq!(code, 401, "shovel status needs monitoring: {text}");
    let (code, text) = put_as("policymaker");
    assert_eq!(code, 201, "a policymaker with permissions may: {text}");
    let listed = as_user("monitor").get_json("/shovels");
    assert!(
        listed
            .as_array()
            .is_some_and(|all| all.iter().any(|s| s["name"] == "by-tag")),
        "{listed}"
    );
    let refused = Ctl::for_broker(broker).as_user("manager", password).run(&[
        "clear_parameter",
        "shovel",
        "by-tag",
    ]);
    assert_eq!(refused.code, Some(2), "ringmqctl refused: {refused:?}");
    let (code, _) = common::shovel::delete(&as_user("policymaker"), "/", "by-tag");
    assert_eq!(code, 204);
}
