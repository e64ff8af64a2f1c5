//! One exchange on one shard: its metadata, the bindings it is the source of, and the routing
//! index built from them (a hash by key for direct, a set for fanout, a trie for topic, a list
//! of reduced argument tables for headers).

use crate::name_hash::NameMap;

use crate::protocol::FieldTable;

use super::headers::HeadersMatcher;
use super::topic::TopicTrie;
use super::{Destination, ExchangeKind, ExchangeMeta, QueueId};

/// A resolved binding destination. Queues are held by id: a queue's bindings are removed when it
/// is deleted, so an id in a routing index always names a live queue.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Target {
    Queue(QueueId),
    Exchange(String),
}

/// A multiset of targets: two bindings from one exchange to one destination (different keys or
/// arguments) count twice, so removing one leaves the other routing.
#[derive(Debug, Clone, Default)]
pub(crate) struct TargetSet(Vec<(Target, u32)>);

impl TargetSet {
    pub(crate) fn add(&mut self, target: Target) {
        match self.0.iter_mut().find(|(t, _)| *t == target) {
            Some((_, count)) => *count += 1,
            None => self.0.push((target, 1)),
        }
    }

    pub(crate) fn remove(&mut self, target: &Target) -> bool {
        let Some(index) = self.0.iter().position(|(t, _)| t == target) else {
            return false;
        };
        match &mut self.0[index].1 {
            count if *count > 1 => *count -= 1,
            _ => {
                self.0.swap_remove(index);
            }
        }
        true
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Target> {
        self.0.iter().map(|(t, _)| t)
    }
}

#[derive(Debug, Clone)]
enum Router {
    Direct(NameMap<String, TargetSet>),
    /// Counted like [`TargetSet`], but hashed: fanout exchanges may have thousands of bindings.
    Fanout(NameMap<Target, u32>),
    Topic(TopicTrie),
    Headers(Vec<(HeadersMatcher, Target)>),
}

/// A binding as stored under its source exchange.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BindingEntry {
    pub routing_key: String,
    pub arguments: FieldTable,
}

#[derive(Debug, Clone)]
pub(crate) struct ExchangeState {
    pub meta: ExchangeMeta,
    /// Grouped by destination so that deleting a destination touches only its own bindings.
    by_destination: NameMap<Destination, Vec<BindingEntry>>,
    binding_count: usize,
    router: Router,
    /// The `alternate-exchange` a policy gives it (its own argument wins over this); set by
    /// the topology whenever the policy set changes, so routing reads a field, not policies.
    pub(crate) policy_alternate: Option<String>,
}

impl ExchangeState {
    pub(crate) fn new(meta: ExchangeMeta) -> ExchangeState {
        let router = match meta.routing_kind() {
            ExchangeKind::Direct | ExchangeKind::Delayed => Router::Direct(NameMap::default()),
            ExchangeKind::Fanout => Router::Fanout(NameMap::default()),
            ExchangeKind::Topic => Router::Topic(TopicTrie::default()),
            ExchangeKind::Headers => Router::Headers(Vec::new()),
        };
        ExchangeState {
            meta,
            by_destination: NameMap::default(),
            binding_count: 0,
            router,
            policy_alternate: None,
        }
    }

    pub(crate) fn binding_count(&self) -> usize {
        self.binding_count
    }

    pub(crate) fn alternate_exchange(&self) -> Option<&str> {
        match self.meta.arguments.get("alternate-exchange") {
            Some(own) => own.as_str(),
            None => self.policy_alternate.as_deref(),
        }
    }

    pub(crate) fn has_binding(&self, destination: &Destination, entry: &BindingEntry) -> bool {
        self.by_destination
            .get(destination)
            .is_some_and(|entries| entries.contains(entry))
    }

    pub(crate) fn bindings_to(&self, destination: &Destination) -> &[BindingEntry] {
        self.by_destination
            .get(destination)
            .map_or(&[], Vec::as_slice)
    }

    pub(crate) fn destinations(&self) -> impl Iterator<Item = &Destination> {
        self.by_destination.keys()
    }

    /// Adds a binding unless an identical one exists. Returns whether it was added.
    pub(crate) fn add_binding(
        &mut self,
        destination: Destination,
        entry: BindingEntry,
        target: Target,
    ) -> bool {
        if self.has_binding(&destination, &entry) {
            return false;
        }
        match &mut self.router {
            Router::Direct(keys) => keys
                .entry(entry.routing_key.clone())
                .or_default()
                .add(target),
            Router::Fanout(targets) => *targets.entry(target).or_insert(0) += 1,
            Router::Topic(trie) => trie.insert(&entry.routing_key, target),
            Router::Headers(matchers) => {
                matchers.push((HeadersMatcher::new(&entry.arguments), target))
            }
        }
        self.by_destination
            .entry(destination)
            .or_default()
            .push(entry);
        self.binding_count += 1;
        true
    }

    /// Removes one binding if present. Returns whether it was there.
    pub(crate) fn remove_binding(
        &mut self,
        destination: &Destination,
        entry: &BindingEntry,
        target: &Target,
    ) -> bool {
        let Some(entries) = self.by_destination.get_mut(destination) else {
            return false;
        };
        let Some(index) = entries.iter().position(|e| e == entry) else {
            return false;
        };
        entries.swap_remove(index);
        if entries.is_empty() {
            self.by_destination.remove(destination);
        }
        self.binding_count -= 1;
        self.unroute(entry, target);
        true
    }

    /// Removes every binding to `destination`.
    pub(crate) fn remove_bindings_to(&mut self, destination: &Destination, target: &Target) {
        let Some(entries) = self.by_destination.remove(destination) else {
            return;
        };
        self.binding_count -= entries.len();
        for entry in &entries {
            self.unroute(entry, target);
        }
    }

    fn unroute(&mut self, entry: &BindingEntry, target: &Target) {
        match &mut self.router {
            Router::Direct(keys) => {
                if let Some(set) = keys.get_mut(&entry.routing_key) {
                    set.remove(target);
                    if set.is_empty() {
                        keys.remove(&entry.routing_key);
                    }
                }
            }
            Router::Fanout(targets) => {
                if let Some(count) = targets.get_mut(target) {
                    *count -= 1;
                    if *count == 0 {
                        targets.remove(target);
                    }
                }
            }
            Router::Topic(trie) => {
                trie.remove(&entry.routing_key, target);
            }
            Router::Headers(matchers) => {
                let reduced = HeadersMatcher::new(&entry.arguments);
                if let Some(index) = matchers
                    .iter()
                    .position(|(m, t)| t == target && *m == reduced)
                {
                    matchers.remove(index);
                }
            }
        }
    }

    /// Calls `emit` for each target this exchange's own bindings select (with repeats).
    pub(crate) fn route<'s>(
        &'s self,
        routing_key: &str,
        headers: Option<&FieldTable>,
        emit: &mut impl FnMut(&'s Target),
    ) {
        match &self.router {
            Router::Direct(keys) => {
                if let Some(set) = keys.get(routing_key) {
                    set.iter().for_each(emit);
                }
            }
            Router::Fanout(targets) => targets.keys().for_each(emit),
            Router::Topic(trie) => trie.matches(routing_key, emit),
            Router::Headers(matchers) => matchers
                .iter()
                .filter(|(m, _)| m.matches(headers))
                .for_each(|(_, t)| emit(t)),
        }
    }
}
