//! The edge: listening sockets and the byte stream of one client connection. net knows sockets
//! and protocols only as something it is handed: a listener is an address plus a `Protocol`
//! (AMQP today, HTTP next), optionally over a `Transport` that secures each accepted socket
//! (`tls`), and a connection's bytes are a `ClientStream` (TCP, or `tls::TlsStream` over it).
//! Nothing here knows sessions, shards or rustls; `runtime` wires them together.
//!
//! Every shard binds every listen address with SO_REUSEPORT (glommio sets it), so the kernel
//! spreads incoming connections over the shards; a connection then lives on its shard for life.

mod listener;
mod stream;

pub use listener::{accept_loop, bind_all, Listener, ListenerSpec, Protocol, Transport};
pub use stream::{ClientStream, SharedStream};
