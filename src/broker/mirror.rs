//! The `ha-*` policy keys of RabbitMQ's mirrored classic queues (`ha-mode`, `ha-params`,
//! `ha-sync-mode`, `ha-sync-batch-size`, `ha-promote-on-shutdown`, `ha-promote-on-failure`).
//! Mirroring was removed in RabbitMQ 4, where quorum queues replaced it; ringmq maps the keys
//! onto the replication its quorum queues use:
//!
//! - validated as RabbitMQ 3.10.8 validates them (`rabbit_mirror_queue_misc:validate_policy`
//!   and the `rabbit_mirror_queue_mode_*` modules), with its texts;
//! - at declare, in a cluster, a durable, non-exclusive, non-auto-delete classic queue whose
//!   policy holds `ha-mode` is **mirrored**: a `TopologyChange::MirrorQueue` is decided with
//!   its `DeclareQueue`, and the queue is replicated over a Raft group of the cluster's members
//!   exactly as a replicated quorum queue (`shard/quorum_group.rs`), while it stays a classic
//!   queue in every other respect (type, arguments, policies, no delivery count);
//! - the group follows `ha-mode` as `x-quorum-initial-group-size` does for a quorum queue
//!   (`quorum::replicated_group`): `all` is every member; `exactly` N is N members, at most
//!   the cluster's, picked as a quorum queue's are; `nodes` is the named nodes that are
//!   cluster members. One member is an unreplicated classic queue; more is a Raft group over
//!   them, recorded with the declare (`TopologyChange::QuorumGroup`);
//! - the decision is made once, at declare, and recorded: a policy set, changed or cleared
//!   later changes nothing for existing queues (RabbitMQ mirrors or unmirrors them; ringmq
//!   logs a warning naming the queues it leaves as they are, see [`unmirrored_matches`]);
//! - on a single node the keys are accepted and change nothing, as in RabbitMQ;
//! - `ha-sync-mode`, `ha-sync-batch-size` and `ha-promote-on-*` are validated and otherwise
//!   ignored: a Raft group's followers catch up from the log by themselves, and a new leader
//!   is always one holding every committed entry (RabbitMQ's `when-synced`).

use super::policy::{Policy, PolicyDefinition, PolicyValue};
use super::quorum;
use super::validate::QueueDeclare;
use super::{AmqpError, Topology};

/// The policy keys this module validates.
pub const HA_KEYS: [&str; 6] = [
    "ha-mode",
    "ha-params",
    "ha-sync-mode",
    "ha-sync-batch-size",
    "ha-promote-on-shutdown",
    "ha-promote-on-failure",
];

pub fn is_ha_key(key: &str) -> bool {
    HA_KEYS.contains(&key)
}

/// RabbitMQ's checks of the `ha-*` keys of a definition, in its order; `Err` holds its text.
pub(super) fn validate(definition: &PolicyDefinition) -> Result<(), String> {
    let mode = definition.get("ha-mode");
    let Some(mode) = mode else {
        if HA_KEYS.iter().any(|key| definition.contains_key(*key)) {
            return Err(
                "ha-mode must be specified to specify ha-params, ha-sync-mode or \
                        ha-promote-on-shutdown"
                    .to_string(),
            );
        }
        return Ok(());
    };
    validate_params(mode, definition.get("ha-params"))?;
    let one_of = |key: &str, choices: [&str; 2], what: &str| match definition.get(key) {
        None => Ok(()),
        Some(PolicyValue::Text(text)) if choices.contains(&text.as_str()) => Ok(()),
        Some(other) => Err(format!("{key} must be {what}, got {}", other.erlang())),
    };
    one_of(
        "ha-sync-mode",
        ["manual", "automatic"],
        "\"manual\" or \"automatic\"",
    )?;
    match definition.get("ha-sync-batch-size") {
        None | Some(PolicyValue::Integer(1..)) => {}
        Some(other) => {
            return Err(format!(
                "ha-sync-batch-size takes an integer greater than 0, {} given",
                other.erlang()
            ))
        }
    }
    let promote = "\"always\" or \"when-synced\"";
    one_of("ha-promote-on-shutdown", ["always", "when-synced"], promote)?;
    one_of("ha-promote-on-failure", ["always", "when-synced"], promote)
}

fn validate_params(mode: &PolicyValue, params: Option<&PolicyValue>) -> Result<(), String> {
    let shown = || params.map_or_else(|| "none".to_string(), PolicyValue::erlang);
    match (mode, params) {
        (PolicyValue::Text(m), None) if m == "all" => Ok(()),
        (PolicyValue::Text(m), Some(_)) if m == "all" => {
            Err("ha-mode=\"all\" does not take parameters".to_string())
        }
        (PolicyValue::Text(m), Some(PolicyValue::Integer(1..))) if m == "exactly" => Ok(()),
        (PolicyValue::Text(m), _) if m == "exactly" => Err(format!(
            "ha-mode=\"exactly\" takes an integer, {} given",
            shown()
        )),
        (PolicyValue::Text(m), Some(PolicyValue::List(nodes))) if m == "nodes" => {
            if nodes.is_empty() {
                Err("ha-mode=\"nodes\" list must be non-empty".to_string())
            } else {
                Ok(())
            }
        }
        (PolicyValue::Text(m), _) if m == "nodes" => {
            Err(format!("ha-mode=\"nodes\" takes a list, {} given", shown()))
        }
        (other, _) => Err(format!("{} is not a valid ha-mode value", other.erlang())),
    }
}

/// The members a mirrored queue's group gets under `definition` (validated), at most
/// `cluster_size`; `None` without `ha-mode`.
pub fn group_size(definition: &PolicyDefinition, cluster_size: usize) -> Option<usize> {
    let asked = match (definition.get("ha-mode")?, definition.get("ha-params")) {
        (PolicyValue::Text(m), Some(PolicyValue::Integer(n))) if m == "exactly" => {
            usize::try_from(*n).unwrap_or(usize::MAX)
        }
        (PolicyValue::Text(m), Some(PolicyValue::List(nodes))) if m == "nodes" => {
            let mut distinct: Vec<&String> = nodes.iter().collect();
            distinct.sort_unstable();
            distinct.dedup();
            distinct.len()
        }
        _ => cluster_size,
    };
    Some(asked.clamp(1, cluster_size.max(1)))
}

/// Whether declaring `d` (new, valid otherwise) mirrors it, and over which members: in a
/// cluster, a durable, non-exclusive, non-auto-delete classic queue whose policy holds
/// `ha-mode` with a group of more than one member. `exactly` N (or `all`) picks N members as a
/// quorum queue's group is picked (the declaring node first, `quorum_members`); `nodes` takes
/// the named nodes that are members of the cluster, the declaring node first when named (as
/// RabbitMQ puts the master there), else in the order given.
pub(super) fn mirrored_at_declare(
    t: &Topology,
    d: &QueueDeclare<'_>,
) -> Result<Option<Vec<String>>, AmqpError> {
    let eligible = d.cluster_size > 1
        && d.durable
        && !d.exclusive
        && !d.auto_delete
        && !quorum::is_quorum(d.arguments);
    if !eligible {
        return Ok(None);
    }
    let definition = t.queue_policies(d.vhost, d.name).definition();
    let Some(size) = group_size(&definition, d.cluster_size) else {
        return Ok(None);
    };
    if let Some(PolicyValue::List(named)) = definition
        .get("ha-params")
        .filter(|_| matches!(definition.get("ha-mode"), Some(PolicyValue::Text(m)) if m == "nodes"))
    {
        let members = named_members(d, named);
        return Ok((members.len() > 1).then_some(members));
    }
    Ok((size > 1).then(|| {
        super::quorum_members::select_members(d.cluster_members, d.local_member, d.new_id, size)
    }))
}

/// `ha-mode: nodes`: the named nodes that are cluster members, once each, the declaring node
/// first when it is named.
fn named_members(d: &QueueDeclare<'_>, named: &[String]) -> Vec<String> {
    let mut members: Vec<String> = Vec::new();
    let local = d.cluster_members.get(d.local_member);
    if let Some(local) = local.filter(|l| named.contains(l)) {
        members.push(local.clone());
    }
    for name in named {
        if d.cluster_members.contains(name) && !members.contains(name) {
            members.push(name.clone());
        }
    }
    members
}

/// Existing queues `policy` matches that it would have mirrored had it applied at their
/// declare (durable, non-exclusive, non-auto-delete classic queues not mirrored): ringmq
/// leaves them as they are. Their names, at most `shown_max`, and how many in all. Runs on a
/// policy change only; bounded by the vhost's queues.
pub fn unmirrored_matches(t: &Topology, policy: &Policy, shown_max: usize) -> (Vec<String>, usize) {
    if !policy.definition.contains_key("ha-mode") {
        return (Vec::new(), 0);
    }
    let mut names = Vec::new();
    let mut count = 0;
    for name in t.queue_names_in_vhost(&policy.vhost) {
        let Some(queue) = t.queue(&policy.vhost, name) else {
            continue;
        };
        let eligible = queue.durable
            && queue.exclusive_owner.is_none()
            && !queue.auto_delete
            && !quorum::is_quorum(&queue.arguments)
            && !t.is_mirrored(queue.id);
        let governed = t
            .queue_policies(&policy.vhost, name)
            .policy
            .is_some_and(|applied| applied.name == policy.name);
        if eligible && governed {
            count += 1;
            if names.len() < shown_max {
                names.push(name.to_string());
            }
        }
    }
    (names, count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ha_mode_nodes_takes_the_named_members_the_declaring_node_first() {
        let cluster: Vec<String> = ["ringmq@a", "ringmq@b", "ringmq@c"]
            .iter()
            .map(|n| n.to_string())
            .collect();
        let arguments = crate::protocol::FieldTable::default();
        let d = QueueDeclare {
            vhost: "/",
            name: "q",
            server_named: false,
            passive: false,
            durable: true,
            exclusive: false,
            auto_delete: false,
            arguments: &arguments,
            conn: 1,
            new_id: 1,
            owner_shard: 0,
            cluster_size: 3,
            cluster_members: &cluster,
            local_member: 2,
        };
        let named = |list: &[&str]| -> Vec<String> { list.iter().map(|n| n.to_string()).collect() };
        assert_eq!(
            named_members(
                &d,
                &named(&["ringmq@a", "ringmq@c", "ringmq@x", "ringmq@a"])
            ),
            named(&["ringmq@c", "ringmq@a"])
        );
        assert_eq!(
            named_members(&d, &named(&["ringmq@b", "ringmq@a"])),
            named(&["ringmq@b", "ringmq@a"])
        );
        assert!(named_members(&d, &named(&["ringmq@x"])).is_empty());
    }

    fn definition(pairs: &[(&str, PolicyValue)]) -> PolicyDefinition {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    fn text(t: &str) -> PolicyValue {
        PolicyValue::Text(t.to_string())
    }

    #[test]
    fn rabbitmqs_texts_in_its_order() {
        let cases = [
            (
                definition(&[("ha-params", PolicyValue::Integer(2))]),
                "ha-mode must be specified to specify ha-params, ha-sync-mode or \
                 ha-promote-on-shutdown",
            ),
            (
                definition(&[("ha-mode", text("some"))]),
                "<<\"some\">> is not a valid ha-mode value",
            ),
            (
                definition(&[
                    ("ha-mode", text("all")),
                    ("ha-params", PolicyValue::Integer(2)),
                ]),
                "ha-mode=\"all\" does not take parameters",
            ),
            (
                definition(&[("ha-mode", text("exactly"))]),
                "ha-mode=\"exactly\" takes an integer, none given",
            ),
            (
                definition(&[
                    ("ha-mode", text("exactly")),
                    ("ha-params", PolicyValue::Integer(0)),
                ]),
                "ha-mode=\"exactly\" takes an integer, 0 given",
            ),
            (
                definition(&[("ha-mode", text("nodes")), ("ha-params", text("n1"))]),
                "ha-mode=\"nodes\" takes a list, <<\"n1\">> given",
            ),
            (
                definition(&[
                    ("ha-mode", text("nodes")),
                    ("ha-params", PolicyValue::List(vec![])),
                ]),
                "ha-mode=\"nodes\" list must be non-empty",
            ),
            (
                definition(&[
                    ("ha-mode", text("all")),
                    ("ha-sync-mode", text("sometimes")),
                ]),
                "ha-sync-mode must be \"manual\" or \"automatic\", got <<\"sometimes\">>",
            ),
            (
                definition(&[
                    ("ha-mode", text("all")),
                    ("ha-sync-batch-size", PolicyValue::Integer(0)),
                ]),
                "ha-sync-batch-size takes an integer greater than 0, 0 given",
            ),
            (
                definition(&[
                    ("ha-mode", text("all")),
                    ("ha-promote-on-failure", text("never")),
                ]),
                "ha-promote-on-failure must be \"always\" or \"when-synced\", got <<\"never\">>",
            ),
        ];
        for (definition, expected) in cases {
            assert_eq!(validate(&definition), Err(expected.to_string()));
        }
        let fine = definition(&[
            ("ha-mode", text("exactly")),
            ("ha-params", PolicyValue::Integer(2)),
            ("ha-sync-mode", text("automatic")),
            ("ha-promote-on-shutdown", text("when-synced")),
        ]);
        assert_eq!(validate(&fine), Ok(()));
        assert_eq!(
            validate(&definition(&[("max-length", PolicyValue::Integer(1))])),
            Ok(())
        );
    }

    #[test]
    fn group_sizes_follow_the_mode_within_the_cluster() {
        let all = definition(&[("ha-mode", text("all"))]);
        assert_eq!(group_size(&all, 3), Some(3));
        assert_eq!(group_size(&all, 1), Some(1));
        let exactly = |n| {
            definition(&[
                ("ha-mode", text("exactly")),
                ("ha-params", PolicyValue::Integer(n)),
            ])
        };
        assert_eq!(group_size(&exactly(1), 3), Some(1));
        assert_eq!(group_size(&exactly(2), 3), Some(2));
        assert_eq!(group_size(&exactly(5), 3), Some(3));
        let nodes = definition(&[
            ("ha-mode", text("nodes")),
            (
                "ha-params",
                PolicyValue::List(vec!["a".into(), "b".into(), "a".into()]),
            ),
        ]);
        assert_eq!(group_size(&nodes, 3), Some(2));
        assert_eq!(group_size(&definition(&[]), 3), None);
    }
}
