//! Deployments and HPAs in the Kubernetes API: reads from watch caches, writes as patches that
//! touch only replicas, images or the pod template, and events.k8s.io Events on GA Deployments
//! (through kube's `Recorder`, which folds repeats into a series).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{DeploymentView, HpaView, WorkloadError, Workloads};
use crate::cache::{Cache, Changes, Views};
use crate::store::crd;

/// The `reportingController` and `reportingInstance` of steerer's Events.
const REPORTER: &str = "steerer";

/// kube-apiserver refuses an events.k8s.io Event whose note is longer (in bytes).
const NOTE_LIMIT: usize = 1024;

/// Workloads backed by the Kubernetes API.
pub struct KubeWorkloads {
    client: Client,
    deployments: Cache<Deployment>,
    hpas: Cache<HorizontalPodAutoscaler>,
    /// The view of each cached Deployment, built once per version of it.
    views: Views<(String, String), DeploymentView>,
    /// Remembers the Events it wrote for six minutes, so a repeat patches the first one's
    /// series instead of creating another object.
    recorder: Recorder,
}

impl KubeWorkloads {
    fn view(&self, d: &Deployment) -> DeploymentView {
        self.views.of(
            (d.namespace().unwrap_or_default(), d.name_any()),
            &d.metadata,
            || deployment_view(d),
            || self.deployments.names(),
        )
    }

    /// Starts the Deployment and HPA watch caches for the served namespaces (empty = all).
    /// Their changes wake the waiters in `changes`.
    pub fn start(
        client: Client,
        namespaces: &[String],
        stop: &CancellationToken,
        changes: &Changes,
    ) -> Self {
        let reporter = Reporter {
            controller: REPORTER.into(),
            instance: Some(REPORTER.into()),
        };
        Self {
            deployments: Cache::start(&client, namespaces, stop, changes),
            hpas: Cache::start(&client, namespaces, stop, changes),
            recorder: Recorder::new(client.clone(), reporter),
            client,
            views: Views::default(),
        }
    }

    /// Waits until both caches hold their initial lists.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), WorkloadError> {
        self.deployments
            .wait_ready(timeout)
            .await
            .map_err(WorkloadError::Sync)?;
        self.hpas
            .wait_ready(timeout)
            .await
            .map_err(WorkloadError::Sync)
    }

    async fn patch(
        &self,
        action: &'static str,
        namespace: &str,
        name: &str,
        patch: Patch<Value>,
    ) -> Result<(), WorkloadError> {
        // The answer (the whole Deployment) is not read: the watch cache brings it.
        let request = kube::core::Request::new(Deployment::url_path(&(), Some(namespace)))
            .patch(name, &PatchParams::default(), &patch)
            .map_err(|e| WorkloadError::Patch(e.to_string()))?;
        self.client
            .request::<serde::de::IgnoredAny>(request)
            .await
            .map(|_| ())
            .map_err(|error| match error {
                kube::Error::Api(status) if status.is_not_found() => WorkloadError::NotFound {
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                },
                source => WorkloadError::Write {
                    action,
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                    source: Box::new(source),
                },
            })
    }
}

fn count(value: Option<i32>) -> u32 {
    value.and_then(|v| u32::try_from(v).ok()).unwrap_or(0)
}

/// Converts a Deployment to the engine's view.
pub fn deployment_view(d: &Deployment) -> DeploymentView {
    let spec = d.spec.as_ref();
    let status = d.status.as_ref();
    DeploymentView {
        namespace: d.namespace().unwrap_or_default(),
        name: d.name_any(),
        uid: d.uid().unwrap_or_default(),
        labels: d.labels().clone(),
        generation: d.metadata.generation.unwrap_or(0),
        observed_generation: status.and_then(|s| s.observed_generation).unwrap_or(0),
        spec_replicas: spec
            .map(|s| count(Some(s.replicas.unwrap_or(1))))
            .unwrap_or(1),
        status_replicas: count(status.and_then(|s| s.replicas)),
        updated_replicas: count(status.and_then(|s| s.updated_replicas)),
        ready_replicas: count(status.and_then(|s| s.ready_replicas)),
        available_replicas: count(status.and_then(|s| s.available_replicas)),
        unavailable_replicas: count(status.and_then(|s| s.unavailable_replicas)),
        selector: spec
            .and_then(|s| s.selector.match_labels.clone())
            .unwrap_or_default(),
        template: Arc::new(
            spec.and_then(|s| serde_json::to_value(&s.template).ok())
                .unwrap_or(Value::Null),
        ),
    }
}

fn hpa_view(h: &HorizontalPodAutoscaler) -> Option<HpaView> {
    let spec = h.spec.as_ref()?;
    if spec.scale_target_ref.kind != "Deployment" {
        return None;
    }
    let status = h.status.as_ref();
    Some(HpaView {
        namespace: h.namespace().unwrap_or_default(),
        name: h.name_any(),
        target: spec.scale_target_ref.name.clone(),
        min_replicas: count(Some(spec.min_replicas.unwrap_or(1))),
        max_replicas: count(Some(spec.max_replicas)),
        current_replicas: count(status.and_then(|s| s.current_replicas)),
        desired_replicas: count(status.map(|s| s.desired_replicas)),
        scaling_inactive: status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|conditions| {
                conditions
                    .iter()
                    .any(|c| c.type_ == "ScalingActive" && c.status == "False")
            }),
    })
}

impl Workloads for KubeWorkloads {
    fn deployment(&self, namespace: &str, name: &str) -> Option<DeploymentView> {
        match self.deployments.get(namespace, name, &()) {
            Some(d) => Some(self.view(&d)),
            None => {
                self.views.forget(namespace, name);
                None
            }
        }
    }

    fn hpa_for(&self, namespace: &str, deployment: &str) -> Option<HpaView> {
        self.hpas
            .all()
            .iter()
            .filter(|h| h.namespace().as_deref() == Some(namespace))
            .filter_map(|h| hpa_view(h))
            .find(|h| h.target == deployment)
    }

    fn labelled(&self, key: &str, value: &str) -> Vec<DeploymentView> {
        self.deployments
            .all()
            .iter()
            .filter(|d| d.labels().get(key).map(String::as_str) == Some(value))
            .map(|d| self.view(d))
            .collect()
    }

    fn scale<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        replicas: u32,
    ) -> BoxFuture<'a, Result<(), WorkloadError>> {
        Box::pin(async move {
            let patch = Patch::Merge(json!({"spec": {"replicas": replicas}}));
            self.patch("scale", namespace, name, patch).await
        })
    }

    fn set_images<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        images: &'a BTreeMap<String, String>,
    ) -> BoxFuture<'a, Result<(), WorkloadError>> {
        Box::pin(async move {
            let current =
                self.deployment(namespace, name)
                    .ok_or_else(|| WorkloadError::NotFound {
                        namespace: namespace.to_owned(),
                        name: name.to_owned(),
                    })?;
            let ops = image_patch(&current.template, images).map_err(|container| {
                WorkloadError::NoSuchContainer {
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                    container,
                }
            })?;
            if ops.as_array().is_none_or(Vec::is_empty) {
                return Ok(());
            }
            self.patch("set images of", namespace, name, json_patch(ops)?)
                .await
        })
    }

    fn replace_template<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        template: &'a Value,
    ) -> BoxFuture<'a, Result<(), WorkloadError>> {
        Box::pin(async move {
            // A merge patch would keep labels and annotations GA has and the canary lacks:
            // the template is replaced whole.
            let ops = json!([{"op": "replace", "path": "/spec/template", "value": template}]);
            self.patch("promote template onto", namespace, name, json_patch(ops)?)
                .await
        })
    }

    fn record_event<'a>(
        &'a self,
        deployment: &'a DeploymentView,
        rollout: &'a str,
        reason: &'a str,
        message: &'a str,
        warning: bool,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let event = event_for(deployment, rollout, reason, message, warning);
            if let Err(error) = self
                .recorder
                .publish(&event, &deployment_reference(deployment))
                .await
            {
                tracing::debug!(%error, deployment = %deployment.name, reason, "failed to record event");
            }
        })
    }
}

/// The Event about `deployment`, related to the rollout's record: the Recorder folds repeats
/// of one reason for one rollout into a series, while another rollout of the same Deployment
/// starts Events of its own (a series keeps its first note, which names the rollout).
fn event_for(
    deployment: &DeploymentView,
    rollout: &str,
    reason: &str,
    message: &str,
    warning: bool,
) -> Event {
    Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.to_owned(),
        note: Some(truncated(message, NOTE_LIMIT).to_owned()),
        action: reason.to_owned(),
        secondary: Some(ObjectReference {
            api_version: Some(format!("{}/{}", crd::GROUP, crd::VERSION)),
            kind: Some(crd::KIND.into()),
            name: Some(rollout.to_owned()),
            namespace: Some(deployment.namespace.clone()),
            ..Default::default()
        }),
    }
}

fn deployment_reference(deployment: &DeploymentView) -> ObjectReference {
    ObjectReference {
        api_version: Some("apps/v1".into()),
        kind: Some("Deployment".into()),
        name: Some(deployment.name.clone()),
        namespace: Some(deployment.namespace.clone()),
        uid: Some(deployment.uid.clone()).filter(|u| !u.is_empty()),
        ..Default::default()
    }
}

/// The longest prefix of `text` within `limit` bytes that ends on a character boundary.
fn truncated(text: &str, limit: usize) -> &str {
    let mut end = text.len().min(limit);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn json_patch(ops: Value) -> Result<Patch<Value>, WorkloadError> {
    serde_json::from_value::<json_patch::Patch>(ops)
        .map(Patch::Json)
        .map_err(|error| WorkloadError::Patch(error.to_string()))
}

/// JSON-patch operations setting the images of the named containers, each guarded by a test
/// of the container's name so a reordered container list fails instead of writing the wrong
/// container. `Err(name)` names a container the template lacks.
pub fn image_patch(template: &Value, images: &BTreeMap<String, String>) -> Result<Value, String> {
    let containers = template
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut ops = Vec::new();
    for (name, image) in images {
        let index = containers
            .iter()
            .position(|c| c.get("name").and_then(Value::as_str) == Some(name))
            .ok_or_else(|| name.clone())?;
        if containers[index].get("image").and_then(Value::as_str) == Some(image) {
            continue;
        }
        ops.push(json!({"op": "test", "path": format!("/spec/template/spec/containers/{index}/name"), "value": name}));
        ops.push(json!({"op": "replace", "path": format!("/spec/template/spec/containers/{index}/image"), "value": image}));
    }
    Ok(Value::Array(ops))
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn deployment(resource_version: Option<&str>, image: &str) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "podinfo", "namespace": "test", "uid": "u1", "resourceVersion": resource_version},
            "spec": {
                "selector": {"matchLabels": {"app": "podinfo"}},
                "template": {"metadata": {"labels": {"app": "podinfo"}}, "spec": {"containers": [{"name": "app", "image": image}]}}
            }
        }))
        .unwrap()
    }

    fn view(views: &Views<(String, String), DeploymentView>, d: &Deployment) -> DeploymentView {
        views.of(
            (d.namespace().unwrap_or_default(), d.name_any()),
            &d.metadata,
            || deployment_view(d),
            HashSet::new,
        )
    }

    #[test]
    fn an_event_is_about_the_deployment_and_related_to_the_rollout_record() {
        let ga = deployment_view(&deployment(Some("1"), "podinfo:1"));
        let event = event_for(&ga, "r-1", "CheckFailed", "rollout r-1: check failed", true);
        assert_eq!(event.type_, EventType::Warning);
        assert_eq!(
            (event.reason.as_str(), event.action.as_str()),
            ("CheckFailed", "CheckFailed")
        );
        assert_eq!(event.note.as_deref(), Some("rollout r-1: check failed"));
        let related = event.secondary.unwrap();
        assert_eq!(related.api_version.as_deref(), Some("steerer.dev/v1alpha1"));
        assert_eq!(related.kind.as_deref(), Some("Rollout"));
        assert_eq!(related.name.as_deref(), Some("r-1"));
        assert_eq!(related.namespace.as_deref(), Some("test"));
        let regarding = deployment_reference(&ga);
        assert_eq!(regarding.kind.as_deref(), Some("Deployment"));
        assert_eq!(regarding.name.as_deref(), Some("podinfo"));
        assert_eq!(regarding.uid.as_deref(), Some("u1"));
        let normal = event_for(&ga, "r-1", "WeightChanged", "weight 10", false);
        assert_eq!(normal.type_, EventType::Normal);
    }

    #[test]
    fn a_long_note_is_cut_to_the_api_servers_limit_in_bytes_on_a_character_boundary() {
        let ga = deployment_view(&deployment(Some("1"), "podinfo:1"));
        // Two bytes a character: 1,023 bytes of 'é' would split the 512th.
        let message = format!("x{}", "é".repeat(600));
        let note = event_for(&ga, "r-1", "Failed", &message, true)
            .note
            .unwrap();
        assert_eq!(note.len(), 1023);
        assert!(message.starts_with(&note));
        assert_eq!(truncated("short", NOTE_LIMIT), "short");
    }

    #[test]
    fn a_view_is_built_once_per_version_of_its_deployment() {
        let views = Views::default();
        let first = view(&views, &deployment(Some("1"), "podinfo:1"));
        assert_eq!(first.images()["app"], "podinfo:1");
        // The same version again: the memo's view (a different image under the same version
        // shows it was not rebuilt).
        let again = view(&views, &deployment(Some("1"), "podinfo:2"));
        assert_eq!(again.images()["app"], "podinfo:1");
        // A new version: built afresh.
        let next = view(&views, &deployment(Some("2"), "podinfo:2"));
        assert_eq!(next.images()["app"], "podinfo:2");
        // No resourceVersion: never from the memo.
        let unversioned = view(&views, &deployment(None, "podinfo:3"));
        assert_eq!(unversioned.images()["app"], "podinfo:3");
        // Gone from the cache: forgotten.
        views.forget("test", "podinfo");
        assert!(views.is_empty());
    }
}
