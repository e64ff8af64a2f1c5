//! Recovery measurements: `fill` leaves a durable queue full of confirmed persistent messages
//! (compare.sh then kills the broker with SIGKILL and restarts it), and `recovery-report`
//! reads the restarted broker's "messages recovered" log lines (one per shard, from
//! src/shard/storage.rs `recover_messages`) into replay speed and disk bytes per message.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;

use crate::client::Conn;
use crate::clock::now_ns;
use crate::error::{PerfError, Result};
use crate::limits::{
    BACKLOG_PHASE_TIMEOUT, BACKLOG_POLL_INTERVAL, PROGRESS_INTERVAL, RECOVERY_LOG_LINES_MAX,
};
use crate::opts::Opts;
use crate::progress::Progress;
use crate::report::Report;
use crate::scenarios::{join, spawn_worker};
use crate::topology;
use crate::url::AmqpUrl;
use crate::workers::{run_producer, ProducerSpec, Shared};

/// Declares `--queue` and publishes `--messages` into it, with confirms when `--confirm` is
/// set; the queue is left in place.
pub fn fill(opts: &Opts) -> Result<Vec<Report>> {
    let url = AmqpUrl::parse(&opts.url)?;
    let mut setup = Conn::open(&url)?;
    topology::declare_queue(&mut setup, &opts.queue, opts.queue_kind())?;
    let mut producer = Conn::open(&url)?;
    if opts.confirm > 0 {
        topology::confirm_select(&mut producer)?;
    }
    let shared = std::sync::Arc::new(Shared::default());
    let started = Instant::now();
    let deadline = started + BACKLOG_PHASE_TIMEOUT;
    let spec = ProducerSpec {
        exchange: String::new(),
        routing_keys: vec![opts.queue.clone()],
        size_bytes: opts.size,
        persistent: opts.persistent,
        confirm_window: opts.confirm,
        rate: None,
        start_ns: now_ns(),
        end: deadline,
        count: Some(opts.messages),
        backlog_max: None,
        fanout_factor: 1,
    };
    let handle = spawn_worker(&shared, move |s| run_producer(producer, spec, s));
    let mut progress = Progress::new("fill", &shared);
    while !handle.is_finished() {
        std::thread::sleep(BACKLOG_POLL_INTERVAL);
        progress.tick_every(PROGRESS_INTERVAL);
    }
    let produced = join(handle)?;
    let seconds = started.elapsed().as_secs_f64().max(1e-9);
    progress.finish();
    let depth = topology::queue_depth(&mut setup, &opts.queue)?;
    setup.close();
    let mut report = Report::new("fill", format!("queue={}", opts.queue));
    report.push("fill_msgs_per_s", produced.published as f64 / seconds);
    report.push("published", produced.published as f64);
    report.push("confirmed", produced.confirmed as f64);
    report.push("nacked", produced.nacked as f64);
    report.push("queue_depth", f64::from(depth));
    if produced.published < opts.messages
        || (opts.confirm > 0 && produced.confirmed < produced.published)
    {
        return Err(PerfError::Timeout(
            "every message to be published and confirmed",
        ));
    }
    Ok(vec![report])
}

#[derive(Args, Debug, Clone)]
pub struct RecoveryOpts {
    /// The broker's log (stderr) from the restart.
    #[arg(long)]
    pub log: PathBuf,
    /// `du -sb` of the data directory before the kill.
    #[arg(long)]
    pub data_dir_bytes: Option<u64>,
    /// Messages that were stored (confirmed) before the kill.
    #[arg(long)]
    pub stored_messages: Option<u64>,
    /// Milliseconds from the restart to the broker's ready line.
    #[arg(long)]
    pub ready_ms: Option<u64>,
}

/// One shard's "messages recovered" line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardRecovery {
    pub messages: u64,
    pub bytes: u64,
    pub log_bytes: u64,
    pub ms: u64,
}

/// Parses one log line; None when it is not a "messages recovered" line. Colour codes (the
/// tracing formatter adds them even when writing to a file) are skipped.
pub fn parse_recovery_line(line: &str) -> Option<std::result::Result<ShardRecovery, String>> {
    let plain = strip_ansi(line);
    if !plain.contains("messages recovered") {
        return None;
    }
    let field = |name: &str| -> std::result::Result<u64, String> {
        plain
            .split_whitespace()
            .find_map(|token| token.strip_prefix(name)?.strip_prefix('='))
            .and_then(|value| value.parse().ok())
            .ok_or_else(|| format!("no numeric {name}= in: {plain}"))
    };
    Some((|| {
        Ok(ShardRecovery {
            messages: field("messages")?,
            bytes: field("bytes")?,
            log_bytes: field("log_bytes")?,
            ms: field("ms")?,
        })
    })())
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC '[' parameters, ending at the first letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

pub fn recovery_report(opts: &RecoveryOpts) -> Result<Report> {
    let text = std::fs::read_to_string(&opts.log)?;
    let mut shards = Vec::new();
    for line in text.lines().take(RECOVERY_LOG_LINES_MAX) {
        if let Some(parsed) = parse_recovery_line(line) {
            shards.push(parsed.map_err(PerfError::Unexpected)?);
        }
    }
    if shards.is_empty() {
        return Err(PerfError::Unexpected(format!(
            "no \"messages recovered\" line in {} (is the broker logging at info?)",
            opts.log.display()
        )));
    }
    Ok(summarize(&shards, opts))
}

/// Shards recover in parallel, each on its own core: sums over shards, the slowest one's time.
fn summarize(shards: &[ShardRecovery], opts: &RecoveryOpts) -> Report {
    let messages: u64 = shards.iter().map(|s| s.messages).sum();
    let body_bytes: u64 = shards.iter().map(|s| s.bytes).sum();
    let log_bytes: u64 = shards.iter().map(|s| s.log_bytes).sum();
    let ms = shards.iter().map(|s| s.ms).max().unwrap_or(0);
    let seconds = ms.max(1) as f64 / 1000.0;
    let mut report = Report::new("recovery", format!("shards={}", shards.len()));
    report.push("messages_recovered", messages as f64);
    report.push("body_bytes_recovered", body_bytes as f64);
    report.push("log_bytes_replayed", log_bytes as f64);
    report.push("recovery_ms_slowest_shard", ms as f64);
    report.push("replay_mb_per_s", log_bytes as f64 / 1e6 / seconds);
    report.push("recovered_msgs_per_s", messages as f64 / seconds);
    if let Some(ms) = opts.ready_ms {
        report.push("restart_to_ready_ms", ms as f64);
    }
    if let Some(bytes) = opts.data_dir_bytes {
        report.push("data_dir_bytes", bytes as f64);
        let stored = opts.stored_messages.unwrap_or(messages).max(1);
        report.push("disk_bytes_per_msg", bytes as f64 / stored as f64);
        if body_bytes > 0 && messages > 0 {
            let body_per_message = body_bytes as f64 / messages as f64;
            report.push(
                "disk_bytes_per_body_byte",
                bytes as f64 / stored as f64 / body_per_message,
            );
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_coloured_lines() {
        let plain = "2026-11-21T12:00:00Z  INFO ringmq::shard::storage: messages recovered shard=1 messages=100000 bytes=102400000 log_bytes=110000000 ms=850";
        let parsed = parse_recovery_line(plain).unwrap().unwrap();
        assert_eq!(
            parsed,
            ShardRecovery {
                messages: 100_000,
                bytes: 102_400_000,
                log_bytes: 110_000_000,
                ms: 850
            }
        );
        let coloured = "\u{1b}[2m2026\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m \u{1b}[2mringmq::shard::storage\u{1b}[0m\u{1b}[2m:\u{1b}[0m messages recovered \u{1b}[3mshard\u{1b}[0m\u{1b}[2m=\u{1b}[0m0 \u{1b}[3mmessages\u{1b}[0m\u{1b}[2m=\u{1b}[0m5 \u{1b}[3mbytes\u{1b}[0m\u{1b}[2m=\u{1b}[0m50 \u{1b}[3mlog_bytes\u{1b}[0m\u{1b}[2m=\u{1b}[0m4096 \u{1b}[3mms\u{1b}[0m\u{1b}[2m=\u{1b}[0m3";
        let parsed = parse_recovery_line(coloured).unwrap().unwrap();
        assert_eq!((parsed.messages, parsed.log_bytes, parsed.ms), (5, 4096, 3));
        assert!(parse_recovery_line("wal recovered shard=0 messages=5 bytes=1 ms=2").is_none());
        assert!(parse_recovery_line("messages recovered shard=0 messages=x")
            .unwrap()
            .is_err());
    }

    #[test]
    fn sums_shards_and_takes_the_slowest() {
        let shards = [
            ShardRecovery {
                messages: 100,
                bytes: 102_400,
                log_bytes: 2_000_000,
                ms: 1000,
            },
            ShardRecovery {
                messages: 100,
                bytes: 102_400,
                log_bytes: 2_000_000,
                ms: 500,
            },
        ];
        let opts = RecoveryOpts {
            log: PathBuf::new(),
            data_dir_bytes: Some(400_000),
            stored_messages: Some(200),
            ready_ms: Some(1200),
        };
        let r = summarize(&shards, &opts);
        assert_eq!(r.get("replay_mb_per_s"), Some(4.0));
        assert_eq!(r.get("recovered_msgs_per_s"), Some(200.0));
        assert_eq!(r.get("disk_bytes_per_msg"), Some(2000.0));
        assert_eq!(r.get("recovery_ms_slowest_shard"), Some(1000.0));
        assert_eq!(r.label, "shards=2");
    }
}
