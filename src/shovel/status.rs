//! What `/api/shovels` and `ringmqctl shovel_status` show of one shovel.

use std::time::{SystemTime, UNIX_EPOCH};

use super::definition::{ShovelDefinition, Source};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShovelState {
    Starting,
    Running,
    /// Failed; `reason` says why. It starts again after `reconnect-delay`.
    Terminated,
}

impl ShovelState {
    pub fn as_str(self) -> &'static str {
        match self {
            ShovelState::Starting => "starting",
            ShovelState::Running => "running",
            ShovelState::Terminated => "terminated",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ShovelStatus {
    pub vhost: String,
    pub name: String,
    pub state: ShovelState,
    pub reason: Option<String>,
    /// When `state` last changed, seconds since the epoch.
    pub changed_at_seconds: u64,
    pub src_uri: String,
    pub src_queue: Option<String>,
    pub src_exchange: Option<String>,
    pub src_exchange_key: Option<String>,
    pub dest_uri: String,
    pub dest_queue: Option<String>,
    pub dest_exchange: Option<String>,
    pub dest_exchange_key: Option<String>,
    /// Messages published to the destination by the current run of the worker.
    pub published: u64,
}

impl ShovelStatus {
    pub fn new(vhost: &str, name: &str, definition: &ShovelDefinition) -> ShovelStatus {
        let (src_queue, src_exchange, src_exchange_key) = match &definition.source {
            Source::Queue(queue) => (Some(queue.clone()), None, None),
            Source::Exchange { exchange, key } => (None, Some(exchange.clone()), Some(key.clone())),
        };
        ShovelStatus {
            vhost: vhost.to_string(),
            name: name.to_string(),
            state: ShovelState::Starting,
            reason: None,
            changed_at_seconds: now_seconds(),
            src_uri: definition.src_uri_text.clone(),
            src_queue,
            src_exchange,
            src_exchange_key,
            dest_uri: definition.dest_uri_text.clone(),
            dest_queue: definition.dest_queue.clone(),
            dest_exchange: definition.dest_exchange.clone(),
            dest_exchange_key: definition.dest_exchange_key.clone(),
            published: 0,
        }
    }

    pub fn set(&mut self, state: ShovelState, reason: Option<String>) {
        self.state = state;
        self.reason = reason;
        self.changed_at_seconds = now_seconds();
    }

    /// RabbitMQ's `timestamp` (`rabbit_shovel_mgmt:format_ts`, `~w-~2.2.0w-~2.2.0w
    /// ~w:~2.2.0w:~2.2.0w`): `YYYY-MM-DD H:MM:SS`, the hour not padded; UTC here.
    pub fn timestamp(&self) -> String {
        let seconds = self.changed_at_seconds;
        let (days, rest) = (seconds / 86_400, seconds % 86_400);
        let (year, month, day) = civil_from_days(days as i64);
        format!(
            "{year}-{month:02}-{day:02} {}:{:02}:{:02}",
            rest / 3600,
            rest % 3600 / 60,
            rest % 60
        )
    }
}

fn now_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar (Howard
/// Hinnant's algorithm, counting 400-year eras from 0000-03-01).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::civil_from_days;

    #[test]
    fn timestamp_as_rabbitmq_prints_it() {
        let definition = crate::shovel::definition::validate(
            "s",
            &serde_json::json!({"src-uri": "amqp://", "src-queue": "a",
                                "dest-uri": "amqp://", "dest-queue": "b"}),
        )
        .expect("valid");
        let mut status = super::ShovelStatus::new("/", "s", &definition);
        status.changed_at_seconds = 19_723 * 86_400 + 7 * 3600 + 5 * 60 + 9;
        assert_eq!(status.timestamp(), "2024-01-01 7:05:09");
    }

    #[test]
    fn calendar() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
