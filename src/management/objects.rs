//! Topology and stats objects rendered as RabbitMQ 3.10.8's management JSON.

use std::collections::HashMap;

use serde_json::{json, Value};

use super::backend::{ChannelStats, ConnectionStats, ConsumerStats, QueueStats, StatsSnapshot};
use super::json::{rate, table_to_json};
use crate::broker::{Binding, Destination, ExchangeMeta, QueueMeta, Topology, User};

/// The management plugin version we answer as: the RabbitMQ release whose API we copy.
pub const RABBITMQ_VERSION: &str = "3.10.8";

/// Per-queue rates (per second) of publish, deliver_get, ack, from two stats snapshots.
pub type QueueRates = HashMap<(String, String), [f64; 3]>;

/// Everything a listing needs at once: one topology and one stats snapshot.
pub struct View<'a> {
    pub topology: &'a Topology,
    pub stats: &'a StatsSnapshot,
    pub rates: &'a QueueRates,
}

impl View<'_> {
    pub fn node_name(&self) -> &str {
        &self.stats.node.name
    }

    pub fn vhosts(&self) -> Vec<String> {
        let mut names: Vec<String> = self.topology.vhost_names().map(str::to_string).collect();
        names.sort();
        names
    }

    pub fn queues(&self, vhost: &str) -> Vec<&QueueMeta> {
        self.topology
            .vhost(vhost)
            .map(|vh| vh.queues.values().collect())
            .unwrap_or_default()
    }

    pub fn exchanges(&self, vhost: &str) -> Vec<&ExchangeMeta> {
        self.topology
            .vhost(vhost)
            .map(|vh| vh.exchanges.values().map(|x| &x.meta).collect())
            .unwrap_or_default()
    }

    /// Every binding of the vhost, the default exchange's implicit ones first (as RabbitMQ
    /// lists them).
    pub fn bindings(&self, vhost: &str) -> Vec<Binding> {
        let mut queues = self.queues(vhost);
        queues.sort_by(|a, b| a.name.cmp(&b.name));
        let mut out: Vec<Binding> = queues
            .iter()
            .map(|q| Binding {
                source: String::new(),
                destination: Destination::Queue(q.name.clone()),
                routing_key: q.name.clone(),
                arguments: Default::default(),
            })
            .collect();
        let mut exchanges = self.exchanges(vhost);
        exchanges.sort_by(|a, b| a.name.cmp(&b.name));
        let mut explicit: Vec<Binding> = exchanges
            .iter()
            .flat_map(|x| self.topology.bindings_from(vhost, &x.name))
            .collect();
        explicit.sort_by(|a, b| {
            (
                &a.source,
                destination_type(&a.destination),
                a.destination.name(),
                &a.routing_key,
            )
                .cmp(&(
                    &b.source,
                    destination_type(&b.destination),
                    b.destination.name(),
                    &b.routing_key,
                ))
        });
        out.extend(explicit);
        out
    }

    fn queue_stats(&self, vhost: &str, name: &str) -> Option<&QueueStats> {
        self.stats
            .queues
            .iter()
            .find(|q| q.vhost == vhost && q.name == name)
    }

    pub fn queue(&self, queue: &QueueMeta) -> Value {
        let empty = QueueStats::default();
        let stats = self
            .queue_stats(&queue.vhost, &queue.name)
            .unwrap_or(&empty);
        let key = (queue.vhost.clone(), queue.name.clone());
        let [publish_rate, deliver_rate, ack_rate] =
            self.rates.get(&key).copied().unwrap_or_default();
        let messages = stats.messages_ready + stats.messages_unacknowledged;
        let applied = self.topology.queue_policies(&queue.vhost, &queue.name);
        let mut value = json!({
            "arguments": table_to_json(&queue.arguments),
            "auto_delete": queue.auto_delete,
            "consumer_capacity": 0,
            "consumer_utilisation": 0,
            "consumers": stats.consumers,
            "durable": queue.durable,
            "effective_policy_definition": super::policies::definition_json(&applied.definition()),
            "exclusive": queue.exclusive_owner.is_some(),
            "exclusive_consumer_tag": null,
            "head_message_timestamp": null,
            "memory": stats.memory_bytes,
            "message_bytes": stats.message_bytes,
            "message_stats": {
                "publish": stats.publish_count,
                "publish_details": rate(publish_rate),
                "deliver_get": stats.deliver_get_count,
                "deliver_get_details": rate(deliver_rate),
                "ack": stats.ack_count,
                "ack_details": rate(ack_rate),
            },
            "messages": messages,
            "messages_details": rate(0.0),
            "messages_ready": stats.messages_ready,
            "messages_ready_details": rate(0.0),
            "messages_unacknowledged": stats.messages_unacknowledged,
            "messages_unacknowledged_details": rate(0.0),
            "name": queue.name,
            "node": self.node_name(),
            "operator_policy": applied.operator.map(|p| p.name.as_str()),
            "policy": applied.policy.map(|p| p.name.as_str()),
            "recoverable_slaves": null,
            "single_active_consumer_tag": null,
            "state": "running",
            "type": "classic",
            "vhost": queue.vhost,
        });
        if crate::broker::quorum::is_quorum(&queue.arguments) {
            self.show_quorum_group(queue, &mut value);
        } else if self.topology.is_mirrored(queue.id) {
            self.show_mirrors(queue, &mut value);
        }
        value
    }

    /// The cluster's members by index, as `cluster::Members` numbers them (a forgotten
    /// member's index keeps its name), each with whether it runs.
    fn members(&self) -> Vec<(&str, bool)> {
        let node = &self.stats.node;
        if node.member_names.len() > 1 {
            let running =
                |name: &str| name == node.name || node.peers.iter().any(|(n, up)| n == name && *up);
            return node
                .member_names
                .iter()
                .map(|name| (name.as_str(), running(name)))
                .collect();
        }
        // No index table (the fake backend): the members `--peer` gives are in name order.
        let mut names: Vec<(&str, bool)> = node
            .peers
            .iter()
            .map(|(name, running)| (name.as_str(), *running))
            .chain(std::iter::once((node.name.as_str(), true)))
            .collect();
        names.sort_unstable();
        names
    }

    /// The member leading a replicated `queue`: the one this node last heard its group elect
    /// (a member) or the topology's report names (a node outside the group), else (none
    /// heard yet) the node that declared it.
    fn replicated_leader<'n>(&'n self, queue: &QueueMeta, names: &[(&'n str, bool)]) -> &'n str {
        let declaring_node = crate::cluster::Members::node_of_queue(queue.id);
        let index = self
            .stats
            .node
            .quorum_leaders
            .get(&queue.id)
            .copied()
            .unwrap_or(declaring_node);
        names
            .get(index)
            .map(|(name, _)| *name)
            .unwrap_or(self.stats.node.name.as_str())
    }

    /// A replicated queue's members with whether each runs: as its group record names them
    /// (in the record's order, the declaring node first), else every member of the cluster.
    fn group_members<'n>(
        &'n self,
        queue: &QueueMeta,
        names: &[(&'n str, bool)],
    ) -> Vec<(&'n str, bool)> {
        let recorded = self
            .topology
            .quorum_group(queue.id)
            .and_then(|record| record.members.as_ref());
        match recorded {
            Some(members) => members
                .iter()
                .filter_map(|m| names.iter().find(|(name, _)| *name == m.as_str()).copied())
                .collect(),
            None => names.to_vec(),
        }
    }

    /// RabbitMQ 3.10's keys for a mirrored classic queue: `node` (the master: its group's
    /// leader) and its mirrors, `slave_nodes` (the group's other members) and
    /// `synchronised_slave_nodes` (those running; a Raft follower catches up by
    /// itself).
    fn show_mirrors(&self, queue: &QueueMeta, value: &mut Value) {
        let all = self.members();
        let master = self.replicated_leader(queue, &all);
        // Mirrors in name order, as they always were shown (the record's order is the pick's).
        let mut names = self.group_members(queue, &all);
        names.sort_unstable();
        let mirrors: Vec<&str> = names
            .iter()
            .filter(|(name, _)| *name != master)
            .map(|(name, _)| *name)
            .collect();
        let synchronised: Vec<&str> = names
            .iter()
            .filter(|(name, running)| *name != master && *running)
            .map(|(name, _)| *name)
            .collect();
        value["node"] = json!(master);
        value["slave_nodes"] = json!(mirrors);
        value["synchronised_slave_nodes"] = json!(synchronised);
    }

    /// RabbitMQ's keys for a quorum queue: its type, `leader`, `members` and `online`, and
    /// `node` is the leader. A replicated queue's group is its recorded members (every member
    /// for a queue declared before groups had their own), led by `replicated_leader`; any
    /// other group is the one node its id names.
    fn show_quorum_group(&self, queue: &QueueMeta, value: &mut Value) {
        let names = self.members();
        let replicated = names.len() > 1
            && (self.topology.quorum_group(queue.id).is_some()
                || crate::broker::quorum::group_size(&queue.arguments, names.len()) > 1);
        let (leader, members): (&str, Vec<(&str, bool)>) = if replicated {
            (
                self.replicated_leader(queue, &names),
                self.group_members(queue, &names),
            )
        } else {
            let declaring_node = crate::cluster::Members::node_of_queue(queue.id);
            match names.get(declaring_node).copied() {
                Some(member) => (member.0, vec![member]),
                None => (self.stats.node.name.as_str(), vec![]),
            }
        };
        let online: Vec<&str> = members
            .iter()
            .filter(|(_, running)| *running)
            .map(|(name, _)| *name)
            .collect();
        let members: Vec<&str> = members.iter().map(|(name, _)| *name).collect();
        let members = if members.is_empty() {
            vec![leader]
        } else {
            members
        };
        value["type"] = json!("quorum");
        value["node"] = json!(leader);
        value["leader"] = json!(leader);
        value["members"] = json!(members);
        value["online"] = json!(online);
    }

    /// GET of one queue adds what RabbitMQ shows only there.
    pub fn queue_detail(&self, queue: &QueueMeta) -> Value {
        let mut value = self.queue(queue);
        let consumers: Vec<Value> = self
            .stats
            .consumers
            .iter()
            .filter(|c| c.vhost == queue.vhost && c.queue == queue.name)
            .map(|c| self.consumer(c))
            .collect();
        value["consumer_details"] = Value::Array(consumers);
        value["deliveries"] = json!([]);
        value["incoming"] = json!([]);
        value
    }

    pub fn exchange(&self, vhost: &str, exchange: &ExchangeMeta) -> Value {
        let mut value = json!({
            "arguments": table_to_json(&exchange.arguments),
            "auto_delete": exchange.auto_delete,
            "durable": exchange.durable,
            "internal": exchange.internal,
            "name": exchange.name,
            "type": exchange.kind.as_str(),
            "user_who_performed_action": "rmq-internal",
            "vhost": vhost,
        });
        // RabbitMQ shows `policy` on an exchange only when one applies.
        if let Some(policy) = self
            .topology
            .exchange_policies(vhost, &exchange.name)
            .policy
        {
            value["policy"] = json!(policy.name);
        }
        value
    }

    pub fn exchange_detail(&self, vhost: &str, exchange: &ExchangeMeta) -> Value {
        let mut value = self.exchange(vhost, exchange);
        value["incoming"] = json!([]);
        value["outgoing"] = json!([]);
        value
    }

    pub fn vhost(&self, name: &str) -> Value {
        let (mut ready, mut unacked) = (0u64, 0u64);
        for q in self.stats.queues.iter().filter(|q| q.vhost == name) {
            ready += q.messages_ready;
            unacked += q.messages_unacknowledged;
        }
        let description = if name == crate::broker::DEFAULT_VHOST {
            "Default virtual host"
        } else {
            ""
        };
        json!({
            "cluster_state": { self.node_name(): "running" },
            "default_queue_type": "undefined",
            "description": description,
            "messages": ready + unacked,
            "messages_details": rate(0.0),
            "messages_ready": ready,
            "messages_ready_details": rate(0.0),
            "messages_unacknowledged": unacked,
            "messages_unacknowledged_details": rate(0.0),
            "metadata": { "description": description, "tags": [] },
            "name": name,
            "tags": [],
            "tracing": false,
        })
    }

    pub fn connection(&self, c: &ConnectionStats) -> Value {
        json!({
            "auth_mechanism": "PLAIN",
            "channel_max": c.channel_max,
            "channels": c.channels,
            "client_properties": table_to_json(&c.client_properties),
            "connected_at": c.connected_at_ms,
            "frame_max": c.frame_max,
            "host": c.host,
            "name": c.name,
            "node": self.node_name(),
            "peer_host": c.peer_host,
            "peer_port": c.peer_port,
            "port": c.port,
            "protocol": "AMQP 0-9-1",
            "recv_oct": c.received_bytes,
            "recv_oct_details": rate(0.0),
            "send_oct": c.sent_bytes,
            "send_oct_details": rate(0.0),
            "send_pend": c.send_pending_bytes,
            "ssl": false,
            "state": "running",
            "timeout": c.heartbeat_seconds,
            "type": "network",
            "user": c.user,
            "user_who_performed_action": c.user,
            "vhost": c.vhost,
        })
    }

    fn connection_details(&self, name: &str) -> Value {
        let connection = self.stats.connections.iter().find(|c| c.name == name);
        json!({
            "name": name,
            "peer_host": connection.map_or("", |c| c.peer_host.as_str()),
            "peer_port": connection.map_or(0, |c| c.peer_port),
        })
    }

    pub fn channel(&self, c: &ChannelStats) -> Value {
        json!({
            "acks_uncommitted": c.acks_uncommitted,
            "confirm": c.confirm,
            "connection_details": self.connection_details(&c.connection_name),
            "consumer_count": c.consumer_count,
            "global_prefetch_count": c.global_prefetch_count,
            "messages_unacknowledged": c.messages_unacknowledged,
            "messages_uncommitted": c.messages_uncommitted,
            "messages_unconfirmed": c.messages_unconfirmed,
            "name": format!("{} ({})", c.connection_name, c.number),
            "node": self.node_name(),
            "number": c.number,
            "prefetch_count": c.prefetch_count,
            "state": "running",
            "transactional": c.transactional,
            "user": c.user,
            "user_who_performed_action": c.user,
            "vhost": c.vhost,
        })
    }

    pub fn consumer(&self, c: &ConsumerStats) -> Value {
        let details = self.connection_details(&c.connection_name);
        json!({
            "ack_required": c.ack_required,
            "active": true,
            "activity_status": "up",
            "arguments": table_to_json(&c.arguments),
            "channel_details": {
                "connection_name": c.connection_name,
                "name": format!("{} ({})", c.connection_name, c.channel_number),
                "node": self.node_name(),
                "number": c.channel_number,
                "peer_host": details["peer_host"],
                "peer_port": details["peer_port"],
                "user": self.stats.connections.iter().find(|x| x.name == c.connection_name).map_or("", |x| x.user.as_str()),
            },
            "consumer_tag": c.consumer_tag,
            "exclusive": c.exclusive,
            "prefetch_count": c.prefetch_count,
            "queue": { "name": c.queue, "vhost": c.vhost },
        })
    }
}

pub fn destination_type(destination: &Destination) -> &'static str {
    match destination {
        Destination::Queue(_) => "queue",
        Destination::Exchange(_) => "exchange",
    }
}

/// The exchange name in URLs and listings: RabbitMQ names the default exchange `amq.default`
/// in paths and `""` in objects.
pub fn exchange_from_path(name: &str) -> &str {
    if name == "amq.default" {
        ""
    } else {
        name
    }
}

pub fn binding(vhost: &str, b: &Binding) -> Value {
    json!({
        "arguments": table_to_json(&b.arguments),
        "destination": b.destination.name(),
        "destination_type": destination_type(&b.destination),
        "properties_key": properties_key(b),
        "routing_key": b.routing_key,
        "source": b.source,
        "vhost": vhost,
    })
}

/// RabbitMQ's `pack_binding_props`: the quoted routing key, and for a binding with arguments
/// `~` and a digest of them (ours is not RabbitMQ's digest; clients only echo it back).
pub fn properties_key(b: &Binding) -> String {
    if b.arguments.is_empty() {
        if b.routing_key.is_empty() {
            return "~".to_string();
        }
        return quote_binding(&b.routing_key);
    }
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{:?}", b.arguments).as_bytes());
    let short: String = digest[..8]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    format!("{}~{short}", quote_binding(&b.routing_key))
}

/// `rabbit_http_util:quote_plus` then `~` escaped.
fn quote_binding(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        match byte {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' | b'-' => out.push(byte as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

pub fn user(u: &User) -> Value {
    json!({
        "hashing_algorithm": u.password_hash.algorithm().rabbit_name(),
        "limits": {},
        "name": u.name,
        "password_hash": u.password_hash.encoded(),
        "tags": u.tags,
    })
}

pub fn permission(user: &str, vhost: &str, p: &crate::auth::Permission) -> Value {
    json!({
        "configure": p.configure,
        "read": p.read,
        "user": user,
        "vhost": vhost,
        "write": p.write,
    })
}

pub fn topic_permission(user: &str, vhost: &str, p: &crate::auth::TopicPermission) -> Value {
    json!({
        "exchange": p.exchange,
        "read": p.read,
        "user": user,
        "vhost": vhost,
        "write": p.write,
    })
}

#[cfg(test)]
mod quorum_group_tests {
    use super::*;
    use crate::limits::QUEUE_ID_NODE_SHIFT;
    use crate::management::backend::StatsSnapshot;
    use crate::protocol::{FieldTable, FieldValue};

    /// Node `ringmq@b` of a, b, c (member indexes 0, 1, 2 by name); c is down.
    fn stats(leaders: &[(u64, usize)]) -> StatsSnapshot {
        let mut stats = StatsSnapshot::default();
        stats.node.name = "ringmq@b".to_string();
        stats.node.peers = vec![
            ("ringmq@c".to_string(), false),
            ("ringmq@a".to_string(), true),
        ];
        stats.node.quorum_leaders = leaders.iter().copied().collect();
        stats
    }

    fn quorum_queue(id: u64, group_size: Option<i64>) -> QueueMeta {
        let mut arguments = FieldTable::default();
        arguments.insert("x-queue-type", FieldValue::LongString("quorum".into()));
        if let Some(size) = group_size {
            arguments.insert("x-quorum-initial-group-size", FieldValue::LongLongInt(size));
        }
        QueueMeta {
            id,
            name: "qq".to_string(),
            vhost: "/".to_string(),
            owner_shard: 0,
            durable: true,
            exclusive_owner: None,
            auto_delete: false,
            arguments,
        }
    }

    fn shown(stats: &StatsSnapshot, queue: &QueueMeta) -> Value {
        let topology = Topology::new_default();
        let rates = QueueRates::default();
        let view = View {
            topology: &topology,
            stats,
            rates: &rates,
        };
        let mut value = json!({});
        view.show_quorum_group(queue, &mut value);
        value
    }

    #[test]
    fn a_replicated_group_is_every_member_led_by_the_leader_last_heard() {
        // Declared on a (node 0); the group has since elected c.
        let queue = quorum_queue(7, None);
        let value = shown(&stats(&[(7, 2)]), &queue);
        assert_eq!(value["leader"], "ringmq@c");
        assert_eq!(value["node"], "ringmq@c");
        assert_eq!(
            value["members"],
            json!(["ringmq@a", "ringmq@b", "ringmq@c"])
        );
        assert_eq!(value["online"], json!(["ringmq@a", "ringmq@b"]));
        // No leader heard yet: the declaring node.
        let value = shown(&stats(&[]), &queue);
        assert_eq!(value["leader"], "ringmq@a");
    }

    #[test]
    fn a_group_of_one_is_the_node_its_id_names() {
        let queue = quorum_queue((2 << QUEUE_ID_NODE_SHIFT) | 3, Some(1));
        let value = shown(&stats(&[]), &queue);
        assert_eq!(value["leader"], "ringmq@c");
        assert_eq!(value["members"], json!(["ringmq@c"]));
        assert_eq!(value["online"], json!([]));
    }
}
