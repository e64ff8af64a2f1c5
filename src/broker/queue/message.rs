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
//! Layout of the allocation (all lengths little-endian):
//! ```text
//! flags u8 | priority u8 | exchange_len u8 | routing_key_len u8 | properties_len u32
//! [expiration_ms u64, only with FLAG_EXPIRATION]
//! exchange | routing key | properties (flag words + property list) | body
//! ```

use bytes::{Bytes, BytesMut};
use std::cell::RefCell;
use std::fmt;
use triomphe::ThinArc;

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

/// flags, priority, exchange_len, routing_key_len, properties_len.
const FIXED_HEADER_BYTES: usize = 8;
const EXPIRATION_BYTES: usize = 8;

thread_local! {
    /// Where a message is assembled before its one allocation is made: the parts arrive
    /// separately (strings, property bytes, body frames) and the allocation needs its length.
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
    priority: u8,
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
            priority: properties.priority.unwrap_or(0),
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
        body: impl IntoIterator<Item = &'b [u8]>,
    ) -> Message {
        Message::build(route, properties, raw_properties, body)
    }

    fn build<'b>(
        route: Route<'_>,
        properties: &BasicProperties,
        raw_properties: &[u8],
        body: impl IntoIterator<Item = &'b [u8]>,
    ) -> Message {
        let hot = Hot::of(properties);
        let exchange = shortstr(route.exchange);
        let routing_key = shortstr(route.routing_key);
        // Property lists are bounded by frame_max (u32), so this never saturates in practice.
        let properties_len = u32::try_from(raw_properties.len()).unwrap_or(u32::MAX);
        let raw_properties = raw_properties
            .get(..properties_len as usize)
            .unwrap_or(raw_properties);
        BUILD_SCRATCH.with(|scratch| {
            let mut out = scratch.borrow_mut();
            out.clear();
            out.push(hot.flags);
            out.push(hot.priority);
            out.push(exchange.len() as u8);
            out.push(routing_key.len() as u8);
            out.extend_from_slice(&properties_len.to_le_bytes());
            if let Some(ms) = hot.expiration_ms {
                out.extend_from_slice(&ms.to_le_bytes());
            }
            out.extend_from_slice(exchange.as_bytes());
            out.extend_from_slice(routing_key.as_bytes());
            out.extend_from_slice(raw_properties);
            for part in body {
                out.extend_from_slice(part);
            }
            let bytes = ThinArc::from_header_and_slice((), out.as_slice());
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

    fn byte(&self, at: usize) -> usize {
        usize::from(self.all().get(at).copied().unwrap_or(0))
    }

    fn properties_len(&self) -> usize {
        let len: [u8; 4] = self
            .all()
            .get(4..FIXED_HEADER_BYTES)
            .and_then(|b| b.try_into().ok())
            .unwrap_or_default();
        u32::from_le_bytes(len) as usize
    }

    fn header_len(&self) -> usize {
        if self.flags() & FLAG_EXPIRATION != 0 {
            FIXED_HEADER_BYTES + EXPIRATION_BYTES
        } else {
            FIXED_HEADER_BYTES
        }
    }

    /// Offsets of exchange, routing key, properties and body: each part ends where the next
    /// starts; the body runs to the end.
    fn offsets(&self) -> [usize; 4] {
        let exchange = self.header_len();
        let routing_key = exchange + self.byte(2);
        let properties = routing_key + self.byte(3);
        let body = properties + self.properties_len();
        [exchange, routing_key, properties, body]
    }

    fn part(&self, start: usize, end: usize) -> &[u8] {
        self.all().get(start..end).unwrap_or_default()
    }

    pub fn exchange(&self) -> &str {
        let [exchange, routing_key, ..] = self.offsets();
        std::str::from_utf8(self.part(exchange, routing_key)).unwrap_or_default()
    }

    pub fn routing_key(&self) -> &str {
        let [_, routing_key, properties, _] = self.offsets();
        std::str::from_utf8(self.part(routing_key, properties)).unwrap_or_default()
    }

    /// The content header's property flags and list, ready to copy to the wire.
    pub fn raw_properties(&self) -> &[u8] {
        let [_, _, properties, body] = self.offsets();
        self.part(properties, body)
    }

    pub fn body(&self) -> &[u8] {
        let [.., body] = self.offsets();
        self.all().get(body..).unwrap_or_default()
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
        (self.flags() & FLAG_PRIORITY != 0).then(|| self.byte(1) as u8)
    }

    /// The `expiration` property in milliseconds (capped as `parse_expiration` caps it).
    pub fn expiration_ms(&self) -> Option<u64> {
        if self.flags() & FLAG_EXPIRATION == 0 {
            return None;
        }
        let ms: [u8; 8] = self
            .all()
            .get(FIXED_HEADER_BYTES..FIXED_HEADER_BYTES + EXPIRATION_BYTES)
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
        // header 8 + routing key 1 + flags and delivery mode 3 + body 16.
        assert_eq!(message.allocated_bytes(), 28);
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
