//! Messages published to an `x-delayed-message` exchange with an `x-delay` header, held on
//! the publisher's shard until their time, then routed as any publish from here.
//!
//! One ordered map per shard (deadline, arrival order), driven by the shard's one timer
//! (`TimerKind::Delayed`, re-armed to the earliest deadline): nothing per message but the
//! entry.
//!
//! A persistent message held by a durable exchange survives a restart: it is logged like an
//! enqueue to the pseudo-queue [`DELAYED_LOG_QUEUE`] (message id = its arrival number), with
//! its vhost and deadline in a private header that recovery strips, and settled in the log
//! when it is routed. Its confirm waits for the record to be durable, as any persistent
//! publish's does.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;

use super::expiry::{now_ms, TimerKey, TimerKind};
use super::messages::ConfirmRef;
use super::shard_set::ShardSet;
use super::storage::is_persistent;
use super::{PublishOutcome, Shard};
#[cfg(test)]
use crate::broker::queue::Route;
use crate::broker::queue::{Message, MessageId, SharedMessage, MESSAGE_TTL_MAX_MS};
use crate::broker::{ExchangeKind, QueueId};
use crate::limits::{DELAYED_BYTES_MAX, DELAYED_FIRE_BATCH_MAX, DELAYED_MESSAGES_MAX};
use crate::protocol::{FieldTable, FieldValue};

pub const X_DELAY: &str = "x-delay";
/// The timer key of the delayed store (it belongs to no queue).
const DELAYED_TIMER: TimerKey = TimerKey {
    queue: 0,
    kind: TimerKind::Delayed,
};

/// The message log's pseudo-queue for held delayed messages (real queue ids count up from 1;
/// the direct reply-to sentinel is `QueueId::MAX`).
pub const DELAYED_LOG_QUEUE: QueueId = QueueId::MAX - 1;
/// The stored copy's private header: a table with the vhost and the deadline.
const STORED_HEADER: &str = "x-ringmq-delayed";

struct Held {
    vhost: String,
    exchange: String,
    message: SharedMessage,
    /// In the message log under [`DELAYED_LOG_QUEUE`]: settle it when routed.
    persisted: bool,
}

#[derive(Default)]
pub struct DelayedMessages {
    /// (deadline ms, arrival number) -> message: equal deadlines keep publish order.
    by_deadline: RefCell<BTreeMap<(u64, u64), Held>>,
    /// Message allocations held in `by_deadline`.
    held_bytes: Cell<usize>,
    next_arrival: Cell<u64>,
}

impl DelayedMessages {
    /// Whether a message of `bytes` may be held: under both the count and the byte bound.
    fn has_room_for(&self, bytes: usize) -> bool {
        self.by_deadline.borrow().len() < DELAYED_MESSAGES_MAX
            && self.held_bytes.get().saturating_add(bytes) <= DELAYED_BYTES_MAX
    }
}

/// The delay a message asks for: `x-delay` as any integer type; zero, negative or absent is
/// no delay (the plugin routes such messages at once).
fn requested_delay_ms(message: &SharedMessage) -> Option<u64> {
    let headers = message.headers()?;
    let delay = headers.get(X_DELAY)?;
    let delay = FieldValue::as_i64(delay)?;
    u64::try_from(delay)
        .ok()
        .filter(|&ms| ms > 0)
        .map(|ms| ms.min(MESSAGE_TTL_MAX_MS))
}

impl Shard {
    /// Holds the message when `exchange` is a delayed exchange and it asks for a delay. The
    /// publisher's confirm comes at once (held in memory, as accepted).
    pub(super) fn hold_if_delayed(
        &self,
        vhost: &str,
        exchange: &str,
        message: &SharedMessage,
        confirm: Option<ConfirmRef>,
    ) -> Option<PublishOutcome> {
        if !message.has_headers() {
            return None;
        }
        let durable = match self.topology.borrow().exchange(vhost, exchange) {
            Some(x) if x.kind == ExchangeKind::Delayed => x.durable,
            _ => return None,
        };
        let delay_ms = requested_delay_ms(message)?;
        let mut outcome = PublishOutcome {
            routed: true,
            remote_confirms: 0,
            refused: false,
            remote_shards: ShardSet::default(),
            remote_nodes: 0,
        };
        if !self
            .features
            .delayed
            .has_room_for(message.allocated_bytes())
        {
            outcome.refused = true;
            return Some(outcome);
        }
        let arrival = self.next_arrival();
        let deadline = now_ms().saturating_add(delay_ms);
        let persisted = durable && is_persistent(message);
        if persisted {
            let stored = stored_copy(message, vhost, deadline);
            match self.storage.log_enqueue(
                DELAYED_LOG_QUEUE,
                arrival,
                &stored,
                super::expiry::now_ms(),
            ) {
                Ok(lsn) => {
                    if let Some(confirm) = confirm {
                        self.storage.confirm_when_durable(lsn, confirm);
                        outcome.remote_confirms = 1;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot log a delayed message: refused");
                    outcome.refused = true;
                    return Some(outcome);
                }
            }
        }
        let held = Held {
            vhost: vhost.to_string(),
            exchange: exchange.to_string(),
            message: message.clone(),
            persisted,
        };
        self.hold(deadline, arrival, held);
        Some(outcome)
    }

    fn next_arrival(&self) -> MessageId {
        let arrival = self.features.delayed.next_arrival.get().max(1);
        self.features
            .delayed
            .next_arrival
            .set(arrival.saturating_add(1));
        arrival
    }

    fn hold(&self, deadline: u64, arrival: MessageId, held: Held) {
        let first = {
            let mut by_deadline = self.features.delayed.by_deadline.borrow_mut();
            let bytes = &self.features.delayed.held_bytes;
            bytes.set(bytes.get() + held.message.allocated_bytes());
            by_deadline.insert((deadline, arrival), held);
            by_deadline
                .first_key_value()
                .map(|((deadline, _), _)| *deadline)
        };
        self.features.timers.arm(DELAYED_TIMER, first);
    }

    /// Start-up: a delayed message from the message log goes back to the store with its
    /// original deadline (routed at once if that passed). False if its record is unreadable.
    pub(super) fn restore_delayed(&self, arrival: MessageId, stored: Message) -> bool {
        let Some((vhost, deadline, message)) = from_stored(stored) else {
            return false;
        };
        let next = self
            .features
            .delayed
            .next_arrival
            .get()
            .max(arrival.saturating_add(1));
        self.features.delayed.next_arrival.set(next);
        let held = Held {
            vhost,
            exchange: message.exchange().to_owned(),
            message,
            persisted: true,
        };
        self.hold(deadline, arrival, held);
        true
    }

    /// Start-up: a held message of an orphan log (`shard::adopt`), logged and held here under
    /// a new arrival number (arrival numbers are per shard).
    pub(super) fn adopt_delayed(
        &self,
        stored: Message,
        enqueued_ms: u64,
    ) -> Result<(), crate::storage::WalError> {
        let arrival = self.next_arrival();
        self.storage
            .log_enqueue(DELAYED_LOG_QUEUE, arrival, &stored, enqueued_ms)?;
        if !self.restore_delayed(arrival, stored) {
            self.storage.log_settle(DELAYED_LOG_QUEUE, &[arrival]);
        }
        Ok(())
    }

    /// The delayed timer fired: routes what is due (a batch), re-arms for the rest.
    pub(super) fn release_delayed(&self, now: u64) {
        let mut due = Vec::new();
        {
            let mut held = self.features.delayed.by_deadline.borrow_mut();
            while due.len() < DELAYED_FIRE_BATCH_MAX {
                let Some(entry) = held.first_entry() else {
                    break;
                };
                if entry.key().0 > now {
                    break;
                }
                let arrival = entry.key().1;
                let routed = entry.remove();
                let bytes = &self.features.delayed.held_bytes;
                bytes.set(bytes.get().saturating_sub(routed.message.allocated_bytes()));
                due.push((arrival, routed));
            }
            let first = held.first_key_value().map(|((deadline, _), _)| *deadline);
            drop(held);
            self.features.timers.arm(DELAYED_TIMER, first);
        }
        for (arrival, held) in due {
            // Gone exchange or no binding: dropped, as the plugin does.
            let _ = self.route_now(&held.vhost, &held.exchange, held.message, None);
            if held.persisted {
                // After the routed copies' own records: a crash in between duplicates rather
                // than loses the message.
                self.storage.log_settle(DELAYED_LOG_QUEUE, &[arrival]);
            }
        }
    }

    /// Held messages (for tests and metrics).
    pub fn delayed_count(&self) -> usize {
        self.features.delayed.by_deadline.borrow().len()
    }
}

/// The message as logged: with its vhost and deadline in [`STORED_HEADER`].
fn stored_copy(message: &Message, vhost: &str, deadline_ms: u64) -> Message {
    let mut properties = message.properties();
    let mut headers = properties.headers.take().unwrap_or_default();
    let mut note = FieldTable::default();
    note.insert("vhost", FieldValue::LongString(vhost.to_string().into()));
    note.insert("until", FieldValue::Timestamp(deadline_ms));
    headers.insert(STORED_HEADER, FieldValue::FieldTable(note));
    properties.headers = Some(headers);
    message.with_properties(&properties)
}

/// The vhost, deadline and original message of a logged delayed message.
fn from_stored(stored: Message) -> Option<(String, u64, Message)> {
    let mut properties = stored.properties();
    let headers = properties.headers.as_mut()?;
    let Some(FieldValue::FieldTable(note)) = headers.remove(STORED_HEADER) else {
        return None;
    };
    if headers.is_empty() {
        properties.headers = None;
    }
    let vhost = note.get("vhost")?.as_str()?.to_string();
    let Some(FieldValue::Timestamp(deadline)) = note.get("until") else {
        return None;
    };
    Some((vhost, *deadline, stored.with_properties(&properties)))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::protocol::BasicProperties;

    fn held_of(body_bytes: usize) -> Held {
        let body = vec![1u8; body_bytes];
        let route = Route {
            exchange: "x",
            routing_key: "k",
        };
        Held {
            vhost: "/".to_string(),
            exchange: "x".to_string(),
            message: Message::new(route, &BasicProperties::default(), &body),
            persisted: false,
        }
    }

    #[test]
    fn the_store_is_bounded_by_bytes_below_its_message_count() {
        let store = DelayedMessages::default();
        let body_bytes = 16 * 1024 * 1024;
        let message_bytes = held_of(body_bytes).message.allocated_bytes();
        let fit = DELAYED_BYTES_MAX / message_bytes;
        assert!(fit < DELAYED_MESSAGES_MAX);
        for arrival in 0..fit as u64 {
            assert!(store.has_room_for(message_bytes));
            store
                .by_deadline
                .borrow_mut()
                .insert((1, arrival), held_of(0));
            store.held_bytes.set(store.held_bytes.get() + message_bytes);
        }
        assert!(!store.has_room_for(message_bytes), "past the byte bound");
        assert!(store.has_room_for(DELAYED_BYTES_MAX - store.held_bytes.get()));
    }

    #[test]
    fn stored_copy_round_trips() {
        let message = Message::new(
            Route {
                exchange: "x",
                routing_key: "k",
            },
            &BasicProperties {
                message_id: Some("m".into()),
                ..BasicProperties::default()
            },
            &Bytes::from_static(b"body"),
        );
        let stored = stored_copy(&message, "/v", 1234);
        let (vhost, deadline, back) = from_stored(stored).expect("readable");
        assert_eq!((vhost.as_str(), deadline), ("/v", 1234));
        assert_eq!(back.properties(), message.properties());
        assert_eq!(back.body(), message.body());
        assert!(from_stored(message).is_none());
    }
}
