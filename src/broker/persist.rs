//! Topology changes as bytes, for the topology records of the write-ahead log.
//!
//! The format is AMQP's own primitives (longstr, field table, octets, u64) behind a one-byte tag
//! per change, so it needs no extra dependency and decoding untrusted bytes never panics.

use bytes::{BufMut, Bytes, BytesMut};

use super::policy::{Policy, PolicyDefinition, PolicyKind, PolicyRequest, PolicyValue};
use super::quorum_members::GroupReport;
use super::{
    Binding, Destination, ExchangeKind, ExchangeMeta, Permission, QueueMeta, TopicPermission,
    TopologyChange, User,
};
use crate::auth::{HashingAlgorithm, PasswordHash, PasswordHashError};
use crate::limits::CLUSTER_NODES_MAX;
use crate::protocol::wire::{
    read_longstr, read_table, read_u64, read_u8, write_longstr, write_table,
};
use crate::protocol::ProtocolError;
use crate::protocol::{FieldTable, FieldValue};

/// Why a stored topology record could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("malformed topology record: {0}")]
    Malformed(#[from] ProtocolError),
    #[error("unknown topology record tag {0}")]
    UnknownTag(u8),
    #[error("unknown exchange kind {0}")]
    UnknownKind(String),
    #[error("unknown password hashing algorithm {0}")]
    UnknownHashing(String),
    #[error("malformed password hash: {0}")]
    BadPasswordHash(#[from] PasswordHashError),
    #[error("stored policy refused: {0}")]
    BadPolicy(String),
    #[error("a group of {0} nodes, more than a cluster holds")]
    TooManyNodes(usize),
}

pub fn encode_change(change: &TopologyChange, out: &mut BytesMut) {
    match change {
        TopologyChange::AddVhost { name } => tagged(out, 1, |o| text(o, name)),
        TopologyChange::DeleteVhost { name } => tagged(out, 2, |o| text(o, name)),
        // Tag 3 was a user with a clear password; never written since passwords are hashed.
        // Tag 14 was a user with a loopback-only flag: who may log in only from loopback is
        // configuration (`--loopback-users`, RabbitMQ's `loopback_users`), not a user's state.
        TopologyChange::PutUser(user) => tagged(out, 17, |o| {
            text(o, &user.name);
            text(o, user.password_hash.algorithm().rabbit_name());
            text(o, user.password_hash.encoded());
            text(o, &user.tags.join(","));
        }),
        TopologyChange::DeleteUser { name } => tagged(out, 4, |o| text(o, name)),
        TopologyChange::SetPermission {
            user,
            vhost,
            permission,
        } => tagged(out, 5, |o| {
            text(o, user);
            text(o, vhost);
            text(o, &permission.configure);
            text(o, &permission.write);
            text(o, &permission.read);
        }),
        TopologyChange::ClearPermission { user, vhost } => tagged(out, 6, |o| {
            text(o, user);
            text(o, vhost);
        }),
        TopologyChange::SetTopicPermission {
            user,
            vhost,
            permission,
        } => tagged(out, 15, |o| {
            text(o, user);
            text(o, vhost);
            text(o, &permission.exchange);
            text(o, &permission.write);
            text(o, &permission.read);
        }),
        TopologyChange::ClearTopicPermission {
            user,
            vhost,
            exchange,
        } => tagged(out, 16, |o| {
            text(o, user);
            text(o, vhost);
            o.put_u8(u8::from(exchange.is_some()));
            text(o, exchange.as_deref().unwrap_or(""));
        }),
        TopologyChange::DeclareExchange { vhost, exchange } => tagged(out, 7, |o| {
            text(o, vhost);
            text(o, &exchange.name);
            text(o, exchange.kind.as_str());
            flags(
                o,
                &[exchange.durable, exchange.auto_delete, exchange.internal],
            );
            write_table(o, &exchange.arguments);
        }),
        TopologyChange::DeleteExchange { vhost, name } => tagged(out, 8, |o| {
            text(o, vhost);
            text(o, name);
        }),
        TopologyChange::DeclareQueue { queue } => tagged(out, 9, |o| {
            o.put_u64(queue.id);
            text(o, &queue.name);
            text(o, &queue.vhost);
            o.put_u64(queue.owner_shard as u64);
            flags(o, &[queue.durable, queue.auto_delete]);
            write_table(o, &queue.arguments);
        }),
        TopologyChange::DeleteQueue { vhost, name } => tagged(out, 10, |o| {
            text(o, vhost);
            text(o, name);
        }),
        TopologyChange::DeleteQueueIfId { vhost, name, id } => tagged(out, 21, |o| {
            text(o, vhost);
            text(o, name);
            o.put_u64(*id);
        }),
        TopologyChange::Bind { vhost, binding } => tagged(out, 11, |o| {
            text(o, vhost);
            binding_fields(o, binding);
        }),
        TopologyChange::Unbind { vhost, binding } => tagged(out, 12, |o| {
            text(o, vhost);
            binding_fields(o, binding);
        }),
        TopologyChange::MoveQueue { queue, owner_shard } => tagged(out, 13, |o| {
            o.put_u64(*queue);
            o.put_u64(*owner_shard as u64);
        }),
        TopologyChange::MirrorQueue { queue } => tagged(out, 20, |o| o.put_u64(*queue)),
        // Tags 22-24: added with groups smaller than the cluster; a log written before them
        // holds none, and its replicated queues are groups of every member.
        TopologyChange::QuorumGroup { queue, members } => tagged(out, 22, |o| {
            o.put_u64(*queue);
            names(o, members);
        }),
        TopologyChange::QuorumMembers { queue, members } => tagged(out, 23, |o| {
            o.put_u64(*queue);
            names(o, members);
        }),
        TopologyChange::QuorumReport { queue, report } => tagged(out, 24, |o| {
            o.put_u64(*queue);
            o.put_u64(report.term);
            o.put_u64(report.index);
            text(o, &report.leader);
            names(o, &report.voters);
        }),
        TopologyChange::SetPolicy(policy) => tagged(out, 18, |o| {
            o.put_u8(kind_byte(policy.kind));
            text(o, &policy.vhost);
            text(o, &policy.name);
            text(o, &policy.pattern);
            text(o, policy.apply_to.as_str());
            o.put_u64(policy.priority as u64);
            write_table(o, &definition_table(&policy.definition));
        }),
        TopologyChange::ClearPolicy { kind, vhost, name } => tagged(out, 19, |o| {
            o.put_u8(kind_byte(*kind));
            text(o, vhost);
            text(o, name);
        }),
        // Tag 40, apart from the small sequential tags other changes are still being added at.
        TopologyChange::SetParameter(parameter) => tagged(out, 50, |o| {
            text(o, &parameter.component);
            text(o, &parameter.vhost);
            text(o, &parameter.name);
            text(o, &parameter.value);
        }),
        TopologyChange::ClearParameter {
            component,
            vhost,
            name,
        } => tagged(out, 51, |o| {
            text(o, component);
            text(o, vhost);
            text(o, name);
        }),
        TopologyChange::SetVhostLimits { vhost, limits } => tagged(out, 40, |o| {
            text(o, vhost);
            for value in [limits.max_connections, limits.max_queues] {
                o.put_u8(u8::from(value.is_some()));
                o.put_u64(value.unwrap_or(0) as u64);
            }
        }),
    }
}

/// A list of node names: `[u8 count]` then each as a longstr.
fn names(out: &mut BytesMut, names: &[String]) {
    debug_assert!(names.len() <= CLUSTER_NODES_MAX);
    out.put_u8(names.len().min(CLUSTER_NODES_MAX) as u8);
    for name in names.iter().take(CLUSTER_NODES_MAX) {
        text(out, name);
    }
}

/// A list of node names, at most `CLUSTER_NODES_MAX` of them (a record is untrusted input).
fn read_names(buf: &mut Bytes) -> Result<Vec<String>, PersistError> {
    let count = usize::from(read_u8(buf)?);
    if count > CLUSTER_NODES_MAX {
        return Err(PersistError::TooManyNodes(count));
    }
    (0..count).map(|_| read_text(buf)).collect()
}

fn kind_byte(kind: PolicyKind) -> u8 {
    match kind {
        PolicyKind::Policy => 0,
        PolicyKind::Operator => 1,
    }
}

fn read_kind(buf: &mut Bytes) -> Result<PolicyKind, PersistError> {
    match read_u8(buf)? {
        0 => Ok(PolicyKind::Policy),
        1 => Ok(PolicyKind::Operator),
        other => Err(PersistError::BadPolicy(format!(
            "unknown policy kind {other}"
        ))),
    }
}

fn long_string(text: &str) -> FieldValue {
    FieldValue::LongString(Bytes::copy_from_slice(text.as_bytes()))
}

/// A validated definition holds integers, strings and lists of strings (`ha-params` of
/// `ha-mode: nodes`): an AMQP table carries them all.
fn definition_table(definition: &PolicyDefinition) -> FieldTable {
    let mut table = FieldTable::default();
    for (key, value) in definition {
        let value = match value {
            PolicyValue::Integer(n) => FieldValue::LongLongInt(*n),
            PolicyValue::Text(t) | PolicyValue::Other(t) => long_string(t),
            PolicyValue::List(items) => {
                FieldValue::FieldArray(items.iter().map(|t| long_string(t)).collect())
            }
        };
        table.insert(key.as_str(), value);
    }
    table
}

/// Read back and validated again (a record is untrusted input), which also compiles the
/// pattern once for this process.
fn read_policy(buf: &mut Bytes) -> Result<Policy, PersistError> {
    let kind = read_kind(buf)?;
    let vhost = read_text(buf)?;
    let name = read_text(buf)?;
    let pattern = read_text(buf)?;
    let apply_to = read_text(buf)?;
    let priority = read_u64(buf)? as i64;
    let mut definition = PolicyDefinition::new();
    for (key, value) in read_table(buf)?.iter() {
        let bad = || PersistError::BadPolicy(format!("value of {key}"));
        let value = match (value, value.as_i64(), value.as_str()) {
            (_, Some(n), _) => PolicyValue::Integer(n),
            (_, None, Some(t)) => PolicyValue::Text(t.to_string()),
            (FieldValue::FieldArray(items), _, _) => {
                let texts: Option<Vec<String>> = items
                    .iter()
                    .map(|i| i.as_str().map(str::to_string))
                    .collect();
                PolicyValue::List(texts.ok_or_else(bad)?)
            }
            _ => return Err(bad()),
        };
        definition.insert(key.to_string(), value);
    }
    Policy::validate(PolicyRequest {
        kind,
        vhost,
        name,
        pattern: PolicyValue::Text(pattern),
        apply_to: Some(PolicyValue::Text(apply_to)),
        priority: Some(PolicyValue::Integer(priority)),
        definition,
    })
    .map_err(|invalid| PersistError::BadPolicy(invalid.0))
}

pub fn decode_change(mut input: Bytes) -> Result<TopologyChange, PersistError> {
    let buf = &mut input;
    let tag = read_u8(buf)?;
    Ok(match tag {
        1 => TopologyChange::AddVhost {
            name: read_text(buf)?,
        },
        2 => TopologyChange::DeleteVhost {
            name: read_text(buf)?,
        },
        14 | 17 => {
            let name = read_text(buf)?;
            let algorithm_name = read_text(buf)?;
            let algorithm = HashingAlgorithm::from_rabbit_name(&algorithm_name)
                .ok_or(PersistError::UnknownHashing(algorithm_name))?;
            let password_hash = PasswordHash::from_encoded(algorithm, &read_text(buf)?)?;
            let tags = split_tags(&read_text(buf)?);
            if tag == 14 {
                // The retired loopback-only flag: `--loopback-users` decides now.
                read_u8(buf)?;
            }
            TopologyChange::PutUser(User {
                name,
                password_hash,
                tags,
            })
        }
        4 => TopologyChange::DeleteUser {
            name: read_text(buf)?,
        },
        5 => TopologyChange::SetPermission {
            user: read_text(buf)?,
            vhost: read_text(buf)?,
            permission: Permission {
                configure: read_text(buf)?,
                write: read_text(buf)?,
                read: read_text(buf)?,
            },
        },
        6 => TopologyChange::ClearPermission {
            user: read_text(buf)?,
            vhost: read_text(buf)?,
        },
        7 => {
            let vhost = read_text(buf)?;
            let name = read_text(buf)?;
            let kind_name = read_text(buf)?;
            let kind =
                ExchangeKind::parse(&kind_name).ok_or(PersistError::UnknownKind(kind_name))?;
            let [durable, auto_delete, internal] = read_flags(buf)?;
            TopologyChange::DeclareExchange {
                vhost,
                exchange: ExchangeMeta {
                    name,
                    kind,
                    durable,
                    auto_delete,
                    internal,
                    arguments: read_table(buf)?,
                },
            }
        }
        8 => TopologyChange::DeleteExchange {
            vhost: read_text(buf)?,
            name: read_text(buf)?,
        },
        9 => {
            let id = read_u64(buf)?;
            let name = read_text(buf)?;
            let vhost = read_text(buf)?;
            let owner_shard = read_u64(buf)? as usize;
            let [durable, auto_delete] = read_flags(buf)?;
            TopologyChange::DeclareQueue {
                queue: QueueMeta {
                    id,
                    name,
                    vhost,
                    owner_shard,
                    durable,
                    // Exclusive queues are never stored: they die with their connection.
                    exclusive_owner: None,
                    auto_delete,
                    arguments: read_table(buf)?,
                },
            }
        }
        10 => TopologyChange::DeleteQueue {
            vhost: read_text(buf)?,
            name: read_text(buf)?,
        },
        21 => TopologyChange::DeleteQueueIfId {
            vhost: read_text(buf)?,
            name: read_text(buf)?,
            id: read_u64(buf)?,
        },
        11 => {
            let vhost = read_text(buf)?;
            TopologyChange::Bind {
                vhost,
                binding: read_binding(buf)?,
            }
        }
        12 => {
            let vhost = read_text(buf)?;
            TopologyChange::Unbind {
                vhost,
                binding: read_binding(buf)?,
            }
        }
        20 => TopologyChange::MirrorQueue {
            queue: read_u64(buf)?,
        },
        22 => TopologyChange::QuorumGroup {
            queue: read_u64(buf)?,
            members: read_names(buf)?,
        },
        23 => TopologyChange::QuorumMembers {
            queue: read_u64(buf)?,
            members: read_names(buf)?,
        },
        24 => TopologyChange::QuorumReport {
            queue: read_u64(buf)?,
            report: GroupReport {
                term: read_u64(buf)?,
                index: read_u64(buf)?,
                leader: read_text(buf)?,
                voters: read_names(buf)?,
            },
        },
        13 => TopologyChange::MoveQueue {
            queue: read_u64(buf)?,
            owner_shard: read_u64(buf)? as usize,
        },
        40 => {
            let vhost = read_text(buf)?;
            let mut limit = || -> Result<Option<i64>, PersistError> {
                let set = read_u8(buf)? != 0;
                let value = read_u64(buf)? as i64;
                Ok(set.then_some(value))
            };
            let max_connections = limit()?;
            let max_queues = limit()?;
            TopologyChange::SetVhostLimits {
                vhost,
                limits: super::VhostLimits {
                    max_connections,
                    max_queues,
                },
            }
        }
        15 => TopologyChange::SetTopicPermission {
            user: read_text(buf)?,
            vhost: read_text(buf)?,
            permission: TopicPermission {
                exchange: read_text(buf)?,
                write: read_text(buf)?,
                read: read_text(buf)?,
            },
        },
        16 => {
            let user = read_text(buf)?;
            let vhost = read_text(buf)?;
            let one_exchange = read_u8(buf)? != 0;
            let exchange = read_text(buf)?;
            TopologyChange::ClearTopicPermission {
                user,
                vhost,
                exchange: one_exchange.then_some(exchange),
            }
        }
        18 => TopologyChange::SetPolicy(read_policy(buf)?),
        19 => TopologyChange::ClearPolicy {
            kind: read_kind(buf)?,
            vhost: read_text(buf)?,
            name: read_text(buf)?,
        },
        50 => TopologyChange::SetParameter(super::Parameter {
            component: read_text(buf)?,
            vhost: read_text(buf)?,
            name: read_text(buf)?,
            value: read_text(buf)?,
        }),
        51 => TopologyChange::ClearParameter {
            component: read_text(buf)?,
            vhost: read_text(buf)?,
            name: read_text(buf)?,
        },
        other => return Err(PersistError::UnknownTag(other)),
    })
}

fn tagged(out: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    out.put_u8(tag);
    body(out);
}

fn text(out: &mut BytesMut, value: &str) {
    write_longstr(out, value.as_bytes());
}

fn read_text(buf: &mut Bytes) -> Result<String, PersistError> {
    let raw = read_longstr(buf)?;
    String::from_utf8(raw.to_vec()).map_err(|_| PersistError::Malformed(ProtocolError::BadUtf8))
}

fn flags(out: &mut BytesMut, values: &[bool]) {
    for &value in values {
        out.put_u8(u8::from(value));
    }
}

fn read_flags<const N: usize>(buf: &mut Bytes) -> Result<[bool; N], PersistError> {
    let mut values = [false; N];
    for value in &mut values {
        *value = read_u8(buf)? != 0;
    }
    Ok(values)
}

fn split_tags(joined: &str) -> Vec<String> {
    joined
        .split(',')
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

fn binding_fields(out: &mut BytesMut, binding: &Binding) {
    text(out, &binding.source);
    match &binding.destination {
        Destination::Queue(name) => {
            out.put_u8(0);
            text(out, name);
        }
        Destination::Exchange(name) => {
            out.put_u8(1);
            text(out, name);
        }
    }
    text(out, &binding.routing_key);
    write_table(out, &binding.arguments);
}

fn read_binding(buf: &mut Bytes) -> Result<Binding, PersistError> {
    let source = read_text(buf)?;
    let destination = match read_u8(buf)? {
        0 => Destination::Queue(read_text(buf)?),
        _ => Destination::Exchange(read_text(buf)?),
    };
    Ok(Binding {
        source,
        destination,
        routing_key: read_text(buf)?,
        arguments: read_table(buf)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{FieldTable, FieldValue};

    fn round_trip(change: TopologyChange) {
        let mut out = BytesMut::new();
        encode_change(&change, &mut out);
        let back = decode_change(out.freeze()).expect("decodes");
        assert_eq!(back, change);
    }

    #[test]
    fn every_change_round_trips() {
        round_trip(TopologyChange::SetVhostLimits {
            vhost: "v".into(),
            limits: super::super::VhostLimits {
                max_connections: Some(-1),
                max_queues: None,
            },
        });
        let mut arguments = FieldTable::default();
        arguments.insert("x-message-ttl", FieldValue::LongInt(5000));
        round_trip(TopologyChange::AddVhost { name: "v".into() });
        round_trip(TopologyChange::DeleteVhost { name: "v".into() });
        let policy = Policy::validate(PolicyRequest {
            kind: PolicyKind::Operator,
            vhost: "/".into(),
            name: "cap".into(),
            pattern: PolicyValue::Text("^q".into()),
            apply_to: Some(PolicyValue::Text("queues".into())),
            priority: Some(PolicyValue::Integer(-3)),
            definition: [("max-length".to_string(), PolicyValue::Integer(7))].into(),
        })
        .expect("valid");
        round_trip(TopologyChange::SetPolicy(policy));
        round_trip(TopologyChange::ClearPolicy {
            kind: PolicyKind::Policy,
            vhost: "/".into(),
            name: "p".into(),
        });
        for algorithm in [HashingAlgorithm::Sha256, HashingAlgorithm::Sha512] {
            round_trip(TopologyChange::PutUser(User {
                name: "u".into(),
                password_hash: PasswordHash::new(algorithm, "p"),
                tags: vec!["administrator".into(), "monitoring".into()],
            }));
        }
        round_trip(TopologyChange::PutUser(User {
            name: "passwordless".into(),
            password_hash: PasswordHash::none(),
            tags: vec![],
        }));
        round_trip(TopologyChange::SetTopicPermission {
            user: "u".into(),
            vhost: "/".into(),
            permission: TopicPermission {
                exchange: "amq.topic".into(),
                write: "^{username}".into(),
                read: "".into(),
            },
        });
        for exchange in [None, Some("amq.topic".to_string()), Some(String::new())] {
            round_trip(TopologyChange::ClearTopicPermission {
                user: "u".into(),
                vhost: "/".into(),
                exchange,
            });
        }
        round_trip(TopologyChange::DeleteUser { name: "u".into() });
        round_trip(TopologyChange::SetPermission {
            user: "u".into(),
            vhost: "/".into(),
            permission: Permission::full(),
        });
        round_trip(TopologyChange::ClearPermission {
            user: "u".into(),
            vhost: "/".into(),
        });
        round_trip(TopologyChange::DeclareExchange {
            vhost: "/".into(),
            exchange: ExchangeMeta {
                name: "x".into(),
                kind: ExchangeKind::Topic,
                durable: true,
                auto_delete: false,
                internal: true,
                arguments: arguments.clone(),
            },
        });
        let mut delayed_arguments = arguments.clone();
        delayed_arguments.insert(
            crate::broker::X_DELAYED_TYPE,
            crate::protocol::FieldValue::LongString("topic".into()),
        );
        round_trip(TopologyChange::DeclareExchange {
            vhost: "/".into(),
            exchange: ExchangeMeta {
                name: "delayed".into(),
                kind: ExchangeKind::Delayed,
                durable: true,
                auto_delete: false,
                internal: false,
                arguments: delayed_arguments,
            },
        });
        round_trip(TopologyChange::DeleteExchange {
            vhost: "/".into(),
            name: "x".into(),
        });
        round_trip(TopologyChange::DeclareQueue {
            queue: QueueMeta {
                id: 42,
                name: "q".into(),
                vhost: "/".into(),
                owner_shard: 1,
                durable: true,
                exclusive_owner: None,
                auto_delete: true,
                arguments: arguments.clone(),
            },
        });
        round_trip(TopologyChange::DeleteQueue {
            vhost: "/".into(),
            name: "q".into(),
        });
        round_trip(TopologyChange::DeleteQueueIfId {
            vhost: "/".into(),
            name: "q".into(),
            id: 42,
        });
        round_trip(TopologyChange::MoveQueue {
            queue: 42,
            owner_shard: 3,
        });
        round_trip(TopologyChange::MirrorQueue { queue: 42 });
        for destination in [
            Destination::Queue("q".into()),
            Destination::Exchange("e".into()),
        ] {
            let binding = Binding {
                source: "x".into(),
                destination,
                routing_key: "a.#".into(),
                arguments: arguments.clone(),
            };
            round_trip(TopologyChange::Bind {
                vhost: "/".into(),
                binding: binding.clone(),
            });
            round_trip(TopologyChange::Unbind {
                vhost: "/".into(),
                binding,
            });
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for len in 0..64u8 {
            let bytes: Vec<u8> = (0..len)
                .map(|i| i.wrapping_mul(37).wrapping_add(len))
                .collect();
            let _ = decode_change(Bytes::from(bytes));
        }
        assert!(matches!(
            decode_change(Bytes::from_static(&[99])),
            Err(PersistError::UnknownTag(99))
        ));
    }

    #[test]
    fn quorum_group_records_round_trip_and_the_tags_before_them_still_read() {
        let members = vec!["ringmq@a".to_string(), "ringmq@c".to_string()];
        round_trip(TopologyChange::QuorumGroup {
            queue: 7,
            members: members.clone(),
        });
        round_trip(TopologyChange::QuorumMembers {
            queue: 7,
            members: vec![],
        });
        round_trip(TopologyChange::QuorumReport {
            queue: 7,
            report: GroupReport {
                term: 12,
                index: 40,
                leader: "ringmq@c".into(),
                voters: members,
            },
        });
        // Bytes as a log written before tags 22-24 holds them (tag 20, then tag 9) still
        // decode to what they always did: the new tags took numbers no record ever had.
        let mut old = BytesMut::new();
        old.put_u8(20);
        old.put_u64(42);
        assert_eq!(
            decode_change(old.freeze()).unwrap(),
            TopologyChange::MirrorQueue { queue: 42 }
        );
        // A count past any cluster is refused before anything is read for it.
        let mut many = BytesMut::new();
        many.put_u8(22);
        many.put_u64(7);
        many.put_u8(CLUSTER_NODES_MAX as u8 + 1);
        assert!(matches!(
            decode_change(many.freeze()),
            Err(PersistError::TooManyNodes(_))
        ));
        let mut whole = BytesMut::new();
        encode_change(
            &TopologyChange::QuorumGroup {
                queue: 1,
                members: vec!["x".into(), "y".into()],
            },
            &mut whole,
        );
        for cut in 0..whole.len() {
            assert!(decode_change(whole.clone().freeze().slice(..cut)).is_err());
        }
    }

    #[test]
    fn a_stored_user_never_holds_the_clear_password() {
        let mut out = BytesMut::new();
        encode_change(
            &TopologyChange::PutUser(User {
                name: "u".into(),
                password_hash: PasswordHash::new(HashingAlgorithm::Sha256, "s3cret-pw"),
                tags: vec![],
            }),
            &mut out,
        );
        let needle = b"s3cret-pw";
        assert!(!out.windows(needle.len()).any(|w| w == needle));
    }

    #[test]
    fn a_corrupt_password_hash_is_an_error() {
        let mut out = BytesMut::new();
        out.put_u8(14);
        text(&mut out, "u");
        text(&mut out, "rabbit_password_hashing_sha256");
        text(&mut out, "not base64!");
        text(&mut out, "");
        out.put_u8(0);
        assert!(matches!(
            decode_change(out.freeze()),
            Err(PersistError::BadPasswordHash(_))
        ));
    }
}
