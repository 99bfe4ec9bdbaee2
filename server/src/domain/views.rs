//! What the engine sees of the cluster, free of kube: plain views of Deployments, HPAs and a
//! VirtualService's split, and the pure rules on pod templates (revision hash, the template
//! GA gets at promotion).

use std::collections::BTreeMap;
use std::sync::Arc;

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
    /// `spec.template` as JSON, shared by the copies of one view.
    pub template: Arc<Value>,
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

/// What a VirtualService says about a rollout's split, as last seen.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RouteView {
    /// Not looked at, or it could not be read (a transient failure): nothing is known.
    #[default]
    Unknown,
    /// The VirtualService does not exist.
    Missing,
    /// It exists but no longer splits traffic between the two Services as a rollout needs;
    /// the sentence says why.
    Broken(String),
    /// It splits traffic: the canary weight, and the fingerprint of the split routes with
    /// their weights left out.
    Split {
        canary_weight: u32,
        fingerprint: String,
    },
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
