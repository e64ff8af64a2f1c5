//! Connection counts across shards, for the limits RabbitMQ checks at connection.open: the
//! node's `connection_max` and a vhost's `max-connections`.
//!
//! No shard keeps a running total: a connection that must be admitted asks every shard for its
//! own count (one typed call each) only when a limit is set, so nothing is paid per connection
//! when none is, and nothing is shared between shards. A connection claims its vhost
//! (`ConnectionSink::claims_vhost`) before it asks, so two connections admitted at once each
//! count the other: a race can refuse both, never admit one past the limit.

use std::rc::Rc;

use super::calls::ShardCall;
use super::Shard;
use crate::broker::ShardId;

/// How many client connections this shard holds: all of them (`vhost: None`, as RabbitMQ's
/// `connection_max` counts every accepted socket), or those claiming `vhost`.
pub struct CountConnections {
    pub vhost: Option<String>,
}

impl ShardCall for CountConnections {
    type Reply = u64;
    async fn handle(self, shard: &Rc<Shard>, _from: ShardId) -> u64 {
        shard.local_connection_count(self.vhost.as_deref())
    }
}

impl Shard {
    fn local_connection_count(&self, vhost: Option<&str>) -> u64 {
        let conns = self.conns.borrow();
        let count = match vhost {
            None => conns.len(),
            Some(vhost) => conns.values().filter(|c| c.claims_vhost(vhost)).count(),
        };
        count as u64
    }

    /// Connections on every shard (see [`CountConnections`]). A shard that does not answer
    /// within `RPC_TIMEOUT` counts as none: admission must not hang on a stuck peer.
    pub async fn connection_count_everywhere(self: &Rc<Self>, vhost: Option<&str>) -> u64 {
        let mut total = 0;
        for shard in 0..self.shard_count() {
            let request = CountConnections {
                vhost: vhost.map(str::to_string),
            };
            total += self.call(shard, request).await.unwrap_or(0);
        }
        total
    }
}
