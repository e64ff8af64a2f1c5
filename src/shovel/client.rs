//! The shovel's AMQP 0-9-1 client, on the project's own codec: one TCP connection to a broker
//! (any: RabbitMQ or ringmq, this one included), the handshake (PLAIN, heartbeats off, one
//! channel), then a reader task that turns frames into [`Event`]s (a delivery whole: method,
//! header and body together) and a write half the worker writes method and content frames to.
//!
//! Contract of the event channel: both connections' readers of one attempt send into the
//! worker's one receiver, bounded (`worker::event_capacity`) above what the prefetch lets in
//! flight (deliveries from the source, confirms from the destination) plus replies; when it is
//! full (only with `no-ack`, which no prefetch limits) a reader stops reading its socket until
//! the worker catches up. A reader ends at end of stream or at its first malformed frame, after
//! sending `Closed`; dropping the [`Connection`] cancels it.

use std::net::SocketAddr;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use futures_lite::io::{split, AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use glommio::channels::local_channel::LocalSender;
use glommio::net::TcpStream;

use super::uri::AmqpUri;
use crate::limits::{
    SHOVEL_CONNECT_TIMEOUT, SHOVEL_FRAME_BYTES_MAX, SHOVEL_MESSAGE_BYTES_MAX,
    SHOVEL_READ_BUFFER_BYTES,
};
use crate::protocol::{
    encode_body_frames, encode_header_frame_raw, encode_method_frame, parse_frame, BasicDeliver,
    BasicPublish, ChannelOpen, ConnectionOpen, ConnectionStartOk, ConnectionTuneOk, FieldTable,
    FieldValue, Frame, Method, CONTENT_CLASS_ID, FRAME_MIN_SIZE, PROTOCOL_HEADER,
};

/// The one channel the shovel opens on each connection.
pub const CHANNEL: u16 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Source,
    Destination,
}

impl Side {
    pub fn name(self) -> &'static str {
        match self {
            Side::Source => "source",
            Side::Destination => "destination",
        }
    }
}

/// A delivery from the source, whole.
pub struct Delivery {
    pub deliver: BasicDeliver,
    pub raw_properties: Bytes,
    pub body: Bytes,
}

pub enum Event {
    Method(Side, Method),
    Delivery(Delivery),
    /// The connection ended: end of stream, a read error or a malformed frame.
    Closed(Side, String),
}

pub struct Connection {
    side: Side,
    writer: WriteHalf<TcpStream>,
    frame_max: u32,
    out: BytesMut,
    /// Dropping it cancels the reader.
    _reader: glommio::Task<()>,
}

impl Connection {
    /// Connects and opens channel 1 within `SHOVEL_CONNECT_TIMEOUT`. `local` is this broker's
    /// own AMQP address, for a URI without a host.
    pub async fn open(
        uri: &AmqpUri,
        local: Option<SocketAddr>,
        (side, shovel): (Side, &str),
        events: Rc<LocalSender<Event>>,
    ) -> Result<Connection, String> {
        let attempt = async {
            let connected = match connect(uri, local).await {
                Ok(stream) => handshake(stream, uri, (side, shovel), events).await,
                Err(reason) => Err(format!("{}: {reason}", side.name())),
            };
            Ok(connected)
        };
        match glommio::timer::timeout(SHOVEL_CONNECT_TIMEOUT, attempt).await {
            Ok(connected) => connected,
            Err(_) => Err(format!(
                "{}: no connection within {SHOVEL_CONNECT_TIMEOUT:?}",
                side.name()
            )),
        }
    }

    /// Queues a method on channel 1 (sent by the next `flush`).
    pub fn method(&mut self, method: Method) {
        encode_method_frame(CHANNEL, &method, &mut self.out);
    }

    /// Queues a connection-class method (channel 0).
    pub fn method_on_zero(&mut self, method: Method) {
        encode_method_frame(0, &method, &mut self.out);
    }

    pub fn publish(&mut self, publish: BasicPublish, raw_properties: &[u8], body: &[u8]) {
        encode_method_frame(CHANNEL, &Method::BasicPublish(publish), &mut self.out);
        let size = body.len() as u64;
        encode_header_frame_raw(
            CHANNEL,
            CONTENT_CLASS_ID,
            size,
            raw_properties,
            &mut self.out,
        );
        encode_body_frames(CHANNEL, body, self.frame_max, &mut self.out);
    }

    /// Bytes queued by `method` and `publish` that the next `flush` writes.
    pub fn unwritten_bytes(&self) -> usize {
        self.out.len()
    }

    pub async fn flush(&mut self) -> Result<(), String> {
        if self.out.is_empty() {
            return Ok(());
        }
        let result = self.writer.write_all(&self.out).await;
        self.out.clear();
        result.map_err(|e| format!("{}: write failed: {e}", self.side.name()))
    }
}

async fn connect(uri: &AmqpUri, local: Option<SocketAddr>) -> Result<TcpStream, String> {
    let stream = match (&uri.host, local) {
        (Some(host), _) => TcpStream::connect((host.as_str(), uri.port)).await,
        (None, Some(address)) => TcpStream::connect(address).await,
        (None, None) => return Err("no local AMQP listener for amqp://".to_string()),
    };
    let stream = stream.map_err(|e| format!("cannot connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Reads one method frame (heartbeats skipped) during the handshake.
async fn read_method(
    reader: &mut ReadHalf<TcpStream>,
    buf: &mut BytesMut,
    frame_max: u32,
) -> Result<Method, String> {
    loop {
        match parse_frame(buf, frame_max) {
            Ok(Some(Frame::Method { method, .. })) => return Ok(method),
            Ok(Some(Frame::Heartbeat { .. })) => continue,
            Ok(Some(_)) => return Err("unexpected content during the handshake".to_string()),
            Ok(None) => {}
            Err(error) => return Err(format!("malformed frame: {error:?}")),
        }
        read_more(reader, buf).await?;
    }
}

async fn read_more(reader: &mut ReadHalf<TcpStream>, buf: &mut BytesMut) -> Result<(), String> {
    let start = buf.len();
    buf.resize(start + SHOVEL_READ_BUFFER_BYTES, 0);
    match reader.read(&mut buf[start..]).await {
        Ok(0) => {
            buf.truncate(start);
            Err("connection closed by the peer".to_string())
        }
        Ok(n) => {
            buf.truncate(start + n);
            Ok(())
        }
        Err(e) => {
            buf.truncate(start);
            Err(format!("read failed: {e}"))
        }
    }
}

async fn handshake(
    stream: TcpStream,
    uri: &AmqpUri,
    (side, shovel): (Side, &str),
    events: Rc<LocalSender<Event>>,
) -> Result<Connection, String> {
    let named = |e: String| format!("{}: {e}", side.name());
    let (mut reader, mut writer) = split(stream);
    let mut buf = BytesMut::with_capacity(SHOVEL_READ_BUFFER_BYTES);
    writer
        .write_all(PROTOCOL_HEADER)
        .await
        .map_err(|e| named(e.to_string()))?;
    let Method::ConnectionStart(_) = read_method(&mut reader, &mut buf, FRAME_MIN_SIZE)
        .await
        .map_err(named)?
    else {
        return Err(named("expected connection.start".to_string()));
    };
    let mut out = BytesMut::new();
    let response = format!("\0{}\0{}", uri.user, uri.password);
    let start_ok = ConnectionStartOk {
        client_properties: client_properties(shovel),
        mechanism: "PLAIN".to_string(),
        response: Bytes::from(response.into_bytes()),
        locale: "en_US".to_string(),
    };
    encode_method_frame(0, &Method::ConnectionStartOk(start_ok), &mut out);
    writer
        .write_all(&out)
        .await
        .map_err(|e| named(e.to_string()))?;
    out.clear();
    let tune = match read_method(&mut reader, &mut buf, FRAME_MIN_SIZE)
        .await
        .map_err(named)?
    {
        Method::ConnectionTune(tune) => tune,
        Method::ConnectionClose(close) => {
            return Err(named(format!(
                "refused: {} {}",
                close.reply_code, close.reply_text
            )))
        }
        _ => return Err(named("expected connection.tune".to_string())),
    };
    let frame_max = match tune.frame_max {
        0 => SHOVEL_FRAME_BYTES_MAX,
        n => n.min(SHOVEL_FRAME_BYTES_MAX),
    }
    .max(FRAME_MIN_SIZE);
    let tune_ok = ConnectionTuneOk {
        channel_max: 1,
        frame_max,
        heartbeat: 0,
    };
    encode_method_frame(0, &Method::ConnectionTuneOk(tune_ok), &mut out);
    let open = ConnectionOpen {
        virtual_host: uri.vhost.clone(),
    };
    encode_method_frame(0, &Method::ConnectionOpen(open), &mut out);
    writer
        .write_all(&out)
        .await
        .map_err(|e| named(e.to_string()))?;
    out.clear();
    match read_method(&mut reader, &mut buf, frame_max)
        .await
        .map_err(named)?
    {
        Method::ConnectionOpenOk(_) => {}
        Method::ConnectionClose(close) => {
            return Err(named(format!(
                "refused: {} {}",
                close.reply_code, close.reply_text
            )))
        }
        _ => return Err(named("expected connection.open-ok".to_string())),
    }
    encode_method_frame(CHANNEL, &Method::ChannelOpen(ChannelOpen {}), &mut out);
    let reader_task = glommio::spawn_local(read_loop(reader, buf, frame_max, side, events));
    let mut connection = Connection {
        side,
        writer,
        frame_max,
        out,
        _reader: reader_task,
    };
    connection.flush().await?;
    Ok(connection)
}

/// As RabbitMQ's shovel: its capabilities, and `connection_name` "Shovel NAME".
fn client_properties(shovel: &str) -> FieldTable {
    let mut capabilities = FieldTable::default();
    for capability in ["publisher_confirms", "consumer_cancel_notify", "basic.nack"] {
        capabilities.insert(capability, FieldValue::Boolean(true));
    }
    let mut properties = FieldTable::default();
    let text = |t: &str| FieldValue::LongString(Bytes::copy_from_slice(t.as_bytes()));
    properties.insert("product", text("ringmq shovel"));
    properties.insert("version", text(env!("CARGO_PKG_VERSION")));
    properties.insert("connection_name", text(&format!("Shovel {shovel}")));
    properties.insert("capabilities", FieldValue::FieldTable(capabilities));
    properties
}

/// A delivery whose header or body has not all arrived yet.
struct Assembling {
    deliver: BasicDeliver,
    raw_properties: Bytes,
    body_size: u64,
    body: BytesMut,
    single: Option<Bytes>,
}

async fn read_loop(
    mut reader: ReadHalf<TcpStream>,
    mut buf: BytesMut,
    frame_max: u32,
    side: Side,
    events: Rc<LocalSender<Event>>,
) {
    let mut pending: Option<Assembling> = None;
    let reason = loop {
        match parse_frame(&mut buf, frame_max) {
            Ok(Some(frame)) => match on_frame(frame, &mut pending, side) {
                Ok(Some(event)) => {
                    if events.send(event).await.is_err() {
                        return;
                    }
                }
                Ok(None) => {}
                Err(reason) => break reason,
            },
            Ok(None) => {
                if let Err(reason) = read_more(&mut reader, &mut buf).await {
                    break reason;
                }
            }
            Err(error) => break format!("malformed frame: {error:?}"),
        }
    };
    let _ = events.send(Event::Closed(side, reason)).await;
}

fn on_frame(
    frame: Frame,
    pending: &mut Option<Assembling>,
    side: Side,
) -> Result<Option<Event>, String> {
    match frame {
        Frame::Method { method, .. } => {
            if pending.is_some() {
                return Err("a method frame inside a message".to_string());
            }
            match method {
                Method::BasicDeliver(deliver) => {
                    *pending = Some(Assembling {
                        deliver,
                        raw_properties: Bytes::new(),
                        body_size: u64::MAX,
                        body: BytesMut::new(),
                        single: None,
                    });
                    Ok(None)
                }
                // The shovel publishes without mandatory and never gets: no other content.
                method if method.has_content() => Err("unexpected content method".to_string()),
                method => Ok(Some(Event::Method(side, method))),
            }
        }
        Frame::Header {
            body_size,
            raw_properties,
            ..
        } => {
            let Some(assembling) = pending.as_mut().filter(|a| a.body_size == u64::MAX) else {
                return Err("a content header without its method".to_string());
            };
            if body_size > SHOVEL_MESSAGE_BYTES_MAX {
                return Err(format!(
                    "a message of {body_size} bytes is over the shovel's limit"
                ));
            }
            assembling.raw_properties = raw_properties;
            assembling.body_size = body_size;
            Ok(complete(pending))
        }
        Frame::Body { payload, .. } => {
            let Some(assembling) = pending.as_mut().filter(|a| a.body_size != u64::MAX) else {
                return Err("a body frame without its header".to_string());
            };
            let have = assembling.body.len() + assembling.single.as_ref().map_or(0, Bytes::len);
            if (have + payload.len()) as u64 > assembling.body_size {
                return Err("a body longer than its header said".to_string());
            }
            if have == 0 && payload.len() as u64 == assembling.body_size {
                assembling.single = Some(payload);
            } else {
                if let Some(first) = assembling.single.take() {
                    assembling.body.extend_from_slice(&first);
                }
                assembling.body.extend_from_slice(&payload);
            }
            Ok(complete(pending))
        }
        Frame::Heartbeat { .. } => Ok(None),
    }
}

/// The delivery, once its body is whole.
fn complete(pending: &mut Option<Assembling>) -> Option<Event> {
    let assembling = pending.as_ref()?;
    let have = assembling.body.len() + assembling.single.as_ref().map_or(0, Bytes::len);
    if have as u64 != assembling.body_size {
        return None;
    }
    let done = pending.take()?;
    let body = done.single.unwrap_or_else(|| done.body.freeze());
    Some(Event::Delivery(Delivery {
        deliver: done.deliver,
        raw_properties: done.raw_properties,
        body,
    }))
}
