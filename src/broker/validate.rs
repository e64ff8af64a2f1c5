//! Validation on the owner shard: a client request against the current topology becomes the
//! changes to apply (none for an equivalent redeclare) or RabbitMQ's error code and text.

use crate::protocol::{reply_code, FieldTable};

use super::equivalence::{
    check_exchange_arguments, check_flag, check_queue_arguments, inequivalent, resource,
    validate_queue_arguments,
};
use super::headers::validate_binding_arguments;
use super::quorum;
use super::topology::{Vhost, DEFAULT_EXCHANGE};
use super::{
    AmqpError, Binding, ConnId, Destination, ExchangeKind, ExchangeMeta, QueueId, QueueMeta,
    ShardId, Topology, TopologyChange, X_DELAYED_TYPE,
};
use crate::limits::{
    BINDINGS_PER_EXCHANGE_MAX, CHANGES_PER_REQUEST_MAX, EXCHANGES_PER_VHOST_MAX, NAME_LENGTH_MAX,
    QUEUES_PER_VHOST_MAX,
};

const RESERVED_PREFIX: &str = "amq.";
const SERVER_NAMED_PREFIX: &str = "amq.gen-";

/// exchange.declare, as received.
#[derive(Debug, Clone, Copy)]
pub struct ExchangeDeclare<'a> {
    pub vhost: &'a str,
    pub name: &'a str,
    pub kind: &'a str,
    pub passive: bool,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    pub arguments: &'a FieldTable,
}

/// queue.declare, after the session has resolved the name.
#[derive(Debug, Clone, Copy)]
pub struct QueueDeclare<'a> {
    pub vhost: &'a str,
    /// Never empty: the session substitutes a [`server_named_queue`] name for "".
    pub name: &'a str,
    /// The name came from [`server_named_queue`], so its "amq." prefix is allowed.
    pub server_named: bool,
    pub passive: bool,
    pub durable: bool,
    pub exclusive: bool,
    pub auto_delete: bool,
    pub arguments: &'a FieldTable,
    pub conn: ConnId,
    /// The id the queue gets if this declare creates it.
    pub new_id: QueueId,
    pub owner_shard: ShardId,
    /// Members of the cluster (1 without `--peer`): bounds a quorum queue's group.
    pub cluster_size: usize,
    /// The cluster's member names in index order (empty without `--peer`) and the deciding
    /// node's index among them: a replicated queue's group is chosen from them.
    pub cluster_members: &'a [String],
    pub local_member: usize,
}

/// queue.bind/unbind (destination is a queue) and exchange.bind/unbind (an exchange).
#[derive(Debug, Clone, Copy)]
pub struct BindRequest<'a> {
    pub vhost: &'a str,
    pub source: &'a str,
    pub destination: &'a Destination,
    pub routing_key: &'a str,
    pub arguments: &'a FieldTable,
    pub conn: ConnId,
}

impl BindRequest<'_> {
    fn binding(&self) -> Binding {
        Binding {
            source: self.source.to_string(),
            destination: self.destination.clone(),
            routing_key: self.routing_key.to_string(),
            arguments: self.arguments.clone(),
        }
    }
}

fn error(code: u16, text: String) -> AmqpError {
    AmqpError::new(code, text)
}

fn vhost<'t>(t: &'t Topology, name: &str) -> Result<&'t Vhost, AmqpError> {
    t.vhost(name).ok_or_else(|| {
        error(
            reply_code::NOT_ALLOWED,
            format!("NOT_ALLOWED - vhost {name} not found"),
        )
    })
}

fn default_exchange_refused() -> AmqpError {
    error(
        reply_code::ACCESS_REFUSED,
        "ACCESS_REFUSED - operation not permitted on the default exchange".to_string(),
    )
}

fn reserved_name(kind: &str, name: &str) -> AmqpError {
    error(
        reply_code::ACCESS_REFUSED,
        format!("ACCESS_REFUSED - {kind} name '{name}' contains reserved prefix 'amq.*'"),
    )
}

fn not_found(kind: &str, name: &str, vhost: &str) -> AmqpError {
    error(
        reply_code::NOT_FOUND,
        format!("NOT_FOUND - no {}", resource(kind, name, vhost)),
    )
}

fn locked(name: &str, vhost: &str) -> AmqpError {
    error(
        reply_code::RESOURCE_LOCKED,
        format!(
            "RESOURCE_LOCKED - cannot obtain exclusive access to locked {}. It could be \
             originally declared on another connection or the exclusive property value does not \
             match that of the original declaration.",
            resource("queue", name, vhost)
        ),
    )
}

/// RabbitMQ's vhost queue-limit wording, used for every per-vhost count limit.
fn limit_reached(kind: &str, name: &str, vhost: &str, limit: usize) -> AmqpError {
    error(
        reply_code::PRECONDITION_FAILED,
        format!("PRECONDITION_FAILED - cannot declare {kind} '{name}': {kind} limit in vhost '{vhost}' ({limit}) is reached"),
    )
}

/// RabbitMQ enforces no character set on names; only the short-string length bounds them.
fn check_name_length(kind: &str, name: &str) -> Result<(), AmqpError> {
    if name.len() <= NAME_LENGTH_MAX {
        return Ok(());
    }
    Err(error(
        reply_code::PRECONDITION_FAILED,
        format!("PRECONDITION_FAILED - {kind} name longer than {NAME_LENGTH_MAX} bytes"),
    ))
}

pub fn check_exchange_declare(
    t: &Topology,
    d: &ExchangeDeclare<'_>,
) -> Result<Vec<TopologyChange>, AmqpError> {
    // RabbitMQ checks the type before anything else, but ignores it on a passive declare.
    // An unknown type is a channel error (406) since rabbitmq-server#11214 (3.12.x/3.13.x
    // backports); 3.10 closed the connection with 503 COMMAND_INVALID, same text. RabbitMQ
    // says "invalid exchange type" instead only for a name that is an Erlang atom but not a
    // registered type (a disabled plugin's), which has no counterpart here.
    let kind = match (d.passive, ExchangeKind::parse(d.kind)) {
        (false, None) => {
            return Err(error(
                reply_code::PRECONDITION_FAILED,
                format!("PRECONDITION_FAILED - unknown exchange type '{}'", d.kind),
            ))
        }
        (_, kind) => kind,
    };
    if d.name == DEFAULT_EXCHANGE {
        return Err(default_exchange_refused());
    }
    let vh = vhost(t, d.vhost)?;
    let existing = vh.exchanges.get(d.name).map(|x| &x.meta);
    match (existing, kind) {
        (Some(current), Some(kind)) if !d.passive => {
            check_exchange_equivalence(d, kind, current)?;
            Ok(Vec::new())
        }
        (Some(_), _) => Ok(Vec::new()),
        (None, _) if d.passive => Err(not_found("exchange", d.name, d.vhost)),
        (None, None) => Err(error(
            reply_code::INTERNAL_ERROR,
            "INTERNAL_ERROR".to_string(),
        )),
        (None, Some(kind)) => {
            if d.name.starts_with(RESERVED_PREFIX) {
                return Err(reserved_name("exchange", d.name));
            }
            if kind == ExchangeKind::Delayed {
                check_delayed_type(d.arguments)?;
            }
            check_name_length("exchange", d.name)?;
            if vh.exchanges.len() >= EXCHANGES_PER_VHOST_MAX {
                return Err(limit_reached(
                    "exchange",
                    d.name,
                    d.vhost,
                    EXCHANGES_PER_VHOST_MAX,
                ));
            }
            Ok(vec![TopologyChange::DeclareExchange {
                vhost: d.vhost.to_string(),
                exchange: ExchangeMeta {
                    name: d.name.to_string(),
                    kind,
                    durable: d.durable,
                    auto_delete: d.auto_delete,
                    internal: d.internal,
                    arguments: d.arguments.clone(),
                },
            }])
        }
    }
}

fn check_exchange_equivalence(
    d: &ExchangeDeclare<'_>,
    kind: ExchangeKind,
    current: &ExchangeMeta,
) -> Result<(), AmqpError> {
    let what = resource("exchange", d.name, d.vhost);
    if kind != current.kind {
        return Err(inequivalent(
            &what,
            "type",
            format!("'{}'", kind.as_str()),
            format!("'{}'", current.kind.as_str()),
        ));
    }
    check_flag(&what, "durable", d.durable, current.durable)?;
    check_flag(&what, "auto_delete", d.auto_delete, current.auto_delete)?;
    check_flag(&what, "internal", d.internal, current.internal)?;
    check_exchange_arguments(&what, d.arguments, &current.arguments)?;
    if kind == ExchangeKind::Delayed {
        check_delayed_type(d.arguments)?;
        check_delayed_type_equivalence(&what, d.arguments, &current.arguments)?;
    }
    Ok(())
}

/// A delayed exchange routes as its `x-delayed-type` says: one of the four routing types.
/// The text is the plugin's.
fn check_delayed_type(arguments: &FieldTable) -> Result<(), AmqpError> {
    let routing = arguments
        .get(X_DELAYED_TYPE)
        .and_then(|v| v.as_str())
        .and_then(ExchangeKind::parse);
    match routing {
        Some(kind) if kind != ExchangeKind::Delayed => Ok(()),
        _ => Err(error(
            reply_code::PRECONDITION_FAILED,
            "PRECONDITION_FAILED - Invalid argument, 'x-delayed-type' must be an existing \
             exchange type"
                .to_string(),
        )),
    }
}

fn check_delayed_type_equivalence(
    what: &str,
    received: &FieldTable,
    current: &FieldTable,
) -> Result<(), AmqpError> {
    let (new, old) = (received.get(X_DELAYED_TYPE), current.get(X_DELAYED_TYPE));
    if new == old {
        return Ok(());
    }
    let render = |v: Option<&crate::protocol::FieldValue>| {
        v.and_then(|v| v.as_str())
            .map_or_else(|| "none".to_string(), |t| format!("'{t}'"))
    };
    Err(inequivalent(what, X_DELAYED_TYPE, render(new), render(old)))
}

/// Deleting a missing exchange succeeds, as in RabbitMQ. `if_unused` means no bindings with it
/// as source.
pub fn check_exchange_delete(
    t: &Topology,
    vhost_name: &str,
    name: &str,
    if_unused: bool,
) -> Result<Vec<TopologyChange>, AmqpError> {
    if name == DEFAULT_EXCHANGE {
        return Err(default_exchange_refused());
    }
    if name.starts_with(RESERVED_PREFIX) {
        return Err(error(
            reply_code::ACCESS_REFUSED,
            format!(
                "ACCESS_REFUSED - deletion of system {} not allowed",
                resource("exchange", name, vhost_name)
            ),
        ));
    }
    let vh = vhost(t, vhost_name)?;
    let Some(exchange) = vh.exchanges.get(name) else {
        return Ok(Vec::new());
    };
    if if_unused && exchange.binding_count() > 0 {
        return Err(error(
            reply_code::PRECONDITION_FAILED,
            format!(
                "PRECONDITION_FAILED - {} in use",
                resource("exchange", name, vhost_name)
            ),
        ));
    }
    let mut changes = vec![TopologyChange::DeleteExchange {
        vhost: vhost_name.to_string(),
        name: name.to_string(),
    }];
    auto_delete_cascade(
        vh,
        vhost_name,
        Removal::Destination(Destination::Exchange(name.to_string())),
        &mut changes,
    );
    Ok(changes)
}

/// 404 when the queue is missing, 405 when it is exclusive to another connection.
pub fn check_queue_access<'t>(
    t: &'t Topology,
    vhost_name: &str,
    name: &str,
    conn: ConnId,
) -> Result<&'t QueueMeta, AmqpError> {
    let queue = vhost(t, vhost_name)?
        .queues
        .get(name)
        .ok_or_else(|| not_found("queue", name, vhost_name))?;
    match queue.exclusive_owner {
        Some(owner) if owner != conn => Err(locked(name, vhost_name)),
        _ => Ok(queue),
    }
}

pub fn check_queue_declare(
    t: &Topology,
    d: &QueueDeclare<'_>,
) -> Result<Vec<TopologyChange>, AmqpError> {
    let vh = vhost(t, d.vhost)?;
    if d.passive {
        check_queue_access(t, d.vhost, d.name, d.conn)?;
        return Ok(Vec::new());
    }
    if let Some(current) = vh.queues.get(d.name) {
        check_queue_equivalence(t, d, current)?;
        return Ok(Vec::new());
    }
    if d.name.is_empty() {
        return Err(error(
            reply_code::INTERNAL_ERROR,
            "INTERNAL_ERROR - queue declared without a name".to_string(),
        ));
    }
    if d.name.starts_with(RESERVED_PREFIX)
        && !(d.server_named && d.name.starts_with(SERVER_NAMED_PREFIX))
    {
        return Err(reserved_name("queue", d.name));
    }
    check_name_length("queue", d.name)?;
    // The operator's `max-queues` (RabbitMQ's vhost limit; 0 refuses every new queue), then
    // the broker's own bound, with one text.
    if let Some(limit) = vh.limits.queue_limit() {
        if vh.queues.len() as u64 >= limit {
            return Err(limit_reached("queue", d.name, d.vhost, limit as usize));
        }
    }
    if vh.queues.len() >= QUEUES_PER_VHOST_MAX {
        return Err(limit_reached(
            "queue",
            d.name,
            d.vhost,
            QUEUES_PER_VHOST_MAX,
        ));
    }
    validate_queue_arguments(&resource("queue", d.name, d.vhost), d.arguments)?;
    if quorum::is_quorum(d.arguments) {
        quorum::check_quorum_declare(d)?;
    }
    let mirrored = super::mirror::mirrored_at_declare(t, d)?;
    if t.queue_by_id(d.new_id).is_some() {
        return Err(error(
            reply_code::INTERNAL_ERROR,
            format!("INTERNAL_ERROR - queue id {} reused", d.new_id),
        ));
    }
    // Recorded first, so a shard applying the declare already knows it is replicated.
    let mirror = mirrored
        .is_some()
        .then_some(TopologyChange::MirrorQueue { queue: d.new_id });
    let members = quorum::replicated_group(d).or(mirrored);
    let group = members.map(|members| TopologyChange::QuorumGroup {
        queue: d.new_id,
        members,
    });
    let declare = TopologyChange::DeclareQueue {
        queue: QueueMeta {
            id: d.new_id,
            name: d.name.to_string(),
            vhost: d.vhost.to_string(),
            owner_shard: d.owner_shard,
            durable: d.durable,
            exclusive_owner: d.exclusive.then_some(d.conn),
            auto_delete: d.auto_delete,
            arguments: d.arguments.clone(),
        },
    };
    Ok(mirror.into_iter().chain(group).chain([declare]).collect())
}

fn check_queue_equivalence(
    t: &Topology,
    d: &QueueDeclare<'_>,
    current: &QueueMeta,
) -> Result<(), AmqpError> {
    check_queue_access(t, d.vhost, d.name, d.conn)?;
    // RabbitMQ's strict check: an exclusive redeclare of a shared queue is refused as locked.
    if d.exclusive && current.exclusive_owner.is_none() {
        return Err(locked(d.name, d.vhost));
    }
    let what = resource("queue", d.name, d.vhost);
    check_flag(&what, "durable", d.durable, current.durable)?;
    check_flag(&what, "auto_delete", d.auto_delete, current.auto_delete)?;
    check_queue_arguments(&what, d.arguments, &current.arguments)
}

/// Deleting a missing queue succeeds, as in RabbitMQ. if-unused and if-empty are checked by the
/// queue's owner shard before it asks for this.
pub fn check_queue_delete(
    t: &Topology,
    vhost_name: &str,
    name: &str,
    conn: ConnId,
) -> Result<Vec<TopologyChange>, AmqpError> {
    let vh = vhost(t, vhost_name)?;
    if !vh.queues.contains_key(name) {
        return Ok(Vec::new());
    }
    check_queue_access(t, vhost_name, name, conn)?;
    let mut changes = vec![TopologyChange::DeleteQueue {
        vhost: vhost_name.to_string(),
        name: name.to_string(),
    }];
    auto_delete_cascade(
        vh,
        vhost_name,
        Removal::Destination(Destination::Queue(name.to_string())),
        &mut changes,
    );
    Ok(changes)
}

/// Neither end of a binding may be the default exchange (bind and unbind alike).
fn check_not_default_exchange(r: &BindRequest<'_>) -> Result<(), AmqpError> {
    let to_default =
        matches!(r.destination, Destination::Exchange(name) if name == DEFAULT_EXCHANGE);
    if r.source == DEFAULT_EXCHANGE || to_default {
        return Err(default_exchange_refused());
    }
    Ok(())
}

/// What bind checks before adding a binding: default exchange, existence (source first, as
/// RabbitMQ reports it), exclusivity of a destination queue.
fn check_binding_ends<'t>(t: &'t Topology, r: &BindRequest<'_>) -> Result<&'t Vhost, AmqpError> {
    check_not_default_exchange(r)?;
    let vh = vhost(t, r.vhost)?;
    if !vh.exchanges.contains_key(r.source) {
        return Err(not_found("exchange", r.source, r.vhost));
    }
    match r.destination {
        Destination::Queue(name) => {
            check_queue_access(t, r.vhost, name, r.conn)?;
        }
        Destination::Exchange(name) => {
            if !vh.exchanges.contains_key(name) {
                return Err(not_found("exchange", name, r.vhost));
            }
        }
    }
    Ok(vh)
}

fn binding_exists(vh: &Vhost, r: &BindRequest<'_>) -> bool {
    vh.exchanges.get(r.source).is_some_and(|x| {
        x.bindings_to(r.destination)
            .iter()
            .any(|e| e.routing_key == r.routing_key && e.arguments == *r.arguments)
    })
}

/// queue.bind and exchange.bind. Binding twice is a no-op.
pub fn check_bind(t: &Topology, r: &BindRequest<'_>) -> Result<Vec<TopologyChange>, AmqpError> {
    let vh = check_binding_ends(t, r)?;
    let is_headers = vh
        .exchanges
        .get(r.source)
        .is_some_and(|x| x.meta.routing_kind() == ExchangeKind::Headers);
    if is_headers {
        validate_binding_arguments(r.arguments)?;
    }
    if binding_exists(vh, r) {
        return Ok(Vec::new());
    }
    let bindings = vh.exchanges.get(r.source).map_or(0, |x| x.binding_count());
    if bindings >= BINDINGS_PER_EXCHANGE_MAX {
        return Err(error(
            reply_code::PRECONDITION_FAILED,
            format!(
                "PRECONDITION_FAILED - binding limit of {} ({BINDINGS_PER_EXCHANGE_MAX}) is reached",
                resource("exchange", r.source, r.vhost)
            ),
        ));
    }
    Ok(vec![TopologyChange::Bind {
        vhost: r.vhost.to_string(),
        binding: r.binding(),
    }])
}

/// queue.unbind and exchange.unbind, idempotent as in RabbitMQ (rabbit_binding:remove): a
/// missing binding, source or destination is a no-op (clients unbind after an auto-delete
/// cascade already removed either end); only the default exchange is refused up front, and the
/// exclusivity of a destination queue is checked only when there is a binding to remove.
/// Removing the last binding of an auto-delete exchange deletes it too.
pub fn check_unbind(t: &Topology, r: &BindRequest<'_>) -> Result<Vec<TopologyChange>, AmqpError> {
    check_not_default_exchange(r)?;
    // Permissions are not enforced yet: RabbitMQ checks write on the destination and read on
    // the source here, before anything else, whether or not they exist.
    let vh = vhost(t, r.vhost)?;
    if !binding_exists(vh, r) {
        return Ok(Vec::new());
    }
    if let Destination::Queue(name) = r.destination {
        check_queue_access(t, r.vhost, name, r.conn)?;
    }
    let binding = r.binding();
    let mut changes = Vec::new();
    auto_delete_cascade(vh, r.vhost, Removal::Binding(&binding), &mut changes);
    changes.insert(
        0,
        TopologyChange::Unbind {
            vhost: r.vhost.to_string(),
            binding,
        },
    );
    Ok(changes)
}

/// What the first change of a request removes.
enum Removal<'a> {
    /// A queue or exchange is deleted, and every binding to it with it.
    Destination(Destination),
    /// One existing binding is removed.
    Binding(&'a Binding),
}

/// Appends a DeleteExchange for every auto-delete exchange left with no bindings as source once
/// `first` is applied, and again for those that empties in turn (RabbitMQ cascades too).
/// Exchanges that never had a binding are not touched: only a lost binding triggers deletion.
fn auto_delete_cascade(
    vh: &Vhost,
    vhost_name: &str,
    first: Removal<'_>,
    changes: &mut Vec<TopologyChange>,
) {
    let mut deleted: Vec<Destination> = Vec::new();
    let mut candidates: Vec<&str> = Vec::new();
    let explicit = match first {
        Removal::Destination(destination) => {
            candidates.extend(sources(vh, &destination));
            deleted.push(destination);
            None
        }
        Removal::Binding(binding) => {
            candidates.push(&binding.source);
            Some(binding)
        }
    };
    while let Some(source) = candidates.pop() {
        if changes.len() >= CHANGES_PER_REQUEST_MAX {
            break;
        }
        let gone = Destination::Exchange(source.to_string());
        if deleted.contains(&gone) {
            continue;
        }
        let Some(exchange) = vh.exchanges.get(source).filter(|x| x.meta.auto_delete) else {
            continue;
        };
        let surviving: usize = exchange
            .destinations()
            .filter(|d| !deleted.contains(d))
            .map(|d| exchange.bindings_to(d).len())
            .sum();
        let explicitly_removed = explicit
            .filter(|b| b.source == source && !deleted.contains(&b.destination))
            .map_or(0, |_| 1);
        if surviving > explicitly_removed {
            continue;
        }
        changes.push(TopologyChange::DeleteExchange {
            vhost: vhost_name.to_string(),
            name: source.to_string(),
        });
        candidates.extend(sources(vh, &gone));
        deleted.push(gone);
    }
}

fn sources<'v>(vh: &'v Vhost, destination: &Destination) -> impl Iterator<Item = &'v str> {
    vh.sources_of
        .get(destination)
        .into_iter()
        .flat_map(|s| s.iter().map(String::as_str))
}

/// "amq.gen-" and 22 URL-safe base64 characters (128 bits), a pure function of `counter`. The
/// first 64 bits are a bijective mix of the counter, so distinct counters give distinct names.
pub fn server_named_queue(counter: u64) -> String {
    const SALT_HIGH: u64 = 0x5bd1_e995_c2b2_ae35;
    const SALT_LOW: u64 = 0x27d4_eb2f_1656_67c5;
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let high = mix(counter ^ SALT_HIGH);
    let low = mix(high ^ SALT_LOW);
    let bits = (u128::from(high) << 64) | u128::from(low);
    let mut name = String::with_capacity(SERVER_NAMED_PREFIX.len() + 22);
    name.push_str(SERVER_NAMED_PREFIX);
    // 22 characters of 6 bits cover 132 bits: the last 4 are zero padding, as in base64.
    for index in 0..22u32 {
        let shift = 128i32 - 6 * (index as i32 + 1);
        let sextet = if shift >= 0 {
            bits >> shift
        } else {
            bits << -shift
        };
        name.push(char::from(ALPHABET[(sextet & 0x3f) as usize]));
    }
    name
}

/// splitmix64's finaliser: a bijection on u64 with good avalanche.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
