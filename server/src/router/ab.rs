//! A/B rules in routes, pure and shared by every route kind: the rule steerer adds ahead of a
//! split rule so that requests matching an A/B test go to the canary, how steerer tells its
//! own rules from its owner's, the route as its owner wrote it (steerer's rules taken out), and
//! the one patch that moves a route between any two traffic shapes.

use serde_json::{Value, json};

use crate::domain::MatchValue;

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

/// Whether each of steerer's rules sits right ahead of its split rule (`splits`: the split
/// rules' indexes among the owner's rules, in order).
pub fn in_place(spec: &Value, key: &str, splits: &[usize]) -> bool {
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
            if next_split.peek().is_none_or(|s| **s != owner_index) {
                return false;
            }
            next_split.next();
        } else {
            owner_index += 1;
        }
    }
    seen_own == splits.len()
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
}
