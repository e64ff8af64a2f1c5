//! Names a method leaves out, filled in before anything checks them: an empty queue name means
//! the channel's last declared queue (queue.bind/unbind/purge/delete, basic.consume/get, a
//! passive queue.declare), and a queue.bind/unbind whose queue and routing key are both empty
//! binds that queue by its name. A non-passive declare of `""` stays empty: the topology owner
//! names the queue.

use super::{fault, Ctx, Fault};
use crate::broker::{self, AmqpError, QueueId, QueueMeta, ShardId};
use crate::protocol::{reply_code, Method};

/// Fills in the names `method` left empty; 404 when it needs a last queue the channel has not
/// declared.
pub fn resolve(method: &mut Method, last_queue: Option<&str>) -> Result<(), Fault> {
    match method {
        Method::QueueBind(m) => {
            resolve_routing_key(&m.queue, &mut m.routing_key, last_queue);
            resolve_queue(&mut m.queue, last_queue)
        }
        Method::QueueUnbind(m) => {
            resolve_routing_key(&m.queue, &mut m.routing_key, last_queue);
            resolve_queue(&mut m.queue, last_queue)
        }
        Method::QueueDeclare(m) if m.passive => resolve_queue(&mut m.queue, last_queue),
        Method::QueuePurge(m) => resolve_queue(&mut m.queue, last_queue),
        Method::QueueDelete(m) => resolve_queue(&mut m.queue, last_queue),
        Method::BasicConsume(m) => resolve_queue(&mut m.queue, last_queue),
        Method::BasicGet(m) => resolve_queue(&mut m.queue, last_queue),
        _ => Ok(()),
    }
}

fn resolve_queue(queue: &mut String, last_queue: Option<&str>) -> Result<(), Fault> {
    if !queue.is_empty() {
        return Ok(());
    }
    let Some(last) = last_queue else {
        return Err(fault(
            reply_code::NOT_FOUND,
            "NOT_FOUND - no previously declared queue",
        ));
    };
    last.clone_into(queue);
    Ok(())
}

/// The spec: when both queue and routing key are empty, both mean the last declared queue.
fn resolve_routing_key(queue: &str, routing_key: &mut String, last_queue: Option<&str>) {
    if routing_key.is_empty() && queue.is_empty() {
        last_queue.unwrap_or_default().clone_into(routing_key);
    }
}

/// A queue this connection may use (name resolved): 404 when missing, 405 when exclusive to
/// another connection.
pub fn accessible_queue(ctx: &Ctx<'_>, name: &str) -> Result<(QueueId, ShardId), Fault> {
    checked_queue(ctx, name, |_| Ok(()))
}

/// [`accessible_queue`], then `check` on the queue's metadata (what its type refuses).
pub fn checked_queue(
    ctx: &Ctx<'_>,
    name: &str,
    check: impl FnOnce(&QueueMeta) -> Result<(), AmqpError>,
) -> Result<(QueueId, ShardId), Fault> {
    let meta = broker::check_queue_access(ctx.topology, ctx.vhost, name, ctx.channel.conn)?;
    check(meta)?;
    Ok((meta.id, meta.owner_shard))
}
