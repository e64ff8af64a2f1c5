//! A message as the broker keeps it: one reference-counted allocation holding the exchange, the
//! routing key, the content-header properties exactly as they go on the wire, and the body.
//!
//! Why this shape: a queued message is paid for once per message, so it must be small (a
//! decoded `BasicProperties` alone is ~290 bytes) and cheap to deliver (the raw properties are
//! copied to the wire, never re-encoded). The few properties the hot path looks at (persistence,
//! priority, expiration, whether there are headers) are parsed once when the message is built;
//! everything else is decoded on demand by the rarer paths that need it (headers exchange,
//! dead-lettering, deduplication, CC/BCC). A message never changes: paths that alter its
//! properties build a new one.
//!
//! Layout of the allocation, sized for the common case (a 16-byte body queued a million times
//! must cost under 100 bytes, so every byte of this header shows in the allocator's size class):
//! ```text
//! flags u8 | exchange_len u8 | routing_key_len u8
//! [properties_len: LEB128, unless the properties are one of the CANNED encodings]
//! [priority u8, with FLAG_PRIORITY] [expiration_ms u64 LE, with FLAG_EXPIRATION]
//! exchange | routing key | [properties (flag words + property list)] | body
//! ```

use bytes::{Bytes, BytesMut};
use std::cell::RefCell;
use std::fmt;
use triomphe::{Arc as TriompheArc, HeaderWithLength, ThinArc, UniqueArc};

use super::config::parse_expiration;
use crate::protocol::{BasicProperties, FieldTable, SHORTSTR_LEN_MAX};

/// delivery_mode of a persistent message.
pub const DELIVERY_MODE_PERSISTENT: u8 = 2;

/// A build scratch buffer larger than this is released after use, so one huge message does not
/// pin its size in every shard's thread for good.
const BUILD_SCRATCH_KEEP_BYTES: usize = 256 * 1024;

const FLAG_PERSISTENT: u8 = 1 << 0;
const FLAG_HEADERS: u8 = 1 << 1;
const FLAG_PRIORITY: u8 = 1 << 2;
const FLAG_EXPIRATION: u8 = 1 << 3;
/// Bits 4..=5: which of [`CANNED`] the properties are, or 0 when they are stored inline.
const CANNED_SHIFT: u32 = 4;
const CANNED_MASK: u8 = 0b11 << CANNED_SHIFT;

/// Property encodings most messages carry, not stored per message: none at all, and
/// delivery_mode alone (1 or 2), which is what most clients send. Stored by index.
const CANNED: [&[u8]; 3] = BasicProperties::COMMON_ENCODINGS;

/// flags, exchange_len, routing_key_len.
const FIXED_HEADER_BYTES: usize = 3;
/// A LEB128 u32 takes at most 5 bytes.
const VARINT_BYTES_MAX: usize = 5;
const EXPIRATION_BYTES: usize = 8;

thread_local! {
    /// Where the header, route and properties are assembled before the one allocation is made
    /// (its length must be known first); the body is copied straight into the allocation.
    static BUILD_SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Immutable and cheap to clone (a reference count): shared by every queue a publish reached.
/// One word: the slice length lives in the allocation (`ThinArc`), beside a reference count with
/// no weak count, so the allocation is as small as `Arc<[u8]>`'s and the entries holding a
/// message (ready, unacked, deliveries) are a word smaller.
#[derive(Clone)]
pub struct Message {
    bytes: ThinArc<(), u8>,
}

/// A message is shared by cloning it; the alias keeps the older name readable at call sites.
pub type SharedMessage = Message;

/// The hot properties, read once from the decoded properties when a message is built.
#[derive(Clone, Copy)]
struct Hot {
    flags: u8,
    expiration_ms: Option<u64>,
}

impl Hot {
    fn of(properties: &BasicProperties) -> Hot {
        let mut flags = 0;
        if properties.delivery_mode == Some(DELIVERY_MODE_PERSISTENT) {
            flags |= FLAG_PERSISTENT;
        }
        if properties.headers.is_some() {
            flags |= FLAG_HEADERS;
        }
        if properties.priority.is_some() {
            flags |= FLAG_PRIORITY;
        }
        // Validated by the session; an unparsable value from another path means no TTL.
        let expiration_ms = properties
            .expiration
            .as_deref()
            .and_then(|text| parse_expiration(text).ok());
        if expiration_ms.is_some() {
            flags |= FLAG_EXPIRATION;
        }
        Hot {
            flags,
            expiration_ms,
        }
    }
}

/// Where a message goes: exchange and routing key (shortstrs: longer ones are cut at 255 bytes,
/// on a character boundary, as the wire would cut them).
#[derive(Clone, Copy, Debug)]
pub struct Route<'a> {
    pub exchange: &'a str,
    pub routing_key: &'a str,
}

impl Message {
    /// Builds a message from properties that are not on the wire yet (they are encoded here).
    pub fn new(route: Route<'_>, properties: &BasicProperties, body: &[u8]) -> Message {
        let mut raw = BytesMut::new();
        properties.encode(&mut raw);
        Message::build(route, properties, &raw, [body])
    }

    /// Builds a message from the properties as received: `raw_properties` must be the encoding
    /// of `properties` (flag words and property list), so delivery can copy it to the wire.
    /// The body may come in parts (one per body frame).
    pub fn from_wire<'b>(
        route: Route<'_>,
        properties: &BasicProperties,
        raw_properties: &[u8],
        body: impl IntoIterator<Item = &'b [u8], IntoIter: Clone>,
    ) -> Message {
        Message::build(route, properties, raw_properties, body)
    }

    fn build<'b>(
        route: Route<'_>,
        properties: &BasicProperties,
        raw_properties: &[u8],
        body: impl IntoIterator<Item = &'b [u8], IntoIter: Clone>,
    ) -> Message {
        let hot = Hot::of(properties);
        let exchange = shortstr(route.exchange);
        let routing_key = shortstr(route.routing_key);
        // Property lists are bounded by frame_max (u32), so this never cuts in practice.
        let properties_len = u32::try_from(raw_properties.len()).unwrap_or(u32::MAX);
        let raw_properties = raw_properties
            .get(..properties_len as usize)
            .unwrap_or(raw_properties);
        let canned = CANNED
            .iter()
            .position(|encoding| *encoding == raw_properties)
            .map_or(0, |index| index as u8 + 1);
        BUILD_SCRATCH.with(|scratch| {
            let mut out = scratch.borrow_mut();
            out.clear();
            out.push(hot.flags | (canned << CANNED_SHIFT));
            out.push(exchange.len() as u8);
            out.push(routing_key.len() as u8);
            if canned == 0 {
                write_varint(&mut out, properties_len);
            }
            if let Some(priority) = properties.priority {
                out.push(priority);
            }
            if let Some(ms) = hot.expiration_ms {
                out.extend_from_slice(&ms.to_le_bytes());
            }
            out.extend_from_slice(exchange.as_bytes());
            out.extend_from_slice(routing_key.as_bytes());
            if canned == 0 {
                out.extend_from_slice(raw_properties);
            }
            let bytes = allocate(&out, body.into_iter());
            out.clear();
            if out.capacity() > BUILD_SCRATCH_KEEP_BYTES {
                out.shrink_to(BUILD_SCRATCH_KEEP_BYTES);
            }
            Message { bytes }
        })
    }

    fn all(&self) -> &[u8] {
        &self.bytes.slice
    }

    fn flags(&self) -> u8 {
        self.all().first().copied().unwrap_or(0)
    }

    /// Where each part sits; recomputed per access (a few byte reads) rather than stored, as
    /// every stored byte is paid per queued message.
    fn layout(&self) -> Layout {
        let all = self.all();
        let flags = self.flags();
        let byte = |at: usize| usize::from(all.get(at).copied().unwrap_or(0));
        let canned = usize::from((flags & CANNED_MASK) >> CANNED_SHIFT);
        let mut at = FIXED_HEADER_BYTES;
        let properties_len = if canned == 0 {
            let (len, used) = read_varint(all.get(at..).unwrap_or_default());
            at += used;
            len as usize
        } else {
            0
        };
        let priority = (flags & FLAG_PRIORITY != 0).then(|| {
            at += 1;
            byte(at - 1) as u8
        });
        let expiration_at = at;
        if flags & FLAG_EXPIRATION != 0 {
            at += EXPIRATION_BYTES;
        }
        let exchange = at;
        let routing_key = exchange + byte(1);
        let properties = routing_key + byte(2);
        let body = properties + properties_len;
        Layout {
            canned: canned
                .checked_sub(1)
                .and_then(|index| CANNED.get(index).copied()),
            priority,
            expiration_at,
            exchange,
            routing_key,
            properties,
            body,
        }
    }

    fn part(&self, start: usize, end: usize) -> &[u8] {
        self.all().get(start..end).unwrap_or_default()
    }

    pub fn exchange(&self) -> &str {
        let layout = self.layout();
        std::str::from_utf8(self.part(layout.exchange, layout.routing_key)).unwrap_or_default()
    }

    pub fn routing_key(&self) -> &str {
        let layout = self.layout();
        std::str::from_utf8(self.part(layout.routing_key, layout.properties)).unwrap_or_default()
    }

    /// The content header's property flags and list, ready to copy to the wire.
    pub fn raw_properties(&self) -> &[u8] {
        let layout = self.layout();
        match layout.canned {
            Some(encoding) => encoding,
            None => self.part(layout.properties, layout.body),
        }
    }

    pub fn body(&self) -> &[u8] {
        let layout = self.layout();
        self.all().get(layout.body..).unwrap_or_default()
    }

    pub fn body_len(&self) -> usize {
        self.body().len()
    }

    /// Decodes the properties (allocates: for the paths that need more than the hot fields).
    /// They were valid when the message was built, so the default is never expected.
    pub fn properties(&self) -> BasicProperties {
        let mut raw = Bytes::copy_from_slice(self.raw_properties());
        BasicProperties::decode(&mut raw).unwrap_or_default()
    }

    /// The `headers` property, decoded; None without a headers table (no decoding then).
    pub fn headers(&self) -> Option<FieldTable> {
        if !self.has_headers() {
            return None;
        }
        self.properties().headers
    }

    /// delivery_mode = 2.
    pub fn is_persistent(&self) -> bool {
        self.flags() & FLAG_PERSISTENT != 0
    }

    pub fn has_headers(&self) -> bool {
        self.flags() & FLAG_HEADERS != 0
    }

    pub fn priority(&self) -> Option<u8> {
        self.layout().priority
    }

    /// The `expiration` property in milliseconds (capped as `parse_expiration` caps it).
    pub fn expiration_ms(&self) -> Option<u64> {
        if self.flags() & FLAG_EXPIRATION == 0 {
            return None;
        }
        let at = self.layout().expiration_at;
        let ms: [u8; EXPIRATION_BYTES] = self
            .all()
            .get(at..at + EXPIRATION_BYTES)
            .and_then(|b| b.try_into().ok())?;
        Some(u64::from_le_bytes(ms))
    }

    /// The same message with other properties (and the same route and body).
    pub fn with_properties(&self, properties: &BasicProperties) -> Message {
        let route = Route {
            exchange: self.exchange(),
            routing_key: self.routing_key(),
        };
        Message::new(route, properties, self.body())
    }

    /// Bytes of the one allocation (without the allocator's and the reference counts' share).
    pub fn allocated_bytes(&self) -> usize {
        self.all().len()
    }

    /// True when both handles share one allocation (for tests and assertions).
    pub fn ptr_eq(&self, other: &Message) -> bool {
        self.bytes.ptr() == other.bytes.ptr()
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("exchange", &self.exchange())
            .field("routing_key", &self.routing_key())
            .field("properties", &self.raw_properties().len())
            .field("body", &self.body_len())
            .finish()
    }
}

/// One allocation holding `prefix` then the body parts, each byte copied once.
fn allocate<'b>(prefix: &[u8], body: impl Iterator<Item = &'b [u8]> + Clone) -> ThinArc<(), u8> {
    let body_len: usize = body.clone().map(<[u8]>::len).sum();
    let len = prefix.len() + body_len;
    let mut unique: UniqueArc<_> =
        UniqueArc::from_header_and_uninit_slice(HeaderWithLength::new((), len), len);
    let (head, rest) = unique.slice.split_at_mut(prefix.len());
    head.write_copy_of_slice(prefix);
    let mut at = 0;
    for part in body {
        let Some(to) = rest.get_mut(at..at + part.len()) else {
            break;
        };
        to.write_copy_of_slice(part);
        at += part.len();
    }
    // The second pass over the parts saw what the first did; should it not, the rest is zeroed
    // rather than left uninitialised.
    debug_assert_eq!(at, body_len);
    for byte in rest.get_mut(at..).unwrap_or_default() {
        byte.write(0);
    }
    // SAFETY: every byte of the slice was written above (prefix, body parts, zeroed rest), and
    // the header was written by `from_header_and_uninit_slice`.
    let unique = unsafe { unique.assume_init_slice_with_header() };
    TriompheArc::into_thin(unique.shareable())
}

/// What [`Message::layout`] finds in the header.
struct Layout {
    canned: Option<&'static [u8]>,
    priority: Option<u8>,
    expiration_at: usize,
    exchange: usize,
    routing_key: usize,
    properties: usize,
    body: usize,
}

fn write_varint(out: &mut Vec<u8>, mut value: u32) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// (value, bytes used). Only reads what `write_varint` wrote; a cut one reads as what it has.
fn read_varint(bytes: &[u8]) -> (u32, usize) {
    let mut value = 0u32;
    for (index, &byte) in bytes.iter().take(VARINT_BYTES_MAX).enumerate() {
        value |= u32::from(byte & 0x7f) << (7 * index as u32);
        if byte & 0x80 == 0 {
            return (value, index + 1);
        }
    }
    (value, bytes.len().min(VARINT_BYTES_MAX))
}

/// At most 255 bytes, cut on a character boundary.
fn shortstr(text: &str) -> &str {
    let mut len = text.len().min(SHORTSTR_LEN_MAX);
    while !text.is_char_boundary(len) {
        len -= 1;
    }
    text.get(..len).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::FieldValue;

    fn route<'a>(exchange: &'a str, routing_key: &'a str) -> Route<'a> {
        Route {
            exchange,
            routing_key,
        }
    }

    #[test]
    fn parts_round_trip_and_raw_properties_are_the_encoding() {
        let mut headers = FieldTable::default();
        headers.insert("k", FieldValue::LongLongInt(7));
        let properties = BasicProperties {
            delivery_mode: Some(2),
            priority: Some(5),
            expiration: Some("1500".into()),
            headers: Some(headers),
            content_type: Some("text/plain".into()),
            ..Default::default()
        };
        let message = Message::new(route("ex", "a.b"), &properties, b"hello");
        assert_eq!(message.exchange(), "ex");
        assert_eq!(message.routing_key(), "a.b");
        assert_eq!(message.body(), b"hello");
        assert_eq!(message.properties(), properties);
        let mut encoded = BytesMut::new();
        properties.encode(&mut encoded);
        assert_eq!(message.raw_properties(), &encoded[..]);
        assert!(message.is_persistent() && message.has_headers());
        assert_eq!(message.priority(), Some(5));
        assert_eq!(message.expiration_ms(), Some(1500));
        assert_eq!(
            message.headers().and_then(|h| h.get("k").cloned()),
            Some(FieldValue::LongLongInt(7))
        );
    }

    #[test]
    fn handle_is_one_word() {
        assert_eq!(std::mem::size_of::<Message>(), 8);
        assert_eq!(std::mem::size_of::<Option<Message>>(), 8);
    }

    #[test]
    fn plain_message_is_small_and_has_no_hot_properties() {
        let properties = BasicProperties {
            delivery_mode: Some(1),
            ..Default::default()
        };
        let message = Message::new(route("", "q"), &properties, &[0u8; 16]);
        // header 3 + routing key 1 + body 16: the properties are a canned encoding.
        assert_eq!(message.allocated_bytes(), 20);
        assert_eq!(message.raw_properties(), &[0x10, 0x00, 0x01]);
        assert!(!message.is_persistent() && !message.has_headers());
        assert_eq!((message.priority(), message.expiration_ms()), (None, None));
        assert_eq!(message.headers(), None);
        assert_eq!(message.exchange(), "");
    }

    #[test]
    fn body_in_parts_and_empty_body() {
        let properties = BasicProperties::default();
        let message = Message::from_wire(
            route("x", "y"),
            &properties,
            &[0, 0],
            [&b"ab"[..], &b""[..], &b"cd"[..]],
        );
        assert_eq!(message.body(), b"abcd");
        let empty = Message::from_wire(route("x", "y"), &properties, &[0, 0], []);
        assert_eq!(empty.body(), b"");
        assert_eq!(empty.raw_properties(), &[0, 0]);
    }

    #[test]
    fn long_property_lists_use_a_longer_length_prefix() {
        let properties = BasicProperties {
            correlation_id: Some("c".repeat(200)),
            priority: Some(1),
            expiration: Some("70000".into()),
            ..Default::default()
        };
        let message = Message::new(route("e", "r"), &properties, b"tail");
        assert_eq!(message.properties(), properties);
        assert_eq!(message.priority(), Some(1));
        assert_eq!(message.expiration_ms(), Some(70_000));
        assert_eq!((message.exchange(), message.body()), ("e", &b"tail"[..]));
        for value in [0u32, 1, 127, 128, 300, 16_383, 16_384, u32::MAX] {
            let mut out = Vec::new();
            write_varint(&mut out, value);
            assert_eq!(read_varint(&out), (value, out.len()));
        }
    }

    #[test]
    fn every_canned_encoding_round_trips() {
        for (mode, encoding) in [
            (None, CANNED[0]),
            (Some(1), CANNED[1]),
            (Some(2), CANNED[2]),
        ] {
            let properties = BasicProperties {
                delivery_mode: mode,
                ..Default::default()
            };
            let message = Message::from_wire(route("", "k"), &properties, encoding, [&b"b"[..]]);
            assert_eq!(message.raw_properties(), encoding);
            assert_eq!(message.properties(), properties);
            assert_eq!(message.is_persistent(), mode == Some(2));
            assert_eq!(message.allocated_bytes(), 3 + 1 + 1);
        }
    }

    #[test]
    fn long_names_are_cut_on_a_character_boundary() {
        let long = "é".repeat(200);
        let message = Message::new(route(&long, &long), &BasicProperties::default(), b"z");
        assert_eq!(message.exchange().len(), 254);
        assert_eq!(message.routing_key().len(), 254);
        assert_eq!(message.body(), b"z");
    }

    #[test]
    fn with_properties_keeps_route_and_body_and_clones_share() {
        let message = Message::new(route("e", "r"), &BasicProperties::default(), b"body");
        let changed = message.with_properties(&BasicProperties {
            priority: Some(3),
            ..Default::default()
        });
        assert_eq!(
            (changed.exchange(), changed.routing_key(), changed.body()),
            ("e", "r", &b"body"[..])
        );
        assert_eq!(changed.priority(), Some(3));
        assert!(message.clone().ptr_eq(&message));
        assert!(!changed.ptr_eq(&message));
    }
}
