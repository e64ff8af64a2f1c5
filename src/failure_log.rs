//! One warning per failure episode, not one per failed operation.
//!
//! A failing disk fails every flush, read and append that meets it: one WARN line each made the
//! log grow with the publish rate and buried the first error. An episode starts at the first
//! failure (logged with its error), goes on while failures keep coming (one summary with the
//! counts at most every `FAILURE_LOG_SUMMARY_INTERVAL`), and ends at the first success after it
//! (one "recovered" line with the episode's total and length). Counters for the operator are
//! kept elsewhere (the log's `WalStats`, the pager's stats): this decides only what is written
//! to the log. The clock is passed in, so the decisions are tested without waiting.

use std::time::{Duration, Instant};

use crate::limits::FAILURE_LOG_SUMMARY_INTERVAL;

/// What to log for one failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureNote {
    /// The first failure of an episode: log it, with its error.
    First,
    /// Failures went on for an interval since the last line: log the counts.
    Summary { since_last_line: u64, total: u64 },
    /// Reported within the interval already: nothing to log.
    Counted,
}

/// An episode that ended with a success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recovery {
    pub failures: u64,
    pub duration: Duration,
}

/// The failure episode of one kind of operation (a log's flushes, a shard's paged reads).
#[derive(Debug, Default)]
pub struct FailureEpisode {
    current: Option<Episode>,
}

#[derive(Debug)]
struct Episode {
    started: Instant,
    last_line: Instant,
    total: u64,
    since_last_line: u64,
}

impl FailureEpisode {
    /// One more failure at `now`.
    pub fn failed(&mut self, now: Instant) -> FailureNote {
        let Some(episode) = self.current.as_mut() else {
            self.current = Some(Episode {
                started: now,
                last_line: now,
                total: 1,
                since_last_line: 0,
            });
            return FailureNote::First;
        };
        episode.total += 1;
        episode.since_last_line += 1;
        if now.saturating_duration_since(episode.last_line) < FAILURE_LOG_SUMMARY_INTERVAL {
            return FailureNote::Counted;
        }
        episode.last_line = now;
        FailureNote::Summary {
            since_last_line: std::mem::take(&mut episode.since_last_line),
            total: episode.total,
        }
    }

    /// A success at `now`: the episode it ends, if one was going on.
    pub fn succeeded(&mut self, now: Instant) -> Option<Recovery> {
        let episode = self.current.take()?;
        Some(Recovery {
            failures: episode.total,
            duration: now.saturating_duration_since(episode.started),
        })
    }

    pub fn is_failing(&self) -> bool {
        self.current.is_some()
    }
}

/// Logs `note` for a failure of `what` (a short noun phrase: "message log flush").
pub fn warn(note: FailureNote, what: &str, error: &dyn std::fmt::Display) {
    match note {
        FailureNote::First => tracing::warn!(
            %error,
            summary_interval_s = FAILURE_LOG_SUMMARY_INTERVAL.as_secs(),
            "{what} failed; further failures are summarised until it recovers"
        ),
        FailureNote::Summary {
            since_last_line,
            total,
        } => tracing::warn!(
            %error,
            failures = since_last_line,
            episode_failures = total,
            "{what} still failing"
        ),
        FailureNote::Counted => {}
    }
}

/// Logs the end of an episode of `what`.
pub fn recovered(recovery: Recovery, what: &str) {
    tracing::info!(
        failures = recovery.failures,
        duration_ms = recovery.duration.as_millis() as u64,
        "{what} recovered"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_episode_is_one_line_then_summaries_at_most_every_interval_then_one_recovery() {
        let mut episode = FailureEpisode::default();
        let start = Instant::now();
        assert!(!episode.is_failing());
        assert_eq!(
            episode.succeeded(start),
            None,
            "no episode, nothing to report"
        );
        assert_eq!(episode.failed(start), FailureNote::First);
        assert!(episode.is_failing());
        // A thousand failures within the interval: counted, not logged.
        let step = FAILURE_LOG_SUMMARY_INTERVAL / 2_000;
        for i in 1..=1_000u32 {
            assert_eq!(episode.failed(start + step * i), FailureNote::Counted);
        }
        let later = start + FAILURE_LOG_SUMMARY_INTERVAL;
        assert_eq!(
            episode.failed(later),
            FailureNote::Summary {
                since_last_line: 1_001,
                total: 1_002
            }
        );
        assert_eq!(episode.failed(later + step), FailureNote::Counted);
        let end = later + FAILURE_LOG_SUMMARY_INTERVAL * 3;
        assert_eq!(
            episode.succeeded(end),
            Some(Recovery {
                failures: 1_003,
                duration: end - start
            })
        );
        assert!(!episode.is_failing());
        // The next failure starts a new episode with its own first line.
        assert_eq!(episode.failed(end), FailureNote::First);
    }

    #[test]
    fn a_clock_going_backwards_counts_and_never_panics() {
        let mut episode = FailureEpisode::default();
        let now = Instant::now() + Duration::from_secs(60);
        assert_eq!(episode.failed(now), FailureNote::First);
        assert_eq!(
            episode.failed(now - Duration::from_secs(30)),
            FailureNote::Counted
        );
        let recovery = episode.succeeded(now - Duration::from_secs(40));
        assert_eq!(recovery.map(|r| r.duration), Some(Duration::ZERO));
    }
}
