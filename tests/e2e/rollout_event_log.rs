//! The event log keeps a rollout's newest events only (its record is one custom resource):
//! a watch from a dropped sequence is OUT_OF_RANGE naming the oldest kept, a watch from 0
//! replays the kept events, and sequences are never renumbered.

use std::time::Duration;

use crate::common::{Harness, Options};
use steerer::v1::{Analysis, Phase, WatchRolloutRequest};
use tonic::Code;

const KEPT: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watching_from_a_dropped_event_is_out_of_range_and_names_the_oldest_kept() {
    let mut options = Options::default();
    options.server.event_limit = KEPT;
    let mut h = Harness::start_with(options).await;
    let started = h
        .start_rollout(h.request(Analysis {
            step_weight: Some(50),
            ..Default::default()
        }))
        .await;
    let done = h.wait_for_end(&started.id, Duration::from_secs(60)).await;
    assert_eq!(done.phase(), Phase::Succeeded, "{}", done.message);
    let last = done.last_sequence;
    assert!(last > KEPT as u64, "only {last} events");
    let oldest = last - KEPT as u64 + 1;

    let kept = h
        .watch_to_end(&started.id, 0, Duration::from_secs(10))
        .await;
    let sequences: Vec<u64> = kept.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, (oldest..=last).collect::<Vec<_>>());

    for from in [1, oldest - 1] {
        let status = h
            .client
            .watch_rollout(WatchRolloutRequest {
                id: started.id.clone(),
                from_sequence: from,
            })
            .await
            .err()
            .unwrap_or_else(|| panic!("watch from {from} was accepted"));
        assert_eq!(status.code(), Code::OutOfRange, "{status}");
        assert!(
            status
                .message()
                .contains(&format!("oldest available is sequence {oldest}")),
            "{}",
            status.message()
        );
    }

    // A restarted server reads the same kept events back from the store.
    h.stop_and_restart().await;
    let again = h
        .watch_to_end(&started.id, oldest, Duration::from_secs(10))
        .await;
    assert_eq!(again, kept);
}
