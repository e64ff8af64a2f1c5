//! Validation of user, vhost and permission operations on the topology owner: an operation
//! against the current topology becomes the changes to apply, or why it is refused.
//!
//! Passwords arrive already hashed (`User::password_hash`): nothing here sees a clear one.

use crate::auth::permissions::{refusal_text, validate_pattern, InvalidPattern};
use crate::auth::{Access, Operation, ResourceKind, VhostPermissions};
use crate::limits::{
    ACCESS_NAME_LENGTH_MAX, PERMISSION_PATTERN_LENGTH_MAX, TOPIC_PERMISSIONS_PER_USER_VHOST_MAX,
    USERS_MAX, VHOSTS_MAX,
};
use crate::protocol::reply_code;

use super::{
    AmqpError, Permission, TopicPermission, Topology, TopologyChange, User, VhostLimitName,
};

/// An operator's change to who may do what (management API, definitions import, CLI).
#[derive(Debug, Clone, PartialEq)]
pub enum AccessOp {
    AddVhost {
        name: String,
    },
    /// Its exchanges, queues and their messages go with it; its connections are closed (320).
    DeleteVhost {
        name: String,
    },
    /// Creates or replaces (password hash and tags).
    PutUser(User),
    DeleteUser {
        name: String,
    },
    SetPermission {
        user: String,
        vhost: String,
        permission: Permission,
    },
    ClearPermission {
        user: String,
        vhost: String,
    },
    SetTopicPermission {
        user: String,
        vhost: String,
        permission: TopicPermission,
    },
    ClearTopicPermission {
        user: String,
        vhost: String,
        exchange: Option<String>,
    },
    /// Sets (`Some`) or clears (`None`) one of a vhost's limits.
    SetVhostLimit {
        vhost: String,
        name: VhostLimitName,
        value: Option<i64>,
    },
}

/// Why an access operation was refused; the management API maps these to RabbitMQ's statuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessOpError {
    #[error("vhost not found")]
    VhostNotFound,
    #[error("user not found")]
    UserNotFound,
    /// RabbitMQ's `vhost_or_user_not_found` (set_permissions names both).
    #[error("vhost or user not found")]
    VhostOrUserNotFound,
    #[error("no permission to clear")]
    PermissionNotFound,
    #[error("{0}")]
    InvalidPattern(#[from] InvalidPattern),
    #[error("invalid name: {0}")]
    InvalidName(&'static str),
    #[error("too many {0}")]
    TooMany(&'static str),
}

/// What an accepted operation did, for RabbitMQ's 201 (created) vs 204 (updated or no-op).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessOutcome {
    Created,
    Updated,
}

pub struct AccessPlan {
    pub outcome: AccessOutcome,
    pub changes: Vec<TopologyChange>,
}

impl AccessPlan {
    fn one(outcome: AccessOutcome, change: TopologyChange) -> AccessPlan {
        AccessPlan {
            outcome,
            changes: vec![change],
        }
    }
}

pub fn check_access_op(t: &Topology, op: &AccessOp) -> Result<AccessPlan, AccessOpError> {
    match op {
        AccessOp::AddVhost { name } => check_add_vhost(t, name),
        AccessOp::DeleteVhost { name } => check_delete_vhost(t, name),
        AccessOp::PutUser(user) => check_put_user(t, user),
        AccessOp::DeleteUser { name } => {
            if t.user(name).is_none() {
                return Err(AccessOpError::UserNotFound);
            }
            Ok(AccessPlan::one(
                AccessOutcome::Updated,
                TopologyChange::DeleteUser { name: name.clone() },
            ))
        }
        AccessOp::SetPermission {
            user,
            vhost,
            permission,
        } => {
            user_and_vhost_exist(t, user, vhost)?;
            for pattern in [&permission.configure, &permission.write, &permission.read] {
                check_pattern(pattern)?;
            }
            let outcome = if t.permission(user, vhost).is_some() {
                AccessOutcome::Updated
            } else {
                AccessOutcome::Created
            };
            Ok(AccessPlan::one(
                outcome,
                TopologyChange::SetPermission {
                    user: user.clone(),
                    vhost: vhost.clone(),
                    permission: permission.clone(),
                },
            ))
        }
        AccessOp::ClearPermission { user, vhost } => {
            if t.permission(user, vhost).is_none() {
                return Err(AccessOpError::PermissionNotFound);
            }
            Ok(AccessPlan::one(
                AccessOutcome::Updated,
                TopologyChange::ClearPermission {
                    user: user.clone(),
                    vhost: vhost.clone(),
                },
            ))
        }
        AccessOp::SetTopicPermission {
            user,
            vhost,
            permission,
        } => check_set_topic_permission(t, user, vhost, permission),
        AccessOp::SetVhostLimit { vhost, name, value } => {
            if !t.vhost_exists(vhost) {
                return Err(AccessOpError::VhostNotFound);
            }
            let mut limits = t.vhost_limits(vhost);
            limits.set(*name, *value);
            Ok(AccessPlan::one(
                AccessOutcome::Updated,
                TopologyChange::SetVhostLimits {
                    vhost: vhost.clone(),
                    limits,
                },
            ))
        }
        AccessOp::ClearTopicPermission {
            user,
            vhost,
            exchange,
        } => {
            let held = t.topic_permissions(user, vhost);
            let any = match exchange {
                None => !held.is_empty(),
                Some(exchange) => held.iter().any(|p| &p.exchange == exchange),
            };
            if !any {
                return Err(AccessOpError::PermissionNotFound);
            }
            Ok(AccessPlan::one(
                AccessOutcome::Updated,
                TopologyChange::ClearTopicPermission {
                    user: user.clone(),
                    vhost: vhost.clone(),
                    exchange: exchange.clone(),
                },
            ))
        }
    }
}

/// A server-named queue's generated name against the user's permissions (the channel checked
/// every other access before the declare left it): configure, and read when the queue has a
/// dead-letter exchange, as RabbitMQ's queue.declare checks `amq.gen-…`.
pub fn check_generated_queue_name(
    t: &Topology,
    (user, vhost): (&str, &str),
    name: &str,
    reads_too: bool,
) -> Result<(), AmqpError> {
    let compiled = t
        .permission(user, vhost)
        .and_then(|permission| VhostPermissions::compile(user, vhost, permission, &[]).ok());
    let operations: &[Operation] = if reads_too {
        &[Operation::Configure, Operation::Read]
    } else {
        &[Operation::Configure]
    };
    for &operation in operations {
        let access = Access {
            operation,
            kind: ResourceKind::Queue,
            name,
        };
        if !compiled.as_ref().is_some_and(|p| p.allows(&access)) {
            return Err(AmqpError::new(
                reply_code::ACCESS_REFUSED,
                format!("ACCESS_REFUSED - {}", refusal_text(&access, vhost, user)),
            ));
        }
    }
    Ok(())
}

fn check_add_vhost(t: &Topology, name: &str) -> Result<AccessPlan, AccessOpError> {
    check_name(name, "vhost")?;
    if t.vhost_exists(name) {
        // RabbitMQ: PUT on an existing vhost is a 204 and changes nothing.
        return Ok(AccessPlan {
            outcome: AccessOutcome::Updated,
            changes: Vec::new(),
        });
    }
    if t.vhost_names().count() >= VHOSTS_MAX {
        return Err(AccessOpError::TooMany("vhosts"));
    }
    Ok(AccessPlan::one(
        AccessOutcome::Created,
        TopologyChange::AddVhost {
            name: name.to_string(),
        },
    ))
}

fn check_delete_vhost(t: &Topology, name: &str) -> Result<AccessPlan, AccessOpError> {
    if !t.vhost_exists(name) {
        return Err(AccessOpError::VhostNotFound);
    }
    // Each queue goes by its own DeleteQueue, so its owner unhosts it as for queue.delete:
    // its messages are settled in the log and its consumers told (basic.cancel). The loop is
    // bounded by QUEUES_PER_VHOST_MAX.
    let mut changes: Vec<TopologyChange> = t
        .queue_names_in_vhost(name)
        .map(|queue| TopologyChange::DeleteQueue {
            vhost: name.to_string(),
            name: queue.to_string(),
        })
        .collect();
    changes.push(TopologyChange::DeleteVhost {
        name: name.to_string(),
    });
    Ok(AccessPlan {
        outcome: AccessOutcome::Updated,
        changes,
    })
}

fn check_put_user(t: &Topology, user: &User) -> Result<AccessPlan, AccessOpError> {
    check_name(&user.name, "user")?;
    for tag in &user.tags {
        if tag.is_empty() || tag.len() > ACCESS_NAME_LENGTH_MAX || tag.contains(',') {
            return Err(AccessOpError::InvalidName("tag"));
        }
    }
    let outcome = if t.user(&user.name).is_some() {
        AccessOutcome::Updated
    } else {
        if t.users().count() >= USERS_MAX {
            return Err(AccessOpError::TooMany("users"));
        }
        AccessOutcome::Created
    };
    Ok(AccessPlan::one(
        outcome,
        TopologyChange::PutUser(user.clone()),
    ))
}

fn check_set_topic_permission(
    t: &Topology,
    user: &str,
    vhost: &str,
    permission: &TopicPermission,
) -> Result<AccessPlan, AccessOpError> {
    user_and_vhost_exist(t, user, vhost)?;
    // The exchange need not exist (RabbitMQ accepts a permission for one declared later).
    if permission.exchange.len() > ACCESS_NAME_LENGTH_MAX {
        return Err(AccessOpError::InvalidName("exchange"));
    }
    check_pattern(&permission.write)?;
    check_pattern(&permission.read)?;
    let held = t.topic_permissions(user, vhost);
    let replaces = held.iter().any(|p| p.exchange == permission.exchange);
    if !replaces && held.len() >= TOPIC_PERMISSIONS_PER_USER_VHOST_MAX {
        return Err(AccessOpError::TooMany("topic permissions"));
    }
    let outcome = if replaces {
        AccessOutcome::Updated
    } else {
        AccessOutcome::Created
    };
    Ok(AccessPlan::one(
        outcome,
        TopologyChange::SetTopicPermission {
            user: user.to_string(),
            vhost: vhost.to_string(),
            permission: permission.clone(),
        },
    ))
}

fn user_and_vhost_exist(t: &Topology, user: &str, vhost: &str) -> Result<(), AccessOpError> {
    if t.user(user).is_none() || !t.vhost_exists(vhost) {
        return Err(AccessOpError::VhostOrUserNotFound);
    }
    Ok(())
}

fn check_name(name: &str, what: &'static str) -> Result<(), AccessOpError> {
    if name.is_empty() || name.len() > ACCESS_NAME_LENGTH_MAX {
        return Err(AccessOpError::InvalidName(what));
    }
    Ok(())
}

fn check_pattern(pattern: &str) -> Result<(), AccessOpError> {
    if pattern.len() > PERMISSION_PATTERN_LENGTH_MAX {
        return Err(AccessOpError::InvalidName("permission pattern"));
    }
    Ok(validate_pattern(pattern)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{HashingAlgorithm, PasswordHash};

    fn user(name: &str) -> User {
        User {
            name: name.into(),
            password_hash: PasswordHash::new(HashingAlgorithm::Sha256, "pw"),
            tags: vec![],
        }
    }

    fn apply(t: &mut Topology, op: &AccessOp) -> Result<AccessOutcome, AccessOpError> {
        let plan = check_access_op(t, op)?;
        for change in &plan.changes {
            t.apply(change);
        }
        Ok(plan.outcome)
    }

    #[test]
    fn vhosts_are_created_once_and_deleted_when_present() {
        let mut t = Topology::new_default();
        let add = AccessOp::AddVhost { name: "v".into() };
        assert_eq!(apply(&mut t, &add), Ok(AccessOutcome::Created));
        assert_eq!(apply(&mut t, &add), Ok(AccessOutcome::Updated));
        assert!(t.exchange("v", "amq.fanout").is_some());
        let delete = AccessOp::DeleteVhost { name: "v".into() };
        assert_eq!(apply(&mut t, &delete), Ok(AccessOutcome::Updated));
        assert_eq!(apply(&mut t, &delete), Err(AccessOpError::VhostNotFound));
        assert_eq!(
            apply(&mut t, &AccessOp::AddVhost { name: "".into() }),
            Err(AccessOpError::InvalidName("vhost"))
        );
    }

    #[test]
    fn a_vhost_delete_deletes_its_queues_first() {
        let mut t = Topology::new_default();
        apply(&mut t, &AccessOp::AddVhost { name: "v".into() }).unwrap();
        t.apply(&TopologyChange::DeclareQueue {
            queue: super::super::QueueMeta {
                id: 7,
                name: "q".into(),
                vhost: "v".into(),
                owner_shard: 1,
                durable: true,
                exclusive_owner: None,
                auto_delete: false,
                arguments: Default::default(),
            },
        });
        let plan = check_access_op(&t, &AccessOp::DeleteVhost { name: "v".into() }).unwrap();
        assert_eq!(
            plan.changes,
            vec![
                TopologyChange::DeleteQueue {
                    vhost: "v".into(),
                    name: "q".into()
                },
                TopologyChange::DeleteVhost { name: "v".into() }
            ]
        );
    }

    #[test]
    fn permissions_need_both_ends_and_valid_patterns() {
        let mut t = Topology::new_default();
        let set = |user: &str, vhost: &str, configure: &str| AccessOp::SetPermission {
            user: user.into(),
            vhost: vhost.into(),
            permission: Permission {
                configure: configure.into(),
                write: ".*".into(),
                read: ".*".into(),
            },
        };
        assert_eq!(
            apply(&mut t, &set("nobody", "/", ".*")),
            Err(AccessOpError::VhostOrUserNotFound)
        );
        assert_eq!(
            apply(&mut t, &set("guest", "nowhere", ".*")),
            Err(AccessOpError::VhostOrUserNotFound)
        );
        apply(&mut t, &AccessOp::PutUser(user("bob"))).unwrap();
        assert!(matches!(
            apply(&mut t, &set("bob", "/", "(")),
            Err(AccessOpError::InvalidPattern(_))
        ));
        assert_eq!(
            apply(&mut t, &set("bob", "/", "^b")),
            Ok(AccessOutcome::Created)
        );
        assert_eq!(
            apply(&mut t, &set("bob", "/", "^c")),
            Ok(AccessOutcome::Updated)
        );
        assert_eq!(t.permission("bob", "/").unwrap().configure, "^c");
        let clear = AccessOp::ClearPermission {
            user: "bob".into(),
            vhost: "/".into(),
        };
        assert_eq!(apply(&mut t, &clear), Ok(AccessOutcome::Updated));
        assert_eq!(
            apply(&mut t, &clear),
            Err(AccessOpError::PermissionNotFound)
        );
    }

    #[test]
    fn users_are_replaced_and_deleted_with_their_permissions() {
        let mut t = Topology::new_default();
        assert_eq!(
            apply(&mut t, &AccessOp::PutUser(user("bob"))),
            Ok(AccessOutcome::Created)
        );
        let mut retagged = user("bob");
        retagged.tags = vec!["monitoring".into()];
        assert_eq!(
            apply(&mut t, &AccessOp::PutUser(retagged)),
            Ok(AccessOutcome::Updated)
        );
        assert_eq!(t.user("bob").unwrap().tags, vec!["monitoring".to_string()]);
        apply(
            &mut t,
            &AccessOp::SetTopicPermission {
                user: "bob".into(),
                vhost: "/".into(),
                permission: TopicPermission {
                    exchange: "amq.topic".into(),
                    write: "^a".into(),
                    read: "".into(),
                },
            },
        )
        .unwrap();
        let delete = AccessOp::DeleteUser { name: "bob".into() };
        assert_eq!(apply(&mut t, &delete), Ok(AccessOutcome::Updated));
        assert!(t.topic_permissions("bob", "/").is_empty());
        assert_eq!(apply(&mut t, &delete), Err(AccessOpError::UserNotFound));
    }

    #[test]
    fn topic_permissions_replace_per_exchange_and_clear_by_exchange_or_all() {
        let mut t = Topology::new_default();
        let set = |exchange: &str, write: &str| AccessOp::SetTopicPermission {
            user: "guest".into(),
            vhost: "/".into(),
            permission: TopicPermission {
                exchange: exchange.into(),
                write: write.into(),
                read: ".*".into(),
            },
        };
        assert_eq!(
            apply(&mut t, &set("amq.topic", "^a")),
            Ok(AccessOutcome::Created)
        );
        assert_eq!(
            apply(&mut t, &set("amq.topic", "^b")),
            Ok(AccessOutcome::Updated)
        );
        assert_eq!(
            apply(&mut t, &set("later", "^c")),
            Ok(AccessOutcome::Created)
        );
        assert_eq!(t.topic_permissions("guest", "/").len(), 2);
        let clear = |exchange: Option<&str>| AccessOp::ClearTopicPermission {
            user: "guest".into(),
            vhost: "/".into(),
            exchange: exchange.map(str::to_string),
        };
        assert_eq!(
            apply(&mut t, &clear(Some("later"))),
            Ok(AccessOutcome::Updated)
        );
        assert_eq!(t.topic_permissions("guest", "/")[0].write, "^b");
        assert_eq!(apply(&mut t, &clear(None)), Ok(AccessOutcome::Updated));
        assert_eq!(
            apply(&mut t, &clear(None)),
            Err(AccessOpError::PermissionNotFound)
        );
    }
}
