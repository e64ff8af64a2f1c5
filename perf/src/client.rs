//! A blocking AMQP 0-9-1 client connection built on the broker's own codec.
//!
//! Efficiency is the point: writes are pipelined (callers encode many frames into `out`, then
//! one `flush`), reads are large (`fill` takes whatever the kernel has, up to
//! `READ_CHUNK_BYTES`) and every buffered frame is parsed before the next syscall.

use std::io::{ErrorKind, Read, Write};
use std::net::ToSocketAddrs;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use ringmq::protocol::{
    encode_method_frame, parse_frame, BasicProperties, ChannelOpen, ConnectionOpen,
    ConnectionStartOk, ConnectionTuneOk, FieldTable, FieldValue, Frame, Method, FRAME_MIN_SIZE,
    PROTOCOL_HEADER,
};

use crate::error::{PerfError, Result};
use crate::limits::{
    CLOSE_TIMEOUT, FRAME_MAX_BYTES, IDLE_BUFFER_BYTES, PLACEMENT_ATTEMPTS_MAX, READ_CHUNK_BYTES,
    RPC_TIMEOUT,
};
use crate::transport::Stream;
use crate::url::AmqpUrl;

/// Every connection of the tool uses this one channel.
pub const CHANNEL: u16 = 1;

pub struct Conn {
    stream: Stream,
    read_buf: BytesMut,
    scratch: Vec<u8>,
    /// Frames waiting for `flush`.
    pub out: BytesMut,
    pub frame_max: u32,
    /// The shard that serves this connection, when the broker says (ringmq's `ringmq_shard`
    /// server property); None for other brokers.
    pub shard: Option<u32>,
}

impl Conn {
    /// Connects, authenticates with PLAIN, opens the vhost and channel `CHANNEL`.
    pub fn open(url: &AmqpUrl) -> Result<Conn> {
        let address = url
            .address()
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| PerfError::Url(format!("{} resolves to nothing", url.address())))?;
        let stream = Stream::connect(url, &address)?;
        let mut conn = Conn {
            stream,
            read_buf: BytesMut::with_capacity(READ_CHUNK_BYTES),
            scratch: vec![0; READ_CHUNK_BYTES],
            out: BytesMut::with_capacity(READ_CHUNK_BYTES),
            frame_max: FRAME_MIN_SIZE,
            shard: None,
        };
        conn.handshake(url)?;
        Ok(conn)
    }

    fn handshake(&mut self, url: &AmqpUrl) -> Result<()> {
        self.stream.write_all(PROTOCOL_HEADER)?;
        let start = self.wait_method(0, "connection.start", |m| {
            matches!(m, Method::ConnectionStart(_))
        })?;
        if let Method::ConnectionStart(start) = start {
            self.shard = shard_of(&start.server_properties);
        }
        let mut response = Vec::with_capacity(url.user.len() + url.password.len() + 2);
        response.push(0);
        response.extend_from_slice(url.user.as_bytes());
        response.push(0);
        response.extend_from_slice(url.password.as_bytes());
        let mut client_properties = FieldTable::default();
        client_properties.insert(
            "product",
            FieldValue::LongString(Bytes::from_static(b"ringmq-perf")),
        );
        self.send(
            0,
            ConnectionStartOk {
                client_properties,
                mechanism: "PLAIN".into(),
                response: Bytes::from(response),
                locale: "en_US".into(),
            },
        );
        self.flush()?;
        let tune = match self.wait_method(0, "connection.tune", |m| {
            matches!(m, Method::ConnectionTune(_))
        })? {
            Method::ConnectionTune(tune) => tune,
            _ => return Err(PerfError::Unexpected("not connection.tune".into())),
        };
        let frame_max = match tune.frame_max {
            0 => FRAME_MAX_BYTES,
            offered => offered.min(FRAME_MAX_BYTES),
        };
        self.send(
            0,
            ConnectionTuneOk {
                channel_max: tune.channel_max,
                frame_max,
                heartbeat: 0,
            },
        );
        self.frame_max = frame_max;
        self.send(
            0,
            ConnectionOpen {
                virtual_host: url.vhost.clone(),
            },
        );
        self.rpc(0, "connection.open-ok", |m| {
            matches!(m, Method::ConnectionOpenOk(_))
        })?;
        self.send(CHANNEL, ChannelOpen {});
        self.rpc(CHANNEL, "channel.open-ok", |m| {
            matches!(m, Method::ChannelOpenOk(_))
        })?;
        Ok(())
    }

    /// Connects until the broker serves the connection on `shard` (the kernel's SO_REUSEPORT
    /// hash of the source port picks it, so retries land elsewhere), at most
    /// `PLACEMENT_ATTEMPTS_MAX` tries. `None`: the first connection, wherever it lands.
    pub fn open_on(url: &AmqpUrl, shard: Option<u32>) -> Result<Conn> {
        let Some(wanted) = shard else {
            return Conn::open(url);
        };
        for _ in 0..PLACEMENT_ATTEMPTS_MAX {
            let conn = Conn::open(url)?;
            match conn.shard {
                Some(found) if found == wanted => return Ok(conn),
                Some(_) => conn.close(),
                None => return Err(PerfError::Args("--place: broker reports no shard".into())),
            }
        }
        Err(PerfError::Unexpected(format!(
            "no connection landed on shard {wanted} in {PLACEMENT_ATTEMPTS_MAX} tries"
        )))
    }

    /// Gives back the large read and write buffers for small ones: a connection that will only
    /// sit idle (thousands of them, the idle scenario) then costs the tool kilobytes, not the
    /// `READ_CHUNK_BYTES` buffers a loaded one wants.
    pub fn shrink_buffers(&mut self) {
        // Bytes already read (none after the handshake, but a broker may send early) are kept.
        let mut read_buf = BytesMut::with_capacity(IDLE_BUFFER_BYTES.max(self.read_buf.len()));
        read_buf.extend_from_slice(&self.read_buf);
        self.read_buf = read_buf;
        self.scratch = vec![0; IDLE_BUFFER_BYTES];
        self.out = BytesMut::with_capacity(IDLE_BUFFER_BYTES);
    }

    /// Encodes a method into `out`; nothing is written until `flush`.
    pub fn send(&mut self, channel: u16, method: impl Into<Method>) {
        encode_method_frame(channel, &method.into(), &mut self.out);
    }

    pub fn flush(&mut self) -> Result<()> {
        self.flush_by(Instant::now() + RPC_TIMEOUT)
    }

    /// Writes all of `out`, giving up at `deadline` if the broker stops reading (flow control).
    pub fn flush_by(&mut self, deadline: Instant) -> Result<()> {
        let mut written = 0;
        while written < self.out.len() {
            match self.stream.write(&self.out[written..]) {
                Ok(0) => return Err(PerfError::Eof),
                Ok(n) => written += n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    if Instant::now() >= deadline {
                        return Err(PerfError::Timeout("the broker to read our writes"));
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.out.clear();
        // TLS keeps what the socket did not take yet; plain TCP has nothing buffered.
        loop {
            match self.stream.flush() {
                Ok(()) => return Ok(()),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    if Instant::now() >= deadline {
                        return Err(PerfError::Timeout("the broker to read our writes"));
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Flushes what is queued, then waits for the reply `expect` accepts.
    pub fn rpc(
        &mut self,
        channel: u16,
        what: &'static str,
        expect: impl Fn(&Method) -> bool,
    ) -> Result<Method> {
        self.flush()?;
        self.wait_method(channel, what, expect)
    }

    /// Reads until a method on `channel` that `expect` accepts; a close from the broker is an
    /// error carrying its reply code; anything else (e.g. a stray delivery) is skipped.
    pub fn wait_method(
        &mut self,
        channel: u16,
        what: &'static str,
        expect: impl Fn(&Method) -> bool,
    ) -> Result<Method> {
        self.wait_method_until(Instant::now() + RPC_TIMEOUT, channel, what, expect)
    }

    pub fn wait_method_until(
        &mut self,
        deadline: Instant,
        channel: u16,
        what: &'static str,
        expect: impl Fn(&Method) -> bool,
    ) -> Result<Method> {
        loop {
            while let Some(frame) = self.next_frame()? {
                if let Frame::Method {
                    channel: ch,
                    method,
                } = frame
                {
                    check_close(&method)?;
                    if ch == channel && expect(&method) {
                        return Ok(method);
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(PerfError::Timeout(what));
            }
            self.fill()?;
        }
    }

    /// Parses the next whole buffered frame, if any.
    pub fn next_frame(&mut self) -> Result<Option<Frame>> {
        // The negotiated frame_max bounds what the broker may send; 0 is never negotiated here.
        Ok(parse_frame(&mut self.read_buf, self.frame_max)?)
    }

    /// One read of whatever the kernel has. `Ok(false)` when the read timed out with nothing.
    pub fn fill(&mut self) -> Result<bool> {
        match self.stream.read(&mut self.scratch) {
            Ok(0) => Err(PerfError::Eof),
            Ok(n) => {
                self.read_buf.extend_from_slice(&self.scratch[..n]);
                Ok(true)
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Ok(false),
            Err(e) if e.kind() == ErrorKind::Interrupted => Ok(true),
            Err(e) => Err(e.into()),
        }
    }

    /// Best-effort polite close; errors are ignored because the run's result is already known.
    pub fn close(mut self) {
        self.send(
            0,
            ringmq::protocol::ConnectionClose {
                reply_code: 200,
                reply_text: "bye".into(),
                class_id: 0,
                method_id: 0,
            },
        );
        let deadline = Instant::now() + CLOSE_TIMEOUT;
        if self.flush_by(deadline).is_ok() {
            let _ = self.wait_method_until(deadline, 0, "connection.close-ok", |m| {
                matches!(m, Method::ConnectionCloseOk(_))
            });
        }
    }

    /// True when the socket has bytes to read within `timeout` (a zero timeout only looks).
    /// Frames already parsed out of `read_buf` are the caller's business; a partial frame there
    /// completes with bytes that make the socket readable. Nanosecond precision (ppoll), so an
    /// open-loop sender can wait for its next send time and for confirms at once.
    pub fn wait_readable(&mut self, timeout: std::time::Duration) -> Result<bool> {
        if self.stream.has_buffered() {
            return Ok(true);
        }
        let mut fd = libc::pollfd {
            fd: self.stream.raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let timeout = libc::timespec {
            tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
            tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
        };
        // SAFETY: one valid pollfd, a valid timespec, no signal mask.
        let rc = unsafe { libc::ppoll(&mut fd, 1, &timeout, std::ptr::null()) };
        if rc < 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() == ErrorKind::Interrupted {
                return Ok(false);
            }
            return Err(error.into());
        }
        // Hang-ups and errors count as readable: the read that follows reports them.
        Ok(rc > 0)
    }

    pub fn set_read_timeout(&mut self, timeout: std::time::Duration) -> Result<()> {
        Ok(self.stream.socket().set_read_timeout(Some(timeout))?)
    }
}

/// A connection.close or channel.close from the broker ends the run with its reason.
fn shard_of(properties: &FieldTable) -> Option<u32> {
    match properties.get("ringmq_shard")? {
        FieldValue::LongString(text) => std::str::from_utf8(text).ok()?.parse().ok(),
        _ => None,
    }
}

pub fn check_close(method: &Method) -> Result<()> {
    match method {
        Method::ConnectionClose(close) => Err(PerfError::Closed {
            scope: "connection",
            code: close.reply_code,
            text: close.reply_text.clone(),
        }),
        Method::ChannelClose(close) => Err(PerfError::Closed {
            scope: "channel",
            code: close.reply_code,
            text: close.reply_text.clone(),
        }),
        _ => Ok(()),
    }
}

/// Content properties for the tool's messages: delivery mode 2 when persistent.
pub fn properties(persistent: bool) -> BasicProperties {
    BasicProperties {
        delivery_mode: Some(if persistent { 2 } else { 1 }),
        ..BasicProperties::default()
    }
}
