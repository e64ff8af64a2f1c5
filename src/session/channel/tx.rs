//! Transactions: tx.select, what a transaction buffers until tx.commit (publishes and
//! settlements, bounded in count and bytes), what a commit waits for, and tx.rollback.
//!
//! A commit routes its publishes with confirms of its own, as RabbitMQ's channel does: each
//! waits for what a publisher confirm would (the log's fdatasync, every shard and node it
//! reached, a quorum queue's group commit) and tx.commit-ok goes once all are in. One refused
//! (a nack) fails the commit with RabbitMQ's 406 "partial tx completion".

use std::collections::HashMap;

use super::settle::Settle;
use super::{precondition_failed, Fault, PendingPublish};
use crate::broker::queue::SharedMessage;
use crate::limits::{TX_BYTES_MAX, TX_OPERATIONS_MAX};
use crate::session::state::{ChannelState, Unacked};

/// What a transaction has buffered until tx.commit.
#[derive(Default)]
pub struct TxBuffer {
    pub publishes: Vec<(Box<PendingPublish>, SharedMessage)>,
    pub settles: Vec<(Vec<Unacked>, Settle)>,
    /// Bytes of the buffered messages, as allocated.
    bytes: usize,
}

impl TxBuffer {
    /// Publishes, and deliveries acknowledged, waiting for tx.commit (RabbitMQ's
    /// `messages_uncommitted` and `acks_uncommitted`).
    pub fn uncommitted(&self) -> (u64, u64) {
        let acks = self
            .settles
            .iter()
            .filter(|(_, settle)| matches!(settle, Settle::Ack))
            .map(|(unacked, _)| unacked.len() as u64)
            .sum();
        (self.publishes.len() as u64, acks)
    }

    /// Buffers a publish; 406 past either bound (the caller closes the channel, which drops
    /// the transaction).
    pub fn push_publish(
        &mut self,
        pending: Box<PendingPublish>,
        message: SharedMessage,
    ) -> Result<(), Fault> {
        if self.publishes.len() >= TX_OPERATIONS_MAX {
            return Err(too_many_operations());
        }
        let bytes = message.allocated_bytes();
        // The first message always fits: it is bounded by --max-message-bytes already.
        if !self.publishes.is_empty() && self.bytes + bytes > TX_BYTES_MAX {
            return Err(precondition_failed(format!(
                "transaction would hold more than {TX_BYTES_MAX} bytes of messages"
            )));
        }
        self.bytes += bytes;
        self.publishes.push((pending, message));
        Ok(())
    }

    pub fn push_settle(&mut self, taken: Vec<Unacked>, how: Settle) -> Result<(), Fault> {
        if self.settles.len() >= TX_OPERATIONS_MAX {
            return Err(too_many_operations());
        }
        self.settles.push((taken, how));
        Ok(())
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// The confirms a tx.commit waits for, on its channel while it commits. Its sequence numbers
/// are its own (a transactional channel has no publisher confirms).
#[derive(Default)]
pub struct CommitWait {
    next_seq: u64,
    /// seq -> replies still expected. At most one entry per buffered publish.
    pending: HashMap<u64, u32>,
    refused: bool,
}

impl CommitWait {
    pub fn next_seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    /// Publish `seq` was routed: `remote_confirms` replies are to come; `refused`: a queue
    /// here refused it already.
    pub fn routed(&mut self, seq: u64, remote_confirms: u32, refused: bool) {
        self.refused |= refused;
        if remote_confirms > 0 {
            self.pending.insert(seq, remote_confirms);
        }
    }

    /// One reply for publish `seq`.
    pub fn decided(&mut self, seq: u64, ok: bool) {
        let Some(remaining) = self.pending.get_mut(&seq) else {
            return;
        };
        self.refused |= !ok;
        *remaining = remaining.saturating_sub(1);
        if *remaining == 0 {
            self.pending.remove(&seq);
        }
    }

    pub fn is_complete(&self) -> bool {
        self.pending.is_empty()
    }

    /// The commit's outcome once complete: a refused publish fails it.
    pub fn outcome(&self) -> Result<(), Fault> {
        if self.refused {
            return Err(precondition_failed("partial tx completion"));
        }
        Ok(())
    }
}

fn too_many_operations() -> Fault {
    precondition_failed("too many operations in one transaction")
}

fn not_transactional() -> Fault {
    precondition_failed("channel is not transactional")
}

/// tx.select; 406 on a channel in confirm mode.
pub fn select(state: &mut ChannelState) -> Result<(), Fault> {
    if state.confirm.is_some() {
        return Err(precondition_failed("cannot switch from confirm to tx mode"));
    }
    state.tx.get_or_insert_with(TxBuffer::default);
    Ok(())
}

/// tx.commit: the buffer to apply; the channel stays transactional with an empty one.
pub fn take(state: &mut ChannelState) -> Result<TxBuffer, Fault> {
    let tx = state.tx.as_mut().ok_or_else(not_transactional)?;
    Ok(std::mem::take(tx))
}

/// tx.rollback: publishes are dropped; settled messages are unacked again, in tag order.
pub fn rollback(state: &mut ChannelState) -> Result<(), Fault> {
    let tx = state.tx.as_mut().ok_or_else(not_transactional)?;
    let mut returned: Vec<Unacked> = tx.settles.drain(..).flat_map(|(u, _)| u).collect();
    *tx = TxBuffer::default();
    returned.extend(state.unacked.drain(..));
    returned.sort_by_key(|u| u.tag);
    state.unacked = returned.into();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_completes_when_every_reply_is_in_and_fails_on_a_refusal() {
        let mut commit = CommitWait::default();
        let (local, split, refused_later) =
            (commit.next_seq(), commit.next_seq(), commit.next_seq());
        commit.routed(local, 0, false);
        commit.routed(split, 2, false);
        commit.routed(refused_later, 1, false);
        assert!(!commit.is_complete());
        commit.decided(split, true);
        commit.decided(refused_later, false);
        assert!(
            !commit.is_complete(),
            "one reply of the split publish is missing"
        );
        commit.decided(split, true);
        // A reply for a publish already complete, or never routed, changes nothing.
        commit.decided(split, false);
        commit.decided(99, false);
        assert!(commit.is_complete());
        let failed = commit.outcome().expect_err("a refusal fails the commit");
        assert!(
            failed.text.contains("partial tx completion"),
            "{}",
            failed.text
        );
    }

    #[test]
    fn a_publish_refused_at_once_fails_the_commit_without_a_reply() {
        let mut commit = CommitWait::default();
        let seq = commit.next_seq();
        commit.routed(seq, 0, true);
        assert!(commit.is_complete());
        assert!(commit.outcome().is_err());
        let mut clean = CommitWait::default();
        let seq = clean.next_seq();
        clean.routed(seq, 0, false);
        assert!(clean.outcome().is_ok());
    }
}
