//! ringmq: an AMQP 0-9-1 broker built thread-per-core on glommio.
//!
//! Layering (each layer depends only on those above it):
//! - `protocol`: sans-IO codec for frames, methods, field tables and properties.
//! - `auth`: password hashes and permission checks (pure).
//! - `broker`: topology (vhosts, exchanges, bindings, queue metadata), routing, queue state.
//! - `storage`: per-shard write-ahead log.
//! - `session`: AMQP connection and channel state.
//! - `shard`: the executor per core, the mesh between shards, topology replication.
//! - `net`: listeners and the shared socket stream.

pub mod auth;
pub mod broker;
pub mod config;
pub mod id_hash;
pub mod limits;
pub mod management;
pub mod net;
pub mod protocol;
pub mod session;
pub mod shard;
pub mod storage;
