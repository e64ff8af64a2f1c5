//! Durable storage: the per-shard write-ahead log.
//!
//! The WAL stores opaque payloads (message properties and bodies, topology blobs) plus a few ids;
//! it depends on nothing else in the broker.

pub mod wal;

pub use wal::{
    log_shards, remove_log, EnqueueBody, EnqueueRecord, Lsn, OwnedEnqueue, RecordKind, RecordPos,
    Recovered, RecoveredEnqueue, RecoveredTopology, SettleRecord, Wal, WalError, WalOptions,
    WalStats,
};
