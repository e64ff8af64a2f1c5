//! Headers-exchange matching, following RabbitMQ's `rabbit_exchange_type_headers`:
//! - `x-match` is `all` (the default when absent), `any`, `all-with-x` or `any-with-x`;
//! - binding arguments starting with `x-` take part only in the `-with-x` modes, and `x-match`
//!   itself never does;
//! - a binding argument of type void matches when the header is present, whatever its value;
//! - values compare as Erlang's `==` does: numbers by value across integer and float types,
//!   strings and byte arrays by bytes;
//! - `all` with no arguments left matches every message, `any` with none matches nothing.

use crate::protocol::{reply_code, FieldTable, FieldValue};

use super::AmqpError;

const X_MATCH: &str = "x-match";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    All,
    Any,
}

/// A headers binding's arguments, reduced once at bind time to what matching looks at.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HeadersMatcher {
    mode: Mode,
    conditions: Vec<(String, FieldValue)>,
}

/// Rejects bindings RabbitMQ rejects: an `x-match` that is not one of the four modes.
pub(crate) fn validate_binding_arguments(arguments: &FieldTable) -> Result<(), AmqpError> {
    match arguments.get(X_MATCH) {
        None => Ok(()),
        Some(value @ FieldValue::LongString(bytes)) => match parse_mode(value) {
            Some(_) => Ok(()),
            None => Err(AmqpError::new(
                reply_code::PRECONDITION_FAILED,
                format!(
                    "PRECONDITION_FAILED - Invalid x-match field value <<\"{}\">>; expected all, \
                     any, all-with-x, or any-with-x",
                    String::from_utf8_lossy(bytes)
                ),
            )),
        },
        Some(other) => Err(AmqpError::new(
            reply_code::PRECONDITION_FAILED,
            format!(
                "PRECONDITION_FAILED - Invalid x-match field type {} (value {}); expected longstr",
                super::equivalence::type_name(other),
                super::equivalence::render_value(other)
            ),
        )),
    }
}

/// Returns (mode, whether `x-` arguments count).
fn parse_mode(value: &FieldValue) -> Option<(Mode, bool)> {
    match value.as_str()? {
        "all" => Some((Mode::All, false)),
        "any" => Some((Mode::Any, false)),
        "all-with-x" => Some((Mode::All, true)),
        "any-with-x" => Some((Mode::Any, true)),
        _ => None,
    }
}

impl HeadersMatcher {
    pub(crate) fn new(arguments: &FieldTable) -> HeadersMatcher {
        // An unparsable x-match cannot get here (validated at bind); RabbitMQ treats it as all.
        let (mode, with_x) = arguments
            .get(X_MATCH)
            .and_then(parse_mode)
            .unwrap_or((Mode::All, false));
        let mut conditions: Vec<(String, FieldValue)> = Vec::new();
        for (key, value) in &arguments.0 {
            let counted = key != X_MATCH && (with_x || !key.starts_with("x-"));
            // A repeated key: the first occurrence is the one a table lookup sees.
            if counted && !conditions.iter().any(|(k, _)| k == key) {
                conditions.push((key.clone(), value.clone()));
            }
        }
        HeadersMatcher { mode, conditions }
    }

    pub(crate) fn matches(&self, headers: Option<&FieldTable>) -> bool {
        let mut held =
            self.conditions
                .iter()
                .map(|(key, expected)| match headers.and_then(|h| h.get(key)) {
                    None => false,
                    Some(actual) => {
                        matches!(expected, FieldValue::Void) || values_equal(expected, actual)
                    }
                });
        match self.mode {
            Mode::All => held.all(|h| h),
            Mode::Any => held.any(|h| h),
        }
    }
}

enum Comparable<'a> {
    Number(f64, Option<i128>),
    Bytes(&'a [u8]),
    Other(&'a FieldValue),
}

fn comparable(value: &FieldValue) -> Comparable<'_> {
    match value {
        FieldValue::Float(f) => Comparable::Number(f64::from(*f), None),
        FieldValue::Double(d) => Comparable::Number(*d, None),
        FieldValue::Timestamp(t) => Comparable::Number(*t as f64, Some(i128::from(*t))),
        FieldValue::LongString(b) | FieldValue::ByteArray(b) => Comparable::Bytes(b),
        other => match other.as_i64() {
            Some(i) => Comparable::Number(i as f64, Some(i128::from(i))),
            None => Comparable::Other(other),
        },
    }
}

fn values_equal(expected: &FieldValue, actual: &FieldValue) -> bool {
    match (comparable(expected), comparable(actual)) {
        // Integers compare exactly; a float on either side compares as a float.
        (Comparable::Number(_, Some(a)), Comparable::Number(_, Some(b))) => a == b,
        (Comparable::Number(a, _), Comparable::Number(b, _)) => a == b,
        (Comparable::Bytes(a), Comparable::Bytes(b)) => a == b,
        (Comparable::Other(a), Comparable::Other(b)) => a == b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn s(v: &str) -> FieldValue {
        FieldValue::LongString(Bytes::copy_from_slice(v.as_bytes()))
    }

    fn table(entries: &[(&str, FieldValue)]) -> FieldTable {
        FieldTable(
            entries
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        )
    }

    fn matcher(entries: &[(&str, FieldValue)]) -> HeadersMatcher {
        HeadersMatcher::new(&table(entries))
    }

    #[test]
    fn all_is_default_and_needs_every_condition() {
        let m = matcher(&[("a", s("1")), ("b", s("2"))]);
        assert!(m.matches(Some(&table(&[("a", s("1")), ("b", s("2")), ("c", s("3"))]))));
        assert!(!m.matches(Some(&table(&[("a", s("1"))]))));
        assert!(!m.matches(Some(&table(&[("a", s("1")), ("b", s("x"))]))));
        assert!(!m.matches(None));
    }

    #[test]
    fn any_needs_one_condition() {
        let m = matcher(&[("x-match", s("any")), ("a", s("1")), ("b", s("2"))]);
        assert!(m.matches(Some(&table(&[("b", s("2"))]))));
        assert!(!m.matches(Some(&table(&[("a", s("2")), ("b", s("1"))]))));
        assert!(!m.matches(None));
    }

    #[test]
    fn empty_conditions_all_matches_everything_any_nothing() {
        assert!(matcher(&[]).matches(None));
        assert!(matcher(&[("x-match", s("all")), ("x-foo", s("1"))]).matches(None));
        assert!(!matcher(&[("x-match", s("any"))]).matches(Some(&table(&[("a", s("1"))]))));
    }

    #[test]
    fn x_arguments_count_only_with_x() {
        let headers = table(&[("x-tenant", s("t1"))]);
        let plain = matcher(&[("x-match", s("any")), ("x-tenant", s("t1"))]);
        assert!(!plain.matches(Some(&headers)));
        let with_x = matcher(&[("x-match", s("any-with-x")), ("x-tenant", s("t1"))]);
        assert!(with_x.matches(Some(&headers)));
        let all_with_x = matcher(&[("x-match", s("all-with-x")), ("x-tenant", s("t2"))]);
        assert!(!all_with_x.matches(Some(&headers)));
        // x-match itself is never a condition, even in the -with-x modes.
        let only_mode = matcher(&[("x-match", s("all-with-x"))]);
        assert!(only_mode.matches(None));
    }

    #[test]
    fn void_matches_presence() {
        let m = matcher(&[("a", FieldValue::Void)]);
        assert!(m.matches(Some(&table(&[("a", s("anything"))]))));
        assert!(m.matches(Some(&table(&[("a", FieldValue::LongInt(3))]))));
        assert!(!m.matches(Some(&table(&[("b", s("1"))]))));
    }

    #[test]
    fn numbers_compare_by_value_across_types() {
        let m = matcher(&[("n", FieldValue::LongInt(5))]);
        assert!(m.matches(Some(&table(&[("n", FieldValue::LongLongInt(5))]))));
        assert!(m.matches(Some(&table(&[("n", FieldValue::ShortShortUInt(5))]))));
        assert!(m.matches(Some(&table(&[("n", FieldValue::Double(5.0))]))));
        assert!(!m.matches(Some(&table(&[("n", s("5"))]))));
        assert!(!m.matches(Some(&table(&[("n", FieldValue::LongInt(6))]))));
        let b = matcher(&[("b", FieldValue::Boolean(true))]);
        assert!(b.matches(Some(&table(&[("b", FieldValue::Boolean(true))]))));
        assert!(!b.matches(Some(&table(&[("b", FieldValue::Boolean(false))]))));
    }

    #[test]
    fn invalid_x_match_rejected() {
        let bad = validate_binding_arguments(&table(&[("x-match", s("some"))]));
        let err = bad.unwrap_err();
        assert_eq!(err.code, reply_code::PRECONDITION_FAILED);
        assert!(
            err.text.contains("Invalid x-match field value"),
            "{}",
            err.text
        );
        let bad_type = validate_binding_arguments(&table(&[("x-match", FieldValue::LongInt(1))]));
        assert_eq!(bad_type.unwrap_err().code, reply_code::PRECONDITION_FAILED);
        for ok in ["all", "any", "all-with-x", "any-with-x"] {
            assert!(validate_binding_arguments(&table(&[("x-match", s(ok))])).is_ok());
        }
        assert!(validate_binding_arguments(&FieldTable::default()).is_ok());
    }
}
