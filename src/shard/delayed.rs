//! Messages published to an `x-delayed-message` exchange with an `x-delay` header, held on
//! the publisher's shard until their time, then routed as any publish from here.
//!
//! One ordered map per shard (deadline, arrival order), driven by the shard's one timer
//! (`TimerKind::Delayed`, re-armed to the earliest deadline): nothing per message but the
//! entry. Transient: held messages do not survive a restart.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;

use super::expiry::{now_ms, TimerKey, TimerKind};
use super::{PublishOutcome, Shard};
use crate::broker::queue::{SharedMessage, MESSAGE_TTL_MAX_MS};
use crate::broker::ExchangeKind;
use crate::protocol::FieldValue;

pub const X_DELAY: &str = "x-delay";
/// Delayed messages one shard holds at most; a publish beyond it is refused (nack).
pub const DELAYED_MESSAGES_MAX: usize = 1 << 20;
/// Delayed messages routed per timer firing before the timer task yields.
pub const DELAYED_FIRE_BATCH_MAX: usize = 256;
/// The timer key of the delayed store (it belongs to no queue).
const DELAYED_TIMER: TimerKey = TimerKey {
    queue: 0,
    kind: TimerKind::Delayed,
};

struct Held {
    vhost: String,
    exchange: String,
    message: SharedMessage,
}

#[derive(Default)]
pub struct DelayedMessages {
    /// (deadline ms, arrival number) -> message: equal deadlines keep publish order.
    by_deadline: RefCell<BTreeMap<(u64, u64), Held>>,
    next_arrival: Cell<u64>,
}

/// The delay a message asks for: `x-delay` as any integer type; zero, negative or absent is
/// no delay (the plugin routes such messages at once).
fn requested_delay_ms(message: &SharedMessage) -> Option<u64> {
    let delay = message.properties.headers.as_ref()?.get(X_DELAY)?;
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
    ) -> Option<PublishOutcome> {
        let delay_ms = requested_delay_ms(message)?;
        let delayed = self
            .topology
            .borrow()
            .exchange(vhost, exchange)
            .is_some_and(|x| x.kind == ExchangeKind::Delayed);
        if !delayed {
            return None;
        }
        let mut held = self.delayed.by_deadline.borrow_mut();
        let refused = held.len() >= DELAYED_MESSAGES_MAX;
        if !refused {
            let arrival = self.delayed.next_arrival.get();
            self.delayed.next_arrival.set(arrival.wrapping_add(1));
            let deadline = now_ms().saturating_add(delay_ms);
            held.insert(
                (deadline, arrival),
                Held {
                    vhost: vhost.to_string(),
                    exchange: exchange.to_string(),
                    message: message.clone(),
                },
            );
            let first = held.first_key_value().map(|((deadline, _), _)| *deadline);
            drop(held);
            self.timers.arm(DELAYED_TIMER, first);
        }
        Some(PublishOutcome {
            routed: true,
            remote_confirms: 0,
            refused,
            remote_shards: 0,
        })
    }

    /// The delayed timer fired: routes what is due (a batch), re-arms for the rest.
    pub(super) fn release_delayed(&self, now: u64) {
        let mut due = Vec::new();
        {
            let mut held = self.delayed.by_deadline.borrow_mut();
            while due.len() < DELAYED_FIRE_BATCH_MAX {
                let Some(entry) = held.first_entry() else {
                    break;
                };
                if entry.key().0 > now {
                    break;
                }
                due.push(entry.remove());
            }
            let first = held.first_key_value().map(|((deadline, _), _)| *deadline);
            drop(held);
            self.timers.arm(DELAYED_TIMER, first);
        }
        for held in due {
            // Gone exchange or no binding: dropped, as the plugin does.
            self.route_now(&held.vhost, &held.exchange, held.message, None);
        }
    }

    /// Held messages (for tests and metrics).
    pub fn delayed_count(&self) -> usize {
        self.delayed.by_deadline.borrow().len()
    }
}
