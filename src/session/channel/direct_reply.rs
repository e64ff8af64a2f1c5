//! The session side of direct reply-to (see `shard::direct_reply`): the `reply_to` rewrite on
//! requests. The reply consumer is registered like any consumer (`consume`), with
//! `ConsumerTarget::DirectReply`; replies are published by the driver (`perform`).

use super::{precondition_failed, Fault};
use crate::broker::queue::ChannelRef;
use crate::protocol::BasicProperties;
use crate::session::state::ChannelState;
use crate::shard::direct_reply::{ReplyAddress, REPLY_TO_QUEUE};

/// A request naming `amq.rabbitmq.reply-to` gets the channel's reply address instead; 406 when
/// the channel has no reply consumer. True when the properties were rewritten.
pub fn rewrite_reply_to(
    state: &ChannelState,
    channel: ChannelRef,
    properties: &mut BasicProperties,
) -> Result<bool, Fault> {
    if properties.reply_to.as_deref() != Some(REPLY_TO_QUEUE) {
        return Ok(false);
    }
    let Some(consumer) = state.reply_consumer else {
        return Err(precondition_failed("fast reply consumer does not exist"));
    };
    let address = ReplyAddress { channel, consumer };
    properties.reply_to = Some(address.encode());
    Ok(true)
}
