//! The authorization door: every channel method passes [`check`] once its names are resolved
//! and before anything else is looked at, with the accesses it needs, as RabbitMQ's channel
//! checks them: declare/delete → configure; publish → write on the exchange; queue.bind →
//! write on the queue, read on the exchange; exchange.bind → write on the destination, read on
//! the source; consume/get/purge → read on the queue; a new queue with a dead-letter exchange
//! (a new exchange with an alternate exchange) → read on itself, write on that exchange.
//! Passive declares and direct reply-to need none (RabbitMQ checks neither).
//!
//! There are no permissions yet: sessions use [`AllowAll`]. Issue 10 plugs the topology's
//! permission table in behind [`Authorizer`]; a refusal is already RabbitMQ's channel error.

use super::Fault;
use crate::broker::Topology;
use crate::protocol::{reply_code, FieldTable, Method};
use crate::shard::direct_reply::REPLY_TO_QUEUE;

pub use crate::auth::{Access, Operation, ResourceKind};

/// Decides whether `user` may make `access` in `vhost`. The session asks once per access a
/// method needs, in RabbitMQ's order, and stops at the first refusal.
pub trait Authorizer {
    fn authorize(&self, user: &str, vhost: &str, access: &Access<'_>) -> Result<(), Fault>;
}

/// Every access is allowed: there are no users with restricted permissions yet.
pub struct AllowAll;

impl Authorizer for AllowAll {
    fn authorize(&self, _user: &str, _vhost: &str, _access: &Access<'_>) -> Result<(), Fault> {
        Ok(())
    }
}

/// RabbitMQ's refusal (rabbit_access_control): a channel error, 403. Used by the permission
/// table that replaces [`AllowAll`] (issue 10) and by the tests.
#[cfg_attr(not(test), allow(dead_code))]
pub fn refused(user: &str, vhost: &str, access: &Access<'_>) -> Fault {
    Fault::new(
        reply_code::ACCESS_REFUSED,
        format!(
            "ACCESS_REFUSED - {}",
            crate::auth::permissions::refusal_text(access, vhost, user)
        ),
    )
}

/// Accesses of one method: at most three (a new queue with a dead-letter exchange).
pub type Accesses<'a> = [Option<Access<'a>>; 3];

/// The door: every access `method` needs, asked in order.
pub fn check(
    authorizer: &dyn Authorizer,
    user: &str,
    vhost: &str,
    topology: &Topology,
    method: &Method,
) -> Result<(), Fault> {
    for access in required(method, topology, vhost).iter().flatten() {
        authorizer.authorize(user, vhost, access)?;
    }
    Ok(())
}

/// What `method` (names already resolved) will access. `topology` tells whether a declare
/// creates its resource: only then are its dead-letter or alternate exchange checked.
pub fn required<'m>(method: &'m Method, topology: &Topology, vhost: &str) -> Accesses<'m> {
    use Operation::{Configure, Read, Write};
    use ResourceKind::{Exchange, Queue};
    let one = |operation, kind, name| [Some(access(operation, kind, name)), None, None];
    let two = |first: Access<'m>, second: Access<'m>| [Some(first), Some(second), None];
    match method {
        Method::ExchangeDeclare(m) if m.passive => [None; 3],
        Method::ExchangeDeclare(m) => {
            let creates = topology.exchange(vhost, &m.exchange).is_none();
            match exchange_argument(&m.arguments, "alternate-exchange").filter(|_| creates) {
                Some(alternate) => [
                    Some(access(Configure, Exchange, &m.exchange)),
                    Some(access(Read, Exchange, &m.exchange)),
                    Some(access(Write, Exchange, alternate)),
                ],
                None => one(Configure, Exchange, &m.exchange),
            }
        }
        Method::ExchangeDelete(m) => one(Configure, Exchange, &m.exchange),
        Method::ExchangeBind(m) => two(
            access(Write, Exchange, &m.destination),
            access(Read, Exchange, &m.source),
        ),
        Method::ExchangeUnbind(m) => two(
            access(Write, Exchange, &m.destination),
            access(Read, Exchange, &m.source),
        ),
        Method::QueueDeclare(m) if m.passive => [None; 3],
        Method::QueueDeclare(m) => {
            let creates = m.queue.is_empty() || topology.queue(vhost, &m.queue).is_none();
            match exchange_argument(&m.arguments, "x-dead-letter-exchange").filter(|_| creates) {
                Some(dead_letter) => [
                    Some(access(Configure, Queue, &m.queue)),
                    Some(access(Read, Queue, &m.queue)),
                    Some(access(Write, Exchange, dead_letter)),
                ],
                None => one(Configure, Queue, &m.queue),
            }
        }
        Method::QueueBind(m) => two(
            access(Write, Queue, &m.queue),
            access(Read, Exchange, &m.exchange),
        ),
        Method::QueueUnbind(m) => two(
            access(Write, Queue, &m.queue),
            access(Read, Exchange, &m.exchange),
        ),
        Method::QueuePurge(m) => one(Read, Queue, &m.queue),
        Method::QueueDelete(m) => one(Configure, Queue, &m.queue),
        Method::BasicConsume(m) if m.queue == REPLY_TO_QUEUE => [None; 3],
        Method::BasicConsume(m) => one(Read, Queue, &m.queue),
        Method::BasicGet(m) => one(Read, Queue, &m.queue),
        Method::BasicPublish(m) => one(Write, Exchange, &m.exchange),
        _ => [None; 3],
    }
}

fn access(operation: Operation, kind: ResourceKind, name: &str) -> Access<'_> {
    Access {
        operation,
        kind,
        name,
    }
}

/// An exchange named by a declare argument; not a string means none (validation reports it).
fn exchange_argument<'t>(arguments: &'t FieldTable, key: &str) -> Option<&'t str> {
    arguments.get(key).and_then(|value| value.as_str())
}
