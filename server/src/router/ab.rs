//! A/B rules in routes, pure and shared by every route kind: the rule steerer adds ahead of a
//! split rule so that requests matching an A/B test go to the canary, how steerer tells its
//! own rules from its owner's, the route as its owner wrote it (steerer's rules taken out), and
//! the one patch that moves a route between any two traffic shapes.

use serde_json::{Value, json};

use super::RouterError;
use super::patched::{Rules, Split};
use crate::domain::{AB_WEIGHT, MatchValue, RequestMatch, template_hash};

/// The name of the rule steerer adds ahead of a split rule (`http[].name` of a
/// VirtualService, `rules[].name` of a Gateway API route); further splits get `steerer-ab-2`…
pub const OWN_RULE: &str = "steerer-ab";

/// The name of steerer's rule ahead of the `n`th split (from 0).
pub fn own_name(n: usize) -> String {
    if n == 0 {
        OWN_RULE.to_owned()
    } else {
        format!("{OWN_RULE}-{}", n + 1)
    }
}

/// Whether a rule is one steerer added.
pub fn is_own(rule: &Value) -> bool {
    rule.get("name")
        .and_then(Value::as_str)
        .is_some_and(|name| {
            name == OWN_RULE
                || name
                    .strip_prefix(OWN_RULE)
                    .and_then(|rest| rest.strip_prefix('-'))
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
}

/// The spec as its owner wrote it (steerer's rules under `key` taken out), and those rules.
pub fn strip(spec: &Value, key: &str) -> (Value, Vec<Value>) {
    let Some(all) = spec.get(key).and_then(Value::as_array) else {
        return (spec.clone(), Vec::new());
    };
    let (own, theirs): (Vec<Value>, Vec<Value>) = all.iter().cloned().partition(is_own);
    if own.is_empty() {
        return (spec.clone(), own);
    }
    let mut user = spec.clone();
    user[key] = Value::Array(theirs);
    (user, own)
}

/// Whether `written` holds everything `wanted` says: equal, except that objects may carry
/// fields `wanted` lacks (the defaults an API server fills in, such as an HTTPRoute match's
/// path or a backendRef's group and kind).
pub fn holds(written: &Value, wanted: &Value) -> bool {
    match (written, wanted) {
        (Value::Object(written), Value::Object(wanted)) => wanted
            .iter()
            .all(|(key, value)| written.get(key).is_some_and(|w| holds(w, value))),
        (Value::Array(written), Value::Array(wanted)) => {
            written.len() == wanted.len() && written.iter().zip(wanted).all(|(w, v)| holds(w, v))
        }
        _ => written == wanted,
    }
}

/// `text` with RE2's metacharacters escaped: it matches itself.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The RE2 regex (matching a whole `Cookie` header) of a request carrying cookie `name` with
/// a value `value` matches.
pub fn cookie_regex(name: &str, value: &MatchValue) -> String {
    let value = match value {
        MatchValue::Exact(v) => escape(v),
        MatchValue::Prefix(v) => format!("{}[^;]*", escape(v)),
        MatchValue::Regex(r) => format!("(?:{r})"),
    };
    format!("^(.*?;\\s*)?{}={value}(;.*)?$", escape(name))
}

/// Steerer's rules for an A/B test, one ahead of each split of the owner's `spec`.
pub fn own_rules(
    rules: &dyn Rules,
    spec: &Value,
    splits: &[Split],
    matches: &[RequestMatch],
) -> Vec<Value> {
    splits
        .iter()
        .enumerate()
        .map(|(n, split)| rules.ab_rule(spec, split, matches, &own_name(n)))
        .collect()
}

/// What a rollout reads in a route: the splits (found in the route as its owner wrote it), the
/// canary weight and the fingerprint of the owner's split rules.
///
/// With an A/B test's rules in place exactly as the rollout of `matches` writes them (and GA
/// taking all other traffic) the canary weight is [`AB_WEIGHT`] and the fingerprint the
/// owner's; steerer's rules in any other state (changed, or not this rollout's) change the
/// fingerprint, which the engine sees as a hand edit.
pub fn read(
    rules: &dyn Rules,
    (name, namespace): (&str, &str),
    spec: &Value,
    (ga, canary): (&str, &str),
    matches: &[RequestMatch],
) -> Result<(Vec<Split>, u32, String), RouterError> {
    let (user, own) = strip(spec, rules.rules_key());
    let splits = rules.find_splits(name, &user, namespace, ga, canary)?;
    let weight = splits[0].canary_weight;
    let fingerprint = rules.fingerprint(&user, &splits);
    if own.is_empty() {
        return Ok((splits, weight, fingerprint));
    }
    let wanted = own_rules(rules, &user, &splits, matches);
    let placed = in_place(spec, rules.rules_key(), &splits);
    if !matches.is_empty()
        && weight == 0
        && placed
        && own.len() == wanted.len()
        && own.iter().zip(&wanted).all(|(o, w)| holds(o, w))
    {
        return Ok((splits, AB_WEIGHT, fingerprint));
    }
    let changed = template_hash(&json!({"routes": fingerprint, "steerer": own, "weight": weight}));
    Ok((splits, weight, changed))
}

/// Whether each of steerer's rules sits right ahead of its split rule.
fn in_place(spec: &Value, key: &str, splits: &[Split]) -> bool {
    let all = spec
        .get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut seen_own = 0;
    let mut owner_index = 0;
    let mut next_split = splits.iter().peekable();
    for rule in all {
        if is_own(rule) {
            seen_own += 1;
            if next_split
                .peek()
                .is_none_or(|s| s.rule_index != owner_index)
            {
                return false;
            }
            next_split.next();
        } else {
            owner_index += 1;
        }
    }
    seen_own == splits.len()
}

/// The rules a route should hold for `canary_weight`: the owner's rules (of `user`, the spec
/// without steerer's) with the splits' weights set, and for an A/B test (`matches` not
/// empty) at a weight above 0 steerer's rule ahead of each split, whose unmatched traffic
/// all goes to GA.
pub fn desired(
    rules: &dyn Rules,
    user: &Value,
    splits: &[Split],
    matches: &[RequestMatch],
    canary_weight: u32,
) -> Result<Value, String> {
    let key = rules.rules_key();
    let (split_weight, ab) = if matches.is_empty() {
        (canary_weight, false)
    } else {
        (0, canary_weight > 0)
    };
    let mut doc = json!({ "spec": user });
    if let Some(ops) = rules.weight_patch(splits, user, None, split_weight) {
        let ops: json_patch::Patch = serde_json::from_value(ops).map_err(|e| e.to_string())?;
        json_patch::patch(&mut doc, &ops).map_err(|e| e.to_string())?;
    }
    let mut all = doc
        .pointer(&format!("/spec/{key}"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if ab {
        let own = own_rules(rules, user, splits, matches);
        for (split, rule) in splits.iter().zip(own).rev() {
            all.insert(split.rule_index.min(all.len()), rule);
        }
    }
    Ok(Value::Array(all))
}

/// The JSON patch that replaces the route's rules under `key` with `desired`, testing the
/// resourceVersion and the rules it replaces (so a route changed underneath fails the patch);
/// `None` when they are already so.
pub fn rules_patch(
    spec: &Value,
    key: &str,
    resource_version: Option<&str>,
    desired: Value,
) -> Option<Value> {
    let current = spec.get(key).cloned().unwrap_or(Value::Null);
    if current == desired {
        return None;
    }
    let mut ops = Vec::new();
    if let Some(rv) = resource_version {
        ops.push(json!({"op": "test", "path": "/metadata/resourceVersion", "value": rv}));
    }
    ops.push(json!({"op": "test", "path": format!("/spec/{key}"), "value": current}));
    ops.push(json!({"op": "replace", "path": format!("/spec/{key}"), "value": desired}));
    Some(Value::Array(ops))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steerer_knows_its_own_rules_by_name() {
        assert!(is_own(&json!({"name": "steerer-ab"})));
        assert!(is_own(&json!({"name": "steerer-ab-2"})));
        assert!(!is_own(&json!({"name": "steerer-abc"})));
        assert!(!is_own(&json!({"name": "steerer-ab-"})));
        assert!(!is_own(&json!({"name": "mine"})));
        assert!(!is_own(&json!({})));
        assert_eq!(own_name(0), "steerer-ab");
        assert_eq!(own_name(1), "steerer-ab-2");
    }

    #[test]
    fn a_written_rule_may_carry_defaults_but_nothing_different() {
        let wanted = json!({"matches": [{"headers": [{"name": "x", "value": "1"}]}]});
        let defaulted = json!({"matches": [{"headers": [{"name": "x", "value": "1", "type": "Exact"}],
                                             "path": {"type": "PathPrefix", "value": "/"}}]});
        assert!(holds(&defaulted, &wanted));
        let changed = json!({"matches": [{"headers": [{"name": "x", "value": "2"}]}]});
        assert!(!holds(&changed, &wanted));
        let more = json!({"matches": [{"headers": [{"name": "x", "value": "1"}]}, {}]});
        assert!(!holds(&more, &wanted));
    }

    #[test]
    fn cookie_regexes_match_the_cookie_among_others_and_nothing_else() {
        let re = |name: &str, value: MatchValue| {
            regex::Regex::new(&format!("^(?:{})$", cookie_regex(name, &value))).unwrap()
        };
        let exact = re("plan", MatchValue::Exact("gold.1".into()));
        assert!(exact.is_match("plan=gold.1"));
        assert!(exact.is_match("session=1; plan=gold.1; x=y"));
        assert!(!exact.is_match("plan=goldx1"));
        assert!(!exact.is_match("myplan=gold.1"));
        assert!(!exact.is_match("plan=gold.10"));
        let prefix = re("plan", MatchValue::Prefix("go".into()));
        assert!(prefix.is_match("a=b; plan=gold"));
        assert!(!prefix.is_match("plan=silver; x=go"));
        let regex = re("plan", MatchValue::Regex("gold|silver".into()));
        assert!(regex.is_match("plan=silver"));
        assert!(!regex.is_match("plan=bronze"));
    }

    use crate::domain::{Matched, RouteKind};
    use crate::router::gateway::HTTP_ROUTES;
    use crate::router::istio::VIRTUAL_SERVICES;
    use crate::router::patched::view_with;
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

    fn http_route() -> Value {
        json!({"parentRefs": [{"name": "gw"}], "rules": [{"backendRefs": [
            {"name": "podinfo", "port": 9898, "weight": 100},
            {"name": "podinfo-canary", "port": 9898, "weight": 0},
        ]}]})
    }

    /// Writes `weight` the way the router does, and returns the spec after the patch.
    fn write(rules: &dyn Rules, spec: &Value, route: &RouteSplit, weight: u32) -> Value {
        let key = rules.rules_key();
        let (user, _) = strip(spec, key);
        let splits = rules
            .find_splits("podinfo", &user, "test", "podinfo", "podinfo-canary")
            .unwrap();
        let wanted = desired(rules, &user, &splits, &route.matches, weight).unwrap();
        let Some(ops) = rules_patch(spec, key, Some("7"), wanted) else {
            return spec.clone();
        };
        let ops: json_patch::Patch = serde_json::from_value(ops).unwrap();
        let mut doc = json!({"metadata": {"resourceVersion": "7"}, "spec": spec});
        json_patch::patch(&mut doc, &ops).unwrap();
        doc["spec"].take()
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
        let on = write(&VIRTUAL_SERVICES, &before, &route, AB_WEIGHT);
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
        assert_eq!(write(&VIRTUAL_SERVICES, &on, &route, AB_WEIGHT), on);
        assert_eq!(write(&VIRTUAL_SERVICES, &on, &route, 0), before);
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
        assert_eq!(write(&VIRTUAL_SERVICES, &on, &canary, 0), before);
    }

    #[test]
    fn an_ab_rule_in_an_http_route_tolerates_the_api_servers_defaults() {
        let route = split(RouteKind::HttpRoute, beta());
        let before = http_route();
        let (_, print) = weight_and_fingerprint(view_with(&HTTP_ROUTES, &before, &route));
        let on = write(&HTTP_ROUTES, &before, &route, AB_WEIGHT);
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
        assert_eq!(write(&HTTP_ROUTES, &stored, &route, 0), before);
    }
}
