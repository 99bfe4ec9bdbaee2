//! Helpers shared by the API tests: a running simulator, a kube-rs client through its
//! kubeconfig, fixtures, and polling with a deadline.
#![allow(dead_code)]

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use steerer_sim::{Sim, SimConfig, Timing};

/// A simulator with fast timing.
pub async fn start() -> Sim {
    Sim::start(SimConfig {
        timing: Timing::fast(),
        ..SimConfig::default()
    })
    .await
    .unwrap()
}

/// A kube-rs client built from the simulator's kubeconfig.
pub async fn client(sim: &Sim) -> kube::Client {
    kube::Client::try_from(sim.kube_config().await.unwrap()).unwrap()
}

/// `artifacts/` at the workspace root.
pub fn artifacts() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("artifacts")
}

/// A valid Deployment in `default`.
pub fn deployment(name: &str) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": name}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [
                    {"name": "app", "image": "app:1", "env": [{"name": "A", "value": "1"}]},
                    {"name": "proxy", "image": "proxy:1"},
                ]},
            },
        },
    })
}

/// A ConfigMap in `default`.
pub fn config_map(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": name, "namespace": "default", "labels": {"app": "test"}},
           "data": {"k": "v"}})
}

/// Polls `check` until it returns `Some`, failing after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
