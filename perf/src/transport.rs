//! A connection's byte stream: plain TCP, or TLS for `amqps://` (rustls, the crypto provider
//! the broker already uses, driven blocking over the same socket). The socket keeps its read
//! and write timeouts either way, so loops still see their deadlines.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Instant;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use crate::error::{PerfError, Result};
use crate::limits::{RPC_TIMEOUT, SOCKET_READ_TIMEOUT};
use crate::url::AmqpUrl;

pub enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Stream {
    /// Connects to `address`; for amqps also completes the TLS handshake (within
    /// `RPC_TIMEOUT`), checking the server against the URL's CA file.
    pub fn connect(url: &AmqpUrl, address: &SocketAddr) -> Result<Stream> {
        let socket = TcpStream::connect_timeout(address, RPC_TIMEOUT)?;
        socket.set_nodelay(true)?;
        socket.set_read_timeout(Some(SOCKET_READ_TIMEOUT))?;
        socket.set_write_timeout(Some(SOCKET_READ_TIMEOUT))?;
        let Some(ca) = &url.tls_ca else {
            return Ok(Stream::Plain(socket));
        };
        let server = ServerName::try_from(url.host.clone())
            .map_err(|e| PerfError::Url(format!("{}: not a TLS server name: {e}", url.host)))?;
        let connection = ClientConnection::new(client_config(ca)?, server)
            .map_err(|e| PerfError::Unexpected(format!("tls: {e}")))?;
        let mut tls = StreamOwned::new(connection, socket);
        let deadline = Instant::now() + RPC_TIMEOUT;
        while tls.conn.is_handshaking() {
            match tls.conn.complete_io(&mut tls.sock) {
                Ok(_) => {}
                Err(e) if would_block(&e) && Instant::now() < deadline => {}
                Err(e) if would_block(&e) => return Err(PerfError::Timeout("the TLS handshake")),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Stream::Tls(Box::new(tls)))
    }

    /// Bytes already read and decrypted: ppoll on the socket would not see them.
    pub fn has_buffered(&mut self) -> bool {
        match self {
            Stream::Plain(_) => false,
            Stream::Tls(tls) => tls
                .conn
                .process_new_packets()
                .map_or(true, |state| state.plaintext_bytes_to_read() > 0),
        }
    }

    pub fn socket(&self) -> &TcpStream {
        match self {
            Stream::Plain(socket) => socket,
            Stream::Tls(tls) => &tls.sock,
        }
    }

    pub fn raw_fd(&self) -> RawFd {
        self.socket().as_raw_fd()
    }
}

fn would_block(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

fn client_config(ca: &std::path::Path) -> Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(ca)
        .map_err(|e| PerfError::Url(format!("{}: {e}", ca.display())))?
    {
        let certificate =
            certificate.map_err(|e| PerfError::Url(format!("{}: {e}", ca.display())))?;
        roots
            .add(certificate)
            .map_err(|e| PerfError::Url(format!("{}: {e}", ca.display())))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| PerfError::Unexpected(format!("tls: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(socket) => socket.read(buf),
            Stream::Tls(tls) => tls.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(socket) => socket.write(buf),
            Stream::Tls(tls) => tls.write(buf),
        }
    }

    /// TLS: sends the records still buffered (a write may leave some when the socket is full).
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(socket) => socket.flush(),
            Stream::Tls(tls) => tls.flush(),
        }
    }
}
