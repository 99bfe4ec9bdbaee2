//! Tests of the judge, one situation per test.

use super::super::fixtures::*;
use super::super::*;
use super::*;
use crate::domain::{
    AnalysisSettings, Breaches, CheckKind, CheckOutcome, CheckResult, EventKind, Rollout, Sample,
    WebhookKind,
};

fn sample(success: Option<f64>, rate: Option<f64>) -> Sample {
    Sample {
        success_rate: success,
        request_rate: rate,
        latency_p99_ms: None,
    }
}

#[test]
fn a_success_rate_at_the_threshold_passes() {
    assert_eq!(
        evaluate(&sample(Some(99.0), Some(5.0)), &AnalysisSettings::test()),
        Verdict::Pass {
            measured: "success rate 99.00% meets 99%".to_owned(),
            request_rate: Some(5.0),
            checks: vec![CheckResult {
                kind: CheckKind::SuccessRate,
                name: "success_rate".into(),
                value: Some(99.0),
                min: Some(99.0),
                max: None,
                outcome: CheckOutcome::Passed,
                detail: String::new(),
                baseline: None,
            }],
        }
    );
}

fn timed(success: f64, p99: Option<f64>) -> Sample {
    Sample {
        latency_p99_ms: p99,
        ..sample(Some(success), Some(5.0))
    }
}

fn ceiling(max: f64) -> AnalysisSettings {
    AnalysisSettings {
        max_latency_p99_ms: Some(max),
        ..AnalysisSettings::test()
    }
}

#[test]
fn a_p99_at_or_under_the_ceiling_passes_and_says_both_values_against_their_bounds() {
    for p99 in [200.0, 47.5] {
        match evaluate(&timed(100.0, Some(p99)), &ceiling(200.0)) {
            Verdict::Pass { measured, .. } => {
                assert!(
                    measured.contains("success rate 100.00% meets 99%"),
                    "{measured}"
                );
                assert!(
                    measured.contains(&format!("p99 latency {p99:.1}ms within 200ms")),
                    "{measured}"
                );
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn a_p99_above_the_ceiling_fails_on_latency_alone_while_the_success_rate_is_fine() {
    match evaluate(&timed(100.0, Some(936.2)), &ceiling(200.0)) {
        Verdict::Fail {
            why,
            measured,
            failed,
            request_rate,
            checks,
        } => {
            assert_eq!(why, "p99 latency 936.2ms above ceiling 200ms");
            assert_eq!(
                measured,
                "p99 latency 936.2ms above ceiling 200ms, success rate 100.00% meets 99%"
            );
            assert_eq!(
                failed,
                Breaches {
                    success_rate: false,
                    latency_p99: true
                }
            );
            assert_eq!(request_rate, Some(5.0));
            assert_eq!(checks[1].name, "latency_p99_ms");
            assert_eq!(checks[1].outcome, CheckOutcome::Failed);
            assert_eq!(checks[1].max, Some(200.0));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn both_bounds_missed_name_both() {
    match evaluate(&timed(90.0, Some(300.0)), &ceiling(200.0)) {
        Verdict::Fail { why, failed, .. } => {
            assert_eq!(
                why,
                "success rate 90.00% below threshold 99%, p99 latency 300.0ms above ceiling 200ms"
            );
            assert_eq!(failed.names(), ["success_rate", "latency_p99_ms"]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_p99_that_is_not_a_number_fails() {
    for p99 in [f64::NAN, f64::INFINITY] {
        assert!(
            matches!(
                evaluate(&timed(100.0, Some(p99)), &ceiling(200.0)),
                Verdict::Fail { failed, .. } if failed.latency_p99 && !failed.success_rate
            ),
            "{p99}"
        );
    }
}

#[test]
fn no_latency_data_beside_a_good_success_rate_is_no_data_never_a_pass() {
    assert!(matches!(
        evaluate(&timed(100.0, None), &ceiling(200.0)),
        Verdict::NoData {
            key: "no canary latency",
            ..
        }
    ));
    // A failing success rate still fails without latency data.
    assert!(matches!(
        evaluate(&timed(50.0, None), &ceiling(200.0)),
        Verdict::Fail { failed, .. } if failed.success_rate && !failed.latency_p99
    ));
}

#[test]
fn latency_is_not_judged_without_a_ceiling() {
    assert!(matches!(
        evaluate(&timed(100.0, Some(1e9)), &AnalysisSettings::test()),
        Verdict::Pass { .. }
    ));
}

#[test]
fn a_success_rate_below_the_threshold_or_out_of_range_fails() {
    assert!(matches!(
        evaluate(&sample(Some(98.5), Some(5.0)), &AnalysisSettings::test()),
        Verdict::Fail { why, .. } if why == "success rate 98.50% below threshold 99%"
    ));
    assert!(matches!(
        evaluate(&sample(Some(150.0), Some(5.0)), &AnalysisSettings::test()),
        Verdict::Fail { why, .. } if why.contains("out of range")
    ));
}

#[test]
fn too_little_traffic_and_values_that_are_not_numbers_are_no_data() {
    for s in [
        sample(Some(100.0), Some(0.5)),
        sample(None, None),
        sample(Some(f64::NAN), Some(5.0)),
        sample(Some(100.0), Some(f64::INFINITY)),
    ] {
        assert!(
            matches!(
                evaluate(&s, &AnalysisSettings::test()),
                Verdict::NoData { .. }
            ),
            "{s:?}"
        );
    }
}

#[test]
fn a_template_within_its_bounds_passes_and_one_outside_fails_naming_it_with_its_value() {
    let state = Rollout::test().progressing(30, 0).with(|r| {
        r.analysis.metrics = vec![
            metric("request-rate", Some(1.0), None),
            metric("error-ratio", None, Some(0.01)),
        ];
    });
    let good = Observation::test().measured(100.0, 20.0).with_metrics(&[
        ("request-rate", Ok(Some(20.0))),
        ("error-ratio", Ok(Some(0.0))),
    ]);
    let d = decide(&state, &good, t(1));
    assert_eq!(
        kinds(&d),
        vec![EventKind::CheckPassed, EventKind::WeightChanged]
    );
    let checks = &d.events[0].checks;
    assert_eq!(checks.len(), 3, "{checks:?}");
    assert_eq!(
        (checks[1].name.as_str(), checks[1].value, checks[1].min),
        ("request-rate", Some(20.0), Some(1.0))
    );
    assert!(checks.iter().all(|c| c.outcome == CheckOutcome::Passed));
    assert!(
        d.events[0].message.contains("metric request-rate 20 >= 1")
            && d.events[0].message.contains("metric error-ratio 0 <= 0.01"),
        "{}",
        d.events[0].message
    );

    let bad = Observation::test().measured(100.0, 20.0).with_metrics(&[
        ("request-rate", Ok(Some(20.0))),
        ("error-ratio", Ok(Some(0.2))),
    ]);
    let d = decide(&state, &bad, t(1));
    assert_eq!(kinds(&d), vec![EventKind::CheckFailed]);
    assert_eq!(d.next.failed_checks, 1);
    let event = d.events[0].clone().record("r1", 2, t(1));
    assert_eq!(event.failed_names(), ["error-ratio"]);
    assert!(
        event
            .message
            .starts_with("check failed at weight 30%: metric error-ratio 0.2 above max 0.01, "),
        "{}",
        event.message
    );
    let record = d.next.last_analysis.unwrap();
    assert_eq!(record.failed_names(), ["error-ratio"]);
    assert_eq!(record.checks[2].value, Some(0.2));
    assert_eq!(record.checks[2].outcome, CheckOutcome::Failed);
}

#[test]
fn a_template_without_data_or_whose_query_failed_is_no_data_never_a_pass() {
    let state = Rollout::test()
        .progressing(30, 0)
        .with(|r| r.analysis.metrics = vec![metric("request-rate", Some(1.0), None)]);
    for value in [
        Ok(None),
        Ok(Some(f64::NAN)),
        Err("prometheus query timed out".to_owned()),
    ] {
        let o = Observation::test()
            .measured(100.0, 20.0)
            .with_metrics(&[("request-rate", value.clone())]);
        let d = decide(&state, &o, t(1));
        assert_eq!(kinds(&d), vec![EventKind::CheckNoData], "{value:?}");
        assert_eq!(d.next.canary_weight, 30);
        assert_eq!(d.next.failed_checks, 0);
        let check = &d.events[0].checks[1];
        assert_eq!(check.outcome, CheckOutcome::NoData);
        assert!(!check.detail.is_empty());
    }
    // Not measured at all (a template the server no longer has comes as an error).
    let d = decide(&state, &Observation::test().measured(100.0, 20.0), t(1));
    assert_eq!(kinds(&d), vec![EventKind::CheckNoData]);
}

#[test]
fn an_infinite_template_value_fails_and_a_failing_template_fails_even_with_little_traffic() {
    let state = Rollout::test()
        .progressing(30, 0)
        .with(|r| r.analysis.metrics = vec![metric("queue", None, Some(10.0))]);
    let inf = Observation::test()
        .measured(100.0, 20.0)
        .with_metrics(&[("queue", Ok(Some(f64::INFINITY)))]);
    assert_eq!(
        kinds(&decide(&state, &inf, t(1))),
        vec![EventKind::CheckFailed]
    );
    let quiet = Observation::test()
        .measured(100.0, 0.1)
        .with_metrics(&[("queue", Ok(Some(50.0)))]);
    let d = decide(&state, &quiet, t(1));
    assert_eq!(kinds(&d), vec![EventKind::CheckFailed]);
    assert!(
        d.events[0].message.contains("success rate not judged"),
        "{}",
        d.events[0].message
    );
}

#[test]
fn a_rollout_webhook_that_refuses_or_does_not_answer_fails_the_check() {
    let state = Rollout::test()
        .progressing(30, 0)
        .with_hooks(&[("smoke", WebhookKind::Rollout)]);
    let ok = Observation::test()
        .measured(100.0, 20.0)
        .answering(vec![answered("smoke", WebhookKind::Rollout, 200)]);
    let d = decide(&state, &ok, t(1));
    assert_eq!(
        kinds(&d),
        vec![EventKind::CheckPassed, EventKind::WeightChanged]
    );
    assert!(d.events[0].message.contains("webhook smoke: HTTP 200"));
    for answer in [
        answered("smoke", WebhookKind::Rollout, 500),
        unanswered("smoke", WebhookKind::Rollout, "timed out after 1s"),
        unanswered("smoke", WebhookKind::Rollout, "could not connect: refused"),
    ] {
        let o = Observation::test()
            .measured(100.0, 20.0)
            .answering(vec![answer.clone()]);
        let d = decide(&state, &o, t(1));
        assert_eq!(kinds(&d), vec![EventKind::CheckFailed], "{answer:?}");
        let event = d.events[0].clone().record("r1", 2, t(1));
        assert_eq!(event.failed_names(), ["smoke"]);
        let check = &event.checks[1];
        assert_eq!(check.kind, CheckKind::Webhook);
        assert_eq!(check.detail, answer.detail());
    }
}

#[test]
fn with_a_baseline_the_threshold_judges_only_as_a_guard_rail_the_request_set() {
    let mut settings = AnalysisSettings::test();
    settings.baseline = Some(Box::new(crate::domain::BaselineSettings::ga()));
    let sample = sample(Some(95.0), Some(5.0));
    // Not set by the request: no absolute check at all (the baseline judges the errors).
    assert_eq!(
        evaluate(&sample, &settings),
        Verdict::Pass {
            measured: String::new(),
            request_rate: Some(5.0),
            checks: Vec::new(),
        }
    );
    // Set by the request: it still fails a canary below it.
    settings.baseline = Some(Box::new(crate::domain::BaselineSettings {
        success_rate_guard: true,
        ..crate::domain::BaselineSettings::ga()
    }));
    assert!(matches!(
        evaluate(&sample, &settings),
        Verdict::Fail { failed, .. } if failed.success_rate
    ));
}
