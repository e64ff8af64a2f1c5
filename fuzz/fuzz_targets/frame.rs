//! The frame parser, every method decoder, field tables and content-header properties, fed
//! arbitrary bytes as a peer would send them. Besides "never panics": whatever parses must
//! encode back to bytes that parse to the same encoding (decode ∘ encode is stable).
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use ringmq::protocol::{
    encode_header_frame, encode_method_frame, parse_frame, BasicProperties, Frame,
};

/// A peer may negotiate any frame_max; the first byte picks one of the interesting ones.
const FRAME_MAX_CHOICES: [u32; 4] = [0, 4096, 131_072, 8];
/// At most this many frames per input (an input is at most a few KiB).
const FRAMES_PER_INPUT_MAX: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let Some((choice, rest)) = data.split_first() else {
        return;
    };
    let frame_max = FRAME_MAX_CHOICES[usize::from(*choice) % FRAME_MAX_CHOICES.len()];
    let mut buf = BytesMut::from(rest);
    for _ in 0..FRAMES_PER_INPUT_MAX {
        match parse_frame(&mut buf, frame_max) {
            Ok(Some(frame)) => check_round_trip(&frame),
            Ok(None) | Err(_) => return,
        }
    }
});

fn check_round_trip(frame: &Frame) {
    let Some(encoded) = encode(frame) else {
        return;
    };
    let mut again = BytesMut::from(&encoded[..]);
    let reparsed = parse_frame(&mut again, 0)
        .expect("a frame ringmq encoded must parse")
        .expect("a frame ringmq encoded is whole");
    assert_eq!(
        encode(&reparsed).as_deref(),
        Some(&encoded[..]),
        "decode(encode(frame)) encodes differently"
    );
}

fn encode(frame: &Frame) -> Option<Vec<u8>> {
    let mut out = BytesMut::new();
    match frame {
        Frame::Method { channel, method } => encode_method_frame(*channel, method, &mut out),
        Frame::Header {
            channel,
            class_id,
            body_size,
            raw_properties,
        } => {
            // The parser leaves properties encoded; the channel decodes them as here.
            let properties = BasicProperties::decode(&mut raw_properties.clone()).ok()?;
            encode_header_frame(*channel, *class_id, *body_size, &properties, &mut out)
        }
        Frame::Body { .. } | Frame::Heartbeat { .. } => return None,
    }
    Some(out.to_vec())
}
