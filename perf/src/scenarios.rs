//! The scenarios: each sets up its topology, opens every connection up front (so a failure
//! is reported before load starts and threads never wait on each other), runs the workers on
//! their own threads until the deadline, and turns the counters into a `Report`.

use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::client::Conn;
use crate::clock::{now_ns, pid_cpu_ns, process_cpu_ns};
use crate::error::{PerfError, Result};
use crate::limits::{BACKLOG_PHASE_TIMEOUT, BACKLOG_POLL_INTERVAL, PROGRESS_INTERVAL};
use crate::opts::Opts;
use crate::poller::Pollers;
use crate::progress::Progress;
use crate::report::Report;
use crate::topology::{self, QueueKind};
use crate::url::AmqpUrl;
use crate::workers::{
    new_histogram, run_consumer, run_producer, wait_until, ConsumerResult, ConsumerSpec,
    ProducerResult, ProducerSpec, Shared,
};

/// Where messages go and come from, independent of how fast.
struct Flow {
    scenario: &'static str,
    label: String,
    exchange: String,
    /// Keys per producer (cycled).
    producer_keys: Vec<Vec<String>>,
    /// Queue per consumer.
    consumer_queues: Vec<String>,
    /// Copies each publish turns into (fanout).
    fanout_factor: u64,
    rate: Option<f64>,
    warmup: bool,
}

pub fn throughput(opts: &Opts) -> Result<Vec<Report>> {
    let url = AmqpUrl::parse(&opts.url)?;
    let mut setup = Conn::open(&url)?;
    let prefix = topology::run_prefix("tp");
    let queues = declare_queues(&mut setup, &prefix, opts.queues, opts.queue_kind())?;
    let flow = Flow {
        scenario: "throughput",
        label: String::new(),
        exchange: String::new(),
        producer_keys: (0..opts.producers)
            .map(|p| vec![queues[p % queues.len()].clone()])
            .collect(),
        consumer_queues: (0..opts.consumers)
            .map(|c| queues[c % queues.len()].clone())
            .collect(),
        fanout_factor: 1,
        rate: None,
        warmup: false,
    };
    let report = run_flow(opts, &url, &flow);
    topology::cleanup(&mut setup, &queues, None);
    setup.close();
    Ok(vec![report?])
}

pub fn latency(opts: &Opts) -> Result<Vec<Report>> {
    let url = AmqpUrl::parse(&opts.url)?;
    let mut reports = Vec::new();
    for rate in opts.rates() {
        let mut setup = Conn::open_on(&url, opts.placed(0))?;
        let prefix = topology::run_prefix("lat");
        let queues = declare_queues(&mut setup, &prefix, 1, opts.queue_kind())?;
        let flow = Flow {
            scenario: "latency",
            label: format!("rate={rate}{}", shard_label("q", setup.shard)),
            exchange: String::new(),
            producer_keys: vec![queues.clone()],
            consumer_queues: queues.clone(),
            fanout_factor: 1,
            rate: Some(rate),
            warmup: true,
        };
        let report = run_flow(opts, &url, &flow);
        topology::cleanup(&mut setup, &queues, None);
        setup.close();
        let mut report = report?;
        report.metrics.insert(0, ("rate_target".to_string(), rate));
        reports.push(report);
    }
    Ok(reports)
}

pub fn fanout(opts: &Opts) -> Result<Vec<Report>> {
    let url = AmqpUrl::parse(&opts.url)?;
    let mut setup = Conn::open(&url)?;
    let prefix = topology::run_prefix("fan");
    let exchange = format!("{prefix}-x");
    topology::declare_exchange(&mut setup, &exchange, "fanout", opts.persistent)?;
    let queues = declare_queues(&mut setup, &prefix, opts.queues, opts.queue_kind())?;
    let bindings: Vec<(String, String)> =
        queues.iter().map(|q| (q.clone(), String::new())).collect();
    topology::bind_all(&mut setup, &exchange, &bindings)?;
    let flow = Flow {
        scenario: "fanout",
        label: format!("queues={}", opts.queues),
        exchange: exchange.clone(),
        producer_keys: vec![vec![String::new()]; opts.producers],
        consumer_queues: queues.clone(),
        fanout_factor: queues.len() as u64,
        rate: None,
        warmup: false,
    };
    let report = run_flow(opts, &url, &flow);
    topology::cleanup(&mut setup, &queues, Some(&exchange));
    setup.close();
    Ok(vec![report?])
}

/// Binding `i` is one of three pattern shapes around the word `i`; key `perf.<j>.tick` matches
/// exactly binding `j` whatever its shape, so every message is routed once and the exchange
/// has to tell 10,000 patterns apart.
pub fn topic_pattern(i: usize) -> String {
    match i % 3 {
        0 => format!("perf.{i}.*"),
        1 => format!("perf.{i}.#"),
        _ => format!("*.{i}.tick"),
    }
}

pub fn topic_key(j: usize) -> String {
    format!("perf.{j}.tick")
}

/// Keys spread evenly over the bindings, at most `TOPIC_KEYS_MAX` of them.
pub fn topic_keys(bindings: usize) -> Vec<String> {
    let count = bindings.clamp(1, crate::limits::TOPIC_KEYS_MAX);
    let step = (bindings / count).max(1);
    (0..count).map(|k| topic_key(k * step)).collect()
}

pub fn topic(opts: &Opts) -> Result<Vec<Report>> {
    let url = AmqpUrl::parse(&opts.url)?;
    let mut setup = Conn::open(&url)?;
    let prefix = topology::run_prefix("top");
    let exchange = format!("{prefix}-x");
    topology::declare_exchange(&mut setup, &exchange, "topic", opts.persistent)?;
    let queues = declare_queues(&mut setup, &prefix, opts.queues, opts.queue_kind())?;
    let bindings: Vec<(String, String)> = (0..opts.bindings)
        .map(|i| (queues[i % queues.len()].clone(), topic_pattern(i)))
        .collect();
    let bind_started = Instant::now();
    topology::bind_all(&mut setup, &exchange, &bindings)?;
    let bind_seconds = bind_started.elapsed().as_secs_f64();
    let flow = Flow {
        scenario: "topic",
        label: format!("bindings={}", opts.bindings),
        exchange: exchange.clone(),
        producer_keys: vec![topic_keys(opts.bindings); opts.producers],
        consumer_queues: queues.clone(),
        fanout_factor: 1,
        rate: None,
        warmup: false,
    };
    let report = run_flow(opts, &url, &flow);
    topology::cleanup(&mut setup, &queues, Some(&exchange));
    setup.close();
    let mut report = report?;
    report.push("bind_per_s", opts.bindings as f64 / bind_seconds.max(1e-9));
    Ok(vec![report])
}

pub fn declare_queues(
    conn: &mut Conn,
    prefix: &str,
    count: usize,
    kind: QueueKind,
) -> Result<Vec<String>> {
    let names: Vec<String> = (0..count).map(|i| format!("{prefix}-q{i}")).collect();
    for name in &names {
        topology::declare_queue(conn, name, kind)?;
    }
    Ok(names)
}

/// Runs one flow: opens consumers then producers, releases them together, draws progress,
/// joins, reports.
fn run_flow(opts: &Opts, url: &AmqpUrl, flow: &Flow) -> Result<Report> {
    let mut consumers = Vec::with_capacity(flow.consumer_queues.len());
    for queue in &flow.consumer_queues {
        let mut conn = Conn::open_on(url, opts.placed(2))?;
        topology::consume(&mut conn, queue, opts.prefetch, opts.auto_ack)?;
        consumers.push(conn);
    }
    let mut producers = Vec::with_capacity(flow.producer_keys.len());
    for _ in &flow.producer_keys {
        let mut conn = Conn::open_on(url, opts.placed(1))?;
        if opts.confirm > 0 {
            topology::confirm_select(&mut conn)?;
        }
        producers.push(conn);
    }
    let placement = [("p", &producers), ("c", &consumers)]
        .iter()
        .map(|(role, conns)| {
            conns
                .iter()
                .map(|conn| shard_label(role, conn.shard))
                .collect::<String>()
        })
        .collect::<String>();
    let shared = std::sync::Arc::new(Shared::default());
    let duration = Duration::from_secs(opts.duration);
    let started = Instant::now();
    let start_ns = now_ns();
    let end = started + duration;
    let pollers = Pollers::start(opts, end)?;
    let cpu_before = process_cpu_ns();
    let broker_cpu_before = opts.pid.and_then(pid_cpu_ns);
    let warmup_until_ns = if flow.warmup {
        start_ns + opts.warmup * 1_000_000_000
    } else {
        0
    };
    let consumer_threads: Vec<JoinHandle<Result<ConsumerResult>>> = consumers
        .into_iter()
        .map(|conn| {
            let spec = ConsumerSpec {
                auto_ack: opts.auto_ack,
                ack_every: opts.multiple_ack,
                end,
                count: None,
                warmup_until_ns,
            };
            spawn_worker(&shared, move |s| run_consumer(conn, spec, s))
        })
        .collect();
    let producer_threads: Vec<JoinHandle<Result<ProducerResult>>> = producers
        .into_iter()
        .zip(&flow.producer_keys)
        .map(|(conn, keys)| {
            let spec = ProducerSpec {
                exchange: flow.exchange.clone(),
                routing_keys: keys.clone(),
                size_bytes: opts.size,
                persistent: opts.persistent,
                confirm_window: opts.confirm,
                rate: flow.rate.map(|r| r / flow.producer_keys.len() as f64),
                start_ns,
                end,
                count: None,
                backlog_max: (flow.rate.is_none() && opts.max_backlog > 0)
                    .then_some(opts.max_backlog),
                fanout_factor: flow.fanout_factor,
            };
            spawn_worker(&shared, move |s| run_producer(conn, spec, s))
        })
        .collect();
    let mut progress = Progress::new(flow.scenario, &shared);
    wait_until(end, PROGRESS_INTERVAL, &shared, || progress.tick());
    let elapsed_at_end = started.elapsed().as_secs_f64();
    let cpu_ns = process_cpu_ns() - cpu_before;
    let broker_cpu_ns = opts
        .pid
        .and_then(pid_cpu_ns)
        .zip(broker_cpu_before)
        .map(|(after, before)| after.saturating_sub(before));
    let published_at_end = shared.published.load(Ordering::Relaxed);
    let consumed_at_end = shared.consumed.load(Ordering::Relaxed);
    progress.finish();

    let mut produced = ProducerResult::default();
    for handle in producer_threads {
        let r = join(handle)?;
        produced.published += r.published;
        produced.confirmed += r.confirmed;
        produced.nacked += r.nacked;
    }
    let mut latency = new_histogram();
    let mut consumed = 0;
    for handle in consumer_threads {
        let r = join(handle)?;
        consumed += r.consumed;
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = latency.add(&r.latency_ns);
    }
    let seconds = elapsed_at_end.max(1e-9);
    let mut report = Report::new(flow.scenario, format!("{}{placement}", flow.label));
    report.push("published_msgs_per_s", published_at_end as f64 / seconds);
    report.push("consumed_msgs_per_s", consumed_at_end as f64 / seconds);
    report.push(
        "consumed_mb_per_s",
        consumed_at_end as f64 * opts.size as f64 / seconds / 1e6,
    );
    report.push_latency(&latency);
    report.push("published", produced.published as f64);
    report.push("consumed", consumed as f64);
    if opts.confirm > 0 {
        report.push("confirmed", produced.confirmed as f64);
        report.push("nacked", produced.nacked as f64);
    }
    report.push("tool_cpu_percent", cpu_ns as f64 / 1e9 / seconds * 100.0);
    if let Some(ns) = broker_cpu_ns {
        report.push("broker_cpu_percent", ns as f64 / 1e9 / seconds * 100.0);
    }
    if let Some(pollers) = pollers {
        pollers.finish(&mut report);
    }
    Ok(report)
}

/// ` q=1`: where a connection landed, for the report's label (nothing for other brokers).
fn shard_label(role: &str, shard: Option<u32>) -> String {
    shard.map_or(String::new(), |shard| format!(" {role}={shard}"))
}

/// Runs `work` on its own thread; an error stops the other workers of the run.
pub fn spawn_worker<T: Send + 'static>(
    shared: &std::sync::Arc<Shared>,
    work: impl FnOnce(&Shared) -> Result<T> + Send + 'static,
) -> JoinHandle<Result<T>> {
    let shared = shared.clone();
    std::thread::spawn(move || {
        let result = work(&shared);
        if result.is_err() {
            shared.stop.store(true, Ordering::Relaxed);
        }
        result
    })
}

pub fn join<T>(handle: JoinHandle<Result<T>>) -> Result<T> {
    handle.join().map_err(|_| PerfError::WorkerPanicked)?
}

/// Fill a queue with `--messages`, wait until the broker reports them all, then drain it.
pub fn backlog(opts: &Opts) -> Result<Vec<Report>> {
    let url = AmqpUrl::parse(&opts.url)?;
    let mut setup = Conn::open(&url)?;
    let prefix = topology::run_prefix("bl");
    let queues = declare_queues(&mut setup, &prefix, 1, opts.queue_kind())?;
    let result = backlog_phases(opts, &url, &mut setup, &queues[0]);
    topology::cleanup(&mut setup, &queues, None);
    setup.close();
    Ok(vec![result?])
}

fn backlog_phases(opts: &Opts, url: &AmqpUrl, setup: &mut Conn, queue: &str) -> Result<Report> {
    let rss_before = opts.pid.and_then(crate::clock::pid_rss_bytes);
    let mut producer = Conn::open(url)?;
    if opts.confirm > 0 {
        topology::confirm_select(&mut producer)?;
    }
    let shared = std::sync::Arc::new(Shared::default());
    let fill_started = Instant::now();
    let spec = ProducerSpec {
        exchange: String::new(),
        routing_keys: vec![queue.to_string()],
        size_bytes: opts.size,
        persistent: opts.persistent,
        confirm_window: opts.confirm,
        rate: None,
        start_ns: now_ns(),
        end: fill_started + BACKLOG_PHASE_TIMEOUT,
        count: Some(opts.messages),
        backlog_max: None,
        fanout_factor: 1,
    };
    let handle = spawn_worker(&shared, move |s| run_producer(producer, spec, s));
    let mut progress = Progress::new("backlog fill", &shared);
    let deadline = fill_started + BACKLOG_PHASE_TIMEOUT;
    while !handle.is_finished() && Instant::now() < deadline {
        std::thread::sleep(BACKLOG_POLL_INTERVAL);
        progress.tick_every(PROGRESS_INTERVAL);
    }
    let published = join(handle)?.published;
    let mut depth = 0u64;
    while Instant::now() < deadline {
        depth = u64::from(topology::queue_depth(setup, queue)?);
        if depth >= published {
            break;
        }
        std::thread::sleep(BACKLOG_POLL_INTERVAL);
    }
    let fill_seconds = fill_started.elapsed().as_secs_f64();
    progress.finish();
    if depth < opts.messages {
        return Err(PerfError::Timeout(
            "the queue to hold every published message",
        ));
    }
    let rss_full = opts.pid.and_then(crate::clock::pid_rss_bytes);

    let mut consumer = Conn::open(url)?;
    topology::consume(&mut consumer, queue, opts.prefetch, opts.auto_ack)?;
    let drain_started = Instant::now();
    let spec = ConsumerSpec {
        auto_ack: opts.auto_ack,
        ack_every: opts.multiple_ack,
        end: drain_started + BACKLOG_PHASE_TIMEOUT,
        count: Some(depth),
        warmup_until_ns: u64::MAX,
    };
    let handle = spawn_worker(&shared, move |s| run_consumer(consumer, spec, s));
    let mut progress = Progress::new("backlog drain", &shared);
    while !handle.is_finished() {
        std::thread::sleep(BACKLOG_POLL_INTERVAL);
        progress.tick_every(PROGRESS_INTERVAL);
    }
    let drained = join(handle)?.consumed;
    let drain_seconds = drain_started.elapsed().as_secs_f64();
    progress.finish();

    let mut report = Report::new("backlog", format!("messages={}", opts.messages));
    report.push("fill_msgs_per_s", published as f64 / fill_seconds.max(1e-9));
    report.push("drain_msgs_per_s", drained as f64 / drain_seconds.max(1e-9));
    report.push("drained", drained as f64);
    if let (Some(before), Some(full)) = (rss_before, rss_full) {
        let per_message = (full as f64 - before as f64) / opts.messages as f64;
        report.push("rss_before_mb", before as f64 / 1e6);
        report.push("rss_full_mb", full as f64 / 1e6);
        report.push("rss_bytes_per_msg", per_message);
        report.push("overhead_bytes_per_msg", per_message - opts.size as f64);
    }
    Ok(report)
}

/// Many connections, each publishing at `--rate` to one of `--queues` queues and consuming
/// from it: the cost of connection and queue count under light traffic.
pub fn connections(opts: &Opts) -> Result<Vec<Report>> {
    let url = AmqpUrl::parse(&opts.url)?;
    let mut setup = Conn::open(&url)?;
    let prefix = topology::run_prefix("conn");
    let queues = declare_queues(&mut setup, &prefix, opts.queues, opts.queue_kind())?;
    let result = crate::many::run(opts, &url, &queues);
    topology::cleanup(&mut setup, &queues, None);
    setup.close();
    Ok(vec![result?])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_keys_match_exactly_their_binding() {
        for j in [0usize, 1, 2, 5, 9999] {
            let key = topic_key(j);
            let words: Vec<&str> = key.split('.').collect();
            let pattern = topic_pattern(j);
            let p: Vec<&str> = pattern.split('.').collect();
            // Same middle word; the other words are wildcards or equal.
            assert_eq!(p[1], words[1]);
            assert!(p[0] == "*" || p[0] == words[0]);
            assert!(p[2] == "*" || p[2] == "#" || p[2] == words[2]);
        }
        let keys = topic_keys(10_000);
        assert_eq!(keys.len(), crate::limits::TOPIC_KEYS_MAX);
        assert_eq!(keys[1], "perf.2.tick");
        assert_eq!(topic_keys(3).len(), 3);
    }
}
