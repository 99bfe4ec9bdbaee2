//! Gateway API routes (HTTPRoute, GRPCRoute) as the mesh reads them: each becomes the
//! VirtualService that routes synthetic requests the same way, so one routing table serves
//! every kind.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::store::GroupResource;

/// The Gateway API group.
pub const GROUP: &str = "gateway.networking.k8s.io";

/// The `gateway.networking.k8s.io/httproutes` resource.
pub fn http_routes() -> GroupResource {
    GroupResource::new(GROUP, "httproutes")
}

/// The `gateway.networking.k8s.io/grpcroutes` resource.
pub fn grpc_routes() -> GroupResource {
    GroupResource::new(GROUP, "grpcroutes")
}

/// The VirtualServices that route as `routes` (all of kind `kind`) do.
pub fn as_virtual_services(kind: &str, routes: &[Arc<Value>]) -> Vec<Arc<Value>> {
    routes
        .iter()
        .filter_map(|route| as_virtual_service(kind, route))
        .map(Arc::new)
        .collect()
}

/// The VirtualService routing as `route` does: its hostnames (or, without any, its name) as
/// hosts; each rule, in order, as an HTTP route with the same matches and its Service
/// backendRefs as weighted destinations (a backendRef without a weight has 1, as the Gateway
/// API says). Its name carries the kind, so a VirtualService of the same name stays apart.
pub fn as_virtual_service(kind: &str, route: &Value) -> Option<Value> {
    let namespace = route.pointer("/metadata/namespace")?.as_str()?;
    let name = route.pointer("/metadata/name")?.as_str()?;
    let hosts = match route.pointer("/spec/hostnames").and_then(Value::as_array) {
        Some(hostnames) if !hostnames.is_empty() => Value::Array(hostnames.clone()),
        _ => json!([name]),
    };
    let http: Vec<Value> = rules(route)
        .iter()
        .map(|rule| {
            let mut http = Map::new();
            if let Some(matches) = rule.get("matches").and_then(Value::as_array) {
                let matches: Vec<Value> = matches.iter().map(request_match).collect();
                http.insert("match".to_owned(), Value::Array(matches));
            }
            http.insert(
                "route".to_owned(),
                Value::Array(destinations(rule, namespace)),
            );
            Value::Object(http)
        })
        .collect();
    Some(json!({
        "metadata": {
            "namespace": namespace,
            "name": format!("{kind}/{name}"),
            "annotations": route.pointer("/metadata/annotations").cloned().unwrap_or(Value::Null),
        },
        "spec": {"hosts": hosts, "http": http},
    }))
}

fn rules(route: &Value) -> &[Value] {
    route
        .pointer("/spec/rules")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// A rule's backendRefs to Services, as VirtualService destinations.
fn destinations(rule: &Value, namespace: &str) -> Vec<Value> {
    rule.get("backendRefs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|backend| is_service(backend))
        .filter_map(|backend| {
            let name = backend.get("name")?.as_str()?;
            let ns = backend
                .get("namespace")
                .and_then(Value::as_str)
                .unwrap_or(namespace);
            let weight = backend.get("weight").and_then(Value::as_u64).unwrap_or(1);
            Some(json!({"destination": {"host": format!("{name}.{ns}")}, "weight": weight}))
        })
        .collect()
}

/// Whether a backendRef names a core Service (the default group and kind).
fn is_service(backend: &Value) -> bool {
    backend
        .get("group")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .is_empty()
        && backend
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("Service")
            == "Service"
}

/// An HTTPRoute or GRPCRoute match as the Istio match a synthetic request meets the same way.
fn request_match(m: &Value) -> Value {
    let mut out = Map::new();
    for (field, istio) in [("headers", "headers"), ("queryParams", "queryParams")] {
        let wanted: Map<String, Value> = m
            .get(field)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|h| {
                let name = h.get("name")?.as_str()?;
                let value = h.get("value").cloned().unwrap_or(Value::Null);
                Some((name.to_owned(), json!({"exact": value})))
            })
            .collect();
        if !wanted.is_empty() {
            out.insert(istio.to_owned(), Value::Object(wanted));
        }
    }
    match m.get("method") {
        // HTTPRoute: an HTTP method.
        Some(Value::String(method)) => {
            out.insert("method".to_owned(), json!({"exact": method}));
        }
        // GRPCRoute: a gRPC service and method, which a plain `GET /` never calls.
        Some(Value::Object(method)) => {
            let part = |key: &str| method.get(key).and_then(Value::as_str).unwrap_or("*");
            let path = format!("/{}/{}", part("service"), part("method"));
            out.insert("uri".to_owned(), json!({"exact": path}));
        }
        _ => {}
    }
    if let Some(path) = m.get("path") {
        let value = path.get("value").and_then(Value::as_str).unwrap_or("/");
        let how = match path.get("type").and_then(Value::as_str) {
            Some("Exact") => "exact",
            Some("RegularExpression") => "regex",
            _ => "prefix",
        };
        out.insert("uri".to_owned(), json!({how: value}));
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::routing::rule_matches;

    fn route(rules: Value) -> Value {
        json!({
            "metadata": {"name": "podinfo", "namespace": "test"},
            "spec": {"parentRefs": [{"name": "gateway"}], "rules": rules},
        })
    }

    #[test]
    fn backend_weights_become_destination_weights_and_a_missing_weight_is_one() {
        let vs = as_virtual_service(
            "HTTPRoute",
            &route(json!([{"backendRefs": [
                {"name": "podinfo", "port": 9898, "weight": 70},
                {"name": "podinfo-canary", "namespace": "other", "port": 9898},
                {"name": "bucket", "group": "storage.example.com", "kind": "Bucket"},
            ]}])),
        )
        .unwrap();
        assert_eq!(vs["metadata"]["name"], "HTTPRoute/podinfo");
        assert_eq!(vs["spec"]["hosts"], json!(["podinfo"]));
        assert_eq!(
            vs["spec"]["http"][0]["route"],
            json!([
                {"destination": {"host": "podinfo.test"}, "weight": 70},
                {"destination": {"host": "podinfo-canary.other"}, "weight": 1},
            ])
        );
        assert!(rule_matches(&vs["spec"]["http"][0], false));
    }

    #[test]
    fn only_a_rule_a_plain_get_of_the_root_meets_takes_the_plain_traffic() {
        let vs = as_virtual_service(
            "HTTPRoute",
            &route(json!([
                {"matches": [{"path": {"type": "PathPrefix", "value": "/admin"}}]},
                {"matches": [{"headers": [{"name": "x-canary", "value": "1"}]}]},
                {"matches": [{"path": {"type": "PathPrefix", "value": "/"}, "method": "GET"}]},
            ])),
        )
        .unwrap();
        let http = &vs["spec"]["http"];
        assert!(!rule_matches(&http[0], false));
        assert!(!rule_matches(&http[1], false));
        assert!(rule_matches(&http[1], true));
        assert!(rule_matches(&http[2], false));
    }

    #[test]
    fn a_grpc_method_match_is_not_met_by_synthetic_requests_but_a_header_match_is_when_tagged() {
        let vs = as_virtual_service(
            "GRPCRoute",
            &route(json!([
                {"matches": [{"method": {"service": "cart.Cart", "method": "Get"}}]},
                {"matches": [{"headers": [{"name": "x-canary", "value": "1"}]}]},
                {"backendRefs": [{"name": "podinfo", "port": 9898}]},
            ])),
        )
        .unwrap();
        let http = &vs["spec"]["http"];
        assert!(!rule_matches(&http[0], true));
        assert!(rule_matches(&http[1], true));
        assert!(rule_matches(&http[2], false));
        assert_eq!(vs["metadata"]["name"], "GRPCRoute/podinfo");
    }

    #[test]
    fn hostnames_are_the_hosts() {
        let mut r = route(json!([]));
        r["spec"]["hostnames"] = json!(["cart.example.com"]);
        let vs = as_virtual_service("HTTPRoute", &r).unwrap();
        assert_eq!(vs["spec"]["hosts"], json!(["cart.example.com"]));
    }
}
