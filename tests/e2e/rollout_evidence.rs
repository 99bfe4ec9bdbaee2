//! A revision is judged only on its own traffic. The canary workload keeps its name from one
//! revision to the next, so a metrics window reaching back before the new revision got any
//! traffic would mix in requests the previous (healthy) revision served: a bad canary
//! following a good one must still read as bad from its very first check.

use std::collections::HashMap;
use std::time::Duration;

use crate::common::{CANARY, Harness, Options, replicas};
use serde_json::json;
use steerer::v1::{Analysis, EventType, Phase};

/// A metrics window much longer than the interval: a check a second after the first step
/// would otherwise look eight seconds back, into the previous revision's traffic.
const WINDOW: Duration = Duration::from_secs(8);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_canary_after_a_promoted_one_is_judged_on_its_own_traffic_only() {
    let mut options = Options::default();
    options.server.metrics_window = WINDOW;
    let mut h = Harness::start_with(options).await;

    // A healthy revision takes all the traffic, then is promoted.
    let mut request = h.request(Analysis {
        step_weight: Some(100),
        ..Default::default()
    });
    request.images = HashMap::from([(
        "podinfo".to_owned(),
        "ghcr.io/stefanprodan/podinfo:6.1.0".to_owned(),
    )]);
    let first = h.start_rollout(request).await;
    h.watch_to_end(&first.id, 0, Duration::from_secs(60)).await;
    assert_eq!(h.get(&first.id).await.phase(), Phase::Succeeded);

    // The next revision answers 30% errors.
    h.annotate_template(CANARY, json!({"sim.steerer.dev/error-rate": "0.3"}))
        .await;
    let second = h
        .start_rollout(h.request(Analysis {
            step_weight: Some(20),
            max_failed_checks: Some(2),
            success_rate_threshold: Some(95.0),
            ..Default::default()
        }))
        .await;
    let events = h.watch_to_end(&second.id, 0, Duration::from_secs(60)).await;
    let done = h.get(&second.id).await;

    let checks: Vec<_> = events
        .iter()
        .filter(|e| {
            matches!(
                e.r#type(),
                EventType::CheckPassed | EventType::CheckFailed | EventType::CheckNoData
            )
        })
        .collect();
    assert!(!checks.is_empty(), "no checks: {events:?}");
    for check in &checks {
        let rate = check.success_rate;
        assert!(
            rate.is_some_and(|r| r < 90.0),
            "check at weight {}% read {rate:?}, evidence of another revision: {}",
            check.canary_weight,
            check.message
        );
    }
    assert!(
        !events.iter().any(|e| e.r#type() == EventType::CheckPassed),
        "a 30%-error revision passed a check"
    );
    assert_eq!(done.phase(), Phase::RolledBack, "{}", done.message);
    assert_eq!(h.weights().await, (100, 0));
    assert_eq!(replicas(&h.deployment(CANARY).await), 0);
}
