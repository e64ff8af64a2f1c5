//! Routing micro-benchmarks: a topic exchange with 10,000 bindings, and a direct exchange.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use ringmq::broker::{
    Binding, Destination, ExchangeKind, ExchangeMeta, QueueMeta, Topology, TopologyChange,
};
use ringmq::protocol::FieldTable;

const BINDINGS: usize = 10_000;

fn topology_with(kind: ExchangeKind, pattern: impl Fn(usize) -> String) -> Topology {
    let mut topology = Topology::new_default();
    topology.apply(&TopologyChange::DeclareExchange {
        vhost: "/".to_string(),
        exchange: ExchangeMeta {
            name: "x".to_string(),
            kind,
            durable: false,
            auto_delete: false,
            internal: false,
            arguments: FieldTable::default(),
        },
    });
    for i in 0..BINDINGS {
        let name = format!("q{i}");
        topology.apply(&TopologyChange::DeclareQueue {
            queue: QueueMeta {
                id: i as u64 + 1,
                name: name.clone(),
                vhost: "/".to_string(),
                owner_shard: 0,
                durable: false,
                exclusive_owner: None,
                auto_delete: false,
                arguments: FieldTable::default(),
            },
        });
        topology.apply(&TopologyChange::Bind {
            vhost: "/".to_string(),
            binding: Binding {
                source: "x".to_string(),
                destination: Destination::Queue(name),
                routing_key: pattern(i),
                arguments: FieldTable::default(),
            },
        });
    }
    topology
}

fn routing(c: &mut Criterion) {
    // Patterns like "region17.*.orders.#": every key matches a handful of them.
    let topic = topology_with(ExchangeKind::Topic, |i| match i % 3 {
        0 => format!("region{}.*.orders.#", i % 1000),
        1 => format!("region{}.shop{}.#", i % 1000, i % 7),
        _ => format!("#.audit{}", i % 500),
    });
    let direct = topology_with(ExchangeKind::Direct, |i| format!("key{i}"));
    let mut out = Vec::new();
    let mut group = c.benchmark_group("routing");
    group.throughput(Throughput::Elements(1));
    group.bench_function("topic, 10,000 bindings", |b| {
        let mut n = 0usize;
        b.iter(|| {
            n = n.wrapping_add(1);
            let key = format!("region{}.shop{}.orders.audit{}", n % 1000, n % 7, n % 500);
            topic.route("/", "x", &key, None, &mut out);
            black_box(out.len())
        })
    });
    group.bench_function("direct, 10,000 bindings", |b| {
        let keys: Vec<String> = (0..1024).map(|i| format!("key{}", i * 9)).collect();
        let mut n = 0usize;
        b.iter(|| {
            n = n.wrapping_add(1);
            direct.route("/", "x", &keys[n % keys.len()], None, &mut out);
            black_box(out.len())
        })
    });
    group.finish();
}

criterion_group!(benches, routing);
criterion_main!(benches);
