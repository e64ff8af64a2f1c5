//! A client connection's transport, and the handle its reader and writer tasks share.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;

use crate::shared_io::SharedIo;

/// What a session reads and writes: a TCP stream, or a TLS stream over one. The socket
/// operations a session needs besides bytes are here, so a wrapper passes them to its socket.
pub trait ClientStream: AsyncRead + AsyncWrite + Unpin {
    fn peer_addr(&self) -> io::Result<SocketAddr>;
    fn local_addr(&self) -> io::Result<SocketAddr>;
    /// A read that waits longer than `timeout` fails with `TimedOut` (heartbeats).
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;
    /// Shuts the socket down in both directions, waking a reader blocked on it.
    fn shutdown(&self);
    /// The common name (CN) of the client certificate the transport verified, for SASL
    /// EXTERNAL; `None` on plain TCP, or when the client presented no verified certificate.
    fn peer_certificate_name(&self) -> Option<String> {
        None
    }
}

impl ClientStream for TcpStream {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        TcpStream::peer_addr(self).map_err(io::Error::from)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        TcpStream::local_addr(self).map_err(io::Error::from)
    }

    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        TcpStream::set_read_timeout(self, timeout).map_err(io::Error::from)
    }

    fn shutdown(&self) {
        use std::os::fd::{AsRawFd, BorrowedFd};
        let fd = self.as_raw_fd();
        // SAFETY: the descriptor belongs to this stream, which outlives this call.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let _ = socket2::SockRef::from(&fd).shutdown(std::net::Shutdown::Both);
    }
}

/// One client stream used by a reader task and a writer task (`shared_io` says why the two never
/// hold the borrow at once).
pub type SharedStream = SharedIo<dyn ClientStream>;

impl SharedIo<dyn ClientStream> {
    pub fn new(stream: impl ClientStream + 'static) -> SharedStream {
        SharedIo::from_rc(Rc::new(RefCell::new(stream)))
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.get().peer_addr()
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.get().local_addr()
    }

    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.get().set_read_timeout(timeout)
    }

    pub fn peer_certificate_name(&self) -> Option<String> {
        self.get().peer_certificate_name()
    }

    /// Closes gracefully: waits (bounded) for the peer to close first, reading and discarding, then
    /// closes. The client that sent connection.close closes the socket once it has read our
    /// close-ok; closing before that can make it see the end of the stream before the close-ok,
    /// and unread input would turn our close into a reset.
    pub async fn close_gracefully(&mut self, linger: Duration) {
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
        self.get().shutdown();
    }
}
