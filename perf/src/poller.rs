//! `--poll-api URL --pollers N --poll-interval-ms MS`: management API clients that poll while
//! a scenario runs (issue 10's measurement: publish rate and p99 with the API polled every
//! second by 10 clients, against not polled). Each poller is a thread with its own keep-alive
//! HTTP connection, on a fixed schedule staggered over the interval (a slow answer skips the
//! polls it made late instead of bursting to catch up); answers are timed from the request's
//! send to the end of its body.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::Engine as _;
use hdrhistogram::Histogram;

use crate::error::{PerfError, Result};
use crate::limits::{POLL_NAP_MAX, POLL_TIMEOUT};
use crate::opts::Opts;
use crate::report::Report;
use crate::workers::new_histogram;

/// The request every poller sends: the URL without its credentials, and those as a header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollTarget {
    pub url: String,
    pub authorization: Option<String>,
}

impl PollTarget {
    /// `http://user:pass@host:port/path` (percent-escaped credentials as in an AMQP URL).
    pub fn parse(text: &str) -> Result<PollTarget> {
        let mut url = url::Url::parse(text).map_err(|e| PerfError::Url(format!("{text}: {e}")))?;
        if url.scheme() != "http" {
            return Err(PerfError::Url(format!("{text}: --poll-api takes http://")));
        }
        let authorization = if url.username().is_empty() {
            None
        } else {
            let user = crate::url::percent_decode(url.username())?;
            let password = crate::url::percent_decode(url.password().unwrap_or(""))?;
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            Some(format!("Basic {token}"))
        };
        // Neither can fail on an http URL with a host.
        let _ = url.set_username("");
        let _ = url.set_password(None);
        Ok(PollTarget {
            url: url.to_string(),
            authorization,
        })
    }
}

/// One poller's tally.
struct PollResult {
    polls: u64,
    errors: u64,
    latency_ns: Histogram<u64>,
}

/// The running pollers; stopped and joined by `finish`, or on drop when a run fails first.
pub struct Pollers {
    stop: Arc<AtomicBool>,
    handles: Vec<JoinHandle<PollResult>>,
}

impl Pollers {
    /// Starts `--pollers` threads polling `--poll-api` until `end`; None without `--poll-api`.
    pub fn start(opts: &Opts, end: Instant) -> Result<Option<Pollers>> {
        let Some(text) = &opts.poll_api else {
            return Ok(None);
        };
        let target = Arc::new(PollTarget::parse(text)?);
        let interval = Duration::from_millis(opts.poll_interval_ms);
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let handles = (0..opts.pollers)
            .map(|index| {
                let offset = interval.mul_f64(index as f64 / opts.pollers as f64);
                let schedule = Schedule {
                    first: started + offset,
                    interval,
                    end,
                };
                let (target, stop) = (target.clone(), stop.clone());
                std::thread::spawn(move || poll(&target, schedule, &stop))
            })
            .collect();
        Ok(Some(Pollers { stop, handles }))
    }

    /// Joins the pollers and adds `poll_count`, `poll_errors` and `poll_latency_us_*`.
    pub fn finish(mut self, report: &mut Report) {
        self.stop.store(true, Ordering::Relaxed);
        let mut polls = 0;
        let mut errors = 0;
        let mut latency = new_histogram();
        for handle in self.handles.drain(..) {
            let Ok(result) = handle.join() else {
                errors += 1;
                continue;
            };
            polls += result.polls;
            errors += result.errors;
            // Both histograms have the same bounds, so adding cannot fail.
            let _ = latency.add(&result.latency_ns);
        }
        report.push("poll_count", polls as f64);
        report.push("poll_errors", errors as f64);
        report.push_latency_as("poll_latency", &latency);
    }
}

impl Drop for Pollers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for handle in self.handles.drain(..) {
            let _ = handle.join();
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Schedule {
    first: Instant,
    interval: Duration,
    end: Instant,
}

impl Schedule {
    /// The first due time at or after `now`.
    fn next_due(&self, now: Instant) -> Instant {
        let Some(late) = now.checked_duration_since(self.first) else {
            return self.first;
        };
        let periods = late.as_nanos().div_ceil(self.interval.as_nanos().max(1));
        self.first + self.interval.mul_f64(periods as f64)
    }
}

fn poll(target: &PollTarget, schedule: Schedule, stop: &AtomicBool) -> PollResult {
    let agent = ureq::AgentBuilder::new().timeout(POLL_TIMEOUT).build();
    let mut result = PollResult {
        polls: 0,
        errors: 0,
        latency_ns: new_histogram(),
    };
    loop {
        let due = schedule.next_due(Instant::now());
        // Naps of at most POLL_NAP_MAX, so a stop is seen soon.
        while Instant::now() < due && !stop.load(Ordering::Relaxed) {
            let left = due.saturating_duration_since(Instant::now());
            std::thread::sleep(left.min(POLL_NAP_MAX));
        }
        if stop.load(Ordering::Relaxed) || Instant::now() >= schedule.end {
            return result;
        }
        let sent = Instant::now();
        let mut request = agent.get(&target.url);
        if let Some(authorization) = &target.authorization {
            request = request.set("authorization", authorization);
        }
        let answered = request
            .call()
            .ok()
            .filter(|response| response.status() == 200)
            .and_then(|response| response.into_string().ok());
        match answered {
            Some(_) => {
                result.polls += 1;
                result
                    .latency_ns
                    .saturating_record((sent.elapsed().as_nanos() as u64).max(1));
            }
            None => result.errors += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_become_a_header() {
        let target = PollTarget::parse("http://guest:gu%40st@127.0.0.1:15672/api/queues").unwrap();
        assert_eq!(target.url, "http://127.0.0.1:15672/api/queues");
        let token = base64::engine::general_purpose::STANDARD.encode("guest:gu@st");
        assert_eq!(target.authorization, Some(format!("Basic {token}")));
        let bare = PollTarget::parse("http://127.0.0.1:15672/api/overview").unwrap();
        assert_eq!(bare.authorization, None);
        assert!(PollTarget::parse("https://h/api").is_err());
        assert!(PollTarget::parse("not a url").is_err());
    }

    #[test]
    fn late_polls_are_skipped_not_bunched() {
        let first = Instant::now();
        let schedule = Schedule {
            first,
            interval: Duration::from_millis(1000),
            end: first + Duration::from_secs(10),
        };
        assert_eq!(schedule.next_due(first), first);
        let late = first + Duration::from_millis(2500);
        assert_eq!(schedule.next_due(late), first + Duration::from_millis(3000));
        let before = first.checked_sub(Duration::from_millis(1)).unwrap();
        assert_eq!(schedule.next_due(before), first);
    }
}
