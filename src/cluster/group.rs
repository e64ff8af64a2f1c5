//! Quorum queue groups: one raft-rs `RawNode` per replicated quorum queue, over the members
//! its declare chose and the membership changes since (`group/conf.rs`), all driven by one
//! task on the topology owner's executor (the one that holds the peer links): one tick for
//! all (`RAFT_TICK`), then one `Ready` pass over the groups with work, each group's entries
//! and hard state appended to its own file (`RaftLog`, the cluster log code:
//! `cluster/quorum-<queue>.log`) and fdatasynced before any message acknowledging
//! them leaves; the turn's messages to one peer go as one `Kind::Group` frame (more when they
//! do not fit one).
//!
//! What an entry holds is the shard's business (opaque bytes): committed entries are handed
//! to the [`GroupMachine`] in log order with the proposal's sequence number when this node
//! proposed it, and after each `Ready` the machine hears this node's view of the leader
//! ([`GroupView`]). A leader *serves* (hosts the queue) only once it has committed an entry of
//! its own term and applied everything committed, so its copy holds every committed entry.
//!
//! Compaction (issue 13), the way raft-rs means it: once a group's log holds more than the
//! threshold (`--quorum-compact-bytes`, `QUORUM_GROUP_COMPACT_BYTES`) and half of that was
//! applied since its last snapshot (a file over the threshold may hold mostly entries not
//! applied yet, which compaction must keep), the node asks the
//! machine for the queue's state at its applied index ([`GroupMachine::snapshot`]), writes it
//! to `cluster/quorum-<queue>.snapshot` (`snapshot.rs`), drops the entries up to it from the
//! storage and rewrites the log file with those after it. A leader keeps the entries a live
//! follower (link up) still lacks, until the log is past twice the threshold; a follower
//! needing entries no longer kept is sent the snapshot (`GroupStorage` answers raft-rs with
//! it), in `GroupPart` pieces when it is over a frame. A follower installs one from a `Ready`
//! (file, storage, [`GroupMachine::restore`], log rewritten) before anything else in it. At
//! start a group with a snapshot file opens from it, then the entries after it.
//!
//! The turn's log writes and fdatasyncs go through the executor's io_uring, all groups' at
//! once (`Groups::turn`): the executor serves its sessions while the disk works, and a
//! leader's appends leave for the followers before its own write is durable, so the leader's
//! and the followers' fdatasyncs overlap. Not yet: the shard's O_DIRECT WAL (a group's log is
//! a buffered file of its own), and snapshot writes and log rewrites still block the executor
//! while they run.

mod conf;

pub use conf::MemberChange;

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Instant;

use bytes::{Buf, BufMut};
use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, EntryType, Message, MessageType, Snapshot};
use raft::storage::MemStorage;
use raft::{GetEntriesContext, RawNode, SnapshotStatus, StateRole, Storage, NO_LIMIT};

use super::log::{PendingWrite, RaftLog, Recovered};
use super::node::{parse_context, proposal_context, raft_id, wait_for_tick_or_wake, Roster};
use super::snapshot::{self, GroupStorage};
use crate::broker::QueueId;
use crate::limits::{
    CLUSTER_FRAME_BYTES_MAX, QUORUM_ENTRY_BYTES_MAX, QUORUM_GROUP_EARLY_MESSAGES_MAX,
    QUORUM_GROUP_INBOX_MESSAGES_MAX, QUORUM_GROUP_LOG_BYTES_MAX, QUORUM_SNAPSHOT_BYTES_MAX,
    RAFT_ELECTION_TICKS, RAFT_HEARTBEAT_TICKS, RAFT_INFLIGHT_MESSAGES_MAX, RAFT_MESSAGE_BYTES_MAX,
    RAFT_TICK,
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
    /// The queue's state after the last entry applied (for a snapshot at that index); the
    /// group seals it (version, checksum) before it is written or sent. `None`: no state for
    /// it here (the queue is gone): the log is not compacted.
    fn snapshot(&self, queue: QueueId) -> Option<Vec<u8>>;
    /// Replaces the queue's state with what `snapshot` returned on some member; the entries
    /// after the snapshot's index are applied next. `Err`: it cannot be read (nothing changed).
    fn restore(&self, queue: QueueId, state: &[u8]) -> Result<(), String>;
    /// A membership change of the group was applied here: its voters (member indexes) now.
    fn voters_changed(&self, queue: QueueId, voters: &[usize]);
}

struct Group {
    raw: RawNode<GroupStorage>,
    storage: GroupStorage,
    log: RaftLog,
    view: GroupView,
    path: PathBuf,
    snapshot_path: PathBuf,
    /// Bytes of the entries applied since the last snapshot: what a compaction would drop.
    /// The file is compacted once this is half the threshold too (a file over the threshold
    /// may hold mostly entries not applied yet, which a compaction keeps).
    applied_bytes: u64,
    /// Bytes of the entries a leader kept in storage for a follower, up to the snapshot's
    /// index (the file holds only those after it): with the file, what the 2x rule weighs.
    held_bytes: u64,
    /// Tells this group from one of the same queue id created later (`Groups::turn` awaits
    /// writes, during which a queue may be deleted and declared again).
    generation: u64,
}

/// One group's `Ready` between `stage_ready` and `finish_ready`: its log's records on their
/// way to the disk.
struct Staged {
    queue: QueueId,
    generation: u64,
    /// The `Ready`'s number, for `on_persist_ready`.
    number: u64,
    /// It installed a snapshot: its index is applied once durable.
    has_snapshot: bool,
    write: Option<PendingWrite>,
    /// Messages that may leave only once `write` is durable (a follower's append answers).
    persisted: Vec<Message>,
    /// Members sent a snapshot by the messages already collected.
    snapshots_sent: Vec<u64>,
}

/// Where a group's entries can be dropped from, and the snapshot that replaces them.
struct Compaction {
    /// The snapshot's index (the applied one) and its entry's term.
    index: u64,
    term: u64,
    /// Entries before this one are dropped (at most `index`: a leader keeps what a live
    /// follower still lacks).
    keep_from: u64,
}

pub struct Groups {
    /// The cluster's members and links, as the topology's node keeps them.
    roster: Rc<Roster>,
    dir: PathBuf,
    groups: RefCell<HashMap<QueueId, Group>>,
    inbox: RefCell<VecDeque<(QueueId, Message)>>,
    /// Messages for a group not created here yet (its declare is committed, not yet applied
    /// here): handed to it when it is.
    early: RefCell<VecDeque<(QueueId, Message)>>,
    wake: Notify,
    next_seq: Cell<u64>,
    /// The next group's `Group::generation`.
    next_generation: Cell<u64>,
    machine: Rc<dyn GroupMachine>,
    /// `--quorum-compact-bytes`.
    compact_bytes: u64,
}

impl Groups {
    pub(super) fn new(
        roster: Rc<Roster>,
        dir: PathBuf,
        machine: Rc<dyn GroupMachine>,
        compact_bytes: u64,
    ) -> Rc<Groups> {
        Rc::new(Groups {
            compact_bytes,
            roster,
            dir,
            groups: RefCell::new(HashMap::new()),
            inbox: RefCell::new(VecDeque::new()),
            early: RefCell::new(VecDeque::new()),
            wake: Notify::default(),
            next_seq: Cell::new(0),
            next_generation: Cell::new(0),
            machine,
        })
    }

    pub fn contains(&self, queue: QueueId) -> bool {
        self.groups.borrow().contains_key(&queue)
    }

    /// Creates (or, after a restart, reopens) the group of `queue`: from its snapshot when it
    /// has one (the machine restored from it), then its committed entries are applied again
    /// from the first after it. `voters` (member indexes): the configuration the group's log
    /// starts from (its declare's members; a snapshot's own configuration replaces it), the
    /// configuration changes in the log are applied again over it. `campaign`: this node
    /// starts an election at once (the declaring node, so the group has a leader before the
    /// declare-ok).
    pub fn add(&self, queue: QueueId, voters: &[usize], campaign: bool) -> Result<(), String> {
        if self.contains(queue) {
            return Ok(());
        }
        let path = self.dir.join(format!("quorum-{queue}.log"));
        let snapshot_path = self.dir.join(format!("quorum-{queue}.snapshot"));
        let kept = snapshot::read_file(&snapshot_path)?;
        let (log, recovered) = RaftLog::open(&path)?;
        let fresh =
            kept.is_none() && recovered.hard_state.is_none() && recovered.entries.is_empty();
        let cluster = self.roster.indexes();
        if voters.is_empty() || voters.iter().any(|&v| v >= cluster) {
            return Err(format!(
                "a quorum group over members {voters:?} of {cluster}"
            ));
        }
        let voters: Vec<u64> = voters.iter().copied().map(raft_id).collect();
        if let Some(kept) = &kept {
            self.machine
                .restore(queue, snapshot::open(kept.get_data())?)
                .map_err(|e| format!("{}: {e}", snapshot_path.display()))?;
        }
        let storage = group_storage(voters, recovered, kept)?;
        let config = raft::Config {
            id: self.roster.local_raft_id(),
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
            snapshot_path,
            applied_bytes: 0,
            held_bytes: 0,
            generation: self.next_generation.get(),
        };
        self.next_generation.set(self.next_generation.get() + 1);
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

    /// The voters (member indexes) of the Raft configuration this node's group has applied.
    pub fn voters(&self, queue: QueueId) -> Option<Vec<usize>> {
        let groups = self.groups.borrow();
        let conf = groups.get(&queue)?.raw.raft.prs().conf().to_conf_state();
        let mut voters: Vec<usize> = conf
            .voters
            .iter()
            .filter_map(|&id| id.checked_sub(1).and_then(|i| usize::try_from(i).ok()))
            .collect();
        voters.sort_unstable();
        Some(voters)
    }

    /// The index of the last entry of `queue`'s group applied here.
    pub fn applied_index(&self, queue: QueueId) -> Option<u64> {
        let groups = self.groups.borrow();
        groups.get(&queue).map(|g| g.raw.raft.raft_log.applied)
    }

    /// This node's view of the group's leader, as last reported to the machine.
    pub fn view(&self, queue: QueueId) -> Option<GroupView> {
        self.groups.borrow().get(&queue).map(|g| g.view)
    }

    /// The queue was deleted: its group, its log and its snapshot go.
    pub fn remove(&self, queue: QueueId) {
        if let Some(group) = self.groups.borrow_mut().remove(&queue) {
            let _ = std::fs::remove_file(&group.path);
            let _ = std::fs::remove_file(&group.snapshot_path);
        }
    }

    /// At start: `queue`'s group files, left by a run of this node that was a member, when it
    /// was removed from the group while it was down (it holds no group of it now).
    pub fn forget_files(&self, queue: QueueId) {
        if self.contains(queue) {
            return;
        }
        for path in [
            self.dir.join(format!("quorum-{queue}.log")),
            self.dir.join(format!("quorum-{queue}.snapshot")),
        ] {
            if std::fs::remove_file(&path).is_ok() {
                tracing::info!(queue, path = %path.display(), "removed the files of a quorum group this node left");
            }
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
        let context = proposal_context(self.roster.local_raft_id(), seq);
        group.raw.propose(context, data).ok()?;
        drop(groups);
        self.wake.notify();
        Some(seq)
    }

    /// A `Kind::Group` frame from `peer` (who proved the secret): each message checked, then
    /// queued for the driver. A malformed batch is dropped whole.
    pub(super) fn receive(&self, peer: &str, mut bytes: &[u8]) {
        let Some(from) = self.roster.members().index_of(peer).map(raft_id) else {
            return;
        };
        let me = self.roster.local_raft_id();
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
            // Checked before Raft takes it: once stepped, a snapshot must be installed.
            if message.get_msg_type() == MessageType::MsgSnapshot {
                if let Err(error) = snapshot::open(message.get_snapshot().get_data()) {
                    tracing::warn!(peer, queue, %error, "cluster peer sent a damaged snapshot");
                    return;
                }
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
            self.turn().await;
            // Other tasks (the publishers feeding the proposals) run between turns.
            glommio::yield_if_needed().await;
        }
    }

    /// One `Ready` pass over the groups with work: each staged (entries and hard state
    /// appended to its log), the messages that need nothing durable sent, every staged log
    /// written and fdatasynced at once through io_uring (the executor serves its sessions
    /// meanwhile, and a leader's append reaches the followers while its own write is under
    /// way, as raft-rs intends), then each finished (the messages that waited for the disk,
    /// apply), and last the groups over their threshold compacted.
    async fn turn(&self) {
        let members = self.roster.indexes();
        let ready: Vec<QueueId> = self
            .groups
            .borrow()
            .iter()
            .filter(|(_, g)| g.raw.has_ready())
            .map(|(&q, _)| q)
            .collect();
        let mut early = Outgoing::new(members);
        let mut staged = Vec::with_capacity(ready.len());
        for queue in ready {
            match self.stage_ready(queue, &mut early) {
                Ok(Some(stage)) => staged.push(stage),
                Ok(None) => {}
                Err(error) => self.leave(queue, None, &error),
            }
        }
        self.flush(early);
        // Started together, so the groups' fdatasyncs overlap; awaited in order.
        let writes: Vec<Option<glommio::task::JoinHandle<Result<(), String>>>> = staged
            .iter_mut()
            .map(|stage| {
                stage
                    .write
                    .take()
                    .map(|write| glommio::spawn_local(write.durable()).detach())
            })
            .collect();
        let mut late = Outgoing::new(members);
        let mut finished = Vec::with_capacity(staged.len());
        for (stage, write) in staged.into_iter().zip(writes) {
            let durable = match write {
                None => Ok(()),
                Some(handle) => handle
                    .await
                    .unwrap_or_else(|| Err("the write was cancelled".to_string())),
            };
            let (queue, generation) = (stage.queue, stage.generation);
            match durable.and_then(|()| self.finish_ready(stage, &mut late)) {
                Ok(()) => finished.push((queue, generation)),
                Err(error) => self.leave(queue, Some(generation), &error),
            }
        }
        self.flush(late);
        // After the turn's messages left: a compaction's writes delay no confirm of this turn.
        for (queue, generation) in finished {
            if let Err(error) = self.maybe_compact(queue, generation).await {
                self.leave(queue, Some(generation), &error);
            }
        }
    }

    /// Acknowledging anything after a failed write would break Raft's promise: the group goes
    /// (the one of `generation`, when given: not one of the same queue declared since).
    fn leave(&self, queue: QueueId, generation: Option<u64>, error: &str) {
        let mut groups = self.groups.borrow_mut();
        if generation.is_some_and(|g| {
            groups
                .get(&queue)
                .is_some_and(|group| group.generation != g)
        }) {
            return;
        }
        tracing::error!(queue, %error, "quorum group state not persisted or installed: this node leaves the group");
        groups.remove(&queue);
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

    /// Takes one group's `Ready` the way raft-rs's asynchronous persistence means it: installs
    /// its snapshot if it has one, collects the messages that need nothing durable into `out`,
    /// appends its entries and hard state to the storage and the log, advances it
    /// (`advance_append_async`: proposals made while the write is under way go in the next
    /// `Ready`), applies its committed entries (raft-rs hands over only entries this node has
    /// durable already), reports the view, and hands over the log's records to be made
    /// durable. The machine is called with no borrow held (it proposes settlements back).
    fn stage_ready(&self, queue: QueueId, out: &mut Outgoing) -> Result<Option<Staged>, String> {
        let Some(mut ready) = self
            .groups
            .borrow_mut()
            .get_mut(&queue)
            .map(|g| g.raw.ready())
        else {
            return Ok(None);
        };
        let has_snapshot = !ready.snapshot().is_empty();
        if has_snapshot {
            // Before anything else of this Ready: its entries follow the snapshot's index.
            let snapshot = ready.snapshot().clone();
            self.machine
                .restore(queue, snapshot::open(snapshot.get_data())?)?;
            self.install(queue, snapshot)?;
        }
        let (stage, committed) = {
            let mut groups = self.groups.borrow_mut();
            let Some(group) = groups.get_mut(&queue) else {
                return Ok(None);
            };
            let snapshots_sent = out.collect(queue, ready.take_messages());
            // raft-rs says: entries, a snapshot, a new term or vote must be durable before
            // anything says so; a commit index alone need not (it is learnt again from the
            // leader) and goes with the next write.
            let must_sync = ready.must_sync();
            if !ready.entries().is_empty() {
                group
                    .storage
                    .mem()
                    .wl()
                    .append(ready.entries())
                    .map_err(|e| e.to_string())?;
                group.log.append_entries(ready.entries())?;
            }
            if let Some(hard_state) = ready.hs() {
                group.storage.mem().wl().set_hardstate(hard_state.clone());
                group.log.set_hard_state(hard_state)?;
            }
            let committed = ready.take_committed_entries();
            let persisted = ready.take_persisted_messages();
            let number = ready.number();
            group.raw.advance_append_async(ready);
            let write = if must_sync {
                group.log.take_pending()?
            } else {
                None
            };
            let stage = Staged {
                queue,
                generation: group.generation,
                number,
                has_snapshot,
                write,
                persisted,
                snapshots_sent,
            };
            (stage, committed)
        };
        let applied_bytes: u64 = committed.iter().map(entry_bytes).sum();
        self.apply(queue, committed);
        let changed = {
            let mut groups = self.groups.borrow_mut();
            let Some(group) = groups.get_mut(&queue) else {
                return Ok(Some(stage));
            };
            if !has_snapshot {
                // A snapshot's index counts as applied once it is durable (`finish_ready`).
                group.raw.advance_apply();
            }
            group.applied_bytes += applied_bytes;
            // Here, not once the write is durable: roles and terms change only in the steps
            // and ticks this Ready reports, and only here has this node applied everything
            // committed (a leader's commit moves when its write is durable, to be applied by
            // the next Ready: judged then, it would stop serving between the two).
            let raft = &group.raw.raft;
            let leader = raft.leader_id.checked_sub(1).map(|i| i as usize);
            let view = GroupView {
                leader: leader.filter(|&l| l < self.roster.indexes()),
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
        Ok(Some(stage))
    }

    /// A staged `Ready` whose records are durable: raft-rs told (`on_persist_ready`: a
    /// leader's commit may move, for the next `Ready`), the messages that waited for the disk
    /// collected into `out`, snapshots sent reported.
    fn finish_ready(&self, stage: Staged, out: &mut Outgoing) -> Result<(), String> {
        let Staged {
            queue,
            generation,
            number,
            has_snapshot,
            persisted,
            mut snapshots_sent,
            ..
        } = stage;
        {
            let mut groups = self.groups.borrow_mut();
            // Deleted (and maybe declared again) while its write was under way.
            let Some(group) = of_generation(&mut groups, queue, generation) else {
                return Ok(());
            };
            group.raw.on_persist_ready(number);
            if has_snapshot {
                group.raw.advance_apply();
            }
            snapshots_sent.extend(out.collect(queue, persisted));
            for to in snapshots_sent {
                // The pieces go in order before anything sent later: if the follower does not
                // install it, its answer to the next append says so and Raft sends it again.
                let status = if self.link_up(to) {
                    SnapshotStatus::Finish
                } else {
                    SnapshotStatus::Failure
                };
                group.raw.report_snapshot(to, status);
            }
        }
        Ok(())
    }

    /// A snapshot from the leader, the machine restored from it already: kept (file, storage),
    /// and the log rewritten without the entries it replaces.
    fn install(&self, queue: QueueId, snapshot: Snapshot) -> Result<(), String> {
        let mut groups = self.groups.borrow_mut();
        let Some(group) = groups.get_mut(&queue) else {
            return Ok(());
        };
        let index = snapshot.get_metadata().index;
        snapshot::write_file(&group.snapshot_path, &snapshot)?;
        group
            .storage
            .mem()
            .wl()
            .apply_snapshot(snapshot.clone())
            .map_err(|e| e.to_string())?;
        group.storage.set_snapshot(snapshot);
        let hard_state = group.storage.mem().rl().hard_state().clone();
        group.log = RaftLog::rewrite(&group.path, &hard_state, &[])?;
        group.applied_bytes = 0;
        group.held_bytes = 0;
        tracing::info!(queue, index, "installed snapshot");
        Ok(())
    }

    /// Compacts the group's log when it is over its threshold (see the module docs): the
    /// snapshot file and the rewritten log written through io_uring. Runs inside a turn, so no
    /// other turn appends to the group's log meanwhile; the group of `generation` only (not
    /// one of the same queue declared while a write was under way).
    async fn maybe_compact(&self, queue: QueueId, generation: u64) -> Result<(), String> {
        let Some(plan) = self.compaction_plan(queue) else {
            return Ok(());
        };
        let Some(state) = self.machine.snapshot(queue) else {
            return Ok(());
        };
        let (taken, snapshot_path) = {
            let mut groups = self.groups.borrow_mut();
            let Some(group) = of_generation(&mut groups, queue, generation) else {
                return Ok(());
            };
            let Some(data) = snapshot::seal(&state) else {
                tracing::warn!(
                    queue,
                    state_bytes = state.len(),
                    "a quorum queue too large to snapshot: its log is not compacted"
                );
                group.applied_bytes = 0;
                return Ok(());
            };
            let mut taken = Snapshot::default();
            taken.set_data(data.into());
            let conf_state: ConfState = group
                .storage
                .initial_state()
                .map_err(|e| e.to_string())?
                .conf_state;
            let meta = taken.mut_metadata();
            meta.index = plan.index;
            meta.term = plan.term;
            meta.set_conf_state(conf_state);
            (taken, group.snapshot_path.clone())
        };
        drop(state);
        snapshot::write_file_async(&snapshot_path, &taken).await?;
        let (hard_state, after, path, before_bytes) = {
            let mut groups = self.groups.borrow_mut();
            let Some(group) = of_generation(&mut groups, queue, generation) else {
                return Ok(());
            };
            group.storage.set_snapshot(taken);
            let storage = group.storage.clone();
            storage
                .mem()
                .wl()
                .compact(plan.keep_from)
                .map_err(|e| e.to_string())?;
            let last = storage.last_index().map_err(|e| e.to_string())?;
            let after = if plan.index < last {
                storage
                    .entries(
                        plan.index + 1,
                        last + 1,
                        NO_LIMIT,
                        GetEntriesContext::empty(false),
                    )
                    .map_err(|e| e.to_string())?
            } else {
                Vec::new()
            };
            let first = storage.first_index().map_err(|e| e.to_string())?;
            group.held_bytes = if first <= plan.index {
                let context = GetEntriesContext::empty(false);
                let held = storage
                    .entries(first, plan.index + 1, NO_LIMIT, context)
                    .map_err(|e| e.to_string())?;
                held.iter().map(entry_bytes).sum()
            } else {
                0
            };
            let hard_state = storage.mem().rl().hard_state().clone();
            (
                hard_state,
                after,
                group.path.clone(),
                group.log.size_bytes(),
            )
        };
        let log = RaftLog::rewrite_async(&path, &hard_state, &after).await?;
        let mut groups = self.groups.borrow_mut();
        let Some(group) = of_generation(&mut groups, queue, generation) else {
            return Ok(());
        };
        group.log = log;
        group.applied_bytes = 0;
        tracing::debug!(
            queue,
            index = plan.index,
            keep_from = plan.keep_from,
            held_bytes = group.held_bytes,
            before_bytes,
            after_bytes = group.log.size_bytes(),
            "quorum group log compacted"
        );
        Ok(())
    }

    /// Where the group's log can be compacted now, if it is over its threshold and has applied
    /// entries past its last snapshot.
    fn compaction_plan(&self, queue: QueueId) -> Option<Compaction> {
        let groups = self.groups.borrow();
        let group = groups.get(&queue)?;
        let size = group.log.size_bytes();
        if size <= self.compact_bytes || group.applied_bytes < self.compact_bytes / 2 {
            return None;
        }
        let raft = &group.raw.raft;
        let index = raft.raft_log.applied;
        if index <= group.storage.snapshot_index() {
            return None;
        }
        let term = group.storage.term(index).ok()?;
        let mut keep_from = index;
        if raft.state == StateRole::Leader && size + group.held_bytes <= 2 * self.compact_bytes {
            // A live follower behind keeps its entries (from the one it matched: its term is
            // what the next append is checked against); past twice the threshold it gets the
            // snapshot instead.
            for (&id, progress) in raft.prs().iter() {
                if id != raft.id && self.link_up(id) {
                    keep_from = keep_from.min(progress.matched);
                }
            }
        }
        Some(Compaction {
            index,
            term,
            keep_from,
        })
    }

    /// Whether the link to the member of Raft id `id` is up.
    fn link_up(&self, id: u64) -> bool {
        id.checked_sub(1)
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| self.roster.link(i))
            .is_some_and(|link| link.is_up())
    }

    fn apply(&self, queue: QueueId, entries: Vec<Entry>) {
        let me = self.roster.local_raft_id();
        for entry in entries {
            if entry.get_entry_type() != EntryType::EntryNormal {
                // The machine hears of it with no borrow held (it may propose the next one).
                if let Some(voters) = self.apply_conf_change(queue, &entry) {
                    self.machine.voters_changed(queue, &voters);
                }
                continue;
            }
            if entry.get_data().is_empty() {
                continue; // a new leader's empty entry
            }
            let proposal = parse_context(entry.get_context())
                .filter(|&(node, _)| node == me)
                .map(|(_, seq)| seq);
            self.machine
                .apply(queue, entry.get_index(), entry.get_data(), proposal);
        }
    }

    /// The turn's messages, one frame per peer (more when they do not fit one); a message
    /// over a frame in pieces.
    fn flush(&self, out: Outgoing) {
        for (index, batch) in out.batches.into_iter().enumerate() {
            if batch.is_empty() {
                continue;
            }
            if let Some(link) = self.roster.link(index) {
                for frame in split_batch(batch) {
                    link.send_group(frame);
                }
            }
        }
        for (index, whole) in out.large {
            if let Some(link) = self.roster.link(index) {
                link.send_group_parts(&whole);
            }
        }
    }
}

/// The group of `queue` if it is still the one of `generation`: a turn awaits writes, during
/// which a queue may be deleted and declared again.
fn of_generation(
    groups: &mut HashMap<QueueId, Group>,
    queue: QueueId,
    generation: u64,
) -> Option<&mut Group> {
    groups
        .get_mut(&queue)
        .filter(|g| g.generation == generation)
}

/// What an entry weighs in memory (its data and context; the rest is small and fixed).
fn entry_bytes(entry: &Entry) -> u64 {
    (entry.get_data().len() + entry.get_context().len()) as u64
}

/// The storage of a group as its snapshot and log left it: the snapshot's state, then the
/// log's entries after it (those it covers are skipped: the log is rewritten after the
/// snapshot is written, and a crash can fall between the two).
fn group_storage(
    voters: Vec<u64>,
    recovered: Recovered,
    kept: Option<Snapshot>,
) -> Result<GroupStorage, String> {
    let mem = MemStorage::new_with_conf_state(ConfState::from((voters, Vec::<u64>::new())));
    let storage = GroupStorage::new(mem);
    let Recovered {
        mut entries,
        hard_state,
        ..
    } = recovered;
    let base = kept.as_ref().map_or(0, |s| s.get_metadata().index);
    if let Some(kept) = kept {
        let term = kept.get_metadata().term;
        // An entry of the log at the snapshot's index from another term: the log's tail is of
        // a branch the snapshot's leader overwrote; none of it is kept.
        if entries
            .iter()
            .any(|e| e.get_index() == base && e.get_term() != term)
        {
            entries.clear();
        }
        entries.retain(|e| e.get_index() > base);
        let mut core = storage.mem().wl();
        core.apply_snapshot(kept.clone())
            .map_err(|e| e.to_string())?;
        drop(core);
        storage.set_snapshot(kept);
    }
    if entries.first().is_some_and(|e| e.get_index() != base + 1) {
        return Err(format!(
            "the group's log does not continue its snapshot at index {base}"
        ));
    }
    let last_index = entries.last().map_or(base, Entry::get_index);
    let mut core = storage.mem().wl();
    core.append(&entries).map_err(|e| e.to_string())?;
    if let Some(mut hard_state) = hard_state {
        // What the disk says is checked, never trusted into a panic.
        let commit = hard_state.get_commit().clamp(base, last_index);
        hard_state.set_commit(commit);
        let term = hard_state.get_term().max(core.hard_state().get_term());
        hard_state.set_term(term);
        core.set_hardstate(hard_state);
    }
    drop(core);
    Ok(storage)
}

/// One turn's messages: a batch per peer, and the messages too large for one frame.
struct Outgoing {
    batches: Vec<Vec<u8>>,
    /// (member index, `[u64 queue][u32 length][message]`), sent as `GroupPart` pieces.
    large: Vec<(usize, Vec<u8>)>,
}

impl Outgoing {
    fn new(members: usize) -> Outgoing {
        Outgoing {
            batches: vec![Vec::new(); members],
            large: Vec::new(),
        }
    }

    /// `[u64 queue][u32 length][message]` per message, into the batch of its peer (alone, when
    /// over a frame). Returns the Raft ids snapshots went to.
    fn collect(&mut self, queue: QueueId, messages: Vec<Message>) -> Vec<u64> {
        let mut snapshots = Vec::new();
        for message in messages {
            let to = message.get_to();
            let Some(index) = to.checked_sub(1).and_then(|i| usize::try_from(i).ok()) else {
                continue;
            };
            let Some(batch) = self.batches.get_mut(index) else {
                continue;
            };
            if message.get_msg_type() == MessageType::MsgSnapshot {
                snapshots.push(to);
            }
            match message.write_to_bytes() {
                Ok(bytes) if bytes.len() + 12 < CLUSTER_FRAME_BYTES_MAX => {
                    batch.put_u64(queue);
                    batch.put_u32(bytes.len() as u32);
                    batch.extend_from_slice(&bytes);
                }
                Ok(bytes) if bytes.len() + 12 <= QUORUM_SNAPSHOT_BYTES_MAX => {
                    let mut whole = Vec::with_capacity(bytes.len() + 12);
                    whole.put_u64(queue);
                    whole.put_u32(bytes.len() as u32);
                    whole.extend_from_slice(&bytes);
                    self.large.push((index, whole));
                }
                Ok(bytes) => tracing::error!(
                    queue,
                    bytes = bytes.len(),
                    "a quorum group message over QUORUM_SNAPSHOT_BYTES_MAX was dropped"
                ),
                Err(error) => tracing::error!(%error, "cannot encode a quorum group message"),
            }
        }
        snapshots
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

    fn entry(index: u64, term: u64) -> Entry {
        let mut entry = Entry::default();
        entry.set_index(index);
        entry.set_term(term);
        entry
    }

    fn kept_at(index: u64, term: u64) -> Snapshot {
        let mut kept = Snapshot::default();
        kept.set_data(snapshot::seal(b"state").unwrap().into());
        kept.mut_metadata().index = index;
        kept.mut_metadata().term = term;
        kept.mut_metadata()
            .set_conf_state(ConfState::from((vec![1, 2, 3], vec![])));
        kept
    }

    fn recovered(entries: Vec<Entry>, commit: u64) -> Recovered {
        let mut hard_state = raft::eraftpb::HardState::default();
        hard_state.set_term(2);
        hard_state.set_commit(commit);
        Recovered {
            entries,
            hard_state: Some(hard_state),
            applied: 0,
        }
    }

    #[test]
    fn a_group_opens_from_its_snapshot_then_the_entries_after_it() {
        let voters = || vec![1, 2, 3];
        // The log rewritten after the snapshot: entries 6..=8.
        let log = (6..=8).map(|i| entry(i, 2)).collect();
        let storage = group_storage(voters(), recovered(log, 7), Some(kept_at(5, 2))).unwrap();
        assert_eq!(storage.first_index(), Ok(6));
        assert_eq!(storage.last_index(), Ok(8));
        assert_eq!(storage.term(5), Ok(2));
        assert_eq!(storage.snapshot_index(), 5);
        let state = storage.initial_state().unwrap();
        assert_eq!(state.hard_state.get_commit(), 7);
        // A crash before the rewrite: the old log still holds what the snapshot covers.
        let log = (1..=8).map(|i| entry(i, 2)).collect();
        let storage = group_storage(voters(), recovered(log, 3), Some(kept_at(5, 2))).unwrap();
        assert_eq!(storage.first_index(), Ok(6));
        assert_eq!(storage.initial_state().unwrap().hard_state.get_commit(), 5);
        // A tail from a branch the snapshot's leader overwrote: none of it is kept.
        let log = (1..=8).map(|i| entry(i, 1)).collect();
        let storage = group_storage(voters(), recovered(log, 3), Some(kept_at(5, 2))).unwrap();
        assert_eq!(storage.last_index(), Ok(5));
        // A log that does not continue the snapshot is refused, never a panic.
        let log = (7..=8).map(|i| entry(i, 2)).collect();
        assert!(group_storage(voters(), recovered(log, 7), Some(kept_at(5, 2))).is_err());
        let log = (2..=3).map(|i| entry(i, 2)).collect();
        assert!(group_storage(voters(), recovered(log, 2), None).is_err());
    }
}
