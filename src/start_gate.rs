//! The gate every shard's thread waits at until all executors are built (`runtime::run`), which
//! opens for none of them if one cannot be built.
//!
//! glommio builds an executor inside its new thread: when that fails (its rings or its locked
//! io memory refused by the kernel), the thread ends without running the shard, and a plain
//! barrier would keep every other shard waiting for it forever, with the broker neither ready
//! nor exited. Each thread holds a [`Seat`]: one dropped before it arrived (the thread ended
//! first) closes the gate, and the shards waiting at it go home, so the broker stops with the
//! executor's error instead of hanging.

use std::sync::{Arc, Condvar, Mutex, PoisonError};

#[derive(Default)]
struct Arrivals {
    arrived: usize,
    closed: bool,
}

pub struct StartGate {
    expected: usize,
    arrivals: Mutex<Arrivals>,
    changed: Condvar,
}

impl StartGate {
    /// A gate for `expected` seats, and the seats.
    pub fn seats(expected: usize) -> Vec<Seat> {
        let gate = Arc::new(StartGate {
            expected,
            arrivals: Mutex::default(),
            changed: Condvar::new(),
        });
        (0..expected)
            .map(|_| Seat {
                gate: gate.clone(),
                arrived: false,
            })
            .collect()
    }

    fn close(&self) {
        self.arrivals
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .closed = true;
        self.changed.notify_all();
    }
}

/// One shard's place at the gate.
pub struct Seat {
    gate: Arc<StartGate>,
    arrived: bool,
}

impl Seat {
    /// Waits until every seat arrived (`true`) or one was given up (`false`: do not start).
    pub fn arrive(mut self) -> bool {
        self.arrived = true;
        let gate = &self.gate;
        let mut arrivals = gate.arrivals.lock().unwrap_or_else(PoisonError::into_inner);
        arrivals.arrived += 1;
        gate.changed.notify_all();
        loop {
            if arrivals.closed {
                return false;
            }
            if arrivals.arrived == gate.expected {
                return true;
            }
            arrivals = gate
                .changed
                .wait(arrivals)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        if !self.arrived {
            self.gate.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_once_every_seat_arrived() {
        let seats = StartGate::seats(3);
        let waiting: Vec<_> = seats
            .into_iter()
            .map(|seat| std::thread::spawn(move || seat.arrive()))
            .collect();
        for thread in waiting {
            assert!(thread.join().expect("a seat's thread"));
        }
    }

    #[test]
    fn a_seat_given_up_sends_the_others_home() {
        let mut seats = StartGate::seats(3);
        let gone = seats.pop().expect("a seat");
        let waiting: Vec<_> = seats
            .into_iter()
            .map(|seat| std::thread::spawn(move || seat.arrive()))
            .collect();
        // Its thread ended before it arrived (an executor that could not be built).
        drop(gone);
        for thread in waiting {
            assert!(!thread.join().expect("a seat's thread"));
        }
    }
}
