//! One channel method to its [`Action`]: names resolved, the authorization door passed,
//! validated, the channel's own state updated. No socket, no shard, no await.

use super::settle::Settle;
use super::{
    access, confirm, consume, declare, fault, names, publish, settle, tx, unless_no_wait, Action,
    Ctx, Fault,
};
use crate::broker;
use crate::protocol::{
    reply_code, BasicCancelOk, BasicQos, BasicQosOk, BasicRecoverOk, ChannelFlowOk,
    ConfirmSelectOk, Method, TxRollbackOk, TxSelectOk,
};
use crate::session::state::ChannelState;

/// Decides `method` for the channel in `state` (open, not closing: the session answers
/// channel.open/close itself).
pub fn decide(
    ctx: &Ctx<'_>,
    state: &mut ChannelState,
    mut method: Method,
) -> Result<Action, Fault> {
    if state.pending_publish.is_some() {
        return Err(fault(
            reply_code::UNEXPECTED_FRAME,
            format!(
                "UNEXPECTED_FRAME - expected content header, got {}",
                method.name()
            ),
        ));
    }
    names::resolve(&mut method, state.last_queue.as_deref())?;
    access::check(ctx.authorizer, ctx.user, ctx.vhost, ctx.topology, &method)?;
    decide_resolved(ctx, state, method)
}

fn decide_resolved(
    ctx: &Ctx<'_>,
    state: &mut ChannelState,
    method: Method,
) -> Result<Action, Fault> {
    let reply = |method| Ok(Action::Reply(Some(method)));
    match method {
        Method::ChannelFlow(m) if !m.active => Err(fault(
            reply_code::NOT_IMPLEMENTED,
            "NOT_IMPLEMENTED - active=false",
        )),
        Method::ChannelFlow(_) => reply(Method::ChannelFlowOk(ChannelFlowOk { active: true })),
        Method::ChannelFlowOk(_) => Ok(Action::Reply(None)),
        Method::ExchangeDeclare(m) => Ok(declare::exchange_declare(ctx, m)),
        Method::ExchangeDelete(m) => Ok(declare::exchange_delete(ctx, m)),
        Method::ExchangeBind(m) => Ok(declare::exchange_bind(ctx, m)),
        Method::ExchangeUnbind(m) => Ok(declare::exchange_unbind(ctx, m)),
        Method::QueueDeclare(m) => Ok(declare::queue_declare(ctx, m)),
        Method::QueueBind(m) => Ok(declare::queue_bind(ctx, m)),
        Method::QueueUnbind(m) => Ok(declare::queue_unbind(ctx, m)),
        Method::QueuePurge(m) => {
            let (queue, owner) = names::accessible_queue(ctx, &m.queue)?;
            Ok(Action::Purge {
                queue,
                owner,
                no_wait: m.no_wait,
            })
        }
        Method::QueueDelete(m) => Ok(declare::queue_delete(ctx, m)),
        Method::BasicQos(m) => {
            qos(state, &m);
            reply(Method::BasicQosOk(BasicQosOk {}))
        }
        Method::BasicConsume(m) => consume::consume(ctx, state, m),
        Method::BasicCancel(m) => {
            let cancelled = consume::cancel(state, &m.consumer_tag);
            let ok = Method::BasicCancelOk(BasicCancelOk {
                consumer_tag: m.consumer_tag,
            });
            Ok(Action::Cancel {
                cancelled,
                ok: unless_no_wait(m.no_wait, ok),
            })
        }
        Method::BasicPublish(m) => {
            publish::start(ctx, state, m)?;
            Ok(Action::Reply(None))
        }
        Method::BasicGet(m) => {
            let (queue, owner) = names::checked_queue(ctx, &m.queue, broker::quorum::check_get)?;
            Ok(Action::Get {
                queue,
                owner,
                no_ack: m.no_ack,
            })
        }
        Method::BasicAck(m) => settle_action(state, m.delivery_tag, m.multiple, Settle::Ack),
        Method::BasicReject(m) => settle_action(
            state,
            m.delivery_tag,
            false,
            Settle::Reject { requeue: m.requeue },
        ),
        Method::BasicNack(m) => settle_action(
            state,
            m.delivery_tag,
            m.multiple,
            Settle::Reject { requeue: m.requeue },
        ),
        // recover-ok goes first, as in RabbitMQ: clients drop deliveries they had prefetched
        // when recover-ok arrives, so redeliveries must come after it.
        Method::BasicRecover(_) => Ok(Action::Recover {
            queues: settle::recover(state),
            ok: Some(Method::BasicRecoverOk(BasicRecoverOk {})),
        }),
        Method::BasicRecoverAsync(_) => Ok(Action::Recover {
            queues: settle::recover(state),
            ok: None,
        }),
        Method::ConfirmSelect(m) => {
            confirm::select(state)?;
            let ok = Method::ConfirmSelectOk(ConfirmSelectOk {});
            Ok(Action::Reply(unless_no_wait(m.nowait, ok)))
        }
        Method::TxSelect(_) => {
            tx::select(state)?;
            reply(Method::TxSelectOk(TxSelectOk {}))
        }
        Method::TxCommit(_) => Ok(Action::Commit(tx::take(state)?)),
        Method::TxRollback(_) => {
            tx::rollback(state)?;
            reply(Method::TxRollbackOk(TxRollbackOk {}))
        }
        other => Err(fault(
            reply_code::COMMAND_INVALID,
            format!(
                "COMMAND_INVALID - unexpected method {} from a client",
                other.name()
            ),
        )),
    }
}

fn qos(state: &mut ChannelState, m: &BasicQos) {
    if m.global {
        state.prefetch_per_channel = m.prefetch_count;
    } else {
        state.prefetch_per_consumer = m.prefetch_count;
    }
}

fn settle_action(
    state: &mut ChannelState,
    tag: u64,
    multiple: bool,
    how: Settle,
) -> Result<Action, Fault> {
    Ok(Action::Settle(settle::settle(state, tag, multiple, how)?))
}
