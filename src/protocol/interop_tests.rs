//! Cross-check against an independent codec: amq-protocol (lapin's, a dev-dependency).
//! Our bytes must parse there and re-encode to the very same bytes, which pins field order,
//! bit packing, reserved fields and table type letters without a hand-written case per method.

use bytes::BytesMut;
use lapin::protocol::basic::{gen_properties, parse_properties};
use lapin::protocol::{gen_class, parse_class};

use super::methods::sample_methods;
use super::properties::tests::all_set;
use super::*;

/// Keys in sorted order: amq-protocol keeps tables in a BTreeMap, we keep wire order.
fn sorted_sample_table() -> FieldTable {
    let mut nested = FieldTable::default();
    nested.insert("publisher_confirms", FieldValue::Boolean(true));
    FieldTable(vec![
        ("capabilities".into(), FieldValue::FieldTable(nested)),
        ("d".into(), FieldValue::Double(0.5)),
        ("i8".into(), FieldValue::ShortShortInt(-3)),
        ("s".into(), FieldValue::ShortInt(-300)),
        (
            "tags".into(),
            FieldValue::FieldArray(vec![FieldValue::Timestamp(7), FieldValue::Void]),
        ),
        ("x-max-length".into(), FieldValue::LongLongInt(1000)),
    ])
}

#[test]
fn every_method_is_byte_identical_through_amq_protocol() {
    for mut method in sample_methods(sorted_sample_table) {
        // amq-protocol treats basic.qos prefetch-size as reserved and always writes 0 (RabbitMQ
        // rejects a non-zero one anyway); everything else must match byte for byte.
        if let Method::BasicQos(qos) = &mut method {
            qos.prefetch_size = 0;
        }
        let mut ours = BytesMut::new();
        ours.extend_from_slice(&method.class_id().to_be_bytes());
        ours.extend_from_slice(&method.method_id().to_be_bytes());
        method.encode(&mut ours);

        let (rest, theirs) = parse_class(&ours[..])
            .unwrap_or_else(|e| panic!("{}: amq-protocol rejects our bytes: {e:?}", method.name()));
        assert!(
            rest.is_empty(),
            "{}: {} bytes left",
            method.name(),
            rest.len()
        );
        let regenerated = gen_class(&theirs)(Vec::new().into())
            .unwrap_or_else(|e| panic!("{}: {e:?}", method.name()))
            .write;
        assert_eq!(regenerated, &ours[..], "{}", method.name());
    }
}

#[test]
fn properties_are_byte_identical_through_amq_protocol() {
    for properties in [all_set(), BasicProperties::default()] {
        let mut ours = BytesMut::new();
        properties.encode(&mut ours);
        let (rest, theirs) = parse_properties(&ours[..]).expect("amq-protocol parses");
        assert!(rest.is_empty());
        let regenerated = gen_properties(&theirs)(Vec::new().into())
            .expect("amq-protocol generates")
            .write;
        assert_eq!(regenerated, &ours[..]);
    }
}
