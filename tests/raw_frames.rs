//! Raw-socket tests: what ringmq does with bytes no well-behaved client sends. Black-box on
//! purpose: a tiny frame codec lives here instead of using the crate's protocol module.
//! After every bad connection, a well-behaved one must still work.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::Broker;

const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// A frame this big from the server means the decoder here is lost.
const FRAME_SIZE_MAX: usize = 1 << 20;
/// Frames read while waiting for one method, so a chatty server cannot loop a test forever.
const FRAMES_PER_WAIT_MAX: usize = 64;
const FRAME_END: u8 = 0xCE;
const FRAME_METHOD: u8 = 1;
const FRAME_HEARTBEAT: u8 = 8;
/// The frame_max the tests negotiate; oversize means bigger than this.
const FRAME_MAX: u32 = 131_072;

const ACCESS_REFUSED: u16 = 403;
const NOT_ALLOWED: u16 = 530;
const FRAME_ERROR: u16 = 501;
const CHANNEL_ERROR: u16 = 504;

per_shard_count!(
    wrong_protocol_header_is_answered_and_closed,
    http_request_is_answered_and_closed,
    unknown_frame_type_is_501,
    missing_frame_end_is_501,
    oversize_frame_is_501,
    bad_credentials_are_403,
    unknown_vhost_is_530,
    method_on_unopened_channel_is_504,
    good_connection_survives_all_bad_ones,
    server_sends_heartbeats_when_idle,
    silent_client_is_disconnected_after_missed_heartbeats,
);

struct Frame {
    kind: u8,
    channel: u16,
    payload: Vec<u8>,
}

struct Method {
    class: u16,
    method: u16,
    args: Vec<u8>,
}

/// Big-endian AMQP argument encoding.
#[derive(Default)]
struct Args(Vec<u8>);

impl Args {
    fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }
    fn u16(mut self, v: u16) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn short_str(mut self, s: &str) -> Self {
        self.0.push(u8::try_from(s.len()).expect("short string"));
        self.0.extend_from_slice(s.as_bytes());
        self
    }
    fn long_bytes(mut self, b: &[u8]) -> Self {
        self.0
            .extend_from_slice(&u32::try_from(b.len()).expect("long").to_be_bytes());
        self.0.extend_from_slice(b);
        self
    }
}

/// Client properties announcing authentication_failure_close, as real clients do.
fn client_properties() -> Vec<u8> {
    let capabilities = Args::default()
        .short_str("authentication_failure_close")
        .u8(b't')
        .u8(1);
    Args::default()
        .short_str("capabilities")
        .u8(b'F')
        .long_bytes(&capabilities.0)
        .short_str("product")
        .u8(b'S')
        .long_bytes(b"ringmq raw_frames test")
        .0
}

fn method_payload(class: u16, method: u16, args: Args) -> Vec<u8> {
    let mut payload = Args::default().u16(class).u16(method).0;
    payload.extend_from_slice(&args.0);
    payload
}

fn frame_bytes(kind: u8, channel: u16, payload: &[u8], end: u8) -> Vec<u8> {
    let mut bytes = vec![kind];
    bytes.extend_from_slice(&channel.to_be_bytes());
    bytes.extend_from_slice(&u32::try_from(payload.len()).expect("size").to_be_bytes());
    bytes.extend_from_slice(payload);
    bytes.push(end);
    bytes
}

fn take_u16(args: &[u8], at: usize) -> u16 {
    u16::from_be_bytes(args[at..at + 2].try_into().expect("2 bytes"))
}

fn take_u32(args: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(args[at..at + 4].try_into().expect("4 bytes"))
}

struct Raw {
    stream: TcpStream,
}

/// How a connection.close from the server looked.
#[derive(Debug)]
struct Close {
    code: u16,
    text: String,
}

impl Raw {
    fn connect(broker: &Broker) -> Raw {
        let stream = TcpStream::connect(("127.0.0.1", broker.port())).expect("connect");
        stream
            .set_read_timeout(Some(READ_TIMEOUT))
            .expect("read timeout");
        stream.set_nodelay(true).expect("nodelay");
        Raw { stream }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    fn send_method(&mut self, channel: u16, class: u16, method: u16, args: Args) {
        let payload = method_payload(class, method, args);
        self.send(&frame_bytes(FRAME_METHOD, channel, &payload, FRAME_END));
    }

    fn read_exact(&mut self, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        self.stream.read_exact(&mut buf).expect("read from server");
        buf
    }

    fn read_frame(&mut self) -> Frame {
        let header = self.read_exact(7);
        let size = take_u32(&header, 3) as usize;
        assert!(size <= FRAME_SIZE_MAX, "server frame of {size} bytes");
        let payload = self.read_exact(size);
        let end = self.read_exact(1);
        assert_eq!(end, [FRAME_END], "server frame without frame-end");
        Frame {
            kind: header[0],
            channel: take_u16(&header, 1),
            payload,
        }
    }

    /// The next method frame, skipping heartbeats.
    fn read_method(&mut self) -> (u16, Method) {
        for _ in 0..FRAMES_PER_WAIT_MAX {
            let frame = self.read_frame();
            if frame.kind == FRAME_HEARTBEAT {
                continue;
            }
            assert_eq!(frame.kind, FRAME_METHOD, "expected a method frame");
            let method = Method {
                class: take_u16(&frame.payload, 0),
                method: take_u16(&frame.payload, 2),
                args: frame.payload[4..].to_vec(),
            };
            return (frame.channel, method);
        }
        panic!("no method frame in {FRAMES_PER_WAIT_MAX} frames");
    }

    fn expect_method(&mut self, class: u16, method: u16) -> Method {
        let (_, m) = self.read_method();
        assert_eq!((m.class, m.method), (class, method), "unexpected method");
        m
    }

    /// Header, start/start-ok, tune/tune-ok; stops before connection.open.
    fn authenticate(&mut self, user: &str, password: &str) {
        self.send(PROTOCOL_HEADER);
        let start = self.expect_method(10, 10);
        assert_eq!(&start.args[..2], &[0, 9], "version 0-9");
        let response = format!("\0{user}\0{password}");
        let start_ok = Args::default()
            .long_bytes(&client_properties())
            .short_str("PLAIN")
            .long_bytes(response.as_bytes())
            .short_str("en_US");
        self.send_method(0, 10, 11, start_ok);
    }

    fn tune(&mut self) {
        let tune = self.expect_method(10, 30);
        let server_frame_max = take_u32(&tune.args, 2);
        let frame_max = if server_frame_max == 0 {
            FRAME_MAX
        } else {
            server_frame_max.min(FRAME_MAX)
        };
        let channel_max = take_u16(&tune.args, 0);
        // Heartbeat 0: the tests must not depend on timing.
        self.send_method(
            0,
            10,
            31,
            Args::default().u16(channel_max).u32(frame_max).u16(0),
        );
    }

    /// tune-ok asking for `heartbeat` seconds.
    fn tune_with_heartbeat(&mut self, heartbeat: u16) {
        let tune = self.expect_method(10, 30);
        let channel_max = take_u16(&tune.args, 0);
        self.send_method(
            0,
            10,
            31,
            Args::default()
                .u16(channel_max)
                .u32(FRAME_MAX)
                .u16(heartbeat),
        );
    }

    fn open_vhost(&mut self, vhost: &str) {
        self.send_method(
            0,
            10,
            40,
            Args::default().short_str(vhost).short_str("").u8(0),
        );
    }

    /// A fully open connection on vhost `/` as guest.
    fn open(broker: &Broker) -> Raw {
        let mut raw = Raw::connect(broker);
        raw.authenticate("guest", "guest");
        raw.tune();
        raw.open_vhost("/");
        raw.expect_method(10, 41);
        raw
    }

    fn open_channel(&mut self, channel: u16) {
        self.send_method(channel, 20, 10, Args::default().short_str(""));
        let (on, m) = self.read_method();
        assert_eq!(
            (on, m.class, m.method),
            (channel, 20, 11),
            "channel.open-ok"
        );
    }

    fn declare_queue(&mut self, channel: u16, name: &str) {
        let args = Args::default()
            .u16(0)
            .short_str(name)
            .u8(0b0000_1000) // auto-delete
            .u32(0);
        self.send_method(channel, 50, 10, args);
        let (on, m) = self.read_method();
        assert_eq!(
            (on, m.class, m.method),
            (channel, 50, 11),
            "queue.declare-ok"
        );
    }

    /// Waits for connection.close, answers close-ok, and checks the server then hangs up.
    fn expect_connection_close(&mut self) -> Close {
        let close = self.expect_method(10, 50);
        let code = take_u16(&close.args, 0);
        let text_len = close.args[2] as usize;
        let text = String::from_utf8_lossy(&close.args[3..3 + text_len]).into_owned();
        self.send_method(0, 10, 51, Args::default());
        self.expect_eof();
        Close { code, text }
    }

    fn expect_eof(&mut self) {
        let mut buf = [0u8; 64];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return,
                // Heartbeats or stray frames after close are tolerated; the socket must end.
                Ok(_) => continue,
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return,
                Err(e) => panic!("expected the server to close the socket: {e}"),
            }
        }
    }
}

fn assert_still_serves(broker: &Broker) {
    let mut good = Raw::open(broker);
    good.open_channel(1);
    good.declare_queue(1, &common::unique("still-ok"));
}

fn expect_header_answer(broker: &Broker, sent: &[u8]) {
    let mut raw = Raw::connect(broker);
    raw.send(sent);
    let answer = raw.read_exact(8);
    assert_eq!(
        answer, PROTOCOL_HEADER,
        "server must answer with its own header"
    );
    raw.expect_eof();
    assert_still_serves(broker);
}

async fn wrong_protocol_header_is_answered_and_closed(broker: &Broker) {
    expect_header_answer(broker, b"AMQP\x01\x01\x00\x0a");
    expect_header_answer(broker, b"AMQP\x00\x00\x08\x00");
}

async fn http_request_is_answered_and_closed(broker: &Broker) {
    expect_header_answer(broker, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
}

async fn unknown_frame_type_is_501(broker: &Broker) {
    let mut raw = Raw::open(broker);
    raw.send(&frame_bytes(9, 0, b"junk", FRAME_END));
    let close = raw.expect_connection_close();
    assert_eq!(close.code, FRAME_ERROR, "{close:?}");
    assert_still_serves(broker);
}

async fn missing_frame_end_is_501(broker: &Broker) {
    let mut raw = Raw::open(broker);
    let payload = method_payload(20, 10, Args::default().short_str(""));
    raw.send(&frame_bytes(FRAME_METHOD, 1, &payload, 0x00));
    let close = raw.expect_connection_close();
    assert_eq!(close.code, FRAME_ERROR, "{close:?}");
    assert_still_serves(broker);
}

async fn oversize_frame_is_501(broker: &Broker) {
    let mut raw = Raw::open(broker);
    raw.open_channel(1);
    // A body-less method padded past frame_max: only the size matters.
    let mut payload = method_payload(50, 10, Args::default().u16(0).short_str("big").u8(0).u32(0));
    payload.resize(FRAME_MAX as usize + 1024, 0);
    raw.send(&frame_bytes(FRAME_METHOD, 1, &payload, FRAME_END));
    let close = raw.expect_connection_close();
    assert_eq!(close.code, FRAME_ERROR, "{close:?}");
    assert_still_serves(broker);
}

async fn bad_credentials_are_403(broker: &Broker) {
    let mut raw = Raw::connect(broker);
    raw.authenticate("guest", "not-the-password");
    let close = raw.expect_connection_close();
    assert_eq!(close.code, ACCESS_REFUSED, "{close:?}");
    assert!(close.text.starts_with("ACCESS_REFUSED"), "{close:?}");
    let mut raw = Raw::connect(broker);
    raw.authenticate("nobody", "guest");
    assert_eq!(raw.expect_connection_close().code, ACCESS_REFUSED);
    assert_still_serves(broker);
}

async fn unknown_vhost_is_530(broker: &Broker) {
    let mut raw = Raw::connect(broker);
    raw.authenticate("guest", "guest");
    raw.tune();
    raw.open_vhost(&common::unique("no-such-vhost"));
    let close = raw.expect_connection_close();
    assert_eq!(close.code, NOT_ALLOWED, "{close:?}");
    assert_still_serves(broker);
}

async fn method_on_unopened_channel_is_504(broker: &Broker) {
    let mut raw = Raw::open(broker);
    // queue.declare on channel 7, never opened.
    let args = Args::default().u16(0).short_str("q").u8(0).u32(0);
    raw.send_method(7, 50, 10, args);
    let close = raw.expect_connection_close();
    assert_eq!(close.code, CHANNEL_ERROR, "{close:?}");
    assert_still_serves(broker);
}

/// One connection held open across every kind of bad neighbour.
async fn good_connection_survives_all_bad_ones(broker: &Broker) {
    let mut good = Raw::open(broker);
    good.open_channel(1);
    let bad_inputs: [&[u8]; 3] = [
        b"AMQP\x01\x01\x00\x0a",
        b"\x00\x00\x00\x00\x00\x00\x00\x00",
        &[0xFF; 64],
    ];
    for (i, bad) in bad_inputs.iter().enumerate() {
        let mut raw = Raw::connect(broker);
        raw.send(bad);
        // The server answers or hangs up; either way it must not disturb `good`.
        let mut sink = Vec::new();
        let _ = raw.stream.read_to_end(&mut sink);
        good.declare_queue(1, &format!("{}-{i}", common::unique("good")));
    }
    let mut raw = Raw::open(broker);
    raw.send(&frame_bytes(9, 0, b"junk", FRAME_END));
    raw.expect_connection_close();
    good.declare_queue(1, &common::unique("good-last"));
}

/// With heartbeat=1 negotiated and nothing else to say, the server sends heartbeat frames.
async fn server_sends_heartbeats_when_idle(broker: &Broker) {
    let mut raw = Raw::connect(broker);
    raw.authenticate("guest", "guest");
    raw.tune_with_heartbeat(1);
    raw.open_vhost("/");
    raw.expect_method(10, 41);
    // The read timeout (5 s) bounds the wait; the server beats every half interval.
    let mut heartbeats = 0;
    while heartbeats < 2 {
        let frame = raw.read_frame();
        assert_eq!(
            frame.kind, FRAME_HEARTBEAT,
            "only heartbeats on an idle connection"
        );
        assert_eq!(frame.channel, 0);
        assert!(frame.payload.is_empty());
        heartbeats += 1;
        // Answer, so the server keeps the connection.
        raw.send(&frame_bytes(FRAME_HEARTBEAT, 0, &[], FRAME_END));
    }
}

/// A client that negotiated heartbeat=1 and then goes silent is disconnected (two missed
/// intervals), and other connections are unaffected.
async fn silent_client_is_disconnected_after_missed_heartbeats(broker: &Broker) {
    let mut raw = Raw::connect(broker);
    raw.authenticate("guest", "guest");
    raw.tune_with_heartbeat(1);
    raw.open_vhost("/");
    raw.expect_method(10, 41);
    // We never send anything again; the server must hang up within the read timeout.
    raw.expect_eof();
    assert_still_serves(broker);
}
