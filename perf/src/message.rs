//! What travels: pre-encoded publishes (a template copied per message, with the send time
//! patched into the body) and the consumer-side reassembly of deliver + header + body frames.

use bytes::BytesMut;
use ringmq::protocol::{
    encode_body_frames, encode_header_frame, encode_method_frame, BasicPublish, Frame, Method,
    CONTENT_CLASS_ID, FRAME_HEADER_SIZE,
};

use crate::client::{check_close, properties, CHANNEL};
use crate::error::Result;

/// The first 8 body bytes carry the intended send time (ns, big-endian); smaller bodies none.
pub const STAMP_BYTES: usize = 8;

/// One message ready to copy into a write buffer.
pub struct Template {
    bytes: BytesMut,
    /// Where the body starts inside `bytes`, when the body is big enough to carry a stamp.
    stamp_at: Option<usize>,
}

pub struct TemplateSpec<'a> {
    pub exchange: &'a str,
    pub routing_key: &'a str,
    pub size_bytes: usize,
    pub persistent: bool,
    pub frame_max: u32,
}

impl Template {
    pub fn new(spec: &TemplateSpec) -> Template {
        let mut bytes = BytesMut::with_capacity(spec.size_bytes + 128);
        let publish = Method::BasicPublish(BasicPublish {
            exchange: spec.exchange.to_string(),
            routing_key: spec.routing_key.to_string(),
            mandatory: false,
            immediate: false,
        });
        encode_method_frame(CHANNEL, &publish, &mut bytes);
        encode_header_frame(
            CHANNEL,
            CONTENT_CLASS_ID,
            spec.size_bytes as u64,
            &properties(spec.persistent),
            &mut bytes,
        );
        let body_at = bytes.len() + FRAME_HEADER_SIZE;
        let body = vec![b'x'; spec.size_bytes];
        encode_body_frames(CHANNEL, &body, spec.frame_max, &mut bytes);
        let stamp_at = (spec.size_bytes >= STAMP_BYTES).then_some(body_at);
        Template { bytes, stamp_at }
    }

    /// Appends one publish to `out` with `stamp_ns` in its body.
    pub fn write(&self, stamp_ns: u64, out: &mut BytesMut) {
        let start = out.len();
        out.extend_from_slice(&self.bytes);
        if let Some(at) = self.stamp_at {
            let at = start + at;
            out[at..at + STAMP_BYTES].copy_from_slice(&stamp_ns.to_be_bytes());
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.bytes.len()
    }
}

/// What a consumer or a confirming producer learns from one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Delivered {
        delivery_tag: u64,
        body_bytes: u64,
        stamp_ns: Option<u64>,
    },
    Confirmed {
        delivery_tag: u64,
        multiple: bool,
        nack: bool,
    },
    None,
}

/// Reassembles deliveries on the tool's one channel. Only the stamp is kept from a body.
#[derive(Debug, Default)]
pub struct Assembler {
    pending: Option<Pending>,
}

#[derive(Debug)]
struct Pending {
    delivery_tag: u64,
    body_size: Option<u64>,
    received: u64,
    stamp_ns: Option<u64>,
}

impl Pending {
    fn complete(&self) -> Option<Event> {
        let size = self.body_size?;
        (self.received >= size).then_some(Event::Delivered {
            delivery_tag: self.delivery_tag,
            body_bytes: size,
            stamp_ns: self.stamp_ns,
        })
    }
}

impl Assembler {
    pub fn feed(&mut self, frame: Frame) -> Result<Event> {
        match frame {
            Frame::Method { method, .. } => {
                check_close(&method)?;
                Ok(self.method(method))
            }
            Frame::Header { body_size, .. } => {
                let Some(pending) = self.pending.as_mut() else {
                    return Ok(Event::None);
                };
                pending.body_size = Some(body_size);
                Ok(self.finish())
            }
            Frame::Body { payload, .. } => {
                let Some(pending) = self.pending.as_mut() else {
                    return Ok(Event::None);
                };
                if pending.received == 0 {
                    pending.stamp_ns = payload
                        .get(..STAMP_BYTES)
                        .and_then(|b| <[u8; STAMP_BYTES]>::try_from(b).ok())
                        .map(u64::from_be_bytes);
                }
                pending.received += payload.len() as u64;
                Ok(self.finish())
            }
            Frame::Heartbeat { .. } => Ok(Event::None),
        }
    }

    fn method(&mut self, method: Method) -> Event {
        match method {
            Method::BasicDeliver(deliver) => {
                self.pending = Some(Pending {
                    delivery_tag: deliver.delivery_tag,
                    body_size: None,
                    received: 0,
                    stamp_ns: None,
                });
                Event::None
            }
            Method::BasicAck(ack) => Event::Confirmed {
                delivery_tag: ack.delivery_tag,
                multiple: ack.multiple,
                nack: false,
            },
            Method::BasicNack(nack) => Event::Confirmed {
                delivery_tag: nack.delivery_tag,
                multiple: nack.multiple,
                nack: true,
            },
            _ => Event::None,
        }
    }

    fn finish(&mut self) -> Event {
        match self.pending.as_ref().and_then(Pending::complete) {
            Some(event) => {
                self.pending = None;
                event
            }
            None => Event::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use ringmq::protocol::{encode_content, parse_frame, BasicDeliver, BasicProperties};

    fn frames(bytes: &mut BytesMut) -> Vec<Frame> {
        let mut out = Vec::new();
        while let Some(frame) = parse_frame(bytes, 4096).unwrap() {
            out.push(frame);
        }
        assert!(bytes.is_empty());
        out
    }

    #[test]
    fn template_stamps_body_and_splits_frames() {
        let t = Template::new(&TemplateSpec {
            exchange: "",
            routing_key: "q",
            size_bytes: 10_000,
            persistent: true,
            frame_max: 4096,
        });
        let mut out = BytesMut::new();
        t.write(42, &mut out);
        t.write(43, &mut out);
        assert_eq!(out.len(), 2 * t.len());
        let frames = frames(&mut out);
        // method, header, 3 body frames; twice.
        assert_eq!(frames.len(), 10);
        match &frames[1] {
            Frame::Header {
                body_size,
                raw_properties,
                ..
            } => {
                assert_eq!(*body_size, 10_000);
                let properties =
                    ringmq::protocol::BasicProperties::decode(&mut raw_properties.clone())
                        .expect("properties");
                assert_eq!(properties.delivery_mode, Some(2));
            }
            other => panic!("{other:?}"),
        }
        match &frames[7] {
            Frame::Body { payload, .. } => assert_eq!(&payload[..8], &43u64.to_be_bytes()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn assembles_deliveries() {
        let mut wire = BytesMut::new();
        for (tag, size) in [(1u64, 16usize), (2, 0), (3, 9000), (4, 3)] {
            let deliver = Method::BasicDeliver(BasicDeliver {
                consumer_tag: "c".into(),
                delivery_tag: tag,
                redelivered: false,
                exchange: String::new(),
                routing_key: "q".into(),
            });
            let mut body = vec![0u8; size];
            if size >= 8 {
                body[..8].copy_from_slice(&(tag * 100).to_be_bytes());
            }
            encode_content(
                1,
                &deliver,
                &BasicProperties::default(),
                &body,
                4096,
                &mut wire,
            );
        }
        let mut assembler = Assembler::default();
        let mut delivered = Vec::new();
        for frame in frames(&mut wire) {
            if let Event::Delivered {
                delivery_tag,
                body_bytes,
                stamp_ns,
            } = assembler.feed(frame).unwrap()
            {
                delivered.push((delivery_tag, body_bytes, stamp_ns));
            }
        }
        assert_eq!(
            delivered,
            vec![
                (1, 16, Some(100)),
                (2, 0, None),
                (3, 9000, Some(300)),
                (4, 3, None)
            ]
        );
    }

    #[test]
    fn broker_close_is_an_error() {
        let mut a = Assembler::default();
        let close = Frame::Method {
            channel: 1,
            method: Method::ChannelClose(ringmq::protocol::ChannelClose {
                reply_code: 404,
                reply_text: "NOT_FOUND".into(),
                class_id: 60,
                method_id: 20,
            }),
        };
        assert!(a.feed(close).is_err());
        // A stray body with nothing pending is ignored, not a panic.
        let body = Frame::Body {
            channel: 1,
            payload: bytes::Bytes::from_static(b"abc"),
        };
        assert_eq!(a.feed(body).unwrap(), Event::None);
    }
}
