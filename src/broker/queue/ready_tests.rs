//! Paging bookkeeping of `ReadyQueue`: the front run, loaded-behind counts, the read-ahead
//! window and page-out choice.

use std::num::NonZeroU64;

use super::*;
use crate::broker::queue::{Message, Route};
use crate::protocol::BasicProperties;

const BIG_BODY_BYTES: usize = 64 * 1024;
static BIG: [u8; BIG_BODY_BYTES] = [7; BIG_BODY_BYTES];
/// Big messages the read-ahead window holds.
const WINDOW_BIG: usize = (PAGE_READ_AHEAD_BYTES / BIG_BODY_BYTES as u64) as usize;

fn message(body: &'static [u8]) -> SharedMessage {
    let route = Route {
        exchange: "",
        routing_key: "",
    };
    Message::new(route, &BasicProperties::default(), body)
}

fn entry(id: MessageId, level: u8, body: &'static [u8]) -> ReadyEntry {
    let message = message(body);
    ReadyEntry {
        id,
        body_bytes: ReadyEntry::body_len(&message),
        message: Some(message),
        persisted: NonZeroU64::new(id),
        redelivered: false,
        level,
        deadline_ms: None,
    }
}

fn lsn(id: MessageId) -> WalPosition {
    NonZeroU64::new(id).unwrap()
}

/// Pages out until within `budget`, returning the ids paged (in the order chosen).
fn page_out_all(ready: &mut ReadyQueue, budget: u64) -> Vec<MessageId> {
    let mut paged = Vec::new();
    while let Some(candidate) = ready.page_out_candidate(budget) {
        let at = PagedRef {
            id: candidate.id,
            level: candidate.level,
        };
        assert!(ready.page_out(at, lsn(at.id)));
        ready.check_invariants();
        paged.push(at.id);
    }
    paged
}

fn fill_all(ready: &mut ReadyQueue) -> usize {
    let mut wanted = Vec::new();
    ready.to_load(usize::MAX, &mut wanted);
    for at in &wanted {
        assert!(ready.fill(*at, message(&BIG)));
        ready.check_invariants();
    }
    wanted.len()
}

#[test]
fn newest_go_out_first_and_the_window_stays() {
    let mut ready = ReadyQueue::new(1);
    let count = WINDOW_BIG * 3;
    for id in 1..=count as u64 {
        ready.push_back(entry(id, 0, &BIG));
    }
    // Budget 0 (lazy): everything outside the read-ahead window goes, newest first.
    let paged = page_out_all(&mut ready, 0);
    let expected: Vec<u64> = ((WINDOW_BIG as u64 + 1)..=count as u64).rev().collect();
    assert_eq!(paged, expected);
    assert_eq!(ready.paged_len(), count - WINDOW_BIG);
    assert_eq!(ready.loaded_bytes(), (WINDOW_BIG * BIG_BODY_BYTES) as u64);
    // Length limits still see every body.
    assert_eq!(ready.bytes(), (count * BIG_BODY_BYTES) as u64);
    assert!(!ready.wants_load(), "window already loaded");
}

#[test]
fn loader_refills_the_window_in_order_as_the_head_drains() {
    let mut ready = ReadyQueue::new(1);
    let count = WINDOW_BIG * 3;
    for id in 1..=count as u64 {
        ready.push_back(entry(id, 0, &BIG));
    }
    page_out_all(&mut ready, 0);
    let mut delivered = Vec::new();
    while !ready.is_empty() {
        if ready.head_paged().is_some() {
            assert!(fill_all(&mut ready) > 0, "a paged head is always loadable");
        }
        let next = ready.pop_front().unwrap();
        assert!(!next.is_paged());
        delivered.push(next.id);
        ready.check_invariants();
        // The loader keeps the window full: only the window is ever loaded.
        fill_all(&mut ready);
        assert!(ready.loaded_bytes() <= PAGE_READ_AHEAD_BYTES);
        assert!(
            page_out_all(&mut ready, 0).is_empty(),
            "page-out undid the loader"
        );
    }
    assert_eq!(delivered, (1..=count as u64).collect::<Vec<_>>());
}

#[test]
fn a_budget_keeps_the_oldest_loaded() {
    let mut ready = ReadyQueue::new(1);
    for id in 1..=1000 {
        ready.push_back(entry(id, 0, b"0123456789"));
    }
    page_out_all(&mut ready, 5000);
    assert!(ready.loaded_bytes() <= 5000);
    assert_eq!(ready.paged_ids(), (501..=1000).collect::<Vec<_>>());
    // A new publish behind paged entries is loaded behind them until paged in turn.
    ready.push_back(entry(1001, 0, b"0123456789"));
    ready.check_invariants();
    assert_eq!(page_out_all(&mut ready, 5000), vec![1001]);
}

#[test]
fn paged_insert_splits_the_front_run_and_fill_rejoins_it() {
    // Recovery order is log order: a paged (body-less) entry may land inside a loaded run.
    let mut ready = ReadyQueue::new(1);
    for id in [1, 2, 4, 5] {
        ready.insert_sorted(entry(id, 0, b"abc"));
    }
    let mut paged = entry(3, 0, b"abc");
    paged.message = None;
    ready.insert_sorted(paged);
    ready.check_invariants();
    assert_eq!(ready.paged_ids(), vec![3]);
    ready.pop_front();
    ready.pop_front();
    assert_eq!(ready.head_paged(), Some(PagedRef { id: 3, level: 0 }));
    assert!(ready.fill(PagedRef { id: 3, level: 0 }, message(b"abc")));
    ready.check_invariants();
    assert!(ready.head_paged().is_none());
    assert!(
        !ready.fill(PagedRef { id: 3, level: 0 }, message(b"abc")),
        "twice"
    );
}

#[test]
fn removing_a_paged_head_exposes_the_loaded_ones_behind() {
    let mut ready = ReadyQueue::new(1);
    ready.push_back(entry(1, 0, b"a"));
    ready.push_back(entry(2, 0, b"b"));
    ready.push_back(entry(3, 0, b"c"));
    assert!(ready.page_out(PagedRef { id: 1, level: 0 }, lsn(1)));
    ready.check_invariants();
    assert_eq!(ready.head_paged(), Some(PagedRef { id: 1, level: 0 }));
    let removed = ready.remove(0, 1).unwrap();
    assert!(removed.is_paged());
    ready.check_invariants();
    assert!(ready.head_paged().is_none());
    assert_eq!(ready.loaded_bytes(), 2);
}

#[test]
fn priority_levels_load_the_level_served_first() {
    let mut ready = ReadyQueue::new(3);
    ready.push_back(entry(1, 0, b"low"));
    ready.push_back(entry(2, 2, b"high"));
    ready.push_back(entry(3, 2, b"high"));
    assert!(ready.page_out(PagedRef { id: 2, level: 2 }, lsn(2)));
    assert!(ready.page_out(PagedRef { id: 1, level: 0 }, lsn(1)));
    ready.check_invariants();
    assert_eq!(ready.head_paged(), Some(PagedRef { id: 2, level: 2 }));
    let mut wanted = Vec::new();
    ready.to_load(10, &mut wanted);
    assert_eq!(wanted, vec![PagedRef { id: 2, level: 2 }], "level 0 waits");
    // The low level is behind a paged entry: outside the window, so page-out may take it.
    ready.push_back(entry(4, 0, b"low"));
    assert_eq!(ready.page_out_candidate(0).map(|e| e.id), Some(4));
}

#[test]
fn drain_and_pop_keep_counters_exact() {
    let mut ready = ReadyQueue::new(2);
    for id in 1..=20 {
        ready.push_back(entry(id, (id % 2) as u8, b"xy"));
    }
    for id in (5..=20).step_by(3) {
        assert!(ready.page_out(
            PagedRef {
                id,
                level: (id % 2) as u8
            },
            lsn(id)
        ));
        ready.check_invariants();
    }
    let popped = ready.pop_front().unwrap();
    assert_eq!(popped.id, 1);
    ready.check_invariants();
    let all = ready.drain();
    assert_eq!(all.len(), 19);
    ready.check_invariants();
    assert_eq!(
        (ready.bytes(), ready.loaded_bytes(), ready.paged_len()),
        (0, 0, 0)
    );
}

/// Random mixes of every operation against the invariant checker (seeded, deterministic).
#[test]
fn random_operations_keep_invariants() {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |bound: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % bound
    };
    let mut ready = ReadyQueue::new(3);
    let mut next_id = 1u64;
    let mut removed: Vec<ReadyEntry> = Vec::new();
    for _ in 0..20_000 {
        match next(8) {
            0 | 1 => {
                ready.push_back(entry(next_id, next(3) as u8, b"body"));
                next_id += 1;
            }
            2 => {
                if let Some(e) = ready.pop_front() {
                    removed.push(e);
                }
            }
            3 => {
                if let Some(mut e) = removed.pop() {
                    if e.is_paged() {
                        e.message = Some(message(b"body"));
                    }
                    ready.insert_sorted(e);
                }
            }
            4 => {
                page_out_all(&mut ready, next(40));
            }
            5 => {
                let mut wanted = Vec::new();
                ready.to_load(next(4) as usize + 1, &mut wanted);
                for at in wanted {
                    assert!(ready.fill(at, message(b"body")));
                }
            }
            6 => {
                let id = next(next_id) + 1;
                let level = next(3) as u8;
                if ready.page_out(PagedRef { id, level }, lsn(id)) {
                    assert!(ready.paged_ids().contains(&id));
                }
            }
            _ => {
                let id = next(next_id) + 1;
                if let Some(e) = ready.remove(next(3) as u8, id) {
                    assert_eq!(e.id, id);
                }
            }
        }
        ready.check_invariants();
    }
}
