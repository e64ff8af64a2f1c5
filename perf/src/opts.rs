//! Command-line options shared by every scenario (each scenario reads the ones it needs).

use clap::Args;

use crate::error::{PerfError, Result};
use crate::limits::*;
use crate::topology::QueueKind;

#[derive(Args, Debug, Clone)]
pub struct Opts {
    /// Broker URL, e.g. amqp://guest:guest@127.0.0.1:5680/%2f
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    pub url: String,
    /// Seconds of measured load per run (per rate when sweeping).
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Seconds at the start of a latency run left out of the histogram.
    #[arg(long, default_value_t = 1)]
    pub warmup: u64,
    /// Body size in bytes (at least 8 carry the send-time stamp).
    #[arg(long, default_value_t = 16)]
    pub size: usize,
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
    #[arg(long, default_value_t = 1)]
    pub consumers: usize,
    /// Queues (fanout: one consumer per queue; connections: shared by the connections).
    #[arg(long, default_value_t = 1)]
    pub queues: usize,
    /// Durable queues/exchanges and delivery-mode 2 messages.
    #[arg(long)]
    pub persistent: bool,
    /// Quorum queues (`x-queue-type: quorum`, durable): with --persistent or without, as
    /// RabbitMQ logs every message of a quorum queue.
    #[arg(long)]
    pub quorum: bool,
    /// Publisher confirms with at most this many unconfirmed messages; 0 = no confirms.
    #[arg(long, default_value_t = 0)]
    pub confirm: u64,
    /// basic.qos prefetch count; 0 = unlimited.
    #[arg(long, default_value_t = 1000)]
    pub prefetch: u16,
    /// Consume with no-ack.
    #[arg(long)]
    pub auto_ack: bool,
    /// Manual ack: one (multiple) ack per this many deliveries.
    #[arg(long, default_value_t = 1)]
    pub multiple_ack: u64,
    /// Throughput scenarios: producers pause while more than this many messages are in flight
    /// end to end (keeps the queue bounded so the rate measured is sustainable); 0 = off.
    #[arg(long, default_value_t = 100_000)]
    pub max_backlog: u64,
    /// Open-loop rate in msg/s (latency, pingpong; per connection for `connections`).
    #[arg(long, default_value_t = 10_000.0)]
    pub rate: f64,
    /// Several rates, comma separated, run one after the other.
    #[arg(long, value_delimiter = ',')]
    pub sweep: Vec<f64>,
    /// Topic scenario: distinct binding patterns.
    #[arg(long, default_value_t = 10_000)]
    pub bindings: usize,
    /// Connections scenario: connections, each publishing and consuming.
    #[arg(long, default_value_t = 100)]
    pub connections: usize,
    /// Backlog scenario: messages to queue before draining.
    #[arg(long, default_value_t = 1_000_000)]
    pub messages: u64,
    /// Confirm scenario: instead of an open-loop rate, publish as fast as a window of --confirm
    /// unconfirmed messages allows; latency counts from the actual send time.
    #[arg(long)]
    pub max_rate: bool,
    /// Confirm scenario: the device's 4 KiB write+fdatasync p99 (µs, from `disk-floor`); the
    /// report then carries confirm p99 / this.
    #[arg(long)]
    pub disk_floor_us_p99: Option<f64>,
    /// Fill scenario: the queue to declare and leave filled (it is not deleted).
    #[arg(long, default_value = "perf-fill")]
    pub queue: String,
    /// Latency scenario on ringmq: the shards of the setup connection (which declares the
    /// queue, so the queue's shard), the producer and the consumer, e.g. `0,0,1`. Connections
    /// are reopened until the broker reports that shard.
    #[arg(long, value_delimiter = ',')]
    pub place: Vec<u32>,
    /// The broker's pid: its CPU use and (backlog) RSS are reported.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Throughput and latency: poll this management API URL while the load runs, e.g.
    /// http://guest:guest@127.0.0.1:15672/api/queues (poll count and latency are reported).
    #[arg(long)]
    pub poll_api: Option<String>,
    /// With --poll-api: this many pollers, each with its own HTTP connection.
    #[arg(long, default_value_t = 10)]
    pub pollers: usize,
    /// With --poll-api: each poller asks once per this many milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub poll_interval_ms: u64,
}

impl Opts {
    /// What the scenario's queues are declared as.
    pub fn queue_kind(&self) -> QueueKind {
        match (self.quorum, self.persistent) {
            (true, _) => QueueKind::Quorum,
            (false, true) => QueueKind::Durable,
            (false, false) => QueueKind::Transient,
        }
    }

    pub fn validate(&self) -> Result<()> {
        let check = |ok: bool, what: &str| {
            if ok {
                Ok(())
            } else {
                Err(PerfError::Args(what.to_string()))
            }
        };
        check(
            (1..=DURATION_SECONDS_MAX).contains(&self.duration),
            "--duration out of range",
        )?;
        check(
            self.warmup < self.duration,
            "--warmup must be below --duration",
        )?;
        check(self.size <= MESSAGE_SIZE_MAX_BYTES, "--size too large")?;
        check((1..=PRODUCERS_MAX).contains(&self.producers), "--producers")?;
        check((1..=CONSUMERS_MAX).contains(&self.consumers), "--consumers")?;
        check((1..=QUEUES_MAX).contains(&self.queues), "--queues")?;
        check(
            (1..=CONNECTIONS_MAX).contains(&self.connections),
            "--connections",
        )?;
        check((1..=BINDINGS_MAX).contains(&self.bindings), "--bindings")?;
        check(
            (1..=BACKLOG_MESSAGES_MAX).contains(&self.messages),
            "--messages",
        )?;
        check(self.multiple_ack >= 1, "--multiple-ack must be at least 1")?;
        check(
            self.auto_ack || self.prefetch == 0 || self.multiple_ack <= u64::from(self.prefetch),
            "--multiple-ack above --prefetch would stall the consumer",
        )?;
        check(
            self.sweep.len() <= SWEEP_RATES_MAX,
            "--sweep has too many rates",
        )?;
        let rates_ok = std::iter::once(self.rate)
            .chain(self.sweep.iter().copied())
            .all(|r| r.is_finite() && r > 0.0);
        check(rates_ok, "rates must be positive")?;
        check(
            self.disk_floor_us_p99
                .is_none_or(|us| us.is_finite() && us > 0.0),
            "--disk-floor-us-p99 must be positive",
        )?;
        check((1..=POLLERS_MAX).contains(&self.pollers), "--pollers")?;
        check(
            (POLL_INTERVAL_MS_MIN..=POLL_INTERVAL_MS_MAX).contains(&self.poll_interval_ms),
            "--poll-interval-ms out of range",
        )?;
        check(
            self.place.is_empty() || self.place.len() == 3,
            "--place takes three shards: queue,producer,consumer",
        )?;
        Ok(())
    }

    /// The shard wanted for connection `index` of `--place` (0 setup, 1 producer, 2 consumer).
    pub fn placed(&self, index: usize) -> Option<u32> {
        self.place.get(index).copied()
    }

    /// The rates a latency-style scenario runs: the sweep, or the single rate.
    pub fn rates(&self) -> Vec<f64> {
        if self.sweep.is_empty() {
            vec![self.rate]
        } else {
            self.sweep.clone()
        }
    }
}
