//! The connection as the shard sees it (`conn_sink::ConnectionSink`), over `ConnShared`'s own
//! methods.

use super::state::ConnShared;
use crate::broker::queue::ConsumerKey;
use crate::conn_sink::{ConnectionSink, DeliverEntry};
use crate::shard::direct_reply::DIRECT_REPLY_QUEUE_ID;

impl ConnectionSink for ConnShared {
    fn deliver(&self, entry: DeliverEntry) -> Result<(), DeliverEntry> {
        ConnShared::deliver(self, entry)
    }

    fn deliver_direct_reply(&self, entry: DeliverEntry) -> Result<(), DeliverEntry> {
        let is_reply_consumer = self
            .channels
            .borrow()
            .get(&entry.channel.channel)
            .and_then(|channel| channel.consumers.get(&entry.consumer))
            .is_some_and(|consumer| consumer.queue == DIRECT_REPLY_QUEUE_ID);
        if !is_reply_consumer {
            return Err(entry);
        }
        ConnShared::deliver(self, entry)
    }

    fn confirm_decided(&self, channel: u16, seq: u64, ok: bool) {
        self.confirm_done(channel, seq, ok);
    }

    fn consumer_cancelled(&self, channel: u16, consumer: ConsumerKey) {
        ConnShared::consumer_cancelled(self, channel, consumer);
    }
}
