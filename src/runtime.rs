//! Starting and stopping the broker: one glommio executor per shard, pinned to its core (or
//! unpinned with `--pin none`), each running a shard, its listeners and their sessions.
//!
//! The only module that knows net, session and shard together: net is handed the AMQP
//! `Protocol` defined here (and, on the TLS port, `tls::Acceptor` as the transport under it),
//! sessions are given their shard, and the shard sees connections only as
//! `conn_sink::ConnectionSink`.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use glommio::{Latency, LocalExecutorBuilder, Placement, Shares, TaskQueueHandle};

use crate::alarm::{probe, AlarmLimits};
use crate::broker::Topology;
use crate::cluster::Membership;
use crate::config::{ClusterConfig, Config, ConnectionLimits, Pin, SpinMode, TlsConfig};
use crate::limits::{
    ADMISSION_PREEMPT_INTERVAL, ADMISSION_TASK_SHARES, CLOSE_TIMEOUT, CONNECTIONS_PER_SHARD_MAX,
    EXECUTOR_IO_MEMORY_BYTES, EXECUTOR_IO_MEMORY_BYTES_MIN, EXECUTOR_IO_RINGS, EXECUTOR_PARK_BOUND,
    EXECUTOR_RING_DEPTH, SPIN_TASK_SHARES,
};
use crate::management::backend::ManagementBackend;
use crate::management::http::{Handler, ServerOptions};
use crate::management::prometheus::Metrics;
use crate::management::rates::SharedRates;
use crate::management::{self, api::Api, shard_backend::ShardBackend};
use crate::net::{self, ListenerSpec, SharedStream};
use crate::session;
use crate::shard::mesh::{self, MeshEnds};
use crate::shard::{JoinSetup, Shard};
use crate::spin;
use crate::start_gate::StartGate;
use crate::tls;

/// What a shard reports once it is listening (or why it could not start).
type Ready = Result<Vec<SocketAddr>, String>;

/// Runs the broker until SIGINT/SIGTERM. `on_ready` is called once every shard listens.
pub fn run(config: &Config, on_ready: impl FnOnce(&[SocketAddr])) -> Result<(), String> {
    let shard_count = config.shards;
    if config.trace_latency {
        crate::latency_trace::enable();
    }
    // The cores we may run on (respecting taskset/cgroups); shard i is pinned to the i-th.
    let cores: Vec<usize> = core_affinity::get_core_ids()
        .map(|ids| ids.into_iter().map(|core| core.id).collect())
        .filter(|ids: &Vec<usize>| !ids.is_empty())
        .unwrap_or_else(|| vec![0]);
    let io_memory_bytes = executor_io_memory_bytes(shard_count, memlock_limit_bytes());
    // Read once, so a bad file is refused before any shard starts; shared read-only after.
    let tls = match &config.tls {
        Some(tls) => Some((tls.port, tls::server_config(tls)?)),
        None => None,
    };
    // HTTPS for the management API: the broker's certificate, and no client certificate asked
    // for whatever amqps's peer verification (RabbitMQ's `management.ssl` is set apart too).
    let management_tls = match &config.tls {
        Some(tls) if config.management_tls_port != 0 => Some(tls::server_config(&TlsConfig {
            verify_peer: false,
            fail_if_no_peer_cert: false,
            ..tls.clone()
        })?),
        _ => None,
    };
    let alarm_limits = resolve_alarm_limits(config);
    let (ready_tx, ready_rx) = mpsc::channel::<Ready>();
    // A glommio channel end waiting for its peer to connect keeps its executor polling instead
    // of parking; with dozens of shards on a few cores, executors that connect early starve the
    // ones still being built (80 shards on 2 cores took up to 17 s to start). So every executor
    // is built first and the mesh connects only once all of them exist (`start_gate`: none
    // starts if one cannot be built).
    let seats = StartGate::seats(shard_count);
    let management_rates = SharedRates::default();
    let mut handles = Vec::with_capacity(shard_count);
    for ((id, ends), seat) in mesh::build(shard_count).into_iter().enumerate().zip(seats) {
        let data_dir = config.data_dir.clone();
        let queue_memory_bytes = config.queue_memory_bytes;
        let max_message_bytes = config.max_message_bytes;
        let connection_limits = config.connection_limits;
        let cluster = config.cluster.clone();
        let cluster_listen = config.listen.clone();
        let (glommio_spin, adaptive_spin) = match config.spin_mode {
            SpinMode::Fixed => (config.spin_before_park, None),
            SpinMode::Adaptive => (Duration::ZERO, Some(config.spin_before_park)),
        };
        let listen: Vec<SocketAddr> = config
            .listen
            .iter()
            .map(|ip| SocketAddr::new(*ip, config.port))
            .collect();
        let tls_listen = tls.as_ref().map(|(port, server_config)| TlsListen {
            addresses: config
                .listen
                .iter()
                .map(|ip| SocketAddr::new(*ip, *port))
                .collect(),
            server_config: server_config.clone(),
        });
        let management_listen = http_addresses(config, config.management_port);
        let prometheus_listen = http_addresses(config, config.prometheus_port);
        let management_tls_listen = management_tls.as_ref().map(|server_config| TlsListen {
            addresses: http_addresses(config, config.management_tls_port),
            server_config: server_config.clone(),
        });
        let management_rates = management_rates.clone();
        let ready_tx = ready_tx.clone();
        let placement = match config.pin {
            Pin::Cores => Placement::Fixed(cores[id % cores.len()]),
            Pin::None => Placement::Unbound,
        };
        let builder = LocalExecutorBuilder::new(placement)
            .name(&format!("shard-{id}"))
            .io_memory(io_memory_bytes)
            .ring_depth(EXECUTOR_RING_DEPTH)
            .spin_before_park(glommio_spin);
        let handle = builder
            .spawn(move || {
                let open = seat.arrive();
                let paths = ShardPaths {
                    listen,
                    tls_listen,
                    management_listen,
                    prometheus_listen,
                    management_tls_listen,
                    management_rates,
                    data_dir,
                    queue_memory_bytes,
                    max_message_bytes,
                    alarm_limits,
                    connection_limits,
                    cluster,
                    cluster_listen,
                    adaptive_spin,
                };
                async move {
                    if open {
                        shard_main(id, shard_count, ends, paths, ready_tx).await;
                    }
                }
            })
            .map_err(|e| executor_error(id, io_memory_bytes, &e.to_string()))?;
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
            Err(_) => return Err(not_started(handles, io_memory_bytes)),
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

/// Every shard ended before it was ready: the error of the executor that could not be built
/// (the others left the start gate when it ended).
fn not_started(handles: Vec<glommio::ExecutorJoinHandle<()>>, io_memory_bytes: usize) -> String {
    for (id, handle) in handles.into_iter().enumerate() {
        if let Err(error) = handle.join() {
            return executor_error(id, io_memory_bytes, &error.to_string());
        }
    }
    "a shard stopped before it was ready".to_string()
}

fn executor_error(id: usize, io_memory_bytes: usize, error: &str) -> String {
    format!(
        "cannot start shard {id}: {error}. Each shard locks {} KiB for io_uring; \
         check `ulimit -l` (locked memory) or run fewer shards (--shards)",
        io_memory_bytes * EXECUTOR_IO_RINGS / 1024
    )
}

/// Registered io_uring memory per executor. Every ring of every executor registers it again
/// and the kernel charges each registration to the user's `RLIMIT_MEMLOCK` (often 8 MiB), so
/// the limit is shared out between the shards: at 1 MiB each, 3 executors would already
/// exhaust 8 MiB. Past the floor the sum may still exceed the limit (80 shards need 15 MiB at
/// 64 KiB): glommio then skips registration on the executors that do not fit, which costs
/// them the registered-buffer fast path but nothing else. `None`: no limit (RLIM_INFINITY).
fn executor_io_memory_bytes(shard_count: usize, memlock_limit_bytes: Option<u64>) -> usize {
    let registrations = shard_count.max(1) * EXECUTOR_IO_RINGS;
    let share = memlock_limit_bytes.map_or(usize::MAX, |limit| {
        usize::try_from(limit).unwrap_or(usize::MAX) / registrations
    });
    share.clamp(EXECUTOR_IO_MEMORY_BYTES_MIN, EXECUTOR_IO_MEMORY_BYTES)
}

/// The soft `RLIMIT_MEMLOCK`, None when unlimited (or unreadable: glommio checks it again).
fn memlock_limit_bytes() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct we pass, which lives for the call.
    let read = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) };
    (read == 0 && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

/// What one shard is given from the configuration.
struct ShardPaths {
    listen: Vec<SocketAddr>,
    tls_listen: Option<TlsListen>,
    /// Empty: no management API.
    management_listen: Vec<SocketAddr>,
    /// Empty: no Prometheus endpoint.
    prometheus_listen: Vec<SocketAddr>,
    /// None: no management API over HTTPS.
    management_tls_listen: Option<TlsListen>,
    /// The management API's message-rate readings, one store for every shard.
    management_rates: SharedRates,
    data_dir: PathBuf,
    queue_memory_bytes: u64,
    max_message_bytes: u64,
    alarm_limits: AlarmLimits,
    connection_limits: ConnectionLimits,
    /// This node and its peers; the cluster port is bound on `cluster_listen`.
    cluster: ClusterConfig,
    cluster_listen: Vec<std::net::IpAddr>,
    /// `--spin-mode adaptive`: the spinner task's window (glommio itself then parks at once).
    adaptive_spin: Option<Duration>,
}

/// The watermark in bytes (a fraction applies to the machine's memory, or to the cgroup's
/// limit when lower, read once at start as RabbitMQ does) and the disk free limit.
fn resolve_alarm_limits(config: &Config) -> AlarmLimits {
    let machine_bytes = probe::machine_memory_bytes().unwrap_or(u64::MAX);
    let cgroup_bytes = probe::cgroup_memory_limit_bytes();
    let limits = AlarmLimits {
        memory_limit_bytes: config
            .memory_high_watermark
            .limit_bytes(machine_bytes, cgroup_bytes),
        disk_free_limit_bytes: config.disk_free_limit.0,
    };
    tracing::info!(
        memory_limit_bytes = limits.memory_limit_bytes,
        machine_bytes,
        cgroup_limit_bytes = cgroup_bytes,
        disk_free_limit_bytes = limits.disk_free_limit_bytes,
        "resource alarm limits"
    );
    limits
}

/// glommio 0.9 sometimes parks an executor that still has a runnable task queue (its turn
/// began with a preemption check that said yes, which the loop reads as "nothing ran"), and the
/// park sleeps until a timer or an I/O completion. Observed as 80 shards all parked before the
/// first was ready, 1 start in about 10 (tests/it/shard_count.rs); the fix (glommio/glommio
/// #53) is in a release not published yet. A timer always due within `EXECUTOR_PARK_BOUND`
/// turns such a park into a delay of at most that. Ends with the executor.
async fn bound_every_park() {
    loop {
        glommio::timer::sleep(EXECUTOR_PARK_BOUND).await;
    }
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
        tls_listen,
        management_listen,
        prometheus_listen,
        management_tls_listen,
        management_rates,
        data_dir,
        queue_memory_bytes,
        max_message_bytes,
        alarm_limits,
        connection_limits,
        cluster,
        cluster_listen,
        adaptive_spin,
    } = paths;
    glommio::spawn_local(bound_every_park()).detach();
    let shard = Shard::new(id, shard_count, Topology::new_default());
    // The flags' members, or the members file a join or a member change left.
    let membership = Membership::load(&cluster, &data_dir);
    if let Ok(membership) = &membership {
        shard.set_members(membership.members().clone());
    }
    shard.set_queue_memory_bytes(queue_memory_bytes);
    shard.set_max_message_bytes(max_message_bytes);
    shard.configure_alarms(alarm_limits, data_dir.clone());
    shard.connect_mesh(ends).await;
    let membership = match membership {
        Ok(membership) => membership,
        Err(message) => {
            let _ = ready.send(Err(message));
            return;
        }
    };
    if let Err(message) = shard.recover(&data_dir).await {
        let _ = ready.send(Err(message));
        return;
    }
    if shard.is_topology_owner() && membership.members().is_clustered() {
        if let Err(message) = shard.start_cluster(&cluster, membership, &data_dir, &cluster_listen)
        {
            let _ = ready.send(Err(message));
            return;
        }
    } else if shard.is_topology_owner() && cluster.secret.is_some() {
        shard.allow_join(JoinSetup {
            config: cluster.clone(),
            data_dir: data_dir.clone(),
            listen: cluster_listen.clone(),
        });
    }
    shard.start_background_tasks();

    let http = HttpListen {
        management: management_listen,
        prometheus: prometheus_listen,
        management_tls: management_tls_listen,
        management_rates,
    };
    // The data path stays in the default task queue (the one this runs in); accepting and
    // handshakes get their own, at low shares and preempted often, so a burst of connections
    // takes what the data path leaves (see "Admission" in docs/architecture.md).
    let data_queue = glommio::executor().current_task_queue();
    let admission_queue = glommio::executor().create_task_queue(
        Shares::Static(ADMISSION_TASK_SHARES),
        Latency::Matters(ADMISSION_PREEMPT_INTERVAL),
        "admission",
    );
    if let Some(window) = adaptive_spin {
        // Its own queue at the lowest shares: while the data path has work, it runs first.
        let spin_queue = glommio::executor().create_task_queue(
            Shares::Static(SPIN_TASK_SHARES),
            Latency::NotImportant,
            "spin",
        );
        if let Ok(task) = glommio::spawn_local_into(spin::run(window), spin_queue) {
            task.detach();
        }
    }
    let amqp = AmqpWiring {
        limits: connection_limits,
        data_queue,
    };
    let specs = listener_specs(&shard, &listen, tls_listen, &http, amqp);
    let listeners = match net::bind_all(specs) {
        Ok(listeners) => listeners,
        Err(message) => {
            let _ = ready.send(Err(message));
            return;
        }
    };
    let addresses: Vec<SocketAddr> = listeners
        .iter()
        .filter(|listener| listener.protocol_name() == "amqp")
        .filter_map(net::Listener::local_addr)
        .collect();
    for listener in listeners {
        let shard = shard.clone();
        let stop = async move { shard.wait_for_shutdown().await };
        let accepting = net::accept_loop(listener, stop);
        match glommio::executor().spawn_local_into(accepting, admission_queue) {
            Ok(task) => {
                task.detach();
            }
            Err(error) => {
                let _ = ready.send(Err(format!("cannot start accepting: {error}")));
                return;
            }
        }
    }
    shard.open_shovels(addresses.first().copied());
    if shard.relays_signals() {
        glommio::spawn_local(wait_for_signal(shard.clone())).detach();
    }
    if crate::latency_trace::is_enabled() {
        let probed = shard.clone();
        let connections = move || probed.conn_count();
        glommio::spawn_local(crate::latency_trace::scheduler_lag_probe(id, connections)).detach();
    }
    let _ = ready.send(Ok(addresses));

    shard
        .shut_down(CLOSE_TIMEOUT + Duration::from_secs(1))
        .await;
    crate::latency_trace::stop_scheduler_lag_probe();
    crate::latency_trace::report(id);
    tracing::info!(shard = id, "shard stopped");
}

/// amqps: the addresses of the TLS port and the configuration every shard shares.
struct TlsListen {
    addresses: Vec<SocketAddr>,
    server_config: Arc<rustls::ServerConfig>,
}

/// The HTTP listeners' addresses; an empty list: that server is off.
struct HttpListen {
    management: Vec<SocketAddr>,
    prometheus: Vec<SocketAddr>,
    /// The management API over HTTPS (`--management-tls-port`).
    management_tls: Option<TlsListen>,
    management_rates: SharedRates,
}

/// AMQP on every listen address, amqps (the same protocol over `tls::Acceptor`) on the TLS
/// port when it is configured, and the management API and Prometheus endpoint over HTTP.
fn listener_specs(
    shard: &Rc<Shard>,
    listen: &[SocketAddr],
    tls_listen: Option<TlsListen>,
    http_listen: &HttpListen,
    wiring: AmqpWiring,
) -> Vec<ListenerSpec> {
    let amqp: Rc<dyn net::Protocol> = Rc::new(Amqp {
        shard: shard.clone(),
        name: "amqp",
        wiring,
    });
    let mut specs: Vec<ListenerSpec> = listen
        .iter()
        .map(|&address| ListenerSpec {
            address,
            protocol: amqp.clone(),
            transport: None,
        })
        .collect();
    if let Some(tls_listen) = tls_listen {
        let amqps: Rc<dyn net::Protocol> = Rc::new(Amqp {
            shard: shard.clone(),
            name: "amqps",
            wiring,
        });
        let acceptor: Rc<dyn net::Transport> =
            Rc::new(tls::Acceptor::new(tls_listen.server_config));
        specs.extend(tls_listen.addresses.iter().map(|&address| ListenerSpec {
            address,
            protocol: amqps.clone(),
            transport: Some(acceptor.clone()),
        }));
    }
    let backend: Rc<dyn ManagementBackend> = Rc::new(ShardBackend::new(shard.clone()));
    if !http_listen.management.is_empty() {
        let api = Rc::new(Api::new(
            backend.clone(),
            http_listen.management_rates.clone(),
        ));
        let http: Rc<dyn net::Protocol> = Rc::new(Http::new(api, "http"));
        specs.extend(http_listen.management.iter().map(|&address| ListenerSpec {
            address,
            protocol: http.clone(),
            transport: None,
        }));
    }
    if let Some(https_listen) = &http_listen.management_tls {
        let api = Rc::new(Api::new(
            backend.clone(),
            http_listen.management_rates.clone(),
        ));
        let https: Rc<dyn net::Protocol> = Rc::new(Http::new(api, "https"));
        let acceptor: Rc<dyn net::Transport> =
            Rc::new(tls::Acceptor::new(https_listen.server_config.clone()));
        specs.extend(https_listen.addresses.iter().map(|&address| ListenerSpec {
            address,
            protocol: https.clone(),
            transport: Some(acceptor.clone()),
        }));
    }
    if !http_listen.prometheus.is_empty() {
        let metrics = Rc::new(Metrics::new(backend));
        let http: Rc<dyn net::Protocol> = Rc::new(Http::new(metrics, "prometheus"));
        specs.extend(http_listen.prometheus.iter().map(|&address| ListenerSpec {
            address,
            protocol: http.clone(),
            transport: None,
        }));
    }
    specs
}

/// What every AMQP session of a shard is handed: the connection limits, and the task queue an
/// open connection moves to once its handshake is done.
#[derive(Clone, Copy)]
struct AmqpWiring {
    limits: ConnectionLimits,
    data_queue: TaskQueueHandle,
}

/// AMQP 0-9-1, served by `session::serve` on the shard that accepted the connection.
struct Amqp {
    shard: Rc<Shard>,
    /// "amqp" or "amqps": listeners of each are checked apart at bind.
    name: &'static str,
    wiring: AmqpWiring,
}

impl net::Protocol for Amqp {
    fn name(&self) -> &'static str {
        self.name
    }

    fn admits(&self) -> bool {
        self.shard.conn_count() < CONNECTIONS_PER_SHARD_MAX
    }

    fn serve(&self, stream: SharedStream) -> std::pin::Pin<Box<dyn Future<Output = ()>>> {
        let AmqpWiring { limits, data_queue } = self.wiring;
        Box::pin(session::serve(
            self.shard.clone(),
            stream,
            limits,
            data_queue,
        ))
    }
}

/// The management HTTP API, served on every shard like AMQP (SO_REUSEPORT): a request's JSON
/// rendering runs on the shard that accepted it, so polling clients spread over the cores
/// instead of queueing behind one shard's AMQP connections. Each shard answers from its own
/// topology replica and gathers statistics from all shards with one typed call each.
/// The Prometheus endpoint is served the same way, on its own port, with its own handler.
struct Http<H> {
    api: Rc<H>,
    open: Rc<std::cell::Cell<usize>>,
    /// "http", "https" or "prometheus": listeners of each are checked apart at bind.
    name: &'static str,
}

impl<H> Http<H> {
    fn new(api: Rc<H>, name: &'static str) -> Http<H> {
        Http {
            api,
            open: Rc::new(std::cell::Cell::new(0)),
            name,
        }
    }
}

impl<H: Handler + 'static> net::Protocol for Http<H> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn admits(&self) -> bool {
        self.open.get() < ServerOptions::default().connections_max
    }

    fn serve(&self, stream: SharedStream) -> std::pin::Pin<Box<dyn Future<Output = ()>>> {
        let api = self.api.clone();
        let open = self.open.clone();
        open.set(open.get() + 1);
        Box::pin(async move {
            management::http::serve_connection(stream, api, ServerOptions::default()).await;
            open.set(open.get() - 1);
        })
    }
}

/// The coordinator waits for SIGINT/SIGTERM on glommio's blocking pool and relays the shutdown.
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
    // Shovels first, while every connection is open: one into this broker drains its confirms.
    shard.stop_shovels_everywhere().await;
    shard.broadcast_shutdown();
}

/// The management addresses on `port`; none when the port is 0 (that server is off).
fn http_addresses(config: &Config, port: u16) -> Vec<SocketAddr> {
    if port == 0 {
        return Vec::new();
    }
    config
        .management_listen
        .iter()
        .map(|ip| SocketAddr::new(*ip, port))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn io_memory_is_shared_out_under_the_locked_memory_limit() {
        // Today's two shards keep the full megabyte: 2 x 3 MiB fit in 8 MiB.
        assert_eq!(
            executor_io_memory_bytes(2, Some(8 * MIB)),
            EXECUTOR_IO_MEMORY_BYTES
        );
        // Four shards share 8 MiB: 12 registrations of 682 KiB (rounded to pages by glommio).
        let four = executor_io_memory_bytes(4, Some(8 * MIB));
        assert!(four < EXECUTOR_IO_MEMORY_BYTES);
        assert!(4 * EXECUTOR_IO_RINGS * four <= 8 * MIB as usize);
        // Eighty shards hit the floor rather than nothing.
        assert_eq!(
            executor_io_memory_bytes(80, Some(8 * MIB)),
            EXECUTOR_IO_MEMORY_BYTES_MIN
        );
        assert_eq!(executor_io_memory_bytes(80, None), EXECUTOR_IO_MEMORY_BYTES);
        assert_eq!(
            executor_io_memory_bytes(1, Some(0)),
            EXECUTOR_IO_MEMORY_BYTES_MIN
        );
    }
}
