//! Chained enqueues: a body larger than `part_body_bytes` is appended as `Part` records and
//! one `EnqueueChained` terminal (format in `record`), fed into batches a few parts at a time.
//!
//! - `append_enqueue_body` queues a `Stream` holding a handle to the body (no copy) and feeds
//!   what fits at once. The flusher feeds the front stream again before taking each batch, up
//!   to the soft bound (at least one part per batch), so a 128 MiB body never needs a batch,
//!   a DMA buffer or a copy larger than the soft bound plus one part.
//! - The LSN returned is the stream's barrier: the next LSN at the time of the call. Until the
//!   terminal is durable, `wait_durable` reports nothing at or past the barrier as durable, so a
//!   confirm waiting for the barrier is released only once every part and the terminal are on
//!   disk, and confirms of later records (in LSN order) wait behind it.
//! - Parts pin their segments from the moment they are appended (`Liveness::on_part`); the
//!   enqueue exists (is in the index, can be read) from its terminal on.
//! - A settle of the key while its chain is being appended gives the chain up: no terminal is
//!   written, the parts already appended become unreferenced and stop pinning their segments.
//! - `read_live` of a key being streamed waits for the stream to be durable first.

use super::*;
use crate::storage::wal::live::{LiveEnqueue, MessageKey};
use crate::storage::wal::record::{
    ChainHeader, PartHeader, RecordHeader, CHAIN_HEADER_BYTES, PART_HEADER_BYTES,
};

/// A body the log may keep a handle to while its parts are written (the broker's message
/// allocation: shared, not copied).
pub trait EnqueueBody {
    fn body(&self) -> &[u8];
}

impl EnqueueBody for Vec<u8> {
    fn body(&self) -> &[u8] {
        self
    }
}

pub(super) struct Stream {
    key: MessageKey,
    /// Nothing at or past this LSN is reported durable until the terminal is.
    barrier: Lsn,
    body: Rc<dyn EnqueueBody>,
    /// The rkyv enqueue with an empty body: the terminal's payload after its chain header.
    meta: AlignedVec,
    sent_bytes: usize,
    /// LSN of the first part, once appended.
    chain: Lsn,
    parts: Vec<RecordPos>,
}

impl Wal {
    /// Buffers an enqueue whose body the log may hold on to: one record if the body fits a
    /// part, else a chain fed into the coming batches (see the module notes). Returns the LSN
    /// to wait for with `wait_durable` before the enqueue may be confirmed. `r.body` is ignored.
    pub fn append_enqueue_body(
        &self,
        r: &EnqueueRecord,
        body: Rc<dyn EnqueueBody>,
    ) -> Result<Lsn, WalError> {
        let part_body_bytes = self.inner.borrow().opts.part_body_bytes;
        if body.body().len() <= part_body_bytes {
            let single = EnqueueRecord {
                body: body.body(),
                ..*r
            };
            return self.append_enqueue(&single).map(|(lsn, _)| lsn);
        }
        let mut g = self.inner.borrow_mut();
        if g.closed {
            return Err(WalError::Closed);
        }
        let mut meta = AlignedVec::new();
        record::serialize_enqueue(&EnqueueRecord { body: &[], ..*r }, &mut meta)?;
        if CHAIN_HEADER_BYTES + meta.len() > g.payload_bytes_max {
            return Err(WalError::RecordTooLarge {
                bytes: CHAIN_HEADER_BYTES + meta.len(),
                max: g.payload_bytes_max,
            });
        }
        let barrier = g.next_lsn;
        g.streams.push_back(Stream {
            key: (r.queue, r.message),
            barrier,
            body,
            meta,
            sent_bytes: 0,
            chain: 0,
            parts: Vec::new(),
        });
        g.feed_streams();
        g.wake_flusher();
        Ok(barrier)
    }

    /// Reads a chained enqueue back: its terminal at `live.pos`, then each part, checked
    /// against the chain, into one body.
    pub(super) async fn read_chained(
        &self,
        live: LiveEnqueue,
        parts: &[RecordPos],
    ) -> Result<OwnedEnqueue, WalError> {
        let (header, payload, path) = self.read_record(live.pos).await?;
        let corrupt = |offset, reason| WalError::Corrupt {
            file: path.clone(),
            offset,
            reason,
        };
        let (chain, meta) = match (header.kind, ChainHeader::decode(&payload)) {
            (RecordKind::EnqueueChained, Some(decoded)) => decoded,
            _ => return Err(corrupt(live.pos.offset, "not a chained enqueue record")),
        };
        if chain.parts as usize != parts.len() {
            return Err(corrupt(
                live.pos.offset,
                "chain part count differs from the index",
            ));
        }
        let archived = record::access_enqueue(meta)?;
        let key = (archived.queue.to_native(), archived.message.to_native());
        let mut owned = record::to_owned_enqueue(archived);
        let body_bytes = usize::try_from(chain.body_bytes).unwrap_or(usize::MAX);
        let part_body_bytes = self.inner.borrow().opts.part_body_bytes;
        if body_bytes > parts.len().saturating_mul(part_body_bytes) {
            return Err(corrupt(live.pos.offset, "chain body longer than its parts"));
        }
        let mut body = bytes::BytesMut::with_capacity(body_bytes);
        for (index, &at) in parts.iter().enumerate() {
            let (part_header, part_payload, part_path) = self.read_record(at).await?;
            let expected = PartCheck {
                key,
                chain: chain.chain,
                index: index as u32,
            };
            let Some(piece) = expected.body(&part_header, &part_payload) else {
                return Err(WalError::Corrupt {
                    file: part_path,
                    offset: at.offset,
                    reason: "part record does not belong to its chain",
                });
            };
            if body.len() + piece.len() > body_bytes {
                return Err(corrupt(live.pos.offset, "chain parts longer than its body"));
            }
            body.extend_from_slice(piece);
        }
        if body.len() != body_bytes {
            return Err(corrupt(
                live.pos.offset,
                "chain parts shorter than its body",
            ));
        }
        owned.body = body.freeze();
        Ok(owned)
    }
}

/// What a part must say to belong to a chain.
pub(crate) struct PartCheck {
    pub key: MessageKey,
    pub chain: Lsn,
    pub index: u32,
}

impl PartCheck {
    /// The part's body bytes if the record is that part.
    pub fn body<'p>(&self, header: &RecordHeader, payload: &'p [u8]) -> Option<&'p [u8]> {
        if header.kind != RecordKind::Part {
            return None;
        }
        let (part, body) = PartHeader::decode(payload)?;
        let chain = if part.index == 0 {
            header.lsn
        } else {
            part.chain
        };
        let first_names_itself = part.index != 0 || part.chain == 0;
        let belongs = (part.queue, part.message) == self.key
            && part.index == self.index
            && chain == self.chain
            && first_names_itself;
        belongs.then_some(body)
    }
}

impl Inner {
    /// What `wait_durable` may report: the durable LSN, held below the oldest chain whose
    /// terminal is not durable yet.
    pub(super) fn reported_durable_lsn(&self) -> Lsn {
        let streaming = self.streams.front().map(|s| s.barrier);
        let finishing = self.finishing.front().map(|&(barrier, _)| barrier);
        match streaming.into_iter().chain(finishing).min() {
            Some(barrier) => self.durable_lsn.min(barrier - 1),
            None => self.durable_lsn,
        }
    }

    /// The barrier of a chain of `key` being appended, if there is one.
    pub(super) fn stream_barrier(&self, key: MessageKey) -> Option<Lsn> {
        let streaming = self.streams.iter().find(|s| s.key == key);
        streaming.map(|s| s.barrier)
    }

    /// A settle of `key` gives up its chain being appended (the message left its queue).
    pub(super) fn cancel_stream(&mut self, key: MessageKey) {
        let Some(at) = self.streams.iter().position(|s| s.key == key) else {
            return;
        };
        if let Some(stream) = self.streams.remove(at) {
            self.live.drop_parts(&stream.parts);
        }
    }

    /// Appends parts (and terminals) of the queued chains while the batch is under its soft
    /// bound; an empty batch always takes one, so every flush makes progress.
    pub(super) fn feed_streams(&mut self) {
        // Each pass appends one record or returns: bounded by the parts of the queued chains.
        while let Some(stream) = self.streams.front() {
            if self.closed || self.failed.is_some() {
                return;
            }
            let remaining = stream.body.body().len() - stream.sent_bytes;
            let payload_bytes = if remaining == 0 {
                CHAIN_HEADER_BYTES + stream.meta.len()
            } else {
                PART_HEADER_BYTES + remaining.min(self.opts.part_body_bytes)
            };
            let fits = self.pending.bytes + record::record_bytes_for(payload_bytes)
                <= self.opts.batch_soft_bytes;
            if !fits && !self.pending.chunks.is_empty() {
                return;
            }
            let Some(mut stream) = self.streams.pop_front() else {
                return;
            };
            let appended = if remaining == 0 {
                self.append_terminal(&stream)
            } else {
                self.append_part(&mut stream).map(|()| false)
            };
            match appended {
                Ok(true) => {}
                Ok(false) => self.streams.push_front(stream),
                Err(error) => {
                    // Only `Closed` in practice (a part fits an empty batch by `validate`):
                    // the chain stays queued, so its barrier is never reported durable.
                    tracing::debug!(%error, "wal chained enqueue paused");
                    self.streams.push_front(stream);
                    return;
                }
            }
        }
    }

    fn append_part(&mut self, stream: &mut Stream) -> Result<(), WalError> {
        let body = stream.body.body();
        let end = body
            .len()
            .min(stream.sent_bytes + self.opts.part_body_bytes);
        let header = PartHeader {
            queue: stream.key.0,
            message: stream.key.1,
            chain: stream.chain,
            index: stream.parts.len() as u32,
        };
        let piece = &body[stream.sent_bytes..end];
        let (lsn, pos) = self.append_pieces(RecordKind::Part, &[&header.encode(), piece])?;
        self.live.on_part(pos);
        if stream.parts.is_empty() {
            stream.chain = lsn;
        }
        stream.parts.push(pos);
        stream.sent_bytes = end;
        Ok(())
    }

    /// Returns true: the chain is complete (its stream is done).
    fn append_terminal(&mut self, stream: &Stream) -> Result<bool, WalError> {
        let header = ChainHeader {
            chain: stream.chain,
            parts: stream.parts.len() as u32,
            body_bytes: stream.sent_bytes as u64,
        };
        let pieces: [&[u8]; 2] = [&header.encode(), &stream.meta];
        let (lsn, pos) = self.append_pieces(RecordKind::EnqueueChained, &pieces)?;
        let parts: Rc<[RecordPos]> = stream.parts.as_slice().into();
        self.live.on_enqueue_chained(pos, stream.key, lsn, parts);
        self.finishing.push_back((stream.barrier, lsn));
        Ok(true)
    }
}
