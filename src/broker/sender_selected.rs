//! Sender-selected distribution (RabbitMQ's `CC` and `BCC` headers): arrays of long strings,
//! each an extra routing key for the same exchange. `BCC` is removed from the message before
//! any queue sees it; `CC` stays.

use crate::limits::SENDER_SELECTED_KEYS_MAX;
use crate::protocol::{FieldTable, FieldValue};

use super::queue::Message;
#[cfg(test)]
use super::queue::Route;
use super::{QueueId, Topology};

pub const CC: &str = "CC";
pub const BCC: &str = "BCC";

/// RabbitMQ refuses a CC/BCC header that is not an array (406 "invalid message"). Returns the
/// reason text for the 406, or Ok.
pub fn check(headers: Option<&FieldTable>) -> Result<(), String> {
    let Some(headers) = headers else {
        return Ok(());
    };
    let mut keys = 0usize;
    for name in [CC, BCC] {
        match headers.get(name) {
            None => {}
            Some(FieldValue::FieldArray(items)) => keys += items.len(),
            Some(_) => {
                return Err(format!(
                    "invalid message: {{unacceptable_type_in_header,\"{name}\"}}"
                ))
            }
        }
    }
    if keys > SENDER_SELECTED_KEYS_MAX {
        return Err(format!(
            "invalid message: more than {SENDER_SELECTED_KEYS_MAX} CC/BCC routing keys"
        ));
    }
    Ok(())
}

/// True when the message names extra routing keys (the common case answers with two lookups).
pub fn has_extra_keys(headers: Option<&FieldTable>) -> bool {
    headers.is_some_and(|h| h.get(CC).is_some() || h.get(BCC).is_some())
}

/// The CC then BCC routing keys; entries that are not long strings are skipped, as RabbitMQ
/// does. At most [`SENDER_SELECTED_KEYS_MAX`].
pub fn extra_keys(headers: &FieldTable) -> impl Iterator<Item = &str> {
    [CC, BCC]
        .into_iter()
        .filter_map(|name| match headers.get(name) {
            Some(FieldValue::FieldArray(items)) => Some(items.iter()),
            _ => None,
        })
        .flatten()
        .filter_map(FieldValue::as_str)
        .take(SENDER_SELECTED_KEYS_MAX)
}

/// The message without its `BCC` header, or None when it has none (nothing to copy).
/// `headers` are the message's, already decoded by the caller.
/// Adds the destinations of the message's CC and BCC routing keys (through the same exchange)
/// to `destinations`, without duplicates.
pub fn add_destinations(
    topology: &Topology,
    vhost: &str,
    exchange: &str,
    headers: &FieldTable,
    destinations: &mut Vec<QueueId>,
) {
    if !has_extra_keys(Some(headers)) {
        return;
    }
    let mut more = Vec::new();
    for key in extra_keys(headers) {
        topology.route(vhost, exchange, key, Some(headers), &mut more);
        destinations.extend_from_slice(&more);
    }
    destinations.sort_unstable();
    destinations.dedup();
}

pub fn without_bcc(message: &Message, headers: &FieldTable) -> Option<Message> {
    headers.get(BCC)?;
    let mut properties = message.properties();
    if let Some(headers) = properties.headers.as_mut() {
        headers.remove(BCC);
    }
    Some(message.with_properties(&properties))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::protocol::BasicProperties;

    fn keys(list: &[&str]) -> FieldValue {
        FieldValue::FieldArray(
            list.iter()
                .map(|k| FieldValue::LongString(Bytes::copy_from_slice(k.as_bytes())))
                .collect(),
        )
    }

    #[test]
    fn cc_then_bcc_keys_and_bcc_stripped() {
        let mut headers = FieldTable::default();
        headers.insert(BCC, keys(&["b1"]));
        headers.insert(CC, keys(&["c1", "c2"]));
        headers.insert("other", FieldValue::Boolean(true));
        assert!(check(Some(&headers)).is_ok());
        assert!(has_extra_keys(Some(&headers)));
        assert_eq!(extra_keys(&headers).collect::<Vec<_>>(), ["c1", "c2", "b1"]);
        let message = Message::new(
            Route {
                exchange: "x",
                routing_key: "k",
            },
            &BasicProperties {
                headers: Some(headers),
                ..BasicProperties::default()
            },
            &Bytes::from_static(b"b"),
        );
        let original = message.headers().expect("headers");
        let stripped = without_bcc(&message, &original).expect("had BCC");
        let headers = stripped.headers().expect("headers");
        assert!(headers.get(BCC).is_none());
        assert!(headers.get(CC).is_some());
        assert_eq!(stripped.body(), message.body());
        assert!(without_bcc(&stripped, &headers).is_none());
    }

    #[test]
    fn non_array_is_refused_and_too_many_keys_too() {
        let mut headers = FieldTable::default();
        headers.insert(CC, FieldValue::LongString(Bytes::from_static(b"k")));
        assert!(check(Some(&headers)).is_err());
        let many: Vec<String> = (0..=SENDER_SELECTED_KEYS_MAX)
            .map(|n| n.to_string())
            .collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let mut headers = FieldTable::default();
        headers.insert(CC, keys(&many));
        assert!(check(Some(&headers)).is_err());
        assert!(check(None).is_ok());
    }
}
