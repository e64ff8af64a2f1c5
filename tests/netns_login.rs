//! Logins from a non-loopback address, in network namespaces the test makes itself: the broker
//! runs in one, the client in another, joined by a veth pair with private addresses the test
//! assigns (never the host's own interfaces). A user created with ringmqctl connects and
//! publishes/consumes from there; `guest` (loopback-only, RabbitMQ's default) is refused with
//! RabbitMQ's text.
//!
//! The client side is this test binary re-run under `ip netns exec` with only the
//! `client_role` test selected: a whole process in the client namespace, so every socket lapin
//! opens is there. Skipped (with a printed reason) when not root or without `ip`.

mod common;

use std::process::Command;

use common::ctl::{run_bounded, CtlOutput, CTL_RUN_TIMEOUT, RINGMQCTL};
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

/// Two namespaces and the veth pair between them; all deleted on drop (a namespace's
/// deletion takes its end of the pair, and with it the whole pair).
struct Namespaces {
    broker: String,
    client: String,
}

fn ip(args: &[&str]) -> CtlOutput {
    let mut command = Command::new("ip");
    command.args(args);
    run_bounded(command, CTL_RUN_TIMEOUT)
}

fn ip_ok(args: &[&str]) {
    let output = ip(args);
    assert_eq!(output.code, Some(0), "ip {args:?}: {output:?}");
}

impl Namespaces {
    fn create() -> Namespaces {
        // Interface names are at most 15 bytes; the pid keeps parallel runs apart.
        let tag = format!("{}", std::process::id() % 1_000_000);
        let namespaces = Namespaces {
            broker: format!("ringmq-b-{tag}"),
            client: format!("ringmq-c-{tag}"),
        };
        let (broker_link, client_link) = (format!("rqb{tag}"), format!("rqc{tag}"));
        ip_ok(&["netns", "add", &namespaces.broker]);
        ip_ok(&["netns", "add", &namespaces.client]);
        ip_ok(&[
            "link",
            "add",
            &broker_link,
            "type",
            "veth",
            "peer",
            "name",
            &client_link,
        ]);
        for (namespace, link, address) in [
            (&namespaces.broker, &broker_link, BROKER_ADDRESS),
            (&namespaces.client, &client_link, CLIENT_ADDRESS),
        ] {
            ip_ok(&["link", "set", link, "netns", namespace]);
            let with_prefix = format!("{address}/{PREFIX_LENGTH}");
            ip_ok(&["-n", namespace, "addr", "add", &with_prefix, "dev", link]);
            ip_ok(&["-n", namespace, "link", "set", link, "up"]);
            ip_ok(&["-n", namespace, "link", "set", "lo", "up"]);
        }
        namespaces
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for namespace in [&self.broker, &self.client] {
            let output = ip(&["netns", "del", namespace]);
            if output.code != Some(0) {
                eprintln!("could not delete network namespace {namespace}: {output:?}");
            }
        }
    }
}

fn skip_reason() -> Option<&'static str> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root: cannot create network namespaces");
    }
    let probe = Command::new("ip").arg("-V").output();
    if !probe.is_ok_and(|o| o.status.success()) {
        return Some("the `ip` command (iproute2) is missing");
    }
    None
}

/// Runs this test binary's `client_role` in the client namespace against `url`.
fn client(namespaces: &Namespaces, url: &str, expect: &str) -> String {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", &namespaces.client])
        .arg(exe)
        .args([
            "--exact",
            "client_role",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CLIENT_URL_ENV, url)
        .env(CLIENT_EXPECT_ENV, expect);
    let output = run_bounded(command, CTL_RUN_TIMEOUT);
    assert_eq!(
        output.code,
        Some(0),
        "client in {}: {output:?}",
        namespaces.client
    );
    output.stdout
}

fn ctl_in(namespace: &str, management_port: u16, args: &[&str]) -> String {
    let url = format!("http://127.0.0.1:{management_port}");
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", namespace, RINGMQCTL, "--url", &url])
        .args(args);
    run_bounded(command, CTL_RUN_TIMEOUT).ok()
}

#[test]
fn a_created_user_logs_in_from_another_namespace_and_guest_does_not() {
    if let Some(reason) = skip_reason() {
        eprintln!("SKIPPED netns_login: {reason}");
        return;
    }
    let namespaces = Namespaces::create();
    let launcher = ["ip", "netns", "exec", namespaces.broker.as_str()];
    let broker = Broker::start_with_launcher(1, &launcher, &["--listen", BROKER_ADDRESS]);
    let port = broker.port();

    ctl_in(
        &namespaces.broker,
        broker.management_port(),
        &["add_user", "remote", "remote-pw"],
    );
    ctl_in(
        &namespaces.broker,
        broker.management_port(),
        &["set_permissions", "-p", "/", "remote", ".*", ".*", ".*"],
    );

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
