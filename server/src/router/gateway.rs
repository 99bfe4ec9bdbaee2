//! The Gateway API router: HTTPRoutes and GRPCRoutes (`gateway.networking.k8s.io/v1`), whose
//! one rule with backendRefs to both GA's and the canary's Services splits traffic by their
//! weights. Both kinds share these rules and a [`PatchRouter`]; a cluster without their CRDs
//! leaves the router empty, and a start naming the kind is refused.

use std::sync::Arc;

use serde_json::{Value, json};

use super::patched::{PatchRouter, Rules, Split, split_of, weights_patch};
use super::{KindRouter, RequestMatch, RouteKind, RouterContext, RouterError, ab};
use crate::domain::{MatchValue, Matched, template_hash};

/// The served version of `gateway.networking.k8s.io` the routers use.
pub const API_VERSION: &str = "v1";

/// The rules of HTTPRoutes and GRPCRoutes (the same `spec.rules[].backendRefs[]`).
pub struct GatewayRoutes {
    kind: RouteKind,
}

/// The rules of HTTPRoutes.
pub static HTTP_ROUTES: GatewayRoutes = GatewayRoutes {
    kind: RouteKind::HttpRoute,
};
/// The rules of GRPCRoutes.
pub static GRPC_ROUTES: GatewayRoutes = GatewayRoutes {
    kind: RouteKind::GrpcRoute,
};

/// The factory's start of the HTTPRoute router.
pub fn start_http(context: &RouterContext<'_>) -> Arc<dyn KindRouter> {
    start(&HTTP_ROUTES, context)
}

/// The factory's start of the GRPCRoute router.
pub fn start_grpc(context: &RouterContext<'_>) -> Arc<dyn KindRouter> {
    start(&GRPC_ROUTES, context)
}

/// Gateway API kinds are optional: a cluster may not serve them.
fn start(rules: &'static GatewayRoutes, context: &RouterContext<'_>) -> Arc<dyn KindRouter> {
    Arc::new(PatchRouter::start(
        rules.kind,
        rules,
        API_VERSION,
        context,
        false,
    ))
}

/// A backendRef: its Service name when it names a core Service of the route's namespace.
fn service_of<'a>(backend: &'a Value, namespace: &str) -> Option<&'a str> {
    let field = |key: &str| backend.get(key).and_then(Value::as_str);
    let core = field("group").unwrap_or_default().is_empty()
        && field("kind").unwrap_or("Service") == "Service"
        && field("namespace").is_none_or(|ns| ns == namespace);
    core.then(|| field("name")).flatten()
}

/// The Gateway API weight of a backendRef: 1 when it has none.
fn weight_of(backend: &Value) -> u32 {
    backend
        .get("weight")
        .and_then(Value::as_u64)
        .and_then(|w| u32::try_from(w).ok())
        .unwrap_or(1)
}

fn rules(spec: &Value) -> &[Value] {
    spec.get("rules")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

fn backends(rule: &Value) -> &[Value] {
    rule.get("backendRefs")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// The positions of the GA and canary backendRefs of a rule.
fn positions(
    rule: &Value,
    namespace: &str,
    ga: &str,
    canary: &str,
) -> (Option<usize>, Option<usize>) {
    let at = |service: &str| {
        backends(rule)
            .iter()
            .position(|b| service_of(b, namespace) == Some(service))
    };
    (at(ga), at(canary))
}

impl Rules for GatewayRoutes {
    fn find_splits(
        &self,
        name: &str,
        spec: &Value,
        namespace: &str,
        ga: &str,
        canary: &str,
    ) -> Result<Vec<Split>, RouterError> {
        let kind = self.kind;
        let mut splits = Vec::new();
        for (rule_index, rule) in rules(spec).iter().enumerate() {
            let (ga_index, canary_index) = match positions(rule, namespace, ga, canary) {
                (Some(g), Some(c)) => (g, c),
                // A rule that only ever sends to GA (a pinned path, say) is the user's own.
                (None | Some(_), None) => continue,
                (None, Some(_)) => {
                    return Err(RouterError::Topology(format!(
                        "{kind} {namespace}/{name} rule {rule_index} sends traffic to {canary} but has no backendRef to the GA Service {ga}"
                    )));
                }
            };
            let all: Vec<(&str, u32)> = backends(rule)
                .iter()
                .map(|b| {
                    (
                        b.get("name").and_then(Value::as_str).unwrap_or("?"),
                        weight_of(b),
                    )
                })
                .collect();
            splits.push(split_of(
                &format!("{kind} {namespace}/{name} rule {rule_index}"),
                rule_index,
                &all,
                (ga_index, canary_index),
                (ga, canary),
            )?);
        }
        match splits.as_slice() {
            [] => Err(RouterError::Topology(format!(
                "{kind} {namespace}/{name} has no rule with backendRefs to both {ga} and {canary}"
            ))),
            [_] => Ok(splits),
            [..] => {
                let indexes: Vec<String> =
                    splits.iter().map(|s| s.rule_index.to_string()).collect();
                Err(RouterError::Topology(format!(
                    "{kind} {namespace}/{name} has several rules splitting {ga} and {canary} (rules {}); steerer drives one",
                    indexes.join(", ")
                )))
            }
        }
    }

    fn sends_to_both(&self, spec: &Value, namespace: &str, ga: &str, canary: &str) -> bool {
        rules(spec)
            .iter()
            .any(|rule| matches!(positions(rule, namespace, ga, canary), (Some(_), Some(_))))
    }

    fn fingerprint(&self, spec: &Value, splits: &[Split]) -> String {
        let managed: Vec<Value> = splits
            .iter()
            .map(|split| {
                let rule = &rules(spec)[split.rule_index];
                let backends: Vec<Value> = backends(rule)
                    .iter()
                    .map(|b| {
                        let mut b = b.clone();
                        if let Some(fields) = b.as_object_mut() {
                            fields.remove("weight");
                        }
                        b
                    })
                    .collect();
                json!({
                    "rule": split.rule_index,
                    "matches": rule.get("matches").cloned().unwrap_or(Value::Null),
                    "backendRefs": backends,
                })
            })
            .collect();
        template_hash(&Value::Array(managed))
    }

    fn weight_patch(
        &self,
        splits: &[Split],
        spec: &Value,
        resource_version: Option<&str>,
        canary_weight: u32,
    ) -> Option<Value> {
        weights_patch(
            splits,
            spec,
            resource_version,
            canary_weight,
            |split, index| format!("/rules/{}/backendRefs/{index}", split.rule_index),
            "name",
        )
    }

    fn rules_key(&self) -> &'static str {
        "rules"
    }

    /// A copy of the split rule (its filters and timeouts apply alike) named `name`, whose
    /// matches are the split's own (an HTTPRoute's default: every path) each joined with a
    /// header match of one of `matches`, and whose one backendRef is the canary's. The
    /// Gateway API matches headers exactly or by regex: a prefix becomes a regex, and a cookie
    /// a regex on the `Cookie` header.
    fn ab_rule(&self, spec: &Value, split: &Split, matches: &[RequestMatch], name: &str) -> Value {
        let rule = rules(spec)
            .get(split.rule_index)
            .cloned()
            .unwrap_or_else(|| json!({}));
        let every = match self.kind {
            RouteKind::HttpRoute => json!({"path": {"type": "PathPrefix", "value": "/"}}),
            _ => json!({}),
        };
        let own: Vec<Value> = rule
            .get("matches")
            .and_then(Value::as_array)
            .filter(|m| !m.is_empty())
            .cloned()
            .unwrap_or_else(|| vec![every]);
        let mut joined = Vec::new();
        for block in &own {
            for m in matches {
                let (header, kind, value) = match (&m.on, &m.value) {
                    (Matched::Header(h), MatchValue::Exact(v)) => (h.clone(), "Exact", v.clone()),
                    (Matched::Header(h), MatchValue::Prefix(v)) => (
                        h.clone(),
                        "RegularExpression",
                        format!("{}.*", ab::escape(v)),
                    ),
                    (Matched::Header(h), MatchValue::Regex(v)) => {
                        (h.clone(), "RegularExpression", v.clone())
                    }
                    (Matched::Cookie(c), value) => (
                        "cookie".to_owned(),
                        "RegularExpression",
                        ab::cookie_regex(c, value),
                    ),
                };
                let mut block = block.clone();
                let mut headers: Vec<Value> = block
                    .get("headers")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                // Header names are unique in a match: the A/B condition takes the place of one
                // on the same header.
                headers.retain(|h| {
                    !h.get("name")
                        .and_then(Value::as_str)
                        .is_some_and(|n| n.eq_ignore_ascii_case(&header))
                });
                headers.push(json!({"type": kind, "name": header, "value": value}));
                block["headers"] = Value::Array(headers);
                joined.push(block);
            }
        }
        let mut canary = backends(&rule)
            .get(split.canary_index)
            .cloned()
            .unwrap_or_else(|| json!({}));
        canary["weight"] = json!(100);
        let mut rule = rule;
        rule["name"] = json!(name);
        rule["matches"] = Value::Array(joined);
        rule["backendRefs"] = json!([canary]);
        rule
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::{RouteSplit, RouteView};

    /// A route as users write them: a pinned rule, then the split rule with a filter and
    /// timeouts, parentRefs and hostnames.
    fn route(ga: u32, canary: u32) -> Value {
        json!({
            "parentRefs": [{"name": "gateway", "namespace": "infra", "sectionName": "http"}],
            "hostnames": ["podinfo.example.com"],
            "rules": [
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/admin"}}],
                    "backendRefs": [{"name": "podinfo", "port": 9898}],
                },
                {
                    "filters": [{"type": "RequestHeaderModifier",
                                 "requestHeaderModifier": {"add": [{"name": "x-via", "value": "gw"}]}}],
                    "timeouts": {"request": "10s"},
                    "backendRefs": [
                        {"name": "podinfo", "port": 9898, "weight": ga},
                        {"name": "podinfo-canary", "port": 9898, "weight": canary},
                    ],
                },
            ],
        })
    }

    fn splits(spec: &Value) -> Result<Vec<Split>, RouterError> {
        HTTP_ROUTES.find_splits("podinfo", spec, "test", "podinfo", "podinfo-canary")
    }

    #[test]
    fn the_split_rule_is_found_and_a_rule_pinned_to_ga_is_left_alone() {
        assert_eq!(
            splits(&route(90, 10)).unwrap(),
            [Split {
                rule_index: 1,
                ga_index: 0,
                canary_index: 1,
                ga_weight: 90,
                canary_weight: 10,
            }]
        );
        assert!(HTTP_ROUTES.sends_to_both(&route(90, 10), "test", "podinfo", "podinfo-canary"));
    }

    #[test]
    fn applying_the_patch_changes_the_two_weights_and_nothing_else() {
        let spec = route(100, 0);
        let found = splits(&spec).unwrap();
        let ops = HTTP_ROUTES
            .weight_patch(&found, &spec, Some("7"), 30)
            .unwrap();
        assert_eq!(
            ops,
            json!([
                {"op": "test", "path": "/metadata/resourceVersion", "value": "7"},
                {"op": "test", "path": "/spec/rules/1/backendRefs/0/name", "value": "podinfo"},
                {"op": "add", "path": "/spec/rules/1/backendRefs/0/weight", "value": 70},
                {"op": "test", "path": "/spec/rules/1/backendRefs/1/name", "value": "podinfo-canary"},
                {"op": "add", "path": "/spec/rules/1/backendRefs/1/weight", "value": 30},
            ])
        );
        let patch: json_patch::Patch = serde_json::from_value(ops).unwrap();
        let mut doc =
            json!({"metadata": {"resourceVersion": "7", "labels": {"a": "b"}}, "spec": spec});
        json_patch::patch(&mut doc, &patch).unwrap();
        assert_eq!(
            doc,
            json!({"metadata": {"resourceVersion": "7", "labels": {"a": "b"}}, "spec": route(70, 30)})
        );
        assert_eq!(
            HTTP_ROUTES.weight_patch(&splits(&route(70, 30)).unwrap(), &route(70, 30), None, 30),
            None
        );
    }

    #[test]
    fn a_stale_version_or_a_renamed_backend_fails_the_patch() {
        let spec = route(100, 0);
        let ops = HTTP_ROUTES
            .weight_patch(&splits(&spec).unwrap(), &spec, Some("7"), 10)
            .unwrap();
        let patch: json_patch::Patch = serde_json::from_value(ops).unwrap();
        let mut stale = json!({"metadata": {"resourceVersion": "8"}, "spec": spec.clone()});
        assert!(json_patch::patch(&mut stale, &patch).is_err());
        let mut renamed = json!({"metadata": {"resourceVersion": "7"}, "spec": spec});
        renamed["spec"]["rules"][1]["backendRefs"][0]["name"] = json!("other");
        assert!(json_patch::patch(&mut renamed, &patch).is_err());
    }

    #[test]
    fn a_missing_weight_counts_as_one_and_the_sum_must_be_100() {
        let mut spec = route(100, 0);
        spec["rules"][1]["backendRefs"][1]
            .as_object_mut()
            .unwrap()
            .remove("weight");
        let error = splits(&spec).unwrap_err().to_string();
        assert!(error.contains("weights sum to 101"), "{error}");
    }

    #[test]
    fn a_third_backend_a_canary_only_rule_or_two_split_rules_are_refused() {
        let mut third = route(50, 50);
        third["rules"][1]["backendRefs"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "other", "port": 80}));
        assert!(splits(&third).unwrap_err().to_string().contains("other"));

        let mut canary_only = route(100, 0);
        canary_only["rules"][0]["backendRefs"][0]["name"] = json!("podinfo-canary");
        let error = splits(&canary_only).unwrap_err().to_string();
        assert!(error.contains("no backendRef to the GA Service"), "{error}");

        let mut two = route(100, 0);
        let rule = two["rules"][1].clone();
        two["rules"].as_array_mut().unwrap().push(rule);
        let error = splits(&two).unwrap_err().to_string();
        assert!(error.contains("rules 1, 2"), "{error}");

        let error = splits(&json!({"rules": []})).unwrap_err().to_string();
        assert!(
            error.starts_with("HTTPRoute test/podinfo has no rule"),
            "{error}"
        );
    }

    #[test]
    fn backends_in_other_namespaces_or_of_other_kinds_are_not_the_services() {
        let mut spec = route(100, 0);
        spec["rules"][1]["backendRefs"][1]["namespace"] = json!("elsewhere");
        assert!(!HTTP_ROUTES.sends_to_both(&spec, "test", "podinfo", "podinfo-canary"));
        let mut spec = route(100, 0);
        spec["rules"][1]["backendRefs"][1]["kind"] = json!("ServiceImport");
        spec["rules"][1]["backendRefs"][1]["group"] = json!("multicluster.x-k8s.io");
        assert!(!GRPC_ROUTES.sends_to_both(&spec, "test", "podinfo", "podinfo-canary"));
    }

    #[test]
    fn the_fingerprint_ignores_weights_and_sees_matches_and_backends() {
        let at = |spec: &Value| HTTP_ROUTES.fingerprint(spec, &splits(spec).unwrap());
        assert_eq!(at(&route(100, 0)), at(&route(40, 60)));
        let mut matched = route(100, 0);
        matched["rules"][1]["matches"] = json!([{"headers": [{"name": "x", "value": "1"}]}]);
        assert_ne!(at(&matched), at(&route(100, 0)));
        let mut port = route(100, 0);
        port["rules"][1]["backendRefs"][1]["port"] = json!(8080);
        assert_ne!(at(&port), at(&route(100, 0)));
    }

    #[test]
    fn the_view_names_the_kind_of_a_route_that_no_longer_splits() {
        let split = RouteSplit {
            namespace: "test".into(),
            kind: RouteKind::GrpcRoute,
            name: "podinfo".into(),
            ga_service: "podinfo".into(),
            canary_service: "podinfo-canary".into(),
            matches: Vec::new(),
        };
        assert!(matches!(
            GRPC_ROUTES.view(&route(80, 20), &split),
            RouteView::Split {
                canary_weight: 20,
                ..
            }
        ));
        assert!(matches!(
            GRPC_ROUTES.view(&json!({"rules": []}), &split),
            RouteView::Broken(why) if why.starts_with("GRPCRoute test/podinfo")
        ));
    }
}

#[cfg(test)]
mod ab_tests {
    //! A/B rules written and read back through the router's rules.
    use serde_json::{Value, json};

    use crate::domain::{AB_WEIGHT, MatchValue, RequestMatch};
    use crate::domain::{Matched, RouteKind};
    use crate::router::gateway::HTTP_ROUTES;
    use crate::router::patched::view_with;
    use crate::router::patched::written;
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

    fn http_route() -> Value {
        json!({"parentRefs": [{"name": "gw"}], "rules": [{"backendRefs": [
            {"name": "podinfo", "port": 9898, "weight": 100},
            {"name": "podinfo-canary", "port": 9898, "weight": 0},
        ]}]})
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
    fn an_ab_rule_in_an_http_route_tolerates_the_api_servers_defaults() {
        let route = split(RouteKind::HttpRoute, beta());
        let before = http_route();
        let (_, print) = weight_and_fingerprint(view_with(&HTTP_ROUTES, &before, &route));
        let on = written(&HTTP_ROUTES, &before, &route, AB_WEIGHT);
        assert_eq!(on["rules"][1], before["rules"][0]);
        assert_eq!(
            on["rules"][0],
            json!({"name": "steerer-ab", "matches": [
                {"path": {"type": "PathPrefix", "value": "/"},
                 "headers": [{"type": "Exact", "name": "X-Cohort", "value": "beta"}]},
                {"path": {"type": "PathPrefix", "value": "/"},
                 "headers": [{"type": "RegularExpression", "name": "cookie",
                              "value": "^(.*?;\\s*)?plan=gold[^;]*(;.*)?$"}]},
            ], "backendRefs": [{"name": "podinfo-canary", "port": 9898, "weight": 100}]})
        );
        // What a real API server stores: the backendRef's group and kind filled in.
        let mut stored = on.clone();
        stored["rules"][0]["backendRefs"][0]["group"] = json!("");
        stored["rules"][0]["backendRefs"][0]["kind"] = json!("Service");
        assert_eq!(
            weight_and_fingerprint(view_with(&HTTP_ROUTES, &stored, &route)),
            (AB_WEIGHT, print)
        );
        assert_eq!(written(&HTTP_ROUTES, &stored, &route, 0), before);
    }
}
