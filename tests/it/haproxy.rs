//! HAProxy (Debian's `haproxy`) in front of three clustered ringmq nodes, run with the checked-in
//! example config (`examples/haproxy.cfg`, only the nodes' addresses and ports put in). The
//! nodes are tests/it/cluster.rs's set-up (`common::cluster`, names and addresses of their
//! own); HAProxy runs in the hub namespace, which gets an address on the nodes' bridge, and the
//! client beside it (this test binary re-run there), connecting to HAProxy on loopback.
//!
//! In order: every server of both backends is seen UP by HAProxy's AMQP and HTTP health checks;
//! the management API answers through HAProxy; a client publishing with confirms and consuming
//! through HAProxy is steady; the node serving it (found by its connection name in each node's
//! `/api/connections`) is killed with SIGKILL; HAProxy marks that node DOWN in both backends;
//! the client reconnects through HAProxy, declares its classic queue anew (it now lives on the
//! node it reached, as a RabbitMQ user re-declares a non-replicated queue) and continues: every
//! message it publishes there is confirmed and consumed, in order, once; its new connection is
//! on a surviving node; the API still answers through HAProxy on every try.
//!
//! Skipped (with a printed reason) when not root, or without `ip`, `curl` or `haproxy`
//! (`.ci/run` installs haproxy). Every wait is bounded; HAProxy, the client and the nodes are
//! stopped on drop.

use crate::common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::cluster::{curl, eventually, try_curl, Cluster, Layout, CONVERGE_TIMEOUT, NODES};
use common::ctl::{run_bounded, CTL_RUN_TIMEOUT};
use common::netns;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};

/// This suite's names and addresses (tests/it/cluster.rs has its own).
const LAYOUT: Layout = Layout {
    namespace_prefix: "ringmq-hap",
    link_prefix: "hp",
    subnet: "10.213.10",
};
/// The hub's address on the nodes' bridge: where HAProxy's connections to them come from.
const PROXY_ADDRESS: &str = "10.213.10.254/24";
/// The example config, and what the test puts in for its nodes.
const EXAMPLE_CONFIG: &str = include_str!("../../examples/haproxy.cfg");
const EXAMPLE_NODE_SUBNET: &str = "10.0.0";
const EXAMPLE_AMQP_PORT: &str = "5672";
const EXAMPLE_MANAGEMENT_PORT: &str = "15672";
/// HAProxy's frontends and stats page, in the hub namespace (as the example binds them).
const PROXY_AMQP_PORT: u16 = 5672;
const PROXY_MANAGEMENT_PORT: u16 = 15672;
const PROXY_STATS_URL: &str = "http://127.0.0.1:8404/stats;csv";
const BACKENDS: [&str; 2] = ["ringmq_amqp", "ringmq_management"];
/// The user the client and the API requests through HAProxy log in as: HAProxy's connections
/// come from the bridge, and `guest` may only log in from loopback.
const USER: &str = "via-proxy";
const PASSWORD: &str = "via-proxy-pw";
/// The client's connection name (`connection_name` client property), shown by the API.
const CLIENT_NAME: &str = "haproxy-test-client";
/// Round trips (publish, confirm, delivery, ack) before the client reports itself steady, and
/// on the connection after the one that was lost before it reports done.
const STEADY_ROUNDS: usize = 100;
const ROUNDS_AFTER: usize = 200;
/// Connections the client may open in all (the lost one and failed retries included).
const CLIENT_CONNECTIONS_MAX: usize = 30;
/// Between two connection attempts of the client.
const RECONNECT_DELAY: Duration = Duration::from_millis(200);
/// The whole client run: start in the namespace, steady, loss, reconnection, done.
const CLIENT_RUN_BOUND: Duration = Duration::from_secs(120);
/// From the client's start to its steady line (process start and first connection included).
const STEADY_BOUND: Duration = Duration::from_secs(60);
/// From the kill to the client's done line: HAProxy's retries, a reconnection or a few (a Raft
/// election if the killed node led, before the declare commits), and `ROUNDS_AFTER` rounds.
const RECOVERY_BOUND: Duration = Duration::from_secs(60);
/// API requests through HAProxy after the kill: with roundrobin over two live servers, enough
/// to reach each several times.
const API_TRIES_AFTER: usize = 6;
const CLIENT_URL_ENV: &str = "RINGMQ_HAPROXY_CLIENT_URL";

/// HAProxy run in the foreground (`-db`) in a namespace; killed on drop.
struct Haproxy {
    child: Child,
    log: std::path::PathBuf,
}

impl Haproxy {
    fn start(cluster: &Cluster, dir: &std::path::Path) -> Haproxy {
        let config_path = dir.join("haproxy.cfg");
        std::fs::write(&config_path, config_for(cluster)).expect("write haproxy.cfg");
        let log = dir.join("haproxy.log");
        let output = std::fs::File::create(&log).expect("haproxy log");
        let hub = &cluster.namespaces.hub;
        let mut check = hub.command("haproxy");
        check.args(["-c", "-f"]).arg(&config_path);
        let checked = run_bounded(check, CTL_RUN_TIMEOUT);
        assert_eq!(
            checked.code,
            Some(0),
            "haproxy -c on the config: {checked:?}"
        );
        let child = hub
            .command("haproxy")
            .args(["-db", "-f"])
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::from(output.try_clone().expect("log handle")))
            .stderr(Stdio::from(output))
            .spawn()
            .expect("spawn haproxy");
        Haproxy { child, log }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- haproxy log ---\n{}", self.log_text());
        }
    }
}

/// The example config with the test's nodes in place of `10.0.0.N:5672` and `:15672`; each
/// must be there exactly once, so the example and the test cannot drift apart.
fn config_for(cluster: &Cluster) -> String {
    let mut config = EXAMPLE_CONFIG.to_string();
    for i in 0..NODES {
        let node = format!("{EXAMPLE_NODE_SUBNET}.{}", i + 1);
        let address = cluster.layout.address(i);
        let broker = &cluster.brokers[i];
        let ports = [
            (EXAMPLE_AMQP_PORT, broker.port()),
            (EXAMPLE_MANAGEMENT_PORT, broker.management_port()),
        ];
        for (example_port, port) in ports {
            let from = format!(" {node}:{example_port} ");
            assert_eq!(config.matches(&from).count(), 1, "{from:?} in the example");
            config = config.replace(&from, &format!(" {address}:{port} "));
        }
    }
    config
}

/// Each server's status per HAProxy's stats CSV: (backend, server, status) rows.
fn server_statuses(cluster: &Cluster) -> Vec<(String, String, String)> {
    // Nothing may listen yet right after HAProxy's start.
    let answer = try_curl(&cluster.namespaces.hub, None, "GET", PROXY_STATS_URL, None);
    let Ok((200, csv)) = answer else {
        return Vec::new();
    };
    let mut lines = csv.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .trim_start_matches("# ")
        .split(',')
        .collect();
    let Some(column) = header.iter().position(|name| *name == "status") else {
        return Vec::new();
    };
    lines
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            let (backend, server) = (*fields.first()?, *fields.get(1)?);
            let wanted = BACKENDS.contains(&backend) && server.starts_with("ringmq");
            wanted.then(|| {
                let status = fields.get(column).unwrap_or(&"").to_string();
                (backend.to_string(), server.to_string(), status)
            })
        })
        .collect()
}

/// Waits until HAProxy shows node `down` (server `ringmq<down+1>`) DOWN in both backends and
/// every other node UP (every node UP for `None`).
fn wait_servers(cluster: &Cluster, down: Option<usize>) {
    let what = format!("HAProxy seeing node {down:?} down and the others up");
    eventually(&what, CONVERGE_TIMEOUT, || {
        let statuses = server_statuses(cluster);
        statuses.len() == BACKENDS.len() * NODES
            && statuses.iter().all(|(_, server, status)| {
                let want = match down {
                    Some(i) if *server == format!("ringmq{}", i + 1) => "DOWN",
                    _ => "UP",
                };
                status == want
            })
    });
}

/// `GET path` on the management API through HAProxy, as the test's user.
fn api_through_proxy(cluster: &Cluster, path: &str) -> (u16, String) {
    let url = format!("http://127.0.0.1:{PROXY_MANAGEMENT_PORT}{path}");
    let credentials = format!("{USER}:{PASSWORD}");
    curl(
        &cluster.namespaces.hub,
        Some(&credentials),
        "GET",
        &url,
        None,
    )
}

/// The node whose `/api/connections` lists the client, if one does.
fn node_serving_client(cluster: &Cluster, candidates: &[usize]) -> Option<usize> {
    candidates.iter().copied().find(|&i| {
        let (status, body) = cluster.http(i, "GET", "/api/connections", None);
        status == 200 && body.contains(CLIENT_NAME)
    })
}

/// The client re-run in the hub namespace; its stdout lines arrive on `lines`. Killed on drop.
struct ClientProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl ClientProcess {
    fn start(cluster: &Cluster) -> ClientProcess {
        let url = format!("amqp://{USER}:{PASSWORD}@127.0.0.1:{PROXY_AMQP_PORT}/%2f");
        let test = netns::test_name(module_path!(), "client_role");
        let mut child = cluster
            .namespaces
            .hub
            .rerun_test(&test)
            .env(CLIENT_URL_ENV, url)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the client");
        let stdout = child.stdout.take().expect("piped stdout");
        let stdin = child.stdin.take();
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                eprintln!("client: {line}");
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        ClientProcess {
            child,
            stdin,
            lines,
        }
    }

    /// The first line holding `CLIENT-<word>` within `timeout` (from `CLIENT-` on); a
    /// `CLIENT-FAILED` line or the client's exit fails the test.
    fn expect(&self, word: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let wanted = format!("CLIENT-{word}");
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match self.lines.recv_timeout(left) {
                Ok(line) => line,
                Err(error) => panic!("no {wanted} from the client within {timeout:?}: {error}"),
            };
            let Some(at) = line.find("CLIENT-") else {
                continue;
            };
            let said = line[at..].trim().to_string();
            assert!(!said.starts_with("CLIENT-FAILED"), "{said}");
            if said.starts_with(&wanted) {
                return said;
            }
        }
    }

    /// Tells the client to close its connection and exit (it waits for this once done).
    fn finish(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"finish\n");
        }
        let line = self.expect("EXITING", common::STEP_TIMEOUT);
        eprintln!("{line}");
    }
}

impl Drop for ClientProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The test's user, made on node 1 (replicated to all) with every permission on `/`. Asked
/// again until it commits: right after start the nodes may still be electing a leader (the
/// API answers 400 then), and a repeated PUT is the same change.
fn create_user(cluster: &Cluster) {
    let user = format!(r#"{{"password":"{PASSWORD}","tags":"administrator"}}"#);
    let all = r#"{"configure":".*","write":".*","read":".*"}"#;
    let permissions = format!("/api/permissions/%2F/{USER}");
    let puts = [
        (format!("/api/users/{USER}"), user),
        (permissions.clone(), all.to_string()),
    ];
    for (path, body) in &puts {
        eventually(&format!("PUT {path} committed"), CONVERGE_TIMEOUT, || {
            let (status, _) = cluster.http(0, "PUT", path, Some(body));
            status == 201 || status == 204
        });
    }
    for i in 0..NODES {
        eventually("the user on every node", CONVERGE_TIMEOUT, || {
            let (status, _) = cluster.http(i, "GET", &permissions, None);
            status == 200
        });
    }
}

#[test]
fn client_reconnects_through_haproxy_after_its_node_is_killed() {
    if let Some(reason) = netns::skip_reason(&["curl"]) {
        eprintln!("SKIPPED haproxy: {reason}");
        return;
    }
    let probe = Command::new("haproxy").arg("-v").output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!("SKIPPED haproxy: haproxy is missing (.ci/run installs it)");
        return;
    }
    let dir = std::env::temp_dir().join(common::unique("ringmq-haproxy"));
    std::fs::create_dir_all(&dir).expect("haproxy dir");
    let mut cluster = Cluster::start(LAYOUT);
    for i in 0..NODES {
        cluster.wait_running(i, NODES);
    }
    cluster.namespaces.hub.address("br0", PROXY_ADDRESS);
    create_user(&cluster);
    let haproxy = Haproxy::start(&cluster, &dir);
    wait_servers(&cluster, None);
    let (status, body) = api_through_proxy(&cluster, "/api/overview");
    assert_eq!(status, 200, "the API through HAProxy: {body}");

    let started = Instant::now();
    let mut client = ClientProcess::start(&cluster);
    client.expect("STEADY", STEADY_BOUND);
    let all: Vec<usize> = (0..NODES).collect();
    let serving = node_serving_client(&cluster, &all).expect("a node lists the client");
    eprintln!("the client is on node {}; killing it", serving + 1);
    cluster.brokers[serving].kill9();
    let killed_at = Instant::now();

    let done = client.expect("DONE", RECOVERY_BOUND);
    eprintln!("{done} ({:?} after the kill)", killed_at.elapsed());
    let survivors: Vec<usize> = all.iter().copied().filter(|&i| i != serving).collect();
    let now_on = node_serving_client(&cluster, &survivors);
    assert!(now_on.is_some(), "the reconnected client on a survivor");
    wait_servers(&cluster, Some(serving));
    for _ in 0..API_TRIES_AFTER {
        let (status, body) = api_through_proxy(&cluster, "/api/overview");
        assert_eq!(
            status, 200,
            "the API through HAProxy after the kill: {body}"
        );
    }
    client.finish();
    assert!(
        started.elapsed() < CLIENT_RUN_BOUND,
        "{:?}",
        started.elapsed()
    );
    drop(client);
    drop(haproxy);
    drop(cluster);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `m-<i>`, the body of the i-th message the client publishes (over all its connections).
fn numbered(i: usize) -> Vec<u8> {
    format!("m-{i}").into_bytes()
}

/// What one connection of the client did before it ended.
struct Session {
    rounds: usize,
    ended: Result<(), String>,
}

/// The client, when re-run by the test above in the hub namespace; a no-op otherwise. Prints
/// `CLIENT-STEADY` once its first connection has done `STEADY_ROUNDS` round trips,
/// `CLIENT-DONE ...` once a later connection has done `ROUNDS_AFTER`, then waits for a line on
/// stdin before closing (the test checks which node it is on meanwhile) and prints
/// `CLIENT-EXITING`; `CLIENT-FAILED ...` when it cannot go on.
#[tokio::test]
async fn client_role() {
    let Ok(url) = std::env::var(CLIENT_URL_ENV) else {
        return;
    };
    let deadline = tokio::time::Instant::now() + CLIENT_RUN_BOUND;
    let mut next = 0usize;
    let mut lost_after: Option<usize> = None;
    let mut connections = 0;
    let connection = loop {
        if connections == CLIENT_CONNECTIONS_MAX || tokio::time::Instant::now() >= deadline {
            println!(
                "CLIENT-FAILED after {connections} connections: no {ROUNDS_AFTER} rounds on one after the loss"
            );
            return;
        }
        connections += 1;
        let Some(connection) = connect(&url, connections).await else {
            tokio::time::sleep(RECONNECT_DELAY).await;
            continue;
        };
        let plan = Plan {
            number: connections,
            rounds: if lost_after.is_some() {
                ROUNDS_AFTER
            } else {
                usize::MAX
            },
            deadline,
        };
        let session = run_session(&connection, &plan, &mut next).await;
        let error = match session.ended {
            Ok(()) => break connection,
            Err(error) => error,
        };
        eprintln!(
            "connection {connections} ended after {} rounds: {error}",
            session.rounds
        );
        // Closed if it still can be (a refused declare leaves it open), within a bound.
        let _ = tokio::time::timeout(common::STEP_TIMEOUT, connection.close(200, "again")).await;
        if lost_after.is_none() {
            if session.rounds < STEADY_ROUNDS {
                println!("CLIENT-FAILED the first connection ended before it was steady: {error}");
                return;
            }
            lost_after = Some(session.rounds);
        }
        tokio::time::sleep(RECONNECT_DELAY).await;
    };
    println!(
        "CLIENT-DONE connections={connections} before-loss={} after={ROUNDS_AFTER}",
        lost_after.unwrap_or(0)
    );
    let finish = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
    });
    let _ = tokio::time::timeout(common::STEP_TIMEOUT, finish).await;
    let _ = tokio::time::timeout(common::STEP_TIMEOUT, connection.close(200, "done")).await;
    println!("CLIENT-EXITING");
}

/// Connection attempt `attempt` through HAProxy, bounded; None when refused or timed out.
async fn connect(url: &str, attempt: usize) -> Option<Connection> {
    let properties = ConnectionProperties::default().with_connection_name(CLIENT_NAME.into());
    let connecting = Connection::connect(url, properties);
    match tokio::time::timeout(common::STEP_TIMEOUT, connecting).await {
        Ok(Ok(connection)) => Some(connection),
        Ok(Err(error)) => {
            eprintln!("connection {attempt} refused: {error}");
            None
        }
        Err(_) => {
            eprintln!("connection {attempt} timed out");
            None
        }
    }
}

/// What one connection of the client is to do: its number (1 for the first), how many round
/// trips, and the client's deadline.
struct Plan {
    number: usize,
    rounds: usize,
    deadline: tokio::time::Instant,
}

/// Round trips on one connection until `plan.rounds` are done (`Ok`) or it fails (`Err`): a
/// confirmed publish of the next number to this connection's own queue, then its delivery,
/// which must be that number (in order, none lost, none twice), then its ack.
async fn run_session(connection: &Connection, plan: &Plan, next: &mut usize) -> Session {
    use futures_util::StreamExt;
    let text = |error: lapin::Error| error.to_string();
    let mut rounds = 0;
    let ended = async {
        let channel = connection.create_channel().await.map_err(text)?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(text)?;
        let queue = format!("haproxy-q-{}", plan.number);
        let exclusive = QueueDeclareOptions {
            exclusive: true,
            ..QueueDeclareOptions::default()
        };
        channel
            .queue_declare(&queue, exclusive, FieldTable::default())
            .await
            .map_err(text)?;
        let options = BasicConsumeOptions::default();
        let mut consumer = channel
            .basic_consume(&queue, "c", options, FieldTable::default())
            .await
            .map_err(text)?;
        while rounds < plan.rounds {
            if tokio::time::Instant::now() >= plan.deadline {
                return Err("the client's run bound passed".to_string());
            }
            let body = numbered(*next);
            let properties = BasicProperties::default();
            let options = BasicPublishOptions::default();
            let confirm = channel
                .basic_publish("", &queue, options, &body, properties)
                .await
                .map_err(text)?;
            let confirmation = tokio::time::timeout(common::STEP_TIMEOUT, confirm)
                .await
                .map_err(|_| "no confirm in time".to_string())?
                .map_err(text)?;
            if !confirmation.is_ack() {
                return Err(format!("message {next} nacked"));
            }
            let delivery = tokio::time::timeout(common::STEP_TIMEOUT, consumer.next())
                .await
                .map_err(|_| "no delivery in time".to_string())?
                .ok_or("the consumer ended")?
                .map_err(text)?;
            if delivery.data != body {
                println!(
                    "CLIENT-FAILED expected {:?}, got {:?}",
                    String::from_utf8_lossy(&body),
                    String::from_utf8_lossy(&delivery.data)
                );
                std::process::exit(1);
            }
            delivery
                .ack(BasicAckOptions::default())
                .await
                .map_err(text)?;
            *next += 1;
            rounds += 1;
            if plan.number == 1 && rounds == STEADY_ROUNDS {
                println!("CLIENT-STEADY");
            }
        }
        Ok(())
    }
    .await;
    Session { rounds, ended }
}
