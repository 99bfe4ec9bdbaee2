//! Tests of hand edits of the route, one situation per test.

use super::super::fixtures::*;
use super::super::*;
use crate::domain::{EventKind, Phase, Rollout, RouteView};

#[test]
fn a_hand_edited_weight_pauses_the_rollout_and_resume_adopts_it() {
    let state = Rollout::test().progressing(20, 0);
    let edited = Observation::test().measured(100.0, 10.0).routing(50);
    let d = decide(&state, &edited, t(5));
    assert!(
        d.actions.is_empty(),
        "steerer overwrote the edit: {:?}",
        d.actions
    );
    assert_eq!(d.next.phase, Phase::Paused);
    assert_eq!(d.next.paused_from, Some(Phase::Progressing));
    assert_eq!(kinds(&d), vec![EventKind::Paused]);
    assert!(
        d.events[0].message.contains("canary weight 20% -> 50%"),
        "{}",
        d.events[0].message
    );
    // Held: nothing is written while it waits for the operator.
    let held = decide(&d.next, &edited, t(100));
    assert!(held.actions.is_empty() && !held.changes(&d.next));

    let resumed = apply_command(&d.next, &Command::Resume, &edited, t(101)).unwrap();
    assert_eq!(resumed.next.phase, Phase::Progressing);
    assert_eq!(resumed.next.canary_weight, 50);
    assert!(
        resumed.events[0].message.contains("is adopted"),
        "{}",
        resumed.events[0].message
    );
    // It carries on from the adopted weight.
    let next = decide(&resumed.next, &edited, t(103));
    assert_eq!(next.actions, vec![Action::SetCanaryWeight(60)]);
}

#[test]
fn edited_routes_pause_too_and_a_broken_virtual_service_cannot_be_resumed() {
    let state = Rollout::test().progressing(20, 0);
    let rerouted = Observation {
        route: RouteView::Split {
            canary_weight: 20,
            fingerprint: "someone else's".into(),
        },
        ..Observation::test().measured(100.0, 10.0)
    };
    let d = decide(&state, &rerouted, t(5));
    assert_eq!(d.next.phase, Phase::Paused);
    assert!(
        d.events[0]
            .message
            .contains("destinations or match conditions")
    );
    let resumed = apply_command(&d.next, &Command::Resume, &rerouted, t(6)).unwrap();
    assert_eq!(
        resumed.next.route_fingerprint.as_deref(),
        Some("someone else's")
    );

    let broken = Observation {
        route: RouteView::Broken("http route 0 weights sum to 70".into()),
        ..Observation::test().measured(100.0, 10.0)
    };
    let d = decide(&state, &broken, t(5));
    assert_eq!(d.next.phase, Phase::Paused);
    assert!(d.events[0].message.contains("fix it, then resume"));
    let refused = apply_command(&d.next, &Command::Resume, &broken, t(6));
    assert!(
        matches!(&refused, Err(Refused(why)) if why.contains("weights sum to 70")),
        "{refused:?}"
    );
}

#[test]
fn a_hand_edit_during_promotion_is_recorded_and_the_promotion_goes_on() {
    let o = Observation {
        ga: Some(promoted_ga()),
        ..Observation::test().routing(40)
    };
    let d = decide(&Rollout::test().promoting(), &o, t(1));
    assert_eq!(d.next.phase, Phase::Promoting);
    assert_eq!(
        kinds(&d),
        vec![EventKind::WeightChanged, EventKind::Promoted]
    );
    assert_eq!(d.events[0].canary_weight, 40);
    assert!(d.events[0].message.contains("during the promotion"));
    // GA is ready: the promotion's own last step routes all traffic to GA.
    assert_eq!(d.actions, vec![Action::SetCanaryWeight(0)]);
    assert_eq!(d.next.canary_weight, 0);
}
