//! Users, vhosts and permissions enforced on the AMQP side, with users made the way an
//! operator provisions a broker without HTTP: `--load-definitions` (RabbitMQ's
//! `load_definitions`) and `--default-user`/`--default-pass`. 1 and 2 shards. The expected
//! texts are RabbitMQ 3.10.8's (tests/pending/permissions.rs runs the same checks against it
//! through its management API).

use crate::common;

use common::amqp::{channel, connect_url, expect_code_and_text, reply_code};
use common::{step, unique, Broker, SHARD_COUNTS};
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use ringmq::auth::{HashingAlgorithm, PasswordHash};

const ACCESS_REFUSED: u16 = 403;
const NOT_ALLOWED: u16 = 530;
const VHOST: &str = "pv";
const USER: &str = "pu";
const PASSWORD: &str = "pu-secret";

/// A definitions file in RabbitMQ's export format, removed on drop.
struct DefinitionsFile(std::path::PathBuf);

impl DefinitionsFile {
    fn write() -> DefinitionsFile {
        // As RabbitMQ exports it: the hash, never the password.
        let hash = PasswordHash::new(HashingAlgorithm::Sha256, PASSWORD);
        let body = serde_json::json!({
            "users": [
                {"name": USER, "password_hash": hash.encoded(), "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": ""},
                {"name": "nobody", "password": "nobody-pw", "tags": ""}
            ],
            "vhosts": [{"name": VHOST}, {"name": "closed"}],
            "permissions": [
                {"user": USER, "vhost": VHOST, "configure": "^cfg", "write": "^(w-|amq\\.topic$)", "read": "^(r-|amq\\.topic$)"},
                {"user": "nobody", "vhost": "closed", "configure": "", "write": "", "read": ""}
            ],
            "topic_permissions": [
                {"user": USER, "vhost": VHOST, "exchange": "amq.topic", "write": "^allowed\\.", "read": "^allowed\\."}
            ],
            "queues": [
                {"name": "r-q", "vhost": VHOST, "durable": true, "auto_delete": false, "arguments": {}},
                {"name": "w-q", "vhost": VHOST, "durable": true, "auto_delete": false, "arguments": {}}
            ],
            "exchanges": [],
            "bindings": []
        });
        let path = std::env::temp_dir().join(format!("{}.json", unique("definitions")));
        std::fs::write(&path, body.to_string()).expect("write definitions");
        DefinitionsFile(path)
    }

    fn arg(&self) -> &str {
        self.0.to_str().expect("utf-8 temp path")
    }
}

impl Drop for DefinitionsFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn url(broker: &Broker, user: &str, password: &str, vhost: &str) -> String {
    format!(
        "amqp://{user}:{password}@127.0.0.1:{}/{}",
        broker.port(),
        vhost.replace('/', "%2f")
    )
}

fn refusal(kind: &str, name: &str) -> String {
    format!(
        "ACCESS_REFUSED - access to {kind} '{name}' in vhost '{VHOST}' refused for user '{USER}'"
    )
}

fn topic_refusal(key: &str) -> String {
    format!(
        "ACCESS_REFUSED - access to topic '{key}' in exchange 'amq.topic' in vhost '{VHOST}' refused for user '{USER}'"
    )
}

async fn connect_result(url: &str) -> lapin::Result<Connection> {
    step(
        "connect",
        Connection::connect(url, ConnectionProperties::default()),
    )
    .await
}

async fn publish_confirmed(ch: &lapin::Channel, exchange: &str, key: &str) -> lapin::Result<()> {
    let confirm = step(
        "basic.publish",
        ch.basic_publish(
            exchange,
            key,
            BasicPublishOptions::default(),
            b"body",
            BasicProperties::default(),
        ),
    )
    .await?;
    step("confirm", confirm).await.map(|_| ())
}

async fn confirm_channel(conn: &Connection) -> lapin::Channel {
    let ch = channel(conn).await;
    step(
        "confirm.select",
        ch.confirm_select(ConfirmSelectOptions::default()),
    )
    .await
    .expect("confirm.select");
    ch
}

async fn declare(ch: &lapin::Channel, name: &str, exclusive: bool) -> lapin::Result<lapin::Queue> {
    let options = QueueDeclareOptions {
        exclusive,
        ..Default::default()
    };
    step(
        "queue.declare",
        ch.queue_declare(name, options, FieldTable::default()),
    )
    .await
}

async fn logins_and_vhost_access(broker: &Broker) {
    connect_url(&url(broker, USER, PASSWORD, VHOST)).await;
    let wrong = connect_result(&url(broker, USER, "wrong", VHOST)).await;
    assert!(wrong.is_err(), "a wrong password must not log in");
    let unknown = connect_result(&url(broker, "no-such-user", "x", VHOST)).await;
    assert!(unknown.is_err(), "an unknown user must not log in");
    expect_code_and_text(
        "a vhost without permissions",
        connect_result(&url(broker, USER, PASSWORD, "closed")).await,
        NOT_ALLOWED,
        &format!("NOT_ALLOWED - access to vhost 'closed' refused for user '{USER}'"),
    );
    // The definitions kept the built-in default user too.
    connect_url(&broker.url()).await;
}

async fn resource_refusals_close_the_channel_only(broker: &Broker) {
    let conn = connect_url(&url(broker, USER, PASSWORD, VHOST)).await;
    let ch = channel(&conn).await;
    declare(&ch, "cfg-q", false)
        .await
        .expect("configure matches");
    expect_code_and_text(
        "configure",
        declare(&ch, "other-q", false).await,
        ACCESS_REFUSED,
        &refusal("queue", "other-q"),
    );
    let ch = channel(&conn).await;
    match declare(&ch, "", true).await {
        Ok(q) => panic!("server-named queue {} declared outside configure", q.name()),
        Err(e) => {
            assert_eq!(reply_code(&e), Some(ACCESS_REFUSED), "{e:?}");
            let text = e.to_string();
            assert!(
                text.contains("access to queue 'amq.gen-"),
                "checked on the generated name: {text}"
            );
        }
    }
    let ch = confirm_channel(&conn).await;
    expect_code_and_text(
        "write on the default exchange",
        publish_confirmed(&ch, "", "w-q").await,
        ACCESS_REFUSED,
        &refusal("exchange", "amq.default"),
    );
    let ch = channel(&conn).await;
    step("read", ch.basic_get("r-q", BasicGetOptions::default()))
        .await
        .expect("read matches");
    expect_code_and_text(
        "read",
        step("basic.get", ch.basic_get("w-q", BasicGetOptions::default())).await,
        ACCESS_REFUSED,
        &refusal("queue", "w-q"),
    );
    let ch = channel(&conn).await;
    expect_code_and_text(
        "write on the queue for a bind",
        step(
            "queue.bind",
            ch.queue_bind(
                "r-q",
                "amq.topic",
                "allowed.x",
                QueueBindOptions::default(),
                FieldTable::default(),
            ),
        )
        .await,
        ACCESS_REFUSED,
        &refusal("queue", "r-q"),
    );
    let ch = channel(&conn).await;
    step(
        "bind allowed",
        ch.queue_bind(
            "w-q",
            "amq.topic",
            "allowed.x",
            QueueBindOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .expect("write on w-q, read on amq.topic, topic read on the key");
    expect_code_and_text(
        "topic read on the binding key",
        step(
            "queue.bind",
            ch.queue_bind(
                "w-q",
                "amq.topic",
                "denied.x",
                QueueBindOptions::default(),
                FieldTable::default(),
            ),
        )
        .await,
        ACCESS_REFUSED,
        &topic_refusal("denied.x"),
    );
    let ch = confirm_channel(&conn).await;
    publish_confirmed(&ch, "amq.topic", "allowed.x")
        .await
        .expect("topic write matches");
    expect_code_and_text(
        "topic write on the routing key",
        publish_confirmed(&ch, "amq.topic", "denied.x").await,
        ACCESS_REFUSED,
        &topic_refusal("denied.x"),
    );
    // Every refusal closed a channel; the connection carried on.
    let ch = channel(&conn).await;
    declare(&ch, "cfg-q", false).await.expect("still connected");
}

#[tokio::test]
async fn definitions_users_and_permissions() {
    for shards in SHARD_COUNTS {
        let file = DefinitionsFile::write();
        let broker = Broker::start_with_args(shards, &["--load-definitions", file.arg()]);
        logins_and_vhost_access(&broker).await;
        resource_refusals_close_the_channel_only(&broker).await;
    }
}

#[tokio::test]
async fn the_default_user_is_made_on_a_fresh_data_directory_only() {
    for shards in SHARD_COUNTS {
        let mut broker = Broker::start_with_args(
            shards,
            &["--default-user", "admin", "--default-pass", "s3cret"],
        );
        connect_url(&url(&broker, "admin", "s3cret", "/")).await;
        let guest = connect_result(&broker.url()).await;
        assert!(guest.is_err(), "no guest beside another default user");
        broker.restart_with_args(&["--default-user", "other", "--default-pass", "x"]);
        let other = connect_result(&url(&broker, "other", "x", "/")).await;
        assert!(
            other.is_err(),
            "a non-empty data directory gets no new default user"
        );
        connect_url(&url(&broker, "admin", "s3cret", "/")).await;
    }
}
