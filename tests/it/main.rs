//! The black-box suites, one module each, in one test binary: each suite used to be a binary
//! of its own, and each of those linked the whole dependency graph again (34 thin-LTO links
//! with debuginfo were most of CI's build time). A suite is still selected by its name:
//!
//! ```text
//! cargo test --release --test it                    # every suite
//! cargo test --release --test it cluster::          # one suite
//! cargo test --release --test it durability::kill   # tests of a suite by name
//! ```
//!
//! The tests of all suites share this process and libtest's threads (as many as cores, as
//! before within one suite); everything a test starts is its own (brokers on free ports with
//! their own data directories, network namespaces named by pid), and `common` hands out ports
//! once per process, so suites running side by side never meet.

#[macro_use]
#[path = "../common/mod.rs"]
mod common;
#[path = "../cluster/history.rs"]
mod history;

mod alarms;
mod bounds_named;
mod client_compat;
mod cluster;
mod cluster_join;
mod confirms;
mod cross_shard;
mod definitions_roundtrip;
mod delivery_path;
mod disk_eio;
mod disk_faults;
mod durability;
mod features;
mod features_more;
mod flood;
mod haproxy;
mod history_checker;
mod import_graph;
mod large_messages;
mod limits;
mod management_api;
mod management_rabbitmqadmin;
mod netns_login;
mod paging;
mod patterns;
mod permissions;
mod permissions_boot;
mod policies;
mod prometheus;
mod quorum;
mod quorum_compaction;
mod quorum_members;
mod raw_frames;
mod reshard;
mod ringmqctl;
mod semantics;
mod shard_count;
mod shovel;
mod shovel_migration;
mod tls;
mod transactions;
