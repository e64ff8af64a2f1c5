//! A shovel parameter's value as RabbitMQ 3.10.8 validates it (`rabbit_shovel_parameters`): the
//! same keys, the same refusal texts in the same order (checks on the ends first, then
//! unrecognised keys, then each key's own check in the reverse of RabbitMQ's constraint list,
//! as its `rabbit_parameter_validation:proplist` accumulates them), values shown in Erlang's
//! notation. Pure: JSON in, a [`ShovelDefinition`] or the refusal's lines out.

use std::time::Duration;

use serde_json::{Map, Value};

use super::uri::{AmqpUri, UriError};
use crate::limits::{
    SHOVEL_PREFETCH_DEFAULT, SHOVEL_RECONNECT_DELAY_DEFAULT_SECONDS,
    SHOVEL_RECONNECT_DELAY_MAX_SECONDS,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckMode {
    /// Publish with confirms; acknowledge at the source once the destination confirmed.
    OnConfirm,
    /// Acknowledge at the source once published.
    OnPublish,
    /// Consume without acknowledgements.
    NoAck,
}

impl AckMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AckMode::OnConfirm => "on-confirm",
            AckMode::OnPublish => "on-publish",
            AckMode::NoAck => "no-ack",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Queue(String),
    /// A server-named exclusive queue bound to the exchange with the key.
    Exchange {
        exchange: String,
        key: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteAfter {
    Never,
    /// As many messages as the source queue held when the shovel started.
    QueueLength,
    Messages(u64),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ShovelDefinition {
    /// The URI as given (shown in the status) and parsed. A list of URIs uses its first.
    pub src_uri_text: String,
    pub src_uri: AmqpUri,
    pub source: Source,
    pub dest_uri_text: String,
    pub dest_uri: AmqpUri,
    /// Declared (passive first, then durable) and published to through the default exchange.
    pub dest_queue: Option<String>,
    pub dest_exchange: Option<String>,
    /// Replaces each message's routing key when set.
    pub dest_exchange_key: Option<String>,
    pub ack_mode: AckMode,
    /// basic.qos at the source: at most this many messages in flight.
    pub prefetch: u16,
    pub reconnect_delay: Duration,
    pub delete_after: DeleteAfter,
}

/// The keys RabbitMQ 3.10.8 accepts for an amqp091 shovel, in its constraint order.
const KEYS: [&str; 25] = [
    "reconnect-delay",
    "ack-mode",
    "src-protocol",
    "dest-protocol",
    "src-uri",
    "src-exchange",
    "src-exchange-key",
    "src-queue",
    "src-queue-args",
    "src-consumer-args",
    "prefetch-count",
    "src-prefetch-count",
    "delete-after",
    "src-delete-after",
    "dest-uri",
    "dest-exchange",
    "dest-exchange-key",
    "dest-queue",
    "dest-queue-args",
    "add-forward-headers",
    "add-timestamp-header",
    "dest-add-forward-headers",
    "dest-add-timestamp-header",
    "publish-properties",
    "dest-publish-properties",
];

/// Validates a PUT's `value`; a refusal is the lines RabbitMQ lists after "Validation failed".
pub fn validate(name: &str, value: &Value) -> Result<ShovelDefinition, Vec<String>> {
    let Value::Object(def) = value else {
        return Err(vec![format!(
            "value should be a JSON object, actually was {}",
            erlang(value)
        )]);
    };
    let mut errors = end_checks(def);
    let unrecognised: Vec<String> = def
        .iter()
        .filter(|(key, _)| !KEYS.contains(&key.as_str()))
        .map(|(key, value)| format!("{{{},{}}}", erlang_binary(key), erlang(value)))
        .collect();
    if !unrecognised.is_empty() {
        errors.push(format!(
            "Unrecognised terms [{}] in {name}",
            unrecognised.join(",")
        ));
    }
    for key in KEYS.iter().rev() {
        match def.get(*key) {
            Some(value) => errors.extend(check_key(key, value)),
            None if *key == "src-uri" || *key == "dest-uri" => {
                errors.push(format!("Key \"{key}\" not found in {name}"));
            }
            None => {}
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(build(def))
}

/// RabbitMQ's `validate_src` and `validate_dest`, which come first.
fn end_checks(def: &Map<String, Value>) -> Vec<String> {
    let mut errors = Vec::new();
    match (
        def.contains_key("src-exchange"),
        def.contains_key("src-queue"),
    ) {
        (false, false) => errors.push("Must specify 'src-exchange' or 'src-queue'".to_string()),
        (true, true) => errors.push("Cannot specify 'src-exchange' and 'src-queue'".to_string()),
        _ => {}
    }
    let delete_after = def.get("src-delete-after").or(def.get("delete-after"));
    let no_ack = def.get("ack-mode").and_then(Value::as_str) == Some("no-ack");
    if no_ack && delete_after.is_some_and(|v| v.is_i64() || v.is_u64()) {
        errors.push("Cannot specify 'no-ack' and numerical 'delete-after'".to_string());
    }
    if def.contains_key("dest-exchange") && def.contains_key("dest-queue") {
        errors.push("Cannot specify 'dest-exchange' and 'dest-queue'".to_string());
    }
    errors
}

fn check_key(key: &str, value: &Value) -> Option<String> {
    match key {
        "src-uri" | "dest-uri" => check_uri(key, value),
        "reconnect-delay" | "prefetch-count" | "src-prefetch-count" => (!value.is_number())
            .then(|| format!("{key} should be a number, actually was {}", erlang(value))),
        "ack-mode" => check_enum(key, value, &["no-ack", "on-publish", "on-confirm"]),
        "src-protocol" | "dest-protocol" => {
            check_enum(key, value, &["amqp10", "amqp091"]).or_else(|| {
                (value.as_str() == Some("amqp10"))
                    .then(|| format!("{key} amqp10 is not supported by ringmq"))
            })
        }
        "delete-after" | "src-delete-after" => check_delete_after(key, value),
        "add-forward-headers"
        | "add-timestamp-header"
        | "dest-add-forward-headers"
        | "dest-add-timestamp-header" => (!value.is_boolean())
            .then(|| format!("{key} should be boolean, actually was {}", erlang(value))),
        "src-queue-args"
        | "dest-queue-args"
        | "publish-properties"
        | "dest-publish-properties"
        | "src-consumer-args" => (!value.is_object()).then(|| {
            format!(
                "{key} should be a dictionary, actually was {}",
                erlang(value)
            )
        }),
        _ => (!value.is_string())
            .then(|| format!("{key} should be binary, actually was {}", erlang(value))),
    }
}

fn check_enum(key: &str, value: &Value, allowed: &[&str]) -> Option<String> {
    if value.as_str().is_some_and(|v| allowed.contains(&v)) {
        return None;
    }
    let shown: Vec<String> = allowed.iter().map(|a| erlang_binary(a)).collect();
    Some(format!(
        "{key} should be one of [{}], actually was {}",
        shown.join(","),
        erlang(value)
    ))
}

fn check_delete_after(key: &str, value: &Value) -> Option<String> {
    let ok = matches!(value.as_str(), Some("never" | "queue-length")) || value.is_u64();
    (!ok).then(|| {
        format!(
            "{key} should be a number greater than or equal to 0, \"never\" or \"queue-length\", actually was {}",
            erlang(value)
        )
    })
}

fn check_uri(key: &str, value: &Value) -> Option<String> {
    let uris: Vec<&Value> = match value {
        Value::String(_) => vec![value],
        Value::Array(list) => list.iter().collect(),
        other => {
            return Some(format!(
                "{key} should be list, actually was {}",
                erlang(other)
            ))
        }
    };
    if uris.is_empty() {
        return Some(format!("{key} should be a non-empty list of URIs"));
    }
    uris.into_iter().find_map(|uri| match uri.as_str() {
        None => Some(format!(
            "{key} should be binary, actually was {}",
            erlang(uri)
        )),
        Some(text) => AmqpUri::parse(text)
            .err()
            .map(|error| format!("\"{text}\" not a valid URI: {}", uri_error(text, &error))),
    })
}

fn uri_error(text: &str, error: &UriError) -> String {
    match error {
        UriError::Scheme(scheme) => {
            format!("{{{{unexpected_uri_scheme,\"{scheme}\"}},\"{text}\"}}")
        }
        UriError::Malformed(why) => format!("{{{{unable_to_parse_uri,{why}}},\"{text}\"}}"),
    }
}

/// Called on a value `validate` accepted.
fn build(def: &Map<String, Value>) -> ShovelDefinition {
    let text = |key: &str| def.get(key).and_then(Value::as_str).map(str::to_string);
    let first_uri = |key: &str| match def.get(key) {
        Some(Value::Array(list)) => list
            .first()
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        other => other
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
    };
    let (src_uri_text, dest_uri_text) = (first_uri("src-uri"), first_uri("dest-uri"));
    let source = match text("src-queue") {
        Some(queue) => Source::Queue(queue),
        None => Source::Exchange {
            exchange: text("src-exchange").unwrap_or_default(),
            key: text("src-exchange-key").unwrap_or_default(),
        },
    };
    let ack_mode = match def.get("ack-mode").and_then(Value::as_str) {
        Some("no-ack") => AckMode::NoAck,
        Some("on-publish") => AckMode::OnPublish,
        _ => AckMode::OnConfirm,
    };
    let prefetch = def
        .get("src-prefetch-count")
        .or(def.get("prefetch-count"))
        .and_then(Value::as_f64)
        .map_or(SHOVEL_PREFETCH_DEFAULT, |n| {
            n.clamp(1.0, f64::from(u16::MAX)) as u16
        });
    let reconnect_seconds = def
        .get("reconnect-delay")
        .and_then(Value::as_f64)
        .map_or(SHOVEL_RECONNECT_DELAY_DEFAULT_SECONDS as f64, |n| {
            n.clamp(0.0, SHOVEL_RECONNECT_DELAY_MAX_SECONDS as f64)
        });
    let delete_after = match def.get("src-delete-after").or(def.get("delete-after")) {
        Some(Value::String(s)) if s == "queue-length" => DeleteAfter::QueueLength,
        Some(n) if n.is_u64() => DeleteAfter::Messages(n.as_u64().unwrap_or(0)),
        _ => DeleteAfter::Never,
    };
    ShovelDefinition {
        src_uri: AmqpUri::parse(&src_uri_text).unwrap_or_default(),
        src_uri_text,
        source,
        dest_uri: AmqpUri::parse(&dest_uri_text).unwrap_or_default(),
        dest_uri_text,
        dest_queue: text("dest-queue"),
        dest_exchange: text("dest-exchange"),
        dest_exchange_key: text("dest-exchange-key"),
        ack_mode,
        prefetch,
        reconnect_delay: Duration::from_secs_f64(reconnect_seconds),
        delete_after,
    }
}

/// A JSON value in Erlang's notation, as RabbitMQ's texts show the decoded term.
fn erlang(value: &Value) -> String {
    match value {
        Value::String(s) => erlang_binary(s),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".to_string(),
        Value::Array(list) => {
            let items: Vec<String> = list.iter().map(erlang).collect();
            format!("[{}]", items.join(","))
        }
        Value::Object(map) => {
            let items: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{}=>{}", erlang_binary(k), erlang(v)))
                .collect();
            format!("#{{{}}}", items.join(","))
        }
    }
}

fn erlang_binary(text: &str) -> String {
    format!(
        "<<\"{}\">>",
        text.replace('\\', "\\\\").replace('"', "\\\"")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({"src-protocol": "amqp091", "src-uri": "amqp://", "src-queue": "a",
               "dest-protocol": "amqp091", "dest-uri": "amqp://", "dest-queue": "b"})
    }

    #[test]
    fn rabbitmq_defaults() {
        let def = validate("s", &base()).expect("valid");
        assert_eq!(def.ack_mode, AckMode::OnConfirm);
        assert_eq!(def.prefetch, SHOVEL_PREFETCH_DEFAULT);
        assert_eq!(def.reconnect_delay, Duration::from_secs(5));
        assert_eq!(def.delete_after, DeleteAfter::Never);
        assert_eq!(def.source, Source::Queue("a".into()));
        assert_eq!(def.dest_queue.as_deref(), Some("b"));
    }

    #[test]
    fn refusals_in_rabbitmq_order() {
        let value = json!({"dest-uri": "amqp://", "dest-queue": "b", "dest-exchange": "x",
                           "reconnect-delay": "x", "zz": 1, "aa": 2});
        let errors = validate("e1", &value).expect_err("refused");
        assert_eq!(
            errors,
            vec![
                "Must specify 'src-exchange' or 'src-queue'",
                "Cannot specify 'dest-exchange' and 'dest-queue'",
                "Unrecognised terms [{<<\"aa\">>,2},{<<\"zz\">>,1}] in e1",
                "Key \"src-uri\" not found in e1",
                "reconnect-delay should be a number, actually was <<\"x\">>",
            ]
        );
    }

    #[test]
    fn each_key_checked() {
        let cases = [
            ("ack-mode", json!("bogus"), "ack-mode should be one of [<<\"no-ack\">>,<<\"on-publish\">>,<<\"on-confirm\">>], actually was <<\"bogus\">>"),
            ("src-prefetch-count", json!("x"), "src-prefetch-count should be a number, actually was <<\"x\">>"),
            ("src-delete-after", json!("sometime"), "src-delete-after should be a number greater than or equal to 0, \"never\" or \"queue-length\", actually was <<\"sometime\">>"),
            ("src-uri", json!("foo://x"), "\"foo://x\" not a valid URI: {{unexpected_uri_scheme,\"foo\"},\"foo://x\"}"),
            ("src-uri", json!(5), "src-uri should be list, actually was 5"),
            ("src-queue", json!(5), "src-queue should be binary, actually was 5"),
            ("add-forward-headers", json!("x"), "add-forward-headers should be boolean, actually was <<\"x\">>"),
        ];
        for (key, value, text) in cases {
            let mut def = base();
            def[key] = value;
            assert_eq!(validate("s", &def).expect_err(key), vec![text.to_string()]);
        }
        let mut def = base();
        def["ack-mode"] = json!("no-ack");
        def["src-delete-after"] = json!(5);
        assert_eq!(
            validate("s", &def).expect_err("no-ack"),
            vec!["Cannot specify 'no-ack' and numerical 'delete-after'"]
        );
    }

    #[test]
    fn options_taken() {
        let mut def = base();
        def.as_object_mut().unwrap().remove("dest-queue");
        def["dest-exchange"] = json!("x");
        def["dest-exchange-key"] = json!("k");
        def["ack-mode"] = json!("on-publish");
        def["src-prefetch-count"] = json!(50);
        def["reconnect-delay"] = json!(1.5);
        def["src-delete-after"] = json!(10);
        def["src-uri"] = json!(["amqp://u:p@h:1/v%2f", "amqp://other"]);
        let def = validate("s", &def).expect("valid");
        assert_eq!(def.ack_mode, AckMode::OnPublish);
        assert_eq!(def.prefetch, 50);
        assert_eq!(def.reconnect_delay, Duration::from_millis(1500));
        assert_eq!(def.delete_after, DeleteAfter::Messages(10));
        assert_eq!(def.src_uri.vhost, "v/");
        assert_eq!(def.dest_exchange_key.as_deref(), Some("k"));
    }
}
