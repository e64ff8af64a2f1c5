//! Which nodes a replicated queue's group is over, the shard's side (`broker::quorum_members`
//! is the record in the topology): this node's part in it, and where a node outside the group
//! sends the queue's traffic.
//!
//! A member learns its group's leader from its own group (`quorum_group.rs`). A node outside
//! the group hears nothing of the group, so the leader records itself in the replicated
//! topology once it serves (`QuorumReport`, through the cluster's Raft log, retried while it
//! still serves that term); a node outside forwards to the leader the latest report names, or
//! before any to the group's first member (the declaring node). The report is in the durable
//! topology, so a restarted node outside the group knows the leader at once.

use std::rc::Rc;

use super::Shard;
use crate::broker::quorum_members::{GroupReport, QuorumGroupRecord};
use crate::broker::{QueueId, TopologyChange};
use crate::limits::{QUORUM_REPORT_ATTEMPTS_MAX, QUORUM_REPORT_RETRY_INTERVAL};

impl Shard {
    /// The member indexes of the names given, in the order given; names that are not
    /// members of this cluster are left out (a node removed from the flags).
    fn member_indexes(&self, names: &[String]) -> Vec<usize> {
        let members = self.members();
        names.iter().filter_map(|n| members.index_of(n)).collect()
    }

    fn quorum_record(&self, queue: QueueId) -> Option<QuorumGroupRecord> {
        self.topology.borrow().quorum_group(queue).cloned()
    }

    /// The members `queue`'s group is to have (indexes): as recorded, else every member.
    pub(super) fn quorum_members_of(&self, queue: QueueId) -> Vec<usize> {
        match self.quorum_record(queue).and_then(|r| r.members) {
            Some(names) => self.member_indexes(&names),
            None => (0..self.members().names().len()).collect(),
        }
    }

    /// The configuration `queue`'s group log starts from: its declare's members, else (a
    /// queue declared before groups had their own members) every member.
    pub(super) fn quorum_initial_voters(&self, queue: QueueId) -> Vec<usize> {
        match self.quorum_record(queue).and_then(|r| r.initial) {
            Some(names) => self.member_indexes(&names),
            None => (0..self.members().names().len()).collect(),
        }
    }

    /// Whether this node is to hold a copy of `queue` (one of its group's members).
    pub(super) fn is_quorum_member(&self, queue: QueueId) -> bool {
        let local = self.members().local_index();
        self.quorum_members_of(queue).contains(&local)
    }

    /// Whether `queue` is a replicated queue (any node's view: member or not).
    pub(super) fn is_replicated_id(&self, queue: QueueId) -> bool {
        let meta = self.topology.borrow().queue_by_id(queue).cloned();
        meta.is_some_and(|meta| self.is_replicated_quorum(&meta))
    }

    /// Every shard, after a group record of `queue` changed here: a node outside the group
    /// forwards to the leader the record names (the latest report, else the first member).
    /// A member follows its own group instead, which is never behind the record.
    pub(super) fn quorum_record_changed(&self, queue: QueueId) {
        let Some(record) = self.quorum_record(queue) else {
            return;
        };
        let local = self.members().local_name().to_string();
        let reported_voter = record
            .report
            .as_ref()
            .is_some_and(|r| r.voters.contains(&local));
        let member = record.members.as_ref().is_none_or(|m| m.contains(&local));
        if member || reported_voter {
            return;
        }
        let leader = match (&record.report, &record.members) {
            (Some(report), _) => Some(report.leader.as_str()),
            (None, Some(members)) => members.first().map(String::as_str),
            (None, None) => None,
        };
        let index = leader.and_then(|name| self.members().index_of(name));
        if let Some(index) = index {
            self.set_quorum_leader(queue, Some(index));
        }
    }

    /// The topology owner, after it applied `changes` everywhere: its consumers of a queue
    /// whose group it is not in are attached to the leader a report names.
    pub(super) fn quorum_reports_applied(self: &Rc<Self>, changes: &[TopologyChange]) {
        for change in changes {
            if let TopologyChange::QuorumReport { queue, .. } = change {
                if !self.has_quorum_replica(*queue) {
                    self.reattach_quorum_consumers(*queue);
                }
            }
        }
    }

    /// This node started serving `queue` in `term`: recorded in the topology for the nodes
    /// outside the group, retried (`QUORUM_REPORT_ATTEMPTS_MAX` times,
    /// `QUORUM_REPORT_RETRY_INTERVAL` apart: the cluster's own Raft may be electing too)
    /// while this node still serves that term.
    pub(super) fn report_quorum_leader(self: &Rc<Self>, queue: QueueId, term: u64) {
        let weak = Rc::downgrade(self);
        glommio::spawn_local(async move {
            for attempt in 1..=QUORUM_REPORT_ATTEMPTS_MAX {
                let Some(shard) = weak.upgrade() else {
                    return;
                };
                let Some(report) = shard.quorum_report(queue, term) else {
                    return; // no longer serving that term: the next leader reports
                };
                let change = TopologyChange::QuorumReport { queue, report };
                match shard.replicate(vec![change]).await {
                    Ok(()) => return,
                    Err(error) if attempt == QUORUM_REPORT_ATTEMPTS_MAX => {
                        tracing::warn!(queue, term, %error.text, "quorum leader not recorded: nodes outside its group may not reach it");
                    }
                    Err(_) => {
                        drop(shard);
                        glommio::timer::sleep(QUORUM_REPORT_RETRY_INTERVAL).await;
                    }
                }
            }
        })
        .detach();
    }

    /// What this node reports of `queue` while it serves it in `term`.
    pub(super) fn quorum_report(&self, queue: QueueId, term: u64) -> Option<GroupReport> {
        let node = self.cluster_node()?;
        let groups = node.groups();
        let view = groups.view(queue)?;
        if !view.serving || view.term != term {
            return None;
        }
        let members = self.members();
        let voters = groups
            .voters(queue)?
            .into_iter()
            .filter_map(|i| members.names().get(i).cloned())
            .collect();
        Some(GroupReport {
            term,
            leader: members.local_name().to_string(),
            voters,
        })
    }
}
