//! Tests of rollbacks and failures, one situation per test.

use std::time::Duration;

use super::super::fixtures::*;
use super::super::*;
use crate::domain::{Ending, EventKind, Phase, Rollout, RouteView};

#[test]
fn rolling_back_scales_the_canary_down_and_ends_with_the_reason() {
    let state = Rollout::test().progressing(0, 0).with(|r| {
        r.phase = Phase::RollingBack;
        r.ending = Some(Ending {
            phase: Phase::RolledBack,
            reason: "3 failed checks: x".into(),
        });
    });
    let d = decide(&state, &Observation::test().routing(0), t(1));
    assert_eq!(d.actions, vec![Action::ScaleCanary(0)]);
    assert_eq!(d.next.phase, Phase::RolledBack);
    assert_eq!(kinds(&d), vec![EventKind::RolledBack]);
    assert!(
        d.events[0]
            .message
            .starts_with("rolled back: 3 failed checks: x")
    );
}

#[test]
fn missing_canary_fails_the_rollout_with_traffic_on_ga() {
    let state = Rollout::test().progressing(20, 0);
    let o = Observation {
        canary: None,
        ..Observation::test()
    };
    let d = decide(&state, &o, t(1));
    assert_eq!(d.actions, vec![Action::SetCanaryWeight(0)]);
    assert_eq!(d.next.phase, Phase::Failed);
    assert!(
        d.events[0]
            .message
            .contains("test/podinfo-canary no longer exists")
    );
}

#[test]
fn a_vanished_virtual_service_fails_the_rollout_and_leaves_the_canary_alone() {
    let missing = |o: Observation| Observation {
        route: RouteView::Missing,
        ..o
    };
    for state in [
        Rollout::test().progressing(25, 0),
        Rollout::test().promoting(),
        Rollout::test().rolling_back(Some(0)),
    ] {
        let d = decide(
            &state,
            &missing(Observation::test().measured(100.0, 10.0)),
            t(100),
        );
        assert!(d.actions.is_empty(), "{:?}: {:?}", state.phase, d.actions);
        assert_eq!(d.next.phase, Phase::Failed, "{:?}", state.phase);
        assert!(
            d.events[0]
                .message
                .contains("VirtualService test/podinfo no longer exists"),
            "{}",
            d.events[0].message
        );
    }
    // A paused rollout is ended by the operator's abort (or resumed once it is back).
    let paused = Rollout::test().progressing(25, 0).with(|r| {
        r.phase = Phase::Paused;
        r.paused_from = Some(Phase::Progressing);
    });
    assert!(!decide(&paused, &missing(Observation::test()), t(1)).changes(&paused));
    assert!(
        apply_command(
            &paused,
            &Command::Resume,
            &missing(Observation::test()),
            t(1)
        )
        .is_err()
    );
}

#[test]
fn an_action_retrying_cannot_fix_ends_the_rollout_failed_naming_it() {
    let o = Observation {
        failure: Some(ActionFailure {
            action: Action::ScaleCanary(0),
            error: "deployments.apps \"podinfo-canary\" is forbidden".into(),
        }),
        ..Observation::test().routing(0)
    };
    let d = decide(&Rollout::test().rolling_back(Some(0)), &o, t(100));
    assert!(d.actions.is_empty());
    assert_eq!(d.next.phase, Phase::Failed);
    let message = &d.events[0].message;
    for part in [
        "could not scale the canary down",
        "is forbidden",
        "it was rolling back (aborted: bad)",
        "all traffic had been routed to GA",
    ] {
        assert!(message.contains(part), "{part:?} missing from {message}");
    }
}

#[test]
fn a_rollback_records_when_traffic_left_the_canary() {
    let state = Rollout::test().progressing(20, 0);
    let d = apply_command(
        &state,
        &abort("stop"),
        &Observation::test().routing(20).delayed(),
        t(7),
    )
    .unwrap();
    assert_eq!(d.actions, vec![Action::SetCanaryWeight(0)]);
    assert_eq!(d.next.traffic_off_canary_at, Some(t(7)));
    assert_eq!(d.wake, Duration::from_secs(30));
    assert!(d.events[0].message.contains("canary scaled down in 30s"));
}

#[test]
fn the_canary_is_scaled_down_only_a_delay_after_traffic_left_it() {
    let state = Rollout::test().rolling_back(Some(0));
    let d = decide(&state, &Observation::test().routing(0).delayed(), t(10));
    assert!(d.actions.is_empty() && !d.changes(&state));
    assert_eq!(d.wake, Duration::from_secs(20));
    // Not while the VirtualService cannot be read.
    let d = decide(&state, &Observation::test().delayed(), t(40));
    assert!(d.actions.is_empty() && !d.changes(&state));
    let d = decide(&state, &Observation::test().routing(0).delayed(), t(30));
    assert_eq!(d.actions, vec![Action::ScaleCanary(0)]);
    assert_eq!(d.next.phase, Phase::Aborted);
}

#[test]
fn traffic_found_on_the_canary_again_goes_back_to_ga_and_the_delay_starts_over() {
    let state = Rollout::test().rolling_back(Some(0));
    let d = decide(&state, &Observation::test().routing(20).delayed(), t(29));
    assert_eq!(d.actions, vec![Action::SetCanaryWeight(0)]);
    assert_eq!(d.next.phase, Phase::RollingBack);
    assert_eq!(d.next.traffic_off_canary_at, Some(t(29)));
    assert_eq!(kinds(&d), vec![EventKind::WeightChanged]);
    let d = decide(&d.next, &Observation::test().routing(0).delayed(), t(31));
    assert!(d.actions.is_empty());
    let d = decide(&d.next, &Observation::test().routing(0).delayed(), t(59));
    assert_eq!(d.actions, vec![Action::ScaleCanary(0)]);
}

#[test]
fn a_rollback_stored_without_its_traffic_time_waits_a_whole_delay() {
    let state = Rollout::test().rolling_back(None);
    let d = decide(&state, &Observation::test().routing(0).delayed(), t(100));
    assert!(d.actions.is_empty());
    assert_eq!(d.next.traffic_off_canary_at, Some(t(100)));
    assert!(d.changes(&state), "the start of the wait is persisted");
}
