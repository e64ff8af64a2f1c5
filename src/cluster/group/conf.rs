//! Membership changes of a quorum group, raft-rs's own way: a `ConfChange` proposed to the
//! group (one member added or removed at a time, the single-server change Raft proves safe),
//! committed under the configuration before it, then applied by every member when it applies
//! that entry (`RawNode::apply_conf_change`), which is also when the leader starts (or stops)
//! replicating to the member. The configuration is kept in the group's storage, so a snapshot
//! taken later carries it to a member that installs it.
//!
//! A member replays its log from the configuration it started with at every start (the
//! declare's members, or its snapshot's), and adding a voter that is one already or removing
//! one that is not changes nothing in raft-rs: applying the log again gives the same
//! configuration.

use protobuf::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeType, ConfChangeV2, Entry, EntryType};

use super::{raft_id, Groups};
use crate::broker::QueueId;

/// One step towards the members a group is to have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberChange {
    /// The member (index) becomes a voter; it catches up from the leader's log or snapshot.
    Add(usize),
    Remove(usize),
}

impl Groups {
    /// Whether a configuration change of `queue`'s group is proposed and not yet applied
    /// here (raft-rs takes one at a time: another proposed meanwhile would be dropped).
    pub fn conf_change_pending(&self, queue: QueueId) -> bool {
        let groups = self.groups.borrow();
        groups.get(&queue).is_some_and(|group| {
            let raft = &group.raw.raft;
            raft.pending_conf_index > raft.raft_log.applied
        })
    }

    /// Proposes `change` to `queue`'s group (this node leads it). `Err`: not proposed (no such
    /// group, a change still pending, Raft refused it).
    pub fn propose_member_change(
        &self,
        queue: QueueId,
        change: MemberChange,
    ) -> Result<(), String> {
        if self.conf_change_pending(queue) {
            return Err("a membership change of the group is still in progress".to_string());
        }
        let (member, change_type) = match change {
            MemberChange::Add(member) => (member, ConfChangeType::AddNode),
            MemberChange::Remove(member) => (member, ConfChangeType::RemoveNode),
        };
        // A forgotten member may still be removed from a group (`forget_cluster_node`).
        let known = match change {
            MemberChange::Add(_) => self.roster.members().is_member(member),
            MemberChange::Remove(_) => member < self.roster.indexes(),
        };
        if !known {
            return Err(format!("member {member} is not in the cluster"));
        }
        let mut conf_change = ConfChange::default();
        conf_change.set_change_type(change_type);
        conf_change.node_id = raft_id(member);
        let mut groups = self.groups.borrow_mut();
        let group = groups
            .get_mut(&queue)
            .ok_or_else(|| format!("no group of queue {queue} here"))?;
        group
            .raw
            .propose_conf_change(Vec::new(), conf_change)
            .map_err(|e| e.to_string())?;
        drop(groups);
        self.wake.notify();
        Ok(())
    }

    /// Asks the group's leader (this node) to hand leadership to `member`, which must be up to
    /// date first (raft-rs waits for it): a leader is never removed while it leads.
    pub fn transfer_leader(&self, queue: QueueId, member: usize) {
        if let Some(group) = self.groups.borrow_mut().get_mut(&queue) {
            group.raw.transfer_leader(raft_id(member));
        }
        self.wake.notify();
    }

    /// A committed configuration change entry of `queue`'s group: applied to the group and
    /// kept in its storage. `Some(voters)`: the member indexes of the configuration after it.
    /// An entry that cannot be read or applied (it would remove every voter) changes nothing:
    /// every member refuses it the same way.
    pub(super) fn apply_conf_change(&self, queue: QueueId, entry: &Entry) -> Option<Vec<usize>> {
        let mut groups = self.groups.borrow_mut();
        let group = groups.get_mut(&queue)?;
        let applied = match entry.get_entry_type() {
            EntryType::EntryConfChange => ConfChange::parse_from_bytes(entry.get_data())
                .map_err(|e| e.to_string())
                .and_then(|cc| group.raw.apply_conf_change(&cc).map_err(|e| e.to_string())),
            EntryType::EntryConfChangeV2 => ConfChangeV2::parse_from_bytes(entry.get_data())
                .map_err(|e| e.to_string())
                .and_then(|cc| group.raw.apply_conf_change(&cc).map_err(|e| e.to_string())),
            EntryType::EntryNormal => return None,
        };
        let conf_state = match applied {
            Ok(conf_state) => conf_state,
            Err(error) => {
                tracing::warn!(queue, index = entry.get_index(), %error, "a quorum group membership change was not applied");
                return None;
            }
        };
        group.storage.mem().wl().set_conf_state(conf_state.clone());
        let mut voters: Vec<usize> = conf_state
            .voters
            .iter()
            .filter_map(|&id| id.checked_sub(1).and_then(|i| usize::try_from(i).ok()))
            .collect();
        voters.sort_unstable();
        tracing::info!(
            queue,
            index = entry.get_index(),
            ?voters,
            "quorum group membership changed"
        );
        Some(voters)
    }
}
