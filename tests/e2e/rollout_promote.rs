//! A healthy canary with a new image is promoted: weights step 10, 20, … 100, GA ends up
//! running the canary's template, the canary sits at zero replicas, and the events are
//! numbered 1..n in order.

use std::collections::HashMap;
use std::time::Duration;

use crate::common::{CANARY, Cluster, GA, Harness, image, replicas};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};
use steerer::v1::{Analysis, EventType, Phase, RolloutEvent};

const NEW_IMAGE: &str = "ghcr.io/stefanprodan/podinfo:6.1.0";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_canary_with_new_image_is_promoted_step_by_step() {
    let mut h = Harness::start().await;
    assert_eq!(h.weights().await, (100, 0));
    let route_before = h.route_but_weights().await;
    let mut request = h.request(Analysis {
        step_weight: Some(10),
        ..Default::default()
    });
    request.images = HashMap::from([("podinfo".to_owned(), NEW_IMAGE.to_owned())]);
    let started = h.start_rollout(request).await;
    assert_eq!(started.phase(), Phase::Pending);
    assert_eq!(started.last_sequence, 1);

    let events = h
        .watch_to_end(&started.id, 0, Duration::from_secs(90))
        .await;
    let done = h.get(&started.id).await;
    assert_eq!(done.phase(), Phase::Succeeded, "{}", done.message);
    // API calls, counted before this test reads anything itself, by the simulator (which
    // counts every request it serves; a real API server's counts come from its audit log).
    let counts = match &h.cluster {
        Cluster::Sim(sim) => {
            let faults = sim.faults();
            Some((
                faults.count("patch", h.route_plural()),
                faults.count("get", h.route_plural()),
                faults.count("get", "deployments"),
                faults.count("patch", "rollouts/status"),
            ))
        }
        Cluster::Real { .. } => None,
    };

    let sequences: Vec<u64> = events.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, (1..=done.last_sequence).collect::<Vec<_>>());
    assert_eq!(events[0].r#type(), EventType::Started);
    assert_eq!(events.last().unwrap().r#type(), EventType::Succeeded);
    let steps: Vec<u32> = events
        .iter()
        .filter(|e| e.r#type() == EventType::WeightChanged)
        .map(|e| e.canary_weight)
        .collect();
    assert_eq!(steps, vec![10, 20, 30, 40, 50, 60, 70, 80, 90, 100]);
    assert!(
        events
            .iter()
            .filter(|e| e.r#type() == EventType::CheckPassed)
            .all(|e| e.success_rate.unwrap() >= 95.0)
    );

    let ga = h.deployment(GA).await;
    let canary = h.deployment(CANARY).await;
    assert_eq!(image(&ga), NEW_IMAGE);
    assert_eq!(
        ga.spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .as_ref()
            .unwrap()["app"],
        GA,
        "GA keeps its own selector labels"
    );
    assert_eq!(replicas(&canary), 0);
    assert_eq!(h.weights().await, (100, 0));
    assert_eq!(
        h.route_but_weights().await,
        route_before,
        "the route changes only in its two weights"
    );
    assert_eq!(done.canary_weight, 0);
    assert!(!done.revision.is_empty());

    // API budget: one route write per step plus the one back to GA, no reads of
    // Deployments or routes per step (watch caches), one state write per step.
    if let Some((vs_patches, vs_reads, deployment_reads, state_writes)) = counts {
        assert_eq!(vs_patches, 11);
        assert_eq!(deployment_reads, 0);
        // This test's own two reads before the start; the server reads it from its cache.
        assert!(vs_reads <= 2, "{vs_reads} reads of the route");
        assert!(state_writes < events.len() as u64);
    }

    // Each step is recorded as an events.k8s.io Event on the GA Deployment, related to the
    // rollout's record; repeats of a reason are one Event whose series counts them.
    let recorded = recorded_events(&h, &started.id, &events).await;
    let of = |reason: &str| -> Vec<&Event> {
        recorded
            .iter()
            .filter(|e| e.reason.as_deref() == Some(reason))
            .collect()
    };
    for reason in [
        "RolloutStarted",
        "WeightChanged",
        "CheckPassed",
        "Promoted",
        "Succeeded",
    ] {
        assert_eq!(of(reason).len(), 1, "one {reason} Event in {recorded:?}");
    }
    let weights = of("WeightChanged")[0];
    assert_eq!(weights.series.as_ref().map(|s| s.count), Some(10));
    assert_eq!(
        weights.note.as_deref(),
        Some(format!("rollout {}: {}", started.id, steps_message(&events)).as_str()),
        "a series keeps the note of its first Event"
    );
    assert_eq!(weights.type_.as_deref(), Some("Normal"));
    assert_eq!(weights.reporting_controller.as_deref(), Some("steerer"));
    let started_event = of("RolloutStarted")[0];
    assert!(started_event.series.is_none(), "{started_event:?}");
}

/// The message of the first weight change the rollout reported.
fn steps_message(events: &[RolloutEvent]) -> String {
    events
        .iter()
        .find(|e| e.r#type() == EventType::WeightChanged)
        .map(|e| e.message.clone())
        .unwrap_or_default()
}

/// How many times an Event stands for: its series count, or 1.
fn occurrences(event: &Event) -> usize {
    event
        .series
        .as_ref()
        .map_or(1, |s| usize::try_from(s.count).unwrap_or(0))
}

/// The events.k8s.io Events about GA related to rollout `id`, once they account for every
/// event the rollout reported (they are recorded off the step's path, so the last ones may
/// land after the watch ended).
async fn recorded_events(h: &Harness, id: &str, reported: &[RolloutEvent]) -> Vec<Event> {
    let api = Api::<Event>::namespaced(h.kube.clone(), crate::common::NS);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let ours: Vec<Event> = api
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(GA))
            .filter(|e| e.related.as_ref().and_then(|r| r.name.as_deref()) == Some(id))
            .collect();
        let count: usize = ours.iter().map(occurrences).sum();
        if count >= reported.len() {
            assert_eq!(count, reported.len(), "one occurrence per event: {ours:?}");
            return ours;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{count} of {} events recorded: {ours:?}",
            reported.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// GA's rolling update never finishes (GA is paused, so its new pods never come): past the
/// progress deadline the promotion ends FAILED and leaves traffic where it was, since GA's new
/// pods are not ready while the canary's are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promotion_whose_ga_never_becomes_ready_fails_at_the_deadline_leaving_traffic_alone() {
    let mut h = Harness::start().await;
    let mut request = h.request(Analysis {
        step_weight: Some(20),
        progress_deadline: Some(prost_types::Duration {
            seconds: 4,
            nanos: 0,
        }),
        ..Default::default()
    });
    request.images = HashMap::from([("podinfo".to_owned(), NEW_IMAGE.to_owned())]);
    let started = h.start_rollout(request).await;
    let progressing = h
        .wait_until(&started.id, Duration::from_secs(30), |r| {
            r.phase() == Phase::Progressing && r.canary_weight >= 20
        })
        .await;
    h.patch_deployment(GA, serde_json::json!({"spec": {"paused": true}}))
        .await;
    let promoting = h
        .client
        .promote_rollout(steerer::v1::PromoteRolloutRequest {
            id: started.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(promoting.phase(), Phase::Promoting);
    let weight = u64::from(promoting.canary_weight);
    assert!(weight >= u64::from(progressing.canary_weight));

    let done = h.wait_for_end(&started.id, Duration::from_secs(20)).await;
    assert_eq!(done.phase(), Phase::Failed, "{}", done.message);
    assert!(
        done.message.contains("progress deadline"),
        "{}",
        done.message
    );
    assert!(
        done.message.contains(&format!("{weight}% on the canary")),
        "{}",
        done.message
    );
    assert_eq!(h.weights().await, (100 - weight, weight));
    assert!(replicas(&h.deployment(CANARY).await) > 0);
    assert_eq!(image(&h.deployment(GA).await), NEW_IMAGE);
    let events = h.watch_to_end(&started.id, 0, Duration::from_secs(5)).await;
    assert_eq!(events.last().unwrap().r#type(), EventType::Failed);
    assert!(
        !events.iter().any(|e| e.r#type() == EventType::Promoted),
        "{:?}",
        crate::common::types(&events)
    );
}
