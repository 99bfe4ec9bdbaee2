//! Canaries that must not be promoted: one answering 20% errors is rolled back after
//! `max_failed_checks`, one that never becomes ready is rolled back at the progress deadline.
//! Either way GA is untouched and the route ends at 100/0, otherwise as the user wrote it.

use std::time::Duration;

use crate::common::{CANARY, GA, Harness, image, replicas, types};
use serde_json::json;
use steerer::v1::{Analysis, EventType, Phase};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_with_20_percent_errors_is_rolled_back_after_max_failed_checks() {
    let mut h = Harness::start().await;
    let ga_before = h.deployment(GA).await;
    let route_before = h.route_but_weights().await;
    h.annotate_template(CANARY, json!({"sim.steerer.dev/error-rate": "0.2"}))
        .await;
    let started = h
        .start_rollout(h.request(Analysis {
            step_weight: Some(20),
            max_failed_checks: Some(3),
            success_rate_threshold: Some(95.0),
            ..Default::default()
        }))
        .await;
    let events = h
        .watch_to_end(&started.id, 0, Duration::from_secs(60))
        .await;
    let done = h.get(&started.id).await;
    assert_eq!(done.phase(), Phase::RolledBack, "{}", done.message);
    assert_eq!(done.failed_checks, 3);
    assert!(done.message.contains("3 failed checks"), "{}", done.message);

    let failed: Vec<_> = events
        .iter()
        .filter(|e| e.r#type() == EventType::CheckFailed)
        .collect();
    assert_eq!(failed.len(), 3);
    for e in &failed {
        let rate = e.success_rate.unwrap();
        assert!((70.0..90.0).contains(&rate), "success rate {rate}");
    }
    let t = types(&events);
    let rolling = t.iter().position(|t| *t == EventType::RollingBack).unwrap();
    assert_eq!(t[rolling + 1..], [EventType::RolledBack]);
    assert_eq!(events[rolling].canary_weight, 0);

    assert_eq!(h.weights().await, (100, 0));
    assert_eq!(
        h.route_but_weights().await,
        route_before,
        "the route changes only in its two weights"
    );
    let ga_after = h.deployment(GA).await;
    assert_eq!(
        ga_after.spec.as_ref().unwrap().template,
        ga_before.spec.as_ref().unwrap().template,
        "GA untouched"
    );
    assert_eq!(image(&ga_after), image(&ga_before));
    assert_eq!(replicas(&h.deployment(CANARY).await), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_that_never_becomes_ready_is_rolled_back_at_the_progress_deadline() {
    let mut h = Harness::start().await;
    let ga_before = h.deployment(GA).await;
    h.annotate_template(CANARY, json!({"sim.steerer.dev/ready": "false"}))
        .await;
    let started = h
        .start_rollout(h.request(Analysis {
            step_weight: Some(50),
            progress_deadline: Some(prost_types_duration(4)),
            ..Default::default()
        }))
        .await;
    let events = h
        .watch_to_end(&started.id, 0, Duration::from_secs(30))
        .await;
    let done = h.get(&started.id).await;
    assert_eq!(done.phase(), Phase::RolledBack, "{}", done.message);
    assert!(
        done.message.contains("progress deadline"),
        "{}",
        done.message
    );
    let halted = events
        .iter()
        .find(|e| e.r#type() == EventType::Halted)
        .expect("a HALTED event");
    assert!(
        halted.message.starts_with("halted: canary"),
        "{}",
        halted.message
    );
    assert!(
        !types(&events).contains(&EventType::WeightChanged),
        "traffic never moved to an unready canary"
    );
    assert_eq!(h.weights().await, (100, 0));
    assert_eq!(
        h.deployment(GA).await.spec.as_ref().unwrap().template,
        ga_before.spec.as_ref().unwrap().template
    );
    assert_eq!(replicas(&h.deployment(CANARY).await), 0);
}

fn prost_types_duration(seconds: i64) -> prost_types::Duration {
    prost_types::Duration { seconds, nanos: 0 }
}
