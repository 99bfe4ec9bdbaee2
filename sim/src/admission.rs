//! What kube-apiserver does to an object between decoding and storage: defaulting of built-in
//! kinds (replicas, strategy, Service cluster IPs, Namespace phase, ...) and the validation
//! worth having (names, Deployment selectors and replicas, HPA bounds, RBAC binding role
//! references, events.k8s.io Events and their series, immutable fields).

use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::resources::ResourceDef;
use crate::selector::{LabelSelector, labels_of};

/// Fills the defaults kube-apiserver fills in when it decodes a built-in kind (so they count as
/// the writer's fields); [`allocate`] sets what the server assigns.
pub fn default_object(def: &ResourceDef, obj: &mut Value) {
    if !def.builtin {
        return;
    }
    match (def.group.as_str(), def.plural.as_str()) {
        ("apps", "deployments") => default_deployment(obj),
        ("", "services") => default_service(obj),
        ("", "namespaces") => default_namespace(obj),
        ("", "secrets") => {
            if let Some(map) = obj.as_object_mut() {
                map.entry("type").or_insert(json!("Opaque"));
            }
        }
        ("", "pods") => {
            if let Some(spec) = obj.get_mut("spec") {
                default_pod_spec(spec);
            }
        }
        // A Lease's spec is a struct that kube-apiserver always writes, `{}` when empty
        // (kube-lease-manager creates its Lease so).
        ("coordination.k8s.io", "leases") => {
            object_at(obj, "spec");
        }
        ("autoscaling", "horizontalpodautoscalers") => {
            if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
                spec.entry("minReplicas").or_insert(json!(1));
            }
        }
        _ => {}
    }
}

fn object_at<'a>(obj: &'a mut Value, key: &str) -> Option<&'a mut Map<String, Value>> {
    let map = obj.as_object_mut()?;
    let entry = map.entry(key).or_insert_with(|| json!({}));
    if entry.is_null() {
        *entry = json!({});
    }
    entry.as_object_mut()
}

fn default_deployment(obj: &mut Value) {
    let Some(spec) = object_at(obj, "spec") else {
        return;
    };
    spec.entry("replicas").or_insert(json!(1));
    spec.entry("revisionHistoryLimit").or_insert(json!(10));
    spec.entry("progressDeadlineSeconds").or_insert(json!(600));
    let strategy = spec
        .entry("strategy")
        .or_insert_with(|| json!({"type": "RollingUpdate"}));
    if let Some(strategy) = strategy.as_object_mut() {
        let kind = strategy
            .entry("type")
            .or_insert(json!("RollingUpdate"))
            .clone();
        if kind == "RollingUpdate" {
            let rolling = strategy.entry("rollingUpdate").or_insert_with(|| json!({}));
            if let Some(rolling) = rolling.as_object_mut() {
                rolling.entry("maxSurge").or_insert(json!("25%"));
                rolling.entry("maxUnavailable").or_insert(json!("25%"));
            }
        }
    }
    if let Some(pod_spec) = spec.get_mut("template").and_then(|t| t.get_mut("spec")) {
        default_pod_spec(pod_spec);
    }
}

fn default_pod_spec(spec: &mut Value) {
    let Some(spec) = spec.as_object_mut() else {
        return;
    };
    spec.entry("restartPolicy").or_insert(json!("Always"));
    spec.entry("dnsPolicy").or_insert(json!("ClusterFirst"));
    spec.entry("terminationGracePeriodSeconds")
        .or_insert(json!(30));
    spec.entry("schedulerName")
        .or_insert(json!("default-scheduler"));
    spec.entry("securityContext").or_insert_with(|| json!({}));
    for list in ["containers", "initContainers"] {
        let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) else {
            continue;
        };
        for c in containers.iter_mut().filter_map(Value::as_object_mut) {
            let image = c.get("image").and_then(Value::as_str).unwrap_or("");
            let last = image.rsplit('/').next().unwrap_or(image);
            let policy = if !last.contains(':') || last.ends_with(":latest") {
                "Always"
            } else {
                "IfNotPresent"
            };
            c.entry("imagePullPolicy").or_insert(json!(policy));
            c.entry("terminationMessagePath")
                .or_insert(json!("/dev/termination-log"));
            c.entry("terminationMessagePolicy").or_insert(json!("File"));
            c.entry("resources").or_insert_with(|| json!({}));
            if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
                for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                    p.entry("protocol").or_insert(json!("TCP"));
                }
            }
        }
    }
}

fn default_service(obj: &mut Value) {
    let Some(spec) = object_at(obj, "spec") else {
        return;
    };
    let kind = spec
        .entry("type")
        .or_insert(json!("ClusterIP"))
        .as_str()
        .unwrap_or("ClusterIP")
        .to_owned();
    spec.entry("sessionAffinity").or_insert(json!("None"));
    if kind != "ExternalName" {
        spec.entry("internalTrafficPolicy")
            .or_insert(json!("Cluster"));
    }
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            p.entry("protocol").or_insert(json!("TCP"));
            if let Some(port) = p.get("port").cloned() {
                p.entry("targetPort").or_insert(port);
            }
        }
    }
    if let Some(map) = obj.as_object_mut() {
        map.entry("status")
            .or_insert_with(|| json!({"loadBalancer": {}}));
    }
}

/// What the server allocates for an object, after defaulting and after field ownership is
/// recorded on create (kube-apiserver's registry sets these, so they are nobody's fields):
/// a Service's cluster IPs and IP families (kept from `old` on an update), a Namespace's
/// `spec.finalizers`.
pub fn allocate(def: &ResourceDef, obj: &mut Value, old: Option<&Value>) {
    if !def.builtin || !def.group.is_empty() {
        return;
    }
    match def.plural.as_str() {
        "services" => allocate_service(obj, old),
        "namespaces" => {
            if let Some(spec) = object_at(obj, "spec") {
                spec.entry("finalizers")
                    .or_insert_with(|| json!(["kubernetes"]));
            }
        }
        _ => {}
    }
}

fn allocate_service(obj: &mut Value, old: Option<&Value>) {
    let key = format!(
        "{}/{}",
        obj.pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or(""),
        obj.pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
    );
    let Some(spec) = object_at(obj, "spec") else {
        return;
    };
    if spec.get("type").and_then(Value::as_str) != Some("ExternalName") {
        let kept = old
            .and_then(|o| o.pointer("/spec/clusterIP"))
            .cloned()
            .filter(|ip| ip.as_str().is_some_and(|s| !s.is_empty()));
        let ip = match (spec.get("clusterIP").and_then(Value::as_str), kept) {
            (Some(ip), _) if !ip.is_empty() => json!(ip),
            (_, Some(kept)) => kept,
            _ => json!(cluster_ip_for(&key)),
        };
        spec.insert("clusterIP".into(), ip.clone());
        spec.entry("clusterIPs").or_insert_with(|| json!([ip]));
        spec.entry("ipFamilies").or_insert(json!(["IPv4"]));
        spec.entry("ipFamilyPolicy").or_insert(json!("SingleStack"));
    }
}

/// A stable address in 10.96.0.0/12 for a Service, derived from its namespace and name.
fn cluster_ip_for(key: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(key.as_bytes());
    format!("10.96.{}.{}", digest[0], digest[1].max(1))
}

fn default_namespace(obj: &mut Value) {
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    if let Some(meta) = object_at(obj, "metadata")
        && let Some(labels) = meta
            .entry("labels")
            .or_insert_with(|| json!({}))
            .as_object_mut()
    {
        labels.insert("kubernetes.io/metadata.name".into(), json!(name));
    }
    if let Some(status) = object_at(obj, "status") {
        status.entry("phase").or_insert(json!("Active"));
    }
}

/// Whether `name` is a DNS-1123 subdomain (most object names).
pub fn is_dns1123_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

/// Whether `name` is a DNS-1123 label (namespace names).
pub fn is_dns1123_label(name: &str) -> bool {
    name.len() <= 63 && !name.contains('.') && is_dns1123_subdomain(name)
}

/// Validates an object about to be stored. `old` is the stored object on an update.
pub fn validate(def: &ResourceDef, obj: &Value, old: Option<&Value>) -> Result<(), ApiError> {
    let gr = def.group_resource();
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let invalid = |why: String| ApiError::invalid(&gr, name, why);
    if !name.is_empty() {
        let label_only = def.builtin && matches!(def.plural.as_str(), "namespaces" | "services");
        let ok = if label_only {
            is_dns1123_label(name)
        } else {
            is_dns1123_subdomain(name)
        };
        if !ok {
            return Err(invalid(format!(
                "metadata.name: Invalid value: \"{name}\": a lowercase RFC 1123 {} must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
                if label_only { "label" } else { "subdomain" }
            )));
        }
    }
    for field in ["labels", "annotations"] {
        if let Some(map) = obj.pointer(&format!("/metadata/{field}"))
            && !map.is_null()
        {
            let Some(map) = map.as_object() else {
                return Err(ApiError::bad_request(format!(
                    "metadata.{field}: must be a map of strings"
                )));
            };
            if let Some((k, _)) = map.iter().find(|(_, v)| !v.is_string()) {
                return Err(ApiError::bad_request(format!(
                    "metadata.{field}[{k}]: must be a string"
                )));
            }
        }
    }
    if !def.builtin {
        return Ok(());
    }
    match (def.group.as_str(), def.plural.as_str()) {
        ("apps", "deployments") => validate_deployment(obj, old).map_err(invalid),
        ("autoscaling", "horizontalpodautoscalers") => validate_hpa(obj).map_err(invalid),
        ("rbac.authorization.k8s.io", "rolebindings" | "clusterrolebindings") => {
            validate_binding(obj, old).map_err(invalid)
        }
        ("events.k8s.io", "events") => validate_event(obj, old).map_err(invalid),
        _ => Ok(()),
    }
}

/// kube-apiserver's limits on an Event's fields, in bytes.
const EVENT_LIMITS: [(&str, usize); 4] = [
    ("reportingInstance", 128),
    ("action", 128),
    ("reason", 128),
    ("note", 1024),
];

/// An Event's fields that an update through events.k8s.io/v1 may not change (its series may).
const EVENT_IMMUTABLE: [&str; 13] = [
    "regarding",
    "related",
    "reason",
    "note",
    "type",
    "eventTime",
    "action",
    "reportingController",
    "reportingInstance",
    "deprecatedSource",
    "deprecatedFirstTimestamp",
    "deprecatedLastTimestamp",
    "deprecatedCount",
];

/// An Event written through events.k8s.io/v1, checked as kube-apiserver checks one: who
/// reports it, what happened, when; a series counts at least two occurrences; the fields of
/// the older core/v1 shape stay unset; an update changes nothing but the series (and
/// metadata). All problems are listed, as kube-apiserver lists them.
fn validate_event(obj: &Value, old: Option<&Value>) -> Result<(), String> {
    let text = |field: &str| obj.get(field).and_then(Value::as_str).unwrap_or("");
    let mut errors = Vec::new();
    if text("eventTime").is_empty() {
        errors.push("eventTime: Required value".to_owned());
    } else {
        for field in [
            "reportingController",
            "reportingInstance",
            "action",
            "reason",
        ] {
            if text(field).is_empty() {
                errors.push(format!("{field}: Required value"));
            }
        }
        let controller = text("reportingController");
        if !controller.is_empty() && !is_qualified_name(controller) {
            errors.push(format!(
                "reportingController: Invalid value: \"{controller}\": must be a qualified name"
            ));
        }
        for (field, limit) in EVENT_LIMITS {
            if text(field).len() > limit {
                errors.push(format!(
                    "{field}: Invalid value: \"\": can have at most {limit} characters"
                ));
            }
        }
    }
    let set = |value: Option<&Value>| {
        value
            .filter(|v| !v.is_null() && v.as_object().is_none_or(|o| !o.is_empty()))
            .cloned()
    };
    match old {
        None => {
            errors.extend(series_errors(obj));
            if !matches!(text("type"), "Normal" | "Warning") {
                errors.push(format!(
                    "type: Invalid value: \"\": has invalid value: {}",
                    text("type")
                ));
            }
            for field in [
                "deprecatedFirstTimestamp",
                "deprecatedLastTimestamp",
                "deprecatedCount",
                "deprecatedSource",
            ] {
                if set(obj.get(field)).is_some_and(|v| v != json!(0)) {
                    errors.push(format!("{field}: Invalid value: \"\": needs to be unset"));
                }
            }
        }
        Some(old) => {
            if set(obj.get("series")) != set(old.get("series")) {
                errors.extend(series_errors(obj));
            }
            for field in EVENT_IMMUTABLE {
                if set(obj.get(field)) != set(old.get(field)) {
                    errors.push(format!(
                        "{field}: Invalid value: {}: field is immutable",
                        obj.get(field).unwrap_or(&Value::Null)
                    ));
                }
            }
        }
    }
    match errors.as_slice() {
        [] => Ok(()),
        [one] => Err(one.clone()),
        many => Err(format!("[{}]", many.join(", "))),
    }
}

fn series_errors(obj: &Value) -> Vec<String> {
    let Some(series) = obj.get("series").filter(|s| !s.is_null()) else {
        return Vec::new();
    };
    let mut errors = Vec::new();
    if series.get("count").and_then(Value::as_i64).unwrap_or(0) < 2 {
        errors.push("series.count: Invalid value: \"\": should be at least 2".to_owned());
    }
    if series
        .get("lastObservedTime")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        errors.push("series.lastObservedTime: Required value".to_owned());
    }
    errors
}

/// Whether `value` is a qualified name: an optional DNS-1123 subdomain prefix and `/`, then
/// at most 63 alphanumerics, `-`, `_` or `.`, starting and ending with an alphanumeric.
fn is_qualified_name(value: &str) -> bool {
    let (prefix, name) = match value.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, value),
    };
    let alphanumeric = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    prefix.is_none_or(is_dns1123_subdomain)
        && name.len() <= 63
        && alphanumeric(name.chars().next())
        && alphanumeric(name.chars().last())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn validate_deployment(obj: &Value, old: Option<&Value>) -> Result<(), String> {
    if let Some(replicas) = obj.pointer("/spec/replicas") {
        match replicas.as_i64() {
            Some(n) if n >= 0 => {}
            Some(n) => {
                return Err(format!(
                    "spec.replicas: Invalid value: {n}: must be greater than or equal to 0"
                ));
            }
            None => {
                return Err(format!(
                    "spec.replicas: Invalid value: {replicas}: must be an integer"
                ));
            }
        }
    }
    let Some(selector) = obj.pointer("/spec/selector").filter(|s| !s.is_null()) else {
        return Err("spec.selector: Required value".into());
    };
    let parsed = LabelSelector::from_object(selector)
        .map_err(|e| format!("spec.selector: Invalid value: {e}"))?;
    if parsed.is_empty() {
        return Err(
            "spec.selector: Invalid value: v1.LabelSelector{}: empty selector is invalid for deployment"
                .into(),
        );
    }
    let labels = labels_of(obj, "/spec/template/metadata/labels");
    if !parsed.matches_labels(&labels) {
        return Err(format!(
            "spec.template.metadata.labels: Invalid value: {labels:?}: `selector` does not match template `labels`"
        ));
    }
    let containers = obj
        .pointer("/spec/template/spec/containers")
        .and_then(Value::as_array);
    match containers {
        Some(list) if !list.is_empty() => {
            for (i, c) in list.iter().enumerate() {
                if c.get("name")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    return Err(format!(
                        "spec.template.spec.containers[{i}].name: Required value"
                    ));
                }
                if c.get("image")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    return Err(format!(
                        "spec.template.spec.containers[{i}].image: Required value"
                    ));
                }
            }
        }
        _ => return Err("spec.template.spec.containers: Required value".into()),
    }
    if let Some(old_selector) = old.and_then(|o| o.pointer("/spec/selector"))
        && old_selector != selector
    {
        return Err(format!(
            "spec.selector: Invalid value: {selector}: field is immutable"
        ));
    }
    Ok(())
}

/// A binding must name the role it grants, and cannot be moved to another role afterwards
/// (kube-apiserver requires deleting and recreating it).
fn validate_binding(obj: &Value, old: Option<&Value>) -> Result<(), String> {
    for field in ["kind", "name"] {
        if obj
            .pointer(&format!("/roleRef/{field}"))
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err(format!("roleRef.{field}: Required value"));
        }
    }
    if let Some(old_ref) = old.and_then(|o| o.get("roleRef"))
        && obj.get("roleRef") != Some(old_ref)
    {
        return Err(format!(
            "roleRef: Invalid value: {}: cannot change roleRef",
            obj.get("roleRef").unwrap_or(&Value::Null)
        ));
    }
    Ok(())
}

fn validate_hpa(obj: &Value) -> Result<(), String> {
    let max = obj.pointer("/spec/maxReplicas").and_then(Value::as_i64);
    let Some(max) = max else {
        return Err("spec.maxReplicas: Required value".into());
    };
    let min = obj
        .pointer("/spec/minReplicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    if min < 1 {
        return Err(format!(
            "spec.minReplicas: Invalid value: {min}: must be greater than or equal to 1"
        ));
    }
    if max < min {
        return Err(format!(
            "spec.maxReplicas: Invalid value: {max}: must be greater than or equal to `minReplicas`"
        ));
    }
    for field in ["kind", "name"] {
        if obj
            .pointer(&format!("/spec/scaleTargetRef/{field}"))
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err(format!("spec.scaleTargetRef.{field}: Required value"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::Registry;

    fn builtin(group: &str, plural: &str) -> std::sync::Arc<ResourceDef> {
        Registry::with_builtins()
            .lookup(group, "v1", plural)
            .unwrap()
    }

    fn deployments() -> std::sync::Arc<ResourceDef> {
        builtin("apps", "deployments")
    }

    fn deployment() -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "web", "namespace": "default"},
               "spec": {"selector": {"matchLabels": {"app": "web"}},
                        "template": {"metadata": {"labels": {"app": "web"}},
                                     "spec": {"containers": [{"name": "app", "image": "app:1",
                                              "ports": [{"containerPort": 80}]}]}}}})
    }

    #[test]
    fn a_secret_without_a_type_is_opaque() {
        let secrets = Registry::with_builtins()
            .lookup("", "v1", "secrets")
            .unwrap();
        let mut secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}});
        default_object(&secrets, &mut secret);
        assert_eq!(secret["type"], "Opaque");
        let mut typed = json!({"metadata": {"name": "t"}, "type": "kubernetes.io/tls"});
        default_object(&secrets, &mut typed);
        assert_eq!(typed["type"], "kubernetes.io/tls");
    }

    #[test]
    fn deployment_defaults_match_kube_apiserver() {
        let mut d = deployment();
        default_object(&deployments(), &mut d);
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
        assert_eq!(d["spec"]["progressDeadlineSeconds"], 600);
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["imagePullPolicy"], "IfNotPresent");
        assert_eq!(c["ports"][0]["protocol"], "TCP");
    }

    #[test]
    fn deployment_selector_must_match_template_labels() {
        let def = deployments();
        assert!(validate(&def, &deployment(), None).is_ok());
        let mut d = deployment();
        d["spec"]["template"]["metadata"]["labels"] = json!({"app": "other"});
        let err = validate(&def, &d, None).unwrap_err();
        assert_eq!(err.code, 422);
        assert!(err.message.contains("does not match"), "{}", err.message);
        let mut d = deployment();
        d["spec"]["selector"] = Value::Null;
        assert!(
            validate(&def, &d, None)
                .unwrap_err()
                .message
                .contains("spec.selector")
        );
        let mut d = deployment();
        d["spec"]["replicas"] = json!(-1);
        assert!(validate(&def, &d, None).is_err());
    }

    #[test]
    fn names_must_be_dns_subdomains() {
        let mut d = deployment();
        d["metadata"]["name"] = json!("Web_1");
        assert_eq!(
            validate(&deployments(), &d, None).unwrap_err().reason,
            "Invalid"
        );
        assert!(is_dns1123_subdomain("a.b-c"));
        assert!(!is_dns1123_label("a.b"));
    }

    #[test]
    fn a_binding_needs_a_role_and_cannot_move_to_another() {
        let def = builtin("rbac.authorization.k8s.io", "clusterrolebindings");
        assert!(!def.namespaced);
        let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1",
               "kind": "ClusterRoleBinding", "metadata": {"name": "steerer"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                           "name": "steerer"},
               "subjects": [{"kind": "ServiceAccount", "name": "steerer",
                             "namespace": "steerer-system"}]});
        assert!(validate(&def, &binding, None).is_ok());
        let mut moved = binding.clone();
        moved["roleRef"]["name"] = json!("cluster-admin");
        let err = validate(&def, &moved, Some(&binding)).unwrap_err();
        assert_eq!(err.code, 422);
        assert!(
            err.message.contains("cannot change roleRef"),
            "{}",
            err.message
        );
        let mut unnamed = binding;
        unnamed["roleRef"] = json!({"kind": "ClusterRole"});
        assert!(
            validate(&def, &unnamed, None)
                .unwrap_err()
                .message
                .contains("roleRef.name: Required value")
        );
    }

    fn events() -> std::sync::Arc<ResourceDef> {
        builtin("events.k8s.io", "events")
    }

    /// An Event as kube's Recorder creates one.
    fn event() -> Value {
        json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
               "metadata": {"name": "podinfo.1", "namespace": "test"},
               "eventTime": "2025-01-01T00:00:00.000000Z",
               "regarding": {"apiVersion": "apps/v1", "kind": "Deployment",
                             "name": "podinfo", "namespace": "test"},
               "reason": "WeightChanged", "action": "WeightChanged", "type": "Normal",
               "note": "rollout r-1: weight 10",
               "reportingController": "steerer", "reportingInstance": "steerer"})
    }

    #[test]
    fn an_event_needs_its_time_reporter_and_reason_and_none_of_the_core_fields() {
        let def = events();
        assert!(validate(&def, &event(), None).is_ok());
        let mut timeless = event();
        timeless.as_object_mut().unwrap().remove("eventTime");
        let err = validate(&def, &timeless, None).unwrap_err();
        assert_eq!(err.code, 422);
        assert!(
            err.message.contains("eventTime: Required value"),
            "{}",
            err.message
        );
        let mut bad = event();
        bad["reportingController"] = json!("");
        bad["reason"] = json!("x".repeat(129));
        bad["type"] = json!("Info");
        bad["deprecatedCount"] = json!(3);
        let message = validate(&def, &bad, None).unwrap_err().message;
        for field in ["reportingController", "reason", "type", "deprecatedCount"] {
            assert!(
                message.contains(&format!("{field}: ")),
                "{field}: {message}"
            );
        }
        let mut single = event();
        single["series"] = json!({"count": 1, "lastObservedTime": "2025-01-01T00:00:01.000000Z"});
        assert!(
            validate(&def, &single, None)
                .unwrap_err()
                .message
                .contains("series.count")
        );
    }

    #[test]
    fn an_event_update_may_change_its_series_and_nothing_it_reports() {
        let def = events();
        let created = event();
        let mut repeated = created.clone();
        repeated["series"] = json!({"count": 2, "lastObservedTime": "2025-01-01T00:00:05.000000Z"});
        assert!(validate(&def, &repeated, Some(&created)).is_ok());
        let mut renoted = repeated.clone();
        renoted["note"] = json!("rollout r-1: weight 20");
        let err = validate(&def, &renoted, Some(&created)).unwrap_err();
        assert_eq!(err.code, 422);
        assert!(err.message.contains("note: "), "{}", err.message);
        assert!(
            err.message.contains("field is immutable"),
            "{}",
            err.message
        );
        let mut uncounted = created.clone();
        uncounted["series"] = json!({"count": 0});
        let message = validate(&def, &uncounted, Some(&created))
            .unwrap_err()
            .message;
        assert!(message.contains("series.count"), "{message}");
        assert!(message.contains("series.lastObservedTime"), "{message}");
    }

    #[test]
    fn qualified_names_take_an_optional_dns_prefix() {
        for good in ["steerer", "steerer.dev/controller", "a_b-c.d", "x"] {
            assert!(is_qualified_name(good), "{good}");
        }
        for bad in [
            "",
            "-steerer",
            "steerer-",
            "Bad_Prefix/x",
            "a/b/c",
            &"x".repeat(64),
        ] {
            assert!(!is_qualified_name(bad), "{bad}");
        }
    }
}
