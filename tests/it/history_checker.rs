//! The cluster tests' history checker (`tests/cluster/history.rs`) on histories made by hand:
//! a sound history passes, and each broken rule is found and only that one, so a cluster test
//! that passes the check could have failed it.

use crate::history::{Event, History, MessageId};

fn sent(message: MessageId) -> Event {
    Event::Sent { message }
}

fn confirmed(message: MessageId) -> Event {
    Event::Confirmed { message }
}

fn delivered(consumer: u32, message: MessageId, redelivered: bool) -> Event {
    Event::Delivered {
        consumer,
        message,
        redelivered,
    }
}

/// Publisher 1 sends 1..=3 and 2 sends 1..=2, all confirmed; consumer 7 gets them in order.
fn sound() -> Vec<Event> {
    let mut events = Vec::new();
    for message in [(1, 1), (1, 2), (2, 1), (1, 3), (2, 2)] {
        events.push(sent(message));
        events.push(confirmed(message));
    }
    for message in [(1, 1), (2, 1), (1, 2), (2, 2), (1, 3)] {
        events.push(delivered(7, message, false));
    }
    events
}

fn check(events: Vec<Event>) -> crate::history::Verdict {
    let mut history = History::default();
    for event in events {
        history.record(event);
    }
    history.check()
}

#[test]
fn a_sound_history_passes_and_is_counted() {
    let verdict = check(sound());
    verdict.assert_sound();
    assert_eq!(
        (verdict.sent, verdict.confirmed, verdict.deliveries),
        (5, 5, 5)
    );
}

#[test]
fn redeliveries_and_unconfirmed_losses_are_allowed() {
    let mut events = sound();
    // A failover hands (1, 2) out again, flagged, and out of order.
    events.push(delivered(8, (1, 2), true));
    // A publish the broker never confirmed may be lost.
    events.push(sent((1, 4)));
    events.push(Event::Unconfirmed { message: (1, 4) });
    // A retried publish (sent twice, unconfirmed first) may arrive twice unflagged.
    events.push(sent((2, 3)));
    events.push(sent((2, 3)));
    events.push(confirmed((2, 3)));
    events.push(delivered(7, (2, 3), false));
    events.push(delivered(7, (2, 3), false));
    let verdict = check(events);
    verdict.assert_sound();
    assert_eq!((verdict.redeliveries, verdict.unconfirmed), (1, 1));
}

#[test]
fn a_confirmed_message_never_delivered_is_lost() {
    let mut events = sound();
    events.retain(|e| *e != delivered(7, (2, 2), false));
    let verdict = check(events);
    assert_eq!(verdict.lost, vec![(2, 2)]);
    assert!(verdict.invented.is_empty() && verdict.duplicated.is_empty());
    assert!(verdict.reordered.is_empty());
    assert!(!verdict.is_sound());
}

#[test]
fn a_delivery_of_a_message_never_sent_is_invented() {
    let mut events = sound();
    events.push(delivered(7, (3, 1), false));
    let verdict = check(events);
    assert_eq!(verdict.invented, vec![(3, 1)]);
    assert!(verdict.lost.is_empty() && verdict.duplicated.is_empty());
}

#[test]
fn a_second_unflagged_delivery_is_a_duplicate() {
    let mut events = sound();
    events.push(delivered(8, (1, 1), false));
    let verdict = check(events);
    assert_eq!(verdict.duplicated, vec![(1, 1)]);
    assert!(verdict.lost.is_empty() && verdict.invented.is_empty());
    assert!(verdict.reordered.is_empty(), "consumer 8 saw only one");
}

#[test]
fn first_deliveries_out_of_publish_order_are_reordered() {
    let mut events = sound();
    let a = events
        .iter()
        .position(|e| *e == delivered(7, (1, 2), false))
        .unwrap();
    let b = events
        .iter()
        .position(|e| *e == delivered(7, (1, 3), false))
        .unwrap();
    events.swap(a, b);
    let verdict = check(events);
    assert_eq!(verdict.reordered, vec![(7, (1, 2), 3)]);
    assert!(verdict.lost.is_empty() && verdict.duplicated.is_empty());
    assert!(
        verdict.to_string().contains("7: 1:2 after 1:3"),
        "{verdict}"
    );
}

#[test]
fn events_round_trip_through_client_output() {
    let events = sound();
    let output: String = events
        .iter()
        .map(|e| format!("test client_role ... {}\n", e.line()))
        .collect::<String>()
        + "unrelated line\n";
    let mut history = History::default();
    history.read(&output).expect("every history line parses");
    assert_eq!(history.check(), check(events));
    let mut broken = History::default();
    assert!(broken.read("HISTORY delivered 1 2").is_err(), "half a line");
}
