//! Transactions: tx.select, what a transaction buffers until tx.commit (publishes and
//! settlements, bounded in count and bytes), and tx.rollback.

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
