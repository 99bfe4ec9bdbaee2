//! The Istio rules, pure: finding the HTTP routes of a VirtualService that split traffic
//! between GA and canary, fingerprinting them, and the JSON patch that moves their weights.

use serde_json::{Value, json};

use crate::domain::{MatchValue, Matched, RequestMatch, template_hash};
#[cfg(test)]
use crate::router::{RouteSplit, RouteView};
use crate::router::{RouterError, ab};

/// Whether a VirtualService destination host names `service` in `namespace`
/// (`svc`, `svc.ns`, `svc.ns.svc`, `svc.ns.svc.cluster.local`).
pub fn host_matches(host: &str, service: &str, namespace: &str) -> bool {
    host == service
        || host == format!("{service}.{namespace}")
        || host == format!("{service}.{namespace}.svc")
        || host == format!("{service}.{namespace}.svc.cluster.local")
}

pub use crate::router::patched::Split;

fn destinations(route: &Value) -> Vec<(String, u32)> {
    route
        .get("route")
        .and_then(Value::as_array)
        .map(|dests| {
            dests
                .iter()
                .map(|d| {
                    let host = d
                        .pointer("/destination/host")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned();
                    let weight = d
                        .get("weight")
                        .and_then(Value::as_u64)
                        .and_then(|w| u32::try_from(w).ok());
                    // Istio gives a lone destination without a weight all the traffic.
                    let weight = weight.unwrap_or(if dests.len() == 1 { 100 } else { 0 });
                    (host, weight)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Whether one HTTP route of the VirtualService sends traffic to both Services.
pub fn routes_to_both(spec: &Value, namespace: &str, ga: &str, canary: &str) -> bool {
    spec.get("http")
        .and_then(Value::as_array)
        .is_some_and(|routes| {
            routes.iter().any(|r| {
                let dests = destinations(r);
                [ga, canary].iter().all(|service| {
                    dests
                        .iter()
                        .any(|(host, _)| host_matches(host, service, namespace))
                })
            })
        })
}

/// Finds every HTTP route splitting traffic between exactly the GA and canary Services, and
/// checks the weights: each route sums to 100 and all routes agree. The error says which
/// object and why, for a person.
pub fn find_splits(
    name: &str,
    spec: &Value,
    namespace: &str,
    ga: &str,
    canary: &str,
) -> Result<Vec<Split>, RouterError> {
    let routes = spec
        .get("http")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut splits = Vec::new();
    for (rule_index, route) in routes.iter().enumerate() {
        let dests = destinations(route);
        let ga_index = dests
            .iter()
            .position(|(h, _)| host_matches(h, ga, namespace));
        let canary_index = dests
            .iter()
            .position(|(h, _)| host_matches(h, canary, namespace));
        let (ga_index, canary_index) = match (ga_index, canary_index) {
            (Some(g), Some(c)) => (g, c),
            (None, None) => continue,
            (Some(_), None) => {
                return Err(RouterError::Topology(format!(
                    "VirtualService {namespace}/{name} http route {rule_index} sends traffic to {ga} but has no destination for the canary Service {canary}"
                )));
            }
            (None, Some(_)) => {
                return Err(RouterError::Topology(format!(
                    "VirtualService {namespace}/{name} http route {rule_index} sends traffic to {canary} but has no destination for the GA Service {ga}"
                )));
            }
        };
        let backends: Vec<(&str, u32)> = dests.iter().map(|(h, w)| (h.as_str(), *w)).collect();
        splits.push(crate::router::patched::split_of(
            &format!("VirtualService {namespace}/{name} http route {rule_index}"),
            rule_index,
            &backends,
            (ga_index, canary_index),
            (ga, canary),
        )?);
    }
    let Some(first) = splits.first() else {
        return Err(RouterError::Topology(format!(
            "VirtualService {namespace}/{name} has no http route splitting traffic between {ga} and {canary}"
        )));
    };
    if splits
        .iter()
        .any(|s| s.canary_weight != first.canary_weight)
    {
        return Err(RouterError::Topology(format!(
            "VirtualService {namespace}/{name} has http routes with different canary weights"
        )));
    }
    Ok(splits)
}

/// A fingerprint of what a rollout does not change but relies on: which HTTP routes split the
/// traffic, their match conditions, and their destinations (host, subset, port) without the
/// weights. It changes when someone edits those routes by hand; steerer's own weight writes
/// leave it as it is.
pub fn route_fingerprint(spec: &Value, splits: &[Split]) -> String {
    let managed: Vec<Value> = splits
        .iter()
        .map(|split| {
            let route = spec
                .pointer(&format!("/http/{}", split.rule_index))
                .cloned()
                .unwrap_or(Value::Null);
            let destinations: Vec<Value> = route
                .get("route")
                .and_then(Value::as_array)
                .map(|dests| {
                    dests
                        .iter()
                        .map(|d| d.get("destination").cloned().unwrap_or(Value::Null))
                        .collect()
                })
                .unwrap_or_default();
            json!({
                "http": split.rule_index,
                "match": route.get("match").cloned().unwrap_or(Value::Null),
                "destinations": destinations,
            })
        })
        .collect();
    // Any JSON hashes the same way as a pod template: stable, independent of key order.
    template_hash(&Value::Array(managed))
}

/// The JSON patch that sets the canary weight on every split and nothing else. It tests the
/// resourceVersion (optimistic concurrency) and each destination's host, so a VirtualService
/// changed underneath fails the patch instead of having the wrong route rewritten. `None` when
/// the weights are already right.
pub fn weight_patch(
    splits: &[Split],
    spec: &Value,
    resource_version: Option<&str>,
    canary_weight: u32,
) -> Option<Value> {
    crate::router::patched::weights_patch(
        splits,
        spec,
        resource_version,
        canary_weight,
        |split, index| format!("/http/{}/route/{index}", split.rule_index),
        "destination/host",
    )
}

/// The rule steerer adds ahead of `split` for an A/B test (see [`Rules::ab_rule`]): a copy of
/// the split route (its rewrites, timeouts and retries apply alike) named `name`, whose match
/// blocks are the split's own each joined with one of `matches`, and whose one destination is
/// the canary's. A cookie is matched by a regex on the `Cookie` header.
///
/// [`Rules::ab_rule`]: crate::router::patched::Rules::ab_rule
pub fn ab_rule(spec: &Value, split: &Split, matches: &[RequestMatch], name: &str) -> Value {
    let route = spec
        .pointer(&format!("/http/{}", split.rule_index))
        .cloned()
        .unwrap_or_else(|| json!({}));
    let own: Vec<Value> = route
        .get("match")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
        .cloned()
        .unwrap_or_else(|| vec![json!({})]);
    let mut joined = Vec::new();
    for block in &own {
        for m in matches {
            let (header, matcher) = match &m.on {
                Matched::Header(header) => (
                    header.to_ascii_lowercase(),
                    match &m.value {
                        MatchValue::Exact(v) => json!({"exact": v}),
                        MatchValue::Prefix(v) => json!({"prefix": v}),
                        MatchValue::Regex(v) => json!({"regex": v}),
                    },
                ),
                Matched::Cookie(cookie) => (
                    "cookie".to_owned(),
                    json!({"regex": ab::cookie_regex(cookie, &m.value)}),
                ),
            };
            let mut block = block.clone();
            if !block.get("headers").is_some_and(Value::is_object) {
                block["headers"] = json!({});
            }
            block["headers"][header] = matcher;
            joined.push(block);
        }
    }
    let mut canary = route
        .pointer(&format!("/route/{}", split.canary_index))
        .cloned()
        .unwrap_or_else(|| json!({}));
    canary["weight"] = json!(100);
    let mut rule = route;
    rule["name"] = json!(name);
    rule["match"] = Value::Array(joined);
    rule["route"] = json!([canary]);
    rule
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::patched::Rules;

    fn spec(ga_host: &str, canary_host: &str, ga: u32, canary: u32) -> Value {
        json!({
            "hosts": ["podinfo"],
            "http": [{"route": [
                {"destination": {"host": ga_host}, "weight": ga},
                {"destination": {"host": canary_host}, "weight": canary},
            ]}]
        })
    }

    #[test]
    fn hosts_match_short_and_qualified_names() {
        for host in [
            "podinfo",
            "podinfo.test",
            "podinfo.test.svc",
            "podinfo.test.svc.cluster.local",
        ] {
            assert!(host_matches(host, "podinfo", "test"), "{host}");
        }
        assert!(!host_matches("podinfo.other", "podinfo", "test"));
        assert!(!host_matches("podinfo-canary", "podinfo", "test"));
    }

    #[test]
    fn split_is_found_with_qualified_hosts() {
        let s = spec(
            "podinfo.test.svc.cluster.local",
            "podinfo-canary.test",
            90,
            10,
        );
        let splits = find_splits("vs", &s, "test", "podinfo", "podinfo-canary").unwrap();
        assert_eq!(
            splits,
            vec![Split {
                rule_index: 0,
                ga_index: 0,
                canary_index: 1,
                ga_weight: 90,
                canary_weight: 10
            }]
        );
    }

    #[test]
    fn route_without_canary_destination_is_a_topology_error() {
        let s = json!({"http": [{"route": [{"destination": {"host": "podinfo"}}]}]});
        let err = find_splits("vs", &s, "test", "podinfo", "podinfo-canary").unwrap_err();
        assert!(
            err.to_string()
                .contains("no destination for the canary Service podinfo-canary")
        );
    }

    #[test]
    fn weights_not_summing_to_100_are_rejected() {
        let s = spec("podinfo", "podinfo-canary", 50, 20);
        let err = find_splits("vs", &s, "test", "podinfo", "podinfo-canary").unwrap_err();
        assert!(err.to_string().contains("sum to 70"));
    }

    #[test]
    fn a_third_destination_is_rejected_by_name() {
        let s = json!({"http": [{"route": [
            {"destination": {"host": "podinfo"}, "weight": 50},
            {"destination": {"host": "podinfo-canary"}, "weight": 25},
            {"destination": {"host": "other"}, "weight": 25},
        ]}]});
        let err = find_splits("vs", &s, "test", "podinfo", "podinfo-canary").unwrap_err();
        assert!(err.to_string().contains("other"));
    }

    #[test]
    fn weight_patch_touches_only_weights_and_tests_version_and_hosts() {
        let s = spec("podinfo", "podinfo-canary", 100, 0);
        let splits = find_splits("vs", &s, "test", "podinfo", "podinfo-canary").unwrap();
        let patch = weight_patch(&splits, &s, Some("42"), 30).unwrap();
        assert_eq!(
            patch,
            json!([
                {"op": "test", "path": "/metadata/resourceVersion", "value": "42"},
                {"op": "test", "path": "/spec/http/0/route/0/destination/host", "value": "podinfo"},
                {"op": "add", "path": "/spec/http/0/route/0/weight", "value": 70},
                {"op": "test", "path": "/spec/http/0/route/1/destination/host", "value": "podinfo-canary"},
                {"op": "add", "path": "/spec/http/0/route/1/weight", "value": 30},
            ])
        );
        for op in patch.as_array().unwrap() {
            let path = op["path"].as_str().unwrap();
            if op["op"] != "test" {
                assert!(path.ends_with("/weight"), "{path}");
            }
        }
    }

    #[test]
    fn weight_patch_is_none_when_weights_already_match() {
        let s = spec("podinfo", "podinfo-canary", 80, 20);
        let splits = find_splits("vs", &s, "test", "podinfo", "podinfo-canary").unwrap();
        assert_eq!(weight_patch(&splits, &s, Some("1"), 20), None);
    }

    #[test]
    fn applying_the_patch_moves_the_weights() {
        let s = spec("podinfo", "podinfo-canary", 100, 0);
        let splits = find_splits("vs", &s, "test", "podinfo", "podinfo-canary").unwrap();
        let patch: json_patch::Patch =
            serde_json::from_value(weight_patch(&splits, &s, Some("7"), 100).unwrap()).unwrap();
        let mut doc = json!({"metadata": {"resourceVersion": "7"}, "spec": s});
        json_patch::patch(&mut doc, &patch).unwrap();
        let after = find_splits("vs", &doc["spec"], "test", "podinfo", "podinfo-canary").unwrap();
        assert_eq!((after[0].ga_weight, after[0].canary_weight), (0, 100));
    }

    #[test]
    fn the_fingerprint_ignores_weights_but_sees_destinations_and_matches() {
        let at = |ga, canary| {
            let s = spec("podinfo", "podinfo-canary", ga, canary);
            let splits = find_splits("vs", &s, "test", "podinfo", "podinfo-canary").unwrap();
            route_fingerprint(&s, &splits)
        };
        assert_eq!(at(100, 0), at(30, 70));
        let mut subset = spec("podinfo", "podinfo-canary", 100, 0);
        subset["http"][0]["route"][1]["destination"]["subset"] = json!("v2");
        let splits = find_splits("vs", &subset, "test", "podinfo", "podinfo-canary").unwrap();
        assert_ne!(route_fingerprint(&subset, &splits), at(100, 0));
        let mut matched = spec("podinfo", "podinfo-canary", 100, 0);
        matched["http"][0]["match"] = json!([{"headers": {"x-canary": {"exact": "1"}}}]);
        let splits = find_splits("vs", &matched, "test", "podinfo", "podinfo-canary").unwrap();
        assert_ne!(route_fingerprint(&matched, &splits), at(100, 0));
    }

    #[test]
    fn a_route_view_says_why_a_virtual_service_no_longer_splits() {
        let route = RouteSplit {
            namespace: "test".into(),
            kind: crate::domain::RouteKind::VirtualService,
            name: "vs".into(),
            ga_service: "podinfo".into(),
            canary_service: "podinfo-canary".into(),
            matches: Vec::new(),
        };
        assert!(matches!(
            super::super::VIRTUAL_SERVICES.view(&spec("podinfo", "podinfo-canary", 70, 30), &route),
            RouteView::Split {
                canary_weight: 30,
                ..
            }
        ));
        let lone = json!({"http": [{"route": [{"destination": {"host": "podinfo"}}]}]});
        assert!(matches!(
            super::super::VIRTUAL_SERVICES.view(&lone, &route),
            RouteView::Broken(why) if why.contains("no destination for the canary Service")
        ));
    }

    #[test]
    fn missing_and_invalid_objects_are_permanent_errors_and_throttling_is_not() {
        let api = |code: Option<u16>| RouterError::Api {
            kind: crate::domain::RouteKind::VirtualService,
            action: "patch weights of",
            namespace: "test".into(),
            name: "vs".into(),
            source: Box::new(match code {
                Some(code) => kube::Error::Api(
                    kube::core::Status::failure("refused", "Refused")
                        .with_code(code)
                        .boxed(),
                ),
                None => kube::Error::Service("connection refused".into()),
            }),
        };
        assert!(api(Some(403)).is_permanent());
        assert!(api(Some(422)).is_permanent());
        assert!(!api(Some(429)).is_permanent());
        assert!(!api(Some(500)).is_permanent());
        assert!(!api(None).is_permanent());
        assert!(
            RouterError::NotFound {
                kind: crate::domain::RouteKind::VirtualService,
                namespace: "test".into(),
                name: "vs".into()
            }
            .is_permanent()
        );
    }

    #[test]
    fn stale_resource_version_fails_the_patch() {
        let s = spec("podinfo", "podinfo-canary", 100, 0);
        let splits = find_splits("vs", &s, "test", "podinfo", "podinfo-canary").unwrap();
        let patch: json_patch::Patch =
            serde_json::from_value(weight_patch(&splits, &s, Some("6"), 10).unwrap()).unwrap();
        let mut doc = json!({"metadata": {"resourceVersion": "7"}, "spec": s});
        assert!(json_patch::patch(&mut doc, &patch).is_err());
    }
}

#[cfg(test)]
mod ab_tests {
    //! A/B rules written and read back through the router's rules.
    use serde_json::{Value, json};

    use crate::domain::{AB_WEIGHT, MatchValue, RequestMatch};
    use crate::domain::{Matched, RouteKind};
    use crate::router::ab::{OWN_RULE, strip};
    use crate::router::istio::VIRTUAL_SERVICES;
    use crate::router::patched::view_with;
    use crate::router::patched::{Rules, written};
    use crate::router::{RouteSplit, RouteView};

    fn beta() -> Vec<RequestMatch> {
        vec![
            RequestMatch {
                on: Matched::Header("X-Cohort".into()),
                value: MatchValue::Exact("beta".into()),
            },
            RequestMatch {
                on: Matched::Cookie("plan".into()),
                value: MatchValue::Prefix("gold".into()),
            },
        ]
    }

    fn split(kind: RouteKind, matches: Vec<RequestMatch>) -> RouteSplit {
        RouteSplit {
            namespace: "test".into(),
            kind,
            name: "podinfo".into(),
            ga_service: "podinfo".into(),
            canary_service: "podinfo-canary".into(),
            matches,
        }
    }

    fn virtual_service() -> Value {
        json!({"hosts": ["podinfo"], "http": [
            {"name": "pinned", "match": [{"uri": {"prefix": "/admin"}}],
             "route": [{"destination": {"host": "admin"}}]},
            {"match": [{"uri": {"prefix": "/"}}], "timeout": "5s", "route": [
                {"destination": {"host": "podinfo", "port": {"number": 9898}}, "weight": 100},
                {"destination": {"host": "podinfo-canary", "port": {"number": 9898}}, "weight": 0},
            ]},
        ]})
    }

    fn weight_and_fingerprint(view: RouteView) -> (u32, String) {
        match view {
            RouteView::Split {
                canary_weight,
                fingerprint,
            } => (canary_weight, fingerprint),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_ab_rule_goes_ahead_of_the_virtual_service_split_and_leaves_it_as_written() {
        let route = split(RouteKind::VirtualService, beta());
        let before = virtual_service();
        let (weight, print) = weight_and_fingerprint(view_with(&VIRTUAL_SERVICES, &before, &route));
        assert_eq!(weight, 0);
        let on = written(&VIRTUAL_SERVICES, &before, &route, AB_WEIGHT);
        assert_eq!(on["http"].as_array().unwrap().len(), 3);
        assert_eq!(on["http"][0], before["http"][0]);
        assert_eq!(on["http"][2], before["http"][1]);
        let rule = &on["http"][1];
        assert_eq!(rule["name"], OWN_RULE);
        assert_eq!(rule["timeout"], "5s");
        assert_eq!(
            rule["match"],
            json!([
                {"uri": {"prefix": "/"}, "headers": {"x-cohort": {"exact": "beta"}}},
                {"uri": {"prefix": "/"}, "headers": {"cookie": {"regex": "^(.*?;\\s*)?plan=gold[^;]*(;.*)?$"}}},
            ])
        );
        assert_eq!(
            rule["route"],
            json!([{"destination": {"host": "podinfo-canary", "port": {"number": 9898}}, "weight": 100}])
        );
        // Steerer's rule is not a split the route detection refuses, and a rollout reads it
        // as its A/B weight with the owner's fingerprint.
        assert!(VIRTUAL_SERVICES.sends_to_both(
            &strip(&on, "http").0,
            "test",
            "podinfo",
            "podinfo-canary"
        ));
        assert_eq!(
            weight_and_fingerprint(view_with(&VIRTUAL_SERVICES, &on, &route)),
            (AB_WEIGHT, print.clone())
        );
        // Writing it again changes nothing; going back to GA restores the route exactly.
        assert_eq!(written(&VIRTUAL_SERVICES, &on, &route, AB_WEIGHT), on);
        assert_eq!(written(&VIRTUAL_SERVICES, &on, &route, 0), before);
        // A hand edit of steerer's rule is a change of the routes a rollout relies on.
        let mut edited = on.clone();
        edited["http"][1]["match"][0]["headers"]["x-cohort"]["exact"] = json!("gamma");
        let (_, changed) = weight_and_fingerprint(view_with(&VIRTUAL_SERVICES, &edited, &route));
        assert_ne!(changed, print);
        // ...and so is weight moved by hand on the unmatched traffic.
        let mut moved = on.clone();
        moved["http"][2]["route"][0]["weight"] = json!(80);
        moved["http"][2]["route"][1]["weight"] = json!(20);
        let (weight, changed) =
            weight_and_fingerprint(view_with(&VIRTUAL_SERVICES, &moved, &route));
        assert_ne!((weight, changed), (AB_WEIGHT, print.clone()));
        // A weighted canary finding steerer's rule left in its route sees a change, and its
        // next write takes the rule out.
        let canary = split(RouteKind::VirtualService, Vec::new());
        let (_, seen) = weight_and_fingerprint(view_with(&VIRTUAL_SERVICES, &on, &canary));
        assert_ne!(seen, print);
        assert_eq!(written(&VIRTUAL_SERVICES, &on, &canary, 0), before);
    }

    #[test]
    fn each_split_of_a_virtual_service_gets_its_own_ab_rule_ahead_of_it() {
        let route = split(RouteKind::VirtualService, beta());
        let dests = json!([
            {"destination": {"host": "podinfo"}, "weight": 100},
            {"destination": {"host": "podinfo-canary"}, "weight": 0},
        ]);
        let before = json!({"hosts": ["podinfo"], "http": [
            {"match": [{"uri": {"prefix": "/api"}}], "route": dests},
            {"route": dests},
        ]});
        let (_, print) = weight_and_fingerprint(view_with(&VIRTUAL_SERVICES, &before, &route));
        let on = written(&VIRTUAL_SERVICES, &before, &route, AB_WEIGHT);
        let names: Vec<&Value> = on["http"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| &r["name"])
            .collect();
        assert_eq!(
            names,
            [
                &json!("steerer-ab"),
                &Value::Null,
                &json!("steerer-ab-2"),
                &Value::Null
            ]
        );
        assert_eq!(on["http"][0]["match"][0]["uri"], json!({"prefix": "/api"}));
        assert_eq!(on["http"][2]["match"][0].get("uri"), None);
        assert_eq!(
            weight_and_fingerprint(view_with(&VIRTUAL_SERVICES, &on, &route)),
            (AB_WEIGHT, print.clone())
        );
        // A rule moved away from its split is not as steerer left it.
        let mut moved = on.clone();
        let rules = moved["http"].as_array_mut().unwrap();
        let first = rules.remove(0);
        rules.insert(1, first);
        let (_, seen) = weight_and_fingerprint(view_with(&VIRTUAL_SERVICES, &moved, &route));
        assert_ne!(seen, print);
        assert_eq!(written(&VIRTUAL_SERVICES, &on, &route, 0), before);
        assert_eq!(written(&VIRTUAL_SERVICES, &moved, &route, 0), before);
    }
}
