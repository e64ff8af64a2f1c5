//! A Jepsen-style checker for the cluster tests (issue 13): the clients of a test record a
//! history of what they did and saw (publishes sent, confirms and nacks, deliveries), each
//! event one line of text on their stdout, and the test checks the whole history at the end:
//!
//! - **lost:** a publish the broker confirmed that no consumer ever received;
//! - **invented:** a delivery of a message no publisher sent;
//! - **duplicated:** more first-time deliveries (`redelivered = false`) of a message than it
//!   was sent: a broker may deliver a message again after a failover or a lost ack, but only
//!   flagged as a redelivery; a publisher that retries an unconfirmed message may see it twice
//!   honestly, once per send;
//! - **reordered:** per consumer and publisher, first-time deliveries of messages sent once
//!   that arrive in an order other than the publisher's (AMQP's per-publisher, per-queue order;
//!   redeliveries and retried messages may come out of order).
//!
//! Messages are named by (publisher, sequence number); the clients put both in the message (for
//! instance as the message id `P:S`). A client prints one [`Event::line`] per event; the lines
//! can be interleaved with anything else on the same output, since only lines holding
//! [`HISTORY_TAG`] are read.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// What marks a history line in a client's output.
pub const HISTORY_TAG: &str = "HISTORY";

/// A message: its publisher and its sequence number within that publisher.
pub type MessageId = (u32, u64);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A publisher handed a message to the broker.
    Sent { message: MessageId },
    /// The broker confirmed it (basic.ack from a confirming channel).
    Confirmed { message: MessageId },
    /// The broker refused it (basic.nack), or the publisher gave up on it (connection lost
    /// before the confirm): neither promises anything.
    Unconfirmed { message: MessageId },
    /// A consumer received it.
    Delivered {
        consumer: u32,
        message: MessageId,
        redelivered: bool,
    },
}

impl Event {
    /// The event as one line of a client's output.
    pub fn line(&self) -> String {
        match *self {
            Event::Sent { message: (p, s) } => format!("{HISTORY_TAG} sent {p} {s}"),
            Event::Confirmed { message: (p, s) } => format!("{HISTORY_TAG} confirmed {p} {s}"),
            Event::Unconfirmed { message: (p, s) } => {
                format!("{HISTORY_TAG} unconfirmed {p} {s}")
            }
            Event::Delivered {
                consumer,
                message: (p, s),
                redelivered,
            } => format!(
                "{HISTORY_TAG} delivered {consumer} {p} {s} {}",
                u8::from(redelivered)
            ),
        }
    }

    /// The event a line holds, if it is a history line; `Err` for a history line that does
    /// not parse (a client that wrote half a line is a test failure, not something to skip).
    pub fn parse(line: &str) -> Option<Result<Event, String>> {
        let at = line.find(HISTORY_TAG)?;
        let fields: Vec<&str> = line[at + HISTORY_TAG.len()..].split_whitespace().collect();
        let number = |i: usize| -> Result<u64, String> {
            fields
                .get(i)
                .and_then(|f| f.parse().ok())
                .ok_or_else(|| format!("history line {line:?}: field {i}"))
        };
        let message = |first: usize| -> Result<MessageId, String> {
            let publisher = u32::try_from(number(first)?).map_err(|e| e.to_string())?;
            Ok((publisher, number(first + 1)?))
        };
        let event = match fields.first() {
            Some(&"sent") => message(1).map(|message| Event::Sent { message }),
            Some(&"confirmed") => message(1).map(|message| Event::Confirmed { message }),
            Some(&"unconfirmed") => message(1).map(|message| Event::Unconfirmed { message }),
            Some(&"delivered") => (|| {
                Ok(Event::Delivered {
                    consumer: u32::try_from(number(1)?).map_err(|e| e.to_string())?,
                    message: message(2)?,
                    redelivered: number(4)? != 0,
                })
            })(),
            _ => Err(format!("history line {line:?}: unknown event")),
        };
        Some(event)
    }
}

/// Every event the clients of one test recorded, in the order read (the checks do not depend
/// on the order between clients, only within one client's output).
#[derive(Debug, Default)]
pub struct History {
    events: Vec<Event>,
}

impl History {
    pub fn record(&mut self, event: Event) {
        self.events.push(event);
    }

    /// Adds the history lines of one client's output.
    pub fn read(&mut self, output: &str) -> Result<(), String> {
        for line in output.lines() {
            if let Some(event) = Event::parse(line) {
                self.events.push(event?);
            }
        }
        Ok(())
    }

    /// Every message some publisher saw confirmed (what a consumer must get at least once).
    pub fn confirmed(&self) -> BTreeSet<MessageId> {
        self.events
            .iter()
            .filter_map(|event| match *event {
                Event::Confirmed { message } => Some(message),
                _ => None,
            })
            .collect()
    }

    pub fn check(&self) -> Verdict {
        let mut sends: BTreeMap<MessageId, u32> = BTreeMap::new();
        let mut confirmed = BTreeSet::new();
        let mut first_deliveries: BTreeMap<MessageId, u32> = BTreeMap::new();
        let mut delivered = BTreeSet::new();
        let mut verdict = Verdict::default();
        for event in &self.events {
            match *event {
                Event::Sent { message } => *sends.entry(message).or_default() += 1,
                Event::Confirmed { message } => {
                    confirmed.insert(message);
                }
                Event::Unconfirmed { .. } => verdict.unconfirmed += 1,
                Event::Delivered {
                    message,
                    redelivered,
                    ..
                } => {
                    verdict.deliveries += 1;
                    delivered.insert(message);
                    if redelivered {
                        verdict.redeliveries += 1;
                    } else {
                        *first_deliveries.entry(message).or_default() += 1;
                    }
                }
            }
        }
        verdict.sent = sends.values().map(|&n| u64::from(n)).sum();
        verdict.confirmed = confirmed.len() as u64;
        verdict.lost = confirmed.difference(&delivered).copied().collect();
        verdict.invented = delivered
            .iter()
            .filter(|m| !sends.contains_key(m))
            .copied()
            .collect();
        verdict.duplicated = first_deliveries
            .iter()
            .filter(|(m, &n)| n > sends.get(m).copied().unwrap_or(0))
            .map(|(&m, _)| m)
            .filter(|m| sends.contains_key(m))
            .collect();
        verdict.reordered = self.reordered(&sends);
        verdict
    }

    /// First-time deliveries of messages sent once, per (consumer, publisher), whose sequence
    /// number is not above the one delivered before it.
    fn reordered(&self, sends: &BTreeMap<MessageId, u32>) -> Vec<(u32, MessageId, u64)> {
        let mut last: BTreeMap<(u32, u32), u64> = BTreeMap::new();
        let mut reordered = Vec::new();
        for event in &self.events {
            let Event::Delivered {
                consumer,
                message: message @ (publisher, sequence),
                redelivered: false,
            } = *event
            else {
                continue;
            };
            if sends.get(&message) != Some(&1) {
                continue;
            }
            if let Some(&before) = last.get(&(consumer, publisher)) {
                if sequence <= before {
                    reordered.push((consumer, message, before));
                }
            }
            last.insert((consumer, publisher), sequence);
        }
        reordered
    }
}

/// What the check found: counts, and every message that broke a rule.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    pub sent: u64,
    pub confirmed: u64,
    pub unconfirmed: u64,
    pub deliveries: u64,
    pub redeliveries: u64,
    pub lost: Vec<MessageId>,
    pub invented: Vec<MessageId>,
    pub duplicated: Vec<MessageId>,
    /// (consumer, message, the sequence number delivered before it).
    pub reordered: Vec<(u32, MessageId, u64)>,
}

impl Verdict {
    pub fn is_sound(&self) -> bool {
        self.lost.is_empty()
            && self.invented.is_empty()
            && self.duplicated.is_empty()
            && self.reordered.is_empty()
    }

    /// Panics with the summary unless the history broke no rule.
    pub fn assert_sound(&self) {
        assert!(self.is_sound(), "{self}");
    }
}

/// Shows at most this many messages per broken rule.
const SHOWN_PER_RULE: usize = 10;

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "history: {} sent, {} confirmed, {} unconfirmed, {} deliveries ({} redeliveries); \
             {} lost, {} invented, {} duplicated, {} reordered",
            self.sent,
            self.confirmed,
            self.unconfirmed,
            self.deliveries,
            self.redeliveries,
            self.lost.len(),
            self.invented.len(),
            self.duplicated.len(),
            self.reordered.len()
        )?;
        let show = |f: &mut fmt::Formatter<'_>, rule: &str, items: Vec<String>| {
            if items.is_empty() {
                return Ok(());
            }
            let first: Vec<String> = items.into_iter().take(SHOWN_PER_RULE).collect();
            write!(f, "\n  {rule}: {}", first.join(", "))
        };
        let ids = |ms: &[MessageId]| -> Vec<String> {
            ms.iter().map(|(p, s)| format!("{p}:{s}")).collect()
        };
        show(f, "lost (confirmed, never delivered)", ids(&self.lost))?;
        show(f, "invented (delivered, never sent)", ids(&self.invented))?;
        show(
            f,
            "duplicated (delivered again without the redelivered flag)",
            ids(&self.duplicated),
        )?;
        show(
            f,
            "reordered (consumer: message after sequence)",
            self.reordered
                .iter()
                .map(|(c, (p, s), before)| format!("{c}: {p}:{s} after {p}:{before}"))
                .collect(),
        )
    }
}
