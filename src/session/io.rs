//! Reading frames from, and writing the outbox to, one connection's socket.

use std::rc::Rc;
use std::time::Duration;

use bytes::BytesMut;
use futures_lite::{AsyncReadExt, AsyncWriteExt};

use super::state::ConnShared;
use crate::broker::queue::ConsumerKey;
use crate::latency_trace::{self, Stage};
use crate::limits::{READ_CHUNK_BYTES, READ_CHUNK_INITIAL_BYTES};
use crate::net::SharedStream;
use crate::protocol::{self, Frame, ProtocolError};
use crate::shard::messages::SettleOp;
use crate::shard::Shard;

pub enum ReadError {
    /// The peer closed or the socket failed.
    Closed,
    /// Nothing arrived within the heartbeat timeout.
    TimedOut,
    Protocol(ProtocolError),
}

pub struct FrameReader {
    stream: SharedStream,
    /// Bytes received and not yet split off as frames; frames are zero-copy slices of it.
    buffer: BytesMut,
    /// What one read lands in before the bytes received are appended to `buffer`. Reused, so a
    /// read costs a copy of what arrived instead of zero-filling a fresh chunk every time. It
    /// starts at `READ_CHUNK_INITIAL_BYTES` and grows to `READ_CHUNK_BYTES` the first time a
    /// read fills it: an idle connection (thousands of them) costs a page, a busy one reads
    /// large chunks.
    chunk: Box<[u8]>,
    pub frame_max: u32,
    /// Counts what arrives (`ConnShared::received_bytes`).
    conn: Rc<ConnShared>,
}

impl FrameReader {
    pub fn new(stream: SharedStream, frame_max: u32, conn: Rc<ConnShared>) -> FrameReader {
        FrameReader {
            stream,
            buffer: BytesMut::new(),
            chunk: vec![0; READ_CHUNK_INITIAL_BYTES].into_boxed_slice(),
            frame_max,
            conn,
        }
    }

    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> std::io::Result<()> {
        self.stream.set_read_timeout(timeout)
    }

    /// Reads exactly `n` bytes (the protocol header).
    pub async fn read_exact(&mut self, n: usize) -> Result<BytesMut, ReadError> {
        while self.buffer.len() < n {
            self.fill().await?;
        }
        Ok(self.buffer.split_to(n))
    }

    /// A frame already in the buffer, if a whole one is there.
    pub fn buffered_frame(&mut self) -> Result<Option<Frame>, ReadError> {
        protocol::parse_frame(&mut self.buffer, self.frame_max).map_err(ReadError::Protocol)
    }

    pub async fn next_frame(&mut self) -> Result<Frame, ReadError> {
        loop {
            if let Some(frame) = self.buffered_frame()? {
                return Ok(frame);
            }
            self.fill().await?;
        }
    }

    /// Appends what the socket has to the buffer. Only whole frames are split off the buffer, so
    /// it grows at most to one frame (bounded by frame_max) plus one read chunk.
    async fn fill(&mut self) -> Result<(), ReadError> {
        let result = self.stream.read(&mut self.chunk).await;
        match result {
            Ok(0) => Err(ReadError::Closed),
            Ok(n) => {
                crate::spin::touch();
                self.buffer.extend_from_slice(&self.chunk[..n]);
                let received = &self.conn.received_bytes;
                received.set(received.get() + n as u64);
                let wanted = chunk_len_after_read(n, self.chunk.len());
                if wanted != self.chunk.len() {
                    self.chunk = vec![0; wanted].into_boxed_slice();
                }
                Ok(())
            }
            Err(error) => {
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
                ) {
                    Err(ReadError::TimedOut)
                } else {
                    Err(ReadError::Closed)
                }
            }
        }
    }
}

/// The read chunk's length after a read of `read` bytes into one of `current` bytes: a read
/// that filled it means more was waiting, so the next reads get the full `READ_CHUNK_BYTES`.
fn chunk_len_after_read(read: usize, current: usize) -> usize {
    if read == current {
        READ_CHUNK_BYTES.max(current)
    } else {
        current
    }
}

/// The writer task: writes whatever the outbox holds; sends heartbeats when idle; stops when the
/// session closes output (after a last flush), hands the connection over to another writer
/// (`ConnShared::writer_handover`, once the outbox is written), or the socket fails. Once a write returns, the
/// queues whose deliveries it held hear how much was written (`report_written`).
pub async fn write_loop(
    shard: Rc<Shard>,
    conn: Rc<ConnShared>,
    mut stream: SharedStream,
    heartbeat: Rc<std::cell::Cell<u16>>,
) {
    loop {
        let woken = conn.writer_wake.wait();
        let (output, encoded) = conn.take_output();
        // `--trace-latency`: a sampled delivery in this output (taken with it).
        let traced = conn.traced_stamp.take();
        let traced_confirms = std::mem::take(&mut *conn.traced_confirms_encoded.borrow_mut());
        if !output.is_empty() {
            // The flush is free on TCP; a TLS stream may still hold records the socket had no
            // room for when write_all returned.
            let written = async {
                stream.write_all(&output).await?;
                stream.flush().await
            };
            conn.writing_bytes.set(output.len());
            let written = written.await;
            conn.writing_bytes.set(0);
            if written.is_err() {
                conn.output_closed.set(true);
                conn.flushed.notify();
                return;
            }
            conn.sent_bytes
                .set(conn.sent_bytes.get() + output.len() as u64);
            if let Some(stamp) = traced {
                latency_trace::record_stamp(Stage::SocketWritten, stamp);
            }
            latency_trace::record_stamps(Stage::ConfirmWritten, &traced_confirms);
            report_written(&shard, &conn, encoded);
            conn.flushed.notify();
            continue;
        }
        debug_assert!(
            encoded.is_empty(),
            "deliveries encoded into an empty outbox"
        );
        if conn.output_closed.get() {
            let _ = stream.flush().await;
            return;
        }
        if conn.writer_handover.get() {
            return;
        }
        let interval = heartbeat.get();
        if interval == 0 {
            woken.await;
            continue;
        }
        // Heartbeat at half the negotiated interval while idle, as RabbitMQ does.
        let idle = Duration::from_millis(u64::from(interval) * 500);
        let timed_out = futures_lite::future::or(
            async {
                woken.await;
                false
            },
            async {
                glommio::timer::sleep(idle).await;
                true
            },
        )
        .await;
        if timed_out {
            conn.send_heartbeat();
        }
    }
}

/// Gives the queues credit for what was written (RabbitMQ's credit flow: a queue hands a
/// consumer at most `CONSUMER_UNWRITTEN_BYTES_MAX` its connection has not written). Sent to the
/// queue's owner like an ack; it dispatches again at once.
fn report_written(shard: &Shard, conn: &ConnShared, encoded: Vec<(u16, ConsumerKey, u64)>) {
    for report in conn.bodies_written(encoded) {
        let op = SettleOp::Written {
            consumer: report.consumer,
            bytes: report.bytes,
        };
        shard.settle(report.queue, report.owner, op);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::READ_CHUNK_INITIAL_BYTES;

    #[test]
    fn the_read_chunk_grows_once_a_read_fills_it() {
        let small = READ_CHUNK_INITIAL_BYTES;
        assert_eq!(chunk_len_after_read(300, small), small, "a handshake fits");
        assert_eq!(chunk_len_after_read(small, small), READ_CHUNK_BYTES);
        assert_eq!(
            chunk_len_after_read(READ_CHUNK_BYTES, READ_CHUNK_BYTES),
            READ_CHUNK_BYTES,
            "and never past the full chunk"
        );
        assert_eq!(
            chunk_len_after_read(10, READ_CHUNK_BYTES),
            READ_CHUNK_BYTES,
            "nor back"
        );
    }
}
