//! Publisher confirms: confirm.select, the sequence number of each publish, and what a routed
//! publish leaves to confirm. (Coalescing the acks on the wire is `state::ConnShared`'s.)

use super::{precondition_failed, Fault};
use crate::limits::PENDING_CONFIRMS_PER_CHANNEL_MAX;
use crate::session::state::{ChannelState, Confirms};

/// confirm.select; 406 on a transactional channel.
pub fn select(state: &mut ChannelState) -> Result<(), Fault> {
    if state.tx.is_some() {
        return Err(precondition_failed("cannot switch from tx to confirm mode"));
    }
    state.confirm.get_or_insert_with(Confirms::new);
    Ok(())
}

/// The sequence number of the next publish, if the channel is in confirm mode.
pub fn next_seq(state: &mut ChannelState) -> Option<u64> {
    let confirms = state.confirm.as_mut()?;
    let seq = confirms.next_seq;
    confirms.next_seq += 1;
    Some(seq)
}

/// Publish `seq` was routed: `remote_confirms` other shards (or logs) still have to confirm
/// it. Returns the confirm to send now (`Some(ok)`) when none has to.
pub fn routed(
    state: &mut ChannelState,
    seq: u64,
    remote_confirms: u32,
    refused: bool,
) -> Option<bool> {
    if remote_confirms == 0 {
        return Some(!refused);
    }
    if let Some(confirms) = state.confirm.as_mut() {
        let previous = confirms.pending.insert(seq, (remote_confirms, refused));
        assert!(previous.is_none(), "a confirm sequence number is used once");
    }
    None
}

/// Whether the channel has as many publishes waiting for confirms as it may: the session reads
/// nothing more from the connection until some are confirmed.
pub fn at_pending_limit(state: &ChannelState) -> bool {
    state
        .confirm
        .as_ref()
        .is_some_and(|confirms| confirms.pending.len() >= PENDING_CONFIRMS_PER_CHANNEL_MAX)
}
