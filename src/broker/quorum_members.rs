//! Which nodes a replicated queue's group is over, as the replicated topology records it.
//!
//! A group is decided once, at declare, by the deciding node ([`select_members`]) and recorded
//! with the declare (`TopologyChange::QuorumGroup`), so every node reads the same list from the
//! log rather than computing it again (a node restarted with other flags would compute
//! another). Membership changes (`rabbitmq-queues add_member / delete_member / grow`) record
//! the members the group is to have (`QuorumMembers`); the group's serving leader records what
//! its Raft configuration holds and that it leads (`QuorumReport`): nodes outside the group
//! learn the leader from it, and a member taken out learns that its removal took effect.
//!
//! A queue declared before groups had their own members has no record: its group is every
//! member of the cluster (`None` below).

use super::QueueId;

/// What the serving leader of a group last recorded (the highest term, then the highest
/// index, wins).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupReport {
    pub term: u64,
    /// The group's applied index when the leader reported: a leader reports again after each
    /// membership change, and its reports may commit out of order.
    pub index: u64,
    pub leader: String,
    /// The voters of the Raft configuration the leader had applied.
    pub voters: Vec<String>,
}

/// One replicated queue's group in the topology.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuorumGroupRecord {
    /// The group's voters at the start of its Raft log (its declare): the configuration every
    /// member replays the log's configuration changes from. `None`: every cluster member.
    pub initial: Option<Vec<String>>,
    /// The members the group is to have (`None`: every cluster member).
    pub members: Option<Vec<String>>,
    pub report: Option<GroupReport>,
}

impl QuorumGroupRecord {
    /// The leader's report, kept only when it is not older than the last one (by term, then
    /// index): reports can commit in either order, and the later one is the truth.
    pub fn take_report(&mut self, report: GroupReport) {
        let newer = |r: &GroupReport| (r.term, r.index) <= (report.term, report.index);
        if self.report.as_ref().is_none_or(newer) {
            self.report = Some(report);
        }
    }
}

/// The members of a new group of `size` (at least 1, at most the cluster's): the declaring
/// node first, as RabbitMQ's `select_quorum_nodes` starts with the declaring node, then the
/// others in name order from a place the queue's id picks, so the groups of many queues
/// declared on one node spread over the others. Every input is in the declare, so the
/// deciding node's choice can be checked again anywhere.
pub fn select_members(
    names: &[String],
    declaring: usize,
    queue: QueueId,
    size: usize,
) -> Vec<String> {
    let Some(first) = names.get(declaring) else {
        return Vec::new();
    };
    let others: Vec<&String> = names
        .iter()
        .enumerate()
        .filter(|&(index, _)| index != declaring)
        .map(|(_, name)| name)
        .collect();
    let start = if others.is_empty() {
        0
    } else {
        (queue % others.len() as u64) as usize
    };
    let wanted = size.clamp(1, names.len());
    let mut members = vec![first.clone()];
    members.extend(
        others
            .iter()
            .cycle()
            .skip(start)
            .take(wanted - 1)
            .map(|name| (*name).clone()),
    );
    debug_assert_eq!(members.len(), wanted);
    members
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("ringmq@{i}")).collect()
    }

    #[test]
    fn the_declaring_node_comes_first_and_the_rest_is_spread_by_queue_id() {
        let cluster = names(3);
        assert_eq!(
            select_members(&cluster, 0, 10, 2),
            vec!["ringmq@0", "ringmq@1"]
        );
        assert_eq!(
            select_members(&cluster, 0, 11, 2),
            vec!["ringmq@0", "ringmq@2"]
        );
        assert_eq!(
            select_members(&cluster, 2, 10, 2),
            vec!["ringmq@2", "ringmq@0"]
        );
        // The whole cluster, whatever the id; never a node twice; size bounded both ways.
        for queue in 0..6 {
            let mut all = select_members(&cluster, 1, queue, 3);
            assert_eq!(all[0], "ringmq@1");
            all.sort();
            assert_eq!(all, cluster);
            assert_eq!(select_members(&cluster, 1, queue, 9).len(), 3);
            assert_eq!(select_members(&cluster, 1, queue, 0), vec!["ringmq@1"]);
        }
        let five = names(5);
        let members = select_members(&five, 3, 7, 3);
        assert_eq!(members, vec!["ringmq@3", "ringmq@4", "ringmq@0"]);
        // The same inputs give the same group on every node.
        assert_eq!(select_members(&five, 3, 7, 3), members);
        assert!(select_members(&five, 9, 7, 3).is_empty());
        assert_eq!(select_members(&names(1), 0, 5, 3), vec!["ringmq@0"]);
    }

    #[test]
    fn a_report_of_an_older_term_never_replaces_a_newer_one() {
        let report = |term, leader: &str| GroupReport {
            term,
            index: 10,
            leader: leader.to_string(),
            voters: vec!["a".into(), "b".into()],
        };
        let mut record = QuorumGroupRecord::default();
        record.take_report(report(4, "a"));
        record.take_report(report(3, "b"));
        assert_eq!(record.report, Some(report(4, "a")));
        record.take_report(report(4, "a"));
        record.take_report(report(5, "b"));
        assert_eq!(record.report.clone().map(|r| r.leader), Some("b".into()));
        let older_index = GroupReport {
            index: 9,
            voters: vec![],
            ..report(5, "b")
        };
        record.take_report(older_index);
        assert_eq!(record.report.map(|r| r.voters.len()), Some(2));
    }
}
