//! The baseline judge: the canary compared with GA's own pods over the same window, through
//! the mesh's request counters and latency histograms in a real Prometheus. A canary as bad
//! as GA is promoted where a fixed threshold rolls it back; a canary with more errors than
//! GA, or with GA's mean latency but a far wider spread, is rolled back, each failed check
//! naming the baseline's value, the p-value and the effect's interval. The number of looks a
//! rollout has had lives in its record, so a crashed server carries on at the right level.

use std::time::Duration;

use crate::common::{CANARY, GA, Harness, NS, Options, replicas, types};
use serde_json::json;
use steerer::v1::{Analysis, Baseline, BaselineMode, CheckResult, EventType, Phase, RolloutEvent};

/// Enough traffic that each side gathers about a thousand requests by the first check.
fn options() -> Options {
    Options {
        request_rate: 500.0,
        ..Options::default()
    }
}

/// Half the traffic on the canary at once, checked every 2 s against GA.
fn against_ga() -> Analysis {
    Analysis {
        step_weight: Some(50),
        max_weight: Some(50),
        interval: Some(prost_types::Duration {
            seconds: 2,
            nanos: 0,
        }),
        max_failed_checks: Some(2),
        baseline: Some(Baseline {
            mode: BaselineMode::Ga as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The checks of the failed-check events.
fn failed_checks(events: &[RolloutEvent]) -> Vec<&RolloutEvent> {
    events
        .iter()
        .filter(|e| e.r#type() == EventType::CheckFailed)
        .collect()
}

fn named<'a>(checks: &'a [CheckResult], name: &str) -> &'a CheckResult {
    checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no {name} check in {checks:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_failing_as_often_as_ga_is_promoted_against_the_baseline_where_a_fixed_threshold_rolls_it_back()
 {
    let mut h = Harness::start_with(options()).await;
    h.set_error_rate(NS, GA, Some(0.05)).await;
    h.set_error_rate(NS, CANARY, Some(0.05)).await;

    // The fixed 99% threshold: both versions answer 5% errors, and the canary is blamed.
    let fixed = h
        .start_rollout(h.request(Analysis {
            baseline: None,
            success_rate_threshold: Some(99.0),
            ..against_ga()
        }))
        .await;
    let events = h.watch_to_end(&fixed.id, 0, Duration::from_secs(60)).await;
    let done = h.get(&fixed.id).await;
    assert_eq!(done.phase(), Phase::RolledBack, "{}", done.message);
    assert!(
        done.message.contains("below threshold 99%"),
        "{}",
        done.message
    );
    assert_eq!(failed_checks(&events).len(), 2, "{:#?}", types(&events));

    // Against GA, the same canary on the same traffic is as good as the old version.
    let judged = h.start_rollout(h.request(against_ga())).await;
    let events = h.watch_to_end(&judged.id, 0, Duration::from_secs(60)).await;
    let done = h.get(&judged.id).await;
    assert_eq!(done.phase(), Phase::Succeeded, "{}", done.message);
    assert!(failed_checks(&events).is_empty(), "{:#?}", types(&events));
    let passed: Vec<_> = events
        .iter()
        .filter(|e| e.r#type() == EventType::CheckPassed)
        .collect();
    assert!(!passed.is_empty(), "{:#?}", types(&events));
    for e in passed {
        let errors = named(&e.checks, "error_rate");
        assert!(errors.passed, "{errors:?}");
        let (canary, ga) = (errors.value.unwrap(), errors.baseline_value.unwrap());
        assert!((4.0..=6.0).contains(&canary), "canary {canary}%");
        assert!((4.0..=6.0).contains(&ga), "GA {ga}%");
        assert!(errors.p_value.is_some() && errors.effect.is_some());
        assert!(errors.query.contains("increase("), "{}", errors.query);
        // The server's default threshold does not apply with a baseline.
        assert!(e.checks.iter().all(|c| c.name != "success_rate"), "{e:?}");
        assert!(
            e.message.contains("% baseline (") && e.message.contains(" passed"),
            "{}",
            e.message
        );
    }
    let analysis = done.analysis.unwrap();
    assert_eq!(analysis.success_rate_threshold, None);
    assert_eq!(analysis.baseline.unwrap().confidence, Some(0.99));
    assert_eq!(h.weights().await, (100, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_with_more_errors_than_ga_is_rolled_back_naming_the_baseline_the_p_value_and_the_interval()
 {
    let mut h = Harness::start_with(options()).await;
    let ga_before = h.deployment(GA).await;
    h.annotate_template(CANARY, json!({"sim.steerer.dev/error-rate": "0.03"}))
        .await;
    let started = h.start_rollout(h.request(against_ga())).await;
    let events = h
        .watch_to_end(&started.id, 0, Duration::from_secs(60))
        .await;
    let done = h.get(&started.id).await;
    assert_eq!(done.phase(), Phase::RolledBack, "{}", done.message);
    // `2 failed checks: errors 2.9% vs 0.0% baseline (+2.9 pts, 99% CI +1.6..+5.1, p<0.0001) FAILED`
    assert!(
        done.message.contains("2 failed checks: errors ")
            && done.message.contains("% vs 0.0% baseline (+")
            && done.message.contains(" pts, 99% CI +")
            && done.message.contains(") FAILED"),
        "{}",
        done.message
    );
    let failed = failed_checks(&events);
    assert_eq!(failed.len(), 2, "{:#?}", types(&events));
    for e in failed {
        assert_eq!(e.failed_metrics, ["error_rate"], "{}", e.message);
        let errors = named(&e.checks, "error_rate");
        assert!(!errors.passed);
        let canary = errors.value.unwrap();
        assert!((2.5..=3.5).contains(&canary), "{errors:?}");
        assert_eq!(errors.baseline_value, Some(0.0));
        let p = errors.p_value.unwrap();
        assert!(p < 0.01, "p {p}");
        let (low, high) = (errors.effect_low.unwrap(), errors.effect_high.unwrap());
        // The whole interval lies above the tolerated half point, around the effect.
        let effect = errors.effect.unwrap();
        assert!((effect - canary).abs() < 1e-9, "{errors:?}");
        assert!(
            0.5 < low && low < effect && effect < high,
            "interval {low}..{high}"
        );
        assert!(errors.query.contains("increase("), "{}", errors.query);
        assert!(
            errors.detail.contains("look ") && errors.detail.contains("held to p <"),
            "{}",
            errors.detail
        );
        assert!(e.message.contains(") FAILED"), "{}", e.message);
    }
    assert_eq!(h.weights().await, (100, 0));
    assert_eq!(
        h.deployment(GA).await.spec.as_ref().unwrap().template,
        ga_before.spec.as_ref().unwrap().template,
        "GA untouched"
    );
    assert_eq!(replicas(&h.deployment(CANARY).await), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_with_gas_mean_latency_but_ten_times_the_spread_is_rolled_back_on_latency() {
    let mut h = Harness::start_with(options()).await;
    // GA: the simulator's default shape, 20 ms on average with a spread of about 8 ms.
    h.annotate_template(
        CANARY,
        json!({
            "sim.steerer.dev/latency-ms": "20",
            "sim.steerer.dev/latency-stddev-ms": "83",
        }),
    )
    .await;
    let started = h.start_rollout(h.request(against_ga())).await;
    let events = h
        .watch_to_end(&started.id, 0, Duration::from_secs(60))
        .await;
    let done = h.get(&started.id).await;
    assert_eq!(done.phase(), Phase::RolledBack, "{}", done.message);
    assert!(done.message.contains("slow requests"), "{}", done.message);
    let failed = failed_checks(&events);
    assert_eq!(failed.len(), 2, "{:#?}", types(&events));
    for e in failed {
        assert!(
            e.failed_metrics.contains(&"latency_tail".to_owned())
                && !e.failed_metrics.contains(&"error_rate".to_owned()),
            "{}",
            e.message
        );
        let tail = named(&e.checks, "latency_tail");
        let (canary, ga) = (tail.value.unwrap(), tail.baseline_value.unwrap());
        assert!(
            canary > ga,
            "{canary}% slow canary requests vs {ga}% of GA's"
        );
        assert!(tail.p_value.unwrap() < 0.01, "{tail:?}");
        assert!(tail.effect_low.unwrap() > 0.0, "{tail:?}");
        assert!(tail.query.contains("_bucket"), "{}", tail.query);
        // Its median is no slower: the location test alone would have passed it.
        let shift = named(&e.checks, "latency_shift");
        assert!(shift.passed, "{shift:?}");
        assert!(named(&e.checks, "error_rate").passed);
    }
    assert_eq!(h.weights().await, (100, 0));
}

/// The look a failed check against the baseline was judged at, from its detail
/// (`…: look 3 of the rollout, held to p < 0.00023`).
fn look_of(check: &CheckResult) -> u32 {
    let after = check
        .detail
        .split("look ")
        .nth(1)
        .unwrap_or_else(|| panic!("no look in {:?}", check.detail));
    after
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no look number in {:?}", check.detail))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_looks_of_a_rollout_carry_on_across_a_server_crash() {
    let mut h = Harness::start_with(options()).await;
    h.annotate_template(CANARY, json!({"sim.steerer.dev/error-rate": "0.03"}))
        .await;
    let started = h
        .start_rollout(h.request(Analysis {
            max_failed_checks: Some(3),
            ..against_ga()
        }))
        .await;
    h.wait_until(&started.id, Duration::from_secs(40), |r| {
        r.failed_checks >= 1
    })
    .await;
    h.crash_and_restart().await;
    let events = h
        .watch_to_end(&started.id, 0, Duration::from_secs(60))
        .await;
    let done = h.get(&started.id).await;
    assert_eq!(done.phase(), Phase::RolledBack, "{}", done.message);
    let looks: Vec<u32> = failed_checks(&events)
        .iter()
        .map(|e| look_of(named(&e.checks, "error_rate")))
        .collect();
    assert_eq!(looks.len(), 3, "{:#?}", types(&events));
    // Each look is held to a stricter level than the one before: a restarted server that
    // forgot the looks would start again at look 1 and spend the budget twice.
    assert!(
        looks.windows(2).all(|w| w[0] < w[1]),
        "looks across the crash: {looks:?}"
    );
}
