//! Every bound the broker enforces, in one place, so they can be read and tuned together.

use std::time::Duration;

/// frame_max we offer in connection.tune (RabbitMQ's default).
pub const FRAME_MAX_BYTES: u32 = 131_072;
/// channel_max we offer in connection.tune (RabbitMQ's default).
pub const CHANNEL_MAX: u16 = 2047;
/// Heartbeat interval we suggest; the client's tune-ok value wins, as in RabbitMQ.
pub const HEARTBEAT_DEFAULT_SECONDS: u16 = 60;
/// Largest message body accepted by default (`--max-message-bytes`): RabbitMQ 3.x's default
/// max_message_size, which client suites rely on.
pub const MESSAGE_SIZE_DEFAULT_BYTES: u64 = 128 * 1024 * 1024;
/// Range `--max-message-bytes` accepts: RabbitMQ's own ceiling for max_message_size is 512 MiB.
pub const MESSAGE_SIZE_MIN_BYTES: u64 = 1024;
pub const MESSAGE_SIZE_MAX_BYTES: u64 = 512 * 1024 * 1024;
/// Time a client has to finish the opening handshake (RabbitMQ's `handshake_timeout`), by
/// default; `--handshake-timeout-ms` sets it within the range below.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
pub const HANDSHAKE_TIMEOUT_MS_MIN: u64 = 100;
pub const HANDSHAKE_TIMEOUT_MS_MAX: u64 = 600_000;
/// Largest `--frame-max`: a connection's read buffer grows to hold one whole frame, so this
/// bounds the memory one connection's reader can pin (RabbitMQ accepts larger values; clients
/// rarely ask for more than the default).
pub const FRAME_MAX_CONFIG_MAX_BYTES: u32 = 4 * 1024 * 1024;
/// RabbitMQ's `consumer_timeout` default: a delivery unacknowledged for 30 minutes closes its
/// channel with 406. `--consumer-timeout-ms 0` turns the check off.
pub const CONSUMER_TIMEOUT_DEFAULT_MS: u64 = 1_800_000;
/// Largest `--consumer-timeout-ms` (about 49 days, as u32 milliseconds).
pub const CONSUMER_TIMEOUT_MS_MAX: u64 = u32::MAX as u64;
/// The consumer timeout is checked on a timer per connection, at a quarter of the timeout but
/// never more often than the MIN nor less often than the MAX interval: a delivery is found
/// late by at most one interval, and no per-message clock read is needed.
pub const CONSUMER_TIMEOUT_CHECK_INTERVAL_MIN: Duration = Duration::from_millis(10);
pub const CONSUMER_TIMEOUT_CHECK_INTERVAL_MAX: Duration = Duration::from_secs(1);
/// Largest `--connection-max` (RabbitMQ's `connection_max`): every shard's accept limit
/// together.
pub const CONNECTIONS_TOTAL_MAX: u64 = (CONNECTIONS_PER_SHARD_MAX * SHARDS_MAX) as u64;
/// A TLS handshake (ClientHello to Finished) that takes longer is closed: a peer that connects
/// to the TLS port and sends nothing, or dribbles, holds a socket for no longer than this. The
/// AMQP handshake after it has its own HANDSHAKE_TIMEOUT.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = HANDSHAKE_TIMEOUT;
/// TLS handshakes in progress at once on one shard; past it new TLS connections are closed at
/// accept (handshakes are the costly part of TLS: public-key operations per connection).
pub const TLS_HANDSHAKES_PER_SHARD_MAX: usize = 1024;
/// Encrypted bytes rustls holds for one connection before a write waits for the socket: the
/// TLS counterpart of the outbox bound (rustls's default is 64 KiB; larger fills the socket
/// in fewer wake-ups under a fast consumer).
pub const TLS_SEND_BUFFER_BYTES: usize = 256 * 1024;
/// A certificate, key or CA file larger than this is refused at start.
pub const TLS_PEM_FILE_SIZE_MAX_BYTES: u64 = 1024 * 1024;
/// Time we wait for connection.close-ok / channel.close-ok after closing.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);
/// Bytes read from a socket per read call; the read buffer grows only to hold one whole frame.
pub const READ_CHUNK_BYTES: usize = 64 * 1024;
/// A connection's first read chunk: enough for the handshake and a light load. A read that
/// fills it swaps it for a `READ_CHUNK_BYTES` one (`session::io::FrameReader`), so idle
/// connections do not each hold 64 KiB of touched memory.
pub const READ_CHUNK_INITIAL_BYTES: usize = 4 * 1024;
/// When a connection's unsent output exceeds this, its reader stops reading (publishers on a
/// connection that cannot keep up with its own deliveries are slowed by TCP back-pressure).
pub const OUTBOX_SOFT_MAX_BYTES: usize = 4 * 1024 * 1024;
/// Deliveries one dispatch pass may produce before yielding to other work.
pub const DISPATCH_BATCH_MAX: usize = 256;
/// Body bytes a queue hands one consumer that its connection has not yet reported written to
/// the socket (RabbitMQ's credit flow from queue to channel to writer): past it the queue keeps
/// its messages, so a consumer slower than its publishers (or one that does not read at all)
/// backs its queue up instead of growing its connection's output. A consumer with nothing
/// unwritten always takes the next message, however large. The outbox bound, so one
/// consumer's deliveries alone keep its connection's output within a few times of it.
pub const CONSUMER_UNWRITTEN_BYTES_MAX: u64 = OUTBOX_SOFT_MAX_BYTES as u64;
/// The same for all the consumers of one connection together: past it a delivery waits in its
/// consumer's channel, unencoded (a handle to the message, no copy), until writes bring the
/// connection under it again; waiting deliveries are then encoded one per consumer in turn.
/// Without it a connection with N consumers could hold N times the consumer bound of encoded
/// output. Twice the consumer bound, so a connection with one consumer keeps that consumer's
/// whole credit in flight.
pub const CONNECTION_UNWRITTEN_BYTES_MAX: u64 = 2 * CONSUMER_UNWRITTEN_BYTES_MAX;
/// What one delivery counts against that bound besides its body: basic.deliver and the content
/// header (names, tags and typical properties), so deliveries of empty bodies are bounded too.
pub const DELIVERY_FRAMING_CHARGE_BYTES: u64 = 256;
/// A connection reports bytes written for a consumer to its queue once this many have
/// accumulated (one report per this many bytes, not one per write). Below the bound, so a
/// queue that stopped for a consumer always hears: it stopped with at least the bound charged,
/// and once the connection has written that much, a report is due.
pub const CONSUMER_WRITTEN_REPORT_BYTES: u64 = CONSUMER_UNWRITTEN_BYTES_MAX / 2;
/// An outbox buffer that grew past this (a large delivery, a burst) is not kept for the next
/// write-out: a fresh one is started, so the large allocation goes back once written instead
/// of staying resident for the connection's life (`bytes` reclaims a buffer it holds alone).
/// Twice the outbox bound, so a connection working at that bound keeps its buffer (a buffer
/// doubles as it grows) and does not allocate one per write.
pub const OUTBOX_RETAINED_CAPACITY_BYTES_MAX: usize = 2 * OUTBOX_SOFT_MAX_BYTES;
/// What a connection's outbox starts with, and starts again with after a large write-out.
pub const OUTBOX_INITIAL_CAPACITY_BYTES: usize = 16 * 1024;
/// Batches in flight on one mesh link (SPSC channel capacity).
pub const MESH_LINK_CAPACITY_BATCHES: usize = 256;
/// Messages waiting in one shard's outbox to a peer before publishers on this shard pause.
pub const MESH_OUTBOX_SOFT_MAX_MESSAGES: usize = 16_384;
/// Bytes (message allocations, and each entry's envelope) waiting in one shard's outbox to a
/// peer before publishers on this shard pause, as for the message count: a few large messages
/// must not pile up where 16k small ones would not.
pub const MESH_OUTBOX_SOFT_MAX_BYTES: usize = 64 * 1024 * 1024;
/// Messages in one mesh batch; a larger outbox is sent as several batches.
pub const MESH_BATCH_MAX_MESSAGES: usize = 1024;
/// Longest a cross-shard request may take before it is answered with INTERNAL_ERROR.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(30);
/// io_uring registered-buffer memory per executor at most; small, because `ulimit -l` is often
/// 8 MiB. With many shards each gets less (`runtime::executor_io_memory_bytes`).
pub const EXECUTOR_IO_MEMORY_BYTES: usize = 1 << 20;
/// The least registered-buffer memory an executor is given: glommio's own floor (it rounds
/// anything smaller up to this).
pub const EXECUTOR_IO_MEMORY_BYTES_MIN: usize = 64 * 1024;
/// Rings per glommio executor (main, latency, poll), each registering the executor's io memory
/// again, and each registration counts against `RLIMIT_MEMLOCK`.
pub const EXECUTOR_IO_RINGS: usize = 3;
/// io_uring submission queue depth per ring.
pub const EXECUTOR_RING_DEPTH: usize = 256;
/// Every shard keeps a timer due within this, so an executor that parks with work still to run
/// wakes within it (glommio 0.9 can park when a preemption check comes before the first task
/// queue of a turn; with no timer or I/O pending it would sleep for good: `runtime::run`).
pub const EXECUTOR_PARK_BOUND: Duration = Duration::from_millis(50);
/// Connections per shard; more are refused at accept.
pub const CONNECTIONS_PER_SHARD_MAX: usize = 16_384;
/// Pending connections the kernel queues per listening socket.
pub const LISTEN_BACKLOG: i32 = 1024;
/// Connections an accept loop takes in a row before it yields to the shard's other tasks
/// (`net::accept_loop`): an accept with connections in the backlog never waits, so without it
/// a burst of connections was accepted in one poll.
pub const ACCEPTS_PER_TURN_MAX: usize = 16;
/// Accepting, handshakes (AMQP, TLS) and the management HTTP servers run in a glommio task
/// queue of their own with these shares against the data path's 1000 (glommio's default
/// queue: open connections, queues, the mesh, the log): while both have work, admission gets
/// about 1/21 of the shard, so a flood of connections slows new connections, not the frames
/// of open ones. Idle, admission takes what it needs.
pub const ADMISSION_TASK_SHARES: usize = 50;
/// ... and while admission work is runnable the shard stops running tasks and polls for I/O at
/// least this often (glommio `Latency::Matters`): socket readiness goes to glommio's main ring,
/// which preempts nothing, so without it a burst of handshakes (a thousand handshake timeouts
/// firing together) would run up to glommio's default 100 ms before a publisher's frame is
/// even seen. This bounds how much admission work runs per scheduler turn.
pub const ADMISSION_PREEMPT_INTERVAL: Duration = Duration::from_micros(500);
/// `--spin-mode adaptive`: glommio shares of the spinner's task queue, the lowest, so the data
/// path's tasks run first while both are runnable.
pub const SPIN_TASK_SHARES: usize = 1;
/// Consumers per channel.
pub const CONSUMERS_PER_CHANNEL_MAX: usize = 4096;
/// Unconfirmed publishes per channel (waiting for other shards or the log) before the session
/// stops reading that connection until some are confirmed.
pub const PENDING_CONFIRMS_PER_CHANNEL_MAX: usize = 65_536;
/// Delayed-exchange messages one shard holds at most (`shard::delayed`); a publish beyond it
/// is refused (basic.nack to a confirming publisher).
pub const DELAYED_MESSAGES_MAX: usize = 1 << 20;
/// ... and message bytes held: a publish that would pass it is refused the same way.
/// RabbitMQ's plugin has no bound of its own (its store grows until the node's memory alarm
/// blocks every publisher); ringmq refuses the one publish instead.
pub const DELAYED_BYTES_MAX: usize = 1 << 30;
/// Delayed messages routed per timer firing before the timer task yields.
pub const DELAYED_FIRE_BATCH_MAX: usize = 256;
/// Messages and acks buffered in one transaction.
pub const TX_OPERATIONS_MAX: usize = 1_000_000;
/// Exchanges a channel counts its publishes to (for the Prometheus per-channel series
/// `rabbitmq_channel_messages_published_total{channel,vhost,exchange}`); publishes to further
/// exchanges on that channel are counted in the global totals only.
pub const CHANNEL_EXCHANGE_COUNTERS_MAX: usize = 64;
/// Bytes of messages (as allocated: body, properties, names) buffered in one transaction; the
/// publish that would pass it closes the channel with 406, as `TX_OPERATIONS_MAX` does. The
/// first message of a transaction always goes in (it is bounded by `--max-message-bytes`).
pub const TX_BYTES_MAX: usize = 512 * 1024 * 1024;

// Names and topology (broker).
/// Longest exchange or queue name, in bytes (an AMQP short string).
pub const NAME_LENGTH_MAX: usize = 255;
/// Most exchanges one publish may traverse through exchange-to-exchange bindings and alternate
/// exchanges. Each exchange is visited at most once anyway; this caps the work on huge topologies.
pub const ROUTE_EXCHANGES_VISITED_MAX: usize = 1024;
/// Most queues per vhost, exchanges per vhost, and bindings per source exchange: declares and
/// binds beyond these are refused (406) instead of growing every shard's copy without end.
pub const QUEUES_PER_VHOST_MAX: usize = 100_000;
pub const EXCHANGES_PER_VHOST_MAX: usize = 10_000;
pub const BINDINGS_PER_EXCHANGE_MAX: usize = 100_000;
/// Most changes one validation may emit (a delete cascading through auto-delete exchanges).
pub const CHANGES_PER_REQUEST_MAX: usize = 4096;
/// Extra routing keys one message may carry (CC and BCC together): each costs a routing pass.
pub const SENDER_SELECTED_KEYS_MAX: usize = 1024;

// Queues (broker::queue).
/// Default for `broker::queue::QueueLimits::consumers_max`.
pub const QUEUE_CONSUMERS_MAX: u32 = 65_536;
/// Levels of a priority queue: `x-max-priority` is at most 255, so levels 0..=255.
pub const PRIORITY_LEVELS_MAX: usize = 256;
/// Body bytes at the head of a paging queue kept loaded ahead of delivery (one message more
/// when the head alone is larger: the head is always loadable).
pub const PAGE_READ_AHEAD_BYTES: u64 = 2 * 1024 * 1024;
/// Entries a page-out search walks back over (paged ones) looking for a loaded one behind them.
/// Such entries are rare (a page-out whose log write failed); past this they wait for the loader.
pub const PAGE_OUT_SCAN_MAX: usize = 1024;
/// `x-death` entries kept per message. RabbitMQ keeps one per (queue, reason), so this is only
/// reached by a message that visited this many queues; the oldest entries go first.
pub const X_DEATH_ENTRIES_MAX: usize = 64;
/// Largest `x-cache-size` accepted: about 64 MiB of entries per queue at most.
pub const DEDUP_CACHE_SIZE_MAX: u64 = 1_000_000;

// Wire decoding (protocol).
/// Deepest nesting of tables/arrays inside a table we accept. Decoding recurses once per level,
/// so this bounds the stack a crafted frame can make us use. RabbitMQ's own arguments nest 2 deep.
pub const FIELD_NESTING_DEPTH_MAX: usize = 64;
/// Flag words we read before calling a header malformed. One is all basic needs.
pub const PROPERTY_FLAG_WORDS_MAX: usize = 4;

// Shard work per pass.
/// Dead letters handled per drain before the rest are dropped with a warning: a bound on the
/// work one event can trigger (a cascade through many TTL-0 queues). Far above any sane chain.
pub const DEAD_LETTER_CASCADE_MAX: usize = 1 << 20;
/// Reads one loader has in flight at once.
pub const PAGE_IN_READS_MAX: usize = 16;
/// A paged message whose read failed in a way that may pass (EIO, the log failing a flush) stays
/// queued; its loader waits this long before reading again, doubling up to the maximum while
/// the failure lasts, so a failing disk costs a few reads a second, not a busy loop.
pub const PAGE_IN_RETRY_DELAY_MIN: Duration = Duration::from_millis(50);
pub const PAGE_IN_RETRY_DELAY_MAX: Duration = Duration::from_secs(2);
/// Page-outs in one pass; a pass that stops here continues at the next publish or dispatch.
pub const PAGE_OUT_PASS_MAX: usize = 4096;
/// Reads basic.get makes for a paged head before it answers get-empty (each read that
/// succeeds or fails changes the head, so more than one is needed only when the head expires
/// or is taken while a read is in flight).
pub const GET_HEAD_LOAD_ATTEMPTS_MAX: usize = 8;
/// Timers fired in one pass before the task yields to other work.
pub const TIMER_FIRE_BATCH_MAX: usize = 256;
/// Longest single sleep: bounds the damage of a wall-clock jump (the set is re-read after it).
pub const TIMER_SLEEP_MAX: Duration = Duration::from_secs(1);

// Message log (storage::wal).
/// A failing disk is logged once per failure episode (`failure_log`): the first failure with
/// its error, then a summary with the counts at most this often while failures go on, then one
/// line when an operation succeeds again. Not one line per failed flush, read or publish.
pub const FAILURE_LOG_SUMMARY_INTERVAL: Duration = Duration::from_secs(10);
/// Bytes read per DMA read while recovering (bounds recovery's I/O buffer, not its state).
pub const WAL_RECOVERY_READ_BYTES: usize = 1 << 20;
/// Tasks that may wait in `wait_durable` at once.
pub const WAL_WAITERS_MAX: usize = 1 << 16;
/// Smallest segment accepted (header block plus a few records).
pub const WAL_SEGMENT_SIZE_BYTES_MIN: u64 = 64 * 1024;
/// Largest segment accepted: recovery holds one segment in memory at a time.
pub const WAL_SEGMENT_SIZE_BYTES_MAX: u64 = 1 << 30;
/// Times `read_live` looks a key up again after waiting for its record to become durable (the
/// record may be copied forward meanwhile; each copy is durable within a flush or two).
pub const WAL_READ_LIVE_ATTEMPTS_MAX: usize = 4;

/// Copy-forward moves the live enqueues of a segment only once it is at least this many
/// segments behind the one being written: messages that young are usually consumed soon, and
/// copying them would only double their writes.
pub const WAL_COMPACT_AGE_SEGMENTS_MIN: u64 = 4;
/// ... and only while its live enqueues fill at most this share of its data area: copying
/// `live` bytes frees a whole segment, so the write amplification stays at most
/// 25 / (100 - 25) = 1/3, and a deep backlog of unconsumed messages (full segments) is never
/// rewritten.
pub const WAL_COMPACT_LIVE_PERCENT_MAX: u64 = 25;
/// ... or, however dense, once it is the root of settle chains keeping this many dead segments
/// on disk (a later segment's settle must outlive the enqueues it removed, so one long-lived
/// segment keeps every later one whose settles reach it through others). Copying at most one
/// segment to free this many keeps that amplification at most 1/4.
pub const WAL_COMPACT_PINNED_SEGMENTS_MIN: usize = 4;
/// Copies are appended only while the pending batch holds at most this share of
/// `batch_soft_bytes` (also the bound of bytes copied per round, one round per flush):
/// publishers keep the rest, and the broker waits for a flush above the soft bound (`congested`).
/// A record larger than that is copied only into an empty batch.
pub const WAL_COMPACT_BATCH_PERCENT_MAX: usize = 50;

// Resource alarms (`alarm`, `shard::alarms`).
/// How often each shard samples resident memory and the data directory's free space. A
/// publisher at full speed overshoots the watermark by at most its rate times this (and the
/// bytes in flight between shards); RabbitMQ samples every 2.5 s by default, which suits its
/// slower publish path less well.
pub const ALARM_SAMPLE_INTERVAL: Duration = Duration::from_millis(50);
/// Message content a shard may accept from clients between two samples before it samples at
/// once: a publisher that keeps its executor busy delays the sampler task, so the interval alone
/// does not bound the overshoot; this does (per shard, plus one read chunk per connection).
pub const ALARM_SAMPLE_CONTENT_BYTES_MAX: u64 = 16 * 1024 * 1024;

// Configuration.
/// Hard ceiling on shards whatever the machine. With `--pin cores` (the default) the limit is
/// also the number of cores, since each shard's executor is pinned to a core of its own.
pub const SHARDS_MAX: usize = 256;
/// A config file larger than this is certainly not a config file.
pub const CONFIG_FILE_SIZE_MAX_BYTES: u64 = 1024 * 1024;
/// Bound on `listen` addresses (each one is a listening socket per shard).
pub const LISTEN_ADDRESSES_MAX: usize = 16;
/// Longest spin accepted.
pub const SPIN_MICROS_MAX: u64 = 10_000;
/// `--spin-mode adaptive` (`spin.rs`): while spinning, the CPU pressure is read this often...
pub const SPIN_PRESSURE_CHECK_INTERVAL: Duration = Duration::from_millis(1);
/// ...and spinning stops once other threads waited for a CPU for more than this fraction of
/// the time since the last reading...
pub const SPIN_PRESSURE_FRACTION_MAX: f64 = 0.05;
/// ...for this long: the shard parks when idle, as with `--spin-us 0`.
pub const SPIN_BACKOFF: Duration = Duration::from_millis(20);
/// `--trace-latency`: one message in this many (by a hash of its stamp, so every stage picks
/// the same ones) is traced. 64 keeps the cost at a clock read per 64 messages per stage.
pub const LATENCY_TRACE_SAMPLE_EVERY: u64 = 64;
/// `--trace-latency`'s scheduler probe sleeps this long between wake-ups and records how late
/// each one comes (`latency_trace::scheduler_lag_probe`).
pub const SCHEDULER_LAG_PROBE_INTERVAL: Duration = Duration::from_millis(1);
/// `--trace-latency`: a stamp older than this (or in the future) is not a ringmq-perf send time
/// and is ignored; also the histograms' highest value.
pub const LATENCY_TRACE_AGE_MAX_NS: u64 = 60_000_000_000;
/// `--trace-latency`: sampled stamps one log, one shard's confirmer or one connection keeps
/// while their message waits for the next stage (a flush, a confirm); more are not traced.
pub const LATENCY_TRACE_PENDING_MAX: usize = 1024;

// A transaction holds at least as much as the largest message the broker can be set to accept.
const _: () = assert!(TX_BYTES_MAX as u64 >= MESSAGE_SIZE_MAX_BYTES);

const _: () = assert!(
    FRAME_MAX_BYTES >= 4096,
    "the spec's minimum frame_max is 4096"
);
const _: () = assert!(READ_CHUNK_BYTES as u32 <= FRAME_MAX_BYTES);
const _: () = assert!(READ_CHUNK_INITIAL_BYTES <= READ_CHUNK_BYTES);
const _: () = assert!(MESH_BATCH_MAX_MESSAGES <= MESH_OUTBOX_SOFT_MAX_MESSAGES);
// One connection's output bound fits in an outbox before the whole shard pauses for it.
const _: () = assert!(OUTBOX_SOFT_MAX_BYTES <= MESH_OUTBOX_SOFT_MAX_BYTES);
// A report is due before the bound is reached, so a stopped consumer is always resumed.
const _: () = assert!(
    0 < CONSUMER_WRITTEN_REPORT_BYTES
        && CONSUMER_WRITTEN_REPORT_BYTES < CONSUMER_UNWRITTEN_BYTES_MAX
);
const _: () = assert!(OUTBOX_INITIAL_CAPACITY_BYTES <= OUTBOX_RETAINED_CAPACITY_BYTES_MAX);
// The largest message a client may send can always be held by a delayed exchange.
const _: () = assert!(MESSAGE_SIZE_MAX_BYTES as usize <= DELAYED_BYTES_MAX);
const _: () = assert!(DELAYED_FIRE_BATCH_MAX <= DELAYED_MESSAGES_MAX);
const _: () = assert!(
    WAL_BATCH_SOFT_BYTES + WAL_PART_BODY_BYTES + WAL_RECORD_OVERHEAD_MAX_BYTES
        < WAL_WRITE_BUFFER_BYTES
);
const _: () = assert!(EXECUTOR_IO_MEMORY_BYTES_MIN <= EXECUTOR_IO_MEMORY_BYTES);
const _: () = assert!((WAL_WRITE_BUFFER_BYTES as u64) < WAL_SEGMENT_SIZE_BYTES - 4096);
const _: () = assert!(MESSAGE_SIZE_MIN_BYTES <= MESSAGE_SIZE_DEFAULT_BYTES);
const _: () = assert!(FRAME_MAX_BYTES <= FRAME_MAX_CONFIG_MAX_BYTES);
const _: () = assert!(
    HANDSHAKE_TIMEOUT_MS_MIN <= HANDSHAKE_TIMEOUT.as_millis() as u64
        && HANDSHAKE_TIMEOUT.as_millis() as u64 <= HANDSHAKE_TIMEOUT_MS_MAX
);
const _: () = assert!(CONSUMER_TIMEOUT_DEFAULT_MS <= CONSUMER_TIMEOUT_MS_MAX);
const _: () = assert!(
    CONSUMER_TIMEOUT_CHECK_INTERVAL_MIN.as_nanos()
        <= CONSUMER_TIMEOUT_CHECK_INTERVAL_MAX.as_nanos()
);
const _: () = assert!(MESSAGE_SIZE_DEFAULT_BYTES <= MESSAGE_SIZE_MAX_BYTES);

/// Room in a log record beyond the body: properties (one content-header frame at most), exchange
/// and routing key (255 bytes each), record and part headers and alignment, with margin.
const WAL_RECORD_OVERHEAD_MAX_BYTES: usize = 1024 * 1024;
/// A body longer than this is logged as a chain of part records of at most this size each
/// (`storage::wal` `record`), fed through the batch under its soft bound: neither the batch
/// nor a DMA buffer is ever sized for the largest message.
pub const WAL_PART_BODY_BYTES: usize = 1024 * 1024;
/// Hard bound of one message-log batch (records appended while a flush runs): the soft bound
/// plus one record of the largest single-record size (a part, or a body up to a part).
pub const WAL_WRITE_BUFFER_BYTES: usize =
    WAL_BATCH_SOFT_BYTES + WAL_PART_BODY_BYTES + WAL_RECORD_OVERHEAD_MAX_BYTES + 2 * 1024 * 1024;
/// Size each message-log segment is preallocated to: it must hold a whole batch (a chained
/// message spans segments).
pub const WAL_SEGMENT_SIZE_BYTES: u64 = 32 * 1024 * 1024;
/// The next segment of a log is zero-filled (`segment::prepare`) in DMA writes of this size, one
/// at a time, in the background: at ~1.4 GB/s here a 32 MiB segment takes ~25 ms of the device,
/// in steps short enough that a log flush queued behind one waits well under a millisecond.
pub const WAL_ZERO_FILL_CHUNK_BYTES: usize = 1024 * 1024;
/// A log starts preparing its next segment once its current one is this full, so a short-lived
/// log (tests, a broker that hardly logs) does not write a second segment it never uses; the
/// rest (24 MiB of 32) is ~100 ms of appends at the 1 KB confirmed maximum rate measured here.
pub const WAL_PREPARE_AT_PERCENT: u64 = 25;
/// Batches one log has between "taken by the flusher" and "finished" at once: 2 lets the next
/// batch's write (and its own fdatasync) start while the previous fdatasync is in flight, which
/// is what a publish arriving during a flush waited for (`storage::wal::writer`).
pub const WAL_FLUSHES_IN_FLIGHT_MAX: usize = 2;
/// After a failed preparation (a full disk, EIO) the next is not tried before this; rolls
/// meanwhile create their segment fallocated, as they did before segments were prepared.
pub const WAL_PREPARE_RETRY_DELAY: Duration = Duration::from_secs(1);
/// Batch size above which publishers wait for the flush (`Wal::congested`): batches near this
/// size keep group commit efficient without letting one flush grow (and every confirm in it
/// wait) towards the hard bound. Also the room left for one record above it.
pub const WAL_BATCH_SOFT_BYTES: usize = 2 * 1024 * 1024;
/// Size of each topology-log segment (topology changes are small and rare).
pub const META_SEGMENT_SIZE_BYTES: u64 = 4 * 1024 * 1024;
/// Bound of one topology-log batch.
pub const META_WRITE_BUFFER_BYTES: usize = 256 * 1024;

/// Messages handed over in one batch at start-up when the shard count changed
/// (`shard::adopt`): the owner makes each batch durable before the originals are settled.
pub const ADOPT_BATCH_MESSAGES_MAX: usize = 1024;
/// ... and body bytes per batch (a batch closes once past it, so one large message still goes):
/// about one soft batch of the owner's log, i.e. one flush per batch.
pub const ADOPT_BATCH_BYTES_MAX: usize = WAL_BATCH_SOFT_BYTES;

// ---- users, vhosts, permissions -------------------------------------------------------------

/// Most vhosts and users: every shard holds the whole table, so it must not grow without end.
pub const VHOSTS_MAX: usize = 10_000;
pub const USERS_MAX: usize = 100_000;
/// Longest user or vhost name, and longest permission pattern, in bytes.
pub const ACCESS_NAME_LENGTH_MAX: usize = 255;
pub const PERMISSION_PATTERN_LENGTH_MAX: usize = 4096;
/// Backtracking steps one match of a policy or permission pattern with look-around or
/// backreferences may take (`pattern`); past it the name does not match. Names are at most 255
/// bytes, so honest patterns stay far below it, and a hostile one costs its publisher at most
/// about a millisecond per check.
pub const PATTERN_BACKTRACK_STEPS_MAX: usize = 100_000;
/// Most policies plus operator policies in one vhost: every shard holds them all and a policy
/// change matches each against every queue of the vhost.
pub const POLICIES_PER_VHOST_MAX: usize = 1024;
/// Most runtime parameters (shovels) in one vhost, and the longest value's JSON text: every
/// shard holds them all, and each is logged as one topology record.
pub const PARAMETERS_PER_VHOST_MAX: usize = 1024;
pub const PARAMETER_VALUE_BYTES_MAX: usize = 64 * 1024;
/// Most topic permissions (one per exchange) a user may hold in one vhost.
pub const TOPIC_PERMISSIONS_PER_USER_VHOST_MAX: usize = 1024;

// ---- shovels (`shovel`) ---------------------------------------------------------------------

/// RabbitMQ's shovel `reconnect-delay` default, and the largest one accepted (seconds).
pub const SHOVEL_RECONNECT_DELAY_DEFAULT_SECONDS: u64 = 5;
pub const SHOVEL_RECONNECT_DELAY_MAX_SECONDS: u64 = 86_400;
/// RabbitMQ's `src-prefetch-count` default; the prefetch is basic.qos's u16 and bounds the
/// messages in flight (delivered, not yet acknowledged at the source).
pub const SHOVEL_PREFETCH_DEFAULT: u16 = 1000;
/// Connecting and the AMQP handshake to either end, each.
pub const SHOVEL_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// A synchronous reply (open-ok, declare-ok, consume-ok, close-ok) from either end.
pub const SHOVEL_REPLY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// A stopping shovel waits this long for the destination's confirms of what it published, so
/// it can acknowledge those at the source before it closes (none published twice).
pub const SHOVEL_STOP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// The frame size the shovel asks for (both ends may lower it), and the most frames of one
/// message it accepts (header and body frames beyond that close the connection).
pub const SHOVEL_FRAME_BYTES_MAX: u32 = 131_072;
/// Largest message body the shovel carries (RabbitMQ's own default message size limit).
pub const SHOVEL_MESSAGE_BYTES_MAX: u64 = 128 * 1024 * 1024;
/// Bytes read from a socket per read.
pub const SHOVEL_READ_BUFFER_BYTES: usize = 64 * 1024;
/// Events (deliveries, confirms) a shovel handles before it writes what they produced.
pub const SHOVEL_EVENT_BATCH_MAX: usize = 256;
/// A batch stops taking events once this many bytes wait to be written to the destination
/// (one message may take it past: the buffer holds at most that message more).
pub const SHOVEL_WRITE_BATCH_BYTES_MAX: usize = 1024 * 1024;
/// A shovel's event channel holds twice its prefetch (deliveries and as many confirms) plus
/// this many other methods (replies, cancels, closes).
pub const SHOVEL_EVENTS_BEYOND_PREFETCH_MAX: usize = 64;
/// Reconnect backoff: after consecutive attempts that never got to running, the wait doubles
/// from `reconnect-delay` at most this many times, and stays under this ceiling unless
/// `reconnect-delay` itself is longer.
pub const SHOVEL_RECONNECT_DOUBLINGS_MAX: u32 = 16;
pub const SHOVEL_RECONNECT_BACKOFF_MAX: std::time::Duration = std::time::Duration::from_secs(30);

// Management HTTP API (`management::http`, `management::api`).

/// Management connections open at once; more are closed at accept. Operators' scripts and
/// dashboards open a handful each.
pub const MANAGEMENT_CONNECTIONS_MAX: usize = 256;
/// Largest request body read (a definitions import is the largest): RabbitMQ's
/// `management.http.max_body_size` default, 20 MB.
pub const MANAGEMENT_REQUEST_BODY_BYTES_MAX: usize = 20_000_000;
/// Time a client has to send a request's headers, for the first request and between
/// keep-alive requests (a silent connection does not hold a slot for ever).
pub const MANAGEMENT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause after a failed accept (descriptors exhausted) before the next one.
pub const MANAGEMENT_ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// Bytes hyper buffers for one request's head, and headers per request.
pub const MANAGEMENT_HEADER_BUFFER_BYTES: usize = 64 * 1024;
pub const MANAGEMENT_HEADERS_MAX: usize = 100;
/// RabbitMQ's largest `page_size` (`rabbit_mgmt_util`: bigger is an invalid pagination).
pub const MANAGEMENT_PAGE_SIZE_MAX: usize = 500;
/// RabbitMQ's default `page_size` when only `page` is given.
pub const MANAGEMENT_PAGE_SIZE_DEFAULT: usize = 100;
/// Message rates (`management::rates`): the change over (at least) this long, as RabbitMQ's
/// default `collect_statistics_interval`.
pub const RATE_WINDOW: Duration = Duration::from_secs(5);
/// Counter readings closer together than this are not kept (the API can be asked many times a
/// second); until a reading is a window old, the rate is over the oldest at least this old.
pub const RATE_READING_SPACING: Duration = Duration::from_secs(1);
/// A reading older than this is not a base: a rate over minutes nobody asked about would show
/// traffic long gone as current.
pub const RATE_READING_AGE_MAX: Duration = Duration::from_secs(30);
/// Readings kept per queue (and for the overview): those younger than the window, spaced by
/// `RATE_READING_SPACING`, one base at least a window old, and the one just taken.
pub const RATE_READINGS_PER_COUNTER_MAX: usize =
    (RATE_WINDOW.as_secs() / RATE_READING_SPACING.as_secs()) as usize + 2;
/// Messages one `POST .../get` may take (each is held in memory for the response).
pub const MANAGEMENT_GET_COUNT_MAX: usize = 10_000;
/// Operations one definitions import may hold (users, vhosts, permissions, exchanges,
/// queues, bindings together).
pub const MANAGEMENT_IMPORT_OPERATIONS_MAX: usize = 1_000_000;
/// Largest `--load-definitions` file read at start-up (read whole, then parsed): a management
/// import body is bounded the same way.
pub const DEFINITIONS_FILE_BYTES_MAX: u64 = MANAGEMENT_REQUEST_BODY_BYTES_MAX as u64;

/// One `ringmqctl` HTTP request (connect, send, read the answer): a broker that does not answer
/// in this time is reported unreachable instead of hanging an operator's script.
pub const CTL_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest answer `ringmqctl` reads (an export is the largest): the same bound as an import
/// body, so what one broker exports another accepts.
pub const CTL_RESPONSE_BYTES_MAX: u64 = MANAGEMENT_REQUEST_BODY_BYTES_MAX as u64;

const _: () = assert!(
    MANAGEMENT_HEADER_BUFFER_BYTES >= 8192,
    "hyper's max_buf_size floor"
);
const _: () = assert!(MANAGEMENT_PAGE_SIZE_DEFAULT <= MANAGEMENT_PAGE_SIZE_MAX);

// One consumer is never held back by its connection's credit (only by its own).
const _: () = assert!(CONNECTION_UNWRITTEN_BYTES_MAX >= CONSUMER_UNWRITTEN_BYTES_MAX);
// glommio's shares range, and admission below the data path's default 1000.
const _: () = assert!(ADMISSION_TASK_SHARES >= 1 && ADMISSION_TASK_SHARES < 1000);

// Names are AMQP short strings.
const _: () = assert!(NAME_LENGTH_MAX <= u8::MAX as usize);
// One level per x-max-priority value 0..=255.
const _: () = assert!(PRIORITY_LEVELS_MAX == u8::MAX as usize + 1);
// RabbitMQ's own arguments nest two deep; basic's properties need one flag word.
const _: () = assert!(FIELD_NESTING_DEPTH_MAX >= 2 && PROPERTY_FLAG_WORDS_MAX >= 1);
// O_DIRECT reads are whole blocks.
const _: () = assert!(WAL_RECOVERY_READ_BYTES.is_multiple_of(crate::storage::wal::WAL_BLOCK_BYTES));
const _: () = assert!(
    WAL_SEGMENT_SIZE_BYTES_MIN >= 4 * crate::storage::wal::WAL_BLOCK_BYTES as u64
        && WAL_SEGMENT_SIZE_BYTES_MIN < WAL_SEGMENT_SIZE_BYTES_MAX
);
// Every loop that works in passes makes progress.
const _: () =
    assert!(PAGE_IN_READS_MAX >= 1 && PAGE_OUT_PASS_MAX >= 1 && TIMER_FIRE_BATCH_MAX >= 1);

/// RabbitMQ's `disk_free_limit.absolute` default, 50 MB (decimal, as RabbitMQ's "50MB").
pub const DISK_FREE_LIMIT_DEFAULT_BYTES: u64 = 50_000_000;
/// RabbitMQ's `CHANNEL_MIN` (rabbit_reader): a tune-ok channel_max below it is refused.
pub const TUNE_CHANNEL_MAX_MIN: u32 = 1;

// ---- cluster (src/cluster/) ------------------------------------------------------------------

/// `--cluster-port` default: RabbitMQ's inter-node (Erlang distribution) port.
pub const CLUSTER_PORT_DEFAULT: u16 = 25672;
/// Nodes in one cluster (this node and its `--peer`s). Raft ids are 1..=this; queue ids carry
/// the index of the node that leads them in their top bits (`QUEUE_ID_NODE_SHIFT`).
pub const CLUSTER_NODES_MAX: usize = 16;
/// How often the Raft leader looks for peers that are gone: one whose link was down at two
/// sweeps in a row (5-10 s) has its transient queues removed from the topology.
pub const CLUSTER_TRANSIENT_SWEEP_INTERVAL: Duration = Duration::from_secs(5);
/// A restarted node removes the transient queues its previous run left in the topology at its
/// sweeps, this many to one Raft entry (an entry stays far below `RAFT_MESSAGE_BYTES_MAX`:
/// each names a vhost and a queue, at most 255 bytes each, and an id).
pub const EARLIER_TRANSIENT_QUEUES_PER_ENTRY_MAX: usize = 256;
// `PublishOutcome::remote_nodes` has one bit per member.
const _: () = assert!(CLUSTER_NODES_MAX <= 32);
/// Queue ids: the leading node's index sits above this bit, so ids never collide across nodes
/// and a queue's node is read from its id (a cluster of one: index 0, ids as before).
pub const QUEUE_ID_NODE_SHIFT: u32 = 48;
/// `--cluster-secret`: at least this long (RabbitMQ's cookie is 20 characters).
pub const CLUSTER_SECRET_LENGTH_MIN: usize = 8;
pub const CLUSTER_SECRET_LENGTH_MAX: usize = 255;
/// Largest inter-node frame (a Raft message with its entries); a peer announcing more is
/// disconnected before anything is allocated for it.
pub const CLUSTER_FRAME_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Raft: at most this many entry bytes per append message, and this many in flight per peer.
pub const RAFT_MESSAGE_BYTES_MAX: u64 = 1024 * 1024;
pub const RAFT_INFLIGHT_MESSAGES_MAX: usize = 256;
/// Raft's clock: one tick every RAFT_TICK. A follower that hears no heartbeat for a randomized
/// RAFT_ELECTION_TICKS..2*RAFT_ELECTION_TICKS ticks (1-2 s) starts an election, so a lost
/// leader is replaced within 2 s plus one vote round trip.
pub const RAFT_TICK: Duration = Duration::from_millis(100);
pub const RAFT_ELECTION_TICKS: usize = 10;
pub const RAFT_HEARTBEAT_TICKS: usize = 2;
/// Raft messages queued for one peer while its link is down or slow; past it the oldest are
/// dropped (Raft retransmits what matters).
pub const CLUSTER_PEER_QUEUE_MESSAGES_MAX: usize = 4096;
/// Raft messages received and not yet stepped; past it new ones are dropped.
pub const CLUSTER_INBOX_MESSAGES_MAX: usize = 4096;
/// Inter-node connections accepted at once (each peer needs one).
pub const CLUSTER_CONNECTIONS_MAX: usize = 64;
/// A peer has this long to connect and to finish the handshake.
pub const CLUSTER_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
pub const CLUSTER_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
/// `join_cluster`: how long a joining node waits for the member it asked to answer (the member
/// proposes the change and waits for it to commit, at most `CLUSTER_PROPOSE_TIMEOUT`).
pub const CLUSTER_JOIN_TIMEOUT: Duration = Duration::from_secs(10);
// The join runs within the mesh call that carries it to the topology owner.
const _: () = assert!(
    CLUSTER_PROPOSE_TIMEOUT.as_millis() < CLUSTER_JOIN_TIMEOUT.as_millis()
        && CLUSTER_JOIN_TIMEOUT.as_millis() + CLUSTER_HANDSHAKE_TIMEOUT.as_millis() * 2
            < RPC_TIMEOUT.as_millis()
);
/// Reconnecting to a peer: the first retry after the MIN, doubling up to the MAX.
pub const CLUSTER_RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(100);
pub const CLUSTER_RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Link liveness: a side with nothing else to send sends a heartbeat frame every
/// CLUSTER_HEARTBEAT_INTERVAL, both ways; a connection on which nothing arrives for
/// CLUSTER_PEER_SILENCE_MAX (or a write that does not finish within it) is closed, and the
/// peer is shown as not running until a new connection is up. A killed peer's kernel closes
/// the connection at once; this bound is for a peer that goes silent (links cut, a frozen host).
pub const CLUSTER_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(500);
pub const CLUSTER_PEER_SILENCE_MAX: Duration = Duration::from_secs(3);
const _: () = assert!(
    CLUSTER_PEER_SILENCE_MAX.as_millis() >= 4 * CLUSTER_HEARTBEAT_INTERVAL.as_millis(),
    "a few lost or late heartbeats must not take a link down"
);
/// A topology change not committed by a majority and applied here within this time is answered
/// with an error (a node cut off from the majority confirms nothing).
pub const CLUSTER_PROPOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// A declare refused at commit because another node took the name first is decided again
/// against the updated copy (then it is equivalent, or a 406); at most this many decisions.
pub const CLUSTER_DECIDE_ATTEMPTS_MAX: usize = 3;
/// Proposals of this node waiting for their commit.
pub const CLUSTER_PROPOSALS_PENDING_MAX: usize = 4096;
/// Largest Raft state file read back at start-up (log, hard state, applied index).
pub const RAFT_LOG_FILE_SIZE_MAX_BYTES: u64 = 1 << 30;

// ---- forwarding between nodes (src/shard/forward.rs, src/cluster/link.rs) ---------------------

/// Bytes of publishes one shard may have on their way to other nodes (in the mesh to the
/// topology owner, in a link's data queue, not yet handed to the peer's socket). Past it the
/// shard's connections stop reading their sockets (`Shard::wait_for_room`) until the topology
/// owner hands the credit back, as RabbitMQ's credit flow: a slow or stuck peer slows its
/// publishers through TCP instead of growing memory. One message over the bound always passes
/// (a message larger than the credit must still get through).
pub const CLUSTER_FORWARD_CREDIT_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Data (forwarded publishes, confirms) queued on one outbound link and not yet written to its
/// socket. Credit keeps publishes under `SHARDS_MAX * CLUSTER_FORWARD_CREDIT_BYTES_MAX`; this
/// is the hard stop behind it (past it a publish is nacked, a confirm dropped: its publisher's
/// node times it out into a nack).
pub const CLUSTER_DATA_QUEUE_BYTES_MAX: usize = 256 * 1024 * 1024;
/// The payload of one data frame (the frame's kind byte is inside `CLUSTER_FRAME_BYTES_MAX`).
pub const CLUSTER_DATA_PAYLOAD_BYTES_MAX: usize = CLUSTER_FRAME_BYTES_MAX - 1;
/// One data record (a forwarded publish or delivery with its message), sent in pieces of at
/// most `CLUSTER_DATA_PAYLOAD_BYTES_MAX` and put together by the receiver up to this size: a
/// message of the default `--max-message-bytes` (128 MiB) with its properties and envelope.
/// A larger record is refused by the sender (a forwarded publish is nacked), and a peer whose
/// pieces add up to more is disconnected.
pub const CLUSTER_DATA_RECORD_BYTES_MAX: usize = MESSAGE_SIZE_DEFAULT_BYTES as usize + 1024 * 1024;
/// Envelope of one forwarded publish besides the message's own bytes (ids, lengths, the
/// queue list is counted per queue); a message whose record does not fit one inter-node frame
/// is nacked (not forwarded).
pub const CLUSTER_FORWARD_ENVELOPE_BYTES_MAX: usize = 4096;
/// Forwarded confirmed publishes waiting for their node's answer, per peer (on the
/// publisher's node), and received ones waiting for their queues' logs (on the queue's node).
/// Past it a publish is nacked at once.
pub const CLUSTER_FORWARD_PENDING_MAX: usize = 262_144;
/// A forwarded publish whose node has not answered within this time is nacked (the peer's
/// link back to us may be down while ours to it is up, so its confirms cannot come).
pub const CLUSTER_FORWARD_CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);
/// tx.commit waits at most this long for its publishes' confirms (each is bounded already:
/// forwarded ones by `CLUSTER_FORWARD_CONFIRM_TIMEOUT`, quorum ones by `QUORUM_COMMIT_TIMEOUT`;
/// this catches a log that stopped answering); past it the channel closes with 541.
pub const TX_COMMIT_CONFIRM_TIMEOUT: Duration = Duration::from_secs(20);
const _: () = assert!(
    TX_COMMIT_CONFIRM_TIMEOUT.as_millis() > CLUSTER_FORWARD_CONFIRM_TIMEOUT.as_millis(),
    "a commit outlasts the bound of each of its confirms"
);
/// How often the topology owner looks for forwarded publishes past the timeout.
pub const CLUSTER_FORWARD_SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// Requests on queues another node leads (counts, purge, delete, consume, get, cancel...)
/// waiting for their answer, on the asking node's gateway.
pub const CLUSTER_REMOTE_REQUESTS_PENDING_MAX: usize = 4096;
/// Consumers (and, separately, connections) of other nodes stood in for on this node's
/// queues; past it a remote basic.consume or basic.get is refused with 506 RESOURCE_ERROR.
pub const CLUSTER_REMOTE_CONSUMERS_MAX: usize = 65_536;
const _: () = assert!(CLUSTER_FORWARD_CREDIT_BYTES_MAX <= CLUSTER_DATA_QUEUE_BYTES_MAX);
const _: () = assert!(CLUSTER_DATA_RECORD_BYTES_MAX <= CLUSTER_DATA_QUEUE_BYTES_MAX);
const _: () = assert!(CLUSTER_FORWARD_ENVELOPE_BYTES_MAX < CLUSTER_FRAME_BYTES_MAX);
const _: () = assert!(
    CLUSTER_FORWARD_CONFIRM_TIMEOUT.as_millis() >= 2 * CLUSTER_PEER_SILENCE_MAX.as_millis(),
    "a link that went silent is noticed (and its publishes nacked) before they time out"
);

// ---- replicated quorum queues (src/cluster/group.rs, src/shard/quorum_group.rs) ---------------

/// A publish to a replicated quorum queue not committed by a majority of its group (and
/// applied on its leader) within this time is nacked; the entry may still commit later (a nack
/// of a message that was taken is allowed, an ack of one that was not never is).
pub const QUORUM_COMMIT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the topology owner looks for quorum publishes past `QUORUM_COMMIT_TIMEOUT`.
pub const QUORUM_COMMIT_SWEEP_INTERVAL: Duration = Duration::from_millis(500);
/// Confirmed publishes waiting for their quorum entries to commit, per node; past it a
/// publish to a replicated quorum queue is nacked at once.
pub const QUORUM_CONFIRMS_PENDING_MAX: usize = 262_144;
/// Largest entry proposed to a quorum group (an enqueue: the message's properties and body);
/// a larger publish is nacked. Leaves room in one inter-node frame for the envelope.
pub const QUORUM_ENTRY_BYTES_MAX: usize = CLUSTER_FRAME_BYTES_MAX - 64 * 1024;
/// A quorum group's log file (and its in-memory mirror) past this refuses new entries. With
/// compaction this is reached only when a snapshot cannot be taken (the queue's messages are
/// over `QUORUM_SNAPSHOT_DATA_BYTES_MAX`, or the snapshot file cannot be written).
pub const QUORUM_GROUP_LOG_BYTES_MAX: u64 = 512 * 1024 * 1024;
/// A node compacts a group's log once it holds more than this (`--quorum-compact-bytes`,
/// hidden, for tests) and half of this was applied since the last snapshot: it snapshots the
/// queue at its applied index and rewrites the log with the entries after it. A leader keeps the entries a live follower still lacks until the log
/// is past twice this; then that follower is sent the snapshot instead.
pub const QUORUM_GROUP_COMPACT_BYTES: u64 = 64 * 1024 * 1024;
/// The range `--quorum-compact-bytes` accepts: twice the largest stays under the log's bound,
/// so compaction runs before proposals are refused.
pub const QUORUM_GROUP_COMPACT_BYTES_MIN: u64 = 4096;
pub const QUORUM_GROUP_COMPACT_BYTES_MAX: u64 = QUORUM_GROUP_LOG_BYTES_MAX / 4;
/// Largest snapshot message (a Raft message holding one queue's snapshot) a peer may send, put
/// together from `Kind::GroupPart` frames; also the largest snapshot file read back. A peer
/// announcing more is disconnected before anything is allocated for it.
pub const QUORUM_SNAPSHOT_BYTES_MAX: usize = 128 * 1024 * 1024;
/// Largest snapshot data (the queue's messages, sealed): leaves room in a snapshot message for
/// Raft's metadata. A queue whose state is larger is not compacted (its log grows towards
/// `QUORUM_GROUP_LOG_BYTES_MAX`).
pub const QUORUM_SNAPSHOT_DATA_BYTES_MAX: usize = QUORUM_SNAPSHOT_BYTES_MAX - 64 * 1024;
/// Group messages received and not yet stepped, over all groups of a node (more are dropped:
/// Raft retransmits).
pub const QUORUM_GROUP_INBOX_MESSAGES_MAX: usize = 65_536;
/// Messages for groups not created here yet (their declare is committed but not yet applied
/// on this node), oldest dropped.
pub const QUORUM_GROUP_EARLY_MESSAGES_MAX: usize = 1024;
/// A declare of a replicated quorum queue waits at most this long for its group's first
/// leader before answering declare-ok (publishes before that are nacked).
pub const QUORUM_DECLARE_ELECTION_WAIT: Duration = Duration::from_secs(5);
/// A policy with `ha-mode` set in a cluster while queues it would have mirrored exist (ringmq
/// mirrors at declare only): the warning names at most this many of them (and counts all).
pub const UNMIRRORED_QUEUES_LOGGED_MAX: usize = 10;
/// A consumer of a replicated quorum queue whose leader was lost is attached to the next one;
/// a follower hears of the new leader a moment before it serves, so a refused attach is tried
/// again this many times, this far apart, before the consumer is cancelled.
pub const QUORUM_REATTACH_ATTEMPTS_MAX: u32 = 50;
pub const QUORUM_REATTACH_RETRY_INTERVAL: Duration = Duration::from_millis(100);
/// A quorum group's new leader records itself in the topology for the nodes outside its group
/// (`shard/quorum_members.rs`): tried this many times, this far apart, while it still leads
/// (the cluster's own Raft may be electing at the same moment, after the same kill).
pub const QUORUM_REPORT_ATTEMPTS_MAX: u32 = 40;
pub const QUORUM_REPORT_RETRY_INTERVAL: Duration = Duration::from_millis(250);
/// `add_member` / `delete_member` answer once the group's leader reports the configuration
/// asked for, or with an error after this (the change stays recorded and is applied once the
/// group can commit).
pub const QUORUM_MEMBERSHIP_WAIT: Duration = Duration::from_secs(15);
// The change is proposed (at most CLUSTER_PROPOSE_TIMEOUT), then waited for, within the mesh
// call that carries it to the topology owner and the HTTP request ringmqctl makes.
const _: () = assert!(
    QUORUM_MEMBERSHIP_WAIT.as_millis() + CLUSTER_PROPOSE_TIMEOUT.as_millis()
        < RPC_TIMEOUT.as_millis()
);
const _: () = assert!(RPC_TIMEOUT.as_millis() <= CTL_REQUEST_TIMEOUT.as_millis());
const _: () = assert!(QUORUM_ENTRY_BYTES_MAX as u64 <= QUORUM_GROUP_LOG_BYTES_MAX);
const _: () = assert!(
    QUORUM_COMMIT_TIMEOUT.as_millis() < CLUSTER_FORWARD_CONFIRM_TIMEOUT.as_millis(),
    "the leader's nack reaches a forwarding node before its own timeout"
);
const _: () = assert!(QUORUM_GROUP_LOG_BYTES_MAX <= RAFT_LOG_FILE_SIZE_MAX_BYTES);
const _: () = assert!(QUORUM_GROUP_COMPACT_BYTES_MIN <= QUORUM_GROUP_COMPACT_BYTES);
const _: () = assert!(QUORUM_GROUP_COMPACT_BYTES <= QUORUM_GROUP_COMPACT_BYTES_MAX);
const _: () = assert!(
    2 * QUORUM_GROUP_COMPACT_BYTES_MAX < QUORUM_GROUP_LOG_BYTES_MAX,
    "a log past twice the threshold is compacted before proposals are refused"
);
const _: () = assert!(QUORUM_ENTRY_BYTES_MAX < QUORUM_SNAPSHOT_DATA_BYTES_MAX);
const _: () = assert!(QUORUM_SNAPSHOT_DATA_BYTES_MAX < QUORUM_SNAPSHOT_BYTES_MAX);
const _: () = assert!(
    QUORUM_SNAPSHOT_BYTES_MAX / (CLUSTER_FRAME_BYTES_MAX - 64)
        < CLUSTER_PEER_QUEUE_MESSAGES_MAX / 2,
    "the pieces of one snapshot fit a peer's queue with room to spare"
);
