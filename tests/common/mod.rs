//! A ringmq broker under test, started as a real process, plus small helpers every black-box
//! test shares. Each test file includes this with `mod common;` and uses what it needs.
//!
//! Environment knobs (all optional):
//! - `RINGMQ_TEST_LOG_LEVEL`: `--log-level` for the brokers the tests start (default `info`).
//! - `RINGMQ_TEST_EXTERNAL_PORT`: do not spawn ringmq; talk to a broker already listening on
//!   127.0.0.1 at that port (e.g. a RabbitMQ, to check that a test itself is right).
#![allow(dead_code)]

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// How long a broker may take from spawn to its ready line. A bound, not a wait: generous
/// because an 80-shard start on a loaded 2-core CI machine was seen to pass 10 s.
pub const BROKER_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a broker may take to exit after SIGTERM before it is SIGKILLed.
pub const BROKER_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on any single awaited step in a test (a declare, a delivery, a confirm).
pub const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a test waits to be sure something does NOT arrive.
pub const ABSENCE_TIMEOUT: Duration = Duration::from_millis(300);
/// Lines of the broker's log shown when a test fails.
const LOG_TAIL_LINES: usize = 60;
/// Attempts at finding a port no other broker of this test process was given.
const FREE_PORT_ATTEMPTS: usize = 64;

pub const SHARD_COUNTS: [usize; 2] = [1, 2];

/// A running broker process. Dropping it stops the process and removes its directory.
pub struct Broker {
    child: Option<Child>,
    port: u16,
    shards: usize,
    /// Holds `data/` and `broker.log`; removed on drop.
    root: PathBuf,
    /// Drained by a thread so the broker never blocks on a full stdout pipe; closes at exit.
    stdout_closed: Option<mpsc::Receiver<()>>,
    external: bool,
    management_port: u16,
    /// Its own Prometheus port, so parallel brokers never meet on the default 15692.
    prometheus_port: u16,
    /// Flags added to every start of this broker (restarts included).
    extra_args: Vec<String>,
    /// A command the broker runs under (e.g. `ip netns exec NS`); empty: run it directly. It
    /// must exec the broker (same pid) so signals reach it.
    launcher: Vec<String>,
    /// The data directory when not `root/data` (a filesystem the test made).
    data_dir_override: Option<PathBuf>,
    /// Environment variables added to every start of this broker (restarts included).
    env: Vec<(String, String)>,
}

impl Broker {
    /// Starts `ringmq` with `shards` shards on a free port and waits for its ready line.
    pub fn start(shards: usize) -> Broker {
        Broker::start_with_args(shards, &[])
    }

    /// Like [`Broker::start`], with extra command-line flags (kept for restarts).
    pub fn start_with_args(shards: usize, extra_args: &[&str]) -> Broker {
        Broker::start_with_launcher(shards, &[], extra_args)
    }

    /// Like [`Broker::start_with_args`], run under `launcher` (e.g. `ip netns exec NS`, which
    /// execs the broker in a network namespace).
    pub fn start_with_launcher(shards: usize, launcher: &[&str], extra_args: &[&str]) -> Broker {
        Broker::start_full(shards, launcher, None, &[], extra_args)
    }

    /// Like [`Broker::start_with_args`], with the data directory at `data_dir` (which must
    /// exist) instead of under the test's temporary root.
    pub fn start_in(shards: usize, data_dir: Option<&Path>, extra_args: &[&str]) -> Broker {
        Broker::start_full(shards, &[], data_dir, &[], extra_args)
    }

    /// Like [`Broker::start_with_args`], with environment variables set for the process (kept
    /// for restarts).
    pub fn start_with_env(shards: usize, env: &[(&str, &str)], extra_args: &[&str]) -> Broker {
        Broker::start_full(shards, &[], None, env, extra_args)
    }

    fn start_full(
        shards: usize,
        launcher: &[&str],
        data_dir: Option<&Path>,
        env: &[(&str, &str)],
        extra_args: &[&str],
    ) -> Broker {
        if let Some(port) = external_port() {
            return Broker {
                child: None,
                port,
                shards,
                root: PathBuf::new(),
                stdout_closed: None,
                external: true,
                management_port: 0,
                prometheus_port: 15692,
                extra_args: Vec::new(),
                launcher: Vec::new(),
                data_dir_override: None,
                env: Vec::new(),
            };
        }
        let root = unique_dir();
        std::fs::create_dir_all(root.join("data")).expect("create test data dir");
        let mut broker = Broker {
            child: None,
            port: free_port(),
            shards,
            root,
            stdout_closed: None,
            external: false,
            management_port: free_port(),
            prometheus_port: free_port(),
            extra_args: extra_args.iter().map(|a| (*a).to_owned()).collect(),
            launcher: launcher.iter().map(|a| (*a).to_owned()).collect(),
            data_dir_override: data_dir.map(Path::to_path_buf),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        broker.spawn();
        broker
    }

    /// The management API's port: `RINGMQ_TEST_EXTERNAL_MANAGEMENT_PORT` for an external
    /// broker (default 15672), else the one this broker was started with.
    pub fn management_port(&self) -> u16 {
        if self.external {
            return std::env::var("RINGMQ_TEST_EXTERNAL_MANAGEMENT_PORT")
                .ok()
                .and_then(|p| p.parse().ok())
                .unwrap_or(15672);
        }
        self.management_port
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The Prometheus endpoint's port (15692 for an external broker).
    pub fn prometheus_port(&self) -> u16 {
        self.prometheus_port
    }

    pub fn shards(&self) -> usize {
        self.shards
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    pub fn data_dir(&self) -> PathBuf {
        if let Some(dir) = &self.data_dir_override {
            return dir.clone();
        }
        self.root.join("data")
    }

    /// Everything the broker processes of this test wrote to stderr so far (all restarts).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.root.join("broker.log")).unwrap_or_default()
    }

    /// The broker process's id (None for an external broker or after a stop).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_external(&self) -> bool {
        self.external
    }

    /// Graceful stop: SIGTERM, then the exit status (SIGKILL if it does not exit in time).
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        signal(&child, libc::SIGTERM);
        if self.wait_stdout_closed(BROKER_STOP_TIMEOUT) {
            return child.wait().ok();
        }
        eprintln!("ringmq did not exit within {BROKER_STOP_TIMEOUT:?} of SIGTERM; killing it");
        let _ = child.kill();
        child.wait().ok()
    }

    /// Crash: SIGKILL, no chance to flush anything. For the write-ahead log's crash tests.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a new process on the same data directory and port (after `kill9` or `stop`; a
    /// broker still running is stopped gracefully first).
    pub fn restart_same_dir(&mut self) {
        assert!(!self.external, "cannot restart an external broker");
        if self.child.is_some() {
            self.stop();
        }
        self.spawn();
    }

    /// Like [`Broker::restart_same_dir`], with another `--shards` (kept for later restarts):
    /// for restarts on a data directory written with a different shard count.
    pub fn restart_with_shards(&mut self, shards: usize) {
        assert!(!self.external, "cannot restart an external broker");
        if self.child.is_some() {
            self.stop();
        }
        self.shards = shards;
        self.spawn();
    }

    /// Like [`Broker::restart_same_dir`], with other extra flags (kept for later restarts).
    pub fn restart_with_args(&mut self, extra_args: &[&str]) {
        assert!(!self.external, "cannot restart an external broker");
        if self.child.is_some() {
            self.stop();
        }
        self.extra_args = extra_args.iter().map(|a| (*a).to_owned()).collect();
        self.spawn();
    }

    /// Like [`Broker::restart_same_dir`], but a broker that exits instead of becoming ready
    /// (e.g. it refuses a corrupt log) is an `Err` with its exit status and what it logged,
    /// not a panic. For recovery tests that expect a refusal.
    pub fn try_restart_same_dir(&mut self) -> Result<(), StartFailure> {
        assert!(!self.external, "cannot restart an external broker");
        if self.child.is_some() {
            self.stop();
        }
        let log_path = self.root.join("broker.log");
        let log_start = std::fs::metadata(&log_path).map_or(0, |m| m.len());
        let ready = self.spawn_child();
        match ready.recv_timeout(BROKER_READY_TIMEOUT) {
            Ok(line) => {
                self.check_ready_line(&line);
                Ok(())
            }
            Err(_) => {
                // No ready line: the process exited (stdout closed) or hangs; either way reap it.
                let exited = self.wait_stdout_closed(BROKER_STOP_TIMEOUT);
                let status = match self.child.take() {
                    Some(mut child) => {
                        if !exited {
                            let _ = child.kill();
                        }
                        child.wait().ok()
                    }
                    None => None,
                };
                Err(StartFailure {
                    status,
                    log: log_since(&log_path, log_start),
                })
            }
        }
    }

    fn spawn(&mut self) {
        let log_path = self.root.join("broker.log");
        let ready_rx = self.spawn_child();
        match ready_rx.recv_timeout(BROKER_READY_TIMEOUT) {
            Ok(line) => self.check_ready_line(&line),
            Err(_) => {
                let status = self
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten());
                self.kill9();
                panic!(
                    "ringmq printed no ready line within {BROKER_READY_TIMEOUT:?} (exit: {status:?})\n{}",
                    log_tail(&log_path)
                );
            }
        }
    }

    /// Spawns the process; the receiver gets its ready line (or disconnects when it exits).
    fn spawn_child(&mut self) -> mpsc::Receiver<String> {
        let log_path = self.root.join("broker.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("open broker log");
        let log_level =
            std::env::var("RINGMQ_TEST_LOG_LEVEL").unwrap_or_else(|_| "info".to_owned());
        let mut command = match self.launcher.split_first() {
            Some((program, launcher_args)) => {
                let mut command = Command::new(program);
                command
                    .args(launcher_args)
                    .arg(env!("CARGO_BIN_EXE_ringmq"));
                command
            }
            None => Command::new(env!("CARGO_BIN_EXE_ringmq")),
        };
        let mut child = command
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--shards")
            .arg(self.shards.to_string())
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--listen")
            .arg("127.0.0.1")
            .arg("--management-port")
            .arg(self.management_port.to_string())
            .arg("--prometheus-port")
            .arg(self.prometheus_port.to_string())
            .arg("--log-level")
            .arg(log_level)
            .args(&self.extra_args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn ringmq");
        let stdout = child.stdout.take().expect("piped stdout");
        self.child = Some(child);
        let (ready_tx, ready_rx) = mpsc::channel();
        let (closed_tx, closed_rx) = mpsc::channel();
        self.stdout_closed = Some(closed_rx);
        std::thread::spawn(move || drain_stdout(stdout, ready_tx, closed_tx));
        ready_rx
    }

    fn check_ready_line(&self, line: &str) {
        let expected_suffix = format!(":{} shards={}", self.port, self.shards);
        assert!(
            line.starts_with("ringmq ready on ") && line.ends_with(&expected_suffix),
            "unexpected ready line {line:?}, wanted `ringmq ready on <addr>{expected_suffix}`"
        );
    }

    fn wait_stdout_closed(&mut self, timeout: Duration) -> bool {
        match &self.stdout_closed {
            Some(rx) => rx.recv_timeout(timeout).is_ok(),
            None => true,
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if self.external {
            return;
        }
        let status = self.stop();
        if std::thread::panicking() {
            eprintln!(
                "--- ringmq (port {}, shards {}, exit {:?}) log tail ---\n{}",
                self.port,
                self.shards,
                status,
                log_tail(&self.root.join("broker.log"))
            );
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Reads stdout line by line: the first ready line goes to `ready`; EOF (process exit) to
/// `closed`. Anything else on stdout is a contract violation but harmless, so it is echoed.
fn drain_stdout(stdout: impl Read, ready: mpsc::Sender<String>, closed: mpsc::Sender<()>) {
    let mut seen_ready = false;
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if !seen_ready && line.starts_with("ringmq ready on ") {
            seen_ready = true;
            let _ = ready.send(line);
        } else {
            eprintln!("ringmq stdout: {line}");
        }
    }
    let _ = closed.send(());
}

fn signal(child: &Child, signal: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(child.id()) else {
        return;
    };
    // SAFETY: kill(2) on our own child's pid; the Child is not yet reaped, so the pid is ours.
    unsafe {
        libc::kill(pid, signal);
    }
}

fn external_port() -> Option<u16> {
    std::env::var("RINGMQ_TEST_EXTERNAL_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
}

/// A port the kernel just handed out and no other broker of this process was given. Brokers
/// bind with SO_REUSEPORT, so two of them on one port would silently share connections.
pub fn free_port() -> u16 {
    static GIVEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let given = GIVEN.get_or_init(|| Mutex::new(HashSet::new()));
    for _ in 0..FREE_PORT_ATTEMPTS {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind an ephemeral port")
            .port();
        if given.lock().expect("port set").insert(port) {
            return port;
        }
    }
    panic!("no fresh free port in {FREE_PORT_ATTEMPTS} attempts");
}

fn unique_dir() -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    std::env::temp_dir().join(format!("ringmq-test-{}-{n}-{nanos}", std::process::id()))
}

/// A broker that did not become ready: how it exited and what it wrote to stderr meanwhile.
#[derive(Debug)]
pub struct StartFailure {
    pub status: Option<ExitStatus>,
    pub log: String,
}

/// The broker log from byte `start` on (the part one process wrote; the file is appended to).
fn log_since(path: &Path, start: u64) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    let start = usize::try_from(start).unwrap_or(usize::MAX);
    String::from_utf8_lossy(bytes.get(start..).unwrap_or_default()).into_owned()
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(LOG_TAIL_LINES);
    lines.get(start..).unwrap_or_default().join("\n")
}

/// Awaits `fut` for at most [`STEP_TIMEOUT`]; a hang becomes a test failure naming the step.
pub async fn step<F: std::future::Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(STEP_TIMEOUT, fut).await {
        Ok(out) => out,
        Err(_) => panic!("timed out after {STEP_TIMEOUT:?}: {what}"),
    }
}

/// A name no other test (or earlier run against an external broker) uses.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{prefix}-{}-{n}-{nanos}", std::process::id())
}

/// Generates one `#[tokio::test]` per entry of [`SHARD_COUNTS`] for an
/// `async fn name(broker: &Broker)`: `name::shards_1`, `name::shards_2`.
#[macro_export]
macro_rules! per_shard_count {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn shards_1() {
                let broker = $crate::common::Broker::start(1);
                super::$name(&broker).await;
            }
            #[tokio::test]
            async fn shards_2() {
                let broker = $crate::common::Broker::start(2);
                super::$name(&broker).await;
            }
        }
    )*};
}

/// Like [`per_shard_count!`], but the test gets `&mut Broker` so it can restart it.
#[macro_export]
macro_rules! per_shard_count_mut {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn shards_1() {
                let mut broker = $crate::common::Broker::start(1);
                super::$name(&mut broker).await;
            }
            #[tokio::test]
            async fn shards_2() {
                let mut broker = $crate::common::Broker::start(2);
                super::$name(&mut broker).await;
            }
        }
    )*};
}

pub mod admin;
pub mod cluster;
pub mod confirmed;
pub mod ctl;
pub mod filesystem;
pub mod netns;
pub mod rabbitmq;
pub mod raw;
pub mod shovel;
pub mod transfer;

pub mod amqp {
    //! Thin wrappers over lapin that put a timeout on every step.

    use super::{step, Broker, ABSENCE_TIMEOUT};
    use futures_util::StreamExt;
    use lapin::message::{BasicGetMessage, Delivery};
    use lapin::options::*;
    use lapin::publisher_confirm::Confirmation;
    use lapin::types::FieldTable;
    use lapin::{
        BasicProperties, Channel, Connection, ConnectionProperties, Consumer, ExchangeKind, Queue,
    };

    pub async fn connect(broker: &Broker) -> Connection {
        connect_url(&broker.url()).await
    }

    pub async fn connect_url(url: &str) -> Connection {
        step(
            "connect",
            Connection::connect(url, ConnectionProperties::default()),
        )
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"))
    }

    pub async fn channel(connection: &Connection) -> Channel {
        step("open channel", connection.create_channel())
            .await
            .expect("open channel")
    }

    /// The AMQP reply code inside a lapin error, if the server sent one.
    pub fn reply_code(error: &lapin::Error) -> Option<u16> {
        match error {
            lapin::Error::ProtocolError(e) => Some(e.get_id()),
            _ => None,
        }
    }

    /// Asserts that `result` failed with the server's reply `code`.
    pub fn expect_code<T: std::fmt::Debug>(what: &str, result: lapin::Result<T>, code: u16) {
        match result {
            Ok(v) => panic!("{what}: expected error {code}, got Ok({v:?})"),
            Err(e) => assert_eq!(reply_code(&e), Some(code), "{what}: wrong error {e:?}"),
        }
    }

    /// Asserts that `result` failed with the server's reply `code` and exactly `text`.
    pub fn expect_code_and_text<T: std::fmt::Debug>(
        what: &str,
        result: lapin::Result<T>,
        code: u16,
        text: &str,
    ) {
        match result {
            Ok(v) => panic!("{what}: expected {code} {text}, got Ok({v:?})"),
            Err(e) => {
                assert_eq!(reply_code(&e), Some(code), "{what}: wrong error {e:?}");
                let lapin::Error::ProtocolError(protocol) = &e else {
                    unreachable!("reply_code was Some")
                };
                assert_eq!(protocol.get_message().as_str(), text, "{what}");
            }
        }
    }

    /// The error that ends `connection` (a server's connection.close arrives as one).
    pub fn closing_error(connection: &Connection) -> tokio::sync::oneshot::Receiver<lapin::Error> {
        let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
        let closed_tx = std::sync::Mutex::new(Some(closed_tx));
        connection.on_error(move |error| {
            if let Some(tx) = closed_tx.lock().unwrap().take() {
                let _ = tx.send(error);
            }
        });
        closed_rx
    }

    pub async fn confirming_channel(connection: &Connection) -> Channel {
        let ch = channel(connection).await;
        step(
            "confirm.select",
            ch.confirm_select(ConfirmSelectOptions::default()),
        )
        .await
        .expect("confirm.select");
        ch
    }

    /// Publishes on a confirming channel and waits for the broker's confirm, so when this
    /// returns the message has been routed. Returns the confirmation (ack, maybe a return).
    pub async fn publish_confirmed(
        ch: &Channel,
        exchange: &str,
        key: &str,
        options: BasicPublishOptions,
        body: &[u8],
        props: BasicProperties,
    ) -> Confirmation {
        let confirm = step(
            "basic.publish",
            ch.basic_publish(exchange, key, options, body, props),
        )
        .await
        .expect("basic.publish");
        step("publisher confirm", confirm).await.expect("confirm")
    }

    /// [`publish_confirmed`] with default options, asserting an ack.
    pub async fn publish(
        ch: &Channel,
        exchange: &str,
        key: &str,
        body: &[u8],
        props: BasicProperties,
    ) {
        let confirmation = publish_confirmed(
            ch,
            exchange,
            key,
            BasicPublishOptions::default(),
            body,
            props,
        )
        .await;
        assert!(confirmation.is_ack(), "publish not acked: {confirmation:?}");
    }

    pub async fn declare_queue(
        ch: &Channel,
        name: &str,
        options: QueueDeclareOptions,
    ) -> lapin::Result<Queue> {
        step(
            "queue.declare",
            ch.queue_declare(name, options, FieldTable::default()),
        )
        .await
    }

    pub async fn declare_exchange(ch: &Channel, name: &str, kind: ExchangeKind) {
        step(
            "exchange.declare",
            ch.exchange_declare(
                name,
                kind,
                ExchangeDeclareOptions::default(),
                FieldTable::default(),
            ),
        )
        .await
        .expect("exchange.declare");
    }

    pub async fn bind(ch: &Channel, queue: &str, exchange: &str, key: &str) {
        step(
            "queue.bind",
            ch.queue_bind(
                queue,
                exchange,
                key,
                QueueBindOptions::default(),
                FieldTable::default(),
            ),
        )
        .await
        .expect("queue.bind");
    }

    pub async fn consume(ch: &Channel, queue: &str, no_ack: bool) -> Consumer {
        let options = BasicConsumeOptions {
            no_ack,
            ..Default::default()
        };
        step(
            "basic.consume",
            ch.basic_consume(queue, "", options, FieldTable::default()),
        )
        .await
        .expect("basic.consume")
    }

    pub async fn next_delivery(consumer: &mut Consumer) -> Delivery {
        step("delivery", consumer.next())
            .await
            .expect("consumer stream ended")
            .expect("delivery error")
    }

    /// Waits [`ABSENCE_TIMEOUT`] and fails if a delivery arrives meanwhile.
    pub async fn assert_nothing_more(consumer: &mut Consumer) {
        if let Ok(Some(delivery)) = tokio::time::timeout(ABSENCE_TIMEOUT, consumer.next()).await {
            panic!("unexpected delivery: {delivery:?}");
        }
    }

    pub async fn get(ch: &Channel, queue: &str, no_ack: bool) -> Option<BasicGetMessage> {
        step("basic.get", ch.basic_get(queue, BasicGetOptions { no_ack }))
            .await
            .expect("basic.get")
    }
}

pub mod shard_probe {
    //! Finds out which shard a connection landed on, without trusting the client library to
    //! expose server properties: the connection goes through a one-connection TCP relay that
    //! reads `ringmq_shard` from the server's connection.start.

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::oneshot;

    /// connection.start is small; anything this big is not what we expect.
    const START_FRAME_SIZE_MAX: usize = 64 * 1024;
    const FRAME_HEADER_SIZE: usize = 7;
    const SHARD_KEY: &[u8] = b"ringmq_shard";

    /// A lapin connection through a relay, and the shard the broker reported (None if it did
    /// not report one, e.g. an external RabbitMQ).
    pub async fn connect(port: u16) -> (lapin::Connection, Option<u32>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("relay bind");
        let relay_port = listener.local_addr().expect("relay addr").port();
        let (shard_tx, shard_rx) = oneshot::channel();
        tokio::spawn(relay(listener, port, shard_tx));
        let url = format!("amqp://guest:guest@127.0.0.1:{relay_port}/%2f");
        let connection = super::amqp::connect_url(&url).await;
        let shard = super::step("read shard from connection.start", shard_rx)
            .await
            .ok()
            .flatten();
        (connection, shard)
    }

    async fn relay(listener: TcpListener, upstream_port: u16, shard: oneshot::Sender<Option<u32>>) {
        let Ok((client, _)) = listener.accept().await else {
            return;
        };
        drop(listener);
        let Ok(server) = TcpStream::connect(("127.0.0.1", upstream_port)).await else {
            return;
        };
        let (mut client_read, mut client_write) = client.into_split();
        let (mut server_read, mut server_write) = server.into_split();
        let upward = tokio::spawn(async move {
            let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
            let _ = server_write.shutdown().await;
        });
        // The first bytes from the server are its protocol-header answer or connection.start.
        let mut first = Vec::new();
        let mut buf = [0u8; 4096];
        let mut reported = Some(shard);
        while let Ok(n) = server_read.read(&mut buf).await {
            if n == 0 {
                break;
            }
            let Some(chunk) = buf.get(..n) else { break };
            if client_write.write_all(chunk).await.is_err() {
                break;
            }
            if reported.is_some() {
                first.extend_from_slice(chunk);
                if let Some(found) = shard_from_start(&first) {
                    if let Some(tx) = reported.take() {
                        let _ = tx.send(found);
                    }
                } else if first.len() > START_FRAME_SIZE_MAX {
                    if let Some(tx) = reported.take() {
                        let _ = tx.send(None);
                    }
                }
            }
        }
        let _ = client_write.shutdown().await;
        upward.abort();
    }

    /// `None` while the frame is incomplete; `Some(None)` if complete but without the key.
    fn shard_from_start(bytes: &[u8]) -> Option<Option<u32>> {
        let size_bytes: [u8; 4] = bytes.get(3..7)?.try_into().ok()?;
        let size = u32::from_be_bytes(size_bytes) as usize;
        let payload = bytes.get(FRAME_HEADER_SIZE..FRAME_HEADER_SIZE + size)?;
        // class 10, method 10, version major, minor, then the server-properties table.
        let table_len: [u8; 4] = payload.get(6..10)?.try_into().ok()?;
        let table_len = u32::from_be_bytes(table_len) as usize;
        let Some(table) = payload.get(10..10 + table_len) else {
            return Some(None);
        };
        Some(find_shard(table))
    }

    fn find_shard(mut table: &[u8]) -> Option<u32> {
        while let Some((&key_len, rest)) = table.split_first() {
            let key = rest.get(..key_len as usize)?;
            let (&kind, rest) = rest.get(key_len as usize..)?.split_first()?;
            let value_len = field_value_len(kind, rest)?;
            let value = rest.get(..value_len)?;
            if key == SHARD_KEY {
                return shard_value(kind, value);
            }
            table = rest.get(value_len..)?;
        }
        None
    }

    fn shard_value(kind: u8, value: &[u8]) -> Option<u32> {
        match kind {
            b'S' => std::str::from_utf8(value.get(4..)?)
                .ok()?
                .trim()
                .parse()
                .ok(),
            b'I' => Some(u32::from_be_bytes(value.try_into().ok()?)),
            b'l' => u32::try_from(u64::from_be_bytes(value.try_into().ok()?)).ok(),
            _ => None,
        }
    }

    /// Encoded length of a field value of type `kind` (RabbitMQ's field types).
    fn field_value_len(kind: u8, rest: &[u8]) -> Option<usize> {
        let long_prefixed = || -> Option<usize> {
            let n: [u8; 4] = rest.get(..4)?.try_into().ok()?;
            Some(4 + u32::from_be_bytes(n) as usize)
        };
        match kind {
            b't' | b'b' | b'B' => Some(1),
            b's' | b'u' => Some(2),
            b'I' | b'i' | b'f' => Some(4),
            b'l' | b'L' | b'd' | b'T' => Some(8),
            b'D' => Some(5),
            b'V' => Some(0),
            b'S' | b'x' | b'A' | b'F' => long_prefixed(),
            _ => None,
        }
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn finds_shard_after_nested_table() {
            let mut table = Vec::new();
            table.push(12u8);
            table.extend_from_slice(b"capabilities");
            table.push(b'F');
            let inner = [&[4u8][..], b"flag", b"t", &[1]].concat();
            table.extend_from_slice(&(inner.len() as u32).to_be_bytes());
            table.extend_from_slice(&inner);
            table.push(12u8);
            table.extend_from_slice(b"ringmq_shard");
            table.push(b'S');
            table.extend_from_slice(&1u32.to_be_bytes());
            table.push(b'1');
            assert_eq!(super::find_shard(&table), Some(1));
        }
    }
}

/// Fixtures shared by the feature suites: connections on two shards, argument tables, headers.
pub mod fixtures {
    use super::{shard_probe, Broker};
    use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
    use lapin::Connection;

    /// Connections opened while looking for one on another shard.
    pub const SHARD_SEARCH_CONNECTIONS_MAX: usize = 64;

    /// A connection on the queue's shard and one on another shard (the same shard with 1 shard).
    pub struct Pair {
        pub home: Connection,
        pub away: Connection,
        _extra: Vec<Connection>,
    }

    pub async fn pair(broker: &Broker) -> Pair {
        let (home, home_shard) = shard_probe::connect(broker.port()).await;
        let mut extra = Vec::new();
        for _ in 0..SHARD_SEARCH_CONNECTIONS_MAX {
            let (away, away_shard) = shard_probe::connect(broker.port()).await;
            if broker.shards() == 1 || away_shard != home_shard || home_shard.is_none() {
                return Pair {
                    home,
                    away,
                    _extra: extra,
                };
            }
            extra.push(away);
        }
        panic!("no connection landed on a second shard in {SHARD_SEARCH_CONNECTIONS_MAX} attempts");
    }

    pub fn args(entries: &[(&str, AMQPValue)]) -> FieldTable {
        let mut table = FieldTable::default();
        for (key, value) in entries {
            table.insert(ShortString::from(*key), value.clone());
        }
        table
    }

    pub fn long(n: i64) -> AMQPValue {
        AMQPValue::LongLongInt(n)
    }

    pub fn text(s: &str) -> AMQPValue {
        AMQPValue::LongString(LongString::from(s))
    }

    pub fn header<'h>(headers: &'h FieldTable, key: &str) -> Option<&'h AMQPValue> {
        headers.inner().get(key)
    }

    pub fn header_text(headers: &FieldTable, key: &str) -> Option<String> {
        match header(headers, key)? {
            AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
            _ => None,
        }
    }
}
