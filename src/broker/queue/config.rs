//! The queue arguments that change a queue's behaviour, read once from its `x-` arguments.
//!
//! Declares are validated before they get here (`broker::validate_queue_arguments`, 406 on a bad
//! value), so reading is lenient: a value of the wrong kind is treated as absent.

use crate::protocol::{FieldTable, FieldValue};

/// Per-message `expiration` and `x-message-ttl` above this are clamped (RabbitMQ refuses
/// expirations above 2^32-1 ms, about 49 days, for the same reason: timer ranges).
pub const MESSAGE_TTL_MAX_MS: u64 = u32::MAX as u64;

/// What a publish does when the queue is full (`x-overflow`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    #[default]
    DropHead,
    RejectPublish,
    RejectPublishDlx,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QueueConfig {
    /// `x-max-priority`: 0 = not a priority queue.
    pub max_priority: u8,
    /// `x-message-ttl`, milliseconds.
    pub message_ttl_ms: Option<u64>,
    /// `x-expires`, milliseconds: delete the queue after it was unused this long.
    pub expires_ms: Option<u64>,
    pub dead_letter_exchange: Option<String>,
    pub dead_letter_routing_key: Option<String>,
    /// `x-max-length`: ready messages.
    pub max_length: Option<u64>,
    /// `x-max-length-bytes`: sum of the ready messages' body sizes.
    pub max_length_bytes: Option<u64>,
    pub overflow: Overflow,
    /// `x-single-active-consumer`.
    pub single_active_consumer: bool,
    /// `x-delivery-limit`: returns a message may have before it is dead-lettered.
    pub delivery_limit: Option<u64>,
    /// Returns are counted and a redelivery carries `x-delivery-count`: with a delivery limit,
    /// and on every quorum queue (RabbitMQ's quorum queues count them whether limited or not).
    pub counts_returns: bool,
    /// `x-message-deduplication` with `x-cache-size` and `x-cache-ttl`.
    pub deduplication: Option<super::DedupConfig>,
    /// `x-queue-mode=lazy`: keep only the read-ahead in memory, page the rest out.
    pub lazy: bool,
}

impl QueueConfig {
    pub fn from_arguments(arguments: &FieldTable) -> QueueConfig {
        let non_negative = |key: &str| {
            arguments
                .get(key)
                .and_then(FieldValue::as_i64)
                .and_then(|n| u64::try_from(n).ok())
        };
        let text = |key: &str| {
            arguments
                .get(key)
                .and_then(FieldValue::as_str)
                .map(str::to_owned)
        };
        QueueConfig {
            max_priority: non_negative("x-max-priority")
                .map_or(0, |n| u8::try_from(n).unwrap_or(u8::MAX)),
            message_ttl_ms: non_negative("x-message-ttl").map(|n| n.min(MESSAGE_TTL_MAX_MS)),
            expires_ms: non_negative("x-expires").filter(|&n| n > 0),
            dead_letter_exchange: text("x-dead-letter-exchange"),
            dead_letter_routing_key: text("x-dead-letter-routing-key"),
            max_length: non_negative("x-max-length"),
            max_length_bytes: non_negative("x-max-length-bytes"),
            overflow: match text("x-overflow").as_deref() {
                Some("reject-publish") => Overflow::RejectPublish,
                Some("reject-publish-dlx") => Overflow::RejectPublishDlx,
                _ => Overflow::DropHead,
            },
            single_active_consumer: arguments
                .get("x-single-active-consumer")
                .and_then(FieldValue::as_bool)
                .unwrap_or(false),
            delivery_limit: non_negative("x-delivery-limit"),
            counts_returns: non_negative("x-delivery-limit").is_some()
                || crate::broker::quorum::is_quorum(arguments),
            deduplication: deduplication(arguments),
            lazy: text("x-queue-mode").as_deref() == Some("lazy"),
        }
    }

    /// The levels the ready queue needs.
    pub fn priority_levels(&self) -> usize {
        usize::from(self.max_priority) + 1
    }
}

/// Validated on declare (true needs a positive `x-cache-size`); read leniently here.
fn deduplication(arguments: &FieldTable) -> Option<super::DedupConfig> {
    let enabled = arguments
        .get("x-message-deduplication")
        .and_then(FieldValue::as_bool)?;
    let positive = |key: &str| {
        arguments
            .get(key)
            .and_then(FieldValue::as_i64)
            .and_then(|n| u64::try_from(n).ok())
            .filter(|&n| n > 0)
    };
    let cache_size = positive("x-cache-size")?.min(crate::limits::DEDUP_CACHE_SIZE_MAX);
    enabled.then(|| super::DedupConfig {
        cache_size: usize::try_from(cache_size).unwrap_or(usize::MAX),
        ttl_ms: positive("x-cache-ttl"),
    })
}

/// Why a per-message `expiration` is refused, in RabbitMQ's words (the 406 text names it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpirationError {
    #[error("no_integer")]
    NoInteger,
    #[error("{{value_negative,{0}}}")]
    Negative(i64),
    #[error("{{leftover_string,\"{0}\"}}")]
    Leftover(String),
}

/// Parses a message's `expiration` property: milliseconds as a decimal string, as RabbitMQ
/// accepts it (an optional sign, digits, nothing after). Large values are clamped.
pub fn parse_expiration(text: &str) -> Result<u64, ExpirationError> {
    let digits_start = usize::from(text.starts_with(['+', '-']));
    let digits_len = text.get(digits_start..).map_or(0, |rest| {
        rest.bytes().take_while(u8::is_ascii_digit).count()
    });
    if digits_len == 0 {
        return Err(ExpirationError::NoInteger);
    }
    let (number, leftover) = text.split_at(digits_start + digits_len);
    if !leftover.is_empty() {
        return Err(ExpirationError::Leftover(leftover.to_owned()));
    }
    let negative = number.starts_with('-');
    let magnitude = number
        .trim_start_matches(['+', '-'])
        .parse::<u64>()
        .unwrap_or(u64::MAX);
    if negative && magnitude > 0 {
        return Err(ExpirationError::Negative(
            i64::try_from(magnitude).map_or(i64::MIN, |m| -m),
        ));
    }
    Ok(magnitude.min(MESSAGE_TTL_MAX_MS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiration_parses_like_rabbitmq() {
        assert_eq!(parse_expiration("0"), Ok(0));
        assert_eq!(parse_expiration("2000"), Ok(2000));
        assert_eq!(parse_expiration("+5"), Ok(5));
        assert_eq!(parse_expiration("-0"), Ok(0));
        assert_eq!(
            parse_expiration("99999999999999999999"),
            Ok(MESSAGE_TTL_MAX_MS)
        );
        assert_eq!(parse_expiration(""), Err(ExpirationError::NoInteger));
        assert_eq!(parse_expiration("abc"), Err(ExpirationError::NoInteger));
        assert_eq!(parse_expiration("-"), Err(ExpirationError::NoInteger));
        assert_eq!(parse_expiration("-5"), Err(ExpirationError::Negative(-5)));
        assert_eq!(
            parse_expiration("10x"),
            Err(ExpirationError::Leftover("x".into()))
        );
    }

    #[test]
    fn arguments_are_read_leniently() {
        let mut arguments = FieldTable::default();
        arguments.insert("x-max-priority", FieldValue::ShortShortUInt(10));
        arguments.insert("x-message-ttl", FieldValue::LongInt(500));
        arguments.insert("x-expires", FieldValue::LongString("bad".into()));
        arguments.insert(
            "x-overflow",
            FieldValue::LongString("reject-publish".into()),
        );
        let config = QueueConfig::from_arguments(&arguments);
        assert_eq!(config.max_priority, 10);
        assert_eq!(config.priority_levels(), 11);
        assert_eq!(config.message_ttl_ms, Some(500));
        assert_eq!(config.expires_ms, None);
        assert_eq!(config.overflow, Overflow::RejectPublish);
    }
}
