//! Message deduplication (`x-message-deduplication`): a message whose key was seen in the
//! window is dropped, so a publisher retrying after a lost confirm makes no duplicate.
//!
//! The key is the `x-deduplication-header` header's value, or the `message_id` when it is
//! absent; a message with neither is never a duplicate. The window holds the last
//! `x-cache-size` keys, each for `x-cache-ttl` ms when set. Keys are kept as 128-bit digests
//! under per-cache random hash keys, so an entry costs the same whatever the key's length
//! and a publisher cannot craft collisions.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hash, Hasher};

use crate::protocol::FieldValue;

use super::{Message, Queue};

pub const X_DEDUPLICATION_HEADER: &str = "x-deduplication-header";

type Digest = (u64, u64);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DedupConfig {
    /// Keys remembered at most (oldest forgotten first).
    pub cache_size: usize,
    /// How long a key is remembered; None: until pushed out by newer keys.
    pub ttl_ms: Option<u64>,
}

#[derive(Debug)]
pub struct DedupCache {
    config: DedupConfig,
    /// Digest -> when it was remembered (ms).
    seen: HashMap<Digest, u64>,
    /// Oldest first; exactly the entries of `seen` (expired ones leave both at once).
    order: VecDeque<(u64, Digest)>,
    hash_keys: (RandomState, RandomState),
}

impl DedupCache {
    pub fn new(config: DedupConfig) -> DedupCache {
        DedupCache {
            config,
            seen: HashMap::new(),
            order: VecDeque::new(),
            hash_keys: (RandomState::new(), RandomState::new()),
        }
    }

    /// The message's key digest, or None when it has no key.
    pub fn digest(&self, message: &Message) -> Option<Digest> {
        // Only queues with deduplication pay for decoding the properties.
        let properties = message.properties();
        let header = properties
            .headers
            .as_ref()
            .and_then(|headers| headers.get(X_DEDUPLICATION_HEADER));
        let mut first = self.hash_keys.0.build_hasher();
        let mut second = self.hash_keys.1.build_hasher();
        match (header, properties.message_id.as_deref()) {
            (Some(value), _) => {
                hash_value(value, &mut first);
                hash_value(value, &mut second);
            }
            (None, Some(id)) => {
                // Tagged apart from a header holding the same text.
                (1u8, id).hash(&mut first);
                (1u8, id).hash(&mut second);
            }
            (None, None) => return None,
        }
        Some((first.finish(), second.finish()))
    }

    /// Whether `digest` is in the window at `now_ms`.
    pub fn contains(&mut self, digest: Digest, now_ms: u64) -> bool {
        self.forget_expired(now_ms);
        self.seen.contains_key(&digest)
    }

    /// Remembers `digest` (call for accepted messages only, after [`DedupCache::contains`]).
    pub fn remember(&mut self, digest: Digest, now_ms: u64) {
        if self.seen.insert(digest, now_ms).is_some() {
            return; // already in the window: keep its original place
        }
        self.order.push_back((now_ms, digest));
        while self.order.len() > self.config.cache_size {
            if let Some((_, oldest)) = self.order.pop_front() {
                self.seen.remove(&oldest);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    fn forget_expired(&mut self, now_ms: u64) {
        let Some(ttl) = self.config.ttl_ms else {
            return;
        };
        while let Some(&(at, digest)) = self.order.front() {
            if at.saturating_add(ttl) > now_ms {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&digest);
        }
    }
}

/// A message's key in a deduplicating queue, to remember once the message is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DedupKey(Digest);

impl Queue {
    /// Err(()) when the message is a duplicate within the window; otherwise its key (None: the
    /// queue does not deduplicate or the message has no key). Nothing is remembered yet.
    #[allow(clippy::result_unit_err)]
    pub fn check_duplicate(
        &mut self,
        message: &Message,
        now_ms: u64,
    ) -> Result<Option<DedupKey>, ()> {
        let Some(cache) = self.dedup.as_mut() else {
            return Ok(None);
        };
        let Some(digest) = cache.digest(message) else {
            return Ok(None);
        };
        if cache.contains(digest, now_ms) {
            return Err(());
        }
        Ok(Some(DedupKey(digest)))
    }

    /// Remembers the key of a message the queue accepted.
    pub fn remember_key(&mut self, key: Option<DedupKey>, now_ms: u64) {
        if let (Some(cache), Some(DedupKey(digest))) = (self.dedup.as_mut(), key) {
            cache.remember(digest, now_ms);
        }
    }
}

/// Hashes a header value: text by its bytes, integers by value (any width), anything else by
/// its wire form's debug text; each kind tagged apart.
fn hash_value(value: &FieldValue, state: &mut impl Hasher) {
    match value {
        FieldValue::LongString(bytes) | FieldValue::ByteArray(bytes) => {
            (0u8, bytes.as_ref()).hash(state)
        }
        other => match other.as_i64() {
            Some(n) => (2u8, n).hash(state),
            None => (3u8, format!("{other:?}")).hash(state),
        },
    }
}

#[cfg(test)]
mod tests {
    use crate::broker::queue::Route;
    use bytes::Bytes;

    use super::*;
    use crate::protocol::{BasicProperties, FieldTable};

    fn message(id: Option<&str>, header: Option<FieldValue>) -> Message {
        let headers = header.map(|value| {
            let mut table = FieldTable::default();
            table.insert(X_DEDUPLICATION_HEADER, value);
            table
        });
        Message::new(
            Route {
                exchange: "",
                routing_key: "q",
            },
            &BasicProperties {
                message_id: id.map(str::to_owned),
                headers,
                ..BasicProperties::default()
            },
            &Bytes::from_static(b"b"),
        )
    }

    fn offer(cache: &mut DedupCache, message: &Message, now_ms: u64) -> bool {
        let Some(digest) = cache.digest(message) else {
            return true;
        };
        if cache.contains(digest, now_ms) {
            return false;
        }
        cache.remember(digest, now_ms);
        true
    }

    #[test]
    fn header_wins_over_message_id_and_keyless_messages_pass() {
        let mut cache = DedupCache::new(DedupConfig {
            cache_size: 10,
            ttl_ms: None,
        });
        let text = |s: &'static str| FieldValue::LongString(Bytes::from_static(s.as_bytes()));
        assert!(offer(&mut cache, &message(Some("a"), None), 0));
        assert!(!offer(&mut cache, &message(Some("a"), None), 0));
        assert!(offer(&mut cache, &message(Some("a"), Some(text("a"))), 0));
        assert!(!offer(&mut cache, &message(Some("b"), Some(text("a"))), 0));
        assert!(offer(
            &mut cache,
            &message(None, Some(FieldValue::LongInt(7))),
            0
        ));
        assert!(!offer(
            &mut cache,
            &message(None, Some(FieldValue::ShortInt(7))),
            0
        ));
        assert!(offer(&mut cache, &message(None, None), 0));
        assert!(offer(&mut cache, &message(None, None), 0));
        assert_eq!(cache.len(), 3);
    }

    #[test]
    fn restored_messages_are_in_the_window() {
        use crate::broker::queue::{QueueConfig, QueueLimits, WalPosition};

        let config = QueueConfig {
            deduplication: Some(DedupConfig {
                cache_size: 10,
                ttl_ms: None,
            }),
            ..QueueConfig::default()
        };
        let mut queue = Queue::with_config(QueueLimits::default(), config);
        let restored = message(Some("a"), None);
        queue.restore(3, restored, WalPosition::MIN, 5, 5);
        assert!(queue.check_duplicate(&message(Some("a"), None), 6).is_err());
        assert!(matches!(
            queue.check_duplicate(&message(Some("b"), None), 6),
            Ok(Some(_))
        ));
    }

    #[test]
    fn window_is_bounded_by_size_and_ttl() {
        let mut cache = DedupCache::new(DedupConfig {
            cache_size: 2,
            ttl_ms: Some(100),
        });
        for id in ["1", "2", "3"] {
            assert!(offer(&mut cache, &message(Some(id), None), 0));
        }
        assert_eq!(cache.len(), 2);
        assert!(
            offer(&mut cache, &message(Some("1"), None), 10),
            "pushed out"
        );
        assert!(!offer(&mut cache, &message(Some("3"), None), 99));
        assert!(offer(&mut cache, &message(Some("3"), None), 100), "expired");
        assert!(cache.len() <= 2);
        assert_eq!(cache.seen.len(), cache.order.len());
    }
}
