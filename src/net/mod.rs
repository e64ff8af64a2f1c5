//! Listeners and the byte stream a connection reads and writes.
//!
//! Every shard binds every listen address with SO_REUSEPORT (glommio sets it), so the kernel
//! spreads incoming connections over the shards; a connection then lives on its shard for life.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::{TcpListener, TcpStream};

use crate::limits::{CONNECTIONS_PER_SHARD_MAX, LISTEN_BACKLOG};
use crate::shard::Shard;

/// Binds every address; an address that cannot be bound is skipped with a warning as long as one
/// other can (a host without IPv6 still serves 127.0.0.1), as RabbitMQ does.
pub fn bind_all(addresses: &[SocketAddr]) -> Result<Vec<TcpListener>, String> {
    let mut listeners = Vec::new();
    let mut errors = Vec::new();
    for address in addresses {
        match bind(address) {
            Ok(listener) => listeners.push(listener),
            Err(error) => {
                tracing::warn!(%address, %error, "cannot listen");
                errors.push(format!("{address}: {error}"));
            }
        }
    }
    if listeners.is_empty() {
        return Err(format!(
            "cannot listen on any address: {}",
            errors.join("; ")
        ));
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

pub async fn accept_loop(shard: Rc<Shard>, listener: TcpListener) {
    loop {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            shard.wait_for_shutdown().await;
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
        if shard.conn_count() >= CONNECTIONS_PER_SHARD_MAX {
            tracing::warn!("connection limit reached, refusing a connection");
            continue;
        }
        let _ = stream.set_nodelay(true);
        let shard = shard.clone();
        glommio::spawn_local(crate::session::serve(shard, stream)).detach();
    }
}

/// One TCP stream used by a reader task and a writer task. glommio keeps separate read and write
/// readiness state, and each poll borrows the stream only for its own duration, so the two tasks
/// never hold the borrow at the same time.
#[derive(Clone)]
pub struct SharedStream(Rc<RefCell<TcpStream>>);

impl SharedStream {
    pub fn new(stream: TcpStream) -> SharedStream {
        SharedStream(Rc::new(RefCell::new(stream)))
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.0.borrow().peer_addr().map_err(io::Error::from)
    }

    pub fn set_read_timeout(&self, timeout: Option<std::time::Duration>) -> io::Result<()> {
        self.0
            .borrow()
            .set_read_timeout(timeout)
            .map_err(io::Error::from)
    }

    /// Closes gracefully: waits (bounded) for the peer to close first, reading and discarding, then
    /// closes. The client that sent connection.close closes the socket once it has read our
    /// close-ok; closing before that can make it see the end of the stream before the close-ok,
    /// and unread input would turn our close into a reset.
    pub async fn close_gracefully(&mut self, linger: std::time::Duration) {
        use futures_lite::AsyncReadExt;
        let mut sink = [0u8; 4096];
        let _ = glommio::timer::timeout(linger, async {
            while let Ok(n) = self.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
            Ok(())
        })
        .await;
        self.shutdown();
    }

    /// Shuts the socket down in both directions, waking a reader blocked on it.
    pub fn shutdown(&self) {
        use std::os::fd::{AsRawFd, BorrowedFd};
        let fd = self.0.borrow().as_raw_fd();
        // SAFETY: the descriptor belongs to the stream we hold, which outlives this call.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let _ = socket2::SockRef::from(&fd).shutdown(std::net::Shutdown::Both);
    }
}

impl AsyncRead for SharedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_read(cx, buf)
    }
}

impl AsyncWrite for SharedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_close(cx)
    }
}
