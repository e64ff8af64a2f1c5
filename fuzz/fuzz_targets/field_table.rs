//! Field tables as a SASL AMQPLAIN response carries them (the one table a peer sends before it
//! has authenticated): never a panic, and a decoded table encodes to bytes that decode to the
//! same encoding (NaN floats make value equality the wrong check).
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use ringmq::protocol::decode_table_body;
use ringmq::protocol::wire::write_table;

fuzz_target!(|data: &[u8]| {
    let Ok(table) = decode_table_body(data) else {
        return;
    };
    let mut encoded = BytesMut::new();
    write_table(&mut encoded, &table);
    let body = &encoded[4..];
    let again = decode_table_body(body).expect("a table ringmq encoded must decode");
    let mut reencoded = BytesMut::new();
    write_table(&mut reencoded, &again);
    assert_eq!(
        encoded, reencoded,
        "decode(encode(table)) encodes differently"
    );
});
