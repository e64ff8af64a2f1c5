//! Resource alarms (RabbitMQ's `rabbit_alarm`): the memory high watermark and the disk free
//! limit, as thresholds, how they are read from the system, and what a sample means.
//!
//! Pure but for the probes in `probe`: the shard (`shard::alarms`) samples on a timer, keeps the
//! result as shard-local state, and the session blocks publishers on it.

pub mod probe;
mod watermark;

pub use watermark::{
    parse_bytes, parse_disk_free_limit, parse_memory_watermark, DiskFreeLimit, MemoryWatermark,
};

/// The limits the sampler checks, resolved once at start (the machine's memory is read then).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlarmLimits {
    /// Resident bytes at or above which the memory alarm is raised.
    pub memory_limit_bytes: u64,
    /// Free bytes on the data directory's filesystem below which the disk alarm is raised.
    pub disk_free_limit_bytes: u64,
}

/// One reading of the process and its data directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sample {
    pub memory_used_bytes: u64,
    /// `None`: the filesystem could not be asked (then the disk alarm keeps its last state).
    pub disk_free_bytes: Option<u64>,
}

/// Which alarms are in effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AlarmSet {
    pub memory: bool,
    pub disk: bool,
}

impl AlarmSet {
    pub fn any(self) -> bool {
        self.memory || self.disk
    }

    /// The `connection.blocked` reason, as RabbitMQ's reader words it (`blocked_by_message`).
    pub fn blocked_reason(self) -> String {
        let reasons: Vec<&str> = [(self.memory, "memory"), (self.disk, "disk")]
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, name)| *name)
            .collect();
        format!("low on {}", reasons.join(" & "))
    }

    /// RabbitMQ's alarm names, as `/api/health/checks/alarms` lists them.
    pub fn resources(self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if self.memory {
            names.push("memory");
        }
        if self.disk {
            names.push("disk");
        }
        names
    }
}

/// The alarms a sample raises. RabbitMQ's memory alarm is "used > limit" and its disk alarm
/// "free < limit"; an unreadable filesystem leaves the disk alarm as it was.
pub fn evaluate(sample: Sample, limits: AlarmLimits, previous: AlarmSet) -> AlarmSet {
    AlarmSet {
        memory: sample.memory_used_bytes > limits.memory_limit_bytes,
        disk: sample
            .disk_free_bytes
            .map_or(previous.disk, |free| free < limits.disk_free_limit_bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: AlarmLimits = AlarmLimits {
        memory_limit_bytes: 1000,
        disk_free_limit_bytes: 50,
    };

    #[test]
    fn memory_over_the_watermark_and_disk_under_the_limit_raise_alarms() {
        let quiet = Sample {
            memory_used_bytes: 1000,
            disk_free_bytes: Some(50),
        };
        assert_eq!(
            evaluate(quiet, LIMITS, AlarmSet::default()),
            AlarmSet::default()
        );
        let both = Sample {
            memory_used_bytes: 1001,
            disk_free_bytes: Some(49),
        };
        let alarms = evaluate(both, LIMITS, AlarmSet::default());
        assert!(alarms.memory && alarms.disk);
        assert_eq!(alarms.blocked_reason(), "low on memory & disk");
        assert_eq!(alarms.resources(), ["memory", "disk"]);
    }

    #[test]
    fn an_unreadable_filesystem_keeps_the_disk_alarm_as_it_was() {
        let unknown = Sample {
            memory_used_bytes: 0,
            disk_free_bytes: None,
        };
        let raised = AlarmSet {
            memory: false,
            disk: true,
        };
        assert_eq!(evaluate(unknown, LIMITS, raised), raised);
        assert_eq!(raised.blocked_reason(), "low on disk");
    }
}
