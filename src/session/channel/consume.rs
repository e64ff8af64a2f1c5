//! Consumers: registration (one path for queue consumers and the direct reply-to consumer),
//! the channel-wide prefetch a new consumer gets, and cancel.

use super::{fault, precondition_failed, unless_no_wait, Action, ConsumeAction, Ctx, Fault};
use crate::broker::queue::ConsumerKey;
use crate::broker::{self, QueueId, ShardId};
use crate::limits::CONSUMERS_PER_CHANNEL_MAX;
use crate::protocol::{reply_code, BasicConsume, BasicConsumeOk, FieldTable, Method};
use crate::session::state::{ChannelState, Consumer, ConsumerTarget};
use crate::shard::direct_reply::REPLY_TO_QUEUE;
use crate::shard::messages::{queue_op, DeliverEntry};

/// A queue consumer basic.cancel removed from the channel.
pub struct CancelledConsumer {
    pub key: ConsumerKey,
    pub queue: QueueId,
    pub owner: ShardId,
    /// Deliveries that waited for channel-wide credit: their consumer is gone, so they go back.
    pub orphans: Vec<DeliverEntry>,
}

/// One consumer to add to a channel.
pub struct Registration {
    pub key: ConsumerKey,
    pub tag: String,
    pub target: ConsumerTarget,
    pub no_ack: bool,
    /// Deliveries wait in the channel until consume-ok is written (false with no-wait).
    pub hold: bool,
}

/// basic.consume (queue name resolved, access granted).
pub fn consume(ctx: &Ctx<'_>, state: &mut ChannelState, m: BasicConsume) -> Result<Action, Fault> {
    if m.queue == REPLY_TO_QUEUE {
        return consume_direct_reply(ctx, state, m);
    }
    // A quorum queue refuses a channel with a global prefetch limit.
    let global_prefetch = state.prefetch_per_channel > 0;
    let (queue, owner) = super::names::checked_queue(ctx, &m.queue, |meta| {
        broker::quorum::check_consume(meta, global_prefetch)
    })?;
    let priority = consumer_priority(&m.arguments)?;
    let key = (ctx.new_id)();
    let tag = consumer_tag(m.consumer_tag, key);
    register(
        state,
        Registration {
            key,
            tag: tag.clone(),
            target: ConsumerTarget::Queue { queue, owner },
            no_ack: m.no_ack,
            hold: !m.no_wait,
        },
    )?;
    let op = queue_op::Consume {
        key,
        channel: ctx.channel,
        prefetch: consumer_prefetch(state),
        no_ack: m.no_ack,
        exclusive: m.exclusive,
        priority,
    };
    Ok(Action::Consume(ConsumeAction {
        key,
        tag,
        queue,
        owner,
        op,
        no_wait: m.no_wait,
    }))
}

/// The reply consumer: no queue, no round trip; RabbitMQ requires no-ack (a reply cannot be
/// requeued anywhere) and one such consumer per channel.
fn consume_direct_reply(
    ctx: &Ctx<'_>,
    state: &mut ChannelState,
    m: BasicConsume,
) -> Result<Action, Fault> {
    if !m.no_ack {
        return Err(precondition_failed("reply consumer cannot acknowledge"));
    }
    if state.reply_consumer.is_some() {
        return Err(precondition_failed("reply consumer already set"));
    }
    let key = (ctx.new_id)();
    let tag = consumer_tag(m.consumer_tag, key);
    register(
        state,
        Registration {
            key,
            tag: tag.clone(),
            target: ConsumerTarget::DirectReply,
            no_ack: true,
            hold: false,
        },
    )?;
    let ok = Method::BasicConsumeOk(BasicConsumeOk { consumer_tag: tag });
    Ok(Action::Reply(unless_no_wait(m.no_wait, ok)))
}

/// The one way a consumer enters a channel.
pub fn register(state: &mut ChannelState, registration: Registration) -> Result<(), Fault> {
    let Registration {
        key,
        tag,
        target,
        no_ack,
        hold,
    } = registration;
    if state.consumer_tags.contains_key(&tag) {
        return Err(fault(
            reply_code::NOT_ALLOWED,
            format!("NOT_ALLOWED - attempt to reuse consumer tag '{tag}'"),
        ));
    }
    if state.consumers.len() >= CONSUMERS_PER_CHANNEL_MAX {
        return Err(fault(
            reply_code::RESOURCE_ERROR,
            "RESOURCE_ERROR - too many consumers on this channel",
        ));
    }
    if target == ConsumerTarget::DirectReply {
        assert!(
            state.reply_consumer.is_none(),
            "one reply consumer per channel"
        );
        state.reply_consumer = Some(key);
    }
    state.consumer_tags.insert(tag.clone(), key);
    let consumer = Consumer {
        tag,
        target,
        no_ack,
        held: hold.then(Vec::new),
        encoded_bytes: 0,
        written_bytes: 0,
        waiting: Default::default(),
    };
    let previous = state.consumers.insert(key, consumer);
    assert!(previous.is_none(), "consumer keys are never reused");
    Ok(())
}

/// Takes a consumer out of its channel (cancel, or a queue that refused it).
pub fn unregister(state: &mut ChannelState, tag: &str) -> Option<(ConsumerKey, Consumer)> {
    let key = state.consumer_tags.remove(tag)?;
    if state.reply_consumer == Some(key) {
        state.reply_consumer = None;
    }
    state.consumers.remove(&key).map(|consumer| (key, consumer))
}

/// basic.cancel: the consumer leaves the channel now; a queue consumer's queue is told by the
/// driver. An unknown tag is not an error (cancel-ok all the same, as RabbitMQ).
pub fn cancel(state: &mut ChannelState, tag: &str) -> Option<CancelledConsumer> {
    let (key, consumer) = unregister(state, tag)?;
    let (queue, owner) = consumer.target.queue()?;
    let (orphans, kept): (Vec<DeliverEntry>, _) = state
        .over_limit
        .drain(..)
        .partition(|entry| entry.consumer == key);
    state.over_limit = kept.into();
    Some(CancelledConsumer {
        key,
        queue,
        owner,
        orphans,
    })
}

fn consumer_tag(requested: String, key: ConsumerKey) -> String {
    if requested.is_empty() {
        format!("amq.ctag-{key:x}")
    } else {
        requested
    }
}

/// `x-priority`: an integer, clamped to i32; 406 for anything else.
fn consumer_priority(arguments: &FieldTable) -> Result<i32, Fault> {
    let Some(value) = arguments.get("x-priority") else {
        return Ok(0);
    };
    let priority = value
        .as_i64()
        .ok_or_else(|| precondition_failed("invalid arg 'x-priority': not an integer"))?;
    Ok(priority.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32)
}

/// The limit a new consumer gets at its queue: a channel-wide limit also bounds each consumer
/// (it can never hold more alone).
pub fn consumer_prefetch(state: &ChannelState) -> u16 {
    match (state.prefetch_per_consumer, state.prefetch_per_channel) {
        (0, global) => global,
        (own, 0) => own,
        (own, global) => own.min(global),
    }
}
