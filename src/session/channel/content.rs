//! Content assembly: after basic.publish, one content header of class basic, then body frames
//! up to exactly the size the header declared. Anything else is a connection error
//! (UNEXPECTED_FRAME); a body over the max message size closes the channel (406).

use bytes::Bytes;

use super::{fault, precondition_failed, Fault};
use crate::limits::MESSAGE_SIZE_MAX_BYTES;
use crate::protocol::{reply_code, BasicProperties, BasicPublish, CONTENT_CLASS_ID};
use crate::session::state::ChannelState;

/// A basic.publish waiting for its content header and body frames.
pub struct PendingPublish {
    pub exchange: String,
    pub routing_key: String,
    pub mandatory: bool,
    /// Set by the content header; taken when the message is built (a transaction keeps the
    /// rest for routing).
    pub properties: Option<HeaderProperties>,
    /// The properties as received: stored and delivered as they are unless rewritten.
    pub raw_properties: Bytes,
    pub body_size: u64,
    /// The first body frame, and any further ones: one frame (the common case) needs no vector.
    pub first_part: Bytes,
    pub more_parts: Vec<Bytes>,
    received: u64,
}

/// A content header's properties: most publishes carry one of the common encodings, which
/// are not decoded; the others are decoded once, boxed so the pending publish stays small.
#[derive(Debug)]
pub enum HeaderProperties {
    Common(&'static BasicProperties),
    Decoded(Box<BasicProperties>),
}

impl PendingPublish {
    pub fn new(m: BasicPublish) -> PendingPublish {
        PendingPublish {
            exchange: m.exchange,
            routing_key: m.routing_key,
            mandatory: m.mandatory,
            properties: None,
            raw_properties: Bytes::new(),
            body_size: 0,
            first_part: Bytes::new(),
            more_parts: Vec::new(),
            received: 0,
        }
    }

    /// The body parts in order.
    pub fn body(&self) -> impl Iterator<Item = &[u8]> + Clone {
        std::iter::once(&self.first_part)
            .chain(&self.more_parts)
            .map(|part| part.as_ref())
    }

    /// The message holds its own copy once built: what is left only routes it, and must not pin
    /// the read buffers the frames were sliced from (a transaction keeps it until commit).
    pub fn release_frames(&mut self) {
        self.raw_properties = Bytes::new();
        self.first_part = Bytes::new();
        self.more_parts = Vec::new();
    }
}

/// A content header frame, as the session hands it to the channel.
pub struct ContentHeader {
    pub class_id: u16,
    pub body_size: u64,
    /// Encoded, as received: decoded by `on_header` straight into the pending publish.
    pub raw_properties: Bytes,
}

/// What a content frame left to do.
pub enum ContentStep {
    /// The channel is closing: the frame is dropped.
    Ignored,
    /// More body frames are due.
    Incomplete,
    /// The whole message is here, taken out of the channel.
    Complete(Box<PendingPublish>),
    /// The channel must close with this error (the publish is dropped).
    Refused(Fault),
}

/// A content header. `max_bytes` is `--max-message-bytes`.
pub fn on_header(
    state: &mut ChannelState,
    header: ContentHeader,
    max_bytes: u64,
) -> Result<ContentStep, Fault> {
    if state.closing {
        return Ok(ContentStep::Ignored);
    }
    let Some(pending) = state.pending_publish.as_mut() else {
        return Err(unexpected_content("content header"));
    };
    if pending.properties.is_some() || header.class_id != CONTENT_CLASS_ID {
        return Err(unexpected_content("content header"));
    }
    // Malformed properties are a syntax error of the connection, as when they were decoded
    // with the frame; they are checked before the size so the answer does not depend on it.
    let properties = match BasicProperties::common(&header.raw_properties) {
        Some(common) => HeaderProperties::Common(common),
        None => HeaderProperties::Decoded(Box::new(
            BasicProperties::decode(&mut header.raw_properties.clone())
                .map_err(|error| Fault::protocol(&error))?,
        )),
    };
    if header.body_size > max_bytes {
        state.pending_publish = None;
        let text = message_too_large_text(header.body_size, max_bytes);
        return Ok(ContentStep::Refused(precondition_failed(text)));
    }
    pending.properties = Some(properties);
    pending.raw_properties = header.raw_properties;
    pending.body_size = header.body_size;
    if header.body_size == 0 {
        return Ok(complete(state));
    }
    Ok(ContentStep::Incomplete)
}

/// A content body frame.
pub fn on_body(state: &mut ChannelState, payload: Bytes) -> Result<ContentStep, Fault> {
    if state.closing {
        return Ok(ContentStep::Ignored);
    }
    let Some(pending) = state.pending_publish.as_mut() else {
        return Err(unexpected_content("content body"));
    };
    if pending.properties.is_none() {
        return Err(unexpected_content("content body"));
    }
    pending.received += payload.len() as u64;
    if pending.received > pending.body_size {
        return Err(unexpected_content("content body beyond the declared size"));
    }
    if pending.first_part.is_empty() {
        pending.first_part = payload;
    } else {
        pending.more_parts.push(payload);
    }
    if pending.received < pending.body_size {
        return Ok(ContentStep::Incomplete);
    }
    Ok(complete(state))
}

fn complete(state: &mut ChannelState) -> ContentStep {
    match state.pending_publish.take() {
        Some(pending) => ContentStep::Complete(pending),
        None => ContentStep::Ignored,
    }
}

fn unexpected_content(what: &str) -> Fault {
    fault(
        reply_code::UNEXPECTED_FRAME,
        format!("UNEXPECTED_FRAME - unexpected {what}"),
    )
}

/// RabbitMQ's reply (rabbit_channel:check_msg_size): it says "configured" unless the limit is
/// its own ceiling.
fn message_too_large_text(body_size: u64, max_bytes: u64) -> String {
    let configured = if max_bytes == MESSAGE_SIZE_MAX_BYTES {
        ""
    } else {
        "configured "
    };
    format!("message size {body_size} is larger than {configured}max size {max_bytes}")
}
