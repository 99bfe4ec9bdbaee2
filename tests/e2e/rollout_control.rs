//! Operator control of a running rollout: abort mid-way, and pause, resume, promote.

use std::collections::HashMap;
use std::time::Duration;

use crate::common::{CANARY, GA, Harness, image, replicas, types};
use steerer::v1::{
    AbortRolloutRequest, Analysis, EventType, PauseRolloutRequest, Phase, PromoteRolloutRequest,
    ResumeRolloutRequest,
};

const NEW_IMAGE: &str = "ghcr.io/stefanprodan/podinfo:6.3.0";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_mid_rollout_puts_traffic_back_on_ga_and_is_idempotent() {
    let mut h = Harness::start().await;
    let ga_before = h.deployment(GA).await;
    let started = h
        .start_rollout(h.request(Analysis {
            step_weight: Some(10),
            ..Default::default()
        }))
        .await;
    h.wait_until(&started.id, Duration::from_secs(30), |r| {
        r.canary_weight >= 20
    })
    .await;
    let aborted = h
        .client
        .abort_rollout(AbortRolloutRequest {
            id: started.id.clone(),
            reason: "release cancelled".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(aborted.phase(), Phase::Aborted);
    assert_eq!(aborted.canary_weight, 0);
    assert!(
        aborted.message.contains("release cancelled"),
        "{}",
        aborted.message
    );
    assert_eq!(h.weights().await, (100, 0));
    assert_eq!(replicas(&h.deployment(CANARY).await), 0);
    assert_eq!(
        h.deployment(GA).await.spec.as_ref().unwrap().template,
        ga_before.spec.as_ref().unwrap().template
    );

    let again = h
        .client
        .abort_rollout(AbortRolloutRequest {
            id: started.id.clone(),
            reason: "twice".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.phase(), Phase::Aborted);
    assert_eq!(again.last_sequence, aborted.last_sequence);

    let events = h.watch_to_end(&started.id, 0, Duration::from_secs(5)).await;
    let t = types(&events);
    assert_eq!(
        t[t.len() - 2..],
        [EventType::RollingBack, EventType::Aborted]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_holds_the_weight_resume_continues_and_promote_finishes_now() {
    let mut h = Harness::start().await;
    let mut request = h.request(Analysis {
        step_weight: Some(10),
        ..Default::default()
    });
    request.images = HashMap::from([("podinfo".to_owned(), NEW_IMAGE.to_owned())]);
    let started = h.start_rollout(request).await;
    h.wait_until(&started.id, Duration::from_secs(30), |r| {
        r.canary_weight >= 10
    })
    .await;

    let paused = h
        .client
        .pause_rollout(PauseRolloutRequest {
            id: started.id.clone(),
            reason: "looking at dashboards".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(paused.phase(), Phase::Paused);
    let held = paused.canary_weight;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let still = h.get(&started.id).await;
    assert_eq!((still.phase(), still.canary_weight), (Phase::Paused, held));
    assert_eq!(h.weights().await.1, u64::from(held));

    let resumed = h
        .client
        .resume_rollout(ResumeRolloutRequest {
            id: started.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resumed.phase(), Phase::Progressing);
    h.wait_until(&started.id, Duration::from_secs(30), |r| {
        r.canary_weight > held
    })
    .await;

    let promoting = h
        .client
        .promote_rollout(PromoteRolloutRequest {
            id: started.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(promoting.phase(), Phase::Promoting);
    let done = h.wait_for_end(&started.id, Duration::from_secs(30)).await;
    assert_eq!(done.phase(), Phase::Succeeded, "{}", done.message);
    assert_eq!(image(&h.deployment(GA).await), NEW_IMAGE);
    assert_eq!(h.weights().await, (100, 0));
    assert_eq!(replicas(&h.deployment(CANARY).await), 0);

    let events = h.watch_to_end(&started.id, 0, Duration::from_secs(5)).await;
    let t = types(&events);
    for expected in [
        EventType::Paused,
        EventType::Resumed,
        EventType::Promoting,
        EventType::Promoted,
        EventType::Succeeded,
    ] {
        assert!(t.contains(&expected), "{expected:?} missing from {t:?}");
    }
    let max_step = events
        .iter()
        .filter(|e| e.r#type() == EventType::WeightChanged)
        .map(|e| e.canary_weight)
        .max()
        .unwrap();
    assert!(max_step < 100, "promoted before the analysis reached 100%");
}
