//! Frames: `type(1) channel(2) size(4) payload(size) 0xCE`.
//!
//! Parsing is two steps, as in mini-redis: `check_frame` says whether a whole frame is buffered
//! (incomplete is `Ok(None)`, not an error) and `parse_frame` then splits exactly those bytes
//! off the read buffer and freezes them, so a body payload is a slice of the read buffer.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::codec::{read_u16, read_u64, write_shortstr};
use super::{BasicProperties, Method, ProtocolError};

pub const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";
pub const FRAME_END: u8 = 0xCE;
/// type(1) channel(2) size(4)
pub const FRAME_HEADER_SIZE: usize = 7;
/// Header plus end octet: what a frame costs beyond its payload.
pub const FRAME_OVERHEAD: usize = FRAME_HEADER_SIZE + 1;
/// The spec's minimum for a negotiated frame_max.
pub const FRAME_MIN_SIZE: u32 = 4096;

pub const FRAME_METHOD: u8 = 1;
pub const FRAME_HEADER: u8 = 2;
pub const FRAME_BODY: u8 = 3;
pub const FRAME_HEARTBEAT: u8 = 8;

/// The only class with content (basic).
pub const CONTENT_CLASS_ID: u16 = 60;

const BASIC_CLASS_ID: u16 = CONTENT_CLASS_ID;
const BASIC_DELIVER_METHOD_ID: u16 = 60;

/// class-id(2) weight(2) body-size(8), before the property flags.
const CONTENT_HEADER_FIXED_SIZE: usize = 12;

#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Method {
        channel: u16,
        method: Method,
    },
    Header {
        channel: u16,
        class_id: u16,
        body_size: u64,
        /// The flag words and property list as received (a slice of the read buffer), so the
        /// broker can store and forward them without encoding them again. Not decoded here:
        /// the channel decodes them once, in place (`BasicProperties::decode`), where a
        /// decoded copy would otherwise be moved through every layer of the read loop (it is
        /// ~290 bytes; the moves showed in profiles of the publish path).
        raw_properties: Bytes,
    },
    /// `payload` is a zero-copy slice of the read buffer.
    Body {
        channel: u16,
        payload: Bytes,
    },
    /// The session checks that `channel` is 0.
    Heartbeat {
        channel: u16,
    },
}

impl Frame {
    pub fn channel(&self) -> u16 {
        match self {
            Frame::Method { channel, .. }
            | Frame::Header { channel, .. }
            | Frame::Body { channel, .. }
            | Frame::Heartbeat { channel } => *channel,
        }
    }
}

/// What the first bytes of a connection say about the peer's protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolHeaderCheck {
    /// A prefix of `PROTOCOL_HEADER` so far; read more.
    Incomplete,
    /// The 8 bytes are `PROTOCOL_HEADER`; the session consumes them and sends connection.start.
    Accepted,
    /// Anything else (another AMQP version, TLS, HTTP): the spec says reply with our header
    /// and close the socket. Decided at the first differing byte.
    Rejected,
}

/// Checks the protocol header that opens every connection, before any frame.
pub fn check_protocol_header(buf: &[u8]) -> ProtocolHeaderCheck {
    let seen = buf.len().min(PROTOCOL_HEADER.len());
    if buf[..seen] != PROTOCOL_HEADER[..seen] {
        return ProtocolHeaderCheck::Rejected;
    }
    if seen < PROTOCOL_HEADER.len() {
        return ProtocolHeaderCheck::Incomplete;
    }
    ProtocolHeaderCheck::Accepted
}

/// 0 means "no limit" in connection.tune; the wire still caps a frame at u32::MAX.
fn effective_frame_max(frame_max: u32) -> u32 {
    if frame_max == 0 {
        u32::MAX
    } else {
        frame_max
    }
}

/// Returns the length of the whole frame at the front of `buf` once it is all there.
/// Fails as early as the header allows: a bad type or an oversized frame is reported before its
/// payload arrives, so a peer cannot make us buffer what we will reject anyway.
pub fn check_frame(buf: &[u8], frame_max: u32) -> Result<Option<usize>, ProtocolError> {
    let Some(header) = buf.get(..FRAME_HEADER_SIZE) else {
        return Ok(None);
    };
    let frame_type = header[0];
    if !matches!(
        frame_type,
        FRAME_METHOD | FRAME_HEADER | FRAME_BODY | FRAME_HEARTBEAT
    ) {
        return Err(ProtocolError::BadFrameType { frame_type });
    }
    let payload_size = u32::from_be_bytes([header[3], header[4], header[5], header[6]]);
    let frame_size = u64::from(payload_size) + FRAME_OVERHEAD as u64;
    let max = effective_frame_max(frame_max);
    if frame_size > u64::from(max) {
        return Err(ProtocolError::FrameTooLarge {
            size: frame_size,
            max,
        });
    }
    if frame_type == FRAME_HEARTBEAT && payload_size != 0 {
        return Err(ProtocolError::BadHeartbeat { size: payload_size });
    }
    // frame_size <= u32::MAX here, so it fits usize on every target we build for.
    let frame_len = frame_size as usize;
    let Some(&end) = buf.get(frame_len - 1) else {
        return Ok(None);
    };
    if end != FRAME_END {
        return Err(ProtocolError::MissingFrameEnd { found: end });
    }
    Ok(Some(frame_len))
}

/// Parses one frame off the front of `buf`, or returns `Ok(None)` (and leaves `buf` alone)
/// until a whole one is buffered. `frame_max` is the negotiated limit, 0 = unlimited; before
/// tune-ok the caller should pass `FRAME_MIN_SIZE`, the size every peer must accept.
pub fn parse_frame(buf: &mut BytesMut, frame_max: u32) -> Result<Option<Frame>, ProtocolError> {
    let Some(frame_len) = check_frame(buf, frame_max)? else {
        return Ok(None);
    };
    let mut frame = buf.split_to(frame_len).freeze();
    let frame_type = frame.get_u8();
    let channel = frame.get_u16();
    frame.advance(4);
    frame.truncate(frame.len() - 1);
    let payload = frame;
    let parsed = match frame_type {
        FRAME_METHOD => parse_method(channel, payload)?,
        FRAME_HEADER => parse_content_header(channel, payload)?,
        FRAME_BODY => Frame::Body { channel, payload },
        // check_frame admits no other type.
        _ => Frame::Heartbeat { channel },
    };
    Ok(Some(parsed))
}

fn parse_method(channel: u16, mut payload: Bytes) -> Result<Frame, ProtocolError> {
    if payload.len() < 4 {
        return Err(ProtocolError::ShortFramePayload {
            frame: "method",
            size: payload.len(),
        });
    }
    let class_id = read_u16(&mut payload)?;
    let method_id = read_u16(&mut payload)?;
    let method = Method::decode(class_id, method_id, &mut payload)?;
    Ok(Frame::Method { channel, method })
}

fn parse_content_header(channel: u16, mut payload: Bytes) -> Result<Frame, ProtocolError> {
    if payload.len() < CONTENT_HEADER_FIXED_SIZE {
        return Err(ProtocolError::ShortFramePayload {
            frame: "content header",
            size: payload.len(),
        });
    }
    let class_id = read_u16(&mut payload)?;
    if class_id != CONTENT_CLASS_ID {
        return Err(ProtocolError::UnexpectedContentClass { class_id });
    }
    // The weight field is unused and must be zero; like RabbitMQ we do not police it.
    read_u16(&mut payload)?;
    let body_size = read_u64(&mut payload)?;
    Ok(Frame::Header {
        channel,
        class_id,
        body_size,
        raw_properties: payload,
    })
}

/// Writes a frame header with a zero size, runs `payload`, then backpatches the size and
/// appends the end octet: no temporary buffer per frame.
fn write_frame(
    out: &mut BytesMut,
    frame_type: u8,
    channel: u16,
    payload: impl FnOnce(&mut BytesMut),
) {
    out.put_u8(frame_type);
    out.put_u16(channel);
    let size_slot = out.len();
    out.put_u32(0);
    payload(out);
    let size = out.len() - size_slot - 4;
    debug_assert!(u32::try_from(size).is_ok());
    out[size_slot..size_slot + 4].copy_from_slice(&(size as u32).to_be_bytes());
    out.put_u8(FRAME_END);
}

pub fn encode_method_frame(channel: u16, method: &Method, out: &mut BytesMut) {
    write_frame(out, FRAME_METHOD, channel, |out| {
        out.put_u16(method.class_id());
        out.put_u16(method.method_id());
        method.encode(out);
    });
}

pub fn encode_header_frame(
    channel: u16,
    class_id: u16,
    body_size: u64,
    props: &BasicProperties,
    out: &mut BytesMut,
) {
    write_frame(out, FRAME_HEADER, channel, |out| {
        out.put_u16(class_id);
        out.put_u16(0);
        out.put_u64(body_size);
        props.encode(out);
    });
}

/// A content header whose properties are already encoded (flag words and property list).
pub fn encode_header_frame_raw(
    channel: u16,
    class_id: u16,
    body_size: u64,
    raw_properties: &[u8],
    out: &mut BytesMut,
) {
    write_frame(out, FRAME_HEADER, channel, |out| {
        out.put_u16(class_id);
        out.put_u16(0);
        out.put_u64(body_size);
        out.put_slice(raw_properties);
    });
}

/// Largest body payload per frame under `frame_max`. A frame_max below the spec minimum can
/// only come from a bug upstream; clamping keeps the chunk size positive so the loop ends.
fn body_payload_max(frame_max: u32) -> usize {
    debug_assert!(frame_max == 0 || frame_max >= FRAME_MIN_SIZE);
    let frame_max = effective_frame_max(frame_max).max(FRAME_MIN_SIZE);
    frame_max as usize - FRAME_OVERHEAD
}

/// Writes `body` as body frames of at most `frame_max` bytes each; nothing for an empty body.
pub fn encode_body_frames(channel: u16, body: &[u8], frame_max: u32, out: &mut BytesMut) {
    for chunk in body.chunks(body_payload_max(frame_max)) {
        write_frame(out, FRAME_BODY, channel, |out| out.put_slice(chunk));
    }
}

pub fn encode_heartbeat(out: &mut BytesMut) {
    write_frame(out, FRAME_HEARTBEAT, 0, |_| {});
}

/// Method frame + content header + body frames, for basic.deliver, basic.get-ok, basic.return
/// (and basic.publish when we act as a client in tests).
pub fn encode_content(
    channel: u16,
    method: &Method,
    props: &BasicProperties,
    body: &[u8],
    frame_max: u32,
    out: &mut BytesMut,
) {
    debug_assert!(method.has_content());
    encode_method_frame(channel, method, out);
    encode_header_frame(channel, method.class_id(), body.len() as u64, props, out);
    encode_body_frames(channel, body, frame_max, out);
}

/// [`encode_content`] with the properties already encoded: what the broker sends, copying the
/// property bytes it stored.
pub fn encode_content_raw(
    channel: u16,
    method: &Method,
    raw_properties: &[u8],
    body: &[u8],
    frame_max: u32,
    out: &mut BytesMut,
) {
    debug_assert!(method.has_content());
    encode_method_frame(channel, method, out);
    encode_header_frame_raw(
        channel,
        method.class_id(),
        body.len() as u64,
        raw_properties,
        out,
    );
    encode_body_frames(channel, body, frame_max, out);
}

/// The fields of a basic.deliver, borrowed: the hot delivery path writes them without building
/// a [`Method`] (whose strings would be copied per delivery).
#[derive(Debug, Clone, Copy)]
pub struct DeliverFields<'a> {
    pub consumer_tag: &'a str,
    pub delivery_tag: u64,
    pub redelivered: bool,
    pub exchange: &'a str,
    pub routing_key: &'a str,
}

/// basic.deliver + content header + body frames, straight from borrowed parts.
pub fn encode_deliver(
    channel: u16,
    deliver: &DeliverFields<'_>,
    raw_properties: &[u8],
    body: &[u8],
    frame_max: u32,
    out: &mut BytesMut,
) {
    write_frame(out, FRAME_METHOD, channel, |out| {
        out.put_u16(BASIC_CLASS_ID);
        out.put_u16(BASIC_DELIVER_METHOD_ID);
        write_shortstr(out, deliver.consumer_tag);
        out.put_u64(deliver.delivery_tag);
        out.put_u8(u8::from(deliver.redelivered));
        write_shortstr(out, deliver.exchange);
        write_shortstr(out, deliver.routing_key);
    });
    encode_header_frame_raw(
        channel,
        CONTENT_CLASS_ID,
        body.len() as u64,
        raw_properties,
        out,
    );
    encode_body_frames(channel, body, frame_max, out);
}
