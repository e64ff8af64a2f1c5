//! The shard's one timer: every deadline of every queue it hosts (message TTL, `x-expires`),
//! in one ordered set, served by one task. No task or timer per message: a queue keeps at most
//! one entry per kind here, re-armed to its earliest deadline after each change.
//!
//! Deadlines are wall-clock milliseconds since the Unix epoch, the unit messages carry, so they
//! keep their meaning across a restart.

use crate::limits::{TIMER_FIRE_BATCH_MAX, TIMER_SLEEP_MAX};
use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::messages::topology_op;
use super::sync::Notify;
use super::Shard;
use crate::broker::queue::DeathReason;
use crate::broker::QueueId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TimerKind {
    /// The queue's earliest message deadline.
    MessageTtl,
    /// The queue's `x-expires` deadline.
    QueueExpires,
    /// The earliest held delayed message of the shard (`queue` is 0: it belongs to none).
    Delayed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimerKey {
    pub queue: QueueId,
    pub kind: TimerKind,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}

/// The ordered deadlines. At most one entry per key.
#[derive(Default)]
pub struct Timers {
    by_deadline: RefCell<BTreeSet<(u64, TimerKey)>>,
    armed: RefCell<HashMap<TimerKey, u64>>,
    /// Rung when the earliest deadline moves earlier, so the sleeping task re-reads it.
    earlier: Notify,
}

impl Timers {
    /// Sets (or with `None` clears) the deadline of `key`.
    pub fn arm(&self, key: TimerKey, deadline_ms: Option<u64>) {
        let mut armed = self.armed.borrow_mut();
        let previous = armed.get(&key).copied();
        if previous == deadline_ms {
            return;
        }
        let mut by_deadline = self.by_deadline.borrow_mut();
        if let Some(previous) = previous {
            by_deadline.remove(&(previous, key));
            armed.remove(&key);
        }
        let Some(deadline) = deadline_ms else { return };
        let was_first = by_deadline.first().map(|(first, _)| *first);
        by_deadline.insert((deadline, key));
        armed.insert(key, deadline);
        if was_first.is_none_or(|first| deadline < first) {
            self.earlier.notify();
        }
    }

    /// Forgets every timer of a queue (it was deleted).
    pub fn clear_queue(&self, queue: QueueId) {
        for kind in [TimerKind::MessageTtl, TimerKind::QueueExpires] {
            self.arm(TimerKey { queue, kind }, None);
        }
    }

    fn next_deadline(&self) -> Option<u64> {
        self.by_deadline
            .borrow()
            .first()
            .map(|(deadline, _)| *deadline)
    }

    /// Removes and returns up to `max` keys whose deadline is at or before `now_ms`.
    fn take_due(&self, now_ms: u64, max: usize) -> Vec<TimerKey> {
        let mut by_deadline = self.by_deadline.borrow_mut();
        let mut armed = self.armed.borrow_mut();
        let mut due = Vec::new();
        while due.len() < max {
            let Some(&(deadline, key)) = by_deadline.first() else {
                break;
            };
            if deadline > now_ms {
                break;
            }
            by_deadline.pop_first();
            armed.remove(&key);
            due.push(key);
        }
        due
    }
}

impl Shard {
    /// The shard's timer task: sleeps until the earliest deadline (or until an earlier one is
    /// armed), then fires what is due. Runs for the life of the executor.
    pub async fn run_timers(self: Rc<Self>) {
        loop {
            let now = now_ms();
            let due = self.features.timers.take_due(now, TIMER_FIRE_BATCH_MAX);
            if !due.is_empty() {
                for key in due {
                    self.timer_fired(key, now);
                }
                glommio::yield_if_needed().await;
                continue;
            }
            let changed = self.features.timers.earlier.wait();
            match self.features.timers.next_deadline() {
                None => changed.await,
                Some(deadline) => {
                    let wait = Duration::from_millis(deadline.saturating_sub(now));
                    let sleep = glommio::timer::sleep(wait.min(TIMER_SLEEP_MAX));
                    futures_lite::future::or(sleep, changed).await;
                }
            }
        }
    }
}

impl Shard {
    fn timer_fired(self: &Rc<Self>, key: TimerKey, now: u64) {
        match key.kind {
            TimerKind::MessageTtl => self.expire_queue(key.queue),
            TimerKind::Delayed => self.release_delayed(now),
            TimerKind::QueueExpires => {
                let unused = self.queues.borrow().get(&key.queue).is_some_and(|hosted| {
                    hosted.queue.consumer_count() == 0 && hosted.queue.config().expires_ms.is_some()
                });
                if !unused {
                    return;
                }
                tracing::debug!(queue = key.queue, now, "queue expired (x-expires)");
                // Deleted like an auto-delete queue: the topology owner asks us again (if unused)
                // first, so a consumer that arrived meanwhile keeps the queue.
                let shard = self.clone();
                let queue = key.queue;
                glommio::spawn_local(async move {
                    let op = topology_op::AutoDeleteQueue { queue };
                    if let Err(error) = shard.topology_op(op).await {
                        tracing::warn!(queue, %error, "x-expires deletion failed");
                    }
                })
                .detach();
            }
        }
    }

    /// Removes the queue's expired messages (dead-lettering them) and re-arms its TTL timer
    /// at its next deadline. Called before anything reads or delivers from the queue.
    pub(super) fn expire_queue(&self, id: QueueId) {
        let (expired, next) = {
            let mut queues = self.queues.borrow_mut();
            let Some(hosted) = queues.get_mut(&id) else {
                return;
            };
            // Nothing ready has a deadline: no clock read (this runs before every dispatch,
            // and a clock read per message was 2% of a 16 B run's CPU). Publishes carry their
            // own clock reading, so the queue's clock needs no advancing here.
            if hosted.queue.next_deadline().is_none() {
                (Vec::new(), None)
            } else {
                let expired = hosted.queue.expire(now_ms());
                (expired, hosted.queue.next_deadline())
            }
        };
        // Expired once the clock is strictly past the deadline: fire one ms after it.
        let key = TimerKey {
            queue: id,
            kind: TimerKind::MessageTtl,
        };
        self.features
            .timers
            .arm(key, next.map(|deadline| deadline.saturating_add(1)));
        self.log_forgotten(id);
        self.dead_letter(id, DeathReason::Expired, expired);
    }

    /// The queue was used (declared, consumed from, read with basic.get, ...): its `x-expires`
    /// countdown restarts, or stops while it has consumers.
    pub(super) fn queue_used(&self, id: QueueId) {
        let deadline = self.queues.borrow().get(&id).and_then(|hosted| {
            let expires = hosted.queue.config().expires_ms?;
            (hosted.queue.consumer_count() == 0).then(|| now_ms().saturating_add(expires))
        });
        let key = TimerKey {
            queue: id,
            kind: TimerKind::QueueExpires,
        };
        self.features.timers.arm(key, deadline);
    }
}
