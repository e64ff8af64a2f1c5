//! Channel methods, as a sans-IO state machine and a thin driver.
//!
//! A method comes in, [`dispatch::decide`] resolves names (`""` → the last declared queue),
//! passes the authorization door ([`access`]: the one check every method goes through),
//! validates, updates the channel's state and returns an [`Action`]: what is left to do
//! outside (a topology or queue request, settlements, replies). `perform.rs` carries it out
//! (shard calls and writes) and nothing else. Content frames go the same way through
//! [`content`] (assembly, frame and size checks) and [`publish`] (validation, confirm sequencing,
//! the transaction buffer of [`tx`]).
//!
//! Files, one job each:
//! - `dispatch`: a method to its action.
//! - `access`: the authorization door and the accesses each method needs.
//! - `names`: name resolution (`""` → last queue, routing-key shortcut) and queue lookup.
//! - `declare`: declares, deletes and bindings as topology operations.
//! - `consume`: consumer registration (queues and direct reply-to, one path) and cancel.
//! - `settle`: delivery tags, ack/nack/reject, recover, basic.get bookkeeping.
//! - `content`: content header/body assembly.
//! - `publish`: publish validation, building the message, what happens to it next.
//! - `confirm`: publisher-confirm sequencing.
//! - `tx`: the transaction buffer and its bounds.
//! - `direct_reply`: the `reply_to` rewrite and the reply consumer's rules.
//! - `perform`: the async driver.

pub mod access;
mod confirm;
mod consume;
mod content;
mod declare;
mod direct_reply;
mod dispatch;
mod names;
mod perform;
mod publish;
mod settle;
mod tx;

#[cfg(test)]
mod tests;

pub use content::{ContentHeader, HeaderProperties, PendingPublish};
pub(in crate::session) use perform::{MethodIds, Rest};
pub use tx::{CommitWait, TxBuffer};

use super::Fault;
use crate::broker::queue::{ChannelRef, ConsumerKey};
use crate::broker::{QueueId, ShardId, Topology};
use crate::protocol::{reply_code, Method};
use crate::shard::messages::{queue_op, topology_op};
use access::Authorizer;
use consume::CancelledConsumer;
use settle::QueueSettle;

/// What a decision needs to know besides the channel's own state. Borrowed for one decision:
/// nothing in it lives across an `.await`.
pub struct Ctx<'a> {
    pub channel: ChannelRef,
    pub user: &'a str,
    pub vhost: &'a str,
    /// The shard's copy of the topology (exchanges to publish to, queues to consume from).
    pub topology: &'a Topology,
    pub authorizer: &'a dyn Authorizer,
    /// Fresh process-unique ids (consumer keys).
    pub new_id: &'a dyn Fn() -> u64,
}

/// What is left to do for a method once its decision is taken, for the driver to carry out.
pub enum Action {
    /// Nothing outside the channel: send this reply, if any.
    Reply(Option<Method>),
    /// A topology change at the topology owner, then this reply.
    Topology { change: Change, ok: Option<Method> },
    /// queue.declare: the change, then the counts for declare-ok (none with no-wait).
    DeclareQueue {
        op: topology_op::QueueDeclare,
        count: Option<queue_op::Count>,
    },
    /// queue.delete, then delete-ok with the message count unless no-wait.
    DeleteQueue {
        op: topology_op::QueueDelete,
        no_wait: bool,
    },
    Purge {
        queue: QueueId,
        owner: ShardId,
        no_wait: bool,
    },
    /// basic.consume on a queue: registered in the channel already (undone if the queue
    /// refuses); consume-ok, then the deliveries held for it, unless no-wait.
    Consume(ConsumeAction),
    /// basic.cancel: the consumer is gone from the channel already.
    Cancel {
        cancelled: Option<CancelledConsumer>,
        ok: Option<Method>,
    },
    Get {
        queue: QueueId,
        owner: ShardId,
        no_ack: bool,
    },
    /// ack/nack/reject outside a transaction; then deliveries waiting for credit go out.
    Settle(Vec<QueueSettle>),
    /// basic.recover(-async): `ok` goes first, then each queue returns what the channel held.
    Recover {
        queues: Vec<(QueueId, ShardId)>,
        ok: Option<Method>,
    },
    /// tx.commit: the buffer taken out of the channel, applied in order, then commit-ok.
    Commit(TxBuffer),
}

/// A topology change that answers nothing but success.
pub enum Change {
    ExchangeDeclare(topology_op::ExchangeDeclare),
    ExchangeDelete(topology_op::ExchangeDelete),
    Binding(topology_op::Binding),
}

pub struct ConsumeAction {
    pub key: ConsumerKey,
    pub tag: String,
    pub queue: QueueId,
    pub owner: ShardId,
    pub op: queue_op::Consume,
    pub no_wait: bool,
}

fn fault(code: u16, text: impl Into<String>) -> Fault {
    Fault::new(code, text)
}

fn precondition_failed(text: impl std::fmt::Display) -> Fault {
    fault(
        reply_code::PRECONDITION_FAILED,
        format!("PRECONDITION_FAILED - {text}"),
    )
}

/// Sends `method` unless the client asked for no-wait.
fn unless_no_wait(no_wait: bool, method: Method) -> Option<Method> {
    (!no_wait).then_some(method)
}

fn channel_not_open(channel: u16) -> Fault {
    fault(
        reply_code::CHANNEL_ERROR,
        format!("CHANNEL_ERROR - expected 'channel.open' on channel {channel}"),
    )
}
