//! Publishers under a resource alarm (RabbitMQ's reader throttle, `rabbit_reader`): a
//! connection that sends `basic.publish` while the memory or disk alarm is in effect is
//! blocked: it is not read again until every alarm has cleared. A connection that only
//! consumes is never blocked, so consumers keep draining the queues that caused the alarm.
//! Clients that announced the `connection.blocked` capability are told, with RabbitMQ's reason
//! text, and told `connection.unblocked` afterwards; others are just not read.

use super::{Ending, Session};
use crate::protocol::{ConnectionBlocked, ConnectionUnblocked, Method};

impl Session {
    /// Called for every `basic.publish` method frame: under an alarm the connection blocks
    /// before its next frame (RabbitMQ's `publish_received`, which sets `should_block`).
    pub(super) fn note_publish(&mut self) {
        if self.shard.alarms().any() {
            self.publish_blocked = true;
        }
    }

    /// Blocks while an alarm is in effect if this connection published under one; returns
    /// `Err` when the connection ends meanwhile (its output failed).
    pub(super) async fn wait_while_blocked(&mut self) -> Result<(), Ending> {
        if !std::mem::take(&mut self.publish_blocked) {
            return Ok(());
        }
        let alarms = self.shard.alarms();
        if !alarms.any() {
            return Ok(());
        }
        let notify = self.conn.blocked_notify.get();
        if notify {
            let reason = alarms.blocked_reason();
            tracing::debug!(conn = self.conn.id, %reason, "connection blocked");
            self.conn
                .send_method(0, &Method::ConnectionBlocked(ConnectionBlocked { reason }));
        }
        let conn = self.conn.clone();
        let output_failed = async {
            while !conn.output_closed.get() {
                conn.flushed.wait().await;
            }
        };
        let forced = async {
            while self.conn.forced_close_reason().is_none() {
                self.conn.forced.wait().await;
            }
        };
        let ended = futures_lite::future::or(
            async {
                self.shard.wait_for_alarms_clear().await;
                false
            },
            futures_lite::future::or(
                async {
                    output_failed.await;
                    true
                },
                async {
                    forced.await;
                    false
                },
            ),
        )
        .await;
        if ended {
            return Err(Ending::Done);
        }
        if notify && !self.shard.alarms().any() {
            tracing::debug!(conn = self.conn.id, "connection unblocked");
            self.conn
                .send_method(0, &Method::ConnectionUnblocked(ConnectionUnblocked));
        }
        Ok(())
    }
}
