//! Tests of commands, one situation per test.

use super::super::fixtures::*;
use super::super::*;
use super::*;
use crate::domain::{Ending, EventKind, Phase, Rollout, RouteView};

#[test]
fn abort_routes_to_ga_and_aborting_a_finished_rollout_changes_nothing() {
    let state = Rollout::test().progressing(30, 0);
    let d = apply_command(
        &state,
        &Command::Abort {
            reason: "bad deploy".into(),
        },
        &Observation::test(),
        t(1),
    )
    .unwrap();
    assert_eq!(d.actions, vec![Action::SetCanaryWeight(0)]);
    assert_eq!(d.next.phase, Phase::RollingBack);
    let finished = decide(&d.next, &Observation::test().routing(0), t(2));
    assert_eq!(finished.next.phase, Phase::Aborted);
    assert!(
        finished.events[0]
            .message
            .starts_with("aborted: bad deploy")
    );

    let d = apply_command(
        &finished.next,
        &Command::Abort {
            reason: String::new(),
        },
        &Observation::test(),
        t(3),
    )
    .unwrap();
    assert!(d.actions.is_empty() && d.events.is_empty());
    assert!(!d.changes(&finished.next));
}

#[test]
fn abort_during_a_rollback_changes_nothing() {
    let state = Rollout::test().progressing(0, 0).with(|r| {
        r.phase = Phase::RollingBack;
        r.ending = Some(Ending {
            phase: Phase::RolledBack,
            reason: "3 failed checks: x".into(),
        });
    });
    let d = apply_command(
        &state,
        &Command::Abort {
            reason: "stop".into(),
        },
        &Observation::test(),
        t(1),
    )
    .unwrap();
    assert!(d.actions.is_empty() && d.events.is_empty());
    assert!(!d.changes(&state));
    // The rollback still ends as the rollback it was.
    let finished = decide(&d.next, &Observation::test().routing(0), t(2));
    assert_eq!(finished.next.phase, Phase::RolledBack);
}

#[test]
fn pause_holds_and_resume_continues_from_the_same_weight() {
    let state = Rollout::test().progressing(30, 0);
    let paused = apply_command(
        &state,
        &Command::Pause {
            reason: String::new(),
        },
        &Observation::test(),
        t(1),
    )
    .unwrap();
    assert_eq!(paused.next.phase, Phase::Paused);
    assert!(paused.actions.is_empty());
    // Paused: nothing moves however long it waits.
    let idle = decide(
        &paused.next,
        &Observation::test().measured(100.0, 10.0),
        t(100),
    );
    assert!(idle.actions.is_empty() && idle.events.is_empty());
    let resumed =
        apply_command(&paused.next, &Command::Resume, &Observation::test(), t(101)).unwrap();
    assert_eq!(resumed.next.phase, Phase::Progressing);
    assert_eq!(resumed.next.canary_weight, 30);
    assert_eq!(kinds(&resumed), vec![EventKind::Resumed]);
}

#[test]
fn promote_skips_the_remaining_analysis() {
    let state = Rollout::test().progressing(30, 0);
    let d = apply_command(&state, &Command::Promote, &Observation::test(), t(1)).unwrap();
    assert_eq!(d.next.phase, Phase::Promoting);
    assert_eq!(d.actions, vec![Action::PromoteTemplate]);
}

#[test]
fn promote_before_the_canary_is_ready_is_refused() {
    let state = Rollout::test();
    assert!(apply_command(&state, &Command::Promote, &Observation::test(), t(1)).is_err());
    let done = Rollout::test().with(|r| r.phase = Phase::Succeeded);
    assert!(
        apply_command(
            &done,
            &Command::Pause {
                reason: String::new()
            },
            &Observation::test(),
            t(1)
        )
        .is_err()
    );
    assert!(apply_command(&done, &Command::Resume, &Observation::test(), t(1)).is_err());
}

#[test]
fn abort_during_promotion_is_refused_saying_ga_already_rolls_out_the_canary() {
    let refused = apply_command(
        &Rollout::test().promoting(),
        &abort("too late"),
        &Observation::test().routing(100),
        t(1),
    );
    let Err(Refused(why)) = refused else {
        panic!("abort during promotion was accepted: {refused:?}");
    };
    assert!(
        why.contains("already rolling out the canary's pod template")
            && why.contains("will finish promoting"),
        "{why}"
    );
    // Also once traffic is on GA and the canary waits to be scaled down.
    let draining = Rollout::test().promoting().with(|r| {
        r.canary_weight = 0;
        r.traffic_off_canary_at = Some(t(1));
    });
    let refused = apply_command(
        &draining,
        &abort("too late"),
        &Observation::test().routing(0),
        t(2),
    );
    assert!(
        matches!(&refused, Err(Refused(why)) if why.contains("is promoted")),
        "{refused:?}"
    );
}

#[test]
fn abort_with_a_vanished_virtual_service_ends_failed_at_once_saying_what_stays() {
    let state = Rollout::test().progressing(30, 0);
    let o = Observation {
        route: RouteView::Missing,
        ..Observation::test()
    };
    let d = apply_command(&state, &abort("stop"), &o, t(1)).unwrap();
    assert!(d.actions.is_empty(), "{:?}", d.actions);
    assert_eq!(d.next.phase, Phase::Failed);
    assert_eq!(kinds(&d), vec![EventKind::Failed]);
    let message = &d.events[0].message;
    for part in [
        "aborted: stop",
        "VirtualService test/podinfo no longer exists",
        "could not be routed back to GA",
        "30% to the canary",
        "canary podinfo-canary keeps its 3 replicas",
        "GA podinfo is unchanged",
    ] {
        assert!(message.contains(part), "{part:?} missing from {message}");
    }
    let o = Observation {
        route: RouteView::Broken("weights sum to 70".into()),
        ..Observation::test()
    };
    let d = apply_command(&state, &abort("stop"), &o, t(1)).unwrap();
    assert_eq!(d.next.phase, Phase::Failed);
    assert!(d.events[0].message.contains("weights sum to 70"));
}

#[test]
fn an_abort_whose_first_write_cannot_be_made_keeps_the_operators_reason() {
    // The abort's route write got 404 before anything was recorded: the state is still
    // progressing, with the ending the abort meant.
    let mut state = Rollout::test().progressing(25, 0);
    state.ending = Some(Ending {
        phase: Phase::Aborted,
        reason: "aborted: cancel the release".into(),
    });
    let o = Observation {
        failure: Some(ActionFailure {
            action: Action::SetCanaryWeight(0),
            error: "VirtualService test/podinfo not found".into(),
        }),
        ..Observation::test().routing(25)
    };
    let d = decide(&state, &o, t(10));
    assert_eq!(d.next.phase, Phase::Failed);
    let message = &d.events[0].message;
    assert!(
        message.starts_with(
            "failed: aborted: cancel the release, but could not route all traffic to GA"
        ),
        "{message}"
    );
    assert_eq!(
        message.matches("cancel the release").count(),
        1,
        "{message}"
    );
}

#[test]
fn commands_on_a_finished_rollout_abort_changes_nothing_and_the_rest_are_refused() {
    let done = Rollout::test()
        .progressing(0, 0)
        .with(|r| r.phase = Phase::Succeeded);
    let abort = Command::Abort {
        reason: String::new(),
    };
    assert_eq!(command_on_finished(&done, &abort), Ok(()));
    let refused = command_on_finished(&done, &Command::Resume).unwrap_err();
    assert_eq!(
        refused.0,
        "rollout r1 has finished (succeeded) and cannot be resumed"
    );
    // The driver's answer is the same sentence.
    assert_eq!(
        apply_command(&done, &Command::Resume, &Observation::test(), t(1)).unwrap_err(),
        refused
    );
}
