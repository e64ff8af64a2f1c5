//! Policies and operator policies (issue 10, "Policies"), black-box over AMQP and the
//! management API, 1 and 2 shards. Every rule here is RabbitMQ 3.10.8's, so each test also runs
//! against it: `RINGMQ_TEST_EXTERNAL_PORT=5682 RINGMQ_TEST_EXTERNAL_MANAGEMENT_PORT=15682 cargo
//! test --release --test it policies::` (restart tests skip there). RabbitMQ applies a policy to
//! its queues after the PUT answered, so effects are polled for, with a deadline.

use crate::common;

use std::time::{Duration, Instant};

use common::admin::{encode, Admin};
use common::amqp::{channel, connect, publish};
use common::{step, unique, Broker};
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, ExchangeKind};
use serde_json::{json, Value};

/// How long a policy may take to reach its queues (RabbitMQ applies it asynchronously).
const POLICY_APPLIED_TIMEOUT: Duration = Duration::from_secs(10);
const POLL_INTERVAL: Duration = Duration::from_millis(20);

per_shard_count!(
    a_max_length_policy_trims_an_existing_queue_and_clearing_restores_it,
    a_message_ttl_policy_expires_and_its_dead_letter_exchange_takes_them,
    the_highest_priority_policy_wins,
    arguments_take_the_minimum_or_win_over_the_policy,
    an_operator_policy_caps_the_policy,
    an_exchange_policy_gives_an_alternate_exchange,
    policies_reach_queues_on_every_shard,
    refusals_follow_rabbitmq,
    a_look_ahead_pattern_matches_as_pcre,
    ha_keys_are_validated_and_change_nothing_on_one_node,
);

per_shard_count_mut!(policies_survive_a_restart_and_a_crash);

fn put_policy(admin: &Admin, section: &str, name: &str, body: Value) -> (u16, String) {
    let path = format!("/{section}/%2F/{}", encode(name));
    admin.request("PUT", &path, Some(&body.to_string()))
}

fn set_policy(admin: &Admin, section: &str, name: &str, body: Value) {
    let (status, text) = put_policy(admin, section, name, body);
    assert!(
        status == 201 || status == 204,
        "PUT policy {name}: {status} {text}"
    );
}

fn clear_policy(admin: &Admin, section: &str, name: &str) {
    let path = format!("/{section}/%2F/{}", encode(name));
    let (status, text) = admin.request("DELETE", &path, None);
    assert_eq!(status, 204, "DELETE policy {name}: {text}");
}

/// A pattern that matches exactly this name.
fn exactly(name: &str) -> String {
    format!("^{}$", regex_escape(name))
}

fn regex_escape(name: &str) -> String {
    name.chars()
        .flat_map(|c| {
            let special = ".+*?()[]{}|^$\\".contains(c);
            special
                .then_some('\\')
                .into_iter()
                .chain(std::iter::once(c))
        })
        .collect()
}

fn table(entries: &[(&str, AMQPValue)]) -> FieldTable {
    let mut table = FieldTable::default();
    for (key, value) in entries {
        table.insert(ShortString::from(*key), value.clone());
    }
    table
}

async fn declare(ch: &Channel, name: &str, arguments: FieldTable) {
    step(
        "queue.declare",
        ch.queue_declare(name, QueueDeclareOptions::default(), arguments),
    )
    .await
    .expect("queue.declare");
}

async fn delete(ch: &Channel, name: &str) {
    let _ = step(
        "queue.delete",
        ch.queue_delete(name, QueueDeleteOptions::default()),
    )
    .await;
}

async fn count(ch: &Channel, name: &str) -> u32 {
    let options = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    step(
        "queue.declare passive",
        ch.queue_declare(name, options, FieldTable::default()),
    )
    .await
    .expect("passive declare")
    .message_count()
}

/// Polls the queue's message count until it is `expected`, or fails at the deadline.
async fn wait_for_count(ch: &Channel, name: &str, expected: u32) {
    let deadline = Instant::now() + POLICY_APPLIED_TIMEOUT;
    loop {
        let now = count(ch, name).await;
        if now == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "queue {name} holds {now} messages, expected {expected}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Polls the management object at `path` until `check` holds for it.
async fn wait_for_object(admin: &Admin, path: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + POLICY_APPLIED_TIMEOUT;
    loop {
        let (status, body) = admin.request("GET", path, None);
        let value: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        if status == 200 && check(&value) {
            return value;
        }
        assert!(Instant::now() < deadline, "GET {path}: {status} {body}");
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

async fn publish_n(ch: &Channel, queue: &str, n: usize) {
    for i in 0..n {
        publish(
            ch,
            "",
            queue,
            format!("m{i}").as_bytes(),
            BasicProperties::default(),
        )
        .await;
    }
}

async fn a_max_length_policy_trims_an_existing_queue_and_clearing_restores_it(broker: &Broker) {
    let admin = Admin::for_broker(broker);
    let conn = connect(broker).await;
    let ch = common::amqp::confirming_channel(&conn).await;
    let queue = unique("pol-trim");
    declare(&ch, &queue, FieldTable::default()).await;
    publish_n(&ch, &queue, 5).await;
    let policy = unique("pol-trim");
    set_policy(
        &admin,
        "policies",
        &policy,
        json!({"pattern": exactly(&queue), "definition": {"max-length": 2}, "apply-to": "queues"}),
    );
    wait_for_count(&ch, &queue, 2).await;
    let path = format!("/queues/%2F/{}", encode(&queue));
    wait_for_object(&admin, &path, |q| q["policy"] == json!(policy)).await;
    // The oldest went (drop-head): the newest two are left.
    let first = common::amqp::get(&ch, &queue, true)
        .await
        .expect("a message");
    assert_eq!(first.delivery.data, b"m3");
    clear_policy(&admin, "policies", &policy);
    wait_for_object(&admin, &path, |q| q["policy"].is_null()).await;
    publish_n(&ch, &queue, 3).await;
    wait_for_count(&ch, &queue, 4).await;
    delete(&ch, &queue).await;
}

async fn a_message_ttl_policy_expires_and_its_dead_letter_exchange_takes_them(broker: &Broker) {
    let admin = Admin::for_broker(broker);
    let conn = connect(broker).await;
    let ch = common::amqp::confirming_channel(&conn).await;
    let queue = unique("pol-ttl");
    let dead = unique("pol-dead");
    declare(&ch, &dead, FieldTable::default()).await;
    let policy = unique("pol-ttl");
    set_policy(
        &admin,
        "policies",
        &policy,
        json!({"pattern": exactly(&queue), "definition": {
            "message-ttl": 50, "dead-letter-exchange": "", "dead-letter-routing-key": dead}}),
    );
    declare(&ch, &queue, FieldTable::default()).await;
    let path = format!("/queues/%2F/{}", encode(&queue));
    wait_for_object(&admin, &path, |q| q["policy"] == json!(policy)).await;
    publish_n(&ch, &queue, 2).await;
    wait_for_count(&ch, &queue, 0).await;
    wait_for_count(&ch, &dead, 2).await;
    clear_policy(&admin, "policies", &policy);
    delete(&ch, &queue).await;
    delete(&ch, &dead).await;
}

async fn the_highest_priority_policy_wins(broker: &Broker) {
    let admin = Admin::for_broker(broker);
    let conn = connect(broker).await;
    let ch = common::amqp::confirming_channel(&conn).await;
    let queue = unique("pol-prio");
    declare(&ch, &queue, FieldTable::default()).await;
    let low = unique("pol-low");
    let high = unique("pol-high");
    set_policy(
        &admin,
        "policies",
        &low,
        json!({"pattern": exactly(&queue), "definition": {"max-length": 1}, "priority": 1}),
    );
    set_policy(
        &admin,
        "policies",
        &high,
        json!({"pattern": exactly(&queue), "definition": {"max-length": 3}, "priority": 7}),
    );
    let path = format!("/queues/%2F/{}", encode(&queue));
    wait_for_object(&admin, &path, |q| q["policy"] == json!(high)).await;
    publish_n(&ch, &queue, 5).await;
    wait_for_count(&ch, &queue, 3).await;
    clear_policy(&admin, "policies", &high);
    wait_for_count(&ch, &queue, 1).await;
    clear_policy(&admin, "policies", &low);
    delete(&ch, &queue).await;
}

async fn arguments_take_the_minimum_or_win_over_the_policy(broker: &Broker) {
    let admin = Admin::for_broker(broker);
    let conn = connect(broker).await;
    let ch = common::amqp::confirming_channel(&conn).await;
    let prefix = unique("pol-args");
    let (small_arg, big_arg) = (format!("{prefix}-a"), format!("{prefix}-b"));
    let (own_dead, policy_dead) = (format!("{prefix}-own"), format!("{prefix}-pol"));
    let expiring = format!("{prefix}-e");
    declare(&ch, &own_dead, FieldTable::default()).await;
    declare(&ch, &policy_dead, FieldTable::default()).await;
    declare(
        &ch,
        &small_arg,
        table(&[("x-max-length", AMQPValue::LongInt(2))]),
    )
    .await;
    declare(
        &ch,
        &big_arg,
        table(&[("x-max-length", AMQPValue::LongInt(4))]),
    )
    .await;
    let own_dlx = table(&[
        ("x-message-ttl", AMQPValue::LongInt(50)),
        ("x-dead-letter-exchange", AMQPValue::LongString("".into())),
        (
            "x-dead-letter-routing-key",
            AMQPValue::LongString(own_dead.clone().into()),
        ),
    ]);
    declare(&ch, &expiring, own_dlx).await;
    let policy = unique("pol-args");
    set_policy(
        &admin,
        "policies",
        &policy,
        json!({"pattern": format!("^{}-[abe]$", regex_escape(&prefix)), "definition": {
            "max-length": 3, "dead-letter-exchange": "", "dead-letter-routing-key": policy_dead}}),
    );
    let path = format!("/queues/%2F/{}", encode(&expiring));
    wait_for_object(&admin, &path, |q| q["policy"] == json!(policy)).await;
    publish_n(&ch, &small_arg, 5).await;
    publish_n(&ch, &big_arg, 5).await;
    publish_n(&ch, &expiring, 1).await;
    // max-length: the smaller of the argument and the policy.
    wait_for_count(&ch, &small_arg, 2).await;
    wait_for_count(&ch, &big_arg, 3).await;
    // dead-letter exchange and routing key: the queue's own arguments win.
    // (The 3 + 2 messages the length limits dropped went to the policy's dead-letter target,
    // since those queues name none of their own.)
    wait_for_count(&ch, &own_dead, 1).await;
    wait_for_count(&ch, &policy_dead, 5).await;
    clear_policy(&admin, "policies", &policy);
    for queue in [&small_arg, &big_arg, &expiring, &own_dead, &policy_dead] {
        delete(&ch, queue).await;
    }
}

async fn an_operator_policy_caps_the_policy(broker: &Broker) {
    let admin = Admin::for_broker(broker);
    let conn = connect(broker).await;
    let ch = common::amqp::confirming_channel(&conn).await;
    let queue = unique("pol-cap");
    declare(&ch, &queue, FieldTable::default()).await;
    let policy = unique("pol-cap");
    let operator = unique("op-cap");
    set_policy(
        &admin,
        "policies",
        &policy,
        json!({"pattern": exactly(&queue), "definition": {"max-length": 5}}),
    );
    set_policy(
        &admin,
        "operator-policies",
        &operator,
        json!({"pattern": exactly(&queue), "definition": {"max-length": 2, "message-ttl": 600000},
               "apply-to": "queues"}),
    );
    let path = format!("/queues/%2F/{}", encode(&queue));
    let shown = wait_for_object(&admin, &path, |q| q["operator_policy"] == json!(operator)).await;
    assert_eq!(shown["policy"], json!(policy));
    assert_eq!(
        shown["effective_policy_definition"],
        json!({"max-length": 2, "message-ttl": 600000})
    );
    publish_n(&ch, &queue, 4).await;
    wait_for_count(&ch, &queue, 2).await;
    clear_policy(&admin, "operator-policies", &operator);
    clear_policy(&admin, "policies", &policy);
    delete(&ch, &queue).await;
}

async fn an_exchange_policy_gives_an_alternate_exchange(broker: &Broker) {
    let admin = Admin::for_broker(broker);
    let conn = connect(broker).await;
    let ch = common::amqp::confirming_channel(&conn).await;
    let exchange = unique("pol-x");
    let alternate = unique("pol-alt");
    let caught = unique("pol-caught");
    common::amqp::declare_exchange(&ch, &exchange, ExchangeKind::Direct).await;
    common::amqp::declare_exchange(&ch, &alternate, ExchangeKind::Fanout).await;
    declare(&ch, &caught, FieldTable::default()).await;
    common::amqp::bind(&ch, &caught, &alternate, "").await;
    let policy = unique("pol-ae");
    set_policy(
        &admin,
        "policies",
        &policy,
        json!({"pattern": exactly(&exchange), "definition": {"alternate-exchange": alternate},
               "apply-to": "exchanges"}),
    );
    let path = format!("/exchanges/%2F/{}", encode(&exchange));
    wait_for_object(&admin, &path, |x| x["policy"] == json!(policy)).await;
    publish(
        &ch,
        &exchange,
        "unbound",
        b"lost?",
        BasicProperties::default(),
    )
    .await;
    wait_for_count(&ch, &caught, 1).await;
    clear_policy(&admin, "policies", &policy);
    delete(&ch, &caught).await;
    let _ = ch
        .exchange_delete(&exchange, ExchangeDeleteOptions::default())
        .await;
    let _ = ch
        .exchange_delete(&alternate, ExchangeDeleteOptions::default())
        .await;
}

/// Queues are placed on their declaring connection's shard: several connections put them on
/// every shard, and one policy must reach each.
async fn policies_reach_queues_on_every_shard(broker: &Broker) {
    const CONNECTIONS: usize = 6;
    let admin = Admin::for_broker(broker);
    let prefix = unique("pol-shards");
    let mut held = Vec::new();
    for i in 0..CONNECTIONS {
        let conn = connect(broker).await;
        let ch = common::amqp::confirming_channel(&conn).await;
        let queue = format!("{prefix}-{i}");
        declare(&ch, &queue, FieldTable::default()).await;
        publish_n(&ch, &queue, 3).await;
        held.push((conn, ch, queue));
    }
    let policy = unique("pol-shards");
    set_policy(
        &admin,
        "policies",
        &policy,
        json!({"pattern": format!("^{}-", regex_escape(&prefix)), "definition": {"max-length": 1}}),
    );
    for (_, ch, queue) in &held {
        wait_for_count(ch, queue, 1).await;
    }
    clear_policy(&admin, "policies", &policy);
    for (_, ch, queue) in &held {
        delete(ch, queue).await;
    }
}

async fn policies_survive_a_restart_and_a_crash(broker: &mut Broker) {
    if broker.is_external() {
        return;
    }
    let queue = unique("pol-durable");
    let policy = unique("pol-durable");
    let operator = unique("op-durable");
    {
        let admin = Admin::for_broker(broker);
        let conn = connect(broker).await;
        let ch = channel(&conn).await;
        let options = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        step(
            "queue.declare",
            ch.queue_declare(&queue, options, FieldTable::default()),
        )
        .await
        .expect("durable queue");
        set_policy(
            &admin,
            "policies",
            &policy,
            json!({"pattern": exactly(&queue), "definition": {"max-length": 3}, "priority": 2}),
        );
        set_policy(
            &admin,
            "operator-policies",
            &operator,
            json!({"pattern": exactly(&queue), "definition": {"max-length": 2}}),
        );
    }
    for crash in [false, true] {
        if crash {
            broker.kill9();
            broker.restart_same_dir();
        } else {
            broker.restart_same_dir();
        }
        let admin = Admin::for_broker(broker);
        let path = format!("/queues/%2F/{}", encode(&queue));
        let shown = wait_for_object(&admin, &path, |q| q["policy"] == json!(policy)).await;
        assert_eq!(shown["operator_policy"], json!(operator));
        let (status, body) =
            admin.request("GET", &format!("/policies/%2F/{}", encode(&policy)), None);
        assert_eq!(status, 200, "{body}");
        let stored: Value = serde_json::from_str(&body).expect("json");
        assert_eq!(stored["priority"], json!(2));
        let conn = connect(broker).await;
        let ch = common::amqp::confirming_channel(&conn).await;
        publish_n(&ch, &queue, 4).await;
        wait_for_count(&ch, &queue, 2).await;
        step(
            "queue.purge",
            ch.queue_purge(&queue, QueuePurgeOptions::default()),
        )
        .await
        .expect("purge");
    }
}

/// RabbitMQ matches patterns with PCRE: look-ahead ("all but these") is a common policy.
async fn a_look_ahead_pattern_matches_as_pcre(broker: &Broker) {
    let admin = Admin::for_broker(broker);
    let conn = connect(broker).await;
    let ch = channel(&conn).await;
    let prefix = unique("pol-ahead");
    let (taken, kept) = (format!("{prefix}.drop"), format!("{prefix}.keep.1"));
    declare(&ch, &taken, FieldTable::default()).await;
    declare(&ch, &kept, FieldTable::default()).await;
    let policy = unique("pol-ahead");
    let pattern = format!("^{}\\.(?!keep\\.)", regex_escape(&prefix));
    set_policy(
        &admin,
        "policies",
        &policy,
        json!({"pattern": pattern, "definition": {"max-length": 3}, "apply-to": "queues"}),
    );
    let path = |queue: &str| format!("/queues/%2F/{}", encode(queue));
    wait_for_object(&admin, &path(&taken), |q| q["policy"] == json!(policy)).await;
    let (status, text) = admin.request("GET", &path(&kept), None);
    assert_eq!(status, 200, "{text}");
    let kept_queue: Value = serde_json::from_str(&text).expect("json");
    assert!(kept_queue["policy"].is_null(), "{kept_queue}");
    clear_policy(&admin, "policies", &policy);
    delete(&ch, &taken).await;
    delete(&ch, &kept).await;
}

async fn refusals_follow_rabbitmq(broker: &Broker) {
    let admin = Admin::for_broker(broker);
    let watcher = unique("pol-watcher");
    let maker = unique("pol-maker");
    admin.put_user(&watcher, "pw", "management");
    admin.put_user(&maker, "pw", "policymaker");
    admin.set_permissions("/", &watcher, ".*", ".*", ".*");
    admin.set_permissions("/", &maker, ".*", ".*", ".*");
    let port = broker.management_port();
    let watcher_api = Admin::new(port, &watcher, "pw");
    let maker_api = Admin::new(port, &maker, "pw");
    let name = unique("pol-refused");
    let body = json!({"pattern": "^pol-refused-nothing$", "definition": {"max-length": 1}});

    let (status, text) = put_policy(&watcher_api, "policies", &name, body.clone());
    assert_eq!(status, 401, "{text}");
    assert!(
        text.contains("User not authorised to access object"),
        "{text}"
    );
    let (status, text) = put_policy(&maker_api, "operator-policies", &name, body.clone());
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("Not administrator user"), "{text}");
    let (status, text) = put_policy(&maker_api, "policies", &name, body.clone());
    assert_eq!(status, 201, "{text}");
    let (status, _) = put_policy(&maker_api, "policies", &name, body.clone());
    assert_eq!(status, 204);
    // Listing is open to every management user; one object is not.
    let (status, text) = watcher_api.request("GET", "/policies/%2F", None);
    assert_eq!(status, 200, "{text}");
    assert!(text.contains(&name), "{text}");
    let (status, _) = watcher_api.request("GET", &format!("/policies/%2F/{}", encode(&name)), None);
    assert_eq!(status, 401);

    let reason = |section: &str, definition: Value| {
        let body = json!({"pattern": ".*", "definition": definition});
        let (status, text) = put_policy(&admin, section, &unique("pol-bad"), body);
        assert_eq!(status, 400, "{text}");
        let value: Value = serde_json::from_str(&text).expect("json");
        value["reason"].as_str().unwrap_or_default().to_string()
    };
    assert_eq!(
        reason("policies", json!({"max-priority": 5})),
        "Validation failed\n\n[{&lt;&lt;\"max-priority\"&gt;&gt;,5}] are not recognised policy settings\n"
    );
    assert_eq!(
        reason("policies", json!({"max-length": "x"})),
        "Validation failed\n\n&lt;&lt;\"x\"&gt;&gt; is not a valid maximum length\n"
    );
    assert_eq!(
        reason("policies", json!({"max-length": -1})),
        "Validation failed\n\n-1 is not a valid maximum length\n"
    );
    assert_eq!(
        reason("policies", json!({})),
        "Validation failed\n\nno policy provided\n"
    );
    assert_eq!(
        reason("operator-policies", json!({"dead-letter-exchange": "x"})),
        "Validation failed\n\n[{<<\"dead-letter-exchange\">>,<<\"x\">>}] are not recognised policy settings\n"
    );
    let (status, text) = put_policy(
        &admin,
        "policies",
        &unique("pol-bad"),
        json!({"pattern": ".*", "definition": {"max-length": 1}, "apply-to": "bogus"}),
    );
    assert_eq!(status, 400);
    assert!(text.contains("apply-to 'bogus' unrecognised"), "{text}");
    let (status, text) = put_policy(
        &admin,
        "policies",
        &unique("pol-bad"),
        json!({"definition": {}}),
    );
    assert_eq!(
        (status, text.as_str()),
        (
            400,
            r#"{"error":"bad_request","reason":"[{key_missing,pattern}]"}"#
        )
    );
    let (status, _) = admin.request("DELETE", "/policies/%2F/pol-never-set", None);
    assert_eq!(status, 404);

    clear_policy(&admin, "policies", &name);
    admin.delete_user(&watcher);
    admin.delete_user(&maker);
}

/// RabbitMQ's `ha-*` keys (mirrored classic queues): validated with its texts, accepted, and on
/// one node they change nothing (RabbitMQ has nowhere to mirror to either; in a cluster ringmq
/// replicates a matching queue, tests/it/quorum.rs). `ha-params` of `ha-mode: nodes` is a list.
async fn ha_keys_are_validated_and_change_nothing_on_one_node(broker: &Broker) {
    let admin = Admin::for_broker(broker);
    let queue = unique("pol-ha");
    let name = unique("pol-ha");
    let definition = json!({
        "ha-mode": "nodes",
        "ha-params": ["rabbit@a", "rabbit@b"],
        "ha-sync-mode": "automatic",
        "ha-promote-on-failure": "when-synced",
    });
    let body = json!({"pattern": exactly(&queue), "apply-to": "queues", "definition": definition});
    set_policy(&admin, "policies", &name, body);
    let shown = admin.get_json(&format!("/policies/%2F/{}", encode(&name)));
    assert_eq!(shown["definition"], definition, "{shown}");
    let connection = connect(broker).await;
    let ch = common::amqp::confirming_channel(&connection).await;
    declare(&ch, &queue, FieldTable::default()).await;
    publish(&ch, "", &queue, b"one", BasicProperties::default()).await;
    wait_for_count(&ch, &queue, 1).await;
    let object = wait_for_object(&admin, &format!("/queues/%2F/{}", encode(&queue)), |q| {
        q["policy"] == name.as_str()
    })
    .await;
    assert_eq!(object["type"], "classic", "{object}");
    let mirrors = object.get("slave_nodes").cloned().unwrap_or(json!([]));
    assert!(mirrors.as_array().is_some_and(Vec::is_empty), "{object}");
    delete(&ch, &queue).await;
    clear_policy(&admin, "policies", &name);

    let reason = |definition: Value| {
        let body = json!({"pattern": ".*", "definition": definition});
        let (status, text) = put_policy(&admin, "policies", &unique("pol-bad"), body);
        assert_eq!(status, 400, "{text}");
        let value: Value = serde_json::from_str(&text).expect("json");
        value["reason"].as_str().unwrap_or_default().to_string()
    };
    let failed = |text: &str| format!("Validation failed\n\n{text}\n");
    assert_eq!(
        reason(json!({"ha-params": 2})),
        failed("ha-mode must be specified to specify ha-params, ha-sync-mode or ha-promote-on-shutdown")
    );
    assert_eq!(
        reason(json!({"ha-mode": "exactly"})),
        failed("ha-mode=\"exactly\" takes an integer, none given")
    );
    assert_eq!(
        reason(json!({"ha-mode": "all", "ha-params": 2})),
        failed("ha-mode=\"all\" does not take parameters")
    );
    assert_eq!(
        reason(json!({"ha-mode": "all", "ha-sync-mode": "eventually"})),
        failed(
            "ha-sync-mode must be \"manual\" or \"automatic\", got &lt;&lt;\"eventually\"&gt;&gt;"
        )
    );
}
