//! Rollouts under faults: a flaky Kubernetes API (500s and 429s on writes), forced conflicts,
//! dropped watches over a compacted store, Prometheus going away, a canary with no traffic,
//! and aborts that must change nothing. The standard: faults never lose state or leave traffic
//! half-moved; weights only move in whole steps; events are numbered with no gap and no
//! duplicate; abort and rollback are idempotent.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::{CANARY, GA, Harness, NS, Options, image, replicas, types, virtual_services};
use futures::StreamExt;
use kube::api::Api;
use kube::runtime::watcher;
use steerer::v1::{
    AbortRolloutRequest, Analysis, EventType, ListRolloutsRequest, Phase, RolloutEvent,
};
use steerer_sim::faults::{Failure, Scope, Verb};
use steerer_sim::prometheus::{Prometheus, PrometheusConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

const NEW_IMAGE: &str = "ghcr.io/stefanprodan/podinfo:6.4.0";

fn seconds(seconds: i64) -> prost_types::Duration {
    prost_types::Duration { seconds, nanos: 0 }
}

/// Records every (GA, canary) weight pair the example VirtualService takes, from a watch.
pub(crate) struct WeightLog {
    seen: Arc<Mutex<Vec<(u64, u64)>>>,
    task: JoinHandle<()>,
}

impl WeightLog {
    pub(crate) async fn start(h: &Harness) -> WeightLog {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let api = virtual_services(&h.kube);
        let log = seen.clone();
        let (ready_tx, mut ready) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(watcher(api, watcher::Config::default()));
            while let Some(event) = stream.next().await {
                let objects = match event {
                    Ok(watcher::Event::Apply(vs)) | Ok(watcher::Event::InitApply(vs)) => vec![vs],
                    Ok(watcher::Event::InitDone) => {
                        let _ = ready_tx.send(true);
                        continue;
                    }
                    _ => continue,
                };
                for vs in objects
                    .into_iter()
                    .filter(|vs| vs.metadata.name.as_deref() == Some(GA))
                {
                    let route = &vs.data["spec"]["http"][0]["route"];
                    let pair = (
                        route[0]["weight"].as_u64().unwrap_or(0),
                        route[1]["weight"].as_u64().unwrap_or(0),
                    );
                    let mut log = log.lock().unwrap();
                    if log.last() != Some(&pair) {
                        log.push(pair);
                    }
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), ready.wait_for(|r| *r))
            .await
            .unwrap()
            .unwrap();
        WeightLog { seen, task }
    }

    /// The canary weights seen so far, consecutive repeats removed; asserts each pair sums
    /// to 100.
    pub(crate) fn canary_weights(&self) -> Vec<u64> {
        let seen = self.seen.lock().unwrap().clone();
        for (ga, canary) in &seen {
            assert_eq!(ga + canary, 100, "weights {ga}/{canary} in {seen:?}");
        }
        let mut weights: Vec<u64> = seen.iter().map(|(_, c)| *c).collect();
        weights.dedup();
        weights
    }
}

impl Drop for WeightLog {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Events numbered 1..=n, each once, ending at the rollout's last sequence.
fn assert_gapless(events: &[RolloutEvent], last_sequence: u64) {
    let sequences: Vec<u64> = events.iter().map(|e| e.sequence).collect();
    let expected: Vec<u64> = (1..=last_sequence).collect();
    assert_eq!(sequences, expected, "event sequences");
}

/// The canary weights of the WEIGHT_CHANGED events, in order.
fn stepped_weights(events: &[RolloutEvent]) -> Vec<u64> {
    events
        .iter()
        .filter(|e| e.r#type() == EventType::WeightChanged)
        .map(|e| u64::from(e.canary_weight))
        .collect()
}

/// The events of a rollout as stored in its record (`rollouts.steerer.dev`).
async fn stored_sequences(h: &Harness, id: &str) -> Vec<u64> {
    let record = rollout_records(h).get(id).await.unwrap();
    record.data["status"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["sequence"].as_u64().unwrap())
        .collect()
}

/// The rollout records of the test namespace.
fn rollout_records(h: &Harness) -> Api<kube::api::DynamicObject> {
    Api::namespaced_with(
        h.kube.clone(),
        NS,
        &steerer_server::store::crd::api_resource(),
    )
}

/// Write requests the simulated API served (failed ones included).
fn writes(h: &Harness) -> u64 {
    h.sim()
        .faults()
        .counts()
        .iter()
        .filter(|((verb, _), _)| verb.parse::<Verb>().map(|v| v.is_write()).unwrap_or(false))
        .map(|(_, n)| n)
        .sum()
}

fn fast_promotion() -> Analysis {
    Analysis {
        step_weight: Some(20),
        interval: Some(seconds(1)),
        progress_deadline: Some(seconds(20)),
        ..Default::default()
    }
}

/// Weights a promotion with 20% steps must take, exactly.
const PROMOTION_WEIGHTS: [u64; 7] = [0, 20, 40, 60, 80, 100, 0];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_succeeds_while_30_percent_of_api_writes_fail_with_500_and_429() {
    let mut h = Harness::start().await;
    let weights = WeightLog::start(&h).await;
    let mut request = h.request(fast_promotion());
    request.images = [("podinfo".to_owned(), NEW_IMAGE.to_owned())].into();
    let started = h.start_rollout(request).await;

    let world = h.sim().world().clone();
    let faults = &world.faults;
    for verb in [Verb::Patch, Verb::Update, Verb::Create] {
        // The rules apply in turn: 20% answer 500, then 12.5% of the rest 429, 30% in all.
        faults.fail_requests(0.2, Failure::InternalError, Scope::verb(verb));
        faults.fail_requests(0.125, Failure::TooManyRequests, Scope::verb(verb));
    }
    let done = h.wait_for_end(&started.id, Duration::from_secs(28)).await;
    h.sim().faults().clear();

    assert_eq!(done.phase(), Phase::Succeeded, "{}", done.message);
    assert_eq!(weights.canary_weights(), PROMOTION_WEIGHTS);
    let events = h.watch_to_end(&started.id, 0, Duration::from_secs(5)).await;
    assert_gapless(&events, done.last_sequence);
    assert_eq!(stepped_weights(&events), [20, 40, 60, 80, 100]);
    assert_eq!(
        stored_sequences(&h, &started.id).await,
        (1..=done.last_sequence).collect::<Vec<_>>()
    );
    assert_eq!(image(&h.deployment(GA).await), NEW_IMAGE);
    assert_eq!(replicas(&h.deployment(CANARY).await), 0);
    // About 30 writes at a 30% failure rate: that none failed is a 1-in-40,000 chance.
    assert!(faults.injected_total() > 0, "no write was failed");
    // Six weight changes landed (0 -> 20 ... 100 -> 0); every failed patch was tried again.
    let failed = faults.injected("patch", "virtualservices");
    assert!(
        faults.count("patch", "virtualservices") >= 6 + failed,
        "{failed} failed weight patches were not all retried"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicts_on_the_virtual_service_and_the_state_are_retried_without_losing_a_step() {
    let mut h = Harness::start().await;
    let weights = WeightLog::start(&h).await;
    let started = h.start_rollout(h.request(fast_promotion())).await;
    h.wait_until(&started.id, Duration::from_secs(15), |r| {
        r.canary_weight >= 40
    })
    .await;
    let world = h.sim().world().clone();
    let faults = &world.faults;
    faults.reset_counts();
    faults.conflict_next_write("virtualservices", NS, GA);
    faults.conflict_next_write("rollouts", NS, &started.id);

    let done = h.wait_for_end(&started.id, Duration::from_secs(20)).await;
    assert_eq!(done.phase(), Phase::Succeeded, "{}", done.message);
    assert_eq!(weights.canary_weights(), PROMOTION_WEIGHTS);
    let events = h.watch_to_end(&started.id, 0, Duration::from_secs(5)).await;
    assert_gapless(&events, done.last_sequence);
    assert_eq!(stepped_weights(&events), [20, 40, 60, 80, 100]);
    assert_eq!(
        stored_sequences(&h, &started.id).await,
        (1..=done.last_sequence).collect::<Vec<_>>()
    );
    // From 40%: 60, 80, 100, then 0 at promotion, plus the one patch refused with 409. The
    // steps read nothing from the API: Deployments come from the watch cache.
    assert_eq!(faults.count("patch", "virtualservices"), 5);
    assert_eq!(faults.count("get", "deployments"), 0);
    assert_eq!(faults.count("list", "deployments"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_finishes_after_every_watch_is_dropped_over_a_compacted_store() {
    let mut h = Harness::start().await;
    let started = h.start_rollout(h.request(fast_promotion())).await;
    h.wait_until(&started.id, Duration::from_secs(15), |r| {
        r.canary_weight >= 20
    })
    .await;
    let world = h.sim().world().clone();
    let faults = &world.faults;
    faults.reset_counts();
    h.sim().world().store.compact();
    faults.drop_watches();
    h.wait_until(&started.id, Duration::from_secs(10), |r| {
        r.canary_weight >= 60
    })
    .await;
    h.sim().world().store.compact();
    faults.drop_watches();
    let done = h.wait_for_end(&started.id, Duration::from_secs(20)).await;
    assert_eq!(done.phase(), Phase::Succeeded, "{}", done.message);
    // The reflectors came back with 410 Gone and listed again.
    assert!(
        faults.count("list", "deployments") + faults.count("list", "virtualservices") >= 1,
        "{:?}",
        faults.counts()
    );
    assert!(
        faults.count("watch", "virtualservices") >= 2,
        "{:?}",
        faults.counts()
    );
    let events = h.watch_to_end(&started.id, 0, Duration::from_secs(5)).await;
    assert_gapless(&events, done.last_sequence);
    assert_eq!(stepped_weights(&events), [20, 40, 60, 80, 100]);
    assert_eq!(h.weights().await, (100, 0));
    assert_eq!(replicas(&h.deployment(CANARY).await), 0);
}

/// A TCP proxy in front of Prometheus that can be switched off (every connection cut, new
/// ones refused) and on again, for an outage at a stable address.
struct Switch {
    url: String,
    up: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Switch {
    async fn start(upstream: std::net::SocketAddr) -> Switch {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (up, watch_up) = watch::channel(true);
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if !*watch_up.borrow() {
                    continue;
                }
                let mut down = watch_up.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = down.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Switch { url, up, task }
    }

    fn set(&self, up: bool) {
        self.up.send_replace(up);
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_killed_mid_rollout_halts_the_rollout_then_rolls_back_at_the_deadline() {
    let mut h = Harness::start().await;
    // A Prometheus of this test's own, so that dropping it kills the one the server queries.
    let prometheus = Prometheus::start(PrometheusConfig::new(
        vec![h.sim().metrics_addr()],
        Duration::from_secs(1),
    ))
    .await
    .unwrap();
    h.config.prometheus_url = prometheus.url();
    h.stop_and_restart().await;
    let ga_before = h.deployment(GA).await;
    let weights = WeightLog::start(&h).await;
    let started = h
        .start_rollout(h.request(Analysis {
            step_weight: Some(20),
            interval: Some(seconds(1)),
            progress_deadline: Some(seconds(4)),
            ..Default::default()
        }))
        .await;
    h.wait_until(&started.id, Duration::from_secs(15), |r| {
        r.canary_weight >= 20
    })
    .await;
    drop(prometheus);

    let done = h.wait_for_end(&started.id, Duration::from_secs(20)).await;
    assert_eq!(done.phase(), Phase::RolledBack, "{}", done.message);
    assert!(
        done.message.contains("progress deadline"),
        "{}",
        done.message
    );
    let events = h.watch_to_end(&started.id, 0, Duration::from_secs(5)).await;
    assert_gapless(&events, done.last_sequence);
    let first_no_data = events
        .iter()
        .position(|e| {
            e.r#type() == EventType::CheckNoData && e.message.contains("metrics unavailable")
        })
        .expect("a check without metrics");
    let halted_at = events[first_no_data].canary_weight;
    assert!(halted_at < 100, "halted at {halted_at}");
    let after = &events[first_no_data..];
    assert!(
        !types(after).iter().any(|t| matches!(
            t,
            EventType::WeightChanged
                | EventType::CheckPassed
                | EventType::Promoting
                | EventType::Promoted
        )),
        "the rollout moved without metrics: {:?}",
        types(after)
    );
    assert_eq!(
        types(&events[events.len() - 2..]),
        [EventType::RollingBack, EventType::RolledBack]
    );
    // Traffic went from the halted weight straight back to GA.
    let seen = weights.canary_weights();
    assert_eq!(seen.last(), Some(&0));
    assert_eq!(seen[seen.len() - 2], u64::from(halted_at), "{seen:?}");
    assert_eq!(h.weights().await, (100, 0));
    assert_eq!(replicas(&h.deployment(CANARY).await), 0);
    assert_eq!(
        h.deployment(GA).await.spec.unwrap().template,
        ga_before.spec.unwrap().template
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_halts_while_prometheus_is_unreachable_and_continues_when_it_returns() {
    let mut h = Harness::start().await;
    let switch = Switch::start(h.prometheus.addr()).await;
    h.config.prometheus_url = switch.url.clone();
    h.stop_and_restart().await;
    let weights = WeightLog::start(&h).await;
    let started = h.start_rollout(h.request(fast_promotion())).await;
    h.wait_until(&started.id, Duration::from_secs(15), |r| {
        r.canary_weight >= 40
    })
    .await;
    switch.set(false);
    let halted = h
        .wait_until(&started.id, Duration::from_secs(10), |r| {
            r.message.contains("metrics unavailable")
        })
        .await;
    // Hold the outage for a few intervals: the weight must not move.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let still = h.get(&started.id).await;
    assert_eq!(still.canary_weight, halted.canary_weight);
    assert_eq!(still.phase(), Phase::Progressing);
    assert_eq!(h.weights().await.1, u64::from(halted.canary_weight));
    switch.set(true);

    let done = h.wait_for_end(&started.id, Duration::from_secs(20)).await;
    assert_eq!(done.phase(), Phase::Succeeded, "{}", done.message);
    assert_eq!(weights.canary_weights(), PROMOTION_WEIGHTS);
    let events = h.watch_to_end(&started.id, 0, Duration::from_secs(5)).await;
    assert_gapless(&events, done.last_sequence);
    assert_eq!(stepped_weights(&events), [20, 40, 60, 80, 100]);
    assert!(
        events.iter().any(|e| e.r#type() == EventType::CheckNoData),
        "{:?}",
        types(&events)
    );
}

/// Starts a rollout that cannot gather evidence and checks it is never promoted: no check
/// passes, the weight never goes past the first step, and the progress deadline rolls it back.
async fn assert_no_data_rolls_back(h: &mut Harness, analysis: Analysis, why: &[&str]) {
    let ga_before = h.deployment(GA).await;
    let weights = WeightLog::start(h).await;
    let started = h.start_rollout(h.request(analysis)).await;
    let done = h.wait_for_end(&started.id, Duration::from_secs(20)).await;
    assert_eq!(done.phase(), Phase::RolledBack, "{}", done.message);
    assert!(
        done.message.contains("progress deadline"),
        "{}",
        done.message
    );
    let events = h.watch_to_end(&started.id, 0, Duration::from_secs(5)).await;
    assert_gapless(&events, done.last_sequence);
    let t = types(&events);
    assert!(!t.contains(&EventType::CheckPassed), "{t:?}");
    assert!(!t.contains(&EventType::Promoting), "{t:?}");
    let no_data: Vec<&RolloutEvent> = events
        .iter()
        .filter(|e| e.r#type() == EventType::CheckNoData)
        .collect();
    assert!(no_data.len() >= 2, "{t:?}");
    assert!(
        no_data
            .iter()
            .all(|e| why.iter().any(|w| e.message.contains(w))),
        "{:?}",
        no_data.iter().map(|e| &e.message).collect::<Vec<_>>()
    );
    assert_eq!(stepped_weights(&events), [10]);
    assert_eq!(weights.canary_weights(), [0, 10, 0]);
    assert_eq!(replicas(&h.deployment(CANARY).await), 0);
    assert_eq!(
        h.deployment(GA).await.spec.unwrap().template,
        ga_before.spec.unwrap().template
    );
}

/// A start that could only run on "no data" until its deadline is answered at once instead,
/// and changes nothing: Prometheus without a single request series for the target's
/// workloads (the mesh sends no traffic here) is FAILED_PRECONDITION, Prometheus unreachable
/// is UNAVAILABLE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_without_metrics_for_the_target_is_refused_at_once_and_changes_nothing() {
    let mut h = Harness::start_with(Options {
        request_rate: 0.0,
        ..Options::default()
    })
    .await;
    let canary_before = h.deployment(CANARY).await;
    let mut request = h.request(Analysis {
        step_weight: Some(10),
        interval: Some(seconds(1)),
        progress_deadline: Some(seconds(4)),
        ..Default::default()
    });
    request.images = [("podinfo".to_owned(), NEW_IMAGE.to_owned())].into();
    request.request_id = "no-metrics-1".into();

    let refused = h.client.start_rollout(request.clone()).await.unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    for part in [
        "no istio_requests_total series",
        "test/podinfo or its canary test/podinfo-canary",
        "nothing was changed",
    ] {
        assert!(
            refused.message().contains(part),
            "{part:?}: {}",
            refused.message()
        );
    }

    // Prometheus gone: a port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    h.config.prometheus_url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    h.stop_and_restart().await;
    let refused = h.client.start_rollout(request).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(
        refused.message().contains("cannot be reached"),
        "{}",
        refused.message()
    );

    let listed = h
        .client
        .list_rollouts(ListRolloutsRequest {
            namespace: NS.into(),
            active_only: false,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.rollouts.is_empty(), "{listed:?}");
    let stored = rollout_records(&h).list(&Default::default()).await.unwrap();
    assert!(stored.items.is_empty(), "a rollout was stored");
    let canary_after = h.deployment(CANARY).await;
    assert_eq!(
        canary_after.spec, canary_before.spec,
        "the canary was changed"
    );
    assert_eq!(h.weights().await, (100, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_below_the_minimum_request_rate_is_never_promoted() {
    let mut h = Harness::start().await;
    // The mesh sends 100 requests/s; 10% of it is far below 500/s.
    let analysis = Analysis {
        step_weight: Some(10),
        interval: Some(seconds(1)),
        progress_deadline: Some(seconds(4)),
        min_request_rate: Some(500.0),
        ..Default::default()
    };
    assert_no_data_rolls_back(
        &mut h,
        analysis,
        &["below the minimum 500/s", "no canary traffic"],
    )
    .await;
}

async fn abort(h: &mut Harness, id: &str, reason: &str) -> steerer::v1::Rollout {
    h.client
        .abort_rollout(AbortRolloutRequest {
            id: id.into(),
            reason: reason.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_during_a_rollback_changes_nothing_and_the_rollback_finishes() {
    let mut h = Harness::start().await;
    let started = h
        .start_rollout(h.request(Analysis {
            step_weight: Some(20),
            interval: Some(seconds(1)),
            max_failed_checks: Some(1),
            ..Default::default()
        }))
        .await;
    h.wait_until(&started.id, Duration::from_secs(15), |r| {
        r.canary_weight >= 20
    })
    .await;
    // The canary starts failing, and scaling it down fails too: the rollback stays in
    // ROLLING_BACK, traffic already on GA.
    h.sim().faults().fail_requests(
        1.0,
        Failure::InternalError,
        Scope::verb(Verb::Patch).resource("deployments"),
    );
    h.sim().set_error_rate(NS, CANARY, Some(0.5));
    let rolling_back = h
        .wait_for_phase(&started.id, Phase::RollingBack, Duration::from_secs(10))
        .await;
    assert_eq!(h.weights().await, (100, 0));

    let world = h.sim().world().clone();
    let faults = &world.faults;
    faults.reset_counts();
    let answer = abort(&mut h, &started.id, "cancel the release").await;
    assert_eq!(answer.phase(), Phase::RollingBack);
    assert_eq!(answer.last_sequence, rolling_back.last_sequence);
    assert_eq!(faults.count("patch", "virtualservices"), 0);
    assert_eq!(faults.count("patch", "rollouts/status"), 0);

    faults.clear();
    let done = h.wait_for_end(&started.id, Duration::from_secs(10)).await;
    assert_eq!(done.phase(), Phase::RolledBack, "{}", done.message);
    assert_eq!(replicas(&h.deployment(CANARY).await), 0);
    let events = h.watch_to_end(&started.id, 0, Duration::from_secs(5)).await;
    assert_gapless(&events, done.last_sequence);
    let t = types(&events);
    assert_eq!(
        t.iter().filter(|t| **t == EventType::RollingBack).count(),
        1,
        "{t:?}"
    );
    assert!(!t.contains(&EventType::Aborted), "{t:?}");
    assert_eq!(t.last(), Some(&EventType::RolledBack));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_and_repeated_aborts_roll_back_once_and_then_touch_nothing() {
    let mut h = Harness::start().await;
    let started = h.start_rollout(h.request(fast_promotion())).await;
    h.wait_until(&started.id, Duration::from_secs(15), |r| {
        r.canary_weight >= 20
    })
    .await;
    let (mut a, mut b) = (h.client.clone(), h.client.clone());
    let (first, second) = tokio::join!(
        a.abort_rollout(AbortRolloutRequest {
            id: started.id.clone(),
            reason: "one".into(),
        }),
        b.abort_rollout(AbortRolloutRequest {
            id: started.id.clone(),
            reason: "two".into(),
        }),
    );
    let (first, second) = (first.unwrap().into_inner(), second.unwrap().into_inner());
    assert_eq!(first.phase(), Phase::Aborted);
    assert_eq!(second.phase(), Phase::Aborted);
    assert_eq!(first.last_sequence, second.last_sequence);
    assert_eq!(h.weights().await, (100, 0));
    assert_eq!(replicas(&h.deployment(CANARY).await), 0);

    let world = h.sim().world().clone();
    let faults = &world.faults;
    faults.reset_counts();
    for reason in ["again", ""] {
        let again = abort(&mut h, &started.id, reason).await;
        assert_eq!(again.phase(), Phase::Aborted);
        assert_eq!(again.last_sequence, first.last_sequence);
        assert_eq!(again.message, first.message);
    }
    assert_eq!(writes(&h), 0, "{:?}", faults.counts());

    let events = h.watch_to_end(&started.id, 0, Duration::from_secs(5)).await;
    assert_gapless(&events, first.last_sequence);
    let t = types(&events);
    assert_eq!(
        t[t.len() - 2..],
        [EventType::RollingBack, EventType::Aborted]
    );
    assert_eq!(
        t.iter().filter(|t| **t == EventType::RollingBack).count(),
        1,
        "{t:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborting_a_succeeded_rollout_touches_nothing_and_a_failed_start_leaves_no_trace() {
    let mut h = Harness::start().await;

    // Storing the new rollout fails: the start is refused as unavailable and nothing moved.
    h.sim().faults().fail_requests(
        1.0,
        Failure::InternalError,
        Scope::verb(Verb::Create).resource("rollouts"),
    );
    let mut request = h.request(Analysis {
        step_weight: Some(50),
        interval: Some(seconds(1)),
        ..Default::default()
    });
    request.request_id = "release-42".into();
    request.images = [("podinfo".to_owned(), NEW_IMAGE.to_owned())].into();
    let refused = h.client.start_rollout(request.clone()).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    let listed = h
        .client
        .list_rollouts(ListRolloutsRequest {
            namespace: NS.into(),
            active_only: false,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.rollouts.is_empty(), "{listed:?}");
    assert_ne!(image(&h.deployment(CANARY).await), NEW_IMAGE);
    assert_eq!(h.weights().await, (100, 0));
    h.sim().faults().clear();

    // The same request again starts it, and it is promoted.
    let started = h.start_rollout(request.clone()).await;
    let done = h.wait_for_end(&started.id, Duration::from_secs(20)).await;
    assert_eq!(done.phase(), Phase::Succeeded, "{}", done.message);
    let ga_after = h.deployment(GA).await;

    let world = h.sim().world().clone();
    let faults = &world.faults;
    faults.reset_counts();
    let answer = abort(&mut h, &started.id, "too late").await;
    assert_eq!(answer.phase(), Phase::Succeeded);
    assert_eq!(answer.last_sequence, done.last_sequence);
    // Asking to start it again with the same key returns the finished rollout.
    let same = h.start_rollout(request).await;
    assert_eq!(same.id, started.id);
    assert_eq!(writes(&h), 0, "{:?}", faults.counts());
    assert_eq!(h.deployment(GA).await.spec, ga_after.spec);
}
