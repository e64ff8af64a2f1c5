//! The message log meeting EIO: on the DMA write of a batch (torn: its first half lands), on
//! the fdatasync after it, and on the reads that page a backlog back in. Publishes whose
//! records could not be made durable are nacked, never confirmed; the broker keeps serving
//! reads, consumers and its management API; once the disk works again it confirms (and reads)
//! again without a restart; a kill -9 afterwards recovers every confirmed message.
//!
//! The errors come from the injection layer under the log (`src/storage/wal/fault.rs`): these
//! machines' kernels have no device-mapper, so there is no `dm-flakey` device to put the data
//! directory on. The broker must be built with `--features fault-injection`; without it these
//! tests are reported as ignored, with that reason, rather than passing:
//! `cargo test --release --features fault-injection --test it disk_eio::`.

use crate::common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::confirmed::{assert_recovered, Publisher};
use common::{admin::Admin, amqp, step, unique, Broker, ABSENCE_TIMEOUT, STEP_TIMEOUT};
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicPublishOptions, BasicQosOptions, QueueDeclareOptions,
};
use lapin::BasicProperties;

const BODY_BYTES: usize = 16 * 1024;
const WINDOW: usize = 32;
/// How long a test waits for the broker to log that it met an injected error.
const LOG_WAIT_TIMEOUT: Duration = Duration::from_secs(20);
const LOG_POLL_INTERVAL: Duration = Duration::from_millis(20);
const EIO_TEXT: &str = "Input/output error";

/// The file the broker reads its injected faults from (`RINGMQ_WAL_FAULTS_FILE`).
struct Faults(PathBuf);

impl Faults {
    fn new() -> Faults {
        let path = std::env::temp_dir().join(unique("ringmq-faults"));
        std::fs::write(&path, "").expect("faults file");
        Faults(path)
    }

    fn env(&self) -> [(&'static str, &str); 1] {
        [(
            "RINGMQ_WAL_FAULTS_FILE",
            self.0.to_str().expect("utf-8 temp path"),
        )]
    }

    /// Fails these operations from now on (`write`, `fdatasync`, `read`, `create`).
    fn set(&self, ops: &str) {
        std::fs::write(&self.0, ops).expect("arm faults");
    }

    fn clear(&self) {
        self.set("");
    }
}

impl Drop for Faults {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

/// The first line of a flush failure episode (`failure_log`), and the one that ends it.
const FLUSH_FAILED_TEXT: &str = "wal flush failed;";
const FLUSH_RECOVERED_TEXT: &str = "wal flush recovered";

/// `ringmq_<name>` from the Prometheus endpoint.
fn metric(broker: &Broker, name: &str) -> f64 {
    let url = format!("http://127.0.0.1:{}/metrics", broker.prometheus_port());
    let text = ureq::AgentBuilder::new()
        .timeout(STEP_TIMEOUT)
        .build()
        .get(&url)
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .into_string()
        .expect("metrics");
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in the metrics"))
}

/// The node object's `message_log` counts (ringmq's own fields).
fn node_message_log(broker: &Broker) -> serde_json::Value {
    let nodes = Admin::for_broker(broker).get_json("/nodes");
    nodes[0]["message_log"].clone()
}

/// Waits until the broker's log holds `needle` more than `before` times.
async fn wait_for_log(broker: &Broker, needle: &str, before: usize) {
    let deadline = Instant::now() + LOG_WAIT_TIMEOUT;
    while broker.log_text().matches(needle).count() <= before {
        assert!(
            Instant::now() < deadline,
            "the broker did not log {needle:?} within {LOG_WAIT_TIMEOUT:?}"
        );
        tokio::time::sleep(LOG_POLL_INTERVAL).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "fault-injection"),
    ignore = "needs --features fault-injection (no device-mapper here to fail a disk with)"
)]
async fn eio_on_append_and_fdatasync_nacks_keeps_serving_resumes_and_loses_nothing_confirmed() {
    let faults = Faults::new();
    let mut broker = Broker::start_with_env(1, &faults.env(), &[]);
    let queue = unique("eio");
    let side = unique("eio-side");
    let connection = amqp::connect(&broker).await;
    let channel = amqp::confirming_channel(&connection).await;
    amqp::declare_queue(&channel, &queue, durable())
        .await
        .expect("declare");
    // A transient queue with a consumer: it needs no disk, so it keeps flowing throughout.
    let side_channel = amqp::channel(&connection).await;
    amqp::declare_queue(&side_channel, &side, QueueDeclareOptions::default())
        .await
        .expect("declare side");
    let mut side_consumer = amqp::consume(&side_channel, &side, true).await;
    let mut publisher = Publisher::new(channel, &queue, BODY_BYTES, WINDOW);
    publisher
        .publish_until("a first confirm", |o| !o.confirmed.is_empty())
        .await;

    let admin = Admin::for_broker(&broker);
    for (episode, op) in ["write", "fdatasync"].into_iter().enumerate() {
        let confirmed_before = publisher.outcome.confirmed.len();
        let nacked_before = publisher.outcome.nacked;
        let logged_before = broker.log_text().matches(EIO_TEXT).count();
        faults.set(op);
        publisher
            .publish_until(&format!("a nack on EIO in {op}"), |o| {
                o.nacked > nacked_before
            })
            .await;
        wait_for_log(&broker, EIO_TEXT, logged_before).await;
        println!(
            "EIO on {op}: {} confirmed, {} nacked so far",
            publisher.outcome.confirmed.len(),
            publisher.outcome.nacked
        );
        // Keep failing a while: more nacks, still one warning for the episode.
        let nacked_once = publisher.outcome.nacked;
        publisher
            .publish_until(&format!("more nacks on EIO in {op}"), |o| {
                o.nacked >= nacked_once + 4 * WINDOW
            })
            .await;
        let log = broker.log_text();
        assert_eq!(
            log.matches(FLUSH_FAILED_TEXT).count(),
            episode + 1,
            "one warning per failure episode, not per flush"
        );
        // Visible to operators: the health check fails, the node and /metrics count it.
        let (status, body) = admin.request("GET", "/health/checks/message-log", None);
        assert_eq!(status, 503, "{body}");
        let counts = node_message_log(&broker);
        println!("EIO on {op}: node message_log {counts}");
        assert_eq!(counts["failing"], true);
        let errors_field = if op == "write" {
            "write_errors"
        } else {
            "fdatasync_errors"
        };
        assert!(counts[errors_field].as_u64().unwrap_or(0) >= 1, "{counts}");
        assert!(
            counts["flush_retries"].as_u64().unwrap_or(0) >= 1,
            "{counts}"
        );
        let series = format!("ringmq_log_{errors_field}_total");
        assert!(metric(&broker, &series) >= 1.0);
        assert_eq!(metric(&broker, "ringmq_log_failing"), 1.0);

        // Still serving: a get of a confirmed message, a consumer, the management API.
        let reader = amqp::channel(&connection).await;
        let got = step(
            "basic.get",
            reader.basic_get(&queue, BasicGetOptions { no_ack: false }),
        )
        .await
        .expect("basic.get")
        .expect("a confirmed message is there to read");
        assert_eq!(got.delivery.data.len(), BODY_BYTES);
        step("close the reader", reader.close(200, "bye"))
            .await
            .expect("close reader");
        step(
            "basic.publish (transient)",
            side_channel.basic_publish(
                "",
                &side,
                BasicPublishOptions::default(),
                b"still flowing",
                BasicProperties::default(),
            ),
        )
        .await
        .expect("publish to the side queue");
        let delivery = amqp::next_delivery(&mut side_consumer).await;
        assert_eq!(delivery.data, b"still flowing");
        let (status, _) = Admin::for_broker(&broker).request("GET", "/overview", None);
        assert_eq!(
            status, 200,
            "the management API answers while the disk fails"
        );

        // The device works again: confirms resume without a restart.
        let recovered_before = broker.log_text().matches(FLUSH_RECOVERED_TEXT).count();
        faults.clear();
        let confirmed_while_failing = publisher.outcome.confirmed.len();
        assert!(confirmed_while_failing >= confirmed_before);
        publisher
            .publish_until(&format!("a confirm after EIO in {op}"), |o| {
                o.confirmed.len() > confirmed_while_failing
            })
            .await;
        wait_for_log(&broker, FLUSH_RECOVERED_TEXT, recovered_before).await;
        let (status, body) = admin.request("GET", "/health/checks/message-log", None);
        assert_eq!(status, 200, "{body}");
        assert_eq!(node_message_log(&broker)["failing"], false);
        assert_eq!(metric(&broker, "ringmq_log_failing"), 0.0);
    }

    // Torn writes at the tail, then a crash before the device recovers.
    let nacked_before = publisher.outcome.nacked;
    faults.set("write");
    publisher
        .publish_until("a nack on torn writes", |o| o.nacked > nacked_before)
        .await;
    let confirmed = publisher.confirmed();
    let published = publisher.next as usize;
    drop(publisher);
    drop(side_consumer);
    let _ = connection.close(200, "bye").await;
    broker.kill9();
    faults.clear();
    broker.restart_same_dir();

    let connection = amqp::connect(&broker).await;
    let channel = amqp::channel(&connection).await;
    assert_recovered(&channel, &queue, BODY_BYTES, &confirmed, published).await;
    let _ = connection.close(200, "bye").await;
    broker.stop();
}

/// Acks a delivery; returns its message id.
async fn take(delivery: Delivery) -> String {
    let id = delivery
        .properties
        .message_id()
        .as_ref()
        .map(|id| id.to_string())
        .expect("message id");
    step("ack", delivery.acker.ack(BasicAckOptions::default()))
        .await
        .expect("ack");
    id
}

/// Paged messages whose reads fail with EIO stay queued (they were confirmed: dropping them
/// would lose them for good) and are delivered once the disk reads again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "fault-injection"),
    ignore = "needs --features fault-injection (no device-mapper here to fail a disk with)"
)]
async fn eio_on_page_in_keeps_confirmed_messages_until_the_disk_reads_again() {
    const BACKLOG_MESSAGES: u64 = 256;
    let faults = Faults::new();
    let mut broker = Broker::start_with_env(
        1,
        &faults.env(),
        &["--queue-memory-bytes", &(1u64 << 20).to_string()],
    );
    let queue = unique("eio-paged");
    let connection = amqp::connect(&broker).await;
    let channel = amqp::confirming_channel(&connection).await;
    amqp::declare_queue(&channel, &queue, durable())
        .await
        .expect("declare");
    let mut publisher = Publisher::new(channel, &queue, BODY_BYTES * 4, WINDOW);
    publisher
        .publish_until("the backlog", |o| {
            o.confirmed.len() as u64 >= BACKLOG_MESSAGES
        })
        .await;
    let confirmed = publisher.confirmed();
    assert_eq!(publisher.outcome.nacked, 0);
    let messages = publisher.next;
    drop(publisher);

    faults.set("read");
    let consumer_channel = amqp::channel(&connection).await;
    step(
        "basic.qos",
        consumer_channel.basic_qos(16, BasicQosOptions::default()),
    )
    .await
    .expect("qos");
    let mut consumer = amqp::consume(&consumer_channel, &queue, false).await;
    let mut delivered = std::collections::BTreeSet::new();
    // What was in memory comes; the paged rest cannot be read while the fault lasts.
    while let Ok(Some(Ok(delivery))) = tokio::time::timeout(ABSENCE_TIMEOUT, consumer.next()).await
    {
        delivered.insert(take(delivery).await);
    }
    wait_for_log(&broker, EIO_TEXT, 0).await;
    let during = delivered.len() as u64;
    // Counted for the operator: reads that failed and were tried again.
    let deadline = Instant::now() + LOG_WAIT_TIMEOUT;
    while metric(&broker, "ringmq_log_read_retries_total") < 2.0 {
        assert!(Instant::now() < deadline, "read retries never counted");
        tokio::time::sleep(LOG_POLL_INTERVAL).await;
    }
    let counts = node_message_log(&broker);
    println!("EIO on page-in: node message_log {counts}");
    assert!(counts["read_errors"].as_u64().unwrap_or(0) >= 1, "{counts}");
    let read_warnings = broker
        .log_text()
        .matches("reading paged messages back (they stay queued) failed")
        .count();
    assert_eq!(
        read_warnings, 1,
        "one warning for the episode, not per retry"
    );
    assert!(
        during < messages,
        "the backlog was paged: {during} delivered"
    );
    let (_, body) =
        Admin::for_broker(&broker).request("GET", &format!("/queues/%2f/{queue}"), None);
    println!("EIO on page-in: {during} of {messages} delivered; queue: {body}");
    let depth = amqp::declare_queue(
        &amqp::channel(&connection).await,
        &queue,
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
    )
    .await
    .expect("passive declare")
    .message_count() as u64;
    assert_eq!(
        depth + during,
        messages,
        "no confirmed message dropped over a read error"
    );

    faults.clear();
    while (delivered.len() as u64) < messages {
        let delivery = tokio::time::timeout(STEP_TIMEOUT * 2, consumer.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{} of {messages} delivered: the rest never came after the disk recovered",
                    delivered.len()
                )
            })
            .expect("consumer open")
            .expect("delivery");
        delivered.insert(take(delivery).await);
    }
    assert_eq!(delivered, confirmed, "every confirmed message delivered");
    let _ = connection.close(200, "bye").await;
    broker.stop();
}
