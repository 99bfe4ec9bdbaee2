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
            if let Some((host, percent)) = request_mirror(rule, namespace) {
                http.insert("mirror".to_owned(), json!({"host": host}));
                http.insert("mirrorPercentage".to_owned(), json!({"value": percent}));
            }
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

/// A rule's `RequestMirror` filter: the Service host it copies requests to and the percent
/// copied (`percent`, or `fraction` numerator/denominator (default 100); all when neither).
fn request_mirror(rule: &Value, namespace: &str) -> Option<(String, f64)> {
    let filter = rule
        .get("filters")
        .and_then(Value::as_array)?
        .iter()
        .find(|f| f.get("type").and_then(Value::as_str) == Some("RequestMirror"))?;
    let mirror = filter.get("requestMirror")?;
    let backend = mirror.get("backendRef")?;
    if !is_service(backend) {
        return None;
    }
    let name = backend.get("name")?.as_str()?;
    let ns = backend
        .get("namespace")
        .and_then(Value::as_str)
        .unwrap_or(namespace);
    let percent = if let Some(percent) = mirror.get("percent").and_then(Value::as_f64) {
        percent
    } else if let Some(fraction) = mirror.get("fraction") {
        let numerator = fraction.get("numerator").and_then(Value::as_f64)?;
        let denominator = fraction
            .get("denominator")
            .and_then(Value::as_f64)
            .unwrap_or(100.0);
        if denominator <= 0.0 {
            return None;
        }
        100.0 * numerator / denominator
    } else {
        100.0
    };
    Some((format!("{name}.{ns}"), percent.clamp(0.0, 100.0)))
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
                let how = match h.get("type").and_then(Value::as_str) {
                    Some("RegularExpression") => "regex",
                    _ => "exact",
                };
                // Header names are case-insensitive; Istio writes them in lower case.
                let name = if field == "headers" {
                    name.to_ascii_lowercase()
                } else {
                    name.to_owned()
                };
                Some((name, json!({how: value})))
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
    fn regex_header_matches_and_request_mirrors_carry_over() {
        use crate::mesh::routing::{Request, rule_takes};
        use crate::mesh::traffic::Profile;
        let vs = as_virtual_service(
            "HTTPRoute",
            &route(json!([
                {"matches": [{"headers": [{"name": "X-Cohort", "type": "RegularExpression", "value": "be.a"}]}],
                 "backendRefs": [{"name": "podinfo-canary", "port": 9898}]},
                {"backendRefs": [{"name": "podinfo", "port": 9898}],
                 "filters": [{"type": "RequestMirror", "requestMirror": {
                     "backendRef": {"name": "podinfo-canary", "port": 9898}, "percent": 40}}]},
                {"backendRefs": [{"name": "podinfo", "port": 9898}],
                 "filters": [{"type": "RequestMirror", "requestMirror": {
                     "backendRef": {"name": "podinfo-canary", "port": 9898},
                     "fraction": {"numerator": 1, "denominator": 8}}}]},
            ])),
        )
        .unwrap();
        let http = &vs["spec"]["http"];
        assert_eq!(
            http[0]["match"][0]["headers"],
            json!({"x-cohort": {"regex": "be.a"}})
        );
        let beta = Profile {
            share: 0.5,
            headers: [("x-cohort".to_owned(), "beta".to_owned())].into(),
            cookies: Default::default(),
        };
        let betamax = Profile {
            headers: [("x-cohort".to_owned(), "betamax".to_owned())].into(),
            ..beta.clone()
        };
        assert!(rule_takes(&http[0], &Request::Carrying(&beta)));
        assert!(!rule_takes(&http[0], &Request::Carrying(&betamax)));
        assert!(!rule_takes(&http[0], &Request::Plain));
        assert_eq!(http[1]["mirror"], json!({"host": "podinfo-canary.test"}));
        assert_eq!(http[1]["mirrorPercentage"], json!({"value": 40.0}));
        assert_eq!(http[2]["mirrorPercentage"], json!({"value": 12.5}));
        assert!(http[0].get("mirror").is_none());
    }

    #[test]
    fn a_grpc_header_match_takes_requests_carrying_the_header() {
        use crate::mesh::routing::{Request, rule_takes};
        use crate::mesh::traffic::Profile;
        let vs = as_virtual_service(
            "GRPCRoute",
            &route(json!([
                {"matches": [{"headers": [{"name": "x-cohort", "value": "beta"}]}],
                 "backendRefs": [{"name": "podinfo-canary", "port": 9898}]},
            ])),
        )
        .unwrap();
        let beta = Profile {
            share: 1.0,
            headers: [("x-cohort".to_owned(), "beta".to_owned())].into(),
            cookies: Default::default(),
        };
        assert!(rule_takes(
            &vs["spec"]["http"][0],
            &Request::Carrying(&beta)
        ));
        let other = Profile {
            headers: [("x-cohort".to_owned(), "gamma".to_owned())].into(),
            ..beta
        };
        assert!(!rule_takes(
            &vs["spec"]["http"][0],
            &Request::Carrying(&other)
        ));
    }

    #[test]
    fn hostnames_are_the_hosts() {
        let mut r = route(json!([]));
        r["spec"]["hostnames"] = json!(["cart.example.com"]);
        let vs = as_virtual_service("HTTPRoute", &r).unwrap();
        assert_eq!(vs["spec"]["hosts"], json!(["cart.example.com"]));
    }
}
