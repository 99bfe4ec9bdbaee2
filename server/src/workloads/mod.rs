//! Workloads: the Deployments and HPAs a rollout drives, seen through plain views, plus the
//! pure rules on them (health gate, pod-template revision, promoted template).

pub mod fake;
pub mod kube;

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// What the engine needs to know about one Deployment.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DeploymentView {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub labels: BTreeMap<String, String>,
    pub generation: i64,
    pub observed_generation: i64,
    /// `spec.replicas` (absent counts as 1, as Kubernetes defaults it).
    pub spec_replicas: u32,
    /// `status.replicas`: pods of every revision.
    pub status_replicas: u32,
    pub updated_replicas: u32,
    pub ready_replicas: u32,
    pub available_replicas: u32,
    pub unavailable_replicas: u32,
    /// `spec.selector.matchLabels`.
    pub selector: BTreeMap<String, String>,
    /// `spec.template` as JSON.
    pub template: Value,
}

impl DeploymentView {
    /// The revision of this Deployment: a stable hash of its pod template.
    pub fn revision(&self) -> String {
        template_hash(&self.template)
    }

    /// Container name -> image of the pod template.
    pub fn images(&self) -> BTreeMap<String, String> {
        let mut images = BTreeMap::new();
        if let Some(containers) = self
            .template
            .pointer("/spec/containers")
            .and_then(Value::as_array)
        {
            for container in containers {
                if let (Some(name), Some(image)) = (
                    container.get("name").and_then(Value::as_str),
                    container.get("image").and_then(Value::as_str),
                ) {
                    images.insert(name.to_owned(), image.to_owned());
                }
            }
        }
        images
    }
}

/// What the engine needs to know about the HPA scaling a Deployment.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HpaView {
    pub namespace: String,
    pub name: String,
    /// Name of the Deployment it scales.
    pub target: String,
    pub min_replicas: u32,
    pub max_replicas: u32,
    pub current_replicas: u32,
    pub desired_replicas: u32,
    /// Its `ScalingActive` condition is `False`: it cannot compute a replica count (its
    /// metrics are unavailable, or it is disabled) and changes nothing, whatever its stale
    /// `desiredReplicas` says.
    pub scaling_inactive: bool,
}

/// Errors writing Deployments.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error("deployment {namespace}/{name} not found")]
    NotFound { namespace: String, name: String },
    #[error("failed to {action} deployment {namespace}/{name}: {message}")]
    Write {
        action: &'static str,
        namespace: String,
        name: String,
        /// The API server's HTTP status, when it answered one.
        code: Option<u16>,
        message: String,
    },
    #[error("deployment {namespace}/{name} has no container named {container}")]
    NoSuchContainer {
        namespace: String,
        name: String,
        container: String,
    },
    #[error("invalid patch: {0}")]
    Patch(String),
    #[error("workload caches failed to sync: {0}")]
    Sync(String),
}

impl WorkloadError {
    /// Whether trying again cannot help: the Deployment or container is gone, the patch is
    /// malformed, or the API server refuses the request itself (403, 422 and the like).
    pub fn is_permanent(&self) -> bool {
        match self {
            WorkloadError::NotFound { .. }
            | WorkloadError::NoSuchContainer { .. }
            | WorkloadError::Patch(_) => true,
            WorkloadError::Write { code, .. } => code.is_some_and(crate::retry::is_permanent),
            WorkloadError::Sync(_) => false,
        }
    }
}

/// Reads (from watch caches) and writes of Deployments and HPAs.
pub trait Workloads: Send + Sync {
    /// The Deployment as last seen; `None` when it does not exist.
    fn deployment(&self, namespace: &str, name: &str) -> Option<DeploymentView>;
    /// The HPA whose scale target is this Deployment, if any.
    fn hpa_for(&self, namespace: &str, deployment: &str) -> Option<HpaView>;
    /// Deployments carrying `key=value`, in the given namespaces (empty = all).
    fn labelled(&self, key: &str, value: &str) -> Vec<DeploymentView>;
    /// Sets `spec.replicas`.
    fn scale<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        replicas: u32,
    ) -> BoxFuture<'a, Result<(), WorkloadError>>;
    /// Sets the images of named containers of the pod template.
    fn set_images<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        images: &'a BTreeMap<String, String>,
    ) -> BoxFuture<'a, Result<(), WorkloadError>>;
    /// Replaces the pod template of `name`.
    fn replace_template<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        template: &'a Value,
    ) -> BoxFuture<'a, Result<(), WorkloadError>>;
    /// Records a Kubernetes Event on the Deployment; best effort.
    fn record_event<'a>(
        &'a self,
        deployment: &'a DeploymentView,
        reason: &'a str,
        message: &'a str,
        warning: bool,
    ) -> BoxFuture<'a, ()>;
}

/// Why a Deployment cannot take a step now, as a sentence; `None` when it is settled and
/// healthy. `role` is "canary" or "GA".
pub fn halt_reason(role: &str, d: &DeploymentView, hpa: Option<&HpaView>) -> Option<String> {
    if d.observed_generation < d.generation {
        return Some(format!(
            "{role} rolling update in progress, spec change not yet observed by the controller"
        ));
    }
    if d.updated_replicas < d.spec_replicas {
        return Some(format!(
            "{role} rolling update in progress, {} of {} replicas updated",
            d.updated_replicas, d.spec_replicas
        ));
    }
    if d.status_replicas > d.spec_replicas {
        return Some(format!(
            "{role} rolling update in progress, {} old replicas still terminating",
            d.status_replicas - d.spec_replicas
        ));
    }
    if let Some(hpa) = hpa {
        if !hpa.scaling_inactive && hpa.desired_replicas != hpa.current_replicas {
            return Some(format!(
                "HPA {} is scaling the {role} from {} to {} replicas",
                hpa.name, hpa.current_replicas, hpa.desired_replicas
            ));
        }
        if d.spec_replicas != hpa.current_replicas && d.spec_replicas != 0 {
            return Some(format!(
                "HPA {} has not settled on the {role}'s {} replicas yet (it last saw {})",
                hpa.name, d.spec_replicas, hpa.current_replicas
            ));
        }
    }
    if d.unavailable_replicas > 0
        || d.available_replicas < d.spec_replicas
        || d.ready_replicas < d.spec_replicas
    {
        let ready = d.ready_replicas.min(d.available_replicas);
        return Some(format!(
            "{role} has unhealthy pods, {} of {} replicas ready",
            ready, d.spec_replicas
        ));
    }
    None
}

/// The template GA gets at promotion: the canary's pod template with the canary's selector
/// labels swapped for GA's own, so GA's selector keeps matching its pods.
pub fn promoted_template(
    canary_template: &Value,
    canary_selector: &BTreeMap<String, String>,
    ga_selector: &BTreeMap<String, String>,
) -> Value {
    let mut template = canary_template.clone();
    if !template.is_object() {
        template = Value::Object(serde_json::Map::new());
    }
    if let Some(object) = template.as_object_mut() {
        let metadata = object
            .entry("metadata")
            .or_insert_with(|| Value::Object(serde_json::Map::new()));
        if !metadata.is_object() {
            *metadata = Value::Object(serde_json::Map::new());
        }
        if let Some(metadata) = metadata.as_object_mut() {
            let labels = metadata
                .entry("labels")
                .or_insert_with(|| Value::Object(serde_json::Map::new()));
            if !labels.is_object() {
                *labels = Value::Object(serde_json::Map::new());
            }
            if let Some(labels) = labels.as_object_mut() {
                for key in canary_selector.keys() {
                    labels.remove(key);
                }
                for (key, value) in ga_selector {
                    labels.insert(key.clone(), Value::String(value.clone()));
                }
            }
        }
    }
    template
}

/// A stable hash of a pod template: independent of key order, 10 hex characters.
pub fn template_hash(template: &Value) -> String {
    let mut hasher = Sha256::new();
    feed(&mut hasher, template);
    let digest = hasher.finalize();
    hex::encode(&digest[..5])
}

fn feed(hasher: &mut Sha256, value: &Value) {
    match value {
        Value::Null => hasher.update(b"n"),
        Value::Bool(b) => hasher.update(if *b { b"t" } else { b"f" }),
        Value::Number(n) => {
            hasher.update(b"#");
            hasher.update(n.to_string().as_bytes());
        }
        Value::String(s) => {
            hasher.update(b"\"");
            hasher.update((s.len() as u64).to_le_bytes());
            hasher.update(s.as_bytes());
        }
        Value::Array(items) => {
            hasher.update(b"[");
            hasher.update((items.len() as u64).to_le_bytes());
            for item in items {
                feed(hasher, item);
            }
        }
        Value::Object(map) => {
            hasher.update(b"{");
            hasher.update((map.len() as u64).to_le_bytes());
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            for key in keys {
                hasher.update((key.len() as u64).to_le_bytes());
                hasher.update(key.as_bytes());
                if let Some(item) = map.get(key) {
                    feed(hasher, item);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settled(replicas: u32) -> DeploymentView {
        DeploymentView {
            namespace: "test".into(),
            name: "podinfo-canary".into(),
            generation: 2,
            observed_generation: 2,
            spec_replicas: replicas,
            status_replicas: replicas,
            updated_replicas: replicas,
            ready_replicas: replicas,
            available_replicas: replicas,
            ..Default::default()
        }
    }

    #[test]
    fn settled_deployment_does_not_halt() {
        assert_eq!(halt_reason("canary", &settled(3), None), None);
    }

    #[test]
    fn rolling_update_halts_with_updated_count() {
        let mut d = settled(3);
        d.updated_replicas = 2;
        assert_eq!(
            halt_reason("canary", &d, None).as_deref(),
            Some("canary rolling update in progress, 2 of 3 replicas updated")
        );
    }

    #[test]
    fn unobserved_generation_halts() {
        let mut d = settled(3);
        d.generation = 3;
        assert!(
            halt_reason("GA", &d, None)
                .unwrap()
                .starts_with("GA rolling update in progress")
        );
    }

    #[test]
    fn unready_pods_halt() {
        let mut d = settled(3);
        d.ready_replicas = 1;
        d.available_replicas = 1;
        d.unavailable_replicas = 2;
        assert_eq!(
            halt_reason("canary", &d, None).as_deref(),
            Some("canary has unhealthy pods, 1 of 3 replicas ready")
        );
    }

    #[test]
    fn hpa_scaling_halts() {
        let d = settled(2);
        let hpa = HpaView {
            name: "podinfo-canary".into(),
            target: "podinfo-canary".into(),
            current_replicas: 2,
            desired_replicas: 4,
            ..Default::default()
        };
        assert_eq!(
            halt_reason("canary", &d, Some(&hpa)).as_deref(),
            Some("HPA podinfo-canary is scaling the canary from 2 to 4 replicas")
        );
    }

    #[test]
    fn an_hpa_that_cannot_compute_replicas_is_not_scaling() {
        // kube-apiserver's HPA controller without metrics: ScalingActive=False, and the
        // desiredReplicas it never computed left at 0.
        let d = settled(2);
        let hpa = HpaView {
            name: "podinfo-canary".into(),
            target: "podinfo-canary".into(),
            current_replicas: 2,
            desired_replicas: 0,
            scaling_inactive: true,
            ..Default::default()
        };
        assert_eq!(halt_reason("canary", &d, Some(&hpa)), None);
    }

    #[test]
    fn hash_ignores_key_order_and_sees_values() {
        let a = json!({"spec": {"containers": [{"name": "app", "image": "a:1"}]}, "metadata": {}});
        let b = json!({"metadata": {}, "spec": {"containers": [{"image": "a:1", "name": "app"}]}});
        let c = json!({"metadata": {}, "spec": {"containers": [{"image": "a:2", "name": "app"}]}});
        assert_eq!(template_hash(&a), template_hash(&b));
        assert_ne!(template_hash(&a), template_hash(&c));
        assert_eq!(template_hash(&a).len(), 10);
    }

    #[test]
    fn promoted_template_keeps_ga_selector_labels() {
        let canary = json!({
            "metadata": {"labels": {"app": "podinfo-canary", "team": "x"},
                         "annotations": {"a": "1"}},
            "spec": {"containers": [{"name": "app", "image": "podinfo:2"}]}
        });
        let canary_sel = BTreeMap::from([("app".to_owned(), "podinfo-canary".to_owned())]);
        let ga_sel = BTreeMap::from([("app".to_owned(), "podinfo".to_owned())]);
        let t = promoted_template(&canary, &canary_sel, &ga_sel);
        assert_eq!(
            t["metadata"]["labels"],
            json!({"app": "podinfo", "team": "x"})
        );
        assert_eq!(t["metadata"]["annotations"], json!({"a": "1"}));
        assert_eq!(t["spec"], canary["spec"]);
    }
}
