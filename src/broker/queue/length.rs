//! `x-max-length`, `x-max-length-bytes` and `x-overflow`: which publishes a full queue takes,
//! and what it drops. Only ready messages count, as in RabbitMQ (unacked ones do not).

use super::{DeathReason, Message, Overflow, Queue, SharedMessage};

/// What a queue says to a message offered to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Accept,
    /// `reject-publish`: the publisher gets basic.nack (with confirms on).
    Refuse,
    /// `reject-publish-dlx`: refused, and dead-lettered (reason `maxlen`).
    RefuseDeadLetter,
    /// `x-message-deduplication`: seen in the window; dropped, yet the publisher gets an ack.
    Duplicate,
}

impl Queue {
    /// Whether `message` may be published now. Under `drop-head` every message is accepted
    /// (the oldest make room afterwards, see [`Queue::enforce_length`]).
    pub fn admit(&self, message: &Message) -> Admission {
        let refusal = match self.config.overflow {
            Overflow::DropHead => return Admission::Accept,
            Overflow::RejectPublish => Admission::Refuse,
            Overflow::RejectPublishDlx => Admission::RefuseDeadLetter,
        };
        let length_after = self.ready.len() as u64 + 1;
        let bytes_after = self.ready.bytes() + message.body().len() as u64;
        let over = self.config.max_length.is_some_and(|max| length_after > max)
            || self
                .config
                .max_length_bytes
                .is_some_and(|max| bytes_after > max);
        if over {
            refusal
        } else {
            Admission::Accept
        }
    }

    /// `drop-head`: drops messages from the head (the next to be delivered) until the queue is
    /// within its limits, and returns them for dead-lettering (reason `maxlen`). Call after
    /// dispatch, so a message a waiting consumer takes at once never counts (as in RabbitMQ,
    /// where `x-max-length` 0 still delivers to a waiting consumer).
    pub fn enforce_length(&mut self) -> Vec<SharedMessage> {
        let mut dropped = Vec::new();
        if self.config.overflow != Overflow::DropHead {
            return dropped;
        }
        while self.is_over_limit() {
            let Some(entry) = self.ready.pop_front() else {
                break;
            };
            // Settled like any other way out (a persisted head dropped here came back after a
            // restart before).
            dropped.extend(self.drop_entry(entry, DeathReason::MaxLen));
        }
        dropped
    }

    fn is_over_limit(&self) -> bool {
        self.config
            .max_length
            .is_some_and(|max| self.ready.len() as u64 > max)
            || self
                .config
                .max_length_bytes
                .is_some_and(|max| self.ready.bytes() > max)
    }

    /// True when the queue has a length limit (then expired messages are removed before a
    /// publish is admitted, so they never take room).
    pub fn has_length_limit(&self) -> bool {
        self.config.max_length.is_some() || self.config.max_length_bytes.is_some()
    }
}
