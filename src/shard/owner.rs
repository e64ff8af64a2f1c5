//! Shard 0 owns the topology: it validates every change against its copy, applies it, and
//! broadcasts it to every other shard, answering the client only after all have applied it, so a
//! publish that follows a `bind-ok` on any shard is routed by that binding.
//!
//! Validation and the local apply happen without an `.await` in between, so two requests never
//! validate against the same stale state; broadcasts leave in that same order on FIFO links.

use std::cell::Cell;
use std::rc::Rc;

use super::messages::{QueueOk, QueueOp, Reply, Request, TopologyOk, TopologyOp};
use super::Shard;
use crate::broker::{self, AmqpError, Destination, ShardId, TopologyChange};

#[derive(Default)]
pub struct OwnerState {
    next_queue_id: Cell<u64>,
    next_server_name: Cell<u64>,
}

impl OwnerState {
    fn take(counter: &Cell<u64>) -> u64 {
        let n = counter.get() + 1;
        counter.set(n);
        n
    }
}

impl Shard {
    pub(super) async fn owner_handle(
        self: &Rc<Self>,
        from: ShardId,
        op: TopologyOp,
    ) -> Result<TopologyOk, AmqpError> {
        debug_assert_eq!(self.id, 0, "only shard 0 owns the topology");
        match op {
            TopologyOp::ExchangeDeclare {
                vhost,
                name,
                kind,
                passive,
                durable,
                auto_delete,
                internal,
                arguments,
            } => {
                let request = broker::ExchangeDeclare {
                    vhost: &vhost,
                    name: &name,
                    kind: &kind,
                    passive,
                    durable,
                    auto_delete,
                    internal,
                    arguments: &arguments,
                };
                let changes = broker::check_exchange_declare(&self.topology.borrow(), &request)?;
                self.broadcast(changes).await;
                Ok(TopologyOk::Done)
            }
            TopologyOp::ExchangeDelete {
                vhost,
                name,
                if_unused,
            } => {
                let changes = broker::check_exchange_delete(
                    &self.topology.borrow(),
                    &vhost,
                    &name,
                    if_unused,
                )?;
                self.broadcast(changes).await;
                Ok(TopologyOk::Done)
            }
            TopologyOp::QueueDeclare {
                vhost,
                name,
                passive,
                durable,
                exclusive,
                auto_delete,
                arguments,
                conn,
            } => {
                let server_named = name.is_empty();
                let name = if server_named {
                    broker::server_named_queue(OwnerState::take(&self.owner.next_server_name))
                } else {
                    name
                };
                let request = broker::QueueDeclare {
                    vhost: &vhost,
                    name: &name,
                    server_named,
                    passive,
                    durable,
                    exclusive,
                    auto_delete,
                    arguments: &arguments,
                    conn,
                    new_id: OwnerState::take(&self.owner.next_queue_id),
                    owner_shard: from, // client-local placement: the declaring connection's shard
                };
                let changes = broker::check_queue_declare(&self.topology.borrow(), &request)?;
                self.broadcast(changes).await;
                let topology = self.topology.borrow();
                let meta = topology
                    .queue(&vhost, &name)
                    .ok_or_else(|| super::internal_error("queue vanished while being declared"))?;
                Ok(TopologyOk::QueueDeclared {
                    name,
                    queue: meta.id,
                    owner: meta.owner_shard,
                })
            }
            TopologyOp::QueueDelete {
                vhost,
                name,
                if_unused,
                if_empty,
                conn,
            } => {
                let Some(meta) = self.topology.borrow().queue(&vhost, &name).cloned() else {
                    // RabbitMQ answers delete-ok for a queue that does not exist.
                    return Ok(TopologyOk::QueueDeleted { message_count: 0 });
                };
                broker::check_queue_access(&self.topology.borrow(), &vhost, &name, conn)?;
                let op = QueueOp::Delete {
                    if_unused,
                    if_empty,
                };
                let message_count = match self.queue_op(meta.id, meta.owner_shard, op).await? {
                    QueueOk::Deleted(n) => n,
                    _ => 0,
                };
                self.remove_queue(&vhost, &name, conn).await;
                Ok(TopologyOk::QueueDeleted { message_count })
            }
            TopologyOp::Binding {
                vhost,
                bind,
                source,
                destination,
                destination_is_queue,
                routing_key,
                arguments,
                conn,
            } => {
                let destination = if destination_is_queue {
                    Destination::Queue(destination)
                } else {
                    Destination::Exchange(destination)
                };
                let request = broker::BindRequest {
                    vhost: &vhost,
                    source: &source,
                    destination: &destination,
                    routing_key: &routing_key,
                    arguments: &arguments,
                    conn,
                };
                let topology = self.topology.borrow();
                let changes = if bind {
                    broker::check_bind(&topology, &request)?
                } else {
                    broker::check_unbind(&topology, &request)?
                };
                drop(topology);
                self.broadcast(changes).await;
                Ok(TopologyOk::Done)
            }
            TopologyOp::AutoDeleteQueue { queue } => {
                let Some(meta) = self.topology.borrow().queue_by_id(queue).cloned() else {
                    return Ok(TopologyOk::Done);
                };
                let op = QueueOp::Delete {
                    if_unused: true,
                    if_empty: false,
                };
                // A new consumer may have arrived meanwhile: then the queue stays.
                if self.queue_op(meta.id, meta.owner_shard, op).await.is_ok() {
                    self.remove_queue(&meta.vhost, &meta.name, 0).await;
                }
                Ok(TopologyOk::Done)
            }
            TopologyOp::ConnectionClosed { conn } => {
                let exclusive = self.topology.borrow().queues_exclusive_to(conn);
                for meta in exclusive {
                    let op = QueueOp::Delete {
                        if_unused: false,
                        if_empty: false,
                    };
                    let _ = self.queue_op(meta.id, meta.owner_shard, op).await;
                    self.remove_queue(&meta.vhost, &meta.name, conn).await;
                }
                Ok(TopologyOk::Done)
            }
        }
    }

    /// Drops a queue from the topology everywhere (its bindings, and auto-delete exchanges left
    /// without bindings, go with it).
    async fn remove_queue(self: &Rc<Self>, vhost: &str, name: &str, conn: u64) {
        let changes = broker::check_queue_delete(&self.topology.borrow(), vhost, name, conn);
        match changes {
            Ok(changes) => self.broadcast(changes).await,
            Err(error) => tracing::warn!(queue = name, %error.text, "queue removal refused"),
        }
    }

    /// Applies `changes` here, then on every other shard; returns once all have applied them.
    async fn broadcast(self: &Rc<Self>, changes: Vec<TopologyChange>) {
        if changes.is_empty() {
            return;
        }
        self.apply_changes(&changes);
        let receivers: Vec<_> = (0..self.shard_count)
            .filter(|&peer| peer != self.id)
            .map(|peer| {
                self.send_request(
                    peer,
                    Request::Apply {
                        changes: changes.clone(),
                    },
                )
            })
            .collect();
        for receiver in receivers {
            if !matches!(receiver.await, Some(Reply::Applied)) {
                tracing::error!("a shard did not acknowledge a topology change");
            }
        }
    }

    /// Applies replicated changes to our copy and creates or removes the queues we own.
    pub(super) fn apply_changes(&self, changes: &[TopologyChange]) {
        for change in changes {
            let removed_queue = match change {
                TopologyChange::DeleteQueue { vhost, name } => self
                    .topology
                    .borrow()
                    .queue(vhost, name)
                    .filter(|m| m.owner_shard == self.id)
                    .map(|m| m.id),
                _ => None,
            };
            self.topology.borrow_mut().apply(change);
            if let TopologyChange::DeclareQueue { queue: meta } = change {
                if meta.owner_shard == self.id {
                    self.host_queue(meta.id, meta);
                }
            }
            if let Some(id) = removed_queue {
                self.unhost_queue(id);
            }
        }
    }
}
