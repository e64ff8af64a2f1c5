//! A topology record's payload as recovery reads it from the log (declares, bindings, users,
//! permissions...): whatever the bytes, an error or a change, never a panic; a decoded change
//! encodes to bytes that decode to the same encoding.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use ringmq::broker::persist::{decode_change, encode_change};

fuzz_target!(|data: &[u8]| {
    let Ok(change) = decode_change(Bytes::copy_from_slice(data)) else {
        return;
    };
    let mut encoded = BytesMut::new();
    encode_change(&change, &mut encoded);
    let again = decode_change(encoded.clone().freeze()).expect("a record ringmq wrote must decode");
    let mut reencoded = BytesMut::new();
    encode_change(&again, &mut reencoded);
    assert_eq!(
        encoded, reencoded,
        "decode(encode(change)) encodes differently"
    );
});
