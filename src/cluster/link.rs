//! Inter-node TCP: one outbound connection per peer carrying our Raft messages to it, and the
//! cluster port accepting the peers' connections carrying theirs to us. Every connection starts
//! with the handshake (`handshake.rs`) and then carries frames (`frame.rs`); a frame announcing
//! more than `CLUSTER_FRAME_BYTES_MAX` closes the connection before anything is allocated.
//! An outbound link reconnects with doubling backoff; what is queued while it is down is
//! bounded (`CLUSTER_PEER_QUEUE_MESSAGES_MAX`, oldest dropped: Raft retransmits).
//!
//! Data (`Kind::Data`, the shard's forwarded traffic through `super::DataPath`) shares the
//! outbound connection with Raft, in its own queue: never dropped while the link is up, bounded
//! by `CLUSTER_DATA_QUEUE_BYTES_MAX` (a full queue refuses, the caller nacks), written in the
//! same batch as the Raft messages. A payload larger than one frame (a forwarded message of up
//! to `CLUSTER_DATA_RECORD_BYTES_MAX`) goes as `DataPart` frames ending with a `Data` frame, and
//! the accepting side puts it together before handing it on. When the connection fails, what
//! was queued or being written is counted as gone and the data path is told the link is down.
//! On the accepting side a data payload is handed to the data path, and the connection is not
//! read again until it is taken.
//!
//! A quorum group message larger than one frame (a snapshot for a follower that is behind)
//! goes as `GroupPart` pieces, each saying where it falls in the whole; the accepting side puts
//! them together (at most `QUORUM_SNAPSHOT_BYTES_MAX`) and drops the message if a piece is
//! missing (the queue dropped it: Raft sends the snapshot again).
//!
//! Liveness is the link's own, not Raft's (followers send each other nothing): after the
//! handshake each side sends a heartbeat frame when it had nothing else to send for
//! `CLUSTER_HEARTBEAT_INTERVAL`, and each side listens while it sends. A connection that ends,
//! or on which nothing arrives for `CLUSTER_PEER_SILENCE_MAX` (or a write does not finish within
//! it), is closed; the outbound link is then down (the peer "not running") until it reconnects.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};

use super::frame::{self, Kind};
use super::{handshake, DataPath};
use crate::limits::{
    CLUSTER_CONNECTIONS_MAX, CLUSTER_CONNECT_TIMEOUT, CLUSTER_DATA_PAYLOAD_BYTES_MAX,
    CLUSTER_DATA_QUEUE_BYTES_MAX, CLUSTER_DATA_RECORD_BYTES_MAX, CLUSTER_FRAME_BYTES_MAX,
    CLUSTER_HANDSHAKE_TIMEOUT, CLUSTER_HEARTBEAT_INTERVAL, CLUSTER_JOIN_TIMEOUT,
    CLUSTER_PEER_QUEUE_MESSAGES_MAX, CLUSTER_PEER_SILENCE_MAX, CLUSTER_RECONNECT_BACKOFF_MAX,
    CLUSTER_RECONNECT_BACKOFF_MIN, QUORUM_SNAPSHOT_BYTES_MAX, READ_CHUNK_BYTES,
};
use crate::shared_io::SharedIo;
use crate::sync::Notify;

/// Where received Raft messages go: (the name of the peer that proved itself, the message).
pub type Deliver = dyn Fn(&str, &[u8]);

/// Where received data frames go: (the peer's name, the payload); the connection is read again
/// once the future is ready.
pub type DeliverData = dyn Fn(&str, Vec<u8>) -> Pin<Box<dyn std::future::Future<Output = ()>>>;

/// Where a node asking to join goes: (its name, the cluster address it is reached at); the
/// answer for it (`Kind::Joined`'s payload) once it is a member, or why not.
pub type DeliverJoin =
    dyn Fn(&str, SocketAddr) -> Pin<Box<dyn std::future::Future<Output = Result<Vec<u8>, String>>>>;

/// What the accepting side hands received frames to, and tells when a peer's connection ends.
pub struct Receivers {
    pub raft: Rc<Deliver>,
    /// Quorum queue groups' batched Raft messages (`Kind::Group`).
    pub group: Rc<Deliver>,
    pub data: Rc<DeliverData>,
    pub closed: Rc<dyn Fn(&str)>,
    pub join: Rc<DeliverJoin>,
}

/// Who we are on the wire.
pub struct Identity {
    pub name: String,
    pub secret: Vec<u8>,
    /// Every current member's name (ours too): the nodes whose connections are accepted.
    members: RefCell<Vec<String>>,
}

impl Identity {
    pub fn new(name: String, secret: Vec<u8>, members: Vec<String>) -> Identity {
        Identity {
            name,
            secret,
            members: RefCell::new(members),
        }
    }

    /// A node joined or was forgotten: who is accepted from now on.
    pub fn set_members(&self, members: Vec<String>) {
        *self.members.borrow_mut() = members;
    }

    fn is_member(&self, name: &str) -> bool {
        name != self.name && self.members.borrow().iter().any(|m| m == name)
    }
}

/// One connection's socket, shared by the half that listens and the half that sends (both in
/// one task, raced).
type Socket = SharedIo<TcpStream>;

/// A connection (or one half of it, after `split`): frames in, frames out.
struct Wire {
    stream: Socket,
    buffer: Vec<u8>,
}

impl Wire {
    fn new(stream: TcpStream) -> Wire {
        Wire {
            stream: Socket::new(stream),
            buffer: Vec::new(),
        }
    }

    /// (listening half, sending half): the first keeps what was already read past the
    /// handshake (frames the peer sent right after it).
    fn split(self) -> (Wire, Wire) {
        let sending = Wire {
            stream: self.stream.clone(),
            buffer: Vec::new(),
        };
        (self, sending)
    }

    async fn read_frame(&mut self) -> Result<(Kind, Vec<u8>), String> {
        loop {
            if let Some(length) = frame::check(&self.buffer).map_err(|e| e.to_string())? {
                let (kind, payload) =
                    frame::split(&self.buffer[..length]).map_err(|e| e.to_string())?;
                let payload = payload.to_vec();
                self.buffer.drain(..length);
                return Ok((kind, payload));
            }
            let mut chunk = vec![0u8; READ_CHUNK_BYTES];
            let read = self
                .stream
                .read(&mut chunk)
                .await
                .map_err(|e| e.to_string())?;
            if read == 0 {
                return Err("connection closed".to_string());
            }
            self.buffer.extend_from_slice(&chunk[..read]);
        }
    }

    async fn write_frame(&mut self, kind: Kind, payload: &[u8]) -> Result<(), String> {
        let mut bytes = Vec::with_capacity(payload.len() + frame::LENGTH_BYTES + 1);
        frame::encode(kind, payload, &mut bytes);
        self.write(&bytes).await
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.stream
            .write_all(bytes)
            .await
            .map_err(|e| e.to_string())?;
        self.stream.flush().await.map_err(|e| e.to_string())
    }
}

async fn within<T>(
    limit: Duration,
    what: &str,
    work: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    match glommio::timer::timeout(limit, async { Ok(work.await) }).await {
        Ok(result) => result,
        Err(_) => Err(format!("{what}: no answer within {limit:?}")),
    }
}

/// The connector's side: connect, read Hello, prove the secret, check the acceptor's proof.
async fn connect(address: SocketAddr, peer: &str, identity: &Identity) -> Result<Wire, String> {
    connect_as(handshake::Role::Member, address, peer, identity).await
}

async fn connect_as(
    role: handshake::Role,
    address: SocketAddr,
    peer: &str,
    identity: &Identity,
) -> Result<Wire, String> {
    let stream = within(CLUSTER_CONNECT_TIMEOUT, "connect", async {
        TcpStream::connect(address).await.map_err(|e| e.to_string())
    })
    .await?;
    let _ = stream.set_nodelay(true);
    within(CLUSTER_HANDSHAKE_TIMEOUT, "handshake", async {
        let mut wire = Wire::new(stream);
        let (kind, payload) = wire.read_frame().await?;
        if kind != Kind::Hello {
            return Err(refusal(kind, &payload));
        }
        let (their_nonce, their_name) =
            handshake::parse_hello(&payload).map_err(|e| e.to_string())?;
        if their_name != peer {
            let error = handshake::HandshakeError::WrongNode {
                expected: peer.to_string(),
                got: their_name,
            };
            return Err(error.to_string());
        }
        let own_nonce = handshake::fresh_nonce().map_err(|e| e.to_string())?;
        let auth = match role {
            handshake::Role::Member => handshake::auth,
            handshake::Role::Joiner => handshake::auth_to_join,
        };
        let auth = auth(&identity.secret, &their_nonce, &own_nonce, &identity.name);
        wire.write_frame(Kind::Auth, &auth).await?;
        let (kind, payload) = wire.read_frame().await?;
        if kind != Kind::Welcome {
            return Err(refusal(kind, &payload));
        }
        handshake::check_welcome(&identity.secret, &their_nonce, &own_nonce, peer, &payload)
            .map_err(|e| e.to_string())?;
        Ok(wire)
    })
    .await
}

fn refusal(kind: Kind, payload: &[u8]) -> String {
    match kind {
        Kind::Refused => format!("refused: {}", String::from_utf8_lossy(payload)),
        other => format!("unexpected {other:?} frame in the handshake"),
    }
}

/// The acceptor's side: send Hello, check the Auth, prove ourselves. Returns the peer's name
/// and whether it is a member or asks to join.
async fn accept(
    stream: TcpStream,
    identity: &Identity,
) -> Result<(Wire, String, handshake::Role), String> {
    within(CLUSTER_HANDSHAKE_TIMEOUT, "handshake", async {
        let mut wire = Wire::new(stream);
        let own_nonce = handshake::fresh_nonce().map_err(|e| e.to_string())?;
        let hello = handshake::hello(&own_nonce, &identity.name);
        wire.write_frame(Kind::Hello, &hello).await?;
        let (kind, payload) = wire.read_frame().await?;
        if kind != Kind::Auth {
            return Err(format!("unexpected {kind:?} frame in the handshake"));
        }
        let is_member = |name: &str| identity.is_member(name);
        match handshake::check_auth(&identity.secret, &own_nonce, &payload, is_member) {
            Ok((name, their_nonce, role)) => {
                let welcome =
                    handshake::welcome(&identity.secret, &own_nonce, &their_nonce, &identity.name);
                wire.write_frame(Kind::Welcome, &welcome).await?;
                Ok((wire, name, role))
            }
            Err(error) => {
                // The reason stays in our log: a stranger learns only that it was refused.
                let _ = wire
                    .write_frame(Kind::Refused, b"not a member of this cluster")
                    .await;
                Err(error.to_string())
            }
        }
    })
    .await
}

/// Our Raft messages and data to one peer.
pub struct Outbound {
    peer: String,
    address: SocketAddr,
    /// Raft frames (the topology's and the quorum groups'), oldest dropped past the bound.
    queue: RefCell<VecDeque<(Kind, Vec<u8>)>>,
    queued: Notify,
    up: Cell<bool>,
    /// Data payloads not yet handed to a write.
    data: RefCell<VecDeque<Vec<u8>>>,
    /// Data bytes accepted and not yet gone (queued, or in the write under way).
    data_unsent_bytes: Cell<usize>,
    /// Data bytes accepted since start, and of those the ones gone (written or dropped).
    data_accepted_total: Cell<u64>,
    data_gone_total: Cell<u64>,
    /// The data path and this peer's member index, told what left and when the link fails.
    path: RefCell<Option<(usize, Rc<dyn DataPath>)>>,
    /// The peer was forgotten: the link closes and never connects again.
    stopped: Cell<bool>,
}

impl Outbound {
    pub fn new(peer: String, address: SocketAddr) -> Rc<Outbound> {
        Rc::new(Outbound {
            peer,
            address,
            queue: RefCell::new(VecDeque::new()),
            queued: Notify::default(),
            up: Cell::new(false),
            data: RefCell::new(VecDeque::new()),
            data_unsent_bytes: Cell::new(0),
            data_accepted_total: Cell::new(0),
            data_gone_total: Cell::new(0),
            path: RefCell::new(None),
            stopped: Cell::new(false),
        })
    }

    /// The peer left the cluster: its connection closes (at the next write or wake-up) and is
    /// never made again.
    pub fn stop(&self) {
        self.stopped.set(true);
        self.queued.notify();
    }

    /// Where this link reports its data (`peer`: the peer's member index).
    pub fn attach_data_path(&self, peer: usize, path: Rc<dyn DataPath>) {
        *self.path.borrow_mut() = Some((peer, path));
    }

    /// Queues one data payload for the peer. `Some(end)`: accepted, and it is gone once
    /// `DataPath::data_gone` reports `end` bytes; `None`: refused (the link is down, the queue
    /// is full, or the payload does not fit a frame), nothing was queued.
    pub fn send_data(&self, payload: Vec<u8>) -> Option<u64> {
        let length = payload.len();
        let unsent = self.data_unsent_bytes.get();
        if !self.up.get()
            || length > CLUSTER_DATA_RECORD_BYTES_MAX
            || unsent + length > CLUSTER_DATA_QUEUE_BYTES_MAX
        {
            return None;
        }
        self.data.borrow_mut().push_back(payload);
        self.data_unsent_bytes.set(unsent + length);
        let end = self.data_accepted_total.get() + length as u64;
        self.data_accepted_total.set(end);
        self.queued.notify();
        Some(end)
    }

    /// `bytes` of accepted data left (written, or dropped with the connection).
    fn data_left(&self, bytes: usize) {
        if bytes == 0 {
            return;
        }
        let unsent = self.data_unsent_bytes.get();
        assert!(bytes <= unsent, "more data gone than was accepted");
        self.data_unsent_bytes.set(unsent - bytes);
        let total = self.data_gone_total.get() + bytes as u64;
        assert!(total <= self.data_accepted_total.get());
        self.data_gone_total.set(total);
        let path = self.path.borrow().clone();
        if let Some((peer, path)) = path {
            path.data_gone(peer, total);
        }
    }

    /// The connection failed: everything accepted and not yet written is gone with it.
    fn data_link_down(&self) {
        self.data.borrow_mut().clear();
        self.data_left(self.data_unsent_bytes.get());
        let path = self.path.borrow().clone();
        if let Some((peer, path)) = path {
            path.link_down(peer);
        }
    }

    /// Queues one Raft message (protobuf bytes) for the peer; never waits.
    pub fn send(&self, message: Vec<u8>) {
        self.send_frame(Kind::Raft, message);
    }

    /// Queues one batch of quorum group messages (`Kind::Group`) for the peer; never waits.
    pub fn send_group(&self, batch: Vec<u8>) {
        self.send_frame(Kind::Group, batch);
    }

    /// Queues one quorum group batch larger than a frame as `GroupPart` pieces; never waits.
    /// The caller keeps it within `QUORUM_SNAPSHOT_BYTES_MAX`.
    pub fn send_group_parts(&self, whole: &[u8]) {
        for piece in group_parts(whole) {
            self.send_frame(Kind::GroupPart, piece);
        }
    }

    fn send_frame(&self, kind: Kind, payload: Vec<u8>) {
        let mut queue = self.queue.borrow_mut();
        if queue.len() >= CLUSTER_PEER_QUEUE_MESSAGES_MAX {
            queue.pop_front();
        }
        queue.push_back((kind, payload));
        drop(queue);
        self.queued.notify();
    }

    /// Whether the link to the peer is connected and authenticated right now.
    pub fn is_up(&self) -> bool {
        self.up.get()
    }

    /// Connects, sends until the connection fails, reconnects with backoff; forever.
    pub async fn run(self: Rc<Self>, identity: Rc<Identity>) {
        let mut backoff = CLUSTER_RECONNECT_BACKOFF_MIN;
        let mut last_error = String::new();
        while !self.stopped.get() {
            match connect(self.address, &self.peer, &identity).await {
                Ok(wire) => {
                    tracing::info!(peer = %self.peer, "cluster link up");
                    self.up.set(true);
                    backoff = CLUSTER_RECONNECT_BACKOFF_MIN;
                    let error = self.send_until_error(wire).await;
                    self.up.set(false);
                    self.data_link_down();
                    tracing::warn!(peer = %self.peer, %error, "cluster link down");
                }
                Err(error) => {
                    if error != last_error {
                        tracing::warn!(peer = %self.peer, %error, "cannot reach cluster peer");
                        last_error = error;
                    }
                }
            }
            glommio::timer::sleep(backoff).await;
            backoff = (backoff * 2).min(CLUSTER_RECONNECT_BACKOFF_MAX);
        }
        tracing::info!(peer = %self.peer, "cluster link closed: the node left the cluster");
    }

    /// Sends our queued messages (a heartbeat after an interval with none) while listening for
    /// the peer's heartbeats; returns why the connection ended.
    async fn send_until_error(&self, wire: Wire) -> String {
        let (listening, sending) = wire.split();
        futures_lite::future::or(self.send_loop(sending), listen(listening, &self.peer, None)).await
    }

    async fn send_loop(&self, mut wire: Wire) -> String {
        let mut bytes = Vec::new();
        loop {
            if self.stopped.get() {
                return "the node left the cluster".to_string();
            }
            let batch: Vec<(Kind, Vec<u8>)> = self.queue.borrow_mut().drain(..).collect();
            let data: Vec<Vec<u8>> = self.data.borrow_mut().drain(..).collect();
            bytes.clear();
            if batch.is_empty() && data.is_empty() {
                let queued = self.queued.wait();
                let _ = glommio::timer::timeout(CLUSTER_HEARTBEAT_INTERVAL, async {
                    queued.await;
                    Ok(())
                })
                .await;
                if !self.queue.borrow().is_empty() || !self.data.borrow().is_empty() {
                    continue;
                }
                frame::encode(Kind::Heartbeat, &[], &mut bytes);
            }
            for (kind, message) in &batch {
                frame::encode(*kind, message, &mut bytes);
            }
            let mut data_bytes = 0;
            for payload in &data {
                encode_data(payload, &mut bytes);
                data_bytes += payload.len();
            }
            // Dropped mid-write (the listening half ended first), the bytes stay unsent and
            // `data_link_down` counts them gone.
            let written = within(CLUSTER_PEER_SILENCE_MAX, "write", wire.write(&bytes)).await;
            if let Err(error) = written {
                return error;
            }
            self.data_left(data_bytes);
        }
    }
}

/// Reads the peer's frames until the connection ends or nothing arrives for
/// `CLUSTER_PEER_SILENCE_MAX`: heartbeats only prove it alive; Raft messages and data go to
/// `receivers` (an outbound link has none: the peer sends on its own connection). Returns why
/// it stopped.
async fn listen(mut wire: Wire, peer: &str, receivers: Option<&Receivers>) -> String {
    let mut reassembly = Reassembly::default();
    let mut parts = GroupParts::default();
    loop {
        let frame = within(CLUSTER_PEER_SILENCE_MAX, "listening", wire.read_frame()).await;
        match (frame, receivers) {
            (Ok((Kind::Heartbeat, _)), _) => {}
            (Ok((Kind::Raft, payload)), Some(receivers)) => (receivers.raft)(peer, &payload),
            (Ok((Kind::Group, payload)), Some(receivers)) => (receivers.group)(peer, &payload),
            (Ok((Kind::GroupPart, payload)), Some(receivers)) => match parts.take(&payload) {
                Ok(Some(whole)) => (receivers.group)(peer, &whole),
                Ok(None) => {}
                Err(error) => return error,
            },
            (Ok((kind @ (Kind::Data | Kind::DataPart), payload)), Some(receivers)) => {
                match reassembly.take(kind, payload) {
                    Ok(Some(whole)) => (receivers.data)(peer, whole).await,
                    Ok(None) => {}
                    Err(error) => return error,
                }
            }
            (Ok((kind, _)), _) => return format!("the peer sent a {kind:?} frame out of place"),
            (Err(error), _) => return error,
        }
    }
}

/// Appends one data payload as frames: `DataPart` pieces of at most a frame's payload, the
/// last piece (the whole payload, when it fits) a `Data` frame.
fn encode_data(payload: &[u8], out: &mut Vec<u8>) {
    let mut rest = payload;
    while rest.len() > CLUSTER_DATA_PAYLOAD_BYTES_MAX {
        let (piece, after) = rest.split_at(CLUSTER_DATA_PAYLOAD_BYTES_MAX);
        frame::encode(Kind::DataPart, piece, out);
        rest = after;
    }
    frame::encode(Kind::Data, rest, out);
}

/// The accepting side's data payload being put together from its pieces.
#[derive(Default)]
struct Reassembly {
    pieces: Vec<u8>,
}

impl Reassembly {
    /// One `Data` or `DataPart` frame's payload: `Some(whole payload)` once it is complete.
    /// `Err` (the connection is closed) when the pieces add up to more than a record may be.
    fn take(&mut self, kind: Kind, payload: Vec<u8>) -> Result<Option<Vec<u8>>, String> {
        if self.pieces.len() + payload.len() > CLUSTER_DATA_RECORD_BYTES_MAX {
            return Err(format!(
                "the peer sent a data record of more than {CLUSTER_DATA_RECORD_BYTES_MAX} bytes"
            ));
        }
        let last = kind == Kind::Data;
        if last && self.pieces.is_empty() {
            return Ok(Some(payload));
        }
        self.pieces.extend_from_slice(&payload);
        Ok(last.then(|| std::mem::take(&mut self.pieces)))
    }
}

/// `[u32 total][u32 offset]` before each piece of a group message.
const GROUP_PART_HEADER_BYTES: usize = 8;

/// The `GroupPart` payloads of one group batch larger than a frame.
fn group_parts(whole: &[u8]) -> Vec<Vec<u8>> {
    assert!(whole.len() <= QUORUM_SNAPSHOT_BYTES_MAX);
    let most = CLUSTER_FRAME_BYTES_MAX - 1 - GROUP_PART_HEADER_BYTES;
    let total = whole.len() as u32;
    whole
        .chunks(most)
        .enumerate()
        .map(|(i, piece)| {
            let mut payload = Vec::with_capacity(GROUP_PART_HEADER_BYTES + piece.len());
            payload.extend_from_slice(&total.to_be_bytes());
            payload.extend_from_slice(&((i * most) as u32).to_be_bytes());
            payload.extend_from_slice(piece);
            payload
        })
        .collect()
}

/// The accepting side's group message being put together from its `GroupPart` pieces.
#[derive(Default)]
struct GroupParts {
    total: usize,
    pieces: Vec<u8>,
}

impl GroupParts {
    /// One piece: `Some(whole)` once the last one is in. A piece that does not follow the one
    /// before (the sender's queue dropped some) drops what was gathered: Raft sends again.
    /// `Err` (the connection is closed) for a malformed piece or a total over the bound.
    fn take(&mut self, payload: &[u8]) -> Result<Option<Vec<u8>>, String> {
        let Some((header, piece)) = payload.split_at_checked(GROUP_PART_HEADER_BYTES) else {
            return Err("the peer sent a short group part".to_string());
        };
        let total = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let offset = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
        if total == 0 || total > QUORUM_SNAPSHOT_BYTES_MAX {
            return Err(format!(
                "the peer announced a group message of {total} bytes (at most {QUORUM_SNAPSHOT_BYTES_MAX})"
            ));
        }
        if offset == 0 {
            self.pieces.clear();
            self.total = total;
        } else if offset != self.pieces.len() || total != self.total {
            tracing::debug!(offset, "a group message missing a piece was dropped");
            self.pieces.clear();
            self.total = 0;
            return Ok(None);
        }
        if offset + piece.len() > total {
            return Err("the peer sent a group part past its message's end".to_string());
        }
        self.pieces.extend_from_slice(piece);
        if self.pieces.len() < total {
            return Ok(None);
        }
        self.total = 0;
        Ok(Some(std::mem::take(&mut self.pieces)))
    }
}

/// The accepting side's half that sends: a heartbeat every interval (it sends nothing else).
async fn heartbeats(mut wire: Wire) -> String {
    let mut bytes = Vec::new();
    frame::encode(Kind::Heartbeat, &[], &mut bytes);
    loop {
        glommio::timer::sleep(CLUSTER_HEARTBEAT_INTERVAL).await;
        if let Err(error) = within(CLUSTER_PEER_SILENCE_MAX, "write", wire.write(&bytes)).await {
            return error;
        }
    }
}

/// Accepts the peers' connections on the cluster port and hands each Raft message and data
/// frame, with the name of the peer that proved itself, to `receivers`.
pub async fn serve(listener: TcpListener, identity: Rc<Identity>, receivers: Rc<Receivers>) {
    let open = Rc::new(Cell::new(0usize));
    loop {
        let stream = match listener.accept().await {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%error, "cluster port: accept failed");
                glommio::timer::sleep(CLUSTER_RECONNECT_BACKOFF_MIN).await;
                continue;
            }
        };
        if open.get() >= CLUSTER_CONNECTIONS_MAX {
            tracing::warn!("cluster port: too many connections, one refused");
            continue;
        }
        open.set(open.get() + 1);
        let (identity, receivers, open) = (identity.clone(), receivers.clone(), open.clone());
        glommio::spawn_local(async move {
            let peer_address = stream.peer_addr().ok();
            match accept(stream, &identity).await {
                Ok((wire, name, handshake::Role::Member)) => receive(wire, &name, &receivers).await,
                Ok((wire, name, handshake::Role::Joiner)) => match peer_address {
                    Some(from) => serve_join(wire, &name, from, &receivers).await,
                    None => tracing::warn!(node = %name, "a joining node without an address"),
                },
                Err(error) => {
                    tracing::warn!(?peer_address, %error, "cluster peer refused");
                }
            }
            open.set(open.get() - 1);
        })
        .detach();
    }
}

/// A node that proved the secret and is no member: one `Join` frame, answered with `Joined`
/// once it is a member (or `Refused` with the reason: it holds the secret), then closed.
async fn serve_join(mut wire: Wire, name: &str, from: SocketAddr, receivers: &Receivers) {
    let asked = within(CLUSTER_HANDSHAKE_TIMEOUT, "join", wire.read_frame()).await;
    let port = match asked {
        Ok((Kind::Join, payload)) if payload.len() == 2 => {
            u16::from_be_bytes([payload[0], payload[1]])
        }
        Ok((kind, _)) => {
            tracing::warn!(
                node = name,
                ?kind,
                "a node that is not a member sent no join request"
            );
            let _ = wire
                .write_frame(Kind::Refused, b"not a member of this cluster")
                .await;
            return;
        }
        Err(error) => {
            tracing::warn!(node = name, %error, "a joining node sent nothing");
            return;
        }
    };
    let address = SocketAddr::new(from.ip(), port);
    tracing::info!(node = name, %address, "a node asks to join the cluster");
    let answer = match (receivers.join)(name, address).await {
        Ok(members) => wire.write_frame(Kind::Joined, &members).await,
        Err(reason) => {
            tracing::warn!(node = name, %reason, "a node was not added to the cluster");
            wire.write_frame(Kind::Refused, reason.as_bytes()).await
        }
    };
    if let Err(error) = answer {
        tracing::warn!(node = name, %error, "the answer to a joining node was not sent");
    }
}

/// The joining node's side: connects to `member` at `address` as a joiner, asks to be added
/// (reached at `port` on the address it connects from) and returns the answer's members
/// (`Kind::Joined`), or why not.
pub async fn request_join(
    address: SocketAddr,
    member: &str,
    identity: &Identity,
    port: u16,
) -> Result<Vec<u8>, String> {
    let mut wire = connect_as(handshake::Role::Joiner, address, member, identity)
        .await
        .map_err(|e| match e.strip_prefix("refused: ") {
            Some(_) => format!("{member} refused this node: is --cluster-secret the same on both?"),
            None => format!("cannot reach {member} at {address}: {e}"),
        })?;
    wire.write_frame(Kind::Join, &port.to_be_bytes()).await?;
    let answer = within(CLUSTER_JOIN_TIMEOUT, "join", wire.read_frame()).await?;
    match answer {
        (Kind::Joined, members) => Ok(members),
        (kind, payload) => Err(format!(
            "{member} did not add this node: {}",
            refusal(kind, &payload)
        )),
    }
}

async fn receive(wire: Wire, peer: &str, receivers: &Receivers) {
    let (listening, sending) = wire.split();
    let reason = futures_lite::future::or(
        listen(listening, peer, Some(receivers)),
        heartbeats(sending),
    )
    .await;
    tracing::debug!(peer, %reason, "cluster peer connection closed");
    (receivers.closed)(peer);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Splits `wire` into its frames.
    fn frames_of(mut wire: &[u8]) -> Vec<(Kind, Vec<u8>)> {
        let mut frames = Vec::new();
        while let Some(length) = frame::check(wire).expect("a valid frame") {
            let (kind, payload) = frame::split(&wire[..length]).expect("a frame");
            frames.push((kind, payload.to_vec()));
            wire = &wire[length..];
        }
        assert!(wire.is_empty(), "whole frames only");
        frames
    }

    #[test]
    fn a_data_payload_larger_than_a_frame_goes_in_pieces_and_is_put_together() {
        let large: Vec<u8> = (0..CLUSTER_DATA_PAYLOAD_BYTES_MAX * 2 + 5)
            .map(|i| (i % 251) as u8)
            .collect();
        let mut wire = Vec::new();
        encode_data(b"small", &mut wire);
        encode_data(&large, &mut wire);
        let frames = frames_of(&wire);
        let kinds: Vec<Kind> = frames.iter().map(|(kind, _)| *kind).collect();
        assert_eq!(
            kinds,
            [Kind::Data, Kind::DataPart, Kind::DataPart, Kind::Data]
        );
        let mut reassembly = Reassembly::default();
        let whole: Vec<Vec<u8>> = frames
            .into_iter()
            .filter_map(|(kind, payload)| reassembly.take(kind, payload).expect("in bounds"))
            .collect();
        assert_eq!(whole, [b"small".to_vec(), large]);
    }

    #[test]
    fn pieces_adding_up_to_more_than_a_record_close_the_connection() {
        let mut reassembly = Reassembly::default();
        let piece = vec![0u8; CLUSTER_DATA_PAYLOAD_BYTES_MAX];
        let mut result = Ok(None);
        for _ in 0..=CLUSTER_DATA_RECORD_BYTES_MAX / CLUSTER_DATA_PAYLOAD_BYTES_MAX {
            result = reassembly.take(Kind::DataPart, piece.clone());
            if result.is_err() {
                break;
            }
        }
        assert!(result.is_err(), "the bound holds");
    }

    #[test]
    fn a_group_message_larger_than_a_frame_goes_in_pieces_and_a_gap_drops_it() {
        let whole: Vec<u8> = (0..CLUSTER_FRAME_BYTES_MAX * 2 + 77)
            .map(|i| (i % 253) as u8)
            .collect();
        let pieces = group_parts(&whole);
        assert_eq!(pieces.len(), 3);
        assert!(pieces.iter().all(|p| p.len() < CLUSTER_FRAME_BYTES_MAX));
        let mut parts = GroupParts::default();
        let got: Vec<Vec<u8>> = pieces
            .iter()
            .filter_map(|p| parts.take(p).expect("well formed"))
            .collect();
        assert_eq!(got, std::slice::from_ref(&whole));
        // The middle piece lost: nothing comes out, and the next whole message still does.
        assert_eq!(parts.take(&pieces[0]), Ok(None));
        assert_eq!(parts.take(&pieces[2]), Ok(None));
        let again: Vec<Vec<u8>> = pieces
            .iter()
            .filter_map(|p| parts.take(p).expect("well formed"))
            .collect();
        assert_eq!(again, [whole]);
    }

    #[test]
    fn a_group_part_over_the_bound_or_malformed_closes_the_connection() {
        let mut parts = GroupParts::default();
        let mut huge = ((QUORUM_SNAPSHOT_BYTES_MAX + 1) as u32)
            .to_be_bytes()
            .to_vec();
        huge.extend_from_slice(&[0, 0, 0, 0, 1]);
        assert!(parts.take(&huge).is_err());
        assert!(parts.take(&[0, 0, 0]).is_err());
        // A piece running past the total it announced.
        assert!(parts.take(&[0, 0, 0, 2, 0, 0, 0, 0, 1, 2, 3]).is_err());
    }

    fn identity(name: &str, secret: &str) -> Rc<Identity> {
        Rc::new(Identity::new(
            name.to_string(),
            secret.as_bytes().to_vec(),
            vec!["ringmq@a".to_string(), "ringmq@b".to_string()],
        ))
    }

    /// Runs `body` on a fresh executor with a listener on a free loopback port.
    fn on_loopback<T, F, Fut>(body: F) -> T
    where
        F: FnOnce(TcpListener, SocketAddr) -> Fut,
        Fut: std::future::Future<Output = T>,
    {
        let ex = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .make()
            .unwrap();
        ex.run(async move {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let address = listener.local_addr().unwrap();
            body(listener, address).await
        })
    }

    /// Node a accepts on loopback; node b connects holding `secret`; returns what a received.
    fn exchange(secret: &str) -> (bool, Vec<Vec<u8>>) {
        on_loopback(|listener, address| async move {
            let received = Rc::new(RefCell::new(Vec::new()));
            let sink = received.clone();
            let raft: Rc<Deliver> = Rc::new(move |peer: &str, bytes: &[u8]| {
                assert_eq!(peer, "ringmq@b");
                sink.borrow_mut().push(bytes.to_vec());
            });
            glommio::spawn_local(serve(
                listener,
                identity("ringmq@a", "right-secret"),
                Rc::new(receivers_with(raft)),
            ))
            .detach();
            let link = Outbound::new("ringmq@a".to_string(), address);
            link.send(b"vote for me".to_vec());
            glommio::spawn_local(link.clone().run(identity("ringmq@b", secret))).detach();
            let deadline = std::time::Instant::now() + Duration::from_secs(3);
            while received.borrow().is_empty() && std::time::Instant::now() < deadline {
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
            let got = received.borrow().clone();
            (link.is_up(), got)
        })
    }

    /// Polls `check` every 10 ms until it holds or `limit` passes; whether it held.
    async fn within_bound(limit: Duration, check: impl Fn() -> bool) -> bool {
        let deadline = std::time::Instant::now() + limit;
        while !check() {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            glommio::timer::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    /// Node a completes the handshake and, once b's link is up, either closes the connection or
    /// keeps it open and says nothing more; b's outbound link must go down either way.
    fn link_goes_down(peer_closes: bool) -> (bool, bool) {
        on_loopback(|listener, address| async move {
            let held = Rc::new(RefCell::new(Vec::new()));
            let holder = held.clone();
            glommio::spawn_local(async move {
                let stream = listener.accept().await.unwrap();
                let (wire, _, _) = accept(stream, &identity("ringmq@a", "right-secret"))
                    .await
                    .unwrap();
                holder.borrow_mut().push(wire);
            })
            .detach();
            let link = Outbound::new("ringmq@a".to_string(), address);
            let task = glommio::spawn_local(link.clone().run(identity("ringmq@b", "right-secret")));
            let came_up = within_bound(Duration::from_secs(3), || link.is_up()).await;
            if peer_closes {
                held.borrow_mut().clear();
            }
            let bound = CLUSTER_PEER_SILENCE_MAX + Duration::from_secs(2);
            let went_down = within_bound(bound, || !link.is_up()).await;
            drop(task);
            held.borrow_mut().clear();
            (came_up, went_down)
        })
    }

    #[test]
    fn a_peer_that_closes_its_end_takes_the_idle_link_down() {
        assert_eq!(link_goes_down(true), (true, true));
    }

    #[test]
    fn a_peer_that_falls_silent_takes_the_link_down() {
        assert_eq!(link_goes_down(false), (true, true));
    }

    #[test]
    fn a_peer_with_the_secret_gets_its_messages_through() {
        let (up, received) = exchange("right-secret");
        assert!(up);
        assert_eq!(received, vec![b"vote for me".to_vec()]);
    }

    /// Node a accepts; node x (no member) asks to join holding `secret`.
    /// Receivers handing Raft messages to `raft`, dropping the rest, and answering a joiner
    /// `welcome NAME at port PORT`.
    fn receivers_with(raft: Rc<Deliver>) -> Receivers {
        let group: Rc<Deliver> = Rc::new(|_: &str, _: &[u8]| {});
        let data: Rc<DeliverData> = Rc::new(|_: &str, _: Vec<u8>| Box::pin(async {}));
        let closed: Rc<dyn Fn(&str)> = Rc::new(|_: &str| {});
        let join: Rc<DeliverJoin> = Rc::new(|name: &str, at: SocketAddr| {
            let answer = format!("welcome {name} at port {}", at.port()).into_bytes();
            Box::pin(async move { Ok(answer) })
        });
        Receivers {
            raft,
            group,
            data,
            closed,
            join,
        }
    }

    fn ask_to_join(secret: &str) -> Result<Vec<u8>, String> {
        on_loopback(|listener, address| async move {
            let raft: Rc<Deliver> = Rc::new(|_: &str, _: &[u8]| panic!("no Raft from a joiner"));
            let acceptor = identity("ringmq@a", "right-secret");
            let receivers = Rc::new(receivers_with(raft));
            glommio::spawn_local(serve(listener, acceptor, receivers)).detach();
            let joiner = Identity::new(
                "ringmq@x".to_string(),
                secret.as_bytes().to_vec(),
                Vec::new(),
            );
            request_join(address, "ringmq@a", &joiner, 4242).await
        })
    }

    #[test]
    fn a_node_with_the_secret_may_ask_to_join_and_one_without_is_refused() {
        assert_eq!(
            ask_to_join("right-secret"),
            Ok(b"welcome ringmq@x at port 4242".to_vec())
        );
        let refused = ask_to_join("wrong-secret").expect_err("refused");
        assert!(refused.contains("refused this node"), "{refused}");
    }

    #[test]
    fn a_peer_with_a_wrong_secret_is_refused_and_delivers_nothing() {
        let (up, received) = exchange("wrong-secret");
        assert!(!up);
        assert!(received.is_empty());
    }
}
