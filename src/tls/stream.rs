//! A rustls `ServerConnection` driven over a glommio `TcpStream`.
//!
//! The connection's reader and writer tasks share one stream (`net::SharedStream`), so the read
//! path only ever polls the socket for reading and the write path only for writing: a read that
//! would also flush rustls's output would overwrite the writer task's waker. Output rustls
//! queues while reading (an alert, a TLS 1.3 key update answer) goes out with the next write or
//! flush, which the session's writer does on every batch.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use rustls::{ServerConfig, ServerConnection};

use crate::limits::TLS_SEND_BUFFER_BYTES;
use crate::net::ClientStream;

pub struct TlsStream {
    tcp: TcpStream,
    tls: ServerConnection,
    /// The socket reached end of stream: nothing more will come from the peer.
    tcp_ended: bool,
    /// The verified client certificate's subject CN, read once at the end of the handshake.
    peer_certificate_name: Option<String>,
}

impl TlsStream {
    /// Runs the server side of the handshake to completion; the caller bounds its time.
    pub async fn accept(tcp: TcpStream, config: Arc<ServerConfig>) -> io::Result<TlsStream> {
        let mut tls = ServerConnection::new(config).map_err(io::Error::other)?;
        tls.set_buffer_limit(Some(TLS_SEND_BUFFER_BYTES));
        let mut stream = TlsStream {
            tcp,
            tls,
            tcp_ended: false,
            peer_certificate_name: None,
        };
        futures_lite::future::poll_fn(|cx| stream.poll_handshake(cx)).await?;
        stream.peer_certificate_name = stream
            .tls
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| common_name(leaf.as_ref()));
        Ok(stream)
    }

    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if self.tls.wants_write() {
                match self.poll_send_tls(cx) {
                    Poll::Ready(Ok(())) => continue,
                    other => return other,
                }
            }
            if !self.tls.is_handshaking() {
                return Poll::Ready(Ok(()));
            }
            if self.tcp_ended {
                return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
            }
            match self.poll_receive_tls(cx) {
                Poll::Ready(Ok(())) => continue,
                Poll::Ready(Err(error)) => {
                    // The alert rustls queued for a malformed hello tells the peer why; best
                    // effort, the connection ends either way.
                    let _ = self.poll_send_tls(cx);
                    return Poll::Ready(Err(error));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Reads what the socket has into rustls and processes it. Ready(Ok) means progress: new
    /// records, or the end of the stream (`tcp_ended`).
    fn poll_receive_tls(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut socket = SocketIo {
            tcp: &mut self.tcp,
            cx,
        };
        match self.tls.read_tls(&mut socket) {
            Ok(0) => self.tcp_ended = true,
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
            Err(error) => return Poll::Ready(Err(error)),
        }
        match self.tls.process_new_packets() {
            Ok(_) => Poll::Ready(Ok(())),
            Err(error) => Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, error))),
        }
    }

    /// Writes everything rustls has queued to the socket; Pending while the socket is full.
    fn poll_send_tls(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.tls.wants_write() {
            let mut socket = SocketIo {
                tcp: &mut self.tcp,
                cx,
            };
            match self.tls.write_tls(&mut socket) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Hands plaintext to rustls and pushes the records out; returns how much was taken.
    fn poll_write_plaintext(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let mut taken = 0;
        loop {
            // Room may have been made by the send below; skip what was already taken.
            let remaining = remaining_slices(bufs, taken);
            let n = self.tls.writer().write_vectored(&remaining)?;
            taken += n;
            match self.poll_send_tls(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending if taken > 0 => return Poll::Ready(Ok(taken)),
                Poll::Pending => return Poll::Pending,
            }
            if taken == total {
                return Poll::Ready(Ok(taken));
            }
        }
    }
}

/// The slices after the first `skip` bytes.
fn remaining_slices<'a>(bufs: &'a [io::IoSlice<'a>], mut skip: usize) -> Vec<io::IoSlice<'a>> {
    let mut remaining = Vec::with_capacity(bufs.len());
    for buf in bufs {
        if skip >= buf.len() {
            skip -= buf.len();
            continue;
        }
        remaining.push(io::IoSlice::new(&buf[skip..]));
        skip = 0;
    }
    remaining
}

/// The subject's first CN, as RabbitMQ's `ssl_cert_login_from = common_name`.
fn common_name(der: &[u8]) -> Option<String> {
    let (_, certificate) = x509_parser::parse_x509_certificate(der).ok()?;
    let name = certificate.subject().iter_common_name().next()?;
    name.as_str().ok().map(str::to_string)
}

/// The socket as std's blocking `Read`/`Write` that rustls's `read_tls`/`write_tls` take:
/// would-block stands for Pending (the waker is registered by the poll).
struct SocketIo<'a, 'b> {
    tcp: &'a mut TcpStream,
    cx: &'a mut Context<'b>,
}

impl Read for SocketIo<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match Pin::new(&mut *self.tcp).poll_read(self.cx, buf) {
            Poll::Ready(result) => result,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl Write for SocketIo<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match Pin::new(&mut *self.tcp).poll_write(self.cx, buf) {
            Poll::Ready(result) => result,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match Pin::new(&mut *self.tcp).poll_write_vectored(self.cx, bufs) {
            Poll::Ready(result) => result,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsyncRead for TlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            match this.tls.reader().read(buf) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Err(error) => return Poll::Ready(Err(error)),
            }
            if this.tcp_ended {
                // Closed without close_notify: for AMQP, whose frames carry their own
                // lengths, a truncation is seen by the frame reader; report end of stream.
                return Poll::Ready(Ok(0));
            }
            match this.poll_receive_tls(cx) {
                Poll::Ready(Ok(())) => continue,
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .poll_write_plaintext(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_plaintext(cx, bufs)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.poll_send_tls(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.tcp).poll_flush(cx),
            other => other,
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.tls.send_close_notify();
        match this.poll_send_tls(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.tcp).poll_close(cx),
            other => other,
        }
    }
}

impl ClientStream for TlsStream {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.peer_addr().map_err(io::Error::from)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr().map_err(io::Error::from)
    }

    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.tcp.set_read_timeout(timeout).map_err(io::Error::from)
    }

    fn shutdown(&self) {
        ClientStream::shutdown(&self.tcp);
    }

    fn peer_certificate_name(&self) -> Option<String> {
        self.peer_certificate_name.clone()
    }
}
