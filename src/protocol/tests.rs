//! Codec tests across modules: every method, framing, splits, and a seeded mutation fuzz loop.

use bytes::{BufMut, Bytes, BytesMut};

use super::methods::sample_methods;
use super::properties::tests::all_set;
use super::*;

fn sample_table() -> FieldTable {
    let mut nested = FieldTable::default();
    nested.insert("publisher_confirms", FieldValue::Boolean(true));
    let mut table = FieldTable::default();
    table.insert("capabilities", FieldValue::FieldTable(nested));
    table.insert("x-max-length", FieldValue::LongLongInt(1000));
    table.insert(
        "tags",
        FieldValue::FieldArray(vec![FieldValue::LongString(Bytes::from_static(b"a"))]),
    );
    table
}

fn method_frame(channel: u16, method: &Method) -> BytesMut {
    let mut out = BytesMut::new();
    encode_method_frame(channel, method, &mut out);
    out
}

#[test]
fn every_method_round_trips_through_a_frame() {
    let samples = sample_methods(sample_table);
    assert_eq!(samples.len(), 2 * ALL_METHOD_IDS.len());
    for method in &samples {
        let mut wire = method_frame(7, method);
        let parsed = parse_frame(&mut wire, 0);
        assert_eq!(
            parsed,
            Ok(Some(Frame::Method {
                channel: 7,
                method: method.clone()
            })),
            "{}",
            method.name()
        );
        assert!(wire.is_empty());
    }
}

#[test]
fn every_method_id_is_covered_once_per_sample_set() {
    let samples = sample_methods(sample_table);
    let (first, second) = samples.split_at(ALL_METHOD_IDS.len());
    for set in [first, second] {
        let ids: Vec<(u16, u16)> = set.iter().map(|m| (m.class_id(), m.method_id())).collect();
        assert_eq!(ids, ALL_METHOD_IDS.to_vec());
    }
    assert_eq!(ALL_METHOD_IDS.len(), 64);
}

#[test]
fn method_metadata_follows_the_spec() {
    let publish = Method::from(BasicPublish::default());
    assert_eq!(publish.name(), "basic.publish");
    assert_eq!((publish.class_id(), publish.method_id()), (60, 40));
    assert!(publish.has_content() && !publish.is_synchronous_request());
    let with_content: Vec<&str> = sample_methods(sample_table)
        .iter()
        .filter(|m| m.has_content())
        .map(|m| m.name())
        .collect();
    assert_eq!(
        with_content[..4],
        [
            "basic.publish",
            "basic.return",
            "basic.deliver",
            "basic.get-ok"
        ]
    );
    for sync in [
        Method::from(QueueDeclare::default()),
        Method::from(BasicGet::default()),
        Method::from(BasicRecover::default()),
        Method::from(ConfirmSelect::default()),
        Method::from(ConnectionUpdateSecret::default()),
        Method::from(ChannelFlow::default()),
    ] {
        assert!(sync.is_synchronous_request(), "{}", sync.name());
    }
    for not_sync in [
        Method::from(QueueDeclareOk::default()),
        Method::from(BasicAck::default()),
        Method::from(BasicNack::default()),
        Method::from(ChannelCloseOk),
        Method::from(ConnectionBlocked::default()),
        Method::from(BasicRecoverAsync::default()),
    ] {
        assert!(!not_sync.is_synchronous_request(), "{}", not_sync.name());
    }
    assert_eq!(
        Method::from(ConnectionUpdateSecretOk).name(),
        "connection.update-secret-ok"
    );
    assert_eq!(Method::from(ExchangeUnbindOk).method_id(), 51);
}

/// Wire bytes written out by hand from the spec, so encode and decode cannot agree on a mistake.
#[test]
fn basic_publish_and_deliver_match_hand_written_bytes() {
    let publish = Method::from(BasicPublish {
        exchange: "ex".into(),
        routing_key: "rk".into(),
        mandatory: true,
        immediate: false,
    });
    let expected: &[u8] = &[
        1, 0, 3, 0, 0, 0, 13, // method frame, channel 3, size 13
        0, 60, 0, 40, // basic.publish
        0, 0, // reserved-1
        2, b'e', b'x', 2, b'r', b'k', // exchange, routing-key
        0b01, // mandatory
        0xce,
    ];
    assert_eq!(&method_frame(3, &publish)[..], expected);

    let deliver = Method::from(BasicDeliver {
        consumer_tag: "c".into(),
        delivery_tag: 258,
        redelivered: true,
        exchange: String::new(),
        routing_key: "q".into(),
    });
    let mut out = BytesMut::new();
    encode_content(
        1,
        &deliver,
        &BasicProperties::default(),
        b"hello",
        4096,
        &mut out,
    );
    let expected: &[u8] = &[
        1, 0, 1, 0, 0, 0, 18, 0, 60, 0, 60, 1, b'c', 0, 0, 0, 0, 0, 0, 1, 2, 1, 0, 1, b'q', 0xce,
        2, 0, 1, 0, 0, 0, 14, 0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0xce, //
        3, 0, 1, 0, 0, 0, 5, b'h', b'e', b'l', b'l', b'o', 0xce,
    ];
    assert_eq!(&out[..], expected);
}

#[test]
fn content_frames_parse_back_and_body_is_split_at_frame_max() {
    let method = Method::from(BasicGetOk {
        delivery_tag: 9,
        redelivered: false,
        exchange: "amq.direct".into(),
        routing_key: "k".into(),
        message_count: 3,
    });
    let body: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
    let frame_max = FRAME_MIN_SIZE;
    let mut wire = BytesMut::new();
    encode_content(5, &method, &all_set(), &body, frame_max, &mut wire);

    let mut frames = Vec::new();
    while let Some(frame) = parse_frame(&mut wire, frame_max).expect("valid") {
        frames.push(frame);
    }
    assert!(wire.is_empty());
    assert_eq!(frames.len(), 2 + 3, "10000 bytes in 4088-byte payloads");
    assert_eq!(frames[0], Frame::Method { channel: 5, method });
    let mut raw = BytesMut::new();
    all_set().encode(&mut raw);
    assert_eq!(
        frames[1],
        Frame::Header {
            channel: 5,
            class_id: 60,
            body_size: 10_000,
            raw_properties: raw.freeze(),
        }
    );
    let Frame::Header { raw_properties, .. } = &frames[1] else {
        unreachable!("compared above")
    };
    assert_eq!(
        BasicProperties::decode(&mut raw_properties.clone()).expect("decodes"),
        all_set()
    );
    let mut reassembled = Vec::new();
    for frame in &frames[2..] {
        let Frame::Body {
            channel: 5,
            payload,
        } = frame
        else {
            panic!("expected a body frame, got {frame:?}");
        };
        assert!(payload.len() + FRAME_OVERHEAD <= frame_max as usize);
        reassembled.extend_from_slice(payload);
    }
    assert_eq!(reassembled, body);
}

#[test]
fn empty_body_has_no_body_frames_and_body_is_zero_copy() {
    let mut out = BytesMut::new();
    encode_body_frames(1, b"", 0, &mut out);
    assert!(out.is_empty());

    encode_body_frames(1, b"abc", 0, &mut out);
    let base = out.as_ptr() as usize;
    let Ok(Some(Frame::Body { payload, .. })) = parse_frame(&mut out, 0) else {
        panic!("expected a body frame");
    };
    assert_eq!(&payload[..], b"abc");
    assert_eq!(payload.as_ptr() as usize, base + FRAME_HEADER_SIZE);
}

#[test]
fn heartbeat_round_trips_and_must_be_empty() {
    let mut out = BytesMut::new();
    encode_heartbeat(&mut out);
    assert_eq!(&out[..], &[8, 0, 0, 0, 0, 0, 0, 0xce]);
    assert_eq!(
        parse_frame(&mut out, 0),
        Ok(Some(Frame::Heartbeat { channel: 0 }))
    );
    let mut bad = BytesMut::from(&[8, 0, 0, 0, 0, 0, 1, 0, 0xce][..]);
    assert_eq!(
        parse_frame(&mut bad, 0),
        Err(ProtocolError::BadHeartbeat { size: 1 })
    );
}

fn all_kinds_of_frames() -> Bytes {
    let mut out = BytesMut::new();
    let publish = Method::from(BasicPublish {
        exchange: "x".into(),
        routing_key: "orders.eu".into(),
        mandatory: true,
        immediate: false,
    });
    encode_content(
        2,
        &publish,
        &all_set(),
        &[0xab; 300],
        FRAME_MIN_SIZE,
        &mut out,
    );
    encode_method_frame(
        0,
        &Method::from(ConnectionStart {
            version_major: 0,
            version_minor: 9,
            server_properties: sample_table(),
            mechanisms: Bytes::from_static(b"PLAIN AMQPLAIN"),
            locales: Bytes::from_static(b"en_US"),
        }),
        &mut out,
    );
    encode_heartbeat(&mut out);
    out.freeze()
}

#[test]
fn split_at_every_offset_yields_none_until_complete() {
    let wire = all_kinds_of_frames();
    let mut expected = Vec::new();
    let mut whole = BytesMut::from(&wire[..]);
    while let Some(frame) = parse_frame(&mut whole, 0).expect("valid") {
        expected.push(frame);
    }
    assert_eq!(expected.len(), 5);

    for split in 0..=wire.len() {
        let mut buf = BytesMut::from(&wire[..split]);
        let mut got = Vec::new();
        while let Some(frame) = parse_frame(&mut buf, FRAME_MIN_SIZE).expect("valid prefix") {
            got.push(frame);
        }
        buf.extend_from_slice(&wire[split..]);
        while let Some(frame) = parse_frame(&mut buf, FRAME_MIN_SIZE).expect("valid rest") {
            got.push(frame);
        }
        assert_eq!(got, expected, "split at {split}");
        assert!(buf.is_empty());
    }
}

#[test]
fn frame_level_errors() {
    let mut bad_type = BytesMut::from(&[9, 0, 0, 0, 0, 0, 0][..]);
    assert_eq!(
        parse_frame(&mut bad_type, 0),
        Err(ProtocolError::BadFrameType { frame_type: 9 })
    );

    let mut no_end = method_frame(1, &Method::from(TxSelect));
    let last = no_end.len() - 1;
    no_end[last] = 0;
    assert_eq!(
        parse_frame(&mut no_end, 0),
        Err(ProtocolError::MissingFrameEnd { found: 0 })
    );

    // Rejected from the 7-byte header alone, before the payload arrives.
    let mut huge = BytesMut::from(&[3, 0, 1, 0, 0, 0x10, 0][..]);
    assert_eq!(
        parse_frame(&mut huge, FRAME_MIN_SIZE),
        Err(ProtocolError::FrameTooLarge {
            size: 4096 + 8,
            max: FRAME_MIN_SIZE
        })
    );
    let mut exactly_max = BytesMut::new();
    encode_body_frames(1, &[0; 4088], FRAME_MIN_SIZE, &mut exactly_max);
    assert_eq!(exactly_max.len(), 4096);
    assert!(matches!(
        parse_frame(&mut exactly_max, FRAME_MIN_SIZE),
        Ok(Some(Frame::Body { .. }))
    ));
    let mut max_declared = BytesMut::from(&[3, 0, 1, 0xff, 0xff, 0xff, 0xff][..]);
    assert!(matches!(
        parse_frame(&mut max_declared, 0),
        Err(ProtocolError::FrameTooLarge { .. })
    ));

    let mut short_method = BytesMut::from(&[1, 0, 1, 0, 0, 0, 2, 0, 10, 0xce][..]);
    assert_eq!(
        parse_frame(&mut short_method, 0).map_err(|e| e.reply_code()),
        Err(reply_code::FRAME_ERROR)
    );
}

#[test]
fn method_level_errors_map_to_reply_codes() {
    let mut unknown = BytesMut::from(&[1, 0, 1, 0, 0, 0, 4, 0, 30, 0, 10, 0xce][..]);
    let error = parse_frame(&mut unknown, 0).expect_err("access.request is not in 0-9-1 rabbit");
    assert_eq!(
        error,
        ProtocolError::UnknownMethod {
            class_id: 30,
            method_id: 10
        }
    );
    assert_eq!(error.reply_code(), reply_code::NOT_IMPLEMENTED);

    // tx.select with one stray argument byte.
    let mut trailing = BytesMut::from(&[1, 0, 1, 0, 0, 0, 5, 0, 90, 0, 10, 0, 0xce][..]);
    let error = parse_frame(&mut trailing, 0).expect_err("trailing byte");
    assert_eq!(error, ProtocolError::TrailingBytes { extra: 1 });
    assert_eq!(error.reply_code(), reply_code::SYNTAX_ERROR);

    // queue.declare whose queue name claims 200 bytes.
    let mut truncated =
        BytesMut::from(&[1, 0, 1, 0, 0, 0, 8, 0, 50, 0, 10, 0, 0, 200, b'q', 0xce][..]);
    let error = parse_frame(&mut truncated, 0).expect_err("truncated");
    assert_eq!(error, ProtocolError::Truncated { need: 200, have: 1 });

    let mut bad_utf8 = BytesMut::from(&[1, 0, 1, 0, 0, 0, 6, 0, 60, 0, 21, 1, 0xc3, 0xce][..]);
    assert_eq!(parse_frame(&mut bad_utf8, 0), Err(ProtocolError::BadUtf8));

    let mut out = BytesMut::new();
    encode_header_frame(1, 10, 0, &BasicProperties::default(), &mut out);
    let error = parse_frame(&mut out, 0).expect_err("connection has no content");
    assert_eq!(error.reply_code(), reply_code::UNEXPECTED_FRAME);
}

/// xorshift64*: deterministic, dependency-free randomness for the mutation loop.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }
}

const FUZZ_ITERATIONS: usize = 5_000;
const FUZZ_MUTATIONS_MAX: usize = 8;

fn mutate(rng: &mut Rng, wire: &mut Vec<u8>) {
    for _ in 0..=rng.below(FUZZ_MUTATIONS_MAX) {
        if wire.is_empty() {
            wire.push(rng.next() as u8);
            continue;
        }
        let at = rng.below(wire.len());
        match rng.below(5) {
            0 => wire[at] = rng.next() as u8,
            1 => wire[at] ^= 1 << rng.below(8),
            2 => wire.truncate(at),
            3 => wire.insert(at, rng.next() as u8),
            _ => {
                // Length fields are where parsers break: plant a big or small u32.
                let value = [0u32, 1, 0xff, 0x7fff_ffff, u32::MAX][rng.below(5)];
                let end = (at + 4).min(wire.len());
                wire[at..end].copy_from_slice(&value.to_be_bytes()[..end - at]);
            }
        }
    }
}

#[test]
fn seeded_mutations_never_panic() {
    let mut corpus: Vec<Vec<u8>> = vec![all_kinds_of_frames().to_vec()];
    for method in sample_methods(sample_table) {
        corpus.push(method_frame(1, &method).to_vec());
    }
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut outcomes = [0usize; 3];
    for _ in 0..FUZZ_ITERATIONS {
        let mut wire = corpus[rng.below(corpus.len())].clone();
        mutate(&mut rng, &mut wire);
        let frame_max = [0, FRAME_MIN_SIZE, 131_072][rng.below(3)];
        let mut buf = BytesMut::from(&wire[..]);
        // Each successful parse consumes at least a frame header, so this loop ends.
        loop {
            match parse_frame(&mut buf, frame_max) {
                Ok(Some(frame)) => {
                    outcomes[0] += 1;
                    // Whatever decodes must re-encode without panicking.
                    reencode(&frame);
                }
                Ok(None) => {
                    outcomes[1] += 1;
                    break;
                }
                Err(error) => {
                    outcomes[2] += 1;
                    assert!(error.reply_code() >= 500);
                    break;
                }
            }
        }
    }
    assert!(outcomes.iter().all(|&n| n > 0), "{outcomes:?}");
}

fn reencode(frame: &Frame) {
    let mut out = BytesMut::new();
    match frame {
        Frame::Method { channel, method } => encode_method_frame(*channel, method, &mut out),
        Frame::Header {
            channel,
            class_id,
            body_size,
            raw_properties,
        } => {
            // Properties are decoded by the channel, not the parser: whatever decodes must
            // re-encode too, and what does not is the spec's syntax error.
            match BasicProperties::decode(&mut raw_properties.clone()) {
                Ok(properties) => {
                    encode_header_frame(*channel, *class_id, *body_size, &properties, &mut out)
                }
                Err(error) => assert!(error.reply_code() >= 500),
            }
        }
        Frame::Body { channel, payload } => encode_body_frames(*channel, payload, 0, &mut out),
        Frame::Heartbeat { .. } => encode_heartbeat(&mut out),
    }
    out.put_u8(0);
}

#[test]
fn protocol_header_check() {
    assert_eq!(check_protocol_header(b""), ProtocolHeaderCheck::Incomplete);
    assert_eq!(
        check_protocol_header(b"AMQP\x00"),
        ProtocolHeaderCheck::Incomplete
    );
    assert_eq!(
        check_protocol_header(PROTOCOL_HEADER),
        ProtocolHeaderCheck::Accepted
    );
    assert_eq!(
        check_protocol_header(b"AMQP\x00\x00\x09\x01\x01\x00"),
        ProtocolHeaderCheck::Accepted
    );
    assert_eq!(
        check_protocol_header(b"AMQP\x01\x01\x00\x0a"),
        ProtocolHeaderCheck::Rejected
    );
    assert_eq!(
        check_protocol_header(b"GET "),
        ProtocolHeaderCheck::Rejected
    );
}

#[test]
fn raw_content_and_deliver_encoders_match_the_method_encoders() {
    let mut raw = BytesMut::new();
    all_set().encode(&mut raw);
    let body = vec![7u8; 5000];
    let fields = DeliverFields {
        consumer_tag: "ctag",
        delivery_tag: 99,
        redelivered: true,
        exchange: "ex",
        routing_key: "rk",
    };
    let method = Method::BasicDeliver(BasicDeliver {
        consumer_tag: "ctag".into(),
        delivery_tag: 99,
        redelivered: true,
        exchange: "ex".into(),
        routing_key: "rk".into(),
    });
    let mut expected = BytesMut::new();
    encode_content(3, &method, &all_set(), &body, 4096, &mut expected);
    let mut fast = BytesMut::new();
    encode_deliver(3, &fields, &raw, &body, 4096, &mut fast);
    assert_eq!(fast, expected);
    let mut via_raw = BytesMut::new();
    encode_content_raw(3, &method, &raw, &body, 4096, &mut via_raw);
    assert_eq!(via_raw, expected);
    let Some(Frame::Method { .. }) = parse_frame(&mut fast, 4096).expect("method") else {
        panic!("method frame first");
    };
    let Some(Frame::Header { raw_properties, .. }) = parse_frame(&mut fast, 4096).expect("header")
    else {
        panic!("header frame second");
    };
    assert_eq!(raw_properties, raw.freeze());
}
