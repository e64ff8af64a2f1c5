//! Argument equivalence on redeclare and argument validation on declare, with RabbitMQ's texts.

use crate::protocol::{reply_code, FieldTable, FieldValue};

use super::AmqpError;
use crate::limits::DEDUP_CACHE_SIZE_MAX;

/// Queue arguments RabbitMQ compares on redeclare (`rabbit_amqqueue:declare_args/0`); any
/// other argument may differ between declarations.
const QUEUE_EQUIVALENCE_KEYS: [&str; 18] = [
    "x-expires",
    "x-message-ttl",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-in-memory-length",
    "x-max-in-memory-bytes",
    "x-max-priority",
    "x-overflow",
    "x-queue-mode",
    "x-single-active-consumer",
    "x-queue-type",
    "x-quorum-initial-group-size",
    "x-max-age",
    "x-stream-max-segment-size-bytes",
    "x-initial-cluster-size",
    "x-queue-leader-locator",
];

/// The only exchange argument RabbitMQ compares on redeclare.
const EXCHANGE_EQUIVALENCE_KEYS: [&str; 1] = ["alternate-exchange"];

pub(crate) const QUEUE_TYPES: [&str; 3] = ["classic", "quorum", "stream"];
const OVERFLOW_MODES: [&str; 3] = ["drop-head", "reject-publish", "reject-publish-dlx"];
const PRIORITY_MAX: i64 = 255;

/// "queue 'q' in vhost '/'", RabbitMQ's `rs/1`.
pub(crate) fn resource(kind: &str, name: &str, vhost: &str) -> String {
    format!("{kind} '{name}' in vhost '{vhost}'")
}

pub(crate) fn type_name(value: &FieldValue) -> &'static str {
    match value {
        FieldValue::Boolean(_) => "bool",
        FieldValue::ShortShortInt(_) => "byte",
        FieldValue::ShortShortUInt(_) => "unsignedbyte",
        FieldValue::ShortInt(_) => "short",
        FieldValue::ShortUInt(_) => "unsignedshort",
        FieldValue::LongInt(_) => "signedint",
        FieldValue::LongUInt(_) => "unsignedint",
        FieldValue::LongLongInt(_) => "long",
        FieldValue::Float(_) => "float",
        FieldValue::Double(_) => "double",
        FieldValue::Decimal { .. } => "decimal",
        FieldValue::LongString(_) => "longstr",
        FieldValue::FieldArray(_) => "array",
        FieldValue::Timestamp(_) => "timestamp",
        FieldValue::FieldTable(_) => "table",
        FieldValue::Void => "void",
        FieldValue::ByteArray(_) => "binary",
    }
}

pub(crate) fn render_value(value: &FieldValue) -> String {
    match value {
        FieldValue::Boolean(b) => b.to_string(),
        FieldValue::Float(f) => f.to_string(),
        FieldValue::Double(d) => d.to_string(),
        FieldValue::Decimal { scale, value } => format!("{{{scale},{value}}}"),
        FieldValue::LongString(b) | FieldValue::ByteArray(b) => String::from_utf8_lossy(b).into(),
        FieldValue::Timestamp(t) => t.to_string(),
        FieldValue::FieldArray(items) => format!("{items:?}"),
        FieldValue::FieldTable(table) => format!("{:?}", table.0),
        FieldValue::Void => "undefined".to_string(),
        other => other.as_i64().map(|i| i.to_string()).unwrap_or_default(),
    }
}

fn render_argument(value: Option<&FieldValue>) -> String {
    match value {
        None => "none".to_string(),
        Some(v) => format!("the value '{}' of type '{}'", render_value(v), type_name(v)),
    }
}

/// "inequivalent arg 'durable' for queue 'q' in vhost '/': received 'true' but current is 'false'"
pub(crate) fn inequivalent(what: &str, key: &str, received: String, current: String) -> AmqpError {
    AmqpError::new(
        reply_code::PRECONDITION_FAILED,
        format!(
            "PRECONDITION_FAILED - inequivalent arg '{key}' for {what}: received {received} but \
             current is {current}"
        ),
    )
}

pub(crate) fn check_flag(
    what: &str,
    key: &str,
    received: bool,
    current: bool,
) -> Result<(), AmqpError> {
    if received == current {
        return Ok(());
    }
    Err(inequivalent(
        what,
        key,
        format!("'{received}'"),
        format!("'{current}'"),
    ))
}

/// Integer types form one class (`signedint` 5 equals `long` 5), as in `rabbit_misc:type_class`.
fn argument_equal(a: &FieldValue, b: &FieldValue) -> bool {
    match (a.as_i64(), b.as_i64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

fn check_arguments(
    what: &str,
    keys: &[&str],
    received: &FieldTable,
    current: &FieldTable,
) -> Result<(), AmqpError> {
    for key in keys {
        let (new, old) = (received.get(key), current.get(key));
        let same = match (new, old) {
            (None, None) => true,
            (Some(n), Some(o)) => argument_equal(n, o),
            _ => false,
        };
        if !same {
            return Err(inequivalent(
                what,
                key,
                render_argument(new),
                render_argument(old),
            ));
        }
    }
    Ok(())
}

pub(crate) fn check_exchange_arguments(
    what: &str,
    received: &FieldTable,
    current: &FieldTable,
) -> Result<(), AmqpError> {
    check_arguments(what, &EXCHANGE_EQUIVALENCE_KEYS, received, current)
}

/// Like [`check_exchange_arguments`], but an absent `x-queue-type` equals "classic", as it does
/// for RabbitMQ clients that leave it out on one declaration and not the other.
pub(crate) fn check_queue_arguments(
    what: &str,
    received: &FieldTable,
    current: &FieldTable,
) -> Result<(), AmqpError> {
    let (received, current) = (with_queue_type(received), with_queue_type(current));
    check_arguments(what, &QUEUE_EQUIVALENCE_KEYS, &received, &current)
}

fn with_queue_type(arguments: &FieldTable) -> FieldTable {
    let mut arguments = arguments.clone();
    if arguments.get("x-queue-type").is_none() {
        arguments.insert("x-queue-type", FieldValue::LongString("classic".into()));
    }
    arguments
}

fn invalid_arg(what: &str, key: &str, reason: String) -> AmqpError {
    AmqpError::new(
        reply_code::PRECONDITION_FAILED,
        format!("PRECONDITION_FAILED - invalid arg '{key}' for {what}: {reason}"),
    )
}

#[derive(Clone, Copy)]
enum Rule {
    NonNegative,
    Positive,
    Priority,
    Text(&'static [&'static str]),
    AnyText,
    Bool,
}

fn rule_for(key: &str) -> Option<Rule> {
    Some(match key {
        // `check_initial_cluster_size_arg`: a non-negative integer, not 0.
        "x-expires" | "x-cache-size" | "x-cache-ttl" | "x-quorum-initial-group-size" => {
            Rule::Positive
        }
        "x-message-ttl"
        | "x-max-length"
        | "x-max-length-bytes"
        | "x-max-in-memory-length"
        | "x-max-in-memory-bytes"
        | "x-stream-max-segment-size-bytes"
        | "x-delivery-limit" => Rule::NonNegative,
        "x-max-priority" => Rule::Priority,
        "x-queue-type" => Rule::Text(&QUEUE_TYPES),
        "x-overflow" => Rule::Text(&OVERFLOW_MODES),
        "x-dead-letter-exchange" | "x-dead-letter-routing-key" | "x-max-age" => Rule::AnyText,
        "x-single-active-consumer" | "x-message-deduplication" => Rule::Bool,
        _ => return None,
    })
}

/// Validates the queue arguments RabbitMQ validates; unknown arguments are accepted as is.
pub(crate) fn validate_queue_arguments(
    what: &str,
    arguments: &FieldTable,
) -> Result<(), AmqpError> {
    for (key, value) in &arguments.0 {
        let Some(rule) = rule_for(key) else { continue };
        let unacceptable = || {
            invalid_arg(
                what,
                key,
                format!("{{unacceptable_type,{}}}", type_name(value)),
            )
        };
        match rule {
            Rule::NonNegative | Rule::Positive | Rule::Priority => {
                let n = value.as_i64().ok_or_else(unacceptable)?;
                if n < 0 {
                    return Err(invalid_arg(what, key, format!("{{value_negative,{n}}}")));
                }
                if n == 0 && matches!(rule, Rule::Positive) {
                    return Err(invalid_arg(what, key, "{value_zero,0}".to_string()));
                }
                if n > PRIORITY_MAX && matches!(rule, Rule::Priority) {
                    return Err(invalid_arg(
                        what,
                        key,
                        format!("{{value_too_large,{n},{PRIORITY_MAX}}}"),
                    ));
                }
            }
            Rule::Text(allowed) => {
                let text = value.as_str().ok_or_else(unacceptable)?;
                if !allowed.contains(&text) {
                    return Err(invalid_arg(
                        what,
                        key,
                        format!("{{unacceptable_value,{text}}}"),
                    ));
                }
            }
            Rule::AnyText => {
                value.as_str().ok_or_else(unacceptable)?;
            }
            Rule::Bool => {
                value.as_bool().ok_or_else(unacceptable)?;
            }
        }
    }
    validate_deduplication(what, arguments)
}

/// Deduplication needs a bounded window: `x-cache-size` is required and capped.
fn validate_deduplication(what: &str, arguments: &FieldTable) -> Result<(), AmqpError> {
    let enabled = arguments
        .get("x-message-deduplication")
        .and_then(FieldValue::as_bool)
        .unwrap_or(false);
    if !enabled {
        return Ok(());
    }
    match arguments.get("x-cache-size").and_then(FieldValue::as_i64) {
        None => Err(invalid_arg(
            what,
            "x-cache-size",
            "required with x-message-deduplication".to_string(),
        )),
        Some(n) if n as u64 > DEDUP_CACHE_SIZE_MAX => Err(invalid_arg(
            what,
            "x-cache-size",
            format!("{{value_too_large,{n},{DEDUP_CACHE_SIZE_MAX}}}"),
        )),
        Some(_) => Ok(()),
    }
}
