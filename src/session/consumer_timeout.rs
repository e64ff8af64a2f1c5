//! RabbitMQ's `consumer_timeout`: a channel whose oldest unacknowledged delivery is older
//! than the timeout is closed with 406 PRECONDITION_FAILED, and its unacked messages are
//! requeued (as every channel close requeues them).
//!
//! Checked per connection on a timer, never per message: each tick notes the oldest unacked
//! delivery tag of every channel and when it was first seen at the front; a tag still at the
//! front `timeout` after that is expired. A delivery is thus found at most two ticks late (one
//! before it is first seen, one after it expires), and the delivery path reads no clock.

use std::rc::Rc;
use std::time::{Duration, Instant};

use super::state::ConnShared;
use crate::limits::{CONSUMER_TIMEOUT_CHECK_INTERVAL_MAX, CONSUMER_TIMEOUT_CHECK_INTERVAL_MIN};

/// How often the channels of one connection are looked at for `timeout`.
pub fn check_interval(timeout: Duration) -> Duration {
    (timeout / 4).clamp(
        CONSUMER_TIMEOUT_CHECK_INTERVAL_MIN,
        CONSUMER_TIMEOUT_CHECK_INTERVAL_MAX,
    )
}

/// Runs until the connection's output closes (or the task is dropped with the session).
pub async fn watch(conn: Rc<ConnShared>, timeout: Duration) {
    let interval = check_interval(timeout);
    while !conn.output_closed.get() {
        glommio::timer::sleep(interval).await;
        let expired = expired_channels(&conn, Instant::now(), timeout);
        if !expired.is_empty() {
            let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
            conn.timed_out_channels
                .borrow_mut()
                .extend(expired.into_iter().map(|channel| (channel, timeout_ms)));
            conn.forced.notify();
        }
    }
}

/// The open channels whose front delivery has been at the front for `timeout` or longer;
/// updates each channel's watch. Bounded by the connection's channels (`channel_max`).
fn expired_channels(conn: &ConnShared, now: Instant, timeout: Duration) -> Vec<u16> {
    let mut expired = Vec::new();
    let already: Vec<u16> = conn
        .timed_out_channels
        .borrow()
        .iter()
        .map(|(channel, _)| *channel)
        .collect();
    for (&number, state) in conn.channels.borrow_mut().iter_mut() {
        let front = state.unacked.front().map(|u| u.tag);
        state.ack_watch = match (front, state.ack_watch) {
            (None, _) => None,
            (Some(tag), Some((seen, since))) if seen == tag => {
                if !state.closing
                    && now.duration_since(since) >= timeout
                    && !already.contains(&number)
                {
                    expired.push(number);
                }
                Some((seen, since))
            }
            (Some(tag), _) => Some((tag, now)),
        };
    }
    expired
}

/// RabbitMQ's text for an expired delivery (rabbit_channel, 3.10).
pub fn timed_out_text(channel: u16, timeout_ms: u64) -> String {
    format!(
        "PRECONDITION_FAILED - delivery acknowledgement on channel {channel} timed out. \
         Timeout value used: {timeout_ms} ms. This timeout value can be configured, see \
         consumers doc guide to learn more"
    )
}
