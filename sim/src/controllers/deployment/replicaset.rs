//! The ReplicaSet objects a Deployment owns, as kube-controller-manager writes them, and the
//! pruning of old revisions beyond `revisionHistoryLimit`.

use std::time::Instant;

use serde_json::{Map, Value, json};

use super::pods::ReplicaSet;
use super::spec::{Spec, Strategy};
use super::{POD_TEMPLATE_HASH_LABEL, REVISION_ANNOTATION, State, replicasets};
use crate::store::{Store, UpdateScope};

pub(super) fn set_label(obj: &mut Value, key: &str, value: &str) {
    set_meta_map(obj, "labels", key, value);
}

pub(super) fn set_annotation(obj: &mut Value, key: &str, value: &str) {
    set_meta_map(obj, "annotations", key, value);
}

fn set_meta_map(obj: &mut Value, field: &str, key: &str, value: &str) {
    let Some(root) = obj.as_object_mut() else {
        return;
    };
    let meta = root.entry("metadata").or_insert_with(|| json!({}));
    let Some(meta) = meta.as_object_mut() else {
        return;
    };
    let map = meta.entry(field).or_insert_with(|| json!({}));
    if !map.is_object() {
        *map = json!({});
    }
    if let Some(map) = map.as_object_mut() {
        map.insert(key.into(), json!(value));
    }
}

/// The ReplicaSet object as kube-controller-manager writes it (without server metadata).
pub(super) fn replicaset_object(
    ns: &str,
    deployment: &str,
    deployment_uid: &str,
    spec: &Spec,
    set: &ReplicaSet,
    now: Instant,
) -> Value {
    let labels = set
        .template
        .pointer("/metadata/labels")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let mut selector = spec.selector.clone();
    if !selector.is_object() {
        selector = json!({});
    }
    let mut match_labels = selector
        .get("matchLabels")
        .cloned()
        .unwrap_or_else(|| json!({}));
    match_labels[POD_TEMPLATE_HASH_LABEL] = json!(set.hash);
    selector["matchLabels"] = match_labels;
    let max_replicas = match spec.strategy {
        Strategy::RollingUpdate { surge, .. } => spec.replicas + surge,
        Strategy::Recreate => spec.replicas,
    };
    let replicas = set.len();
    let mut status = Map::new();
    for (field, value) in [
        ("replicas", replicas),
        ("fullyLabeledReplicas", replicas),
        ("readyReplicas", set.ready(now)),
        ("availableReplicas", set.available(now, spec.min_ready)),
    ] {
        if value != 0 {
            status.insert(field.into(), json!(value));
        }
    }
    let mut rs_spec = json!({"replicas": replicas, "selector": selector, "template": set.template});
    if !spec.min_ready.is_zero() {
        rs_spec["minReadySeconds"] = json!(spec.min_ready.as_secs());
    }
    json!({
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": set.name,
            "namespace": ns,
            "labels": labels,
            "annotations": {
                "deployment.kubernetes.io/desired-replicas": spec.replicas.to_string(),
                "deployment.kubernetes.io/max-replicas": max_replicas.to_string(),
                REVISION_ANNOTATION: set.revision.to_string(),
            },
            "ownerReferences": [{
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": deployment,
                "uid": deployment_uid,
                "controller": true,
                "blockOwnerDeletion": true,
            }],
        },
        "spec": rs_spec,
        "status": Value::Object(status),
    })
}

pub(super) fn write_replicaset(
    store: &Store,
    ns: &str,
    desired: &Value,
) -> Result<(), crate::ApiError> {
    let name = desired["metadata"]["name"].as_str().unwrap_or_default();
    let result = store.update(&replicasets(), ns, name, UpdateScope::All, |old| {
        let mut new = old.clone();
        for field in ["labels", "annotations", "ownerReferences"] {
            new["metadata"][field] = desired["metadata"][field].clone();
        }
        new["spec"] = desired["spec"].clone();
        let generation = old
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        let bump = i64::from(old.get("spec") != desired.get("spec"));
        let mut status = desired["status"].clone();
        status["observedGeneration"] = json!(generation + bump);
        new["status"] = status;
        Ok(new)
    });
    match result {
        Ok(_) => Ok(()),
        Err(err) if err.code == 404 => {
            let mut obj = desired.clone();
            obj["status"]["observedGeneration"] = json!(1);
            store.create(&replicasets(), ns, obj).map(|_| ())
        }
        Err(err) => Err(err),
    }
}

/// Deletes the oldest empty ReplicaSets beyond `revisionHistoryLimit`.
pub(super) fn prune_history(
    store: &Store,
    ns: &str,
    state: &mut State,
    new_index: Option<usize>,
    spec: &Spec,
) {
    let new_name = new_index.map(|i| state.sets[i].name.clone());
    let mut empty: Vec<(u64, String)> = state
        .sets
        .iter()
        .filter(|s| s.pods.is_empty() && Some(&s.name) != new_name.as_ref())
        .map(|s| (s.revision, s.name.clone()))
        .collect();
    if empty.len() <= spec.history_limit {
        return;
    }
    empty.sort();
    let excess = empty.len() - spec.history_limit;
    let doomed: Vec<String> = empty
        .into_iter()
        .take(excess)
        .map(|(_, name)| name)
        .collect();
    for name in doomed {
        let _ = store.delete(&replicasets(), ns, &name, None);
        state.sets.retain(|s| s.name != name);
    }
}
