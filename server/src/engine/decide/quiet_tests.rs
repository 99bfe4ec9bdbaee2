//! Tests of repeats recorded sparingly, one situation per test.

use std::time::Duration;

use super::super::fixtures::*;
use super::super::*;
use super::*;
use crate::domain::{EventKind, Rollout};

/// Runs `decide` once a second from `from` with too little traffic, carrying the state on.
fn quiet_run(mut state: Rollout, from: i64, to: i64) -> (Rollout, Vec<EventDraft>) {
    let mut events = Vec::new();
    for second in from..=to {
        let d = decide(&state, &Observation::test().measured(100.0, 0.1), t(second));
        events.extend(d.events.iter().cloned());
        state = d.next;
    }
    (state, events)
}

#[test]
fn repeated_no_data_is_recorded_a_few_times_then_once_per_quiet_window() {
    let state = Rollout::test()
        .progressing(10, 0)
        .with(|r| r.analysis.progress_deadline = Duration::from_secs(3600));
    let window = quiet_window(&state).as_secs() as i64;
    assert_eq!(window, 60);
    let (state, events) = quiet_run(state, 1, 10);
    assert_eq!(events.len(), REPEATS_IN_FULL as usize);
    assert!(events.iter().all(|e| e.kind == EventKind::CheckNoData));
    let quiet = state.quiet.clone().unwrap();
    assert_eq!((quiet.in_a_row, quiet.unrecorded), (10, 7));
    assert!(
        state.message.contains("10 checks in a row"),
        "{}",
        state.message
    );
    // Every check still moves the state on (persisted, but no event).
    assert_eq!(state.last_step_at, Some(t(10)));

    let (state, events) = quiet_run(state, 11, 3 + window);
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(
        events[0].message.contains("more checks like this since"),
        "{}",
        events[0].message
    );
    assert_eq!(state.quiet.as_ref().unwrap().unrecorded, 0);

    // Evidence ends the quiet spell.
    let d = decide(
        &state,
        &Observation::test().measured(100.0, 10.0),
        t(4 + window),
    );
    assert_eq!(d.next.quiet, None);
}

#[test]
fn a_different_no_data_reason_is_recorded_at_once() {
    let state = Rollout::test()
        .progressing(10, 0)
        .with(|r| r.analysis.progress_deadline = Duration::from_secs(3600));
    let (state, _) = quiet_run(state, 1, 10);
    let o = Observation {
        sample: Some(Err("timeout".into())),
        ..Observation::test()
    };
    let d = decide(&state, &o, t(11));
    assert_eq!(kinds(&d), vec![EventKind::CheckNoData]);
    assert!(d.events[0].message.contains("metrics unavailable"));
}

#[test]
fn quiet_no_data_still_rolls_back_at_the_deadline_with_an_event() {
    let state = Rollout::test().progressing(10, 0);
    // Deadline 10 s: checks 1..=9 are quiet after the third, the tenth rolls back.
    let (state, events) = quiet_run(state, 1, 9);
    assert_eq!(events.len(), REPEATS_IN_FULL as usize);
    let d = decide(&state, &Observation::test().measured(100.0, 0.1), t(11));
    assert_eq!(
        kinds(&d),
        vec![EventKind::CheckNoData, EventKind::RollingBack]
    );
}
