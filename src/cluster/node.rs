//! The Raft node: raft-rs's `RawNode` over an in-memory `MemStorage` that mirrors the durable
//! `RaftLog`, driven by one task on the topology owner's executor (ticks, received messages,
//! proposals, then each `Ready`: persist and fdatasync, send, apply).
//!
//! An entry's data is a list of topology changes (`broker::persist`'s bytes); its context names
//! the proposing node and a sequence number, so the proposer finds its waiting client when the
//! entry is applied here, whichever node led when it was committed.

use std::cell::{Cell, Ref, RefCell};
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::rc::{Rc, Weak};
use std::time::Instant;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use protobuf::Message as _;
use raft::eraftpb::{
    ConfChange, ConfChangeType, ConfState, Entry, EntryType, Message, MessageType,
};
use raft::storage::MemStorage;
use raft::{RawNode, StateRole, Storage};

use super::group::{GroupMachine, Groups};
use super::link::{self, Identity, Outbound};
use super::log::{RaftLog, Recovered};
use super::membership::{self, Membership, Verdict};
use super::{DataPath, Members, StateMachine};
use crate::broker::{persist, AmqpError, TopologyChange};
use crate::config::ClusterConfig;
use crate::limits::{
    CHANGES_PER_REQUEST_MAX, CLUSTER_INBOX_MESSAGES_MAX, CLUSTER_NODES_MAX,
    CLUSTER_PROPOSALS_PENDING_MAX, CLUSTER_PROPOSE_TIMEOUT, RAFT_ELECTION_TICKS,
    RAFT_HEARTBEAT_TICKS, RAFT_INFLIGHT_MESSAGES_MAX, RAFT_MESSAGE_BYTES_MAX, RAFT_TICK,
};
use crate::protocol::reply_code;
use crate::sync::{oneshot, Notify, OneshotSender};

/// One member as `/api/nodes` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerState {
    pub name: String,
    /// This node, or a peer whose link is up.
    pub running: bool,
}

/// The members and the links to them, shared by the topology's node and the quorum groups;
/// changed only where a member change is applied (`Node::apply_member_change`).
pub(super) struct Roster {
    members: RefCell<Members>,
    /// By member index; `None` at our own and at forgotten members'.
    links: RefCell<Vec<Option<Rc<Outbound>>>>,
}

impl Roster {
    pub(super) fn members(&self) -> Ref<'_, Members> {
        self.members.borrow()
    }

    pub(super) fn link(&self, index: usize) -> Option<Rc<Outbound>> {
        self.links.borrow().get(index).cloned().flatten()
    }

    /// How many member indexes there are (links and per-peer batches are sized by it).
    pub(super) fn indexes(&self) -> usize {
        self.links.borrow().len()
    }

    pub(super) fn local_raft_id(&self) -> u64 {
        raft_id(self.members.borrow().local_index())
    }
}

pub struct Node {
    raw: RefCell<RawNode<MemStorage>>,
    storage: MemStorage,
    log: RefCell<RaftLog>,
    roster: Rc<Roster>,
    /// What the members file holds (`membership.rs`), rewritten at each member change.
    membership: RefCell<Membership>,
    data_dir: PathBuf,
    /// Who we are to the peers; its member list follows the changes.
    identity: Rc<Identity>,
    /// Handed to each new member's link.
    data: Rc<dyn DataPath>,
    inbox: RefCell<VecDeque<Message>>,
    wake: Notify,
    /// This node's proposals waiting for their entry to be applied here, and its outcome.
    pending: RefCell<HashMap<u64, OneshotSender<Result<(), AmqpError>>>>,
    next_seq: Cell<u64>,
    machine: Rc<dyn StateMachine>,
    leader: Cell<u64>,
    /// The quorum queues' Raft groups this node is a member of (`group.rs`).
    groups: Rc<Groups>,
}

/// What starting a node needs.
pub struct NodeOptions<'a> {
    pub config: &'a ClusterConfig,
    /// The members and Raft configuration to start from (`Membership::load`, or a join's).
    pub membership: Membership,
    pub data_dir: &'a Path,
    /// The cluster port is bound on each of these.
    pub listen: &'a [IpAddr],
    pub machine: Rc<dyn StateMachine>,
    /// Where forwarded traffic from the peers goes, and who hears what left for them.
    pub data: Rc<dyn DataPath>,
    /// What the quorum queue groups' committed entries are applied to.
    pub groups: Rc<dyn GroupMachine>,
}

/// A member's Raft id: its index + 1 (0 is raft-rs's "none").
pub(super) fn raft_id(index: usize) -> u64 {
    index as u64 + 1
}

impl Node {
    /// Reads the durable state back, binds the cluster port, connects to the peers and starts
    /// the driver. Must run on the topology owner's executor.
    pub fn start(options: NodeOptions<'_>) -> Result<Rc<Node>, String> {
        let NodeOptions {
            config,
            membership,
            data_dir,
            listen,
            machine,
            data,
            groups,
        } = options;
        let members = membership.members().clone();
        let dir = data_dir.join("cluster");
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let (log, recovered) = RaftLog::open(&dir.join("raft.log"))?;
        show_logged_before(&recovered, machine.as_ref());
        let voters = membership.voters().to_vec();
        let (storage, applied) = memory_storage(voters, recovered)?;
        let raft_config = raft::Config {
            id: raft_id(members.local_index()),
            election_tick: RAFT_ELECTION_TICKS,
            heartbeat_tick: RAFT_HEARTBEAT_TICKS,
            applied,
            max_size_per_msg: RAFT_MESSAGE_BYTES_MAX,
            max_inflight_msgs: RAFT_INFLIGHT_MESSAGES_MAX,
            check_quorum: true,
            pre_vote: true,
            ..Default::default()
        };
        raft_config.validate().map_err(|e| e.to_string())?;
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let raw =
            RawNode::new(&raft_config, storage.clone(), &logger).map_err(|e| e.to_string())?;
        let mut links: Vec<Option<Rc<Outbound>>> = vec![None; members.names().len()];
        for index in members.current().filter(|&i| i != members.local_index()) {
            let name = &members.names()[index];
            let Some(address) = members.address_of(index) else {
                tracing::warn!(peer = %name, "no address known for a cluster member");
                continue;
            };
            links[index] = Some(new_link(name, address, index, &data));
        }
        let secret = config.secret.as_ref().map(|s| s.0.as_bytes().to_vec());
        let identity = Rc::new(Identity::new(
            members.local_name().to_string(),
            secret.unwrap_or_default(),
            current_names(&members),
        ));
        let roster = Rc::new(Roster {
            members: RefCell::new(members),
            links: RefCell::new(links),
        });
        let groups = Groups::new(
            roster.clone(),
            dir.clone(),
            groups,
            config.quorum_compact_bytes,
        );
        let node = Rc::new(Node {
            groups,
            raw: RefCell::new(raw),
            storage,
            log: RefCell::new(log),
            roster,
            membership: RefCell::new(membership),
            data_dir: data_dir.to_path_buf(),
            identity: identity.clone(),
            data: data.clone(),
            inbox: RefCell::new(VecDeque::new()),
            wake: Notify::default(),
            pending: RefCell::new(HashMap::new()),
            next_seq: Cell::new(0),
            machine,
            leader: Cell::new(0),
        });
        node.listen(listen, config.port, identity.clone(), data)?;
        let outbound: Vec<Rc<Outbound>> = node
            .roster
            .links
            .borrow()
            .iter()
            .flatten()
            .cloned()
            .collect();
        for link in outbound {
            glommio::spawn_local(link.run(identity.clone())).detach();
        }
        glommio::spawn_local(node.clone().drive()).detach();
        glommio::spawn_local(node.groups.clone().drive()).detach();
        let members = node.members();
        tracing::info!(
            node = members.local_name(),
            members = ?current_names(&members),
            applied,
            "cluster node started"
        );
        Ok(node)
    }

    fn listen(
        self: &Rc<Self>,
        listen: &[IpAddr],
        port: u16,
        identity: Rc<Identity>,
        data: Rc<dyn DataPath>,
    ) -> Result<(), String> {
        let weak: Weak<Node> = Rc::downgrade(self);
        let raft: Rc<link::Deliver> = Rc::new(move |peer: &str, bytes: &[u8]| {
            if let Some(node) = weak.upgrade() {
                node.receive(peer, bytes);
            }
        });
        let roster = self.roster.clone();
        let data_for_closed = data.clone();
        let path = data;
        let data: Rc<link::DeliverData> = Rc::new(move |peer: &str, payload: Vec<u8>| {
            let index = roster.members().index_of(peer);
            let data = path.clone();
            Box::pin(async move {
                if let Some(index) = index {
                    data.received(index, payload).await;
                }
            })
        });
        // A peer's connection to us ending is the link down too: what we forwarded may still be
        // accepted, but answers and deliveries it sends can no longer come this way.
        let roster = self.roster.clone();
        let closed: Rc<dyn Fn(&str)> = Rc::new(move |peer: &str| {
            let index = roster.members().index_of(peer);
            if let Some(index) = index {
                data_for_closed.link_down(index);
            }
        });
        let groups = Rc::downgrade(&self.groups);
        let group: Rc<link::Deliver> = Rc::new(move |peer: &str, bytes: &[u8]| {
            if let Some(groups) = groups.upgrade() {
                groups.receive(peer, bytes);
            }
        });
        let weak: Weak<Node> = Rc::downgrade(self);
        let join: Rc<link::DeliverJoin> = Rc::new(move |name: &str, address: SocketAddr| {
            let (weak, name) = (weak.clone(), name.to_string());
            Box::pin(async move {
                match weak.upgrade() {
                    Some(node) => node.admit(&name, address).await,
                    None => Err("the node is stopping".to_string()),
                }
            })
        });
        let receivers = Rc::new(link::Receivers {
            raft,
            group,
            data,
            closed,
            join,
        });
        for ip in listen {
            let address = SocketAddr::new(*ip, port);
            let listener = glommio::net::TcpListener::bind(address)
                .map_err(|e| format!("cannot listen on the cluster port {address}: {e}"))?;
            glommio::spawn_local(link::serve(listener, identity.clone(), receivers.clone()))
                .detach();
        }
        Ok(())
    }

    /// The members as this node knows them now (they change when a node joins or leaves).
    pub fn members(&self) -> Members {
        self.roster.members().clone()
    }

    /// The quorum queue groups this node is a member of.
    pub fn groups(&self) -> &Rc<Groups> {
        &self.groups
    }

    /// Every member, this node first, with whether it is reachable now.
    pub fn peer_states(&self) -> Vec<PeerState> {
        let members = self.roster.members();
        let mut states = vec![PeerState {
            name: members.local_name().to_string(),
            running: true,
        }];
        for index in members.current().filter(|&i| i != members.local_index()) {
            states.push(PeerState {
                name: members.names()[index].clone(),
                running: self.peer_is_up(index),
            });
        }
        states
    }

    /// Queues a data payload for member `peer` (see `link::Outbound::send_data`): `Some(end)`
    /// once accepted (gone when `DataPath::data_gone` reaches `end`), `None` when refused.
    pub fn send_data(&self, peer: usize, payload: Vec<u8>) -> Option<u64> {
        self.roster.link(peer)?.send_data(payload)
    }

    /// Whether the outbound link to member `peer` is up now.
    pub fn peer_is_up(&self, peer: usize) -> bool {
        self.roster.link(peer).is_some_and(|link| link.is_up())
    }

    /// The current leader's name, if one is known.
    pub fn leader_name(&self) -> Option<String> {
        let leader = self.leader.get();
        let index = usize::try_from(leader.checked_sub(1)?).ok()?;
        self.roster.members().names().get(index).cloned()
    }

    /// Proposes `changes`; returns once a majority committed them and this node applied them,
    /// or an error when that did not happen within `CLUSTER_PROPOSE_TIMEOUT` (the change may
    /// still commit later: the client was not told it did).
    pub async fn propose(&self, changes: &[TopologyChange]) -> Result<(), AmqpError> {
        let data = encode_changes(changes);
        self.propose_with(|raw, context| raw.propose(context, data))
            .await
    }

    /// Proposes one member change (`membership.rs`): member `index` joins (AddNode) or leaves
    /// (RemoveNode), `context` naming it; returns as `propose` does, once applied here.
    async fn propose_member_change(
        &self,
        kind: ConfChangeType,
        index: usize,
        context: Vec<u8>,
    ) -> Result<(), AmqpError> {
        let mut change = ConfChange::default();
        change.set_change_type(kind);
        change.node_id = raft_id(index);
        change.set_context(Bytes::from(context));
        self.propose_with(|raw, entry_context| raw.propose_conf_change(entry_context, change))
            .await
    }

    /// One proposal made by `propose` (given the entry's context: this node and a sequence
    /// number), waited for until it is applied here.
    async fn propose_with(
        &self,
        propose: impl FnOnce(&mut RawNode<MemStorage>, Vec<u8>) -> raft::Result<()>,
    ) -> Result<(), AmqpError> {
        // Refused before it enters any log, so this refusal is certain: nothing commits later.
        self.check_reachable()?;
        if self.pending.borrow().len() >= CLUSTER_PROPOSALS_PENDING_MAX {
            return Err(unavailable(
                "too many topology changes waiting for the cluster",
            ));
        }
        let seq = self.next_seq.get() + 1;
        self.next_seq.set(seq);
        let (sender, receiver) = oneshot();
        self.pending.borrow_mut().insert(seq, sender);
        let context = proposal_context(self.roster.local_raft_id(), seq);
        let proposed = propose(&mut self.raw.borrow_mut(), context);
        if let Err(error) = proposed {
            self.pending.borrow_mut().remove(&seq);
            tracing::warn!(%error, "topology change not proposed");
            return Err(unavailable("no cluster leader is reachable"));
        }
        self.wake.notify();
        let applied =
            glommio::timer::timeout(CLUSTER_PROPOSE_TIMEOUT, async { Ok(receiver.await) }).await;
        self.pending.borrow_mut().remove(&seq);
        match applied {
            Ok(Some(outcome)) => outcome,
            _ => Err(unavailable(&format!(
                "not committed by a majority of the cluster within {} s (it may still be \
                 applied)",
                CLUSTER_PROPOSE_TIMEOUT.as_secs()
            ))),
        }
    }

    /// Whether a proposal made now can commit: a leader is known, it is this node or its link
    /// is up, and links to a majority (this node included) are up. A node cut off from the
    /// majority answers at once instead of queueing a proposal that would reach the leader when
    /// the links heal, long after its client was told it failed.
    fn check_reachable(&self) -> Result<(), AmqpError> {
        let links = self.roster.links.borrow();
        let up = 1 + links.iter().flatten().filter(|l| l.is_up()).count();
        drop(links);
        let count = self.roster.members().current_count();
        if up * 2 <= count {
            return Err(unavailable(&format!(
                "only {up} of the cluster's {count} nodes are reachable, a majority is needed"
            )));
        }
        let leader = self.leader.get();
        let Some(leader_index) = leader.checked_sub(1).map(|i| i as usize) else {
            return Err(unavailable(
                "no cluster leader is known (an election is under way)",
            ));
        };
        if leader_index != self.roster.members().local_index() && !self.peer_is_up(leader_index) {
            return Err(unavailable(
                "the cluster leader is not reachable from this node",
            ));
        }
        Ok(())
    }

    /// A Raft message from `peer` (who proved the secret): checked, then queued for the driver.
    fn receive(&self, peer: &str, bytes: &[u8]) {
        let Ok(message) = Message::parse_from_bytes(bytes) else {
            tracing::warn!(peer, "cluster peer sent a malformed Raft message");
            return;
        };
        let from = self.roster.members().index_of(peer).map(raft_id);
        let to_us = message.get_to() == self.roster.local_raft_id();
        if from != Some(message.get_from()) || !to_us {
            tracing::warn!(peer, "cluster peer sent a Raft message under another name");
            return;
        }
        let mut inbox = self.inbox.borrow_mut();
        if inbox.len() >= CLUSTER_INBOX_MESSAGES_MAX {
            return;
        }
        inbox.push_back(message);
        drop(inbox);
        self.wake.notify();
    }

    async fn drive(self: Rc<Self>) {
        let mut next_tick = Instant::now() + RAFT_TICK;
        loop {
            let idle = self.inbox.borrow().is_empty() && !self.raw.borrow().has_ready();
            wait_for_tick_or_wake(idle, next_tick, &self.wake).await;
            if Instant::now() >= next_tick {
                self.raw.borrow_mut().tick();
                next_tick = Instant::now() + RAFT_TICK;
            }
            let messages: Vec<Message> = self.inbox.borrow_mut().drain(..).collect();
            for message in messages {
                // A message for an old term or an unknown peer is Raft's to drop.
                let _ = self.raw.borrow_mut().step(message);
            }
            if let Err(error) = self.handle_ready().await {
                // Acknowledging anything after a failed write would break Raft's promise.
                tracing::error!(%error, "Raft log write failed: this node stops taking part");
                return;
            }
        }
    }

    async fn handle_ready(&self) -> Result<(), String> {
        let mut ready = {
            let mut raw = self.raw.borrow_mut();
            if !raw.has_ready() {
                return Ok(());
            }
            raw.ready()
        };
        if let Some(soft) = ready.ss() {
            self.note_leader(soft.leader_id, soft.raft_state);
        }
        // A leader may send before persisting (raft-rs: `messages`); the rest wait for fsync.
        self.send(ready.take_messages());
        if !ready.entries().is_empty() {
            self.storage
                .wl()
                .append(ready.entries())
                .map_err(|e| e.to_string())?;
            self.log.borrow_mut().append_entries(ready.entries())?;
        }
        if let Some(hard_state) = ready.hs() {
            self.storage.wl().set_hardstate(hard_state.clone());
            self.log.borrow_mut().set_hard_state(hard_state)?;
        }
        self.log.borrow_mut().sync()?;
        let committed = ready.take_committed_entries();
        self.send(ready.take_persisted_messages());
        let mut light = self.raw.borrow_mut().advance(ready);
        if let Some(commit) = light.commit_index() {
            let mut core = self.storage.wl();
            core.mut_hard_state().set_commit(commit);
            let hard_state = core.hard_state().clone();
            drop(core);
            self.log.borrow_mut().set_hard_state(&hard_state)?;
        }
        self.send(light.take_messages());
        let later = light.take_committed_entries();
        self.apply(committed).await?;
        self.apply(later).await?;
        self.raw.borrow_mut().advance_apply();
        self.log.borrow_mut().sync()
    }

    fn note_leader(&self, leader: u64, role: StateRole) {
        if leader != self.leader.get() {
            self.leader.set(leader);
            let name = self.leader_name().unwrap_or_else(|| "none".to_string());
            tracing::info!(leader = %name, role = ?role, "cluster leader changed");
        }
    }

    fn send(&self, messages: Vec<Message>) {
        for message in messages {
            let index = message
                .get_to()
                .checked_sub(1)
                .and_then(|i| usize::try_from(i).ok());
            let Some(link) = index.and_then(|i| self.roster.link(i)) else {
                continue;
            };
            // A forwarded proposal waiting for a link to come back would commit after its client
            // was answered; dropped, the proposer's wait ends in the refusal it already sent.
            if message.get_msg_type() == MessageType::MsgPropose && !link.is_up() {
                continue;
            }
            match message.write_to_bytes() {
                Ok(bytes) => link.send(bytes),
                Err(error) => tracing::error!(%error, "cannot encode a Raft message"),
            }
        }
    }

    /// Applies committed entries in log order and wakes their proposers here. `Err`: the
    /// members file could not be written (this node stops taking part).
    async fn apply(&self, entries: Vec<Entry>) -> Result<(), String> {
        for entry in entries {
            let index = entry.get_index();
            match entry.get_entry_type() {
                EntryType::EntryNormal if !entry.get_data().is_empty() => {
                    let outcome = match decode_changes(Bytes::copy_from_slice(entry.get_data())) {
                        Ok(changes) => self.machine.apply(changes).await,
                        Err(error) => {
                            tracing::error!(index, %error, "a committed topology entry cannot be read; skipped");
                            Err(unavailable("the committed change could not be read back"))
                        }
                    };
                    self.wake_proposer(entry.get_context(), outcome);
                }
                EntryType::EntryConfChange => {
                    let outcome = self.apply_member_change(&entry).await?;
                    let outcome = outcome.map_err(|reason| unavailable(&reason));
                    self.wake_proposer(entry.get_context(), outcome);
                }
                // Never proposed here; raft-rs's empty entries carry no data.
                EntryType::EntryNormal | EntryType::EntryConfChangeV2 => {}
            }
            self.log.borrow_mut().set_applied(index);
        }
        Ok(())
    }

    /// A committed member change, decided against the members the entries before it left
    /// (`membership::decide`, the same on every node): applied to raft-rs's configuration,
    /// kept in the members file, then the links and every shard follow. `Ok(Err)`: refused
    /// (nothing changed); `Err`: the members file could not be written.
    async fn apply_member_change(&self, entry: &Entry) -> Result<Result<(), String>, String> {
        let index = entry.get_index();
        let change = match ConfChange::parse_from_bytes(entry.get_data()) {
            Ok(change) => change,
            Err(error) => return Ok(Err(format!("a malformed member change: {error}"))),
        };
        let verdict = membership::decide(
            &self.roster.members(),
            change.get_change_type(),
            change.node_id,
            change.get_context(),
        );
        if let Verdict::Refused(reason) = &verdict {
            tracing::warn!(index, %reason, "a cluster member change was refused");
            return Ok(Err(reason.clone()));
        }
        let applied = self.raw.borrow_mut().apply_conf_change(&change);
        let conf_state = match applied {
            Ok(conf_state) => conf_state,
            Err(error) => {
                tracing::warn!(index, %error, "a cluster member change was not applied");
                return Ok(Err(error.to_string()));
            }
        };
        self.storage.wl().set_conf_state(conf_state.clone());
        let mut voters = conf_state.voters.clone();
        voters.sort_unstable();
        let mut members = self.members();
        match &verdict {
            Verdict::Add {
                index,
                name,
                address,
            } => {
                let added = members.add(name, Some(*address));
                assert_eq!(added, *index, "decide gives the next index");
            }
            Verdict::Remove { index } => members.forget(*index),
            Verdict::Known | Verdict::Refused(_) => {}
        }
        self.membership
            .borrow_mut()
            .set(members.clone(), voters.clone());
        self.membership.borrow().save(&self.data_dir)?;
        tracing::info!(index, ?verdict, ?voters, "cluster membership changed");
        if verdict != Verdict::Known {
            self.follow_members(members.clone(), &verdict);
            self.machine.members_changed(members).await;
        }
        Ok(Ok(()))
    }

    /// The roster, the links and who the handshake accepts, after a change was applied.
    fn follow_members(&self, members: Members, verdict: &Verdict) {
        self.identity.set_members(current_names(&members));
        *self.roster.members.borrow_mut() = members;
        let mut links = self.roster.links.borrow_mut();
        match verdict {
            Verdict::Add {
                index,
                name,
                address,
            } => {
                let link = new_link(name, *address, *index, &self.data);
                links.resize(*index, None);
                links.push(Some(link.clone()));
                glommio::spawn_local(link.run(self.identity.clone())).detach();
            }
            Verdict::Remove { index } => {
                if let Some(link) = links.get_mut(*index).and_then(Option::take) {
                    link.stop();
                }
            }
            Verdict::Known | Verdict::Refused(_) => {}
        }
    }

    /// A node asking to join (it proved the secret, `link::serve_join`): proposed as the next
    /// member, answered with the members it is to keep once the change is applied here. A
    /// node that is a member already at that address gets the same answer (a join retried).
    async fn admit(&self, name: &str, address: SocketAddr) -> Result<Vec<u8>, String> {
        let (member, next) = {
            let members = self.roster.members();
            let member = members.current().find(|&i| members.names()[i] == name);
            (
                member.map(|i| (i, members.address_of(i))),
                members.next_index(),
            )
        };
        let index = match member {
            _ if !crate::config::is_valid_node_name(name) => {
                return Err(format!("{name:?} is not a node name"));
            }
            Some((index, known)) if known == Some(address) => index,
            Some((_, known)) => {
                let at = known.map_or("this node".to_string(), |a| a.to_string());
                return Err(format!(
                    "a member named {name} is in the cluster already, at {at}"
                ));
            }
            None if next >= CLUSTER_NODES_MAX => {
                return Err(format!(
                    "the cluster has had {CLUSTER_NODES_MAX} members, the most it may"
                ));
            }
            None => {
                let context = membership::encode_context(name, Some(address));
                self.propose_member_change(ConfChangeType::AddNode, next, context)
                    .await
                    .map_err(|e| e.text)?;
                next
            }
        };
        let answer = self.membership.borrow().for_joiner(index);
        if answer.members().local_name() != name {
            return Err(format!(
                "{name} was not added: another change took index {index}"
            ));
        }
        Ok(answer.encode().into_bytes())
    }

    /// `forget_cluster_node`: member `name` leaves, through the log; returns once applied here.
    pub async fn forget(&self, name: &str) -> Result<(), AmqpError> {
        let index = {
            let members = self.roster.members();
            let index = members.index_of(name).filter(|&i| members.is_member(i));
            match index {
                Some(i) if i == members.local_index() => {
                    return Err(unavailable("a node cannot forget itself"));
                }
                Some(i) => i,
                None => return Err(unavailable(&format!("{name} is not a cluster member"))),
            }
        };
        let context = membership::encode_context(name, None);
        self.propose_member_change(ConfChangeType::RemoveNode, index, context)
            .await
    }

    fn wake_proposer(&self, context: &[u8], outcome: Result<(), AmqpError>) {
        let Some((node, seq)) = parse_context(context) else {
            return;
        };
        if node != self.roster.local_raft_id() {
            return;
        }
        if let Some(sender) = self.pending.borrow_mut().remove(&seq) {
            sender.send(outcome);
        }
    }
}

fn new_link(
    name: &str,
    address: SocketAddr,
    index: usize,
    data: &Rc<dyn DataPath>,
) -> Rc<Outbound> {
    let outbound = Outbound::new(name.to_string(), address);
    outbound.attach_data_path(index, data.clone());
    outbound
}

fn current_names(members: &Members) -> Vec<String> {
    members
        .current()
        .map(|i| members.names()[i].clone())
        .collect()
}

/// Hands the machine every entry the log held at this start (`StateMachine::logged_before`).
fn show_logged_before(recovered: &Recovered, machine: &dyn StateMachine) {
    for entry in &recovered.entries {
        if entry.get_entry_type() != EntryType::EntryNormal || entry.get_data().is_empty() {
            continue;
        }
        match decode_changes(Bytes::copy_from_slice(entry.get_data())) {
            Ok(changes) => machine.logged_before(&changes),
            Err(error) => {
                tracing::warn!(index = entry.get_index(), %error, "a logged topology entry cannot be read back")
            }
        }
    }
}

/// The in-memory mirror of what the log recovered, and the applied index to resume from.
pub(super) fn memory_storage(
    voters: Vec<u64>,
    recovered: Recovered,
) -> Result<(MemStorage, u64), String> {
    let storage = MemStorage::new_with_conf_state(ConfState::from((voters, Vec::<u64>::new())));
    let Recovered {
        entries,
        hard_state,
        applied,
    } = recovered;
    if entries.first().is_some_and(|e| e.get_index() != 1) {
        return Err("the Raft log does not start at index 1".to_string());
    }
    let last_index = entries.last().map_or(0, Entry::get_index);
    let mut core = storage.wl();
    core.append(&entries).map_err(|e| e.to_string())?;
    if let Some(mut hard_state) = hard_state {
        // What the disk says is checked, never trusted into a panic.
        let commit = hard_state.get_commit().min(last_index);
        hard_state.set_commit(commit);
        core.set_hardstate(hard_state);
    }
    drop(core);
    let commit = storage
        .initial_state()
        .map_err(|e| e.to_string())?
        .hard_state
        .get_commit();
    Ok((storage, applied.min(commit)))
}

fn unavailable(text: &str) -> AmqpError {
    // RabbitMQ's metadata store answers a change it cannot commit with a timeout error.
    AmqpError::new(
        reply_code::INTERNAL_ERROR,
        format!("INTERNAL_ERROR - {text}"),
    )
}

/// A Raft driver's sleep: with nothing to do (`idle`), until `next_tick` or sooner when `wake`
/// rings; with work, not at all (the topology's group and the quorum queues' alike).
pub(super) async fn wait_for_tick_or_wake(idle: bool, next_tick: Instant, wake: &Notify) {
    let now = Instant::now();
    if idle && now < next_tick {
        let _ = glommio::timer::timeout(next_tick - now, async {
            wake.wait().await;
            Ok(())
        })
        .await;
    }
}

/// A proposal's Raft context: the proposing node and its sequence number (the topology's
/// group and the quorum queues' alike).
pub(super) fn proposal_context(node: u64, seq: u64) -> Vec<u8> {
    let mut context = Vec::with_capacity(16);
    context.put_u64(node);
    context.put_u64(seq);
    context
}

pub(super) fn parse_context(mut context: &[u8]) -> Option<(u64, u64)> {
    if context.len() != 16 {
        return None;
    }
    Some((context.get_u64(), context.get_u64()))
}

/// `[u32 count]` then `[u32 length][change]` per change.
fn encode_changes(changes: &[TopologyChange]) -> Vec<u8> {
    let mut out = BytesMut::new();
    out.put_u32(changes.len() as u32);
    let mut one = BytesMut::new();
    for change in changes {
        one.clear();
        persist::encode_change(change, &mut one);
        out.put_u32(one.len() as u32);
        out.extend_from_slice(&one);
    }
    out.to_vec()
}

fn decode_changes(mut bytes: Bytes) -> Result<Vec<TopologyChange>, String> {
    let malformed = || "malformed topology entry".to_string();
    if bytes.remaining() < 4 {
        return Err(malformed());
    }
    let count = bytes.get_u32() as usize;
    if count > CHANGES_PER_REQUEST_MAX {
        return Err(malformed());
    }
    let mut changes = Vec::with_capacity(count);
    for _ in 0..count {
        if bytes.remaining() < 4 {
            return Err(malformed());
        }
        let length = bytes.get_u32() as usize;
        if bytes.remaining() < length {
            return Err(malformed());
        }
        let change = persist::decode_change(bytes.split_to(length)).map_err(|e| e.to_string())?;
        changes.push(change);
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_and_contexts_round_trip_and_garbage_is_refused() {
        let changes = vec![TopologyChange::DeleteVhost {
            name: "v".to_string(),
        }];
        let bytes = encode_changes(&changes);
        let back = decode_changes(Bytes::from(bytes.clone())).unwrap();
        assert_eq!(back.len(), 1);
        for cut in 0..bytes.len() {
            assert!(decode_changes(Bytes::copy_from_slice(&bytes[..cut])).is_err());
        }
        assert!(decode_changes(Bytes::from_static(&[0xff, 0xff, 0xff, 0xff])).is_err());
        assert_eq!(parse_context(&proposal_context(2, 9)), Some((2, 9)));
        assert_eq!(parse_context(b"short"), None);
    }
}
