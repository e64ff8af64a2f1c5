//! Durability (issue 3), black-box: graceful restart, `kill -9` during confirmed publishing, and
//! damaged log files. Every test runs against 1 and 2 shards and restarts the broker on the same
//! data directory, so each gets `&mut Broker`.
//!
//! What the broker promises and these tests hold it to: durable topology and persistent messages
//! in durable queues come back after a restart or a crash, in order, marked redelivered; acked
//! and transient ones do not; a torn last write is cut off; a bad record followed by later good
//! ones is corruption and the broker refuses to start, naming the file and the offset.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::amqp::{
    channel, confirming_channel, connect, consume, declare_queue, expect_code, get, next_delivery,
    publish, publish_confirmed,
};
use common::{step, unique, Broker, STEP_TIMEOUT};
use lapin::message::Delivery;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, ExchangeKind};
use tokio::sync::Notify;

const NOT_FOUND: u16 = 404;
const PRECONDITION_FAILED: u16 = 406;
const DELIVERY_MODE_TRANSIENT: u8 = 1;
const DELIVERY_MODE_PERSISTENT: u8 = 2;

per_shard_count_mut!(
    restart_keeps_durable_state_only,
    crash_during_confirmed_publishing_loses_nothing_confirmed,
    corrupt_early_record_refuses_start_naming_file_and_offset,
    corrupt_topology_record_refuses_start,
    torn_last_record_zeroed_is_truncated,
    torn_last_record_file_cut_is_truncated,
    message_ttl_counts_from_the_publish_across_a_restart,
    delivery_count_survives_a_restart,
    a_full_log_batch_slows_publishers_on_other_shards_instead_of_nacking,
);

fn persistent(n: i32) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert("n".into(), AMQPValue::LongInt(n));
    BasicProperties::default()
        .with_delivery_mode(DELIVERY_MODE_PERSISTENT)
        .with_content_type("text/plain".into())
        .with_message_id(format!("m{n}").into())
        .with_headers(headers)
}

fn durable_queue() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

fn passive_queue() -> QueueDeclareOptions {
    QueueDeclareOptions {
        passive: true,
        ..Default::default()
    }
}

fn max_length_args(max: i32) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongInt(max));
    args
}

async fn declare_exchange_with(
    ch: &Channel,
    name: &str,
    options: ExchangeDeclareOptions,
) -> lapin::Result<()> {
    step(
        "exchange.declare",
        ch.exchange_declare(name, ExchangeKind::Direct, options, FieldTable::default()),
    )
    .await
}

async fn declare_queue_with(
    ch: &Channel,
    name: &str,
    options: QueueDeclareOptions,
    args: FieldTable,
) -> lapin::Result<lapin::Queue> {
    step("queue.declare", ch.queue_declare(name, options, args)).await
}

/// Message count of a queue that must exist (passive declare on a fresh channel).
async fn message_count(connection: &lapin::Connection, queue: &str) -> u32 {
    let ch = channel(connection).await;
    let q = declare_queue(&ch, queue, passive_queue())
        .await
        .unwrap_or_else(|e| panic!("queue {queue} should exist: {e}"));
    q.message_count()
}

async fn ack(delivery: &Delivery) {
    step("basic.ack", delivery.acker.ack(BasicAckOptions::default()))
        .await
        .expect("basic.ack");
}

fn header_n(delivery: &Delivery) -> Option<i32> {
    let headers = delivery.properties.headers().as_ref()?;
    match headers.inner().get(&ShortString::from("n")) {
        Some(AMQPValue::LongInt(n)) => Some(*n),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Graceful restart

struct RestartNames {
    exchange: String,
    queue: String,
    transient_exchange: String,
    transient_queue: String,
}

const RESTART_KEY: &str = "k";
const RESTART_QUEUE_MAX_LENGTH: i32 = 1000;

async fn restart_keeps_durable_state_only(broker: &mut Broker) {
    let names = RestartNames {
        exchange: unique("durable-ex"),
        queue: unique("durable-q"),
        transient_exchange: unique("transient-ex"),
        transient_queue: unique("transient-q"),
    };
    let holder = restart_setup(broker, &names).await;
    // `holder` keeps message 3 delivered-unacked while the broker stops.
    broker.stop();
    drop(holder);
    broker.restart_same_dir();
    restart_check(broker, &names).await;
    // What was acked after the restart stays acked across another one.
    broker.stop();
    broker.restart_same_dir();
    let connection = connect(broker).await;
    assert_eq!(message_count(&connection, &names.queue).await, 0);
}

/// Builds the state before the stop. Returns the connection holding an unacked delivery.
async fn restart_setup(broker: &Broker, names: &RestartNames) -> lapin::Connection {
    let connection = connect(broker).await;
    let ch = confirming_channel(&connection).await;
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    declare_exchange_with(&ch, &names.exchange, durable)
        .await
        .expect("durable exchange");
    declare_exchange_with(&ch, &names.transient_exchange, Default::default())
        .await
        .expect("transient exchange");
    let args = max_length_args(RESTART_QUEUE_MAX_LENGTH);
    declare_queue_with(&ch, &names.queue, durable_queue(), args)
        .await
        .expect("durable queue");
    declare_queue(&ch, &names.transient_queue, Default::default())
        .await
        .expect("transient queue");
    common::amqp::bind(&ch, &names.queue, &names.exchange, RESTART_KEY).await;
    common::amqp::bind(&ch, &names.transient_queue, &names.exchange, RESTART_KEY).await;

    // p1 p2 p3 t p4 p5 p6: t is transient, in the durable queue.
    for n in 1..=3 {
        let body = format!("p{n}");
        publish(
            &ch,
            &names.exchange,
            RESTART_KEY,
            body.as_bytes(),
            persistent(n),
        )
        .await;
    }
    let transient = BasicProperties::default().with_delivery_mode(DELIVERY_MODE_TRANSIENT);
    publish(&ch, &names.exchange, RESTART_KEY, b"t", transient).await;
    for n in 4..=6 {
        let body = format!("p{n}");
        publish(
            &ch,
            &names.exchange,
            RESTART_KEY,
            body.as_bytes(),
            persistent(n),
        )
        .await;
    }

    // Ack p1 and p2; take p3 and leave it unacked. The get after each ack travels the same
    // path to the queue as the ack, so when it answers the ack has been applied.
    let holder = connect(broker).await;
    let consumer_ch = channel(&holder).await;
    for n in 1..=3 {
        let msg = get(&consumer_ch, &names.queue, false)
            .await
            .unwrap_or_else(|| panic!("p{n} should be in the queue"));
        assert_eq!(msg.delivery.data, format!("p{n}").as_bytes());
        if n < 3 {
            ack(&msg.delivery).await;
        }
    }
    step("close publisher connection", connection.close(200, "bye"))
        .await
        .expect("close");
    holder
}

async fn restart_check(broker: &Broker, names: &RestartNames) {
    let connection = connect(broker).await;
    let ch = confirming_channel(&connection).await;
    let passive = ExchangeDeclareOptions {
        passive: true,
        ..Default::default()
    };
    declare_exchange_with(&ch, &names.exchange, passive)
        .await
        .expect("durable exchange survives");
    // Its arguments came back too: the same ones are equivalent, other ones are not.
    let args = max_length_args(RESTART_QUEUE_MAX_LENGTH);
    declare_queue_with(&ch, &names.queue, durable_queue(), args)
        .await
        .expect("redeclare with the same arguments");
    let other = channel(&connection).await;
    let result =
        declare_queue_with(&other, &names.queue, durable_queue(), max_length_args(7)).await;
    expect_code(
        "redeclare with another x-max-length",
        result,
        PRECONDITION_FAILED,
    );

    let other = channel(&connection).await;
    let result = declare_exchange_with(&other, &names.transient_exchange, passive).await;
    expect_code("transient exchange is gone", result, NOT_FOUND);
    let other = channel(&connection).await;
    let result = declare_queue(&other, &names.transient_queue, passive_queue()).await;
    expect_code("transient queue is gone", result, NOT_FOUND);

    // p3 (delivered, unacked) and p4..p6 (never delivered), in order; not p1/p2 (acked), not t.
    let count = message_count(&connection, &names.queue).await;
    let consumer_ch = channel(&connection).await;
    let mut recovered = Vec::new();
    for _ in 0..count {
        let msg = get(&consumer_ch, &names.queue, false)
            .await
            .expect("as many messages as the queue counts");
        recovered.push(msg.delivery);
    }
    let bodies: Vec<String> = recovered
        .iter()
        .map(|d| String::from_utf8_lossy(&d.data).into_owned())
        .collect();
    assert_eq!(
        bodies,
        ["p3", "p4", "p5", "p6"],
        "messages after the restart"
    );
    for (d, n) in recovered.iter().zip(3..) {
        assert!(d.redelivered, "recovered p{n} must be marked redelivered");
        assert_eq!(
            *d.properties.delivery_mode(),
            Some(DELIVERY_MODE_PERSISTENT)
        );
        assert_eq!(
            d.properties.content_type().as_ref().map(|s| s.as_str()),
            Some("text/plain")
        );
        assert_eq!(
            d.properties.message_id().as_ref().map(|s| s.as_str()),
            Some(format!("m{n}").as_str())
        );
        assert_eq!(header_n(d), Some(n), "headers of p{n}");
        ack(d).await;
    }
    // The binding still routes.
    publish(&ch, &names.exchange, RESTART_KEY, b"p7", persistent(7)).await;
    let msg = get(&consumer_ch, &names.queue, false)
        .await
        .expect("p7 routed by the recovered binding");
    assert_eq!(msg.delivery.data, b"p7");
    assert!(!msg.delivery.redelivered);
    ack(&msg.delivery).await;
    assert!(get(&consumer_ch, &names.queue, false).await.is_none());
}

// ---------------------------------------------------------------------------------------------
// 2. kill -9 during confirmed publishing

const CRASH_ROUNDS: u32 = 5;
/// Rounds are not started once this much time has gone (a loaded machine runs fewer rounds,
/// each still checked in full).
const CRASH_TIME_BUDGET: Duration = Duration::from_secs(90);
const CRASH_PUBLISHERS_MAX: u32 = 4;
const CRASH_MESSAGES_PER_PUBLISHER_MAX: u32 = 300;
/// Publishes a publisher has sent but not yet seen confirmed.
const CRASH_PUBLISH_WINDOW: usize = 16;
/// The kill comes after between 1 and this many confirms (all publishers together).
const CRASH_CONFIRMS_BEFORE_KILL_MAX: u64 = 500;
/// Bodies vary in size so records straddle 4 KiB blocks at many different offsets.
const CRASH_PADDING_BYTES_MAX: u32 = 1500;
const CRASH_SEED_DEFAULT: u64 = 0x5eed_0003;

/// splitmix64: a seeded, dependency-free source of kill points and publisher counts.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform enough in `[low, high]` for picking test parameters.
    fn between(&mut self, low: u64, high: u64) -> u64 {
        assert!(low <= high);
        low + self.next() % (high - low + 1)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct PublisherId {
    round: u32,
    publisher: u32,
}

fn crash_body(id: PublisherId, seq: u32) -> Vec<u8> {
    let mut body = format!("crash r{} p{} s{}|", id.round, id.publisher, seq).into_bytes();
    let padding = (seq * 37 + id.publisher * 11 + id.round * 7) % CRASH_PADDING_BYTES_MAX;
    let fill = b'a' + (seq % 26) as u8;
    body.resize(body.len() + padding as usize, fill);
    body
}

/// Reads back who published a body; `None` for anything `crash_body` could not have made.
fn parse_crash_body(body: &[u8]) -> Option<(PublisherId, u32)> {
    let end = body.iter().position(|b| *b == b'|')?;
    let text = std::str::from_utf8(body.get(..end)?).ok()?;
    let mut parts = text.strip_prefix("crash ")?.split(' ');
    let round = parts.next()?.strip_prefix('r')?.parse().ok()?;
    let publisher = parts.next()?.strip_prefix('p')?.parse().ok()?;
    let seq = parts.next()?.strip_prefix('s')?.parse().ok()?;
    let id = PublisherId { round, publisher };
    (crash_body(id, seq) == body).then_some((id, seq))
}

/// What one publisher did before the broker died.
#[derive(Debug, Default)]
struct PublisherOutcome {
    /// Sequence numbers `0..attempted` were handed to the client; any of them may be stored.
    attempted: u32,
    confirmed: BTreeSet<u32>,
}

/// Confirms counted across publishers, so the test can kill the broker after a chosen number.
#[derive(Default)]
struct Progress {
    confirmed: AtomicU64,
    finished: AtomicUsize,
    changed: Notify,
}

async fn crash_publisher(
    ch: Channel,
    queue: String,
    id: PublisherId,
    count: u32,
    progress: Arc<Progress>,
) -> PublisherOutcome {
    let mut outcome = PublisherOutcome::default();
    let mut in_flight = std::collections::VecDeque::with_capacity(CRASH_PUBLISH_WINDOW);
    let mut alive = true;
    for seq in 0..count {
        outcome.attempted = seq + 1;
        let props = BasicProperties::default().with_delivery_mode(DELIVERY_MODE_PERSISTENT);
        let body = crash_body(id, seq);
        let sent = tokio::time::timeout(
            STEP_TIMEOUT,
            ch.basic_publish("", &queue, BasicPublishOptions::default(), &body, props),
        )
        .await;
        match sent {
            Ok(Ok(confirm)) => in_flight.push_back((seq, confirm)),
            _ => {
                alive = false;
                break;
            }
        }
        if in_flight.len() >= CRASH_PUBLISH_WINDOW
            && !await_oldest(&mut in_flight, &mut outcome, &progress).await
        {
            alive = false;
            break;
        }
    }
    while alive && !in_flight.is_empty() {
        alive = await_oldest(&mut in_flight, &mut outcome, &progress).await;
    }
    progress.finished.fetch_add(1, Ordering::SeqCst);
    progress.changed.notify_waiters();
    outcome
}

/// Waits for the oldest unconfirmed publish; false once the connection is gone.
async fn await_oldest(
    in_flight: &mut std::collections::VecDeque<(u32, lapin::publisher_confirm::PublisherConfirm)>,
    outcome: &mut PublisherOutcome,
    progress: &Progress,
) -> bool {
    let Some((seq, confirm)) = in_flight.pop_front() else {
        return true;
    };
    match tokio::time::timeout(STEP_TIMEOUT, confirm).await {
        Ok(Ok(confirmation)) => {
            if confirmation.is_ack() {
                outcome.confirmed.insert(seq);
                progress.confirmed.fetch_add(1, Ordering::SeqCst);
                progress.changed.notify_waiters();
            }
            true
        }
        _ => false,
    }
}

/// Everything published in all rounds so far.
#[derive(Default)]
struct Ledger {
    publishers: BTreeMap<PublisherId, PublisherOutcome>,
}

impl Ledger {
    fn confirmed_total(&self) -> usize {
        self.publishers.values().map(|o| o.confirmed.len()).sum()
    }

    fn attempted_total(&self) -> usize {
        self.publishers.values().map(|o| o.attempted as usize).sum()
    }
}

async fn crash_during_confirmed_publishing_loses_nothing_confirmed(broker: &mut Broker) {
    let seed = std::env::var("RINGMQ_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(CRASH_SEED_DEFAULT)
        ^ broker.shards() as u64;
    let mut rng = Rng(seed);
    let queue = unique("crash-q");
    {
        let connection = connect(broker).await;
        let ch = channel(&connection).await;
        declare_queue(&ch, &queue, durable_queue())
            .await
            .expect("durable queue");
    }
    let started = Instant::now();
    let mut ledger = Ledger::default();
    for round in 0..CRASH_ROUNDS {
        if started.elapsed() > CRASH_TIME_BUDGET {
            eprintln!("crash test: time budget spent after {round} rounds");
            break;
        }
        let publishers = rng.between(1, u64::from(CRASH_PUBLISHERS_MAX)) as u32;
        let per_publisher = CRASH_MESSAGES_PER_PUBLISHER_MAX;
        let total = u64::from(publishers * per_publisher);
        let kill_after = rng.between(1, CRASH_CONFIRMS_BEFORE_KILL_MAX.min(total));
        eprintln!(
            "crash test (seed {seed:#x}) round {round}: {publishers} publishers, kill after {kill_after} confirms"
        );
        crash_round(broker, &queue, round, publishers, kill_after, &mut ledger).await;
        eprintln!(
            "  killed with {} confirmed of {} published so far",
            ledger.confirmed_total(),
            ledger.attempted_total()
        );
        broker.restart_same_dir();
        let connection = connect(broker).await;
        check_recovered(&connection, &queue, &ledger, round).await;
    }
    // Finally ack everything: acked messages do not come back after a graceful restart.
    let connection = connect(broker).await;
    drain_and_ack(&connection, &queue).await;
    drop(connection);
    broker.stop();
    broker.restart_same_dir();
    let connection = connect(broker).await;
    assert_eq!(
        message_count(&connection, &queue).await,
        0,
        "acked messages came back"
    );
}

/// Publishes from `publishers` connections and SIGKILLs the broker after `kill_after` confirms.
async fn crash_round(
    broker: &mut Broker,
    queue: &str,
    round: u32,
    publishers: u32,
    kill_after: u64,
    ledger: &mut Ledger,
) {
    let progress = Arc::new(Progress::default());
    // All connections first, so no publisher runs ahead while the others connect.
    let mut connections = Vec::new();
    let mut channels = Vec::new();
    for _ in 0..publishers {
        let connection = connect(broker).await;
        channels.push(confirming_channel(&connection).await);
        connections.push(connection);
    }
    let mut tasks = Vec::new();
    for (publisher, ch) in (0..publishers).zip(channels) {
        let id = PublisherId { round, publisher };
        let task = crash_publisher(
            ch,
            queue.to_owned(),
            id,
            CRASH_MESSAGES_PER_PUBLISHER_MAX,
            progress.clone(),
        );
        tasks.push((id, tokio::spawn(task)));
    }
    loop {
        // Registered before the check, so a notification in between is not lost.
        let changed = progress.changed.notified();
        let finished = progress.finished.load(Ordering::SeqCst) == publishers as usize;
        if progress.confirmed.load(Ordering::SeqCst) >= kill_after || finished {
            break;
        }
        step("confirms before the kill", changed).await;
    }
    broker.kill9();
    for (id, task) in tasks {
        let outcome = step("publisher to notice the kill", task)
            .await
            .expect("publisher task");
        ledger.publishers.insert(id, outcome);
    }
    drop(connections);
}

/// Reads every message of the queue without acking it (closing the channel puts them back),
/// checking the cumulative state of all rounds up to `round`.
async fn check_recovered(connection: &lapin::Connection, queue: &str, ledger: &Ledger, round: u32) {
    let count = message_count(connection, queue).await as usize;
    let confirmed = ledger.confirmed_total();
    let attempted = ledger.attempted_total();
    assert!(
        (confirmed..=attempted).contains(&count),
        "round {round}: {count} messages recovered, want between {confirmed} confirmed and {attempted} published"
    );
    let ch = channel(connection).await;
    let mut consumer = consume(&ch, queue, false).await;
    let mut seen: BTreeMap<PublisherId, Vec<u32>> = BTreeMap::new();
    for _ in 0..count {
        let delivery = next_delivery(&mut consumer).await;
        let Some((id, seq)) = parse_crash_body(&delivery.data) else {
            panic!(
                "round {round}: a message nobody published: {:?}",
                delivery.data
            );
        };
        let attempted = ledger.publishers.get(&id).map_or(0, |o| o.attempted);
        assert!(
            seq < attempted,
            "round {round}: {id:?} s{seq} was never published"
        );
        seen.entry(id).or_default().push(seq);
    }
    common::amqp::assert_nothing_more(&mut consumer).await;
    for (id, outcome) in &ledger.publishers {
        let got = seen.get(id).map_or(&[][..], |v| v.as_slice());
        assert!(
            got.windows(2).all(|w| w[0] <= w[1]),
            "round {round}: {id:?} out of order: {got:?}"
        );
        let got: BTreeSet<u32> = got.iter().copied().collect();
        let lost: Vec<u32> = outcome.confirmed.difference(&got).copied().collect();
        assert!(
            lost.is_empty(),
            "round {round}: {id:?} lost confirmed {lost:?}"
        );
    }
    step("close checking channel", ch.close(200, "requeue"))
        .await
        .expect("channel.close");
}

async fn drain_and_ack(connection: &lapin::Connection, queue: &str) {
    let count = message_count(connection, queue).await;
    let ch = channel(connection).await;
    let mut consumer = consume(&ch, queue, false).await;
    for _ in 0..count {
        let delivery = next_delivery(&mut consumer).await;
        ack(&delivery).await;
    }
    // A round trip on the channel after the acks: they have reached the queue.
    step("close draining channel", ch.close(200, "done"))
        .await
        .expect("channel.close");
}

// ---------------------------------------------------------------------------------------------
// 3. Damaged log files

const DAMAGE_MESSAGES: usize = 12;
/// Index of the message whose record is damaged in the corruption test: early, with many later
/// records (each from its own write batch) after it.
const DAMAGE_EARLY_INDEX: usize = 2;
const DAMAGE_BODY_PADDING_BYTES: usize = 300;
const DAMAGE_TOPOLOGY_QUEUES: usize = 6;
const SEGMENT_BLOCK_BYTES: u64 = 4096;
const RECORD_ALIGN_BYTES: u64 = 16;
/// Record header bytes 0..4 are the payload length, little endian: byte 1 turns a small
/// length into a wrong one without making it zero.
const RECORD_LENGTH_SECOND_BYTE: u64 = 1;

fn damage_body(tag: &str, i: usize) -> Vec<u8> {
    let mut body = format!("damage {tag} {i:04}|").into_bytes();
    body.resize(
        body.len() + DAMAGE_BODY_PADDING_BYTES,
        b'0' + (i % 10) as u8,
    );
    body
}

/// Declares a durable queue and publishes `DAMAGE_MESSAGES` persistent messages, each confirmed
/// before the next is sent, so each record is its own write batch. Then stops the broker.
async fn write_and_stop(broker: &mut Broker, queue: &str, tag: &str) {
    let connection = connect(broker).await;
    let ch = confirming_channel(&connection).await;
    declare_queue(&ch, queue, durable_queue())
        .await
        .expect("durable queue");
    for i in 0..DAMAGE_MESSAGES {
        let props = BasicProperties::default().with_delivery_mode(DELIVERY_MODE_PERSISTENT);
        let confirmation = publish_confirmed(
            &ch,
            "",
            queue,
            Default::default(),
            &damage_body(tag, i),
            props,
        )
        .await;
        assert!(confirmation.is_ack(), "message {i} not confirmed");
    }
    drop(connection);
    broker.stop();
}

/// The one segment of the log in `data_dir/log` holding `needle`, and where.
fn find_in_log(data_dir: &Path, log: &str, needle: &[u8]) -> (PathBuf, u64) {
    let dir = data_dir.join(log);
    let mut found = Vec::new();
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("dir entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("wal") {
            continue;
        }
        let bytes = std::fs::read(&path).expect("read segment");
        let hits = bytes
            .windows(needle.len())
            .enumerate()
            .filter(|(_, w)| *w == needle)
            .map(|(at, _)| at as u64);
        found.extend(hits.map(|at| (path.clone(), at)));
    }
    assert_eq!(
        found.len(),
        1,
        "want exactly one copy of {:?} in the {log} log, found {found:?}",
        String::from_utf8_lossy(needle)
    );
    found.remove(0)
}

fn xor_byte(path: &Path, at: u64) {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open segment");
    let mut byte = [0u8; 1];
    file.seek(SeekFrom::Start(at)).expect("seek");
    file.read_exact(&mut byte).expect("read byte");
    byte[0] ^= 0xff;
    file.seek(SeekFrom::Start(at)).expect("seek");
    file.write_all(&byte).expect("write byte");
    file.sync_all().expect("sync");
}

/// The number after "offset " in the broker's refusal.
fn reported_offset(log: &str) -> Option<u64> {
    let rest = log.split("offset ").nth(1)?;
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

/// Consumes the queue (acking) and returns the bodies, in order, after checking the count.
async fn bodies_in_queue(broker: &Broker, queue: &str) -> Vec<Vec<u8>> {
    let connection = connect(broker).await;
    let count = message_count(&connection, queue).await;
    let ch = channel(&connection).await;
    let mut consumer = consume(&ch, queue, false).await;
    let mut bodies = Vec::new();
    for _ in 0..count {
        let delivery = next_delivery(&mut consumer).await;
        assert!(
            delivery.redelivered,
            "recovered messages are marked redelivered"
        );
        ack(&delivery).await;
        bodies.push(delivery.data);
    }
    common::amqp::assert_nothing_more(&mut consumer).await;
    bodies
}

async fn corrupt_early_record_refuses_start_naming_file_and_offset(broker: &mut Broker) {
    let queue = unique("corrupt-q");
    write_and_stop(broker, &queue, "c").await;
    let body = damage_body("c", DAMAGE_EARLY_INDEX);
    let (path, body_at) = find_in_log(&broker.data_dir(), "messages", &body);

    // A flipped payload byte: the checksum catches it.
    let flip_at = body_at + body.len() as u64 / 2;
    xor_byte(&path, flip_at);
    let offset = expect_refusal(broker, &path);
    // The offset is where the damaged record starts: aligned, at or before the flipped byte,
    // and within one record (this one is far smaller than a block) of it.
    assert!(
        offset.is_multiple_of(RECORD_ALIGN_BYTES)
            && offset <= flip_at
            && flip_at - offset < SEGMENT_BLOCK_BYTES,
        "offset {offset} does not point at the record holding byte {flip_at}"
    );
    xor_byte(&path, flip_at);

    // A flipped length byte in the same record's header: recovery cannot step over the record
    // by its length, and must still find the later records and refuse, at the same offset.
    xor_byte(&path, offset + RECORD_LENGTH_SECOND_BYTE);
    assert_eq!(expect_refusal(broker, &path), offset, "damaged length");
    xor_byte(&path, offset + RECORD_LENGTH_SECOND_BYTE);

    // The refusals destroyed nothing: with the bytes restored everything is there.
    broker.restart_same_dir();
    let bodies = bodies_in_queue(broker, &queue).await;
    let expected: Vec<Vec<u8>> = (0..DAMAGE_MESSAGES).map(|i| damage_body("c", i)).collect();
    assert_eq!(bodies, expected);
}

/// The topology log is checked the same way: each durable declare is its own write batch
/// (declare-ok waits for it), so a damaged early one is followed by later batches.
async fn corrupt_topology_record_refuses_start(broker: &mut Broker) {
    let queues: Vec<String> = (0..DAMAGE_TOPOLOGY_QUEUES)
        .map(|i| unique(&format!("topology-{i}")))
        .collect();
    {
        let connection = connect(broker).await;
        let ch = channel(&connection).await;
        for queue in &queues {
            declare_queue(&ch, queue, durable_queue())
                .await
                .expect("durable queue");
        }
    }
    broker.stop();
    let name = queues.get(1).expect("several queues").as_bytes();
    let (path, name_at) = find_in_log(&broker.data_dir(), "topology", name);
    let flip_at = name_at + name.len() as u64 / 2;
    xor_byte(&path, flip_at);
    let offset = expect_refusal(broker, &path);
    assert!(
        offset <= flip_at && flip_at - offset < SEGMENT_BLOCK_BYTES,
        "offset {offset} does not point at the record holding byte {flip_at}"
    );
    xor_byte(&path, flip_at);
    broker.restart_same_dir();
    let connection = connect(broker).await;
    for queue in &queues {
        assert_eq!(message_count(&connection, queue).await, 0);
    }
}

/// Restarts expecting a refusal that exits non-zero and names `path`; returns the offset named.
fn expect_refusal(broker: &mut Broker, path: &Path) -> u64 {
    let failure = match broker.try_restart_same_dir() {
        Ok(()) => panic!("the broker started on a log with a corrupt record in the middle"),
        Err(failure) => failure,
    };
    assert!(
        failure.status.is_some_and(|s| !s.success()),
        "a refusal exits non-zero: {:?}\n{}",
        failure.status,
        failure.log
    );
    assert!(
        failure.log.contains(&path.display().to_string()),
        "the refusal names the file {}:\n{}",
        path.display(),
        failure.log
    );
    if let Some(line) = failure.log.lines().find(|l| l.contains("corrupt")) {
        eprintln!("refusal as expected: {line}");
    }
    reported_offset(&failure.log)
        .unwrap_or_else(|| panic!("the refusal names an offset:\n{}", failure.log))
}

/// How a torn last write is simulated.
#[derive(Clone, Copy, Debug)]
enum Tear {
    /// The blocks from the middle of the last record on never reached the disk (zeros, as the
    /// preallocated file holds there).
    ZeroFromMiddle,
    /// The file ends in the middle of the last record.
    CutFile,
}

async fn torn_last_record_zeroed_is_truncated(broker: &mut Broker) {
    torn_last_record_is_truncated(broker, Tear::ZeroFromMiddle).await;
}

async fn torn_last_record_file_cut_is_truncated(broker: &mut Broker) {
    torn_last_record_is_truncated(broker, Tear::CutFile).await;
}

async fn torn_last_record_is_truncated(broker: &mut Broker, tear: Tear) {
    let queue = unique("torn-q");
    write_and_stop(broker, &queue, "t").await;
    let last = DAMAGE_MESSAGES - 1;
    let body = damage_body("t", last);
    let (path, body_at) = find_in_log(&broker.data_dir(), "messages", &body);
    let cut_at = body_at + body.len() as u64 / 2;
    tear_at(&path, cut_at, tear);

    broker.restart_same_dir();
    let log = broker.log_text();
    assert!(
        log.contains("torn write"),
        "recovery reports the cut:\n{log}"
    );
    let connection = connect(broker).await;
    assert_eq!(message_count(&connection, &queue).await as usize, last);
    // The log continues after the cut: a new message and the survivors outlive another restart.
    let ch = confirming_channel(&connection).await;
    let props = BasicProperties::default().with_delivery_mode(DELIVERY_MODE_PERSISTENT);
    publish(&ch, "", &queue, &damage_body("t", DAMAGE_MESSAGES), props).await;
    drop(connection);
    broker.stop();
    broker.restart_same_dir();
    let bodies = bodies_in_queue(broker, &queue).await;
    let expected: Vec<Vec<u8>> = (0..last)
        .chain([DAMAGE_MESSAGES])
        .map(|i| damage_body("t", i))
        .collect();
    assert_eq!(bodies, expected, "{tear:?}");
}

fn tear_at(path: &Path, at: u64, tear: Tear) {
    use std::io::{Seek, SeekFrom, Write};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open segment");
    match tear {
        Tear::CutFile => file.set_len(at).expect("truncate"),
        Tear::ZeroFromMiddle => {
            let bytes = std::fs::read(path).expect("read segment");
            let end = bytes
                .iter()
                .rposition(|b| *b != 0)
                .map_or(0, |i| i as u64 + 1);
            assert!(end > at, "the last record ends after its middle");
            let end = end.next_multiple_of(SEGMENT_BLOCK_BYTES);
            let mut file = file;
            file.seek(SeekFrom::Start(at)).expect("seek");
            let zeros = vec![0u8; usize::try_from(end - at).expect("small")];
            file.write_all(&zeros).expect("zero");
        }
    }
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .expect("sync");
}

/// A persistent message's TTL counts from its publish, not from the restart: one whose TTL ran
/// out while the broker was down is gone as soon as the broker is back, and one with time left
/// is still there.
async fn message_ttl_counts_from_the_publish_across_a_restart(broker: &mut Broker) {
    const SHORT_TTL: Duration = Duration::from_millis(1500);
    let queue = unique("ttl-durable");
    let published = {
        let connection = connect(broker).await;
        let ch = confirming_channel(&connection).await;
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        declare_queue_with(&ch, &queue, durable, FieldTable::default())
            .await
            .expect("durable queue");
        let short = persistent(1).with_expiration(SHORT_TTL.as_millis().to_string().into());
        let long = persistent(2).with_expiration("600000".into());
        publish(&ch, "", &queue, b"short-lived", short).await;
        publish(&ch, "", &queue, b"long-lived", long).await;
        Instant::now()
    };
    broker.stop();
    // The broker stays down past the short TTL: that passing of time is what is tested.
    let elapsed = published.elapsed();
    if elapsed < SHORT_TTL {
        tokio::time::sleep(SHORT_TTL - elapsed + Duration::from_millis(200)).await;
    }
    broker.restart_same_dir();
    let connection = connect(broker).await;
    assert_eq!(
        message_count(&connection, &queue).await,
        1,
        "the expired message must be gone right after the restart"
    );
    assert_eq!(
        bodies_in_queue(broker, &queue).await,
        vec![b"long-lived".to_vec()]
    );
}

/// Returns the queue's one message with basic.nack(requeue) and says what x-delivery-count the
/// delivery carried.
async fn get_and_requeue(ch: &Channel, queue: &str) -> Option<i64> {
    let message = get(ch, queue, false).await.expect("a message to get");
    let count = message
        .delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-delivery-count").cloned())
        .and_then(|v| match v {
            AMQPValue::LongLongInt(n) => Some(n),
            AMQPValue::LongInt(n) => Some(i64::from(n)),
            _ => None,
        });
    let requeue = BasicNackOptions {
        requeue: true,
        ..Default::default()
    };
    step("basic.nack", message.delivery.acker.nack(requeue))
        .await
        .expect("basic.nack");
    count
}

/// x-delivery-limit counts returns across a restart: two returns before it and one after it
/// exceed a limit of 2, so the message is dropped (with no dead-letter exchange).
async fn delivery_count_survives_a_restart(broker: &mut Broker) {
    let queue = unique("delivery-limit-durable");
    {
        let connection = connect(broker).await;
        let ch = confirming_channel(&connection).await;
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        let mut args = FieldTable::default();
        args.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(2));
        declare_queue_with(&ch, &queue, durable, args)
            .await
            .expect("durable queue with a delivery limit");
        publish(&ch, "", &queue, b"poison", persistent(1)).await;
        assert_eq!(get_and_requeue(&ch, &queue).await, None);
        assert_eq!(get_and_requeue(&ch, &queue).await, Some(1));
    }
    // A graceful stop flushes the re-logged counts.
    broker.stop();
    broker.restart_same_dir();
    let connection = connect(broker).await;
    let ch = confirming_channel(&connection).await;
    assert_eq!(
        get_and_requeue(&ch, &queue).await,
        Some(2),
        "the count came back"
    );
    assert_eq!(
        message_count(&connection, &queue).await,
        0,
        "the third return exceeds the limit of 2"
    );
}

/// Pipelined publishes big enough to overflow one log batch (4 MiB) several times over.
const BACK_PRESSURE_MESSAGES: usize = 24;
const BACK_PRESSURE_BODY_BYTES: usize = 1 << 20;

/// The publisher's connection is on another shard than the queue (with 2 shards): its own
/// shard's log is idle, so only the queue's shard can slow it down. Every publish must be
/// confirmed with an ack: a full batch on the queue's shard means waiting, not a nack.
async fn a_full_log_batch_slows_publishers_on_other_shards_instead_of_nacking(broker: &mut Broker) {
    let pair = common::fixtures::pair(broker).await;
    let queue = unique("back-pressure");
    let home = channel(&pair.home).await;
    step(
        "queue.declare",
        declare_queue(&home, &queue, durable_queue()),
    )
    .await
    .expect("queue.declare");
    let away = confirming_channel(&pair.away).await;
    let mut confirms = Vec::with_capacity(BACK_PRESSURE_MESSAGES);
    for n in 0..BACK_PRESSURE_MESSAGES {
        let body = vec![n as u8; BACK_PRESSURE_BODY_BYTES];
        let confirm = step(
            "basic.publish",
            away.basic_publish(
                "",
                &queue,
                BasicPublishOptions::default(),
                &body,
                persistent(n as i32),
            ),
        )
        .await
        .expect("basic.publish");
        confirms.push(confirm);
    }
    for (n, confirm) in confirms.into_iter().enumerate() {
        let confirmation = step("publisher confirm", confirm).await.expect("confirm");
        assert!(
            confirmation.is_ack(),
            "publish {n} was not acked: {confirmation:?}"
        );
    }
    assert_eq!(
        message_count(&pair.home, &queue).await,
        BACK_PRESSURE_MESSAGES as u32
    );
}

/// Rounds of publish-then-consume churn, each about one 32 MiB log segment.
const CHURN_ROUNDS: usize = 14;
const CHURN_MESSAGES_PER_ROUND: usize = 64;
const CHURN_BODY_BYTES: usize = 512 * 1024;
/// Message-log segment files allowed on disk after the churn: the straggler's copy, the churn's
/// current segments and the compaction thresholds' slack. Without copy-forward the straggler
/// pins its segment, every later segment's settles pin the one before, and all of them stay.
const CHURN_SEGMENT_FILES_MAX: usize = 9;

#[tokio::test]
async fn a_long_lived_message_does_not_pin_the_log() {
    let mut broker = Broker::start(1);
    let connection = connect(&broker).await;
    let ch = confirming_channel(&connection).await;
    let straggler = unique("straggler");
    let churn = unique("churn");
    for queue in [&straggler, &churn] {
        step("queue.declare", declare_queue(&ch, queue, durable_queue()))
            .await
            .expect("queue.declare");
    }
    publish(&ch, "", &straggler, b"still here", persistent(0)).await;
    let consumer_ch = channel(&connection).await;
    // Manual acks: a message delivered with no-ack before its record was written need not be
    // logged at all, so an auto-ack consumer would not exercise the log.
    let mut consumer = consume(&consumer_ch, &churn, false).await;
    for round in 0..CHURN_ROUNDS {
        let body = vec![round as u8; CHURN_BODY_BYTES];
        let mut confirms = Vec::with_capacity(CHURN_MESSAGES_PER_ROUND);
        for n in 0..CHURN_MESSAGES_PER_ROUND {
            let confirm = step(
                "basic.publish",
                ch.basic_publish(
                    "",
                    &churn,
                    BasicPublishOptions::default(),
                    &body,
                    persistent(n as i32),
                ),
            )
            .await
            .expect("basic.publish");
            confirms.push(confirm);
        }
        for confirm in confirms {
            let confirmation = step("publisher confirm", confirm).await.expect("confirm");
            assert!(
                confirmation.is_ack(),
                "churn publish not acked: {confirmation:?}"
            );
        }
        for _ in 0..CHURN_MESSAGES_PER_ROUND {
            ack(&next_delivery(&mut consumer).await).await;
        }
    }
    // The last settles are made durable by a round trip through the log.
    publish(&ch, "", &churn, b"last", persistent(0)).await;
    let segments = segment_files(&broker.data_dir().join("messages"));
    assert!(
        segments <= CHURN_SEGMENT_FILES_MAX,
        "{segments} message-log segments after {CHURN_ROUNDS} rounds of churn"
    );
    drop(consumer);
    let _ = connection.close(200, "bye").await;
    broker.restart_same_dir();
    let connection = connect(&broker).await;
    let ch = channel(&connection).await;
    let message = get(&ch, &straggler, true)
        .await
        .expect("the straggler is back");
    assert_eq!(message.delivery.data, b"still here");
    assert!(get(&ch, &straggler, true).await.is_none());
}

fn segment_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .expect("message log directory")
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().ends_with(".wal"))
        .count()
}
