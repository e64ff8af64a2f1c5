//! Logins from a non-loopback address, in network namespaces the test makes itself: the broker
//! runs in one, the client in another, joined by a veth pair with private addresses the test
//! assigns (never the host's own interfaces). A user created with ringmqctl connects and
//! publishes/consumes from there; `guest` (loopback-only, RabbitMQ's default) is refused with
//! RabbitMQ's text.
//!
//! The client side is this test binary re-run under `ip netns exec` with only the
//! `client_role` test selected: a whole process in the client namespace, so every socket lapin
//! opens is there. Skipped (with a printed reason) when not root or without `ip`.

use crate::common;

use common::ctl::{run_bounded, CTL_RUN_TIMEOUT};
use common::netns::{self, Namespace};
use common::{amqp, Broker};
use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::{BasicProperties, Connection, ConnectionProperties};

/// The broker's and the client's ends of the veth pair: a /30 of their own.
const BROKER_ADDRESS: &str = "10.213.7.1";
const CLIENT_ADDRESS: &str = "10.213.7.2";
const PREFIX_LENGTH: &str = "30";
/// What the re-run client process is told (URL to use, outcome to expect).
const CLIENT_URL_ENV: &str = "RINGMQ_NETNS_CLIENT_URL";
const CLIENT_EXPECT_ENV: &str = "RINGMQ_NETNS_CLIENT_EXPECT";
const REFUSAL_TEXT: &str = "ACCESS_REFUSED - user 'guest' can only connect via localhost";

/// The broker's and the client's namespaces, joined by a veth pair.
struct Namespaces {
    broker: Namespace,
    client: Namespace,
}

impl Namespaces {
    fn create() -> Namespaces {
        let tag = netns::run_tag();
        let namespaces = Namespaces {
            broker: Namespace::create(format!("ringmq-b-{tag}")),
            client: Namespace::create(format!("ringmq-c-{tag}")),
        };
        let (broker_link, client_link) = (format!("rqb{tag}"), format!("rqc{tag}"));
        netns::veth(
            &namespaces.broker,
            &broker_link,
            &namespaces.client,
            &client_link,
        );
        for (namespace, link, address) in [
            (&namespaces.broker, &broker_link, BROKER_ADDRESS),
            (&namespaces.client, &client_link, CLIENT_ADDRESS),
        ] {
            namespace.address(link, &format!("{address}/{PREFIX_LENGTH}"));
        }
        namespaces
    }
}

/// Runs this test binary's `client_role` in the client namespace against `url`.
fn client(namespaces: &Namespaces, url: &str, expect: &str) -> String {
    let mut command = namespaces
        .client
        .rerun_test(&netns::test_name(module_path!(), "client_role"));
    command
        .env(CLIENT_URL_ENV, url)
        .env(CLIENT_EXPECT_ENV, expect);
    let output = run_bounded(command, CTL_RUN_TIMEOUT);
    assert_eq!(
        output.code,
        Some(0),
        "client in {}: {output:?}",
        namespaces.client.name()
    );
    output.stdout
}

#[test]
fn a_created_user_logs_in_from_another_namespace_and_guest_does_not() {
    if let Some(reason) = netns::skip_reason(&[]) {
        eprintln!("SKIPPED netns_login: {reason}");
        return;
    }
    let namespaces = Namespaces::create();
    let launcher = namespaces.broker.launcher();
    let broker = Broker::start_with_launcher(1, &launcher, &["--listen", BROKER_ADDRESS]);
    let port = broker.port();

    let management_port = broker.management_port();
    let ctl = |args: &[&str]| namespaces.broker.ringmqctl(management_port, args);
    ctl(&["add_user", "remote", "remote-pw"]);
    ctl(&["set_permissions", "-p", "/", "remote", ".*", ".*", ".*"]);

    let accepted = client(
        &namespaces,
        &format!("amqp://remote:remote-pw@{BROKER_ADDRESS}:{port}/%2f"),
        "ok",
    );
    assert!(accepted.contains("CLIENT-OK"), "{accepted}");

    let refused = client(
        &namespaces,
        &format!("amqp://guest:guest@{BROKER_ADDRESS}:{port}/%2f"),
        "refused",
    );
    assert!(refused.contains("CLIENT-REFUSED"), "{refused}");

    // The refusal is the broker's own proof that it saw the veth address, not loopback.
    drop(broker);
}

/// The client side, when re-run by the test above in the client namespace; a no-op otherwise.
#[tokio::test]
async fn client_role() {
    let Ok(url) = std::env::var(CLIENT_URL_ENV) else {
        return;
    };
    let expect = std::env::var(CLIENT_EXPECT_ENV).unwrap_or_default();
    let result = common::step(
        "connect",
        Connection::connect(&url, ConnectionProperties::default()),
    )
    .await;
    match (expect.as_str(), result) {
        ("ok", Ok(connection)) => {
            let channel = amqp::confirming_channel(&connection).await;
            let queue = common::unique("netns");
            amqp::declare_queue(&channel, &queue, QueueDeclareOptions::default())
                .await
                .expect("declare");
            amqp::publish(
                &channel,
                "",
                &queue,
                b"from afar",
                BasicProperties::default(),
            )
            .await;
            let got = common::step(
                "basic.get",
                channel.basic_get(&queue, BasicGetOptions { no_ack: true }),
            )
            .await
            .expect("basic.get")
            .expect("a message");
            assert_eq!(got.delivery.data, b"from afar");
            println!("CLIENT-OK");
        }
        ("refused", Err(error)) => {
            assert_eq!(amqp::reply_code(&error), Some(403), "{error:?}");
            let lapin::Error::ProtocolError(protocol) = &error else {
                panic!("not a protocol error: {error:?}")
            };
            assert_eq!(protocol.get_message().as_str(), REFUSAL_TEXT);
            println!("CLIENT-REFUSED");
        }
        (expect, result) => panic!("expected {expect}, got {result:?}"),
    }
}
