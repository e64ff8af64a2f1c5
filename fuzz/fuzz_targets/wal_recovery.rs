//! Recovery of a real log whose segment files were damaged: byte flips anywhere (with the
//! checksums restored when the input asks, so the damage reaches the record decoders as a disk
//! returning well-formed but wrong data would) and truncation. `Wal::open` may refuse the log;
//! it must never panic, and what it recovers must be readable.
#![no_main]

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::OnceLock;

use bytes::Bytes;
use glommio::{LocalExecutor, LocalExecutorBuilder};
use libfuzzer_sys::fuzz_target;
use ringmq::broker::persist::decode_change;
use ringmq::protocol::BasicProperties;
use ringmq::storage::wal::format::{
    checksum, record_bytes_for, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES,
};
use ringmq::storage::wal::{EnqueueRecord, SettleRecord, Wal, WalOptions};

const SEGMENT_SIZE_BYTES: u64 = 256 * 1024;
const WRITE_BUFFER_BYTES: usize = 64 * 1024;
/// glommio's registered buffers must fit `ulimit -l` (8 MiB on the machines here).
const IO_MEMORY_BYTES: usize = 1 << 20;
/// A patch is 4 bytes of offset and 1 byte xored in; at most this many per input.
const PATCHES_MAX: usize = 64;

thread_local! {
    static EXECUTOR: LocalExecutor = LocalExecutorBuilder::default()
        .io_memory(IO_MEMORY_BYTES)
        .make()
        .expect("glommio executor");
}

/// The segment files of a log written once per process: enqueues (one chained over several
/// parts), settles and topology records, as the broker writes them.
fn pristine() -> &'static Vec<(String, Vec<u8>)> {
    static LOG: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    LOG.get_or_init(|| {
        let dir = scratch_dir("pristine");
        EXECUTOR.with(|ex| ex.run(write_log(dir.clone())));
        let files = read_dir(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        files
    })
}

async fn write_log(dir: PathBuf) {
    let (wal, _) = Wal::open(options(dir)).await.expect("open a fresh log");
    let mut last = 0;
    for message in 0..20u64 {
        let body = vec![message as u8; 100 + message as usize * 37];
        let record = EnqueueRecord {
            queue: message % 3,
            message,
            exchange: "amq.direct",
            routing_key: "rk",
            properties: &[
                0x90, 0x00, 0x0a, b't', b'e', b'x', b't', b'/', b'p', b'l', b'a', b'i', b'n', 0x02,
            ],
            body: &body,
        };
        last = wal.append_enqueue(&record).expect("append enqueue").0;
    }
    let chained = Rc::new(vec![7u8; 40 * 1024]);
    let record = EnqueueRecord {
        queue: 1,
        message: 100,
        exchange: "",
        routing_key: "q",
        properties: &[0, 0],
        body: &[],
    };
    last = last.max(
        wal.append_enqueue_body(&record, chained)
            .expect("append chained"),
    );
    last = last.max(
        wal.append_settle(&SettleRecord {
            queue: 0,
            messages: &[0, 3, 6],
        })
        .expect("append settle"),
    );
    last = last.max(
        wal.append_topology(b"\x01\x00\x01/")
            .expect("append topology"),
    );
    wal.wait_durable(last).await.expect("durable");
    wal.close().await.expect("close");
}

fn options(dir: PathBuf) -> WalOptions {
    let mut opts = WalOptions::new(dir, 0, SEGMENT_SIZE_BYTES, WRITE_BUFFER_BYTES);
    opts.part_body_bytes = 8 * 1024;
    opts
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, patches)) = data.split_first() else {
        return;
    };
    let dir = scratch_dir("damaged");
    for (name, bytes) in pristine() {
        let mut bytes = bytes.clone();
        for patch in patches.chunks_exact(5).take(PATCHES_MAX) {
            let offset = u32::from_le_bytes([patch[0], patch[1], patch[2], patch[3]]) as usize;
            let at = offset % bytes.len();
            bytes[at] ^= patch[4];
        }
        if flags & 1 != 0 {
            restore_checksums(&mut bytes);
        }
        if flags & 2 != 0 && patches.len() >= 4 {
            let cut = u32::from_le_bytes([patches[0], patches[1], patches[2], patches[3]]) as usize;
            // Never empty: glommio's first DMA open of an empty file misdetects on these disks.
            bytes.truncate((cut % bytes.len()).max(1));
        }
        std::fs::write(dir.join(name), &bytes).expect("write damaged segment");
    }
    EXECUTOR.with(|ex| ex.run(recover(dir.clone())));
    let _ = std::fs::remove_dir_all(&dir);
});

async fn recover(dir: PathBuf) {
    let Ok((wal, recovered)) = Wal::open(options(dir)).await else {
        return;
    };
    // What the shard does next with what came back: properties and topology changes decoded,
    // bodies left on disk read.
    for enqueue in &recovered.enqueues {
        let _ = BasicProperties::decode(&mut Bytes::copy_from_slice(&enqueue.record.properties));
        if !enqueue.body_loaded {
            let _ = wal
                .read_live(enqueue.record.queue, enqueue.record.message)
                .await;
        }
    }
    for topology in &recovered.topology {
        let _ = decode_change(topology.payload.clone());
    }
    let _ = wal.close().await;
}

/// Walks the records from the segment header, rewriting each checksum over its (damaged) bytes.
fn restore_checksums(bytes: &mut [u8]) {
    let mut offset = SEGMENT_HEADER_BYTES as usize;
    while let Some(header) = bytes.get(offset..offset + RECORD_HEADER_BYTES) {
        let payload_bytes =
            u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let payload_start = offset + RECORD_HEADER_BYTES;
        let Some(payload) = bytes.get(payload_start..payload_start + payload_bytes) else {
            return;
        };
        let crc = checksum(header, payload);
        bytes[offset + 4..offset + 8].copy_from_slice(&crc.to_le_bytes());
        offset += record_bytes_for(payload_bytes);
    }
}

fn scratch_dir(what: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir =
        std::env::temp_dir().join(format!("ringmq-fuzz-wal-{}-{what}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn read_dir(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("read log dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name, std::fs::read(e.path()).expect("read segment"))
        })
        .collect();
    files.sort();
    files
}
