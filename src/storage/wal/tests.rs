//! WAL tests on real files (O_DIRECT through glommio) under the system temp dir.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use glommio::{LocalExecutorBuilder, Placement};

use super::record::{self, BadRecord, RecordKind};
use super::segment::{self, SEGMENT_HEADER_BYTES};
use super::*;
use crate::limits::{WAL_COMPACT_AGE_SEGMENTS_MIN, WAL_COMPACT_PINNED_SEGMENTS_MIN};

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("ringmq-wal-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run<F, Fut>(f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(f)
        .expect("spawn executor")
        .join()
        .expect("join executor");
}

fn opts(dir: &Path, segment_size_bytes: u64) -> WalOptions {
    WalOptions::new(
        dir.to_path_buf(),
        0,
        segment_size_bytes,
        (64 * 1024).min(segment_size_bytes as usize / 2),
    )
}

fn body(i: u64) -> Vec<u8> {
    (0..1000u64).map(|j| (i * 31 + j) as u8).collect()
}

fn enqueue(wal: &Wal, queue: u64, message: u64) -> (Lsn, RecordPos) {
    let b = body(message);
    let r = EnqueueRecord {
        queue,
        message,
        exchange: "amq.direct",
        routing_key: "rk",
        properties: &[1, 2, 3],
        body: &b,
    };
    wal.append_enqueue(&r).expect("append")
}

fn seg_path(dir: &Path, id: u64) -> PathBuf {
    segment::segment_path(dir, 0, id)
}

fn check_recovered(rec: &Recovered, expected: &[u64]) {
    let got: Vec<u64> = rec.enqueues.iter().map(|e| e.record.message).collect();
    assert_eq!(got, expected);
    for e in &rec.enqueues {
        assert_eq!(e.record.body.as_ref(), body(e.record.message).as_slice());
        assert_eq!(e.record.exchange, "amq.direct");
        assert_eq!(e.record.properties.as_ref(), &[1, 2, 3]);
    }
}

#[test]
fn encode_decode_round_trip() {
    let mut scratch = rkyv::util::AlignedVec::new();
    let r = EnqueueRecord {
        queue: 7,
        message: 9,
        exchange: "ex",
        routing_key: "a.b.c",
        properties: b"props",
        body: b"hello body",
    };
    record::serialize_enqueue(&r, &mut scratch).expect("serialize");
    let mut out: Vec<u8> = Vec::new();
    record::encode_into(&mut out, RecordKind::Enqueue, 5, 4, &[&scratch]);
    assert_eq!(out.len() % 16, 0);
    let mut aligned = rkyv::util::AlignedVec::<16>::new();
    aligned.extend_from_slice(&out);
    let (h, payload) = record::decode(&aligned, 1 << 20).expect("decode");
    assert_eq!((h.lsn, h.batch_lsn, h.kind), (5, 4, RecordKind::Enqueue));
    assert_eq!(h.record_bytes(), out.len());
    let owned = record::to_owned_enqueue(record::access_enqueue(payload).expect("access"));
    assert_eq!(owned.queue, 7);
    assert_eq!(owned.message, 9);
    assert_eq!(owned.exchange, "ex");
    assert_eq!(owned.routing_key, "a.b.c");
    assert_eq!(owned.properties.as_ref(), b"props");
    assert_eq!(owned.body.as_ref(), b"hello body");

    let settle = SettleRecord {
        queue: 3,
        messages: &[1, 2, 99],
    };
    record::serialize_settle(&settle, &mut scratch).expect("serialize");
    let a = record::access_settle(&scratch).expect("access");
    let msgs: Vec<u64> = a.messages.iter().map(|m| m.to_native()).collect();
    assert_eq!((a.queue.to_native(), msgs), (3, vec![1, 2, 99]));
}

#[test]
fn crc_detects_every_single_bit_flip() {
    let mut out = Vec::new();
    record::encode_into(
        &mut out,
        RecordKind::Topology,
        77,
        70,
        &[b"some topology", b" payload!"],
    );
    let len = record::RECORD_HEADER_BYTES + 22;
    assert!(record::decode(&out, 4096).is_ok());
    for bit in 0..len * 8 {
        let mut c = out.clone();
        c[bit / 8] ^= 1 << (bit % 8);
        let r = record::decode(&c, 4096);
        assert!(r.is_err(), "flip of bit {bit} not detected");
    }
    assert_eq!(
        record::decode(&out[..40], 4096).err(),
        Some(BadRecord::Truncated)
    );
}

#[test]
fn recovers_records_across_segments_and_reads_back() {
    let dir = TempDir::new("multi");
    let d = dir.0.clone();
    run(move || async move {
        let (wal, rec) = Wal::open(opts(&d, 64 * 1024)).await.expect("open");
        assert!(rec.enqueues.is_empty());
        let mut positions = Vec::new();
        for m in 0..200 {
            let (lsn, pos) = enqueue(&wal, 1, m);
            positions.push(pos);
            if m % 7 == 0 {
                wal.wait_durable(lsn).await.expect("durable");
            }
        }
        let topo = wal.append_topology(b"declare q1").expect("topology");
        wal.wait_durable(topo).await.expect("durable");
        let got = wal.read_enqueue(positions[150]).await.expect("read back");
        assert_eq!(got.body.as_ref(), body(150).as_slice());
        assert!(wal.stats().segments_live >= 3, "{:?}", wal.stats());
        wal.close().await.expect("close");

        let (wal, rec) = Wal::open(opts(&d, 64 * 1024)).await.expect("reopen");
        check_recovered(&rec, &(0..200).collect::<Vec<_>>());
        assert_eq!(rec.topology.len(), 1);
        assert_eq!(rec.topology[0].payload.as_ref(), b"declare q1");
        assert_eq!(rec.enqueues[150].pos, positions[150]);
        assert!(rec.truncated_at.is_none());
        // Appends continue with fresh LSNs after the recovered ones.
        let (lsn, _) = enqueue(&wal, 1, 200);
        assert_eq!(lsn, topo + 1);
        wal.close().await.expect("close");
    });
}

#[test]
fn settles_remove_enqueues_and_reclaim_segments() {
    let dir = TempDir::new("settle");
    let d = dir.0.clone();
    run(move || async move {
        let (wal, _) = Wal::open(opts(&d, 64 * 1024)).await.expect("open");
        for m in 0..150 {
            let (lsn, _) = enqueue(&wal, 1, m);
            if m % 10 == 9 {
                wal.wait_durable(lsn).await.expect("durable");
            }
        }
        let first_segments = segment::list_segments(&d, 0).expect("list");
        assert!(first_segments.len() >= 3);
        // Settle everything but messages 140..150 (in the current segment) and message 5.
        let settled: Vec<u64> = (0..140).filter(|m| *m != 5).collect();
        let lsn = wal
            .append_settle(&SettleRecord {
                queue: 1,
                messages: &settled,
            })
            .expect("settle");
        wal.wait_durable(lsn).await.expect("durable");
        // Reclamation runs after the flush that made the settle durable; one more flush
        // guarantees it finished.
        let (lsn, _) = enqueue(&wal, 2, 1000);
        wal.wait_durable(lsn).await.expect("durable");
        let left = segment::list_segments(&d, 0).expect("list");
        // Segment 1 holds message 5; the middle segments are fully settled and gone.
        assert!(left.contains(&1));
        assert!(
            left.len() < first_segments.len(),
            "{left:?} vs {first_segments:?}"
        );
        assert!(wal.stats().segments_deleted >= 1);
        wal.close().await.expect("close");

        let (wal, rec) = Wal::open(opts(&d, 64 * 1024)).await.expect("reopen");
        let mut expected = vec![5];
        expected.extend(140..150);
        let got: Vec<(u64, u64)> = rec
            .enqueues
            .iter()
            .map(|e| (e.record.queue, e.record.message))
            .collect();
        let mut want: Vec<(u64, u64)> = expected.iter().map(|m| (1, *m)).collect();
        want.push((2, 1000));
        assert_eq!(got, want);

        // Settling message 5 frees segment 1 too (and the settle's own segment keeps the rest).
        let lsn = wal
            .append_settle(&SettleRecord {
                queue: 1,
                messages: &[5],
            })
            .expect("settle");
        wal.wait_durable(lsn).await.expect("durable");
        let (lsn, _) = enqueue(&wal, 2, 1001);
        wal.wait_durable(lsn).await.expect("durable");
        assert!(!segment::list_segments(&d, 0).expect("list").contains(&1));
        wal.close().await.expect("close");
        let (_wal, rec) = Wal::open(opts(&d, 64 * 1024)).await.expect("reopen");
        assert_eq!(rec.enqueues.len(), 12);
    });
}

#[test]
fn group_commit_batches_many_appends_into_few_flushes() {
    let dir = TempDir::new("group");
    let d = dir.0.clone();
    run(move || async move {
        let mut o = opts(&d, 8 << 20);
        o.write_buffer_bytes = 1 << 20;
        let (wal, _) = Wal::open(o).await.expect("open");
        let mut last = 0;
        for m in 0..500 {
            last = enqueue(&wal, 1, m).0;
        }
        wal.wait_durable(last).await.expect("durable");
        let s = wal.stats();
        assert_eq!(s.durable_lsn, last);
        assert!(s.flushes <= 2, "500 appends took {} flushes", s.flushes);
        // A lone record at low load is flushed at once, in its own flush.
        let (lone, _) = enqueue(&wal, 1, 500);
        wal.wait_durable(lone).await.expect("durable");
        assert_eq!(wal.stats().flushes, s.flushes + 1);
        wal.close().await.expect("close");
    });
}

#[test]
fn buffer_full_is_reported_not_grown() {
    let dir = TempDir::new("full");
    let d = dir.0.clone();
    run(move || async move {
        let (wal, _) = Wal::open(opts(&d, 1 << 20)).await.expect("open");
        let b = vec![0u8; 1000];
        let r = EnqueueRecord {
            queue: 1,
            message: 0,
            exchange: "",
            routing_key: "",
            properties: &[],
            body: &b,
        };
        let mut accepted = 0u64;
        let err = loop {
            match wal.append_enqueue(&EnqueueRecord {
                message: accepted,
                ..r
            }) {
                Ok(_) => accepted += 1,
                Err(e) => break e,
            }
            assert!(accepted < 1000, "buffer never filled");
        };
        assert!(matches!(err, WalError::BufferFull { .. }), "{err}");
        wal.wait_durable(accepted).await.expect("durable");
        wal.append_enqueue(&EnqueueRecord {
            message: accepted,
            ..r
        })
        .expect("room again");
        let huge = vec![0u8; 70 * 1024];
        let e = wal
            .append_enqueue(&EnqueueRecord { body: &huge, ..r })
            .unwrap_err();
        assert!(matches!(e, WalError::RecordTooLarge { .. }));
        wal.close().await.expect("close");
    });
}

/// Writes `n` enqueues, each in its own batch (one wait per append).
async fn write_separate_batches(wal: &Wal, from: u64, n: u64) -> Vec<RecordPos> {
    let mut positions = Vec::new();
    for m in from..from + n {
        let (lsn, pos) = enqueue(wal, 1, m);
        wal.wait_durable(lsn).await.expect("durable");
        positions.push(pos);
    }
    positions
}

fn flip_byte(path: &Path, offset: u64) {
    let mut data = std::fs::read(path).expect("read");
    data[offset as usize] ^= 0x40;
    std::fs::write(path, data).expect("write");
}

#[test]
fn torn_tail_is_truncated_and_appends_continue() {
    let dir = TempDir::new("torn");
    let d = dir.0.clone();
    run(move || async move {
        let (wal, _) = Wal::open(opts(&d, 1 << 20)).await.expect("open");
        let positions = write_separate_batches(&wal, 0, 10).await;
        wal.close().await.expect("close");
        // Cut the file in the middle of the last record.
        let last = positions[9];
        let cut = last.offset + u64::from(last.len) / 2;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(seg_path(&d, 1))
            .expect("open");
        f.set_len(cut).expect("truncate");
        drop(f);

        let (wal, rec) = Wal::open(opts(&d, 1 << 20)).await.expect("reopen");
        check_recovered(&rec, &(0..9).collect::<Vec<_>>());
        let (lsn, pos) = enqueue(&wal, 1, 100);
        assert_eq!(
            pos.offset, last.offset,
            "appends continue where the torn record was"
        );
        wal.wait_durable(lsn).await.expect("durable");
        write_separate_batches(&wal, 101, 3).await;
        wal.close().await.expect("close");

        let (_wal, rec) = Wal::open(opts(&d, 1 << 20)).await.expect("reopen 2");
        let mut expected: Vec<u64> = (0..9).collect();
        expected.extend(100..104);
        check_recovered(&rec, &expected);
        assert!(rec.truncated_at.is_none());
    });
}

#[test]
fn bad_record_inside_the_last_batch_is_a_torn_write() {
    let dir = TempDir::new("tornbatch");
    let d = dir.0.clone();
    run(move || async move {
        let (wal, _) = Wal::open(opts(&d, 1 << 20)).await.expect("open");
        write_separate_batches(&wal, 0, 3).await;
        // One batch of 5: flip a byte in its second record.
        let mut positions = Vec::new();
        let mut last = 0;
        for m in 3..8 {
            let (lsn, pos) = enqueue(&wal, 1, m);
            positions.push(pos);
            last = lsn;
        }
        wal.wait_durable(last).await.expect("durable");
        wal.close().await.expect("close");
        flip_byte(&seg_path(&d, 1), positions[1].offset + 100);

        let (wal, rec) = Wal::open(opts(&d, 1 << 20))
            .await
            .expect("torn, not corrupt");
        check_recovered(&rec, &[0, 1, 2, 3]);
        assert_eq!(
            rec.truncated_at,
            Some((seg_path(&d, 1), positions[1].offset))
        );
        write_separate_batches(&wal, 50, 2).await;
        wal.close().await.expect("close");
        let (_wal, rec) = Wal::open(opts(&d, 1 << 20)).await.expect("reopen");
        check_recovered(&rec, &[0, 1, 2, 3, 50, 51]);
    });
}

#[test]
fn bad_record_followed_by_later_batches_is_corruption() {
    let dir = TempDir::new("corrupt");
    let d = dir.0.clone();
    run(move || async move {
        let (wal, _) = Wal::open(opts(&d, 1 << 20)).await.expect("open");
        let positions = write_separate_batches(&wal, 0, 10).await;
        wal.close().await.expect("close");
        let path = seg_path(&d, 1);
        flip_byte(&path, positions[2].offset + 40);
        let err = Wal::open(opts(&d, 1 << 20))
            .await
            .err()
            .expect("must refuse");
        match err {
            WalError::Corrupt { file, offset, .. } => {
                assert_eq!(file, path);
                assert_eq!(offset, positions[2].offset);
            }
            other => panic!("expected Corrupt, got {other}"),
        }
    });
}

#[test]
fn corruption_before_a_sealed_segment_is_detected() {
    let dir = TempDir::new("corruptseg");
    let d = dir.0.clone();
    run(move || async move {
        let (wal, _) = Wal::open(opts(&d, 64 * 1024)).await.expect("open");
        let positions = write_separate_batches(&wal, 0, 150).await;
        wal.close().await.expect("close");
        // The last record of segment 1 (before its seal), with whole segments after it.
        let victim = positions
            .iter()
            .rfind(|p| p.segment == 1)
            .copied()
            .expect("pos");
        flip_byte(&seg_path(&d, 1), victim.offset + 50);
        let err = Wal::open(opts(&d, 64 * 1024))
            .await
            .err()
            .expect("must refuse");
        assert!(
            matches!(err, WalError::Corrupt { offset, .. } if offset == victim.offset),
            "{err}"
        );
    });
}

#[test]
fn segment_file_layout_starts_after_header() {
    let dir = TempDir::new("layout");
    let d = dir.0.clone();
    run(move || async move {
        let (wal, _) = Wal::open(opts(&d, 1 << 20)).await.expect("open");
        let (_, pos) = enqueue(&wal, 1, 1);
        assert_eq!((pos.segment, pos.offset), (1, SEGMENT_HEADER_BYTES));
        assert_eq!(pos.len % 16, 0);
        wal.close().await.expect("close");
        let len = std::fs::metadata(seg_path(&d, 1)).expect("stat").len();
        assert_eq!(len, 1 << 20, "segment is preallocated");
    });
}

/// Device probe, not a test: `cargo test --lib probe_raw -- --ignored --nocapture`.
#[test]
#[ignore]
fn probe_raw_write_sync_latency() {
    let dir = TempDir::new("probe");
    let d = dir.0.clone();
    run(move || async move {
        std::fs::create_dir_all(&d).expect("dir");
        let h = segment::SegmentHeader {
            shard: 0,
            id: 1,
            first_lsn: 1,
        };
        let f = segment::create(&d, h, 1 << 20).await.expect("io");
        let p = seg_path(&d, 1);
        let data = vec![1u8; 4096];
        let t = std::time::Instant::now();
        for i in 0..100u64 {
            segment::write_padded(&f, &p, 4096 * (1 + i % 8), &data)
                .await
                .expect("io");
            f.fdatasync().await.expect("io");
        }
        eprintln!("dma write+fdatasync: {:?}/op", t.elapsed() / 100);
        let t = std::time::Instant::now();
        for i in 0..100u64 {
            segment::write_padded(&f, &p, 4096 * (1 + i % 8), &data)
                .await
                .expect("io");
        }
        eprintln!("dma write only: {:?}/op", t.elapsed() / 100);
        let t = std::time::Instant::now();
        for _ in 0..100u64 {
            f.fdatasync().await.expect("io");
        }
        eprintln!("fdatasync only (clean): {:?}/op", t.elapsed() / 100);
        use std::os::unix::fs::FileExt;
        let sf = std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .expect("io");
        let t = std::time::Instant::now();
        for i in 0..100u64 {
            sf.write_at(&data, 4096 * (1 + i % 8)).expect("io");
            sf.sync_data().expect("io");
        }
        eprintln!("std buffered write+sync_data: {:?}/op", t.elapsed() / 100);
    });
}

fn assert_not_readable(r: Result<OwnedEnqueue, WalError>) {
    assert!(
        matches!(r, Err(WalError::NotReadable { .. })),
        "expected NotReadable, got {r:?}"
    );
}

#[test]
fn read_live_by_key_follows_appends_flushes_and_reopen() {
    let dir = TempDir::new("readlive");
    let d = dir.0.clone();
    run(move || async move {
        let (wal, _) = Wal::open(opts(&d, 64 * 1024)).await.expect("open");
        // Not flushed yet: read_live waits for durability itself.
        enqueue(&wal, 1, 7);
        let got = wal.read_live(1, 7).await.expect("read pending");
        assert_eq!(got.body.as_ref(), body(7).as_slice());
        assert_eq!(
            (got.queue, got.message, got.routing_key.as_str()),
            (1, 7, "rk")
        );
        // Across several segments, after flushes.
        for m in 100..250 {
            let (lsn, _) = enqueue(&wal, 2, m);
            if m % 16 == 0 {
                wal.wait_durable(lsn).await.expect("durable");
            }
        }
        for m in [100, 177, 249] {
            let got = wal.read_live(2, m).await.expect("read");
            assert_eq!(got.body.as_ref(), body(m).as_slice());
        }
        let lsn = wal
            .append_settle(&SettleRecord {
                queue: 2,
                messages: &[177],
            })
            .expect("settle");
        assert_not_readable(wal.read_live(2, 177).await);
        assert_not_readable(wal.read_live(9, 9).await);
        wal.wait_durable(lsn).await.expect("durable");
        wal.close().await.expect("close");

        // Recovery fills the positions in the index.
        let (wal, _) = Wal::open(opts(&d, 64 * 1024)).await.expect("reopen");
        for (q, m) in [(1, 7), (2, 100), (2, 249)] {
            let got = wal.read_live(q, m).await.expect("read after reopen");
            assert_eq!(got.body.as_ref(), body(m).as_slice());
        }
        assert_not_readable(wal.read_live(2, 177).await);
        wal.close().await.expect("close");
    });
}

const SMALL_SEGMENT_BYTES: u64 = 64 * 1024;

/// Message 0 is a straggler never settled; every later message is settled right after the next
/// one is appended. Runs until `segments` segments were filled; calls `check` after each flush.
async fn straggler_churn(wal: &Wal, segments: u64, mut check: impl FnMut(&Wal)) -> u64 {
    let (lsn, first) = enqueue(wal, 1, 0);
    wal.wait_durable(lsn).await.expect("durable");
    let mut m = 1;
    loop {
        let (lsn, pos) = enqueue(wal, 1, m);
        if m > 1 {
            wal.append_settle(&SettleRecord {
                queue: 1,
                messages: &[m - 1],
            })
            .expect("settle");
        }
        if m % 8 == 0 {
            wal.wait_durable(lsn).await.expect("durable");
            check(wal);
            if pos.segment >= first.segment + segments {
                return m;
            }
        }
        m += 1;
    }
}

#[test]
fn copy_forward_keeps_disk_bounded_with_a_straggler() {
    let dir = TempDir::new("compact");
    let d = dir.0.clone();
    run(move || async move {
        let (wal, _) = Wal::open(opts(&d, SMALL_SEGMENT_BYTES))
            .await
            .expect("open");
        let bound = WAL_COMPACT_AGE_SEGMENTS_MIN + 3;
        let last = straggler_churn(&wal, 50, |wal| {
            let live = wal.stats().segments_live;
            assert!(live <= bound, "{live} segments live: {:?}", wal.stats());
        })
        .await;
        let s = wal.stats();
        assert!(s.records_copied >= 5, "the straggler moved along: {s:?}");
        assert!(s.segments_compacted >= 5, "{s:?}");
        assert!(s.bytes_copied >= s.records_copied * 1000, "{s:?}");
        assert!(s.segments_deleted >= 40, "{s:?}");
        assert_eq!(s.compaction_failures, 0);
        assert!(segment::list_segments(&d, 0).expect("list").len() as u64 <= bound);
        // Copy-forward does not change what read_live returns.
        let got = wal.read_live(1, 0).await.expect("straggler");
        assert_eq!(got.body.as_ref(), body(0).as_slice());
        wal.close().await.expect("close");

        let (wal, rec) = Wal::open(opts(&d, SMALL_SEGMENT_BYTES))
            .await
            .expect("reopen");
        check_recovered(&rec, &[0, last]);
        wal.close().await.expect("close");
    });
}

#[test]
fn crash_between_copy_and_delete_recovers_each_message_once() {
    let dir = TempDir::new("compactcrash");
    let d = dir.0.clone();
    run(move || async move {
        let (wal, _) = Wal::open(opts(&d, SMALL_SEGMENT_BYTES))
            .await
            .expect("open");
        // A few stragglers in the first segment, then churn with deletions held back.
        let stragglers = [100_000, 100_001, 100_002];
        for &m in &stragglers {
            enqueue(&wal, 2, m);
        }
        wal.pause_reclaim(true);
        let last = straggler_churn(&wal, 12, |_| {}).await;
        let s = wal.stats();
        assert!(s.records_copied > stragglers.len() as u64, "{s:?}");
        assert!(s.segments_deleted == 0, "{s:?}");
        assert!(
            segment::list_segments(&d, 0).expect("list").contains(&1),
            "the original copies are still on disk"
        );
        wal.close().await.expect("close");

        let (wal, rec) = Wal::open(opts(&d, SMALL_SEGMENT_BYTES))
            .await
            .expect("reopen");
        let mut got: Vec<(u64, u64)> = rec
            .enqueues
            .iter()
            .map(|e| (e.record.queue, e.record.message))
            .collect();
        got.sort_unstable();
        let mut want = vec![(1, 0), (1, last)];
        want.extend(stragglers.iter().map(|&m| (2, m)));
        want.sort_unstable();
        assert_eq!(got, want, "each key exactly once");
        for e in &rec.enqueues {
            assert!(e.body_loaded);
            assert_eq!(e.record.body.as_ref(), body(e.record.message).as_slice());
        }
        // Recovery itself deleted what the crash left behind.
        assert!(!segment::list_segments(&d, 0).expect("list").contains(&1));
        // And a settle of a copied message holds across another reopen.
        let lsn = wal
            .append_settle(&SettleRecord {
                queue: 2,
                messages: &[100_001],
            })
            .expect("settle");
        wal.wait_durable(lsn).await.expect("durable");
        wal.close().await.expect("close");
        let (_wal, rec) = Wal::open(opts(&d, SMALL_SEGMENT_BYTES))
            .await
            .expect("reopen 2");
        assert_eq!(rec.enqueues.len(), 4);
        assert!(rec.enqueues.iter().all(|e| e.record.message != 100_001));
    });
}

#[test]
fn recovery_leaves_bodies_over_the_budget_on_disk() {
    let dir = TempDir::new("budget");
    let d = dir.0.clone();
    run(move || async move {
        let (wal, _) = Wal::open(opts(&d, SMALL_SEGMENT_BYTES))
            .await
            .expect("open");
        for m in 0..100 {
            let (lsn, _) = enqueue(&wal, 1, m);
            if m % 10 == 9 {
                wal.wait_durable(lsn).await.expect("durable");
            }
        }
        // Settling the first ten frees their share of the budget during the replay.
        let lsn = wal
            .append_settle(&SettleRecord {
                queue: 1,
                messages: &(0..10).collect::<Vec<_>>(),
            })
            .expect("settle");
        wal.wait_durable(lsn).await.expect("durable");
        wal.close().await.expect("close");

        let mut o = opts(&d, SMALL_SEGMENT_BYTES);
        o.recovery_body_budget_bytes = 25_500;
        let (wal, rec) = Wal::open(o).await.expect("reopen");
        assert_eq!(rec.enqueues.len(), 90);
        let loaded: Vec<u64> = rec
            .enqueues
            .iter()
            .filter(|e| e.body_loaded)
            .map(|e| e.record.message)
            .collect();
        // Bodies 0..25 fit when they were replayed; 0..10 were settled later, and the budget
        // they freed is not handed back to later records (they were already decided).
        assert_eq!(loaded, (10..25).collect::<Vec<_>>());
        assert_eq!(wal.stats().bodies_left_on_disk, 75);
        for e in &rec.enqueues {
            assert_eq!(e.body_bytes, 1000);
            assert_eq!(e.record.properties.as_ref(), &[1, 2, 3]);
            assert_eq!(e.record.routing_key, "rk");
            if !e.body_loaded {
                assert!(e.record.body.is_empty());
                let read = wal
                    .read_live(e.record.queue, e.record.message)
                    .await
                    .expect("read body");
                assert_eq!(read.body.as_ref(), body(e.record.message).as_slice());
            }
        }
        wal.close().await.expect("close");
    });
}

#[test]
fn copy_forward_leaves_a_dense_backlog_alone() {
    let dir = TempDir::new("backlog");
    let d = dir.0.clone();
    run(move || async move {
        let (wal, _) = Wal::open(opts(&d, SMALL_SEGMENT_BYTES))
            .await
            .expect("open");
        // Ten segments of messages nobody consumes, then churn on another queue.
        for m in 0..600 {
            let (lsn, _) = enqueue(&wal, 3, m);
            if m % 10 == 9 {
                wal.wait_durable(lsn).await.expect("durable");
            }
        }
        let backlog_segments = wal.stats().segments_live;
        // Dead segments pinned while a root is being copied (a round moves at most a quarter
        // of the 32 KiB buffer, while churn keeps filling segments).
        let bound = backlog_segments + WAL_COMPACT_PINNED_SEGMENTS_MIN as u64 + 8;
        let churn_segments = 60;
        straggler_churn(&wal, churn_segments, |wal| {
            let live = wal.stats().segments_live;
            assert!(live <= bound, "{live} segments live: {:?}", wal.stats());
        })
        .await;
        let s = wal.stats();
        // The full backlog segments are never rewritten: what moves is the straggler and the
        // backlog's tail, which shares segments with the churn's settles (a chain root).
        assert!(s.records_copied > 0, "{s:?}");
        assert!(
            s.bytes_copied < churn_segments * SMALL_SEGMENT_BYTES / 4,
            "{s:?}"
        );
        wal.close().await.expect("close");
        let (_wal, rec) = Wal::open(opts(&d, SMALL_SEGMENT_BYTES))
            .await
            .expect("reopen");
        let backlog: Vec<&RecoveredEnqueue> = rec
            .enqueues
            .iter()
            .filter(|e| e.record.queue == 3)
            .collect();
        assert_eq!(backlog.len(), 600);
        assert!(backlog
            .iter()
            .all(|e| e.record.body.as_ref() == body(e.record.message).as_slice()));
    });
}

// ---- chained (multi-part) enqueues --------------------------------------------------------

fn large_body(seed: u64, bytes: usize) -> Vec<u8> {
    (0..bytes as u64)
        .map(|j| (j.wrapping_mul(2654435761) >> 7 ^ seed) as u8)
        .collect()
}

fn append_large(wal: &Wal, queue: u64, message: u64, bytes: usize) -> Lsn {
    let r = EnqueueRecord {
        queue,
        message,
        exchange: "amq.direct",
        routing_key: "big",
        properties: &[4, 5, 6],
        body: &[],
    };
    let body: std::rc::Rc<dyn EnqueueBody> = std::rc::Rc::new(large_body(message, bytes));
    wal.append_enqueue_body(&r, body).expect("append chained")
}

/// Zeroes the log from `at` on and removes every later segment: a crash while the batch
/// holding `at` was being written.
fn cut_log_at(dir: &Path, at: RecordPos) {
    let path = seg_path(dir, at.segment);
    let mut data = std::fs::read(&path).expect("read");
    data[at.offset as usize..].fill(0);
    std::fs::write(&path, data).expect("write");
    for id in segment::list_segments(dir, 0).expect("list") {
        if id > at.segment {
            std::fs::remove_file(seg_path(dir, id)).expect("remove");
        }
    }
}

const LARGE_BODY_BYTES: usize = 100_000;

#[test]
fn part_and_chain_headers_round_trip_and_reject_garbage() {
    let part = record::PartHeader {
        queue: 3,
        message: 9,
        chain: 77,
        index: 5,
    };
    let mut payload = part.encode().to_vec();
    payload.extend_from_slice(b"body bytes");
    let (decoded, body) = record::PartHeader::decode(&payload).expect("part");
    assert_eq!((decoded, body), (part, &b"body bytes"[..]));
    payload[30] = 1;
    assert!(
        record::PartHeader::decode(&payload).is_none(),
        "reserved bytes"
    );
    assert!(
        record::PartHeader::decode(&payload[..10]).is_none(),
        "short"
    );
    let chain = record::ChainHeader {
        chain: 77,
        parts: 6,
        body_bytes: 1 << 27,
    };
    let mut payload = chain.encode().to_vec();
    payload.extend_from_slice(b"rkyv");
    let (decoded, meta) = record::ChainHeader::decode(&payload).expect("chain");
    assert_eq!((decoded, meta), (chain, &b"rkyv"[..]));
    let none = record::ChainHeader { parts: 0, ..chain };
    assert!(
        record::ChainHeader::decode(&none.encode()).is_none(),
        "no parts"
    );
}

#[test]
fn chained_enqueue_spans_segments_is_confirmed_whole_and_reads_back() {
    let dir = TempDir::new("chain");
    let d = dir.0.clone();
    run(move || async move {
        let (wal, _) = Wal::open(opts(&d, 64 * 1024)).await.expect("open");
        let (small, _) = enqueue(&wal, 1, 0);
        let barrier = append_large(&wal, 2, 7, LARGE_BODY_BYTES);
        assert!(barrier > small);
        assert!(wal.congested(), "a chain being fed holds the batch's room");
        let (after, _) = enqueue(&wal, 1, 1);
        wal.wait_durable(barrier).await.expect("durable");
        assert!(!wal.congested());
        let parts = wal.parts_of(2, 7).expect("chain is live once durable");
        assert!(parts.len() > 10, "{} parts", parts.len());
        let segments: std::collections::BTreeSet<u64> = parts.iter().map(|p| p.segment).collect();
        assert!(segments.len() > 1, "the chain spans segments");
        wal.wait_durable(after).await.expect("durable");
        let read = wal.read_live(2, 7).await.expect("read chained");
        assert_eq!(
            read.body.as_ref(),
            large_body(7, LARGE_BODY_BYTES).as_slice()
        );
        assert_eq!(
            (read.routing_key.as_str(), read.properties.as_ref()),
            ("big", &[4u8, 5, 6][..])
        );
        // A body within one part is one ordinary record.
        let r = EnqueueRecord {
            queue: 1,
            message: 2,
            exchange: "amq.direct",
            routing_key: "rk",
            properties: &[1, 2, 3],
            body: &[],
        };
        let lsn = wal
            .append_enqueue_body(&r, std::rc::Rc::new(body(2)))
            .expect("small");
        wal.wait_durable(lsn).await.expect("durable");
        assert!(wal.parts_of(1, 2).is_none());
        wal.close().await.expect("close");

        let (wal, rec) = Wal::open(opts(&d, 64 * 1024)).await.expect("reopen");
        let keys: Vec<(u64, u64, bool)> = rec
            .enqueues
            .iter()
            .map(|e| (e.record.queue, e.record.message, e.body_loaded))
            .collect();
        assert_eq!(
            keys,
            // In log order of the enqueue records: the chain's terminal came after (1, 1).
            vec![(1, 0, true), (1, 1, true), (2, 7, false), (1, 2, true)]
        );
        assert_eq!(rec.enqueues[2].body_bytes, LARGE_BODY_BYTES as u64);
        let read = wal.read_live(2, 7).await.expect("read after reopen");
        assert_eq!(
            read.body.as_ref(),
            large_body(7, LARGE_BODY_BYTES).as_slice()
        );
        // Settled: its segments go.
        let lsn = wal
            .append_settle(&SettleRecord {
                queue: 2,
                messages: &[7],
            })
            .expect("settle");
        wal.wait_durable(lsn).await.expect("durable");
        wal.close().await.expect("close");
        let (_wal, rec) = Wal::open(opts(&d, 64 * 1024)).await.expect("reopen 2");
        assert!(rec.enqueues.iter().all(|e| e.record.queue == 1));
    });
}

#[test]
fn torn_multi_part_tail_is_ignored_and_appends_continue() {
    let dir = TempDir::new("chaintorn");
    let d = dir.0.clone();
    run(move || async move {
        let (wal, _) = Wal::open(opts(&d, 64 * 1024)).await.expect("open");
        write_separate_batches(&wal, 0, 3).await;
        let barrier = append_large(&wal, 2, 7, LARGE_BODY_BYTES);
        wal.wait_durable(barrier).await.expect("durable");
        let parts = wal.parts_of(2, 7).expect("parts");
        wal.close().await.expect("close");
        // The crash hit while part 5 was being written: later parts and the terminal are gone.
        cut_log_at(&d, parts[5]);
        let (wal, rec) = Wal::open(opts(&d, 64 * 1024)).await.expect("reopen");
        check_recovered(&rec, &[0, 1, 2]);
        let barrier = append_large(&wal, 2, 8, LARGE_BODY_BYTES);
        wal.wait_durable(barrier).await.expect("durable");
        wal.close().await.expect("close");
        let (wal, rec) = Wal::open(opts(&d, 64 * 1024)).await.expect("reopen 2");
        let keys: Vec<u64> = rec.enqueues.iter().map(|e| e.record.message).collect();
        assert_eq!(keys, vec![0, 1, 2, 8]);
        let read = wal.read_live(2, 8).await.expect("read");
        assert_eq!(
            read.body.as_ref(),
            large_body(8, LARGE_BODY_BYTES).as_slice()
        );
        wal.close().await.expect("close");
    });
}

#[test]
fn corruption_in_a_middle_part_is_reported() {
    let dir = TempDir::new("chaincorrupt");
    let d = dir.0.clone();
    run(move || async move {
        let (wal, _) = Wal::open(opts(&d, 64 * 1024)).await.expect("open");
        let barrier = append_large(&wal, 2, 7, LARGE_BODY_BYTES);
        wal.wait_durable(barrier).await.expect("durable");
        let parts = wal.parts_of(2, 7).expect("parts");
        write_separate_batches(&wal, 0, 3).await;
        wal.close().await.expect("close");
        let middle = parts[parts.len() / 2];
        flip_byte(&seg_path(&d, middle.segment), middle.offset + 100);
        match Wal::open(opts(&d, 64 * 1024))
            .await
            .err()
            .expect("must refuse")
        {
            WalError::Corrupt { file, offset, .. } => {
                assert_eq!(file, seg_path(&d, middle.segment));
                assert_eq!(offset, middle.offset);
            }
            other => panic!("expected Corrupt, got {other}"),
        }
    });
}

#[test]
fn chained_enqueue_missing_a_part_is_corruption_unless_settled() {
    let dir = TempDir::new("chainmissing");
    let d = dir.0.clone();
    run(move || async move {
        let (wal, _) = Wal::open(opts(&d, 64 * 1024)).await.expect("open");
        let barrier = append_large(&wal, 2, 7, LARGE_BODY_BYTES);
        wal.wait_durable(barrier).await.expect("durable");
        let parts = wal.parts_of(2, 7).expect("parts");
        wal.close().await.expect("close");
        let first = parts[0].segment;
        assert!(parts.last().expect("parts").segment > first);
        std::fs::remove_file(seg_path(&d, first)).expect("remove the first part's segment");
        match Wal::open(opts(&d, 64 * 1024))
            .await
            .err()
            .expect("must refuse")
        {
            WalError::Corrupt { reason, .. } => {
                assert_eq!(reason, "chained enqueue is missing parts")
            }
            other => panic!("expected Corrupt, got {other}"),
        }
    });
}

#[test]
fn settle_while_a_chain_is_fed_gives_it_up() {
    let dir = TempDir::new("chaincancel");
    let d = dir.0.clone();
    run(move || async move {
        let (wal, _) = Wal::open(opts(&d, 64 * 1024)).await.expect("open");
        let barrier = append_large(&wal, 2, 7, LARGE_BODY_BYTES);
        let settle = wal
            .append_settle(&SettleRecord {
                queue: 2,
                messages: &[7],
            })
            .expect("settle");
        assert!(!wal.congested(), "nothing left to feed");
        wal.wait_durable(settle.max(barrier))
            .await
            .expect("durable");
        assert!(wal.parts_of(2, 7).is_none());
        assert_not_readable(wal.read_live(2, 7).await);
        let (lsn, _) = enqueue(&wal, 1, 0);
        wal.wait_durable(lsn).await.expect("durable");
        wal.close().await.expect("close");
        let (_wal, rec) = Wal::open(opts(&d, 64 * 1024)).await.expect("reopen");
        check_recovered(&rec, &[0]);
    });
}

#[test]
fn copy_forward_moves_a_chained_straggler_whole() {
    let dir = TempDir::new("chaincompact");
    let d = dir.0.clone();
    run(move || async move {
        let (wal, _) = Wal::open(opts(&d, SMALL_SEGMENT_BYTES))
            .await
            .expect("open");
        let barrier = append_large(&wal, 2, 7, 30_000);
        wal.wait_durable(barrier).await.expect("durable");
        let before = wal.parts_of(2, 7).expect("parts");
        let bound = WAL_COMPACT_AGE_SEGMENTS_MIN + 3 + 30_000 / SMALL_SEGMENT_BYTES + 1;
        let last = straggler_churn(&wal, 50, |_| {}).await;
        let live = wal.stats().segments_live;
        assert!(live <= bound, "{live} segments live: {:?}", wal.stats());
        let after = wal.parts_of(2, 7).expect("parts");
        assert_ne!(before[0], after[0], "the chain was copied forward");
        assert_eq!(wal.stats().compaction_failures, 0);
        let read = wal.read_live(2, 7).await.expect("read");
        assert_eq!(read.body.as_ref(), large_body(7, 30_000).as_slice());
        wal.close().await.expect("close");
        let (wal, rec) = Wal::open(opts(&d, SMALL_SEGMENT_BYTES))
            .await
            .expect("reopen");
        let keys: Vec<(u64, u64)> = rec
            .enqueues
            .iter()
            .map(|e| (e.record.queue, e.record.message))
            .collect();
        assert_eq!(keys.len(), 3, "{keys:?}");
        assert!(keys.contains(&(2, 7)) && keys.contains(&(1, 0)) && keys.contains(&(1, last)));
        let read = wal.read_live(2, 7).await.expect("read after reopen");
        assert_eq!(read.body.as_ref(), large_body(7, 30_000).as_slice());
        wal.close().await.expect("close");
    });
}

// ---- Injected I/O errors (`fault`): EIO on write, fdatasync, and copy-forward's reads. ----

fn eio(ops: &[fault::FaultOp], pass: u64) -> fault::FaultPlan {
    fault::FaultPlan {
        ops: ops.to_vec(),
        pass,
    }
}

fn is_io(result: Result<(), WalError>) -> bool {
    matches!(result, Err(WalError::Io { .. }))
}

#[test]
fn eio_on_write_and_fdatasync_fails_waiters_and_the_retry_resumes_without_a_reopen() {
    use fault::FaultOp::{Fdatasync, Write};
    let dir = TempDir::new("eio");
    let d = dir.0.clone();
    run(move || async move {
        let (wal, _) = Wal::open(opts(&d, 1 << 20)).await.expect("open");
        write_separate_batches(&wal, 0, 5).await;
        for (ops, message) in [(Write, 5), (Fdatasync, 6)] {
            fault::inject(&d, eio(&[ops], 0));
            let (lsn, _) = enqueue(&wal, 1, message);
            assert!(
                is_io(wal.wait_durable(lsn).await),
                "{ops:?}: the waiter hears EIO"
            );
            assert!(
                wal.stats().durable_lsn < lsn,
                "{ops:?}: nothing claimed durable"
            );
            // Still failing: the next waiter's retry fails too, and is reported again.
            assert!(
                is_io(wal.wait_durable(lsn).await),
                "{ops:?}: the retry fails"
            );
            fault::clear(&d);
            let (lsn, _) = enqueue(&wal, 1, message + 10);
            wal.wait_durable(lsn).await.expect("the device works again");
        }
        assert!(wal.stats().flush_failures >= 4, "{:?}", wal.stats());
        wal.close().await.expect("close");
        // Failed records were written by the retry, ahead of the later ones: at least once.
        let (wal, rec) = Wal::open(opts(&d, 1 << 20)).await.expect("reopen");
        check_recovered(&rec, &[0, 1, 2, 3, 4, 5, 15, 6, 16]);
        wal.close().await.expect("close");
    });
}

#[test]
fn a_write_torn_by_eio_then_a_crash_recovers_what_was_durable() {
    let dir = TempDir::new("eiotorn");
    let d = dir.0.clone();
    run(move || async move {
        let (wal, _) = Wal::open(opts(&d, 1 << 20)).await.expect("open");
        write_separate_batches(&wal, 0, 3).await;
        fault::inject(&d, eio(&[fault::FaultOp::Write], 0));
        // One batch of several blocks: the torn write lands its first half.
        let mut last = 0;
        for m in 3..20 {
            last = enqueue(&wal, 1, m).0;
        }
        assert!(is_io(wal.wait_durable(last).await));
        drop(wal); // a crash: the failed batch is never written whole
        fault::clear(&d);
        let (wal, rec) = Wal::open(opts(&d, 1 << 20)).await.expect("reopen");
        let got: Vec<u64> = rec.enqueues.iter().map(|e| e.record.message).collect();
        assert!(got.len() >= 3 && got.len() < 20, "{got:?}");
        assert_eq!(got, (0..got.len() as u64).collect::<Vec<_>>());
        check_recovered(&rec, &got);
        assert!(rec.truncated_at.is_some(), "the torn half was cut");
        let (lsn, _) = enqueue(&wal, 1, 100);
        wal.wait_durable(lsn).await.expect("appends continue");
        wal.close().await.expect("close");
        let (_wal, rec) = Wal::open(opts(&d, 1 << 20)).await.expect("reopen 2");
        let mut expected = got;
        expected.push(100);
        check_recovered(&rec, &expected);
    });
}

/// The older copy of a key must stay on disk until its newer copy is durable, also when the
/// newer copy waits behind a batch that failed and is retried.
#[test]
fn a_retried_batch_does_not_reclaim_the_segment_a_later_batch_replaces() {
    use fault::FaultOp::{Fdatasync, Write};
    let dir = TempDir::new("eioreclaim");
    let d = dir.0.clone();
    run(move || async move {
        let (wal, _) = Wal::open(opts(&d, SMALL_SEGMENT_BYTES))
            .await
            .expect("open");
        let (lsn, first) = enqueue(&wal, 1, 0);
        wal.wait_durable(lsn).await.expect("durable");
        // Fill and settle segment 1 past the straggler, staying too young for copy-forward.
        for m in 1..90 {
            let (lsn, _) = enqueue(&wal, 2, m);
            if m % 16 == 0 {
                wal.wait_durable(lsn).await.expect("durable");
            }
        }
        let settled: Vec<u64> = (1..90).collect();
        let lsn = wal
            .append_settle(&SettleRecord {
                queue: 2,
                messages: &settled,
            })
            .expect("settle");
        wal.wait_durable(lsn).await.expect("durable");
        assert_eq!(wal.stats().records_copied, 0, "premise: no copy-forward");
        // A batch fails; while it waits for its retry the straggler is logged again behind it.
        fault::inject(&d, eio(&[Fdatasync], 0));
        let (failed_lsn, failed_pos) = enqueue(&wal, 3, 1);
        assert!(failed_pos.segment > first.segment && failed_pos.offset > SEGMENT_HEADER_BYTES);
        assert!(is_io(wal.wait_durable(failed_lsn).await));
        let (again, _) = enqueue(&wal, 1, 0);
        // The retry (one write, one fdatasync) succeeds; the batch behind it is torn. Crash.
        fault::inject(&d, eio(&[Write, Fdatasync], 2));
        assert!(is_io(wal.wait_durable(again).await));
        assert!(wal.stats().durable_lsn >= failed_lsn);
        drop(wal);
        fault::clear(&d);
        let (_wal, rec) = Wal::open(opts(&d, SMALL_SEGMENT_BYTES))
            .await
            .expect("reopen");
        let got: Vec<(u64, u64)> = rec
            .enqueues
            .iter()
            .map(|e| (e.record.queue, e.record.message))
            .collect();
        assert_eq!(
            got,
            [(1, 0), (3, 1)],
            "the straggler's only durable copy survives"
        );
    });
}

#[test]
fn copy_forward_meeting_eio_keeps_the_originals_and_resumes() {
    let dir = TempDir::new("eiocompact");
    let d = dir.0.clone();
    run(move || async move {
        let (wal, _) = Wal::open(opts(&d, SMALL_SEGMENT_BYTES))
            .await
            .expect("open");
        fault::inject(&d, eio(&[fault::FaultOp::Read], 0));
        straggler_churn(&wal, 12, |_| {}).await;
        let s = wal.stats();
        assert!(s.compaction_failures >= 1, "{s:?}");
        assert_eq!(s.records_copied, 0, "{s:?}");
        assert!(
            s.segments_live > WAL_COMPACT_AGE_SEGMENTS_MIN + 3,
            "pinned: {s:?}"
        );
        fault::clear(&d);
        let bound = WAL_COMPACT_AGE_SEGMENTS_MIN + 3;
        let mut m = 1_000;
        while wal.stats().segments_live > bound {
            assert!(m < 10_000, "copy-forward never resumed: {:?}", wal.stats());
            let (lsn, _) = enqueue(&wal, 1, m);
            wal.append_settle(&SettleRecord {
                queue: 1,
                messages: &[m],
            })
            .expect("settle");
            wal.wait_durable(lsn).await.expect("durable");
            m += 1;
        }
        assert!(wal.stats().records_copied >= 1, "{:?}", wal.stats());
        wal.close().await.expect("close");
        let (_wal, rec) = Wal::open(opts(&d, SMALL_SEGMENT_BYTES))
            .await
            .expect("reopen");
        let got: Vec<u64> = rec.enqueues.iter().map(|e| e.record.message).collect();
        assert!(got.contains(&0), "the straggler survives: {got:?}");
    });
}

/// Whether `dir` holds a prepared (zero-filled, not yet used) next segment.
fn has_prepared(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .expect("read dir")
        .flatten()
        .any(|e| e.file_name().to_string_lossy().ends_with(".wal.tmp"))
}

/// Once a segment is a quarter full the next one is zero-filled under a temporary name the
/// recovery never reads; the roll takes it (header, rename) instead of creating one; close
/// leaves no temporary file, and a stale one from a crash goes at the next open.
#[test]
fn rolls_take_a_segment_zero_filled_ahead_and_close_leaves_none() {
    let dir = TempDir::new("prepared");
    let d = dir.0.clone();
    run(move || async move {
        let size = 256 * 1024;
        let (wal, _) = Wal::open(opts(&d, size)).await.expect("open");
        assert!(!has_prepared(&d), "nothing prepared below a quarter");
        // Each ~1 KiB record is its own batch; the preparer runs between the flushes.
        let mut next = 0;
        while wal.stats().segments_prepared < 2 {
            assert!(
                next < 2_000,
                "no roll into a prepared segment: {:?}",
                wal.stats()
            );
            write_separate_batches(&wal, next, 1).await;
            futures_lite::future::yield_now().await;
            next += 1;
        }
        wal.close().await.expect("close");
        assert!(!has_prepared(&d), "close removes the prepared file");

        std::fs::write(segment::prepared_path(&d, 0, 999_999), [7u8; 4096]).expect("stale");
        let (wal, rec) = Wal::open(opts(&d, size)).await.expect("reopen");
        check_recovered(&rec, &(0..next).collect::<Vec<_>>());
        assert!(
            !has_prepared(&d),
            "a stale prepared file is removed at open"
        );
        wal.close().await.expect("close");
    });
}

/// Flushes overlap (the next batch is written while the previous fdatasync is in flight); an
/// fdatasync that fails makes every batch in flight behind it fail too, and the retry writes
/// them all again in order: each record is recovered once, in LSN order.
#[test]
fn overlapped_flushes_fail_and_retry_together_in_order() {
    use fault::FaultOp::Fdatasync;
    let dir = TempDir::new("overlap");
    let d = dir.0.clone();
    run(move || async move {
        let (wal, _) = Wal::open(opts(&d, 1 << 20)).await.expect("open");
        write_separate_batches(&wal, 0, 3).await;
        fault::inject(&d, eio(&[Fdatasync], 0));
        // Appends between flushes, so several batches are taken while one is in flight.
        let mut lsns = Vec::new();
        for m in 3..40 {
            lsns.push(enqueue(&wal, 1, m).0);
            futures_lite::future::yield_now().await;
        }
        let last = *lsns.last().expect("appended");
        assert!(is_io(wal.wait_durable(last).await));
        assert!(wal.stats().durable_lsn < lsns[0], "{:?}", wal.stats());
        fault::clear(&d);
        wal.wait_durable(last)
            .await
            .expect("the retry makes them durable");
        let (lsn, _) = enqueue(&wal, 1, 40);
        wal.wait_durable(lsn).await.expect("appends continue");
        wal.close().await.expect("close");
        let (wal, rec) = Wal::open(opts(&d, 1 << 20)).await.expect("reopen");
        check_recovered(&rec, &(0..41).collect::<Vec<_>>());
        wal.close().await.expect("close");
    });
}
