//! Dead-lettering, the pure part: the message a dead letter becomes (RabbitMQ's `x-death`
//! bookkeeping) and RabbitMQ's cycle rule. Routing and re-publishing are the shard's.

use crate::limits::X_DEATH_ENTRIES_MAX;
use crate::protocol::{FieldTable, FieldValue};

use super::{Message, Route};

const X_DEATH: &str = "x-death";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeathReason {
    /// basic.reject / basic.nack with requeue=false.
    Rejected,
    /// Per-message or per-queue TTL.
    Expired,
    /// Dropped by x-max-length / x-max-length-bytes (drop-head or reject-publish-dlx).
    MaxLen,
    /// Requeued more often than x-delivery-limit allows.
    DeliveryLimit,
}

impl DeathReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DeathReason::Rejected => "rejected",
            DeathReason::Expired => "expired",
            DeathReason::MaxLen => "maxlen",
            DeathReason::DeliveryLimit => "delivery_limit",
        }
    }
}

/// Where and why a message died.
#[derive(Debug, Clone, Copy)]
pub struct Death<'a> {
    pub queue: &'a str,
    pub reason: DeathReason,
    pub dead_letter_exchange: &'a str,
    /// `x-dead-letter-routing-key`; None keeps the message's own routing key.
    pub dead_letter_routing_key: Option<&'a str>,
    /// Seconds since the Unix epoch.
    pub time_s: u64,
}

/// The message to publish to the dead-letter exchange: exchange and routing key replaced,
/// `expiration` removed (kept as `original-expiration`), `x-death` and the
/// `x-first-death-*`/`x-last-death-*` headers updated as RabbitMQ does.
pub fn dead_lettered(message: &Message, death: &Death<'_>) -> Message {
    let mut properties = message.properties();
    let original_expiration = properties.expiration.take();
    let mut headers = properties.headers.take().unwrap_or_default();

    let mut deaths = match headers.remove(X_DEATH) {
        Some(FieldValue::FieldArray(entries)) => entries,
        _ => Vec::new(),
    };
    let same = deaths.iter().position(|entry| {
        matches!(entry, FieldValue::FieldTable(table)
            if text(table, "queue") == Some(death.queue)
                && text(table, "reason") == Some(death.reason.as_str()))
    });
    let entry = match same.map(|at| deaths.remove(at)) {
        // Seen here for this reason before: count it and move it to the front; the other
        // fields keep describing the first such death, as in RabbitMQ.
        Some(FieldValue::FieldTable(mut table)) => {
            let count = table.get("count").and_then(FieldValue::as_i64).unwrap_or(0);
            table.insert("count", FieldValue::LongLongInt(count.saturating_add(1)));
            table
        }
        _ => new_entry(
            message,
            cc_keys(headers.get("CC")),
            death,
            original_expiration,
        ),
    };
    deaths.insert(0, FieldValue::FieldTable(entry));
    deaths.truncate(X_DEATH_ENTRIES_MAX);
    headers.insert(X_DEATH, FieldValue::FieldArray(deaths));

    let exchange = long_string(message.exchange());
    let reason = long_string(death.reason.as_str());
    let queue = long_string(death.queue);
    if headers.get("x-first-death-reason").is_none() {
        headers.insert("x-first-death-reason", reason.clone());
        headers.insert("x-first-death-queue", queue.clone());
        headers.insert("x-first-death-exchange", exchange.clone());
    }
    headers.insert("x-last-death-reason", reason);
    headers.insert("x-last-death-queue", queue);
    headers.insert("x-last-death-exchange", exchange);
    // RabbitMQ: a dead-letter routing key replaces all the message's routing keys, CC too;
    // without one, the CC keys route the dead letter again (the shard routes them).
    if death.dead_letter_routing_key.is_some() {
        headers.remove("CC");
    }
    properties.headers = Some(headers);

    Message::new(
        Route {
            exchange: death.dead_letter_exchange,
            routing_key: death
                .dead_letter_routing_key
                .unwrap_or(message.routing_key()),
        },
        &properties,
        message.body(),
    )
}

/// The CC routing keys of the original message (long strings only).
fn cc_keys(cc: Option<&FieldValue>) -> Vec<FieldValue> {
    match cc {
        Some(FieldValue::FieldArray(cc)) => cc
            .iter()
            .filter(|key| key.as_str().is_some())
            .cloned()
            .collect(),
        _ => Vec::new(),
    }
}

fn new_entry(
    message: &Message,
    cc: Vec<FieldValue>,
    death: &Death<'_>,
    expiration: Option<String>,
) -> FieldTable {
    let mut routing_keys = vec![long_string(message.routing_key())];
    routing_keys.extend(cc);
    let mut entry = FieldTable::default();
    entry.insert("count", FieldValue::LongLongInt(1));
    entry.insert("reason", long_string(death.reason.as_str()));
    entry.insert("queue", long_string(death.queue));
    entry.insert("time", FieldValue::Timestamp(death.time_s));
    entry.insert("exchange", long_string(message.exchange()));
    entry.insert("routing-keys", FieldValue::FieldArray(routing_keys));
    if let Some(expiration) = expiration {
        entry.insert("original-expiration", long_string(&expiration));
    }
    entry
}

/// RabbitMQ's rule: a dead letter (already carrying its new `x-death` entry) must not reach
/// `target` if it died there before and no death since then, that one included, was a
/// rejection: such a loop would run forever with no consumer deciding anything.
pub fn is_cycle(dead_letter: &Message, reason: DeathReason, target: &str) -> bool {
    if reason == DeathReason::Rejected {
        return false;
    }
    let headers = dead_letter.headers();
    let Some(FieldValue::FieldArray(deaths)) = headers.as_ref().and_then(|h| h.get(X_DEATH)) else {
        return false;
    };
    for entry in deaths {
        let FieldValue::FieldTable(table) = entry else {
            // Not written by a broker: RabbitMQ treats it as breaking the cycle.
            return false;
        };
        if text(table, "reason") == Some(DeathReason::Rejected.as_str()) {
            return false;
        }
        if text(table, "queue") == Some(target) {
            return true;
        }
    }
    false
}

fn text<'t>(table: &'t FieldTable, key: &str) -> Option<&'t str> {
    table.get(key).and_then(FieldValue::as_str)
}

fn long_string(text: &str) -> FieldValue {
    FieldValue::LongString(text.to_owned().into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::queue::Route;
    use crate::protocol::BasicProperties;
    use bytes::Bytes;

    fn original() -> Message {
        Message::new(
            Route {
                exchange: "orders",
                routing_key: "new",
            },
            &BasicProperties {
                expiration: Some("5000".into()),
                ..BasicProperties::default()
            },
            &Bytes::from_static(b"body"),
        )
    }

    fn death<'a>(queue: &'a str, reason: DeathReason) -> Death<'a> {
        Death {
            queue,
            reason,
            dead_letter_exchange: "dlx",
            dead_letter_routing_key: None,
            time_s: 1_700_000_000,
        }
    }

    fn deaths(message: &Message) -> Vec<FieldTable> {
        match message.headers().as_ref().and_then(|h| h.get(X_DEATH)) {
            Some(FieldValue::FieldArray(entries)) => entries
                .iter()
                .filter_map(|e| match e {
                    FieldValue::FieldTable(t) => Some(t.clone()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    fn header(message: &Message, key: &str) -> Option<String> {
        message.headers()?.get(key)?.as_str().map(str::to_owned)
    }

    #[test]
    fn first_death_records_everything() {
        let dead = dead_lettered(&original(), &death("work", DeathReason::Rejected));
        assert_eq!(dead.exchange(), "dlx");
        assert_eq!(dead.routing_key(), "new");
        assert_eq!(dead.properties().expiration, None);
        let entries = deaths(&dead);
        assert_eq!(entries.len(), 1);
        let entry = &entries[0];
        assert_eq!(entry.get("count"), Some(&FieldValue::LongLongInt(1)));
        assert_eq!(text(entry, "reason"), Some("rejected"));
        assert_eq!(text(entry, "queue"), Some("work"));
        assert_eq!(text(entry, "exchange"), Some("orders"));
        assert_eq!(text(entry, "original-expiration"), Some("5000"));
        assert_eq!(
            entry.get("time"),
            Some(&FieldValue::Timestamp(1_700_000_000))
        );
        assert_eq!(
            entry.get("routing-keys"),
            Some(&FieldValue::FieldArray(vec![long_string("new")]))
        );
        assert_eq!(
            header(&dead, "x-first-death-queue").as_deref(),
            Some("work")
        );
        assert_eq!(
            header(&dead, "x-first-death-exchange").as_deref(),
            Some("orders")
        );
        assert_eq!(
            header(&dead, "x-last-death-reason").as_deref(),
            Some("rejected")
        );
    }

    #[test]
    fn repeated_death_counts_and_moves_to_front() {
        let once = dead_lettered(&original(), &death("work", DeathReason::Rejected));
        let twice = dead_lettered(&once, &death("retry", DeathReason::Expired));
        let thrice = dead_lettered(&twice, &death("work", DeathReason::Rejected));
        let entries = deaths(&thrice);
        assert_eq!(entries.len(), 2);
        assert_eq!(text(&entries[0], "queue"), Some("work"));
        assert_eq!(entries[0].get("count"), Some(&FieldValue::LongLongInt(2)));
        assert_eq!(text(&entries[1], "queue"), Some("retry"));
        assert_eq!(
            header(&thrice, "x-first-death-queue").as_deref(),
            Some("work")
        );
        assert_eq!(
            header(&thrice, "x-first-death-reason").as_deref(),
            Some("rejected")
        );
        assert_eq!(
            header(&twice, "x-last-death-queue").as_deref(),
            Some("retry")
        );
        // The exchange of later deaths is the one the dead letter was routed through.
        assert_eq!(text(&entries[1], "exchange"), Some("dlx"));
    }

    #[test]
    fn routing_key_override() {
        let mut d = death("work", DeathReason::Expired);
        d.dead_letter_routing_key = Some("parked");
        assert_eq!(dead_lettered(&original(), &d).routing_key(), "parked");
    }

    #[test]
    fn cc_kept_without_override_and_dropped_with_one() {
        let mut headers = FieldTable::default();
        headers.insert("CC", FieldValue::FieldArray(vec![long_string("also")]));
        let mut properties = original().properties();
        properties.headers = Some(headers);
        let message = original().with_properties(&properties);
        let kept = dead_lettered(&message, &death("work", DeathReason::Rejected));
        assert!(kept.headers().and_then(|h| h.get("CC").cloned()).is_some());
        assert_eq!(
            deaths(&kept)[0].get("routing-keys"),
            Some(&FieldValue::FieldArray(vec![
                long_string("new"),
                long_string("also")
            ]))
        );
        let mut d = death("work", DeathReason::Rejected);
        d.dead_letter_routing_key = Some("parked");
        let dropped = dead_lettered(&message, &d);
        assert!(dropped
            .headers()
            .and_then(|h| h.get("CC").cloned())
            .is_none());
    }

    #[test]
    fn cycles_without_rejection_are_detected() {
        // A TTL queue dead-lettering to itself.
        let expired = dead_lettered(&original(), &death("a", DeathReason::Expired));
        assert!(is_cycle(&expired, DeathReason::Expired, "a"));
        assert!(!is_cycle(&expired, DeathReason::Expired, "b"));
        // The retry pattern: rejected in "work", expired in "retry", back to "work".
        let rejected = dead_lettered(&original(), &death("work", DeathReason::Rejected));
        let retried = dead_lettered(&rejected, &death("retry", DeathReason::Expired));
        assert!(!is_cycle(&retried, DeathReason::Expired, "work"));
        // A rejection now never counts as a cycle.
        assert!(!is_cycle(&retried, DeathReason::Rejected, "retry"));
        // a -> b -> a, all by expiry.
        let in_b = dead_lettered(&expired, &death("b", DeathReason::Expired));
        assert!(is_cycle(&in_b, DeathReason::Expired, "a"));
    }
}
