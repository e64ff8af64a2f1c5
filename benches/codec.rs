//! Codec micro-benchmarks: the frames on the hot path (basic.publish in, basic.deliver out) and
//! field-table decoding.

use bytes::{Bytes, BytesMut};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use ringmq::protocol::wire::{read_table, write_table};
use ringmq::protocol::{
    encode_content, parse_frame, BasicDeliver, BasicProperties, BasicPublish, FieldTable,
    FieldValue, Method,
};

/// A publish as a client sends it: method, content header and one body frame.
fn publish_bytes(body: &[u8]) -> BytesMut {
    let method = Method::BasicPublish(BasicPublish {
        exchange: "amq.direct".to_string(),
        routing_key: "orders.eu".to_string(),
        mandatory: false,
        immediate: false,
    });
    let properties = BasicProperties {
        delivery_mode: Some(2),
        content_type: Some("application/json".to_string()),
        ..BasicProperties::default()
    };
    let mut out = BytesMut::new();
    encode_content(1, &method, &properties, body, 131_072, &mut out);
    out
}

fn sample_table() -> FieldTable {
    let mut nested = FieldTable::default();
    nested.insert("publisher_confirms", FieldValue::Boolean(true));
    nested.insert("basic.nack", FieldValue::Boolean(true));
    let mut table = FieldTable::default();
    table.insert(
        "x-match",
        FieldValue::LongString(Bytes::from_static(b"all")),
    );
    table.insert(
        "region",
        FieldValue::LongString(Bytes::from_static(b"eu-west")),
    );
    table.insert("priority", FieldValue::LongInt(7));
    table.insert("ts", FieldValue::Timestamp(1_700_000_000));
    table.insert("capabilities", FieldValue::FieldTable(nested));
    table.insert(
        "tags",
        FieldValue::FieldArray(vec![FieldValue::LongLongInt(1), FieldValue::Double(2.5)]),
    );
    table
}

fn codec(c: &mut Criterion) {
    let body = vec![7u8; 16];
    let frames = publish_bytes(&body).freeze();
    let mut group = c.benchmark_group("codec");
    group.throughput(Throughput::Elements(1));
    group.bench_function("decode publish (3 frames, 16 B body)", |b| {
        b.iter(|| {
            let mut buf = BytesMut::from(&frames[..]);
            for _ in 0..3 {
                black_box(parse_frame(&mut buf, 131_072).ok().flatten());
            }
        })
    });
    let message_properties = BasicProperties {
        delivery_mode: Some(2),
        ..BasicProperties::default()
    };
    let mut out = BytesMut::with_capacity(1 << 20);
    group.bench_function("encode deliver (3 frames, 16 B body)", |b| {
        b.iter(|| {
            if out.len() > (1 << 19) {
                out.clear();
            }
            let method = Method::BasicDeliver(BasicDeliver {
                consumer_tag: "amq.ctag-1".to_string(),
                delivery_tag: 42,
                redelivered: false,
                exchange: "amq.direct".to_string(),
                routing_key: "orders.eu".to_string(),
            });
            encode_content(1, &method, &message_properties, &body, 131_072, &mut out);
        })
    });
    let mut encoded = BytesMut::new();
    write_table(&mut encoded, &sample_table());
    let encoded = encoded.freeze();
    group.bench_function("decode field table (6 fields, nested)", |b| {
        b.iter(|| black_box(read_table(&mut encoded.clone()).ok()))
    });
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
