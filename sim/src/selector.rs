//! Label and field selectors: the `labelSelector` / `fieldSelector` query syntax and
//! `LabelSelector` objects (`matchLabels`, `matchExpressions`), matched against JSON objects.

use std::collections::BTreeMap;

use serde_json::Value;

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// `key=value` or `key==value`.
    Equals(String, String),
    /// `key!=value` (also true when the label is absent).
    NotEquals(String, String),
    /// `key in (a,b)`.
    In(String, Vec<String>),
    /// `key notin (a,b)` (also true when the label is absent).
    NotIn(String, Vec<String>),
    /// `key`.
    Exists(String),
    /// `!key`.
    DoesNotExist(String),
}

impl Requirement {
    fn matches(&self, labels: &BTreeMap<&str, &str>) -> bool {
        match self {
            Requirement::Equals(k, v) => labels.get(k.as_str()) == Some(&v.as_str()),
            Requirement::NotEquals(k, v) => labels.get(k.as_str()) != Some(&v.as_str()),
            Requirement::In(k, vs) => labels
                .get(k.as_str())
                .is_some_and(|l| vs.iter().any(|v| v == l)),
            Requirement::NotIn(k, vs) => labels
                .get(k.as_str())
                .is_none_or(|l| !vs.iter().any(|v| v == l)),
            Requirement::Exists(k) => labels.contains_key(k.as_str()),
            Requirement::DoesNotExist(k) => !labels.contains_key(k.as_str()),
        }
    }
}

/// A label selector: every requirement must hold. The empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    /// The requirements, all of which must hold.
    pub requirements: Vec<Requirement>,
}

/// A selector that does not parse, worded as kube-apiserver words it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SelectorError(pub String);

fn valid_key(key: &str) -> bool {
    let name = key.rsplit_once('/').map_or(
        key,
        |(prefix, name)| {
            if prefix.is_empty() { "" } else { name }
        },
    );
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn valid_value(value: &str) -> bool {
    value.is_empty()
        || (value.len() <= 63
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && value.starts_with(|c: char| c.is_ascii_alphanumeric())
            && value.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

/// Splits on commas that are not inside parentheses.
fn split_top_level(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

impl LabelSelector {
    /// Parses the query syntax: `a=b,c!=d,e in (x,y),f notin (z),g,!h`.
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        let text = text.trim();
        if text.is_empty() {
            return Ok(Self::default());
        }
        for part in split_top_level(text) {
            requirements.push(parse_requirement(part.trim())?);
        }
        Ok(Self { requirements })
    }

    /// Builds a selector from a `LabelSelector` object (`matchLabels`, `matchExpressions`).
    pub fn from_object(selector: &Value) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        if let Some(labels) = selector.get("matchLabels").and_then(Value::as_object) {
            for (k, v) in labels {
                let v = v.as_str().ok_or_else(|| {
                    SelectorError(format!("matchLabels[{k}]: value must be a string"))
                })?;
                requirements.push(Requirement::Equals(k.clone(), v.to_owned()));
            }
        }
        if let Some(exprs) = selector.get("matchExpressions").and_then(Value::as_array) {
            for e in exprs {
                let key = e
                    .get("key")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                let values: Vec<String> = e
                    .get("values")
                    .and_then(Value::as_array)
                    .map(|vs| {
                        vs.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default();
                let op = e.get("operator").and_then(Value::as_str).unwrap_or("");
                requirements.push(match op {
                    "In" => Requirement::In(key, values),
                    "NotIn" => Requirement::NotIn(key, values),
                    "Exists" => Requirement::Exists(key),
                    "DoesNotExist" => Requirement::DoesNotExist(key),
                    other => {
                        return Err(SelectorError(format!(
                            "{other:?} is not a valid label selector operator"
                        )));
                    }
                });
            }
        }
        Ok(Self { requirements })
    }

    /// Whether the selector has no requirement (matches everything).
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether a label map matches.
    pub fn matches_labels(&self, labels: &BTreeMap<&str, &str>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Whether an object's `metadata.labels` match.
    pub fn matches(&self, obj: &Value) -> bool {
        if self.requirements.is_empty() {
            return true;
        }
        self.matches_labels(&labels_of(obj, "/metadata/labels"))
    }

    /// The selector in query syntax.
    pub fn to_query(&self) -> String {
        self.requirements
            .iter()
            .map(|r| match r {
                Requirement::Equals(k, v) => format!("{k}={v}"),
                Requirement::NotEquals(k, v) => format!("{k}!={v}"),
                Requirement::In(k, vs) => format!("{k} in ({})", vs.join(",")),
                Requirement::NotIn(k, vs) => format!("{k} notin ({})", vs.join(",")),
                Requirement::Exists(k) => k.clone(),
                Requirement::DoesNotExist(k) => format!("!{k}"),
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// The string map at `pointer` of an object (labels, annotations, matchLabels).
pub fn labels_of<'a>(obj: &'a Value, pointer: &str) -> BTreeMap<&'a str, &'a str> {
    obj.pointer(pointer)
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.as_str(), v)))
                .collect()
        })
        .unwrap_or_default()
}

fn parse_requirement(part: &str) -> Result<Requirement, SelectorError> {
    let bad = |why: &str| SelectorError(format!("unable to parse requirement: {why}"));
    if part.is_empty() {
        return Err(bad("found '', expected: identifier"));
    }
    if let Some(key) = part.strip_prefix('!') {
        let key = key.trim();
        if !valid_key(key) {
            return Err(bad(&format!("invalid label key \"{key}\"")));
        }
        return Ok(Requirement::DoesNotExist(key.to_owned()));
    }
    for (op, ctor) in [
        (
            "!=",
            Requirement::NotEquals as fn(String, String) -> Requirement,
        ),
        ("==", Requirement::Equals),
        ("=", Requirement::Equals),
    ] {
        if let Some((key, value)) = part.split_once(op) {
            let (key, value) = (key.trim(), value.trim());
            if !valid_key(key) {
                return Err(bad(&format!("invalid label key \"{key}\"")));
            }
            if !valid_value(value) {
                return Err(bad(&format!("invalid label value: \"{value}\"")));
            }
            return Ok(ctor(key.to_owned(), value.to_owned()));
        }
    }
    let words: Vec<&str> = part.splitn(2, char::is_whitespace).collect();
    if words.len() == 2 {
        let key = words[0].trim();
        let rest = words[1].trim();
        let (is_in, list) = if let Some(l) = rest.strip_prefix("notin") {
            (false, l)
        } else if let Some(l) = rest.strip_prefix("in") {
            (true, l)
        } else {
            return Err(bad(&format!(
                "found '{rest}', expected: in, notin, =, ==, !=, gt, lt"
            )));
        };
        let list = list.trim();
        let inner = list
            .strip_prefix('(')
            .and_then(|l| l.strip_suffix(')'))
            .ok_or_else(|| bad(&format!("found '{list}', expected: '('")))?;
        if !valid_key(key) {
            return Err(bad(&format!("invalid label key \"{key}\"")));
        }
        let values: Vec<String> = inner
            .split(',')
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .collect();
        if values.is_empty() {
            return Err(bad(
                "for 'in', 'notin' operators, values set can't be empty",
            ));
        }
        if let Some(v) = values.iter().find(|v| !valid_value(v)) {
            return Err(bad(&format!("invalid label value: \"{v}\"")));
        }
        return Ok(if is_in {
            Requirement::In(key.to_owned(), values)
        } else {
            Requirement::NotIn(key.to_owned(), values)
        });
    }
    if !valid_key(part) {
        return Err(bad(&format!("invalid label key \"{part}\"")));
    }
    Ok(Requirement::Exists(part.to_owned()))
}

/// A field selector: `metadata.name=x,metadata.namespace!=y`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    /// (field path, wanted value, equal?) triples, all of which must hold.
    pub terms: Vec<(String, String, bool)>,
}

impl FieldSelector {
    /// Parses a field selector, accepting the fields of `allowed` (besides `metadata.name` and
    /// `metadata.namespace`, which every resource supports).
    pub fn parse(text: &str, allowed: &[&str]) -> Result<Self, SelectorError> {
        let mut terms = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, value, eq) = if let Some((f, v)) = part.split_once("!=") {
                (f, v, false)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, v, true)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, v, true)
            } else {
                return Err(SelectorError(format!(
                    "invalid selector: '{part}'; can't understand '{part}'"
                )));
            };
            let field = field.trim();
            if field != "metadata.name"
                && field != "metadata.namespace"
                && !allowed.contains(&field)
            {
                return Err(SelectorError(format!("field label not supported: {field}")));
            }
            terms.push((field.to_owned(), value.trim().to_owned(), eq));
        }
        Ok(Self { terms })
    }

    /// Whether an object matches.
    pub fn matches(&self, obj: &Value) -> bool {
        self.terms.iter().all(|(field, want, eq)| {
            let pointer = format!("/{}", field.replace('.', "/"));
            let have = match obj.pointer(&pointer) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            };
            (have == *want) == *eq
        })
    }

    /// The value an equality term requires of `field`, if any (`metadata.name=web`).
    pub fn equals(&self, field: &str) -> Option<&str> {
        self.terms
            .iter()
            .find(|(f, _, eq)| f == field && *eq)
            .map(|(_, v, _)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(labels: Value) -> Value {
        json!({"metadata": {"name": "x", "labels": labels}})
    }

    #[test]
    fn label_selector_supports_every_operator() {
        let sel = LabelSelector::parse(
            "app=web,tier==front,env!=prod,zone in (a, b),track notin (canary),team,!legacy",
        )
        .unwrap();
        assert_eq!(sel.requirements.len(), 7);
        let good = obj(json!({"app": "web", "tier": "front", "zone": "a", "team": "x"}));
        assert!(sel.matches(&good));
        let canary = obj(
            json!({"app": "web", "tier": "front", "zone": "a", "team": "x",
                                "track": "canary"}),
        );
        assert!(!sel.matches(&canary));
        let legacy = obj(
            json!({"app": "web", "tier": "front", "zone": "b", "team": "x",
                                "legacy": "1"}),
        );
        assert!(!sel.matches(&legacy));
    }

    #[test]
    fn malformed_label_selectors_are_refused() {
        for bad in [
            "app=we b",
            "app in a,b",
            "=x",
            "a,,b",
            "app in ()",
            "bad key!",
        ] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn selector_objects_match_like_query_selectors() {
        let sel = LabelSelector::from_object(&json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "track", "operator": "NotIn", "values": ["canary"]}],
        }))
        .unwrap();
        assert!(sel.matches(&obj(json!({"app": "web"}))));
        assert!(!sel.matches(&obj(json!({"app": "web", "track": "canary"}))));
        assert_eq!(sel.to_query(), "app=web,track notin (canary)");
    }

    #[test]
    fn field_selector_matches_name_and_refuses_unknown_fields() {
        let sel = FieldSelector::parse("metadata.name=x", &[]).unwrap();
        assert!(sel.matches(&obj(json!({}))));
        assert!(
            !FieldSelector::parse("metadata.name!=x", &[])
                .unwrap()
                .matches(&obj(json!({})))
        );
        assert!(FieldSelector::parse("spec.replicas=1", &[]).is_err());
    }
}
