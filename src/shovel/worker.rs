//! One shovel: connect to both ends, declare what RabbitMQ's shovel declares, consume from the
//! source and publish to the destination until stopped; on any failure record the reason and
//! try again after `reconnect-delay`.
//!
//! `on-confirm` bookkeeping: each publish takes the next confirm sequence number; a confirm
//! (single or multiple) turns its publishes' source delivery tags into "confirmed". Delivery
//! tags are published in increasing order, so every confirmed tag below the lowest one still
//! waiting is acknowledged at the source with one `basic.ack(multiple)`. A nack from the
//! destination returns that message to the source queue (`basic.nack(requeue)`): never lost.
//! In flight at once: at most the prefetch (the source stops delivering past it).
//!
//! Stopping (parameter cleared, broker shutting down): deliveries that arrive from then on
//! are not published (closing the source requeues them); the worker waits up to
//! `SHOVEL_STOP_TIMEOUT` for the confirms of what it did publish, acknowledges those at the
//! source, then closes the source first (its acks are ahead of the close on the wire) and the
//! destination. A kill -9 in between leaves messages confirmed but unacknowledged at the
//! source; they are delivered again: at-least-once, as RabbitMQ's shovel.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::future;
use glommio::channels::local_channel::{self, LocalReceiver};

use super::client::{Connection, Delivery, Event, Side};
use super::definition::{AckMode, DeleteAfter, ShovelDefinition, Source};
use super::status::{ShovelState, ShovelStatus};
use crate::limits::{
    SHOVEL_EVENTS_BEYOND_PREFETCH_MAX, SHOVEL_EVENT_BATCH_MAX, SHOVEL_RECONNECT_BACKOFF_MAX,
    SHOVEL_RECONNECT_DOUBLINGS_MAX, SHOVEL_REPLY_TIMEOUT, SHOVEL_STOP_TIMEOUT,
    SHOVEL_WRITE_BATCH_BYTES_MAX,
};
use crate::protocol::{
    reply_code, BasicAck, BasicConsume, BasicNack, BasicPublish, BasicQos, ChannelCloseOk,
    ChannelOpen, ConfirmSelect, ConnectionClose, FieldTable, Method, QueueBind, QueueDeclare,
};

/// How a worker ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Asked to stop.
    Stopped,
    /// `src-delete-after` reached: its parameter is to be cleared.
    Finished,
}

pub struct Worker {
    pub definition: ShovelDefinition,
    /// This broker's own AMQP address (URIs without a host).
    pub local: Option<SocketAddr>,
    pub status: Rc<RefCell<ShovelStatus>>,
    /// Anything (or the sender's drop) means stop.
    pub stop: LocalReceiver<()>,
}

enum Ended {
    Outcome(Outcome),
    Failed(String),
}

impl Worker {
    pub async fn run(self) -> Outcome {
        let mut stopping = false;
        let mut failures: u32 = 0;
        loop {
            self.status.borrow_mut().set(ShovelState::Starting, None);
            let mut attempt = Attempt::new(&self, &mut stopping);
            let ended = attempt.run().await;
            let ran = attempt.ran;
            drop(attempt);
            let reason = match ended {
                Ended::Outcome(outcome) => return outcome,
                Ended::Failed(_) if stopping => return Outcome::Stopped,
                Ended::Failed(reason) => reason,
            };
            tracing::warn!(shovel = %self.status.borrow().name, %reason, ran, "shovel attempt failed");
            // As RabbitMQ's: a shovel that cannot connect stays `starting` (each attempt
            // renews its timestamp); one that was running is `terminated` until it retries.
            if ran {
                self.status
                    .borrow_mut()
                    .set(ShovelState::Terminated, Some(reason));
            }
            failures = if ran { 1 } else { failures.saturating_add(1) };
            let Some(delay) = reconnect_backoff(self.definition.reconnect_delay, failures) else {
                // RabbitMQ's `reconnect-delay: 0`: never reconnect; terminated until cleared.
                self.stop.recv().await;
                return Outcome::Stopped;
            };
            if wait_or_stop(&self.stop, delay).await {
                return Outcome::Stopped;
            }
        }
    }
}

/// The wait before the next attempt after `failures` attempts in a row that never got to
/// running: `reconnect-delay` after the first, doubling after each further one, up to
/// `SHOVEL_RECONNECT_BACKOFF_MAX` (or `reconnect-delay` itself when that is longer). None:
/// a zero `reconnect-delay`, which means "do not reconnect".
pub fn reconnect_backoff(reconnect_delay: Duration, failures: u32) -> Option<Duration> {
    assert!(failures >= 1);
    if reconnect_delay.is_zero() {
        return None;
    }
    let ceiling = reconnect_delay.max(SHOVEL_RECONNECT_BACKOFF_MAX);
    let doublings = (failures - 1).min(SHOVEL_RECONNECT_DOUBLINGS_MAX);
    Some(reconnect_delay.saturating_mul(1 << doublings).min(ceiling))
}

/// Sleeps `delay`; true if asked to stop meanwhile.
async fn wait_or_stop(stop: &LocalReceiver<()>, delay: Duration) -> bool {
    let stopped = async {
        stop.recv().await;
        true
    };
    let slept = async {
        glommio::timer::sleep(delay).await;
        false
    };
    future::or(stopped, slept).await
}

/// Room in an attempt's event channel: with acknowledgements the source has at most
/// `prefetch` deliveries out and the destination at most as many confirms (one per publish of
/// an unacknowledged delivery), plus a few replies; with `no-ack` (no prefetch applies) a full
/// channel stops the readers, so the source waits on TCP instead of the shovel's memory.
fn event_capacity(prefetch: u16) -> usize {
    2 * usize::from(prefetch) + SHOVEL_EVENTS_BEYOND_PREFETCH_MAX
}

enum Step {
    Stop,
    Event(Option<Event>),
    TimedOut,
}

/// One connection attempt, both ends.
struct Attempt<'w> {
    worker: &'w Worker,
    stopping: &'w mut bool,
    events: LocalReceiver<Event>,
    sender: Rc<local_channel::LocalSender<Event>>,
    source: Option<Connection>,
    destination: Option<Connection>,
    /// Confirm sequence number → source delivery tag (on-confirm).
    outstanding: BTreeMap<u64, u64>,
    /// Confirmed source tags not yet acknowledged (a lower tag still waits).
    confirmed: BTreeSet<u64>,
    next_sequence: u64,
    published: u64,
    /// `src-delete-after` as a count, once known.
    limit: Option<u64>,
    finishing: bool,
    /// Got as far as running (both ends open, consuming).
    ran: bool,
}

impl<'w> Attempt<'w> {
    fn new(worker: &'w Worker, stopping: &'w mut bool) -> Attempt<'w> {
        let (sender, events) =
            local_channel::new_bounded(event_capacity(worker.definition.prefetch));
        Attempt {
            worker,
            stopping,
            events,
            sender: Rc::new(sender),
            source: None,
            destination: None,
            outstanding: BTreeMap::new(),
            confirmed: BTreeSet::new(),
            next_sequence: 1,
            published: 0,
            limit: None,
            finishing: false,
            ran: false,
        }
    }

    async fn run(&mut self) -> Ended {
        match self.start().await {
            Ok(()) => {}
            Err(_) if *self.stopping => return Ended::Outcome(Outcome::Stopped),
            Err(reason) => return Ended::Failed(reason),
        }
        self.ran = true;
        self.worker
            .status
            .borrow_mut()
            .set(ShovelState::Running, None);
        match self.pump().await {
            Ok(outcome) => Ended::Outcome(outcome),
            Err(reason) => Ended::Failed(reason),
        }
    }

    async fn start(&mut self) -> Result<(), String> {
        let worker = self.worker;
        let definition = &worker.definition;
        let local = worker.local;
        let name = worker.status.borrow().name.clone();
        let sender = self.sender.clone();
        let opened = self
            .unless_stopped(Connection::open(
                &definition.src_uri,
                local,
                (Side::Source, &name),
                sender,
            ))
            .await?;
        self.source = Some(opened);
        self.reply(Side::Source, |m| matches!(m, Method::ChannelOpenOk(_)))
            .await?;
        let queue = self.declare_source().await?;
        let sender = self.sender.clone();
        let opened = self
            .unless_stopped(Connection::open(
                &definition.dest_uri,
                local,
                (Side::Destination, &name),
                sender,
            ))
            .await?;
        self.destination = Some(opened);
        self.reply(Side::Destination, |m| matches!(m, Method::ChannelOpenOk(_)))
            .await?;
        if let Some(queue) = &definition.dest_queue {
            self.declare_queue(Side::Destination, queue).await?;
        }
        if definition.ack_mode == AckMode::OnConfirm {
            self.send(
                Side::Destination,
                Method::ConfirmSelect(ConfirmSelect { nowait: false }),
            );
            self.flush(Side::Destination).await?;
            self.reply(Side::Destination, |m| {
                matches!(m, Method::ConfirmSelectOk(_))
            })
            .await?;
        }
        let qos = BasicQos {
            prefetch_size: 0,
            prefetch_count: definition.prefetch,
            global: false,
        };
        self.send(Side::Source, Method::BasicQos(qos));
        self.flush(Side::Source).await?;
        self.reply(Side::Source, |m| matches!(m, Method::BasicQosOk(_)))
            .await?;
        let consume = BasicConsume {
            queue,
            consumer_tag: String::new(),
            no_local: false,
            no_ack: definition.ack_mode == AckMode::NoAck,
            exclusive: false,
            no_wait: false,
            arguments: FieldTable::default(),
        };
        self.send(Side::Source, Method::BasicConsume(consume));
        self.flush(Side::Source).await?;
        self.reply(Side::Source, |m| matches!(m, Method::BasicConsumeOk(_)))
            .await?;
        Ok(())
    }

    /// The queue to consume from: the named one (declared as RabbitMQ's shovel does), or a
    /// server-named exclusive queue bound to the source exchange. Sets the delete-after count.
    async fn declare_source(&mut self) -> Result<String, String> {
        let (queue, count) = match &self.worker.definition.source {
            Source::Queue(queue) => {
                let count = self.declare_queue(Side::Source, queue).await?;
                (queue.clone(), count)
            }
            Source::Exchange { exchange, key } => {
                let declare = QueueDeclare {
                    queue: String::new(),
                    passive: false,
                    durable: false,
                    exclusive: true,
                    auto_delete: true,
                    no_wait: false,
                    arguments: FieldTable::default(),
                };
                self.send(Side::Source, Method::QueueDeclare(declare));
                self.flush(Side::Source).await?;
                let Method::QueueDeclareOk(ok) = self
                    .reply(Side::Source, |m| matches!(m, Method::QueueDeclareOk(_)))
                    .await?
                else {
                    unreachable!("reply matched")
                };
                let bind = QueueBind {
                    queue: ok.queue.clone(),
                    exchange: exchange.clone(),
                    routing_key: key.clone(),
                    no_wait: false,
                    arguments: FieldTable::default(),
                };
                self.send(Side::Source, Method::QueueBind(bind));
                self.flush(Side::Source).await?;
                self.reply(Side::Source, |m| matches!(m, Method::QueueBindOk(_)))
                    .await?;
                (ok.queue, 0)
            }
        };
        self.limit = match self.worker.definition.delete_after {
            DeleteAfter::Never => None,
            DeleteAfter::QueueLength => Some(u64::from(count)),
            DeleteAfter::Messages(n) => Some(n),
        };
        Ok(queue)
    }

    /// A passive declare; if the queue is not there (404, which closes the channel), a durable
    /// one on a new channel, as RabbitMQ's `ensure_queue`. Returns its message count.
    async fn declare_queue(&mut self, side: Side, queue: &str) -> Result<u32, String> {
        let declare = |passive| QueueDeclare {
            queue: queue.to_string(),
            passive,
            durable: true,
            exclusive: false,
            auto_delete: false,
            no_wait: false,
            arguments: FieldTable::default(),
        };
        self.send(side, Method::QueueDeclare(declare(true)));
        self.flush(side).await?;
        let is_reply =
            |m: &Method| matches!(m, Method::QueueDeclareOk(_) | Method::ChannelClose(_));
        match self.reply_or_close(side, is_reply).await? {
            Method::QueueDeclareOk(ok) => return Ok(ok.message_count),
            Method::ChannelClose(close) if close.reply_code == reply_code::NOT_FOUND => {}
            Method::ChannelClose(close) => {
                return Err(format!(
                    "{}: channel closed: {} {}",
                    side.name(),
                    close.reply_code,
                    close.reply_text
                ))
            }
            _ => unreachable!("reply matched"),
        }
        self.send(side, Method::ChannelCloseOk(ChannelCloseOk {}));
        self.send(side, Method::ChannelOpen(ChannelOpen {}));
        self.send(side, Method::QueueDeclare(declare(false)));
        self.flush(side).await?;
        self.reply(side, |m| matches!(m, Method::ChannelOpenOk(_)))
            .await?;
        let Method::QueueDeclareOk(ok) = self
            .reply(side, |m| matches!(m, Method::QueueDeclareOk(_)))
            .await?
        else {
            unreachable!("reply matched")
        };
        Ok(ok.message_count)
    }

    async fn unless_stopped<T>(
        &mut self,
        work: impl std::future::Future<Output = Result<T, String>>,
    ) -> Result<T, String> {
        let worker = self.worker;
        let stop = async {
            worker.stop.recv().await;
            Err("stopped".to_string())
        };
        let result = future::or(work, stop).await;
        if matches!(&result, Err(reason) if reason == "stopped") {
            *self.stopping = true;
        }
        result
    }

    /// The next method on `side` that `wanted` accepts, within `SHOVEL_REPLY_TIMEOUT`; a close
    /// of either end is an error.
    async fn reply(
        &mut self,
        side: Side,
        wanted: impl Fn(&Method) -> bool,
    ) -> Result<Method, String> {
        match self
            .reply_or_close(side, |m| wanted(m) || matches!(m, Method::ChannelClose(_)))
            .await?
        {
            Method::ChannelClose(close) => Err(format!(
                "{}: channel closed: {} {}",
                side.name(),
                close.reply_code,
                close.reply_text
            )),
            method => Ok(method),
        }
    }

    async fn reply_or_close(
        &mut self,
        side: Side,
        wanted: impl Fn(&Method) -> bool,
    ) -> Result<Method, String> {
        loop {
            let event = match self.next_step(Some(SHOVEL_REPLY_TIMEOUT)).await {
                Step::Stop => return Err("stopped".to_string()),
                Step::TimedOut => {
                    return Err(format!(
                        "{}: no reply within {SHOVEL_REPLY_TIMEOUT:?}",
                        side.name()
                    ))
                }
                Step::Event(None) => return Err("event channel closed".to_string()),
                Step::Event(Some(event)) => event,
            };
            match event {
                Event::Method(from, method) if from == side && wanted(&method) => {
                    return Ok(method)
                }
                Event::Method(from, Method::ConnectionClose(close)) => {
                    return Err(format!(
                        "{}: connection closed: {} {}",
                        from.name(),
                        close.reply_code,
                        close.reply_text
                    ))
                }
                Event::Method(from, Method::ChannelClose(close)) => {
                    return Err(format!(
                        "{}: channel closed: {} {}",
                        from.name(),
                        close.reply_code,
                        close.reply_text
                    ))
                }
                Event::Closed(from, reason) => return Err(format!("{}: {reason}", from.name())),
                Event::Method(..) | Event::Delivery(_) => {}
            }
        }
    }

    /// The next event, a stop request (once), or a timeout.
    async fn next_step(&mut self, timeout: Option<Duration>) -> Step {
        let events = &self.events;
        let event = async { Step::Event(events.recv().await) };
        let timed = async {
            match timeout {
                Some(limit) => {
                    glommio::timer::sleep(limit).await;
                    Step::TimedOut
                }
                None => future::pending().await,
            }
        };
        if *self.stopping {
            return future::or(event, timed).await;
        }
        let worker = self.worker;
        let stop = async {
            worker.stop.recv().await;
            Step::Stop
        };
        let step = future::or(event, future::or(stop, timed)).await;
        if matches!(step, Step::Stop) {
            *self.stopping = true;
        }
        step
    }

    fn connection(&mut self, side: Side) -> Option<&mut Connection> {
        match side {
            Side::Source => self.source.as_mut(),
            Side::Destination => self.destination.as_mut(),
        }
    }

    fn send(&mut self, side: Side, method: Method) {
        if let Some(connection) = self.connection(side) {
            connection.method(method);
        }
    }

    fn unwritten_bytes(&mut self, side: Side) -> usize {
        self.connection(side).map_or(0, |c| c.unwritten_bytes())
    }

    async fn flush(&mut self, side: Side) -> Result<(), String> {
        match self.connection(side) {
            Some(connection) => connection.flush().await,
            None => Ok(()),
        }
    }

    /// Running: deliveries published, confirms turned into source acks, until stopped or
    /// finished.
    async fn pump(&mut self) -> Result<Outcome, String> {
        let mut stop_deadline: Option<std::time::Instant> = None;
        loop {
            if *self.stopping || self.finishing {
                let deadline = *stop_deadline
                    .get_or_insert_with(|| std::time::Instant::now() + SHOVEL_STOP_TIMEOUT);
                if self.outstanding.is_empty() || std::time::Instant::now() >= deadline {
                    self.close().await;
                    return Ok(if self.finishing {
                        Outcome::Finished
                    } else {
                        Outcome::Stopped
                    });
                }
            }
            let timeout =
                stop_deadline.map(|d| d.saturating_duration_since(std::time::Instant::now()));
            let first = match self.next_step(timeout).await {
                Step::Stop | Step::TimedOut => continue,
                Step::Event(None) => return Err("event channel closed".to_string()),
                Step::Event(Some(event)) => event,
            };
            self.on_event(first)?;
            // Whatever else is already here goes out with the same writes, up to a bound in
            // events and in bytes waiting for the destination.
            for _ in 1..SHOVEL_EVENT_BATCH_MAX {
                if self.unwritten_bytes(Side::Destination) >= SHOVEL_WRITE_BATCH_BYTES_MAX {
                    break;
                }
                let Some(Some(event)) = future::poll_once(self.events.recv()).await else {
                    break;
                };
                self.on_event(event)?;
            }
            self.flush(Side::Destination).await?;
            self.flush(Side::Source).await?;
        }
    }

    fn on_event(&mut self, event: Event) -> Result<(), String> {
        match event {
            Event::Delivery(delivery) => {
                self.on_delivery(delivery);
                Ok(())
            }
            Event::Method(Side::Destination, Method::BasicAck(ack)) => {
                self.on_confirm(ack.delivery_tag, ack.multiple, true);
                Ok(())
            }
            Event::Method(Side::Destination, Method::BasicNack(nack)) => {
                self.on_confirm(nack.delivery_tag, nack.multiple, false);
                Ok(())
            }
            Event::Method(Side::Source, Method::BasicCancel(_)) => {
                Err("source: consumer cancelled by the broker".to_string())
            }
            Event::Method(side, Method::ConnectionClose(close)) => Err(format!(
                "{}: connection closed: {} {}",
                side.name(),
                close.reply_code,
                close.reply_text
            )),
            Event::Method(side, Method::ChannelClose(close)) => Err(format!(
                "{}: channel closed: {} {}",
                side.name(),
                close.reply_code,
                close.reply_text
            )),
            Event::Closed(side, reason) => Err(format!("{}: {reason}", side.name())),
            Event::Method(..) => Ok(()),
        }
    }

    fn on_delivery(&mut self, delivery: Delivery) {
        let past_limit = self.limit.is_some_and(|limit| self.published >= limit);
        if *self.stopping || self.finishing || past_limit {
            return; // requeued at the source when it closes
        }
        let definition = &self.worker.definition;
        let (exchange, routing_key) = match (&definition.dest_queue, &definition.dest_exchange) {
            (Some(queue), _) => (String::new(), queue.clone()),
            (None, Some(exchange)) => (
                exchange.clone(),
                definition
                    .dest_exchange_key
                    .clone()
                    .unwrap_or_else(|| delivery.deliver.routing_key.clone()),
            ),
            (None, None) => (
                delivery.deliver.exchange.clone(),
                delivery.deliver.routing_key.clone(),
            ),
        };
        let publish = BasicPublish {
            exchange,
            routing_key,
            mandatory: false,
            immediate: false,
        };
        let ack_mode = definition.ack_mode;
        if let Some(destination) = self.destination.as_mut() {
            destination.publish(publish, &delivery.raw_properties, &delivery.body);
        }
        let tag = delivery.deliver.delivery_tag;
        match ack_mode {
            AckMode::OnConfirm => {
                self.outstanding.insert(self.next_sequence, tag);
                self.next_sequence += 1;
            }
            // Written after the publish (destination flushed first): acks every earlier tag.
            AckMode::OnPublish => self.send(
                Side::Source,
                Method::BasicAck(BasicAck {
                    delivery_tag: tag,
                    multiple: true,
                }),
            ),
            AckMode::NoAck => {}
        }
        self.published += 1;
        self.worker.status.borrow_mut().published = self.published;
        if self.limit.is_some_and(|limit| self.published >= limit) {
            self.finishing = true;
        }
    }

    /// A confirm from the destination for `sequence` (and all below when `multiple`).
    fn on_confirm(&mut self, sequence: u64, multiple: bool, ok: bool) {
        let settled: Vec<u64> = if multiple {
            let rest = self.outstanding.split_off(&(sequence + 1));
            let done = std::mem::replace(&mut self.outstanding, rest);
            done.into_values().collect()
        } else {
            self.outstanding.remove(&sequence).into_iter().collect()
        };
        for tag in settled {
            if ok {
                self.confirmed.insert(tag);
            } else {
                let nack = BasicNack {
                    delivery_tag: tag,
                    multiple: false,
                    requeue: true,
                };
                self.send(Side::Source, Method::BasicNack(nack));
            }
        }
        let floor = self
            .outstanding
            .values()
            .next()
            .copied()
            .unwrap_or(u64::MAX);
        let below: Vec<u64> = self.confirmed.range(..floor).copied().collect();
        if let Some(&highest) = below.last() {
            for tag in &below {
                self.confirmed.remove(tag);
            }
            let ack = BasicAck {
                delivery_tag: highest,
                multiple: true,
            };
            self.send(Side::Source, Method::BasicAck(ack));
        }
    }

    /// Closes the source first (its acks are ahead of the close), then the destination, each
    /// waiting a bounded time for close-ok.
    async fn close(&mut self) {
        for side in [Side::Source, Side::Destination] {
            let close = ConnectionClose {
                reply_code: reply_code::REPLY_SUCCESS,
                reply_text: "shovel stopped".to_string(),
                class_id: 0,
                method_id: 0,
            };
            let Some(connection) = self.connection(side) else {
                continue;
            };
            connection.method_on_zero(Method::ConnectionClose(close));
            if connection.flush().await.is_err() {
                continue;
            }
            let wait = async {
                loop {
                    match self.events.recv().await {
                        Some(Event::Method(from, Method::ConnectionCloseOk(_))) if from == side => {
                            break
                        }
                        Some(Event::Closed(from, _)) if from == side => break,
                        None => break,
                        Some(_) => {}
                    }
                }
            };
            let _ = glommio::timer::timeout(SHOVEL_STOP_TIMEOUT, async {
                wait.await;
                Ok(())
            })
            .await;
        }
        self.source = None;
        self.destination = None;
    }
}

#[cfg(test)]
mod tests {
    use super::{event_capacity, reconnect_backoff};
    use crate::limits::SHOVEL_RECONNECT_BACKOFF_MAX;
    use std::time::Duration;

    #[test]
    fn backoff_doubles_up_to_its_ceiling() {
        let second = Duration::from_secs(1);
        let waits: Vec<Duration> = (1..=8)
            .map(|failures| reconnect_backoff(second, failures).expect("reconnects"))
            .collect();
        assert_eq!(waits[0], second);
        assert_eq!(waits[1], 2 * second);
        assert_eq!(waits[2], 4 * second);
        assert!(waits.windows(2).all(|w| w[0] <= w[1]), "{waits:?}");
        assert_eq!(waits[7], SHOVEL_RECONNECT_BACKOFF_MAX);
        assert_eq!(
            reconnect_backoff(second, u32::MAX),
            Some(SHOVEL_RECONNECT_BACKOFF_MAX)
        );
        let long = SHOVEL_RECONNECT_BACKOFF_MAX * 2;
        assert_eq!(
            reconnect_backoff(long, 5),
            Some(long),
            "never below reconnect-delay"
        );
        assert_eq!(
            reconnect_backoff(Duration::ZERO, 1),
            None,
            "0: do not reconnect"
        );
    }

    #[test]
    fn event_room_covers_the_prefetch_twice() {
        assert!(event_capacity(1000) > 2000);
        assert!(event_capacity(u16::MAX) > 2 * usize::from(u16::MAX));
    }
}
