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
        "rabbitmq_global_messages_acknowledged_total{protocol=\"amqp091\"}",
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
            "rabbitmq_global_messages_acknowledged_total{protocol=\"amqp091\"}"
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
