//! The Linkerd observer: a rollout started with `observer: "linkerd"` (the server's default
//! staying Istio) is judged on the mesh's Linkerd series alone. A canary answering 20%
//! errors is rolled back and a healthy one promoted, and Prometheus's query log shows that
//! nothing asked for an `istio_` series while they ran, also after a kill -9 and restart
//! (the observer is in the rollout's record). An unknown observer is refused.

use std::time::Duration;

use crate::common::{CANARY, GA, Harness, replicas, types};
use serde_json::json;
use steerer::v1::{Analysis, EventType, Phase, StartRolloutRequest};
use tonic::Code;

fn linkerd(h: &Harness, analysis: Analysis) -> StartRolloutRequest {
    StartRolloutRequest {
        observer: "linkerd".into(),
        ..h.request(analysis)
    }
}

/// The queries Prometheus answered from the `from`th on: they must have asked Linkerd's
/// series, and never Istio's.
fn assert_linkerd_only(h: &Harness, from: usize) {
    let asked = h.prometheus.queries().unwrap();
    let asked = &asked[from.min(asked.len())..];
    assert!(
        asked.iter().any(|q| q.contains("response_total")),
        "no Linkerd query: {asked:#?}"
    );
    let istio: Vec<_> = asked.iter().filter(|q| q.contains("istio_")).collect();
    assert!(istio.is_empty(), "Istio queries: {istio:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_canary_is_rolled_back_on_linkerd_series_alone() {
    let mut h = Harness::start().await;
    h.annotate_template(CANARY, json!({"sim.steerer.dev/error-rate": "0.2"}))
        .await;
    let from = h.prometheus.queries().unwrap().len();
    let started = h
        .start_rollout(linkerd(
            &h,
            Analysis {
                step_weight: Some(20),
                max_failed_checks: Some(2),
                success_rate_threshold: Some(95.0),
                ..Default::default()
            },
        ))
        .await;
    assert_eq!(started.observer, "linkerd");
    let events = h
        .watch_to_end(&started.id, 0, Duration::from_secs(60))
        .await;
    let done = h.get(&started.id).await;
    assert_eq!(done.phase(), Phase::RolledBack, "{}", done.message);
    assert_eq!(done.observer, "linkerd");
    assert!(done.message.contains("2 failed checks"), "{}", done.message);
    let failed: Vec<_> = events
        .iter()
        .filter(|e| e.r#type() == EventType::CheckFailed)
        .collect();
    assert_eq!(failed.len(), 2, "{:#?}", types(&events));
    for e in &failed {
        let rate = e
            .success_rate
            .expect("a failed check carries the success rate");
        assert!((65.0..92.0).contains(&rate), "success rate {rate}");
    }
    assert_linkerd_only(&h, from);
    assert_eq!(h.weights().await, (100, 0));
    assert_eq!(replicas(&h.deployment(CANARY).await), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_canary_is_promoted_on_linkerd_series_alone_latency_included_across_a_crash() {
    let mut h = Harness::start().await;
    h.annotate_template(CANARY, json!({"sim.steerer.dev/latency-ms": "20"}))
        .await;
    let from = h.prometheus.queries().unwrap().len();
    let started = h
        .start_rollout(linkerd(
            &h,
            Analysis {
                step_weight: Some(50),
                max_failed_checks: Some(2),
                success_rate_threshold: Some(95.0),
                max_latency_p99_ms: Some(200.0),
                ..Default::default()
            },
        ))
        .await;
    // The restarted server knows the observer only from the record.
    h.crash_and_restart().await;
    let events = h
        .watch_to_end(&started.id, 0, Duration::from_secs(60))
        .await;
    let done = h.get(&started.id).await;
    assert_eq!(done.phase(), Phase::Succeeded, "{}", done.message);
    assert_eq!(done.observer, "linkerd");
    let passed: Vec<_> = events
        .iter()
        .filter(|e| e.r#type() == EventType::CheckPassed)
        .collect();
    assert!(!passed.is_empty(), "{:#?}", types(&events));
    for e in &passed {
        let p99 = e.latency_p99_ms.expect("a passed check carries the p99");
        assert!(p99 <= 200.0, "p99 {p99}");
    }
    assert_linkerd_only(&h, from);
    let asked = h.prometheus.queries().unwrap();
    assert!(
        asked[from..]
            .iter()
            .any(|q| q.contains("response_latency_ms_bucket")),
        "no Linkerd latency query: {asked:#?}"
    );
    assert_eq!(h.weights().await, (100, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_observer_is_refused_naming_the_known_ones_and_changes_nothing() {
    let mut h = Harness::start().await;
    let ga_before = h.deployment(GA).await;
    let route_before = h.route_object().await;
    let refused = h
        .client
        .start_rollout(StartRolloutRequest {
            observer: "kuma".into(),
            ..h.request(Analysis::default())
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(
        refused.message().contains("\"kuma\"") && refused.message().contains("istio, linkerd"),
        "{}",
        refused.message()
    );
    assert_eq!(h.deployment(GA).await.spec, ga_before.spec);
    assert_eq!(h.route_object().await, route_before);
    let listed = h
        .client
        .list_rollouts(steerer::v1::ListRolloutsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.rollouts.is_empty(), "{:?}", listed.rollouts);
}
