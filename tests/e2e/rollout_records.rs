//! Rollout records as `rollouts.steerer.dev` custom resources: what kubectl shows, paging and
//! filters of ListRollouts, pruning of finished records (and reads of finished rollouts from
//! the store once they left memory), and records of earlier versions (ConfigMaps) carried
//! over at start-up.

use std::path::Path;
use std::time::Duration;

use crate::common::{GA, Harness, NS, Options, is_terminal};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, DynamicObject, PostParams};
use steerer::v1::{
    AbortRolloutRequest, Analysis, GetRolloutRequest, ListRolloutsRequest, Phase, Rollout,
};

fn seconds(seconds: i64) -> prost_types::Duration {
    prost_types::Duration { seconds, nanos: 0 }
}

fn records(h: &Harness) -> Api<DynamicObject> {
    Api::namespaced_with(
        h.kube.clone(),
        NS,
        &steerer_server::store::crd::api_resource(),
    )
}

/// Starts a rollout and aborts it at once; returns it once it has ended.
async fn start_and_abort(h: &mut Harness, request_id: &str) -> Rollout {
    let mut request = h.request(Analysis {
        interval: Some(seconds(30)),
        ..Default::default()
    });
    request.request_id = request_id.into();
    let started = h.start_rollout(request).await;
    h.client
        .abort_rollout(AbortRolloutRequest {
            id: started.id.clone(),
            reason: format!("release {request_id} withdrawn"),
        })
        .await
        .unwrap();
    h.wait_for_end(&started.id, Duration::from_secs(20)).await
}

async fn list(h: &mut Harness, request: ListRolloutsRequest) -> (Vec<Rollout>, String) {
    let page = h.client.list_rollouts(request).await.unwrap().into_inner();
    (page.rollouts, page.next_page_token)
}

async fn kubectl(h: &Harness, dir: &Path, args: &[&str]) -> String {
    let kubeconfig = dir.join("kubeconfig");
    h.cluster.write_kubeconfig(&kubeconfig);
    let kubectl = std::env::var_os("KUBECTL").unwrap_or_else(|| "kubectl".into());
    let output = tokio::process::Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(args)
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_pages_newest_first_filters_and_kubectl_shows_the_records() {
    let mut h = Harness::start().await;
    let mut ended = Vec::new();
    for n in 0..5 {
        ended.push(start_and_abort(&mut h, &format!("release-{n}")).await);
    }
    let newest_first: Vec<String> = ended.iter().rev().map(|r| r.id.clone()).collect();

    // Pages of two: 2 + 2 + 1, newest first, each rollout once.
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let (rollouts, next) = list(
            &mut h,
            ListRolloutsRequest {
                namespace: NS.into(),
                page_size: 2,
                page_token: token.clone(),
                ..Default::default()
            },
        )
        .await;
        pages += 1;
        assert!(rollouts.len() <= 2);
        seen.extend(rollouts.into_iter().map(|r| r.id));
        if next.is_empty() {
            break;
        }
        token = next;
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, newest_first);

    // Filters: by target, by phase.
    let (aborted, _) = list(
        &mut h,
        ListRolloutsRequest {
            target: GA.into(),
            phases: vec![Phase::Aborted as i32],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(aborted.len(), 5);
    let (none, next) = list(
        &mut h,
        ListRolloutsRequest {
            phases: vec![Phase::Succeeded as i32],
            ..Default::default()
        },
    )
    .await;
    assert!(none.is_empty() && next.is_empty());
    let (other, _) = list(
        &mut h,
        ListRolloutsRequest {
            target: "another".into(),
            ..Default::default()
        },
    )
    .await;
    assert!(other.is_empty());

    // Bad paging input is refused.
    for bad in [
        ListRolloutsRequest {
            page_size: 1001,
            ..Default::default()
        },
        ListRolloutsRequest {
            page_token: "not-a-token".into(),
            ..Default::default()
        },
        ListRolloutsRequest {
            phases: vec![42],
            ..Default::default()
        },
    ] {
        let refused = h.client.list_rollouts(bad).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    }

    // The records, as an operator sees them.
    let dir = tempfile::tempdir().unwrap();
    let table = kubectl(&h, dir.path(), &["get", "rollouts.steerer.dev", "-A"]).await;
    let header = table.lines().next().unwrap();
    for column in [
        "NAMESPACE",
        "NAME",
        "TARGET",
        "PHASE",
        "WEIGHT",
        "SUCCESS",
        "AGE",
    ] {
        assert!(header.contains(column), "{table}");
    }
    for rollout in &ended {
        let line = table
            .lines()
            .find(|l| l.contains(&rollout.id))
            .unwrap_or_else(|| panic!("{} missing from\n{table}", rollout.id));
        assert!(line.contains(GA) && line.contains("Aborted"), "{line}");
    }
    let phase = kubectl(
        &h,
        dir.path(),
        &[
            "get",
            "rollouts.steerer.dev",
            "-n",
            NS,
            &ended[0].id,
            "-o",
            "jsonpath={.status.phase} {.status.canaryWeight} {.spec.target}",
        ],
    )
    .await;
    assert_eq!(phase, format!("Aborted 0 {GA}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_records_past_the_retention_are_pruned_and_kept_ones_are_read_from_the_store() {
    let mut options = Options::default();
    options.server.retain_per_target = 2;
    let mut h = Harness::start_with(options).await;
    let mut ended = Vec::new();
    for n in 0..4 {
        ended.push(start_and_abort(&mut h, &format!("release-{n}")).await);
    }
    // The newest two stay; pruning runs as each rollout finishes.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let stored = loop {
        let mut names: Vec<String> = records(&h)
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|o| o.metadata.name.unwrap())
            .collect();
        names.sort();
        if names.len() == 2 || tokio::time::Instant::now() > deadline {
            break names;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut newest: Vec<String> = ended[2..].iter().map(|r| r.id.clone()).collect();
    newest.sort();
    assert_eq!(stored, newest);

    // A pruned rollout is gone; a kept one is read back from its record, events and all.
    let gone = h
        .client
        .get_rollout(GetRolloutRequest {
            id: ended[0].id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), tonic::Code::NotFound, "{gone:?}");
    let kept = h.get(&ended[3].id).await;
    assert_eq!(kept.phase(), Phase::Aborted);
    assert_eq!(kept.last_sequence, ended[3].last_sequence);
    let events = h
        .watch_to_end(&ended[3].id, 0, Duration::from_secs(5))
        .await;
    let sequences: Vec<u64> = events.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, (1..=kept.last_sequence).collect::<Vec<_>>());
    assert!(is_terminal(events.last().unwrap().phase()));
    // From the middle, too.
    let tail = h
        .watch_to_end(&ended[3].id, 2, Duration::from_secs(5))
        .await;
    assert_eq!(tail.first().unwrap().sequence, 2);
    assert_eq!(tail.len() as u64, kept.last_sequence - 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unfinished_rollout_recorded_in_a_configmap_by_an_earlier_version_is_carried_over_and_finishes()
 {
    let mut h = Harness::start().await;
    let started = h
        .start_rollout(h.request(Analysis {
            step_weight: Some(25),
            interval: Some(seconds(1)),
            ..Default::default()
        }))
        .await;
    let midway = h
        .wait_until(&started.id, Duration::from_secs(30), |r| {
            r.canary_weight >= 25
        })
        .await;
    assert_eq!(midway.phase(), Phase::Progressing);
    if let Some(server) = h.server.take() {
        server.kill().await;
    }
    // Turn its record into the ConfigMap an earlier version would have written.
    let record = records(&h).get(&started.id).await.unwrap();
    let rollout: steerer_server::domain::Rollout =
        serde_json::from_value(record.data["status"]["state"].clone()).unwrap();
    let events: Vec<steerer_server::domain::RolloutEvent> =
        serde_json::from_value(record.data["status"]["events"].clone()).unwrap();
    let legacy = steerer_server::store::configmap::legacy_configmap(&rollout, &events).unwrap();
    let configmaps = Api::<ConfigMap>::namespaced(h.kube.clone(), NS);
    configmaps
        .create(&PostParams::default(), &legacy)
        .await
        .unwrap();
    records(&h)
        .delete(&started.id, &DeleteParams::default())
        .await
        .unwrap();

    h.restart().await;
    let done = h.wait_for_end(&started.id, Duration::from_secs(60)).await;
    assert_eq!(done.phase(), Phase::Succeeded, "{}", done.message);
    let events = h.watch_to_end(&started.id, 0, Duration::from_secs(5)).await;
    let sequences: Vec<u64> = events.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, (1..=done.last_sequence).collect::<Vec<_>>());
    assert!(
        configmaps
            .get_opt(&format!("steerer-rollout-{}", started.id))
            .await
            .unwrap()
            .is_none(),
        "the ConfigMap record was deleted once carried over"
    );
    assert!(records(&h).get_opt(&started.id).await.unwrap().is_some());
}
