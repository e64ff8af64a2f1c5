//! Users, vhosts and permissions on the topology owner: the operation is validated against the
//! owner's copy (`broker::check_access_op`) and its changes broadcast with no `.await` in
//! between, like every topology change. They are all durable: logged before the answer.

use std::rc::Rc;

use super::messages::topology_op;
use super::{Shard, TopologyCall};
use crate::broker::{check_access_op, AccessOpError, AccessOutcome, AmqpError, ShardId};

impl TopologyCall for topology_op::Access {
    /// The outer error is the broker failing (log, mesh); the inner one is the operation refused.
    type Ok = Result<AccessOutcome, AccessOpError>;
    async fn decide(self, owner: &Rc<Shard>, _from: ShardId) -> Result<Self::Ok, AmqpError> {
        let plan = match check_access_op(&owner.topology(), &self.op) {
            Ok(plan) => plan,
            Err(refused) => return Ok(Err(refused)),
        };
        owner.broadcast(plan.changes).await?;
        Ok(Ok(plan.outcome))
    }
}
