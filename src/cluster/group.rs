//! Quorum queue groups: one raft-rs `RawNode` per replicated quorum queue, over every member
//! of the cluster, all driven by one task on the topology owner's executor (the one that holds
//! the peer links): one tick for all (`RAFT_TICK`), then one `Ready` pass over the groups with
//! work, each group's entries and hard state appended to its own file (`RaftLog`, the cluster
//! log code: `cluster/quorum-<queue>.log`) and fdatasynced before any message acknowledging
//! them leaves; the turn's messages to one peer go as one `Kind::Group` frame (more when they
//! do not fit one).
//!
//! What an entry holds is the shard's business (opaque bytes): committed entries are handed
//! to the [`GroupMachine`] in log order with the proposal's sequence number when this node
//! proposed it, and after each `Ready` the machine hears this node's view of the leader
//! ([`GroupView`]). A leader *serves* (hosts the queue) only once it has committed an entry of
//! its own term and applied everything committed, so its copy holds every committed entry.
//!
//! Not yet: compaction (a group's log holds every entry since the queue was declared, up to
//! `QUORUM_GROUP_LOG_BYTES_MAX`, then proposals are refused), the shard's O_DIRECT WAL (the
//! cluster log's buffered file and fdatasync block the executor while they run).

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Instant;

use bytes::{Buf, BufMut};
use protobuf::Message as _;
use raft::eraftpb::{Entry, EntryType, Message};
use raft::storage::MemStorage;
use raft::{RawNode, StateRole};

use super::link::Outbound;
use super::log::RaftLog;
use super::node::{
    memory_storage, parse_context, proposal_context, raft_id, wait_for_tick_or_wake,
};
use super::Members;
use crate::broker::QueueId;
use crate::limits::{
    CLUSTER_FRAME_BYTES_MAX, QUORUM_ENTRY_BYTES_MAX, QUORUM_GROUP_EARLY_MESSAGES_MAX,
    QUORUM_GROUP_INBOX_MESSAGES_MAX, QUORUM_GROUP_LOG_BYTES_MAX, RAFT_ELECTION_TICKS,
    RAFT_HEARTBEAT_TICKS, RAFT_INFLIGHT_MESSAGES_MAX, RAFT_MESSAGE_BYTES_MAX, RAFT_TICK,
};
use crate::sync::Notify;

/// This node's view of one group's leader, after a `Ready`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupView {
    /// The leader's member index, if one is known.
    pub leader: Option<usize>,
    pub term: u64,
    /// This node leads, has committed an entry of its term and applied every committed one.
    pub serving: bool,
}

/// What the groups' committed entries are applied to (the shard hosting the queues).
pub trait GroupMachine {
    /// Entry `index` of group `queue` is committed; `proposal`: this node's sequence number,
    /// when it proposed it. Entries come in log order, each once per run.
    fn apply(&self, queue: QueueId, index: u64, data: &[u8], proposal: Option<u64>);
    /// This node's view of the group changed.
    fn view_changed(&self, queue: QueueId, view: GroupView);
}

struct Group {
    raw: RawNode<MemStorage>,
    storage: MemStorage,
    log: RaftLog,
    view: GroupView,
    path: PathBuf,
}

pub struct Groups {
    members: Members,
    links: Vec<Option<Rc<Outbound>>>,
    dir: PathBuf,
    groups: RefCell<HashMap<QueueId, Group>>,
    inbox: RefCell<VecDeque<(QueueId, Message)>>,
    /// Messages for a group not created here yet (its declare is committed, not yet applied
    /// here): handed to it when it is.
    early: RefCell<VecDeque<(QueueId, Message)>>,
    wake: Notify,
    next_seq: Cell<u64>,
    machine: Rc<dyn GroupMachine>,
}

impl Groups {
    pub(super) fn new(
        members: Members,
        links: Vec<Option<Rc<Outbound>>>,
        dir: PathBuf,
        machine: Rc<dyn GroupMachine>,
    ) -> Rc<Groups> {
        Rc::new(Groups {
            members,
            links,
            dir,
            groups: RefCell::new(HashMap::new()),
            inbox: RefCell::new(VecDeque::new()),
            early: RefCell::new(VecDeque::new()),
            wake: Notify::default(),
            next_seq: Cell::new(0),
            machine,
        })
    }

    pub fn contains(&self, queue: QueueId) -> bool {
        self.groups.borrow().contains_key(&queue)
    }

    /// Creates (or, after a restart, reopens) the group of `queue` over every member; its
    /// committed entries are applied again from the first. `campaign`: this node starts an
    /// election at once (the declaring node, so the group has a leader before the declare-ok).
    pub fn add(&self, queue: QueueId, campaign: bool) -> Result<(), String> {
        if self.contains(queue) {
            return Ok(());
        }
        let path = self.dir.join(format!("quorum-{queue}.log"));
        let (log, recovered) = RaftLog::open(&path)?;
        let fresh = recovered.hard_state.is_none() && recovered.entries.is_empty();
        let voters: Vec<u64> = (0..self.members.names().len()).map(raft_id).collect();
        let (storage, _) = memory_storage(voters, recovered)?;
        let config = raft::Config {
            id: raft_id(self.members.local_index()),
            election_tick: RAFT_ELECTION_TICKS,
            heartbeat_tick: RAFT_HEARTBEAT_TICKS,
            applied: 0,
            max_size_per_msg: RAFT_MESSAGE_BYTES_MAX,
            max_inflight_msgs: RAFT_INFLIGHT_MESSAGES_MAX,
            check_quorum: true,
            pre_vote: true,
            ..Default::default()
        };
        config.validate().map_err(|e| e.to_string())?;
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let mut raw = RawNode::new(&config, storage.clone(), &logger).map_err(|e| e.to_string())?;
        if campaign && fresh {
            raw.campaign().map_err(|e| e.to_string())?;
        }
        let view = GroupView {
            leader: None,
            term: 0,
            serving: false,
        };
        let group = Group {
            raw,
            storage,
            log,
            view,
            path,
        };
        self.groups.borrow_mut().insert(queue, group);
        let mut early = self.early.borrow_mut();
        let (mine, others): (VecDeque<_>, VecDeque<_>) =
            early.drain(..).partition(|(q, _)| *q == queue);
        *early = others;
        drop(early);
        self.inbox.borrow_mut().extend(mine);
        self.wake.notify();
        Ok(())
    }

    /// The queue was deleted: its group and its log go.
    pub fn remove(&self, queue: QueueId) {
        if let Some(group) = self.groups.borrow_mut().remove(&queue) {
            let _ = std::fs::remove_file(&group.path);
        }
    }

    /// Proposes `data` to the group of `queue`: `Some(seq)` once handed to Raft (the entry
    /// may still never commit), `None` when refused at once (no such group, an entry over
    /// `QUORUM_ENTRY_BYTES_MAX`, the log over its bound, Raft dropped it).
    pub fn propose(&self, queue: QueueId, data: Vec<u8>) -> Option<u64> {
        if data.len() > QUORUM_ENTRY_BYTES_MAX {
            return None;
        }
        let mut groups = self.groups.borrow_mut();
        let group = groups.get_mut(&queue)?;
        if group.log.size_bytes() > QUORUM_GROUP_LOG_BYTES_MAX {
            return None;
        }
        let seq = self.next_seq.get() + 1;
        self.next_seq.set(seq);
        let context = proposal_context(raft_id(self.members.local_index()), seq);
        group.raw.propose(context, data).ok()?;
        drop(groups);
        self.wake.notify();
        Some(seq)
    }

    /// A `Kind::Group` frame from `peer` (who proved the secret): each message checked, then
    /// queued for the driver. A malformed batch is dropped whole.
    pub(super) fn receive(&self, peer: &str, mut bytes: &[u8]) {
        let Some(from) = self.members.index_of(peer).map(raft_id) else {
            return;
        };
        let me = raft_id(self.members.local_index());
        let mut parsed = Vec::new();
        while bytes.has_remaining() {
            if bytes.remaining() < 12 {
                tracing::warn!(peer, "cluster peer sent a malformed quorum group batch");
                return;
            }
            let queue = bytes.get_u64();
            let length = bytes.get_u32() as usize;
            if bytes.remaining() < length {
                tracing::warn!(peer, "cluster peer sent a truncated quorum group batch");
                return;
            }
            let Ok(message) = Message::parse_from_bytes(&bytes[..length]) else {
                tracing::warn!(peer, "cluster peer sent a malformed quorum group message");
                return;
            };
            bytes.advance(length);
            if message.get_from() != from || message.get_to() != me {
                tracing::warn!(peer, "cluster peer sent a group message under another name");
                return;
            }
            parsed.push((queue, message));
        }
        let mut inbox = self.inbox.borrow_mut();
        for item in parsed {
            if inbox.len() >= QUORUM_GROUP_INBOX_MESSAGES_MAX {
                break; // Raft retransmits what is lost.
            }
            inbox.push_back(item);
        }
        drop(inbox);
        self.wake.notify();
    }

    pub(super) async fn drive(self: Rc<Self>) {
        let mut next_tick = Instant::now() + RAFT_TICK;
        loop {
            let idle = self.inbox.borrow().is_empty()
                && !self.groups.borrow().values().any(|g| g.raw.has_ready());
            wait_for_tick_or_wake(idle, next_tick, &self.wake).await;
            if Instant::now() >= next_tick {
                for group in self.groups.borrow_mut().values_mut() {
                    group.raw.tick();
                }
                next_tick = Instant::now() + RAFT_TICK;
            }
            self.step_inbox();
            let mut out: Vec<Vec<u8>> = vec![Vec::new(); self.members.names().len()];
            let ready: Vec<QueueId> = self
                .groups
                .borrow()
                .iter()
                .filter(|(_, g)| g.raw.has_ready())
                .map(|(&q, _)| q)
                .collect();
            for queue in ready {
                if let Err(error) = self.handle_ready(queue, &mut out) {
                    // Acknowledging anything after a failed write would break Raft's promise.
                    tracing::error!(queue, %error, "quorum group log write failed: this node leaves the group");
                    self.groups.borrow_mut().remove(&queue);
                }
            }
            self.flush(out);
            // Other tasks (the publishers feeding the proposals) run between turns.
            glommio::yield_if_needed().await;
        }
    }

    fn step_inbox(&self) {
        let messages: Vec<(QueueId, Message)> = self.inbox.borrow_mut().drain(..).collect();
        let mut groups = self.groups.borrow_mut();
        for (queue, message) in messages {
            match groups.get_mut(&queue) {
                // A message for an old term or an unknown peer is Raft's to drop.
                Some(group) => {
                    let _ = group.raw.step(message);
                }
                None => {
                    let mut early = self.early.borrow_mut();
                    if early.len() >= QUORUM_GROUP_EARLY_MESSAGES_MAX {
                        early.pop_front();
                    }
                    early.push_back((queue, message));
                }
            }
        }
    }

    /// One `Ready` of one group: persist + fdatasync, collect messages, apply, then report the
    /// view. The machine is called with no borrow held (it proposes settlements back).
    fn handle_ready(&self, queue: QueueId, out: &mut [Vec<u8>]) -> Result<(), String> {
        let committed = {
            let mut groups = self.groups.borrow_mut();
            let Some(group) = groups.get_mut(&queue) else {
                return Ok(());
            };
            let mut ready = group.raw.ready();
            collect(queue, ready.take_messages(), out);
            if !ready.entries().is_empty() {
                group
                    .storage
                    .wl()
                    .append(ready.entries())
                    .map_err(|e| e.to_string())?;
                group.log.append_entries(ready.entries())?;
            }
            if let Some(hard_state) = ready.hs() {
                group.storage.wl().set_hardstate(hard_state.clone());
                group.log.set_hard_state(hard_state)?;
            }
            group.log.sync()?;
            let mut committed = ready.take_committed_entries();
            collect(queue, ready.take_persisted_messages(), out);
            let mut light = group.raw.advance(ready);
            if let Some(commit) = light.commit_index() {
                let mut core = group.storage.wl();
                core.mut_hard_state().set_commit(commit);
                let hard_state = core.hard_state().clone();
                drop(core);
                group.log.set_hard_state(&hard_state)?;
            }
            collect(queue, light.take_messages(), out);
            committed.extend(light.take_committed_entries());
            committed
        };
        self.apply(queue, committed);
        let changed = {
            let mut groups = self.groups.borrow_mut();
            let Some(group) = groups.get_mut(&queue) else {
                return Ok(());
            };
            group.raw.advance_apply();
            let raft = &group.raw.raft;
            let leader = raft.leader_id.checked_sub(1).map(|i| i as usize);
            let view = GroupView {
                leader: leader.filter(|&l| l < self.members.names().len()),
                term: raft.term,
                serving: raft.state == StateRole::Leader
                    && raft.commit_to_current_term()
                    && raft.raft_log.applied == raft.raft_log.committed,
            };
            (view != group.view).then(|| {
                group.view = view;
                view
            })
        };
        if let Some(view) = changed {
            self.machine.view_changed(queue, view);
        }
        Ok(())
    }

    fn apply(&self, queue: QueueId, entries: Vec<Entry>) {
        let me = raft_id(self.members.local_index());
        for entry in entries {
            if entry.get_entry_type() != EntryType::EntryNormal || entry.get_data().is_empty() {
                continue; // a new leader's empty entry
            }
            let proposal = parse_context(entry.get_context())
                .filter(|&(node, _)| node == me)
                .map(|(_, seq)| seq);
            self.machine
                .apply(queue, entry.get_index(), entry.get_data(), proposal);
        }
    }

    /// The turn's messages, one frame per peer (more when they do not fit one).
    fn flush(&self, out: Vec<Vec<u8>>) {
        for (index, batch) in out.into_iter().enumerate() {
            if batch.is_empty() {
                continue;
            }
            if let Some(Some(link)) = self.links.get(index) {
                for frame in split_batch(batch) {
                    link.send_group(frame);
                }
            }
        }
    }
}

/// `[u64 queue][u32 length][message]` per message, into the batch of its peer.
fn collect(queue: QueueId, messages: Vec<Message>, out: &mut [Vec<u8>]) {
    for message in messages {
        let Some(index) = message
            .get_to()
            .checked_sub(1)
            .and_then(|i| usize::try_from(i).ok())
        else {
            continue;
        };
        let Some(batch) = out.get_mut(index) else {
            continue;
        };
        match message.write_to_bytes() {
            Ok(bytes) if bytes.len() + 12 < CLUSTER_FRAME_BYTES_MAX => {
                batch.put_u64(queue);
                batch.put_u32(bytes.len() as u32);
                batch.extend_from_slice(&bytes);
            }
            Ok(_) => tracing::error!(queue, "a quorum group message over one frame was dropped"),
            Err(error) => tracing::error!(%error, "cannot encode a quorum group message"),
        }
    }
}

/// Cuts a peer's batch at message boundaries into payloads that fit one frame.
fn split_batch(batch: Vec<u8>) -> Vec<Vec<u8>> {
    let most = CLUSTER_FRAME_BYTES_MAX - 1;
    if batch.len() <= most {
        return vec![batch];
    }
    let mut frames = Vec::new();
    let mut current = Vec::new();
    let mut rest = &batch[..];
    while rest.len() >= 12 {
        let length = u32::from_be_bytes([rest[8], rest[9], rest[10], rest[11]]) as usize;
        let one = &rest[..(12 + length).min(rest.len())];
        if current.len() + one.len() > most {
            frames.push(std::mem::take(&mut current));
        }
        current.extend_from_slice(one);
        rest = &rest[one.len()..];
    }
    if !current.is_empty() {
        frames.push(current);
    }
    frames
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_batch_is_cut_at_message_boundaries() {
        let mut batch = Vec::new();
        let body = vec![7u8; CLUSTER_FRAME_BYTES_MAX / 3];
        for queue in 0..5u64 {
            batch.put_u64(queue);
            batch.put_u32(body.len() as u32);
            batch.extend_from_slice(&body);
        }
        let frames = split_batch(batch.clone());
        assert!(frames.len() >= 2);
        assert!(frames.iter().all(|f| f.len() < CLUSTER_FRAME_BYTES_MAX));
        assert_eq!(frames.concat(), batch);
        assert_eq!(parse_context(&proposal_context(3, 8)), Some((3, 8)));
    }
}
