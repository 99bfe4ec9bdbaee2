//! In-memory workloads for engine tests: writes settle instantly and every call is recorded.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use serde_json::{Value, json};

use super::{DeploymentView, HpaView, WorkloadError, Workloads};

/// Deployments and HPAs held in memory.
#[derive(Default)]
pub struct FakeWorkloads {
    state: Mutex<FakeState>,
}

#[derive(Default)]
struct FakeState {
    deployments: BTreeMap<(String, String), DeploymentView>,
    hpas: Vec<HpaView>,
    calls: Vec<String>,
    events: Vec<(String, String)>,
    /// Keep no call log (benchmarks that must not grow with the calls they make).
    quiet: bool,
}

impl FakeWorkloads {
    /// Stops recording calls (`calls()` stays as it is), for benchmarks of memory.
    pub fn quiet(&self) {
        if let Ok(mut state) = self.state.lock() {
            state.quiet = true;
        }
    }

    /// A settled Deployment with one container `app` running `image`.
    pub fn settled(namespace: &str, name: &str, replicas: u32, image: &str) -> DeploymentView {
        DeploymentView {
            namespace: namespace.into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            generation: 1,
            observed_generation: 1,
            spec_replicas: replicas,
            status_replicas: replicas,
            updated_replicas: replicas,
            ready_replicas: replicas,
            available_replicas: replicas,
            selector: BTreeMap::from([("app".to_owned(), name.to_owned())]),
            template: Arc::new(json!({
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image}]}
            })),
            ..Default::default()
        }
    }

    /// Inserts or replaces a Deployment.
    pub fn put(&self, d: DeploymentView) {
        if let Ok(mut state) = self.state.lock() {
            state
                .deployments
                .insert((d.namespace.clone(), d.name.clone()), d);
        }
    }

    /// A Deployment that must exist (tests).
    pub fn deployment_view(&self, namespace: &str, name: &str) -> DeploymentView {
        self.deployment(namespace, name).unwrap_or_default()
    }

    /// Changes a Deployment in place.
    pub fn update(&self, namespace: &str, name: &str, f: impl FnOnce(&mut DeploymentView)) {
        if let Ok(mut state) = self.state.lock()
            && let Some(d) = state
                .deployments
                .get_mut(&(namespace.to_owned(), name.to_owned()))
        {
            f(d);
        }
    }

    /// Inserts or replaces an HPA.
    pub fn put_hpa(&self, hpa: HpaView) {
        if let Ok(mut state) = self.state.lock() {
            state.hpas.retain(|h| h.name != hpa.name);
            state.hpas.push(hpa);
        }
    }

    /// Removes every HPA.
    pub fn clear_hpas(&self) {
        if let Ok(mut state) = self.state.lock() {
            state.hpas.clear();
        }
    }

    /// The write calls made so far, as `verb namespace/name detail`.
    pub fn calls(&self) -> Vec<String> {
        self.state
            .lock()
            .map(|s| s.calls.clone())
            .unwrap_or_default()
    }

    /// Kubernetes Events recorded so far, as (deployment, reason).
    pub fn events(&self) -> Vec<(String, String)> {
        self.state
            .lock()
            .map(|s| s.events.clone())
            .unwrap_or_default()
    }

    fn write(
        &self,
        call: String,
        namespace: &str,
        name: &str,
        f: impl FnOnce(&mut DeploymentView) -> Result<(), WorkloadError>,
    ) -> Result<(), WorkloadError> {
        let mut state = self
            .state
            .lock()
            .map_err(|_| WorkloadError::Patch("poisoned".into()))?;
        if !state.quiet {
            state.calls.push(call);
        }
        let d = state
            .deployments
            .get_mut(&(namespace.to_owned(), name.to_owned()))
            .ok_or_else(|| WorkloadError::NotFound {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            })?;
        f(d)
    }
}

impl Workloads for FakeWorkloads {
    fn deployment(&self, namespace: &str, name: &str) -> Option<DeploymentView> {
        self.state.lock().ok().and_then(|s| {
            s.deployments
                .get(&(namespace.to_owned(), name.to_owned()))
                .cloned()
        })
    }

    fn hpa_for(&self, namespace: &str, deployment: &str) -> Option<HpaView> {
        self.state.lock().ok().and_then(|s| {
            s.hpas
                .iter()
                .find(|h| h.namespace == namespace && h.target == deployment)
                .cloned()
        })
    }

    fn labelled(&self, key: &str, value: &str) -> Vec<DeploymentView> {
        self.state
            .lock()
            .map(|s| {
                s.deployments
                    .values()
                    .filter(|d| d.labels.get(key).map(String::as_str) == Some(value))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    fn scale<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        replicas: u32,
    ) -> BoxFuture<'a, Result<(), WorkloadError>> {
        let result = self.write(
            format!("scale {namespace}/{name} {replicas}"),
            namespace,
            name,
            |d| {
                d.spec_replicas = replicas;
                d.status_replicas = replicas;
                d.updated_replicas = replicas;
                d.ready_replicas = replicas;
                d.available_replicas = replicas;
                Ok(())
            },
        );
        Box::pin(async move { result })
    }

    fn set_images<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        images: &'a BTreeMap<String, String>,
    ) -> BoxFuture<'a, Result<(), WorkloadError>> {
        let result = self.write(
            format!("set-images {namespace}/{name}"),
            namespace,
            name,
            |d| {
                let containers = Arc::make_mut(&mut d.template)
                    .pointer_mut("/spec/containers")
                    .and_then(Value::as_array_mut)
                    .ok_or_else(|| WorkloadError::Patch("no containers".into()))?;
                for (container, image) in images {
                    let c = containers
                        .iter_mut()
                        .find(|c| c.get("name").and_then(Value::as_str) == Some(container))
                        .ok_or_else(|| WorkloadError::NoSuchContainer {
                            namespace: namespace.to_owned(),
                            name: name.to_owned(),
                            container: container.clone(),
                        })?;
                    c["image"] = Value::String(image.clone());
                }
                d.generation += 1;
                d.observed_generation = d.generation;
                Ok(())
            },
        );
        Box::pin(async move { result })
    }

    fn replace_template<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        template: &'a Value,
    ) -> BoxFuture<'a, Result<(), WorkloadError>> {
        let result = self.write(
            format!("replace-template {namespace}/{name}"),
            namespace,
            name,
            |d| {
                d.template = Arc::new(template.clone());
                d.generation += 1;
                d.observed_generation = d.generation;
                Ok(())
            },
        );
        Box::pin(async move { result })
    }

    fn record_event<'a>(
        &'a self,
        deployment: &'a DeploymentView,
        _rollout: &'a str,
        reason: &'a str,
        _message: &'a str,
        _warning: bool,
    ) -> BoxFuture<'a, ()> {
        if let Ok(mut state) = self.state.lock() {
            state
                .events
                .push((deployment.name.clone(), reason.to_owned()));
        }
        Box::pin(async {})
    }
}
