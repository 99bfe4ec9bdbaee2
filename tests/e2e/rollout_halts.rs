//! The health gate: a rollout halts (and says why) while the canary is in a rolling update and
//! while an HPA scales it, then continues to promotion.

use std::collections::HashMap;
use std::time::Duration;

use crate::common::{CANARY, GA, Harness, NS, Options, events_until, image};
use steerer::v1::{Analysis, EventType, Phase};
use steerer_sim::Timing;

fn slow_pods() -> Options {
    Options {
        timing: Timing {
            pod_startup: Duration::from_millis(1500),
            hpa_sync: Duration::from_millis(1500),
            ..Timing::fast()
        },
        ..Options::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_halts_while_the_canary_rolls_out_its_new_image_then_continues() {
    let mut h = Harness::start_with(slow_pods()).await;
    let mut request = h.request(Analysis {
        step_weight: Some(50),
        ..Default::default()
    });
    request.images = HashMap::from([(
        "podinfo".to_owned(),
        "ghcr.io/stefanprodan/podinfo:6.2.0".to_owned(),
    )]);
    let started = h.start_rollout(request).await;
    let events = h
        .watch_to_end(&started.id, 0, Duration::from_secs(60))
        .await;
    let halted = events
        .iter()
        .find(|e| e.r#type() == EventType::Halted)
        .expect("a HALTED event");
    assert!(
        halted
            .message
            .starts_with("halted: canary rolling update in progress"),
        "{}",
        halted.message
    );
    assert_eq!(halted.canary_weight, 0);
    let first_step = events
        .iter()
        .position(|e| e.r#type() == EventType::WeightChanged)
        .unwrap();
    assert!(
        events
            .iter()
            .position(|e| e.r#type() == EventType::Halted)
            .unwrap()
            < first_step,
        "no traffic before the canary finished its update"
    );
    let done = h.get(&started.id).await;
    assert_eq!(done.phase(), Phase::Succeeded, "{}", done.message);
    assert_eq!(
        image(&h.deployment(GA).await),
        "ghcr.io/stefanprodan/podinfo:6.2.0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_halts_while_an_hpa_scales_the_canary_then_continues() {
    let mut h = Harness::start_with(slow_pods()).await;
    let started = h
        .start_rollout(h.request(Analysis {
            step_weight: Some(20),
            ..Default::default()
        }))
        .await;
    let before = events_until(
        &mut h.client,
        &started.id,
        0,
        Duration::from_secs(30),
        |e| e.r#type() == EventType::WeightChanged && e.canary_weight >= 20,
    )
    .await;
    let scaled_at = before.last().unwrap().canary_weight;
    h.set_load(NS, CANARY, 2.0).await;
    let after = h
        .watch_to_end(
            &started.id,
            before.last().unwrap().sequence + 1,
            Duration::from_secs(60),
        )
        .await;
    let halted: Vec<_> = after
        .iter()
        .filter(|e| e.r#type() == EventType::Halted)
        .collect();
    assert!(!halted.is_empty(), "no HALTED event while the HPA scaled");
    assert!(
        halted
            .iter()
            .any(|e| e.message.contains("HPA podinfo-canary")),
        "{:?}",
        halted.iter().map(|e| &e.message).collect::<Vec<_>>()
    );
    // While halted the weight stayed where it was.
    assert!(halted.iter().all(|e| e.canary_weight <= scaled_at + 20));
    let done = h.get(&started.id).await;
    assert_eq!(done.phase(), Phase::Succeeded, "{}", done.message);
}
