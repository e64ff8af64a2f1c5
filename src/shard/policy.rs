//! Policies on the topology owner: the operation is decided against the owner's copy
//! (`broker::check_policy_op`) and broadcast with no `.await` in between, like every topology
//! change. Each shard then remakes the limits of the queues it hosts (`apply_policies`), so a
//! policy reaches a queue on the shard that owns it, never through a shared table.

use std::rc::Rc;

use super::messages::topology_op;
use super::{Shard, TopologyCall};
use crate::broker::{
    check_policy_op, mirror, AccessOutcome, AmqpError, Policy, PolicyOp, PolicyOpError, ShardId,
};
use crate::limits::UNMIRRORED_QUEUES_LOGGED_MAX;

impl TopologyCall for topology_op::PolicyChange {
    /// The outer error is the broker failing (log, mesh); the inner one is the change refused.
    type Ok = Result<AccessOutcome, PolicyOpError>;
    async fn decide(self, owner: &Rc<Shard>, _from: ShardId) -> Result<Self::Ok, AmqpError> {
        let (outcome, change) = match check_policy_op(&owner.topology(), &self.op) {
            Ok(decided) => decided,
            Err(refused) => return Ok(Err(refused)),
        };
        owner.broadcast(vec![change]).await?;
        if let PolicyOp::Set(policy) = &self.op {
            owner.warn_unmirrored(policy);
        }
        Ok(Ok(outcome))
    }
}

impl Shard {
    /// RabbitMQ mirrors the queues an `ha-mode` policy comes to match; ringmq mirrors a queue
    /// at its declare only (`broker::mirror`), so it says which existing queues stay as they
    /// are. Clustered nodes only: on one node the keys change nothing anyway.
    fn warn_unmirrored(&self, policy: &Policy) {
        if self.members().names().len() <= 1 {
            return;
        }
        let (names, count) =
            mirror::unmirrored_matches(&self.topology(), policy, UNMIRRORED_QUEUES_LOGGED_MAX);
        if count > 0 {
            tracing::warn!(
                policy = %policy.name,
                vhost = %policy.vhost,
                queues = count,
                first = ?names,
                "an ha-mode policy matches queues declared before it: they are not mirrored \
                 (ringmq mirrors a classic queue at its declare only)"
            );
        }
    }
}
