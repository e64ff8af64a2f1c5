//! `x-queue-type: quorum` at declare: what RabbitMQ 3.10 refuses for a quorum queue
//! (`rabbit_quorum_queue:declare/1` and its `check_*` helpers, `rabbit_channel`'s server-named
//! check), with its texts, and the size of the queue's group.
//!
//! A quorum queue is hosted as a queue whose every redelivery is counted (`x-delivery-count`,
//! `x-delivery-limit`, see `queue/delivery_limit.rs`). A group of one lives on the node that
//! declared it; a group of more members is replicated by a Raft group over them
//! (`shard/quorum_group.rs`), chosen at declare (`quorum_members::select_members`).

use crate::protocol::{reply_code, FieldTable, FieldValue};

use super::equivalence::resource;
use super::policy::PolicyDefinition;
use super::validate::QueueDeclare;
use super::{AmqpError, QueueMeta};

pub const QUORUM_TYPE: &str = "quorum";

/// RabbitMQ's `quorum_cluster_size` default: a quorum queue's group when the declare names none.
pub const QUORUM_GROUP_SIZE_DEFAULT: u64 = 3;

/// Arguments a quorum queue refuses whatever their value (`check_invalid_arguments`).
const INVALID_ARGUMENTS: [&str; 2] = ["x-max-priority", "x-queue-mode"];

/// Policy keys a quorum queue does not take (RabbitMQ 3.10's `unsupported_policies` of
/// `rabbit_quorum_queue:capabilities/0`): a policy holding any of them does not apply to a
/// quorum queue at all.
const UNSUPPORTED_POLICY_KEYS: [&str; 13] = [
    "max-priority",
    "queue-mode",
    "single-active-consumer",
    "ha-mode",
    "ha-params",
    "ha-sync-mode",
    "ha-promote-on-shutdown",
    "ha-promote-on-failure",
    "queue-master-locator",
    "max-age",
    "stream-max-segment-size-bytes",
    "queue-leader-locator",
    "initial-cluster-size",
];

/// A policy with this definition applies to a quorum queue.
pub fn policy_applies(definition: &PolicyDefinition) -> bool {
    definition
        .keys()
        .all(|key| !UNSUPPORTED_POLICY_KEYS.contains(&key.as_str()))
}

/// The queue's `x-queue-type` is quorum.
pub fn is_quorum(arguments: &FieldTable) -> bool {
    arguments.get("x-queue-type").and_then(FieldValue::as_str) == Some(QUORUM_TYPE)
}

/// Members the queue's group gets: `x-quorum-initial-group-size` (validated positive before
/// this), else [`QUORUM_GROUP_SIZE_DEFAULT`], at most the cluster's members, as RabbitMQ's
/// `select_quorum_nodes`.
pub fn group_size(arguments: &FieldTable, cluster_size: usize) -> usize {
    let asked = arguments
        .get("x-quorum-initial-group-size")
        .and_then(FieldValue::as_i64)
        .and_then(|n| u64::try_from(n).ok())
        .filter(|&n| n > 0)
        .unwrap_or(QUORUM_GROUP_SIZE_DEFAULT);
    usize::try_from(asked)
        .unwrap_or(usize::MAX)
        .min(cluster_size.max(1))
}

fn precondition(text: String) -> AmqpError {
    AmqpError::new(
        reply_code::PRECONDITION_FAILED,
        format!("PRECONDITION_FAILED - {text}"),
    )
}

/// The members of a new quorum queue's group in a cluster: chosen from the cluster's members,
/// the deciding node first. A group of one is a Raft group too (of one voter), so members can
/// be added to it later, as RabbitMQ's `add_member` grows any quorum queue. `None` on a
/// single node, where a quorum queue is hosted as a queue of its own.
pub(super) fn replicated_group(d: &QueueDeclare<'_>) -> Option<Vec<String>> {
    if !is_quorum(d.arguments) || d.cluster_members.len() < 2 {
        return None;
    }
    let size = group_size(d.arguments, d.cluster_members.len());
    Some(super::quorum_members::select_members(
        d.cluster_members,
        d.local_member,
        d.new_id,
        size,
    ))
}

/// RabbitMQ's order: the name, then the arguments, auto-delete, exclusive, durable.
pub(super) fn check_quorum_declare(d: &QueueDeclare<'_>) -> Result<(), AmqpError> {
    if d.server_named {
        // `server_named => false` in `rabbit_quorum_queue:capabilities/0`; the text is
        // rabbit_channel's as remembered (not found in the reference sources searched).
        return Err(precondition(
            "Cannot declare a server-named queue for type rabbit_quorum_queue".to_string(),
        ));
    }
    let what = resource("queue", d.name, d.vhost);
    if let Some(key) = INVALID_ARGUMENTS
        .iter()
        .find(|key| d.arguments.get(key).is_some())
    {
        return Err(precondition(format!("invalid arg '{key}' for {what}")));
    }
    if d.arguments.get("x-overflow").and_then(FieldValue::as_str) == Some("reject-publish-dlx") {
        return Err(precondition(format!(
            "invalid arg 'x-overflow' with value 'reject-publish-dlx' for {what}"
        )));
    }
    if d.auto_delete {
        return Err(precondition(format!(
            "invalid property 'auto-delete' for {what}"
        )));
    }
    if d.exclusive {
        return Err(precondition(format!(
            "invalid property 'exclusive-owner' for {what}"
        )));
    }
    if !d.durable {
        return Err(precondition(format!(
            "invalid property 'non-durable' for {what}"
        )));
    }
    Ok(())
}

/// basic.consume on a quorum queue from a channel with a global prefetch limit
/// (`basic.qos` global, count above 0: RabbitMQ's active limiter) is refused with 540, as
/// `rabbit_quorum_queue:consume/3` refuses it.
pub fn check_consume(queue: &QueueMeta, global_prefetch: bool) -> Result<(), AmqpError> {
    if global_prefetch && is_quorum(&queue.arguments) {
        return Err(AmqpError::new(
            reply_code::NOT_IMPLEMENTED,
            format!(
                "NOT_IMPLEMENTED - {} does not support global qos",
                resource("queue", &queue.name, &queue.vhost)
            ),
        ));
    }
    Ok(())
}

/// basic.get on a quorum queue with a single active consumer is refused, as RabbitMQ 3.10's
/// `rabbit_channel` refuses it (`{unsupported, single_active_consumer}`).
pub fn check_get(queue: &QueueMeta) -> Result<(), AmqpError> {
    let single_active = queue
        .arguments
        .get("x-single-active-consumer")
        .and_then(FieldValue::as_bool)
        == Some(true);
    if single_active && is_quorum(&queue.arguments) {
        return Err(AmqpError::new(
            reply_code::RESOURCE_LOCKED,
            format!(
                "RESOURCE_LOCKED - cannot obtain access to locked {}. basic.get operations are \
                 not supported by quorum queues with single active consumer",
                resource("queue", &queue.name, &queue.vhost)
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(pairs: &[(&str, FieldValue)]) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in pairs {
            t.insert(*k, v.clone());
        }
        t
    }

    fn quorum(extra: &[(&str, FieldValue)]) -> FieldTable {
        let mut t = table(extra);
        t.insert("x-queue-type", FieldValue::LongString("quorum".into()));
        t
    }

    fn declare(arguments: &FieldTable) -> QueueDeclare<'_> {
        QueueDeclare {
            vhost: "/",
            name: "q",
            server_named: false,
            passive: false,
            durable: true,
            exclusive: false,
            auto_delete: false,
            arguments,
            conn: 1,
            new_id: 1,
            owner_shard: 0,
            cluster_size: 1,
            cluster_members: &[],
            local_member: 0,
        }
    }

    fn refusal(d: &QueueDeclare<'_>) -> (u16, String) {
        let error = check_quorum_declare(d).unwrap_err();
        (error.code, error.text)
    }

    #[test]
    fn a_durable_quorum_queue_on_one_node_is_a_group_of_one() {
        let args = quorum(&[]);
        assert!(is_quorum(&args));
        assert!(!is_quorum(&FieldTable::default()));
        assert!(check_quorum_declare(&declare(&args)).is_ok());
        assert_eq!(group_size(&args, 1), 1);
        assert_eq!(group_size(&args, 5), 3);
        let two = quorum(&[("x-quorum-initial-group-size", FieldValue::LongInt(2))]);
        assert_eq!(group_size(&two, 5), 2);
        assert_eq!(group_size(&two, 1), 1);
    }

    #[test]
    fn refusals_carry_rabbitmq_texts_in_its_order() {
        let args = quorum(&[("x-max-priority", FieldValue::LongInt(5))]);
        let both = QueueDeclare {
            durable: false,
            auto_delete: true,
            ..declare(&args)
        };
        assert_eq!(
            refusal(&both),
            (
                406,
                "PRECONDITION_FAILED - invalid arg 'x-max-priority' for queue 'q' in vhost '/'"
                    .to_string()
            )
        );
        let lazy = quorum(&[("x-queue-mode", FieldValue::LongString("lazy".into()))]);
        assert!(refusal(&declare(&lazy))
            .1
            .contains("invalid arg 'x-queue-mode'"));
        let dlx = quorum(&[(
            "x-overflow",
            FieldValue::LongString("reject-publish-dlx".into()),
        )]);
        assert_eq!(
            refusal(&declare(&dlx)).1,
            "PRECONDITION_FAILED - invalid arg 'x-overflow' with value 'reject-publish-dlx' \
             for queue 'q' in vhost '/'"
        );
        let plain = quorum(&[]);
        let auto_exclusive = QueueDeclare {
            auto_delete: true,
            exclusive: true,
            ..declare(&plain)
        };
        assert!(refusal(&auto_exclusive)
            .1
            .ends_with("invalid property 'auto-delete' for queue 'q' in vhost '/'"));
        let exclusive_transient = QueueDeclare {
            exclusive: true,
            durable: false,
            ..declare(&plain)
        };
        assert!(refusal(&exclusive_transient)
            .1
            .ends_with("invalid property 'exclusive-owner' for queue 'q' in vhost '/'"));
        let transient = QueueDeclare {
            durable: false,
            ..declare(&plain)
        };
        assert_eq!(
            refusal(&transient),
            (
                406,
                "PRECONDITION_FAILED - invalid property 'non-durable' for queue 'q' in vhost '/'"
                    .to_string()
            )
        );
        let server_named = QueueDeclare {
            server_named: true,
            ..declare(&plain)
        };
        assert_eq!(refusal(&server_named).0, 406);
    }

    #[test]
    fn a_policy_with_a_key_quorum_queues_do_not_take_does_not_apply() {
        use crate::broker::policy::PolicyValue;
        let mut definition = PolicyDefinition::new();
        definition.insert("max-length".into(), PolicyValue::Integer(10));
        assert!(policy_applies(&definition));
        definition.insert("queue-mode".into(), PolicyValue::Text("lazy".into()));
        assert!(!policy_applies(&definition));
    }

    #[test]
    fn a_group_smaller_than_the_cluster_is_declared_with_its_members() {
        let names: Vec<String> = ["ringmq@a", "ringmq@b", "ringmq@c"]
            .iter()
            .map(|n| n.to_string())
            .collect();
        let two = quorum(&[("x-quorum-initial-group-size", FieldValue::LongInt(2))]);
        let on_b = QueueDeclare {
            cluster_size: 3,
            cluster_members: &names,
            local_member: 1,
            new_id: 4,
            ..declare(&two)
        };
        assert!(check_quorum_declare(&on_b).is_ok());
        let members = replicated_group(&on_b).expect("replicated");
        assert_eq!(members.len(), 2);
        assert_eq!(members[0], "ringmq@b", "the declaring node first");
        // The default on three nodes is all three; a group of one is a group of the declaring
        // node alone; nothing is replicated on a single node, nor is a classic queue.
        let plain = quorum(&[]);
        let all = QueueDeclare { new_id: 4, ..on_b };
        let all = QueueDeclare {
            arguments: &plain,
            ..all
        };
        assert_eq!(replicated_group(&all).map(|m| m.len()), Some(3));
        let one = quorum(&[("x-quorum-initial-group-size", FieldValue::LongInt(1))]);
        assert_eq!(
            replicated_group(&QueueDeclare {
                arguments: &one,
                ..on_b
            }),
            Some(vec!["ringmq@b".to_string()])
        );
        assert_eq!(replicated_group(&declare(&plain)), None);
        let classic = FieldTable::default();
        assert_eq!(
            replicated_group(&QueueDeclare {
                arguments: &classic,
                ..on_b
            }),
            None
        );
    }
}
