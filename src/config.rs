//! One validated configuration, built from command-line flags and an optional TOML file.
//!
//! Flags override file values; file keys are named like the flags (`port`, `listen`, `shards`,
//! `pin`, `data_dir`, `log_level`, `log_format`). Every value, wherever it came from, goes
//! through the same validation so a bad value is refused at start with one clear message.

use crate::limits::{
    CONFIG_FILE_SIZE_MAX_BYTES, DISK_FREE_LIMIT_DEFAULT_BYTES, LISTEN_ADDRESSES_MAX, SHARDS_MAX,
    SPIN_MICROS_MAX,
};
use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use crate::alarm::{parse_disk_free_limit, parse_memory_watermark, DiskFreeLimit, MemoryWatermark};
use clap::Parser;
use serde::Deserialize;

use crate::limits::{
    ACCESS_NAME_LENGTH_MAX, CHANNEL_MAX, CONNECTIONS_TOTAL_MAX, CONSUMER_TIMEOUT_DEFAULT_MS,
    CONSUMER_TIMEOUT_MS_MAX, FRAME_MAX_BYTES, FRAME_MAX_CONFIG_MAX_BYTES, HANDSHAKE_TIMEOUT,
    HANDSHAKE_TIMEOUT_MS_MAX, HANDSHAKE_TIMEOUT_MS_MIN, HEARTBEAT_DEFAULT_SECONDS,
    MESSAGE_SIZE_DEFAULT_BYTES, MESSAGE_SIZE_MAX_BYTES, MESSAGE_SIZE_MIN_BYTES,
};
use crate::protocol::FRAME_MIN_SIZE;

mod cluster;
pub use cluster::{default_node_name, is_valid_node_name, ClusterConfig, PeerConfig};

/// AMQP's IANA port.
pub const PORT_DEFAULT: u16 = 5672;
/// amqps's IANA port, used when a certificate and key are given without `tls_port`.
pub const TLS_PORT_DEFAULT: u16 = 5671;
/// RabbitMQ's management plugin port, so rabbitmqadmin finds us unconfigured.
pub const MANAGEMENT_PORT_DEFAULT: u16 = 15672;
/// rabbitmq_prometheus's port, so scrapers configured for RabbitMQ find us.
pub const PROMETHEUS_PORT_DEFAULT: u16 = 15692;
pub const DATA_DIR_DEFAULT: &str = "./data";
pub const LOG_LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];
pub const LOG_LEVEL_DEFAULT: &str = "info";
/// How long an idle shard spins before parking, by default. A message for a parked shard
/// (from the network or another shard) waits for a kernel wake-up, ~50-100 µs here; spinning
/// answers at once for that long after each burst of work, at the cost of CPU.
pub const SPIN_MICROS_DEFAULT: u64 = 50;
/// By default one core in this many (and at least one, on any host with two or more) is left
/// without a shard, for the kernel's network work (softirq, the loopback or NIC path), the
/// clients on small hosts and everything else. Measured on the 2-core machine (issue 11,
/// perf/results/2026-12-02-cross-shard.md): two shards on two cores beside their clients put
/// four busy threads on two cores and cost 0.3-1.5 ms at the median whenever a producer and
/// its consumer land on different shards; one shard stays at the loopback floor.
pub const CORES_PER_RESERVED_CORE_DEFAULT: usize = 16;

/// The shard count when none is given: every core but the reserved ones, at least one.
/// 1 → 1, 2 → 1, 4 → 3, 16 → 15, 64 → 60.
pub fn default_shards(cores: usize) -> usize {
    if cores <= 1 {
        return 1;
    }
    let reserved = cores.div_ceil(CORES_PER_RESERVED_CORE_DEFAULT);
    cores.saturating_sub(reserved).max(1)
}
/// Body bytes of ready messages one queue keeps in memory before paging the newest out to the
/// log. 512 MiB: a queue that fits (seconds of backlog at high rates: 100,000 in-flight 1 KB
/// messages is 100 MB, and 64 MiB measurably cut such a load to a third by paging it) never pays
/// a write for transient messages or a per-message read on delivery, while a few runaway
/// backlogs still fit in RAM. The budget is per queue: many long queues need a lower value
/// (there is no broker-wide memory watermark yet).
pub const QUEUE_MEMORY_BYTES_DEFAULT: u64 = 512 * 1024 * 1024;
/// RabbitMQ's `vm_memory_high_watermark.relative` default: 0.4 of the machine's memory (or of
/// the cgroup's limit when lower).
pub const MEMORY_HIGH_WATERMARK_DEFAULT: MemoryWatermark = MemoryWatermark::Fraction(0.4);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub port: u16,
    /// Never empty, no duplicates.
    pub listen: Vec<IpAddr>,
    /// The management HTTP API's port; 0: no management listener.
    pub management_port: u16,
    /// Where the management API listens; never empty, no duplicates.
    pub management_listen: Vec<IpAddr>,
    /// The Prometheus `/metrics` port (on the management addresses); 0: none.
    pub prometheus_port: u16,
    /// The management API over HTTPS (RabbitMQ's `management.ssl.port`), on the management
    /// addresses with the TLS certificate and key; 0: none. Non-zero only with `tls`.
    pub management_tls_port: u16,
    /// In `1..=min(SHARDS_MAX, available cores)` with [`Pin::Cores`], `1..=SHARDS_MAX` with
    /// [`Pin::None`].
    pub shards: usize,
    pub pin: Pin,
    pub data_dir: PathBuf,
    /// One of [`LOG_LEVELS`].
    pub log_level: String,
    pub log_format: LogFormat,
    /// Idle spin before an executor parks (0: park at once).
    pub spin_before_park: std::time::Duration,
    pub spin_mode: SpinMode,
    /// Body bytes of ready messages a queue keeps in memory; past it the newest are paged
    /// out to the log (0: every queue behaves as `x-queue-mode=lazy`).
    pub queue_memory_bytes: u64,
    /// Largest message body accepted, in
    /// `MESSAGE_SIZE_MIN_BYTES..=MESSAGE_SIZE_MAX_BYTES`.
    pub max_message_bytes: u64,
    /// Resident memory past which publishers are blocked (RabbitMQ's `vm_memory_high_watermark`).
    pub memory_high_watermark: MemoryWatermark,
    /// Free bytes on the data directory's filesystem below which publishers are blocked
    /// (RabbitMQ's `disk_free_limit`).
    pub disk_free_limit: DiskFreeLimit,
    /// The first user, created on an empty data directory (RabbitMQ's `default_user`).
    pub default_user: String,
    /// Its password; hashed before it is stored, never logged.
    pub default_pass: Secret,
    /// Users that may only log in from a loopback address (RabbitMQ's `loopback_users`).
    pub loopback_users: Vec<String>,
    /// The amqps listener; `None` (no certificate and key given): TLS off.
    pub tls: Option<TlsConfig>,
    /// A RabbitMQ definitions file imported at start-up, before any client is accepted
    /// (RabbitMQ's `load_definitions`).
    pub load_definitions: Option<PathBuf>,
    /// `--trace-latency`: per-stage latency of sampled ringmq-perf messages, logged per shard at
    /// shutdown (`latency_trace`). A debugging aid; off by default.
    pub trace_latency: bool,
    /// What one client connection may hold and for how long.
    pub connection_limits: ConnectionLimits,
    /// This node's name and the cluster it belongs to (none: a cluster of one).
    pub cluster: ClusterConfig,
}

/// The per-connection limits RabbitMQ makes configurable (`channel_max`, `frame_max`,
/// `heartbeat`, `handshake_timeout`, `consumer_timeout`, `connection_max`); the session
/// enforces them with RabbitMQ's reply codes and texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Offered in connection.tune; a client's tune-ok above it (or 0) is refused with 530.
    pub channel_max: u16,
    /// Offered in connection.tune, in `FRAME_MIN_SIZE..=FRAME_MAX_CONFIG_MAX_BYTES`.
    pub frame_max_bytes: u32,
    /// Suggested in connection.tune; the client's tune-ok value wins, as in RabbitMQ.
    pub heartbeat_seconds: u16,
    /// Time from accept to connection.open-ok.
    pub handshake_timeout: std::time::Duration,
    /// Oldest unacknowledged delivery a channel may hold; `None`: no limit.
    pub consumer_timeout: Option<std::time::Duration>,
    /// Client connections open on all shards together; `None`: no limit (RabbitMQ's
    /// `connection_max = infinity`).
    pub connection_max: Option<u64>,
}

impl Default for ConnectionLimits {
    fn default() -> ConnectionLimits {
        ConnectionLimits {
            channel_max: CHANNEL_MAX,
            frame_max_bytes: FRAME_MAX_BYTES,
            heartbeat_seconds: HEARTBEAT_DEFAULT_SECONDS,
            handshake_timeout: HANDSHAKE_TIMEOUT,
            consumer_timeout: Some(std::time::Duration::from_millis(
                CONSUMER_TIMEOUT_DEFAULT_MS,
            )),
            connection_max: None,
        }
    }
}

/// amqps on the same listen addresses as AMQP. The files are read (and refused) at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// Differs from `Config::port`.
    pub port: u16,
    /// PEM: the server certificate, then its chain.
    pub cert: PathBuf,
    /// PEM: the server's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM: the CAs client certificates are checked against; required by `verify_peer`.
    pub ca: Option<PathBuf>,
    /// RabbitMQ's `verify = verify_peer`: ask clients for a certificate and check it.
    pub verify_peer: bool,
    /// RabbitMQ's `fail_if_no_peer_cert`: refuse a client without one. Only with `verify_peer`.
    pub fail_if_no_peer_cert: bool,
}

/// A password from the command line or the file: `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// RabbitMQ's defaults: guest/guest, who may only connect from loopback.
pub const DEFAULT_USER_DEFAULT: &str = "guest";
pub const DEFAULT_PASS_DEFAULT: &str = "guest";

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines; coloured only when stderr is a terminal.
    #[default]
    Text,
    /// One JSON object per line, with the current span's fields (for journald, log shippers).
    Json,
}

/// How an idle shard spins before it parks (`--spin-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SpinMode {
    /// glommio's spin: every idle period spins `--spin-us` before parking.
    #[default]
    Fixed,
    /// Spins `--spin-us` after work, but not while other threads of the machine wait for a
    /// CPU (`spin.rs`, from /proc/pressure/cpu).
    Adaptive,
}

/// How shard executors are placed on cores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pin {
    /// Shard i runs pinned to the i-th allowed core: at most one shard per core.
    Cores,
    /// Executors float: more shards than cores is allowed (tests, experiments), at the cost of
    /// shards sharing cores and migrating between them.
    None,
}

/// Where a rejected value came from, so the message points at the right place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Flag,
    File,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Flag => f.write_str("command line"),
            Origin::File => f.write_str("config file"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Also carries `--help` and `--version`, which are not failures: see [`ConfigError::exit_code`].
    #[error("{0}")]
    Cli(#[from] clap::Error),
    #[error("cannot read config file {path}: {source}")]
    FileRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is {size_bytes} bytes, more than the {max_bytes} allowed")]
    FileTooLarge {
        path: PathBuf,
        size_bytes: u64,
        max_bytes: u64,
    },
    #[error("invalid config file {path}: {source}")]
    FileParse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("invalid port {value:?} ({origin}): must be a number in 1..=65535")]
    Port { value: String, origin: Origin },
    #[error("invalid shards {value:?} ({origin}): must be a number in 1..={max} (max is the number of cores with --pin cores, {SHARDS_MAX} with --pin none)")]
    Shards {
        value: String,
        origin: Origin,
        max: usize,
    },
    #[error("invalid pin {value:?} ({origin}): must be cores or none")]
    Pin { value: String, origin: Origin },
    #[error("invalid listen address {value:?} ({origin}): must be an IPv4 or IPv6 address such as 127.0.0.1 or ::1")]
    Listen { value: String, origin: Origin },
    #[error("invalid listen ({origin}): {count} addresses given, between 1 and {LISTEN_ADDRESSES_MAX} allowed")]
    ListenCount { count: usize, origin: Origin },
    #[error(
        "invalid log level {value:?} ({origin}): must be one of error, warn, info, debug, trace"
    )]
    LogLevel { value: String, origin: Origin },
    #[error("invalid log format {value:?} ({origin}): must be text or json")]
    LogFormat { value: String, origin: Origin },
    #[error("invalid spin mode {value:?} ({origin}): must be fixed or adaptive")]
    SpinMode { value: String, origin: Origin },
    #[error("invalid data dir ({origin}): must not be empty")]
    DataDirEmpty { origin: Origin },
    #[error("invalid spin-us {value:?} ({origin}): must be a number of microseconds in 0..={SPIN_MICROS_MAX}")]
    Spin { value: String, origin: Origin },
    #[error(
        "invalid queue-memory-bytes {value:?} ({origin}): must be a number of bytes (0 or more)"
    )]
    QueueMemory { value: String, origin: Origin },
    #[error("invalid max-message-bytes {value:?} ({origin}): must be a number of bytes in {MESSAGE_SIZE_MIN_BYTES}..={MESSAGE_SIZE_MAX_BYTES}")]
    MaxMessage { value: String, origin: Origin },
    #[error("invalid memory-high-watermark {value:?} ({origin}): must be a fraction of memory such as 0.4 (0.0..=1.0), or bytes such as 1073741824 or 1GiB")]
    MemoryWatermark { value: String, origin: Origin },
    #[error("invalid disk-free-limit {value:?} ({origin}): must be bytes such as 50000000, 50MB or 1GiB")]
    DiskFreeLimit { value: String, origin: Origin },
    #[error("invalid {name} {value:?} ({origin}): must be {expected}")]
    Limit {
        name: &'static str,
        value: String,
        origin: Origin,
        expected: String,
    },
    #[error("invalid {what} ({origin}): must be 1..={ACCESS_NAME_LENGTH_MAX} bytes")]
    AccessName { what: &'static str, origin: Origin },
    #[error(
        "invalid tls-port {value:?} ({origin}): must be a number in 1..=65535, not the AMQP port"
    )]
    TlsPort { value: String, origin: Origin },
    #[error("invalid TLS settings: {0}")]
    Tls(&'static str),
}

impl ConfigError {
    /// Exit code for `main`: 0 for `--help`/`--version`, 2 (usage error) for everything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            ConfigError::Cli(e) if !e.use_stderr() => 0,
            _ => 2,
        }
    }
}

/// Flags are all strings here so flag and file values share one validation path and one set
/// of error messages.
#[derive(Debug, Parser)]
#[command(
    name = "ringmq",
    version,
    about = "An AMQP 0-9-1 message broker, thread-per-core"
)]
struct Flags {
    /// TOML file with any of: port, listen, management_port, management_listen, prometheus_port, management_tls_port, shards, pin, data_dir, log_level, log_format,
    /// spin_us, spin_mode, queue_memory_bytes, max_message_bytes, memory_high_watermark,
    /// disk_free_limit, default_user, default_pass,
    /// loopback_users, load_definitions, tls_port, tls_cert, tls_key, tls_ca, tls_verify_peer,
    /// tls_fail_if_no_peer_cert. Flags override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// TCP port to listen on [default: 5672]
    #[arg(long, value_name = "N")]
    port: Option<String>,
    /// Address to listen on; repeat for several [default: 127.0.0.1 and ::1]
    #[arg(long, value_name = "ADDR")]
    listen: Vec<String>,
    /// TCP port of the management HTTP API; 0 disables it [default: 15672]
    #[arg(long, value_name = "N")]
    management_port: Option<String>,
    /// Address the management API listens on; repeat for several [default: as --listen]
    #[arg(long, value_name = "ADDR")]
    management_listen: Vec<String>,
    /// TCP port of the Prometheus metrics (/metrics), on the management addresses; 0 disables
    /// it [default: 15692]
    #[arg(long, value_name = "N")]
    prometheus_port: Option<String>,
    /// TCP port of the management API over HTTPS (RabbitMQ's management.ssl.port, usually
    /// 15671), on the management addresses with --tls-cert and --tls-key; 0 disables it
    /// [default: 0]
    #[arg(long, value_name = "N")]
    management_tls_port: Option<String>,
    /// Number of shards, one executor pinned per core [default: the cores less one in 16,
    /// at least one core left free: 2 cores → 1 shard, 16 → 15, 64 → 60]
    #[arg(long, value_name = "N")]
    shards: Option<String>,
    /// cores: one shard per core, pinned; none: executors unpinned, shards may exceed the
    /// cores (up to 256) [default: cores]
    #[arg(long, value_name = "cores|none")]
    pin: Option<String>,
    /// Directory for the write-ahead log and metadata [default: ./data]
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// error, warn, info, debug or trace [default: info]
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
    /// text (coloured only on a terminal) or json (one object per line) [default: text]
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<String>,
    /// Microseconds an idle shard spins before sleeping (lower latency, more CPU) [default: 50]
    #[arg(long, value_name = "MICROS")]
    spin_us: Option<String>,
    /// fixed: spin --spin-us whenever idle; adaptive: spin --spin-us after work, but not while
    /// other threads wait for a CPU (/proc/pressure/cpu) [default: fixed]
    #[arg(long, value_name = "MODE")]
    spin_mode: Option<String>,
    /// Body bytes of ready messages a queue keeps in RAM; past it the newest are paged out to
    /// the log and read back on delivery (0: all queues lazy) [default: 67108864, 64 MiB]
    #[arg(long, value_name = "BYTES")]
    queue_memory_bytes: Option<String>,
    /// Largest message body accepted, 1024..=536870912 [default: 134217728, 128 MiB]
    #[arg(long, value_name = "BYTES")]
    max_message_bytes: Option<String>,
    /// Resident memory past which publishing connections are blocked: a fraction of the
    /// machine's memory (or the cgroup's limit when lower) such as 0.4, or bytes such as 1GiB
    /// [default: 0.4]
    #[arg(long, value_name = "FRACTION|BYTES")]
    memory_high_watermark: Option<String>,
    /// Free space on the data directory's filesystem below which publishing connections are
    /// blocked, bytes such as 50MB or 1GiB [default: 50MB]
    #[arg(long, value_name = "BYTES")]
    disk_free_limit: Option<String>,
    /// The user created on an empty data directory [default: guest]
    #[arg(long, value_name = "NAME")]
    default_user: Option<String>,
    /// Its password [default: guest]
    #[arg(long, value_name = "PASSWORD")]
    default_pass: Option<String>,
    /// Users allowed to log in only from loopback, comma separated; "none" for nobody
    /// [default: guest]
    #[arg(long, value_name = "USERS")]
    loopback_users: Option<String>,
    /// amqps port, on the same addresses [default: 5671 when --tls-cert and --tls-key are
    /// given; TLS is off without them]
    #[arg(long, value_name = "N")]
    tls_port: Option<String>,
    /// PEM file with the server certificate (then its chain)
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// PEM file with the server's private key
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// PEM file with the CAs client certificates are checked against
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// Ask TLS clients for a certificate and verify it against --tls-ca (RabbitMQ's
    /// verify_peer; a verified certificate allows SASL EXTERNAL) [default: false]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    tls_verify_peer: Option<bool>,
    /// With --tls-verify-peer: refuse TLS clients without a certificate [default: false]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    tls_fail_if_no_peer_cert: Option<bool>,
    /// RabbitMQ definitions JSON (users, vhosts, permissions, exchanges, queues, bindings)
    /// imported at start-up, before clients are accepted
    #[arg(long, value_name = "FILE")]
    load_definitions: Option<PathBuf>,
    /// Debugging: time sampled ringmq-perf messages at each stage (publish parsed, mesh send,
    /// flush, receive, enqueued, delivery encoded, socket written); logged per shard at shutdown
    #[arg(long)]
    trace_latency: bool,
    /// Channels one connection may open, offered in connection.tune, 1..=65535 [default: 2047]
    #[arg(long, value_name = "N")]
    channel_max: Option<String>,
    /// Largest frame offered in connection.tune, 4096..=4194304 [default: 131072]
    #[arg(long, value_name = "BYTES")]
    frame_max: Option<String>,
    /// Heartbeat interval suggested in connection.tune (0: none) [default: 60]
    #[arg(long, value_name = "SECONDS")]
    heartbeat: Option<String>,
    /// Time a client has from connecting to connection.open-ok, 100..=600000 [default: 10000]
    #[arg(long, value_name = "MS")]
    handshake_timeout_ms: Option<String>,
    /// A delivery unacknowledged this long closes its channel with 406 (0: never)
    /// [default: 1800000, 30 minutes]
    #[arg(long, value_name = "MS")]
    consumer_timeout_ms: Option<String>,
    /// Client connections on all shards together; past it connection.open is refused with
    /// 530 ("infinity": no limit) [default: infinity]
    #[arg(long, value_name = "N")]
    connection_max: Option<String>,
    /// This node's name in the cluster [default: ringmq@<hostname>]
    #[arg(long, value_name = "NAME")]
    node_name: Option<String>,
    /// Port for inter-node traffic (Raft), on the listen addresses [default: 25672]
    #[arg(long, value_name = "N")]
    cluster_port: Option<String>,
    /// Another member of the cluster, NAME=HOST:PORT (repeatable; file: cluster.peers). None:
    /// a cluster of one
    #[arg(long = "peer", value_name = "NAME=HOST:PORT")]
    peers: Vec<String>,
    /// The secret every member shares (RabbitMQ's Erlang cookie); required with --peer
    #[arg(long, value_name = "SECRET")]
    cluster_secret: Option<String>,
    /// Tests: a quorum group's log is compacted past this many bytes [default: 64 MiB]
    #[arg(long, value_name = "BYTES", hide = true)]
    quorum_compact_bytes: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileValues {
    port: Option<i64>,
    listen: Option<Vec<String>>,
    management_port: Option<i64>,
    management_listen: Option<Vec<String>>,
    prometheus_port: Option<i64>,
    management_tls_port: Option<i64>,
    shards: Option<i64>,
    pin: Option<String>,
    data_dir: Option<PathBuf>,
    log_level: Option<String>,
    log_format: Option<String>,
    spin_us: Option<i64>,
    spin_mode: Option<String>,
    queue_memory_bytes: Option<i64>,
    max_message_bytes: Option<i64>,
    /// A number (0.4, or bytes) or a string ("1GiB").
    memory_high_watermark: Option<toml::Value>,
    disk_free_limit: Option<toml::Value>,
    default_user: Option<String>,
    default_pass: Option<String>,
    loopback_users: Option<Vec<String>>,
    tls_port: Option<i64>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_ca: Option<PathBuf>,
    tls_verify_peer: Option<bool>,
    tls_fail_if_no_peer_cert: Option<bool>,
    load_definitions: Option<PathBuf>,
    channel_max: Option<i64>,
    frame_max: Option<i64>,
    heartbeat: Option<i64>,
    handshake_timeout_ms: Option<i64>,
    consumer_timeout_ms: Option<i64>,
    connection_max: Option<toml::Value>,
    cluster: Option<cluster::ClusterFile>,
}

impl Config {
    /// Parses the process's own arguments.
    pub fn load_from_args() -> Result<Config, ConfigError> {
        Config::load(std::env::args_os())
    }

    /// `args` includes the program name first, as `std::env::args_os()` does.
    pub fn load<I, T>(args: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Config::load_with_cores(args, cores)
    }

    fn load_with_cores<I, T>(args: I, cores: usize) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let flags = Flags::try_parse_from(args)?;
        let file = match &flags.config {
            Some(path) => read_file(path)?,
            None => FileValues::default(),
        };
        resolve(flags, file, cores)
    }
}

fn read_file(path: &Path) -> Result<FileValues, ConfigError> {
    let read_error = |source| ConfigError::FileRead {
        path: path.to_owned(),
        source,
    };
    let size_bytes = std::fs::metadata(path).map_err(read_error)?.len();
    if size_bytes > CONFIG_FILE_SIZE_MAX_BYTES {
        return Err(ConfigError::FileTooLarge {
            path: path.to_owned(),
            size_bytes,
            max_bytes: CONFIG_FILE_SIZE_MAX_BYTES,
        });
    }
    let text = std::fs::read_to_string(path).map_err(read_error)?;
    parse_file(path, &text)
}

fn parse_file(path: &Path, text: &str) -> Result<FileValues, ConfigError> {
    toml::from_str(text).map_err(|source| ConfigError::FileParse {
        path: path.to_owned(),
        source,
    })
}

fn resolve(mut flags: Flags, mut file: FileValues, cores: usize) -> Result<Config, ConfigError> {
    let tls_port = match (flags.tls_port.take(), file.tls_port.take()) {
        (Some(v), _) => Some((v, Origin::Flag)),
        (None, Some(v)) => Some((v.to_string(), Origin::File)),
        (None, None) => None,
    };
    let tls_choices = TlsChoices {
        port: tls_port,
        cert: flags.tls_cert.take().or(file.tls_cert.take()),
        key: flags.tls_key.take().or(file.tls_key.take()),
        ca: flags.tls_ca.take().or(file.tls_ca.take()),
        verify_peer: flags.tls_verify_peer.or(file.tls_verify_peer),
        fail_if_no_peer_cert: flags
            .tls_fail_if_no_peer_cert
            .or(file.tls_fail_if_no_peer_cert),
    };
    let connection_limits = resolve_connection_limits(&mut flags, &mut file)?;
    let pin = match (flags.pin, file.pin) {
        (Some(v), _) => parse_pin(&v, Origin::Flag)?,
        (None, Some(v)) => parse_pin(&v, Origin::File)?,
        (None, None) => Pin::Cores,
    };
    let cores = cores.clamp(1, SHARDS_MAX);
    let shards_max = match pin {
        Pin::Cores => cores,
        Pin::None => SHARDS_MAX,
    };
    let port = match (flags.port, file.port) {
        (Some(v), _) => parse_port(&v, Origin::Flag)?,
        (None, Some(v)) => parse_port(&v.to_string(), Origin::File)?,
        (None, None) => PORT_DEFAULT,
    };
    let shards = match (flags.shards, file.shards) {
        (Some(v), _) => parse_shards(&v, Origin::Flag, shards_max)?,
        (None, Some(v)) => parse_shards(&v.to_string(), Origin::File, shards_max)?,
        (None, None) => default_shards(cores),
    };
    let listen = match (flags.listen.is_empty(), file.listen) {
        (false, _) => parse_listen(&flags.listen, Origin::Flag)?,
        (true, Some(v)) => parse_listen(&v, Origin::File)?,
        (true, None) => vec![
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ],
    };
    let management_port = match (flags.management_port, file.management_port) {
        (Some(v), _) => parse_port_or_off(&v, Origin::Flag)?,
        (None, Some(v)) => parse_port_or_off(&v.to_string(), Origin::File)?,
        (None, None) => MANAGEMENT_PORT_DEFAULT,
    };
    let prometheus_port = match (flags.prometheus_port, file.prometheus_port) {
        (Some(v), _) => parse_port_or_off(&v, Origin::Flag)?,
        (None, Some(v)) => parse_port_or_off(&v.to_string(), Origin::File)?,
        (None, None) => PROMETHEUS_PORT_DEFAULT,
    };
    let management_tls_port = match (flags.management_tls_port, file.management_tls_port) {
        (Some(v), _) => parse_port_or_off(&v, Origin::Flag)?,
        (None, Some(v)) => parse_port_or_off(&v.to_string(), Origin::File)?,
        (None, None) => 0,
    };
    let management_listen = match (flags.management_listen.is_empty(), file.management_listen) {
        (false, _) => parse_listen(&flags.management_listen, Origin::Flag)?,
        (true, Some(v)) => parse_listen(&v, Origin::File)?,
        (true, None) => listen.clone(),
    };
    let log_level = match (flags.log_level, file.log_level) {
        (Some(v), _) => parse_log_level(v, Origin::Flag)?,
        (None, Some(v)) => parse_log_level(v, Origin::File)?,
        (None, None) => LOG_LEVEL_DEFAULT.to_owned(),
    };
    let log_format = match (flags.log_format, file.log_format) {
        (Some(v), _) => parse_log_format(v, Origin::Flag)?,
        (None, Some(v)) => parse_log_format(v, Origin::File)?,
        (None, None) => LogFormat::default(),
    };
    let data_dir = match (flags.data_dir, file.data_dir) {
        (Some(v), _) => check_data_dir(v, Origin::Flag)?,
        (None, Some(v)) => check_data_dir(v, Origin::File)?,
        (None, None) => PathBuf::from(DATA_DIR_DEFAULT),
    };
    let spin_micros = match (flags.spin_us, file.spin_us) {
        (Some(v), _) => parse_spin(&v, Origin::Flag)?,
        (None, Some(v)) => parse_spin(&v.to_string(), Origin::File)?,
        (None, None) => SPIN_MICROS_DEFAULT,
    };
    let spin_mode = match (flags.spin_mode, file.spin_mode) {
        (Some(v), _) => parse_spin_mode(v, Origin::Flag)?,
        (None, Some(v)) => parse_spin_mode(v, Origin::File)?,
        (None, None) => SpinMode::default(),
    };
    let queue_memory_bytes = match (flags.queue_memory_bytes, file.queue_memory_bytes) {
        (Some(v), _) => parse_queue_memory(&v, Origin::Flag)?,
        (None, Some(v)) => parse_queue_memory(&v.to_string(), Origin::File)?,
        (None, None) => QUEUE_MEMORY_BYTES_DEFAULT,
    };
    let max_message_bytes = match (flags.max_message_bytes, file.max_message_bytes) {
        (Some(v), _) => parse_max_message(&v, Origin::Flag)?,
        (None, Some(v)) => parse_max_message(&v.to_string(), Origin::File)?,
        (None, None) => MESSAGE_SIZE_DEFAULT_BYTES,
    };
    let memory_high_watermark = match (flags.memory_high_watermark, file.memory_high_watermark) {
        (Some(v), _) => parse_watermark(&v, Origin::Flag)?,
        (None, Some(v)) => parse_watermark(&toml_scalar_text(&v), Origin::File)?,
        (None, None) => MEMORY_HIGH_WATERMARK_DEFAULT,
    };
    let disk_free_limit = match (flags.disk_free_limit, file.disk_free_limit) {
        (Some(v), _) => parse_disk_limit(&v, Origin::Flag)?,
        (None, Some(v)) => parse_disk_limit(&toml_scalar_text(&v), Origin::File)?,
        (None, None) => DiskFreeLimit(DISK_FREE_LIMIT_DEFAULT_BYTES),
    };
    let default_user = match (flags.default_user, file.default_user) {
        (Some(v), _) => check_access_name(v, "default-user", Origin::Flag)?,
        (None, Some(v)) => check_access_name(v, "default_user", Origin::File)?,
        (None, None) => DEFAULT_USER_DEFAULT.to_owned(),
    };
    let default_pass = Secret(
        flags
            .default_pass
            .or(file.default_pass)
            .unwrap_or_else(|| DEFAULT_PASS_DEFAULT.to_owned()),
    );
    let loopback_users = match (flags.loopback_users, file.loopback_users) {
        (Some(v), _) if v.trim() == "none" => Vec::new(),
        (Some(v), _) => v
            .split(',')
            .map(|name| check_access_name(name.trim().to_owned(), "loopback-users", Origin::Flag))
            .collect::<Result<_, _>>()?,
        (None, Some(v)) => v
            .into_iter()
            .map(|name| check_access_name(name, "loopback_users", Origin::File))
            .collect::<Result<_, _>>()?,
        (None, None) => vec![DEFAULT_USER_DEFAULT.to_owned()],
    };
    let tls = resolve_tls(tls_choices, port)?;
    if management_tls_port != 0 && tls.is_none() {
        return Err(ConfigError::Tls(
            "management-tls-port needs a certificate and a key (tls-cert and tls-key)",
        ));
    }
    if management_tls_port != 0 && management_tls_port == management_port {
        return Err(ConfigError::Tls(
            "management-tls-port must differ from management-port",
        ));
    }
    let cluster_flags = cluster::ClusterFlags {
        node_name: flags.node_name,
        port: flags.cluster_port,
        peers: flags.peers,
        secret: flags.cluster_secret,
        quorum_compact_bytes: flags.quorum_compact_bytes,
    };
    let cluster = cluster::resolve(cluster_flags, file.cluster)?;
    Ok(Config {
        port,
        listen,
        management_port,
        management_listen,
        prometheus_port,
        management_tls_port,
        shards,
        pin,
        data_dir,
        log_level,
        log_format,
        spin_before_park: std::time::Duration::from_micros(spin_micros),
        spin_mode,
        queue_memory_bytes,
        max_message_bytes,
        memory_high_watermark,
        disk_free_limit,
        default_user,
        default_pass,
        loopback_users,
        tls,
        load_definitions: flags.load_definitions.or(file.load_definitions),
        trace_latency: flags.trace_latency,
        connection_limits,
        cluster,
    })
}

/// A flag's value, else the file's (as text, so both take one validation path).
fn chosen(flag: Option<String>, file: Option<String>) -> Option<(String, Origin)> {
    match (flag, file) {
        (Some(v), _) => Some((v, Origin::Flag)),
        (None, Some(v)) => Some((v, Origin::File)),
        (None, None) => None,
    }
}

/// An integer in `min..=max`, or `ConfigError::Limit` naming the range.
fn parse_in_range(
    name: &'static str,
    (value, origin): (String, Origin),
    min: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    match value.trim().parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(ConfigError::Limit {
            name,
            value,
            origin,
            expected: format!("a number in {min}..={max}"),
        }),
    }
}

fn resolve_connection_limits(
    flags: &mut Flags,
    file: &mut FileValues,
) -> Result<ConnectionLimits, ConfigError> {
    let mut limits = ConnectionLimits::default();
    let text = |v: Option<i64>| v.map(|n| n.to_string());
    if let Some(v) = chosen(flags.channel_max.take(), text(file.channel_max)) {
        limits.channel_max = parse_in_range("channel-max", v, 1, u64::from(u16::MAX))? as u16;
    }
    if let Some(v) = chosen(flags.frame_max.take(), text(file.frame_max)) {
        let range = (
            u64::from(FRAME_MIN_SIZE),
            u64::from(FRAME_MAX_CONFIG_MAX_BYTES),
        );
        limits.frame_max_bytes = parse_in_range("frame-max", v, range.0, range.1)? as u32;
    }
    if let Some(v) = chosen(flags.heartbeat.take(), text(file.heartbeat)) {
        limits.heartbeat_seconds = parse_in_range("heartbeat", v, 0, u64::from(u16::MAX))? as u16;
    }
    if let Some(v) = chosen(
        flags.handshake_timeout_ms.take(),
        text(file.handshake_timeout_ms),
    ) {
        let ms = parse_in_range(
            "handshake-timeout-ms",
            v,
            HANDSHAKE_TIMEOUT_MS_MIN,
            HANDSHAKE_TIMEOUT_MS_MAX,
        )?;
        limits.handshake_timeout = std::time::Duration::from_millis(ms);
    }
    if let Some(v) = chosen(
        flags.consumer_timeout_ms.take(),
        text(file.consumer_timeout_ms),
    ) {
        let ms = parse_in_range("consumer-timeout-ms", v, 0, CONSUMER_TIMEOUT_MS_MAX)?;
        limits.consumer_timeout = (ms > 0).then(|| std::time::Duration::from_millis(ms));
    }
    let file_connection_max = file.connection_max.take().map(|v| match v {
        toml::Value::String(s) => s,
        other => other.to_string(),
    });
    if let Some((value, origin)) = chosen(flags.connection_max.take(), file_connection_max) {
        limits.connection_max = if value.trim() == "infinity" {
            None
        } else {
            Some(parse_in_range(
                "connection-max",
                (value, origin),
                1,
                CONNECTIONS_TOTAL_MAX,
            )?)
        };
    }
    Ok(limits)
}

/// The TLS values from wherever they came, before they are checked together.
struct TlsChoices {
    port: Option<(String, Origin)>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    ca: Option<PathBuf>,
    verify_peer: Option<bool>,
    fail_if_no_peer_cert: Option<bool>,
}

fn resolve_tls(choices: TlsChoices, amqp_port: u16) -> Result<Option<TlsConfig>, ConfigError> {
    let verify_peer = choices.verify_peer.unwrap_or(false);
    let fail_if_no_peer_cert = choices.fail_if_no_peer_cert.unwrap_or(false);
    let (cert, key) = match (choices.cert, choices.key) {
        (Some(cert), Some(key)) => (cert, key),
        (None, None) => {
            let tls_asked = choices.port.is_some()
                || choices.ca.is_some()
                || verify_peer
                || fail_if_no_peer_cert;
            if tls_asked {
                return Err(ConfigError::Tls(
                    "TLS needs a certificate and a key (tls-cert and tls-key)",
                ));
            }
            return Ok(None);
        }
        _ => {
            return Err(ConfigError::Tls(
                "tls-cert and tls-key go together: give both or neither",
            ))
        }
    };
    let port = match choices.port {
        Some((value, origin)) => match parse_port(&value, origin) {
            Ok(port) if port != amqp_port => port,
            _ => return Err(ConfigError::TlsPort { value, origin }),
        },
        None if amqp_port == TLS_PORT_DEFAULT => {
            return Err(ConfigError::TlsPort {
                value: TLS_PORT_DEFAULT.to_string(),
                origin: Origin::Flag,
            })
        }
        None => TLS_PORT_DEFAULT,
    };
    if verify_peer && choices.ca.is_none() {
        return Err(ConfigError::Tls(
            "tls-verify-peer needs tls-ca, the CAs to check client certificates against",
        ));
    }
    if fail_if_no_peer_cert && !verify_peer {
        return Err(ConfigError::Tls(
            "tls-fail-if-no-peer-cert needs tls-verify-peer (no certificate is asked for without it)",
        ));
    }
    Ok(Some(TlsConfig {
        port,
        cert,
        key,
        ca: choices.ca,
        verify_peer,
        fail_if_no_peer_cert,
    }))
}

fn check_access_name(
    name: String,
    what: &'static str,
    origin: Origin,
) -> Result<String, ConfigError> {
    if name.is_empty() || name.len() > ACCESS_NAME_LENGTH_MAX {
        return Err(ConfigError::AccessName { what, origin });
    }
    Ok(name)
}

fn parse_max_message(value: &str, origin: Origin) -> Result<u64, ConfigError> {
    match value.trim().parse::<u64>() {
        Ok(bytes) if (MESSAGE_SIZE_MIN_BYTES..=MESSAGE_SIZE_MAX_BYTES).contains(&bytes) => {
            Ok(bytes)
        }
        _ => Err(ConfigError::MaxMessage {
            value: value.to_owned(),
            origin,
        }),
    }
}

fn parse_watermark(value: &str, origin: Origin) -> Result<MemoryWatermark, ConfigError> {
    parse_memory_watermark(value).ok_or_else(|| ConfigError::MemoryWatermark {
        value: value.to_owned(),
        origin,
    })
}

fn parse_disk_limit(value: &str, origin: Origin) -> Result<DiskFreeLimit, ConfigError> {
    parse_disk_free_limit(value).ok_or_else(|| ConfigError::DiskFreeLimit {
        value: value.to_owned(),
        origin,
    })
}

/// A file value as the flag's text: `0.4`, `1073741824` and `"1GiB"` all read as written (a
/// float keeps its decimal point, so it stays a fraction).
fn toml_scalar_text(value: &toml::Value) -> String {
    match value {
        toml::Value::String(text) => text.clone(),
        toml::Value::Float(share) => format!("{share:?}"),
        other => other.to_string(),
    }
}

fn parse_queue_memory(value: &str, origin: Origin) -> Result<u64, ConfigError> {
    value
        .trim()
        .parse::<u64>()
        .map_err(|_| ConfigError::QueueMemory {
            value: value.to_owned(),
            origin,
        })
}

fn parse_spin(value: &str, origin: Origin) -> Result<u64, ConfigError> {
    match value.trim().parse::<u64>() {
        Ok(micros) if micros <= SPIN_MICROS_MAX => Ok(micros),
        _ => Err(ConfigError::Spin {
            value: value.to_owned(),
            origin,
        }),
    }
}

fn parse_port(value: &str, origin: Origin) -> Result<u16, ConfigError> {
    match value.trim().parse::<u16>() {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(ConfigError::Port {
            value: value.to_owned(),
            origin,
        }),
    }
}

/// A port where 0 means "off" (the management listener).
fn parse_port_or_off(value: &str, origin: Origin) -> Result<u16, ConfigError> {
    match value.trim().parse::<u16>() {
        Ok(0) => Ok(0),
        _ => parse_port(value, origin),
    }
}

fn parse_pin(value: &str, origin: Origin) -> Result<Pin, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "cores" => Ok(Pin::Cores),
        "none" => Ok(Pin::None),
        _ => Err(ConfigError::Pin {
            value: value.to_owned(),
            origin,
        }),
    }
}

fn parse_shards(value: &str, origin: Origin, max: usize) -> Result<usize, ConfigError> {
    match value.trim().parse::<usize>() {
        Ok(shards) if (1..=max).contains(&shards) => Ok(shards),
        _ => Err(ConfigError::Shards {
            value: value.to_owned(),
            origin,
            max,
        }),
    }
}

fn parse_listen(values: &[String], origin: Origin) -> Result<Vec<IpAddr>, ConfigError> {
    if values.is_empty() || values.len() > LISTEN_ADDRESSES_MAX {
        return Err(ConfigError::ListenCount {
            count: values.len(),
            origin,
        });
    }
    let mut addresses = Vec::with_capacity(values.len());
    for value in values {
        // Accept the bracketed form people copy from URLs ("[::1]").
        let bare = value
            .trim()
            .strip_prefix('[')
            .and_then(|v| v.strip_suffix(']'))
            .unwrap_or(value.trim());
        let address = bare.parse::<IpAddr>().map_err(|_| ConfigError::Listen {
            value: value.clone(),
            origin,
        })?;
        // A duplicate would make the second bind fail with a confusing EADDRINUSE.
        if !addresses.contains(&address) {
            addresses.push(address);
        }
    }
    Ok(addresses)
}

fn parse_log_level(value: String, origin: Origin) -> Result<String, ConfigError> {
    let lower = value.trim().to_ascii_lowercase();
    if LOG_LEVELS.contains(&lower.as_str()) {
        Ok(lower)
    } else {
        Err(ConfigError::LogLevel { value, origin })
    }
}

fn parse_log_format(value: String, origin: Origin) -> Result<LogFormat, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err(ConfigError::LogFormat { value, origin }),
    }
}

fn parse_spin_mode(value: String, origin: Origin) -> Result<SpinMode, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "fixed" => Ok(SpinMode::Fixed),
        "adaptive" => Ok(SpinMode::Adaptive),
        _ => Err(ConfigError::SpinMode { value, origin }),
    }
}

fn check_data_dir(value: PathBuf, origin: Origin) -> Result<PathBuf, ConfigError> {
    if value.as_os_str().is_empty() {
        Err(ConfigError::DataDirEmpty { origin })
    } else {
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CORES: usize = 4;

    fn load(args: &[&str]) -> Result<Config, ConfigError> {
        let mut all = vec!["ringmq"];
        all.extend_from_slice(args);
        Config::load_with_cores(all, CORES)
    }

    fn load_file(text: &str, args: &[&str]) -> Result<Config, ConfigError> {
        let file = parse_file(Path::new("test.toml"), text)?;
        let mut all = vec!["ringmq"];
        all.extend_from_slice(args);
        resolve(Flags::try_parse_from(all)?, file, CORES)
    }

    #[test]
    fn defaults() {
        let config = load(&[]).unwrap();
        assert_eq!(config.port, 5672);
        assert_eq!(
            config.listen,
            vec![
                "127.0.0.1".parse::<IpAddr>().unwrap(),
                "::1".parse().unwrap()
            ]
        );
        assert_eq!(config.shards, default_shards(CORES));
        assert_eq!(config.data_dir, PathBuf::from("./data"));
        assert_eq!(config.log_level, "info");
    }

    #[test]
    fn flags() {
        let config = load(&[
            "--port",
            "5673",
            "--listen",
            "0.0.0.0",
            "--listen",
            "[::]",
            "--shards",
            "2",
            "--data-dir",
            "/tmp/x",
            "--log-level",
            "DEBUG",
        ])
        .unwrap();
        assert_eq!(config.port, 5673);
        assert_eq!(
            config.listen,
            vec!["0.0.0.0".parse::<IpAddr>().unwrap(), "::".parse().unwrap()]
        );
        assert_eq!(config.shards, 2);
        assert_eq!(config.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(config.log_level, "debug");
    }

    #[test]
    fn file_values_and_flags_override_them() {
        let text = r#"
            port = 6000
            listen = ["10.0.0.1"]
            shards = 3
            data_dir = "/var/lib/ringmq"
            log_level = "warn"
        "#;
        let from_file = load_file(text, &[]).unwrap();
        assert_eq!(from_file.port, 6000);
        assert_eq!(
            from_file.listen,
            vec!["10.0.0.1".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(from_file.shards, 3);
        assert_eq!(from_file.data_dir, PathBuf::from("/var/lib/ringmq"));
        assert_eq!(from_file.log_level, "warn");

        let overridden = load_file(text, &["--port", "7000", "--listen", "::1"]).unwrap();
        assert_eq!(overridden.port, 7000);
        assert_eq!(overridden.listen, vec!["::1".parse::<IpAddr>().unwrap()]);
        assert_eq!(overridden.shards, 3);
    }

    #[test]
    fn duplicate_listen_addresses_collapse() {
        let config = load(&["--listen", "127.0.0.1", "--listen", "127.0.0.1"]).unwrap();
        assert_eq!(config.listen.len(), 1);
    }

    #[test]
    fn port_zero_refused() {
        let err = load(&["--port", "0"]).unwrap_err();
        assert!(matches!(
            err,
            ConfigError::Port {
                origin: Origin::Flag,
                ..
            }
        ));
        assert!(err.to_string().contains("1..=65535"), "{err}");
    }

    #[test]
    fn port_out_of_range_or_garbage_refused() {
        assert!(matches!(
            load(&["--port", "65536"]),
            Err(ConfigError::Port { .. })
        ));
        assert!(matches!(
            load(&["--port", "abc"]),
            Err(ConfigError::Port { .. })
        ));
        assert!(matches!(
            load_file("port = -1", &[]),
            Err(ConfigError::Port {
                origin: Origin::File,
                ..
            })
        ));
    }

    #[test]
    fn shards_zero_refused() {
        let err = load(&["--shards", "0"]).unwrap_err();
        assert!(matches!(err, ConfigError::Shards { max: CORES, .. }));
        assert!(err.to_string().contains("1..=4"), "{err}");
    }

    #[test]
    fn shards_more_than_cores_refused() {
        assert!(matches!(
            load(&["--shards", "5"]),
            Err(ConfigError::Shards { .. })
        ));
        assert!(matches!(
            load_file("shards = 100", &[]),
            Err(ConfigError::Shards {
                origin: Origin::File,
                ..
            })
        ));
        assert!(matches!(
            load(&["--shards", "x"]),
            Err(ConfigError::Shards { .. })
        ));
    }

    #[test]
    fn shards_capped_by_hard_max_on_big_machines() {
        let config = Config::load_with_cores(["ringmq"], 1000).unwrap();
        assert_eq!(config.shards, default_shards(SHARDS_MAX));
        let config = Config::load_with_cores(["ringmq", "--shards", "256"], 1000).unwrap();
        assert_eq!(config.shards, SHARDS_MAX);
    }

    #[test]
    fn the_default_leaves_cores_free_for_the_kernel_and_the_clients() {
        let by_cores: Vec<(usize, usize)> = [1, 2, 3, 4, 8, 16, 17, 64, 256]
            .into_iter()
            .map(|cores| (cores, default_shards(cores)))
            .collect();
        assert_eq!(
            by_cores,
            [
                (1, 1),
                (2, 1),
                (3, 2),
                (4, 3),
                (8, 7),
                (16, 15),
                (17, 15),
                (64, 60),
                (256, 240)
            ]
        );
        // Every core stays reachable with --shards.
        let config = Config::load_with_cores(["ringmq", "--shards", "2"], 2).unwrap();
        assert_eq!(config.shards, 2);
    }

    #[test]
    fn bad_log_level_refused() {
        let err = load(&["--log-level", "verbose"]).unwrap_err();
        assert!(matches!(err, ConfigError::LogLevel { .. }));
        assert!(err.to_string().contains("error, warn, info, debug, trace"));
        assert!(matches!(
            load_file("log_level = \"loud\"", &[]),
            Err(ConfigError::LogLevel {
                origin: Origin::File,
                ..
            })
        ));
    }

    #[test]
    fn log_format_from_flag_or_file() {
        assert_eq!(load(&[]).unwrap().log_format, LogFormat::Text);
        assert_eq!(
            load(&["--log-format", "JSON"]).unwrap().log_format,
            LogFormat::Json
        );
        let from_file = load_file("log_format = \"json\"", &[]).unwrap();
        assert_eq!(from_file.log_format, LogFormat::Json);
        let overridden = load_file("log_format = \"json\"", &["--log-format", "text"]).unwrap();
        assert_eq!(overridden.log_format, LogFormat::Text);
        let err = load(&["--log-format", "yaml"]).unwrap_err();
        assert!(matches!(err, ConfigError::LogFormat { .. }));
        assert!(err.to_string().contains("text or json"));
        assert!(matches!(
            load_file("log_format = \"logfmt\"", &[]),
            Err(ConfigError::LogFormat {
                origin: Origin::File,
                ..
            })
        ));
    }

    #[test]
    fn bad_listen_refused() {
        let err = load(&["--listen", "localhost"]).unwrap_err();
        assert!(matches!(err, ConfigError::Listen { .. }));
        assert!(matches!(
            load(&["--listen", "127.0.0.1:5672"]),
            Err(ConfigError::Listen { .. })
        ));
        assert!(matches!(
            load_file("listen = []", &[]),
            Err(ConfigError::ListenCount { count: 0, .. })
        ));
        let many: Vec<String> = (0..=LISTEN_ADDRESSES_MAX)
            .map(|i| format!("\"10.0.0.{i}\""))
            .collect();
        assert!(matches!(
            load_file(&format!("listen = [{}]", many.join(",")), &[]),
            Err(ConfigError::ListenCount { .. })
        ));
    }

    #[test]
    fn unknown_file_key_refused() {
        let err = load_file("prot = 5672", &[]).unwrap_err();
        assert!(matches!(err, ConfigError::FileParse { .. }));
        assert!(err.to_string().contains("prot"), "{err}");
    }

    #[test]
    fn wrong_file_type_or_syntax_refused() {
        assert!(matches!(
            load_file("port = \"5672\"", &[]),
            Err(ConfigError::FileParse { .. })
        ));
        assert!(matches!(
            load_file("port = ", &[]),
            Err(ConfigError::FileParse { .. })
        ));
    }

    #[test]
    fn empty_data_dir_refused() {
        assert!(matches!(
            load_file("data_dir = \"\"", &[]),
            Err(ConfigError::DataDirEmpty { .. })
        ));
    }

    #[test]
    fn missing_file_refused() {
        let err = load(&["--config", "/nonexistent/ringmq.toml"]).unwrap_err();
        assert!(matches!(err, ConfigError::FileRead { .. }));
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn unknown_flag_refused_help_is_not_an_error_exit() {
        let err = load(&["--prot", "1"]).unwrap_err();
        assert!(matches!(err, ConfigError::Cli(_)));
        assert_eq!(err.exit_code(), 2);
        assert_eq!(load(&["--help"]).unwrap_err().exit_code(), 0);
    }
}

#[cfg(test)]
mod spin_tests {
    use super::*;

    #[test]
    fn spin_defaults_and_bounds() {
        let config = Config::load_with_cores(["ringmq"], 2).expect("defaults");
        assert_eq!(
            config.spin_before_park,
            std::time::Duration::from_micros(SPIN_MICROS_DEFAULT)
        );
        let config = Config::load_with_cores(["ringmq", "--spin-us", "0"], 2).expect("zero");
        assert_eq!(config.spin_before_park, std::time::Duration::ZERO);
        for bad in ["--spin-us=-1", "--spin-us=abc", "--spin-us=10001"] {
            let error = Config::load_with_cores(["ringmq", bad], 2).unwrap_err();
            assert!(matches!(error, ConfigError::Spin { .. }), "{bad}: {error}");
        }
        assert_eq!(config.spin_mode, SpinMode::Fixed);
        let adaptive = ["ringmq", "--spin-mode", "Adaptive"];
        let config = Config::load_with_cores(adaptive, 2).expect("adaptive");
        assert_eq!(config.spin_mode, SpinMode::Adaptive);
        let error = Config::load_with_cores(["ringmq", "--spin-mode", "always"], 2).unwrap_err();
        assert!(matches!(error, ConfigError::SpinMode { .. }), "{error}");
    }
}

#[cfg(test)]
mod queue_memory_tests {
    use super::*;

    #[test]
    fn queue_memory_defaults_and_parses() {
        let config = Config::load_with_cores(["ringmq"], 2).expect("defaults");
        assert_eq!(config.queue_memory_bytes, QUEUE_MEMORY_BYTES_DEFAULT);
        let config = Config::load_with_cores(["ringmq", "--queue-memory-bytes", "65536"], 2)
            .expect("small budget");
        assert_eq!(config.queue_memory_bytes, 65536);
        for bad in ["--queue-memory-bytes=-1", "--queue-memory-bytes=1k"] {
            let error = Config::load_with_cores(["ringmq", bad], 2).unwrap_err();
            assert!(
                matches!(error, ConfigError::QueueMemory { .. }),
                "{bad}: {error}"
            );
        }
    }
}

#[cfg(test)]
mod max_message_tests {
    use super::*;

    #[test]
    fn max_message_defaults_bounds_and_file_key() {
        let config = Config::load_with_cores(["ringmq"], 2).expect("defaults");
        assert_eq!(config.max_message_bytes, 134_217_728);
        for good in ["1024", "536870912"] {
            let config = Config::load_with_cores(["ringmq", "--max-message-bytes", good], 2)
                .expect("in range");
            assert_eq!(config.max_message_bytes.to_string(), good);
        }
        for bad in ["1023", "536870913", "-1", "1m"] {
            let flag = format!("--max-message-bytes={bad}");
            let error = Config::load_with_cores(["ringmq", flag.as_str()], 2).unwrap_err();
            assert!(
                matches!(error, ConfigError::MaxMessage { .. }),
                "{bad}: {error}"
            );
            assert_eq!(error.exit_code(), 2);
        }
        let file = parse_file(Path::new("x.toml"), "max_message_bytes = 1048576").expect("file");
        let config = resolve(Flags::try_parse_from(["ringmq"]).expect("flags"), file, 2)
            .expect("file value");
        assert_eq!(config.max_message_bytes, 1_048_576);
        let file = parse_file(Path::new("x.toml"), "max_message_bytes = 100").expect("file");
        let error =
            resolve(Flags::try_parse_from(["ringmq"]).expect("flags"), file, 2).unwrap_err();
        assert!(matches!(
            error,
            ConfigError::MaxMessage {
                origin: Origin::File,
                ..
            }
        ));
    }
}

#[cfg(test)]
mod alarm_tests {
    use super::*;

    fn from_file(text: &str) -> Result<Config, ConfigError> {
        let file = parse_file(Path::new("x.toml"), text).expect("file");
        resolve(Flags::try_parse_from(["ringmq"]).expect("flags"), file, 2)
    }

    #[test]
    fn watermark_and_disk_limit_default_as_rabbitmq_and_parse_from_flags_and_file() {
        let config = Config::load_with_cores(["ringmq"], 2).expect("defaults");
        assert_eq!(config.memory_high_watermark, MemoryWatermark::Fraction(0.4));
        assert_eq!(config.disk_free_limit, DiskFreeLimit(50_000_000));
        let config = Config::load_with_cores(
            [
                "ringmq",
                "--memory-high-watermark",
                "1GiB",
                "--disk-free-limit",
                "2GB",
            ],
            2,
        )
        .expect("flags");
        assert_eq!(
            config.memory_high_watermark,
            MemoryWatermark::Absolute(1 << 30)
        );
        assert_eq!(config.disk_free_limit, DiskFreeLimit(2_000_000_000));
        let config =
            from_file("memory_high_watermark = 0.5\ndisk_free_limit = \"1GiB\"").expect("file");
        assert_eq!(config.memory_high_watermark, MemoryWatermark::Fraction(0.5));
        assert_eq!(config.disk_free_limit, DiskFreeLimit(1 << 30));
        let config = from_file("memory_high_watermark = 1073741824").expect("bytes in a file");
        assert_eq!(
            config.memory_high_watermark,
            MemoryWatermark::Absolute(1 << 30)
        );
    }

    #[test]
    fn bad_watermarks_and_limits_are_refused_with_their_origin() {
        for bad in ["1.5", "lots", "-1"] {
            let flag = format!("--memory-high-watermark={bad}");
            let error = Config::load_with_cores(["ringmq", flag.as_str()], 2).unwrap_err();
            assert!(
                matches!(error, ConfigError::MemoryWatermark { .. }),
                "{bad}: {error}"
            );
        }
        let error = Config::load_with_cores(["ringmq", "--disk-free-limit=0.5"], 2).unwrap_err();
        assert!(
            matches!(error, ConfigError::DiskFreeLimit { .. }),
            "{error}"
        );
        let error = from_file("memory_high_watermark = 2.0").unwrap_err();
        assert!(matches!(
            error,
            ConfigError::MemoryWatermark {
                origin: Origin::File,
                ..
            }
        ));
    }
}

#[cfg(test)]
mod pin_tests {
    use super::*;

    const CORES: usize = 2;

    fn load(args: &[&str]) -> Result<Config, ConfigError> {
        let mut all = vec!["ringmq"];
        all.extend_from_slice(args);
        Config::load_with_cores(all, CORES)
    }

    #[test]
    fn pinned_by_default_and_capped_by_cores() {
        let config = load(&[]).expect("defaults");
        assert_eq!(config.pin, Pin::Cores);
        assert_eq!(config.shards, default_shards(CORES));
        let error = load(&["--shards", "3"]).unwrap_err();
        assert!(
            matches!(error, ConfigError::Shards { max: CORES, .. }),
            "{error}"
        );
        let error = load(&["--pin", "cores", "--shards", "80"]).unwrap_err();
        assert!(
            matches!(error, ConfigError::Shards { max: CORES, .. }),
            "{error}"
        );
    }

    #[test]
    fn unpinned_shards_may_exceed_cores_up_to_the_hard_max() {
        let config = load(&["--pin", "none", "--shards", "80"]).expect("80 unpinned");
        assert_eq!((config.pin, config.shards), (Pin::None, 80));
        let config = load(&["--pin", "NONE"]).expect("default count");
        assert_eq!(
            (config.pin, config.shards),
            (Pin::None, default_shards(CORES))
        );
        let config = load(&["--pin", "none", "--shards", &SHARDS_MAX.to_string()]).expect("max");
        assert_eq!(config.shards, SHARDS_MAX);
        let too_many = (SHARDS_MAX + 1).to_string();
        let error = load(&["--pin", "none", "--shards", &too_many]).unwrap_err();
        assert!(
            matches!(
                error,
                ConfigError::Shards {
                    max: SHARDS_MAX,
                    ..
                }
            ),
            "{error}"
        );
        assert!(matches!(
            load(&["--pin", "none", "--shards", "0"]),
            Err(ConfigError::Shards { .. })
        ));
    }

    #[test]
    fn pin_from_file_and_flag_overrides_it() {
        let file =
            parse_file(Path::new("test.toml"), "pin = \"none\"\nshards = 80").expect("parse");
        let config = resolve(
            Flags::try_parse_from(["ringmq"]).expect("flags"),
            file,
            CORES,
        )
        .expect("file values");
        assert_eq!((config.pin, config.shards), (Pin::None, 80));

        let file =
            parse_file(Path::new("test.toml"), "pin = \"none\"\nshards = 80").expect("parse");
        let flags = Flags::try_parse_from(["ringmq", "--pin", "cores"]).expect("flags");
        let error = resolve(flags, file, CORES).unwrap_err();
        assert!(
            matches!(
                error,
                ConfigError::Shards {
                    origin: Origin::File,
                    max: CORES,
                    ..
                }
            ),
            "{error}"
        );
    }

    #[test]
    fn bad_pin_refused() {
        let error = load(&["--pin", "numa"]).unwrap_err();
        assert!(
            matches!(
                error,
                ConfigError::Pin {
                    origin: Origin::Flag,
                    ..
                }
            ),
            "{error}"
        );
        assert!(error.to_string().contains("cores or none"), "{error}");
        let file = parse_file(Path::new("test.toml"), "pin = \"sometimes\"").expect("parse");
        let error = resolve(
            Flags::try_parse_from(["ringmq"]).expect("flags"),
            file,
            CORES,
        )
        .unwrap_err();
        assert!(
            matches!(
                error,
                ConfigError::Pin {
                    origin: Origin::File,
                    ..
                }
            ),
            "{error}"
        );
    }

    #[test]
    fn default_user_and_loopback_users() {
        let defaults = resolve(
            Flags::try_parse_from(["ringmq"]).expect("flags"),
            FileValues::default(),
            CORES,
        )
        .expect("defaults");
        assert_eq!(defaults.default_user, "guest");
        assert_eq!(defaults.default_pass.0, "guest");
        assert_eq!(defaults.loopback_users, vec!["guest".to_string()]);

        let flags = Flags::try_parse_from([
            "ringmq",
            "--default-user",
            "admin",
            "--default-pass",
            "s3cret",
            "--loopback-users",
            "none",
        ])
        .expect("flags");
        let config = resolve(flags, FileValues::default(), CORES).expect("flags");
        assert_eq!(config.default_user, "admin");
        assert_eq!(config.default_pass.0, "s3cret");
        assert!(!format!("{config:?}").contains("s3cret"));
        assert!(config.loopback_users.is_empty());

        let file = parse_file(
            Path::new("x.toml"),
            "default_user = \"ops\"\nloopback_users = [\"guest\", \"ops\"]",
        )
        .expect("file");
        let config = resolve(
            Flags::try_parse_from(["ringmq"]).expect("flags"),
            file,
            CORES,
        )
        .expect("file");
        assert_eq!(config.default_user, "ops");
        assert_eq!(
            config.loopback_users,
            vec!["guest".to_string(), "ops".to_string()]
        );

        let flags = Flags::try_parse_from(["ringmq", "--default-user", ""]).expect("flags");
        let error = resolve(flags, FileValues::default(), CORES).unwrap_err();
        assert!(matches!(error, ConfigError::AccessName { .. }), "{error}");
    }

    #[test]
    fn load_definitions_from_flag_or_file() {
        let none = resolve(
            Flags::try_parse_from(["ringmq"]).expect("flags"),
            FileValues::default(),
            CORES,
        )
        .expect("defaults");
        assert_eq!(none.load_definitions, None);
        let file =
            parse_file(Path::new("x.toml"), "load_definitions = \"/etc/d.json\"").expect("file");
        let from_file = resolve(
            Flags::try_parse_from(["ringmq"]).expect("flags"),
            file,
            CORES,
        )
        .expect("file");
        assert_eq!(
            from_file.load_definitions,
            Some(PathBuf::from("/etc/d.json"))
        );
        let file =
            parse_file(Path::new("x.toml"), "load_definitions = \"/etc/d.json\"").expect("file");
        let flags =
            Flags::try_parse_from(["ringmq", "--load-definitions", "/tmp/o.json"]).expect("flags");
        let overridden = resolve(flags, file, CORES).expect("flag");
        assert_eq!(
            overridden.load_definitions,
            Some(PathBuf::from("/tmp/o.json"))
        );
    }
}

#[cfg(test)]
mod tls_tests {
    use super::*;

    fn load(file: &str, args: &[&str]) -> Result<Config, ConfigError> {
        let file = parse_file(Path::new("test.toml"), file)?;
        let mut all = vec!["ringmq"];
        all.extend_from_slice(args);
        resolve(Flags::try_parse_from(all)?, file, 2)
    }

    #[test]
    fn tls_is_off_without_a_certificate_and_on_5671_with_one() {
        assert_eq!(load("", &[]).expect("defaults").tls, None);
        let tls = load("", &["--tls-cert", "c.pem", "--tls-key", "k.pem"])
            .expect("cert and key")
            .tls
            .expect("TLS on");
        assert_eq!(tls.port, TLS_PORT_DEFAULT);
        assert_eq!(tls.cert, PathBuf::from("c.pem"));
        assert!(!tls.verify_peer && !tls.fail_if_no_peer_cert && tls.ca.is_none());
    }

    #[test]
    fn tls_file_keys_and_flags_override_them() {
        let file = "tls_port = 6000\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n\
                    tls_ca = \"ca.pem\"\ntls_verify_peer = true\ntls_fail_if_no_peer_cert = true\n";
        let tls = load(file, &[]).expect("file").tls.expect("TLS on");
        assert_eq!(tls.port, 6000);
        assert_eq!(tls.ca, Some(PathBuf::from("ca.pem")));
        assert!(tls.verify_peer && tls.fail_if_no_peer_cert);
        let tls = load(
            file,
            &["--tls-port", "6001", "--tls-fail-if-no-peer-cert=false"],
        )
        .expect("flags")
        .tls
        .expect("TLS on");
        assert_eq!(tls.port, 6001);
        assert!(tls.verify_peer && !tls.fail_if_no_peer_cert);
    }

    #[test]
    fn incomplete_or_contradictory_tls_settings_are_refused() {
        let refused = |file: &str, args: &[&str]| load(file, args).unwrap_err();
        assert!(matches!(
            refused("", &["--tls-cert", "c.pem"]),
            ConfigError::Tls(_)
        ));
        assert!(matches!(
            refused("", &["--tls-port", "5671"]),
            ConfigError::Tls(_)
        ));
        let pair = ["--tls-cert", "c.pem", "--tls-key", "k.pem"];
        let with = |extra: &[&'static str]| {
            let mut args = pair.to_vec();
            args.extend_from_slice(extra);
            args
        };
        assert!(matches!(
            refused("", &with(&["--tls-verify-peer"])),
            ConfigError::Tls(_)
        ));
        assert!(matches!(
            refused(
                "",
                &with(&["--tls-ca", "ca.pem", "--tls-fail-if-no-peer-cert"])
            ),
            ConfigError::Tls(_)
        ));
        assert!(matches!(
            refused("", &with(&["--tls-port", "5672"])),
            ConfigError::TlsPort { .. }
        ));
        assert!(matches!(
            refused("", &with(&["--tls-port", "0"])),
            ConfigError::TlsPort { .. }
        ));
        assert!(matches!(
            refused("", &with(&["--port", "5671"])),
            ConfigError::TlsPort { .. }
        ));
    }
}
