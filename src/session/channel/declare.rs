//! Declares, deletes and bindings as the topology operations the topology owner validates and
//! applies (names already resolved; the owner answers with RabbitMQ's codes).

use super::{unless_no_wait, Action, Change, Ctx};
use crate::protocol::{
    ExchangeBind, ExchangeBindOk, ExchangeDeclare, ExchangeDeclareOk, ExchangeDelete,
    ExchangeDeleteOk, ExchangeUnbind, ExchangeUnbindOk, FieldTable, Method, QueueBind, QueueBindOk,
    QueueDeclare, QueueDelete, QueueUnbind, QueueUnbindOk,
};
use crate::shard::messages::{queue_op, topology_op};

pub fn exchange_declare(ctx: &Ctx<'_>, m: ExchangeDeclare) -> Action {
    let op = topology_op::ExchangeDeclare {
        vhost: ctx.vhost.to_owned(),
        name: m.exchange,
        kind: m.kind,
        passive: m.passive,
        durable: m.durable,
        auto_delete: m.auto_delete,
        internal: m.internal,
        arguments: m.arguments,
    };
    let ok = Method::ExchangeDeclareOk(ExchangeDeclareOk {});
    Action::Topology {
        change: Change::ExchangeDeclare(op),
        ok: unless_no_wait(m.no_wait, ok),
    }
}

pub fn exchange_delete(ctx: &Ctx<'_>, m: ExchangeDelete) -> Action {
    let op = topology_op::ExchangeDelete {
        vhost: ctx.vhost.to_owned(),
        name: m.exchange,
        if_unused: m.if_unused,
    };
    let ok = Method::ExchangeDeleteOk(ExchangeDeleteOk {});
    Action::Topology {
        change: Change::ExchangeDelete(op),
        ok: unless_no_wait(m.no_wait, ok),
    }
}

pub fn exchange_bind(ctx: &Ctx<'_>, m: ExchangeBind) -> Action {
    let binding = Binding {
        bind: true,
        source: m.source,
        destination: m.destination,
        destination_is_queue: false,
        routing_key: m.routing_key,
        arguments: m.arguments,
    };
    let ok = Method::ExchangeBindOk(ExchangeBindOk {});
    binding.action(ctx, unless_no_wait(m.no_wait, ok))
}

pub fn exchange_unbind(ctx: &Ctx<'_>, m: ExchangeUnbind) -> Action {
    let binding = Binding {
        bind: false,
        source: m.source,
        destination: m.destination,
        destination_is_queue: false,
        routing_key: m.routing_key,
        arguments: m.arguments,
    };
    let ok = Method::ExchangeUnbindOk(ExchangeUnbindOk {});
    binding.action(ctx, unless_no_wait(m.no_wait, ok))
}

pub fn queue_bind(ctx: &Ctx<'_>, m: QueueBind) -> Action {
    let binding = Binding {
        bind: true,
        source: m.exchange,
        destination: m.queue,
        destination_is_queue: true,
        routing_key: m.routing_key,
        arguments: m.arguments,
    };
    let ok = Method::QueueBindOk(QueueBindOk {});
    binding.action(ctx, unless_no_wait(m.no_wait, ok))
}

/// queue.unbind has no no-wait.
pub fn queue_unbind(ctx: &Ctx<'_>, m: QueueUnbind) -> Action {
    let binding = Binding {
        bind: false,
        source: m.exchange,
        destination: m.queue,
        destination_is_queue: true,
        routing_key: m.routing_key,
        arguments: m.arguments,
    };
    binding.action(ctx, Some(Method::QueueUnbindOk(QueueUnbindOk {})))
}

pub fn queue_declare(ctx: &Ctx<'_>, m: QueueDeclare) -> Action {
    // A passive declare is not a use of the queue (its x-expires keeps counting).
    let count = queue_op::Count {
        renews_expiry: !m.passive,
    };
    let server_named = m.queue.is_empty() && !m.passive;
    let op = topology_op::QueueDeclare {
        vhost: ctx.vhost.to_owned(),
        name: m.queue,
        passive: m.passive,
        durable: m.durable,
        exclusive: m.exclusive,
        auto_delete: m.auto_delete,
        arguments: m.arguments,
        conn: ctx.channel.conn,
        authorize_generated_name_for: server_named.then(|| ctx.user.to_owned()),
    };
    Action::DeclareQueue {
        op,
        count: (!m.no_wait).then_some(count),
    }
}

pub fn queue_delete(ctx: &Ctx<'_>, m: QueueDelete) -> Action {
    let op = topology_op::QueueDelete {
        vhost: ctx.vhost.to_owned(),
        name: m.queue,
        if_unused: m.if_unused,
        if_empty: m.if_empty,
        conn: ctx.channel.conn,
    };
    Action::DeleteQueue {
        op,
        no_wait: m.no_wait,
    }
}

struct Binding {
    bind: bool,
    source: String,
    destination: String,
    destination_is_queue: bool,
    routing_key: String,
    arguments: FieldTable,
}

impl Binding {
    fn action(self, ctx: &Ctx<'_>, ok: Option<Method>) -> Action {
        let op = topology_op::Binding {
            vhost: ctx.vhost.to_owned(),
            bind: self.bind,
            source: self.source,
            destination: self.destination,
            destination_is_queue: self.destination_is_queue,
            routing_key: self.routing_key,
            arguments: self.arguments,
            conn: ctx.channel.conn,
        };
        Action::Topology {
            change: Change::Binding(op),
            ok,
        }
    }
}
