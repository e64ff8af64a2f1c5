//! Users, vhosts and permissions enforced on the AMQP side (issue 10), black-box, 1 and 2
//! shards. Users and permissions are made through the management API (`common::admin`), as an
//! operator would; each test also runs against RabbitMQ 3.10.8 (`RINGMQ_TEST_EXTERNAL_PORT`
//! with `RINGMQ_TEST_EXTERNAL_MANAGEMENT_PORT`), which is where the expected texts come from.
//! Against RabbitMQ: `RINGMQ_TEST_EXTERNAL_PORT=5682 RINGMQ_TEST_EXTERNAL_MANAGEMENT_PORT=15682
//! cargo test --release --test it permissions::`.

use crate::common;

use common::admin::Admin;
use common::amqp::{channel, closing_error, connect_url, expect_code_and_text, reply_code};
use common::{step, unique, Broker};
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};

const ACCESS_REFUSED: u16 = 403;
const NOT_ALLOWED: u16 = 530;

per_shard_count!(
    a_look_ahead_configure_pattern_refuses_what_it_excludes,
    configure_is_checked_on_declare_and_delete,
    write_is_checked_on_publish_and_bind,
    read_is_checked_on_consume_get_purge_and_bind,
    a_vhost_without_permissions_is_refused_at_open,
    a_wrong_password_is_refused_at_login,
    topic_permissions_are_checked_on_publish,
    permission_changes_apply_to_open_channels,
    deleting_a_vhost_closes_its_connections,
);

/// A vhost and a user of its own for one test, removed when it ends.
struct Tenant {
    admin: Admin,
    vhost: String,
    user: String,
    password: String,
    amqp_port: u16,
}

impl Tenant {
    fn new(broker: &Broker, configure: &str, write: &str, read: &str) -> Tenant {
        let admin = Admin::for_broker(broker);
        let vhost = unique("perm-vhost");
        let user = unique("perm-user");
        let password = unique("pw");
        admin.put_vhost(&vhost);
        admin.put_user(&user, &password, "");
        admin.set_permissions(&vhost, &user, configure, write, read);
        Tenant {
            admin,
            vhost,
            user,
            password,
            amqp_port: broker.port(),
        }
    }

    fn url(&self) -> String {
        format!(
            "amqp://{}:{}@127.0.0.1:{}/{}",
            self.user,
            self.password,
            self.amqp_port,
            common::admin::encode(&self.vhost)
        )
    }

    async fn connect(&self) -> Connection {
        connect_url(&self.url()).await
    }

    fn refusal(&self, kind: &str, name: &str) -> String {
        format!(
            "ACCESS_REFUSED - access to {kind} '{name}' in vhost '{}' refused for user '{}'",
            self.vhost, self.user
        )
    }
}

impl Drop for Tenant {
    fn drop(&mut self) {
        self.admin.delete_vhost(&self.vhost);
        self.admin.delete_user(&self.user);
    }
}

async fn declare(ch: &lapin::Channel, name: &str) -> lapin::Result<lapin::Queue> {
    step(
        "queue.declare",
        ch.queue_declare(name, QueueDeclareOptions::default(), FieldTable::default()),
    )
    .await
}

async fn configure_is_checked_on_declare_and_delete(broker: &Broker) {
    let tenant = Tenant::new(broker, "^cfg", ".*", ".*");
    let conn = tenant.connect().await;
    let ch = channel(&conn).await;
    declare(&ch, "cfg-q").await.expect("matching name");
    expect_code_and_text(
        "declare outside configure",
        declare(&ch, "other-q").await,
        ACCESS_REFUSED,
        &tenant.refusal("queue", "other-q"),
    );
    // The connection carries on; only that channel closed.
    let ch = channel(&conn).await;
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    step(
        "passive declare needs no configure",
        ch.queue_declare("cfg-q", passive, FieldTable::default()),
    )
    .await
    .expect("passive");
    expect_code_and_text(
        "exchange.declare outside configure",
        step(
            "exchange.declare",
            ch.exchange_declare(
                "x-other",
                lapin::ExchangeKind::Fanout,
                ExchangeDeclareOptions::default(),
                FieldTable::default(),
            ),
        )
        .await,
        ACCESS_REFUSED,
        &tenant.refusal("exchange", "x-other"),
    );
    let ch = channel(&conn).await;
    step(
        "delete matching",
        ch.queue_delete("cfg-q", QueueDeleteOptions::default()),
    )
    .await
    .expect("delete");
}

/// PCRE look-ahead, as RabbitMQ's `re` takes it: "every name but the `sys.` ones".
async fn a_look_ahead_configure_pattern_refuses_what_it_excludes(broker: &Broker) {
    let tenant = Tenant::new(broker, "^(?!sys\\.)", ".*", ".*");
    let conn = tenant.connect().await;
    let ch = channel(&conn).await;
    declare(&ch, "app.q")
        .await
        .expect("a name the pattern lets through");
    expect_code_and_text(
        "declare of an excluded name",
        declare(&ch, "sys.q").await,
        ACCESS_REFUSED,
        &tenant.refusal("queue", "sys.q"),
    );
    let ch = channel(&conn).await;
    step(
        "delete",
        ch.queue_delete("app.q", QueueDeleteOptions::default()),
    )
    .await
    .expect("delete");
}

async fn write_is_checked_on_publish_and_bind(broker: &Broker) {
    let tenant = Tenant::new(broker, ".*", "^w-", ".*");
    let conn = tenant.connect().await;
    let ch = channel(&conn).await;
    declare(&ch, "w-q").await.expect("declare");
    declare(&ch, "r-q").await.expect("declare");
    step(
        "confirm.select",
        ch.confirm_select(ConfirmSelectOptions::default()),
    )
    .await
    .expect("confirms");
    let publish = step(
        "publish to the default exchange",
        ch.basic_publish(
            "",
            "w-q",
            BasicPublishOptions::default(),
            b"body",
            BasicProperties::default(),
        ),
    )
    .await;
    let refused = match publish {
        Ok(confirm) => step("confirm", confirm).await.map(|_| ()),
        Err(e) => Err(e),
    };
    expect_code_and_text(
        "publish without write on amq.default",
        refused,
        ACCESS_REFUSED,
        &tenant.refusal("exchange", "amq.default"),
    );
    let ch = channel(&conn).await;
    step(
        "bind with write on the queue",
        ch.queue_bind(
            "w-q",
            "amq.direct",
            "k",
            QueueBindOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .expect("bind");
    expect_code_and_text(
        "bind without write on the queue",
        step(
            "queue.bind",
            ch.queue_bind(
                "r-q",
                "amq.direct",
                "k",
                QueueBindOptions::default(),
                FieldTable::default(),
            ),
        )
        .await,
        ACCESS_REFUSED,
        &tenant.refusal("queue", "r-q"),
    );
}

async fn read_is_checked_on_consume_get_purge_and_bind(broker: &Broker) {
    let tenant = Tenant::new(broker, ".*", ".*", "^r-");
    let conn = tenant.connect().await;
    let ch = channel(&conn).await;
    declare(&ch, "r-q").await.expect("declare");
    declare(&ch, "x-q").await.expect("declare");
    step(
        "get with read",
        ch.basic_get("r-q", BasicGetOptions::default()),
    )
    .await
    .expect("get");
    expect_code_and_text(
        "get without read",
        step("basic.get", ch.basic_get("x-q", BasicGetOptions::default())).await,
        ACCESS_REFUSED,
        &tenant.refusal("queue", "x-q"),
    );
    let ch = channel(&conn).await;
    expect_code_and_text(
        "consume without read",
        step(
            "basic.consume",
            ch.basic_consume(
                "x-q",
                "",
                BasicConsumeOptions::default(),
                FieldTable::default(),
            ),
        )
        .await,
        ACCESS_REFUSED,
        &tenant.refusal("queue", "x-q"),
    );
    let ch = channel(&conn).await;
    expect_code_and_text(
        "purge without read",
        step(
            "queue.purge",
            ch.queue_purge("x-q", QueuePurgeOptions::default()),
        )
        .await,
        ACCESS_REFUSED,
        &tenant.refusal("queue", "x-q"),
    );
    let ch = channel(&conn).await;
    expect_code_and_text(
        "bind without read on the exchange",
        step(
            "queue.bind",
            ch.queue_bind(
                "r-q",
                "amq.direct",
                "k",
                QueueBindOptions::default(),
                FieldTable::default(),
            ),
        )
        .await,
        ACCESS_REFUSED,
        &tenant.refusal("exchange", "amq.direct"),
    );
}

async fn a_vhost_without_permissions_is_refused_at_open(broker: &Broker) {
    let tenant = Tenant::new(broker, ".*", ".*", ".*");
    let other = unique("perm-other");
    tenant.admin.put_vhost(&other);
    let url = format!(
        "amqp://{}:{}@127.0.0.1:{}/{}",
        tenant.user,
        tenant.password,
        broker.port(),
        common::admin::encode(&other)
    );
    let result = step(
        "connect",
        Connection::connect(&url, ConnectionProperties::default()),
    )
    .await;
    tenant.admin.delete_vhost(&other);
    let text = format!(
        "NOT_ALLOWED - access to vhost '{other}' refused for user '{}'",
        tenant.user
    );
    expect_code_and_text("open without permissions", result, NOT_ALLOWED, &text);
}

async fn a_wrong_password_is_refused_at_login(broker: &Broker) {
    let tenant = Tenant::new(broker, ".*", ".*", ".*");
    let url = tenant.url().replace(&tenant.password, "wrong");
    let result = step(
        "connect",
        Connection::connect(&url, ConnectionProperties::default()),
    )
    .await;
    // RabbitMQ closes with 403 during the handshake; lapin reports it as a protocol error or
    // as a closed connection depending on timing, so only the refusal itself is asserted.
    assert!(result.is_err(), "a wrong password must not log in");
    tenant.connect().await;
}

async fn topic_permissions_are_checked_on_publish(broker: &Broker) {
    let tenant = Tenant::new(broker, ".*", ".*", ".*");
    tenant.admin.set_topic_permissions(
        &tenant.vhost,
        &tenant.user,
        "amq.topic",
        "^allowed\\.",
        ".*",
    );
    let conn = tenant.connect().await;
    let ch = channel(&conn).await;
    step(
        "confirm.select",
        ch.confirm_select(ConfirmSelectOptions::default()),
    )
    .await
    .expect("confirms");
    for (key, allowed) in [("allowed.x", true), ("denied.x", false)] {
        let publish = step(
            "publish",
            ch.basic_publish(
                "amq.topic",
                key,
                BasicPublishOptions::default(),
                b"body",
                BasicProperties::default(),
            ),
        )
        .await;
        let result = match publish {
            Ok(confirm) => step("confirm", confirm).await.map(|_| ()),
            Err(e) => Err(e),
        };
        if allowed {
            result.expect("a matching routing key");
        } else {
            let text = format!(
                "ACCESS_REFUSED - access to topic '{key}' in exchange 'amq.topic' in vhost '{}' refused for user '{}'",
                tenant.vhost, tenant.user
            );
            expect_code_and_text("routing key outside write", result, ACCESS_REFUSED, &text);
        }
    }
}

async fn permission_changes_apply_to_open_channels(broker: &Broker) {
    let tenant = Tenant::new(broker, ".*", ".*", ".*");
    let conn = tenant.connect().await;
    let ch = channel(&conn).await;
    declare(&ch, "before").await.expect("allowed at first");
    tenant
        .admin
        .set_permissions(&tenant.vhost, &tenant.user, "^only", ".*", ".*");
    expect_code_and_text(
        "declare after the change, same channel",
        declare(&ch, "after").await,
        ACCESS_REFUSED,
        &tenant.refusal("queue", "after"),
    );
}

async fn deleting_a_vhost_closes_its_connections(broker: &Broker) {
    let doomed = Tenant::new(broker, ".*", ".*", ".*");
    let other = Tenant::new(broker, ".*", ".*", ".*");
    let conn = doomed.connect().await;
    let closed_rx = closing_error(&conn);
    let survivor = other.connect().await;
    let survivor_channel = channel(&survivor).await;

    step("delete the vhost", async {
        doomed.admin.delete_vhost(&doomed.vhost);
    })
    .await;
    let error = tokio::time::timeout(std::time::Duration::from_secs(10), closed_rx)
        .await
        .expect("the connection is closed within 10 s")
        .expect("an error is reported");
    assert_eq!(reply_code(&error), Some(320), "{error:?}");
    let lapin::Error::ProtocolError(protocol) = &error else {
        unreachable!("reply_code was Some")
    };
    assert_eq!(
        protocol.get_message().as_str(),
        format!("CONNECTION_FORCED - vhost '{}' is deleted", doomed.vhost)
    );
    declare(&survivor_channel, "still-served")
        .await
        .expect("a connection in another vhost carries on");
}
