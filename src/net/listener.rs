//! Listeners registered by protocol: each listening socket is bound for one `Protocol`, which
//! is handed every connection accepted on it.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;

use glommio::net::{TcpListener, TcpStream};

use super::stream::SharedStream;
use crate::limits::{ACCEPTS_PER_TURN_MAX, LISTEN_BACKLOG};

/// What a listener does with the connections it accepts: AMQP's session, later HTTP's.
pub trait Protocol {
    /// For logs, and to tell listeners of different protocols apart.
    fn name(&self) -> &'static str;
    /// Whether one more connection may be taken now; one that may not is closed at once.
    fn admits(&self) -> bool;
    /// Serves one accepted connection until it ends; runs as its own task.
    fn serve(&self, stream: SharedStream) -> Pin<Box<dyn Future<Output = ()>>>;
}

/// What turns an accepted TCP connection into the protocol's stream: TLS, say. It runs in the
/// connection's own task, so a slow handshake holds up no other connection; it bounds its own
/// time and how many connections it handles at once.
pub trait Transport {
    /// Whether one more connection may start its handshake now; one that may not is closed.
    fn admits(&self) -> bool;
    /// The stream the protocol is to be handed, or why the connection ends here.
    fn secure(&self, tcp: TcpStream) -> Pin<Box<dyn Future<Output = io::Result<SharedStream>>>>;
}

/// One address to listen on, the protocol spoken there, and the transport under it (`None`:
/// plain TCP).
pub struct ListenerSpec {
    pub address: SocketAddr,
    pub protocol: Rc<dyn Protocol>,
    pub transport: Option<Rc<dyn Transport>>,
}

/// A bound listening socket, its protocol and its transport.
pub struct Listener {
    socket: TcpListener,
    protocol: Rc<dyn Protocol>,
    transport: Option<Rc<dyn Transport>>,
}

impl Listener {
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.socket.local_addr().ok()
    }

    pub fn protocol_name(&self) -> &'static str {
        self.protocol.name()
    }
}

/// Binds every spec; an address that cannot be bound is skipped with a warning as long as
/// another address of the same protocol can (a host without IPv6 still serves 127.0.0.1), as
/// RabbitMQ does.
pub fn bind_all(specs: Vec<ListenerSpec>) -> Result<Vec<Listener>, String> {
    let mut listeners = Vec::new();
    let mut errors: Vec<(&'static str, String)> = Vec::new();
    for spec in specs {
        let name = spec.protocol.name();
        match bind(&spec.address) {
            Ok(socket) => listeners.push(Listener {
                socket,
                protocol: spec.protocol,
                transport: spec.transport,
            }),
            Err(error) => {
                tracing::warn!(address = %spec.address, protocol = name, %error, "cannot listen");
                errors.push((name, format!("{}: {error}", spec.address)));
            }
        }
    }
    for (name, _) in &errors {
        if !listeners.iter().any(|l| l.protocol_name() == *name) {
            let failed: Vec<&str> = errors
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, text)| text.as_str())
                .collect();
            return Err(format!(
                "cannot listen on any {name} address: {}",
                failed.join("; ")
            ));
        }
    }
    Ok(listeners)
}

/// A listening socket with SO_REUSEPORT (every shard binds the same address) and SO_REUSEADDR
/// (a restarted broker can bind while old connections linger in TIME_WAIT).
fn bind(address: &SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    use std::os::fd::{FromRawFd, IntoRawFd};
    let socket = Socket::new(
        Domain::for_address(*address),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if address.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&(*address).into())?;
    socket.listen(LISTEN_BACKLOG)?;
    // SAFETY: the descriptor is a listening TCP socket we own; ownership moves to the listener.
    Ok(unsafe { TcpListener::from_raw_fd(socket.into_raw_fd()) })
}

/// Accepts connections until `stop` completes, handing each to the listener's protocol.
///
/// glommio's accept first tries a non-blocking `accept(2)`, so while the backlog holds
/// connections an accept never waits, and a loop of them would never yield: 1,000 connections
/// arriving together were accepted (and their tasks spawned) in one poll of this task, ~70 ms
/// during which the shard served nothing else (the scheduler preempts only between polls). So
/// the loop yields when the scheduler asks (its task queue's preemption interval) and at least
/// every `ACCEPTS_PER_TURN_MAX` accepts.
pub async fn accept_loop(listener: Listener, stop: impl Future<Output = ()>) {
    // Polled again by each accept; it is never polled once it has completed: we return then.
    let mut stop = std::pin::pin!(stop);
    let mut accepted_this_turn = 0usize;
    loop {
        accepted_this_turn += 1;
        if accepted_this_turn > ACCEPTS_PER_TURN_MAX {
            accepted_this_turn = 0;
            futures_lite::future::yield_now().await;
        } else {
            glommio::executor().yield_if_needed().await;
        }
        let accepted =
            futures_lite::future::or(async { Some(listener.socket.accept().await) }, async {
                stop.as_mut().await;
                None
            })
            .await;
        let stream = match accepted {
            None => return,
            Some(Ok(stream)) => stream,
            Some(Err(error)) => {
                tracing::warn!(%error, "accept failed");
                continue;
            }
        };
        if !listener.protocol.admits() {
            tracing::warn!(
                protocol = listener.protocol_name(),
                "connection limit reached, refusing a connection"
            );
            continue;
        }
        let _ = stream.set_nodelay(true);
        match &listener.transport {
            None => {
                glommio::spawn_local(listener.protocol.serve(SharedStream::new(stream))).detach();
            }
            Some(transport) => {
                if !transport.admits() {
                    tracing::warn!(
                        protocol = listener.protocol_name(),
                        "too many handshakes in progress, refusing a connection"
                    );
                    continue;
                }
                let secured = transport.secure(stream);
                let protocol = listener.protocol.clone();
                glommio::spawn_local(serve_secured(secured, protocol)).detach();
            }
        }
    }
}

/// Serves a connection once its transport is set up; one whose handshake fails is closed
/// (dropping the socket) and affects nothing else.
async fn serve_secured(
    secured: Pin<Box<dyn Future<Output = io::Result<SharedStream>>>>,
    protocol: Rc<dyn Protocol>,
) {
    match secured.await {
        Ok(stream) => protocol.serve(stream).await,
        Err(error) => tracing::debug!(protocol = protocol.name(), %error, "handshake failed"),
    }
}
