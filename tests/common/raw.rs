//! A tiny AMQP frame codec over a blocking socket, for tests that talk bytes no client
//! library would send (or withholds bytes one would). Black-box on purpose: it shares no code
//! with the crate's protocol module.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use super::Broker;

pub const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// A frame this big from the server means the decoder here is lost.
pub const FRAME_SIZE_MAX: usize = 1 << 20;
/// Frames read while waiting for one method, so a chatty server cannot loop a test forever.
pub const FRAMES_PER_WAIT_MAX: usize = 64;
pub const FRAME_END: u8 = 0xCE;
pub const FRAME_METHOD: u8 = 1;
pub const FRAME_HEARTBEAT: u8 = 8;
/// The frame_max the tests negotiate; oversize means bigger than this.
pub const FRAME_MAX: u32 = 131_072;

pub const ACCESS_REFUSED: u16 = 403;
pub const NOT_ALLOWED: u16 = 530;
pub const FRAME_ERROR: u16 = 501;
pub const CHANNEL_ERROR: u16 = 504;

pub struct Frame {
    pub kind: u8,
    pub channel: u16,
    pub payload: Vec<u8>,
}

pub struct Method {
    pub class: u16,
    pub method: u16,
    pub args: Vec<u8>,
}

/// Big-endian AMQP argument encoding.
#[derive(Default)]
pub struct Args(pub Vec<u8>);

impl Args {
    pub fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }
    pub fn u16(mut self, v: u16) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn short_str(mut self, s: &str) -> Self {
        self.0.push(u8::try_from(s.len()).expect("short string"));
        self.0.extend_from_slice(s.as_bytes());
        self
    }
    pub fn long_bytes(mut self, b: &[u8]) -> Self {
        self.0
            .extend_from_slice(&u32::try_from(b.len()).expect("long").to_be_bytes());
        self.0.extend_from_slice(b);
        self
    }
}

/// Client properties announcing authentication_failure_close, as real clients do.
pub fn client_properties() -> Vec<u8> {
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

pub fn method_payload(class: u16, method: u16, args: Args) -> Vec<u8> {
    let mut payload = Args::default().u16(class).u16(method).0;
    payload.extend_from_slice(&args.0);
    payload
}

pub fn frame_bytes(kind: u8, channel: u16, payload: &[u8], end: u8) -> Vec<u8> {
    let mut bytes = vec![kind];
    bytes.extend_from_slice(&channel.to_be_bytes());
    bytes.extend_from_slice(&u32::try_from(payload.len()).expect("size").to_be_bytes());
    bytes.extend_from_slice(payload);
    bytes.push(end);
    bytes
}

pub fn take_u16(args: &[u8], at: usize) -> u16 {
    u16::from_be_bytes(args[at..at + 2].try_into().expect("2 bytes"))
}

pub fn take_u32(args: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(args[at..at + 4].try_into().expect("4 bytes"))
}

pub struct Raw {
    pub stream: TcpStream,
}

/// How a connection.close from the server looked.
#[derive(Debug)]
pub struct Close {
    pub code: u16,
    pub text: String,
}

impl Raw {
    pub fn connect(broker: &Broker) -> Raw {
        Raw::connect_port(broker.port())
    }

    pub fn connect_port(port: u16) -> Raw {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(READ_TIMEOUT))
            .expect("read timeout");
        stream.set_nodelay(true).expect("nodelay");
        Raw { stream }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    pub fn send_method(&mut self, channel: u16, class: u16, method: u16, args: Args) {
        let payload = method_payload(class, method, args);
        self.send(&frame_bytes(FRAME_METHOD, channel, &payload, FRAME_END));
    }

    pub fn read_exact(&mut self, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        self.stream.read_exact(&mut buf).expect("read from server");
        buf
    }

    pub fn read_frame(&mut self) -> Frame {
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
    pub fn read_method(&mut self) -> (u16, Method) {
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

    pub fn expect_method(&mut self, class: u16, method: u16) -> Method {
        let (_, m) = self.read_method();
        assert_eq!((m.class, m.method), (class, method), "unexpected method");
        m
    }

    /// Header, start/start-ok, tune/tune-ok; stops before connection.open.
    pub fn authenticate(&mut self, user: &str, password: &str) {
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

    pub fn tune(&mut self) {
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
    pub fn tune_with_heartbeat(&mut self, heartbeat: u16) {
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

    pub fn open_vhost(&mut self, vhost: &str) {
        self.send_method(
            0,
            10,
            40,
            Args::default().short_str(vhost).short_str("").u8(0),
        );
    }

    /// A fully open connection on vhost `/` as guest.
    pub fn open(broker: &Broker) -> Raw {
        Raw::open_on(broker.port())
    }

    /// [`Raw::open`] by port (from threads that do not hold the broker).
    pub fn open_on(port: u16) -> Raw {
        let mut raw = Raw::connect_port(port);
        raw.authenticate("guest", "guest");
        raw.tune();
        raw.open_vhost("/");
        raw.expect_method(10, 41);
        raw
    }

    pub fn open_channel(&mut self, channel: u16) {
        self.send_method(channel, 20, 10, Args::default().short_str(""));
        let (on, m) = self.read_method();
        assert_eq!(
            (on, m.class, m.method),
            (channel, 20, 11),
            "channel.open-ok"
        );
    }

    pub fn declare_queue(&mut self, channel: u16, name: &str) {
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
    pub fn expect_connection_close(&mut self) -> Close {
        let close = self.expect_method(10, 50);
        let code = take_u16(&close.args, 0);
        let text_len = close.args[2] as usize;
        let text = String::from_utf8_lossy(&close.args[3..3 + text_len]).into_owned();
        self.send_method(0, 10, 51, Args::default());
        self.expect_eof();
        Close { code, text }
    }

    pub fn expect_eof(&mut self) {
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

/// What the server offered in connection.tune.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tune {
    pub channel_max: u16,
    pub frame_max: u32,
    pub heartbeat: u16,
}

impl Raw {
    /// Reads connection.tune.
    pub fn read_tune(&mut self) -> Tune {
        let tune = self.expect_method(10, 30);
        Tune {
            channel_max: take_u16(&tune.args, 0),
            frame_max: take_u32(&tune.args, 2),
            heartbeat: take_u16(&tune.args, 6),
        }
    }

    /// Sends connection.tune-ok with exactly these values.
    pub fn send_tune_ok(&mut self, tune: Tune) {
        let args = Args::default()
            .u16(tune.channel_max)
            .u32(tune.frame_max)
            .u16(tune.heartbeat);
        self.send_method(0, 10, 31, args);
    }

    /// Waits (up to `limit`) for the server to end the socket; returns how long it took.
    pub fn time_until_eof(&mut self, limit: std::time::Duration) -> std::time::Duration {
        let started = std::time::Instant::now();
        self.stream
            .set_read_timeout(Some(limit))
            .expect("read timeout");
        self.expect_eof();
        started.elapsed()
    }
}
