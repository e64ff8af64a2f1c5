//! The message log meeting a full disk (a real ENOSPC: the data directory is on a small loop
//! filesystem that the test fills, with the disk alarm off so the log itself hits the wall):
//! publishes whose records could not be made durable are nacked, never confirmed; the broker
//! keeps serving reads, consumers and its management API meanwhile; once space returns it
//! confirms again without a restart; and a kill -9 afterwards recovers every confirmed message.

use crate::common;

use common::confirmed::{assert_recovered, Publisher};
use common::{admin::Admin, amqp, filesystem::SmallFilesystem, step, unique, Broker};
use lapin::options::{BasicGetOptions, QueueDeclareOptions};

const MIB: u64 = 1 << 20;
const BODY_BYTES: usize = 64 * 1024;
/// Publishes in flight at once (confirms awaited oldest first).
const WINDOW: usize = 32;
/// Free space left when the filesystem is filled: less than one of the log's segments, so the
/// log fails at the latest when it needs its next one.
const LEAVE_FREE_BYTES: u64 = 4 * MIB;

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
    let mut publisher = Publisher::new(channel, &queue, BODY_BYTES, WINDOW);
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
    let confirmed = publisher.confirmed();
    let published = publisher.next as usize;
    drop(publisher);
    let _ = connection.close(200, "bye").await;

    // Every confirmed message survives a kill -9; nothing that was never published appears.
    broker.kill9();
    broker.restart_same_dir();
    let connection = amqp::connect(&broker).await;
    let channel = amqp::channel(&connection).await;
    assert_recovered(&channel, &queue, BODY_BYTES, &confirmed, published).await;
    let _ = channel
        .queue_delete(&queue, Default::default())
        .await
        .map(|_| ());
    let _ = connection.close(200, "bye").await;
    broker.stop();
}
