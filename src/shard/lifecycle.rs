//! A shard's start-up and shutdown phases, and the state that orders them between shards.
//!
//! Start-up: the topology owner recovers the topology and hands it to every shard; each replays
//! its message log, adopts orphan logs and hands foreign records over; the coordinator counts
//! the shards that finished, and none listens before all have. Shutdown: the coordinator relays
//! the signal, each shard drains its connections (bounded) and reports, and the coordinator
//! stops everyone once all have drained.

use std::cell::Cell;
use std::rc::Rc;

use super::calls::ShardCall;
use super::mesh::{Mesh, MeshEnds};
use super::messages::{MeshMsg, Recovered, StartupTopology};
use super::sync::Notify;
use super::Shard;
use crate::broker::ShardId;

pub struct Lifecycle {
    /// Shards other than the topology owner wait for the recovered topology before recovering
    /// their messages.
    pub(super) topology_ready: Cell<bool>,
    topology_arrived: Notify,
    /// Our own log is replayed: messages handed over from other logs may come in now.
    pub(super) messages_ready: Cell<bool>,
    pub(super) messages_recovered: Notify,
    /// Shards that finished recovering (counted on the coordinator), so none listens before all
    /// have.
    recovered_shards: Cell<usize>,
    shard_recovered: Notify,
    /// The coordinator loaded `--load-definitions` (or had none): no shard listens before.
    definitions_loaded: Cell<bool>,
    shutting_down: Cell<bool>,
    shutdown: Notify,
    /// Wakes the shutdown sequence when a connection goes away.
    pub(super) conns_changed: Notify,
    /// Shards known to have drained their connections (counted on the coordinator).
    drained_shards: Cell<usize>,
    stopping: Cell<bool>,
    stop: Notify,
}

impl Lifecycle {
    pub fn new(has_topology: bool) -> Lifecycle {
        Lifecycle {
            topology_ready: Cell::new(has_topology),
            topology_arrived: Notify::default(),
            messages_ready: Cell::new(false),
            messages_recovered: Notify::default(),
            recovered_shards: Cell::new(0),
            shard_recovered: Notify::default(),
            definitions_loaded: Cell::new(false),
            shutting_down: Cell::new(false),
            shutdown: Notify::default(),
            conns_changed: Notify::default(),
            drained_shards: Cell::new(0),
            stopping: Cell::new(false),
            stop: Notify::default(),
        }
    }
}

impl Shard {
    /// Joins the mesh: one flusher task per outgoing link, one task per incoming link handing
    /// each entry to `handle_mesh` (after the log's batch has room, as a reader waits).
    pub async fn connect_mesh(self: &Rc<Self>, ends: MeshEnds) {
        let (senders, receivers) = Mesh::connect(ends).await;
        for (peer, sender) in senders {
            glommio::spawn_local(self.mesh.clone().run_flusher(peer, sender)).detach();
        }
        for (_peer, receiver) in receivers {
            let shard = self.clone();
            glommio::spawn_local(async move {
                while let Some(batch) = receiver.recv().await {
                    crate::spin::touch();
                    for msg in batch {
                        if crate::latency_trace::is_enabled() {
                            super::mesh::trace_message(
                                crate::latency_trace::Stage::MeshReceive,
                                &msg,
                            );
                        }
                        shard.storage.wait_for_room().await;
                        shard.handle_mesh(msg);
                    }
                }
            })
            .detach();
        }
    }

    /// The shard's own tasks, started once it has recovered: the confirmer (confirms released
    /// as the log becomes durable), the pager and the timers.
    pub fn start_background_tasks(self: &Rc<Self>) {
        glommio::spawn_local(super::storage::run_confirmer(self.clone())).detach();
        glommio::spawn_local(super::paging::run_pager(self.clone())).detach();
        glommio::spawn_local(self.clone().run_timers()).detach();
        glommio::spawn_local(super::alarms::run_sampler(self.clone())).detach();
    }

    /// The shard that waits for SIGINT/SIGTERM and relays the shutdown (the coordinator).
    pub fn relays_signals(&self) -> bool {
        self.is_coordinator()
    }

    pub fn is_shutting_down(&self) -> bool {
        self.lifecycle.shutting_down.get()
    }

    /// Returns once a shutdown has begun (at once if it has).
    pub async fn wait_for_shutdown(&self) {
        while !self.lifecycle.shutting_down.get() {
            self.lifecycle.shutdown.wait().await;
        }
    }

    /// Start-up recovery, before listening: the topology owner replays the topology log (moving
    /// queues of shards this run does not have) and hands the result to every other shard; then
    /// each shard replays its own message log into its queues, adopts the logs of shards this run
    /// does not have, and hands records of queues other shards own to them (`adopt`). No shard
    /// returns before every shard has finished.
    pub async fn recover(self: &Rc<Self>, data_dir: &std::path::Path) -> Result<(), String> {
        if self.is_topology_owner() {
            self.recover_and_share_topology(data_dir).await?;
        } else {
            while !self.lifecycle.topology_ready.get() {
                self.lifecycle.topology_arrived.wait().await;
            }
        }
        let foreign = self.recover_messages(data_dir).await?;
        self.lifecycle.messages_ready.set(true);
        self.lifecycle.messages_recovered.notify();
        self.adopt_orphan_logs(data_dir).await?;
        self.hand_over_foreign(foreign).await?;
        self.wait_all_recovered().await
    }

    async fn recover_and_share_topology(
        self: &Rc<Self>,
        data_dir: &std::path::Path,
    ) -> Result<(), String> {
        let changes = self.recover_topology(data_dir).await?;
        let receivers: Vec<_> = self
            .peers()
            .map(|peer| {
                let changes = changes.clone();
                self.send_request(peer, StartupTopology { changes })
            })
            .collect();
        for receiver in receivers {
            if receiver.await.is_none() {
                return Err("a shard did not take the recovered topology".to_string());
            }
        }
        Ok(())
    }

    /// Tells the coordinator we are done and waits until every shard is (no RPC timeout:
    /// recovering a large log takes what it takes).
    async fn wait_all_recovered(self: &Rc<Self>) -> Result<(), String> {
        if self.is_coordinator() {
            self.count_recovered().await;
            // Every shard hosts and routes by now: imported queues and bindings land as a
            // client's would. The others are still waiting for their `Recovered` answer.
            self.load_boot_definitions().await?;
            self.lifecycle.definitions_loaded.set(true);
            self.lifecycle.shard_recovered.notify();
            return Ok(());
        }
        match self.send_request(self.coordinator(), Recovered).await {
            Some(()) => Ok(()),
            None => Err("the coordinator shard did not finish recovering".to_string()),
        }
    }

    /// The coordinator: one more shard finished recovering; returns once all have.
    async fn count_recovered(&self) {
        self.lifecycle
            .recovered_shards
            .set(self.lifecycle.recovered_shards.get() + 1);
        self.lifecycle.shard_recovered.notify();
        while self.lifecycle.recovered_shards.get() < self.shard_count {
            self.lifecycle.shard_recovered.wait().await;
        }
    }

    /// Another shard's `Recovered`: answered once all have recovered and the definitions are
    /// loaded.
    async fn wait_recovered_and_loaded(&self) {
        self.count_recovered().await;
        while !self.lifecycle.definitions_loaded.get() {
            self.lifecycle.shard_recovered.wait().await;
        }
    }

    /// Stops accepting and tells every connection to close with CONNECTION_FORCED.
    pub fn begin_shutdown(&self) {
        if !self.lifecycle.shutting_down.replace(true) {
            self.lifecycle.shutdown.notify();
        }
    }

    /// The coordinator relays a shutdown to every other shard.
    pub fn broadcast_shutdown(&self) {
        self.send_to_peers(|| MeshMsg::Shutdown);
        self.begin_shutdown();
    }

    /// Shutdown, seen from one shard: wait (bounded) for our connections to close, tell the
    /// coordinator, and wait until it says every shard is done, so cleanup that needs another shard
    /// (exclusive queues, requeues) can still reach it.
    pub async fn shut_down(&self, drain_timeout: std::time::Duration) {
        self.wait_for_shutdown().await;
        let _ = glommio::timer::timeout(drain_timeout, async {
            while self.conn_count() > 0 {
                self.lifecycle.conns_changed.wait().await;
            }
            Ok(())
        })
        .await;
        if self.is_coordinator() {
            self.shard_drained();
        } else {
            self.mesh.send(self.coordinator(), MeshMsg::Drained);
        }
        let _ = glommio::timer::timeout(drain_timeout, async {
            while !self.lifecycle.stopping.get() {
                self.lifecycle.stop.wait().await;
            }
            Ok(())
        })
        .await;
        // Let the flushers hand over what is queued (the coordinator's Stop messages above all).
        let _ = glommio::timer::timeout(drain_timeout, async {
            self.mesh.wait_until_empty().await;
            Ok(())
        })
        .await;
        self.log_paging_stats();
        self.storage.flush_all().await;
    }

    pub(super) fn shard_drained(&self) {
        let drained = self.lifecycle.drained_shards.get() + 1;
        self.lifecycle.drained_shards.set(drained);
        if self.is_coordinator() && drained == self.shard_count {
            self.send_to_peers(|| MeshMsg::Stop);
            self.begin_stop();
        }
    }

    pub(super) fn begin_stop(&self) {
        self.lifecycle.stopping.set(true);
        self.lifecycle.stop.notify();
    }
}

impl ShardCall for StartupTopology {
    type Reply = ();
    async fn handle(self, shard: &Rc<Shard>, _from: ShardId) {
        shard.apply_changes(&self.changes);
        shard.lifecycle.topology_ready.set(true);
        shard.lifecycle.topology_arrived.notify();
    }
}

impl ShardCall for Recovered {
    type Reply = ();
    async fn handle(self, shard: &Rc<Shard>, _from: ShardId) {
        shard.wait_recovered_and_loaded().await;
    }
}
