//! ringmq: an AMQP 0-9-1 broker built thread-per-core on glommio.
//!
//! Layering (each layer depends only on those above it; `tests/it/import_graph.rs` checks the
//! edge between net, session and shard):
//! - `protocol`: sans-IO codec for frames, methods, field tables and properties.
//! - `auth`: password hashes and permission checks (pure).
//! - `broker`: topology (vhosts, exchanges, bindings, queue metadata), routing, queue state.
//! - `storage`: per-shard write-ahead log.
//! - `latency_trace`: `--trace-latency`, per-stage latency of sampled messages (any layer).
//! - `alarm`: memory watermark and disk free limit: parsing, system probes, evaluation.
//! - `conn_sink`: what a shard hands to a connection (deliveries, confirms, cancels), as a trait.
//! - `shovel`: dynamic shovels, an AMQP client of any two brokers run as a task on one shard
//!   (imports protocol and limits only; the shard starts and stops it).
//! - `shard`: the executor per core, the mesh between shards, topology replication.
//! - `net`: listeners registered by protocol, and the client stream (`ClientStream`).
//! - `tls`: amqps, a rustls `ServerConnection` driven over the shard's socket, as a
//!   `net::Transport` and `net::ClientStream`.
//! - `session`: AMQP connection and channel state, served over a `net::SharedStream`.
//! - `shared_io`: one byte stream polled by two tasks (net's `SharedStream`, cluster links).
//! - `metrics`: plain per-shard counters and histograms (no I/O, imports nothing).
//! - `runtime`: starts the executors and wires shards, listeners and sessions together.
//! - `ctl`: `ringmqctl`, rabbitmqctl's verbs over the management API (HTTP only, no internals).

pub mod alarm;
pub mod auth;
pub mod broker;
pub mod cluster;
pub mod config;
pub mod conn_sink;
pub mod ctl;
pub mod failure_log;
pub mod id_hash;
pub mod latency_trace;
pub mod limits;
pub mod management;
pub mod metrics;
pub mod name_hash;
pub mod net;
pub mod pattern;
pub mod protocol;
pub mod runtime;
pub mod session;
pub mod shard;
pub mod shared_io;
pub mod shovel;
pub mod spin;
pub mod start_gate;
pub mod storage;
pub mod sync;
pub mod tls;
