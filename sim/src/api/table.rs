//! `meta.k8s.io/v1` Tables, what `kubectl get` asks for: the columns kube-apiserver prints for
//! each built-in kind, a CRD's `additionalPrinterColumns`, and NAME/AGE for the rest.

use serde_json::{Value, json};

use crate::resources::{PrinterColumn, ResourceDef};
use crate::selector::LabelSelector;

struct Column {
    name: &'static str,
    type_: &'static str,
    priority: i64,
}

const fn col(name: &'static str, type_: &'static str) -> Column {
    Column {
        name,
        type_,
        priority: 0,
    }
}

const fn wide(name: &'static str, type_: &'static str) -> Column {
    Column {
        name,
        type_,
        priority: 1,
    }
}

fn s<'a>(obj: &'a Value, pointer: &str) -> &'a str {
    obj.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn n(obj: &Value, pointer: &str) -> i64 {
    obj.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

fn or_none(v: String) -> String {
    if v.is_empty() { "<none>".into() } else { v }
}

/// Age as kubectl prints it (`45s`, `3m12s`, `5h`, `12d`).
pub(crate) fn human_age(created: &str) -> String {
    let Ok(at) = chrono::DateTime::parse_from_rfc3339(created) else {
        return "<unknown>".into();
    };
    let secs = (chrono::Utc::now() - at.with_timezone(&chrono::Utc)).num_seconds();
    human_duration(secs)
}

fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    let secs = secs.max(0);
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86_400);
    if secs < 120 {
        format!("{secs}s")
    } else if m < 10 {
        match secs % 60 {
            0 => format!("{m}m"),
            r => format!("{m}m{r}s"),
        }
    } else if m < 180 {
        format!("{m}m")
    } else if h < 8 {
        match m % 60 {
            0 => format!("{h}h"),
            r => format!("{h}h{r}m"),
        }
    } else if h < 48 {
        format!("{h}h")
    } else if h < 24 * 8 {
        match h % 24 {
            0 => format!("{d}d"),
            r => format!("{d}d{r}h"),
        }
    } else if d < 365 * 2 {
        format!("{d}d")
    } else {
        format!("{}y", d / 365)
    }
}

fn containers(obj: &Value, field: &str) -> String {
    obj.pointer("/spec/template/spec/containers")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .map(|c| c.get(field).and_then(Value::as_str).unwrap_or(""))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

/// A binding's subjects of one kind, comma-separated; service accounts as `namespace/name`.
fn subjects(obj: &Value, kind: &str) -> String {
    obj.get("subjects")
        .and_then(Value::as_array)
        .map(|subjects| {
            subjects
                .iter()
                .filter(|sub| s(sub, "/kind") == kind)
                .map(|sub| match s(sub, "/namespace") {
                    "" => s(sub, "/name").to_owned(),
                    ns => format!("{ns}/{}", s(sub, "/name")),
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

fn builtin_columns(def: &ResourceDef) -> Option<Vec<Column>> {
    if !def.builtin {
        return None;
    }
    Some(match (def.group.as_str(), def.plural.as_str()) {
        ("apps", "deployments") => vec![
            col("Ready", "string"),
            col("Up-to-date", "integer"),
            col("Available", "integer"),
            col("Age", "string"),
            wide("Containers", "string"),
            wide("Images", "string"),
            wide("Selector", "string"),
        ],
        ("", "services") => vec![
            col("Type", "string"),
            col("Cluster-IP", "string"),
            col("External-IP", "string"),
            col("Port(s)", "string"),
            col("Age", "string"),
            wide("Selector", "string"),
        ],
        ("", "namespaces") => vec![col("Status", "string"), col("Age", "string")],
        ("", "configmaps") => vec![col("Data", "integer"), col("Age", "string")],
        ("", "secrets") => vec![
            col("Type", "string"),
            col("Data", "integer"),
            col("Age", "string"),
        ],
        ("", "pods") => vec![
            col("Ready", "string"),
            col("Status", "string"),
            col("Restarts", "integer"),
            col("Age", "string"),
        ],
        ("autoscaling", "horizontalpodautoscalers") => vec![
            col("Reference", "string"),
            col("MinPods", "integer"),
            col("MaxPods", "integer"),
            col("Replicas", "integer"),
            col("Age", "string"),
        ],
        ("coordination.k8s.io", "leases") => vec![col("Holder", "string"), col("Age", "string")],
        ("", "events") | ("events.k8s.io", "events") => vec![
            col("Type", "string"),
            col("Reason", "string"),
            col("Age", "string"),
        ],
        ("", "serviceaccounts") => vec![col("Secrets", "integer"), col("Age", "string")],
        ("rbac.authorization.k8s.io", "roles" | "clusterroles")
        | ("apiextensions.k8s.io", "customresourcedefinitions") => {
            vec![col("Created At", "date")]
        }
        ("rbac.authorization.k8s.io", "rolebindings" | "clusterrolebindings") => vec![
            col("Role", "string"),
            col("Age", "string"),
            wide("Users", "string"),
            wide("Groups", "string"),
            wide("ServiceAccounts", "string"),
        ],
        _ => vec![col("Age", "string")],
    })
}

fn builtin_cell(def: &ResourceDef, column: &str, obj: &Value) -> Value {
    let created = s(obj, "/metadata/creationTimestamp");
    match (def.plural.as_str(), column) {
        (_, "Age") => json!(human_age(created)),
        (_, "Created At") => json!(created),
        ("deployments", "Ready") => json!(format!(
            "{}/{}",
            n(obj, "/status/readyReplicas"),
            n(obj, "/spec/replicas")
        )),
        ("deployments", "Up-to-date") => json!(n(obj, "/status/updatedReplicas")),
        ("deployments", "Available") => json!(n(obj, "/status/availableReplicas")),
        ("deployments", "Containers") => json!(containers(obj, "name")),
        ("deployments", "Images") => json!(containers(obj, "image")),
        ("deployments", "Selector") => json!(
            obj.pointer("/spec/selector")
                .and_then(|sel| LabelSelector::from_object(sel).ok())
                .map(|sel| sel.to_query())
                .unwrap_or_default()
        ),
        ("services", "Type") => json!(s(obj, "/spec/type")),
        ("services", "Cluster-IP") => json!(or_none(s(obj, "/spec/clusterIP").to_owned())),
        ("services", "External-IP") => json!("<none>"),
        ("services", "Port(s)") => json!(or_none(
            obj.pointer("/spec/ports")
                .and_then(Value::as_array)
                .map(|ps| {
                    ps.iter()
                        .map(|p| format!("{}/{}", n(p, "/port"), s(p, "/protocol")))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default()
        )),
        ("services", "Selector") => json!(or_none(
            obj.pointer("/spec/selector")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default()
        )),
        ("namespaces", "Status") => json!(s(obj, "/status/phase")),
        ("configmaps" | "secrets", "Data") => json!(
            obj.get("data")
                .and_then(Value::as_object)
                .map_or(0, serde_json::Map::len)
                + obj
                    .get("binaryData")
                    .and_then(Value::as_object)
                    .map_or(0, serde_json::Map::len)
        ),
        ("secrets", "Type") => json!(s(obj, "/type")),
        ("pods", "Ready") => {
            let statuses = obj
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array);
            let total = obj
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            let ready = statuses.map_or(0, |cs| {
                cs.iter()
                    .filter(|c| c.get("ready").and_then(Value::as_bool) == Some(true))
                    .count()
            });
            json!(format!("{ready}/{total}"))
        }
        ("pods", "Status") => json!(s(obj, "/status/phase")),
        ("pods", "Restarts") => json!(0),
        ("horizontalpodautoscalers", "Reference") => json!(format!(
            "{}/{}",
            s(obj, "/spec/scaleTargetRef/kind"),
            s(obj, "/spec/scaleTargetRef/name")
        )),
        ("horizontalpodautoscalers", "MinPods") => json!(n(obj, "/spec/minReplicas")),
        ("horizontalpodautoscalers", "MaxPods") => json!(n(obj, "/spec/maxReplicas")),
        ("horizontalpodautoscalers", "Replicas") => json!(n(obj, "/status/currentReplicas")),
        ("leases", "Holder") => json!(s(obj, "/spec/holderIdentity")),
        ("serviceaccounts", "Secrets") => json!(
            obj.get("secrets")
                .and_then(Value::as_array)
                .map_or(0, Vec::len)
        ),
        ("rolebindings" | "clusterrolebindings", "Role") => json!(format!(
            "{}/{}",
            s(obj, "/roleRef/kind"),
            s(obj, "/roleRef/name")
        )),
        ("rolebindings" | "clusterrolebindings", "Users") => json!(subjects(obj, "User")),
        ("rolebindings" | "clusterrolebindings", "Groups") => json!(subjects(obj, "Group")),
        ("rolebindings" | "clusterrolebindings", "ServiceAccounts") => {
            json!(subjects(obj, "ServiceAccount"))
        }
        ("events", "Type") => json!(s(obj, "/type")),
        ("events", "Reason") => json!(s(obj, "/reason")),
        _ => json!(""),
    }
}

/// A CRD column's value: a simple JSONPath (`.spec.hosts`, `.metadata.creationTimestamp`).
fn custom_cell(column: &PrinterColumn, obj: &Value) -> Value {
    let path = column.json_path.trim_start_matches('.');
    let pointer = format!("/{}", path.replace('.', "/"));
    let value = obj.pointer(&pointer).cloned().unwrap_or(Value::Null);
    match (&value, column.type_.as_str()) {
        (Value::String(ts), "date") => json!(human_age(ts)),
        (Value::Null, _) => json!(""),
        (Value::String(_) | Value::Number(_) | Value::Bool(_), _) => value,
        (other, _) => json!(other.to_string()),
    }
}

/// A Table of `objects`. `include` is the `includeObject` parameter (`None`, `Metadata` (the
/// default) or `Object`).
pub(crate) fn table(
    def: &ResourceDef,
    objects: &[&Value],
    metadata: Value,
    include: Option<&str>,
) -> Value {
    let builtin = builtin_columns(def);
    let mut definitions = vec![json!({
        "name": "Name", "type": "string", "format": "name", "priority": 0,
        "description": "Name must be unique within a namespace.",
    })];
    match &builtin {
        Some(cols) => definitions.extend(cols.iter().map(|c| {
            json!({"name": c.name, "type": c.type_, "format": "", "priority": c.priority,
                   "description": ""})
        })),
        None if def.columns.is_empty() => definitions.push(json!({
            "name": "Age", "type": "date", "format": "", "priority": 0, "description": "",
        })),
        None => definitions.extend(def.columns.iter().map(|c| {
            json!({"name": c.name, "type": c.type_, "format": "", "priority": c.priority,
                   "description": ""})
        })),
    }
    let rows: Vec<Value> = objects
        .iter()
        .map(|obj| {
            let mut cells = vec![json!(s(obj, "/metadata/name"))];
            match &builtin {
                Some(cols) => cells.extend(cols.iter().map(|c| builtin_cell(def, c.name, obj))),
                None if def.columns.is_empty() => {
                    cells.push(json!(human_age(s(obj, "/metadata/creationTimestamp"))));
                }
                None => cells.extend(def.columns.iter().map(|c| custom_cell(c, obj))),
            }
            let mut row = json!({"cells": cells});
            match include {
                Some("None") => {}
                Some("Object") => row["object"] = (*obj).clone(),
                _ => {
                    row["object"] = json!({
                        "kind": "PartialObjectMetadata",
                        "apiVersion": "meta.k8s.io/v1",
                        "metadata": obj.get("metadata").cloned().unwrap_or(json!({})),
                    });
                }
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": definitions,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_like_kubectl() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(192), "3m12s");
        assert_eq!(human_duration(1800), "30m");
        assert_eq!(human_duration(5 * 3600 + 60), "5h1m");
        assert_eq!(human_duration(20 * 3600), "20h");
        assert_eq!(human_duration(3 * 86_400), "3d");
    }
}
