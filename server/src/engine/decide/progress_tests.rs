//! Tests of preparing, stepping, checking, halting and restarting, one situation per test.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;

use super::super::fixtures::*;
use super::super::*;
use crate::domain::{Breaches, EventKind, HpaView, Phase, Rollout, Sample};

#[test]
fn preparing_scales_a_canary_at_zero_to_ga_replicas_and_applies_images() {
    let state = Rollout::test().with(|r| {
        r.images = BTreeMap::from([("app".to_owned(), "podinfo:3".to_owned())]);
    });
    let mut o = Observation::test();
    o.canary.as_mut().unwrap().spec_replicas = 0;
    let d = decide(&state, &o, t(1));
    assert_eq!(d.actions, vec![Action::ApplyImages, Action::ScaleCanary(3)]);
    assert_eq!(kinds(&d), vec![EventKind::Preparing]);
    assert!(d.next.prepared);
    assert_eq!(d.next.phase, Phase::Pending);
}

#[test]
fn preparing_uses_requested_canary_replicas() {
    let state = Rollout::test().with(|r| r.canary_replicas = Some(1));
    let mut o = Observation::test();
    o.canary.as_mut().unwrap().spec_replicas = 0;
    let d = decide(&state, &o, t(1));
    assert_eq!(d.actions, vec![Action::ScaleCanary(1)]);
}

#[test]
fn pending_halts_while_the_canary_rolls_out() {
    let state = Rollout::test().prepared();
    let mut o = Observation::test();
    o.canary.as_mut().unwrap().updated_replicas = 2;
    let d = decide(&state, &o, t(1));
    assert!(d.actions.is_empty());
    assert_eq!(kinds(&d), vec![EventKind::Halted]);
    assert_eq!(
        d.events[0].message,
        "halted: canary rolling update in progress, 2 of 3 replicas updated"
    );
    // The same reason is not announced twice.
    let again = decide(&d.next, &o, t(2));
    assert!(again.events.is_empty());
}

#[test]
fn ready_canary_gets_the_first_step() {
    let state = Rollout::test().prepared();
    let d = decide(&state, &Observation::test(), t(1));
    assert_eq!(d.actions, vec![Action::SetCanaryWeight(10)]);
    assert_eq!(d.next.phase, Phase::Progressing);
    assert_eq!(d.next.revision, canary().revision());
    assert_eq!(kinds(&d), vec![EventKind::WeightChanged]);
    assert_eq!(d.events[0].canary_weight, 10);
}

#[test]
fn passing_check_steps_up_by_step_weight() {
    let state = Rollout::test().progressing(10, 0);
    assert_eq!(
        sample_window(&state, t(1), Duration::from_secs(4), Duration::ZERO),
        Some(Duration::from_secs(4))
    );
    let d = decide(&state, &Observation::test().measured(100.0, 20.0), t(1));
    assert_eq!(d.actions, vec![Action::SetCanaryWeight(20)]);
    assert_eq!(
        kinds(&d),
        vec![EventKind::CheckPassed, EventKind::WeightChanged]
    );
    assert_eq!(d.events[0].canary_weight, 10);
    assert_eq!(d.events[1].canary_weight, 20);
    assert_eq!(d.next.last_step_at, Some(t(1)));
}

#[test]
fn passing_check_at_max_weight_promotes() {
    let state = Rollout::test().progressing(100, 0);
    let d = decide(&state, &Observation::test().measured(99.5, 20.0), t(1));
    assert_eq!(d.next.phase, Phase::Promoting);
    assert_eq!(d.actions, vec![Action::PromoteTemplate]);
    assert_eq!(
        kinds(&d),
        vec![EventKind::CheckPassed, EventKind::Promoting]
    );
    assert_eq!(d.next.promotion_min_ready, Some(3));
}

fn ab_test(r: &mut Rollout) {
    r.analysis.strategy = crate::domain::Strategy::AbTest {
        iterations: 3,
        matches: vec![crate::domain::RequestMatch {
            on: crate::domain::Matched::Header("x-cohort".into()),
            value: crate::domain::MatchValue::Exact("beta".into()),
        }],
    };
}

#[test]
fn an_ab_test_routes_its_matches_to_the_canary_and_says_so() {
    let state = Rollout::test().prepared().with(ab_test);
    let d = decide(&state, &Observation::test(), t(1));
    assert_eq!(
        d.actions,
        vec![Action::SetCanaryWeight(crate::domain::AB_WEIGHT)]
    );
    assert_eq!(kinds(&d), vec![EventKind::WeightChanged]);
    assert!(
        d.events[0]
            .message
            .ends_with("A/B: requests with header x-cohort=beta go to the canary, the rest to GA"),
        "{}",
        d.events[0].message
    );
}

#[test]
fn an_ab_test_holds_its_route_while_checks_pass_and_promotes_on_the_last_iteration() {
    let state = Rollout::test().progressing(100, 0).with(ab_test);
    let first = decide(&state, &Observation::test().measured(100.0, 20.0), t(1));
    assert!(first.actions.is_empty(), "{:?}", first.actions);
    assert_eq!(kinds(&first), vec![EventKind::CheckPassed]);
    assert!(
        first.events[0]
            .message
            .starts_with("check 1 of 3 passed on the A/B traffic: "),
        "{}",
        first.events[0].message
    );
    assert_eq!(first.next.passed_checks, 1);
    assert_eq!(first.next.canary_weight, 100);
    assert_eq!(first.next.last_step_at, Some(t(1)));
    // The record keeps the count: a restarted server carries on from it.
    let stored: Rollout =
        serde_json::from_value(serde_json::to_value(&first.next).unwrap()).unwrap();
    assert_eq!(stored.passed_checks, 1);
    let state = stored.with(|r| {
        r.passed_checks = 2;
        r.last_step_at = Some(t(0));
    });
    let last = decide(&state, &Observation::test().measured(100.0, 20.0), t(1));
    assert_eq!(last.next.phase, Phase::Promoting);
    assert_eq!(last.actions, vec![Action::PromoteTemplate]);
    assert!(
        last.events[1]
            .message
            .contains("A/B analysis passed 3 checks")
    );
}

#[test]
fn a_new_revision_during_an_ab_test_takes_its_rule_out_and_counts_again() {
    let state = Rollout::test().progressing(100, 0).with(ab_test).with(|r| {
        r.passed_checks = 2;
        r.revision = "older".into();
    });
    let d = decide(&state, &Observation::test(), t(1));
    assert_eq!(d.actions, vec![Action::SetCanaryWeight(0)]);
    assert_eq!(d.next.passed_checks, 0);
}

fn blue_green(r: &mut Rollout) {
    r.analysis.strategy = crate::domain::Strategy::BlueGreen { iterations: 2 };
}

#[test]
fn a_ready_blue_green_canary_stays_dark_and_its_load_counts_from_then() {
    let state = Rollout::test().prepared().with(blue_green);
    let d = decide(&state, &Observation::test(), t(1));
    assert!(d.actions.is_empty(), "{:?}", d.actions);
    assert_eq!(d.next.phase, Phase::Progressing);
    assert_eq!(d.next.canary_weight, 0);
    assert_eq!(d.next.traffic_since, Some(t(1)));
    assert_eq!(d.next.last_step_at, Some(t(1)));
    assert_eq!(kinds(&d), vec![EventKind::WeightChanged]);
    assert!(
        d.events[0]
            .message
            .ends_with("blue/green: no live traffic goes to the canary, all of it to GA"),
        "{}",
        d.events[0].message
    );
}

#[test]
fn blue_green_checks_in_the_dark_then_switches_all_traffic_in_one_write_then_promotes() {
    let state = Rollout::test().progressing(0, 0).with(blue_green);
    let first = decide(&state, &Observation::test().measured(100.0, 20.0), t(1));
    assert!(first.actions.is_empty(), "{:?}", first.actions);
    assert_eq!(kinds(&first), vec![EventKind::CheckPassed]);
    assert!(
        first.events[0]
            .message
            .starts_with("check 1 of 2 passed with no live traffic: "),
        "{}",
        first.events[0].message
    );
    assert_eq!(first.next.canary_weight, 0);
    assert_eq!(first.next.passed_checks, 1);
    let state = first.next.clone().with(|r| r.last_step_at = Some(t(0)));
    let switch = decide(&state, &Observation::test().measured(100.0, 20.0), t(1));
    assert_eq!(switch.actions, vec![Action::SetCanaryWeight(100)]);
    assert_eq!(
        kinds(&switch),
        vec![EventKind::CheckPassed, EventKind::WeightChanged]
    );
    assert!(
        switch.events[1]
            .message
            .ends_with("blue/green: all traffic goes to the canary"),
        "{}",
        switch.events[1].message
    );
    let state = switch.next.clone().with(|r| r.last_step_at = Some(t(0)));
    let last = decide(&state, &Observation::test().measured(100.0, 20.0), t(1));
    assert_eq!(last.next.phase, Phase::Promoting);
    assert_eq!(last.actions, vec![Action::PromoteTemplate]);
    assert!(
        last.events[1]
            .message
            .contains("blue/green analysis passed 2 checks without live traffic"),
        "{}",
        last.events[1].message
    );
}

#[test]
fn a_dark_blue_green_canary_without_load_is_no_data_saying_where_load_comes_from() {
    let state = Rollout::test().progressing(0, 0).with(blue_green);
    let d = decide(&state, &Observation::test().measured(100.0, 0.0), t(1));
    assert!(d.actions.is_empty(), "{:?}", d.actions);
    assert_eq!(kinds(&d), vec![EventKind::CheckNoData]);
    assert_eq!(d.next.passed_checks, 0);
    assert!(
        d.events[0]
            .message
            .contains("blue/green: the canary takes no live traffic"),
        "{}",
        d.events[0].message
    );
}

#[test]
fn a_blue_green_canary_failing_on_live_traffic_goes_back_to_ga_in_one_write() {
    let state = Rollout::test()
        .progressing(100, 0)
        .with(blue_green)
        .with(|r| {
            r.passed_checks = 2;
            r.failed_checks = r.analysis.max_failed_checks - 1;
        });
    let d = decide(&state, &Observation::test().measured(50.0, 20.0), t(1));
    assert_eq!(d.next.phase, Phase::RollingBack);
    assert_eq!(d.actions.first(), Some(&Action::SetCanaryWeight(0)));
}

#[test]
fn a_slow_canary_fails_its_check_on_latency_and_the_record_and_event_say_so() {
    let state = Rollout::test()
        .progressing(30, 0)
        .with_latency_ceiling()
        .with(|r| r.failed_checks = 2);
    let d = decide(&state, &Observation::test().timed(100.0, Some(936.0)), t(1));
    assert_eq!(
        kinds(&d),
        vec![EventKind::CheckFailed, EventKind::RollingBack]
    );
    let failed = Breaches {
        success_rate: false,
        latency_p99: true,
    };
    let record = d.next.last_analysis.unwrap();
    assert_eq!(record.failed, failed);
    assert_eq!(record.sample.latency_p99_ms, Some(936.0));
    let event = d.events[0].clone().record("r1", 2, t(1));
    assert_eq!(event.failed, failed);
    assert_eq!(event.latency_p99_ms, Some(936.0));
    assert!(
        event
            .message
            .contains("p99 latency 936.0ms above ceiling 200ms, success rate 100.00% meets 99%"),
        "{}",
        event.message
    );
    assert!(
        d.next
            .ending
            .unwrap()
            .reason
            .contains("p99 latency 936.0ms above ceiling 200ms")
    );
}

#[test]
fn a_fast_canary_passes_with_its_latency_in_the_event() {
    let state = Rollout::test().progressing(30, 0).with_latency_ceiling();
    let d = decide(&state, &Observation::test().timed(100.0, Some(47.0)), t(1));
    assert_eq!(
        kinds(&d),
        vec![EventKind::CheckPassed, EventKind::WeightChanged]
    );
    assert!(
        d.events[0]
            .message
            .contains("p99 latency 47.0ms within 200ms")
    );
    assert_eq!(d.events[0].sample.unwrap().latency_p99_ms, Some(47.0));
    assert_eq!(d.next.last_analysis.unwrap().failed, Breaches::default());
}

#[test]
fn a_canary_without_latency_data_is_not_passed() {
    let state = Rollout::test().progressing(30, 0).with_latency_ceiling();
    let d = decide(&state, &Observation::test().timed(100.0, None), t(1));
    assert_eq!(kinds(&d), vec![EventKind::CheckNoData]);
    assert_eq!(d.next.canary_weight, 30);
    assert_eq!(d.next.failed_checks, 0);
}

#[test]
fn failed_checks_count_up_then_roll_back_with_one_weight_write() {
    let state = Rollout::test().progressing(30, 0);
    let d = decide(&state, &Observation::test().measured(80.0, 20.0), t(1));
    assert!(d.actions.is_empty());
    assert_eq!(d.next.failed_checks, 1);
    assert_eq!(kinds(&d), vec![EventKind::CheckFailed]);
    assert!(d.events[0].message.contains("80.00% below threshold 99%"));

    let state = Rollout::test()
        .progressing(30, 0)
        .with(|r| r.failed_checks = 2);
    let d = decide(&state, &Observation::test().measured(80.0, 20.0), t(1));
    assert_eq!(d.actions, vec![Action::SetCanaryWeight(0)]);
    assert_eq!(d.next.phase, Phase::RollingBack);
    assert_eq!(d.next.canary_weight, 0);
    assert_eq!(
        kinds(&d),
        vec![EventKind::CheckFailed, EventKind::RollingBack]
    );
    assert_eq!(d.next.ending.as_ref().unwrap().phase, Phase::RolledBack);
}

#[test]
fn too_little_traffic_is_no_data_never_a_pass() {
    let state = Rollout::test().progressing(10, 0);
    let d = decide(&state, &Observation::test().measured(100.0, 0.5), t(1));
    assert!(d.actions.is_empty());
    assert_eq!(kinds(&d), vec![EventKind::CheckNoData]);
    assert_eq!(d.next.canary_weight, 10);
    assert_eq!(d.next.failed_checks, 0);
    assert_eq!(d.next.halted_since, Some(t(1)));
}

#[test]
fn nan_inf_and_missing_values_are_no_data() {
    let state = Rollout::test().progressing(10, 0);
    for sample in [
        Sample {
            success_rate: Some(f64::NAN),
            request_rate: Some(10.0),
            latency_p99_ms: None,
        },
        Sample {
            success_rate: Some(f64::INFINITY),
            request_rate: Some(10.0),
            latency_p99_ms: None,
        },
        Sample {
            success_rate: Some(100.0),
            request_rate: Some(f64::NAN),
            latency_p99_ms: None,
        },
        Sample::default(),
    ] {
        let o = Observation {
            sample: Some(Ok(sample)),
            ..Observation::test()
        };
        let d = decide(&state, &o, t(1));
        assert_eq!(kinds(&d), vec![EventKind::CheckNoData], "{sample:?}");
        assert!(d.actions.is_empty());
    }
    let o = Observation {
        sample: Some(Err("timeout".into())),
        ..Observation::test()
    };
    assert_eq!(
        kinds(&decide(&state, &o, t(1))),
        vec![EventKind::CheckNoData]
    );
}

#[test]
fn out_of_range_success_rate_fails_the_check() {
    let state = Rollout::test().progressing(10, 0);
    let d = decide(&state, &Observation::test().measured(150.0, 10.0), t(1));
    assert_eq!(kinds(&d), vec![EventKind::CheckFailed]);
}

#[test]
fn no_data_past_the_deadline_rolls_back() {
    let state = Rollout::test()
        .progressing(10, 0)
        .with(|r| r.halted_since = Some(t(-20)));
    let d = decide(&state, &Observation::test().measured(100.0, 0.0), t(1));
    assert_eq!(d.next.phase, Phase::RollingBack);
    assert_eq!(d.actions, vec![Action::SetCanaryWeight(0)]);
}

#[test]
fn halted_past_the_progress_deadline_rolls_back() {
    let state = Rollout::test()
        .prepared()
        .with(|r| r.halted_since = Some(t(0)));
    let mut o = Observation::test();
    o.canary.as_mut().unwrap().ready_replicas = 0;
    o.canary.as_mut().unwrap().available_replicas = 0;
    let d = decide(&state, &o, t(5));
    assert_eq!(d.next.phase, Phase::Pending);
    let d = decide(&state, &o, t(10));
    assert_eq!(d.next.phase, Phase::RollingBack);
    assert!(
        d.events[0].message.contains(
            "progress deadline of 10s exceeded: canary has unhealthy pods, 0 of 3 replicas ready"
        ),
        "{}",
        d.events[0].message
    );
}

#[test]
fn hpa_scaling_the_canary_halts_the_rollout() {
    let state = Rollout::test().progressing(20, 0);
    let mut o = Observation::test().measured(100.0, 10.0);
    o.canary_hpa = Some(HpaView {
        name: "podinfo-canary".into(),
        target: "podinfo-canary".into(),
        current_replicas: 3,
        desired_replicas: 5,
        max_replicas: 10,
        ..Default::default()
    });
    let d = decide(&state, &o, t(1));
    assert!(d.actions.is_empty());
    assert_eq!(kinds(&d), vec![EventKind::Halted]);
    assert!(
        d.events[0]
            .message
            .contains("HPA podinfo-canary is scaling the canary from 3 to 5")
    );
}

#[test]
fn a_new_canary_revision_restarts_from_weight_zero() {
    let state = Rollout::test()
        .progressing(40, 0)
        .with(|r| r.failed_checks = 1);
    let mut o = Observation::test().measured(100.0, 10.0);
    std::sync::Arc::make_mut(&mut o.canary.as_mut().unwrap().template)["spec"]["containers"][0]["image"] =
        json!("podinfo:9");
    let d = decide(&state, &o, t(1));
    assert_eq!(d.actions, vec![Action::SetCanaryWeight(0)]);
    assert_eq!(kinds(&d), vec![EventKind::Restarted]);
    assert_eq!(d.next.phase, Phase::Pending);
    assert_eq!((d.next.canary_weight, d.next.failed_checks), (0, 0));
}

#[test]
fn deciding_twice_on_the_same_state_gives_the_same_absolute_weight() {
    let state = Rollout::test().progressing(20, 0);
    let a = decide(&state, &Observation::test().measured(100.0, 10.0), t(1));
    let b = decide(&state, &Observation::test().measured(100.0, 10.0), t(1));
    assert_eq!(a.actions, b.actions);
    assert_eq!(a.actions, vec![Action::SetCanaryWeight(30)]);
}

/// Both sides' counts: requests and failures of the canary, then of the baseline.
fn against_ga(canary: (f64, f64), ga: (f64, f64)) -> Observation {
    use crate::domain::{BaselineSample, SideCounts};
    let side = |(requests, failures)| SideCounts {
        requests,
        failures,
        buckets: Vec::new(),
    };
    Observation {
        baseline: Some(Box::new(Ok(BaselineSample {
            canary: side(canary),
            baseline: side(ga),
            requests_query: "q".into(),
            latency_query: "l".into(),
        }))),
        ..Observation::test().measured(95.0, 20.0)
    }
}

fn judged_against_ga(state: Rollout) -> Rollout {
    state.with(|r| r.analysis.baseline = Some(Box::new(crate::domain::BaselineSettings::ga())))
}

#[test]
fn with_a_baseline_the_same_error_rate_on_both_sides_passes_where_the_threshold_would_fail() {
    let state = judged_against_ga(Rollout::test().progressing(30, 0));
    let d = decide(&state, &against_ga((2000.0, 100.0), (6000.0, 300.0)), t(1));
    assert_eq!(
        kinds(&d),
        vec![EventKind::CheckPassed, EventKind::WeightChanged]
    );
    assert!(
        d.events[0].message.contains("errors 5.0% vs 5.0% baseline"),
        "{}",
        d.events[0].message
    );
    // The server's default threshold does not apply: no success_rate check at all.
    let checks = &d.next.last_analysis.as_ref().unwrap().checks;
    assert_eq!(
        checks.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        ["error_rate"]
    );
    assert_eq!(d.next.baseline_looks, 1);
    // Without a baseline the same canary fails the 99% threshold.
    let d = decide(
        &Rollout::test().progressing(30, 0),
        &against_ga((2000.0, 100.0), (6000.0, 300.0)),
        t(1),
    );
    assert_eq!(kinds(&d), vec![EventKind::CheckFailed]);
}

#[test]
fn with_a_baseline_more_errors_than_ga_fail_the_check_naming_it_and_the_look_counts() {
    let state = judged_against_ga(Rollout::test().progressing(30, 0)).with(|r| {
        r.baseline_looks = 2;
    });
    let d = decide(&state, &against_ga((1000.0, 30.0), (3000.0, 0.0)), t(1));
    assert_eq!(kinds(&d), vec![EventKind::CheckFailed]);
    assert_eq!(d.next.failed_checks, 1);
    assert_eq!(d.next.baseline_looks, 3);
    let event = d.events[0].clone().record("r1", 2, t(1));
    assert_eq!(event.failed_names(), ["error_rate"]);
    assert_eq!(event.failed, Breaches::default());
    assert!(
        event
            .message
            .contains("errors 3.0% vs 0.0% baseline (+3.0 pts, 99% CI +"),
        "{}",
        event.message
    );
    let errors = &event.checks[0];
    assert_eq!(errors.baseline.as_ref().unwrap().value, Some(0.0));
    assert!(
        errors.detail.contains("look 3 of the rollout"),
        "{}",
        errors.detail
    );
}

#[test]
fn with_a_baseline_too_few_requests_on_a_side_is_no_data_and_spends_no_look() {
    let state = judged_against_ga(Rollout::test().progressing(30, 0));
    let d = decide(&state, &against_ga((150.0, 0.0), (3000.0, 0.0)), t(1));
    assert_eq!(kinds(&d), vec![EventKind::CheckNoData]);
    assert_eq!(d.next.baseline_looks, 0);
    assert_eq!(d.next.canary_weight, 30);
    // And no measurement of the baseline at all is no data too, never a pass.
    let d = decide(&state, &Observation::test().measured(100.0, 20.0), t(1));
    assert_eq!(kinds(&d), vec![EventKind::CheckNoData]);
}

#[test]
fn a_new_revision_starts_its_looks_again() {
    let state = judged_against_ga(Rollout::test().progressing(30, 0)).with(|r| {
        r.baseline_looks = 4;
        r.revision = "old".into();
    });
    let d = decide(&state, &Observation::test(), t(1));
    assert_eq!(d.next.baseline_looks, 0);
}

#[test]
fn the_baseline_window_reaches_back_to_the_analysis_start_in_whole_seconds() {
    let state = Rollout::test()
        .progressing(30, 0)
        .with(|r| r.traffic_since = Some(t(-90) - ms(400)));
    assert_eq!(baseline_window(&state, t(0)), Some(Duration::from_secs(90)));
    let state = state.with(|r| r.traffic_since = None);
    assert_eq!(baseline_window(&state, t(0)), None);
}
