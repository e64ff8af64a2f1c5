//! The replicated topology: identical on every shard, changed only by [`Topology::apply`].

use crate::id_hash::IdMap;
use crate::name_hash::NameMap;

use crate::protocol::FieldTable;

use super::exchange::{BindingEntry, ExchangeState, Target};
use super::parameter::{Parameter, ParameterSet};
use super::policy::{self, Applied, Policy, PolicyKind, PolicySet};
use super::quorum_members::QuorumGroupRecord;
use super::{
    Binding, ConnId, Destination, ExchangeKind, ExchangeMeta, Permission, QueueId, QueueMeta,
    ShardId, TopicPermission, TopologyChange, User, VhostLimits,
};
use crate::auth::{HashingAlgorithm, PasswordHash};
use crate::limits::ROUTE_EXCHANGES_VISITED_MAX;

pub const DEFAULT_VHOST: &str = "/";
pub const DEFAULT_USER: &str = "guest";
pub const DEFAULT_EXCHANGE: &str = "";

/// The bootstrap user is built by every shard on its own, not replicated: a fixed salt keeps
/// their copies identical (the password it protects is the well-known `guest`).
const BOOTSTRAP_SALT: [u8; 4] = *b"rmq0";

/// Exchanges every vhost is created with.
const STANDARD_EXCHANGES: [(&str, ExchangeKind); 6] = [
    (DEFAULT_EXCHANGE, ExchangeKind::Direct),
    ("amq.direct", ExchangeKind::Direct),
    ("amq.fanout", ExchangeKind::Fanout),
    ("amq.topic", ExchangeKind::Topic),
    ("amq.headers", ExchangeKind::Headers),
    ("amq.match", ExchangeKind::Headers),
];

#[derive(Debug, Clone, Default)]
pub(crate) struct Vhost {
    pub exchanges: NameMap<String, ExchangeState>,
    pub queues: NameMap<String, QueueMeta>,
    /// For each destination, the exchanges holding at least one binding to it: the reverse index
    /// that lets a delete find its inbound bindings without scanning every exchange.
    pub sources_of: NameMap<Destination, Vec<String>>,
    pub limits: VhostLimits,
}

/// One of the exchanges every vhost is created with: durable, never auto-deleted or internal.
fn standard_exchange_meta(name: &str, kind: ExchangeKind) -> ExchangeMeta {
    ExchangeMeta {
        name: name.to_string(),
        kind,
        durable: true,
        auto_delete: false,
        internal: false,
        arguments: FieldTable::default(),
    }
}

impl Vhost {
    fn with_standard_exchanges() -> Vhost {
        let mut vhost = Vhost::default();
        for (name, kind) in STANDARD_EXCHANGES {
            let meta = standard_exchange_meta(name, kind);
            vhost
                .exchanges
                .insert(name.to_string(), ExchangeState::new(meta));
        }
        vhost
    }

    fn target(&self, destination: &Destination) -> Option<Target> {
        match destination {
            Destination::Queue(name) => self.queues.get(name).map(|q| Target::Queue(q.id)),
            Destination::Exchange(name) => self
                .exchanges
                .contains_key(name)
                .then(|| Target::Exchange(name.clone())),
        }
    }

    fn bind(&mut self, binding: &Binding) {
        let Some(target) = self.target(&binding.destination) else {
            return;
        };
        let Some(source) = self.exchanges.get_mut(&binding.source) else {
            return;
        };
        let entry = BindingEntry {
            routing_key: binding.routing_key.clone(),
            arguments: binding.arguments.clone(),
        };
        if source.add_binding(binding.destination.clone(), entry, target) {
            let sources = self
                .sources_of
                .entry(binding.destination.clone())
                .or_default();
            if !sources.contains(&binding.source) {
                sources.push(binding.source.clone());
            }
        }
    }

    fn unbind(&mut self, binding: &Binding) {
        let Some(target) = self.target(&binding.destination) else {
            return;
        };
        let Some(source) = self.exchanges.get_mut(&binding.source) else {
            return;
        };
        let entry = BindingEntry {
            routing_key: binding.routing_key.clone(),
            arguments: binding.arguments.clone(),
        };
        if source.remove_binding(&binding.destination, &entry, &target)
            && source.bindings_to(&binding.destination).is_empty()
        {
            self.forget_source(&binding.destination, &binding.source);
        }
    }

    fn forget_source(&mut self, destination: &Destination, source: &str) {
        if let Some(sources) = self.sources_of.get_mut(destination) {
            sources.retain(|s| s != source);
            if sources.is_empty() {
                self.sources_of.remove(destination);
            }
        }
    }

    /// Removes every binding that has `destination` as its destination.
    fn remove_inbound(&mut self, destination: &Destination, target: &Target) {
        for source in self.sources_of.remove(destination).unwrap_or_default() {
            if let Some(exchange) = self.exchanges.get_mut(&source) {
                exchange.remove_bindings_to(destination, target);
            }
        }
    }

    fn delete_exchange(&mut self, name: &str) {
        let Some(exchange) = self.exchanges.remove(name) else {
            return;
        };
        for destination in exchange.destinations() {
            self.forget_source(destination, name);
        }
        let destination = Destination::Exchange(name.to_string());
        self.remove_inbound(&destination, &Target::Exchange(name.to_string()));
    }

    fn delete_queue(&mut self, name: &str) -> Option<QueueId> {
        let queue = self.queues.remove(name)?;
        self.remove_inbound(
            &Destination::Queue(name.to_string()),
            &Target::Queue(queue.id),
        );
        Some(queue.id)
    }
}

#[derive(Debug, Clone)]
pub struct Topology {
    revision: u64,
    vhosts: NameMap<String, Vhost>,
    users: NameMap<String, User>,
    /// Keyed by (user, vhost).
    permissions: NameMap<(String, String), Permission>,
    /// Keyed by (user, vhost); at most one entry per exchange.
    topic_permissions: NameMap<(String, String), Vec<TopicPermission>>,
    /// Bumped by every change that can alter what a user may do (users, permissions, vhosts):
    /// channels keep compiled permissions with this and recompile only when it moved.
    access_revision: u64,
    queue_locations: IdMap<QueueId, (String, String)>,
    /// Classic queues an `ha-mode` policy mirrored at declare (`TopologyChange::MirrorQueue`):
    /// replicated as quorum queues are. At most one entry per queue.
    mirrored: IdMap<QueueId, ()>,
    /// Replicated queues' groups (`quorum_members`): at most one entry per queue, gone with it.
    quorum_groups: IdMap<QueueId, QuorumGroupRecord>,
    policies: PolicySet,
    /// Bumped by every policy change: shards recompute their queues' effective limits when it
    /// moves, and only then (never per message).
    policy_revision: u64,
    /// Runtime parameters (shovels), by (vhost, component, name).
    parameters: ParameterSet,
    /// The default exchange as every vhost has it (it cannot be declared, deleted or changed):
    /// `exchange` answers from here rather than comparing the empty key (see there).
    default_exchange: ExchangeMeta,
}

impl Topology {
    /// Vhost "/" with the standard exchanges, and user guest/guest (loopback only,
    /// administrator) with full permissions on "/".
    pub fn new_default() -> Topology {
        let mut topology = Topology {
            revision: 0,
            vhosts: NameMap::default(),
            users: NameMap::default(),
            permissions: NameMap::default(),
            topic_permissions: NameMap::default(),
            access_revision: 0,
            queue_locations: IdMap::default(),
            mirrored: IdMap::default(),
            quorum_groups: IdMap::default(),
            policies: PolicySet::default(),
            policy_revision: 0,
            parameters: ParameterSet::default(),
            default_exchange: standard_exchange_meta(DEFAULT_EXCHANGE, ExchangeKind::Direct),
        };
        let bootstrap = [
            TopologyChange::AddVhost {
                name: DEFAULT_VHOST.to_string(),
            },
            TopologyChange::PutUser(User {
                name: DEFAULT_USER.to_string(),
                password_hash: PasswordHash::with_salt(
                    HashingAlgorithm::Sha256,
                    BOOTSTRAP_SALT,
                    DEFAULT_USER,
                ),
                tags: vec!["administrator".to_string()],
            }),
            TopologyChange::SetPermission {
                user: DEFAULT_USER.to_string(),
                vhost: DEFAULT_VHOST.to_string(),
                permission: Permission::full(),
            },
        ];
        for change in &bootstrap {
            topology.apply(change);
        }
        topology.revision = 0;
        topology
    }

    /// Applies a change validated by the topology owner shard. Infallible: a change naming
    /// something that no longer exists is a no-op, so every shard stays identical whatever it is
    /// given.
    pub fn apply(&mut self, change: &TopologyChange) {
        self.revision += 1;
        if change.affects_access() {
            self.access_revision += 1;
        }
        if change.affects_policies() || matches!(change, TopologyChange::DeleteVhost { .. }) {
            self.policy_revision += 1;
        }
        match change {
            TopologyChange::AddVhost { name } => {
                self.vhosts
                    .entry(name.clone())
                    .or_insert_with(Vhost::with_standard_exchanges);
            }
            TopologyChange::DeleteVhost { name } => self.delete_vhost(name),
            TopologyChange::PutUser(user) => {
                self.users.insert(user.name.clone(), user.clone());
            }
            TopologyChange::DeleteUser { name } => {
                self.users.remove(name);
                self.permissions.retain(|(user, _), _| user != name);
                self.topic_permissions.retain(|(user, _), _| user != name);
            }
            TopologyChange::SetPermission {
                user,
                vhost,
                permission,
            } => {
                self.permissions
                    .insert((user.clone(), vhost.clone()), permission.clone());
            }
            TopologyChange::ClearPermission { user, vhost } => {
                self.permissions.remove(&(user.clone(), vhost.clone()));
            }
            TopologyChange::SetTopicPermission {
                user,
                vhost,
                permission,
            } => {
                let entries = self
                    .topic_permissions
                    .entry((user.clone(), vhost.clone()))
                    .or_default();
                entries.retain(|t| t.exchange != permission.exchange);
                entries.push(permission.clone());
            }
            TopologyChange::ClearTopicPermission {
                user,
                vhost,
                exchange,
            } => {
                let key = (user.clone(), vhost.clone());
                match exchange {
                    None => {
                        self.topic_permissions.remove(&key);
                    }
                    Some(exchange) => {
                        if let Some(entries) = self.topic_permissions.get_mut(&key) {
                            entries.retain(|t| &t.exchange != exchange);
                            if entries.is_empty() {
                                self.topic_permissions.remove(&key);
                            }
                        }
                    }
                }
            }
            TopologyChange::DeclareExchange { vhost, exchange } => {
                let alternate = policy::policy_alternate_exchange(
                    &self.exchange_policies(vhost, &exchange.name),
                );
                if let Some(vh) = self.vhosts.get_mut(vhost) {
                    vh.exchanges
                        .entry(exchange.name.clone())
                        .or_insert_with(|| {
                            let mut state = ExchangeState::new(exchange.clone());
                            state.policy_alternate = alternate;
                            state
                        });
                }
            }
            TopologyChange::DeleteExchange { vhost, name } => {
                if let Some(vh) = self.vhosts.get_mut(vhost) {
                    vh.delete_exchange(name);
                }
            }
            TopologyChange::DeclareQueue { queue } => self.declare_queue(queue),
            TopologyChange::DeleteQueue { vhost, name } => self.delete_queue(vhost, name),
            TopologyChange::DeleteQueueIfId { vhost, name, id } => {
                if self.queue(vhost, name).is_some_and(|queue| queue.id == *id) {
                    self.delete_queue(vhost, name);
                }
            }
            TopologyChange::Bind { vhost, binding } => {
                if let Some(vh) = self.vhosts.get_mut(vhost) {
                    vh.bind(binding);
                }
            }
            TopologyChange::Unbind { vhost, binding } => {
                if let Some(vh) = self.vhosts.get_mut(vhost) {
                    vh.unbind(binding);
                }
            }
            TopologyChange::MoveQueue { queue, owner_shard } => {
                self.move_queue(*queue, *owner_shard)
            }
            TopologyChange::MirrorQueue { queue } => {
                self.mirrored.insert(*queue, ());
            }
            TopologyChange::QuorumGroup { queue, members } => {
                let record = self.quorum_groups.entry(*queue).or_default();
                record.initial = Some(members.clone());
                record.members = Some(members.clone());
            }
            // Of a queue still here only: a change committed after its delete leaves nothing.
            TopologyChange::QuorumMembers { queue, members } => {
                if self.queue_locations.contains_key(queue) {
                    let record = self.quorum_groups.entry(*queue).or_default();
                    record.members = Some(members.clone());
                }
            }
            TopologyChange::QuorumReport { queue, report } => {
                if self.queue_locations.contains_key(queue) {
                    let record = self.quorum_groups.entry(*queue).or_default();
                    record.take_report(report.clone());
                }
            }
            TopologyChange::SetPolicy(policy) => {
                if self.vhosts.contains_key(&policy.vhost) {
                    self.policies.set(policy);
                    self.reapply_exchange_policies(&policy.vhost);
                }
            }
            TopologyChange::ClearPolicy { kind, vhost, name } => {
                self.policies.clear(*kind, vhost, name);
                self.reapply_exchange_policies(vhost);
            }
            TopologyChange::SetParameter(parameter) => {
                if self.vhosts.contains_key(&parameter.vhost) {
                    self.parameters.set(parameter);
                }
            }
            TopologyChange::ClearParameter {
                component,
                vhost,
                name,
            } => self.parameters.clear(component, vhost, name),
            TopologyChange::SetVhostLimits { vhost, limits } => {
                if let Some(vh) = self.vhosts.get_mut(vhost) {
                    vh.limits = *limits;
                }
            }
        }
    }

    /// Recomputes the policy alternate exchange of every exchange in the vhost (a policy
    /// change; bounded by the vhost's exchanges).
    fn reapply_exchange_policies(&mut self, vhost: &str) {
        let Some(vh) = self.vhosts.get(vhost) else {
            return;
        };
        let alternates: Vec<(String, Option<String>)> = vh
            .exchanges
            .keys()
            .map(|name| {
                let applied = self.exchange_policies(vhost, name);
                (name.clone(), policy::policy_alternate_exchange(&applied))
            })
            .collect();
        if let Some(vh) = self.vhosts.get_mut(vhost) {
            for (name, alternate) in alternates {
                if let Some(state) = vh.exchanges.get_mut(&name) {
                    state.policy_alternate = alternate;
                }
            }
        }
    }

    /// A vhost's limits (none set for a missing vhost).
    pub fn vhost_limits(&self, vhost: &str) -> VhostLimits {
        self.vhosts
            .get(vhost)
            .map_or_else(VhostLimits::default, |vh| vh.limits)
    }

    /// Every vhost with a limit set, by name.
    pub fn vhosts_with_limits(&self) -> Vec<(&str, VhostLimits)> {
        let mut limited: Vec<(&str, VhostLimits)> = self
            .vhosts
            .iter()
            .filter(|(_, vh)| !vh.limits.is_empty())
            .map(|(name, vh)| (name.as_str(), vh.limits))
            .collect();
        limited.sort_unstable_by_key(|(name, _)| *name);
        limited
    }

    fn move_queue(&mut self, id: QueueId, owner_shard: ShardId) {
        let Some((vhost, name)) = self.queue_locations.get(&id) else {
            return;
        };
        let meta = self
            .vhosts
            .get_mut(vhost)
            .and_then(|vh| vh.queues.get_mut(name));
        if let Some(meta) = meta {
            meta.owner_shard = owner_shard;
        }
    }

    fn delete_vhost(&mut self, name: &str) {
        if let Some(vhost) = self.vhosts.remove(name) {
            for queue in vhost.queues.values() {
                self.queue_locations.remove(&queue.id);
                self.mirrored.remove(&queue.id);
                self.quorum_groups.remove(&queue.id);
            }
        }
        self.permissions.retain(|(_, vhost), _| vhost != name);
        self.topic_permissions.retain(|(_, vhost), _| vhost != name);
        self.policies.clear_vhost(name);
        self.parameters.clear_vhost(name);
    }

    fn declare_queue(&mut self, queue: &QueueMeta) {
        let Some(vh) = self.vhosts.get_mut(&queue.vhost) else {
            return;
        };
        if vh.queues.contains_key(&queue.name) || self.queue_locations.contains_key(&queue.id) {
            return;
        }
        vh.queues.insert(queue.name.clone(), queue.clone());
        self.queue_locations
            .insert(queue.id, (queue.vhost.clone(), queue.name.clone()));
    }

    /// Number of changes applied since [`Topology::new_default`].
    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub(crate) fn vhost(&self, name: &str) -> Option<&Vhost> {
        self.vhosts.get(name)
    }

    pub fn vhost_exists(&self, vhost: &str) -> bool {
        self.vhosts.contains_key(vhost)
    }

    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.get(name)
    }

    pub fn permission(&self, user: &str, vhost: &str) -> Option<&Permission> {
        self.permissions.get(&(user.to_string(), vhost.to_string()))
    }

    /// The user's topic permissions in the vhost, one per exchange (empty: every key allowed).
    pub fn topic_permissions(&self, user: &str, vhost: &str) -> &[TopicPermission] {
        self.topic_permissions
            .get(&(user.to_string(), vhost.to_string()))
            .map_or(&[], Vec::as_slice)
    }

    /// The names of a vhost's queues (a vhost delete removes them all).
    pub fn queue_names_in_vhost(&self, vhost: &str) -> impl Iterator<Item = &str> {
        self.vhost(vhost)
            .into_iter()
            .flat_map(|vh| vh.queues.keys().map(String::as_str))
    }

    /// See the field: compiled permissions made at another revision may be stale.
    pub fn access_revision(&self) -> u64 {
        self.access_revision
    }

    /// See the field: effective queue limits computed at another revision may be stale.
    pub fn policy_revision(&self) -> u64 {
        self.policy_revision
    }

    pub fn parameter(&self, component: &str, vhost: &str, name: &str) -> Option<&Parameter> {
        self.parameters.get(component, vhost, name)
    }

    /// Every runtime parameter, in (vhost, component, name) order.
    pub fn all_parameters(&self) -> impl Iterator<Item = &Parameter> {
        self.parameters.iter()
    }

    pub fn parameters_in<'t>(&'t self, vhost: &'t str) -> impl Iterator<Item = &'t Parameter> {
        self.parameters.iter().filter(move |p| p.vhost == vhost)
    }

    pub fn policy(&self, kind: PolicyKind, vhost: &str, name: &str) -> Option<&Policy> {
        self.policies.get(kind, vhost, name)
    }

    /// Every policy and operator policy, by (kind, vhost, name).
    pub fn all_policies(&self) -> impl Iterator<Item = &Policy> {
        self.policies.iter()
    }

    /// Policies and operator policies of one vhost.
    pub fn policies_in<'t>(&'t self, vhost: &'t str) -> impl Iterator<Item = &'t Policy> {
        self.policies.iter().filter(move |p| p.vhost == vhost)
    }

    /// The policy and operator policy that apply to a queue.
    pub fn queue_policies(&self, vhost: &str, name: &str) -> Applied<'_> {
        let quorum = self
            .queue(vhost, name)
            .is_some_and(|queue| super::quorum::is_quorum(&queue.arguments));
        let applicable =
            |policy: &Policy| !quorum || super::quorum::policy_applies(&policy.definition);
        let target = (vhost, name, true);
        Applied {
            policy: self
                .policies
                .matching_applicable(PolicyKind::Policy, target, applicable),
            operator: self
                .policies
                .matching_applicable(PolicyKind::Operator, target, applicable),
        }
    }

    /// The policy and operator policy that apply to an exchange.
    pub fn exchange_policies(&self, vhost: &str, name: &str) -> Applied<'_> {
        Applied {
            policy: self
                .policies
                .matching(PolicyKind::Policy, vhost, name, false),
            operator: self
                .policies
                .matching(PolicyKind::Operator, vhost, name, false),
        }
    }

    /// A queue's arguments with its policies folded in: what its limits are made from.
    pub fn effective_queue_arguments(&self, queue: &QueueMeta) -> FieldTable {
        let applied = self.queue_policies(&queue.vhost, &queue.name);
        if applied.is_empty() {
            return queue.arguments.clone();
        }
        policy::effective_queue_arguments(&queue.arguments, &applied.definition())
    }

    pub fn users(&self) -> impl Iterator<Item = &User> {
        self.users.values()
    }

    pub fn vhost_names(&self) -> impl Iterator<Item = &str> {
        self.vhosts.keys().map(String::as_str)
    }

    /// Every (user, vhost, permission), for the management API and definitions export.
    pub fn all_permissions(&self) -> impl Iterator<Item = (&str, &str, &Permission)> {
        self.permissions
            .iter()
            .map(|((user, vhost), p)| (user.as_str(), vhost.as_str(), p))
    }

    /// Every (user, vhost, topic permission).
    pub fn all_topic_permissions(&self) -> impl Iterator<Item = (&str, &str, &TopicPermission)> {
        self.topic_permissions
            .iter()
            .flat_map(|((user, vhost), entries)| {
                entries
                    .iter()
                    .map(move |t| (user.as_str(), vhost.as_str(), t))
            })
    }

    pub fn can_access_vhost(&self, user: &str, vhost: &str) -> bool {
        self.vhost_exists(vhost) && self.permission(user, vhost).is_some()
    }

    pub fn exchange(&self, vhost: &str, name: &str) -> Option<&ExchangeMeta> {
        let vh = self.vhost(vhost)?;
        // Every publish to a queue by name looks up "". Matching the empty key calls memcmp on
        // two dangling (empty `String`) pointers, which glibc's AVX-512 memcmp turns into a
        // masked load of page 0 that the CPU replays in microcode: ~7 % of a 16 B publish in
        // perf. The default exchange is the same in every vhost, so it needs no lookup.
        if name.is_empty() {
            return Some(&self.default_exchange);
        }
        Some(&vh.exchanges.get(name)?.meta)
    }

    /// Publishing directly to an internal exchange is refused (403); it routes only as the
    /// destination of an exchange-to-exchange binding.
    pub fn is_internal(&self, vhost: &str, name: &str) -> bool {
        self.exchange(vhost, name).is_some_and(|x| x.internal)
    }

    fn delete_queue(&mut self, vhost: &str, name: &str) {
        if let Some(id) = self
            .vhosts
            .get_mut(vhost)
            .and_then(|vh| vh.delete_queue(name))
        {
            self.queue_locations.remove(&id);
            self.mirrored.remove(&id);
            self.quorum_groups.remove(&id);
        }
    }

    /// A change as it applies to this copy: a [`TopologyChange::DeleteQueueIfId`] becomes the
    /// plain delete while the name is still that queue's, else nothing (`None`); every other
    /// change is itself. Callers that act on a delete (unhosting, logging) see the decision.
    pub fn resolve(&self, change: TopologyChange) -> Option<TopologyChange> {
        match change {
            TopologyChange::DeleteQueueIfId { vhost, name, id } => self
                .queue(&vhost, &name)
                .is_some_and(|queue| queue.id == id)
                .then_some(TopologyChange::DeleteQueue { vhost, name }),
            change => Some(change),
        }
    }

    pub fn queue(&self, vhost: &str, name: &str) -> Option<&QueueMeta> {
        self.vhost(vhost)?.queues.get(name)
    }

    /// Whether an `ha-mode` policy mirrored the queue at its declare.
    pub fn is_mirrored(&self, id: QueueId) -> bool {
        self.mirrored.contains_key(&id)
    }

    /// A replicated queue's group as recorded (`None`: a queue declared before groups had
    /// their own members, or not replicated).
    pub fn quorum_group(&self, id: QueueId) -> Option<&QuorumGroupRecord> {
        self.quorum_groups.get(&id)
    }

    pub fn queue_by_id(&self, id: QueueId) -> Option<&QueueMeta> {
        let (vhost, name) = self.queue_locations.get(&id)?;
        self.queue(vhost, name)
    }

    /// Queues whose recorded owner is `shard_min` or above (start-up with fewer shards than
    /// the data directory was written with), by id: (queue, recorded owner).
    pub fn queues_owned_from(&self, shard_min: ShardId) -> Vec<(QueueId, ShardId)> {
        let mut owned: Vec<(QueueId, ShardId)> = self
            .all_queues()
            .filter(|q| q.owner_shard >= shard_min)
            .map(|q| (q.id, q.owner_shard))
            .collect();
        owned.sort_unstable();
        owned
    }

    /// Every queue of every vhost.
    pub fn all_queues(&self) -> impl Iterator<Item = &QueueMeta> {
        self.vhosts.values().flat_map(|vh| vh.queues.values())
    }

    /// Queues to delete when `conn` closes. A scan: this runs once per connection close.
    pub fn queues_exclusive_to(&self, conn: ConnId) -> Vec<QueueMeta> {
        self.all_queues()
            .filter(|q| q.exclusive_owner == Some(conn))
            .cloned()
            .collect()
    }

    /// Bindings whose source is `exchange`, for listings and tests.
    pub fn bindings_from(&self, vhost: &str, exchange: &str) -> Vec<Binding> {
        let Some(x) = self.vhost(vhost).and_then(|vh| vh.exchanges.get(exchange)) else {
            return Vec::new();
        };
        x.destinations()
            .flat_map(|d| {
                x.bindings_to(d).iter().map(move |e| Binding {
                    source: exchange.to_string(),
                    destination: d.clone(),
                    routing_key: e.routing_key.clone(),
                    arguments: e.arguments.clone(),
                })
            })
            .collect()
    }

    /// Routes a message published to `exchange`: clears `out` and fills it with the ids of the
    /// destination queues, without repeats. Follows exchange-to-exchange bindings and alternate
    /// exchanges, visiting each exchange once so cycles end. The default exchange routes to the
    /// queue named by the routing key. An unknown vhost or exchange routes nowhere.
    pub fn route(
        &self,
        vhost: &str,
        exchange: &str,
        routing_key: &str,
        headers: Option<&FieldTable>,
        out: &mut Vec<QueueId>,
    ) {
        out.clear();
        let Some(vh) = self.vhost(vhost) else {
            return;
        };
        if exchange == DEFAULT_EXCHANGE {
            out.extend(vh.queues.get(routing_key).map(|q| q.id));
            return;
        }
        let Some(first) = vh.exchanges.get(exchange) else {
            return;
        };
        // The common case, an exchange bound only to queues, routes without allocating.
        let mut pending: Vec<&str> = Vec::new();
        route_one(first, routing_key, headers, out, &mut pending);
        if !pending.is_empty() {
            let mut visited: Vec<&str> = vec![exchange];
            while let Some(name) = pending.pop() {
                if visited.contains(&name) || visited.len() >= ROUTE_EXCHANGES_VISITED_MAX {
                    continue;
                }
                visited.push(name);
                if let Some(x) = vh.exchanges.get(name) {
                    route_one(x, routing_key, headers, out, &mut pending);
                }
            }
        }
        out.sort_unstable();
        out.dedup();
    }
}

/// Routes through one exchange's own bindings: queues go to `out`, exchanges to `pending`.
fn route_one<'t>(
    exchange: &'t ExchangeState,
    routing_key: &str,
    headers: Option<&FieldTable>,
    out: &mut Vec<QueueId>,
    pending: &mut Vec<&'t str>,
) {
    let mut matched = false;
    exchange.route(routing_key, headers, &mut |target| {
        matched = true;
        match target {
            Target::Queue(id) => out.push(*id),
            Target::Exchange(next) => pending.push(next),
        }
    });
    // RabbitMQ's rule: the alternate takes over when the exchange's own bindings selected
    // nothing at all (an exchange-to-exchange match counts as something).
    if !matched {
        pending.extend(exchange.alternate_exchange());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declare(name: &str, id: QueueId) -> TopologyChange {
        TopologyChange::DeclareQueue {
            queue: QueueMeta {
                id,
                name: name.to_string(),
                vhost: "/".to_string(),
                owner_shard: 0,
                durable: false,
                exclusive_owner: None,
                auto_delete: false,
                arguments: FieldTable::default(),
            },
        }
    }

    fn delete_if(name: &str, id: QueueId) -> TopologyChange {
        TopologyChange::DeleteQueueIfId {
            vhost: "/".to_string(),
            name: name.to_string(),
            id,
        }
    }

    #[test]
    fn a_delete_by_id_spares_a_name_declared_again() {
        let mut topology = Topology::new_default();
        topology.apply(&declare("q", 7));
        // The name is held by another queue now: nothing to do, on every node alike.
        assert_eq!(topology.resolve(delete_if("q", 6)), None);
        topology.apply(&delete_if("q", 6));
        assert_eq!(topology.queue("/", "q").map(|q| q.id), Some(7));
        assert_eq!(topology.resolve(delete_if("absent", 7)), None);
        // Still that queue: the plain delete.
        assert_eq!(
            topology.resolve(delete_if("q", 7)),
            Some(TopologyChange::DeleteQueue {
                vhost: "/".to_string(),
                name: "q".to_string(),
            })
        );
        topology.apply(&delete_if("q", 7));
        assert!(topology.queue("/", "q").is_none());
    }
}
