//! Primitive AMQP types on the wire: integers, short/long strings, field tables and arrays.
//!
//! Readers take `&mut Bytes` and advance it; every length is checked against the bytes left
//! before anything is sliced or allocated. Long strings come back as zero-copy slices.

use crate::limits::FIELD_NESTING_DEPTH_MAX;
use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::field::{FieldTable, FieldValue};
use super::{ProtocolError, ShortStr};

/// A shortstr's length is one octet.
pub const SHORTSTR_LEN_MAX: usize = u8::MAX as usize;

fn ensure(buf: &Bytes, need: usize) -> Result<(), ProtocolError> {
    if buf.len() < need {
        return Err(ProtocolError::Truncated {
            need,
            have: buf.len(),
        });
    }
    Ok(())
}

pub fn read_u8(buf: &mut Bytes) -> Result<u8, ProtocolError> {
    ensure(buf, 1)?;
    Ok(buf.get_u8())
}

pub fn read_u16(buf: &mut Bytes) -> Result<u16, ProtocolError> {
    ensure(buf, 2)?;
    Ok(buf.get_u16())
}

pub fn read_u32(buf: &mut Bytes) -> Result<u32, ProtocolError> {
    ensure(buf, 4)?;
    Ok(buf.get_u32())
}

pub fn read_u64(buf: &mut Bytes) -> Result<u64, ProtocolError> {
    ensure(buf, 8)?;
    Ok(buf.get_u64())
}

/// Splits off `len` bytes, checking they are present.
fn read_exact(buf: &mut Bytes, len: usize) -> Result<Bytes, ProtocolError> {
    ensure(buf, len)?;
    Ok(buf.split_to(len))
}

fn read_shortstr_bytes(buf: &mut Bytes) -> Result<Bytes, ProtocolError> {
    let len = usize::from(read_u8(buf)?);
    read_exact(buf, len)
}

pub fn read_shortstr(buf: &mut Bytes) -> Result<ShortStr, ProtocolError> {
    let raw = read_shortstr_bytes(buf)?;
    match std::str::from_utf8(&raw) {
        Ok(text) => Ok(text.to_owned()),
        Err(_) => Err(ProtocolError::BadUtf8),
    }
}

/// For reserved shortstr fields: their content is meaningless, so it is not validated.
pub fn skip_shortstr(buf: &mut Bytes) -> Result<(), ProtocolError> {
    read_shortstr_bytes(buf).map(drop)
}

pub fn read_longstr(buf: &mut Bytes) -> Result<Bytes, ProtocolError> {
    let len = read_u32(buf)?;
    read_exact(buf, len as usize)
}

pub fn skip_longstr(buf: &mut Bytes) -> Result<(), ProtocolError> {
    read_longstr(buf).map(drop)
}

/// Writes at most 255 bytes, cut at a character boundary. Shortstrs we send either came in as
/// shortstrs or are ours (reply texts may quote a 255-byte name); cutting a reply text is what a
/// peer would rather see than a connection we cannot encode.
pub fn write_shortstr(out: &mut BytesMut, text: &str) {
    let mut len = text.len().min(SHORTSTR_LEN_MAX);
    while !text.is_char_boundary(len) {
        len -= 1;
    }
    out.put_u8(len as u8);
    out.put_slice(&text.as_bytes()[..len]);
}

/// Long strings we send are bounded by frame sizes far below 4 GiB; a longer one is a bug.
pub fn write_longstr(out: &mut BytesMut, bytes: &[u8]) {
    debug_assert!(u32::try_from(bytes.len()).is_ok());
    let len = bytes.len().min(u32::MAX as usize);
    out.put_u32(len as u32);
    out.put_slice(&bytes[..len]);
}

/// Reserves a u32 length slot, runs `body`, then backpatches the slot with the bytes written.
/// Avoids a temporary buffer for tables, arrays and frames.
pub fn write_length_prefixed(out: &mut BytesMut, body: impl FnOnce(&mut BytesMut)) {
    let slot = out.len();
    out.put_u32(0);
    body(out);
    let written = out.len() - slot - 4;
    debug_assert!(u32::try_from(written).is_ok());
    out[slot..slot + 4].copy_from_slice(&(written as u32).to_be_bytes());
}

pub fn read_table(buf: &mut Bytes) -> Result<FieldTable, ProtocolError> {
    read_table_at_depth(buf, 0)
}

fn read_table_at_depth(buf: &mut Bytes, depth: usize) -> Result<FieldTable, ProtocolError> {
    let mut body = read_longstr(buf)?;
    let mut entries = Vec::new();
    // Each entry consumes at least two bytes (key length + type letter), so the loop is bounded
    // by the table's declared and present length.
    while !body.is_empty() {
        let key = read_shortstr(&mut body)?;
        let value = read_field_value(&mut body, depth)?;
        entries.push((key, value));
    }
    Ok(FieldTable(entries))
}

fn read_array_at_depth(buf: &mut Bytes, depth: usize) -> Result<Vec<FieldValue>, ProtocolError> {
    let mut body = read_longstr(buf)?;
    let mut values = Vec::new();
    while !body.is_empty() {
        values.push(read_field_value(&mut body, depth)?);
    }
    Ok(values)
}

/// `depth` is the nesting of the container holding this value (0 = top-level table).
fn read_field_value(buf: &mut Bytes, depth: usize) -> Result<FieldValue, ProtocolError> {
    let type_letter = read_u8(buf)?;
    let value = match type_letter {
        b't' => FieldValue::Boolean(read_u8(buf)? != 0),
        b'b' => FieldValue::ShortShortInt(read_u8(buf)? as i8),
        b'B' => FieldValue::ShortShortUInt(read_u8(buf)?),
        b's' => FieldValue::ShortInt(read_u16(buf)? as i16),
        b'u' => FieldValue::ShortUInt(read_u16(buf)?),
        b'I' => FieldValue::LongInt(read_u32(buf)? as i32),
        b'i' => FieldValue::LongUInt(read_u32(buf)?),
        b'l' => FieldValue::LongLongInt(read_u64(buf)? as i64),
        b'f' => FieldValue::Float(f32::from_bits(read_u32(buf)?)),
        b'd' => FieldValue::Double(f64::from_bits(read_u64(buf)?)),
        b'D' => FieldValue::Decimal {
            scale: read_u8(buf)?,
            value: read_u32(buf)?,
        },
        b'S' => FieldValue::LongString(read_longstr(buf)?),
        b'x' => FieldValue::ByteArray(read_longstr(buf)?),
        b'T' => FieldValue::Timestamp(read_u64(buf)?),
        b'V' => FieldValue::Void,
        b'A' | b'F' => {
            let inner = depth + 1;
            if inner > FIELD_NESTING_DEPTH_MAX {
                return Err(ProtocolError::NestingTooDeep {
                    max: FIELD_NESTING_DEPTH_MAX,
                });
            }
            if type_letter == b'A' {
                FieldValue::FieldArray(read_array_at_depth(buf, inner)?)
            } else {
                FieldValue::FieldTable(read_table_at_depth(buf, inner)?)
            }
        }
        other => return Err(ProtocolError::BadFieldType { type_letter: other }),
    };
    Ok(value)
}

pub fn write_table(out: &mut BytesMut, table: &FieldTable) {
    write_length_prefixed(out, |out| {
        for (key, value) in &table.0 {
            write_shortstr(out, key);
            write_field_value(out, value);
        }
    });
}

fn write_field_value(out: &mut BytesMut, value: &FieldValue) {
    match value {
        FieldValue::Boolean(v) => {
            out.put_u8(b't');
            out.put_u8(u8::from(*v));
        }
        FieldValue::ShortShortInt(v) => {
            out.put_u8(b'b');
            out.put_i8(*v);
        }
        FieldValue::ShortShortUInt(v) => {
            out.put_u8(b'B');
            out.put_u8(*v);
        }
        FieldValue::ShortInt(v) => {
            out.put_u8(b's');
            out.put_i16(*v);
        }
        FieldValue::ShortUInt(v) => {
            out.put_u8(b'u');
            out.put_u16(*v);
        }
        FieldValue::LongInt(v) => {
            out.put_u8(b'I');
            out.put_i32(*v);
        }
        FieldValue::LongUInt(v) => {
            out.put_u8(b'i');
            out.put_u32(*v);
        }
        FieldValue::LongLongInt(v) => {
            out.put_u8(b'l');
            out.put_i64(*v);
        }
        FieldValue::Float(v) => {
            out.put_u8(b'f');
            out.put_u32(v.to_bits());
        }
        FieldValue::Double(v) => {
            out.put_u8(b'd');
            out.put_u64(v.to_bits());
        }
        FieldValue::Decimal { scale, value } => {
            out.put_u8(b'D');
            out.put_u8(*scale);
            out.put_u32(*value);
        }
        FieldValue::LongString(v) => {
            out.put_u8(b'S');
            write_longstr(out, v);
        }
        FieldValue::ByteArray(v) => {
            out.put_u8(b'x');
            write_longstr(out, v);
        }
        FieldValue::Timestamp(v) => {
            out.put_u8(b'T');
            out.put_u64(*v);
        }
        FieldValue::Void => out.put_u8(b'V'),
        FieldValue::FieldArray(values) => {
            out.put_u8(b'A');
            write_length_prefixed(out, |out| {
                for value in values {
                    write_field_value(out, value);
                }
            });
        }
        FieldValue::FieldTable(table) => {
            out.put_u8(b'F');
            write_table(out, table);
        }
    }
}

/// Decodes a field table given without its 4-byte length prefix (the AMQPLAIN SASL response).
pub fn decode_table_body(body: &[u8]) -> Result<FieldTable, ProtocolError> {
    // A SASL response is a longstr, so its length always fits; saturate rather than trust it.
    let length = u32::try_from(body.len()).unwrap_or(u32::MAX);
    let mut framed = BytesMut::with_capacity(body.len() + 4);
    framed.put_u32(length);
    framed.extend_from_slice(body);
    read_table(&mut framed.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_kind() -> FieldTable {
        let mut inner = FieldTable::default();
        inner.insert(
            "x-inner",
            FieldValue::LongString(Bytes::from_static(b"deep")),
        );
        inner.insert(
            "arr",
            FieldValue::FieldArray(vec![
                FieldValue::Void,
                FieldValue::FieldTable(FieldTable::default()),
                FieldValue::FieldArray(vec![FieldValue::ShortShortInt(-1)]),
            ]),
        );
        FieldTable(vec![
            ("t".into(), FieldValue::Boolean(true)),
            ("b".into(), FieldValue::ShortShortInt(-5)),
            ("B".into(), FieldValue::ShortShortUInt(250)),
            ("s".into(), FieldValue::ShortInt(-30000)),
            ("u".into(), FieldValue::ShortUInt(60000)),
            ("I".into(), FieldValue::LongInt(-2_000_000_000)),
            ("i".into(), FieldValue::LongUInt(4_000_000_000)),
            ("l".into(), FieldValue::LongLongInt(i64::MIN + 1)),
            ("f".into(), FieldValue::Float(1.5)),
            ("d".into(), FieldValue::Double(-2.25e300)),
            (
                "D".into(),
                FieldValue::Decimal {
                    scale: 2,
                    value: 12345,
                },
            ),
            (
                "S".into(),
                FieldValue::LongString(Bytes::from_static(b"hi")),
            ),
            (
                "x".into(),
                FieldValue::ByteArray(Bytes::from_static(&[0, 255])),
            ),
            ("T".into(), FieldValue::Timestamp(1_700_000_000)),
            ("V".into(), FieldValue::Void),
            (
                "A".into(),
                FieldValue::FieldArray(vec![FieldValue::LongInt(7)]),
            ),
            ("F".into(), FieldValue::FieldTable(inner)),
            ("ünïcode".into(), FieldValue::Boolean(false)),
        ])
    }

    fn encoded(table: &FieldTable) -> Bytes {
        let mut out = BytesMut::new();
        write_table(&mut out, table);
        out.freeze()
    }

    #[test]
    fn every_field_type_round_trips_including_nesting() {
        let table = every_kind();
        let mut wire = encoded(&table);
        assert_eq!(read_table(&mut wire), Ok(table));
        assert!(wire.is_empty());
    }

    #[test]
    fn rabbitmq_type_letters_on_the_wire() {
        let table = FieldTable(vec![("k".into(), FieldValue::ShortInt(-2))]);
        // len(4) | keylen 1 'k' | 's' | i16
        assert_eq!(
            &encoded(&table)[..],
            &[0, 0, 0, 5, 1, b'k', b's', 0xff, 0xfe][..]
        );
    }

    #[test]
    fn every_truncation_is_an_error() {
        let wire = encoded(&every_kind());
        for cut in 0..wire.len() {
            let mut partial = wire.slice(..cut);
            assert!(read_table(&mut partial).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn declared_length_beyond_the_buffer_is_truncated() {
        let mut wire = Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 1]);
        assert_eq!(
            read_table(&mut wire),
            Err(ProtocolError::Truncated {
                need: u32::MAX as usize,
                have: 1
            })
        );
    }

    #[test]
    fn unknown_type_letter_and_bad_utf8_are_syntax_errors() {
        let mut wire = Bytes::from_static(&[0, 0, 0, 3, 1, b'k', b'Z']);
        assert_eq!(
            read_table(&mut wire),
            Err(ProtocolError::BadFieldType { type_letter: b'Z' })
        );
        let mut wire = Bytes::from_static(&[0, 0, 0, 3, 1, 0xff, b'V']);
        assert_eq!(read_table(&mut wire), Err(ProtocolError::BadUtf8));
    }

    #[test]
    fn an_entry_overrunning_its_table_is_an_error() {
        // Table says 4 bytes, but the long string inside claims 2 more than the table holds.
        let mut wire = Bytes::from_static(&[0, 0, 0, 4, 1, b'k', b'S', 0, 0, 0, 2, b'a', b'b']);
        assert!(matches!(
            read_table(&mut wire),
            Err(ProtocolError::Truncated { .. })
        ));
    }

    fn nested_arrays(levels: usize) -> FieldTable {
        let mut value = FieldValue::Void;
        for _ in 0..levels {
            value = FieldValue::FieldArray(vec![value]);
        }
        FieldTable(vec![("k".into(), value)])
    }

    #[test]
    fn nesting_is_bounded() {
        let mut at_limit = encoded(&nested_arrays(FIELD_NESTING_DEPTH_MAX));
        assert!(read_table(&mut at_limit).is_ok());
        let mut too_deep = encoded(&nested_arrays(FIELD_NESTING_DEPTH_MAX + 1));
        assert_eq!(
            read_table(&mut too_deep),
            Err(ProtocolError::NestingTooDeep {
                max: FIELD_NESTING_DEPTH_MAX
            })
        );
    }

    #[test]
    fn long_shortstr_is_cut_at_a_char_boundary() {
        let text = "é".repeat(200); // 400 bytes
        let mut out = BytesMut::new();
        write_shortstr(&mut out, &text);
        let mut wire = out.freeze();
        let back = read_shortstr(&mut wire).expect("valid utf8 after cut");
        assert_eq!(back.len(), 254);
    }
}
