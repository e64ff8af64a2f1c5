//! Every bound the load tool relies on, in one place.

use std::time::Duration;

/// One read asks the kernel for this much: deliveries arrive in bursts, and one large read
/// parses many frames per syscall.
pub const READ_CHUNK_BYTES: usize = 256 * 1024;
/// An idle connection's read and write buffers (`Conn::shrink_buffers`): a few small frames.
pub const IDLE_BUFFER_BYTES: usize = 4 * 1024;
/// A producer stops adding messages to its write buffer past this size and writes it out.
pub const WRITE_BATCH_BYTES_MAX: usize = 256 * 1024;
/// And past this many messages, so small messages still go out in bounded batches.
pub const WRITE_BATCH_MESSAGES_MAX: usize = 1024;
/// The frame_max we ask for; the broker's offer caps it.
pub const FRAME_MAX_BYTES: u32 = 128 * 1024;
/// Every blocking read on a data socket returns at least this often, so loops see deadlines.
pub const SOCKET_READ_TIMEOUT: Duration = Duration::from_millis(200);
/// Connect, handshake and each synchronous reply (declare-ok, bind-ok...) must come within this.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(30);
/// `--place`: connections opened at most, per wanted connection, to land on a given shard.
pub const PLACEMENT_ATTEMPTS_MAX: usize = 64;
/// A connection.close-ok that has not come by then is not waited for.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Pipelined topology commands (e.g. 10,000 queue.binds) are sent in windows of this many.
pub const RPC_PIPELINE_WINDOW: usize = 512;
/// The idle scenario opens its connections from this many threads: handshakes overlap, as
/// when many clients connect at once, without a thread per connection.
pub const IDLE_OPENER_THREADS: usize = 4;
/// Latency histograms record nanoseconds from 1 ns up to this; larger values saturate.
pub const LATENCY_NS_MAX: u64 = 120_000_000_000;
/// Significant figures kept by the histograms.
pub const HISTOGRAM_SIGFIGS: u8 = 3;
/// Producers and consumers may run this long past `--duration` before the tool gives up on them
/// (draining, closing) and reports what it has.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// The progress meter redraws this often.
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// Scenario knobs are checked against these so a typo cannot ask for a billion threads.
pub const PRODUCERS_MAX: usize = 1024;
pub const CONSUMERS_MAX: usize = 1024;
pub const QUEUES_MAX: usize = 100_000;
pub const CONNECTIONS_MAX: usize = 10_000;
pub const BINDINGS_MAX: usize = 1_000_000;
pub const MESSAGE_SIZE_MAX_BYTES: usize = 64 * 1024 * 1024;
pub const DURATION_SECONDS_MAX: u64 = 24 * 3600;
pub const RUNS_MAX: usize = 100;
pub const SWEEP_RATES_MAX: usize = 64;
pub const BACKLOG_MESSAGES_MAX: u64 = 1_000_000_000;
/// A topic publisher cycles through at most this many distinct pre-encoded routing keys.
pub const TOPIC_KEYS_MAX: usize = 4096;
/// Backlog scenario: how long filling or draining may take before it is reported as timed out.
pub const BACKLOG_PHASE_TIMEOUT: Duration = Duration::from_secs(300);
/// Backlog scenario: how often the queue depth is polled while waiting for the fill to land.
pub const BACKLOG_POLL_INTERVAL: Duration = Duration::from_millis(20);
/// When a producer is ahead of consumers by more than its backlog bound it waits in naps
/// this long (no spinning: on a small machine the broker needs that core).
pub const BACKPRESSURE_NAP: Duration = Duration::from_micros(100);
/// Confirm scenario, open loop: a publisher stops sending while this many of its messages are
/// unconfirmed (the send-time table is bounded; the delay still shows, the stamps are intended
/// times). Max rate: the --confirm window is capped by it.
pub const CONFIRM_OUTSTANDING_MAX: u64 = 1_000_000;
/// A publisher waiting for confirms wakes at least this often to check its deadline.
pub const CONFIRM_WAIT_MAX: Duration = Duration::from_millis(10);
/// Disk floor: the block written per measurement (the write-ahead log's alignment unit).
pub const DISK_BLOCK_BYTES: usize = 4096;
/// Disk floor: at most this many write+sync measurements per run.
pub const DISK_FLOOR_WRITES_MAX: u64 = 1_000_000;
/// Disk floor: the preallocated file it cycles through is at most this large.
pub const DISK_FLOOR_FILE_BYTES_MAX: u64 = 1 << 30;
/// Disk floor: the file is preallocated with buffered writes of this size.
pub const DISK_FILL_CHUNK_BYTES: usize = 1 << 20;
/// Recovery report: at most this many log lines are read (one per shard is expected).
pub const RECOVERY_LOG_LINES_MAX: usize = 1_000_000;
/// Soak: a publisher stops sending while this many of its publishes are unconfirmed.
pub const SOAK_CONFIRM_WINDOW_MAX: usize = 10_000;
/// Soak: consumers ack (multiple) at least every this many deliveries, and whenever idle.
pub const SOAK_ACK_EVERY: u64 = 50;
/// Soak: reconnect delays while the broker is down (doubling from the first to the last).
pub const SOAK_RECONNECT_DELAY_MIN: Duration = Duration::from_millis(100);
pub const SOAK_RECONNECT_DELAY_MAX: Duration = Duration::from_secs(2);
/// Soak: samples (RSS, fds, p99 over the interval) are taken this often.
pub const SOAK_SAMPLE_INTERVAL: Duration = Duration::from_secs(10);
/// Soak: after the load, how long consumers may take to bring every confirmed message in.
pub const SOAK_DRAIN_TIMEOUT: Duration = Duration::from_secs(300);
/// `--poll-api`: at most this many pollers, each asking at most every
/// `POLL_INTERVAL_MS_MIN` and at least every `POLL_INTERVAL_MS_MAX`.
pub const POLLERS_MAX: usize = 1000;
pub const POLL_INTERVAL_MS_MIN: u64 = 10;
pub const POLL_INTERVAL_MS_MAX: u64 = 60_000;
/// `--poll-api`: one request (connect, answer and body) must be done within this.
pub const POLL_TIMEOUT: Duration = Duration::from_secs(10);
/// `--poll-api`: a poller waiting for its next turn wakes at least this often to see a stop.
pub const POLL_NAP_MAX: Duration = Duration::from_millis(50);
