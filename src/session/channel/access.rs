//! The authorization door: every channel method passes [`check`] once its names are resolved
//! and before anything else is looked at, with the accesses it needs, as RabbitMQ's channel
//! checks them: declare/delete → configure; publish → write on the exchange; queue.bind →
//! write on the queue, read on the exchange; exchange.bind → write on the destination, read on
//! the source; consume/get/purge → read on the queue; a new queue with a dead-letter exchange
//! (a new exchange with an alternate exchange) → read on itself, write on that exchange.
//! Passive declares and direct reply-to need none (RabbitMQ checks neither). A server-named
//! queue's configure (and read) is checked by the topology owner on the name it generates.
//!
//! Topic permissions (routing keys on a topic exchange): a binding whose source is a topic
//! exchange needs read on its binding key, checked here after the resource accesses and
//! before the binding's ends are looked up (as RabbitMQ 3.10.8: a bind to a missing queue is
//! refused first); a publish needs write on its routing key, checked by `publish::start` once
//! the exchange is known to exist and not to be internal (RabbitMQ's 404 comes first).
//!
//! Sessions ask [`Permissions`]: the user's compiled permissions in the session's vhost, kept
//! with the topology's access revision and compiled again only when it moved, so a change
//! applies to open channels from their next method and a publish pays one integer compare.

use std::cell::RefCell;

use super::Fault;
use crate::auth::VhostPermissions;
use crate::broker::{ExchangeKind, Topology};
use crate::protocol::{reply_code, FieldTable, Method};
use crate::shard::direct_reply::REPLY_TO_QUEUE;

pub use crate::auth::{Access, Operation, ResourceKind};

/// Decides whether `user` may make `access` in `vhost`, on this shard's copy of the topology.
/// The session asks once per access a method needs, in RabbitMQ's order, and stops at the
/// first refusal.
pub trait Authorizer {
    fn authorize(
        &self,
        topology: &Topology,
        user: &str,
        vhost: &str,
        access: &Access<'_>,
    ) -> Result<(), Fault>;

    /// Topic authorisation: `operation` (write or read) on `routing_key` of the topic exchange
    /// `exchange`.
    fn authorize_routing_key(
        &self,
        topology: &Topology,
        user: &str,
        vhost: &str,
        key: &RoutingKeyAccess<'_>,
    ) -> Result<(), Fault>;
}

/// A routing key on a topic exchange, as topic permissions see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoutingKeyAccess<'a> {
    pub operation: Operation,
    pub exchange: &'a str,
    pub routing_key: &'a str,
}

/// Every access is allowed (tests of other concerns).
#[cfg(test)]
pub struct AllowAll;

#[cfg(test)]
impl Authorizer for AllowAll {
    fn authorize(&self, _: &Topology, _: &str, _: &str, _: &Access<'_>) -> Result<(), Fault> {
        Ok(())
    }

    fn authorize_routing_key(
        &self,
        _: &Topology,
        _: &str,
        _: &str,
        _: &RoutingKeyAccess<'_>,
    ) -> Result<(), Fault> {
        Ok(())
    }
}

/// The permission table of the topology, for one session (one user, one vhost).
#[derive(Default)]
pub struct Permissions {
    /// Borrowed only inside `compiled`, never across an `.await`.
    cache: RefCell<Option<Compiled>>,
}

struct Compiled {
    access_revision: u64,
    /// None: no permissions in the vhost (cleared, or the user is gone): everything refused.
    permissions: Option<VhostPermissions>,
}

impl Permissions {
    /// Runs `decide` on the compiled permissions, compiling them first if the topology's
    /// access revision moved since the last time.
    fn compiled<R>(
        &self,
        topology: &Topology,
        user: &str,
        vhost: &str,
        decide: impl FnOnce(Option<&VhostPermissions>) -> R,
    ) -> R {
        let revision = topology.access_revision();
        let mut cache = self.cache.borrow_mut();
        let fresh = cache
            .as_ref()
            .is_some_and(|compiled| compiled.access_revision == revision);
        if !fresh {
            *cache = Some(Compiled {
                access_revision: revision,
                permissions: compile(topology, user, vhost),
            });
        }
        decide(cache.as_ref().and_then(|c| c.permissions.as_ref()))
    }
}

fn compile(topology: &Topology, user: &str, vhost: &str) -> Option<VhostPermissions> {
    topology.user(user)?;
    let permission = topology.permission(user, vhost)?;
    let topic = topology.topic_permissions(user, vhost);
    match VhostPermissions::compile(user, vhost, permission, topic) {
        Ok(permissions) => Some(permissions),
        Err(error) => {
            // Patterns are validated before they are stored: only a log written by another
            // version could hold one. Refusing everything is the safe reading.
            tracing::warn!(user, vhost, %error, "stored permission does not compile");
            None
        }
    }
}

impl Authorizer for Permissions {
    fn authorize(
        &self,
        topology: &Topology,
        user: &str,
        vhost: &str,
        access: &Access<'_>,
    ) -> Result<(), Fault> {
        let allowed = self.compiled(topology, user, vhost, |permissions| {
            permissions.is_some_and(|p| p.allows(access))
        });
        if allowed {
            Ok(())
        } else {
            Err(refused(user, vhost, access))
        }
    }

    fn authorize_routing_key(
        &self,
        topology: &Topology,
        user: &str,
        vhost: &str,
        key: &RoutingKeyAccess<'_>,
    ) -> Result<(), Fault> {
        let allowed = self.compiled(topology, user, vhost, |permissions| {
            permissions.is_some_and(|p| {
                !p.has_topic_permissions()
                    || p.allows_routing_key(key.operation, key.exchange, key.routing_key)
            })
        });
        if allowed {
            Ok(())
        } else {
            Err(routing_key_refused(user, vhost, key))
        }
    }
}

/// RabbitMQ's refusal (rabbit_access_control): a channel error, 403.
pub fn refused(user: &str, vhost: &str, access: &Access<'_>) -> Fault {
    Fault::new(
        reply_code::ACCESS_REFUSED,
        format!(
            "ACCESS_REFUSED - {}",
            crate::auth::permissions::refusal_text(access, vhost, user)
        ),
    )
}

/// RabbitMQ's refusal of a routing key on a topic exchange: a channel error, 403.
pub fn routing_key_refused(user: &str, vhost: &str, key: &RoutingKeyAccess<'_>) -> Fault {
    Fault::new(
        reply_code::ACCESS_REFUSED,
        format!(
            "ACCESS_REFUSED - {}",
            crate::auth::permissions::topic_refusal_text(
                key.exchange,
                key.routing_key,
                vhost,
                user
            )
        ),
    )
}

/// Topic authorisation of a routing key, when `exchange` is a topic exchange (RabbitMQ checks
/// no other type, a delayed exchange routing as topic included). `exchange_kind` is its kind,
/// `None` when it does not exist: the caller has looked it up already (once per publish).
pub fn check_routing_key(
    authorizer: &dyn Authorizer,
    topology: &Topology,
    (user, vhost): (&str, &str),
    operation: Operation,
    exchange_kind: Option<ExchangeKind>,
    (exchange, routing_key): (&str, &str),
) -> Result<(), Fault> {
    if exchange_kind != Some(ExchangeKind::Topic) {
        return Ok(());
    }
    let key = RoutingKeyAccess {
        operation,
        exchange,
        routing_key,
    };
    authorizer.authorize_routing_key(topology, user, vhost, &key)
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
        authorizer.authorize(topology, user, vhost, access)?;
    }
    if let Some(source_and_key) = binding_source_and_key(method) {
        let source_kind = topology.exchange(vhost, source_and_key.0).map(|x| x.kind);
        check_routing_key(
            authorizer,
            topology,
            (user, vhost),
            Operation::Read,
            source_kind,
            source_and_key,
        )?;
    }
    Ok(())
}

/// The source exchange and binding key of a bind or unbind (both are topic-checked).
fn binding_source_and_key(method: &Method) -> Option<(&str, &str)> {
    match method {
        Method::QueueBind(m) => Some((&m.exchange, &m.routing_key)),
        Method::QueueUnbind(m) => Some((&m.exchange, &m.routing_key)),
        Method::ExchangeBind(m) => Some((&m.source, &m.routing_key)),
        Method::ExchangeUnbind(m) => Some((&m.source, &m.routing_key)),
        _ => None,
    }
}

/// A declare: configure on the resource; one that creates it with a linked exchange (dead
/// letters, alternate) also reads itself and writes that exchange.
fn declared<'m>(kind: ResourceKind, name: &'m str, linked: Option<&'m str>) -> Accesses<'m> {
    let configure = Some(access(Operation::Configure, kind, name));
    match linked {
        Some(exchange) => [
            configure,
            Some(access(Operation::Read, kind, name)),
            Some(access(Operation::Write, ResourceKind::Exchange, exchange)),
        ],
        None => [configure, None, None],
    }
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
            let alternate = exchange_argument(&m.arguments, "alternate-exchange");
            declared(Exchange, &m.exchange, alternate.filter(|_| creates))
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
        // The name is made by the topology owner, which checks configure (and read) on it
        // (`authorize_generated_name_for`); the dead-letter exchange is checked here.
        Method::QueueDeclare(m) if m.queue.is_empty() => {
            match exchange_argument(&m.arguments, "x-dead-letter-exchange") {
                Some(dead_letter) => [Some(access(Write, Exchange, dead_letter)), None, None],
                None => [None; 3],
            }
        }
        Method::QueueDeclare(m) => {
            let creates = topology.queue(vhost, &m.queue).is_none();
            let dead_letter = exchange_argument(&m.arguments, "x-dead-letter-exchange");
            declared(Queue, &m.queue, dead_letter.filter(|_| creates))
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
