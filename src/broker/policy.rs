//! Policies and operator policies (RabbitMQ's `set_policy` / `set_operator_policy`): optional
//! queue and exchange arguments applied in bulk by a regex on names.
//!
//! A policy is validated once, where it enters (management API, definitions, the topology log),
//! with RabbitMQ 3.10.8's texts (`rabbit_policy`, `rabbit_policies`), and its pattern compiled
//! then. What a queue ends up with is decided here too, as RabbitMQ decides it:
//! - the matching policy of highest priority wins (one policy and one operator policy per
//!   object, never a merge of several);
//! - an operator policy caps the policy: for a key both define, the smaller number
//!   (`rabbit_policies:merge_policy_value`); other keys come from whichever defines them;
//! - a queue's own `x-` argument beats the policy for the names and modes (dead-letter
//!   exchange and routing key, overflow, queue mode) and takes the minimum with it for the
//!   numbers (TTL, expiry, lengths, delivery limit) (`rabbit_amqqueue_process:
//!   process_args_policy`); an exchange's own `alternate-exchange` beats the policy's.
//!
//! Nothing here runs per message: shards recompute a queue's limits only when the policy set
//! changes (`Topology::policy_revision`).

use std::collections::BTreeMap;

use crate::pattern::NamePattern;

use super::{mirror, AccessOutcome, Topology, TopologyChange};
use crate::limits::{
    ACCESS_NAME_LENGTH_MAX, PERMISSION_PATTERN_LENGTH_MAX, POLICIES_PER_VHOST_MAX,
};
use crate::protocol::{FieldTable, FieldValue};

/// RabbitMQ's two runtime-parameter components for policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PolicyKind {
    /// `policy`: set by policymakers and administrators.
    Policy,
    /// `operator_policy`: set by administrators only; caps what policies set.
    Operator,
}

/// Which objects a policy applies to (`apply-to`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyTo {
    Queues,
    Exchanges,
    All,
}

impl ApplyTo {
    pub fn parse(text: &str) -> Option<ApplyTo> {
        match text {
            "queues" => Some(ApplyTo::Queues),
            "exchanges" => Some(ApplyTo::Exchanges),
            "all" => Some(ApplyTo::All),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ApplyTo::Queues => "queues",
            ApplyTo::Exchanges => "exchanges",
            ApplyTo::All => "all",
        }
    }

    fn covers_queues(self) -> bool {
        self != ApplyTo::Exchanges
    }

    fn covers_exchanges(self) -> bool {
        self != ApplyTo::Queues
    }
}

/// One value of a definition. Only `Integer` and `Text` pass validation, and `List` (of
/// strings: `ha-params` of `ha-mode: nodes`); `Other` carries a value of any other JSON kind,
/// written as Erlang's `~p` would show it, for the refusal text.
#[derive(Debug, Clone, PartialEq)]
pub enum PolicyValue {
    Integer(i64),
    Text(String),
    List(Vec<String>),
    Other(String),
}

impl PolicyValue {
    /// As RabbitMQ's `~p` shows the decoded JSON value.
    pub(super) fn erlang(&self) -> String {
        match self {
            PolicyValue::Integer(n) => n.to_string(),
            PolicyValue::Text(text) => format!("<<\"{text}\">>"),
            PolicyValue::List(items) => {
                let shown: Vec<String> = items.iter().map(|t| format!("<<\"{t}\">>")).collect();
                format!("[{}]", shown.join(","))
            }
            PolicyValue::Other(shown) => shown.clone(),
        }
    }

    fn integer(&self) -> Option<i64> {
        match self {
            PolicyValue::Integer(n) => Some(*n),
            _ => None,
        }
    }

    fn text(&self) -> Option<&str> {
        match self {
            PolicyValue::Text(text) => Some(text),
            _ => None,
        }
    }
}

/// Keys in order (RabbitMQ shows definitions as sorted maps).
pub type PolicyDefinition = BTreeMap<String, PolicyValue>;

/// The keys ringmq applies, each with its RabbitMQ validator text and whether an operator
/// policy may set it. `max-priority` is not among them: RabbitMQ does not let a policy set it.
const KEYS: [(&str, Check, &str, bool); 10] = [
    (
        "alternate-exchange",
        Check::Text,
        "is not a valid alternate exchange name",
        false,
    ),
    (
        "dead-letter-exchange",
        Check::Text,
        "is not a valid dead letter exchange name",
        false,
    ),
    (
        "dead-letter-routing-key",
        Check::Text,
        "is not a valid dead letter routing key",
        false,
    ),
    (
        "delivery-limit",
        Check::AtLeast(0),
        "is not a valid delivery limit",
        true,
    ),
    (
        "expires",
        Check::AtLeast(1),
        "is not a valid queue expiry",
        true,
    ),
    (
        "max-length",
        Check::AtLeast(0),
        "is not a valid maximum length",
        true,
    ),
    (
        "max-length-bytes",
        Check::AtLeast(0),
        "is not a valid maximum length in bytes",
        true,
    ),
    (
        "message-ttl",
        Check::AtLeast(0),
        "is not a valid message TTL",
        true,
    ),
    (
        "overflow",
        Check::OneOf(&["drop-head", "reject-publish", "reject-publish-dlx"]),
        "is not a valid overflow value",
        false,
    ),
    (
        "queue-mode",
        Check::OneOf(&["default", "lazy"]),
        "is not a valid queue-mode value",
        false,
    ),
];

#[derive(Debug, Clone, Copy)]
enum Check {
    Text,
    AtLeast(i64),
    OneOf(&'static [&'static str]),
}

impl Check {
    fn accepts(self, value: &PolicyValue) -> bool {
        match self {
            Check::Text => value.text().is_some(),
            Check::AtLeast(min) => value.integer().is_some_and(|n| n >= min),
            Check::OneOf(choices) => value.text().is_some_and(|t| choices.contains(&t)),
        }
    }
}

/// A validated policy with its pattern compiled.
#[derive(Debug, Clone)]
pub struct Policy {
    pub kind: PolicyKind,
    pub vhost: String,
    pub name: String,
    pub pattern: String,
    pub apply_to: ApplyTo,
    pub priority: i64,
    pub definition: PolicyDefinition,
    regex: NamePattern,
}

/// The compiled regex follows from the pattern, so it is not compared.
impl PartialEq for Policy {
    fn eq(&self, other: &Policy) -> bool {
        (
            self.kind,
            &self.vhost,
            &self.name,
            &self.pattern,
            self.apply_to,
            self.priority,
            &self.definition,
        ) == (
            other.kind,
            &other.vhost,
            &other.name,
            &other.pattern,
            other.apply_to,
            other.priority,
            &other.definition,
        )
    }
}

/// A policy as it arrives, before validation (`priority` and `apply-to` as sent, if sent).
#[derive(Debug, Clone)]
pub struct PolicyRequest {
    pub kind: PolicyKind,
    pub vhost: String,
    pub name: String,
    pub pattern: PolicyValue,
    pub apply_to: Option<PolicyValue>,
    pub priority: Option<PolicyValue>,
    pub definition: PolicyDefinition,
}

/// Why a policy was refused: RabbitMQ's validation text (shown after `Validation failed`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Validation failed\n\n{0}\n")]
pub struct InvalidPolicy(pub String);

impl Policy {
    /// Validates in RabbitMQ's order: priority, pattern, apply-to, then the definition.
    pub fn validate(request: PolicyRequest) -> Result<Policy, InvalidPolicy> {
        if request.name.is_empty() || request.name.len() > ACCESS_NAME_LENGTH_MAX {
            return Err(InvalidPolicy(format!(
                "policy name must be 1 to {ACCESS_NAME_LENGTH_MAX} bytes"
            )));
        }
        let priority = match &request.priority {
            None => 0,
            Some(PolicyValue::Integer(n)) => *n,
            Some(other) => {
                return Err(InvalidPolicy(format!(
                    "priority should be a number, actually was {}",
                    other.erlang()
                )))
            }
        };
        let pattern = match &request.pattern {
            PolicyValue::Text(text) => text.clone(),
            other => {
                return Err(InvalidPolicy(format!(
                    "pattern should be a binary but was {}",
                    other.erlang()
                )))
            }
        };
        let regex = compile_pattern(&pattern)?;
        let apply_to = match &request.apply_to {
            None => ApplyTo::All,
            Some(value) => value.text().and_then(ApplyTo::parse).ok_or_else(|| {
                let shown = value.text().map_or_else(|| value.erlang(), str::to_string);
                InvalidPolicy(format!(
                    "apply-to '{shown}' unrecognised; should be 'queues', 'exchanges' or 'all'"
                ))
            })?,
        };
        validate_definition(request.kind, &request.definition)?;
        Ok(Policy {
            kind: request.kind,
            vhost: request.vhost,
            name: request.name,
            pattern,
            apply_to,
            priority,
            definition: request.definition,
            regex,
        })
    }

    fn matches(&self, vhost: &str, name: &str, queue: bool) -> bool {
        let kind_ok = if queue {
            self.apply_to.covers_queues()
        } else {
            self.apply_to.covers_exchanges()
        };
        kind_ok && self.vhost == vhost && self.regex.is_match(name)
    }
}

/// RabbitMQ's `re:run` (PCRE, look-around included) searches anywhere in the name, as
/// `NamePattern::is_match` does.
fn compile_pattern(pattern: &str) -> Result<NamePattern, InvalidPolicy> {
    if pattern.len() > PERMISSION_PATTERN_LENGTH_MAX {
        return Err(InvalidPolicy(format!(
            "pattern should be regular expression but is invalid: {{\"longer than {PERMISSION_PATTERN_LENGTH_MAX} bytes\",0}}"
        )));
    }
    NamePattern::new(pattern).map_err(|reason| {
        InvalidPolicy(format!(
            "pattern should be regular expression but is invalid: {{\"{reason}\",0}}"
        ))
    })
}

fn validate_definition(
    kind: PolicyKind,
    definition: &PolicyDefinition,
) -> Result<(), InvalidPolicy> {
    if definition.is_empty() {
        return Err(InvalidPolicy("no policy provided".to_string()));
    }
    let mut unrecognised = Vec::new();
    for (key, value) in definition {
        let known = KEYS.iter().find(|(name, _, _, operator_ok)| {
            name == key && (kind == PolicyKind::Policy || *operator_ok)
        });
        match known {
            Some((_, check, text, _)) if !check.accepts(value) => {
                return Err(InvalidPolicy(format!("{} {text}", value.erlang())));
            }
            Some(_) => {}
            // Checked together below (one key's validity depends on another's value).
            None if kind == PolicyKind::Policy && mirror::is_ha_key(key) => {}
            None => unrecognised.push(format!("{{<<\"{key}\">>,{}}}", value.erlang())),
        }
    }
    if !unrecognised.is_empty() {
        return Err(InvalidPolicy(format!(
            "[{}] are not recognised policy settings",
            unrecognised.join(",")
        )));
    }
    mirror::validate(definition).map_err(InvalidPolicy)
}

/// An operator's change to the policy set.
#[derive(Debug, Clone, PartialEq)]
pub enum PolicyOp {
    /// Creates or replaces.
    Set(Policy),
    Clear {
        kind: PolicyKind,
        vhost: String,
        name: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyOpError {
    #[error("vhost_not_found")]
    VhostNotFound,
    #[error("policy not found")]
    PolicyNotFound,
    #[error("too many policies in the vhost (at most {POLICIES_PER_VHOST_MAX})")]
    TooMany,
}

/// Decided on the topology owner against its copy.
pub fn check_policy_op(
    t: &Topology,
    op: &PolicyOp,
) -> Result<(AccessOutcome, TopologyChange), PolicyOpError> {
    match op {
        PolicyOp::Set(policy) => {
            if !t.vhost_exists(&policy.vhost) {
                return Err(PolicyOpError::VhostNotFound);
            }
            if t.policy(policy.kind, &policy.vhost, &policy.name).is_some() {
                return Ok((
                    AccessOutcome::Updated,
                    TopologyChange::SetPolicy(policy.clone()),
                ));
            }
            if t.policies_in(&policy.vhost).count() >= POLICIES_PER_VHOST_MAX {
                return Err(PolicyOpError::TooMany);
            }
            Ok((
                AccessOutcome::Created,
                TopologyChange::SetPolicy(policy.clone()),
            ))
        }
        PolicyOp::Clear { kind, vhost, name } => {
            if t.policy(*kind, vhost, name).is_none() {
                return Err(PolicyOpError::PolicyNotFound);
            }
            let change = TopologyChange::ClearPolicy {
                kind: *kind,
                vhost: vhost.clone(),
                name: name.clone(),
            };
            Ok((AccessOutcome::Updated, change))
        }
    }
}

/// The policies of one vhost, keyed by (kind, vhost, name): part of the topology.
#[derive(Debug, Clone, Default)]
pub(crate) struct PolicySet {
    policies: BTreeMap<(PolicyKind, String, String), Policy>,
}

impl PolicySet {
    pub(crate) fn set(&mut self, policy: &Policy) {
        let key = (policy.kind, policy.vhost.clone(), policy.name.clone());
        self.policies.insert(key, policy.clone());
    }

    pub(crate) fn clear(&mut self, kind: PolicyKind, vhost: &str, name: &str) {
        self.policies
            .remove(&(kind, vhost.to_string(), name.to_string()));
    }

    pub(crate) fn clear_vhost(&mut self, vhost: &str) {
        self.policies.retain(|(_, v, _), _| v != vhost);
    }

    pub(crate) fn get(&self, kind: PolicyKind, vhost: &str, name: &str) -> Option<&Policy> {
        self.policies
            .get(&(kind, vhost.to_string(), name.to_string()))
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Policy> {
        self.policies.values()
    }

    /// The policy of `kind` that applies: highest priority; among equals the first by name
    /// (RabbitMQ leaves that tie to its table's order; a name order is at least stable).
    pub(crate) fn matching(
        &self,
        kind: PolicyKind,
        vhost: &str,
        name: &str,
        queue: bool,
    ) -> Option<&Policy> {
        self.matching_applicable(kind, (vhost, name, queue), |_| true)
    }

    /// Like [`PolicySet::matching`], among the policies `applicable` admits (RabbitMQ's
    /// `is_applicable`: a quorum queue skips a policy holding a key it does not take, and the
    /// next matching one may apply). `target`: (vhost, name, is a queue).
    pub(crate) fn matching_applicable(
        &self,
        kind: PolicyKind,
        target: (&str, &str, bool),
        applicable: impl Fn(&Policy) -> bool,
    ) -> Option<&Policy> {
        let (vhost, name, queue) = target;
        let mut best: Option<&Policy> = None;
        for policy in self.policies.values() {
            if policy.kind != kind || !policy.matches(vhost, name, queue) || !applicable(policy) {
                continue;
            }
            if best.is_none_or(|b| policy.priority > b.priority) {
                best = Some(policy);
            }
        }
        best
    }
}

/// The policies that apply to one queue or exchange.
#[derive(Debug, Clone, Copy, Default)]
pub struct Applied<'t> {
    pub policy: Option<&'t Policy>,
    pub operator: Option<&'t Policy>,
}

impl Applied<'_> {
    /// RabbitMQ's `effective_policy_definition`: the policy's keys and the operator policy's,
    /// the smaller number where both set one (only numeric keys are operator-settable).
    pub fn definition(&self) -> PolicyDefinition {
        let mut merged = self
            .policy
            .map(|p| p.definition.clone())
            .unwrap_or_default();
        for (key, capped) in self.operator.iter().flat_map(|o| o.definition.iter()) {
            let value = match (
                merged.get(key).and_then(PolicyValue::integer),
                capped.integer(),
            ) {
                (Some(own), Some(cap)) => PolicyValue::Integer(own.min(cap)),
                _ => capped.clone(),
            };
            merged.insert(key.clone(), value);
        }
        merged
    }

    pub fn is_empty(&self) -> bool {
        self.policy.is_none() && self.operator.is_none()
    }
}

/// Policy keys as the queue arguments they stand for, and how they meet the queue's own.
const QUEUE_KEYS: [(&str, &str, Merge); 9] = [
    ("message-ttl", "x-message-ttl", Merge::Minimum),
    ("expires", "x-expires", Merge::Minimum),
    ("max-length", "x-max-length", Merge::Minimum),
    ("max-length-bytes", "x-max-length-bytes", Merge::Minimum),
    ("delivery-limit", "x-delivery-limit", Merge::Minimum),
    (
        "dead-letter-exchange",
        "x-dead-letter-exchange",
        Merge::ArgumentWins,
    ),
    (
        "dead-letter-routing-key",
        "x-dead-letter-routing-key",
        Merge::ArgumentWins,
    ),
    ("overflow", "x-overflow", Merge::ArgumentWins),
    ("queue-mode", "x-queue-mode", Merge::ArgumentWins),
];

#[derive(Debug, Clone, Copy)]
enum Merge {
    Minimum,
    ArgumentWins,
}

/// The queue's arguments with its effective policy definition folded in (see the module).
pub fn effective_queue_arguments(
    arguments: &FieldTable,
    definition: &PolicyDefinition,
) -> FieldTable {
    let mut effective = arguments.clone();
    for (policy_key, argument_key, merge) in QUEUE_KEYS {
        let Some(value) = definition.get(policy_key) else {
            continue;
        };
        let own = arguments.get(argument_key);
        let merged = match (merge, value) {
            (Merge::Minimum, PolicyValue::Integer(n)) => {
                let n = own
                    .and_then(FieldValue::as_i64)
                    .map_or(*n, |own| own.min(*n));
                FieldValue::LongLongInt(n)
            }
            (Merge::ArgumentWins, PolicyValue::Text(text)) if own.is_none() => {
                FieldValue::LongString(text.clone().into_bytes().into())
            }
            _ => continue,
        };
        effective.insert(argument_key, merged);
    }
    effective
}

/// The alternate exchange a policy gives an exchange whose own arguments name none.
pub(crate) fn policy_alternate_exchange(applied: &Applied<'_>) -> Option<String> {
    applied
        .definition()
        .get("alternate-exchange")
        .and_then(PolicyValue::text)
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(kind: PolicyKind, definition: &[(&str, PolicyValue)]) -> PolicyRequest {
        PolicyRequest {
            kind,
            vhost: "/".into(),
            name: "p".into(),
            pattern: PolicyValue::Text("^q".into()),
            apply_to: None,
            priority: None,
            definition: definition
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        }
    }

    fn refusal(request: PolicyRequest) -> String {
        Policy::validate(request).unwrap_err().0
    }

    #[test]
    fn validation_uses_rabbitmq_texts() {
        let int = PolicyValue::Integer;
        let text = |t: &str| PolicyValue::Text(t.into());
        assert_eq!(
            refusal(request(PolicyKind::Policy, &[("foo", int(1))])),
            "[{<<\"foo\">>,1}] are not recognised policy settings"
        );
        assert_eq!(
            refusal(request(PolicyKind::Policy, &[("max-priority", int(5))])),
            "[{<<\"max-priority\">>,5}] are not recognised policy settings"
        );
        assert_eq!(
            refusal(request(PolicyKind::Policy, &[("max-length", text("x"))])),
            "<<\"x\">> is not a valid maximum length"
        );
        assert_eq!(
            refusal(request(PolicyKind::Policy, &[("max-length", int(-1))])),
            "-1 is not a valid maximum length"
        );
        assert_eq!(
            refusal(request(PolicyKind::Policy, &[("overflow", text("x"))])),
            "<<\"x\">> is not a valid overflow value"
        );
        assert_eq!(
            refusal(request(
                PolicyKind::Operator,
                &[("dead-letter-exchange", text("x"))]
            )),
            "[{<<\"dead-letter-exchange\">>,<<\"x\">>}] are not recognised policy settings"
        );
        assert_eq!(
            refusal(request(PolicyKind::Policy, &[])),
            "no policy provided"
        );
        let mut bad_apply = request(PolicyKind::Policy, &[("max-length", int(1))]);
        bad_apply.apply_to = Some(text("bogus"));
        assert_eq!(
            refusal(bad_apply),
            "apply-to 'bogus' unrecognised; should be 'queues', 'exchanges' or 'all'"
        );
        let mut bad_priority = request(PolicyKind::Policy, &[("max-length", int(1))]);
        bad_priority.priority = Some(text("a"));
        assert_eq!(
            refusal(bad_priority),
            "priority should be a number, actually was <<\"a\">>"
        );
        let mut bad_pattern = request(PolicyKind::Policy, &[("max-length", int(1))]);
        bad_pattern.pattern = text("(");
        assert!(refusal(bad_pattern).starts_with("pattern should be regular expression"));
    }

    #[test]
    fn operator_caps_and_arguments_merge_as_rabbitmq() {
        let policy = Policy::validate(request(
            PolicyKind::Policy,
            &[
                ("max-length", PolicyValue::Integer(10)),
                (
                    "dead-letter-exchange",
                    PolicyValue::Text("from-policy".into()),
                ),
            ],
        ))
        .unwrap();
        let operator = Policy::validate(request(
            PolicyKind::Operator,
            &[
                ("max-length", PolicyValue::Integer(3)),
                ("message-ttl", PolicyValue::Integer(100)),
            ],
        ))
        .unwrap();
        let applied = Applied {
            policy: Some(&policy),
            operator: Some(&operator),
        };
        let definition = applied.definition();
        assert_eq!(definition.get("max-length"), Some(&PolicyValue::Integer(3)));
        assert_eq!(
            definition.get("message-ttl"),
            Some(&PolicyValue::Integer(100))
        );
        let mut arguments = FieldTable::default();
        arguments.insert("x-max-length", FieldValue::LongInt(2));
        arguments.insert("x-message-ttl", FieldValue::LongInt(500));
        arguments.insert(
            "x-dead-letter-exchange",
            FieldValue::LongString("own".into()),
        );
        let effective = effective_queue_arguments(&arguments, &definition);
        assert_eq!(
            effective.get("x-max-length").and_then(FieldValue::as_i64),
            Some(2)
        );
        assert_eq!(
            effective.get("x-message-ttl").and_then(FieldValue::as_i64),
            Some(100)
        );
        assert_eq!(
            effective
                .get("x-dead-letter-exchange")
                .and_then(FieldValue::as_str),
            Some("own")
        );
    }

    #[test]
    fn highest_priority_wins_and_apply_to_is_respected() {
        let mut set = PolicySet::default();
        let mut low = request(
            PolicyKind::Policy,
            &[("max-length", PolicyValue::Integer(1))],
        );
        low.name = "low".into();
        low.priority = Some(PolicyValue::Integer(1));
        let mut high = low.clone();
        high.name = "high".into();
        high.priority = Some(PolicyValue::Integer(5));
        high.apply_to = Some(PolicyValue::Text("queues".into()));
        set.set(&Policy::validate(low).unwrap());
        set.set(&Policy::validate(high).unwrap());
        let name = |p: Option<&Policy>| p.map(|p| p.name.clone());
        assert_eq!(
            name(set.matching(PolicyKind::Policy, "/", "q1", true)),
            Some("high".into())
        );
        assert_eq!(
            name(set.matching(PolicyKind::Policy, "/", "q1", false)),
            Some("low".into())
        );
        assert_eq!(name(set.matching(PolicyKind::Policy, "/", "x", true)), None);
        assert_eq!(
            name(set.matching(PolicyKind::Policy, "v", "q1", true)),
            None
        );
        assert_eq!(
            name(set.matching(PolicyKind::Operator, "/", "q1", true)),
            None
        );
    }
}
