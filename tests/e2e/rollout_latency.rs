//! The latency gate: with `max_latency_p99_ms` 200, a canary answering in about 400 ms is
//! rolled back on its p99 while every request succeeds, and one answering in about 20 ms is
//! promoted. The p99 comes from the mesh's `istio_request_duration_milliseconds` histogram
//! through a real Prometheus.

use std::time::Duration;

use crate::common::{CANARY, GA, Harness, replicas, types};
use serde_json::json;
use steerer::v1::{Analysis, EventType, Phase};

const CEILING_MS: f64 = 200.0;

fn gated(step_weight: u32) -> Analysis {
    Analysis {
        step_weight: Some(step_weight),
        max_failed_checks: Some(2),
        success_rate_threshold: Some(95.0),
        max_latency_p99_ms: Some(CEILING_MS),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_canary_is_rolled_back_on_latency_while_its_success_rate_is_fine() {
    let mut h = Harness::start().await;
    let ga_before = h.deployment(GA).await;
    h.annotate_template(CANARY, json!({"sim.steerer.dev/latency-ms": "400"}))
        .await;
    let started = h.start_rollout(h.request(gated(20))).await;
    let events = h
        .watch_to_end(&started.id, 0, Duration::from_secs(60))
        .await;
    let done = h.get(&started.id).await;
    assert_eq!(done.phase(), Phase::RolledBack, "{}", done.message);
    assert!(
        done.message.contains("2 failed checks") && done.message.contains("p99 latency"),
        "{}",
        done.message
    );
    assert!(
        !done.message.contains("below threshold"),
        "rolled back on latency, not errors: {}",
        done.message
    );

    let failed: Vec<_> = events
        .iter()
        .filter(|e| e.r#type() == EventType::CheckFailed)
        .collect();
    assert_eq!(failed.len(), 2, "{:#?}", types(&events));
    for e in &failed {
        let p99 = e.latency_p99_ms.expect("a failed check carries the p99");
        assert!(p99 > CEILING_MS, "p99 {p99}");
        let success = e.success_rate.expect("and the success rate");
        assert!(success >= 95.0, "success rate {success}");
        assert_eq!(e.failed_metrics, ["latency_p99_ms"], "{}", e.message);
        assert!(
            e.message.contains("above ceiling 200ms") && e.message.contains("meets 95%"),
            "{}",
            e.message
        );
    }
    let last = done.last_analysis.expect("last analysis");
    assert!(last.latency_p99_ms.is_some_and(|p| p > CEILING_MS));
    assert_eq!(last.failed_metrics, ["latency_p99_ms"]);
    assert_eq!(done.analysis.unwrap().max_latency_p99_ms, Some(CEILING_MS));

    assert_eq!(h.weights().await, (100, 0));
    assert_eq!(
        h.deployment(GA).await.spec.as_ref().unwrap().template,
        ga_before.spec.as_ref().unwrap().template,
        "GA untouched"
    );
    assert_eq!(replicas(&h.deployment(CANARY).await), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_canary_passes_the_latency_gate_and_is_promoted() {
    let mut h = Harness::start().await;
    h.annotate_template(CANARY, json!({"sim.steerer.dev/latency-ms": "20"}))
        .await;
    let started = h.start_rollout(h.request(gated(50))).await;
    let events = h
        .watch_to_end(&started.id, 0, Duration::from_secs(60))
        .await;
    let done = h.get(&started.id).await;
    assert_eq!(done.phase(), Phase::Succeeded, "{}", done.message);
    let passed: Vec<_> = events
        .iter()
        .filter(|e| e.r#type() == EventType::CheckPassed)
        .collect();
    assert!(!passed.is_empty(), "{:#?}", types(&events));
    for e in &passed {
        let p99 = e.latency_p99_ms.expect("a passed check carries the p99");
        assert!(p99 <= CEILING_MS, "p99 {p99}");
        assert!(e.failed_metrics.is_empty());
        assert!(e.message.contains("within 200ms"), "{}", e.message);
    }
    assert!(
        !types(&events).contains(&EventType::CheckFailed),
        "{:#?}",
        types(&events)
    );
    assert_eq!(h.weights().await, (100, 0));
}
