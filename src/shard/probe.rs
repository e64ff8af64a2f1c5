//! What a shard counts for the operator beyond its queues' own totals (Redpanda's "probe"):
//! its publishers' totals (shared with its sessions), the totals of queues it deleted (so the
//! global counters never go back), the enqueue-to-deliver latency, and its busy time. Plain
//! `Cell`s written on the shard's executor only; read by `stats` when the shard is asked.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::metrics::{Histogram, PublishCounters, QueueTotals};

/// First bucket of the enqueue-to-deliver histogram: 1 µs (in ns).
pub const DELIVERY_LATENCY_FIRST_BOUND_NS: u64 = 1_000;

pub struct Probe {
    publish: Rc<PublishCounters>,
    retired: Cell<QueueTotals>,
    delivery_latency_ns: RefCell<Histogram>,
    /// Executor run time (polling and running tasks, not spinning or parked), accumulated from
    /// glommio's stats, which reset each time they are read.
    busy: Cell<Duration>,
    /// The previous reading, for the busy fraction since then.
    busy_read: Cell<Option<(Instant, Duration)>>,
}

impl Default for Probe {
    fn default() -> Probe {
        Probe {
            publish: Rc::default(),
            retired: Cell::default(),
            delivery_latency_ns: RefCell::new(Histogram::new(DELIVERY_LATENCY_FIRST_BOUND_NS)),
            busy: Cell::default(),
            busy_read: Cell::new(None),
        }
    }
}

/// The busy time and the fraction of wall time busy since the previous reading (None at the
/// first one).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BusyReading {
    pub busy_seconds: f64,
    pub busy_fraction: Option<f64>,
}

impl Probe {
    /// The counters a session of this shard counts its publishes and confirms in.
    pub fn publish_counters(&self) -> Rc<PublishCounters> {
        self.publish.clone()
    }

    pub fn publish(&self) -> &PublishCounters {
        &self.publish
    }

    /// A deleted queue's totals stay in the shard's.
    pub fn retire(&self, totals: &QueueTotals) {
        let mut retired = self.retired.get();
        retired.add(totals);
        self.retired.set(retired);
    }

    pub fn retired(&self) -> QueueTotals {
        self.retired.get()
    }

    pub fn observe_delivery_latency(&self, latency: Duration) {
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.delivery_latency_ns.borrow_mut().observe(ns);
    }

    pub fn delivery_latency_ns(&self) -> Histogram {
        *self.delivery_latency_ns.borrow()
    }

    /// Must run on the shard's own executor (glommio's stats are per thread).
    pub fn read_busy(&self) -> BusyReading {
        let stats = glommio::executor().executor_stats();
        let busy = self.busy.get() + stats.total_runtime();
        self.busy.set(busy);
        let now = Instant::now();
        let fraction = self.busy_read.get().and_then(|(at, before)| {
            let wall = now.duration_since(at).as_secs_f64();
            (wall > 0.0).then(|| ((busy - before).as_secs_f64() / wall).clamp(0.0, 1.0))
        });
        self.busy_read.set(Some((now, busy)));
        BusyReading {
            busy_seconds: busy.as_secs_f64(),
            busy_fraction: fraction,
        }
    }
}
