//! The Prometheus endpoint (`--prometheus-port`, rabbitmq_prometheus's 15692) and the
//! management API's message rates, on a real broker after known traffic: values, the text
//! format as `promtool check metrics` sees it (skipped with a note when promtool is missing:
//! `.ci/run` installs it), per-object labels, and rates that rise under a known publish rate.

use crate::common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::admin::{encode, Admin};
use common::amqp::{
    channel, confirming_channel, connect, consume, declare_queue, next_delivery, publish,
};
use common::{unique, Broker};
use lapin::options::{BasicAckOptions, QueueDeclareOptions};
use lapin::BasicProperties;

/// Bound of one scrape.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a value may take to show (stats are gathered per request; this bounds the poll).
const SHOW_TIMEOUT: Duration = Duration::from_secs(15);
/// Between two polls of a value that is not there yet (a poll interval, not synchronisation).
const POLL_INTERVAL: Duration = Duration::from_millis(100);

per_shard_count!(
    counts_follow_traffic_and_pass_promtool,
    queue_rates_rise_under_a_known_publish_rate,
    channels_and_connections_per_object_and_detailed,
);

fn scrape(broker: &Broker, path: &str) -> String {
    let url = format!("http://127.0.0.1:{}{path}", broker.prometheus_port());
    let agent = ureq::AgentBuilder::new().timeout(SCRAPE_TIMEOUT).build();
    let response = agent
        .get(&url)
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert_eq!(response.status(), 200);
    let content_type = response.header("content-type").unwrap_or("").to_string();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    response.into_string().expect("body")
}

/// The value of the sample `name{labels}` exactly as written (labels in our order).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

/// Polls `path` until `series` has `want`, or fails with the last scrape.
fn wait_for_sample(broker: &Broker, path: &str, series: &str, want: f64) -> String {
    let deadline = Instant::now() + SHOW_TIMEOUT;
    loop {
        let text = scrape(broker, path);
        if sample(&text, series) == Some(want) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{series} never became {want}; last scrape:\n{text}"
        );
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// `promtool check metrics` on the text: Ok, or what it said. None: no promtool here.
fn promtool_check(text: &str) -> Option<Result<(), String>> {
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(_) => return None,
    };
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let output = child.wait_with_output().expect("promtool output");
    if output.status.success() {
        Some(Ok(()))
    } else {
        Some(Err(format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )))
    }
}

async fn counts_follow_traffic_and_pass_promtool(broker: &Broker) {
    let before = scrape(broker, "/metrics");
    let acked_before = sample(
        &before,
        "rabbitmq_global_messages_acknowledged_total{protocol=\"amqp091\",queue_type=\"rabbit_classic_queue\"}",
    )
    .expect("the acknowledged counter is there from the start");
    let received_before = sample(
        &before,
        "rabbitmq_global_messages_received_total{protocol=\"amqp091\"}",
    )
    .expect("received");

    let conn = connect(broker).await;
    let ch = confirming_channel(&conn).await;
    let queue = unique("scraped");
    declare_queue(&ch, &queue, QueueDeclareOptions::default())
        .await
        .expect("declare");
    for i in 0..10u8 {
        publish(&ch, "", &queue, &[i; 16], BasicProperties::default()).await;
    }
    let labels = format!("{{vhost=\"/\",queue=\"{queue}\"}}");
    let ready = format!("rabbitmq_queue_messages_ready{labels}");
    let per_object = wait_for_sample(broker, "/metrics/per-object", &ready, 10.0);
    assert_eq!(
        sample(
            &per_object,
            &format!("rabbitmq_queue_messages_published_total{labels}")
        ),
        Some(10.0),
        "{per_object}"
    );
    assert_eq!(
        sample(
            &per_object,
            &format!("rabbitmq_queue_messages_unacked{labels}")
        ),
        Some(0.0)
    );
    let aggregated = scrape(broker, "/metrics");
    assert_eq!(
        sample(
            &aggregated,
            "rabbitmq_global_messages_received_total{protocol=\"amqp091\"}"
        ),
        Some(received_before + 10.0),
        "{aggregated}"
    );
    assert!(sample(&aggregated, "rabbitmq_connections").is_some_and(|n| n >= 1.0));
    assert!(sample(
        &aggregated,
        "rabbitmq_global_messages_confirmed_total{protocol=\"amqp091\"}"
    )
    .is_some_and(|n| n >= 10.0));
    assert!(
        !aggregated.contains(&queue),
        "the aggregated scrape names no queue"
    );

    let consumer_ch = channel(&conn).await;
    let mut consumer = consume(&consumer_ch, &queue, false).await;
    for _ in 0..10 {
        let delivery = next_delivery(&mut consumer).await;
        delivery.ack(BasicAckOptions::default()).await.expect("ack");
    }
    let per_object = wait_for_sample(
        broker,
        "/metrics/per-object",
        &format!("ringmq_queue_messages_acked_total{labels}"),
        10.0,
    );
    assert_eq!(sample(&per_object, &ready), Some(0.0), "{per_object}");
    assert_eq!(
        sample(&per_object, &format!("rabbitmq_queue_consumers{labels}")),
        Some(1.0)
    );
    let aggregated = scrape(broker, "/metrics");
    assert_eq!(
        sample(
            &aggregated,
            "rabbitmq_global_messages_acknowledged_total{protocol=\"amqp091\",queue_type=\"rabbit_classic_queue\"}"
        ),
        Some(acked_before + 10.0),
        "{aggregated}"
    );
    let latency_count = sample(&aggregated, "ringmq_queue_enqueue_to_deliver_seconds_count");
    assert!(
        latency_count.is_some_and(|n| n >= 1.0),
        "a delivery was timed: {aggregated}"
    );
    for shard in 0..broker.shards() {
        let busy = format!("ringmq_shard_busy_seconds_total{{shard=\"{shard}\"}}");
        assert!(
            sample(&aggregated, &busy).is_some(),
            "{busy} in {aggregated}"
        );
    }
    if broker.shards() > 1 {
        assert!(sample(
            &aggregated,
            "ringmq_mesh_link_stalls_total{shard=\"0\",peer=\"1\"}"
        )
        .is_some());
    }

    for (path, text) in [
        ("/metrics", &aggregated),
        ("/metrics/per-object", &per_object),
    ] {
        match promtool_check(text) {
            Some(Ok(())) => {}
            Some(Err(said)) => panic!("promtool check metrics on {path}: {said}\n{text}"),
            None => eprintln!("promtool not installed: the format check is skipped"),
        }
    }
    let agent = ureq::AgentBuilder::new().timeout(SCRAPE_TIMEOUT).build();
    let missing = agent
        .get(&format!(
            "http://127.0.0.1:{}/nothing",
            broker.prometheus_port()
        ))
        .call();
    assert!(
        matches!(missing, Err(ureq::Error::Status(404, _))),
        "{missing:?}"
    );
}

/// The connection name a test client gives itself (`connection_name`), to find its connection.
const CLIENT_NAME: &str = "prometheus-per-object";
/// The test client's prefetch (basic.qos per consumer) and its unacked deliveries.
const PREFETCH: u16 = 7;
const PUBLISHED: usize = 5;

fn check_format(path: &str, text: &str) {
    match promtool_check(text) {
        Some(Ok(())) => {}
        Some(Err(said)) => panic!("promtool check metrics on {path}: {said}\n{text}"),
        None => eprintln!("promtool not installed: the format check is skipped"),
    }
}

/// A client with a confirming publisher channel and a consumer channel holding its deliveries
/// unacked: the per-channel and per-connection series show them, labelled with the names the
/// management API gives; `/metrics/detailed` shows only the families asked for.
async fn channels_and_connections_per_object_and_detailed(broker: &Broker) {
    let client = HeldClient::run(&broker.url()).await;
    let (publisher, consumer_ch, queue) = (client.publisher, client.consumer, &client.queue);
    let admin = Admin::for_broker(broker);
    let connections = admin.get_json("/connections");
    let name = connections
        .as_array()
        .and_then(|all| {
            all.iter()
                .find(|c| c["client_properties"]["connection_name"] == CLIENT_NAME)
        })
        .and_then(|c| c["name"].as_str())
        .unwrap_or_else(|| panic!("the client in /api/connections: {connections}"))
        .to_string();
    let publisher_label = format!("{{channel=\"{name} ({publisher})\"}}");
    let consumer_label = format!("{{channel=\"{name} ({consumer_ch})\"}}");
    let unacked = format!("rabbitmq_channel_messages_unacked{consumer_label}");
    let text = wait_for_sample(broker, "/metrics/per-object", &unacked, PUBLISHED as f64);
    let published = format!(
        "rabbitmq_channel_messages_published_total{{channel=\"{name} ({publisher})\",vhost=\"/\",exchange=\"\"}}"
    );
    let connection = format!("{{channel=\"{name}\"}}");
    let expected = [
        (published, PUBLISHED as f64),
        (format!("rabbitmq_channel_consumers{consumer_label}"), 1.0),
        (
            format!("rabbitmq_consumer_prefetch{consumer_label}"),
            f64::from(PREFETCH),
        ),
        (
            format!("rabbitmq_channel_messages_unconfirmed{publisher_label}"),
            0.0,
        ),
        (format!("rabbitmq_channel_consumers{publisher_label}"), 0.0),
        (format!("rabbitmq_connection_channels{connection}"), 2.0),
    ];
    for (series, want) in &expected {
        assert_eq!(sample(&text, series), Some(*want), "{series} in\n{text}");
    }
    for direction in ["incoming", "outgoing"] {
        let series = format!("rabbitmq_connection_{direction}_bytes_total{connection}");
        let bytes = sample(&text, &series).unwrap_or(0.0);
        assert!(bytes > (16 * PUBLISHED) as f64, "{series} {bytes}");
    }
    check_format("/metrics/per-object", &text);

    let path =
        "/metrics/detailed?family=queue_coarse_metrics&family=connection_coarse_metrics&vhost=%2F";
    let detailed = scrape(broker, path);
    let ready =
        format!("rabbitmq_detailed_queue_messages_unacked{{vhost=\"/\",queue=\"{queue}\"}}");
    assert_eq!(
        sample(&detailed, &ready),
        Some(PUBLISHED as f64),
        "{detailed}"
    );
    let incoming = format!("rabbitmq_detailed_connection_incoming_bytes_total{connection}");
    assert!(sample(&detailed, &incoming).is_some(), "{detailed}");
    for absent in [
        "rabbitmq_detailed_channel_",
        "rabbitmq_queues ",
        "ringmq_",
        "rabbitmq_queue_",
    ] {
        assert!(!detailed.contains(absent), "{absent} in {detailed}");
    }
    check_format(path, &detailed);
    let other_vhost = scrape(
        broker,
        "/metrics/detailed?family=queue_coarse_metrics&vhost=nope",
    );
    assert!(!other_vhost.contains(queue.as_str()), "{other_vhost}");
    let (status, body) = admin.request("GET", "/connections", None);
    assert_eq!(status, 200);
    assert!(
        !body.contains("\"recv_oct\":0,"),
        "recv_oct is measured now: {body}"
    );
}

/// A known rate: this many publishes per second, paced by a deadline per message.
const PUBLISH_RATE_PER_SECOND: f64 = 100.0;

async fn queue_rates_rise_under_a_known_publish_rate(broker: &Broker) {
    let conn = connect(broker).await;
    let ch = confirming_channel(&conn).await;
    let queue = unique("rated");
    declare_queue(&ch, &queue, QueueDeclareOptions::default())
        .await
        .expect("declare");
    let admin = Admin::for_broker(broker);
    let path = format!("/queues/{}/{}", encode("/"), encode(&queue));
    let started = Instant::now();
    let deadline = started + SHOW_TIMEOUT;
    let interval = Duration::from_secs_f64(1.0 / PUBLISH_RATE_PER_SECOND);
    let mut sent = 0u32;
    let mut last_body = String::new();
    // Publish at the rate, and ask for the queue between publishes: the rate needs two
    // samples at least a second apart on the serving shard.
    let rate = loop {
        let due = started + interval * sent;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
        publish(&ch, "", &queue, b"rated", BasicProperties::default()).await;
        sent += 1;
        if sent.is_multiple_of(25) {
            let (status, body) = admin.request("GET", &path, None);
            assert_eq!(status, 200, "{body}");
            let value: serde_json::Value = serde_json::from_str(&body).expect("json");
            let rate = value["message_stats"]["publish_details"]["rate"]
                .as_f64()
                .unwrap_or(0.0);
            assert_eq!(
                value["message_stats"]["publish"].as_u64(),
                Some(u64::from(sent)),
                "{body}"
            );
            if rate > 0.0 && started.elapsed() > Duration::from_secs(3) {
                break rate;
            }
            last_body = body;
        }
        assert!(
            Instant::now() < deadline,
            "no publish rate in time: {last_body}"
        );
    };
    // The publish loop is paced, so the rate is near the target: loose bounds for a loaded
    // machine (a slow confirm only lowers it).
    assert!(
        rate > PUBLISH_RATE_PER_SECOND * 0.3 && rate < PUBLISH_RATE_PER_SECOND * 1.5,
        "publish rate {rate} for {PUBLISH_RATE_PER_SECOND}/s"
    );
    let (_, overview) = admin.request("GET", "/overview", None);
    let overview: serde_json::Value = serde_json::from_str(&overview).expect("json");
    assert!(
        overview["message_stats"]["publish"]
            .as_u64()
            .is_some_and(|n| n >= u64::from(sent)),
        "{overview}"
    );
}

/// RabbitMQ's metrics (rabbitmq_prometheus) are only as fresh as its statistics, emitted every
/// 5 s by each queue and channel: how long its scrape may take to show the client's channels.
const ORACLE_STATS_TIMEOUT: Duration = Duration::from_secs(60);
/// Families whose labels differ from RabbitMQ's on purpose (TYPE and HELP still must match).
const LABELS_DIFFER: [(&str, &str); 8] = [
    // RabbitMQ's is per channel, queue and exchange; ringmq counts per queue.
    ("rabbitmq_queue_messages_published_total", "per queue"),
    // RabbitMQ's are per channel and queue; ringmq's queues keep them (node totals).
    (
        "rabbitmq_channel_messages_delivered_ack_total",
        "node total",
    ),
    ("rabbitmq_channel_messages_delivered_total", "node total"),
    ("rabbitmq_channel_get_ack_total", "node total"),
    ("rabbitmq_channel_get_total", "node total"),
    ("rabbitmq_channel_messages_redelivered_total", "node total"),
    ("rabbitmq_channel_messages_acked_total", "node total"),
    // ringmq's own version and no Erlang or plugin versions.
    ("rabbitmq_build_info", "ringmq_version"),
];

/// One family of a scrape: its TYPE, HELP, and the label names its samples carry.
#[derive(Debug, Default, Clone, PartialEq)]
struct FamilyShape {
    kind: String,
    help: String,
    labels: std::collections::BTreeSet<String>,
}

/// Every family of a text-format scrape by name (histogram samples under their family).
fn families(text: &str) -> std::collections::BTreeMap<String, FamilyShape> {
    let mut families: std::collections::BTreeMap<String, FamilyShape> = Default::default();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            families.entry(name.to_string()).or_default().help = help.to_string();
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            families.entry(name.to_string()).or_default().kind = kind.to_string();
        } else if !line.starts_with('#') && !line.is_empty() {
            let name_end = line.find(['{', ' ']).unwrap_or(line.len());
            let name = &line[..name_end];
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| {
                    let base = name.strip_suffix(suffix)?;
                    families.contains_key(base).then_some(base)
                })
                .unwrap_or(name)
                .to_string();
            let labels = label_names(&line[name_end..]);
            let shape = families.entry(family).or_default();
            shape
                .labels
                .extend(labels.into_iter().filter(|l| l != "le"));
        }
    }
    families
}

/// The label names of `{a="x",b="y\"z"} 1` (escapes in values skipped).
fn label_names(rest: &str) -> Vec<String> {
    let Some(body) = rest.strip_prefix('{') else {
        return Vec::new();
    };
    let mut names = Vec::new();
    let mut chars = body.chars();
    loop {
        let name: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if name.is_empty() || chars.next() != Some('"') {
            return names;
        }
        names.push(name.trim_start_matches(',').to_string());
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => break,
                _ => {}
            }
        }
        if chars.next() != Some(',') {
            return names;
        }
    }
}

/// A client (named `CLIENT_NAME`) with a confirming publisher channel that published
/// `PUBLISHED` messages and a consumer channel (prefetch `PREFETCH`) holding them unacked, open
/// while the test scrapes; the same on ringmq and on RabbitMQ.
struct HeldClient {
    publisher: u16,
    consumer: u16,
    queue: String,
    // Held: lapin closes a channel whose last handle is dropped.
    _channels: [lapin::Channel; 2],
    _connection: lapin::Connection,
    _consumer: lapin::Consumer,
}

impl HeldClient {
    async fn run(url: &str) -> HeldClient {
        use futures_util::StreamExt;
        let properties =
            lapin::ConnectionProperties::default().with_connection_name(CLIENT_NAME.into());
        let connection = common::step("connect", lapin::Connection::connect(url, properties))
            .await
            .expect("connect");
        let publisher = confirming_channel(&connection).await;
        let queue = unique("held");
        declare_queue(&publisher, &queue, QueueDeclareOptions::default())
            .await
            .expect("declare");
        let consumer_ch = channel(&connection).await;
        consumer_ch
            .basic_qos(PREFETCH, lapin::options::BasicQosOptions::default())
            .await
            .expect("qos");
        let mut consumer = consume(&consumer_ch, &queue, false).await;
        for i in 0..PUBLISHED {
            let body = [i as u8; 16];
            publish(&publisher, "", &queue, &body, BasicProperties::default()).await;
        }
        for _ in 0..PUBLISHED {
            let _held = common::step("delivery", consumer.next()).await;
        }
        HeldClient {
            publisher: publisher.id(),
            consumer: consumer_ch.id(),
            queue,
            _channels: [publisher, consumer_ch],
            _connection: connection,
            _consumer: consumer,
        }
    }
}

/// GET a RabbitMQ scrape until `needle` is in it (bounded).
fn scrape_rabbitmq(port: u16, path: &str, needle: &str) -> String {
    let url = format!("http://127.0.0.1:{port}{path}");
    let agent = ureq::AgentBuilder::new().timeout(SCRAPE_TIMEOUT).build();
    let deadline = Instant::now() + ORACLE_STATS_TIMEOUT;
    loop {
        let text = agent
            .get(&url)
            .call()
            .ok()
            .and_then(|r| r.into_string().ok())
            .unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{needle} never in {url}:\n{text}"
        );
        std::thread::sleep(POLL_INTERVAL * 5);
    }
}

/// Every `prefix` family ringmq shows is RabbitMQ's: same TYPE and HELP, same label names
/// (but `LABELS_DIFFER`). What differs, listed.
fn differences(ours: &str, theirs: &str, prefix: &str) -> Vec<String> {
    let (ours, theirs) = (families(ours), families(theirs));
    let mut differences = Vec::new();
    for (name, shape) in ours.iter().filter(|(name, _)| name.starts_with(prefix)) {
        let Some(their) = theirs.get(name) else {
            differences.push(format!("{name}: not in RabbitMQ's scrape"));
            continue;
        };
        if (shape.kind.as_str(), shape.help.as_str()) != (their.kind.as_str(), their.help.as_str())
        {
            differences.push(format!("{name}: ours {shape:?}, RabbitMQ's {their:?}"));
        }
        let labels_may_differ = LABELS_DIFFER.iter().any(|(n, _)| *n == name);
        let both_sampled = !shape.labels.is_empty() && !their.labels.is_empty();
        if !labels_may_differ && both_sampled && shape.labels != their.labels {
            differences.push(format!(
                "{name}: labels {:?}, RabbitMQ's {:?}",
                shape.labels, their.labels
            ));
        }
    }
    differences
}

/// RabbitMQ 3.10.8 with rabbitmq_prometheus as the oracle: the same client on both, then every
/// `rabbitmq_` family of ringmq's `/metrics/per-object` and `rabbitmq_detailed_` family of its
/// `/metrics/detailed` (the families ringmq has) is RabbitMQ's, names, types, help and labels.
/// Skipped when rabbitmq-server is not installed (`.ci/run` installs it).
#[tokio::test(flavor = "multi_thread")]
async fn families_match_rabbitmq() {
    use common::rabbitmq::{rabbitmq_installed, RabbitMq, RABBITMQ_SERVER};
    if !rabbitmq_installed() {
        eprintln!(
            "SKIPPED prometheus oracle: rabbitmq-server is not installed ({RABBITMQ_SERVER})"
        );
        return;
    }
    let rabbit = RabbitMq::start_with_plugins(&["rabbitmq_management", "rabbitmq_prometheus"]);
    let ringmq = Broker::start(1);
    let rabbit_url = format!("amqp://guest:guest@127.0.0.1:{}/%2f", rabbit.port);
    let _on_rabbit = HeldClient::run(&rabbit_url).await;
    let _on_ringmq = HeldClient::run(&ringmq.url()).await;
    let unacked = "rabbitmq_channel_messages_unacked{";
    let per_object = scrape_rabbitmq(rabbit.prometheus_port, "/metrics/per-object", unacked);
    // Families RabbitMQ serves on /metrics only (the global counters) count as its too.
    let aggregated = scrape_rabbitmq(rabbit.prometheus_port, "/metrics", "rabbitmq_");
    let theirs = format!("{per_object}\n{aggregated}");
    let ours = wait_for_sample_prefix(&ringmq, "/metrics/per-object", unacked);
    let mut found = differences(&ours, &theirs, "rabbitmq_");
    let detailed = "/metrics/detailed?family=queue_coarse_metrics&family=queue_metrics\
        &family=channel_metrics&family=channel_exchange_metrics\
        &family=connection_coarse_metrics&family=connection_metrics";
    let theirs = scrape_rabbitmq(
        rabbit.prometheus_port,
        detailed,
        "rabbitmq_detailed_channel_messages_unacked{",
    );
    let ours = scrape(&ringmq, detailed);
    found.extend(differences(&ours, &theirs, "rabbitmq_detailed_"));
    assert!(
        found.is_empty(),
        "ringmq vs RabbitMQ 3.10.8:\n{}",
        found.join("\n")
    );
}

/// Scrapes `path` until a sample whose series starts with `prefix` is there (bounded).
fn wait_for_sample_prefix(broker: &Broker, path: &str, prefix: &str) -> String {
    let deadline = Instant::now() + SHOW_TIMEOUT;
    loop {
        let text = scrape(broker, path);
        if text.lines().any(|line| line.starts_with(prefix)) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{prefix} never in {path}:\n{text}"
        );
        std::thread::sleep(POLL_INTERVAL);
    }
}
