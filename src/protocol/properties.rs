//! basic's content properties, as carried by a content header frame.
//!
//! Wire shape: a 16-bit presence-flag word (bit 15 = first property), then only the present
//! properties in flag order. Bit 0 says "another flag word follows"; basic has 14 properties,
//! so any later word may only carry further continuation bits.

use crate::limits::PROPERTY_FLAG_WORDS_MAX;
use bytes::{BufMut, Bytes, BytesMut};

use super::codec::{read_shortstr, read_table, read_u16, read_u64, read_u8};
use super::codec::{write_shortstr, write_table};
use super::{FieldTable, ProtocolError, ShortStr};

const FLAG_CONTINUATION: u16 = 1 << 0;
const FLAG_CONTENT_TYPE: u16 = 1 << 15;
const FLAG_CONTENT_ENCODING: u16 = 1 << 14;
const FLAG_HEADERS: u16 = 1 << 13;
const FLAG_DELIVERY_MODE: u16 = 1 << 12;
const FLAG_PRIORITY: u16 = 1 << 11;
const FLAG_CORRELATION_ID: u16 = 1 << 10;
const FLAG_REPLY_TO: u16 = 1 << 9;
const FLAG_EXPIRATION: u16 = 1 << 8;
const FLAG_MESSAGE_ID: u16 = 1 << 7;
const FLAG_TIMESTAMP: u16 = 1 << 6;
const FLAG_KIND: u16 = 1 << 5;
const FLAG_USER_ID: u16 = 1 << 4;
const FLAG_APP_ID: u16 = 1 << 3;
const FLAG_CLUSTER_ID: u16 = 1 << 2;
/// Bits 15..=2: the 14 properties basic defines.
const FLAGS_KNOWN: u16 = 0xfffc;

#[derive(Debug, Clone, PartialEq, Default)]
pub struct BasicProperties {
    pub content_type: Option<ShortStr>,
    pub content_encoding: Option<ShortStr>,
    pub headers: Option<FieldTable>,
    pub delivery_mode: Option<u8>,
    pub priority: Option<u8>,
    pub correlation_id: Option<ShortStr>,
    pub reply_to: Option<ShortStr>,
    pub expiration: Option<ShortStr>,
    pub message_id: Option<ShortStr>,
    pub timestamp: Option<u64>,
    /// The property named `type` in the spec.
    pub kind: Option<ShortStr>,
    pub user_id: Option<ShortStr>,
    pub app_id: Option<ShortStr>,
    pub cluster_id: Option<ShortStr>,
}

fn read_if<T>(
    flags: u16,
    flag: u16,
    buf: &mut Bytes,
    read: fn(&mut Bytes) -> Result<T, ProtocolError>,
) -> Result<Option<T>, ProtocolError> {
    if flags & flag == 0 {
        return Ok(None);
    }
    read(buf).map(Some)
}

fn read_flags(buf: &mut Bytes) -> Result<u16, ProtocolError> {
    let flags = read_u16(buf)?;
    if flags & !FLAGS_KNOWN & !FLAG_CONTINUATION != 0 {
        return Err(ProtocolError::UnknownProperty { flags });
    }
    let mut more = flags & FLAG_CONTINUATION != 0;
    for _ in 1..PROPERTY_FLAG_WORDS_MAX {
        if !more {
            return Ok(flags);
        }
        let extra = read_u16(buf)?;
        if extra & !FLAG_CONTINUATION != 0 {
            return Err(ProtocolError::UnknownProperty { flags: extra });
        }
        more = extra & FLAG_CONTINUATION != 0;
    }
    if more {
        return Err(ProtocolError::TooManyPropertyFlagWords {
            max: PROPERTY_FLAG_WORDS_MAX,
        });
    }
    Ok(flags)
}

impl BasicProperties {
    /// Decodes flags and property list; `buf` must hold exactly that (trailing bytes are an error).
    /// No property set.
    pub const NONE: BasicProperties = BasicProperties {
        content_type: None,
        content_encoding: None,
        headers: None,
        delivery_mode: None,
        priority: None,
        correlation_id: None,
        reply_to: None,
        expiration: None,
        message_id: None,
        timestamp: None,
        kind: None,
        user_id: None,
        app_id: None,
        cluster_id: None,
    };

    /// The property lists most publishes carry, as encoded: none at all, and delivery_mode
    /// alone (1 or 2). Stored messages name them by index (`broker::queue::message`): only
    /// append to this list.
    pub const COMMON_ENCODINGS: [&'static [u8]; 3] =
        [&[0x00, 0x00], &[0x10, 0x00, 0x01], &[0x10, 0x00, 0x02]];

    /// What `raw` decodes to when it is one of [`Self::COMMON_ENCODINGS`]: a publish carrying
    /// one is not decoded (the ~300-byte struct is neither built nor moved per message).
    pub fn common(raw: &[u8]) -> Option<&'static BasicProperties> {
        static DECODED: [BasicProperties; 3] = [
            BasicProperties::NONE,
            BasicProperties {
                delivery_mode: Some(1),
                ..BasicProperties::NONE
            },
            BasicProperties {
                delivery_mode: Some(2),
                ..BasicProperties::NONE
            },
        ];
        BasicProperties::COMMON_ENCODINGS
            .iter()
            .position(|encoding| *encoding == raw)
            .map(|index| &DECODED[index])
    }

    pub fn decode(buf: &mut Bytes) -> Result<BasicProperties, ProtocolError> {
        let flags = read_flags(buf)?;
        let properties = BasicProperties {
            content_type: read_if(flags, FLAG_CONTENT_TYPE, buf, read_shortstr)?,
            content_encoding: read_if(flags, FLAG_CONTENT_ENCODING, buf, read_shortstr)?,
            headers: read_if(flags, FLAG_HEADERS, buf, read_table)?,
            delivery_mode: read_if(flags, FLAG_DELIVERY_MODE, buf, read_u8)?,
            priority: read_if(flags, FLAG_PRIORITY, buf, read_u8)?,
            correlation_id: read_if(flags, FLAG_CORRELATION_ID, buf, read_shortstr)?,
            reply_to: read_if(flags, FLAG_REPLY_TO, buf, read_shortstr)?,
            expiration: read_if(flags, FLAG_EXPIRATION, buf, read_shortstr)?,
            message_id: read_if(flags, FLAG_MESSAGE_ID, buf, read_shortstr)?,
            timestamp: read_if(flags, FLAG_TIMESTAMP, buf, read_u64)?,
            kind: read_if(flags, FLAG_KIND, buf, read_shortstr)?,
            user_id: read_if(flags, FLAG_USER_ID, buf, read_shortstr)?,
            app_id: read_if(flags, FLAG_APP_ID, buf, read_shortstr)?,
            cluster_id: read_if(flags, FLAG_CLUSTER_ID, buf, read_shortstr)?,
        };
        if !buf.is_empty() {
            return Err(ProtocolError::TrailingBytes { extra: buf.len() });
        }
        Ok(properties)
    }

    fn flags(&self) -> u16 {
        let present = [
            (self.content_type.is_some(), FLAG_CONTENT_TYPE),
            (self.content_encoding.is_some(), FLAG_CONTENT_ENCODING),
            (self.headers.is_some(), FLAG_HEADERS),
            (self.delivery_mode.is_some(), FLAG_DELIVERY_MODE),
            (self.priority.is_some(), FLAG_PRIORITY),
            (self.correlation_id.is_some(), FLAG_CORRELATION_ID),
            (self.reply_to.is_some(), FLAG_REPLY_TO),
            (self.expiration.is_some(), FLAG_EXPIRATION),
            (self.message_id.is_some(), FLAG_MESSAGE_ID),
            (self.timestamp.is_some(), FLAG_TIMESTAMP),
            (self.kind.is_some(), FLAG_KIND),
            (self.user_id.is_some(), FLAG_USER_ID),
            (self.app_id.is_some(), FLAG_APP_ID),
            (self.cluster_id.is_some(), FLAG_CLUSTER_ID),
        ];
        present
            .iter()
            .filter(|(is_set, _)| *is_set)
            .fold(0, |flags, (_, flag)| flags | flag)
    }

    /// Writes the flag word and the present properties.
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u16(self.flags());
        let shortstr = |out: &mut BytesMut, value: &Option<ShortStr>| {
            if let Some(text) = value {
                write_shortstr(out, text);
            }
        };
        shortstr(out, &self.content_type);
        shortstr(out, &self.content_encoding);
        if let Some(headers) = &self.headers {
            write_table(out, headers);
        }
        if let Some(mode) = self.delivery_mode {
            out.put_u8(mode);
        }
        if let Some(priority) = self.priority {
            out.put_u8(priority);
        }
        shortstr(out, &self.correlation_id);
        shortstr(out, &self.reply_to);
        shortstr(out, &self.expiration);
        shortstr(out, &self.message_id);
        if let Some(timestamp) = self.timestamp {
            out.put_u64(timestamp);
        }
        shortstr(out, &self.kind);
        shortstr(out, &self.user_id);
        shortstr(out, &self.app_id);
        shortstr(out, &self.cluster_id);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::protocol::FieldValue;

    #[test]
    fn the_common_encodings_are_what_they_decode_to() {
        for encoding in BasicProperties::COMMON_ENCODINGS {
            let decoded = BasicProperties::decode(&mut Bytes::from_static(encoding)).unwrap();
            assert_eq!(BasicProperties::common(encoding), Some(&decoded));
            let mut encoded = BytesMut::new();
            decoded.encode(&mut encoded);
            assert_eq!(&encoded[..], encoding);
        }
        let with_priority = [0x08, 0x00, 0x05];
        assert_eq!(BasicProperties::common(&with_priority), None);
    }

    pub(crate) fn all_set() -> BasicProperties {
        let mut headers = FieldTable::default();
        headers.insert("x-count", FieldValue::LongLongInt(3));
        BasicProperties {
            content_type: Some("application/json".into()),
            content_encoding: Some("gzip".into()),
            headers: Some(headers),
            delivery_mode: Some(2),
            priority: Some(9),
            correlation_id: Some("corr-1".into()),
            reply_to: Some("amq.rabbitmq.reply-to".into()),
            expiration: Some("60000".into()),
            message_id: Some("msg-42".into()),
            timestamp: Some(1_700_000_000),
            kind: Some("order.created".into()),
            user_id: Some("guest".into()),
            app_id: Some("shop".into()),
            cluster_id: Some("c1".into()),
        }
    }

    fn round_trip(properties: &BasicProperties) -> Result<BasicProperties, ProtocolError> {
        let mut out = BytesMut::new();
        properties.encode(&mut out);
        BasicProperties::decode(&mut out.freeze())
    }

    #[test]
    fn all_fourteen_set_round_trip() {
        let properties = all_set();
        assert_eq!(properties.flags(), FLAGS_KNOWN);
        assert_eq!(round_trip(&properties), Ok(properties));
    }

    #[test]
    fn none_set_is_a_zero_flag_word_only() {
        let mut out = BytesMut::new();
        BasicProperties::default().encode(&mut out);
        assert_eq!(&out[..], &[0, 0]);
        assert_eq!(
            round_trip(&BasicProperties::default()),
            Ok(BasicProperties::default())
        );
    }

    #[test]
    fn each_property_alone_round_trips() {
        let full = all_set();
        let singles = [
            BasicProperties {
                content_type: full.content_type.clone(),
                ..Default::default()
            },
            BasicProperties {
                headers: full.headers.clone(),
                ..Default::default()
            },
            BasicProperties {
                delivery_mode: full.delivery_mode,
                ..Default::default()
            },
            BasicProperties {
                timestamp: full.timestamp,
                ..Default::default()
            },
            BasicProperties {
                cluster_id: full.cluster_id.clone(),
                ..Default::default()
            },
        ];
        for properties in singles {
            assert_eq!(round_trip(&properties), Ok(properties.clone()));
        }
    }

    #[test]
    fn unknown_property_bit_and_endless_continuation_are_errors() {
        let mut wire = Bytes::from_static(&[0x00, 0x02]);
        assert_eq!(
            BasicProperties::decode(&mut wire),
            Err(ProtocolError::UnknownProperty { flags: 0x0002 })
        );
        let mut wire = Bytes::from_static(&[0, 1, 0, 1, 0, 1, 0, 1, 0, 1]);
        assert_eq!(
            BasicProperties::decode(&mut wire),
            Err(ProtocolError::TooManyPropertyFlagWords {
                max: PROPERTY_FLAG_WORDS_MAX
            })
        );
        // An empty continuation word is harmless.
        let mut wire = Bytes::from_static(&[0x10, 0x01, 0x00, 0x00, 2]);
        assert_eq!(
            BasicProperties::decode(&mut wire).map(|p| p.delivery_mode),
            Ok(Some(2))
        );
    }

    #[test]
    fn every_truncation_is_an_error() {
        let mut out = BytesMut::new();
        all_set().encode(&mut out);
        let wire = out.freeze();
        for cut in 0..wire.len() {
            assert!(
                BasicProperties::decode(&mut wire.slice(..cut)).is_err(),
                "cut at {cut}"
            );
        }
    }
}
