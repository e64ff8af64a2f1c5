//! The shovels' door into the shard. A shovel parameter is a topology object like a policy:
//! decided on the topology owner (`broker::check_parameter_op`) and applied by every shard; the
//! one shard `shovel::owner_index` names for (vhost, name) runs its worker, started when the
//! parameter is applied and stopped when it is cleared (or its vhost deleted). Status is
//! answered through a typed call; shutdown stops every worker before connections close, so a
//! shovel into this broker drains its confirms first. A worker is a client over TCP: it never
//! touches the queues, the mesh or a lock.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::rc::Rc;

use super::calls::ShardCall;
use super::messages::topology_op;
use super::{Shard, TopologyCall};
use crate::broker::{
    check_parameter_op, AccessOutcome, AmqpError, ParameterOp, ParameterOpError, ShardId,
    TopologyChange, SHOVEL_COMPONENT,
};
use crate::shovel::{self, ShovelStatus};

impl TopologyCall for topology_op::ParameterChange {
    /// The outer error is the broker failing (log, mesh); the inner one is the change refused.
    type Ok = Result<AccessOutcome, ParameterOpError>;
    async fn decide(self, owner: &Rc<Shard>, _from: ShardId) -> Result<Self::Ok, AmqpError> {
        let (outcome, change) = match check_parameter_op(&owner.topology(), &self.op) {
            Ok(decided) => decided,
            Err(refused) => return Ok(Err(refused)),
        };
        owner.broadcast(vec![change]).await?;
        Ok(Ok(outcome))
    }
}

/// This shard's shovels' status. Answers them in no particular order.
pub struct ShovelStatuses;

impl ShardCall for ShovelStatuses {
    type Reply = Vec<ShovelStatus>;
    async fn handle(self, shard: &Rc<Shard>, _from: ShardId) -> Vec<ShovelStatus> {
        shard.features.shovels.statuses()
    }
}

/// Stop this shard's shovels and answer once they have closed (bounded).
pub struct StopShovels;

impl ShardCall for StopShovels {
    type Reply = ();
    async fn handle(self, shard: &Rc<Shard>, _from: ShardId) {
        shard.features.shovels.stop_all().await;
    }
}

impl Shard {
    fn runs_shovel(&self, vhost: &str, name: &str) -> bool {
        shovel::owner_index(vhost, name, self.shard_count) == self.id
    }

    /// After `change` was applied to our copy (`apply_changes`).
    pub(super) fn shovel_changed(&self, change: &TopologyChange) {
        match change {
            TopologyChange::SetParameter(parameter)
                if parameter.component == SHOVEL_COMPONENT
                    && self.runs_shovel(&parameter.vhost, &parameter.name) =>
            {
                let value: serde_json::Value = match serde_json::from_str(&parameter.value) {
                    Ok(value) => value,
                    Err(error) => {
                        tracing::error!(%error, name = %parameter.name, "stored shovel value is not JSON");
                        return;
                    }
                };
                match shovel::definition::validate(&parameter.name, &value) {
                    Ok(definition) => self.features.shovels.start(
                        &parameter.vhost,
                        &parameter.name,
                        parameter.value.clone(),
                        definition,
                    ),
                    Err(errors) => {
                        tracing::error!(?errors, name = %parameter.name, "stored shovel refused")
                    }
                }
            }
            TopologyChange::ClearParameter {
                component,
                vhost,
                name,
            } if component == SHOVEL_COMPONENT => self.features.shovels.stop(vhost, name),
            TopologyChange::DeleteVhost { name } => self.features.shovels.stop_vhost(name),
            _ => {}
        }
    }

    /// Once this shard listens: its shovels start, reaching a URI without a host at
    /// `amqp_address` (an unspecified address means loopback). A shovel that reached its
    /// `src-delete-after` clears its own parameter.
    pub fn open_shovels(self: &Rc<Self>, amqp_address: Option<SocketAddr>) {
        let local = amqp_address.map(|mut address| {
            if address.ip().is_unspecified() {
                address.set_ip(match address.ip() {
                    IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                    IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
                });
            }
            address
        });
        let shard = Rc::downgrade(self);
        let on_finished: shovel::OnFinished = Rc::new(move |vhost, name| {
            let Some(shard) = shard.upgrade() else {
                return;
            };
            glommio::spawn_local(async move {
                let op = ParameterOp::Clear {
                    component: SHOVEL_COMPONENT.to_string(),
                    vhost,
                    name,
                };
                if let Err(error) = shard.topology_op(topology_op::ParameterChange { op }).await {
                    tracing::error!(%error, "a finished shovel's parameter was not cleared");
                }
            })
            .detach();
        });
        self.features.shovels.open(local, on_finished);
    }

    /// Every shard's shovels' status.
    pub async fn shovel_statuses(self: &Rc<Self>) -> Vec<ShovelStatus> {
        let mut all = Vec::new();
        for to in 0..self.shard_count {
            if let Ok(statuses) = self.call(to, ShovelStatuses).await {
                all.extend(statuses);
            }
        }
        all.sort_by(|a, b| (&a.vhost, &a.name).cmp(&(&b.vhost, &b.name)));
        all
    }

    /// Shutdown, first step (the coordinator, before it relays the shutdown): every shard's
    /// shovels drain and close while every connection is still open.
    pub async fn stop_shovels_everywhere(self: &Rc<Self>) {
        let calls: Vec<_> = (0..self.shard_count)
            .map(|to| {
                let shard = self.clone();
                glommio::spawn_local(async move { shard.call(to, StopShovels).await })
            })
            .collect();
        for call in calls {
            let _ = call.await;
        }
    }
}
