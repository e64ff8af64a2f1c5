//! rabbitmqctl's info items for each listing, mapped to the management API's JSON fields, and
//! the columns rabbitmqctl shows when none are asked for.

use serde_json::Value;

use super::client::segment;
use super::error::CtlError;

/// Where one info item's value comes from in the API's object.
#[derive(Clone, Copy, Debug)]
pub enum Field {
    /// A JSON pointer into the object (`/queue/name`).
    Pointer(&'static str),
    /// The same for every row (a binding's source is always an exchange).
    Constant(&'static str),
}

/// One rabbitmqctl `list_*` verb.
pub struct Listing {
    /// The plural noun in "Listing queues for vhost / ...".
    pub noun: &'static str,
    /// The API collection; vhost-scoped ones get `/{vhost}` appended.
    pub collection: &'static str,
    pub vhost_scoped: bool,
    pub items: &'static [(&'static str, Field)],
    pub defaults: &'static [&'static str],
}

use Field::{Constant, Pointer};

pub const QUEUES: Listing = Listing {
    noun: "queues",
    collection: "/queues",
    vhost_scoped: true,
    items: &[
        ("name", Pointer("/name")),
        ("vhost", Pointer("/vhost")),
        ("durable", Pointer("/durable")),
        ("auto_delete", Pointer("/auto_delete")),
        ("exclusive", Pointer("/exclusive")),
        ("arguments", Pointer("/arguments")),
        ("policy", Pointer("/policy")),
        ("messages", Pointer("/messages")),
        ("messages_ready", Pointer("/messages_ready")),
        (
            "messages_unacknowledged",
            Pointer("/messages_unacknowledged"),
        ),
        ("message_bytes", Pointer("/message_bytes")),
        ("consumers", Pointer("/consumers")),
        ("consumer_utilisation", Pointer("/consumer_utilisation")),
        ("memory", Pointer("/memory")),
        ("state", Pointer("/state")),
        ("type", Pointer("/type")),
        ("node", Pointer("/node")),
    ],
    defaults: &["name", "messages"],
};

pub const EXCHANGES: Listing = Listing {
    noun: "exchanges",
    collection: "/exchanges",
    vhost_scoped: true,
    items: &[
        ("name", Pointer("/name")),
        ("vhost", Pointer("/vhost")),
        ("type", Pointer("/type")),
        ("durable", Pointer("/durable")),
        ("auto_delete", Pointer("/auto_delete")),
        ("internal", Pointer("/internal")),
        ("arguments", Pointer("/arguments")),
        ("policy", Pointer("/policy")),
    ],
    defaults: &["name", "type"],
};

pub const BINDINGS: Listing = Listing {
    noun: "bindings",
    collection: "/bindings",
    vhost_scoped: true,
    items: &[
        ("source_name", Pointer("/source")),
        ("source_kind", Constant("exchange")),
        ("destination_name", Pointer("/destination")),
        ("destination_kind", Pointer("/destination_type")),
        ("routing_key", Pointer("/routing_key")),
        ("arguments", Pointer("/arguments")),
        ("vhost", Pointer("/vhost")),
    ],
    defaults: &[
        "source_name",
        "source_kind",
        "destination_name",
        "destination_kind",
        "routing_key",
        "arguments",
    ],
};

pub const CONNECTIONS: Listing = Listing {
    noun: "connections",
    collection: "/connections",
    vhost_scoped: false,
    items: &[
        ("name", Pointer("/name")),
        ("user", Pointer("/user")),
        ("vhost", Pointer("/vhost")),
        ("peer_host", Pointer("/peer_host")),
        ("peer_port", Pointer("/peer_port")),
        ("host", Pointer("/host")),
        ("port", Pointer("/port")),
        ("state", Pointer("/state")),
        ("channels", Pointer("/channels")),
        ("protocol", Pointer("/protocol")),
        ("auth_mechanism", Pointer("/auth_mechanism")),
        ("ssl", Pointer("/ssl")),
        ("timeout", Pointer("/timeout")),
        ("frame_max", Pointer("/frame_max")),
        ("channel_max", Pointer("/channel_max")),
        ("recv_oct", Pointer("/recv_oct")),
        ("send_oct", Pointer("/send_oct")),
        ("client_properties", Pointer("/client_properties")),
        ("connected_at", Pointer("/connected_at")),
        ("node", Pointer("/node")),
    ],
    defaults: &["user", "peer_host", "peer_port", "state"],
};

pub const CHANNELS: Listing = Listing {
    noun: "channels",
    collection: "/channels",
    vhost_scoped: false,
    items: &[
        // rabbitmqctl shows an Erlang pid; the API's channel name is what identifies one here.
        ("pid", Pointer("/name")),
        ("name", Pointer("/name")),
        ("connection", Pointer("/connection_details/name")),
        ("number", Pointer("/number")),
        ("user", Pointer("/user")),
        ("vhost", Pointer("/vhost")),
        ("transactional", Pointer("/transactional")),
        ("confirm", Pointer("/confirm")),
        ("consumer_count", Pointer("/consumer_count")),
        (
            "messages_unacknowledged",
            Pointer("/messages_unacknowledged"),
        ),
        ("messages_uncommitted", Pointer("/messages_uncommitted")),
        ("acks_uncommitted", Pointer("/acks_uncommitted")),
        ("messages_unconfirmed", Pointer("/messages_unconfirmed")),
        ("prefetch_count", Pointer("/prefetch_count")),
        ("global_prefetch_count", Pointer("/global_prefetch_count")),
        ("state", Pointer("/state")),
    ],
    defaults: &["pid", "user", "consumer_count", "messages_unacknowledged"],
};

pub const CONSUMERS: Listing = Listing {
    noun: "consumers",
    collection: "/consumers",
    vhost_scoped: true,
    items: &[
        ("queue_name", Pointer("/queue/name")),
        ("channel_pid", Pointer("/channel_details/name")),
        ("consumer_tag", Pointer("/consumer_tag")),
        ("ack_required", Pointer("/ack_required")),
        ("prefetch_count", Pointer("/prefetch_count")),
        ("active", Pointer("/active")),
        ("activity_status", Pointer("/activity_status")),
        ("exclusive", Pointer("/exclusive")),
        ("arguments", Pointer("/arguments")),
    ],
    defaults: &[
        "queue_name",
        "channel_pid",
        "consumer_tag",
        "ack_required",
        "prefetch_count",
        "active",
        "activity_status",
        "arguments",
    ],
};

pub const USERS: Listing = Listing {
    noun: "users",
    collection: "/users",
    vhost_scoped: false,
    items: &[("user", Pointer("/name")), ("tags", Pointer("/tags"))],
    defaults: &["user", "tags"],
};

pub const VHOSTS: Listing = Listing {
    noun: "vhosts",
    collection: "/vhosts",
    vhost_scoped: false,
    items: &[
        ("name", Pointer("/name")),
        ("description", Pointer("/description")),
        ("tags", Pointer("/tags")),
        ("tracing", Pointer("/tracing")),
        ("cluster_state", Pointer("/cluster_state")),
        ("default_queue_type", Pointer("/default_queue_type")),
    ],
    defaults: &["name"],
};

pub const PERMISSIONS: Listing = Listing {
    noun: "permissions",
    collection: "/vhosts",
    vhost_scoped: true,
    items: &[
        ("user", Pointer("/user")),
        ("configure", Pointer("/configure")),
        ("write", Pointer("/write")),
        ("read", Pointer("/read")),
    ],
    defaults: &["user", "configure", "write", "read"],
};

pub const POLICIES: Listing = Listing {
    noun: "policies",
    collection: "/policies",
    vhost_scoped: true,
    items: &[
        ("vhost", Pointer("/vhost")),
        ("name", Pointer("/name")),
        ("pattern", Pointer("/pattern")),
        ("apply-to", Pointer("/apply-to")),
        ("definition", Pointer("/definition")),
        ("priority", Pointer("/priority")),
    ],
    defaults: &[
        "vhost",
        "name",
        "pattern",
        "apply-to",
        "definition",
        "priority",
    ],
};

/// `list_parameters`: ringmq's one component is "shovel".
pub const PARAMETERS: Listing = Listing {
    noun: "runtime parameters",
    collection: "/parameters/shovel",
    vhost_scoped: true,
    items: &[
        ("component", Pointer("/component")),
        ("name", Pointer("/name")),
        ("value", Pointer("/value")),
    ],
    defaults: &["component", "name", "value"],
};

/// `shovel_status` (rabbitmq_shovel's CLI command) over `/api/shovels`.
pub const SHOVELS: Listing = Listing {
    noun: "shovels",
    collection: "/shovels",
    vhost_scoped: false,
    items: &[
        ("name", Pointer("/name")),
        ("vhost", Pointer("/vhost")),
        ("type", Pointer("/type")),
        ("state", Pointer("/state")),
        ("source", Pointer("/src_uri")),
        ("destination", Pointer("/dest_uri")),
        ("termination_reason", Pointer("/reason")),
        ("destination_protocol", Pointer("/dest_protocol")),
        ("source_protocol", Pointer("/src_protocol")),
        ("last_changed", Pointer("/timestamp")),
        ("source_queue", Pointer("/src_queue")),
        ("source_exchange", Pointer("/src_exchange")),
        ("destination_queue", Pointer("/dest_queue")),
        ("destination_exchange", Pointer("/dest_exchange")),
        ("destination_exchange_key", Pointer("/dest_exchange_key")),
    ],
    defaults: &[
        "name",
        "vhost",
        "type",
        "state",
        "source",
        "destination",
        "termination_reason",
        "destination_protocol",
        "source_protocol",
        "last_changed",
        "source_queue",
        "destination_queue",
    ],
};

impl Listing {
    /// The API path for this listing in `vhost` (ignored when the listing is not scoped).
    pub fn path(&self, vhost: &str) -> String {
        match (self.vhost_scoped, self.noun) {
            // Permissions of one vhost live under the vhost itself.
            (true, "permissions") => format!("/vhosts/{}/permissions", segment(vhost)),
            (true, _) => format!("{}/{}", self.collection, segment(vhost)),
            (false, _) => self.collection.to_owned(),
        }
    }

    /// The requested columns (rabbitmqctl's defaults when none), each with its field; an
    /// unknown item is a usage error naming the ones this listing knows.
    pub fn select(&self, requested: &[String]) -> Result<Vec<(String, Field)>, CtlError> {
        let names: Vec<&str> = if requested.is_empty() {
            self.defaults.to_vec()
        } else {
            requested.iter().map(String::as_str).collect()
        };
        names
            .into_iter()
            .map(|name| {
                self.items
                    .iter()
                    .find(|(item, _)| *item == name)
                    .map(|(item, field)| ((*item).to_owned(), *field))
                    .ok_or_else(|| {
                        let known: Vec<&str> = self.items.iter().map(|(item, _)| *item).collect();
                        CtlError::Usage(format!(
                            "Info key(s) {name} are not supported by list_{}. Valid keys: {}",
                            self.noun,
                            known.join(", ")
                        ))
                    })
            })
            .collect()
    }
}

/// One column's value in one API object (`null` where the object lacks the field).
pub fn extract(object: &Value, field: Field) -> Value {
    match field {
        Field::Pointer(pointer) => object.pointer(pointer).cloned().unwrap_or(Value::Null),
        Field::Constant(text) => Value::String(text.to_owned()),
    }
}
