//! The patch formats of the Kubernetes API: JSON merge patch (RFC 7386), JSON patch
//! (RFC 6902) and strategic merge patch for built-in kinds, where keyed lists (containers,
//! env, ports, volumes, ...) merge element by element instead of being replaced.

use serde_json::{Map, Value};

/// A patch format, from the request's `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/merge-patch+json`.
    Merge,
    /// `application/json-patch+json`.
    Json,
    /// `application/strategic-merge-patch+json`.
    Strategic,
    /// `application/apply-patch+yaml` (server-side apply).
    Apply,
}

impl PatchType {
    /// The patch type of a `Content-Type` header value (parameters ignored).
    pub fn from_content_type(content_type: &str) -> Option<Self> {
        let media = content_type.split(';').next().unwrap_or("").trim();
        match media.to_ascii_lowercase().as_str() {
            "application/merge-patch+json" => Some(Self::Merge),
            "application/json-patch+json" => Some(Self::Json),
            "application/strategic-merge-patch+json" => Some(Self::Strategic),
            "application/apply-patch+yaml" => Some(Self::Apply),
            _ => None,
        }
    }
}

/// Why a patch could not be applied; the API maps these to 400 and 422.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PatchError {
    /// The patch document itself is malformed (400 BadRequest).
    #[error("{0}")]
    Malformed(String),
    /// The patch is well-formed but cannot be applied (422 Invalid), e.g. a failing `test`.
    #[error("{0}")]
    Failed(String),
}

/// Applies an RFC 7386 merge patch. The patch must be a JSON object.
pub fn merge_patch(doc: &Value, patch: &Value) -> Result<Value, PatchError> {
    if !patch.is_object() {
        return Err(PatchError::Malformed(
            "the patch must be a JSON object".into(),
        ));
    }
    let mut out = doc.clone();
    json_patch::merge(&mut out, patch);
    Ok(out)
}

/// Applies an RFC 6902 JSON patch given as raw bytes. A body that is not a JSON array is
/// malformed; operations that do not parse or do not apply (including a failing `test`) fail
/// as kube-apiserver fails them, with 422.
pub fn json_patch_bytes(doc: &Value, body: &[u8]) -> Result<Value, PatchError> {
    let ops: Value = serde_json::from_slice(body)
        .map_err(|e| PatchError::Malformed(format!("error decoding patch: {e}")))?;
    json_patch_value(doc, ops)
}

/// Applies an RFC 6902 JSON patch given as a JSON value.
pub fn json_patch_value(doc: &Value, ops: Value) -> Result<Value, PatchError> {
    if !ops.is_array() {
        return Err(PatchError::Malformed(
            "error decoding patch: json: cannot unmarshal object into Go value of type jsonpatch.Patch"
                .into(),
        ));
    }
    let patch: json_patch::Patch =
        serde_json::from_value(ops).map_err(|e| PatchError::Failed(e.to_string()))?;
    let mut out = doc.clone();
    json_patch::patch(&mut out, &patch.0).map_err(|e| PatchError::Failed(e.to_string()))?;
    Ok(out)
}

/// Applies a strategic merge patch to a built-in kind. Maps merge recursively, `null` deletes a
/// field, keyed lists merge by their merge key, other lists are replaced. Directives:
/// `$patch: replace|delete` (on maps and on list elements), `$retainKeys`,
/// `$deleteFromPrimitiveList/FIELD`; `$setElementOrder/FIELD` is accepted and ignored.
pub fn strategic_merge_patch(doc: &Value, patch: &Value) -> Result<Value, PatchError> {
    let Some(patch) = patch.as_object() else {
        return Err(PatchError::Malformed(
            "the patch must be a JSON object".into(),
        ));
    };
    let mut out = doc.clone();
    let Some(map) = out.as_object_mut() else {
        return Err(PatchError::Failed("the object is not a JSON object".into()));
    };
    let mut path = Vec::new();
    match merge_map(map, patch, &mut path)? {
        MapOutcome::Keep => Ok(out),
        MapOutcome::Delete => Err(PatchError::Failed(
            "a $patch: delete directive cannot delete the whole object".into(),
        )),
    }
}

#[derive(Debug, PartialEq)]
enum MapOutcome {
    Keep,
    Delete,
}

/// How a list field merges, from the Kubernetes types' `patchStrategy`/`patchMergeKey` tags.
#[derive(Debug, PartialEq)]
enum ListStrategy {
    /// Elements are maps merged by this key.
    ByKey(&'static str),
    /// A list of scalars merged as a set (`finalizers`).
    Set,
    /// The patch's list replaces the stored one.
    Replace,
}

const CONTAINER_LISTS: [&str; 3] = ["containers", "initContainers", "ephemeralContainers"];

fn list_strategy(path: &[String], field: &str) -> ListStrategy {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "resourceClaims"
        | "schedulingGates" => ListStrategy::ByKey("name"),
        "volumeMounts" => ListStrategy::ByKey("mountPath"),
        "volumeDevices" => ListStrategy::ByKey("devicePath"),
        "hostAliases" => ListStrategy::ByKey("ip"),
        "topologySpreadConstraints" => ListStrategy::ByKey("topologyKey"),
        "conditions" => ListStrategy::ByKey("type"),
        "ownerReferences" => ListStrategy::ByKey("uid"),
        "finalizers" => ListStrategy::Set,
        "ports" => {
            if path
                .last()
                .is_some_and(|parent| CONTAINER_LISTS.contains(&parent.as_str()))
            {
                ListStrategy::ByKey("containerPort")
            } else {
                ListStrategy::ByKey("port")
            }
        }
        _ => ListStrategy::Replace,
    }
}

fn directive(map: &Map<String, Value>) -> Result<Option<&str>, PatchError> {
    match map.get("$patch") {
        None => Ok(None),
        Some(Value::String(s)) if s == "replace" || s == "delete" || s == "merge" => {
            Ok(Some(s.as_str()))
        }
        Some(other) => Err(PatchError::Malformed(format!(
            "Unknown patch type: {other} in map"
        ))),
    }
}

/// A patch value with every directive removed, for fields the stored object does not have.
fn strip_directives(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .filter(|v| {
                    v.as_object()
                        .is_none_or(|m| !(m.len() == 1 && m.contains_key("$patch")))
                })
                .filter(|v| v.get("$patch").and_then(Value::as_str) != Some("delete"))
                .map(strip_directives)
                .collect(),
        ),
        other => other.clone(),
    }
}

fn merge_map(
    orig: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    path: &mut Vec<String>,
) -> Result<MapOutcome, PatchError> {
    match directive(patch)? {
        Some("delete") => return Ok(MapOutcome::Delete),
        Some("replace") => {
            if let Value::Object(replacement) = strip_directives(&Value::Object(patch.clone())) {
                *orig = replacement;
            }
            return Ok(MapOutcome::Keep);
        }
        _ => {}
    }
    for (key, value) in patch {
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            let remove = value.as_array().cloned().unwrap_or_default();
            if let Some(Value::Array(items)) = orig.get_mut(field) {
                items.retain(|item| !remove.contains(item));
            }
            continue;
        }
        if key.starts_with('$') {
            continue;
        }
        if value.is_null() {
            orig.remove(key);
            continue;
        }
        match (orig.get_mut(key), value) {
            (Some(Value::Object(o)), Value::Object(p)) => {
                path.push(key.clone());
                let outcome = merge_map(o, p, path)?;
                path.pop();
                if outcome == MapOutcome::Delete {
                    orig.remove(key);
                }
            }
            (Some(Value::Array(o)), Value::Array(p)) => {
                let strategy = list_strategy(path, key);
                path.push(key.clone());
                merge_list(o, p, strategy, path)?;
                path.pop();
            }
            (_, Value::Object(p)) if directive(p)? == Some("delete") => {
                orig.remove(key);
            }
            (_, v) => {
                orig.insert(key.clone(), strip_directives(v));
            }
        }
    }
    if let Some(retain) = patch.get("$retainKeys").and_then(Value::as_array) {
        let keep: Vec<&str> = retain.iter().filter_map(Value::as_str).collect();
        orig.retain(|k, _| keep.contains(&k.as_str()));
    }
    Ok(MapOutcome::Keep)
}

fn merge_list(
    orig: &mut Vec<Value>,
    patch: &[Value],
    strategy: ListStrategy,
    path: &mut Vec<String>,
) -> Result<(), PatchError> {
    let replace_all = patch.iter().any(|v| {
        v.as_object()
            .is_some_and(|m| m.get("$patch").and_then(Value::as_str) == Some("replace"))
    });
    if replace_all || strategy == ListStrategy::Replace {
        if let Value::Array(items) = strip_directives(&Value::Array(patch.to_vec())) {
            *orig = items;
        }
        return Ok(());
    }
    match strategy {
        ListStrategy::Set => {
            for item in patch {
                if !orig.contains(item) {
                    orig.push(item.clone());
                }
            }
        }
        ListStrategy::ByKey(merge_key) => {
            for item in patch {
                let Some(p) = item.as_object() else {
                    orig.push(item.clone());
                    continue;
                };
                let Some(key) = p.get(merge_key) else {
                    return Err(PatchError::Failed(format!(
                        "map: {item} does not contain declared merge key: {merge_key}"
                    )));
                };
                let pos = orig.iter().position(|o| o.get(merge_key) == Some(key));
                match (pos, directive(p)?) {
                    (Some(i), Some("delete")) => {
                        orig.remove(i);
                    }
                    (None, Some("delete")) => {}
                    (Some(i), _) => {
                        if let Some(o) = orig[i].as_object_mut() {
                            merge_map(o, p, path)?;
                        }
                    }
                    (None, _) => orig.push(strip_directives(item)),
                }
            }
        }
        ListStrategy::Replace => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment() -> Value {
        json!({
            "metadata": {"name": "web", "labels": {"app": "web", "tier": "front"},
                         "finalizers": ["a"]},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [
                {"name": "app", "image": "app:1",
                 "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                 "ports": [{"containerPort": 80, "protocol": "TCP"}],
                 "args": ["--x"]},
                {"name": "sidecar", "image": "proxy:1"},
            ]}}},
        })
    }

    #[test]
    fn strategic_merge_merges_containers_and_env_by_name() {
        let patch = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "app", "image": "app:2", "env": [{"name": "B", "value": "3"},
                                                     {"name": "C", "value": "4"}],
             "args": ["--y"]},
        ]}}}});
        let out = strategic_merge_patch(&deployment(), &patch).unwrap();
        let containers = &out["spec"]["template"]["spec"]["containers"];
        assert_eq!(containers.as_array().unwrap().len(), 2);
        assert_eq!(containers[0]["image"], "app:2");
        assert_eq!(
            containers[0]["env"],
            json!([{"name": "A", "value": "1"},
            {"name": "B", "value": "3"}, {"name": "C", "value": "4"}])
        );
        assert_eq!(containers[0]["args"], json!(["--y"]));
        assert_eq!(containers[0]["ports"][0]["containerPort"], 80);
        assert_eq!(containers[1]["image"], "proxy:1");
    }

    #[test]
    fn strategic_merge_honours_delete_and_replace_directives() {
        let patch = json!({
            "metadata": {"labels": {"tier": null}, "finalizers": ["b"]},
            "spec": {"template": {"spec": {"containers": [
                {"name": "sidecar", "$patch": "delete"},
                {"name": "app", "env": [{"$patch": "replace"}, {"name": "Z", "value": "9"}]},
            ]}}},
        });
        let out = strategic_merge_patch(&deployment(), &patch).unwrap();
        assert_eq!(out["metadata"]["labels"], json!({"app": "web"}));
        assert_eq!(out["metadata"]["finalizers"], json!(["a", "b"]));
        let containers = out["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap();
        assert_eq!(containers.len(), 1);
        assert_eq!(containers[0]["env"], json!([{"name": "Z", "value": "9"}]));
    }

    #[test]
    fn container_ports_merge_by_container_port_and_service_ports_by_port() {
        let patch = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "app", "ports": [{"containerPort": 81}]}]}}}});
        let out = strategic_merge_patch(&deployment(), &patch).unwrap();
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"][0]["ports"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
        let svc = json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}]}});
        let out = strategic_merge_patch(
            &svc,
            &json!({"spec": {"ports": [{"port": 80, "name": "http"}]}}),
        )
        .unwrap();
        assert_eq!(
            out["spec"]["ports"],
            json!([{"port": 80, "targetPort": 8080, "name": "http"}])
        );
    }

    #[test]
    fn merge_patch_replaces_lists_and_deletes_nulls() {
        let patch = json!({"metadata": {"labels": {"tier": null}},
                           "spec": {"template": {"spec": {"containers": [{"name": "only"}]}}}});
        let out = merge_patch(&deployment(), &patch).unwrap();
        assert_eq!(out["metadata"]["labels"], json!({"app": "web"}));
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"],
            json!([{"name": "only"}])
        );
    }

    #[test]
    fn json_patch_test_failure_is_a_failed_patch_and_non_array_is_malformed() {
        let ops = br#"[{"op": "test", "path": "/spec/replicas", "value": 5},
                       {"op": "replace", "path": "/spec/replicas", "value": 1}]"#;
        assert!(matches!(
            json_patch_bytes(&deployment(), ops),
            Err(PatchError::Failed(_))
        ));
        assert!(matches!(
            json_patch_bytes(&deployment(), br#"{"op": "add"}"#),
            Err(PatchError::Malformed(_))
        ));
        let ok = json_patch_bytes(
            &deployment(),
            br#"[{"op": "test", "path": "/spec/replicas", "value": 2},
                 {"op": "replace", "path": "/spec/replicas", "value": 1}]"#,
        )
        .unwrap();
        assert_eq!(ok["spec"]["replicas"], 1);
    }
}
