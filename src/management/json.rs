//! JSON as RabbitMQ's management plugin writes and reads it: field tables, message properties,
//! and the loose typing of request bodies (`rabbitmqadmin` sends `"durable":"true"`).

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::Bytes;
use serde_json::{json, Map, Value};

use crate::protocol::{BasicProperties, FieldTable, FieldValue};

pub fn field_value_to_json(value: &FieldValue) -> Value {
    match value {
        FieldValue::Boolean(v) => json!(v),
        FieldValue::ShortShortInt(v) => json!(v),
        FieldValue::ShortShortUInt(v) => json!(v),
        FieldValue::ShortInt(v) => json!(v),
        FieldValue::ShortUInt(v) => json!(v),
        FieldValue::LongInt(v) => json!(v),
        FieldValue::LongUInt(v) => json!(v),
        FieldValue::LongLongInt(v) => json!(v),
        FieldValue::Float(v) => json!(v),
        FieldValue::Double(v) => json!(v),
        FieldValue::Decimal { scale, value } => {
            json!(f64::from(*value) / 10f64.powi(i32::from(*scale)))
        }
        FieldValue::LongString(bytes) | FieldValue::ByteArray(bytes) => {
            json!(String::from_utf8_lossy(bytes))
        }
        FieldValue::FieldArray(values) => {
            Value::Array(values.iter().map(field_value_to_json).collect())
        }
        FieldValue::Timestamp(v) => json!(v),
        FieldValue::FieldTable(table) => table_to_json(table),
        FieldValue::Void => Value::Null,
    }
}

pub fn table_to_json(table: &FieldTable) -> Value {
    let mut map = Map::new();
    for (key, value) in table.iter() {
        map.insert(key.to_string(), field_value_to_json(value));
    }
    Value::Object(map)
}

/// RabbitMQ's `rabbit_mgmt_util:args/1`: integers become signed 64-bit ('l'), other numbers
/// doubles, strings long strings.
pub fn json_to_field_value(value: &Value) -> FieldValue {
    match value {
        Value::Null => FieldValue::Void,
        Value::Bool(v) => FieldValue::Boolean(*v),
        Value::Number(n) => match n.as_i64() {
            Some(i) => FieldValue::LongLongInt(i),
            None => FieldValue::Double(n.as_f64().unwrap_or(0.0)),
        },
        Value::String(s) => FieldValue::LongString(Bytes::from(s.clone().into_bytes())),
        Value::Array(values) => {
            FieldValue::FieldArray(values.iter().map(json_to_field_value).collect())
        }
        Value::Object(_) => FieldValue::FieldTable(json_to_table(value).unwrap_or_default()),
    }
}

/// `None` when the value is neither an object nor absent/null.
pub fn json_to_table(value: &Value) -> Option<FieldTable> {
    match value {
        Value::Null => Some(FieldTable::default()),
        Value::Object(map) => {
            let mut table = FieldTable::default();
            for (key, value) in map {
                table.insert(key.clone(), json_to_field_value(value));
            }
            Some(table)
        }
        // rabbitmqadmin's `arguments={}` default arrives as an object; an empty list is what
        // Erlang's JSON writes for an empty proplist.
        Value::Array(values) if values.is_empty() => Some(FieldTable::default()),
        _ => None,
    }
}

/// A boolean as RabbitMQ reads it: JSON true/false or the strings "true"/"false".
pub fn loose_bool(value: Option<&Value>, default: bool) -> Result<bool, Value> {
    match value {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(v)) => Ok(*v),
        Some(Value::String(s)) if s == "true" => Ok(true),
        Some(Value::String(s)) if s == "false" => Ok(false),
        Some(other) => Err(json!(["not_boolean", other])),
    }
}

/// A non-negative integer given as a number or a decimal string.
pub fn loose_integer(value: Option<&Value>) -> Option<u64> {
    match value? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

pub fn properties_to_json(p: &BasicProperties) -> Value {
    let mut map = Map::new();
    let mut text = |key: &str, value: &Option<String>| {
        if let Some(value) = value {
            map.insert(key.to_string(), json!(value));
        }
    };
    text("content_type", &p.content_type);
    text("content_encoding", &p.content_encoding);
    text("correlation_id", &p.correlation_id);
    text("reply_to", &p.reply_to);
    text("expiration", &p.expiration);
    text("message_id", &p.message_id);
    text("type", &p.kind);
    text("user_id", &p.user_id);
    text("app_id", &p.app_id);
    text("cluster_id", &p.cluster_id);
    if let Some(headers) = &p.headers {
        map.insert("headers".to_string(), table_to_json(headers));
    }
    if let Some(mode) = p.delivery_mode {
        map.insert("delivery_mode".to_string(), json!(mode));
    }
    if let Some(priority) = p.priority {
        map.insert("priority".to_string(), json!(priority));
    }
    if let Some(timestamp) = p.timestamp {
        map.insert("timestamp".to_string(), json!(timestamp));
    }
    if map.is_empty() {
        // Erlang's JSON encoder writes an empty proplist as a list: RabbitMQ 3.10.8 answers
        // `"properties":[]` for a message without properties.
        return Value::Array(Vec::new());
    }
    Value::Object(map)
}

pub fn json_to_properties(value: &Value) -> Result<BasicProperties, String> {
    let mut p = BasicProperties::default();
    let map = match value {
        Value::Object(map) => map,
        Value::Null => return Ok(p),
        Value::Array(values) if values.is_empty() => return Ok(p),
        _ => return Err("properties must be an object".to_string()),
    };
    for (key, value) in map {
        let text = || match value {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            _ => Err(format!("property {key} must be a string")),
        };
        let small = || {
            loose_integer(Some(value))
                .and_then(|n| u8::try_from(n).ok())
                .ok_or_else(|| format!("property {key} must be an integer 0-255"))
        };
        match key.as_str() {
            "content_type" => p.content_type = Some(text()?),
            "content_encoding" => p.content_encoding = Some(text()?),
            "correlation_id" => p.correlation_id = Some(text()?),
            "reply_to" => p.reply_to = Some(text()?),
            "expiration" => p.expiration = Some(text()?),
            "message_id" => p.message_id = Some(text()?),
            "type" => p.kind = Some(text()?),
            "user_id" => p.user_id = Some(text()?),
            "app_id" => p.app_id = Some(text()?),
            "cluster_id" => p.cluster_id = Some(text()?),
            "delivery_mode" => p.delivery_mode = Some(small()?),
            "priority" => p.priority = Some(small()?),
            "timestamp" => {
                p.timestamp = Some(
                    loose_integer(Some(value)).ok_or("property timestamp must be an integer")?,
                )
            }
            "headers" => p.headers = Some(json_to_table(value).ok_or("headers must be an object")?),
            _ => return Err(format!("unknown property {key}")),
        }
    }
    Ok(p)
}

/// A message body as `POST .../get` shows it: text when `encoding` allows and it is UTF-8,
/// else base64.
pub fn payload_to_json(body: &[u8], force_base64: bool) -> (Value, &'static str) {
    if !force_base64 {
        if let Ok(text) = std::str::from_utf8(body) {
            return (json!(text), "string");
        }
    }
    (json!(BASE64.encode(body)), "base64")
}

pub fn decode_payload(payload: &str, encoding: &str) -> Result<Vec<u8>, String> {
    match encoding {
        "string" => Ok(payload.as_bytes().to_vec()),
        "base64" => BASE64
            .decode(payload)
            .map_err(|_| "payload is not valid base64".to_string()),
        other => Err(format!("unsupported payload_encoding {other}")),
    }
}

/// `{"rate": r}` as RabbitMQ's `*_details`.
pub fn rate(value: f64) -> Value {
    json!({ "rate": value })
}
