//! The tool's errors: every failure from the network is typed and ends the run it belongs to.

use ringmq::protocol::ProtocolError;

#[derive(Debug, thiserror::Error)]
pub enum PerfError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol: {0}")]
    Protocol(#[from] ProtocolError),
    #[error("broker closed the {scope}: {code} {text}")]
    Closed {
        scope: &'static str,
        code: u16,
        text: String,
    },
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    #[error("peer closed the socket")]
    Eof,
    #[error("unexpected: {0}")]
    Unexpected(String),
    #[error("bad url: {0}")]
    Url(String),
    #[error("bad arguments: {0}")]
    Args(String),
    #[error("worker thread panicked")]
    WorkerPanicked,
}

pub type Result<T> = std::result::Result<T, PerfError>;
