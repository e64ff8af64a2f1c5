//! Mesh hop micro-benchmarks: two executors pinned to two cores exchanging batches over the
//! bounded glommio shared channels the mesh is built from (`src/shard/mesh.rs`).
//! - round trip: one batch of one entry there and back (latency of a cross-shard request);
//! - throughput: batches of 256 entries one way, as publishes to another shard travel.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use glommio::channels::shared_channel;
use glommio::{LocalExecutorBuilder, Placement};

const CAPACITY: usize = 256;

/// How long an idle executor spins before parking: RINGMQ_BENCH_SPIN_US (default 0).
fn spin() -> Duration {
    let micros = std::env::var("RINGMQ_BENCH_SPIN_US")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Duration::from_micros(micros)
}
const BATCH: usize = 256;

fn cores() -> (usize, usize) {
    let ids: Vec<usize> = core_affinity::get_core_ids()
        .map(|ids| ids.into_iter().map(|c| c.id).collect())
        .unwrap_or_default();
    match ids.as_slice() {
        [a, b, ..] => (*a, *b),
        [a] => (*a, *a),
        [] => (0, 0),
    }
}

/// Runs `iterations` round trips of one-entry batches; returns the elapsed time.
fn round_trips(iterations: u64) -> Duration {
    let (core_a, core_b) = cores();
    let (to_b, from_a) = shared_channel::new_bounded::<Vec<u64>>(CAPACITY);
    let (to_a, from_b) = shared_channel::new_bounded::<Vec<u64>>(CAPACITY);
    let echo = LocalExecutorBuilder::new(Placement::Fixed(core_b))
        .io_memory(1 << 20)
        .spin_before_park(spin())
        .spawn(move || async move {
            let rx = from_a.connect().await;
            let tx = to_a.connect().await;
            while let Some(batch) = rx.recv().await {
                if tx.send(batch).await.is_err() {
                    break;
                }
            }
        })
        .expect("echo executor");
    let driver = LocalExecutorBuilder::new(Placement::Fixed(core_a))
        .io_memory(1 << 20)
        .spin_before_park(spin())
        .spawn(move || async move {
            let tx = to_b.connect().await;
            let rx = from_b.connect().await;
            let started = Instant::now();
            for i in 0..iterations {
                let _ = tx.send(vec![i]).await;
                let _ = rx.recv().await;
            }
            started.elapsed()
        })
        .expect("driver executor");
    let elapsed = driver.join().expect("driver");
    let _ = echo.join();
    elapsed
}

/// Sends `iterations` batches of BATCH entries one way; returns the elapsed time.
fn one_way(iterations: u64) -> Duration {
    let (core_a, core_b) = cores();
    let (tx, rx) = shared_channel::new_bounded::<Vec<u64>>(CAPACITY);
    let sink = LocalExecutorBuilder::new(Placement::Fixed(core_b))
        .io_memory(1 << 20)
        .spin_before_park(spin())
        .spawn(move || async move {
            let rx = rx.connect().await;
            let mut entries = 0u64;
            while let Some(batch) = rx.recv().await {
                entries += batch.len() as u64;
            }
            entries
        })
        .expect("sink executor");
    let source = LocalExecutorBuilder::new(Placement::Fixed(core_a))
        .io_memory(1 << 20)
        .spin_before_park(spin())
        .spawn(move || async move {
            let tx = tx.connect().await;
            let started = Instant::now();
            for i in 0..iterations {
                let _ = tx.send(vec![i; BATCH]).await;
            }
            drop(tx);
            started.elapsed()
        })
        .expect("source executor");
    let elapsed = source.join().expect("source");
    let _ = sink.join();
    elapsed
}

fn mesh(c: &mut Criterion) {
    let mut group = c.benchmark_group("mesh");
    group.sample_size(10);
    group.throughput(Throughput::Elements(1));
    group.bench_function("round trip, 1-entry batch", |b| b.iter_custom(round_trips));
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("one way, 256-entry batches", |b| b.iter_custom(one_way));
    group.finish();
}

criterion_group!(benches, mesh);
criterion_main!(benches);
