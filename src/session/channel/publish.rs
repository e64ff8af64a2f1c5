//! Publishing: basic.publish (before its content), checking and building the message once its
//! content is in, and deciding where it goes next (routed now, a direct reply, or buffered in
//! the transaction), with its confirm sequence number.

use bytes::BytesMut;

use super::{
    access, confirm, direct_reply, fault, precondition_failed, Ctx, Fault, HeaderProperties,
    PendingPublish,
};
use crate::broker::queue::{self, ChannelRef, Message, Route, SharedMessage};
use crate::broker::{self, ExchangeMeta, Topology};
use crate::protocol::{reply_code, BasicPublish};
use crate::session::state::ChannelState;
use crate::shard::direct_reply::is_direct_reply;

/// basic.publish: the exchange must exist and not be internal; the content frames follow.
pub fn start(ctx: &Ctx<'_>, state: &mut ChannelState, m: BasicPublish) -> Result<(), Fault> {
    if m.immediate {
        return Err(fault(
            reply_code::NOT_IMPLEMENTED,
            "NOT_IMPLEMENTED - immediate=true",
        ));
    }
    // One lookup of the exchange per publish serves both checks (it is on the 16 B hot path).
    let exchange = check_exchange(ctx.topology, ctx.vhost, &m.exchange)?;
    access::check_routing_key(
        ctx.authorizer,
        ctx.topology,
        (ctx.user, ctx.vhost),
        access::Operation::Write,
        Some(exchange.kind),
        (&m.exchange, &m.routing_key),
    )?;
    state.pending_publish = Some(Box::new(PendingPublish::new(m)));
    Ok(())
}

fn check_exchange<'t>(
    topology: &'t Topology,
    vhost: &str,
    name: &str,
) -> Result<&'t ExchangeMeta, Fault> {
    let Some(exchange) = topology.exchange(vhost, name) else {
        return Err(fault(
            reply_code::NOT_FOUND,
            format!("NOT_FOUND - no exchange '{name}' in vhost '{vhost}'"),
        ));
    };
    if exchange.internal {
        return Err(fault(
            reply_code::ACCESS_REFUSED,
            format!(
                "ACCESS_REFUSED - cannot publish to internal exchange '{name}' in vhost '{vhost}'"
            ),
        ));
    }
    Ok(exchange)
}

/// The message from its content, its properties checked as RabbitMQ checks them (expiration,
/// user_id, CC/BCC headers), `reply_to` rewritten for direct reply-to. Leaves `pending` with
/// what routing needs only.
pub fn build_message(
    user: &str,
    channel: ChannelRef,
    state: &ChannelState,
    pending: &mut PendingPublish,
) -> Result<SharedMessage, Fault> {
    let route = Route {
        exchange: &pending.exchange,
        routing_key: &pending.routing_key,
    };
    let mut properties = match pending.properties.take() {
        // Nothing in a common encoding to check or rewrite (no reply-to, user-id,
        // expiration or headers).
        Some(HeaderProperties::Common(common)) => {
            let message =
                Message::from_wire(route, common, &pending.raw_properties, pending.body());
            pending.release_frames();
            return Ok(message);
        }
        Some(HeaderProperties::Decoded(decoded)) => decoded,
        None => Box::default(),
    };
    let rewritten = direct_reply::rewrite_reply_to(state, channel, &mut properties)?;
    if let Some(expiration) = &properties.expiration {
        if let Err(error) = queue::parse_expiration(expiration) {
            return Err(precondition_failed(format!(
                "invalid expiration '{expiration}': {error}"
            )));
        }
    }
    if let Some(user_id) = &properties.user_id {
        if user_id != user {
            return Err(precondition_failed(format!(
                "user_id property set to '{user_id}' but authenticated user was '{user}'"
            )));
        }
    }
    if let Err(reason) = broker::sender_selected::check(properties.headers.as_ref()) {
        return Err(precondition_failed(reason));
    }
    let message = if rewritten {
        let mut raw = BytesMut::new();
        properties.encode(&mut raw);
        Message::from_wire(route, &properties, &raw, pending.body())
    } else {
        Message::from_wire(route, &properties, &pending.raw_properties, pending.body())
    };
    pending.release_frames();
    Ok(message)
}

/// Where a built message goes.
pub enum Next {
    /// Route it now; confirm it as `confirm_seq` if the channel is in confirm mode.
    Route {
        pending: Box<PendingPublish>,
        message: SharedMessage,
        confirm_seq: Option<u64>,
    },
    /// A reply to a direct reply-to consumer.
    DirectReply {
        mandatory: bool,
        message: SharedMessage,
        confirm_seq: Option<u64>,
    },
    /// Kept by the transaction until commit.
    Buffered,
}

/// Decides what happens to a built message; in a transaction it is buffered here. 406 when
/// the transaction is full (the channel closes).
pub fn next(
    state: &mut ChannelState,
    pending: Box<PendingPublish>,
    message: SharedMessage,
) -> Result<Next, Fault> {
    state.count_published(&pending.exchange);
    if let Some(tx) = state.tx.as_mut() {
        tx.push_publish(pending, message)?;
        return Ok(Next::Buffered);
    }
    let confirm_seq = confirm::next_seq(state);
    if is_direct_reply(&pending.exchange, &pending.routing_key) {
        return Ok(Next::DirectReply {
            mandatory: pending.mandatory,
            message,
            confirm_seq,
        });
    }
    Ok(Next::Route {
        pending,
        message,
        confirm_seq,
    })
}
