//! Raw-socket tests: what ringmq does with bytes no well-behaved client sends. Black-box on
//! purpose: a tiny frame codec (tests/common/raw.rs) instead of the crate's protocol module.
//! After every bad connection, a well-behaved one must still work.

use crate::common;

use std::io::Read;

use common::raw::*;
use common::Broker;

per_shard_count!(
    wrong_protocol_header_is_answered_and_closed,
    http_request_is_answered_and_closed,
    unknown_frame_type_is_501,
    missing_frame_end_is_501,
    oversize_frame_is_501,
    bad_credentials_are_403,
    unknown_vhost_is_530,
    method_on_unopened_channel_is_504,
    exclusive_queues_are_gone_when_the_server_closes,
    good_connection_survives_all_bad_ones,
    server_sends_heartbeats_when_idle,
    silent_client_is_disconnected_after_missed_heartbeats,
);

fn assert_still_serves(broker: &Broker) {
    let mut good = Raw::open(broker);
    good.open_channel(1);
    good.declare_queue(1, &common::unique("still-ok"));
}

fn expect_header_answer(broker: &Broker, sent: &[u8]) {
    let mut raw = Raw::connect(broker);
    raw.send(sent);
    let answer = raw.read_exact(8);
    assert_eq!(
        answer, PROTOCOL_HEADER,
        "server must answer with its own header"
    );
    raw.expect_eof();
    assert_still_serves(broker);
}

async fn wrong_protocol_header_is_answered_and_closed(broker: &Broker) {
    expect_header_answer(broker, b"AMQP\x01\x01\x00\x0a");
    expect_header_answer(broker, b"AMQP\x00\x00\x08\x00");
}

async fn http_request_is_answered_and_closed(broker: &Broker) {
    expect_header_answer(broker, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
}

async fn unknown_frame_type_is_501(broker: &Broker) {
    let mut raw = Raw::open(broker);
    raw.send(&frame_bytes(9, 0, b"junk", FRAME_END));
    let close = raw.expect_connection_close();
    assert_eq!(close.code, FRAME_ERROR, "{close:?}");
    assert_still_serves(broker);
}

async fn missing_frame_end_is_501(broker: &Broker) {
    let mut raw = Raw::open(broker);
    let payload = method_payload(20, 10, Args::default().short_str(""));
    raw.send(&frame_bytes(FRAME_METHOD, 1, &payload, 0x00));
    let close = raw.expect_connection_close();
    assert_eq!(close.code, FRAME_ERROR, "{close:?}");
    assert_still_serves(broker);
}

async fn oversize_frame_is_501(broker: &Broker) {
    let mut raw = Raw::open(broker);
    raw.open_channel(1);
    // A body-less method padded past frame_max: only the size matters.
    let mut payload = method_payload(50, 10, Args::default().u16(0).short_str("big").u8(0).u32(0));
    payload.resize(FRAME_MAX as usize + 1024, 0);
    raw.send(&frame_bytes(FRAME_METHOD, 1, &payload, FRAME_END));
    let close = raw.expect_connection_close();
    assert_eq!(close.code, FRAME_ERROR, "{close:?}");
    assert_still_serves(broker);
}

async fn bad_credentials_are_403(broker: &Broker) {
    let mut raw = Raw::connect(broker);
    raw.authenticate("guest", "not-the-password");
    let close = raw.expect_connection_close();
    assert_eq!(close.code, ACCESS_REFUSED, "{close:?}");
    assert!(close.text.starts_with("ACCESS_REFUSED"), "{close:?}");
    let mut raw = Raw::connect(broker);
    raw.authenticate("nobody", "guest");
    assert_eq!(raw.expect_connection_close().code, ACCESS_REFUSED);
    assert_still_serves(broker);
}

async fn unknown_vhost_is_530(broker: &Broker) {
    let mut raw = Raw::connect(broker);
    raw.authenticate("guest", "guest");
    raw.tune();
    raw.open_vhost(&common::unique("no-such-vhost"));
    let close = raw.expect_connection_close();
    assert_eq!(close.code, NOT_ALLOWED, "{close:?}");
    assert_still_serves(broker);
}

async fn method_on_unopened_channel_is_504(broker: &Broker) {
    let mut raw = Raw::open(broker);
    // queue.declare on channel 7, never opened.
    let args = Args::default().u16(0).short_str("q").u8(0).u32(0);
    raw.send_method(7, 50, 10, args);
    let close = raw.expect_connection_close();
    assert_eq!(close.code, CHANNEL_ERROR, "{close:?}");
    assert_still_serves(broker);
}

/// When the server closes a connection, its exclusive queues are deleted before connection.close
/// is sent: a client that answers close-ok and reconnects at once (py-amqp's test suite does,
/// after a 540 for `immediate`) must be able to declare them again, not get 405 RESOURCE_LOCKED.
async fn exclusive_queues_are_gone_when_the_server_closes(broker: &Broker) {
    let queue = common::unique("exclusive-at-close");
    let declare_exclusive = |raw: &mut Raw| {
        let args = Args::default()
            .u16(0)
            .short_str(&queue)
            .u8(0b0000_0100) // exclusive
            .u32(0);
        raw.send_method(1, 50, 10, args);
        raw.read_method()
    };
    let mut first = Raw::open(broker);
    first.open_channel(1);
    let (_, ok) = declare_exclusive(&mut first);
    assert_eq!((ok.class, ok.method), (50, 11), "queue.declare-ok");
    // A method on a channel never opened: the server closes the connection (504).
    first.send_method(
        7,
        50,
        10,
        Args::default().u16(0).short_str("q").u8(0).u32(0),
    );
    let close = first.expect_method(10, 50);
    assert_eq!(take_u16(&close.args, 0), CHANNEL_ERROR);

    // close-ok not sent yet: the queue must already be gone.
    let mut second = Raw::open(broker);
    second.open_channel(1);
    let (_, reply) = declare_exclusive(&mut second);
    assert_eq!(
        (reply.class, reply.method),
        (50, 11),
        "declare-ok, not a channel.close with 405: {:?}",
        String::from_utf8_lossy(&reply.args)
    );
    first.send_method(0, 10, 51, Args::default());
    first.expect_eof();
}

/// One connection held open across every kind of bad neighbour.
async fn good_connection_survives_all_bad_ones(broker: &Broker) {
    let mut good = Raw::open(broker);
    good.open_channel(1);
    let bad_inputs: [&[u8]; 3] = [
        b"AMQP\x01\x01\x00\x0a",
        b"\x00\x00\x00\x00\x00\x00\x00\x00",
        &[0xFF; 64],
    ];
    for (i, bad) in bad_inputs.iter().enumerate() {
        let mut raw = Raw::connect(broker);
        raw.send(bad);
        // The server answers or hangs up; either way it must not disturb `good`.
        let mut sink = Vec::new();
        let _ = raw.stream.read_to_end(&mut sink);
        good.declare_queue(1, &format!("{}-{i}", common::unique("good")));
    }
    let mut raw = Raw::open(broker);
    raw.send(&frame_bytes(9, 0, b"junk", FRAME_END));
    raw.expect_connection_close();
    good.declare_queue(1, &common::unique("good-last"));
}

/// With heartbeat=1 negotiated and nothing else to say, the server sends heartbeat frames.
async fn server_sends_heartbeats_when_idle(broker: &Broker) {
    let mut raw = Raw::connect(broker);
    raw.authenticate("guest", "guest");
    raw.tune_with_heartbeat(1);
    raw.open_vhost("/");
    raw.expect_method(10, 41);
    // The read timeout (5 s) bounds the wait; the server beats every half interval.
    let mut heartbeats = 0;
    while heartbeats < 2 {
        let frame = raw.read_frame();
        assert_eq!(
            frame.kind, FRAME_HEARTBEAT,
            "only heartbeats on an idle connection"
        );
        assert_eq!(frame.channel, 0);
        assert!(frame.payload.is_empty());
        heartbeats += 1;
        // Answer, so the server keeps the connection.
        raw.send(&frame_bytes(FRAME_HEARTBEAT, 0, &[], FRAME_END));
    }
}

/// A client that negotiated heartbeat=1 and then goes silent is disconnected (two missed
/// intervals), and other connections are unaffected.
async fn silent_client_is_disconnected_after_missed_heartbeats(broker: &Broker) {
    let mut raw = Raw::connect(broker);
    raw.authenticate("guest", "guest");
    raw.tune_with_heartbeat(1);
    raw.open_vhost("/");
    raw.expect_method(10, 41);
    // We never send anything again; the server must hang up within the read timeout.
    raw.expect_eof();
    assert_still_serves(broker);
}
