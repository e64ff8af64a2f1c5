//! A black-box flood (issue 12, "Hostile input"): while a confirmed publisher runs open loop and
//! a consumer drains its queue, the broker is handed 5,000 connections that finish the
//! handshake and go idle, 1,000 that connect and say nothing, 100 that send random bytes, and
//! 100 that send a valid handshake one byte a second (slowloris). The publisher's confirm p99
//! stays within 3× its quiet value measured just before in the same test, no confirmed message
//! is lost, the silent and slow connections are closed by the handshake timeout, the random
//! ones at once, and the idle ones stay open.

use crate::common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::raw::Raw;
use common::{amqp, step, unique, Broker};
use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::BasicProperties;

const IDLE_CONNECTIONS: usize = 5_000;
const SILENT_CONNECTIONS: usize = 1_000;
const RANDOM_CONNECTIONS: usize = 100;
const SLOWLORIS_CONNECTIONS: usize = 100;
/// The broker's handshake timeout here: short enough to see the silent and slow connections
/// closed inside the flood window, long enough that a loaded machine finishes real handshakes.
const HANDSHAKE_TIMEOUT_MS: u64 = 5_000;
/// The confirmed publisher's open-loop rate and the two windows it is measured over.
const PUBLISH_RATE_PER_SECOND: u64 = 1_000;
const QUIET_WINDOW: Duration = Duration::from_secs(5);
const FLOOD_WINDOW: Duration = Duration::from_secs(12);
/// The flood's p99 bound, as a multiple of the quiet p99.
const P99_RATIO_MAX: f64 = 3.0;
/// The quiet p99 the ratio is taken against is at least this: below a millisecond, on a shared
/// 2-core machine, the ratio would measure the scheduler's noise rather than the flood.
const QUIET_P99_FLOOR_MICROS: f64 = 1_000.0;
/// Every connection the flood opens must be closed (or still open) within this after its
/// expected end.
const CLOSE_WAIT: Duration = Duration::from_secs(20);
/// The nice value of the threads that run the flood (`spawn_attacker`): the lowest priority.
const ATTACKER_NICE: libc::c_int = 19;

/// p99 of confirm latencies from the intended send time, in µs.
fn p99_micros(latencies: &mut [Duration]) -> f64 {
    assert!(!latencies.is_empty(), "no confirms measured");
    latencies.sort_unstable();
    let at = (latencies.len() * 99).div_ceil(100).saturating_sub(1);
    latencies[at].as_secs_f64() * 1e6
}

/// Publishes at `PUBLISH_RATE_PER_SECOND` for `window` on a confirming channel and returns the
/// confirm latency of each message from its intended send time, and the sequence numbers
/// confirmed.
async fn confirmed_window(
    channel: &lapin::Channel,
    queue: &str,
    first_sequence: u64,
    window: Duration,
) -> (Vec<Duration>, Vec<u64>) {
    let (sender, mut receiver) = tokio::sync::mpsc::channel(PUBLISH_RATE_PER_SECOND as usize);
    let collector = tokio::spawn(async move {
        let mut latencies = Vec::new();
        let mut confirmed = Vec::new();
        while let Some((sequence, intended, confirm)) = receiver.recv().await {
            let confirm: lapin::publisher_confirm::PublisherConfirm = confirm;
            let confirmation = tokio::time::timeout(common::STEP_TIMEOUT, confirm)
                .await
                .expect("a confirm within the step timeout")
                .expect("confirm");
            assert!(confirmation.is_ack(), "message {sequence} nacked");
            let intended: tokio::time::Instant = intended;
            latencies.push(intended.elapsed());
            confirmed.push(sequence);
        }
        (latencies, confirmed)
    });
    let interval = Duration::from_secs(1) / PUBLISH_RATE_PER_SECOND as u32;
    let start = tokio::time::Instant::now();
    let messages = (window.as_secs_f64() * PUBLISH_RATE_PER_SECOND as f64) as u64;
    for i in 0..messages {
        let intended = start + interval * i as u32;
        tokio::time::sleep_until(intended).await;
        let sequence = first_sequence + i;
        let confirm = step(
            "basic.publish",
            channel.basic_publish(
                "",
                queue,
                BasicPublishOptions::default(),
                &sequence.to_be_bytes(),
                BasicProperties::default(),
            ),
        )
        .await
        .expect("basic.publish");
        sender
            .send((sequence, intended, confirm))
            .await
            .expect("collector alive");
    }
    drop(sender);
    collector.await.expect("collector")
}

/// A socket to the broker with a read timeout.
fn connect(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(CLOSE_WAIT))
        .expect("read timeout");
    stream
}

/// Whether the broker ended the socket (EOF or reset) within the socket's read timeout.
fn ended_by_broker(stream: &mut TcpStream) -> bool {
    let mut buffer = [0u8; 1024];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// Small deterministic bytes (xorshift), so a failure can be replayed.
fn noise(seed: u64, length: usize) -> Vec<u8> {
    let mut state = seed | 1;
    (0..length)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// Connection.start-ok and what follows, as a slowloris sends it: a real handshake's bytes.
fn handshake_bytes() -> Vec<u8> {
    let mut bytes = b"AMQP\x00\x00\x09\x01".to_vec();
    let start_ok = common::raw::Args::default()
        .long_bytes(&common::raw::client_properties())
        .short_str("PLAIN")
        .long_bytes(b"\0guest\0guest")
        .short_str("en_US");
    bytes.extend(common::raw::frame_bytes(
        1,
        0,
        &common::raw::method_payload(10, 11, start_ok),
        0xCE,
    ));
    bytes
}

/// The flood needs some 6,300 descriptors on each side: the soft limit is raised to the hard one
/// (the broker inherits it).
fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write or read only the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// Runs `attack` on a thread of its own at the lowest CPU priority. The flood stands for peers on
/// other machines: here they share the broker's two cores, and at equal priority the kernel
/// would hand them half the CPU the confirmed publisher is measured on, which measures the
/// scheduler's fairness rather than the broker's isolation. The kernel's network work for
/// their sockets (softirq) still runs at its own priority, as it would on a real host.
fn spawn_attacker<T: Send + 'static>(
    attack: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    std::thread::spawn(move || {
        // SAFETY: gettid and setpriority have no memory-safety preconditions; PRIO_PROCESS with
        // a thread id changes only this thread (Linux's per-thread nice value).
        unsafe {
            let thread = libc::gettid() as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, thread, ATTACKER_NICE);
        }
        attack()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_idle_silent_random_and_slow_connections_leaves_confirms_fast() {
    raise_open_files_limit();
    let timeout = HANDSHAKE_TIMEOUT_MS.to_string();
    // RINGMQ_TEST_FLOOD_TRACE=FILE: the broker runs with --trace-latency (its scheduler-lag
    // probe logs each second how late the shard serves a wake-up, and which task queue ran)
    // and its log is copied to FILE at the end, to see where a slow confirm waited.
    let trace = std::env::var_os("RINGMQ_TEST_FLOOD_TRACE");
    let mut args = vec!["--handshake-timeout-ms", &timeout];
    if trace.is_some() {
        args.push("--trace-latency");
    }
    let broker = Broker::start_with_args(1, &args);
    if broker.is_external() {
        println!("skipped: the flood needs its own broker (handshake timeout flag)");
        return;
    }
    let port = broker.port();
    let queue = unique("flood");
    let connection = amqp::connect(&broker).await;
    let publisher = amqp::confirming_channel(&connection).await;
    amqp::declare_queue(&publisher, &queue, QueueDeclareOptions::default())
        .await
        .expect("declare");
    let consumer_connection = amqp::connect(&broker).await;
    let consumer_channel = amqp::channel(&consumer_connection).await;
    let mut consumer = step(
        "basic.consume",
        consumer_channel.basic_consume(
            &queue,
            "flood-consumer",
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .expect("consume");
    let consumed = tokio::spawn(async move {
        let mut sequences = Vec::new();
        while let Ok(Some(Ok(delivery))) =
            tokio::time::timeout(Duration::from_secs(5), consumer.next()).await
        {
            let bytes: [u8; 8] = delivery.data[..8].try_into().expect("a sequence number");
            sequences.push(u64::from_be_bytes(bytes));
        }
        sequences
    });

    let (mut quiet, mut confirmed) = confirmed_window(&publisher, &queue, 0, QUIET_WINDOW).await;
    let quiet_p99 = p99_micros(&mut quiet);

    // The flood, from threads of its own while the publisher keeps going.
    let flooding = Arc::new(AtomicBool::new(true));
    let idle = spawn_attacker(move || {
        (0..IDLE_CONNECTIONS)
            .map(|_| Raw::open_on(port))
            .collect::<Vec<Raw>>()
    });
    let silent = spawn_attacker(move || {
        (0..SILENT_CONNECTIONS)
            .map(|_| connect(port))
            .collect::<Vec<TcpStream>>()
    });
    let random = spawn_attacker(move || {
        (0..RANDOM_CONNECTIONS)
            .map(|i| {
                let mut stream = connect(port);
                let mut bytes = noise(i as u64, 4096);
                // Half pass the protocol header check and fail on frames instead.
                if i % 2 == 0 {
                    bytes.splice(0..0, b"AMQP\x00\x00\x09\x01".iter().copied());
                }
                let _ = stream.write_all(&bytes);
                ended_by_broker(&mut stream)
            })
            .filter(|ended| *ended)
            .count()
    });
    let slow_flag = flooding.clone();
    let slowloris = spawn_attacker(move || {
        let mut streams: Vec<TcpStream> =
            (0..SLOWLORIS_CONNECTIONS).map(|_| connect(port)).collect();
        let bytes = handshake_bytes();
        let mut closed = vec![false; streams.len()];
        for byte in bytes.iter().cycle().take(60) {
            if !slow_flag.load(Ordering::Relaxed) {
                break;
            }
            for (stream, closed) in streams.iter_mut().zip(closed.iter_mut()) {
                if !*closed && stream.write_all(std::slice::from_ref(byte)).is_err() {
                    *closed = true;
                }
            }
            std::thread::sleep(Duration::from_secs(1)); // the attack's own pace, not a wait
        }
        streams
    });

    let (mut flooded, confirmed_flooded) =
        confirmed_window(&publisher, &queue, confirmed.len() as u64, FLOOD_WINDOW).await;
    confirmed.extend(confirmed_flooded);
    flooding.store(false, Ordering::Relaxed);
    let flood_p99 = p99_micros(&mut flooded);

    let mut idle = tokio::task::spawn_blocking(move || idle.join().expect("idle"))
        .await
        .expect("idle thread");
    let silent = tokio::task::spawn_blocking(move || silent.join().expect("silent"))
        .await
        .expect("silent thread");
    let random_ended = tokio::task::spawn_blocking(move || random.join().expect("random"))
        .await
        .expect("random thread");
    let slow = tokio::task::spawn_blocking(move || slowloris.join().expect("slowloris"))
        .await
        .expect("slowloris thread");
    println!(
        "flood: confirm p99 quiet {quiet_p99:.0} µs, flooded {flood_p99:.0} µs ({:.2}×); \
         {} idle open, {random_ended}/{RANDOM_CONNECTIONS} random closed",
        flood_p99 / quiet_p99,
        idle.len()
    );

    let silent_ended = tokio::task::spawn_blocking(move || {
        silent
            .into_iter()
            .filter(|s| ended_by_broker(&mut s.try_clone().expect("clone")))
            .count()
    })
    .await
    .expect("silent check");
    let slow_ended = tokio::task::spawn_blocking(move || {
        slow.into_iter()
            .filter(|s| ended_by_broker(&mut s.try_clone().expect("clone")))
            .count()
    })
    .await
    .expect("slow check");
    println!(
        "flood: {silent_ended}/{SILENT_CONNECTIONS} silent and {slow_ended}/{SLOWLORIS_CONNECTIONS} \
         slowloris closed by the handshake timeout"
    );
    assert_eq!(
        silent_ended, SILENT_CONNECTIONS,
        "silent connections closed"
    );
    assert_eq!(
        slow_ended, SLOWLORIS_CONNECTIONS,
        "slowloris connections closed"
    );
    assert_eq!(
        random_ended, RANDOM_CONNECTIONS,
        "random connections closed"
    );
    // The idle ones are still served: one of them opens a channel.
    let last = idle.last_mut().expect("idle connections");
    last.open_channel(1);
    assert_eq!(idle.len(), IDLE_CONNECTIONS);

    let mut received = consumed.await.expect("consumer");
    received.sort_unstable();
    confirmed.sort_unstable();
    let lost: Vec<&u64> = confirmed
        .iter()
        .filter(|s| received.binary_search(s).is_err())
        .take(10)
        .collect();
    assert!(
        lost.is_empty(),
        "confirmed messages never delivered: {lost:?}"
    );
    // The 3× target. Measured with the attackers at nice 19 (`spawn_attacker`), on the shared
    // 2-core machine at load 3.7-5.6 (two engineers' builds and a soak beside it; quiet p99
    // 2.3-6.5 ms): 1.21, 1.36, 1.02, 0.80, 0.99× alone, and 1.06, 1.23, 1.34, 1.03, 2.15× in one
    // test binary with durability::, cluster:: or confirms::. At equal priority the same machine
    // gave 3.37× alone once: the attackers' half of the CPU, not the broker.
    assert!(
        flood_p99 <= quiet_p99.max(QUIET_P99_FLOOR_MICROS) * P99_RATIO_MAX,
        "confirm p99 under the flood {flood_p99:.0} µs > {P99_RATIO_MAX}× quiet {quiet_p99:.0} µs"
    );
    drop(idle);
    let _ = connection.close(200, "bye").await;
    let _ = consumer_connection.close(200, "bye").await;
    if let Some(file) = trace {
        std::fs::write(file, broker.log_text()).expect("write the broker's log");
    }
}
