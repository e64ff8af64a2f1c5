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
/// Time a client has to finish the opening handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time we wait for connection.close-ok / channel.close-ok after closing.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);
/// Bytes read from a socket per read call; the read buffer grows only to hold one whole frame.
pub const READ_CHUNK_BYTES: usize = 64 * 1024;
/// When a connection's unsent output exceeds this, its reader stops reading (publishers on a
/// connection that cannot keep up with its own deliveries are slowed by TCP back-pressure).
pub const OUTBOX_SOFT_MAX_BYTES: usize = 4 * 1024 * 1024;
/// Deliveries one dispatch pass may produce before yielding to other work.
pub const DISPATCH_BATCH_MAX: usize = 256;
/// Batches in flight on one mesh link (SPSC channel capacity).
pub const MESH_LINK_CAPACITY_BATCHES: usize = 256;
/// Messages waiting in one shard's outbox to a peer before publishers on this shard pause.
pub const MESH_OUTBOX_SOFT_MAX_MESSAGES: usize = 16_384;
/// Messages in one mesh batch; a larger outbox is sent as several batches.
pub const MESH_BATCH_MAX_MESSAGES: usize = 1024;
/// Longest a cross-shard request may take before it is answered with INTERNAL_ERROR.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(30);
/// io_uring registered-buffer memory per executor at most; small, because `ulimit -l` is often
/// 8 MiB. With many shards each gets less (`shard::runtime::executor_io_memory_bytes`).
pub const EXECUTOR_IO_MEMORY_BYTES: usize = 1 << 20;
/// The least registered-buffer memory an executor is given: glommio's own floor (it rounds
/// anything smaller up to this).
pub const EXECUTOR_IO_MEMORY_BYTES_MIN: usize = 64 * 1024;
/// Rings per glommio executor (main, latency, poll), each registering the executor's io memory
/// again, and each registration counts against `RLIMIT_MEMLOCK`.
pub const EXECUTOR_IO_RINGS: usize = 3;
/// io_uring submission queue depth per ring.
pub const EXECUTOR_RING_DEPTH: usize = 256;
/// Connections per shard; more are refused at accept.
pub const CONNECTIONS_PER_SHARD_MAX: usize = 16_384;
/// Pending connections the kernel queues per listening socket.
pub const LISTEN_BACKLOG: i32 = 1024;
/// Consumers per channel.
pub const CONSUMERS_PER_CHANNEL_MAX: usize = 4096;
/// Unconfirmed publishes per channel (waiting for other shards or the log) before the session
/// stops reading that connection until some are confirmed.
pub const PENDING_CONFIRMS_PER_CHANNEL_MAX: usize = 65_536;
/// Messages and acks buffered in one transaction.
pub const TX_OPERATIONS_MAX: usize = 1_000_000;
/// Bytes of messages (as allocated: body, properties, names) buffered in one transaction; the
/// publish that would pass it closes the channel with 406, as `TX_OPERATIONS_MAX` does. The
/// first message of a transaction always goes in (it is bounded by `--max-message-bytes`).
pub const TX_BYTES_MAX: usize = 512 * 1024 * 1024;

// A transaction holds at least as much as the largest message the broker can be set to accept.
const _: () = assert!(TX_BYTES_MAX as u64 >= MESSAGE_SIZE_MAX_BYTES);

const _: () = assert!(
    FRAME_MAX_BYTES >= 4096,
    "the spec's minimum frame_max is 4096"
);
const _: () = assert!(READ_CHUNK_BYTES as u32 <= FRAME_MAX_BYTES);
const _: () = assert!(MESH_BATCH_MAX_MESSAGES <= MESH_OUTBOX_SOFT_MAX_MESSAGES);
const _: () = assert!(
    WAL_BATCH_SOFT_BYTES + WAL_PART_BODY_BYTES + WAL_RECORD_OVERHEAD_MAX_BYTES
        < WAL_WRITE_BUFFER_BYTES
);
const _: () = assert!(EXECUTOR_IO_MEMORY_BYTES_MIN <= EXECUTOR_IO_MEMORY_BYTES);
const _: () = assert!((WAL_WRITE_BUFFER_BYTES as u64) < WAL_SEGMENT_SIZE_BYTES - 4096);
const _: () = assert!(MESSAGE_SIZE_MIN_BYTES <= MESSAGE_SIZE_DEFAULT_BYTES);
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
/// Most topic permissions (one per exchange) a user may hold in one vhost.
pub const TOPIC_PERMISSIONS_PER_USER_VHOST_MAX: usize = 1024;

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
/// Messages one `POST .../get` may take (each is held in memory for the response).
pub const MANAGEMENT_GET_COUNT_MAX: usize = 10_000;
/// Operations one definitions import may hold (users, vhosts, permissions, exchanges,
/// queues, bindings together).
pub const MANAGEMENT_IMPORT_OPERATIONS_MAX: usize = 1_000_000;
/// Largest `--load-definitions` file read at start-up (read whole, then parsed): a management
/// import body is bounded the same way.
pub const DEFINITIONS_FILE_BYTES_MAX: u64 = MANAGEMENT_REQUEST_BODY_BYTES_MAX as u64;

const _: () = assert!(
    MANAGEMENT_HEADER_BUFFER_BYTES >= 8192,
    "hyper's max_buf_size floor"
);
const _: () = assert!(MANAGEMENT_PAGE_SIZE_DEFAULT <= MANAGEMENT_PAGE_SIZE_MAX);
