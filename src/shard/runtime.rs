//! Starting and stopping the shards: one glommio executor per shard, pinned to its core.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::Duration;

use glommio::{LocalExecutorBuilder, Placement};

use super::mesh::{self, Mesh, MeshEnds};
use super::Shard;
use crate::broker::Topology;
use crate::config::Config;
use crate::limits::{CLOSE_TIMEOUT, EXECUTOR_IO_MEMORY_BYTES, EXECUTOR_RING_DEPTH};
use crate::net;

/// What a shard reports once it is listening (or why it could not start).
type Ready = Result<Vec<SocketAddr>, String>;

/// Runs the broker until SIGINT/SIGTERM. `on_ready` is called once every shard listens.
pub fn run(config: &Config, on_ready: impl FnOnce(&[SocketAddr])) -> Result<(), String> {
    let shard_count = config.shards;
    // The cores we may run on (respecting taskset/cgroups); shard i is pinned to the i-th.
    let cores: Vec<usize> = core_affinity::get_core_ids()
        .map(|ids| ids.into_iter().map(|core| core.id).collect())
        .filter(|ids: &Vec<usize>| !ids.is_empty())
        .unwrap_or_else(|| vec![0]);
    let (ready_tx, ready_rx) = mpsc::channel::<Ready>();
    let mut handles = Vec::with_capacity(shard_count);
    for (id, ends) in mesh::build(shard_count).into_iter().enumerate() {
        let data_dir = config.data_dir.clone();
        let queue_memory_bytes = config.queue_memory_bytes;
        let max_message_bytes = config.max_message_bytes;
        let listen: Vec<SocketAddr> = config
            .listen
            .iter()
            .map(|ip| SocketAddr::new(*ip, config.port))
            .collect();
        let ready_tx = ready_tx.clone();
        let builder = LocalExecutorBuilder::new(Placement::Fixed(cores[id % cores.len()]))
            .name(&format!("shard-{id}"))
            .io_memory(EXECUTOR_IO_MEMORY_BYTES)
            .ring_depth(EXECUTOR_RING_DEPTH)
            .spin_before_park(config.spin_before_park);
        let handle = builder
            .spawn(move || {
                let paths = ShardPaths {
                    listen,
                    data_dir,
                    queue_memory_bytes,
                    max_message_bytes,
                };
                shard_main(id, shard_count, ends, paths, ready_tx)
            })
            .map_err(|e| executor_error(id, &e.to_string()))?;
        handles.push(handle);
    }
    drop(ready_tx);

    let mut first_addresses = None;
    for _ in 0..shard_count {
        match ready_rx.recv() {
            Ok(Ok(addresses)) => {
                first_addresses.get_or_insert(addresses);
            }
            Ok(Err(message)) => return Err(message),
            Err(_) => return Err("a shard stopped before it was ready".to_string()),
        }
    }
    on_ready(first_addresses.as_deref().unwrap_or(&[]));

    for (id, handle) in handles.into_iter().enumerate() {
        if handle.join().is_err() {
            return Err(format!("shard {id} stopped abnormally"));
        }
    }
    Ok(())
}

fn executor_error(id: usize, error: &str) -> String {
    format!(
        "cannot start shard {id}: {error}. Each shard locks {} KiB for io_uring; \
         check `ulimit -l` (locked memory) or run fewer shards (--shards)",
        EXECUTOR_IO_MEMORY_BYTES / 1024
    )
}

/// What one shard is given from the configuration.
struct ShardPaths {
    listen: Vec<SocketAddr>,
    data_dir: PathBuf,
    queue_memory_bytes: u64,
    max_message_bytes: u64,
}

async fn shard_main(
    id: usize,
    shard_count: usize,
    ends: MeshEnds,
    paths: ShardPaths,
    ready: mpsc::Sender<Ready>,
) {
    let ShardPaths {
        listen,
        data_dir,
        queue_memory_bytes,
        max_message_bytes,
    } = paths;
    let shard = Shard::new(id, shard_count, Topology::new_default());
    shard.pager.set_queue_memory_bytes(queue_memory_bytes);
    shard.max_message_bytes.set(max_message_bytes);
    start_mesh(&shard, ends).await;
    if let Err(message) = shard.recover(&data_dir).await {
        let _ = ready.send(Err(message));
        return;
    }
    glommio::spawn_local(super::storage::run_confirmer(shard.clone())).detach();
    glommio::spawn_local(super::paging::run_pager(shard.clone())).detach();
    glommio::spawn_local(shard.clone().run_timers()).detach();

    let listeners = match net::bind_all(&listen) {
        Ok(listeners) => listeners,
        Err(message) => {
            let _ = ready.send(Err(message));
            return;
        }
    };
    let addresses = listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .collect();
    for listener in listeners {
        glommio::spawn_local(net::accept_loop(shard.clone(), listener)).detach();
    }
    if id == 0 {
        glommio::spawn_local(wait_for_signal(shard.clone())).detach();
    }
    let _ = ready.send(Ok(addresses));

    shard
        .shut_down(CLOSE_TIMEOUT + Duration::from_secs(1))
        .await;
    tracing::info!(shard = id, "shard stopped");
}

async fn start_mesh(shard: &Rc<Shard>, ends: MeshEnds) {
    let (senders, receivers) = Mesh::connect(ends).await;
    for (peer, sender) in senders {
        glommio::spawn_local(shard.mesh.clone().run_flusher(peer, sender)).detach();
    }
    for (_peer, receiver) in receivers {
        let shard = shard.clone();
        glommio::spawn_local(async move {
            while let Some(batch) = receiver.recv().await {
                for msg in batch {
                    shard.storage.wait_for_room().await;
                    shard.handle_mesh(msg);
                }
            }
        })
        .detach();
    }
}

/// Shard 0 waits for SIGINT/SIGTERM on glommio's blocking pool and relays the shutdown.
async fn wait_for_signal(shard: Rc<Shard>) {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let waited = glommio::executor()
        .spawn_blocking(|| {
            let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
            Ok::<_, std::io::Error>(signals.forever().next())
        })
        .await;
    match waited {
        Ok(signal) => tracing::info!(?signal, "shutting down"),
        Err(error) => tracing::error!(%error, "cannot wait for signals"),
    }
    shard.broadcast_shutdown();
}
