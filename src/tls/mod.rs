//! amqps: TLS under the AMQP listener on the TLS port. rustls's `ServerConnection` is sans-IO
//! (bytes in, bytes out, no sockets), so this module drives it over the shard's own glommio
//! `TcpStream` ([`TlsStream`]) and hands the session a `net::ClientStream` like any other: the
//! session sees plaintext, and of TLS only the verified client certificate's CN (for SASL
//! EXTERNAL). [`Acceptor`] is the `net::Transport` a TLS listener is registered with.
//!
//! Depends on net (the doors it implements) and limits only.

mod settings;
mod stream;

pub use settings::server_config;
pub use stream::TlsStream;

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

use glommio::net::TcpStream;
use rustls::ServerConfig;

use crate::limits::{TLS_HANDSHAKES_PER_SHARD_MAX, TLS_HANDSHAKE_TIMEOUT};
use crate::net::{SharedStream, Transport};

/// One shard's TLS transport: the server configuration (shared by every shard, read-only) and
/// how many handshakes this shard has in progress.
pub struct Acceptor {
    config: Arc<ServerConfig>,
    handshakes_in_progress: Rc<Cell<usize>>,
}

impl Acceptor {
    pub fn new(config: Arc<ServerConfig>) -> Acceptor {
        Acceptor {
            config,
            handshakes_in_progress: Rc::new(Cell::new(0)),
        }
    }
}

impl Transport for Acceptor {
    fn admits(&self) -> bool {
        self.handshakes_in_progress.get() < TLS_HANDSHAKES_PER_SHARD_MAX
    }

    fn secure(&self, tcp: TcpStream) -> Pin<Box<dyn Future<Output = io::Result<SharedStream>>>> {
        let config = self.config.clone();
        let in_progress = InProgress::enter(self.handshakes_in_progress.clone());
        Box::pin(async move {
            let _in_progress = in_progress;
            let stream = glommio::timer::timeout(TLS_HANDSHAKE_TIMEOUT, async {
                TlsStream::accept(tcp, config)
                    .await
                    .map_err(glommio::GlommioError::from)
            })
            .await
            .map_err(io::Error::from)?;
            Ok(SharedStream::new(stream))
        })
    }
}

/// Counts one handshake in progress for as long as it lives, however the handshake ends
/// (finished, failed, timed out, or its task dropped at shutdown).
struct InProgress(Rc<Cell<usize>>);

impl InProgress {
    fn enter(count: Rc<Cell<usize>>) -> InProgress {
        count.set(count.get() + 1);
        InProgress(count)
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        debug_assert!(self.0.get() > 0);
        self.0.set(self.0.get().saturating_sub(1));
    }
}
