//! Permission checks as RabbitMQ makes them (`rabbit_auth_backend_internal`,
//! `rabbit_access_control`): three regular expressions per user and vhost over resource names,
//! and per topic exchange two more over routing keys.
//!
//! The regexes are compiled once per (user, vhost) into [`VhostPermissions`]; a channel keeps
//! that with the topology's permission revision and compiles again only when it changes, so a
//! publish pays one cached lookup, not a compilation.

use crate::pattern::NamePattern;

/// A user's permissions in one vhost: regexes over resource names, stored as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permission {
    pub configure: String,
    pub write: String,
    pub read: String,
}

impl Permission {
    pub fn full() -> Permission {
        Permission {
            configure: ".*".to_string(),
            write: ".*".to_string(),
            read: ".*".to_string(),
        }
    }
}

/// A user's permissions on routing keys of one topic exchange in one vhost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPermission {
    pub exchange: String,
    pub write: String,
    pub read: String,
}

/// What an operation does to a resource (RabbitMQ's `configure` / `write` / `read`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Configure,
    Write,
    Read,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceKind {
    Exchange,
    Queue,
}

impl ResourceKind {
    fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Exchange => "exchange",
            ResourceKind::Queue => "queue",
        }
    }
}

/// One access an operation needs, after name resolution ("" → last queue, server names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access<'a> {
    pub operation: Operation,
    pub kind: ResourceKind,
    pub name: &'a str,
}

/// RabbitMQ checks the default exchange under this name (`rabbit_access_control`).
const DEFAULT_EXCHANGE_RESOURCE: &str = "amq.default";

impl Access<'_> {
    /// The name the regexes see and the refusal names.
    fn resource_name(&self) -> &str {
        if self.kind == ResourceKind::Exchange && self.name.is_empty() {
            DEFAULT_EXCHANGE_RESOURCE
        } else {
            self.name
        }
    }
}

/// A permission regex that does not compile (refused when set, so never seen on a check).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("invalid regular expression '{pattern}': {reason}")]
pub struct InvalidPattern {
    pub pattern: String,
    pub reason: String,
}

/// A compiled permission pattern. `.*` (what most users are given) matches every name without
/// running a regex: a publish checks write on its exchange each time.
enum Pattern {
    Everything,
    Regex(NamePattern),
}

impl Pattern {
    fn is_match(&self, name: &str) -> bool {
        match self {
            Pattern::Everything => true,
            Pattern::Regex(regex) => regex.is_match(name),
        }
    }
}

/// RabbitMQ's rule: an empty pattern matches nothing (it becomes `^$`); any other is searched
/// for anywhere in the name (unanchored, as Erlang's `re:run`; PCRE look-around included).
fn compile(pattern: &str) -> Result<Pattern, InvalidPattern> {
    if pattern == ".*" {
        return Ok(Pattern::Everything);
    }
    let effective = if pattern.is_empty() { "^$" } else { pattern };
    let regex = NamePattern::new(effective).map_err(|reason| InvalidPattern {
        pattern: pattern.to_string(),
        reason,
    })?;
    Ok(Pattern::Regex(regex))
}

/// Checks a pattern for `set_permissions` / definitions import, before it is stored.
pub fn validate_pattern(pattern: &str) -> Result<(), InvalidPattern> {
    compile(pattern).map(|_| ())
}

struct CompiledTopicPermission {
    exchange: String,
    write: Pattern,
    read: Pattern,
}

/// The compiled permissions of one user in one vhost.
pub struct VhostPermissions {
    configure: Pattern,
    write: Pattern,
    read: Pattern,
    topic: Vec<CompiledTopicPermission>,
}

impl VhostPermissions {
    /// `{username}` and `{vhost}` in topic patterns are replaced (escaped) before compiling,
    /// as RabbitMQ's topic authorisation does.
    pub fn compile(
        user: &str,
        vhost: &str,
        permission: &Permission,
        topic: &[TopicPermission],
    ) -> Result<VhostPermissions, InvalidPattern> {
        let expand = |pattern: &str| {
            pattern
                .replace("{username}", &regex::escape(user))
                .replace("{vhost}", &regex::escape(vhost))
        };
        let topic = topic
            .iter()
            .map(|t| {
                Ok(CompiledTopicPermission {
                    exchange: t.exchange.clone(),
                    write: compile(&expand(&t.write))?,
                    read: compile(&expand(&t.read))?,
                })
            })
            .collect::<Result<_, InvalidPattern>>()?;
        Ok(VhostPermissions {
            configure: compile(&permission.configure)?,
            write: compile(&permission.write)?,
            read: compile(&permission.read)?,
            topic,
        })
    }

    pub fn allows(&self, access: &Access) -> bool {
        let regex = match access.operation {
            Operation::Configure => &self.configure,
            Operation::Write => &self.write,
            Operation::Read => &self.read,
        };
        regex.is_match(access.resource_name())
    }

    /// Whether any topic permission applies: without one, routing keys need no check at all.
    pub fn has_topic_permissions(&self) -> bool {
        !self.topic.is_empty()
    }

    /// Topic authorisation: a routing key on a topic exchange. No topic permission for the
    /// exchange means every key is allowed (RabbitMQ's default). Configure does not apply.
    pub fn allows_routing_key(
        &self,
        operation: Operation,
        exchange: &str,
        routing_key: &str,
    ) -> bool {
        let exchange = if exchange.is_empty() {
            DEFAULT_EXCHANGE_RESOURCE
        } else {
            exchange
        };
        self.topic
            .iter()
            .filter(|t| t.exchange == exchange)
            .all(|t| match operation {
                Operation::Write => t.write.is_match(routing_key),
                Operation::Read => t.read.is_match(routing_key),
                Operation::Configure => true,
            })
    }
}

/// RabbitMQ's refusal text for a resource (sent as `403 ACCESS_REFUSED - <text>`).
pub fn refusal_text(access: &Access, vhost: &str, user: &str) -> String {
    format!(
        "access to {} '{}' in vhost '{}' refused for user '{}'",
        access.kind.as_str(),
        access.resource_name(),
        vhost,
        user
    )
}

/// RabbitMQ's refusal text for a routing key on a topic exchange.
pub fn topic_refusal_text(exchange: &str, routing_key: &str, vhost: &str, user: &str) -> String {
    let exchange = if exchange.is_empty() {
        DEFAULT_EXCHANGE_RESOURCE
    } else {
        exchange
    };
    format!(
        "access to topic '{routing_key}' in exchange '{exchange}' in vhost '{vhost}' refused for user '{user}'"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn permission(configure: &str, write: &str, read: &str) -> Permission {
        Permission {
            configure: configure.into(),
            write: write.into(),
            read: read.into(),
        }
    }

    fn queue(operation: Operation, name: &str) -> Access<'_> {
        Access {
            operation,
            kind: ResourceKind::Queue,
            name,
        }
    }

    fn exchange(operation: Operation, name: &str) -> Access<'_> {
        Access {
            operation,
            kind: ResourceKind::Exchange,
            name,
        }
    }

    #[test]
    fn patterns_are_unanchored_and_empty_matches_nothing() {
        let p = VhostPermissions::compile("u", "/", &permission("^cfg", "w", ""), &[]).unwrap();
        assert!(p.allows(&queue(Operation::Configure, "cfgq")));
        assert!(!p.allows(&queue(Operation::Configure, "q-cfg")));
        assert!(p.allows(&queue(Operation::Write, "a-w-b")), "unanchored");
        assert!(!p.allows(&queue(Operation::Read, "anything")));
        assert!(!p.allows(&queue(Operation::Read, "q")));
    }

    #[test]
    fn the_default_exchange_is_checked_as_amq_default() {
        let p = VhostPermissions::compile("u", "/", &permission("", "^amq\\.default$", ""), &[])
            .unwrap();
        assert!(p.allows(&exchange(Operation::Write, "")));
        assert!(!p.allows(&exchange(Operation::Write, "amq.direct")));
        assert_eq!(
            refusal_text(&exchange(Operation::Write, ""), "probe", "pu"),
            "access to exchange 'amq.default' in vhost 'probe' refused for user 'pu'"
        );
    }

    #[test]
    fn refusal_text_is_rabbitmqs() {
        // RabbitMQ 3.10.8, queue.declare("q") with configure "^cfg".
        assert_eq!(
            refusal_text(&queue(Operation::Configure, "q"), "probe", "pu"),
            "access to queue 'q' in vhost 'probe' refused for user 'pu'"
        );
    }

    #[test]
    fn topic_permissions_expand_variables_and_default_to_allow() {
        let topic = [TopicPermission {
            exchange: "amq.topic".into(),
            write: "^{username}\\.".into(),
            read: "^{vhost}$".into(),
        }];
        let p = VhostPermissions::compile("a.b", "v", &Permission::full(), &topic).unwrap();
        assert!(p.allows_routing_key(Operation::Write, "amq.topic", "a.b.x"));
        assert!(
            !p.allows_routing_key(Operation::Write, "amq.topic", "aXb.x"),
            "the user name is escaped, its dot is literal"
        );
        assert!(p.allows_routing_key(Operation::Read, "amq.topic", "v"));
        assert!(!p.allows_routing_key(Operation::Read, "amq.topic", "w"));
        assert!(p.allows_routing_key(Operation::Write, "other", "anything"));
    }

    #[test]
    fn invalid_patterns_are_reported() {
        assert!(validate_pattern("(").is_err());
        assert!(validate_pattern("").is_ok());
        assert!(validate_pattern(".*").is_ok());
        assert!(VhostPermissions::compile("u", "/", &permission("[", ".*", ".*"), &[]).is_err());
    }
}
