//! Transient queues of a node that went away, as RabbitMQ removes them when a node goes down.
//!
//! A classic queue lives on the node its id names; a non-durable or exclusive one does not
//! survive that node's process, but its declaration is in the replicated topology, so without
//! this the other nodes would go on listing it and refuse its name to a client that declares it
//! again elsewhere. The topology owner of the Raft leader (one proposer) sweeps every
//! `CLUSTER_TRANSIENT_SWEEP_INTERVAL` and proposes the deletion of the transient queues of
//! every peer whose link was down at two sweeps in a row: the peer is gone, not flapping. A
//! peer cut off by a partition looks the same; its transient queues are removed too, as
//! RabbitMQ does.
//!
//! A node restarted between two sweeps is not seen gone by the leader, so it cleans up after
//! itself: its Raft log tells at start-up which transient queues its previous run declared
//! and did not delete ([`EarlierTransientQueues`]); at each sweep it proposes their removal,
//! each only while its name is still held by that queue id (`TopologyChange::DeleteQueueIfId`:
//! a client may have declared the name again elsewhere since), until none is left.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::{Rc, Weak};

use super::Shard;
use crate::broker::{QueueId, QueueMeta, TopologyChange};
use crate::cluster::Members;
use crate::limits::{CLUSTER_TRANSIENT_SWEEP_INTERVAL, EARLIER_TRANSIENT_QUEUES_PER_ENTRY_MAX};

/// What one sweep remembers for the next.
#[derive(Default)]
struct Sweeper {
    /// Peers whose link was down at the last sweep.
    down: HashSet<usize>,
}

/// Non-durable or exclusive: gone with its node's process.
fn is_transient(meta: &QueueMeta) -> bool {
    !meta.durable || meta.exclusive_owner.is_some()
}

/// The transient queues this node's previous run declared and did not delete, by vhost and
/// name, as read back from its Raft log at start-up (`StateMachine::logged_before`). As many
/// as the log names; emptied as their removals commit.
#[derive(Default)]
pub(super) struct EarlierTransientQueues(HashMap<(String, String), QueueId>);

impl EarlierTransientQueues {
    /// Follows one logged entry: declares of this node's transient queues add, deletes remove.
    pub(super) fn note(&mut self, changes: &[TopologyChange], members: &Members) {
        for change in changes {
            match change {
                TopologyChange::DeclareQueue { queue }
                    if members.leads_queue(queue.id) && is_transient(queue) =>
                {
                    let key = (queue.vhost.clone(), queue.name.clone());
                    self.0.insert(key, queue.id);
                }
                TopologyChange::DeleteQueue { vhost, name } => {
                    self.0.remove(&(vhost.clone(), name.clone()));
                }
                TopologyChange::DeleteQueueIfId { vhost, name, id } => {
                    let key = (vhost.clone(), name.clone());
                    if self.0.get(&key) == Some(id) {
                        self.0.remove(&key);
                    }
                }
                TopologyChange::DeleteVhost { name } => {
                    self.0.retain(|(vhost, _), _| vhost != name);
                }
                _ => {}
            }
        }
    }

    /// The next removals to propose, as one entry.
    fn next_entry(&self) -> Vec<TopologyChange> {
        self.0
            .iter()
            .take(EARLIER_TRANSIENT_QUEUES_PER_ENTRY_MAX)
            .map(|((vhost, name), &id)| TopologyChange::DeleteQueueIfId {
                vhost: vhost.clone(),
                name: name.clone(),
                id,
            })
            .collect()
    }

    fn removed(&mut self, entry: &[TopologyChange]) {
        for change in entry {
            if let TopologyChange::DeleteQueueIfId { vhost, name, .. } = change {
                self.0.remove(&(vhost.clone(), name.clone()));
            }
        }
    }
}

impl Shard {
    /// The topology owner of a clustered node, once its Raft node runs.
    pub(super) fn start_transient_queue_sweeper(self: &Rc<Self>) {
        let weak: Weak<Shard> = Rc::downgrade(self);
        glommio::spawn_local(async move {
            let sweeper = RefCell::new(Sweeper::default());
            loop {
                glommio::timer::sleep(CLUSTER_TRANSIENT_SWEEP_INTERVAL).await;
                let Some(shard) = weak.upgrade() else {
                    return;
                };
                shard.remove_earlier_transient_queues().await;
                let stale = shard.transient_queues_of_gone_peers(&sweeper);
                for meta in stale {
                    tracing::info!(
                        queue = %meta.name,
                        vhost = %meta.vhost,
                        node = Members::node_of_queue(meta.id),
                        "removing a transient queue of a node that is gone"
                    );
                    let conn = meta.exclusive_owner.unwrap_or(0);
                    shard.remove_queue(&meta.vhost, &meta.name, conn).await;
                }
            }
        })
        .detach();
    }

    /// Proposes the removal of what this node's previous run left (`EarlierTransientQueues`),
    /// an entry at a time; what is not committed is proposed again at the next sweep.
    async fn remove_earlier_transient_queues(self: &Rc<Self>) {
        loop {
            let entry = self.replication.earlier_transient.borrow().next_entry();
            if entry.is_empty() {
                return;
            }
            if let Err(error) = self.broadcast(entry.clone()).await {
                tracing::debug!(%error.text, "transient queues of the previous run not removed yet");
                return;
            }
            tracing::info!(
                queues = entry.len(),
                "removed transient queues this node's previous run left in the topology"
            );
            self.replication
                .earlier_transient
                .borrow_mut()
                .removed(&entry);
        }
    }

    /// The transient queues of the peers down at this sweep and the last, when this node leads.
    fn transient_queues_of_gone_peers(&self, sweeper: &RefCell<Sweeper>) -> Vec<QueueMeta> {
        let Some(node) = self.cluster_node() else {
            return Vec::new();
        };
        let members = node.members();
        let local = members.local_index();
        let leading = node.leader_name().as_deref() == Some(members.local_name());
        // A forgotten member's queues went with `forget_cluster_node`.
        let down_now: HashSet<usize> = members
            .current()
            .filter(|&peer| peer != local && !node.peer_is_up(peer))
            .collect();
        let gone: HashSet<usize> = {
            let mut sweeper = sweeper.borrow_mut();
            let gone = down_now.intersection(&sweeper.down).copied().collect();
            sweeper.down = down_now;
            gone
        };
        if !leading || gone.is_empty() {
            return Vec::new();
        }
        let topology = self.topology.borrow();
        topology
            .all_queues()
            .filter(|meta| is_transient(meta))
            .filter(|meta| gone.contains(&Members::node_of_queue(meta.id)))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::FieldTable;

    fn members() -> Members {
        Members::b_of_two()
    }

    fn declare(vhost: &str, name: &str, id: QueueId, durable: bool) -> TopologyChange {
        TopologyChange::DeclareQueue {
            queue: QueueMeta {
                id,
                name: name.to_string(),
                vhost: vhost.to_string(),
                owner_shard: 0,
                durable,
                exclusive_owner: None,
                auto_delete: false,
                arguments: FieldTable::default(),
            },
        }
    }

    fn delete(vhost: &str, name: &str) -> TopologyChange {
        TopologyChange::DeleteQueue {
            vhost: vhost.to_string(),
            name: name.to_string(),
        }
    }

    #[test]
    fn the_previous_runs_live_transient_queues_are_proposed_for_removal_by_id() {
        let members = members();
        let ours = members.queue_id_base();
        let peers = (members.index_of("ringmq@a").expect("a member") as u64)
            << crate::limits::QUEUE_ID_NODE_SHIFT;
        let mut earlier = EarlierTransientQueues::default();
        earlier.note(
            &[
                declare("/", "kept", ours + 1, false),
                declare("/", "durable", ours + 2, true),
                declare("/", "deleted", ours + 3, false),
                declare("/", "peers", peers + 1, false),
                declare("other", "in-deleted-vhost", ours + 4, false),
            ],
            &members,
        );
        earlier.note(&[delete("/", "deleted")], &members);
        earlier.note(
            &[TopologyChange::DeleteVhost {
                name: "other".to_string(),
            }],
            &members,
        );
        let entry = earlier.next_entry();
        assert_eq!(
            entry,
            vec![TopologyChange::DeleteQueueIfId {
                vhost: "/".to_string(),
                name: "kept".to_string(),
                id: ours + 1,
            }]
        );
        earlier.removed(&entry);
        assert!(earlier.next_entry().is_empty());
    }

    #[test]
    fn removals_go_a_bounded_entry_at_a_time() {
        let members = members();
        let ours = members.queue_id_base();
        let count = EARLIER_TRANSIENT_QUEUES_PER_ENTRY_MAX + 10;
        let declares: Vec<TopologyChange> = (0..count)
            .map(|i| declare("/", &format!("q{i}"), ours + i as u64, false))
            .collect();
        let mut earlier = EarlierTransientQueues::default();
        earlier.note(&declares, &members);
        let first = earlier.next_entry();
        assert_eq!(first.len(), EARLIER_TRANSIENT_QUEUES_PER_ENTRY_MAX);
        earlier.removed(&first);
        assert_eq!(earlier.next_entry().len(), 10);
    }
}
