//! Publisher confirms as frames: a run of consecutive confirmed tags may arrive as one
//! `basic.ack(multiple=true)`, and whatever the coalescing, every tag is settled exactly once and
//! every nack is exact. A raw-frame client, because client libraries hide `multiple`.

use crate::common;

use std::collections::BTreeSet;

use common::fixtures::{self, args, long, text};
use common::{amqp, step, unique, Broker};
use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";
const FRAME_METHOD: u8 = 1;
const FRAME_HEADER: u8 = 2;
const FRAME_BODY: u8 = 3;
const FRAME_HEARTBEAT: u8 = 8;
const FRAME_END: u8 = 0xCE;
/// A frame this big from the server means the decoder here is lost.
const FRAME_SIZE_MAX: usize = 1 << 20;
const FRAME_MAX: u32 = 131_072;
/// Publishes written back to back before any confirm is read: the window of 1,000.
const PIPELINED_PUBLISHES: u64 = 1000;
const TRANSIENT_BODY_BYTES: usize = 16;
const PERSISTENT_BODY_BYTES: usize = 1024;
/// Length of the reject-publish queue in the mixed test: publishes to it past this are nacked.
const REJECT_QUEUE_LENGTH_MAX: u64 = 10;

const BASIC_ACK: (u16, u16) = (60, 80);
const BASIC_NACK: (u16, u16) = (60, 120);

per_shard_count!(
    pipelined_transient_publishes_get_multiple_acks,
    pipelined_persistent_publishes_get_multiple_acks,
    transient_mix_of_shards_and_nacks_settles_every_tag_once,
    persistent_mix_of_shards_and_nacks_settles_every_tag_once,
);

/// Big-endian AMQP argument encoding.
#[derive(Default)]
struct Args(Vec<u8>);

impl Args {
    fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }
    fn u16(mut self, v: u16) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn short_str(mut self, s: &str) -> Self {
        self.0.push(u8::try_from(s.len()).expect("short string"));
        self.0.extend_from_slice(s.as_bytes());
        self
    }
    fn long_bytes(mut self, b: &[u8]) -> Self {
        self.0
            .extend_from_slice(&u32::try_from(b.len()).expect("long").to_be_bytes());
        self.0.extend_from_slice(b);
        self
    }
}

fn frame_bytes(kind: u8, channel: u16, payload: &[u8], out: &mut Vec<u8>) {
    out.push(kind);
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&u32::try_from(payload.len()).expect("size").to_be_bytes());
    out.extend_from_slice(payload);
    out.push(FRAME_END);
}

fn method_frame(channel: u16, (class, method): (u16, u16), args: Args, out: &mut Vec<u8>) {
    let mut payload = Args::default().u16(class).u16(method).0;
    payload.extend_from_slice(&args.0);
    frame_bytes(FRAME_METHOD, channel, &payload, out);
}

fn take_u16(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes(bytes[at..at + 2].try_into().expect("2 bytes"))
}

fn take_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

/// One method from the server: (class, method) and its arguments.
struct Method {
    id: (u16, u16),
    args: Vec<u8>,
}

/// A raw connection with channel 1 open in confirm mode.
struct Raw {
    stream: TcpStream,
}

const CHANNEL: u16 = 1;

impl Raw {
    async fn connect(broker: &Broker) -> Raw {
        let stream = step(
            "raw connect",
            TcpStream::connect(("127.0.0.1", broker.port())),
        )
        .await
        .expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let mut raw = Raw { stream };
        raw.open().await;
        raw
    }

    async fn send(&mut self, bytes: &[u8]) {
        step("write to server", self.stream.write_all(bytes))
            .await
            .expect("write");
    }

    async fn send_method(&mut self, channel: u16, id: (u16, u16), args: Args) {
        let mut out = Vec::new();
        method_frame(channel, id, args, &mut out);
        self.send(&out).await;
    }

    async fn read_exact(&mut self, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        step("read from server", self.stream.read_exact(&mut buf))
            .await
            .expect("read from server");
        buf
    }

    /// The next method, skipping heartbeats; a close from the server fails the test.
    async fn read_method(&mut self) -> Method {
        loop {
            let header = self.read_exact(7).await;
            let size = u32::from_be_bytes(header[3..7].try_into().expect("4 bytes")) as usize;
            assert!(size <= FRAME_SIZE_MAX, "server frame of {size} bytes");
            let payload = self.read_exact(size).await;
            assert_eq!(self.read_exact(1).await, [FRAME_END], "frame without end");
            if header[0] == FRAME_HEARTBEAT {
                continue;
            }
            assert_eq!(header[0], FRAME_METHOD, "expected a method frame");
            let id = (take_u16(&payload, 0), take_u16(&payload, 2));
            let args = payload[4..].to_vec();
            if matches!(id, (10, 50) | (20, 40)) {
                let code = take_u16(&args, 0);
                let text_len = usize::from(args[2]);
                let text = String::from_utf8_lossy(&args[3..3 + text_len]);
                panic!("server closed: {code} {text}");
            }
            return Method { id, args };
        }
    }

    async fn expect_method(&mut self, id: (u16, u16)) -> Method {
        let method = self.read_method().await;
        assert_eq!(method.id, id, "unexpected method");
        method
    }

    /// Handshake as guest (heartbeats off), channel 1 open, confirm.select.
    async fn open(&mut self) {
        self.send(PROTOCOL_HEADER).await;
        self.expect_method((10, 10)).await;
        let properties = Args::default()
            .short_str("product")
            .u8(b'S')
            .long_bytes(b"ringmq confirms test");
        let start_ok = Args::default()
            .long_bytes(&properties.0)
            .short_str("PLAIN")
            .long_bytes(b"\0guest\0guest")
            .short_str("en_US");
        self.send_method(0, (10, 11), start_ok).await;
        self.expect_method((10, 30)).await;
        let tune_ok = Args::default().u16(2047).u32(FRAME_MAX).u16(0);
        self.send_method(0, (10, 31), tune_ok).await;
        let open = Args::default().short_str("/").short_str("").u8(0);
        self.send_method(0, (10, 40), open).await;
        self.expect_method((10, 41)).await;
        self.send_method(CHANNEL, (20, 10), Args::default().short_str(""))
            .await;
        self.expect_method((20, 11)).await;
        self.send_method(CHANNEL, (85, 10), Args::default().u8(0))
            .await;
        self.expect_method((85, 11)).await;
    }

    /// queue.declare with no arguments; placed on this connection's shard.
    async fn declare_queue(&mut self, queue: &str, durable: bool) {
        let declare = Args::default()
            .u16(0)
            .short_str(queue)
            .u8(if durable { 2 } else { 0 })
            .long_bytes(&[]);
        self.send_method(CHANNEL, (50, 10), declare).await;
        self.expect_method((50, 11)).await;
    }

    async fn delete_queue(&mut self, queue: &str) {
        let delete = Args::default().u16(0).short_str(queue).u8(0);
        self.send_method(CHANNEL, (50, 40), delete).await;
        self.expect_method((50, 41)).await;
    }

    /// Writes every publish before reading anything: the confirms of a whole window are then
    /// decided close together, as under a pipelining publisher.
    async fn publish_pipelined(
        &mut self,
        routing_keys: &[&str],
        body_bytes: usize,
        persistent: bool,
    ) {
        let mut out = Vec::new();
        let body = vec![b'x'; body_bytes];
        for routing_key in routing_keys {
            let publish = Args::default()
                .u16(0)
                .short_str("")
                .short_str(routing_key)
                .u8(0);
            method_frame(CHANNEL, (60, 40), publish, &mut out);
            let header = Args::default().u16(60).u16(0).u64(body.len() as u64);
            let header = if persistent {
                header.u16(0x1000).u8(2)
            } else {
                header.u16(0)
            };
            frame_bytes(FRAME_HEADER, CHANNEL, &header.0, &mut out);
            frame_bytes(FRAME_BODY, CHANNEL, &body, &mut out);
        }
        self.send(&out).await;
    }

    /// Reads confirms until tags 1..=published are all settled.
    async fn read_confirms(&mut self, published: u64) -> Settled {
        let mut settled = Settled {
            outstanding: (1..=published).collect(),
            ..Settled::default()
        };
        while !settled.outstanding.is_empty() {
            let method = self.read_method().await;
            let tag = take_u64(&method.args, 0);
            let multiple = method.args[8] & 1 != 0;
            match method.id {
                BASIC_ACK => settled.settle(tag, multiple, true),
                BASIC_NACK => settled.settle(tag, multiple, false),
                other => panic!("expected basic.ack or basic.nack, got {other:?}"),
            }
        }
        settled
    }
}

/// The confirms seen, tag by tag.
#[derive(Default, Debug)]
struct Settled {
    outstanding: BTreeSet<u64>,
    acked: BTreeSet<u64>,
    nacked: BTreeSet<u64>,
    multiple_acks: usize,
    frames: usize,
}

impl Settled {
    /// A frame must settle its own tag for the first time; with `multiple` it also settles
    /// every outstanding tag below.
    fn settle(&mut self, tag: u64, multiple: bool, ok: bool) {
        assert!(
            self.outstanding.contains(&tag),
            "tag {tag} confirmed twice or never published (ok={ok}, multiple={multiple})"
        );
        let covered: Vec<u64> = if multiple {
            self.outstanding.range(..=tag).copied().collect()
        } else {
            vec![tag]
        };
        for seq in covered {
            self.outstanding.remove(&seq);
            let target = if ok {
                &mut self.acked
            } else {
                &mut self.nacked
            };
            target.insert(seq);
        }
        self.frames += 1;
        self.multiple_acks += usize::from(ok && multiple);
    }
}

async fn pipelined_publishes_get_multiple_acks(broker: &Broker, persistent: bool) {
    let mut raw = Raw::connect(broker).await;
    let queue = unique("confirms-pipelined");
    raw.declare_queue(&queue, persistent).await;
    let keys = vec![queue.as_str(); PIPELINED_PUBLISHES as usize];
    let body_bytes = if persistent {
        PERSISTENT_BODY_BYTES
    } else {
        TRANSIENT_BODY_BYTES
    };
    raw.publish_pipelined(&keys, body_bytes, persistent).await;
    let settled = raw.read_confirms(PIPELINED_PUBLISHES).await;
    raw.delete_queue(&queue).await;
    // Shown with --nocapture: how far the confirms were coalesced.
    eprintln!(
        "{PIPELINED_PUBLISHES} publishes (persistent={persistent}): {} confirm frames, {} with multiple",
        settled.frames, settled.multiple_acks
    );
    assert_eq!(
        settled.acked,
        (1..=PIPELINED_PUBLISHES).collect::<BTreeSet<_>>()
    );
    assert!(settled.nacked.is_empty(), "nacked: {:?}", settled.nacked);
    assert!(
        settled.multiple_acks > 0,
        "{PIPELINED_PUBLISHES} pipelined publishes, {} confirm frames, none with multiple=true",
        settled.frames
    );
}

async fn pipelined_transient_publishes_get_multiple_acks(broker: &Broker) {
    pipelined_publishes_get_multiple_acks(broker, false).await;
}

async fn pipelined_persistent_publishes_get_multiple_acks(broker: &Broker) {
    pipelined_publishes_get_multiple_acks(broker, true).await;
}

/// Publishes spread over a queue on each shard and a reject-publish queue that is full after
/// its first few: local confirms are decided while remote ones are still pending, so runs are
/// broken by pending tags and by nacks.
async fn mix_of_shards_and_nacks_settles_every_tag_once(broker: &Broker, persistent: bool) {
    let pair = fixtures::pair(broker).await;
    let home = amqp::channel(&pair.home).await;
    let away = amqp::channel(&pair.away).await;
    let home_queue = unique("confirms-home");
    let away_queue = unique("confirms-away");
    let reject_queue = unique("confirms-reject");
    let options = QueueDeclareOptions {
        durable: persistent,
        ..QueueDeclareOptions::default()
    };
    let reject_args = args(&[
        ("x-max-length", long(REJECT_QUEUE_LENGTH_MAX as i64)),
        ("x-overflow", text("reject-publish")),
    ]);
    let declares = [
        (&home, &home_queue, FieldTable::default()),
        (&away, &away_queue, FieldTable::default()),
        (&away, &reject_queue, reject_args),
    ];
    for (channel, queue, arguments) in declares {
        step("declare", channel.queue_declare(queue, options, arguments))
            .await
            .expect("declare");
    }
    // Every fourth publish goes to the reject-publish queue; the rest alternate between shards.
    let keys: Vec<&str> = (0..PIPELINED_PUBLISHES)
        .map(|i| match i % 4 {
            0 => reject_queue.as_str(),
            2 => away_queue.as_str(),
            _ => home_queue.as_str(),
        })
        .collect();
    let expected_nacks: BTreeSet<u64> = (1..=PIPELINED_PUBLISHES)
        .filter(|tag| (tag - 1) % 4 == 0)
        .skip(REJECT_QUEUE_LENGTH_MAX as usize)
        .collect();
    let mut raw = Raw::connect(broker).await;
    let body_bytes = if persistent {
        PERSISTENT_BODY_BYTES
    } else {
        TRANSIENT_BODY_BYTES
    };
    raw.publish_pipelined(&keys, body_bytes, persistent).await;
    let settled = raw.read_confirms(PIPELINED_PUBLISHES).await;
    for queue in [&home_queue, &away_queue, &reject_queue] {
        step(
            "delete",
            home.queue_delete(queue, QueueDeleteOptions::default()),
        )
        .await
        .expect("delete");
    }
    assert_eq!(settled.nacked, expected_nacks, "nacked tags");
    let expected_acks: BTreeSet<u64> = (1..=PIPELINED_PUBLISHES)
        .filter(|tag| !expected_nacks.contains(tag))
        .collect();
    assert_eq!(settled.acked, expected_acks, "acked tags");
}

async fn transient_mix_of_shards_and_nacks_settles_every_tag_once(broker: &Broker) {
    mix_of_shards_and_nacks_settles_every_tag_once(broker, false).await;
}

async fn persistent_mix_of_shards_and_nacks_settles_every_tag_once(broker: &Broker) {
    mix_of_shards_and_nacks_settles_every_tag_once(broker, true).await;
}
