//! On-disk record framing: a fixed 32-byte header followed by an rkyv payload, 16-byte aligned.
//!
//! Header layout (little endian):
//! ```text
//!  0..4   payload length in bytes (unpadded)
//!  4..8   crc32c over header[8..32] ++ payload
//!  8..16  lsn
//! 16..24  batch_lsn: lsn of the first record of the write batch this record was flushed in
//! 24      kind
//! 25..32  zero
//! ```
//! `batch_lsn` is what lets recovery tell a torn last write (bad record, and only records of the
//! same batch after it) from corruption (a bad record followed by a record of a later batch, which
//! could only have been written after the bad record's batch was made durable).
//!
//! A body larger than one part (`WalOptions::part_body_bytes`) is written as a chain: `Part`
//! records carrying the body in order (each with a 32-byte part header: queue, message, chain,
//! index), then one `EnqueueChained` record (a 32-byte chain header: chain, part count, body
//! bytes; then the rkyv enqueue with an empty body). The chain id is the LSN of its first part.
//! Parts are individually crc-checked like every record; the terminal record is what makes the
//! enqueue exist, so a chain cut short by a crash is only unreferenced parts.

use rkyv::rancor;
use rkyv::util::AlignedVec;
use rkyv::with::{AsString, InlineAsBox};

use super::{Lsn, WalError};

pub const RECORD_HEADER_BYTES: usize = 32;
/// Records start on this boundary so an rkyv archive can be read in place.
pub const RECORD_ALIGN_BYTES: usize = 16;
/// A seal record (header only) ends every segment that was rolled over.
pub const SEAL_RECORD_BYTES: usize = RECORD_HEADER_BYTES;

const _: () = assert!(RECORD_HEADER_BYTES.is_multiple_of(RECORD_ALIGN_BYTES));

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    Enqueue,
    Settle,
    Topology,
    /// Internal: "this segment ends here, the log continues in the next segment".
    Seal,
    /// One piece of the body of a chained enqueue.
    Part,
    /// The enqueue whose body is in the `Part` records of its chain, all earlier in the log.
    EnqueueChained,
}

impl RecordKind {
    fn to_byte(self) -> u8 {
        match self {
            RecordKind::Enqueue => 1,
            RecordKind::Settle => 2,
            RecordKind::Topology => 3,
            RecordKind::Seal => 4,
            RecordKind::Part => 5,
            RecordKind::EnqueueChained => 6,
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(RecordKind::Enqueue),
            2 => Some(RecordKind::Settle),
            3 => Some(RecordKind::Topology),
            4 => Some(RecordKind::Seal),
            5 => Some(RecordKind::Part),
            6 => Some(RecordKind::EnqueueChained),
            _ => None,
        }
    }
}

/// An enqueue as stored (rkyv-archived; read in place on recovery).
#[derive(rkyv::Archive, rkyv::Serialize, Debug, Clone, Copy)]
pub struct EnqueueRecord<'a> {
    pub queue: u64,
    pub message: u64,
    #[rkyv(with = AsString)]
    pub exchange: &'a str,
    #[rkyv(with = AsString)]
    pub routing_key: &'a str,
    /// AMQP-encoded content-header properties; opaque to the WAL.
    #[rkyv(with = InlineAsBox)]
    pub properties: &'a [u8],
    #[rkyv(with = InlineAsBox)]
    pub body: &'a [u8],
}

/// Settles (ack / expire / drop) a set of messages of one queue.
#[derive(rkyv::Archive, rkyv::Serialize, Debug, Clone, Copy)]
pub struct SettleRecord<'a> {
    pub queue: u64,
    #[rkyv(with = InlineAsBox)]
    pub messages: &'a [u64],
}

/// An enqueue read back from the log, owning its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedEnqueue {
    pub queue: u64,
    pub message: u64,
    pub exchange: String,
    pub routing_key: String,
    pub properties: bytes::Bytes,
    pub body: bytes::Bytes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    pub payload_bytes: u32,
    pub lsn: Lsn,
    pub batch_lsn: Lsn,
    pub kind: RecordKind,
}

impl RecordHeader {
    /// Bytes the record occupies on disk, header and alignment padding included.
    pub fn record_bytes(&self) -> usize {
        record_bytes_for(self.payload_bytes as usize)
    }
}

pub fn record_bytes_for(payload_bytes: usize) -> usize {
    (RECORD_HEADER_BYTES + payload_bytes).next_multiple_of(RECORD_ALIGN_BYTES)
}

/// Why the bytes at an offset are not a valid record. Not an error by itself: recovery decides
/// whether it is the end of the log, a torn write or corruption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadRecord {
    Truncated,
    Length,
    Kind,
    Padding,
    Checksum,
}

impl BadRecord {
    pub fn reason(self) -> &'static str {
        match self {
            BadRecord::Truncated => "record runs past the end of the segment",
            BadRecord::Length => "implausible record length",
            BadRecord::Kind => "unknown record kind",
            BadRecord::Padding => "non-zero header padding",
            BadRecord::Checksum => "crc32c mismatch",
        }
    }
}

pub fn serialize_enqueue(r: &EnqueueRecord, out: &mut AlignedVec) -> Result<(), WalError> {
    out.clear();
    let taken = std::mem::take(out);
    *out = rkyv::api::high::to_bytes_in::<_, rancor::Error>(r, taken)
        .map_err(|e| WalError::Encode(e.to_string()))?;
    Ok(())
}

pub fn serialize_settle(r: &SettleRecord, out: &mut AlignedVec) -> Result<(), WalError> {
    out.clear();
    let taken = std::mem::take(out);
    *out = rkyv::api::high::to_bytes_in::<_, rancor::Error>(r, taken)
        .map_err(|e| WalError::Encode(e.to_string()))?;
    Ok(())
}

/// Appends header + payload (the concatenation of `pieces`) + zero padding to `out`.
/// `out.len()` must be 16-byte aligned relative to the block the bytes will be written at (the
/// caller keeps that invariant).
pub fn encode_into(
    out: &mut Vec<u8>,
    kind: RecordKind,
    lsn: Lsn,
    batch_lsn: Lsn,
    pieces: &[&[u8]],
) {
    debug_assert!(out.len().is_multiple_of(RECORD_ALIGN_BYTES));
    let start = out.len();
    let payload_len: usize = pieces.iter().map(|p| p.len()).sum();
    let payload_bytes = u32::try_from(payload_len).unwrap_or(u32::MAX);
    debug_assert!(payload_bytes as usize == payload_len);
    let mut header = [0u8; RECORD_HEADER_BYTES];
    header[0..4].copy_from_slice(&payload_bytes.to_le_bytes());
    header[8..16].copy_from_slice(&lsn.to_le_bytes());
    header[16..24].copy_from_slice(&batch_lsn.to_le_bytes());
    header[24] = kind.to_byte();
    let crc = pieces.iter().fold(checksum_start(&header), |crc, p| {
        crc32c::crc32c_append(crc, p)
    });
    header[4..8].copy_from_slice(&crc.to_le_bytes());
    out.reserve(record_bytes_for(payload_len));
    out.extend_from_slice(&header);
    for p in pieces {
        out.extend_from_slice(p);
    }
    out.resize(start + record_bytes_for(payload_len), 0);
}

/// Bytes before the body in a `Part` payload, and before the rkyv enqueue in an
/// `EnqueueChained` payload (16-byte multiples, so the archive stays aligned).
pub const PART_HEADER_BYTES: usize = 32;
pub const CHAIN_HEADER_BYTES: usize = 32;

const _: () = assert!(CHAIN_HEADER_BYTES.is_multiple_of(RECORD_ALIGN_BYTES));

/// Identifies one part of a chained body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartHeader {
    pub queue: u64,
    pub message: u64,
    /// LSN of the chain's first part.
    pub chain: Lsn,
    pub index: u32,
}

impl PartHeader {
    pub fn encode(&self) -> [u8; PART_HEADER_BYTES] {
        let mut b = [0u8; PART_HEADER_BYTES];
        b[0..8].copy_from_slice(&self.queue.to_le_bytes());
        b[8..16].copy_from_slice(&self.message.to_le_bytes());
        b[16..24].copy_from_slice(&self.chain.to_le_bytes());
        b[24..28].copy_from_slice(&self.index.to_le_bytes());
        b
    }

    /// The header and the body bytes of a `Part` payload; None if it is malformed.
    pub fn decode(payload: &[u8]) -> Option<(PartHeader, &[u8])> {
        let b = payload.get(..PART_HEADER_BYTES)?;
        if b[28..].iter().any(|x| *x != 0) {
            return None;
        }
        let header = PartHeader {
            queue: u64::from_le_bytes(word8(b, 0)),
            message: u64::from_le_bytes(word8(b, 8)),
            chain: u64::from_le_bytes(word8(b, 16)),
            index: u32::from_le_bytes(word4(b, 24)),
        };
        Some((header, &payload[PART_HEADER_BYTES..]))
    }
}

/// What an `EnqueueChained` record says about its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainHeader {
    pub chain: Lsn,
    pub parts: u32,
    pub body_bytes: u64,
}

impl ChainHeader {
    pub fn encode(&self) -> [u8; CHAIN_HEADER_BYTES] {
        let mut b = [0u8; CHAIN_HEADER_BYTES];
        b[0..8].copy_from_slice(&self.chain.to_le_bytes());
        b[8..12].copy_from_slice(&self.parts.to_le_bytes());
        b[16..24].copy_from_slice(&self.body_bytes.to_le_bytes());
        b
    }

    /// The header and the rkyv enqueue of an `EnqueueChained` payload; None if malformed.
    pub fn decode(payload: &[u8]) -> Option<(ChainHeader, &[u8])> {
        let b = payload.get(..CHAIN_HEADER_BYTES)?;
        if b[12..16].iter().chain(&b[24..32]).any(|x| *x != 0) {
            return None;
        }
        let header = ChainHeader {
            chain: u64::from_le_bytes(word8(b, 0)),
            parts: u32::from_le_bytes(word4(b, 8)),
            body_bytes: u64::from_le_bytes(word8(b, 16)),
        };
        if header.parts == 0 {
            return None;
        }
        Some((header, &payload[CHAIN_HEADER_BYTES..]))
    }
}

/// Validates the record starting at `buf[0]` (header and crc) and returns its header and payload.
/// `payload_bytes_max` bounds the length field before it is trusted.
pub fn decode(buf: &[u8], payload_bytes_max: usize) -> Result<(RecordHeader, &[u8]), BadRecord> {
    let header = buf.get(..RECORD_HEADER_BYTES).ok_or(BadRecord::Truncated)?;
    let payload_bytes = u32::from_le_bytes(word4(header, 0));
    let crc = u32::from_le_bytes(word4(header, 4));
    if payload_bytes as usize > payload_bytes_max {
        return Err(BadRecord::Length);
    }
    let kind = RecordKind::from_byte(header[24]).ok_or(BadRecord::Kind)?;
    if header[25..].iter().any(|b| *b != 0) {
        return Err(BadRecord::Padding);
    }
    let payload_end = RECORD_HEADER_BYTES + payload_bytes as usize;
    let payload = buf
        .get(RECORD_HEADER_BYTES..payload_end)
        .ok_or(BadRecord::Truncated)?;
    if checksum(header, payload) != crc {
        return Err(BadRecord::Checksum);
    }
    let lsn = u64::from_le_bytes(word8(header, 8));
    let batch_lsn = u64::from_le_bytes(word8(header, 16));
    let decoded = RecordHeader {
        payload_bytes,
        lsn,
        batch_lsn,
        kind,
    };
    Ok((decoded, payload))
}

/// The crc32c a record header stores at bytes 4..8: over the header after the crc field, then
/// the payload.
pub fn checksum(header: &[u8], payload: &[u8]) -> u32 {
    crc32c::crc32c_append(checksum_start(header), payload)
}

fn checksum_start(header: &[u8]) -> u32 {
    crc32c::crc32c(header.get(8..RECORD_HEADER_BYTES).unwrap_or(&[]))
}

fn word4(b: &[u8], at: usize) -> [u8; 4] {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    w
}

fn word8(b: &[u8], at: usize) -> [u8; 8] {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    w
}

/// Reads an enqueue payload in place. The payload must start 16-byte aligned in memory.
pub fn access_enqueue(payload: &[u8]) -> Result<&ArchivedEnqueueRecord<'static>, WalError> {
    rkyv::access::<ArchivedEnqueueRecord<'static>, rancor::Error>(payload)
        .map_err(|e| WalError::Decode(e.to_string()))
}

pub fn access_settle(payload: &[u8]) -> Result<&ArchivedSettleRecord<'static>, WalError> {
    rkyv::access::<ArchivedSettleRecord<'static>, rancor::Error>(payload)
        .map_err(|e| WalError::Decode(e.to_string()))
}

pub fn to_owned_enqueue(a: &ArchivedEnqueueRecord<'_>) -> OwnedEnqueue {
    owned_enqueue_with_body(a, bytes::Bytes::copy_from_slice(a.body.get()))
}

/// Like `to_owned_enqueue`, but leaves the body on disk (recovery over its body budget).
pub fn to_owned_enqueue_without_body(a: &ArchivedEnqueueRecord<'_>) -> OwnedEnqueue {
    owned_enqueue_with_body(a, bytes::Bytes::new())
}

fn owned_enqueue_with_body(a: &ArchivedEnqueueRecord<'_>, body: bytes::Bytes) -> OwnedEnqueue {
    OwnedEnqueue {
        queue: a.queue.to_native(),
        message: a.message.to_native(),
        exchange: a.exchange.as_str().to_owned(),
        routing_key: a.routing_key.as_str().to_owned(),
        properties: bytes::Bytes::copy_from_slice(a.properties.get()),
        body,
    }
}
