//! Every rollout ends, and ends telling the truth: an abort during promotion is refused (GA
//! already rolls out the canary's release), a deleted route ends the rollout FAILED instead
//! of retrying forever, the canary keeps its pods for the scale-down delay after traffic
//! leaves it (across a server restart, and never while the route still sends it traffic), and
//! a route edited by hand halts the rollout until an operator resumes (adopting the edit) or
//! aborts. The route is the harness's (`STEERER_ROUTE`): a VirtualService, HTTPRoute or
//! GRPCRoute.

use std::collections::HashMap;
use std::time::Duration;

use crate::common::{
    CANARY, Cluster, GA, Harness, Options, events_until, image, replicas, routes, split_pointer,
};
use kube::api::{DeleteParams, DynamicObject, PostParams};
use serde_json::json;
use steerer::v1::{
    AbortRolloutRequest, Analysis, EventType, PauseRolloutRequest, Phase, ResumeRolloutRequest,
    RolloutEvent,
};
use steerer_sim::Timing;

const NEW_IMAGE: &str = "ghcr.io/stefanprodan/podinfo:6.5.0";

fn seconds(seconds: i64) -> prost_types::Duration {
    prost_types::Duration { seconds, nanos: 0 }
}

/// The time from event `a` to event `b`.
fn between(a: &RolloutEvent, b: &RolloutEvent) -> Duration {
    let nanos = |e: &RolloutEvent| {
        let t = e.time.unwrap();
        i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos)
    };
    Duration::from_nanos(u64::try_from(nanos(b) - nanos(a)).unwrap())
}

async fn abort(
    h: &mut Harness,
    id: &str,
    reason: &str,
) -> Result<steerer::v1::Rollout, tonic::Status> {
    h.client
        .abort_rollout(AbortRolloutRequest {
            id: id.into(),
            reason: reason.into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_during_promotion_is_refused_and_the_release_finishes_promoting() {
    // GA's pods take a while to start, so its rolling update is well under way when the
    // abort arrives.
    let mut h = Harness::start_with(Options {
        timing: Timing {
            pod_startup: Duration::from_millis(1500),
            ..Timing::fast()
        },
        ..Options::default()
    })
    .await;
    let mut request = h.request(Analysis {
        step_weight: Some(100),
        ..Default::default()
    });
    request.images = HashMap::from([("podinfo".to_owned(), NEW_IMAGE.to_owned())]);
    let started = h.start_rollout(request).await;
    events_until(
        &mut h.client,
        &started.id,
        0,
        Duration::from_secs(60),
        |e| e.r#type() == EventType::Promoting,
    )
    .await;

    let refused = abort(&mut h, &started.id, "cancel the release")
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert!(
        refused
            .message()
            .contains("already rolling out the canary's pod template")
            && refused.message().contains("will finish promoting"),
        "{}",
        refused.message()
    );

    let done = h.wait_for_end(&started.id, Duration::from_secs(60)).await;
    assert_eq!(done.phase(), Phase::Succeeded, "{}", done.message);
    assert_eq!(image(&h.deployment(GA).await), NEW_IMAGE);
    assert_eq!(h.weights().await, (100, 0));
    assert_eq!(replicas(&h.deployment(CANARY).await), 0);
    let events = h.watch_to_end(&started.id, 0, Duration::from_secs(5)).await;
    let t = crate::common::types(&events);
    assert!(
        !t.contains(&EventType::RollingBack) && !t.contains(&EventType::Aborted),
        "{t:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_route_ends_rollouts_failed_in_bounded_time_and_frees_the_target() {
    let mut h = Harness::start().await;
    let analysis = || Analysis {
        step_weight: Some(25),
        progress_deadline: Some(seconds(3)),
        ..Default::default()
    };
    let original = h.route_object().await;
    let route = format!("{} test/podinfo", h.route.name());

    // A paused rollout whose route is deleted: the abort answers at once, FAILED,
    // saying what it could not undo.
    let first = h.start_rollout(h.request(analysis())).await;
    h.wait_until(&first.id, Duration::from_secs(30), |r| {
        r.canary_weight >= 25
    })
    .await;
    h.client
        .pause_rollout(PauseRolloutRequest {
            id: first.id.clone(),
            reason: String::new(),
        })
        .await
        .unwrap();
    routes(&h.kube, h.route)
        .delete(GA, &DeleteParams::default())
        .await
        .unwrap();
    let answer = tokio::time::timeout(
        Duration::from_secs(5),
        abort(&mut h, &first.id, "cancel the release"),
    )
    .await
    .expect("the abort answered within 5 s")
    .unwrap();
    assert_eq!(answer.phase(), Phase::Failed, "{}", answer.message);
    // Either steerer's watch cache already saw the deletion, or the abort's route write was
    // answered 404 (on a real API server the watch event may come after the abort): both end
    // FAILED, keep the operator's reason, name the route and say what stays.
    let message = &answer.message;
    for part in [
        "aborted: cancel the release",
        &route,
        "canary podinfo-canary keeps its",
    ] {
        assert!(message.contains(part), "{part:?}: {message}");
    }
    assert!(
        message.contains("no longer exists, so traffic could not be routed back to GA")
            || message.contains(&format!(
                "could not route all traffic to GA: {route} not found"
            )),
        "{message}"
    );
    assert!(replicas(&h.deployment(CANARY).await) > 0);

    // Put it back, and start again: the target is free.
    let mut recreated = original.clone();
    for field in [
        "resourceVersion",
        "uid",
        "creationTimestamp",
        "managedFields",
        "generation",
    ] {
        recreated["metadata"].as_object_mut().unwrap().remove(field);
    }
    let split = recreated.pointer_mut(split_pointer(h.route)).unwrap();
    split[0]["weight"] = json!(100);
    split[1]["weight"] = json!(0);
    let recreated: DynamicObject = serde_json::from_value(recreated).unwrap();
    routes(&h.kube, h.route)
        .create(&PostParams::default(), &recreated)
        .await
        .unwrap();
    let second = h.start_rollout(h.request(analysis())).await;
    h.wait_until(&second.id, Duration::from_secs(30), |r| {
        r.canary_weight >= 25
    })
    .await;

    // A progressing rollout whose route is deleted ends FAILED by itself, without
    // retrying writes to the missing object.
    // The simulator counts the requests it serves; a real API server's count would come from
    // its audit log.
    let world = match &h.cluster {
        Cluster::Sim(sim) => Some(sim.world().clone()),
        Cluster::Real { .. } => None,
    };
    routes(&h.kube, h.route)
        .delete(GA, &DeleteParams::default())
        .await
        .unwrap();
    if let Some(world) = &world {
        world.faults.reset_counts();
    }
    let done = h.wait_for_end(&second.id, Duration::from_secs(10)).await;
    assert_eq!(done.phase(), Phase::Failed, "{}", done.message);
    assert!(
        done.message.contains(&format!("{route} no longer exists")),
        "{}",
        done.message
    );
    // At most the one step that may have been under way when it went.
    if let Some(world) = &world {
        let patches = world.faults.count("patch", h.route_plural());
        assert!(
            patches <= 1,
            "{patches} weight patches to a missing {route}"
        );
    }
    let again = abort(&mut h, &second.id, "").await.unwrap();
    assert_eq!(again.last_sequence, done.last_sequence);

    // Nothing holds the target: a new start is judged on its own merits.
    let refused = h
        .client
        .start_rollout(h.request(analysis()))
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert!(
        refused.message().contains("no route in namespace test"),
        "{}",
        refused.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_canary_keeps_its_pods_for_the_scale_down_delay_even_across_a_restart() {
    const DELAY: Duration = Duration::from_secs(5);
    let mut options = Options::default();
    options.server.scale_down_delay = DELAY;
    let mut h = Harness::start_with(options).await;
    let mut request = h.request(Analysis {
        step_weight: Some(50),
        ..Default::default()
    });
    request.images = HashMap::from([("podinfo".to_owned(), NEW_IMAGE.to_owned())]);
    let started = h.start_rollout(request).await;
    let before = events_until(
        &mut h.client,
        &started.id,
        0,
        Duration::from_secs(60),
        |e| e.r#type() == EventType::Promoted,
    )
    .await;
    let promoted = before.last().unwrap().clone();
    assert_eq!(promoted.phase(), Phase::Promoting);
    assert!(
        promoted.message.contains("scaled down in 5s"),
        "{}",
        promoted.message
    );
    // Traffic is on GA; the canary still has its pods.
    assert_eq!(h.weights().await, (100, 0));
    assert!(replicas(&h.deployment(CANARY).await) > 0);

    // The server dies during the wait; the next one waits out the rest of it.
    h.crash_and_restart().await;
    let after = h
        .watch_to_end(&started.id, promoted.sequence + 1, Duration::from_secs(30))
        .await;
    let succeeded = after.last().unwrap();
    assert_eq!(succeeded.r#type(), EventType::Succeeded, "{after:?}");
    let waited = between(&promoted, succeeded);
    assert!(
        waited >= DELAY,
        "scaled down {waited:?} after traffic left the canary"
    );
    assert_eq!(replicas(&h.deployment(CANARY).await), 0);
    assert_eq!(image(&h.deployment(GA).await), NEW_IMAGE);
    let done = h.get(&started.id).await;
    assert_eq!(done.phase(), Phase::Succeeded, "{}", done.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_canary_is_never_scaled_down_while_the_route_sends_it_traffic() {
    const DELAY: Duration = Duration::from_secs(4);
    let mut options = Options::default();
    options.server.scale_down_delay = DELAY;
    let mut h = Harness::start_with(options).await;
    let started = h
        .start_rollout(h.request(Analysis {
            step_weight: Some(20),
            ..Default::default()
        }))
        .await;
    h.wait_until(&started.id, Duration::from_secs(30), |r| {
        r.canary_weight >= 20
    })
    .await;

    // The abort answers once traffic is on GA; the canary waits for the delay.
    let answer = abort(&mut h, &started.id, "bad dashboard").await.unwrap();
    assert_eq!(answer.phase(), Phase::RollingBack, "{}", answer.message);
    assert_eq!(answer.canary_weight, 0);
    assert_eq!(h.weights().await, (100, 0));
    assert!(replicas(&h.deployment(CANARY).await) > 0);

    // Someone sends traffic to the canary again during the wait.
    h.set_weights_by_hand(50, 50).await;
    let events = events_until(
        &mut h.client,
        &started.id,
        answer.last_sequence + 1,
        Duration::from_secs(10),
        |e| e.r#type() == EventType::Aborted,
    )
    .await;
    let rerouted = events
        .iter()
        .find(|e| e.r#type() == EventType::WeightChanged)
        .expect("the hand-made route to the canary was undone");
    assert!(
        rerouted.message.contains("routed 50% to the canary again"),
        "{}",
        rerouted.message
    );
    let aborted = events.last().unwrap();
    let waited = between(rerouted, aborted);
    assert!(
        waited >= DELAY,
        "scaled down {waited:?} after traffic left the canary again"
    );
    assert_eq!(h.weights().await, (100, 0));
    assert_eq!(replicas(&h.deployment(CANARY).await), 0);
    assert_eq!(h.get(&started.id).await.phase(), Phase::Aborted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_edited_route_halts_the_rollout_until_resume_adopts_the_edit() {
    let mut h = Harness::start().await;
    let started = h
        .start_rollout(h.request(Analysis {
            step_weight: Some(20),
            ..Default::default()
        }))
        .await;
    // The next step needs a whole metrics window of traffic at 20%: time to edit.
    h.wait_until(&started.id, Duration::from_secs(30), |r| {
        r.canary_weight == 20
    })
    .await;
    h.set_weights_by_hand(55, 45).await;

    let paused = h
        .wait_for_phase(&started.id, Phase::Paused, Duration::from_secs(10))
        .await;
    assert!(
        paused.message.contains("was changed outside steerer")
            && paused.message.contains("canary weight 20% -> 45%"),
        "{}",
        paused.message
    );
    assert_eq!(paused.canary_weight, 20);
    assert_eq!(
        h.weights().await,
        (55, 45),
        "steerer left the edit as it is"
    );

    let resumed = h
        .client
        .resume_rollout(ResumeRolloutRequest {
            id: started.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resumed.phase(), Phase::Progressing);
    assert_eq!(resumed.canary_weight, 45);
    assert!(
        resumed.message.contains("is adopted"),
        "{}",
        resumed.message
    );

    let done = h.wait_for_end(&started.id, Duration::from_secs(60)).await;
    assert_eq!(done.phase(), Phase::Succeeded, "{}", done.message);
    let events = h.watch_to_end(&started.id, 0, Duration::from_secs(5)).await;
    let resumed_at = events
        .iter()
        .position(|e| e.r#type() == EventType::Resumed)
        .unwrap();
    let steps: Vec<u32> = events[resumed_at..]
        .iter()
        .filter(|e| e.r#type() == EventType::WeightChanged)
        .map(|e| e.canary_weight)
        .collect();
    assert_eq!(steps, [65, 85, 100], "carried on from the adopted 45%");
    assert_eq!(h.weights().await, (100, 0));
}
