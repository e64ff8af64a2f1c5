//! Transient queues of a node that went away, as RabbitMQ removes them when a node goes down.
//!
//! A classic queue lives on the node its id names; a non-durable or exclusive one does not
//! survive that node's process, but its declaration is in the replicated topology, so without
//! this the other nodes would go on listing it and refuse its name to a client that declares it
//! again elsewhere. The topology owner of the Raft leader (one proposer) sweeps every
//! `CLUSTER_TRANSIENT_SWEEP_INTERVAL` and proposes the deletion of the transient queues of
//! every peer whose link was down at two sweeps in a row: the peer is gone, not flapping. A
//! peer cut off by a partition looks the same; its transient queues are removed too, as
//! RabbitMQ does. Not covered: a peer restarted between two sweeps (its transient queues of
//! before stay listed; README "Known limits").

use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::{Rc, Weak};

use super::Shard;
use crate::broker::QueueMeta;
use crate::cluster::Members;
use crate::limits::CLUSTER_TRANSIENT_SWEEP_INTERVAL;

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

    /// The transient queues of the peers down at this sweep and the last, when this node leads.
    fn transient_queues_of_gone_peers(&self, sweeper: &RefCell<Sweeper>) -> Vec<QueueMeta> {
        let Some(node) = self.cluster_node() else {
            return Vec::new();
        };
        let members = node.members();
        let local = members.local_index();
        let leading = node.leader_name() == Some(members.local_name());
        let down_now: HashSet<usize> = (0..members.names().len())
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
