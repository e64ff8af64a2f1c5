//! The records of a data frame, sans-IO: `encode` to bytes, `decode` from a peer's bytes,
//! checked at every length (a short, long or unknown record is an `Err`, never a panic).

use bytes::{Buf, BufMut, Bytes};

use super::super::messages::{GotMessage, SettleOp};
use crate::broker::queue::{ChannelRef, ConsumerKey, MessageId, Route, SharedMessage};
use crate::broker::{AmqpError, QueueId};
use crate::limits::CLUSTER_FORWARD_ENVELOPE_BYTES_MAX;
use crate::protocol::BasicProperties;

/// Operations on a queue another node leads, answered by that node. Consumer keys and channel
/// references are the asking node's; the answering node maps them to its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteOp {
    /// Answers (messages, consumers).
    Count { renews_expiry: bool },
    /// Answers (purged, 0).
    Purge,
    /// Answers (messages it held, 0).
    Delete { if_unused: bool, if_empty: bool },
    /// Answers (0, 0).
    Consume {
        key: ConsumerKey,
        channel: ChannelRef,
        prefetch: u16,
        no_ack: bool,
        exclusive: bool,
        priority: i32,
    },
    /// Answers (auto-delete queue now unused, 0).
    Cancel { key: ConsumerKey },
    /// Answers the message, if any (`got`).
    Get { channel: ChannelRef, no_ack: bool },
    /// Answers (auto-delete queue now unused, 0).
    ChannelClosed { channel: ChannelRef },
    /// Answers (0, 0).
    Recover { channel: ChannelRef },
    /// Not about one queue: answers (0, 0) once every shard of the answering node has applied
    /// what arrived before it and made its log durable (a transaction's commit, whose
    /// publishes were forwarded to that node ahead of it on the same link).
    Barrier,
}

/// What a remote queue operation answers.
pub struct RemoteAnswer {
    pub numbers: (u32, u32),
    pub got: Option<GotMessage>,
}

impl RemoteAnswer {
    pub fn numbers(first: u32, second: u32) -> RemoteAnswer {
        RemoteAnswer {
            numbers: (first, second),
            got: None,
        }
    }
}

/// One record of a data frame.
pub enum Record {
    /// Publisher's node → queue's node.
    Publish {
        id: u64,
        confirm: bool,
        queues: Vec<QueueId>,
        message: SharedMessage,
    },
    /// Queue's node → publisher's node.
    Confirm { id: u64, ok: bool },
    Request {
        id: u64,
        queue: QueueId,
        op: RemoteOp,
    },
    Answer {
        id: u64,
        answer: Result<RemoteAnswer, AmqpError>,
    },
    /// Queue's node → consumer's node: a delivery (key and channel are the consumer's node's).
    Deliver {
        key: ConsumerKey,
        channel: ChannelRef,
        queue: QueueId,
        message_id: MessageId,
        redelivered: bool,
        message: SharedMessage,
    },
    /// Consumer's node → queue's node (consumer keys are the consumer's node's).
    Settle { queue: QueueId, op: SettleOp },
    /// Queue's node → consumer's node: the queue went, the consumer is cancelled.
    Cancelled {
        key: ConsumerKey,
        channel: ChannelRef,
    },
}

const TAG_PUBLISH: u8 = 1;
const TAG_CONFIRM: u8 = 2;
const TAG_REQUEST: u8 = 3;
const TAG_ANSWER: u8 = 4;
const TAG_DELIVER: u8 = 5;
const TAG_SETTLE: u8 = 6;
const TAG_CANCELLED: u8 = 7;

const OP_COUNT: u8 = 1;
const OP_PURGE: u8 = 2;
const OP_DELETE: u8 = 3;
const OP_CONSUME: u8 = 4;
const OP_CANCEL: u8 = 5;
const OP_GET: u8 = 6;
const OP_CHANNEL_CLOSED: u8 = 7;
const OP_RECOVER: u8 = 8;
const OP_BARRIER: u8 = 9;

const SETTLE_ACK: u8 = 1;
const SETTLE_REJECT: u8 = 2;
const SETTLE_REFUSED: u8 = 3;
const SETTLE_WRITTEN: u8 = 4;

/// Bytes a record carrying `message` for `queue_count` queues may take: what it is charged
/// (credit) and what must fit one frame.
pub fn message_record_bytes(queue_count: usize, message: &SharedMessage) -> usize {
    CLUSTER_FORWARD_ENVELOPE_BYTES_MAX
        + queue_count * std::mem::size_of::<QueueId>()
        + message.raw_properties().len()
        + message.body_len()
}

pub fn encode(record: &Record) -> Vec<u8> {
    let mut out = Vec::new();
    match record {
        Record::Publish {
            id,
            confirm,
            queues,
            message,
        } => {
            out.reserve(message_record_bytes(queues.len(), message));
            out.put_u8(TAG_PUBLISH);
            out.put_u64(*id);
            out.put_u8(u8::from(*confirm));
            out.put_u16(queues.len() as u16);
            for &queue in queues {
                out.put_u64(queue);
            }
            put_message(&mut out, message);
        }
        Record::Confirm { id, ok } => {
            out.put_u8(TAG_CONFIRM);
            out.put_u64(*id);
            out.put_u8(u8::from(*ok));
        }
        Record::Request { id, queue, op } => {
            out.put_u8(TAG_REQUEST);
            out.put_u64(*id);
            out.put_u64(*queue);
            put_op(&mut out, op);
        }
        Record::Answer { id, answer } => {
            out.put_u8(TAG_ANSWER);
            out.put_u64(*id);
            put_answer(&mut out, answer);
        }
        Record::Deliver {
            key,
            channel,
            queue,
            message_id,
            redelivered,
            message,
        } => {
            out.reserve(message_record_bytes(1, message));
            out.put_u8(TAG_DELIVER);
            out.put_u64(*key);
            put_channel(&mut out, channel);
            out.put_u64(*queue);
            out.put_u64(*message_id);
            out.put_u8(u8::from(*redelivered));
            put_message(&mut out, message);
        }
        Record::Settle { queue, op } => {
            out.put_u8(TAG_SETTLE);
            out.put_u64(*queue);
            put_settle(&mut out, op);
        }
        Record::Cancelled { key, channel } => {
            out.put_u8(TAG_CANCELLED);
            out.put_u64(*key);
            put_channel(&mut out, channel);
        }
    }
    out
}

pub fn put_message(out: &mut Vec<u8>, message: &SharedMessage) {
    // Shortstrs (at most 255 bytes: `Message` cut them so).
    let exchange = message.exchange().as_bytes();
    let routing_key = message.routing_key().as_bytes();
    out.put_u8(exchange.len() as u8);
    out.put_slice(exchange);
    out.put_u8(routing_key.len() as u8);
    out.put_slice(routing_key);
    let properties = message.raw_properties();
    out.put_u32(properties.len() as u32);
    out.put_slice(properties);
    let body = message.body();
    out.put_u32(body.len() as u32);
    out.put_slice(body);
}

fn put_channel(out: &mut Vec<u8>, channel: &ChannelRef) {
    out.put_u64(channel.conn);
    out.put_u16(channel.channel);
}

fn put_op(out: &mut Vec<u8>, op: &RemoteOp) {
    match *op {
        RemoteOp::Count { renews_expiry } => {
            out.put_u8(OP_COUNT);
            out.put_u8(u8::from(renews_expiry));
        }
        RemoteOp::Purge => out.put_u8(OP_PURGE),
        RemoteOp::Delete {
            if_unused,
            if_empty,
        } => {
            out.put_u8(OP_DELETE);
            out.put_u8(u8::from(if_unused) | (u8::from(if_empty) << 1));
        }
        RemoteOp::Consume {
            key,
            channel,
            prefetch,
            no_ack,
            exclusive,
            priority,
        } => {
            out.put_u8(OP_CONSUME);
            out.put_u64(key);
            put_channel(out, &channel);
            out.put_u16(prefetch);
            out.put_u8(u8::from(no_ack) | (u8::from(exclusive) << 1));
            out.put_i32(priority);
        }
        RemoteOp::Cancel { key } => {
            out.put_u8(OP_CANCEL);
            out.put_u64(key);
        }
        RemoteOp::Get { channel, no_ack } => {
            out.put_u8(OP_GET);
            put_channel(out, &channel);
            out.put_u8(u8::from(no_ack));
        }
        RemoteOp::ChannelClosed { channel } => {
            out.put_u8(OP_CHANNEL_CLOSED);
            put_channel(out, &channel);
        }
        RemoteOp::Recover { channel } => {
            out.put_u8(OP_RECOVER);
            put_channel(out, &channel);
        }
        RemoteOp::Barrier => out.put_u8(OP_BARRIER),
    }
}

fn put_answer(out: &mut Vec<u8>, answer: &Result<RemoteAnswer, AmqpError>) {
    match answer {
        Ok(answer) => {
            out.put_u16(0);
            out.put_u32(answer.numbers.0);
            out.put_u32(answer.numbers.1);
            match &answer.got {
                None => out.put_u8(0),
                Some(got) => {
                    out.put_u8(1);
                    out.put_u64(got.message_id);
                    out.put_u8(u8::from(got.redelivered));
                    out.put_u32(got.remaining);
                    put_message(out, &got.message);
                }
            }
        }
        Err(error) => {
            out.put_u16(error.code);
            let text = error.text.as_bytes();
            let text = &text[..text.len().min(u16::MAX as usize)];
            out.put_u16(text.len() as u16);
            out.put_slice(text);
        }
    }
}

fn put_settle(out: &mut Vec<u8>, op: &SettleOp) {
    match op {
        SettleOp::Ack(ids) => {
            out.put_u8(SETTLE_ACK);
            put_ids(out, ids);
        }
        SettleOp::Reject { ids, requeue } => {
            out.put_u8(SETTLE_REJECT);
            out.put_u8(u8::from(*requeue));
            put_ids(out, ids);
        }
        SettleOp::Refused { consumer, id } => {
            out.put_u8(SETTLE_REFUSED);
            out.put_u64(*consumer);
            out.put_u64(*id);
        }
        SettleOp::Written { consumer, bytes } => {
            out.put_u8(SETTLE_WRITTEN);
            out.put_u64(*consumer);
            out.put_u64(*bytes);
        }
    }
}

fn put_ids(out: &mut Vec<u8>, ids: &[MessageId]) {
    out.put_u32(ids.len() as u32);
    for &id in ids {
        out.put_u64(id);
    }
}

/// A record from a peer: `Err` names what was wrong with it.
pub fn decode(payload: Vec<u8>) -> Result<Record, &'static str> {
    let mut bytes = Bytes::from(payload);
    let record = match take_u8(&mut bytes)? {
        TAG_PUBLISH => {
            let id = take_u64(&mut bytes)?;
            let confirm = take_u8(&mut bytes)? != 0;
            let count = take_u16(&mut bytes)? as usize;
            let queues = take_ids(&mut bytes, count)?;
            let message = take_message(&mut bytes)?;
            Record::Publish {
                id,
                confirm,
                queues,
                message,
            }
        }
        TAG_CONFIRM => Record::Confirm {
            id: take_u64(&mut bytes)?,
            ok: take_u8(&mut bytes)? != 0,
        },
        TAG_REQUEST => Record::Request {
            id: take_u64(&mut bytes)?,
            queue: take_u64(&mut bytes)?,
            op: take_op(&mut bytes)?,
        },
        TAG_ANSWER => Record::Answer {
            id: take_u64(&mut bytes)?,
            answer: take_answer(&mut bytes)?,
        },
        TAG_DELIVER => Record::Deliver {
            key: take_u64(&mut bytes)?,
            channel: take_channel(&mut bytes)?,
            queue: take_u64(&mut bytes)?,
            message_id: take_u64(&mut bytes)?,
            redelivered: take_u8(&mut bytes)? != 0,
            message: take_message(&mut bytes)?,
        },
        TAG_SETTLE => Record::Settle {
            queue: take_u64(&mut bytes)?,
            op: take_settle(&mut bytes)?,
        },
        TAG_CANCELLED => Record::Cancelled {
            key: take_u64(&mut bytes)?,
            channel: take_channel(&mut bytes)?,
        },
        _ => return Err("unknown record"),
    };
    if bytes.has_remaining() {
        return Err("trailing bytes after a record");
    }
    Ok(record)
}

fn take_op(bytes: &mut Bytes) -> Result<RemoteOp, &'static str> {
    Ok(match take_u8(bytes)? {
        OP_COUNT => RemoteOp::Count {
            renews_expiry: take_u8(bytes)? != 0,
        },
        OP_PURGE => RemoteOp::Purge,
        OP_DELETE => {
            let flags = take_u8(bytes)?;
            RemoteOp::Delete {
                if_unused: flags & 1 != 0,
                if_empty: flags & 2 != 0,
            }
        }
        OP_CONSUME => {
            let key = take_u64(bytes)?;
            let channel = take_channel(bytes)?;
            let prefetch = take_u16(bytes)?;
            let flags = take_u8(bytes)?;
            let priority = take_u32(bytes)? as i32;
            RemoteOp::Consume {
                key,
                channel,
                prefetch,
                no_ack: flags & 1 != 0,
                exclusive: flags & 2 != 0,
                priority,
            }
        }
        OP_CANCEL => RemoteOp::Cancel {
            key: take_u64(bytes)?,
        },
        OP_GET => RemoteOp::Get {
            channel: take_channel(bytes)?,
            no_ack: take_u8(bytes)? != 0,
        },
        OP_CHANNEL_CLOSED => RemoteOp::ChannelClosed {
            channel: take_channel(bytes)?,
        },
        OP_RECOVER => RemoteOp::Recover {
            channel: take_channel(bytes)?,
        },
        OP_BARRIER => RemoteOp::Barrier,
        _ => return Err("unknown remote queue operation"),
    })
}

fn take_answer(bytes: &mut Bytes) -> Result<Result<RemoteAnswer, AmqpError>, &'static str> {
    let code = take_u16(bytes)?;
    if code != 0 {
        let length = take_u16(bytes)? as usize;
        let text = take_bytes(bytes, length)?;
        let text = String::from_utf8_lossy(&text).into_owned();
        return Ok(Err(AmqpError::new(code, text)));
    }
    let numbers = (take_u32(bytes)?, take_u32(bytes)?);
    let got = match take_u8(bytes)? {
        0 => None,
        1 => Some(GotMessage {
            message_id: take_u64(bytes)?,
            redelivered: take_u8(bytes)? != 0,
            remaining: take_u32(bytes)?,
            message: take_message(bytes)?,
        }),
        _ => return Err("malformed answer"),
    };
    Ok(Ok(RemoteAnswer { numbers, got }))
}

fn take_settle(bytes: &mut Bytes) -> Result<SettleOp, &'static str> {
    Ok(match take_u8(bytes)? {
        SETTLE_ACK => {
            let count = take_u32(bytes)? as usize;
            SettleOp::Ack(take_ids(bytes, count)?)
        }
        SETTLE_REJECT => {
            let requeue = take_u8(bytes)? != 0;
            let count = take_u32(bytes)? as usize;
            SettleOp::Reject {
                ids: take_ids(bytes, count)?,
                requeue,
            }
        }
        SETTLE_REFUSED => SettleOp::Refused {
            consumer: take_u64(bytes)?,
            id: take_u64(bytes)?,
        },
        SETTLE_WRITTEN => SettleOp::Written {
            consumer: take_u64(bytes)?,
            bytes: take_u64(bytes)?,
        },
        _ => return Err("unknown settlement"),
    })
}

pub fn take_message(bytes: &mut Bytes) -> Result<SharedMessage, &'static str> {
    let exchange_length = take_u8(bytes)? as usize;
    let exchange = take_bytes(bytes, exchange_length)?;
    let key_length = take_u8(bytes)? as usize;
    let routing_key = take_bytes(bytes, key_length)?;
    let properties_length = take_u32(bytes)? as usize;
    let raw_properties = take_bytes(bytes, properties_length)?;
    let body_length = take_u32(bytes)? as usize;
    let body = take_bytes(bytes, body_length)?;
    let exchange = std::str::from_utf8(&exchange).map_err(|_| "exchange not UTF-8")?;
    let routing_key = std::str::from_utf8(&routing_key).map_err(|_| "routing key not UTF-8")?;
    let properties =
        BasicProperties::decode(&mut raw_properties.clone()).map_err(|_| "malformed properties")?;
    let route = Route {
        exchange,
        routing_key,
    };
    Ok(SharedMessage::from_wire(
        route,
        &properties,
        &raw_properties,
        [&body[..]],
    ))
}

fn take_channel(bytes: &mut Bytes) -> Result<ChannelRef, &'static str> {
    Ok(ChannelRef {
        conn: take_u64(bytes)?,
        channel: take_u16(bytes)?,
    })
}

fn take_ids(bytes: &mut Bytes, count: usize) -> Result<Vec<u64>, &'static str> {
    if bytes.remaining() / 8 < count {
        return Err("short id list");
    }
    Ok((0..count).map(|_| bytes.get_u64()).collect())
}

fn take_u8(bytes: &mut Bytes) -> Result<u8, &'static str> {
    bytes
        .has_remaining()
        .then(|| bytes.get_u8())
        .ok_or("short record")
}

fn take_u16(bytes: &mut Bytes) -> Result<u16, &'static str> {
    (bytes.remaining() >= 2)
        .then(|| bytes.get_u16())
        .ok_or("short record")
}

fn take_u32(bytes: &mut Bytes) -> Result<u32, &'static str> {
    (bytes.remaining() >= 4)
        .then(|| bytes.get_u32())
        .ok_or("short record")
}

fn take_u64(bytes: &mut Bytes) -> Result<u64, &'static str> {
    (bytes.remaining() >= 8)
        .then(|| bytes.get_u64())
        .ok_or("short record")
}

fn take_bytes(bytes: &mut Bytes, length: usize) -> Result<Bytes, &'static str> {
    (bytes.remaining() >= length)
        .then(|| bytes.split_to(length))
        .ok_or("short record")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> SharedMessage {
        let properties = BasicProperties {
            delivery_mode: Some(2),
            ..BasicProperties::default()
        };
        let route = Route {
            exchange: "x",
            routing_key: "k",
        };
        SharedMessage::new(route, &properties, b"body bytes")
    }

    fn channel() -> ChannelRef {
        ChannelRef {
            conn: 1 << 48 | 5,
            channel: 3,
        }
    }

    fn every_record() -> Vec<Record> {
        let got = GotMessage {
            message_id: 11,
            message: message(),
            redelivered: true,
            remaining: 4,
        };
        let ops = [
            RemoteOp::Count {
                renews_expiry: true,
            },
            RemoteOp::Purge,
            RemoteOp::Delete {
                if_unused: true,
                if_empty: false,
            },
            RemoteOp::Consume {
                key: 9,
                channel: channel(),
                prefetch: 10,
                no_ack: false,
                exclusive: true,
                priority: -2,
            },
            RemoteOp::Cancel { key: 9 },
            RemoteOp::Get {
                channel: channel(),
                no_ack: true,
            },
            RemoteOp::ChannelClosed { channel: channel() },
            RemoteOp::Recover { channel: channel() },
            RemoteOp::Barrier,
        ];
        let mut records = vec![
            Record::Publish {
                id: 7,
                confirm: true,
                queues: vec![1, 2 << 48],
                message: message(),
            },
            Record::Confirm { id: 9, ok: false },
            Record::Answer {
                id: 3,
                answer: Ok(RemoteAnswer::numbers(4, 1)),
            },
            Record::Answer {
                id: 4,
                answer: Ok(RemoteAnswer {
                    numbers: (0, 0),
                    got: Some(got),
                }),
            },
            Record::Answer {
                id: 5,
                answer: Err(AmqpError::new(404, "NOT_FOUND - gone".to_string())),
            },
            Record::Deliver {
                key: 9,
                channel: channel(),
                queue: 2 << 48,
                message_id: 12,
                redelivered: false,
                message: message(),
            },
            Record::Cancelled {
                key: 9,
                channel: channel(),
            },
        ];
        records.extend(ops.into_iter().map(|op| Record::Request {
            id: 1,
            queue: 5,
            op,
        }));
        let settles = [
            SettleOp::Ack(vec![1, 2, 3]),
            SettleOp::Reject {
                ids: vec![4],
                requeue: true,
            },
            SettleOp::Refused { consumer: 9, id: 4 },
            SettleOp::Written {
                consumer: 9,
                bytes: 4096,
            },
        ];
        records.extend(
            settles
                .into_iter()
                .map(|op| Record::Settle { queue: 5, op }),
        );
        records
    }

    #[test]
    fn every_record_round_trips_and_every_cut_or_extension_is_refused() {
        for record in every_record() {
            let bytes = encode(&record);
            let back = decode(bytes.clone()).expect("a record decodes");
            assert_eq!(encode(&back), bytes, "round trip");
            for cut in 0..bytes.len() {
                assert!(decode(bytes[..cut].to_vec()).is_err(), "cut at {cut}");
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(decode(longer).is_err());
        }
        assert!(decode(vec![99, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        let Ok(Record::Publish { message, .. }) = decode(encode(&every_record().remove(0))) else {
            panic!("a publish");
        };
        assert_eq!((message.exchange(), message.routing_key()), ("x", "k"));
        assert_eq!(message.body(), b"body bytes");
        assert!(message.is_persistent());
    }
}
