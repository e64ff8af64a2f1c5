//! Field tables and values: the typed maps in `arguments`, `headers` and peer properties.
//! Type letters follow RabbitMQ's errata, not the 0-9-1 PDF (e.g. 's' is a signed short).

use bytes::Bytes;

use super::ShortStr;

#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    Boolean(bool),
    ShortShortInt(i8),
    ShortShortUInt(u8),
    ShortInt(i16),
    ShortUInt(u16),
    LongInt(i32),
    LongUInt(u32),
    LongLongInt(i64),
    Float(f32),
    Double(f64),
    Decimal { scale: u8, value: u32 },
    LongString(Bytes),
    FieldArray(Vec<FieldValue>),
    Timestamp(u64),
    FieldTable(FieldTable),
    Void,
    ByteArray(Bytes),
}

impl FieldValue {
    /// Any integer kind, widened. Clients disagree on which width they send for the same
    /// argument (x-message-ttl arrives as 'I', 'l', 's' ...), so callers should not care.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            FieldValue::ShortShortInt(v) => Some(i64::from(*v)),
            FieldValue::ShortShortUInt(v) => Some(i64::from(*v)),
            FieldValue::ShortInt(v) => Some(i64::from(*v)),
            FieldValue::ShortUInt(v) => Some(i64::from(*v)),
            FieldValue::LongInt(v) => Some(i64::from(*v)),
            FieldValue::LongUInt(v) => Some(i64::from(*v)),
            FieldValue::LongLongInt(v) => Some(*v),
            _ => None,
        }
    }

    /// A long string holding UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            FieldValue::LongString(bytes) => std::str::from_utf8(bytes).ok(),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            FieldValue::Boolean(v) => Some(*v),
            _ => None,
        }
    }
}

/// Entries in the order the peer sent them: a Vec, not a map, because tables are small
/// (a handful of x-arguments or headers) and order matters for faithful re-encoding.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FieldTable(pub Vec<(ShortStr, FieldValue)>);

impl FieldTable {
    pub fn get(&self, key: &str) -> Option<&FieldValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Replaces the value of an existing key in place (keeping its position), else appends.
    pub fn insert(&mut self, key: impl Into<String>, value: FieldValue) {
        let key = key.into();
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = value,
            None => self.0.push((key, value)),
        }
    }

    pub fn remove(&mut self, key: &str) -> Option<FieldValue> {
        let index = self.0.iter().position(|(k, _)| k == key)?;
        Some(self.0.remove(index).1)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &FieldValue)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_replaces_in_place_and_remove_returns_the_value() {
        let mut table = FieldTable::default();
        assert!(table.is_empty());
        table.insert("a", FieldValue::Void);
        table.insert("b", FieldValue::Boolean(true));
        table.insert("a", FieldValue::LongInt(3));
        assert_eq!(table.len(), 2);
        assert_eq!(table.0[0], ("a".to_string(), FieldValue::LongInt(3)));
        assert_eq!(table.get("b").and_then(FieldValue::as_bool), Some(true));
        assert_eq!(table.remove("a"), Some(FieldValue::LongInt(3)));
        assert_eq!(table.remove("a"), None);
        assert_eq!(table.iter().count(), 1);
    }

    #[test]
    fn accessors_widen_and_reject_other_kinds() {
        assert_eq!(FieldValue::ShortInt(-3).as_i64(), Some(-3));
        assert_eq!(
            FieldValue::LongUInt(u32::MAX).as_i64(),
            Some(i64::from(u32::MAX))
        );
        assert_eq!(FieldValue::Timestamp(1).as_i64(), None);
        assert_eq!(
            FieldValue::LongString(Bytes::from_static(b"lazy")).as_str(),
            Some("lazy")
        );
        assert_eq!(
            FieldValue::LongString(Bytes::from_static(&[0xff])).as_str(),
            None
        );
        assert_eq!(FieldValue::Void.as_bool(), None);
    }
}
