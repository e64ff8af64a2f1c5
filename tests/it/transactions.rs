//! Transaction bounds, black-box (issue 15, defect 4): a transaction used to hold up to 1M
//! messages of up to the max message size each. Its buffer is bounded in bytes now
//! (`TX_BYTES_MAX`, 512 MiB): the publish that would take it past the bound closes the channel
//! with 406 PRECONDITION_FAILED, as the operation-count bound does, and nothing of the
//! transaction is routed. RabbitMQ 3.10.8 has no such bound (it buffers until its memory alarm
//! blocks the publisher), so this test is ringmq's own.

use crate::common;

use common::amqp::{channel, connect, declare_queue, get};
use common::{step, unique, Broker};
use lapin::options::*;

const PRECONDITION_FAILED: u16 = 406;
/// The broker's default --max-message-bytes. Each message takes a little more than its body
/// (header, names), so three fit the 512 MiB bound and the fourth does not.
const BODY_BYTES: usize = 128 * 1024 * 1024;
/// Nothing is published after the refused one: frames still in flight for the channel after
/// its close-ok would be a connection error (a channel that is not open).
const PUBLISHES_TO_OVERFLOW: usize = 4;
/// Each 128 MiB publish may take a while on a loaded machine: a bound, not a wait.
const LARGE_STEP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

async fn large_step<F: std::future::Future>(what: &str, fut: F) -> F::Output {
    tokio::time::timeout(LARGE_STEP_TIMEOUT, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

#[tokio::test]
async fn tx_over_its_byte_bound_closes_the_channel_406() {
    let broker = Broker::start(1);
    let connection = connect(&broker).await;
    let observer = channel(&connection).await;
    let queue = unique("tx-bytes");
    declare_queue(&observer, &queue, QueueDeclareOptions::default())
        .await
        .expect("declare");
    let tx = channel(&connection).await;
    step("tx.select", tx.tx_select()).await.expect("tx.select");
    let body = vec![7u8; BODY_BYTES];
    for index in 0..PUBLISHES_TO_OVERFLOW {
        let published = large_step(
            "publish in tx",
            tx.basic_publish(
                "",
                &queue,
                BasicPublishOptions::default(),
                &body,
                Default::default(),
            ),
        )
        .await;
        if published.is_err() {
            panic!("publish {index} failed early: {published:?}");
        }
    }
    let commit = large_step("tx.commit", tx.tx_commit()).await;
    let code = commit
        .as_ref()
        .err()
        .and_then(common::amqp::reply_code)
        .unwrap_or_else(|| panic!("commit past the byte bound must fail: {commit:?}"));
    assert_eq!(code, PRECONDITION_FAILED);
    // A channel error: the connection and its other channels go on, and nothing was routed.
    assert!(
        get(&observer, &queue, true).await.is_none(),
        "a refused transaction routes nothing"
    );
    connection.close(200, "bye").await.expect("close");
}

/// tx.commit waits for its publishes as a publisher confirm would, as RabbitMQ's channel does:
/// one refused by a queue (here a full `reject-publish` queue) fails the commit with 406
/// "partial tx completion", and what the other publishes reached stays; the connection goes
/// on. Checked against RabbitMQ 3.10.8 with `RINGMQ_TEST_EXTERNAL_PORT`.
#[tokio::test]
async fn a_refused_publish_fails_the_commit_as_a_partial_completion() {
    use lapin::types::{AMQPValue, FieldTable};
    let broker = Broker::start(1);
    let connection = connect(&broker).await;
    let observer = channel(&connection).await;
    let full = unique("tx-full");
    let mut arguments = FieldTable::default();
    arguments.insert("x-max-length".into(), AMQPValue::LongInt(1));
    arguments.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    step(
        "declare the bounded queue",
        observer.queue_declare(&full, QueueDeclareOptions::default(), arguments),
    )
    .await
    .expect("declare");
    let tx = channel(&connection).await;
    step("tx.select", tx.tx_select()).await.expect("tx.select");
    for body in [&b"taken"[..], b"refused"] {
        tx.basic_publish(
            "",
            &full,
            BasicPublishOptions::default(),
            body,
            Default::default(),
        )
        .await
        .expect("publish in tx");
    }
    let commit = step("tx.commit", tx.tx_commit()).await;
    let error = commit.expect_err("a commit with a refused publish fails");
    assert_eq!(common::amqp::reply_code(&error), Some(PRECONDITION_FAILED));
    assert!(
        format!("{error:?}").contains("partial tx completion"),
        "RabbitMQ's text: {error:?}"
    );
    let taken = get(&observer, &full, true)
        .await
        .expect("the first publish");
    assert_eq!(taken.delivery.data, b"taken");
    let purge = observer
        .queue_delete(&full, QueueDeleteOptions::default())
        .await;
    purge.expect("the connection goes on");
    connection.close(200, "bye").await.expect("close");
}
