//! The message log meeting a full disk (a real ENOSPC: the data directory is on a small loop
//! filesystem that the test fills, with the disk alarm off so the log itself hits the wall):
//! publishes whose records could not be made durable are nacked, never confirmed; the broker
//! keeps serving reads, consumers and its management API meanwhile; once space returns it
//! confirms again without a restart; and a kill -9 afterwards recovers every confirmed message.

use crate::common;

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use common::{admin::Admin, amqp, filesystem::SmallFilesystem, step, unique, Broker, STEP_TIMEOUT};
use lapin::options::{BasicGetOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::publisher_confirm::PublisherConfirm;
use lapin::{BasicProperties, Channel};

const MIB: u64 = 1 << 20;
const BODY_BYTES: usize = 64 * 1024;
/// Publishes in flight at once (confirms awaited oldest first).
const WINDOW: usize = 32;
/// Free space left when the filesystem is filled: less than one of the log's segments, so the
/// log fails at the latest when it needs its next one.
const LEAVE_FREE_BYTES: u64 = 4 * MIB;
/// Bounds on each phase: publishing until the first nack, and until the first ack once space
/// is back.
const PUBLISH_BYTES_MAX: u64 = 512 * MIB;
const PHASE_DEADLINE: Duration = Duration::from_secs(90);

/// What a publisher saw: the ids the broker confirmed, and how many it nacked.
#[derive(Default)]
struct Outcome {
    confirmed: Vec<String>,
    nacked: usize,
}

/// A confirming publisher of persistent messages with unique ids.
struct Publisher {
    channel: Channel,
    queue: String,
    next: u64,
    in_flight: VecDeque<(String, PublisherConfirm)>,
    outcome: Outcome,
}

impl Publisher {
    async fn publish_one(&mut self) {
        let id = format!("m{}", self.next);
        self.next += 1;
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_message_id(id.as_str().into());
        let confirm = step(
            "basic.publish",
            self.channel.basic_publish(
                "",
                &self.queue,
                BasicPublishOptions::default(),
                &vec![b'x'; BODY_BYTES],
                properties,
            ),
        )
        .await
        .expect("basic.publish: the channel stays open through the fault");
        self.in_flight.push_back((id, confirm));
        if self.in_flight.len() >= WINDOW {
            self.settle_oldest().await;
        }
    }

    async fn settle_oldest(&mut self) {
        let Some((id, confirm)) = self.in_flight.pop_front() else {
            return;
        };
        let confirmation = tokio::time::timeout(STEP_TIMEOUT, confirm)
            .await
            .unwrap_or_else(|_| panic!("no confirm or nack for {id} within {STEP_TIMEOUT:?}"))
            .expect("confirm");
        if confirmation.is_ack() {
            self.outcome.confirmed.push(id);
        } else {
            self.outcome.nacked += 1;
        }
    }

    async fn settle_all(&mut self) {
        while !self.in_flight.is_empty() {
            self.settle_oldest().await;
        }
    }

    /// Publishes until `done` holds for the outcome, within the byte and time bounds.
    async fn publish_until(&mut self, what: &str, done: impl Fn(&Outcome) -> bool) {
        let started = Instant::now();
        let mut sent_bytes = 0;
        while !done(&self.outcome) {
            assert!(
                sent_bytes < PUBLISH_BYTES_MAX && started.elapsed() < PHASE_DEADLINE,
                "{what}: not seen after {} MiB in {:?} ({} confirmed, {} nacked)",
                sent_bytes / MIB,
                started.elapsed(),
                self.outcome.confirmed.len(),
                self.outcome.nacked
            );
            self.publish_one().await;
            sent_bytes += BODY_BYTES as u64;
        }
        self.settle_all().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_nacks_keeps_serving_resumes_and_loses_nothing_confirmed() {
    let filesystem = match SmallFilesystem::make(256 * MIB) {
        Ok(filesystem) => filesystem,
        Err(reason) => {
            println!("skipped: cannot make a small filesystem: {reason}");
            return;
        }
    };
    std::fs::create_dir_all(filesystem.data_dir()).expect("data dir");
    // The disk alarm off: the log, not the alarm, must meet the full disk.
    let mut broker = Broker::start_in(1, Some(&filesystem.data_dir()), &["--disk-free-limit", "0"]);
    let queue = unique("disk-full");
    let connection = amqp::connect(&broker).await;
    let channel = amqp::confirming_channel(&connection).await;
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    amqp::declare_queue(&channel, &queue, durable)
        .await
        .expect("declare");
    let mut publisher = Publisher {
        channel,
        queue: queue.clone(),
        next: 0,
        in_flight: VecDeque::new(),
        outcome: Outcome::default(),
    };
    publisher
        .publish_until("a first confirm", |o| !o.confirmed.is_empty())
        .await;

    filesystem
        .fill_leaving(LEAVE_FREE_BYTES)
        .expect("fill the filesystem");
    publisher
        .publish_until("a nack on the full disk", |o| o.nacked > 0)
        .await;
    let confirmed_before_space = publisher.outcome.confirmed.len();
    println!(
        "disk full: {} confirmed, {} nacked, {} MiB free",
        confirmed_before_space,
        publisher.outcome.nacked,
        filesystem.free_bytes() / MIB
    );
    assert!(
        broker.log_text().contains("No space left"),
        "the log met ENOSPC"
    );

    // Still serving: a get on another channel, and the management API.
    let reader = amqp::channel(&connection).await;
    let first = step(
        "basic.get",
        reader.basic_get(&queue, BasicGetOptions { no_ack: false }),
    )
    .await
    .expect("basic.get")
    .expect("a confirmed message is there to read");
    assert_eq!(first.delivery.data.len(), BODY_BYTES);
    let (status, _) = Admin::for_broker(&broker).request("GET", "/overview", None);
    assert_eq!(status, 200, "the management API answers on a full disk");
    step("close the reader", reader.close(200, "bye"))
        .await
        .expect("close reader");

    // Space back: confirms resume without a restart.
    filesystem.release_filler();
    let nacked_while_full = publisher.outcome.nacked;
    publisher
        .publish_until("a confirm once space is back", |o| {
            o.confirmed.len() > confirmed_before_space
        })
        .await;
    println!(
        "space back: {} confirmed in all, {} nacked in all ({} while full)",
        publisher.outcome.confirmed.len(),
        publisher.outcome.nacked,
        nacked_while_full
    );
    let confirmed: BTreeSet<String> = publisher.outcome.confirmed.iter().cloned().collect();
    let published = publisher.next as usize;
    drop(publisher);
    let _ = connection.close(200, "bye").await;

    // Every confirmed message survives a kill -9; nothing that was never published appears.
    broker.kill9();
    broker.restart_same_dir();
    let connection = amqp::connect(&broker).await;
    let channel = amqp::channel(&connection).await;
    let mut recovered = BTreeSet::new();
    while let Some(message) = amqp::get(&channel, &queue, true).await {
        let id = message
            .delivery
            .properties
            .message_id()
            .as_ref()
            .map(|id| id.to_string())
            .expect("message id");
        assert_eq!(message.delivery.data.len(), BODY_BYTES, "{id} whole");
        recovered.insert(id);
    }
    let lost: Vec<&String> = confirmed.difference(&recovered).collect();
    assert!(lost.is_empty(), "confirmed messages lost: {lost:?}");
    assert!(recovered.len() <= published, "messages invented");
    println!(
        "after kill -9: {} recovered of {} published, {} confirmed",
        recovered.len(),
        published,
        confirmed.len()
    );
    let _ = channel
        .queue_delete(&queue, Default::default())
        .await
        .map(|_| ());
    let _ = connection.close(200, "bye").await;
    broker.stop();
}
