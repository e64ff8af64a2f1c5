//! The hasher for maps keyed by names (vhosts, exchanges, queues, routing keys, users).
//!
//! A published message looks names up several times (its vhost, its exchange, the queue or
//! binding its routing key names), and with SipHash those lookups showed among the top costs
//! of a 16 B publish. These keys are chosen by clients, so the hash must not be one an attacker
//! can aim at a bucket: foldhash (hashbrown's own default) is seeded at random per process and
//! per map, and is several times faster than SipHash on short keys.

/// A `HashMap` keyed by names.
pub type NameMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
