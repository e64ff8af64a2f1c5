//! Policies on the topology owner: the operation is decided against the owner's copy
//! (`broker::check_policy_op`) and broadcast with no `.await` in between, like every topology
//! change. Each shard then remakes the limits of the queues it hosts (`apply_policies`), so a
//! policy reaches a queue on the shard that owns it, never through a shared table.

use std::rc::Rc;

use super::messages::topology_op;
use super::{Shard, TopologyCall};
use crate::broker::{check_policy_op, AccessOutcome, AmqpError, PolicyOpError, ShardId};

impl TopologyCall for topology_op::PolicyChange {
    /// The outer error is the broker failing (log, mesh); the inner one is the change refused.
    type Ok = Result<AccessOutcome, PolicyOpError>;
    async fn decide(self, owner: &Rc<Shard>, _from: ShardId) -> Result<Self::Ok, AmqpError> {
        let (outcome, change) = match check_policy_op(&owner.topology(), &self.op) {
            Ok(decided) => decided,
            Err(refused) => return Ok(Err(refused)),
        };
        owner.broadcast(vec![change]).await?;
        Ok(Ok(outcome))
    }
}
