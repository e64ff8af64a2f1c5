//! The channel's decisions without sockets, shards or executors: methods in, actions out.

use std::cell::{Cell, RefCell};

use bytes::Bytes;

use super::access::{self, Access, Authorizer, Operation, ResourceKind};
use super::content::{self, ContentHeader, ContentStep};
use super::publish::{self, Next};
use super::{
    confirm, consume, dispatch, settle, Action, Ctx, Fault, HeaderProperties, PendingPublish,
};
use crate::broker::queue::{ChannelRef, Message, Route};
use crate::broker::{QueueMeta, Topology, TopologyChange};
use crate::limits::{PENDING_CONFIRMS_PER_CHANNEL_MAX, TX_BYTES_MAX};
use crate::protocol::*;
use crate::session::state::{ChannelState, ConsumerTarget, Unacked};
use crate::shard::direct_reply::REPLY_TO_QUEUE;
use crate::shard::messages::{topology_op, SettleOp};

const CONN: u64 = 7;
const USER: &str = "u";
const VHOST: &str = "/";

/// Allows everything and remembers what was asked, in order.
#[derive(Default)]
struct Recording {
    asked: RefCell<Vec<(Operation, ResourceKind, String)>>,
}

impl Authorizer for Recording {
    fn authorize(&self, _: &Topology, _: &str, _: &str, access: &Access<'_>) -> Result<(), Fault> {
        let asked = (access.operation, access.kind, access.name.to_owned());
        self.asked.borrow_mut().push(asked);
        Ok(())
    }

    fn authorize_routing_key(
        &self,
        _: &Topology,
        _: &str,
        _: &str,
        _: &access::RoutingKeyAccess<'_>,
    ) -> Result<(), Fault> {
        Ok(())
    }
}

/// Refuses everything, as a permission table with no entry for the user would.
struct DenyAll;

impl Authorizer for DenyAll {
    fn authorize(
        &self,
        _: &Topology,
        user: &str,
        vhost: &str,
        access: &Access<'_>,
    ) -> Result<(), Fault> {
        Err(access::refused(user, vhost, access))
    }

    fn authorize_routing_key(
        &self,
        _: &Topology,
        user: &str,
        vhost: &str,
        key: &access::RoutingKeyAccess<'_>,
    ) -> Result<(), Fault> {
        Err(access::routing_key_refused(user, vhost, key))
    }
}

struct Fixture {
    topology: Topology,
    state: ChannelState,
    next_id: Cell<u64>,
}

impl Fixture {
    fn new() -> Fixture {
        let mut topology = Topology::new_default();
        topology.apply(&TopologyChange::DeclareQueue {
            queue: QueueMeta {
                id: 1,
                name: "q".to_owned(),
                vhost: VHOST.to_owned(),
                owner_shard: 0,
                durable: false,
                exclusive_owner: None,
                auto_delete: false,
                arguments: FieldTable::default(),
            },
        });
        Fixture {
            topology,
            state: ChannelState::new(),
            next_id: Cell::new(100),
        }
    }

    fn decide_with(
        &mut self,
        authorizer: &dyn Authorizer,
        method: Method,
    ) -> Result<Action, Fault> {
        let new_id = || {
            let id = self.next_id.get();
            self.next_id.set(id + 1);
            id
        };
        let ctx = Ctx {
            channel: ChannelRef {
                conn: CONN,
                channel: 1,
            },
            user: USER,
            vhost: VHOST,
            topology: &self.topology,
            authorizer,
            new_id: &new_id,
        };
        dispatch::decide(&ctx, &mut self.state, method)
    }

    fn decide(&mut self, method: Method) -> Result<Action, Fault> {
        self.decide_with(&access::AllowAll, method)
    }

    /// The accesses `method` asked for, whatever the decision was.
    fn asked(&mut self, method: Method) -> Vec<(Operation, ResourceKind, String)> {
        let recording = Recording::default();
        let _ = self.decide_with(&recording, method);
        recording.asked.into_inner()
    }
}

fn configure(kind: ResourceKind, name: &str) -> (Operation, ResourceKind, String) {
    (Operation::Configure, kind, name.to_owned())
}

fn write(kind: ResourceKind, name: &str) -> (Operation, ResourceKind, String) {
    (Operation::Write, kind, name.to_owned())
}

fn read(kind: ResourceKind, name: &str) -> (Operation, ResourceKind, String) {
    (Operation::Read, kind, name.to_owned())
}

use ResourceKind::{Exchange, Queue};

fn queue_declare(queue: &str, passive: bool, arguments: FieldTable) -> Method {
    Method::QueueDeclare(QueueDeclare {
        queue: queue.to_owned(),
        passive,
        arguments,
        ..Default::default()
    })
}

fn queue_bind(queue: &str, exchange: &str, routing_key: &str) -> Method {
    Method::QueueBind(QueueBind {
        queue: queue.to_owned(),
        exchange: exchange.to_owned(),
        routing_key: routing_key.to_owned(),
        ..Default::default()
    })
}

fn consume_method(queue: &str, tag: &str, no_ack: bool) -> Method {
    Method::BasicConsume(BasicConsume {
        queue: queue.to_owned(),
        consumer_tag: tag.to_owned(),
        no_ack,
        ..Default::default()
    })
}

fn publish_method(exchange: &str) -> Method {
    Method::BasicPublish(BasicPublish {
        exchange: exchange.to_owned(),
        routing_key: "q".to_owned(),
        ..Default::default()
    })
}

// ---- the authorization door ---------------------------------------------------------------

#[test]
fn declares_and_deletes_ask_configure() {
    let mut f = Fixture::new();
    let exchange = Method::ExchangeDeclare(ExchangeDeclare {
        exchange: "x".to_owned(),
        kind: "direct".to_owned(),
        ..Default::default()
    });
    assert_eq!(f.asked(exchange), [configure(Exchange, "x")]);
    let delete = Method::ExchangeDelete(ExchangeDelete {
        exchange: "x".to_owned(),
        ..Default::default()
    });
    assert_eq!(f.asked(delete), [configure(Exchange, "x")]);
    assert_eq!(
        f.asked(queue_declare("new", false, FieldTable::default())),
        [configure(Queue, "new")]
    );
    // Server-named: the owner picks the name and checks it (`check_generated_queue_name`).
    assert!(f
        .asked(queue_declare("", false, FieldTable::default()))
        .is_empty());
    let delete = Method::QueueDelete(QueueDelete {
        queue: "q".to_owned(),
        ..Default::default()
    });
    assert_eq!(f.asked(delete), [configure(Queue, "q")]);
}

#[test]
fn passive_declares_ask_nothing() {
    let mut f = Fixture::new();
    assert!(f
        .asked(queue_declare("q", true, FieldTable::default()))
        .is_empty());
    let exchange = Method::ExchangeDeclare(ExchangeDeclare {
        exchange: "amq.direct".to_owned(),
        passive: true,
        ..Default::default()
    });
    assert!(f.asked(exchange).is_empty());
}

#[test]
fn a_new_queue_with_a_dead_letter_exchange_reads_itself_and_writes_it() {
    let mut f = Fixture::new();
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-dead-letter-exchange",
        FieldValue::LongString("dlx".into()),
    );
    assert_eq!(
        f.asked(queue_declare("new", false, arguments.clone())),
        [
            configure(Queue, "new"),
            read(Queue, "new"),
            write(Exchange, "dlx")
        ]
    );
    // Redeclaring an existing queue creates nothing: only configure, as in RabbitMQ.
    assert_eq!(
        f.asked(queue_declare("q", false, arguments)),
        [configure(Queue, "q")]
    );
}

#[test]
fn bindings_write_the_destination_and_read_the_source() {
    let mut f = Fixture::new();
    assert_eq!(
        f.asked(queue_bind("q", "amq.direct", "k")),
        [write(Queue, "q"), read(Exchange, "amq.direct")]
    );
    let unbind = Method::QueueUnbind(QueueUnbind {
        queue: "q".to_owned(),
        exchange: "amq.fanout".to_owned(),
        ..Default::default()
    });
    assert_eq!(
        f.asked(unbind),
        [write(Queue, "q"), read(Exchange, "amq.fanout")]
    );
    let bind = Method::ExchangeBind(ExchangeBind {
        destination: "d".to_owned(),
        source: "s".to_owned(),
        ..Default::default()
    });
    assert_eq!(f.asked(bind), [write(Exchange, "d"), read(Exchange, "s")]);
    let unbind = Method::ExchangeUnbind(ExchangeUnbind {
        destination: "d".to_owned(),
        source: "s".to_owned(),
        ..Default::default()
    });
    assert_eq!(f.asked(unbind), [write(Exchange, "d"), read(Exchange, "s")]);
}

#[test]
fn publish_writes_the_exchange() {
    assert_eq!(
        Fixture::new().asked(publish_method("")),
        [write(Exchange, "")]
    );
    assert_eq!(
        Fixture::new().asked(publish_method("amq.topic")),
        [write(Exchange, "amq.topic")]
    );
}

#[test]
fn consume_get_and_purge_read_the_queue() {
    let mut f = Fixture::new();
    assert_eq!(f.asked(consume_method("q", "", false)), [read(Queue, "q")]);
    let get = Method::BasicGet(BasicGet {
        queue: "q".to_owned(),
        no_ack: true,
    });
    assert_eq!(f.asked(get), [read(Queue, "q")]);
    let purge = Method::QueuePurge(QueuePurge {
        queue: "q".to_owned(),
        ..Default::default()
    });
    assert_eq!(f.asked(purge), [read(Queue, "q")]);
    // Direct reply-to is no queue: RabbitMQ checks nothing.
    assert!(f.asked(consume_method(REPLY_TO_QUEUE, "", true)).is_empty());
}

#[test]
fn the_door_sees_names_after_resolution() {
    let mut f = Fixture::new();
    f.state.last_queue = Some("q".to_owned());
    // Both empty: the queue and the routing key are the last declared queue.
    assert_eq!(
        f.asked(queue_bind("", "amq.direct", "")),
        [write(Queue, "q"), read(Exchange, "amq.direct")]
    );
    let Ok(Action::Topology {
        change:
            super::Change::Binding(topology_op::Binding {
                destination,
                routing_key,
                ..
            }),
        ..
    }) = f.decide(queue_bind("", "amq.direct", ""))
    else {
        panic!("a binding");
    };
    assert_eq!((destination.as_str(), routing_key.as_str()), ("q", "q"));
    let get = Method::BasicGet(BasicGet::default());
    assert_eq!(f.asked(get), [read(Queue, "q")]);
    assert_eq!(
        f.asked(queue_declare("", true, FieldTable::default())),
        Vec::new()
    );
}

#[test]
fn a_name_that_cannot_be_resolved_is_404_before_the_door() {
    let mut f = Fixture::new();
    let recording = Recording::default();
    let result = f.decide_with(&recording, Method::BasicGet(BasicGet::default()));
    assert_eq!(
        result.err().map(|fault| fault.code),
        Some(reply_code::NOT_FOUND)
    );
    assert!(recording.asked.borrow().is_empty());
}

#[test]
fn methods_without_resources_ask_nothing() {
    let mut f = Fixture::new();
    let qos = Method::BasicQos(BasicQos {
        prefetch_count: 10,
        ..Default::default()
    });
    assert!(f.asked(qos).is_empty());
    assert!(f.asked(Method::TxSelect(TxSelect {})).is_empty());
    let cancel = Method::BasicCancel(BasicCancel {
        consumer_tag: "t".to_owned(),
        no_wait: false,
    });
    assert!(f.asked(cancel).is_empty());
}

#[test]
fn a_refusal_is_403_with_rabbitmq_text_and_a_channel_error() {
    let mut f = Fixture::new();
    let result = f.decide_with(&DenyAll, consume_method("q", "t", false));
    let Err(fault) = result else {
        panic!("refused");
    };
    assert_eq!(fault.code, reply_code::ACCESS_REFUSED);
    assert_eq!(
        fault.text,
        "ACCESS_REFUSED - access to queue 'q' in vhost '/' refused for user 'u'"
    );
    // Soft: the session closes the channel, not the connection.
    assert!(!reply_code::is_hard_error(fault.code));
    // Refused before anything happened: no consumer was registered.
    assert!(f.state.consumers.is_empty());
    let publish = f.decide_with(&DenyAll, publish_method("amq.topic"));
    assert_eq!(
        publish.err().map(|fault| fault.text),
        Some(
            "ACCESS_REFUSED - access to exchange 'amq.topic' in vhost '/' refused for user 'u'"
                .to_owned()
        )
    );
    assert!(f.state.pending_publish.is_none());
}

// ---- consumers ----------------------------------------------------------------------------

#[test]
fn queue_and_reply_consumers_register_through_one_path() {
    let mut f = Fixture::new();
    let Ok(Action::Consume(consume)) = f.decide(consume_method("q", "a", false)) else {
        panic!("a queue consumer");
    };
    assert!(!consume.op.no_ack);
    let key = consume.key;
    assert_eq!(
        f.state.consumers[&key].target,
        ConsumerTarget::Queue { queue: 1, owner: 0 }
    );
    // The same tag on the reply consumer is refused by the same check.
    let reuse = f.decide(consume_method(REPLY_TO_QUEUE, "a", true));
    assert_eq!(
        reuse.err().map(|fault| fault.code),
        Some(reply_code::NOT_ALLOWED)
    );
    let Ok(Action::Reply(Some(Method::BasicConsumeOk(ok)))) =
        f.decide(consume_method(REPLY_TO_QUEUE, "r", true))
    else {
        panic!("a reply consumer");
    };
    assert_eq!(ok.consumer_tag, "r");
    let reply_key = f.state.reply_consumer.expect("reply consumer");
    assert_eq!(
        f.state.consumers[&reply_key].target,
        ConsumerTarget::DirectReply
    );
    // One per channel, and no-ack only.
    let second = f.decide(consume_method(REPLY_TO_QUEUE, "r2", true));
    assert_eq!(
        second.err().map(|fault| fault.text),
        Some("PRECONDITION_FAILED - reply consumer already set".to_owned())
    );
    // Cancelling the reply consumer frees the slot and tells no queue.
    let cancel = Method::BasicCancel(BasicCancel {
        consumer_tag: "r".to_owned(),
        no_wait: false,
    });
    let Ok(Action::Cancel {
        cancelled: None, ..
    }) = f.decide(cancel)
    else {
        panic!("a reply consumer has no queue");
    };
    assert_eq!(f.state.reply_consumer, None);
    assert!(f
        .decide(consume_method(REPLY_TO_QUEUE, "r3", false))
        .is_err());
}

#[test]
fn a_reply_consumer_is_needed_to_ask_for_a_reply() {
    let state = ChannelState::new();
    let mut properties = BasicProperties {
        reply_to: Some(REPLY_TO_QUEUE.to_owned()),
        ..Default::default()
    };
    let channel = ChannelRef {
        conn: CONN,
        channel: 1,
    };
    let refused = super::direct_reply::rewrite_reply_to(&state, channel, &mut properties);
    assert_eq!(
        refused.err().map(|fault| fault.code),
        Some(reply_code::PRECONDITION_FAILED)
    );
    let mut state = ChannelState::new();
    let registration = consume::Registration {
        key: 0xab,
        tag: "r".to_owned(),
        target: ConsumerTarget::DirectReply,
        no_ack: true,
        hold: false,
    };
    consume::register(&mut state, registration).expect("register");
    let rewritten = super::direct_reply::rewrite_reply_to(&state, channel, &mut properties);
    assert_eq!(rewritten.ok(), Some(true));
    assert_eq!(
        properties.reply_to.as_deref(),
        Some("amq.rabbitmq.reply-to.7.1.ab")
    );
}

// ---- settlements --------------------------------------------------------------------------

fn unacked(tag: u64, queue: u64, message_id: u64) -> Unacked {
    Unacked {
        tag,
        queue,
        owner: 0,
        message_id,
    }
}

#[test]
fn ack_multiple_settles_each_queue_once_in_tag_order() {
    let mut f = Fixture::new();
    f.state.unacked = [unacked(1, 2, 10), unacked(2, 1, 20), unacked(3, 2, 11)].into();
    let Ok(Action::Settle(settles)) = f.decide(Method::BasicAck(BasicAck {
        delivery_tag: 3,
        multiple: true,
    })) else {
        panic!("settles");
    };
    let ops: Vec<_> = settles
        .iter()
        .map(|s| match &s.op {
            SettleOp::Ack(ids) => (s.queue, ids.clone()),
            _ => panic!("acks"),
        })
        .collect();
    assert_eq!(ops, [(1, vec![20]), (2, vec![10, 11])]);
    assert!(f.state.unacked.is_empty());
}

#[test]
fn an_unknown_delivery_tag_is_406() {
    let mut f = Fixture::new();
    let result = f.decide(Method::BasicAck(BasicAck {
        delivery_tag: 9,
        multiple: false,
    }));
    assert_eq!(
        result.err().map(|fault| fault.text),
        Some("PRECONDITION_FAILED - unknown delivery tag 9".to_owned())
    );
}

#[test]
fn basic_get_takes_the_next_delivery_tag() {
    let mut state = ChannelState::new();
    assert_eq!(settle::record_get(&mut state, 1, 0, 5, false), 1);
    assert_eq!(settle::record_get(&mut state, 1, 0, 6, true), 2);
    assert_eq!(state.unacked.len(), 1, "no-ack gets are not held");
}

// ---- transactions -------------------------------------------------------------------------

fn message(body_bytes: usize) -> Message {
    let route = Route {
        exchange: "",
        routing_key: "q",
    };
    Message::new(route, &BasicProperties::default(), &vec![0u8; body_bytes])
}

fn pending() -> Box<PendingPublish> {
    Box::new(PendingPublish::new(BasicPublish {
        routing_key: "q".to_owned(),
        ..Default::default()
    }))
}

#[test]
fn a_transaction_buffers_publishes_and_acks_until_commit() {
    let mut f = Fixture::new();
    f.decide(Method::TxSelect(TxSelect {})).expect("select");
    let next = publish::next(&mut f.state, pending(), message(3)).expect("buffered");
    assert!(matches!(next, Next::Buffered));
    f.state.unacked = [unacked(1, 1, 10)].into();
    let Ok(Action::Settle(now)) = f.decide(Method::BasicAck(BasicAck {
        delivery_tag: 1,
        multiple: false,
    })) else {
        panic!("settle");
    };
    assert!(now.is_empty(), "acks wait for commit");
    let Ok(Action::Commit(buffer)) = f.decide(Method::TxCommit(TxCommit {})) else {
        panic!("commit");
    };
    assert_eq!((buffer.publishes.len(), buffer.settles.len()), (1, 1));
    assert!(f
        .state
        .tx
        .as_ref()
        .is_some_and(|tx| tx.publishes.is_empty()));
}

#[test]
fn rollback_makes_acked_messages_unacked_again_in_tag_order() {
    let mut f = Fixture::new();
    f.decide(Method::TxSelect(TxSelect {})).expect("select");
    f.state.unacked = [unacked(1, 1, 10), unacked(2, 1, 11), unacked(3, 1, 12)].into();
    f.decide(Method::BasicAck(BasicAck {
        delivery_tag: 2,
        multiple: false,
    }))
    .expect("ack");
    f.decide(Method::TxRollback(TxRollback {}))
        .expect("rollback");
    let tags: Vec<u64> = f.state.unacked.iter().map(|u| u.tag).collect();
    assert_eq!(tags, [1, 2, 3]);
}

#[test]
fn a_transaction_is_bounded_in_bytes() {
    let mut state = ChannelState::new();
    super::tx::select(&mut state).expect("select");
    let chunk = TX_BYTES_MAX / 4;
    for _ in 0..3 {
        publish::next(&mut state, pending(), message(chunk)).expect("fits");
    }
    // The fourth chunk's allocation (body plus header) passes the bound.
    let refused = publish::next(&mut state, pending(), message(chunk));
    let Err(fault) = refused else {
        panic!("over the byte bound");
    };
    assert_eq!(fault.code, reply_code::PRECONDITION_FAILED);
    assert!(!reply_code::is_hard_error(fault.code));
    let tx = state.tx.as_ref().expect("tx");
    assert_eq!(tx.publishes.len(), 3);
    assert!(tx.bytes() <= TX_BYTES_MAX);
}

#[test]
fn the_first_message_of_a_transaction_always_fits() {
    let mut state = ChannelState::new();
    super::tx::select(&mut state).expect("select");
    publish::next(&mut state, pending(), message(TX_BYTES_MAX)).expect("first fits");
}

#[test]
fn tx_and_confirm_modes_exclude_each_other() {
    let mut f = Fixture::new();
    f.decide(Method::TxSelect(TxSelect {})).expect("tx");
    let confirm = f.decide(Method::ConfirmSelect(ConfirmSelect { nowait: false }));
    assert_eq!(
        confirm.err().map(|fault| fault.text),
        Some("PRECONDITION_FAILED - cannot switch from tx to confirm mode".to_owned())
    );
    let commit_outside = Fixture::new().decide(Method::TxCommit(TxCommit {}));
    assert_eq!(
        commit_outside.err().map(|fault| fault.text),
        Some("PRECONDITION_FAILED - channel is not transactional".to_owned())
    );
}

// ---- confirms -----------------------------------------------------------------------------

#[test]
fn confirms_are_numbered_from_one_and_wait_for_remote_shards() {
    let mut f = Fixture::new();
    f.decide(Method::ConfirmSelect(ConfirmSelect { nowait: true }))
        .expect("select");
    let seqs: Vec<Option<u64>> = (0..3)
        .map(
            |_| match publish::next(&mut f.state, pending(), message(1)) {
                Ok(Next::Route { confirm_seq, .. }) => confirm_seq,
                _ => panic!("routed"),
            },
        )
        .collect();
    assert_eq!(seqs, [Some(1), Some(2), Some(3)]);
    assert_eq!(confirm::routed(&mut f.state, 1, 0, false), Some(true));
    assert_eq!(confirm::routed(&mut f.state, 2, 0, true), Some(false));
    assert_eq!(confirm::routed(&mut f.state, 3, 2, false), None);
    let pending = &f.state.confirm.as_ref().expect("confirms").pending;
    assert_eq!(pending.get(&3), Some(&(2, false)));
}

#[test]
fn pending_confirms_are_bounded_per_channel() {
    let mut state = ChannelState::new();
    assert!(!confirm::at_pending_limit(&state));
    confirm::select(&mut state).expect("select");
    for seq in 1..=PENDING_CONFIRMS_PER_CHANNEL_MAX as u64 {
        assert!(!confirm::at_pending_limit(&state));
        assert_eq!(confirm::routed(&mut state, seq, 1, false), None);
    }
    assert!(confirm::at_pending_limit(&state));
}

// ---- content assembly ---------------------------------------------------------------------

fn header(body_size: u64) -> ContentHeader {
    ContentHeader {
        class_id: BasicPublish::CLASS_ID,
        body_size,
        // The default properties: no flag set.
        raw_properties: Bytes::from_static(&[0, 0]),
    }
}

fn publishing() -> ChannelState {
    let mut state = ChannelState::new();
    state.pending_publish = Some(pending());
    state
}

#[test]
fn content_is_assembled_from_its_frames() {
    let mut state = publishing();
    let step = content::on_header(&mut state, header(5), 1024).expect("header");
    assert!(matches!(step, ContentStep::Incomplete));
    let step = content::on_body(&mut state, Bytes::from_static(b"ab")).expect("body");
    assert!(matches!(step, ContentStep::Incomplete));
    let step = content::on_body(&mut state, Bytes::from_static(b"cde")).expect("body");
    let ContentStep::Complete(pending) = step else {
        panic!("complete");
    };
    assert_eq!(pending.body().collect::<Vec<_>>().concat(), b"abcde");
    assert!(state.pending_publish.is_none());
}

#[test]
fn an_empty_body_is_complete_at_its_header() {
    let mut state = publishing();
    let step = content::on_header(&mut state, header(0), 1024).expect("header");
    assert!(matches!(step, ContentStep::Complete(_)));
}

#[test]
fn content_out_of_place_is_unexpected_frame() {
    let mut state = ChannelState::new();
    let no_publish = content::on_header(&mut state, header(1), 1024);
    assert_eq!(
        no_publish.err().map(|fault| fault.code),
        Some(reply_code::UNEXPECTED_FRAME)
    );
    let mut state = publishing();
    let body_first = content::on_body(&mut state, Bytes::from_static(b"x"));
    assert!(body_first.is_err());
    let mut state = publishing();
    let wrong_class = ContentHeader {
        class_id: QueueDeclare::CLASS_ID,
        ..header(1)
    };
    assert!(content::on_header(&mut state, wrong_class, 1024).is_err());
    let mut state = publishing();
    content::on_header(&mut state, header(1), 1024).expect("header");
    let too_long = content::on_body(&mut state, Bytes::from_static(b"xy"));
    assert_eq!(
        too_long.err().map(|fault| fault.text),
        Some("UNEXPECTED_FRAME - unexpected content body beyond the declared size".to_owned())
    );
    // A method while content is due is a connection error too.
    let mut f = Fixture::new();
    f.state.pending_publish = Some(pending());
    let method = f.decide(Method::TxSelect(TxSelect {}));
    assert_eq!(
        method.err().map(|fault| fault.code),
        Some(reply_code::UNEXPECTED_FRAME)
    );
}

#[test]
fn a_body_over_the_max_closes_the_channel_with_rabbitmq_text() {
    let mut state = publishing();
    let step = content::on_header(&mut state, header(2048), 1024).expect("header");
    let ContentStep::Refused(fault) = step else {
        panic!("refused");
    };
    assert_eq!(
        fault.text,
        "PRECONDITION_FAILED - message size 2048 is larger than configured max size 1024"
    );
    assert!(state.pending_publish.is_none());
}

#[test]
fn a_closing_channel_ignores_content() {
    let mut state = publishing();
    state.closing = true;
    let step = content::on_body(&mut state, Bytes::from_static(b"x")).expect("ignored");
    assert!(matches!(step, ContentStep::Ignored));
}

// ---- publishing ---------------------------------------------------------------------------

#[test]
fn publish_checks_its_exchange_before_content() {
    let mut f = Fixture::new();
    let missing = f.decide(publish_method("nope"));
    assert_eq!(
        missing.err().map(|fault| fault.text),
        Some("NOT_FOUND - no exchange 'nope' in vhost '/'".to_owned())
    );
    let immediate = Method::BasicPublish(BasicPublish {
        immediate: true,
        ..Default::default()
    });
    assert_eq!(
        f.decide(immediate).err().map(|fault| fault.code),
        Some(reply_code::NOT_IMPLEMENTED)
    );
    assert!(matches!(
        f.decide(publish_method("")),
        Ok(Action::Reply(None))
    ));
    assert!(f.state.pending_publish.is_some());
}

#[test]
fn message_properties_are_checked_as_rabbitmq_does() {
    let state = ChannelState::new();
    let channel = ChannelRef {
        conn: CONN,
        channel: 1,
    };
    let mut wrong_user = pending();
    wrong_user.properties = Some(HeaderProperties::Decoded(Box::new(BasicProperties {
        user_id: Some("other".to_owned()),
        ..Default::default()
    })));
    let refused = publish::build_message(USER, channel, &state, &mut wrong_user);
    assert_eq!(
        refused.err().map(|fault| fault.text),
        Some(
            "PRECONDITION_FAILED - user_id property set to 'other' but authenticated user was 'u'"
                .to_owned()
        )
    );
    let mut bad_expiration = pending();
    bad_expiration.properties = Some(HeaderProperties::Decoded(Box::new(BasicProperties {
        expiration: Some("soon".to_owned()),
        ..Default::default()
    })));
    let refused = publish::build_message(USER, channel, &state, &mut bad_expiration);
    assert_eq!(
        refused.err().map(|fault| fault.code),
        Some(reply_code::PRECONDITION_FAILED)
    );
}

// ---- the permission table (access::Permissions) -------------------------------------------

fn set_permission(topology: &mut Topology, configure: &str, write: &str, read: &str) {
    topology.apply(&TopologyChange::SetPermission {
        user: USER.to_owned(),
        vhost: VHOST.to_owned(),
        permission: crate::auth::Permission {
            configure: configure.to_owned(),
            write: write.to_owned(),
            read: read.to_owned(),
        },
    });
}

fn with_user() -> Fixture {
    let mut f = Fixture::new();
    f.topology
        .apply(&TopologyChange::PutUser(crate::broker::User {
            name: USER.to_owned(),
            password_hash: crate::auth::PasswordHash::new(
                crate::auth::HashingAlgorithm::Sha256,
                "pw",
            ),
            tags: Vec::new(),
        }));
    f
}

fn refusal_text(result: Result<Action, Fault>) -> Option<String> {
    match result {
        Ok(_) => None,
        Err(fault) => {
            assert_eq!(fault.code, reply_code::ACCESS_REFUSED);
            Some(fault.text)
        }
    }
}

#[test]
fn permissions_come_from_the_topology_and_follow_its_changes() {
    let mut f = with_user();
    let permissions = access::Permissions::default();
    assert_eq!(
        refusal_text(f.decide_with(&permissions, publish_method("amq.direct"))).as_deref(),
        Some("ACCESS_REFUSED - access to exchange 'amq.direct' in vhost '/' refused for user 'u'"),
        "no permissions in the vhost: everything refused"
    );
    set_permission(&mut f.topology, ".*", "^amq\\.direct$", ".*");
    f.state = ChannelState::new();
    assert!(f
        .decide_with(&permissions, publish_method("amq.direct"))
        .is_ok());
    f.state = ChannelState::new();
    assert_eq!(
        refusal_text(f.decide_with(&permissions, publish_method(""))).as_deref(),
        Some("ACCESS_REFUSED - access to exchange 'amq.default' in vhost '/' refused for user 'u'")
    );
    // A change reaches the same session's next method (the cache follows the revision).
    set_permission(&mut f.topology, ".*", "", ".*");
    f.state = ChannelState::new();
    assert!(refusal_text(f.decide_with(&permissions, publish_method("amq.direct"))).is_some());
    f.topology.apply(&TopologyChange::ClearPermission {
        user: USER.to_owned(),
        vhost: VHOST.to_owned(),
    });
    assert!(
        refusal_text(f.decide_with(&permissions, queue_bind("q", "amq.direct", "k"))).is_some()
    );
}

#[test]
fn topic_permissions_check_publish_routing_keys_and_binding_keys() {
    let mut f = with_user();
    set_permission(&mut f.topology, ".*", ".*", ".*");
    f.topology.apply(&TopologyChange::SetTopicPermission {
        user: USER.to_owned(),
        vhost: VHOST.to_owned(),
        permission: crate::auth::TopicPermission {
            exchange: "amq.topic".to_owned(),
            write: "^w\\.".to_owned(),
            read: "^r\\.".to_owned(),
        },
    });
    let permissions = access::Permissions::default();
    let publish = |key: &str| {
        Method::BasicPublish(BasicPublish {
            exchange: "amq.topic".to_owned(),
            routing_key: key.to_owned(),
            ..Default::default()
        })
    };
    assert!(f.decide_with(&permissions, publish("w.x")).is_ok());
    f.state = ChannelState::new();
    assert_eq!(
        refusal_text(f.decide_with(&permissions, publish("r.x"))).as_deref(),
        Some("ACCESS_REFUSED - access to topic 'r.x' in exchange 'amq.topic' in vhost '/' refused for user 'u'")
    );
    // A missing exchange is a 404 before the routing key is looked at (RabbitMQ's order).
    f.state = ChannelState::new();
    let missing = Method::BasicPublish(BasicPublish {
        exchange: "nowhere".to_owned(),
        routing_key: "r.x".to_owned(),
        ..Default::default()
    });
    let fault = f.decide_with(&permissions, missing).err().expect("404");
    assert_eq!(fault.code, reply_code::NOT_FOUND);
    // Bindings read the binding key, whether or not the queue exists.
    assert!(f
        .decide_with(&permissions, queue_bind("q", "amq.topic", "r.x"))
        .is_ok());
    assert_eq!(
        refusal_text(f.decide_with(&permissions, queue_bind("missing", "amq.topic", "w.x")))
            .as_deref(),
        Some("ACCESS_REFUSED - access to topic 'w.x' in exchange 'amq.topic' in vhost '/' refused for user 'u'")
    );
    // Other exchange types are not topic-checked.
    assert!(f
        .decide_with(&permissions, queue_bind("q", "amq.direct", "w.x"))
        .is_ok());
}
