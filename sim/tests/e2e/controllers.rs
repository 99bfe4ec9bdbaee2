//! The Deployment and HPA controllers of a running simulator, driven through its store with
//! fast timing.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use steerer_sim::controllers::deployment::{REVISION_ANNOTATION, deployments};
use steerer_sim::controllers::hpa::horizontal_pod_autoscalers;
use steerer_sim::store::UpdateScope;
use steerer_sim::{Sim, SimConfig, Timing};

async fn start() -> Sim {
    Sim::start(SimConfig {
        timing: Timing::fast(),
        ..SimConfig::default()
    })
    .await
    .unwrap()
}

fn deployment(name: &str, replicas: i64) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "test"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                         "spec": {"containers": [{"name": "app", "image": "podinfo:1"}]}},
        },
    })
}

fn edit(sim: &Sim, name: &str, f: impl FnOnce(&mut Value)) {
    sim.world()
        .store
        .update(&deployments(), "test", name, UpdateScope::Spec, |old| {
            let mut new = old.clone();
            f(&mut new);
            Ok(new)
        })
        .unwrap();
}

fn get(sim: &Sim, name: &str) -> Value {
    sim.world().store.get(&deployments(), "test", name).unwrap()
}

fn count(obj: &Value, field: &str) -> i64 {
    obj["status"][field].as_i64().unwrap_or(0)
}

fn condition(obj: &Value, type_: &str) -> Option<(String, String)> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .map(|c| {
            (
                c["status"].as_str().unwrap().to_owned(),
                c["reason"].as_str().unwrap().to_owned(),
            )
        })
}

fn is_complete(obj: &Value) -> bool {
    let want = obj["spec"]["replicas"].as_i64().unwrap();
    obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
        && [
            "replicas",
            "updatedReplicas",
            "readyReplicas",
            "availableReplicas",
        ]
        .iter()
        .all(|f| count(obj, f) == want)
        && condition(obj, "Progressing") == Some(("True".into(), "NewReplicaSetAvailable".into()))
}

/// Polls `check` until it returns `Some`, failing after `within`.
async fn eventually<T>(what: &str, within: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn template_change_shows_a_rolling_update_that_completes() {
    let sim = start().await;
    sim.world()
        .store
        .create(&deployments(), "test", deployment("web", 4))
        .unwrap();
    eventually("the first rollout", Duration::from_secs(5), || {
        is_complete(&get(&sim, "web")).then_some(())
    })
    .await;

    let mut changes = sim.world().store.subscribe();
    edit(&sim, "web", |d| {
        d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("podinfo:2");
    });
    // Every status the controller writes, until the rollout is complete.
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let change = changes.recv().await.unwrap();
            if change.gr == deployments() && change.object["metadata"]["name"] == "web" {
                seen.push((*change.object).clone());
                if is_complete(&change.object) {
                    break;
                }
            }
        }
    })
    .await
    .expect("the rollout completes");

    let final_state = seen.last().unwrap();
    assert_eq!(
        final_state["metadata"]["annotations"][REVISION_ANNOTATION],
        "2"
    );
    assert_eq!(final_state["status"]["observedGeneration"], 2);
    assert!(
        seen.iter().any(|d| d["status"]["observedGeneration"] == 2
            && count(d, "updatedReplicas") < 4
            && count(d, "replicas") > count(d, "updatedReplicas")),
        "a status in the middle of the rollout shows old and new pods"
    );
    assert!(
        seen.iter().any(|d| count(d, "replicas") == 5),
        "the rollout surges one pod above the replica count"
    );
    assert!(
        seen.iter().all(|d| count(d, "availableReplicas") >= 3),
        "never more than one pod unavailable"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn pods_that_never_become_ready_exceed_the_progress_deadline() {
    let sim = start().await;
    let mut d = deployment("web", 2);
    d["spec"]["progressDeadlineSeconds"] = json!(2);
    sim.world().store.create(&deployments(), "test", d).unwrap();
    eventually("the first rollout", Duration::from_secs(5), || {
        is_complete(&get(&sim, "web")).then_some(())
    })
    .await;
    edit(&sim, "web", |d| {
        d["spec"]["template"]["metadata"]["annotations"] =
            json!({"sim.steerer.dev/ready": "false"});
    });
    let stuck = eventually("ProgressDeadlineExceeded", Duration::from_secs(8), || {
        let d = get(&sim, "web");
        (condition(&d, "Progressing") == Some(("False".into(), "ProgressDeadlineExceeded".into())))
            .then_some(d)
    })
    .await;
    assert_eq!(count(&stuck, "updatedReplicas"), 1);
    assert_eq!(count(&stuck, "availableReplicas"), 2);
    assert_eq!(count(&stuck, "unavailableReplicas"), 1);
    assert_eq!(
        condition(&stuck, "Available"),
        Some(("True".into(), "MinimumReplicasAvailable".into()))
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn deployment_scales_to_zero_and_back() {
    let sim = start().await;
    sim.world()
        .store
        .create(&deployments(), "test", deployment("web", 2))
        .unwrap();
    eventually("the first rollout", Duration::from_secs(5), || {
        is_complete(&get(&sim, "web")).then_some(())
    })
    .await;
    edit(&sim, "web", |d| d["spec"]["replicas"] = json!(0));
    let empty = eventually("no pods", Duration::from_secs(5), || {
        let d = get(&sim, "web");
        (d["status"]["observedGeneration"] == 2).then_some(d)
    })
    .await;
    assert!(empty["status"].get("replicas").is_none());
    assert!(is_complete(&empty));

    edit(&sim, "web", |d| d["spec"]["replicas"] = json!(3));
    let starting = eventually("pods starting", Duration::from_secs(5), || {
        let d = get(&sim, "web");
        (d["status"]["observedGeneration"] == 3).then_some(d)
    })
    .await;
    assert_eq!(count(&starting, "replicas"), 3);
    assert_eq!(count(&starting, "unavailableReplicas"), 3);
    eventually("three ready pods", Duration::from_secs(5), || {
        is_complete(&get(&sim, "web")).then_some(())
    })
    .await;
    sim.shutdown().await;
}

#[tokio::test]
async fn hpa_moves_replicas_between_min_and_max_with_the_load() {
    let sim = start().await;
    let store = &sim.world().store;
    store
        .create(&deployments(), "test", deployment("web", 2))
        .unwrap();
    store
        .create(
            &horizontal_pod_autoscalers(),
            "test",
            json!({
                "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                "metadata": {"name": "web", "namespace": "test"},
                "spec": {
                    "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                    "minReplicas": 2, "maxReplicas": 4,
                    "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 99}}}],
                },
            }),
        )
        .unwrap();
    let hpa = || {
        store
            .get(&horizontal_pod_autoscalers(), "test", "web")
            .unwrap()
    };
    eventually("a first HPA status", Duration::from_secs(5), || {
        (hpa()["status"]["desiredReplicas"] == 2).then_some(())
    })
    .await;

    let mut changes = store.subscribe();
    sim.set_load("test", "web", 2.0);
    let scaling = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let change = changes.recv().await.unwrap();
            if change.gr == horizontal_pod_autoscalers() {
                break (*change.object).clone();
            }
        }
    })
    .await
    .unwrap();
    // Right after a rescale the HPA reports the replicas it found and those it wants.
    assert_eq!(scaling["status"]["currentReplicas"], 2);
    assert_eq!(scaling["status"]["desiredReplicas"], 4);
    assert!(scaling["status"]["lastScaleTime"].is_string());
    assert_eq!(
        scaling["status"]["currentMetrics"][0]["resource"]["current"]["averageUtilization"],
        198
    );
    let scaled = get(&sim, "web");
    assert_eq!(scaled["spec"]["replicas"], 4);
    eventually("four ready replicas", Duration::from_secs(5), || {
        is_complete(&get(&sim, "web")).then_some(())
    })
    .await;
    eventually("the HPA at its maximum", Duration::from_secs(5), || {
        let status = hpa()["status"].clone();
        let limited = status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "ScalingLimited" && c["reason"] == "TooManyReplicas");
        (status["currentReplicas"] == 4 && limited).then_some(())
    })
    .await;

    sim.set_load("test", "web", 0.3);
    eventually("the HPA at its minimum", Duration::from_secs(5), || {
        (get(&sim, "web")["spec"]["replicas"] == 2 && hpa()["status"]["currentReplicas"] == 2)
            .then_some(())
    })
    .await;
    sim.shutdown().await;
}
