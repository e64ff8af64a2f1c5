//! WAL micro-benchmarks: append + wait_durable of 1 KiB records (alone and in groups of 64),
//! and recovery throughput. Run: `cargo bench --bench wal`. Real files under the temp dir.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use glommio::{LocalExecutor, LocalExecutorBuilder, Placement};
use ringmq::storage::{EnqueueRecord, Wal, WalOptions};

const BODY_BYTES: usize = 1024;
const BATCH_RECORDS: u64 = 64;
const RECOVERY_RECORDS: u64 = 24 * 1024;

fn executor() -> LocalExecutor {
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(1 << 20)
        .make()
        .expect("executor")
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ringmq-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn options(dir: &Path) -> WalOptions {
    WalOptions::new(dir.to_path_buf(), 0, 64 << 20, 4 << 20)
}

fn record<'a>(message: u64, body: &'a [u8]) -> EnqueueRecord<'a> {
    EnqueueRecord {
        queue: 1,
        message,
        exchange: "amq.direct",
        routing_key: "bench",
        properties: &[0x10, 0x00, 2],
        body,
    }
}

/// Opens a fresh log, runs `iters` rounds of `per_round` appends + one wait, returns the time.
fn timed_rounds(ex: &LocalExecutor, name: &str, iters: u64, per_round: u64) -> Duration {
    let dir = temp_dir(name);
    let opts = options(&dir);
    let elapsed = ex.run(async move {
        let (wal, _) = Wal::open(opts).await.expect("open");
        let body = vec![7u8; BODY_BYTES];
        let mut message = 0;
        let started = Instant::now();
        for _ in 0..iters {
            let mut last = 0;
            for _ in 0..per_round {
                last = wal
                    .append_enqueue(&record(message, &body))
                    .expect("append")
                    .0;
                message += 1;
            }
            wal.wait_durable(last).await.expect("durable");
        }
        let elapsed = started.elapsed();
        wal.close().await.expect("close");
        elapsed
    });
    let _ = std::fs::remove_dir_all(&dir);
    elapsed
}

fn append_wait(c: &mut Criterion) {
    let ex = executor();
    let mut g = c.benchmark_group("wal_append_wait_durable_1k");
    g.throughput(Throughput::Elements(1));
    g.bench_function("single", |b| {
        b.iter_custom(|iters| timed_rounds(&ex, "single", iters, 1))
    });
    g.throughput(Throughput::Elements(BATCH_RECORDS));
    g.bench_function("batch_64", |b| {
        b.iter_custom(|iters| timed_rounds(&ex, "batch", iters, BATCH_RECORDS))
    });
    g.finish();
}

fn recovery(c: &mut Criterion) {
    let ex = executor();
    let dir = temp_dir("recovery");
    let opts = options(&dir);
    let setup = opts.clone();
    let reopen = opts.clone();
    let log_bytes = ex.run(async move {
        let (wal, _) = Wal::open(setup).await.expect("open");
        let body = vec![7u8; BODY_BYTES];
        for m in 0..RECOVERY_RECORDS {
            if let Err(e) = wal.append_enqueue(&record(m, &body)) {
                panic!("append {m}: {e}");
            }
            if m % 1024 == 1023 {
                wal.wait_durable(m + 1).await.expect("durable");
            }
        }
        wal.close().await.expect("close");
        let (wal, _) = Wal::open(reopen).await.expect("reopen");
        wal.stats().bytes_recovered
    });
    let mut g = c.benchmark_group("wal_recovery");
    g.throughput(Throughput::Bytes(log_bytes));
    g.sample_size(10);
    g.bench_function("open_replay", |b| {
        b.iter_custom(|iters| {
            let opts = opts.clone();
            ex.run(async move {
                let started = Instant::now();
                for _ in 0..iters {
                    let (wal, rec) = Wal::open(opts.clone()).await.expect("open");
                    assert_eq!(rec.enqueues.len() as u64, RECOVERY_RECORDS);
                    drop(wal);
                }
                started.elapsed()
            })
        })
    });
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, append_wait, recovery);
criterion_main!(benches);
