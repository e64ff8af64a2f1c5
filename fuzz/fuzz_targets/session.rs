//! The whole session state machine (handshake, channels, content assembly, publish, consume,
//! settle, tx, confirms) fed an arbitrary byte stream over a real socket, against a broker
//! running in this process (so libFuzzer sees the broker's coverage and a panic on any shard
//! thread aborts the run as a crash). Each input is one connection: the bytes are written, the
//! write side is shut, and the broker must close the connection within a bound; every few
//! hundred inputs a well-behaved client checks the broker still serves.
#![no_main]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use ringmq::config::Config;

/// A broker that has read EOF closes the connection at once; this is the bound on "at once"
/// for a loaded 2-core machine. Past it the input is reported as a hang.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes read back per connection before giving up on it (deliveries of what the input published).
const READ_BACK_MAX_BYTES: usize = 16 * 1024 * 1024;
const HEALTH_CHECK_EVERY_INPUTS: u64 = 256;

fn broker() -> SocketAddr {
    static ADDRESS: OnceLock<SocketAddr> = OnceLock::new();
    *ADDRESS.get_or_init(|| {
        let port = free_port();
        let data_dir =
            std::env::temp_dir().join(format!("ringmq-fuzz-session-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data_dir);
        let args = [
            "ringmq".to_string(),
            format!("--port={port}"),
            "--listen=127.0.0.1".to_string(),
            "--shards=1".to_string(),
            "--management-port=0".to_string(),
            "--log-level=error".to_string(),
            format!("--data-dir={}", data_dir.display()),
        ];
        let config = Config::load(args).expect("broker configuration");
        let boot = ringmq::shard::boot::AccessBoot::from_config(
            &config,
            ringmq::management::apply::import_at_boot,
        )
        .expect("access boot");
        ringmq::shard::boot::configure(boot);
        let (ready_sender, ready) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let result = ringmq::runtime::run(&config, |addresses| {
                let _ = ready_sender.send(addresses.first().copied());
            });
            panic!("the broker stopped: {result:?}");
        });
        ready
            .recv_timeout(Duration::from_secs(60))
            .expect("broker ready")
            .expect("broker address")
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fuzz_target!(|data: &[u8]| {
    let address = broker();
    let mut stream = TcpStream::connect(address).expect("connect to the broker");
    stream
        .set_read_timeout(Some(CLOSE_TIMEOUT))
        .expect("read timeout");
    // The broker may close before everything is written: that is an answer, not a failure.
    let _ = stream.write_all(data);
    let _ = stream.shutdown(Shutdown::Write);
    read_until_closed(&mut stream);
    static INPUTS: AtomicU64 = AtomicU64::new(0);
    if INPUTS.fetch_add(1, Ordering::Relaxed) % HEALTH_CHECK_EVERY_INPUTS == 0 {
        assert_serves(address);
    }
});

fn read_until_closed(stream: &mut TcpStream) {
    let mut buf = [0u8; 64 * 1024];
    let mut total = 0;
    while total < READ_BACK_MAX_BYTES {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => total += n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!("the broker did not close a connection whose peer shut its write side within {CLOSE_TIMEOUT:?}")
            }
            Err(_) => return,
        }
    }
}

/// A fresh connection gets connection.start after the protocol header.
fn assert_serves(address: SocketAddr) {
    let mut stream = TcpStream::connect(address).expect("the broker accepts connections");
    stream
        .set_read_timeout(Some(CLOSE_TIMEOUT))
        .expect("read timeout");
    stream
        .write_all(b"AMQP\x00\x00\x09\x01")
        .expect("write protocol header");
    let mut frame_start = [0u8; 11];
    stream
        .read_exact(&mut frame_start)
        .expect("connection.start");
    assert_eq!(frame_start[0], 1, "a method frame");
    assert_eq!(&frame_start[7..11], &[0, 10, 0, 10], "connection.start");
}
