//! Durability: the server is killed mid-rollout and started again. The rollout finishes from
//! its step and weight, and a watcher resumed from its last sequence sees every event exactly
//! once, and the route comes back as the user wrote it but for its two weights.

use std::time::Duration;

use crate::common::{Harness, events_until};
use steerer::v1::{Analysis, EventType, Phase};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_server_resumes_the_rollout_and_the_watch_has_no_gap_or_duplicate() {
    let mut h = Harness::start().await;
    let route_before = h.route_but_weights().await;
    let started = h
        .start_rollout(h.request(Analysis {
            step_weight: Some(10),
            ..Default::default()
        }))
        .await;
    let before = events_until(
        &mut h.client,
        &started.id,
        0,
        Duration::from_secs(30),
        |e| e.r#type() == EventType::WeightChanged && e.canary_weight >= 30,
    )
    .await;
    let last_seen = before.last().unwrap().sequence;

    h.crash_and_restart().await;
    let resumed = h.get(&started.id).await;
    assert!(!matches!(resumed.phase(), Phase::Pending));
    assert!(
        resumed.canary_weight >= 30,
        "resumed at weight {}",
        resumed.canary_weight
    );
    let (_, canary_weight) = h.weights().await;
    assert!(
        canary_weight >= 30,
        "traffic kept on the canary across the restart"
    );

    let after = h
        .watch_to_end(&started.id, last_seen + 1, Duration::from_secs(60))
        .await;
    let done = h.get(&started.id).await;
    assert_eq!(done.phase(), Phase::Succeeded, "{}", done.message);

    let all: Vec<u64> = before.iter().chain(&after).map(|e| e.sequence).collect();
    assert_eq!(all, (1..=done.last_sequence).collect::<Vec<_>>());

    let steps: Vec<u32> = before
        .iter()
        .chain(&after)
        .filter(|e| e.r#type() == EventType::WeightChanged)
        .map(|e| e.canary_weight)
        .collect();
    let mut sorted = steps.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(
        steps, sorted,
        "weights only ever went up, one step at a time"
    );
    assert_eq!(*steps.last().unwrap(), 100);
    assert_eq!(h.weights().await, (100, 0));
    assert_eq!(
        h.route_but_weights().await,
        route_before,
        "the route changes only in its two weights"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_stop_ends_open_watches_and_a_new_server_carries_on() {
    let mut h = Harness::start().await;
    let started = h
        .start_rollout(h.request(Analysis {
            step_weight: Some(25),
            ..Default::default()
        }))
        .await;
    h.wait_until(&started.id, Duration::from_secs(30), |r| {
        r.canary_weight >= 25
    })
    .await;
    let mut watcher = h.client.clone();
    let id = started.id.clone();
    let open = tokio::spawn(async move {
        crate::common::collect_events(&mut watcher, &id, 0, Duration::from_secs(20)).await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    h.stop_and_restart().await;
    let cut = open.await.unwrap();
    assert!(!cut.is_empty());
    assert!(cut.windows(2).all(|w| w[1].sequence == w[0].sequence + 1));

    let rest = h
        .watch_to_end(
            &started.id,
            cut.last().unwrap().sequence + 1,
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(
        rest.first().unwrap().sequence,
        cut.last().unwrap().sequence + 1
    );
    let done = h.get(&started.id).await;
    assert_eq!(done.phase(), Phase::Succeeded, "{}", done.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_open_on_a_killed_server_breaks_instead_of_hanging() {
    let mut h = Harness::start().await;
    let started = h
        .start_rollout(h.request(Analysis {
            step_weight: Some(10),
            ..Default::default()
        }))
        .await;
    let mut stream = h
        .client
        .watch_rollout(steerer::v1::WatchRolloutRequest {
            id: started.id.clone(),
            from_sequence: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.sequence, 1);

    h.server.take().unwrap().kill().await;
    // A dead process closes its sockets: the stream fails (or ends) instead of waiting for
    // events that will never come.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, stream.message()).await {
            Ok(Ok(Some(_))) => continue,
            Ok(Ok(None)) | Ok(Err(_)) => break,
            Err(_) => panic!("the watch on a killed server is still open after 5 s"),
        }
    }
}
