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
use std::time::Instant;

use super::messages::topology_op;
use super::{Shard, TopologyCall};
use crate::broker::quorum_members::{GroupReport, QuorumGroupRecord};
use crate::broker::{quorum, AmqpError, QueueId, ShardId, TopologyChange};
use crate::cluster::MemberChange;
use crate::limits::{
    QUORUM_MEMBERSHIP_WAIT, QUORUM_REPORT_ATTEMPTS_MAX, QUORUM_REPORT_RETRY_INTERVAL,
};
use crate::protocol::reply_code;

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

    /// Whether this node holds (or is to hold) a copy of `queue`: one of the members the group
    /// is to have, or still a voter of the configuration its leader last reported (a member
    /// being removed keeps its copy until its removal is committed: in a group of two, the
    /// change needs its vote).
    pub(super) fn holds_quorum_group(&self, queue: QueueId) -> bool {
        let local = self.members().local_name().to_string();
        let Some(record) = self.quorum_record(queue) else {
            return true; // every member, declared before groups had their own
        };
        let to_be = record.members.as_ref().is_none_or(|m| m.contains(&local));
        let still = match (&record.report, &record.initial) {
            (Some(report), _) => report.voters.contains(&local),
            (None, Some(initial)) => initial.contains(&local),
            (None, None) => true,
        };
        to_be || still
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
        if self.is_topology_owner() {
            self.follow_quorum_membership(queue);
        }
        if self.holds_quorum_group(queue) {
            // A member that has not heard its group yet (it just started) forwards to the
            // reported leader rather than to the declaring node; its group corrects it. Not
            // to itself: it serves nothing before its group says so.
            let reported = record.report.as_ref().map(|r| r.leader.as_str());
            let index = reported.and_then(|name| self.members().index_of(name));
            let local = self.members().local_index();
            if let Some(index) = index.filter(|&i| i != local) {
                if !self.knows_quorum_leader(queue) {
                    self.set_quorum_leader(queue, Some(index));
                }
            }
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
                self.features.quorum.report_heard.notify();
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
            index: groups.applied_index(queue)?,
            leader: members.local_name().to_string(),
            voters,
        })
    }
}

// ---- membership changes (the topology owner) ------------------------------------------------

impl Shard {
    /// `queue`'s group record changed: this node joins the group (its copy starts empty and
    /// catches up from the leader's log or snapshot) or leaves it (its removal is committed:
    /// the copy and the group's files go), and a serving leader moves the Raft configuration
    /// towards the recorded members.
    fn follow_quorum_membership(&self, queue: QueueId) {
        let Some(meta) = self.topology.borrow().queue_by_id(queue).cloned() else {
            return; // the declare's own record, before the declare: `quorum_declared`
        };
        let Some(node) = self.cluster_node() else {
            return;
        };
        let holds = self.holds_quorum_group(queue);
        let has = node.groups().contains(queue);
        if holds && !has {
            tracing::info!(queue, "quorum queue: this node joins its group");
            if let Err(error) = self.quorum_declared(&meta, false) {
                tracing::error!(queue, %error, "quorum queue group not joined");
            }
        } else if !holds && has {
            tracing::info!(queue, "quorum queue: this node left its group");
            self.stop_serving(queue);
            // As a delete does here: the copy, the group and its files go.
            self.quorum_deleted(queue);
        }
        self.reconcile_quorum_members(queue);
    }

    /// A membership change was applied to `queue`'s group here: a serving leader reports the
    /// new configuration and takes the next step; a member it removed leaves.
    pub(super) fn quorum_voters_changed(self: &Rc<Self>, queue: QueueId, voters: &[usize]) {
        let local = self.members().local_index();
        if let Some(view) = self.cluster_node().and_then(|n| n.groups().view(queue)) {
            if view.serving {
                self.report_quorum_leader(queue, view.term);
            }
        }
        if !voters.contains(&local) && !self.quorum_members_of(queue).contains(&local) {
            self.follow_quorum_membership(queue);
        }
        self.reconcile_quorum_members(queue);
    }

    /// The serving leader of `queue`: one step of the Raft configuration towards the recorded
    /// members, when none is in progress (raft-rs takes one at a time). Additions first, so a
    /// replacement keeps as many copies as before; a leader to be removed hands leadership
    /// to a member that stays, and the next leader removes it.
    pub(super) fn reconcile_quorum_members(&self, queue: QueueId) {
        let Some(node) = self.cluster_node() else {
            return;
        };
        let groups = node.groups();
        let serving = groups.view(queue).is_some_and(|v| v.serving);
        if !serving || groups.conf_change_pending(queue) {
            return;
        }
        let Some(voters) = groups.voters(queue) else {
            return;
        };
        let wanted = self.quorum_members_of(queue);
        if wanted.is_empty() {
            return; // never every voter removed
        }
        let local = self.members().local_index();
        let change = match (
            wanted.iter().find(|m| !voters.contains(m)),
            voters.iter().find(|v| !wanted.contains(v)),
        ) {
            (Some(&add), _) => MemberChange::Add(add),
            (None, Some(&remove)) if remove == local => {
                if let Some(&next) = wanted.iter().find(|&&m| m != local) {
                    tracing::info!(
                        queue,
                        to = next,
                        "quorum leader to be removed: handing over"
                    );
                    groups.transfer_leader(queue, next);
                }
                return;
            }
            (None, Some(&remove)) => MemberChange::Remove(remove),
            (None, None) => return,
        };
        match groups.propose_member_change(queue, change) {
            Ok(()) => tracing::info!(queue, ?change, "quorum group membership change proposed"),
            Err(error) => {
                tracing::warn!(queue, ?change, %error, "quorum group membership change not proposed")
            }
        }
    }
}

/// Why a membership change is refused, in RabbitMQ's words where it has them.
pub(super) fn refused(text: String) -> AmqpError {
    AmqpError::new(
        reply_code::PRECONDITION_FAILED,
        format!("PRECONDITION_FAILED - {text}"),
    )
}

impl TopologyCall for topology_op::QuorumMemberChange {
    type Ok = ();
    /// Checked against this node's copy, recorded through the cluster (`QuorumMembers`), then
    /// answered once the group's leader reports the configuration it asked for, or with an
    /// error after `QUORUM_MEMBERSHIP_WAIT` (the change stays recorded; the leader applies it
    /// once it can commit).
    async fn decide(self, owner: &Rc<Shard>, _from: ShardId) -> Result<(), AmqpError> {
        let (queue, members) = owner.decide_member_change(&self)?;
        let target: Vec<usize> = owner.member_indexes(&members);
        if owner.quorum_members_of(queue) != target {
            let change = TopologyChange::QuorumMembers { queue, members };
            owner.broadcast(vec![change]).await?;
        }
        owner.await_quorum_voters(queue, &target).await
    }
}

impl Shard {
    /// The members `change` leaves `queue`'s group with, or RabbitMQ's refusal.
    fn decide_member_change(
        &self,
        change: &topology_op::QuorumMemberChange,
    ) -> Result<(QueueId, Vec<String>), AmqpError> {
        let what = format!("queue '{}' in vhost '{}'", change.name, change.vhost);
        let meta = self
            .topology
            .borrow()
            .queue(&change.vhost, &change.name)
            .cloned()
            .ok_or_else(|| {
                AmqpError::new(reply_code::NOT_FOUND, format!("NOT_FOUND - no {what}"))
            })?;
        if !quorum::is_quorum(&meta.arguments) {
            return Err(refused(format!(
                "{what} is not a quorum queue (classic_queue_not_supported)"
            )));
        }
        let node = self
            .cluster_node()
            .ok_or_else(|| refused(format!("{what}: this node is not in a cluster")))?;
        let Some(index) = self.members().index_of(&change.node) else {
            return Err(refused(format!(
                "{} is not a node of this cluster (node_not_running)",
                change.node
            )));
        };
        if !self.is_replicated_quorum(&meta) {
            return Err(refused(format!("{what} was declared with one member before groups could change: delete and declare it again to change its members")));
        }
        let mut members: Vec<String> = self
            .quorum_members_of(meta.id)
            .into_iter()
            .filter_map(|i| self.members().names().get(i).cloned())
            .collect();
        let is_member = members.contains(&change.node);
        match (change.add, is_member) {
            // RabbitMQ's add_member is idempotent.
            (true, true) => {}
            (true, false) => {
                let running = index == self.members().local_index()
                    || node
                        .peer_states()
                        .iter()
                        .any(|p| p.name == change.node && p.running);
                if !running {
                    return Err(refused(format!(
                        "{} is not running (node_not_running)",
                        change.node
                    )));
                }
                members.push(change.node.clone());
            }
            (false, false) => {
                return Err(refused(format!(
                    "{} is not a member of {what} (not_found)",
                    change.node
                )));
            }
            (false, true) if members.len() == 1 => {
                return Err(refused(format!(
                    "{} is the last member of {what} (last_node)",
                    change.node
                )));
            }
            (false, true) => members.retain(|m| *m != change.node),
        }
        Ok((meta.id, members))
    }

    /// Waits until `queue`'s leader reports the voters `target`, within
    /// `QUORUM_MEMBERSHIP_WAIT`.
    async fn await_quorum_voters(&self, queue: QueueId, target: &[usize]) -> Result<(), AmqpError> {
        let deadline = Instant::now() + QUORUM_MEMBERSHIP_WAIT;
        loop {
            let heard = self.features.quorum.report_heard.wait();
            let reported = self
                .quorum_record(queue)
                .and_then(|r| r.report)
                .map(|r| self.member_indexes(&r.voters));
            if let Some(mut voters) = reported {
                voters.sort_unstable();
                let mut wanted = target.to_vec();
                wanted.sort_unstable();
                if voters == wanted {
                    return Ok(());
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(AmqpError::new(
                    reply_code::INTERNAL_ERROR,
                    format!(
                        "INTERNAL_ERROR - the change is recorded, but the group's leader has not \
                         applied it within {} s (it will once the group can commit)",
                        QUORUM_MEMBERSHIP_WAIT.as_secs()
                    ),
                ));
            }
            let _ = glommio::timer::timeout(deadline - now, async {
                heard.await;
                Ok(())
            })
            .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::{QueueMeta, Topology};
    use crate::cluster::Members;
    use crate::protocol::FieldTable;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|n| n.to_string()).collect()
    }

    fn report(term: u64, index: u64, voters: &[&str]) -> TopologyChange {
        TopologyChange::QuorumReport {
            queue: 7,
            report: GroupReport {
                term,
                index,
                leader: "ringmq@a".to_string(),
                voters: names(voters),
            },
        }
    }

    /// Node b of {a, b}: which groups it holds, and where it forwards, as the record changes
    /// (declared on a alone, b added, then removed: it keeps its copy until the leader's
    /// report shows the removal).
    #[test]
    fn a_member_holds_its_copy_until_its_removal_is_reported() {
        let shard = Shard::new(0, 1, Topology::new_default());
        shard.set_members(Members::b_of_two());
        let declare = TopologyChange::DeclareQueue {
            queue: QueueMeta {
                id: 7,
                name: "q".to_string(),
                vhost: "/".to_string(),
                owner_shard: 0,
                durable: true,
                exclusive_owner: None,
                auto_delete: false,
                arguments: FieldTable::default(),
            },
        };
        let group = TopologyChange::QuorumGroup {
            queue: 7,
            members: names(&["ringmq@a"]),
        };
        shard.apply_changes(&[group, declare]);
        assert!(shard.is_replicated_id(7));
        assert!(!shard.holds_quorum_group(7));
        assert_eq!(shard.quorum_initial_voters(7), vec![0]);
        assert_eq!(shard.node_of_queue(7), 0, "forwards to the first member");
        let grown = TopologyChange::QuorumMembers {
            queue: 7,
            members: names(&["ringmq@a", "ringmq@b"]),
        };
        shard.apply_changes(&[grown, report(3, 10, &["ringmq@a", "ringmq@b"])]);
        assert!(shard.holds_quorum_group(7));
        assert_eq!(shard.quorum_members_of(7), vec![0, 1]);
        assert_eq!(
            shard.quorum_initial_voters(7),
            vec![0],
            "the log's start stays"
        );
        let shrunk = TopologyChange::QuorumMembers {
            queue: 7,
            members: names(&["ringmq@a"]),
        };
        shard.apply_changes(&[shrunk]);
        assert!(shard.holds_quorum_group(7), "its vote may still be needed");
        // A report committed late (older index) changes nothing; the newer one removes it.
        shard.apply_changes(&[
            report(3, 20, &["ringmq@a"]),
            report(3, 15, &["ringmq@a", "ringmq@b"]),
        ]);
        assert!(!shard.holds_quorum_group(7));
        // Deleted: nothing of its group is left in the topology.
        shard.apply_changes(&[TopologyChange::DeleteQueue {
            vhost: "/".to_string(),
            name: "q".to_string(),
        }]);
        assert!(shard.topology.borrow().quorum_group(7).is_none());
        shard.apply_changes(&[report(4, 30, &["ringmq@a"])]);
        assert!(
            shard.topology.borrow().quorum_group(7).is_none(),
            "a report after the delete leaves nothing"
        );
    }
}
