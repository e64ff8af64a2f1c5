//! The connection as the shard sees it (`conn_sink::ConnectionSink`), over `ConnShared`'s own
//! methods.

use super::state::ConnShared;
use crate::broker::queue::{ConsumerKey, SharedMessage};
use crate::conn_sink::{ConnectionDescription, ConnectionSink, DeliverEntry};

impl ConnectionSink for ConnShared {
    fn deliver(&self, entry: DeliverEntry) -> Result<(), DeliverEntry> {
        ConnShared::deliver(self, entry)
    }

    fn deliver_reply(&self, channel: u16, consumer: ConsumerKey, message: &SharedMessage) -> bool {
        ConnShared::deliver_reply(self, channel, consumer, message)
    }

    fn confirm_decided(&self, channel: u16, seq: u64, ok: bool) {
        self.confirm_done(channel, seq, ok);
    }

    fn consumer_cancelled(&self, channel: u16, consumer: ConsumerKey) {
        ConnShared::consumer_cancelled(self, channel, consumer);
    }

    fn describe(&self) -> Option<ConnectionDescription> {
        ConnShared::describe(self)
    }

    fn close_forced(&self, reason: &str) -> bool {
        self.force_close(reason)
    }

    fn in_vhost(&self, vhost: &str) -> bool {
        ConnShared::in_vhost(self, vhost)
    }

    fn claims_vhost(&self, vhost: &str) -> bool {
        self.vhost_claim.borrow().as_deref() == Some(vhost)
    }
}
