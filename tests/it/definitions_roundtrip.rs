//! Definitions between RabbitMQ 3.10.8 and ringmq, both ways: users (with their password
//! hashes), vhosts, permissions, exchanges, queues, bindings, policies and vhost limits exported
//! by one import into the other, and the users log in over AMQP with their passwords.
//!
//! The test starts its own private RabbitMQ (its own node name, ports, data and log
//! directories, HOME and so Erlang cookie, all in a temporary directory) and stops it on drop;
//! another RabbitMQ on this machine (the default node name, 5682/15682) is never touched.
//! Skipped, with the reason printed, when rabbitmq-server is not installed.

use crate::common;

use common::admin::{encode, Admin};
use common::rabbitmq::{rabbitmq_installed, RabbitMq, RABBITMQ_SERVER};
use common::{amqp, unique, Broker};
use lapin::options::{ExchangeDeclareOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties, ExchangeKind};
use serde_json::{json, Value};

/// The vhost limit each side sets: definitions carry it as a `vhost-limits` parameter.
const VHOST_MAX_CONNECTIONS: i64 = 7;

/// What one side creates and the other must have after the import.
struct Objects {
    vhost: String,
    user: String,
    password: String,
    exchange: String,
    queue: String,
    routing_key: String,
    policy: String,
}

impl Objects {
    fn named(prefix: &str) -> Objects {
        Objects {
            vhost: unique(&format!("{prefix}-vhost")),
            user: unique(&format!("{prefix}-user")),
            password: unique("password"),
            exchange: unique(&format!("{prefix}-x")),
            queue: unique(&format!("{prefix}-q")),
            policy: unique(&format!("{prefix}-policy")),
            routing_key: "round.trip.#".to_owned(),
        }
    }

    /// Through the management API, as an operator would.
    fn create(&self, admin: &Admin) {
        admin.put_vhost(&self.vhost);
        admin.put_user(&self.user, &self.password, "");
        admin.set_permissions(&self.vhost, &self.user, ".*", ".*", ".*");
        let vhost = encode(&self.vhost);
        let exchange_body = json!({"type": "topic", "durable": true}).to_string();
        let path = format!("/exchanges/{vhost}/{}", encode(&self.exchange));
        expect_success(admin, "PUT", &path, Some(&exchange_body));
        let queue_body = json!({"durable": true, "arguments": {"x-max-length": 100}}).to_string();
        let path = format!("/queues/{vhost}/{}", encode(&self.queue));
        expect_success(admin, "PUT", &path, Some(&queue_body));
        let binding_body = json!({"routing_key": self.routing_key}).to_string();
        let path = format!(
            "/bindings/{vhost}/e/{}/q/{}",
            encode(&self.exchange),
            encode(&self.queue)
        );
        expect_success(admin, "POST", &path, Some(&binding_body));
        let policy_body = json!({
            "pattern": format!("^{}$", self.queue),
            "definition": {"max-length": 50, "message-ttl": 60000},
            "apply-to": "queues",
            "priority": 3,
        })
        .to_string();
        let path = format!("/policies/{vhost}/{}", encode(&self.policy));
        expect_success(admin, "PUT", &path, Some(&policy_body));
        let limit_body = json!({"value": VHOST_MAX_CONNECTIONS}).to_string();
        let path = format!("/vhost-limits/{vhost}/max-connections");
        expect_success(admin, "PUT", &path, Some(&limit_body));
    }

    /// The objects exist on the importing side (read through its API).
    fn check_api(&self, admin: &Admin) {
        let vhost = encode(&self.vhost);
        let path = format!("/policies/{vhost}/{}", encode(&self.policy));
        let (status, text) = admin.request("GET", &path, None);
        assert_eq!(status, 200, "{text}");
        let policy: Value = serde_json::from_str(&text).expect("policy json");
        assert_eq!(policy["apply-to"], "queues", "{policy}");
        assert_eq!(policy["priority"], 3, "{policy}");
        assert_eq!(policy["definition"]["max-length"], 50, "{policy}");
        assert_eq!(policy["definition"]["message-ttl"], 60000, "{policy}");
        let (status, text) = admin.request("GET", &format!("/vhost-limits/{vhost}"), None);
        assert_eq!(status, 200, "{text}");
        let limits: Value = serde_json::from_str(&text).expect("vhost limits json");
        assert_eq!(
            limits[0]["value"],
            json!({"max-connections": VHOST_MAX_CONNECTIONS}),
            "vhost limits (a `vhost-limits` parameter in the definitions): {limits}"
        );
        let (status, text) = admin.request("GET", &format!("/bindings/{vhost}"), None);
        assert_eq!(status, 200, "{text}");
        let bindings: Value = serde_json::from_str(&text).expect("bindings json");
        let bound = bindings.as_array().is_some_and(|all| {
            all.iter().any(|b| {
                b["source"] == *self.exchange
                    && b["destination"] == *self.queue
                    && b["routing_key"] == *self.routing_key
            })
        });
        assert!(bound, "binding missing: {bindings}");
        let path = format!("/queues/{vhost}/{}", encode(&self.queue));
        let (status, text) = admin.request("GET", &path, None);
        assert_eq!(status, 200, "{text}");
        let queue: Value = serde_json::from_str(&text).expect("queue json");
        assert_eq!(queue["durable"], true);
        assert_eq!(queue["arguments"]["x-max-length"], 100);
        let path = format!("/exchanges/{vhost}/{}", encode(&self.exchange));
        let (status, text) = admin.request("GET", &path, None);
        assert_eq!(status, 200, "{text}");
        let exchange: Value = serde_json::from_str(&text).expect("exchange json");
        assert_eq!(exchange["type"], "topic");
    }

    /// The user logs in over AMQP with its password and sees the exchange and the queue.
    async fn check_login(&self, amqp_port: u16) {
        let url = format!(
            "amqp://{}:{}@127.0.0.1:{amqp_port}/{}",
            self.user,
            self.password,
            encode(&self.vhost)
        );
        let connection = common::step(
            "login",
            Connection::connect(&url, ConnectionProperties::default()),
        )
        .await
        .unwrap_or_else(|e| panic!("{} cannot log in on port {amqp_port}: {e}", self.user));
        let channel = amqp::channel(&connection).await;
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        amqp::declare_queue(&channel, &self.queue, passive)
            .await
            .expect("the imported queue exists");
        let passive = ExchangeDeclareOptions {
            passive: true,
            ..ExchangeDeclareOptions::default()
        };
        common::step(
            "exchange.declare passive",
            channel.exchange_declare(
                &self.exchange,
                ExchangeKind::Topic,
                passive,
                FieldTable::default(),
            ),
        )
        .await
        .expect("the imported exchange exists");
        let wrong = format!(
            "amqp://{}:not-the-password@127.0.0.1:{amqp_port}/{}",
            self.user,
            encode(&self.vhost)
        );
        let refused = common::step(
            "wrong login",
            Connection::connect(&wrong, ConnectionProperties::default()),
        )
        .await;
        assert!(refused.is_err(), "a wrong password was accepted");
    }
}

fn expect_success(admin: &Admin, method: &str, path: &str, body: Option<&str>) {
    let (status, text) = admin.request(method, path, body);
    assert!(
        (200..300).contains(&status),
        "{method} {path}: {status} {text}"
    );
}

/// GET /api/definitions from one side, POST it to the other.
fn transfer(from: &Admin, to: &Admin) -> Value {
    let (status, definitions) = from.request("GET", "/definitions", None);
    assert_eq!(status, 200, "export: {definitions}");
    let (status, text) = to.request("POST", "/definitions", Some(&definitions));
    assert!((200..300).contains(&status), "import: {status} {text}");
    serde_json::from_str(&definitions).expect("definitions json")
}

#[tokio::test(flavor = "multi_thread")]
async fn definitions_round_trip_with_rabbitmq() {
    if !rabbitmq_installed() {
        eprintln!(
            "SKIPPED definitions_round_trip: rabbitmq-server is not installed ({RABBITMQ_SERVER})"
        );
        return;
    }
    let rabbit = RabbitMq::start();
    let ringmq = Broker::start(2);
    let rabbit_admin = rabbit.admin();
    let ringmq_admin = Admin::for_broker(&ringmq);

    let from_rabbit = Objects::named("from-rabbit");
    from_rabbit.create(&rabbit_admin);
    let exported = transfer(&rabbit_admin, &ringmq_admin);
    assert_eq!(
        exported["rabbit_version"], "3.10.8",
        "the oracle is RabbitMQ 3.10.8"
    );
    from_rabbit.check_api(&ringmq_admin);
    from_rabbit.check_login(ringmq.port()).await;

    let from_ringmq = Objects::named("from-ringmq");
    from_ringmq.create(&ringmq_admin);
    transfer(&ringmq_admin, &rabbit_admin);
    from_ringmq.check_api(&rabbit_admin);
    from_ringmq.check_login(rabbit.port).await;
    drop(ringmq);
    drop(rabbit);
}
