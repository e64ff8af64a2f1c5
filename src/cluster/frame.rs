//! Inter-node frames: `[u32 big-endian length][u8 kind][payload]`, the length counting the kind
//! and the payload. Sans-IO, in mini-redis's two steps: `check` (is a whole frame here?
//! incomplete is not an error), then `split` it off.

use crate::limits::CLUSTER_FRAME_BYTES_MAX;

pub const LENGTH_BYTES: usize = 4;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Acceptor → connector: a fresh nonce and the acceptor's node name.
    Hello = 1,
    /// Connector → acceptor: its nonce, its proof of the secret, its node name.
    Auth = 2,
    /// Acceptor → connector: the acceptor's proof of the secret; the link is up.
    Welcome = 3,
    /// Either side: the handshake failed (a short reason), then the connection closes.
    Refused = 4,
    /// One Raft message (protobuf).
    Raft = 5,
    /// Either side, after the handshake, when it had nothing else to send for a while: the
    /// link is alive (empty payload).
    Heartbeat = 6,
    /// Forwarded traffic for the shard's data door (`cluster::DataPath`): publishes to queues
    /// the receiver leads, their confirms, requests on remote queues and their answers.
    Data = 7,
    /// Raft messages of quorum queue groups (`group.rs`), all of one turn for this peer:
    /// `[u64 queue][u32 length][protobuf message]` repeated.
    Group = 8,
    /// A leading piece of a data payload larger than one frame: the pieces that follow, up to
    /// and including the next `Data` frame, complete it (`link.rs`, `Reassembly`).
    DataPart = 9,
    /// A piece of one quorum group message larger than a frame (a snapshot): `[u32 total
    /// bytes][u32 offset][piece]`; the pieces, in order, make one `Group` batch of one message
    /// (`link.rs`, `GroupParts`).
    GroupPart = 10,
    /// A joiner (`handshake::Role::Joiner`) → acceptor, right after the handshake: add me; `[u16
    /// big-endian cluster port]` (the address is the one it connected from).
    Join = 11,
    /// Acceptor → joiner: it was added; the members as it is to keep them
    /// (`membership::Membership`'s text). `Refused` instead says why not.
    Joined = 12,
}

impl Kind {
    fn from_byte(byte: u8) -> Option<Kind> {
        Some(match byte {
            1 => Kind::Hello,
            2 => Kind::Auth,
            3 => Kind::Welcome,
            4 => Kind::Refused,
            5 => Kind::Raft,
            6 => Kind::Heartbeat,
            7 => Kind::Data,
            8 => Kind::Group,
            9 => Kind::DataPart,
            10 => Kind::GroupPart,
            11 => Kind::Join,
            12 => Kind::Joined,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {announced} bytes announced, at most {max} allowed")]
    TooLarge { announced: usize, max: usize },
    #[error("empty frame")]
    Empty,
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
}

/// `Ok(None)`: not a whole frame yet; `Ok(Some(n))`: the first `n` bytes are one frame.
pub fn check(buffer: &[u8]) -> Result<Option<usize>, FrameError> {
    let Some(header) = buffer.get(..LENGTH_BYTES) else {
        return Ok(None);
    };
    let mut length = [0u8; LENGTH_BYTES];
    length.copy_from_slice(header);
    let announced = u32::from_be_bytes(length) as usize;
    if announced == 0 {
        return Err(FrameError::Empty);
    }
    if announced > CLUSTER_FRAME_BYTES_MAX {
        return Err(FrameError::TooLarge {
            announced,
            max: CLUSTER_FRAME_BYTES_MAX,
        });
    }
    let total = LENGTH_BYTES + announced;
    Ok((buffer.len() >= total).then_some(total))
}

/// The kind and payload of the whole frame `check` found at the start of `frame`.
pub fn split(frame: &[u8]) -> Result<(Kind, &[u8]), FrameError> {
    let body = frame.get(LENGTH_BYTES..).unwrap_or_default();
    let (&kind, payload) = body.split_first().ok_or(FrameError::Empty)?;
    let kind = Kind::from_byte(kind).ok_or(FrameError::UnknownKind(kind))?;
    Ok((kind, payload))
}

/// Appends one frame to `out`. The payload must fit (we never send what a peer must refuse).
pub fn encode(kind: Kind, payload: &[u8], out: &mut Vec<u8>) {
    let length = payload.len() + 1;
    assert!(
        length <= CLUSTER_FRAME_BYTES_MAX,
        "an inter-node frame over the bound"
    );
    out.extend_from_slice(&(length as u32).to_be_bytes());
    out.push(kind as u8);
    out.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_round_trips_and_a_partial_one_waits() {
        let mut wire = Vec::new();
        encode(Kind::Raft, b"entry", &mut wire);
        encode(Kind::Hello, b"", &mut wire);
        for cut in 0..LENGTH_BYTES + 6 {
            assert_eq!(check(&wire[..cut]), Ok(None), "cut at {cut}");
        }
        let first = check(&wire).unwrap().unwrap();
        assert_eq!(split(&wire[..first]), Ok((Kind::Raft, &b"entry"[..])));
        let rest = &wire[first..];
        let second = check(rest).unwrap().unwrap();
        assert_eq!(second, rest.len());
        assert_eq!(split(rest), Ok((Kind::Hello, &b""[..])));
    }

    #[test]
    fn oversized_empty_and_unknown_frames_are_refused() {
        let huge = ((CLUSTER_FRAME_BYTES_MAX + 1) as u32).to_be_bytes();
        assert!(matches!(check(&huge), Err(FrameError::TooLarge { .. })));
        assert_eq!(check(&[0, 0, 0, 0]), Err(FrameError::Empty));
        assert_eq!(split(&[0, 0, 0, 1, 99]), Err(FrameError::UnknownKind(99)));
        // A length right at the bound is accepted (and then waits for its bytes).
        let most = (CLUSTER_FRAME_BYTES_MAX as u32).to_be_bytes();
        assert_eq!(check(&most), Ok(None));
    }
}
