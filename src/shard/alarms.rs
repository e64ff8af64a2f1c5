//! Resource alarms as shard-local state: every shard samples the process's memory and its data
//! directory's free space itself (`ALARM_SAMPLE_INTERVAL`), so the alarm reaches its sessions
//! with no message between shards and no lock. Sessions read it before each frame
//! (`Shard::alarms`) and wait on `Shard::wait_for_alarms_clear` while blocked.
//!
//! Why each shard samples rather than one broadcasting: a reading is two small syscalls
//! (`/proc/self/statm`, `statvfs`), so N shards cost N of them per interval, and no shard's
//! view depends on another being scheduled (a busy topology owner would delay a broadcast just
//! when memory is short). Shards may disagree for one interval around a threshold.

use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::rc::Rc;

use super::sync::Notify;
use super::Shard;
use crate::alarm::{self, probe, AlarmLimits, AlarmSet, Sample};
use crate::limits::{ALARM_SAMPLE_CONTENT_BYTES_MAX, ALARM_SAMPLE_INTERVAL};

/// No alarm can be raised until `configure` is called (tests building a bare shard).
const UNCONFIGURED: AlarmLimits = AlarmLimits {
    memory_limit_bytes: u64::MAX,
    disk_free_limit_bytes: 0,
};

pub(super) struct Alarms {
    limits: Cell<AlarmLimits>,
    data_dir: RefCell<Option<PathBuf>>,
    in_effect: Cell<AlarmSet>,
    last_sample: Cell<Sample>,
    /// Content bytes clients announced since the last sample (`note_content_received`).
    content_since_sample: Cell<u64>,
    /// Notified whenever `in_effect` changes.
    changed: Notify,
}

impl Default for Alarms {
    fn default() -> Alarms {
        Alarms {
            limits: Cell::new(UNCONFIGURED),
            data_dir: RefCell::new(None),
            in_effect: Cell::new(AlarmSet::default()),
            last_sample: Cell::new(Sample::default()),
            content_since_sample: Cell::new(0),
            changed: Notify::default(),
        }
    }
}

impl Shard {
    /// The watermark and disk limit, and the directory whose filesystem is watched.
    pub fn configure_alarms(&self, limits: AlarmLimits, data_dir: PathBuf) {
        let alarms = &self.features.alarms;
        alarms.limits.set(limits);
        *alarms.data_dir.borrow_mut() = Some(data_dir);
    }

    /// Alarms in effect, as of this shard's last sample.
    pub fn alarms(&self) -> AlarmSet {
        self.features.alarms.in_effect.get()
    }

    pub fn alarm_limits(&self) -> AlarmLimits {
        self.features.alarms.limits.get()
    }

    pub fn alarm_sample(&self) -> Sample {
        self.features.alarms.last_sample.get()
    }

    /// Returns once no alarm is in effect, or the shard shuts down.
    pub async fn wait_for_alarms_clear(&self) {
        let alarms = &self.features.alarms;
        while alarms.in_effect.get().any() && !self.is_shutting_down() {
            futures_lite::future::or(alarms.changed.wait(), self.wait_for_shutdown()).await;
        }
    }

    /// Called for every content header a client sends: once the content announced since the
    /// last sample passes `ALARM_SAMPLE_CONTENT_BYTES_MAX`, samples now rather than when the
    /// sampler task next runs, which a saturating publisher on this executor delays (the memory
    /// alarm was raised hundreds of MiB past the watermark without this).
    pub fn note_content_received(&self, body_size: u64) {
        let alarms = &self.features.alarms;
        let received = alarms.content_since_sample.get().saturating_add(body_size);
        if received < ALARM_SAMPLE_CONTENT_BYTES_MAX {
            alarms.content_since_sample.set(received);
            return;
        }
        self.sample_alarms();
    }

    /// Takes one sample and updates the alarms (logged by the coordinator only, so a change is
    /// one line however many shards see it).
    fn sample_alarms(&self) {
        let alarms = &self.features.alarms;
        alarms.content_since_sample.set(0);
        let previous = alarms.in_effect.get();
        if previous.memory {
            probe::release_free_memory();
        }
        let disk_free_bytes = alarms
            .data_dir
            .borrow()
            .as_deref()
            .and_then(probe::filesystem_free_bytes);
        let sample = Sample {
            memory_used_bytes: probe::resident_memory_bytes().unwrap_or(0),
            disk_free_bytes,
        };
        alarms.last_sample.set(sample);
        let limits = alarms.limits.get();
        let now = alarm::evaluate(sample, limits, previous);
        if now == previous {
            return;
        }
        alarms.in_effect.set(now);
        alarms.changed.notify();
        if self.is_coordinator() {
            log_change(previous, now, sample, limits);
        }
    }
}

fn log_change(previous: AlarmSet, now: AlarmSet, sample: Sample, limits: AlarmLimits) {
    if previous.memory != now.memory {
        tracing::warn!(
            used_bytes = sample.memory_used_bytes,
            limit_bytes = limits.memory_limit_bytes,
            "memory resource limit alarm {}",
            if now.memory { "set" } else { "cleared" }
        );
    }
    if previous.disk != now.disk {
        tracing::warn!(
            free_bytes = sample.disk_free_bytes.unwrap_or(0),
            limit_bytes = limits.disk_free_limit_bytes,
            "disk resource limit alarm {}",
            if now.disk { "set" } else { "cleared" }
        );
    }
}

/// The sampler task of one shard: a sample at once, then one per `ALARM_SAMPLE_INTERVAL` until
/// the shard shuts down.
pub(super) async fn run_sampler(shard: Rc<Shard>) {
    while !shard.is_shutting_down() {
        shard.sample_alarms();
        let tick = async {
            glommio::timer::sleep(ALARM_SAMPLE_INTERVAL).await;
        };
        futures_lite::future::or(tick, shard.wait_for_shutdown()).await;
    }
}
