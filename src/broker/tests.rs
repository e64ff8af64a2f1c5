//! Topology, validation and routing rules, end to end through check_* then apply.

use bytes::Bytes;

use super::*;
use crate::limits::EXCHANGES_PER_VHOST_MAX;
use crate::protocol::{reply_code, FieldTable, FieldValue};

const CONN: ConnId = 1;
const OTHER_CONN: ConnId = 2;

fn s(v: &str) -> FieldValue {
    FieldValue::LongString(Bytes::copy_from_slice(v.as_bytes()))
}

fn table(entries: &[(&str, FieldValue)]) -> FieldTable {
    FieldTable(
        entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    )
}

fn apply_all(t: &mut Topology, changes: &[TopologyChange]) {
    for change in changes {
        t.apply(change);
    }
}

fn exchange_declare<'a>(
    name: &'a str,
    kind: &'a str,
    arguments: &'a FieldTable,
) -> ExchangeDeclare<'a> {
    ExchangeDeclare {
        vhost: "/",
        name,
        kind,
        passive: false,
        durable: false,
        auto_delete: false,
        internal: false,
        arguments,
    }
}

fn queue_declare<'a>(name: &'a str, id: QueueId, arguments: &'a FieldTable) -> QueueDeclare<'a> {
    QueueDeclare {
        vhost: "/",
        name,
        server_named: false,
        passive: false,
        durable: false,
        exclusive: false,
        auto_delete: false,
        arguments,
        conn: CONN,
        new_id: id,
        owner_shard: 0,
        cluster_size: 1,
        cluster_members: &[],
        local_member: 0,
    }
}

fn add_exchange(t: &mut Topology, name: &str, kind: &str) {
    let args = FieldTable::default();
    let changes = check_exchange_declare(t, &exchange_declare(name, kind, &args)).unwrap();
    apply_all(t, &changes);
}

fn add_auto_delete_exchange(t: &mut Topology, name: &str) {
    let args = FieldTable::default();
    let d = ExchangeDeclare {
        auto_delete: true,
        ..exchange_declare(name, "fanout", &args)
    };
    let changes = check_exchange_declare(t, &d).unwrap();
    apply_all(t, &changes);
}

fn add_queue(t: &mut Topology, name: &str, id: QueueId) {
    let args = FieldTable::default();
    let changes = check_queue_declare(t, &queue_declare(name, id, &args)).unwrap();
    apply_all(t, &changes);
}

fn request<'a>(
    source: &'a str,
    destination: &'a Destination,
    key: &'a str,
    args: &'a FieldTable,
) -> BindRequest<'a> {
    BindRequest {
        vhost: "/",
        source,
        destination,
        routing_key: key,
        arguments: args,
        conn: CONN,
    }
}

fn bind_args(
    t: &mut Topology,
    source: &str,
    destination: Destination,
    key: &str,
    args: &FieldTable,
) {
    let changes = check_bind(t, &request(source, &destination, key, args)).unwrap();
    apply_all(t, &changes);
}

fn bind(t: &mut Topology, source: &str, destination: Destination, key: &str) {
    bind_args(t, source, destination, key, &FieldTable::default());
}

fn unbind(
    t: &mut Topology,
    source: &str,
    destination: Destination,
    key: &str,
) -> Vec<TopologyChange> {
    let args = FieldTable::default();
    let changes = check_unbind(t, &request(source, &destination, key, &args)).unwrap();
    apply_all(t, &changes);
    changes
}

fn q(name: &str) -> Destination {
    Destination::Queue(name.to_string())
}

fn x(name: &str) -> Destination {
    Destination::Exchange(name.to_string())
}

fn route(t: &Topology, exchange: &str, key: &str, headers: Option<&FieldTable>) -> Vec<QueueId> {
    let mut out = vec![999];
    t.route("/", exchange, key, headers, &mut out);
    out
}

fn assert_error<T: std::fmt::Debug>(result: Result<T, AmqpError>, code: u16, text: &str) {
    let err = result.unwrap_err();
    assert_eq!((err.code, err.text.as_str()), (code, text));
}

#[test]
fn types_cross_threads() {
    fn send_clone<T: Send + Clone>() {}
    send_clone::<Topology>();
    send_clone::<TopologyChange>();
    send_clone::<AmqpError>();
}

#[test]
fn default_topology() {
    let t = Topology::new_default();
    assert_eq!(t.revision(), 0);
    assert!(t.vhost_exists("/"));
    let guest = t.user("guest").unwrap();
    assert!(guest.password_hash.verify("guest"));
    assert!(!guest.password_hash.verify("Guest"));
    assert_eq!(guest.tags, vec!["administrator".to_string()]);
    assert!(t.can_access_vhost("guest", "/"));
    assert!(!t.can_access_vhost("guest", "/other"));
    assert!(!t.can_access_vhost("nobody", "/"));
    for (name, kind) in [
        ("", ExchangeKind::Direct),
        ("amq.direct", ExchangeKind::Direct),
        ("amq.fanout", ExchangeKind::Fanout),
        ("amq.topic", ExchangeKind::Topic),
        ("amq.headers", ExchangeKind::Headers),
        ("amq.match", ExchangeKind::Headers),
    ] {
        let meta = t.exchange("/", name).unwrap();
        assert_eq!(meta.kind, kind);
        assert!(meta.durable);
    }
}

#[test]
fn vhosts_users_permissions() {
    let mut t = Topology::new_default();
    t.apply(&TopologyChange::AddVhost { name: "v2".into() });
    assert_eq!(t.revision(), 1);
    assert!(t.exchange("v2", "amq.topic").is_some());
    t.apply(&TopologyChange::PutUser(User {
        name: "bob".into(),
        password_hash: crate::auth::PasswordHash::new(crate::auth::HashingAlgorithm::Sha256, "pw"),
        tags: vec![],
    }));
    t.apply(&TopologyChange::SetPermission {
        user: "bob".into(),
        vhost: "v2".into(),
        permission: Permission::full(),
    });
    assert!(t.can_access_vhost("bob", "v2"));
    t.apply(&TopologyChange::SetTopicPermission {
        user: "bob".into(),
        vhost: "v2".into(),
        permission: crate::auth::TopicPermission {
            exchange: "amq.topic".into(),
            write: "^a".into(),
            read: ".*".into(),
        },
    });
    assert_eq!(t.topic_permissions("bob", "v2").len(), 1);
    let before = t.access_revision();
    t.apply(&TopologyChange::DeleteVhost { name: "v2".into() });
    assert!(
        t.access_revision() > before,
        "a vhost delete can change access"
    );
    assert!(!t.can_access_vhost("bob", "v2"));
    assert!(t.topic_permissions("bob", "v2").is_empty());
    t.apply(&TopologyChange::DeleteUser { name: "bob".into() });
    assert!(t.user("bob").is_none());
    assert_eq!(t.revision(), 6);
}

#[test]
fn exchange_declare_rules() {
    let mut t = Topology::new_default();
    let none = FieldTable::default();
    assert_error(
        check_exchange_declare(&t, &exchange_declare("amq.foo", "direct", &none)),
        reply_code::ACCESS_REFUSED,
        "ACCESS_REFUSED - exchange name 'amq.foo' contains reserved prefix 'amq.*'",
    );
    // The prefix rule applies only on creation: an equivalent redeclare of amq.direct is fine.
    let amq_direct = ExchangeDeclare {
        durable: true,
        ..exchange_declare("amq.direct", "direct", &none)
    };
    assert_eq!(check_exchange_declare(&t, &amq_direct).unwrap(), vec![]);
    assert_error(
        check_exchange_declare(&t, &exchange_declare("", "direct", &none)),
        reply_code::ACCESS_REFUSED,
        "ACCESS_REFUSED - operation not permitted on the default exchange",
    );
    assert_error(
        check_exchange_declare(&t, &exchange_declare("x", "foo", &none)),
        reply_code::PRECONDITION_FAILED,
        "PRECONDITION_FAILED - unknown exchange type 'foo'",
    );
    let passive = ExchangeDeclare {
        passive: true,
        ..exchange_declare("x", "whatever", &none)
    };
    assert_error(
        check_exchange_declare(&t, &passive),
        reply_code::NOT_FOUND,
        "NOT_FOUND - no exchange 'x' in vhost '/'",
    );
    add_exchange(&mut t, "x", "direct");
    assert_eq!(check_exchange_declare(&t, &passive).unwrap(), vec![]);
    assert_eq!(
        check_exchange_declare(&t, &exchange_declare("x", "direct", &none)).unwrap(),
        vec![]
    );
    let revision = t.revision();
    add_exchange(&mut t, "x", "direct");
    assert_eq!(
        t.revision(),
        revision,
        "an equivalent redeclare changes nothing"
    );
}

#[test]
fn exchange_redeclare_must_be_equivalent() {
    let mut t = Topology::new_default();
    add_exchange(&mut t, "x", "direct");
    let none = FieldTable::default();
    let base = exchange_declare("x", "direct", &none);
    assert_error(
        check_exchange_declare(&t, &exchange_declare("x", "fanout", &none)),
        reply_code::PRECONDITION_FAILED,
        "PRECONDITION_FAILED - inequivalent arg 'type' for exchange 'x' in vhost '/': received 'fanout' but current is 'direct'",
    );
    assert_error(
        check_exchange_declare(&t, &ExchangeDeclare { durable: true, ..base }),
        reply_code::PRECONDITION_FAILED,
        "PRECONDITION_FAILED - inequivalent arg 'durable' for exchange 'x' in vhost '/': received 'true' but current is 'false'",
    );
    for d in [
        ExchangeDeclare {
            auto_delete: true,
            ..base
        },
        ExchangeDeclare {
            internal: true,
            ..base
        },
    ] {
        let err = check_exchange_declare(&t, &d).unwrap_err();
        assert_eq!(err.code, reply_code::PRECONDITION_FAILED);
    }
    let ae = table(&[("alternate-exchange", s("ae"))]);
    assert_error(
        check_exchange_declare(&t, &exchange_declare("x", "direct", &ae)),
        reply_code::PRECONDITION_FAILED,
        "PRECONDITION_FAILED - inequivalent arg 'alternate-exchange' for exchange 'x' in vhost '/': received the value 'ae' of type 'longstr' but current is none",
    );
    // Other exchange arguments are not compared, as in RabbitMQ.
    let other = table(&[("x-anything", s("1"))]);
    assert!(check_exchange_declare(&t, &exchange_declare("x", "direct", &other)).is_ok());
}

#[test]
fn exchange_delete_rules() {
    let mut t = Topology::new_default();
    assert_error(
        check_exchange_delete(&t, "/", "amq.direct", false),
        reply_code::ACCESS_REFUSED,
        "ACCESS_REFUSED - deletion of system exchange 'amq.direct' in vhost '/' not allowed",
    );
    assert_error(
        check_exchange_delete(&t, "/", "", false),
        reply_code::ACCESS_REFUSED,
        "ACCESS_REFUSED - operation not permitted on the default exchange",
    );
    assert_eq!(
        check_exchange_delete(&t, "/", "missing", false).unwrap(),
        vec![]
    );
    add_exchange(&mut t, "src", "fanout");
    add_exchange(&mut t, "mid", "fanout");
    add_queue(&mut t, "q", 1);
    bind(&mut t, "src", x("mid"), "");
    bind(&mut t, "mid", q("q"), "");
    assert_eq!(route(&t, "src", "", None), vec![1]);
    assert_error(
        check_exchange_delete(&t, "/", "mid", true),
        reply_code::PRECONDITION_FAILED,
        "PRECONDITION_FAILED - exchange 'mid' in vhost '/' in use",
    );
    let changes = check_exchange_delete(&t, "/", "mid", false).unwrap();
    apply_all(&mut t, &changes);
    assert!(t.exchange("/", "mid").is_none());
    assert!(
        t.bindings_from("/", "src").is_empty(),
        "binding to the deleted exchange is gone"
    );
    // Recreating the exchange does not resurrect old bindings.
    add_exchange(&mut t, "mid", "fanout");
    assert!(route(&t, "src", "", None).is_empty());
    assert!(check_exchange_delete(&t, "/", "mid", true).is_ok());
}

#[test]
fn queue_declare_rules() {
    let mut t = Topology::new_default();
    let none = FieldTable::default();
    assert_error(
        check_queue_declare(&t, &queue_declare("amq.q", 1, &none)),
        reply_code::ACCESS_REFUSED,
        "ACCESS_REFUSED - queue name 'amq.q' contains reserved prefix 'amq.*'",
    );
    let generated = server_named_queue(7);
    let server_named = QueueDeclare {
        server_named: true,
        exclusive: true,
        ..queue_declare(&generated, 1, &none)
    };
    let changes = check_queue_declare(&t, &server_named).unwrap();
    apply_all(&mut t, &changes);
    assert_eq!(
        t.queue("/", &generated).unwrap().exclusive_owner,
        Some(CONN)
    );
    let passive = QueueDeclare {
        passive: true,
        ..queue_declare("q", 2, &none)
    };
    assert_error(
        check_queue_declare(&t, &passive),
        reply_code::NOT_FOUND,
        "NOT_FOUND - no queue 'q' in vhost '/'",
    );
    add_queue(&mut t, "q", 2);
    assert_eq!(check_queue_declare(&t, &passive).unwrap(), vec![]);
    assert_eq!(t.queue_by_id(2).unwrap().name, "q");
    let base = queue_declare("q", 3, &none);
    assert_eq!(check_queue_declare(&t, &base).unwrap(), vec![]);
    assert_error(
        check_queue_declare(&t, &QueueDeclare { durable: true, ..base }),
        reply_code::PRECONDITION_FAILED,
        "PRECONDITION_FAILED - inequivalent arg 'durable' for queue 'q' in vhost '/': received 'true' but current is 'false'",
    );
    assert_error(
        check_queue_declare(&t, &QueueDeclare { auto_delete: true, ..base }),
        reply_code::PRECONDITION_FAILED,
        "PRECONDITION_FAILED - inequivalent arg 'auto_delete' for queue 'q' in vhost '/': received 'true' but current is 'false'",
    );
    // Exclusive redeclare of a shared queue: RabbitMQ answers 405, not 406.
    let err = check_queue_declare(
        &t,
        &QueueDeclare {
            exclusive: true,
            ..base
        },
    )
    .unwrap_err();
    assert_eq!(err.code, reply_code::RESOURCE_LOCKED);
    let ttl = table(&[("x-message-ttl", FieldValue::LongInt(10))]);
    assert_error(
        check_queue_declare(&t, &queue_declare("q", 3, &ttl)),
        reply_code::PRECONDITION_FAILED,
        "PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue 'q' in vhost '/': received the value '10' of type 'signedint' but current is none",
    );
    // x-queue-type absent equals classic; arguments outside RabbitMQ's list are not compared.
    let classic = table(&[("x-queue-type", s("classic")), ("x-custom", s("1"))]);
    assert_eq!(
        check_queue_declare(&t, &queue_declare("q", 3, &classic)).unwrap(),
        vec![]
    );
    let quorum = table(&[("x-queue-type", s("quorum"))]);
    assert_eq!(
        check_queue_declare(&t, &queue_declare("q", 3, &quorum))
            .unwrap_err()
            .code,
        reply_code::PRECONDITION_FAILED
    );
    // A quorum queue is durable only (`broker::quorum` has the other refusals).
    assert_error(
        check_queue_declare(&t, &queue_declare("qq", 3, &quorum)),
        reply_code::PRECONDITION_FAILED,
        "PRECONDITION_FAILED - invalid property 'non-durable' for queue 'qq' in vhost '/'",
    );
    let durable_qq = QueueDeclare {
        durable: true,
        ..queue_declare("qq", 3, &quorum)
    };
    assert_eq!(check_queue_declare(&t, &durable_qq).unwrap().len(), 1);
}

#[test]
fn queue_argument_values_validated() {
    let t = Topology::new_default();
    let cases = [
        (
            table(&[("x-message-ttl", FieldValue::LongInt(-1))]),
            "{value_negative,-1}",
        ),
        (
            table(&[("x-expires", FieldValue::LongInt(0))]),
            "{value_zero,0}",
        ),
        (
            table(&[("x-max-length", s("ten"))]),
            "{unacceptable_type,longstr}",
        ),
        (
            table(&[("x-queue-type", s("weird"))]),
            "{unacceptable_value,weird}",
        ),
        (
            table(&[("x-max-priority", FieldValue::LongInt(256))]),
            "{value_too_large,256,255}",
        ),
    ];
    for (args, reason) in &cases {
        let err = check_queue_declare(&t, &queue_declare("q", 1, args)).unwrap_err();
        assert_eq!(err.code, reply_code::PRECONDITION_FAILED);
        assert!(err.text.ends_with(reason), "{}", err.text);
    }
    let fine = table(&[
        ("x-message-ttl", FieldValue::LongLongInt(0)),
        ("x-queue-type", s("stream")),
        ("x-dead-letter-exchange", s("dlx")),
        ("x-unknown", FieldValue::Boolean(true)),
    ]);
    assert!(check_queue_declare(&t, &queue_declare("q", 1, &fine)).is_ok());
}

#[test]
fn exclusive_queues_are_locked_to_their_connection() {
    let mut t = Topology::new_default();
    let none = FieldTable::default();
    let exclusive = QueueDeclare {
        exclusive: true,
        ..queue_declare("mine", 1, &none)
    };
    let changes = check_queue_declare(&t, &exclusive).unwrap();
    apply_all(&mut t, &changes);
    let locked =
        "RESOURCE_LOCKED - cannot obtain exclusive access to locked queue 'mine' in vhost '/'. \
                  It could be originally declared on another connection or the exclusive property \
                  value does not match that of the original declaration.";
    let theirs = QueueDeclare {
        conn: OTHER_CONN,
        ..exclusive
    };
    assert_error(
        check_queue_declare(&t, &theirs),
        reply_code::RESOURCE_LOCKED,
        locked,
    );
    assert_error(
        check_queue_declare(
            &t,
            &QueueDeclare {
                passive: true,
                ..theirs
            },
        ),
        reply_code::RESOURCE_LOCKED,
        locked,
    );
    assert_error(
        check_queue_access(&t, "/", "mine", OTHER_CONN),
        reply_code::RESOURCE_LOCKED,
        locked,
    );
    assert_eq!(check_queue_access(&t, "/", "mine", CONN).unwrap().id, 1);
    assert_error(
        check_queue_delete(&t, "/", "mine", OTHER_CONN),
        reply_code::RESOURCE_LOCKED,
        locked,
    );
    let mine = q("mine");
    let other_bind = BindRequest {
        conn: OTHER_CONN,
        ..request("amq.direct", &mine, "k", &none)
    };
    assert_error(
        check_bind(&t, &other_bind),
        reply_code::RESOURCE_LOCKED,
        locked,
    );
    // Unbind checks exclusivity only when there is a binding to remove (RabbitMQ).
    assert_eq!(check_unbind(&t, &other_bind), Ok(vec![]));
    bind(&mut t, "amq.direct", mine.clone(), "k");
    assert_error(
        check_unbind(&t, &other_bind),
        reply_code::RESOURCE_LOCKED,
        locked,
    );
    // The owner may redeclare it, exclusive or not (RabbitMQ's lax check).
    assert!(check_queue_declare(
        &t,
        &QueueDeclare {
            exclusive: false,
            ..exclusive
        }
    )
    .is_ok());
    add_queue(&mut t, "shared", 2);
    let mine: Vec<QueueId> = t.queues_exclusive_to(CONN).iter().map(|q| q.id).collect();
    assert_eq!(mine, vec![1]);
    assert!(t.queues_exclusive_to(OTHER_CONN).is_empty());
}

#[test]
fn queue_delete_removes_bindings() {
    let mut t = Topology::new_default();
    add_queue(&mut t, "q", 1);
    add_queue(&mut t, "keep", 2);
    bind(&mut t, "amq.direct", q("q"), "k");
    bind(&mut t, "amq.direct", q("keep"), "k");
    bind(&mut t, "amq.fanout", q("q"), "");
    assert_eq!(route(&t, "amq.direct", "k", None), vec![1, 2]);
    assert_eq!(
        check_queue_delete(&t, "/", "missing", CONN).unwrap(),
        vec![]
    );
    let changes = check_queue_delete(&t, "/", "q", CONN).unwrap();
    assert_eq!(changes.len(), 1, "no auto-delete exchange involved");
    apply_all(&mut t, &changes);
    assert!(t.queue("/", "q").is_none());
    assert!(t.queue_by_id(1).is_none());
    assert_eq!(route(&t, "amq.direct", "k", None), vec![2]);
    assert!(route(&t, "amq.fanout", "", None).is_empty());
    // A new queue with the old name is a new queue: no bindings, new id.
    add_queue(&mut t, "q", 3);
    assert_eq!(route(&t, "amq.direct", "k", None), vec![2]);
    assert_eq!(route(&t, "", "q", None), vec![3]);
}

#[test]
fn bind_rules() {
    let mut t = Topology::new_default();
    let none = FieldTable::default();
    add_queue(&mut t, "q", 1);
    assert_error(
        check_bind(&t, &request("", &q("q"), "k", &none)),
        reply_code::ACCESS_REFUSED,
        "ACCESS_REFUSED - operation not permitted on the default exchange",
    );
    assert_error(
        check_bind(&t, &request("amq.direct", &x(""), "k", &none)),
        reply_code::ACCESS_REFUSED,
        "ACCESS_REFUSED - operation not permitted on the default exchange",
    );
    assert_error(
        check_bind(&t, &request("nope", &q("missing"), "k", &none)),
        reply_code::NOT_FOUND,
        "NOT_FOUND - no exchange 'nope' in vhost '/'",
    );
    assert_error(
        check_bind(&t, &request("amq.direct", &q("missing"), "k", &none)),
        reply_code::NOT_FOUND,
        "NOT_FOUND - no queue 'missing' in vhost '/'",
    );
    assert_error(
        check_bind(&t, &request("amq.direct", &x("missing"), "k", &none)),
        reply_code::NOT_FOUND,
        "NOT_FOUND - no exchange 'missing' in vhost '/'",
    );
    let bad_match = table(&[("x-match", s("most"))]);
    assert_eq!(
        check_bind(&t, &request("amq.headers", &q("q"), "", &bad_match))
            .unwrap_err()
            .code,
        reply_code::PRECONDITION_FAILED
    );
    // x-match is only validated for headers exchanges.
    assert!(check_bind(&t, &request("amq.direct", &q("q"), "", &bad_match)).is_ok());
    bind(&mut t, "amq.direct", q("q"), "k");
    assert_eq!(
        check_bind(&t, &request("amq.direct", &q("q"), "k", &none)).unwrap(),
        vec![]
    );
    // Unbinding a missing binding, or from or to a missing end, is a no-op (RabbitMQ).
    assert_eq!(unbind(&mut t, "amq.direct", q("q"), "other"), vec![]);
    for (source, destination) in [
        ("amq.direct", q("missing")),
        ("missing", q("q")),
        ("missing", x("also-missing")),
    ] {
        assert_eq!(
            check_unbind(&t, &request(source, &destination, "k", &none)),
            Ok(vec![])
        );
    }
    assert_eq!(
        check_unbind(&t, &request("", &q("q"), "k", &none))
            .unwrap_err()
            .code,
        reply_code::ACCESS_REFUSED
    );
    assert_eq!(unbind(&mut t, "amq.direct", q("q"), "k").len(), 1);
    assert!(route(&t, "amq.direct", "k", None).is_empty());
}

#[test]
fn bindings_differing_in_arguments_are_distinct() {
    let mut t = Topology::new_default();
    add_queue(&mut t, "q", 1);
    let a = table(&[("tag", s("a"))]);
    bind(&mut t, "amq.direct", q("q"), "k");
    bind_args(&mut t, "amq.direct", q("q"), "k", &a);
    assert_eq!(t.bindings_from("/", "amq.direct").len(), 2);
    unbind(&mut t, "amq.direct", q("q"), "k");
    assert_eq!(
        route(&t, "amq.direct", "k", None),
        vec![1],
        "the other binding still routes"
    );
}

#[test]
fn auto_delete_exchange_goes_with_its_last_binding() {
    let mut t = Topology::new_default();
    add_auto_delete_exchange(&mut t, "ad");
    add_queue(&mut t, "q1", 1);
    add_queue(&mut t, "q2", 2);
    // Never deleted before its first bind, whatever happens around it.
    assert_eq!(check_queue_delete(&t, "/", "q1", CONN).unwrap().len(), 1);
    bind(&mut t, "ad", q("q1"), "");
    bind(&mut t, "ad", q("q2"), "");
    assert_eq!(unbind(&mut t, "ad", q("q1"), "").len(), 1);
    assert!(t.exchange("/", "ad").is_some());
    let changes = unbind(&mut t, "ad", q("q2"), "");
    assert_eq!(
        changes.last(),
        Some(&TopologyChange::DeleteExchange {
            vhost: "/".into(),
            name: "ad".into()
        })
    );
    assert!(t.exchange("/", "ad").is_none());

    add_auto_delete_exchange(&mut t, "ad");
    bind(&mut t, "ad", q("q1"), "");
    let changes = check_queue_delete(&t, "/", "q1", CONN).unwrap();
    assert_eq!(changes.len(), 2);
    apply_all(&mut t, &changes);
    assert!(t.exchange("/", "ad").is_none());
}

#[test]
fn auto_delete_cascades_through_exchange_bindings() {
    let mut t = Topology::new_default();
    add_auto_delete_exchange(&mut t, "outer");
    add_auto_delete_exchange(&mut t, "inner");
    add_queue(&mut t, "q", 1);
    bind(&mut t, "outer", x("inner"), "");
    bind(&mut t, "inner", q("q"), "");
    bind(&mut t, "inner", x("outer"), "cycle");
    // Deleting q empties inner (its binding to outer remains, so not yet)...
    let changes = check_queue_delete(&t, "/", "q", CONN).unwrap();
    assert_eq!(changes.len(), 1);
    // ...but deleting inner's last queue binding after removing the cycle takes both.
    unbind(&mut t, "inner", x("outer"), "cycle");
    let changes = check_queue_delete(&t, "/", "q", CONN).unwrap();
    let deleted: Vec<&TopologyChange> = changes[1..].iter().collect();
    assert_eq!(
        deleted,
        vec![
            &TopologyChange::DeleteExchange {
                vhost: "/".into(),
                name: "inner".into()
            },
            &TopologyChange::DeleteExchange {
                vhost: "/".into(),
                name: "outer".into()
            },
        ]
    );
    apply_all(&mut t, &changes);
    assert!(t.exchange("/", "outer").is_none() && t.exchange("/", "inner").is_none());
}

#[test]
fn auto_delete_cycle_is_deleted_once() {
    let mut t = Topology::new_default();
    add_auto_delete_exchange(&mut t, "a");
    add_auto_delete_exchange(&mut t, "b");
    bind(&mut t, "a", x("b"), "");
    bind(&mut t, "b", x("a"), "");
    let changes = unbind(&mut t, "a", x("b"), "");
    // a empties and goes; that takes b's only binding (to a), so b goes; a is not deleted twice.
    assert_eq!(changes.len(), 3, "{changes:?}");
    assert!(t.exchange("/", "a").is_none() && t.exchange("/", "b").is_none());
}

#[test]
fn routing_by_exchange_kind() {
    let mut t = Topology::new_default();
    for (name, id) in [("q1", 1), ("q2", 2), ("q3", 3)] {
        add_queue(&mut t, name, id);
    }
    bind(&mut t, "amq.direct", q("q1"), "k1");
    bind(&mut t, "amq.direct", q("q2"), "k1");
    bind(&mut t, "amq.direct", q("q3"), "k3");
    assert_eq!(route(&t, "amq.direct", "k1", None), vec![1, 2]);
    assert!(route(&t, "amq.direct", "k2", None).is_empty());

    bind(&mut t, "amq.fanout", q("q1"), "a");
    bind(&mut t, "amq.fanout", q("q3"), "b");
    assert_eq!(route(&t, "amq.fanout", "anything", None), vec![1, 3]);

    bind(&mut t, "amq.topic", q("q1"), "stock.*.nyse");
    bind(&mut t, "amq.topic", q("q2"), "stock.#");
    bind(&mut t, "amq.topic", q("q2"), "#.nyse");
    assert_eq!(route(&t, "amq.topic", "stock.ibm.nyse", None), vec![1, 2]);
    assert_eq!(route(&t, "amq.topic", "stock", None), vec![2]);
    assert!(route(&t, "amq.topic", "bond.x", None).is_empty());

    let all = table(&[
        ("x-match", s("all")),
        ("format", s("pdf")),
        ("type", s("report")),
    ]);
    let any = table(&[
        ("x-match", s("any")),
        ("format", s("pdf")),
        ("type", s("log")),
    ]);
    bind_args(&mut t, "amq.headers", q("q1"), "", &all);
    bind_args(&mut t, "amq.headers", q("q2"), "", &any);
    let report = table(&[("format", s("pdf")), ("type", s("report"))]);
    assert_eq!(route(&t, "amq.headers", "", Some(&report)), vec![1, 2]);
    let log = table(&[("type", s("log"))]);
    assert_eq!(route(&t, "amq.headers", "", Some(&log)), vec![2]);
    assert!(route(&t, "amq.headers", "", None).is_empty());
}

#[test]
fn default_exchange_routes_by_queue_name_in_its_vhost() {
    let mut t = Topology::new_default();
    add_queue(&mut t, "q", 1);
    assert_eq!(route(&t, "", "q", None), vec![1]);
    assert!(route(&t, "", "other", None).is_empty());
    t.apply(&TopologyChange::AddVhost { name: "v2".into() });
    let mut out = Vec::new();
    t.route("v2", "", "q", None, &mut out);
    assert!(out.is_empty());
    t.route("no-such-vhost", "amq.fanout", "", None, &mut out);
    assert!(out.is_empty());
    assert!(route(&t, "no-such-exchange", "q", None).is_empty());
}

#[test]
fn exchange_to_exchange_with_cycles_and_dedup() {
    let mut t = Topology::new_default();
    add_exchange(&mut t, "e1", "fanout");
    add_exchange(&mut t, "e2", "topic");
    add_exchange(&mut t, "e3", "direct");
    add_queue(&mut t, "q1", 1);
    add_queue(&mut t, "q2", 2);
    bind(&mut t, "e1", x("e2"), "");
    bind(&mut t, "e1", x("e3"), "");
    bind(&mut t, "e2", x("e1"), "#"); // cycle back
    bind(&mut t, "e2", q("q1"), "a.*");
    bind(&mut t, "e3", q("q1"), "a.b"); // same queue by a second path
    bind(&mut t, "e3", q("q2"), "a.b");
    bind(&mut t, "e1", x("e1"), ""); // self loop
    assert_eq!(route(&t, "e1", "a.b", None), vec![1, 2]);
    assert_eq!(route(&t, "e1", "a.c", None), vec![1]);
    assert_eq!(route(&t, "e3", "a.b", None), vec![1, 2]);
}

#[test]
fn alternate_exchange_takes_unroutable_messages() {
    let mut t = Topology::new_default();
    add_exchange(&mut t, "ae", "fanout");
    let args = table(&[("alternate-exchange", s("ae"))]);
    let changes = check_exchange_declare(&t, &exchange_declare("main", "direct", &args)).unwrap();
    apply_all(&mut t, &changes);
    add_queue(&mut t, "routed", 1);
    add_queue(&mut t, "unroutable", 2);
    bind(&mut t, "main", q("routed"), "k");
    bind(&mut t, "ae", q("unroutable"), "");
    assert_eq!(route(&t, "main", "k", None), vec![1]);
    assert_eq!(route(&t, "main", "other", None), vec![2]);
}

#[test]
fn internal_exchange_flag() {
    let mut t = Topology::new_default();
    let none = FieldTable::default();
    let d = ExchangeDeclare {
        internal: true,
        ..exchange_declare("inside", "fanout", &none)
    };
    let changes = check_exchange_declare(&t, &d).unwrap();
    apply_all(&mut t, &changes);
    assert!(t.is_internal("/", "inside"));
    assert!(!t.is_internal("/", "amq.fanout"));
    add_queue(&mut t, "q", 1);
    bind(&mut t, "inside", q("q"), "");
    bind(&mut t, "amq.fanout", x("inside"), "");
    // It still routes as a destination of an exchange binding.
    assert_eq!(route(&t, "amq.fanout", "", None), vec![1]);
}

#[test]
fn replicas_applying_the_same_changes_agree() {
    let mut owner = Topology::new_default();
    let mut replica = Topology::new_default();
    let mut log: Vec<TopologyChange> = Vec::new();
    let none = FieldTable::default();
    for i in 0..50u64 {
        let name = format!("q{i}");
        let changes = check_queue_declare(&owner, &queue_declare(&name, i, &none)).unwrap();
        apply_all(&mut owner, &changes);
        log.extend(changes);
        let key = format!("k.{}", i % 5);
        let changes = check_bind(&owner, &request("amq.topic", &q(&name), &key, &none)).unwrap();
        apply_all(&mut owner, &changes);
        log.extend(changes);
    }
    let changes = check_queue_delete(&owner, "/", "q3", CONN).unwrap();
    apply_all(&mut owner, &changes);
    log.extend(changes);
    apply_all(&mut replica, &log);
    assert_eq!(owner.revision(), replica.revision());
    for key in ["k.0", "k.3", "k.*", "x"] {
        assert_eq!(
            route(&owner, "amq.topic", key, None),
            route(&replica, "amq.topic", key, None)
        );
    }
    assert_eq!(route(&replica, "amq.topic", "k.3", None).len(), 9);
}

#[test]
fn server_named_queues() {
    let name = server_named_queue(0);
    assert!(name.starts_with("amq.gen-"));
    assert_eq!(name.len(), "amq.gen-".len() + 22);
    assert!(name["amq.gen-".len()..]
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    assert_eq!(server_named_queue(42), server_named_queue(42));
    let mut names: Vec<String> = (0..10_000).map(server_named_queue).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 10_000);
}

#[test]
fn exchange_count_is_bounded() {
    let mut t = Topology::new_default();
    let none = FieldTable::default();
    let standard = t.exchange("/", "amq.direct").map(|_| 6).unwrap_or(0);
    for i in 0..(EXCHANGES_PER_VHOST_MAX - standard) {
        add_exchange(&mut t, &format!("x{i}"), "fanout");
    }
    assert_error(
        check_exchange_declare(&t, &exchange_declare("one-more", "fanout", &none)),
        reply_code::PRECONDITION_FAILED,
        "PRECONDITION_FAILED - cannot declare exchange 'one-more': exchange limit in vhost '/' (10000) is reached",
    );
}

#[test]
fn move_queue_changes_only_the_owner_of_that_queue() {
    let mut t = Topology::new_default();
    add_queue(&mut t, "a", 7);
    add_queue(&mut t, "b", 8);
    apply_all(
        &mut t,
        &[TopologyChange::MoveQueue {
            queue: 7,
            owner_shard: 3,
        }],
    );
    assert_eq!(t.queue_by_id(7).map(|m| m.owner_shard), Some(3));
    assert_eq!(t.queue_by_id(8).map(|m| m.owner_shard), Some(0));
    assert_eq!(t.queues_owned_from(1), vec![(7, 3)]);
    assert_eq!(t.queues_owned_from(4), vec![]);
    // A queue that is gone (deleted before the move was replayed) is left alone.
    apply_all(
        &mut t,
        &[TopologyChange::MoveQueue {
            queue: 99,
            owner_shard: 1,
        }],
    );
    assert_eq!(t.queues_owned_from(1), vec![(7, 3)]);
}
