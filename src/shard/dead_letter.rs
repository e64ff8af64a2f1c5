//! Re-publishing dead letters: messages a queue rejected, expired or dropped, sent to its
//! `x-dead-letter-exchange` from the queue's own shard, routed on the local topology copy like
//! any publish (no confirms: dead-lettering is at-most-once, as in RabbitMQ's default).
//!
//! Dead-lettering can cascade (a dead letter lands in a queue whose dispatch expires and
//! dead-letters more). Instead of recursing, work queues up in `pending` and the outermost
//! call drains it, so the stack stays flat however long the chain.

use crate::limits::DEAD_LETTER_CASCADE_MAX;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;

use super::expiry::now_ms;
use super::messages::{MeshMsg, PublishEntry};
use super::Shard;
use crate::broker::queue::{dead_lettered, is_cycle, Death, DeathReason, SharedMessage};
use crate::broker::QueueId;

#[derive(Default)]
pub struct DeadLetters {
    pending: RefCell<VecDeque<(QueueId, DeathReason, SharedMessage)>>,
    draining: Cell<bool>,
}

impl Shard {
    /// Dead-letters `messages`, which queue `queue` (hosted here) just gave up. Messages of a
    /// queue without a dead-letter exchange are dropped.
    pub(super) fn dead_letter(
        &self,
        queue: QueueId,
        reason: DeathReason,
        messages: Vec<SharedMessage>,
    ) {
        if messages.is_empty() || !self.has_dead_letter_exchange(queue) {
            return;
        }
        self.features
            .dead_letters
            .pending
            .borrow_mut()
            .extend(messages.into_iter().map(|message| (queue, reason, message)));
        if self.features.dead_letters.draining.replace(true) {
            return; // an outer call is draining
        }
        let mut handled = 0usize;
        loop {
            let next = self.features.dead_letters.pending.borrow_mut().pop_front();
            let Some((queue, reason, message)) = next else {
                break;
            };
            if handled == DEAD_LETTER_CASCADE_MAX {
                let dropped = self.features.dead_letters.pending.borrow().len() + 1;
                tracing::warn!(dropped, "dead-letter cascade too long; dropping the rest");
                self.features.dead_letters.pending.borrow_mut().clear();
                break;
            }
            handled += 1;
            self.republish_dead_letter(queue, reason, &message);
        }
        self.features.dead_letters.draining.set(false);
    }

    fn has_dead_letter_exchange(&self, queue: QueueId) -> bool {
        self.queues
            .borrow()
            .get(&queue)
            .is_some_and(|hosted| hosted.queue.config().dead_letter_exchange.is_some())
    }

    fn republish_dead_letter(&self, queue: QueueId, reason: DeathReason, message: &SharedMessage) {
        let Some((vhost, name)) = self
            .topology
            .borrow()
            .queue_by_id(queue)
            .map(|meta| (meta.vhost.clone(), meta.name.clone()))
        else {
            return;
        };
        let (exchange, routing_key) = {
            let queues = self.queues.borrow();
            let Some(config) = queues.get(&queue).map(|hosted| hosted.queue.config()) else {
                return;
            };
            let Some(exchange) = config.dead_letter_exchange.clone() else {
                return;
            };
            (exchange, config.dead_letter_routing_key.clone())
        };
        let death = Death {
            queue: &name,
            reason,
            dead_letter_exchange: &exchange,
            dead_letter_routing_key: routing_key.as_deref(),
            time_s: now_ms() / 1000,
        };
        let dead: SharedMessage = dead_lettered(message, &death);
        let (per_shard, mut elsewhere) = self.route_dead_letter(&vhost, &dead, reason);
        // Queues other nodes lead: forwarded, at most once like the rest.
        elsewhere.sort_unstable();
        for group in elsewhere.chunk_by(|a, b| self.node_of_queue(*a) == self.node_of_queue(*b)) {
            if let Some(&first) = group.first() {
                let node = self.node_of_queue(first);
                self.forward_publish(node, group.to_vec(), dead.clone(), None);
            }
        }
        for (shard, queues) in per_shard.into_iter().enumerate() {
            if queues.is_empty() {
                continue;
            }
            if shard == self.id {
                // At-most-once: a queue refusing it (reject-publish) just drops it.
                self.enqueue_local(&queues, &dead);
            } else {
                let entry = PublishEntry {
                    queues,
                    message: dead.clone(),
                    confirm: None,
                };
                self.mesh.send(shard, MeshMsg::Publish(entry));
            }
        }
    }

    /// Destination queues per owning shard, and those other nodes lead, without the ones the
    /// message would cycle into.
    fn route_dead_letter(
        &self,
        vhost: &str,
        dead: &SharedMessage,
        reason: DeathReason,
    ) -> (Vec<Vec<QueueId>>, Vec<QueueId>) {
        let topology = self.topology.borrow();
        let mut destinations = Vec::new();
        // A dead letter always has headers (x-death): decoded once for all the routing below.
        let headers = dead.headers();
        topology.route(
            vhost,
            dead.exchange(),
            dead.routing_key(),
            headers.as_ref(),
            &mut destinations,
        );
        if let Some(headers) = headers.as_ref() {
            crate::broker::sender_selected::add_destinations(
                &topology,
                vhost,
                dead.exchange(),
                headers,
                &mut destinations,
            );
        }
        let mut per_shard: Vec<Vec<QueueId>> = vec![Vec::new(); self.shard_count];
        let mut elsewhere = Vec::new();
        for id in destinations {
            let Some(meta) = topology.queue_by_id(id) else {
                continue;
            };
            if is_cycle(dead, reason, &meta.name) {
                tracing::debug!(queue = %meta.name, "dead letter dropped: cycle");
                continue;
            }
            if meta.owner_shard == super::ELSEWHERE {
                elsewhere.push(id);
            } else if let Some(group) = per_shard.get_mut(meta.owner_shard) {
                group.push(id);
            }
        }
        (per_shard, elsewhere)
    }
}
