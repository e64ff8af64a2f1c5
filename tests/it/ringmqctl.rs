//! `ringmqctl` against a real broker: every verb, its table and json output, and its refusals
//! with their exit codes (wrong password 2, broker down 69, unknown object 1, bad usage 64).

use crate::common;

use std::time::{Duration, Instant};

use common::admin::Admin;
use common::amqp;
use common::ctl::{run_bounded, Ctl, CTL_RUN_TIMEOUT, RINGMQCTL};
use common::{unique, Broker, STEP_TIMEOUT};
use lapin::options::QueueDeclareOptions;
use lapin::{BasicProperties, ExchangeKind};
use serde_json::Value;

/// Pause between two looks at a listing that catches up with AMQP traffic.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Polls `look` until it returns Some, for at most STEP_TIMEOUT.
fn eventually<T>(what: &str, mut look: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        if let Some(found) = look() {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {STEP_TIMEOUT:?}: {what}"
        );
        std::thread::sleep(POLL_INTERVAL);
    }
}

fn rows(value: &Value) -> &Vec<Value> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not a JSON array: {value}"))
}

fn row_named<'v>(value: &'v Value, key: &str, name: &str) -> Option<&'v Value> {
    rows(value).iter().find(|row| row[key] == name)
}

#[test]
fn users_vhosts_and_permissions() {
    let broker = Broker::start(1);
    let ctl = Ctl::for_broker(&broker);
    let vhost = unique("ctl-vhost");
    let user = unique("ctl-user");

    let added = ctl.run(&["add_vhost", &vhost]).ok();
    assert!(
        added.contains(&format!("Adding vhost \"{vhost}\"")),
        "{added}"
    );
    assert!(row_named(&ctl.json(&["list_vhosts", "name"]), "name", &vhost).is_some());
    let table = ctl.run(&["list_vhosts"]).ok();
    assert!(table.lines().any(|l| l.trim() == vhost), "{table}");

    ctl.run(&["add_user", &user, "first-password"]).ok();
    let again = ctl.run(&["add_user", &user, "other"]);
    assert_eq!(again.code, Some(1), "an existing user: {again:?}");
    assert!(again.stderr.contains("already exists"), "{again:?}");

    ctl.run(&["set_user_tags", &user, "administrator", "monitoring"])
        .ok();
    let users = ctl.json(&["list_users"]);
    let listed = row_named(&users, "user", &user).expect("user listed");
    assert_eq!(
        listed["tags"],
        serde_json::json!(["administrator", "monitoring"])
    );
    // set_user_tags kept the password: the user can use the API with it.
    let (status, _) = Admin::new(broker.management_port(), &user, "first-password")
        .request("GET", "/whoami", None);
    assert_eq!(status, 200);

    ctl.run(&["change_password", &user, "second-password"]).ok();
    let as_user = ctl.as_user(&user, "second-password");
    as_user.run(&["list_vhosts"]).ok();
    let old = ctl.as_user(&user, "first-password").run(&["list_vhosts"]);
    assert_eq!(old.code, Some(2), "old password: {old:?}");
    assert!(old.stderr.contains("authentication failed"), "{old:?}");
    // change_password kept the tags.
    let users = ctl.json(&["list_users"]);
    let tags = &row_named(&users, "user", &user).expect("user")["tags"];
    assert_eq!(tags, &serde_json::json!(["administrator", "monitoring"]));

    ctl.run(&[
        "set_permissions",
        "-p",
        &vhost,
        &user,
        "^conf",
        "^write",
        "^read",
    ])
    .ok();
    let permissions = ctl.json(&["list_permissions", "-p", &vhost]);
    let granted = row_named(&permissions, "user", &user).expect("permission listed");
    assert_eq!(
        (&granted["configure"], &granted["write"], &granted["read"]),
        (
            &Value::from("^conf"),
            &Value::from("^write"),
            &Value::from("^read")
        )
    );
    let table = ctl.run(&["list_permissions", "-p", &vhost]).ok();
    assert!(table.contains("Listing permissions for vhost"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("user") && l.contains("configure")),
        "{table}"
    );

    ctl.run(&["clear_permissions", "-p", &vhost, &user]).ok();
    let permissions = ctl.json(&["list_permissions", "-p", &vhost]);
    assert!(
        row_named(&permissions, "user", &user).is_none(),
        "{permissions}"
    );

    ctl.run(&["delete_user", &user]).ok();
    assert!(row_named(&ctl.json(&["list_users"]), "user", &user).is_none());
    let gone = ctl.run(&["delete_user", &user]);
    assert_eq!(gone.code, Some(1), "{gone:?}");
    assert!(
        gone.stderr
            .contains(&format!("user '{user}' does not exist")),
        "{gone:?}"
    );

    ctl.run(&["delete_vhost", &vhost]).ok();
    assert!(row_named(&ctl.json(&["list_vhosts"]), "name", &vhost).is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn queues_exchanges_bindings_connections_channels_consumers() {
    let broker = Broker::start(2);
    let ctl = Ctl::for_broker(&broker);
    let queue = unique("ctl-q");
    let consumed = unique("ctl-consumed");
    let exchange = unique("ctl-x");

    let connection = amqp::connect(&broker).await;
    let channel = amqp::confirming_channel(&connection).await;
    amqp::declare_queue(&channel, &queue, QueueDeclareOptions::default())
        .await
        .expect("declare");
    amqp::declare_queue(&channel, &consumed, QueueDeclareOptions::default())
        .await
        .expect("declare");
    amqp::declare_exchange(&channel, &exchange, ExchangeKind::Fanout).await;
    amqp::bind(&channel, &queue, &exchange, "the-key").await;
    for body in [b"one".as_slice(), b"two"] {
        amqp::publish(&channel, &exchange, "", body, BasicProperties::default()).await;
    }
    let _consumer = amqp::consume(&channel, &consumed, false).await;

    let counted = eventually("two messages listed", || {
        let queues = ctl.json(&["list_queues", "-p", "/", "name", "messages", "consumers"]);
        let row = row_named(&queues, "name", &queue)?.clone();
        (row["messages"] == 2).then_some(queues)
    });
    let consumed_row = row_named(&counted, "name", &consumed).expect("consumed queue listed");
    assert_eq!(consumed_row["consumers"], 1);
    assert_eq!(
        rows(&counted)[0].as_object().map(|o| o.len()),
        Some(3),
        "only the asked columns"
    );
    let table = ctl.run(&["list_queues"]).ok();
    assert!(table.contains("Listing queues for vhost / ..."), "{table}");
    let header = table.lines().nth(1).unwrap_or_default();
    assert!(
        header.starts_with("name") && header.trim_end().ends_with("messages"),
        "{table}"
    );
    let line = table
        .lines()
        .find(|l| l.starts_with(&queue))
        .expect("queue row");
    assert_eq!(
        line.split_whitespace().collect::<Vec<_>>(),
        vec![queue.as_str(), "2"]
    );
    let silent = ctl.run(&["-s", "list_queues", "name"]).ok();
    assert!(
        !silent.contains("Listing") && !silent.lines().any(|l| l == "name"),
        "{silent}"
    );

    let exchanges = ctl.json(&["list_exchanges", "name", "type", "durable"]);
    assert_eq!(
        row_named(&exchanges, "name", &exchange).expect("x")["type"],
        "fanout"
    );
    let bindings = ctl.json(&["list_bindings"]);
    let binding = row_named(&bindings, "source_name", &exchange).expect("binding listed");
    assert_eq!(binding["destination_name"], Value::from(queue.as_str()));
    assert_eq!(binding["destination_kind"], "queue");
    assert_eq!(binding["source_kind"], "exchange");
    assert_eq!(binding["routing_key"], "the-key");

    let connections = ctl.json(&["list_connections", "name", "user", "peer_host", "state"]);
    let listed = rows(&connections).first().expect("a connection").clone();
    assert_eq!(listed["user"], "guest");
    assert_eq!(listed["peer_host"], "127.0.0.1");
    let channels = ctl.json(&["list_channels"]);
    let channel_row = rows(&channels).first().expect("a channel");
    assert_eq!(channel_row["consumer_count"], 1);
    let consumers = ctl.json(&["list_consumers", "-p", "/"]);
    let consumer = row_named(&consumers, "queue_name", &consumed).expect("consumer listed");
    assert_eq!(consumer["ack_required"], true);

    let status = ctl.run(&["status"]).ok();
    assert!(status.contains("Product name: ringmq"), "{status}");
    let overview = ctl.json(&["status"]);
    assert_eq!(overview["product_name"], "ringmq");

    ctl.run(&["purge_queue", "-p", "/", &queue]).ok();
    eventually("purged", || {
        let queues = ctl.json(&["list_queues", "name", "messages"]);
        (row_named(&queues, "name", &queue)?["messages"] == 0).then_some(())
    });
    ctl.run(&["delete_queue", &queue]).ok();
    assert!(row_named(&ctl.json(&["list_queues"]), "name", &queue).is_none());

    let name = listed["name"].as_str().expect("connection name").to_owned();
    ctl.run(&["close_connection", &name, "closed by the test"])
        .ok();
    eventually("connection closed", || {
        let connections = ctl.json(&["list_connections", "name"]);
        row_named(&connections, "name", &name)
            .is_none()
            .then_some(())
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn definitions_export_and_import() {
    let source = Broker::start(1);
    let target = Broker::start(1);
    let from = Ctl::for_broker(&source);
    let to = Ctl::for_broker(&target);
    let user = unique("ctl-exported");
    let vhost = unique("ctl-exported-vhost");
    from.run(&["add_vhost", &vhost]).ok();
    from.run(&["add_user", &user, "exported-password"]).ok();
    from.run(&["set_permissions", "-p", &vhost, &user, ".*", ".*", ".*"])
        .ok();

    let file = std::env::temp_dir().join(format!("{}.json", unique("ctl-definitions")));
    let file_text = file.to_string_lossy().into_owned();
    from.run(&["export_definitions", &file_text]).ok();
    let to_stdout: Value = serde_json::from_str(&from.run(&["export_definitions", "-"]).ok())
        .expect("export to stdout is JSON");
    assert!(to_stdout["users"]
        .as_array()
        .is_some_and(|u| u.iter().any(|x| x["name"] == *user)));

    let imported = to.run(&["import_definitions", &file_text]).ok();
    assert!(imported.contains("Importing definitions"), "{imported}");
    let _ = std::fs::remove_file(&file);
    assert!(row_named(&to.json(&["list_vhosts"]), "name", &vhost).is_some());
    let permissions = to.json(&["list_permissions", "-p", &vhost]);
    assert!(
        row_named(&permissions, "user", &user).is_some(),
        "{permissions}"
    );
    // The password hash travelled: the user logs in to the target broker with its password.
    let url = format!(
        "amqp://{user}:exported-password@127.0.0.1:{}/{}",
        target.port(),
        common::admin::encode(&vhost)
    );
    let connection = amqp::connect_url(&url).await;
    amqp::channel(&connection).await;

    let missing = to.run(&["import_definitions", "/nonexistent/definitions.json"]);
    assert_eq!(missing.code, Some(1), "{missing:?}");
}

#[test]
fn refusals_have_their_exit_codes() {
    let mut broker = Broker::start(1);
    let ctl = Ctl::for_broker(&broker);

    let wrong = ctl
        .as_user("guest", "not-the-password")
        .run(&["list_queues"]);
    assert_eq!(wrong.code, Some(2), "{wrong:?}");
    assert!(
        wrong
            .stderr
            .contains("authentication failed for user 'guest'"),
        "{wrong:?}"
    );

    let unknown_queue = ctl.run(&["purge_queue", "no-such-queue"]);
    assert_eq!(unknown_queue.code, Some(1), "{unknown_queue:?}");
    assert!(unknown_queue
        .stderr
        .contains("queue 'no-such-queue' in vhost '/' does not exist"));
    let unknown_vhost = ctl.run(&["list_queues", "-p", "no-such-vhost"]);
    assert_eq!(unknown_vhost.code, Some(1), "{unknown_vhost:?}");

    let column = ctl.run(&["list_queues", "name", "no_such_column"]);
    assert_eq!(column.code, Some(64), "{column:?}");
    assert!(column.stderr.contains("no_such_column"), "{column:?}");
    let usage = ctl.run(&["set_permissions", "only-a-user"]);
    assert_eq!(usage.code, Some(64), "{usage:?}");
    let bad_definition = ctl.run(&["set_policy", "p", ".*", "not json"]);
    assert_eq!(bad_definition.code, Some(64), "{bad_definition:?}");

    // The environment instead of flags, refused and accepted.
    let with_env = |password: &str| {
        let mut command = std::process::Command::new(RINGMQCTL);
        command
            .args(["--formatter", "json", "list_vhosts"])
            .env("RINGMQCTL_URL", &ctl.url)
            .env("RINGMQCTL_USERNAME", "guest")
            .env("RINGMQCTL_PASSWORD", password);
        run_bounded(command, CTL_RUN_TIMEOUT)
    };
    assert_eq!(with_env("wrong").code, Some(2));
    let vhosts: Value = serde_json::from_str(&with_env("guest").ok()).expect("json");
    assert!(row_named(&vhosts, "name", "/").is_some());

    broker.stop();
    let down = ctl.run(&["list_queues"]);
    assert_eq!(down.code, Some(69), "{down:?}");
    assert!(
        down.stderr.contains("unable to perform an operation"),
        "{down:?}"
    );
}

#[test]
fn policies() {
    let broker = Broker::start(1);
    let ctl = Ctl::for_broker(&broker);
    let name = unique("ctl-policy");
    ctl.run(&[
        "set_policy",
        "-p",
        "/",
        "--priority",
        "3",
        "--apply-to",
        "queues",
        &name,
        "^ctl-",
        r#"{"max-length":10}"#,
    ])
    .ok();
    let policies = ctl.json(&["list_policies", "-p", "/"]);
    let policy = row_named(&policies, "name", &name).expect("policy listed");
    assert_eq!(policy["pattern"], "^ctl-");
    assert_eq!(policy["apply-to"], "queues");
    assert_eq!(policy["priority"], 3);
    assert_eq!(policy["definition"]["max-length"], 10);
    ctl.run(&["clear_policy", "-p", "/", &name]).ok();
    assert!(row_named(&ctl.json(&["list_policies"]), "name", &name).is_none());
    let again = ctl.run(&["clear_policy", &name]);
    assert_eq!(again.code, Some(1), "{again:?}");
}
