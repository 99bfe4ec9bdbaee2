//! Tests of the step plan, the evidence window and shared ticks, one situation per test.

use std::time::Duration;

use serde_json::json;

use super::super::fixtures::*;
use super::super::*;
use super::*;
use crate::domain::{EventKind, Phase, Rollout, Strategy};

#[test]
fn nothing_happens_before_the_interval_elapses() {
    let state = Rollout::test().progressing(10, 0);
    let now = t(0) + chrono::Duration::milliseconds(400);
    assert_eq!(
        sample_window(&state, now, Duration::from_secs(4), Duration::ZERO),
        None
    );
    let d = decide(&state, &Observation::test(), now);
    assert!(d.actions.is_empty() && d.events.is_empty());
    assert_eq!(d.wake, Duration::from_millis(600));
}

#[test]
fn the_last_step_stops_at_max_weight() {
    let state = Rollout::test().progressing(40, 0).with(|r| {
        r.analysis.strategy = Strategy::Canary {
            step_weight: 25,
            max_weight: 50,
        };
    });
    let d = decide(&state, &Observation::test().measured(100.0, 20.0), t(1));
    assert_eq!(d.actions, vec![Action::SetCanaryWeight(50)]);
}

#[test]
fn the_first_step_of_a_revision_records_when_it_got_traffic() {
    let state = Rollout::test().prepared();
    let d = decide(&state, &Observation::test().windowed(), t(7));
    assert_eq!(d.actions, vec![Action::SetCanaryWeight(10)]);
    assert_eq!(d.next.traffic_since, Some(t(7)));
    // Later steps of the same revision keep it.
    let next = decide(
        &d.next,
        &Observation::test().measured(100.0, 20.0).windowed(),
        t(12),
    );
    assert_eq!(next.actions, vec![Action::SetCanaryWeight(20)]);
    assert_eq!(next.next.traffic_since, Some(t(7)));
}

#[test]
fn no_check_is_due_before_the_revision_has_had_one_metrics_window_of_traffic() {
    let state = Rollout::test()
        .progressing(20, 0)
        .with(|r| r.traffic_since = Some(t(0)));
    let now = t(1) + ms(500);
    assert_eq!(sample_window(&state, now, WINDOW, Duration::ZERO), None);
    let d = decide(&state, &Observation::test().windowed(), now);
    assert!(
        d.actions.is_empty() && d.events.is_empty(),
        "{:?}",
        d.events
    );
    assert!(!d.changes(&state), "waiting writes nothing");
    // Waiting for evidence is not a halt: the progress deadline does not run.
    assert_eq!(d.next.halted_since, None);
    assert_eq!(d.next.failed_checks, 0);
    // Looked at again after an interval (1 s): the health gate still applies.
    assert_eq!(d.wake, Duration::from_secs(1));
    let mut rolling = Observation::test().windowed();
    rolling.canary.as_mut().unwrap().updated_replicas = 1;
    let halted = decide(&state, &rolling, now);
    assert_eq!(kinds(&halted), vec![EventKind::Halted]);

    // Far past the progress deadline (10 s) yet still within the window of a longer
    // metrics window: still just waiting.
    let long = Duration::from_secs(60);
    let o = Observation {
        metrics_window: long,
        ..Observation::test()
    };
    let d = decide(&state, &o, t(30));
    assert!(d.events.is_empty() && d.actions.is_empty());
    assert_eq!(d.next.phase, Phase::Progressing);
    assert_eq!(d.next.halted_since, None);
}

#[test]
fn the_first_check_measures_only_the_revisions_own_traffic() {
    let state = Rollout::test().progressing(20, 0).with(|r| {
        r.analysis.interval = Duration::from_secs(10);
        r.last_step_at = Some(t(-20));
        r.traffic_since = Some(t(0));
    });
    // max(interval, window) = 10 s, cut at the revision's first traffic and rounded down to
    // whole seconds (the provider rounds up).
    assert_eq!(
        sample_window(&state, t(6) + ms(700), WINDOW, Duration::ZERO),
        Some(Duration::from_secs(6))
    );
    assert_eq!(
        evidence_window(&state, t(25), WINDOW),
        Ok(Duration::from_secs(10))
    );
    assert_eq!(
        evidence_window(&state, t(3), WINDOW),
        Err(Duration::from_secs(1))
    );
    let d = decide(
        &state,
        &Observation::test().measured(70.0, 20.0).windowed(),
        t(6) + ms(700),
    );
    assert_eq!(kinds(&d), vec![EventKind::CheckFailed]);
}

#[test]
fn a_new_revision_starts_its_evidence_from_its_own_first_step() {
    let state = Rollout::test()
        .progressing(40, 0)
        .with(|r| r.traffic_since = Some(t(-100)));
    let mut o = Observation::test().measured(100.0, 10.0).windowed();
    std::sync::Arc::make_mut(&mut o.canary.as_mut().unwrap().template)["spec"]["containers"][0]["image"] =
        json!("podinfo:9");
    let restarted = decide(&state, &o, t(1)).next;
    assert_eq!(restarted.traffic_since, None);
    let stepped = decide(&restarted, &o, t(2)).next;
    assert_eq!(stepped.canary_weight, 10);
    assert_eq!(stepped.traffic_since, Some(t(2)));
    assert_eq!(sample_window(&stepped, t(5), WINDOW, Duration::ZERO), None);
    assert_eq!(
        sample_window(&stepped, t(6), WINDOW, Duration::ZERO),
        Some(WINDOW)
    );
}

#[test]
fn a_resumed_rollout_that_does_not_know_when_traffic_began_counts_from_resumption() {
    let state = Rollout::test()
        .progressing(30, 0)
        .with(|r| r.traffic_since = None);
    assert_eq!(sample_window(&state, t(10), WINDOW, Duration::ZERO), None);
    let d = decide(
        &state,
        &Observation::test().measured(100.0, 20.0).windowed(),
        t(10),
    );
    assert!(d.events.is_empty() && d.actions.is_empty());
    assert_eq!(d.next.traffic_since, Some(t(10)));
    assert!(d.changes(&state), "the resumption time is persisted");
    let d = decide(
        &d.next,
        &Observation::test().measured(100.0, 20.0).windowed(),
        t(14),
    );
    assert_eq!(
        kinds(&d),
        vec![EventKind::CheckPassed, EventKind::WeightChanged]
    );
}

#[test]
fn state_stored_before_traffic_since_existed_still_loads() {
    let state = Rollout::test().progressing(30, 0);
    let mut stored = serde_json::to_value(&state).unwrap();
    stored.as_object_mut().unwrap().remove("traffic_since");
    let loaded: Rollout = serde_json::from_value(stored).unwrap();
    assert_eq!(loaded.traffic_since, None);
    assert_eq!(loaded.canary_weight, 30);
}

#[test]
fn a_weight_steerer_wrote_but_did_not_record_is_not_a_hand_edit() {
    let state = Rollout::test().progressing(20, 0);
    let o = Observation {
        unrecorded_weight: Some(30),
        ..Observation::test().measured(100.0, 10.0).routing(30)
    };
    let d = decide(&state, &o, t(5));
    assert_ne!(d.next.phase, Phase::Paused);
    assert_eq!(d.actions, vec![Action::SetCanaryWeight(30)]);
}

#[test]
fn only_the_next_step_or_zero_can_be_a_write_that_missed_its_state() {
    let state = Rollout::test().progressing(20, 0);
    assert!(written_unrecorded(&state, 30));
    assert!(written_unrecorded(&state, 0));
    assert!(!written_unrecorded(&state, 50));
    assert!(!written_unrecorded(&state, 10));
}

#[test]
fn a_weight_read_back_that_was_our_next_step_is_recorded_and_any_other_is_not() {
    let state = Rollout::test().progressing(20, 0);
    let d = resumed_at(&state, 30, t(5)).unwrap();
    assert_eq!(d.next.canary_weight, 30);
    assert_eq!(d.next.last_step_at, Some(t(5)));
    assert_eq!(d.events[0].kind, EventKind::WeightChanged);
    assert_eq!(
        d.events[0].message,
        "resumed: VirtualService podinfo routes 30% to the canary (state had 20%)"
    );
    assert!(resumed_at(&state, 20, t(5)).is_none());
    assert!(resumed_at(&state, 55, t(5)).is_none());
    let pending = Rollout::test();
    assert!(resumed_at(&pending, 0, t(5)).is_none());
}

#[test]
fn checks_fall_on_shared_ticks_counted_from_the_epoch() {
    let five = Duration::from_secs(5);
    let ten = Duration::from_secs(10);
    // t(0) is a whole multiple of 5 s (and 10 s) since the epoch.
    assert_eq!(until_tick(t(0), ten, five), Duration::ZERO);
    assert_eq!(
        until_tick(t(0) + ms(900), ten, five),
        Duration::ZERO,
        "within the slack"
    );
    assert_eq!(
        until_tick(t(0) + ms(1200), ten, five),
        Duration::from_millis(3800)
    );
    assert_eq!(until_tick(t(3), ten, five), Duration::from_secs(2));
    assert_eq!(until_tick(t(7), ten, five), Duration::from_secs(3));
    // An interval shorter than the tick is the period, with half of it as slack.
    let one = Duration::from_secs(1);
    assert_eq!(until_tick(t(3) + ms(400), one, five), Duration::ZERO);
    assert_eq!(
        until_tick(t(3) + ms(600), one, five),
        Duration::from_millis(400)
    );
    // No tick: every moment is one.
    assert_eq!(
        until_tick(t(3) + ms(600), ten, Duration::ZERO),
        Duration::ZERO
    );
}

#[test]
fn a_due_check_waits_for_the_next_tick_and_then_runs_with_it() {
    let state = Rollout::test()
        .progressing(20, 0)
        .with(|r| r.analysis.interval = Duration::from_secs(10));
    let ticking = Observation {
        check_tick: Duration::from_secs(5),
        ..Observation::test().measured(100.0, 20.0)
    };
    // Due since t(10), but t(12) is 2 s past a tick: nothing is measured or decided yet.
    assert_eq!(
        sample_window(&state, t(12), Duration::from_secs(4), ticking.check_tick),
        None
    );
    let waiting = decide(&state, &ticking, t(12));
    assert!(waiting.actions.is_empty() && waiting.events.is_empty());
    assert!(
        !waiting.changes(&state),
        "waiting for the tick writes nothing"
    );
    assert_eq!(waiting.wake, Duration::from_secs(3));
    // On the tick: measured and judged, and the next check is an interval later.
    assert!(sample_window(&state, t(15), Duration::from_secs(4), ticking.check_tick).is_some());
    let checked = decide(&state, &ticking, t(15));
    assert_eq!(checked.actions, vec![Action::SetCanaryWeight(30)]);
    assert_eq!(checked.next.last_step_at, Some(t(15)));
    assert_eq!(checked.wake, Duration::from_secs(10));
    // Without ticks the same check runs at once.
    let at_once = decide(&state, &Observation::test().measured(100.0, 20.0), t(12));
    assert_eq!(at_once.actions, vec![Action::SetCanaryWeight(30)]);
}
