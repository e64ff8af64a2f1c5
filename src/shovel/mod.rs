//! Dynamic shovels (RabbitMQ's `rabbitmq_shovel`, amqp091 to amqp091): a parameter of component
//! "shovel" names a source queue (or exchange) on one broker URI and a destination queue or
//! exchange on another; a worker consumes from the one and publishes to the other, both over
//! TCP with the project's own AMQP codec, so a shovel is just another client of any broker.
//!
//! - `definition`: the parameter's JSON value, validated with RabbitMQ's texts.
//! - `uri`: `amqp://user:pass@host:port/vhost`.
//! - `client`: the AMQP client (handshake, frames to events, publishes).
//! - `worker`: one shovel's loop, acks after confirms, reconnects.
//! - [`Shovels`]: the workers one shard runs. The shard is the only caller: it starts and stops
//!   workers as parameters are applied and cleared, and answers status through a typed call.
//!   Nothing here touches the broker's data path; it is a client over sockets.

mod client;
pub mod definition;
pub mod status;
pub mod uri;
mod worker;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;

use glommio::channels::local_channel::{self, LocalSender};

pub use definition::ShovelDefinition;
pub use status::{ShovelState, ShovelStatus};
pub use worker::Outcome;

use crate::limits::SHOVEL_STOP_TIMEOUT;

/// Which shard of `shard_count` runs the shovel (vhost, name): FNV-1a of both, so every shard
/// agrees without asking.
pub fn owner_index(vhost: &str, name: &str, shard_count: usize) -> usize {
    assert!(shard_count > 0);
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in vhost.bytes().chain([0]).chain(name.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % shard_count as u64) as usize
}

/// Called (once) when a worker reached `src-delete-after`, with (vhost, name).
pub type OnFinished = Rc<dyn Fn(String, String)>;

struct Running {
    /// The parameter's value as applied: the same value again is no change.
    value: String,
    status: Rc<RefCell<ShovelStatus>>,
    stop: LocalSender<()>,
    task: glommio::task::JoinHandle<Outcome>,
}

/// The shovels one shard runs. Workers start only once `open` has been called (the broker
/// listens by then, so a shovel to this broker connects at once); those applied before wait.
#[derive(Default)]
pub struct Shovels {
    local: Cell<Option<SocketAddr>>,
    open: Cell<bool>,
    running: RefCell<BTreeMap<(String, String), Running>>,
    waiting: RefCell<BTreeMap<(String, String), (String, ShovelDefinition)>>,
    on_finished: RefCell<Option<OnFinished>>,
}

impl Shovels {
    /// Starts the workers applied so far; `local` is this broker's AMQP address.
    pub fn open(&self, local: Option<SocketAddr>, on_finished: OnFinished) {
        self.local.set(local);
        *self.on_finished.borrow_mut() = Some(on_finished);
        self.open.set(true);
        let waiting = std::mem::take(&mut *self.waiting.borrow_mut());
        for ((vhost, name), (value, definition)) in waiting {
            self.start(&vhost, &name, value, definition);
        }
    }

    /// Starts (or restarts, with a changed value) the shovel.
    pub fn start(&self, vhost: &str, name: &str, value: String, definition: ShovelDefinition) {
        let key = (vhost.to_string(), name.to_string());
        if !self.open.get() {
            self.waiting.borrow_mut().insert(key, (value, definition));
            return;
        }
        if self
            .running
            .borrow()
            .get(&key)
            .is_some_and(|r| r.value == value)
        {
            return;
        }
        self.stop(vhost, name);
        let status = Rc::new(RefCell::new(ShovelStatus::new(vhost, name, &definition)));
        let (stop, stop_receiver) = local_channel::new_bounded(1);
        let worker = worker::Worker {
            definition,
            local: self.local.get(),
            status: status.clone(),
            stop: stop_receiver,
        };
        let on_finished = self.on_finished.borrow().clone();
        let (finished_vhost, finished_name) = key.clone();
        let task = glommio::spawn_local(async move {
            let outcome = worker.run().await;
            if outcome == Outcome::Finished {
                if let Some(on_finished) = on_finished {
                    on_finished(finished_vhost, finished_name);
                }
            }
            outcome
        })
        .detach();
        tracing::info!(vhost, name, "shovel started");
        self.running.borrow_mut().insert(
            key,
            Running {
                value,
                status,
                stop,
                task,
            },
        );
    }

    /// Stops the shovel in the background (it drains within `SHOVEL_STOP_TIMEOUT`).
    pub fn stop(&self, vhost: &str, name: &str) {
        let key = (vhost.to_string(), name.to_string());
        self.waiting.borrow_mut().remove(&key);
        if let Some(running) = self.running.borrow_mut().remove(&key) {
            let _ = running.stop.try_send(());
            tracing::info!(vhost, name, "shovel stopping");
        }
    }

    pub fn stop_vhost(&self, vhost: &str) {
        let names: Vec<String> = self
            .running
            .borrow()
            .keys()
            .chain(self.waiting.borrow().keys())
            .filter(|(v, _)| v == vhost)
            .map(|(_, n)| n.clone())
            .collect();
        for name in names {
            self.stop(vhost, &name);
        }
    }

    /// Stops every shovel and waits (bounded) until each has drained and closed: a broker
    /// shutting down calls it before it closes its own connections.
    pub async fn stop_all(&self) {
        self.open.set(false);
        let running = std::mem::take(&mut *self.running.borrow_mut());
        let mut tasks = Vec::new();
        for (_, running) in running {
            let _ = running.stop.try_send(());
            tasks.push(running.task);
        }
        let deadline = SHOVEL_STOP_TIMEOUT * 2;
        let _ = glommio::timer::timeout(deadline, async {
            for task in tasks {
                task.await;
            }
            Ok(())
        })
        .await;
    }

    pub fn statuses(&self) -> Vec<ShovelStatus> {
        let mut all: Vec<ShovelStatus> = self
            .running
            .borrow()
            .values()
            .map(|r| r.status.borrow().clone())
            .collect();
        for ((vhost, name), (_, definition)) in self.waiting.borrow().iter() {
            all.push(ShovelStatus::new(vhost, name, definition));
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::owner_index;

    #[test]
    fn owner_is_stable_and_in_range() {
        for count in 1..8 {
            let owner = owner_index("/", "s", count);
            assert!(owner < count);
            assert_eq!(owner, owner_index("/", "s", count));
        }
        assert_ne!(
            (0..16)
                .map(|i| owner_index("/", &format!("s{i}"), 4))
                .collect::<std::collections::BTreeSet<_>>()
                .len(),
            1
        );
    }
}
