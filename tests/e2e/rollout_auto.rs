//! Auto mode: a GA Deployment labelled `steerer.dev/rollout=enabled` gets a rollout when its
//! canary's pod template changes; a new revision mid-rollout restarts from weight 0.

use std::time::Duration;

use crate::common::{CANARY, GA, Harness, NS, Options, image, types};
use serde_json::json;
use steerer::v1::{EventType, ListRolloutsRequest, Phase};
use steerer_server::domain::Strategy;

fn auto() -> Options {
    let mut options = Options::default();
    options.server.auto = true;
    options.server.defaults.strategy = Strategy::Canary {
        step_weight: 25,
        max_weight: 100,
    };
    options
}

async fn set_canary_image(h: &Harness, image: &str) {
    h.patch_deployment(
        CANARY,
        json!({"spec": {"template": {"spec": {"containers": [{"name": "podinfo", "image": image}]}}}}),
    )
    .await;
}

async fn rollouts(h: &mut Harness) -> Vec<steerer::v1::Rollout> {
    h.client
        .list_rollouts(ListRolloutsRequest {
            namespace: NS.into(),
            active_only: false,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .rollouts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labelled_ga_gets_a_rollout_for_a_new_canary_revision_and_restarts_on_another() {
    let mut h = Harness::start_with(auto()).await;
    // Not labelled yet: a canary change starts nothing.
    set_canary_image(&h, "ghcr.io/stefanprodan/podinfo:6.4.0").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(rollouts(&mut h).await.is_empty());

    h.patch_deployment(
        GA,
        json!({"metadata": {"labels": {"steerer.dev/rollout": "enabled"}}}),
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let first = loop {
        if let Some(r) = rollouts(&mut h).await.into_iter().next() {
            break r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "auto mode started nothing"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    h.wait_until(&first.id, Duration::from_secs(30), |r| {
        r.canary_weight >= 25
    })
    .await;

    // A new revision mid-rollout: analysis restarts from weight 0, no second rollout.
    set_canary_image(&h, "ghcr.io/stefanprodan/podinfo:6.5.0").await;
    let events = h.watch_to_end(&first.id, 0, Duration::from_secs(60)).await;
    let done = h.get(&first.id).await;
    assert_eq!(done.phase(), Phase::Succeeded, "{}", done.message);
    let t = types(&events);
    let restarted = t
        .iter()
        .position(|t| *t == EventType::Restarted)
        .expect("RESTARTED");
    assert_eq!(events[restarted].canary_weight, 0);
    let steps_after: Vec<u32> = events[restarted..]
        .iter()
        .filter(|e| e.r#type() == EventType::WeightChanged)
        .map(|e| e.canary_weight)
        .collect();
    assert_eq!(steps_after, vec![25, 50, 75, 100]);
    assert_eq!(
        image(&h.deployment(GA).await),
        "ghcr.io/stefanprodan/podinfo:6.5.0"
    );

    // Promoted: GA runs the canary's revision, so nothing new starts.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(rollouts(&mut h).await.len(), 1);
}
