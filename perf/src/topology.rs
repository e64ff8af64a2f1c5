//! Declaring and removing what a scenario needs, on a setup connection of its own.
//! Names carry the pid and a run number so runs never share a queue, and everything is deleted
//! at the end so a long compare does not fill the broker.

use std::sync::atomic::{AtomicU64, Ordering};

use ringmq::protocol::{
    BasicConsume, BasicQos, ConfirmSelect, ExchangeDeclare, ExchangeDelete, FieldTable, FieldValue,
    Method, QueueBind, QueueDeclare, QueueDelete,
};

use crate::client::{Conn, CHANNEL};
use crate::error::{PerfError, Result};
use crate::limits::RPC_PIPELINE_WINDOW;

static RUN_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh name prefix for one run.
pub fn run_prefix(scenario: &str) -> String {
    let run = RUN_COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("perf-{scenario}-{}-{run}", std::process::id())
}

/// The queues a scenario declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueKind {
    Transient,
    /// A durable classic queue (`--persistent`).
    Durable,
    /// `x-queue-type: quorum`, durable as quorum queues must be (`--quorum`): replicated
    /// over the group's members on a cluster of ringmq or RabbitMQ nodes.
    Quorum,
}

impl QueueKind {
    pub fn durable(self) -> bool {
        self != QueueKind::Transient
    }

    fn arguments(self) -> FieldTable {
        let mut arguments = FieldTable::default();
        if self == QueueKind::Quorum {
            arguments.insert(
                "x-queue-type",
                FieldValue::LongString(bytes::Bytes::from_static(b"quorum")),
            );
        }
        arguments
    }
}

pub fn declare_queue(conn: &mut Conn, name: &str, kind: QueueKind) -> Result<()> {
    conn.send(
        CHANNEL,
        QueueDeclare {
            queue: name.to_string(),
            durable: kind.durable(),
            arguments: kind.arguments(),
            ..QueueDeclare::default()
        },
    );
    conn.rpc(CHANNEL, "queue.declare-ok", |m| {
        matches!(m, Method::QueueDeclareOk(_))
    })?;
    Ok(())
}

/// The queue's depth, by a passive declare.
pub fn queue_depth(conn: &mut Conn, name: &str) -> Result<u32> {
    conn.send(
        CHANNEL,
        QueueDeclare {
            queue: name.to_string(),
            passive: true,
            ..QueueDeclare::default()
        },
    );
    match conn.rpc(CHANNEL, "queue.declare-ok", |m| {
        matches!(m, Method::QueueDeclareOk(_))
    })? {
        Method::QueueDeclareOk(ok) => Ok(ok.message_count),
        _ => Err(PerfError::Unexpected("not queue.declare-ok".into())),
    }
}

pub fn declare_exchange(conn: &mut Conn, name: &str, kind: &str, durable: bool) -> Result<()> {
    conn.send(
        CHANNEL,
        ExchangeDeclare {
            exchange: name.to_string(),
            kind: kind.to_string(),
            durable,
            ..ExchangeDeclare::default()
        },
    );
    conn.rpc(CHANNEL, "exchange.declare-ok", |m| {
        matches!(m, Method::ExchangeDeclareOk(_))
    })?;
    Ok(())
}

/// Binds `(queue, routing key)` pairs, pipelined: a window of binds goes out in one write and
/// its bind-oks are collected before the next window.
pub fn bind_all(conn: &mut Conn, exchange: &str, bindings: &[(String, String)]) -> Result<()> {
    for window in bindings.chunks(RPC_PIPELINE_WINDOW) {
        for (queue, key) in window {
            conn.send(
                CHANNEL,
                QueueBind {
                    queue: queue.clone(),
                    exchange: exchange.to_string(),
                    routing_key: key.clone(),
                    no_wait: false,
                    arguments: FieldTable::default(),
                },
            );
        }
        conn.flush()?;
        for _ in window {
            conn.wait_method(CHANNEL, "queue.bind-ok", |m| {
                matches!(m, Method::QueueBindOk(_))
            })?;
        }
    }
    Ok(())
}

/// Deletes queues and an exchange; failures are ignored (cleanup must not hide the result).
pub fn cleanup(conn: &mut Conn, queues: &[String], exchange: Option<&str>) {
    for queue in queues {
        conn.send(
            CHANNEL,
            QueueDelete {
                queue: queue.clone(),
                ..QueueDelete::default()
            },
        );
        if conn
            .rpc(CHANNEL, "queue.delete-ok", |m| {
                matches!(m, Method::QueueDeleteOk(_))
            })
            .is_err()
        {
            return;
        }
    }
    if let Some(exchange) = exchange {
        conn.send(
            CHANNEL,
            ExchangeDelete {
                exchange: exchange.to_string(),
                ..ExchangeDelete::default()
            },
        );
        let _ = conn.rpc(CHANNEL, "exchange.delete-ok", |m| {
            matches!(m, Method::ExchangeDeleteOk(_))
        });
    }
}

pub fn confirm_select(conn: &mut Conn) -> Result<()> {
    conn.send(CHANNEL, ConfirmSelect { nowait: false });
    conn.rpc(CHANNEL, "confirm.select-ok", |m| {
        matches!(m, Method::ConfirmSelectOk(_))
    })?;
    Ok(())
}

/// basic.qos on `CHANNEL` (0 = unlimited), waiting for its qos-ok: also the cheapest round trip
/// that shows a connection is still served.
pub fn qos(conn: &mut Conn, prefetch: u16) -> Result<()> {
    conn.send(
        CHANNEL,
        BasicQos {
            prefetch_size: 0,
            prefetch_count: prefetch,
            global: false,
        },
    );
    conn.rpc(CHANNEL, "basic.qos-ok", |m| {
        matches!(m, Method::BasicQosOk(_))
    })?;
    Ok(())
}

/// basic.qos (0 = unlimited) then basic.consume.
pub fn consume(conn: &mut Conn, queue: &str, prefetch: u16, no_ack: bool) -> Result<()> {
    qos(conn, prefetch)?;
    conn.send(
        CHANNEL,
        BasicConsume {
            queue: queue.to_string(),
            consumer_tag: String::new(),
            no_ack,
            ..BasicConsume::default()
        },
    );
    conn.rpc(CHANNEL, "basic.consume-ok", |m| {
        matches!(m, Method::BasicConsumeOk(_))
    })?;
    Ok(())
}
