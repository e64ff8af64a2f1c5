//! A confirming publisher of persistent messages with unique ids, for the disk fault tests:
//! it keeps a window of publishes in flight, records which ids the broker confirmed and how
//! many it nacked, and after a restart `recovered_ids` reads back what survived.

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use lapin::options::BasicPublishOptions;
use lapin::publisher_confirm::PublisherConfirm;
use lapin::{BasicProperties, Channel};

use super::{amqp, step, STEP_TIMEOUT};

const MIB: u64 = 1 << 20;
/// Bounds on one `publish_until` phase.
pub const PHASE_BYTES_MAX: u64 = 512 * MIB;
pub const PHASE_DEADLINE: Duration = Duration::from_secs(90);

/// What a publisher saw: the ids the broker confirmed, and how many it nacked.
#[derive(Default)]
pub struct Outcome {
    pub confirmed: Vec<String>,
    pub nacked: usize,
}

pub struct Publisher {
    channel: Channel,
    queue: String,
    body_bytes: usize,
    /// Publishes in flight at once (confirms awaited oldest first).
    window: usize,
    pub next: u64,
    in_flight: VecDeque<(String, PublisherConfirm)>,
    pub outcome: Outcome,
}

impl Publisher {
    /// `channel` must be in confirm mode.
    pub fn new(channel: Channel, queue: &str, body_bytes: usize, window: usize) -> Publisher {
        Publisher {
            channel,
            queue: queue.to_owned(),
            body_bytes,
            window,
            next: 0,
            in_flight: VecDeque::new(),
            outcome: Outcome::default(),
        }
    }

    pub async fn publish_one(&mut self) {
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
                &vec![b'x'; self.body_bytes],
                properties,
            ),
        )
        .await
        .expect("basic.publish: the channel stays open through the fault");
        self.in_flight.push_back((id, confirm));
        if self.in_flight.len() >= self.window {
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

    pub async fn settle_all(&mut self) {
        while !self.in_flight.is_empty() {
            self.settle_oldest().await;
        }
    }

    /// Publishes until `done` holds for the outcome, within `PHASE_BYTES_MAX` and
    /// `PHASE_DEADLINE`, then waits for every confirm.
    pub async fn publish_until(&mut self, what: &str, done: impl Fn(&Outcome) -> bool) {
        let started = Instant::now();
        let mut sent_bytes = 0;
        while !done(&self.outcome) {
            assert!(
                sent_bytes < PHASE_BYTES_MAX && started.elapsed() < PHASE_DEADLINE,
                "{what}: not seen after {} MiB in {:?} ({} confirmed, {} nacked)",
                sent_bytes / MIB,
                started.elapsed(),
                self.outcome.confirmed.len(),
                self.outcome.nacked
            );
            self.publish_one().await;
            sent_bytes += self.body_bytes as u64;
        }
        self.settle_all().await;
    }

    pub fn confirmed(&self) -> BTreeSet<String> {
        self.outcome.confirmed.iter().cloned().collect()
    }
}

/// After a restart: every confirmed message is in `queue` and nothing was invented (at most
/// the `published` count), each with a whole body. Takes the messages (basic.get, no-ack).
pub async fn assert_recovered(
    channel: &Channel,
    queue: &str,
    body_bytes: usize,
    confirmed: &BTreeSet<String>,
    published: usize,
) {
    let recovered = recovered_ids(channel, queue, body_bytes).await;
    let lost: Vec<&String> = confirmed.difference(&recovered).collect();
    assert!(lost.is_empty(), "confirmed messages lost: {lost:?}");
    assert!(recovered.len() <= published, "messages invented");
    println!(
        "after kill -9: {} recovered of {} published, {} confirmed",
        recovered.len(),
        published,
        confirmed.len()
    );
}

/// Takes every message of `queue` (basic.get, no-ack) and returns their ids; each must have a
/// whole body of `body_bytes`.
async fn recovered_ids(channel: &Channel, queue: &str, body_bytes: usize) -> BTreeSet<String> {
    let mut recovered = BTreeSet::new();
    while let Some(message) = amqp::get(channel, queue, true).await {
        let id = message
            .delivery
            .properties
            .message_id()
            .as_ref()
            .map(|id| id.to_string())
            .expect("message id");
        assert_eq!(message.delivery.data.len(), body_bytes, "{id} whole");
        recovered.insert(id);
    }
    recovered
}
