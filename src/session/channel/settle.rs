//! Delivery tags and what the channel holds unacked: ack/nack/reject (buffered in a
//! transaction), recover, and the bookkeeping of basic.get.

use super::{precondition_failed, Fault};
use crate::broker::queue::MessageId;
use crate::broker::{QueueId, ShardId};
use crate::session::state::{ChannelState, Unacked};
use crate::shard::messages::SettleOp;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settle {
    Ack,
    Reject { requeue: bool },
}

/// One settlement for a queue's owner.
pub struct QueueSettle {
    pub queue: QueueId,
    pub owner: ShardId,
    pub op: SettleOp,
}

/// basic.ack/nack/reject: the settlements to send now (none in a transaction, which keeps
/// them until commit). 406 for a tag the channel does not hold, as RabbitMQ.
pub fn settle(
    state: &mut ChannelState,
    tag: u64,
    multiple: bool,
    how: Settle,
) -> Result<Vec<QueueSettle>, Fault> {
    let taken = state
        .take_unacked(tag, multiple)
        .ok_or_else(|| precondition_failed(format!("unknown delivery tag {tag}")))?;
    if let Some(tx) = state.tx.as_mut() {
        tx.push_settle(taken, how)?;
        return Ok(Vec::new());
    }
    Ok(by_queue(taken, how))
}

/// One settlement per queue, in queue order; message ids keep their tag order.
pub fn by_queue(mut taken: Vec<Unacked>, how: Settle) -> Vec<QueueSettle> {
    taken.sort_by_key(|u| (u.queue, u.owner));
    taken
        .chunk_by(|a, b| (a.queue, a.owner) == (b.queue, b.owner))
        .map(|group| {
            let ids: Vec<MessageId> = group.iter().map(|u| u.message_id).collect();
            let op = match how {
                Settle::Ack => SettleOp::Ack(ids),
                Settle::Reject { requeue } => SettleOp::Reject { ids, requeue },
            };
            QueueSettle {
                queue: group[0].queue,
                owner: group[0].owner,
                op,
            }
        })
        .collect()
}

/// basic.recover: the channel lets go of everything unacked; the queues (returned, each once)
/// requeue what they hold for it.
pub fn recover(state: &mut ChannelState) -> Vec<(QueueId, ShardId)> {
    let mut queues: Vec<_> = state
        .unacked
        .drain(..)
        .map(|u| (u.queue, u.owner))
        .collect();
    queues.sort_unstable();
    queues.dedup();
    queues
}

/// A basic.get answered with a message: its delivery tag, held unacked unless no-ack.
pub fn record_get(
    state: &mut ChannelState,
    queue: QueueId,
    owner: ShardId,
    message_id: MessageId,
    no_ack: bool,
) -> u64 {
    let tag = state.next_tag();
    if !no_ack {
        state.unacked.push_back(Unacked {
            tag,
            queue,
            owner,
            message_id,
        });
    }
    tag
}
