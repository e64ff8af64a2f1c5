//! One AMQP connection: the opening handshake, the frame loop, channels, and closing.

mod blocked;
mod channel;
use channel::{ContentHeader, MethodIds, Rest};
mod consumer_timeout;
mod handshake;
mod io;
mod sink;
mod state;

pub use state::ConnShared;

use std::cell::Cell;
use std::collections::HashSet;
use std::rc::Rc;
use std::time::Duration;

use glommio::TaskQueueHandle;

use crate::broker::queue::ChannelRef;
use crate::broker::AmqpError;
use crate::config::ConnectionLimits;
use crate::conn_sink::ConnectionDescription;
use crate::limits::{CLOSE_TIMEOUT, OUTBOX_SOFT_MAX_BYTES};
use crate::net::SharedStream;
use crate::protocol::{
    reply_code, ChannelClose, ChannelCloseOk, ConnectionClose, ConnectionCloseOk,
    ConnectionUpdateSecretOk, Frame, Method, ProtocolError,
};
use crate::shard::messages::{queue_op, topology_op};
use crate::shard::Shard;
use channel::access::Authorizer;
use io::{FrameReader, ReadError};
use state::ChannelState;

/// An error with the method that caused it, as channel.close/connection.close carry it.
#[derive(Debug, Clone)]
pub struct Fault {
    pub code: u16,
    pub text: String,
    pub class_id: u16,
    pub method_id: u16,
}

impl Fault {
    pub fn new(code: u16, text: impl Into<String>) -> Fault {
        Fault {
            code,
            text: text.into(),
            class_id: 0,
            method_id: 0,
        }
    }

    /// A malformed frame or field: a connection error with the spec's code for it.
    pub fn protocol(error: &ProtocolError) -> Fault {
        let code = error.reply_code();
        Fault::new(code, format!("{} - {error}", reply_code::reply_text(code)))
    }

    fn from_amqp(error: AmqpError, method: Option<&Method>) -> Fault {
        Fault {
            code: error.code,
            text: error.text,
            class_id: method.map_or(0, |m| m.class_id()),
            method_id: method.map_or(0, |m| m.method_id()),
        }
    }

    fn at(self, method: &Method) -> Fault {
        self.with_method(method.class_id(), method.method_id())
    }

    /// The method the error is about (use the method structs' `CLASS_ID`/`METHOD_ID`).
    fn with_method(mut self, class_id: u16, method_id: u16) -> Fault {
        self.class_id = class_id;
        self.method_id = method_id;
        self
    }

    /// Connection-level (hard) errors close the connection; others close the channel.
    fn is_hard(&self) -> bool {
        reply_code::is_hard_error(self.code)
    }
}

impl From<AmqpError> for Fault {
    fn from(error: AmqpError) -> Fault {
        Fault::from_amqp(error, None)
    }
}

/// The negotiated, authenticated connection.
pub struct Session {
    pub shard: Rc<Shard>,
    pub conn: Rc<ConnShared>,
    pub reader: FrameReader,
    pub user: String,
    pub vhost: String,
    pub channel_max: u16,
    pub heartbeat: Rc<Cell<u16>>,
    /// The door every channel method passes (`channel::access`).
    pub authorizer: Rc<dyn Authorizer>,
    /// A `basic.publish` arrived under a resource alarm: block before the next frame
    /// (`blocked`).
    pub publish_blocked: bool,
    pub limits: ConnectionLimits,
}

/// How the frame loop ended.
enum Ending {
    /// The client closed (close/close-ok exchanged) or vanished.
    Done,
    /// We must close the connection with this error (or CONNECTION_FORCED on shutdown).
    Close(Fault),
}

/// Serves one connection. The handshake runs in the task queue the listener runs in (the
/// admission queue: accepting, handshakes, and the connections that never finish one, at low
/// shares); once the connection is open, its frame loop and writer move to `data_queue`, the
/// data path's, so a flood of new connections cannot hold up the frames of open ones.
pub async fn serve(
    shard: Rc<Shard>,
    stream: SharedStream,
    limits: ConnectionLimits,
    data_queue: TaskQueueHandle,
) {
    let peer = stream.peer_addr().ok();
    let certificate_name = stream.peer_certificate_name();
    let conn_id = shard.new_id();
    let conn = Rc::new(ConnShared::new(conn_id).with_publish_counters(shard.publish_counters()));
    let heartbeat = Rc::new(Cell::new(0u16));
    let writer = glommio::spawn_local(io::write_loop(
        shard.clone(),
        conn.clone(),
        stream.clone(),
        heartbeat.clone(),
    ));
    shard.register_conn(conn_id, conn.clone());

    let reader = FrameReader::new(stream.clone(), limits.frame_max_bytes, conn.clone());
    let handshake_peer = handshake::Peer {
        address: peer,
        certificate_name,
    };
    let handshake = handshake::run(
        &shard,
        &conn,
        reader,
        handshake_peer,
        heartbeat.clone(),
        limits,
    );
    let Some(session) = handshake.await else {
        tracing::debug!(conn = conn_id, ?peer, "handshake did not complete");
        finish(&shard, &conn, stream, writer).await;
        return;
    };
    // The handshake's writer writes connection.open-ok and stops; the open connection's writer
    // starts in the data queue after it, so the two never write at once.
    conn.writer_handover.set(true);
    conn.writer_wake.notify();
    let handed_over = glommio::timer::timeout(CLOSE_TIMEOUT, async {
        writer.await;
        Ok(())
    })
    .await
    .is_ok();
    if !handed_over {
        // A client that does not read even connection.open-ok: the writer was cancelled.
        tracing::debug!(conn = conn_id, "open-ok not written in time, closing");
        shard.unregister_conn(conn_id);
        stream.shutdown();
        return;
    }
    conn.writer_handover.set(false);
    let open = {
        let (shard, conn, stream) = (shard.clone(), conn.clone(), stream.clone());
        async move {
            let writer = glommio::spawn_local(io::write_loop(
                shard.clone(),
                conn.clone(),
                stream.clone(),
                heartbeat,
            ));
            serve_open(session, peer, &stream, limits).await;
            finish(&shard, &conn, stream, writer).await;
        }
    };
    match glommio::executor().spawn_local_into(open, data_queue) {
        Ok(task) => {
            task.detach();
        }
        Err(error) => {
            // Only a queue that no longer exists; the session went with the refused task.
            tracing::error!(conn = conn_id, %error, "cannot move a connection to the data path");
            shard.unregister_conn(conn_id);
            stream.shutdown();
        }
    }
}

/// The open connection until it ends: the frame loop, then its channels and exclusive queues
/// released, and connection.close when the broker ends it.
async fn serve_open(
    mut session: Session,
    peer: Option<std::net::SocketAddr>,
    stream: &SharedStream,
    limits: ConnectionLimits,
) {
    let conn = session.conn.clone();
    tracing::debug!(conn = conn.id, ?peer, user = %session.user, vhost = %session.vhost, "connection open");
    conn.set_opened(session.description(peer, stream.local_addr().ok()));
    // Detached: the watch ends by itself within one check interval of the connection's
    // output closing. (Cancelling it by dropping its handle while it slept in a timer
    // leaked the task, one per connection: found by the session fuzz target.)
    if let Some(timeout) = limits.consumer_timeout {
        glommio::spawn_local(consumer_timeout::watch(conn.clone(), timeout)).detach();
    }
    let ending = session.run().await;
    tracing::debug!(
        conn = conn.id,
        closed_by_server = matches!(ending, Ending::Close(_)),
        "connection ending"
    );
    // Released before connection.close goes out: a client that answers close-ok and
    // reconnects at once finds its exclusive queues gone and its unacked messages back
    // in their queues, as after a close it started itself.
    session.release_all().await;
    if let Ending::Close(fault) = ending {
        session.close_connection(fault).await;
    }
}

/// The connection's end: it leaves the shard, its writer writes what is left (bounded), and
/// the socket closes (gracefully when the client is closing too).
async fn finish(shard: &Shard, conn: &ConnShared, stream: SharedStream, writer: glommio::Task<()>) {
    shard.unregister_conn(conn.id);
    conn.output_closed.set(true);
    conn.writer_wake.notify();
    let _ = glommio::timer::timeout(CLOSE_TIMEOUT, async {
        writer.await;
        Ok(())
    })
    .await;
    if conn.drain_on_close.get() {
        let mut stream = stream;
        let _ = stream.set_read_timeout(None);
        stream.close_gracefully(CLOSE_TIMEOUT).await;
    } else {
        stream.shutdown();
    }
}

impl Session {
    /// What the management API shows of this connection (RabbitMQ's connection name format).
    fn description(
        &self,
        peer: Option<std::net::SocketAddr>,
        local: Option<std::net::SocketAddr>,
    ) -> ConnectionDescription {
        let shown = |address: Option<std::net::SocketAddr>| {
            address.map_or_else(|| "?".to_string(), |a| a.to_string())
        };
        ConnectionDescription {
            name: format!("{} -> {}", shown(peer), shown(local)),
            vhost: self.vhost.clone(),
            user: self.user.clone(),
            peer,
            local,
            channels: Vec::new(),
            channel_max: self.channel_max,
            frame_max: self.conn.frame_max.get(),
            heartbeat_seconds: self.heartbeat.get(),
            connected_at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |elapsed| elapsed.as_millis() as u64),
            received_bytes: 0,
            sent_bytes: 0,
            send_pending_bytes: 0,
            client_properties: self.conn.client_properties.borrow().clone(),
        }
    }

    async fn run(&mut self) -> Ending {
        loop {
            if let Err(ending) = self.wait_while_blocked().await {
                return ending;
            }
            if let Err(ending) = self.wait_for_room().await {
                return ending;
            }
            let frame = match self.next_frame_or_shutdown().await {
                Ok(Some(frame)) => frame,
                Ok(None) if self.close_timed_out_channels().await => continue,
                Ok(None) => return Ending::Close(self.forced_close_fault()),
                Err(ReadError::Closed) => return Ending::Done,
                Err(ReadError::TimedOut) => {
                    tracing::info!(
                        conn = self.conn.id,
                        "missed heartbeats from client, closing"
                    );
                    return Ending::Done;
                }
                Err(ReadError::Protocol(error)) => return Ending::Close(Fault::protocol(&error)),
            };
            if let Frame::Header { body_size, .. } = &frame {
                self.shard.note_content_received(*body_size);
            }
            let rest = match self.handle_frame_now(frame) {
                Ok(Now::Done) => continue,
                Ok(Now::Rest(rest)) => rest,
                Ok(Now::Frame(frame)) => match self.handle_frame(frame).await {
                    Ok(true) => continue,
                    Ok(false) => return Ending::Done,
                    Err(fault) => return Ending::Close(fault),
                },
                Err(fault) => return Ending::Close(fault),
            };
            if let Err(fault) = self.finish_rest(rest).await {
                return Ending::Close(fault);
            }
        }
    }

    /// The frames of steady publishing and acking (basic.publish, basic.ack/nack/reject on an
    /// open channel, content frames), handled without an `.await` (see `channel::perform`);
    /// any other frame is handed back for `handle_frame`. An `Err` closes the connection.
    fn handle_frame_now(&mut self, frame: Frame) -> Result<Now, Fault> {
        let rest = match frame {
            Frame::Header { channel: 0, .. } | Frame::Body { channel: 0, .. } => {
                return Err(Fault::new(
                    reply_code::COMMAND_INVALID,
                    "COMMAND_INVALID - content frame on channel 0",
                ))
            }
            Frame::Header {
                channel,
                class_id,
                body_size,
                raw_properties,
            } => {
                let header = ContentHeader {
                    class_id,
                    body_size,
                    raw_properties,
                };
                self.content_header_now(channel, header)?
            }
            Frame::Body { channel, payload } => self.content_body_now(channel, payload)?,
            Frame::Method { channel, method }
                if channel != 0 && is_steady(&method) && self.is_open(channel) =>
            {
                tracing::trace!(
                    conn = self.conn.id,
                    channel,
                    method = method.name(),
                    "received"
                );
                if matches!(method, Method::BasicPublish(_)) {
                    self.note_publish();
                }
                self.channel_method_now(channel, method)
            }
            other => return Ok(Now::Frame(other)),
        };
        Ok(rest.map_or(Now::Done, Now::Rest))
    }

    /// Open, and not closing (a closing channel answers only its close handshake).
    fn is_open(&self, channel: u16) -> bool {
        self.conn
            .channels
            .borrow()
            .get(&channel)
            .is_some_and(|state| !state.closing)
    }

    /// Back-pressure: stop reading while our output or the mesh is over its bound.
    async fn wait_for_room(&self) -> Result<(), Ending> {
        while self.conn.outbox_len() > OUTBOX_SOFT_MAX_BYTES {
            if self.conn.output_closed.get() {
                return Err(Ending::Done);
            }
            self.conn.flushed.wait().await;
        }
        self.shard.wait_for_room().await;
        Ok(())
    }

    /// Closes the channels the consumer-timeout timer found expired (406, as RabbitMQ's
    /// `consumer_timeout`); false when there were none.
    async fn close_timed_out_channels(&mut self) -> bool {
        let expired = std::mem::take(&mut *self.conn.timed_out_channels.borrow_mut());
        if expired.is_empty() {
            return false;
        }
        for (channel, timeout_ms) in expired {
            let open = self
                .conn
                .channels
                .borrow()
                .get(&channel)
                .is_some_and(|state| !state.closing);
            if open {
                tracing::warn!(
                    conn = self.conn.id,
                    channel,
                    timeout_ms,
                    "consumer ack timed out, closing channel"
                );
                let text = consumer_timeout::timed_out_text(channel, timeout_ms);
                let fault = Fault::new(reply_code::PRECONDITION_FAILED, text);
                self.close_channel(channel, fault).await;
            }
        }
        true
    }

    /// The next frame, or `None` when the shard is shutting down, an operator closes the
    /// connection (`ConnShared::force_close`) or a channel's consumer timeout expired.
    async fn next_frame_or_shutdown(&mut self) -> Result<Option<Frame>, ReadError> {
        let interrupted = |conn: &ConnShared| {
            conn.forced_close_reason().is_some() || !conn.timed_out_channels.borrow().is_empty()
        };
        if self.shard.is_shutting_down() || interrupted(&self.conn) {
            return Ok(None);
        }
        if let Some(frame) = self.reader.buffered_frame()? {
            return Ok(Some(frame));
        }
        let shard = self.shard.clone();
        let conn = self.conn.clone();
        let reader = &mut self.reader;
        let stop = async {
            futures_lite::future::or(shard.wait_for_shutdown(), async {
                while !interrupted(&conn) {
                    conn.forced.wait().await;
                }
            })
            .await;
            Ok(None)
        };
        futures_lite::future::or(async { reader.next_frame().await.map(Some) }, stop).await
    }

    /// Why the broker closes: an operator's reason, else the shutdown (RabbitMQ's texts).
    fn forced_close_fault(&self) -> Fault {
        let text = match self.conn.forced_close_reason() {
            Some(reason) => format!("CONNECTION_FORCED - {reason}"),
            None => "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'"
                .to_string(),
        };
        Fault::new(reply_code::CONNECTION_FORCED, text)
    }

    /// Handles one frame; `Ok(false)` means the connection is finished (close handshake done).
    async fn handle_frame(&mut self, frame: Frame) -> Result<bool, Fault> {
        if let Frame::Method { channel, method } = &frame {
            tracing::trace!(
                conn = self.conn.id,
                channel,
                method = method.name(),
                "received"
            );
        }
        match frame {
            Frame::Heartbeat { channel: 0 } => Ok(true),
            Frame::Heartbeat { .. } => Err(Fault::new(
                reply_code::FRAME_ERROR,
                "FRAME_ERROR - heartbeat frame on a non-zero channel",
            )),
            Frame::Method { channel: 0, method } => self.handle_connection_method(method).await,
            Frame::Method { channel, method } => {
                if matches!(method, Method::BasicPublish(_)) {
                    self.note_publish();
                }
                self.handle_channel_method(channel, method).await?;
                Ok(true)
            }
            // Taken by `handle_frame_now` normally; handled the same way if they get here.
            content @ (Frame::Header { .. } | Frame::Body { .. }) => {
                if let Now::Rest(rest) = self.handle_frame_now(content)? {
                    self.finish_rest(rest).await?;
                }
                Ok(true)
            }
        }
    }

    /// RabbitMQ's `create_channel`: a frame on a channel not yet open, with as many channels
    /// open as the negotiated channel_max, closes the connection with 530 (RabbitMQ counts
    /// open channels; it does not compare channel numbers with channel_max).
    fn check_channel_count(&self) -> Result<(), Fault> {
        let open = self.conn.channels.borrow().len();
        if open >= usize::from(self.channel_max) {
            return Err(Fault::new(
                reply_code::NOT_ALLOWED,
                format!(
                    "NOT_ALLOWED - number of channels opened ({open}) has reached the \
                     negotiated channel_max ({})",
                    self.channel_max
                ),
            ));
        }
        Ok(())
    }

    async fn handle_connection_method(&mut self, method: Method) -> Result<bool, Fault> {
        match method {
            Method::ConnectionClose(_) => {
                self.conn.drain_on_close.set(true);
                self.release_all().await;
                self.conn
                    .send_method(0, &Method::ConnectionCloseOk(ConnectionCloseOk {}));
                Ok(false)
            }
            Method::ConnectionCloseOk(_) => Ok(false),
            Method::ConnectionUpdateSecret(_) => {
                self.conn.send_method(
                    0,
                    &Method::ConnectionUpdateSecretOk(ConnectionUpdateSecretOk {}),
                );
                Ok(true)
            }
            // Clients may tell us they are blocked; nothing to do.
            Method::ConnectionBlocked(_) | Method::ConnectionUnblocked(_) => Ok(true),
            other => Err(Fault::new(
                reply_code::COMMAND_INVALID,
                format!(
                    "COMMAND_INVALID - unexpected method {} on channel 0",
                    other.name()
                ),
            )
            .at(&other)),
        }
    }

    async fn handle_channel_method(&mut self, channel: u16, method: Method) -> Result<(), Fault> {
        let state = self.conn.channels.borrow().get(&channel).map(|c| c.closing);
        if state.is_none() {
            self.check_channel_count()?;
        }
        match (state, &method) {
            (None, Method::ChannelOpen(_)) => {
                self.conn
                    .channels
                    .borrow_mut()
                    .insert(channel, ChannelState::new());
                self.conn.send_method(
                    channel,
                    &Method::ChannelOpenOk(crate::protocol::ChannelOpenOk {}),
                );
                return Ok(());
            }
            (None, _) => {
                return Err(Fault::new(
                    reply_code::CHANNEL_ERROR,
                    format!("CHANNEL_ERROR - expected 'channel.open' on channel {channel}"),
                )
                .at(&method))
            }
            (Some(_), Method::ChannelOpen(_)) => {
                return Err(Fault::new(
                    reply_code::CHANNEL_ERROR,
                    format!("CHANNEL_ERROR - second 'channel.open' seen on channel {channel}"),
                )
                .at(&method))
            }
            // We closed it: wait for close-ok, answer a crossing close, drop everything else.
            (Some(true), Method::ChannelCloseOk(_)) => {
                self.conn.channels.borrow_mut().remove(&channel);
                return Ok(());
            }
            (Some(true), Method::ChannelClose(_)) => {
                self.conn
                    .send_method(channel, &Method::ChannelCloseOk(ChannelCloseOk {}));
                return Ok(());
            }
            (Some(true), _) => return Ok(()),
            (Some(false), Method::ChannelClose(_)) => {
                self.release_channel(channel).await;
                self.conn.channels.borrow_mut().remove(&channel);
                self.conn
                    .send_method(channel, &Method::ChannelCloseOk(ChannelCloseOk {}));
                return Ok(());
            }
            (Some(false), Method::ChannelCloseOk(_)) => return Ok(()),
            _ => {}
        }
        if let Method::BasicCancel(cancel) = &method {
            // Deliveries waiting for write credit go out before cancel-ok, as they would have.
            self.conn
                .encode_waiting_for_tag(channel, &cancel.consumer_tag);
        }
        let ids = MethodIds(method.class_id(), method.method_id());
        self.conn.set_channel_busy(channel, true);
        let result = self.channel_method(channel, method).await;
        self.conn.set_channel_busy(channel, false);
        self.method_outcome(channel, result, ids).await
    }

    /// Closes a channel on our side with an error: resources are released now, the channel id is
    /// reusable once the client's close-ok arrives.
    async fn close_channel(&mut self, channel: u16, fault: Fault) {
        tracing::debug!(conn = self.conn.id, channel, code = fault.code, text = %fault.text, "closing channel");
        self.release_channel(channel).await;
        if let Some(state) = self.conn.channels.borrow_mut().get_mut(&channel) {
            state.closing = true;
            state.pending_publish = None;
        }
        self.conn.send_method(
            channel,
            &Method::ChannelClose(ChannelClose {
                reply_code: fault.code,
                reply_text: fault.text,
                class_id: fault.class_id,
                method_id: fault.method_id,
            }),
        );
    }

    /// Gives back what a channel holds: its consumers are removed and its unacked messages
    /// requeued in order on every queue it used; auto-delete queues left unused are deleted.
    ///
    /// The queues drop the channel's consumers before the channel forgets them: a queue still
    /// listing a consumer its channel no longer knows hands it every new message, which is
    /// refused and returned, and this waits on the way (remote queues, auto-delete). What is
    /// delivered meanwhile is recorded as usual and requeued by its queue with the rest.
    async fn release_channel(&mut self, channel: u16) {
        let queues: HashSet<(u64, usize)> = {
            let channels = self.conn.channels.borrow();
            let Some(state) = channels.get(&channel) else {
                return;
            };
            let mut queues: HashSet<(u64, usize)> =
                state.unacked.iter().map(|u| (u.queue, u.owner)).collect();
            queues.extend(state.consumers.values().filter_map(|c| c.target.queue()));
            queues
        };
        let channel_ref = ChannelRef {
            conn: self.conn.id,
            channel,
        };
        for (queue, owner) in queues {
            let op = queue_op::ChannelClosed {
                channel: channel_ref,
            };
            if matches!(self.shard.queue_op(queue, owner, op).await, Ok(true)) {
                let _ = self
                    .shard
                    .topology_op(topology_op::AutoDeleteQueue { queue })
                    .await;
            }
        }
        if let Some(state) = self.conn.channels.borrow_mut().get_mut(&channel) {
            state.unacked.clear();
            state.consumers.clear();
            state.consumer_tags.clear();
            state.reply_consumer = None;
            // Unacked at their queues too: the queues requeued them with the rest.
            state.over_limit.clear();
            state.confirm = None;
            // A closed channel's transaction is dropped: free its buffer (up to TX_BYTES_MAX)
            // now, not when the client's close-ok arrives.
            state.tx = None;
        }
    }

    /// Releases every channel and the connection's exclusive queues. Idempotent.
    async fn release_all(&mut self) {
        let channels: Vec<u16> = self.conn.channels.borrow().keys().copied().collect();
        for channel in channels {
            self.release_channel(channel).await;
        }
        self.conn.channels.borrow_mut().clear();
        let conn = self.conn.id;
        let _ = self
            .shard
            .topology_op(topology_op::ConnectionClosed { conn })
            .await;
    }

    /// Sends connection.close and waits (bounded) for close-ok, ignoring anything else.
    async fn close_connection(&mut self, fault: Fault) {
        tracing::debug!(conn = self.conn.id, code = fault.code, text = %fault.text, "closing connection");
        self.conn.send_method(
            0,
            &Method::ConnectionClose(ConnectionClose {
                reply_code: fault.code,
                reply_text: fault.text,
                class_id: fault.class_id,
                method_id: fault.method_id,
            }),
        );
        let reader = &mut self.reader;
        let conn = &self.conn;
        let _ = glommio::timer::timeout(CLOSE_TIMEOUT, async {
            loop {
                match reader.next_frame().await {
                    Ok(Frame::Method {
                        channel: 0,
                        method: Method::ConnectionCloseOk(_) | Method::ConnectionClose(_),
                    }) => return Ok(()),
                    Ok(_) => continue,
                    Err(ReadError::Protocol(_)) => {
                        conn.drain_on_close.set(true);
                        return Ok(());
                    }
                    Err(_) => return Ok(()),
                }
            }
        })
        .await;
    }
}

/// What `Session::handle_frame_now` did with a frame.
enum Now {
    Done,
    /// The part that has to wait.
    Rest(Rest),
    /// Not one of its frames: for `handle_frame`.
    Frame(Frame),
}

/// The methods a steady publisher or consumer sends for every message or batch.
fn is_steady(method: &Method) -> bool {
    matches!(
        method,
        Method::BasicPublish(_)
            | Method::BasicAck(_)
            | Method::BasicNack(_)
            | Method::BasicReject(_)
    )
}

pub(crate) fn heartbeat_timeout(heartbeat: u16) -> Option<Duration> {
    // Two missed heartbeats close the connection, as the spec suggests.
    (heartbeat > 0).then(|| Duration::from_secs(u64::from(heartbeat) * 2))
}
