//! The supervisor and drivers over in-memory fakes: whole rollouts, the API calls they make,
//! restarts, and rejected starts that change nothing.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::domain::{EventKind, Phase, Rollout, RouteRef, Sample, Strategy};
use crate::events::Hub;
use crate::metrics::fake::FakeMetrics;
use crate::router::fake::FakeRouter;
use crate::store::memory::MemoryStore;
use crate::webhooks::fake::FakeWebhooks;
use crate::workloads::fake::FakeWorkloads;

struct World {
    workloads: Arc<FakeWorkloads>,
    router: Arc<FakeRouter>,
    metrics: Arc<FakeMetrics>,
    store: Arc<MemoryStore>,
    webhooks: Arc<FakeWebhooks>,
}

impl World {
    fn new() -> Self {
        let workloads = Arc::new(FakeWorkloads::default());
        workloads.put(FakeWorkloads::settled("test", "podinfo", 2, "podinfo:1"));
        let mut canary = FakeWorkloads::settled("test", "podinfo-canary", 0, "podinfo:1");
        canary.spec_replicas = 0;
        workloads.put(canary);
        let router = Arc::new(FakeRouter::default());
        router.add("test", "podinfo", "podinfo", "podinfo-canary", 0);
        let metrics = Arc::new(FakeMetrics::default());
        metrics.set("test", "podinfo-canary", FakeMetrics::healthy(100.0, 50.0));
        Self {
            workloads,
            router,
            metrics,
            store: Arc::new(MemoryStore::default()),
            webhooks: Arc::new(FakeWebhooks::default()),
        }
    }

    fn supervisor(&self) -> Supervisor {
        let ports = Ports {
            workloads: self.workloads.clone(),
            router: self.router.clone(),
            metrics: self.metrics.clone(),
            store: self.store.clone(),
            webhooks: self.webhooks.clone(),
            hub: Hub::new(),
            telemetry: Default::default(),
            changes: None,
        };
        Supervisor::new(
            ports,
            EngineConfig {
                // As long as the interval: a revision is checked one interval after its
                // first step, as in production with the window at its minimum.
                metrics_window: Duration::from_millis(20),
                scale_down_delay: Duration::ZERO,
                ..EngineConfig::default()
            },
        )
    }
}

fn fast() -> crate::domain::AnalysisSettings {
    crate::domain::AnalysisSettings {
        strategy: Strategy::Canary {
            step_weight: 10,
            max_weight: 100,
        },
        interval: Duration::from_millis(20),
        success_rate_threshold: 99.0,
        max_failed_checks: 2,
        progress_deadline: Duration::from_secs(5),
        min_request_rate: 1.0,
        ..Default::default()
    }
}

fn request() -> StartRequest {
    StartRequest {
        namespace: "test".into(),
        target: "podinfo".into(),
        images: [("app".to_owned(), "podinfo:2".to_owned())].into(),
        analysis: fast(),
        ..Default::default()
    }
}

/// Every rollout the supervisor lists (one large page).
async fn all(s: &Supervisor) -> Vec<Rollout> {
    let query = ListQuery {
        page_size: 1000,
        ..Default::default()
    };
    s.list(&query).await.unwrap().rollouts
}

async fn wait_for(s: &Supervisor, id: &str, f: impl Fn(&Rollout) -> bool) -> Rollout {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = s.get(id).await.unwrap();
        if f(&r) {
            return r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out in phase {:?} at weight {}: {}",
            r.phase,
            r.canary_weight,
            r.message
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn healthy_canary_is_promoted_with_one_weight_write_per_step() {
    let w = World::new();
    let s = w.supervisor();
    let r = s.start(request()).await.unwrap();
    let done = wait_for(&s, &r.id, |r| r.phase.is_terminal()).await;
    assert_eq!(done.phase, Phase::Succeeded, "{}", done.message);
    assert_eq!(
        w.router.writes(),
        vec![10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 0]
    );
    let ga = w.workloads.deployment_view("test", "podinfo");
    assert_eq!(ga.images()["app"], "podinfo:2");
    assert_eq!(ga.selector["app"], "podinfo");
    assert_eq!(ga.template["metadata"]["labels"]["app"], "podinfo");
    let canary = w.workloads.deployment_view("test", "podinfo-canary");
    assert_eq!(canary.spec_replicas, 0);
    assert_eq!(
        w.workloads.calls(),
        vec![
            "set-images test/podinfo-canary",
            "scale test/podinfo-canary 2",
            "replace-template test/podinfo",
            "scale test/podinfo-canary 0",
        ]
    );
    let (stored, events) = w.store.get(&r.id).unwrap();
    assert_eq!(stored, done);
    let sequences: Vec<u64> = events.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, (1..=done.last_sequence).collect::<Vec<_>>());
    assert_eq!(events.first().unwrap().kind, EventKind::Started);
    assert_eq!(events.last().unwrap().kind, EventKind::Succeeded);
    // One state write per decision that changed something: never more than the events.
    assert!(w.store.writes() <= events.len());
    s.shutdown().await;
}

#[tokio::test]
async fn a_rollout_is_judged_by_the_observer_it_names_and_records_it() {
    let w = World::new();
    let s = w.supervisor();
    let named = StartRequest {
        observer: Some("linkerd".into()),
        ..request()
    };
    let r = s.start(named).await.unwrap();
    assert_eq!(r.observer, "linkerd");
    let done = wait_for(&s, &r.id, |r| r.phase.is_terminal()).await;
    assert_eq!(done.phase, Phase::Succeeded, "{}", done.message);
    assert_eq!(w.store.get(&r.id).unwrap().0.observer, "linkerd");
    let asked = w.metrics.observers();
    assert!(asked.len() > 1, "{asked:?}");
    assert!(asked.iter().all(|o| o == "linkerd"), "{asked:?}");
    s.shutdown().await;
}

#[tokio::test]
async fn a_rollout_naming_no_observer_is_judged_by_the_servers_default() {
    let w = World::new();
    let s = w.supervisor();
    let r = s.start(request()).await.unwrap();
    assert_eq!(r.observer, "istio");
    let done = wait_for(&s, &r.id, |r| r.phase.is_terminal()).await;
    assert_eq!(done.observer, "istio");
    let asked = w.metrics.observers();
    assert!(asked.len() > 1, "{asked:?}");
    assert!(asked.iter().all(|o| o == "istio"), "{asked:?}");
    s.shutdown().await;
}

#[tokio::test]
async fn failing_canary_is_rolled_back_and_ga_is_untouched() {
    let w = World::new();
    w.metrics.set(
        "test",
        "podinfo-canary",
        Ok(Sample {
            success_rate: Some(80.0),
            request_rate: Some(50.0),
            latency_p99_ms: None,
        }),
    );
    let s = w.supervisor();
    let r = s.start(request()).await.unwrap();
    let done = wait_for(&s, &r.id, |r| r.phase.is_terminal()).await;
    assert_eq!(done.phase, Phase::RolledBack);
    assert_eq!(w.router.writes(), vec![10, 0]);
    assert_eq!(w.router.weight("test", "podinfo"), Some(0));
    let ga = w.workloads.deployment_view("test", "podinfo");
    assert_eq!(ga.images()["app"], "podinfo:1");
    assert!(
        !w.workloads
            .calls()
            .iter()
            .any(|c| c.contains("test/podinfo "))
    );
    assert_eq!(done.failed_checks, 2);
    s.shutdown().await;
}

#[tokio::test]
async fn restarted_supervisor_resumes_at_its_weight_and_keeps_the_sequence() {
    let w = World::new();
    let s = w.supervisor();
    let mut req = request();
    req.analysis.interval = Duration::from_millis(50);
    let r = s.start(req).await.unwrap();
    wait_for(&s, &r.id, |r| r.canary_weight >= 30).await;
    s.shutdown().await;
    let (stopped, _) = w.store.get(&r.id).unwrap();
    assert!(!stopped.phase.is_terminal());
    let writes_before = w.router.writes().len();

    let s2 = w.supervisor();
    assert_eq!(s2.restore().await.unwrap(), 1);
    let mut watch = s2
        .hub()
        .subscribe(&r.id, stopped.last_sequence + 1)
        .unwrap();
    let done = wait_for(&s2, &r.id, |r| r.phase.is_terminal()).await;
    assert_eq!(done.phase, Phase::Succeeded);
    let mut expected = stopped.last_sequence + 1;
    while let Some(e) = watch.next().await {
        assert_eq!(e.unwrap().sequence, expected);
        expected += 1;
    }
    assert_eq!(expected, done.last_sequence + 1);
    // The weight continued from where it stopped, never back to an earlier step.
    let after: Vec<u32> = w.router.writes()[writes_before..].to_vec();
    assert!(
        after[0] > stopped.canary_weight || after[0] == 0,
        "{after:?}"
    );
    s2.shutdown().await;
}

#[tokio::test]
async fn a_step_applied_but_not_recorded_is_recorded_as_it_was_applied() {
    let w = World::new();
    let s = w.supervisor();
    let mut req = request();
    req.analysis.interval = Duration::from_millis(100);
    let r = s.start(req).await.unwrap();
    let before = wait_for(&s, &r.id, |r| r.canary_weight >= 20).await;
    w.store.fail_writes(true);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let applied = loop {
        let weight = w.router.weight("test", "podinfo").unwrap();
        if weight > before.canary_weight {
            break weight;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no step was applied"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    // The evidence turns bad: deciding the step again would record a failed check at the
    // old weight while traffic sits at the new one.
    w.metrics
        .set("test", "podinfo-canary", FakeMetrics::healthy(50.0, 50.0));
    w.store.fail_writes(false);
    let done = wait_for(&s, &r.id, |r| r.phase.is_terminal()).await;
    assert_eq!(done.phase, Phase::RolledBack);
    let (_, events) = w.store.get(&r.id).unwrap();
    let sequences: Vec<u64> = events.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, (1..=done.last_sequence).collect::<Vec<_>>());
    let steps: Vec<u32> = events
        .iter()
        .filter(|e| e.kind == EventKind::WeightChanged)
        .map(|e| e.canary_weight)
        .collect();
    assert_eq!(steps.last(), Some(&applied), "{steps:?}");
    let writes = w.router.writes();
    assert_eq!(writes[writes.len() - 2..], [applied, 0], "{writes:?}");
    s.shutdown().await;
}

#[tokio::test]
async fn rejected_starts_change_nothing() {
    let w = World::new();
    let s = w.supervisor();
    let mut unknown = request();
    unknown.target = "missing".into();
    assert!(matches!(
        s.start(unknown).await,
        Err(EngineError::NotFound(m)) if m == "deployment test/missing not found"
    ));
    let mut no_container = request();
    no_container.images = [("sidecar".to_owned(), "x:1".to_owned())].into();
    assert!(matches!(
        s.start(no_container).await,
        Err(EngineError::Refused(m)) if m.contains("no container named sidecar")
    ));
    let mut wrong_vs = request();
    wrong_vs.route = Some(RouteRef::virtual_service("other"));
    assert!(matches!(
        s.start(wrong_vs).await,
        Err(EngineError::Route(
            crate::router::RouterError::NotFound { .. }
        ))
    ));
    assert_eq!(w.store.writes(), 0);
    assert!(w.router.writes().is_empty());
    assert!(w.workloads.calls().is_empty());
    assert!(all(&s).await.is_empty());
}

#[tokio::test]
async fn second_start_names_the_active_rollout_and_request_id_is_idempotent() {
    let w = World::new();
    let s = w.supervisor();
    let mut req = request();
    req.request_id = "ci-123".into();
    req.analysis.interval = Duration::from_secs(60);
    let first = s.start(req.clone()).await.unwrap();
    let again = s.start(req).await.unwrap();
    assert_eq!(first.id, again.id);
    let err = s.start(request()).await.unwrap_err();
    assert!(
        matches!(&err, EngineError::AlreadyActive(m) if m.contains(&first.id)),
        "{err:?}"
    );
    assert_eq!(all(&s).await.len(), 1);
    // The same key in another namespace is another request: it is judged on its own (there
    // is no such deployment there), never answered with this namespace's rollout.
    let mut elsewhere = request();
    elsewhere.namespace = "other".into();
    elsewhere.request_id = "ci-123".into();
    let err = s.start(elsewhere).await.unwrap_err();
    assert!(matches!(err, EngineError::NotFound(_)), "{err:?}");
    assert_eq!(all(&s).await.len(), 1);
    s.shutdown().await;
}

#[tokio::test]
async fn abort_returns_with_traffic_on_ga_and_is_idempotent() {
    let w = World::new();
    let s = w.supervisor();
    let mut req = request();
    req.analysis.interval = Duration::from_millis(100);
    let r = s.start(req).await.unwrap();
    wait_for(&s, &r.id, |r| r.canary_weight >= 20).await;
    let aborted = s
        .command(
            &r.id,
            Command::Abort {
                reason: "bad".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(aborted.phase, Phase::Aborted);
    assert_eq!(w.router.weight("test", "podinfo"), Some(0));
    assert_eq!(
        w.workloads
            .deployment_view("test", "podinfo-canary")
            .spec_replicas,
        0
    );
    let writes = w.store.writes();
    let again = s
        .command(
            &r.id,
            Command::Abort {
                reason: "again".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(again, aborted);
    assert_eq!(w.store.writes(), writes);
    s.shutdown().await;
}

#[tokio::test]
async fn store_failure_retries_the_step_without_moving_traffic_twice() {
    let w = World::new();
    let s = w.supervisor();
    let mut req = request();
    req.analysis.interval = Duration::from_millis(30);
    let r = s.start(req).await.unwrap();
    wait_for(&s, &r.id, |r| r.canary_weight >= 20).await;
    w.store.fail_writes(true);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stuck = s.get(&r.id).await.unwrap();
    w.store.fail_writes(false);
    let done = wait_for(&s, &r.id, |r| r.phase.is_terminal()).await;
    assert_eq!(done.phase, Phase::Succeeded);
    // Each step was decided several times while the store failed, yet traffic moved one
    // step at a time: absolute weights, never increments on top of an unrecorded step.
    assert_eq!(
        w.router.writes(),
        vec![10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 0]
    );
    assert!(stuck.canary_weight >= 20);
    s.shutdown().await;
}

#[test]
fn request_ids_map_to_stable_distinct_rollout_ids() {
    let a = supervisor::rollout_id_for_request("test", "pipeline-1");
    assert_eq!(a, supervisor::rollout_id_for_request("test", "pipeline-1"));
    assert_ne!(a, supervisor::rollout_id_for_request("test", "pipeline-2"));
    assert_ne!(a, supervisor::rollout_id_for_request("prod", "pipeline-1"));
    assert!(uuid::Uuid::parse_str(&a).is_ok(), "{a}");
    assert!(crate::store::configmap::configmap_name(&a).len() <= 63);
}

#[tokio::test]
async fn a_retried_start_whose_first_answer_was_lost_returns_the_stored_rollout() {
    let w = World::new();
    let s = w.supervisor();
    let mut req = request();
    req.request_id = "pipeline-4711".into();
    w.store.lose_create_answers(true);
    let lost = s.start(req.clone()).await.unwrap_err();
    assert!(matches!(lost, EngineError::Store(_)), "{lost:?}");
    assert_eq!(w.store.len(), 1, "the first create landed");
    assert!(s.active().is_empty(), "but the caller heard nothing");

    w.store.lose_create_answers(false);
    let retried = s.start(req.clone()).await.unwrap();
    assert_eq!(
        retried.id,
        supervisor::rollout_id_for_request("test", "pipeline-4711")
    );
    assert_eq!(w.store.len(), 1, "no second rollout");
    assert_eq!(s.start(req).await.unwrap().id, retried.id);
    let done = wait_for(&s, &retried.id, |r| r.phase.is_terminal()).await;
    assert_eq!(done.phase, Phase::Succeeded, "{}", done.message);
    let (_, events) = w.store.get(&retried.id).unwrap();
    let sequences: Vec<u64> = events.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, (1..=done.last_sequence).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_write_conflict_from_another_writer_reloads_the_stored_state_and_carries_on_from_it() {
    let w = World::new();
    let s = w.supervisor();
    let mut req = request();
    req.analysis.interval = Duration::from_millis(200);
    let r = s.start(req).await.unwrap();
    let running = wait_for(&s, &r.id, |r| r.phase == Phase::Progressing).await;

    // Another writer pauses the rollout behind this server's back.
    let (mut stored, mut events) = w.store.get(&r.id).unwrap();
    stored.last_sequence += 1;
    stored.phase = Phase::Paused;
    stored.paused_from = Some(Phase::Progressing);
    stored.message = "paused by another writer".into();
    let mut paused = events.last().unwrap().clone();
    paused.sequence = stored.last_sequence;
    paused.kind = EventKind::Paused;
    paused.phase = Phase::Paused;
    paused.message = "paused by another writer".into();
    events.push(paused);
    w.store.overwrite(&stored, &events);
    assert!(running.last_sequence < stored.last_sequence);

    let adopted = wait_for(&s, &r.id, |r| r.phase == Phase::Paused).await;
    assert_eq!(adopted.message, "paused by another writer");
    let seen: Vec<u64> = s
        .hub()
        .since(&r.id, 0)
        .unwrap()
        .iter()
        .map(|e| e.sequence)
        .collect();
    assert_eq!(seen, (1..=adopted.last_sequence).collect::<Vec<_>>());

    // It is still driven: a resume goes through and the rollout finishes.
    s.command(&r.id, Command::Resume).await.unwrap();
    let done = wait_for(&s, &r.id, |r| r.phase.is_terminal()).await;
    assert_eq!(done.phase, Phase::Succeeded, "{}", done.message);
    let (_, stored_events) = w.store.get(&r.id).unwrap();
    let sequences: Vec<u64> = stored_events.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, (1..=done.last_sequence).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_deleted_virtual_service_ends_the_rollout_failed_and_frees_the_target() {
    let w = World::new();
    let s = w.supervisor();
    let mut req = request();
    req.analysis.interval = Duration::from_millis(50);
    req.analysis.progress_deadline = Duration::from_millis(200);
    let r = s.start(req).await.unwrap();
    wait_for(&s, &r.id, |r| r.canary_weight >= 20).await;
    w.router.remove("test", "podinfo");
    let writes = w.router.writes();
    let done = wait_for(&s, &r.id, |r| r.phase.is_terminal()).await;
    assert_eq!(done.phase, Phase::Failed, "{}", done.message);
    assert!(
        done.message
            .contains("VirtualService test/podinfo no longer exists"),
        "{}",
        done.message
    );
    assert_eq!(w.router.writes(), writes, "no write to a missing object");
    // The canary keeps its pods: steerer cannot tell whether it still gets traffic.
    assert!(
        w.workloads
            .deployment_view("test", "podinfo-canary")
            .spec_replicas
            > 0
    );
    // The target is free again: a new start is judged on its own (no VirtualService now).
    assert!(matches!(
        s.start(request()).await,
        Err(EngineError::Route(crate::router::RouterError::Topology(_)))
    ));
    // An abort of the ended rollout changes nothing.
    let again = s
        .command(&r.id, Command::Abort { reason: "x".into() })
        .await
        .unwrap();
    assert_eq!(again, done);
    s.shutdown().await;
}

#[tokio::test]
async fn a_refused_weight_write_is_not_retried_and_an_abort_ends_failed_saying_so() {
    let w = World::new();
    let s = w.supervisor();
    let mut req = request();
    req.analysis.interval = Duration::from_millis(50);
    let r = s.start(req).await.unwrap();
    wait_for(&s, &r.id, |r| r.canary_weight >= 20).await;
    s.command(
        &r.id,
        Command::Pause {
            reason: String::new(),
        },
    )
    .await
    .unwrap();
    w.router.refuse_writes(Some((
        403,
        "virtualservices.networking.istio.io \"podinfo\" is forbidden".into(),
    )));
    let writes_before = w.router.writes().len();
    let answer = tokio::time::timeout(
        Duration::from_secs(2),
        s.command(
            &r.id,
            Command::Abort {
                reason: "release cancelled".into(),
            },
        ),
    )
    .await
    .expect("the abort answered in bounded time")
    .unwrap();
    assert_eq!(answer.phase, Phase::Failed, "{}", answer.message);
    for part in [
        "could not route all traffic to GA",
        "is forbidden",
        "keeps its 2 replicas",
    ] {
        assert!(
            answer.message.contains(part),
            "{part:?}: {}",
            answer.message
        );
    }
    assert_eq!(w.router.writes().len(), writes_before);
    let (stored, _) = w.store.get(&r.id).unwrap();
    assert_eq!(stored.phase, Phase::Failed);
    s.shutdown().await;
}

#[tokio::test]
async fn starts_are_refused_when_metrics_cannot_be_reached_or_know_neither_workload() {
    use crate::metrics::{Coverage, MetricsError};
    let w = World::new();
    let s = w.supervisor();
    w.metrics
        .set_coverage(Some(Err(MetricsError::Query("connection refused".into()))));
    let unreachable = s.start(request()).await.unwrap_err();
    assert!(
        matches!(&unreachable, EngineError::MetricsUnreachable(_))
            && unreachable.to_string().contains("connection refused"),
        "{unreachable:?}"
    );
    w.metrics.set_coverage(Some(Ok(Coverage {
        reported: Vec::new(),
        scraping: true,
    })));
    let unreported = s.start(request()).await.unwrap_err();
    assert!(
        matches!(&unreported, EngineError::Refused(m) if m.contains("no istio_requests_total series")),
        "{unreported:?}"
    );
    // The refusal names the series of the observer the start asked for.
    let linkerd = StartRequest {
        observer: Some("linkerd".into()),
        ..request()
    };
    let unreported = s.start(linkerd).await.unwrap_err();
    assert!(
        matches!(&unreported, EngineError::Refused(m) if m.contains("no response_total series (direction=\"inbound\")")),
        "{unreported:?}"
    );
    assert_eq!(w.store.writes(), 0);
    assert_eq!(w.store.len(), 0);
    assert!(w.router.writes().is_empty());
    assert!(w.workloads.calls().is_empty());
    assert!(all(&s).await.is_empty());

    // A provider that has scraped nothing yet is not judged; GA alone being reported (a
    // canary that never served) is enough.
    w.metrics.set_coverage(Some(Ok(Coverage {
        reported: Vec::new(),
        scraping: false,
    })));
    let r = s.start(request()).await.unwrap();
    s.command(
        &r.id,
        Command::Abort {
            reason: String::new(),
        },
    )
    .await
    .unwrap();
    w.metrics.set_coverage(Some(Ok(Coverage {
        reported: vec!["podinfo".into()],
        scraping: true,
    })));
    s.start(request()).await.unwrap();
    s.shutdown().await;
}

#[tokio::test]
async fn a_hand_edited_weight_pauses_the_rollout_until_resume_adopts_it() {
    let w = World::new();
    let s = w.supervisor();
    let mut req = request();
    req.analysis.interval = Duration::from_millis(300);
    let r = s.start(req).await.unwrap();
    wait_for(&s, &r.id, |r| r.canary_weight == 10).await;
    w.router.edit_weight("test", "podinfo", 55);
    let paused = wait_for(&s, &r.id, |r| r.phase == Phase::Paused).await;
    assert!(
        paused.message.contains("canary weight 10% -> 55%"),
        "{}",
        paused.message
    );
    assert_eq!(
        w.router.weight("test", "podinfo"),
        Some(55),
        "left as edited"
    );
    assert_eq!(w.router.writes(), vec![10]);

    let resumed = s.command(&r.id, Command::Resume).await.unwrap();
    assert_eq!(
        (resumed.phase, resumed.canary_weight),
        (Phase::Progressing, 55)
    );
    let done = wait_for(&s, &r.id, |r| r.phase.is_terminal()).await;
    assert_eq!(done.phase, Phase::Succeeded, "{}", done.message);
    assert_eq!(w.router.writes(), vec![10, 65, 75, 85, 95, 100, 0]);
    s.shutdown().await;
}

/// Every active rollout keeps its driver's future in memory between steps: the step futures
/// are boxed while they run, so what stays is small (about 2 KiB; unboxed it was over 10).
#[tokio::test]
async fn an_idle_driver_keeps_a_small_future() {
    let w = World::new();
    let s = w.supervisor();
    let ports = s.ports_for_tests();
    let r = crate::domain::Rollout::test()
        .named("a")
        .with(|r| r.analysis = fast());
    let (view, _) = tokio::sync::watch::channel(r.clone());
    let (_commands, receiver) = tokio::sync::mpsc::channel(16);
    let driver = super::driver::Driver::new(
        ports,
        EngineConfig::default(),
        r,
        view,
        receiver,
        tokio_util::sync::CancellationToken::new(),
    );
    let run = driver.run();
    let size = std::mem::size_of_val(&run);
    assert!(size < 4096, "the driver's future takes {size} bytes");
}

fn webhook(name: &str, kind: crate::domain::WebhookKind) -> crate::domain::Webhook {
    crate::domain::Webhook {
        name: name.into(),
        kind,
        url: format!("http://127.0.0.1/{name}"),
        timeout: Duration::from_secs(300),
        metadata: [("team".to_owned(), "shop".to_owned())].into(),
    }
}

#[tokio::test]
async fn webhooks_are_called_as_the_rollout_goes_with_the_phase_they_concern() {
    use crate::domain::WebhookKind;
    let w = World::new();
    let s = w.supervisor();
    let mut req = request();
    req.analysis.webhooks = vec![
        webhook("approve", WebhookKind::ConfirmRollout),
        webhook("load", WebhookKind::PreRollout),
        webhook("notify", WebhookKind::PostRollout),
    ];
    let r = s.start(req).await.unwrap();
    let done = wait_for(&s, &r.id, |r| r.phase.is_terminal()).await;
    assert_eq!(done.phase, Phase::Succeeded, "{}", done.message);
    let calls: Vec<(String, &str, u32)> = w
        .webhooks
        .calls()
        .iter()
        .map(|c| (c.name.clone(), c.phase, c.canary_weight))
        .collect();
    assert_eq!(
        calls,
        [
            ("approve".to_owned(), "PENDING", 0),
            ("load".to_owned(), "PENDING", 0),
            ("notify".to_owned(), "SUCCEEDED", 0),
        ]
    );
    let first = &w.webhooks.calls()[0];
    assert_eq!(first.rollout_id, r.id);
    assert_eq!(first.metadata["team"], "shop");
    assert!(done.gates.post_rollout_sent);
    s.shutdown().await;
}

#[tokio::test]
async fn a_rollout_that_needs_approval_waits_at_the_maximum_weight_until_promoted() {
    let w = World::new();
    let s = w.supervisor();
    let mut req = request();
    req.analysis.strategy = Strategy::Canary {
        step_weight: 50,
        max_weight: 100,
    };
    req.analysis.require_approval = true;
    let r = s.start(req).await.unwrap();
    let held = wait_for(&s, &r.id, |r| r.gates.waiting_for.is_some()).await;
    assert_eq!(held.phase, Phase::Progressing);
    assert_eq!(held.canary_weight, 100);
    assert_eq!(
        held.message,
        "halted: waiting for approval: call PromoteRollout"
    );
    let promoted = s.command(&r.id, Command::Promote).await.unwrap();
    assert_eq!(promoted.gates.waiting_for, None);
    let done = wait_for(&s, &r.id, |r| r.phase.is_terminal()).await;
    assert_eq!(done.phase, Phase::Succeeded, "{}", done.message);
    s.shutdown().await;
}

#[tokio::test]
async fn an_abort_is_not_kept_waiting_by_a_webhook_that_does_not_answer() {
    use crate::domain::WebhookKind;
    let w = World::new();
    w.webhooks.hang("smoke");
    let s = w.supervisor();
    let mut req = request();
    req.analysis.webhooks = vec![webhook("smoke", WebhookKind::Rollout)];
    let r = s.start(req).await.unwrap();
    // The first check calls the hook, which never answers (its timeout is five minutes).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while w.webhooks.calls().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the hook was never called"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let abort = s.command(
        &r.id,
        Command::Abort {
            reason: "stop".into(),
        },
    );
    // Bounded only so that a hang fails the test instead of blocking it.
    let aborted = tokio::time::timeout(Duration::from_secs(60), abort)
        .await
        .expect("the abort waited for the webhook")
        .unwrap();
    assert!(
        matches!(aborted.phase, Phase::RollingBack | Phase::Aborted),
        "{:?}",
        aborted.phase
    );
    assert_eq!(w.router.weight("test", "podinfo"), Some(0));
    s.shutdown().await;
}

#[tokio::test]
async fn json_log_lines_of_a_step_carry_the_rollout_and_the_step() {
    use crate::telemetry::logs::capture::{Captured, json};
    let captured = Captured::default();
    // The test's runtime runs every task on this thread, drivers included.
    let _logs = tracing::subscriber::set_default(json(
        &captured,
        tracing::level_filters::LevelFilter::INFO,
    ));
    let w = World::new();
    let s = w.supervisor();
    let r = s.start(request()).await.unwrap();
    let done = wait_for(&s, &r.id, |r| r.phase.is_terminal()).await;
    assert_eq!(done.phase, Phase::Succeeded, "{}", done.message);

    let lines = captured.lines();
    let of_steps: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["span"]["name"] == "step")
        .collect();
    // Every event after the start is recorded by a step of the driver, and logged there.
    let checks = of_steps
        .iter()
        .filter(|l| l["fields"]["kind"] == "CheckPassed")
        .count();
    assert!(checks >= 10, "{checks} check lines in steps of {lines:#?}");
    for line in &of_steps {
        let spans = line["spans"].as_array().expect("a span list");
        assert_eq!(spans.len(), 2, "{line}");
        let (rollout, step) = (&spans[0], &spans[1]);
        assert_eq!(rollout["name"], "rollout", "{line}");
        assert_eq!(rollout["id"], r.id.as_str(), "{line}");
        assert_eq!(rollout["namespace"], "test", "{line}");
        assert_eq!(rollout["target"], "podinfo", "{line}");
        assert!(step["sequence"].is_u64(), "{line}");
        assert!(step["phase"].is_string(), "{line}");
        assert!(step["weight"].is_u64(), "{line}");
        assert_eq!(line["span"], *step, "{line}");
    }
    // A step that moved traffic starts from the weight before it, in its phase.
    let moved_to_20 = of_steps
        .iter()
        .find(|l| l["fields"]["kind"] == "WeightChanged" && l["fields"]["weight"] == 20)
        .unwrap_or_else(|| panic!("no step moved traffic to 20% in {lines:#?}"));
    assert_eq!(moved_to_20["span"]["weight"], 10);
    assert_eq!(moved_to_20["span"]["phase"], "progressing");
}
