//! Tests of the promotion, one situation per test.

use serde_json::json;

use super::super::fixtures::*;
use super::super::*;
use crate::domain::{EventKind, Phase, Rollout, promoted_template, template_hash};

#[test]
fn promotion_waits_for_ga_then_routes_to_ga_and_scales_the_canary_down() {
    let state = Rollout::test().progressing(100, 0).with(|r| {
        r.phase = Phase::Promoting;
        r.promotion_min_ready = Some(3);
    });
    // GA not yet updated: copy the template (again: idempotent).
    let d = decide(&state, &Observation::test(), t(1));
    assert_eq!(d.actions, vec![Action::PromoteTemplate]);

    // GA updated but rolling.
    let mut o = Observation {
        ga: Some(promoted_ga()),
        ga_runs_canary: true,
        ..Observation::test()
    };
    o.ga.as_mut().unwrap().updated_replicas = 1;
    let d = decide(&state, &o, t(2));
    assert!(d.actions.is_empty());
    assert!(d.next.message.contains("waiting for GA"));

    // GA ready: one weight write, all traffic on GA.
    let o = Observation {
        ga: Some(promoted_ga()),
        ga_runs_canary: true,
        ..Observation::test()
    }
    .routing(100);
    let d = decide(&state, &o, t(3));
    assert_eq!(d.actions, vec![Action::SetCanaryWeight(0)]);
    assert_eq!(kinds(&d), vec![EventKind::Promoted]);
    assert_eq!(d.next.phase, Phase::Promoting);
    assert_eq!(d.next.traffic_off_canary_at, Some(t(3)));

    // Then (no scale-down delay here) the canary goes to zero and the rollout succeeds.
    let d = decide(&d.next, &o.routing(0), t(3));
    assert_eq!(d.actions, vec![Action::ScaleCanary(0)]);
    assert_eq!(kinds(&d), vec![EventKind::Succeeded]);
    assert_eq!(d.next.phase, Phase::Succeeded);
    assert_eq!(d.next.finished_at, Some(t(3)));
}

#[test]
fn promotion_never_routes_to_a_ga_smaller_than_the_canary() {
    let state = Rollout::test().progressing(100, 0).with(|r| {
        r.phase = Phase::Promoting;
        r.promotion_min_ready = Some(3);
    });
    let mut small = promoted_ga();
    for n in [
        &mut small.spec_replicas,
        &mut small.status_replicas,
        &mut small.updated_replicas,
        &mut small.ready_replicas,
        &mut small.available_replicas,
    ] {
        *n = 1;
    }
    let o = Observation {
        ga: Some(small),
        ga_runs_canary: true,
        ..Observation::test()
    };
    let d = decide(&state, &o, t(1));
    assert_eq!(d.actions, vec![Action::ScaleGa(3)]);
    assert_eq!(d.next.phase, Phase::Promoting);
}

#[test]
fn a_promotion_stored_without_its_template_restarts_for_a_changed_canary() {
    let state = Rollout::test()
        .progressing(100, 0)
        .with(|r| r.phase = Phase::Promoting);
    let mut o = Observation::test();
    std::sync::Arc::make_mut(&mut o.canary.as_mut().unwrap().template)["spec"]["containers"][0]["image"] =
        json!("podinfo:9");
    let d = decide(&state, &o, t(1));
    assert_eq!(kinds(&d), vec![EventKind::Restarted]);
    assert!(!d.actions.contains(&Action::PromoteTemplate));
}

#[test]
fn starting_a_promotion_records_the_template_ga_gets() {
    let state = Rollout::test().progressing(100, 0);
    let d = decide(
        &state,
        &Observation::test().measured(100.0, 10.0).routing(100),
        t(1),
    );
    assert_eq!(d.next.phase, Phase::Promoting);
    assert_eq!(
        d.next.promoted_template,
        Some(template_hash(&promoted_ga().template))
    );
}

#[test]
fn once_ga_has_the_promoted_template_a_changed_canary_never_restarts_or_reaches_ga() {
    let state = Rollout::test().progressing(100, 0).with(|r| {
        r.phase = Phase::Promoting;
        r.promotion_min_ready = Some(3);
        r.promoted_template = Some(template_hash(&promoted_ga().template));
    });
    let mut changed = Observation::test().routing(100);
    std::sync::Arc::make_mut(&mut changed.canary.as_mut().unwrap().template)["spec"]["containers"]
        [0]["image"] = json!("podinfo:9");
    // GA does not show the promoted template yet: wait, never copy the new revision.
    let d = decide(&state, &changed, t(1));
    assert!(d.actions.is_empty(), "{:?}", d.actions);
    assert_eq!(d.next.phase, Phase::Promoting);
    assert!(d.next.message.contains("moved on"), "{}", d.next.message);
    // GA runs the promoted revision: the promotion finishes as usual.
    changed.ga = Some(promoted_ga());
    let d = decide(&state, &changed, t(2));
    assert_eq!(d.actions, vec![Action::SetCanaryWeight(0)]);
    assert_eq!(kinds(&d), vec![EventKind::Promoted]);
    let done = decide(&d.next, &changed.routing(0), t(2));
    assert_eq!(done.next.phase, Phase::Succeeded);
    assert!(
        done.events[0].message.contains("did not analyse"),
        "{}",
        done.events[0].message
    );
}

#[test]
fn ga_template_hash_matches_after_promotion() {
    let g = promoted_ga();
    let c = canary();
    assert_eq!(
        template_hash(&promoted_template(&c.template, &c.selector, &g.selector)),
        template_hash(&g.template)
    );
}

#[test]
fn promotion_past_the_deadline_fails_and_leaves_traffic_where_it_is() {
    let state = Rollout::test().progressing(40, 0).with(|r| {
        r.phase = Phase::Promoting;
        r.promotion_min_ready = Some(3);
        r.promoting_since = Some(t(0));
    });
    let mut o = Observation {
        ga: Some(promoted_ga()),
        ga_runs_canary: true,
        ..Observation::test()
    };
    // GA's new pods never become ready.
    o.ga.as_mut().unwrap().updated_replicas = 1;
    let waiting = decide(&state, &o, t(9));
    assert_eq!(waiting.next.phase, Phase::Promoting);
    assert!(waiting.events.is_empty());

    let d = decide(&state, &o, t(10));
    assert_eq!(d.next.phase, Phase::Failed);
    assert!(
        d.actions.is_empty(),
        "no weight write, no scaling: {:?}",
        d.actions
    );
    assert_eq!(d.next.canary_weight, 40);
    assert_eq!(d.next.finished_at, Some(t(10)));
    assert_eq!(kinds(&d), vec![EventKind::Failed]);
    let message = &d.events[0].message;
    assert!(message.contains("progress deadline"), "{message}");
    assert!(message.contains("40% on the canary"), "{message}");
    assert!(message.contains("rolling update"), "{message}");
}

#[test]
fn promotion_that_cannot_copy_the_template_fails_at_the_deadline_too() {
    let state = Rollout::test().progressing(100, 0).with(|r| {
        r.phase = Phase::Promoting;
        r.promoting_since = Some(t(0));
    });
    assert_eq!(
        decide(&state, &Observation::test(), t(5)).actions,
        vec![Action::PromoteTemplate]
    );
    let d = decide(&state, &Observation::test(), t(11));
    assert!(d.actions.is_empty());
    assert_eq!(d.next.phase, Phase::Failed);
}

#[test]
fn a_promotion_restored_without_a_start_time_gets_a_whole_deadline() {
    let state = Rollout::test()
        .progressing(100, 0)
        .with(|r| r.phase = Phase::Promoting);
    let mut o = Observation {
        ga: Some(promoted_ga()),
        ga_runs_canary: true,
        ..Observation::test()
    };
    o.ga.as_mut().unwrap().updated_replicas = 1;
    let d = decide(&state, &o, t(1000));
    assert_eq!(d.next.phase, Phase::Promoting);
    assert_eq!(d.next.promoting_since, Some(t(1000)));
}

#[test]
fn passing_at_max_weight_starts_the_promotion_clock() {
    let state = Rollout::test().progressing(100, 0);
    let d = decide(&state, &Observation::test().measured(100.0, 10.0), t(1));
    assert_eq!(d.next.promoting_since, Some(t(1)));
}

#[test]
fn a_promotion_waits_out_the_delay_after_routing_to_ga() {
    let o = Observation {
        ga: Some(promoted_ga()),
        ..Observation::test().routing(100)
    }
    .delayed();
    let routed = decide(&Rollout::test().promoting(), &o, t(1));
    assert_eq!(routed.actions, vec![Action::SetCanaryWeight(0)]);
    assert!(routed.events[0].message.contains("scaled down in 30s"));
    let o = Observation {
        ga: Some(promoted_ga()),
        ..Observation::test().routing(0)
    }
    .delayed();
    let waiting = decide(&routed.next, &o, t(20));
    assert!(waiting.actions.is_empty());
    assert_eq!(waiting.next.phase, Phase::Promoting);
    let done = decide(&routed.next, &o, t(31));
    assert_eq!(done.actions, vec![Action::ScaleCanary(0)]);
    assert_eq!(done.next.phase, Phase::Succeeded);
}
