//! Queues over their memory budget (`--queue-memory-bytes`, or `x-queue-mode=lazy`): the
//! newest ready messages keep only an index entry in RAM and their bodies are read back from
//! the shard's message log ahead of delivery.
//!
//! - Page out (synchronous, after anything that may add ready messages): while a queue holds
//!   more than its budget, its newest loaded message outside the read-ahead window drops its
//!   body. A persistent message of a durable queue is in the log already; any other is written
//!   now as an enqueue record (never on the publish path of a queue within its budget), and
//!   recovery discards such records. From then on it is settled in the log like any persisted
//!   message.
//! - Page in: one loader task per queue that needs one (started by the shard's pager task,
//!   which owns the `Rc<Shard>` needed to spawn), reading the read-ahead window
//!   (`PAGE_READ_AHEAD_*`) at most `PAGE_IN_READS_MAX` reads at a time, refilling as the head
//!   drains so a steady consumer is not stalled. A read that fails for good (a corrupt or
//!   undecodable record) drops that one message; one that may pass (EIO, a flush the log
//!   failed) leaves it queued, and the loader reads again after a backoff
//!   (`PAGE_IN_RETRY_DELAY_*`), so a disk that fails for a while delays these messages but
//!   never settles them.
//! - Paged messages dropped to a dead-letter exchange (expiry, length limit) are read back by
//!   the pager's dead-letter task, dead-lettered, and only then settled.

use crate::failure_log::{self, FailureEpisode};
use crate::limits::{
    GET_HEAD_LOAD_ATTEMPTS_MAX, PAGE_IN_READS_MAX, PAGE_IN_RETRY_DELAY_MAX,
    PAGE_IN_RETRY_DELAY_MIN, PAGE_OUT_PASS_MAX,
};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, VecDeque};
use std::num::NonZeroU64;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::expiry::now_ms;
use super::storage::PageInError;
use super::sync::Notify;
use super::Shard;
use crate::broker::queue::{DeathReason, Message, MessageId, PagedRef};
use crate::broker::QueueId;

/// Counters, logged at shutdown (tests read them to see that paging happened).
#[derive(Debug, Default, Clone, Copy)]
pub struct PagingStats {
    pub paged_out: u64,
    /// Of which written to the log at page-out (transient, or non-durable queue).
    pub paged_out_written: u64,
    pub paged_in: u64,
    pub read_errors: u64,
    /// Reads that failed in a way that may pass; the message stayed and was read again.
    pub read_retries: u64,
    pub dead_lettered: u64,
}

#[derive(Default)]
pub struct Pager {
    queue_memory_bytes: Cell<u64>,
    /// Queues whose loader should start (bounded by the queues hosted).
    wanted: RefCell<BTreeSet<QueueId>>,
    /// Queues whose loader runs.
    running: RefCell<BTreeSet<QueueId>>,
    /// Paged messages to read back and dead-letter (bounded by the paged messages dropped).
    dead_letters: RefCell<VecDeque<(QueueId, MessageId, DeathReason)>>,
    dead_letters_running: Cell<bool>,
    wake: Notify,
    stats: Cell<PagingStats>,
    /// Paged reads that failed in a way that may pass, logged per episode (`failure_log`):
    /// every loader retries on its own backoff, and a line per retry per queue was a flood.
    read_episode: RefCell<FailureEpisode>,
}

impl Pager {
    pub fn new(queue_memory_bytes: u64) -> Pager {
        let pager = Pager::default();
        pager.queue_memory_bytes.set(queue_memory_bytes);
        pager
    }

    /// Body bytes each queue of this shard keeps in memory.
    pub fn queue_memory_bytes(&self) -> u64 {
        self.queue_memory_bytes.get()
    }

    pub fn set_queue_memory_bytes(&self, bytes: u64) {
        self.queue_memory_bytes.set(bytes);
    }

    /// A paged read failed and will be tried again: one warning per episode.
    fn read_failed(&self, error: &str) {
        let note = self.read_episode.borrow_mut().failed(Instant::now());
        failure_log::warn(
            note,
            "reading paged messages back (they stay queued)",
            &error,
        );
    }

    /// Paged reads work (again).
    fn read_succeeded(&self) {
        let mut episode = self.read_episode.borrow_mut();
        if episode.is_failing() {
            if let Some(recovery) = episode.succeeded(Instant::now()) {
                failure_log::recovered(recovery, "reading paged messages back");
            }
        }
    }

    pub fn stats(&self) -> PagingStats {
        self.stats.get()
    }

    fn count(&self, update: impl FnOnce(&mut PagingStats)) {
        let mut stats = self.stats.get();
        update(&mut stats);
        self.stats.set(stats);
    }
}

impl Shard {
    /// Pages out the newest ready messages of queue `id` while it is over its memory budget.
    pub(super) fn page_out_queue(&self, id: QueueId) {
        let mut queues = self.queues.borrow_mut();
        let Some(hosted) = queues.get_mut(&id) else {
            return;
        };
        for _ in 0..PAGE_OUT_PASS_MAX {
            let Some(candidate) = hosted.queue.page_out_candidate() else {
                return;
            };
            let position = match candidate.persisted {
                Some(position) => position,
                // Page-out writes are not urgent: leave the batch's room to publishers (whose
                // appends would otherwise meet a full batch) and continue after the flush.
                None if self.storage.log_congested() => return,
                None => {
                    let logged =
                        self.storage
                            .log_enqueue(id, candidate.at.id, &candidate.message, now_ms());
                    match logged.map(NonZeroU64::new) {
                        Ok(Some(position)) => {
                            self.features.pager.count(|s| s.paged_out_written += 1);
                            position
                        }
                        // Stays in memory; the next pass tries again (the log's back-pressure
                        // slows publishers meanwhile).
                        Ok(None) => return,
                        Err(error) => {
                            tracing::debug!(queue = id, %error, "cannot page out now");
                            return;
                        }
                    }
                }
            };
            if hosted.queue.page_out(candidate.at, position) {
                self.features.pager.count(|s| s.paged_out += 1);
            }
        }
    }

    /// Starts the loader of queue `id` if its read-ahead needs bodies and none runs.
    pub(super) fn want_load(&self, id: QueueId) {
        if self.features.pager.running.borrow().contains(&id) {
            return;
        }
        let wants = self
            .queues
            .borrow()
            .get(&id)
            .is_some_and(|hosted| hosted.queue.wants_load());
        if wants && self.features.pager.wanted.borrow_mut().insert(id) {
            self.features.pager.wake.notify();
        }
    }

    /// Paged messages queue `id` dropped towards its dead-letter exchange: read back, then
    /// dead-lettered and settled by the pager.
    pub(super) fn dead_letter_paged(&self, id: QueueId, dropped: Vec<(MessageId, DeathReason)>) {
        if dropped.is_empty() {
            return;
        }
        self.features.pager.dead_letters.borrow_mut().extend(
            dropped
                .into_iter()
                .map(|(message, reason)| (id, message, reason)),
        );
        self.features.pager.wake.notify();
    }

    /// basic.get: makes sure the head of queue `id` is loaded (or gone) before the get.
    pub(super) async fn load_head(&self, id: QueueId) {
        for _ in 0..GET_HEAD_LOAD_ATTEMPTS_MAX {
            self.expire_queue(id);
            let head = self
                .queues
                .borrow()
                .get(&id)
                .and_then(|hosted| hosted.queue.head_paged());
            let Some(at) = head else {
                return;
            };
            let read = self.storage.read_message(id, at.id).await;
            if !self.fill_paged(id, at, read) {
                return; // the disk fails for now: get-empty, the message stays
            }
        }
    }

    /// Puts a body read back into its queue, or drops the message when it cannot be read for
    /// good. False when the read failed in a way that may pass: the message stays paged.
    fn fill_paged(&self, id: QueueId, at: PagedRef, read: Result<Message, PageInError>) -> bool {
        match read {
            Ok(message) => {
                let filled = match self.queues.borrow_mut().get_mut(&id) {
                    Some(hosted) => hosted.queue.fill(at, message),
                    None => false,
                };
                if filled {
                    self.features.pager.count(|s| s.paged_in += 1);
                }
                true
            }
            Err(error) if error.may_pass() => {
                self.features.pager.count(|s| s.read_retries += 1);
                tracing::debug!(queue = id, message = at.id, %error, "cannot read a paged message back now; it stays queued");
                false
            }
            Err(error) => {
                let dropped = match self.queues.borrow_mut().get_mut(&id) {
                    Some(hosted) => hosted.queue.drop_unreadable(at),
                    None => false,
                };
                if dropped {
                    tracing::error!(queue = id, message = at.id, %error, "cannot read a paged message back: dropped");
                    self.features.pager.count(|s| s.read_errors += 1);
                    self.log_forgotten(id);
                }
                true
            }
        }
    }
}

/// The shard's pager: starts per-queue loaders and the dead-letter reader as they are wanted.
pub async fn run_pager(shard: Rc<Shard>) {
    loop {
        let woken = shard.features.pager.wake.wait();
        let wanted = std::mem::take(&mut *shard.features.pager.wanted.borrow_mut());
        for id in wanted {
            if shard.features.pager.running.borrow_mut().insert(id) {
                glommio::spawn_local(run_loader(shard.clone(), id)).detach();
            }
        }
        let dead_letters = !shard.features.pager.dead_letters.borrow().is_empty();
        if dead_letters && !shard.features.pager.dead_letters_running.replace(true) {
            glommio::spawn_local(run_dead_letter_reads(shard.clone())).detach();
        }
        woken.await;
    }
}

impl Shard {
    /// At shutdown: what paging did in this run.
    pub(super) fn log_paging_stats(&self) {
        let stats = self.features.pager.stats();
        tracing::info!(
            shard = self.id,
            paged_out = stats.paged_out,
            paged_out_written = stats.paged_out_written,
            paged_in = stats.paged_in,
            read_errors = stats.read_errors,
            read_retries = stats.read_retries,
            dead_lettered = stats.dead_lettered,
            "queue paging stats"
        );
    }
}

/// The next wait of a reader that meets a failure that may pass, doubled each time.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Backoff {
        Backoff(PAGE_IN_RETRY_DELAY_MIN)
    }

    fn reset(&mut self) {
        self.0 = PAGE_IN_RETRY_DELAY_MIN;
    }

    async fn wait(&mut self) {
        glommio::timer::sleep(self.0).await;
        self.0 = (self.0 * 2).min(PAGE_IN_RETRY_DELAY_MAX);
    }
}

/// One queue's loader: reads its read-ahead window until it is loaded, then ends. Unbounded
/// only while the queue needs bodies: each pass loads or drops a message, or waits a backoff.
async fn run_loader(shard: Rc<Shard>, id: QueueId) {
    let mut batch = Vec::with_capacity(PAGE_IN_READS_MAX);
    let mut backoff = Backoff::new();
    loop {
        batch.clear();
        match shard.queues.borrow().get(&id) {
            Some(hosted) => hosted.queue.to_load(PAGE_IN_READS_MAX, &mut batch),
            None => break,
        }
        if batch.is_empty() {
            break;
        }
        let reads: Vec<_> = batch
            .iter()
            .map(|at| {
                let shard = shard.clone();
                let message = at.id;
                glommio::spawn_local(async move { shard.storage.read_message(id, message).await })
                    .detach()
            })
            .collect();
        // The first failure of this pass that may pass, if any: then wait before the next.
        let mut failing = None;
        for (at, read) in batch.iter().zip(reads) {
            let read = read.await.unwrap_or(Err(PageInError::Cancelled));
            let error = read.as_ref().err().map(ToString::to_string);
            if !shard.fill_paged(id, *at, read) && failing.is_none() {
                failing = error;
            }
        }
        shard.dispatch(id);
        match failing {
            None => {
                shard.features.pager.read_succeeded();
                backoff.reset();
            }
            Some(error) => {
                tracing::debug!(queue = id, %error, retry_ms = backoff.0.as_millis() as u64, "paged messages cannot be read back now; they stay queued");
                shard.features.pager.read_failed(&error);
                backoff.wait().await;
            }
        }
    }
    shard.features.pager.running.borrow_mut().remove(&id);
}

/// Reads paged dead letters back, dead-letters them, then settles them.
async fn run_dead_letter_reads(shard: Rc<Shard>) {
    let mut backoff = Backoff::new();
    loop {
        let next = shard.features.pager.dead_letters.borrow_mut().pop_front();
        let Some((queue, message_id, reason)) = next else {
            break;
        };
        match shard.storage.read_message(queue, message_id).await {
            Ok(message) => {
                shard.features.pager.read_succeeded();
                backoff.reset();
                shard.features.pager.count(|s| s.dead_lettered += 1);
                shard.dead_letter(queue, reason, vec![message]);
            }
            Err(error) if error.may_pass() => {
                // Not settled: it is read again, first, after the backoff.
                shard.features.pager.count(|s| s.read_retries += 1);
                tracing::debug!(queue, message = message_id, %error, retry_ms = backoff.0.as_millis() as u64, "a paged dead letter cannot be read back now; kept");
                shard.features.pager.read_failed(&error.to_string());
                let kept = (queue, message_id, reason);
                shard
                    .features
                    .pager
                    .dead_letters
                    .borrow_mut()
                    .push_front(kept);
                backoff.wait().await;
                continue;
            }
            Err(error) => {
                tracing::error!(queue, message = message_id, %error, "cannot read a paged dead letter back: dropped");
                shard.features.pager.count(|s| s.read_errors += 1);
            }
        }
        shard.storage.log_settle(queue, &[message_id]);
    }
    shard.features.pager.dead_letters_running.set(false);
}
