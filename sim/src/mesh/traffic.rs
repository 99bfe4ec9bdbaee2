//! What the mesh's synthetic requests carry: per Service, rules (`POST /sim/traffic`) giving a
//! share of its requests a set of headers and cookies, so routes that match on them (A/B
//! tests) get exactly that traffic. Rules of one Service add up, to at most all its requests.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// Headers and cookies a share of a Service's synthetic requests carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// Fraction of the Service's requests, in (0, 1].
    pub share: f64,
    /// Header name (lower case) -> value.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Cookie name -> value, sent as one `cookie` header.
    #[serde(default)]
    pub cookies: BTreeMap<String, String>,
}

impl Profile {
    /// The value of header `name` (any letter case) on these requests: the `cookie` header
    /// holds the cookies, `name=value` pairs joined by `; `.
    pub fn header(&self, name: &str) -> Option<String> {
        let name = name.to_ascii_lowercase();
        if name == "cookie" && !self.cookies.is_empty() {
            let pairs: Vec<String> = self
                .cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            return Some(pairs.join("; "));
        }
        self.headers.get(&name).cloned()
    }
}

/// The body of `POST /sim/traffic`: a rule for one Service, or `clear` to remove its rules.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficBody {
    pub namespace: String,
    pub service: String,
    #[serde(default)]
    pub share: Option<f64>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub cookies: BTreeMap<String, String>,
    #[serde(default)]
    pub clear: bool,
}

/// The rules of every Service, and a generation that changes with them (the traffic engine
/// rebuilds its routing table when it does).
#[derive(Debug, Default)]
pub struct TrafficRules {
    rules: std::sync::Mutex<BTreeMap<(String, String), Vec<Profile>>>,
    generation: AtomicU64,
}

impl TrafficRules {
    /// Applies a `POST /sim/traffic` body; answers the Service's rules now. A bad body (a
    /// share outside (0, 1] or taking the Service's shares over 1, a name that is not an
    /// HTTP token, a value with control characters, a cookie value with `;`) changes nothing.
    pub fn apply(&self, body: &[u8]) -> Result<Vec<Profile>, ApiError> {
        let b: TrafficBody = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("invalid body: {e}")))?;
        if b.namespace.is_empty() || b.service.is_empty() {
            return Err(ApiError::bad_request("namespace and service are required"));
        }
        let key = (b.namespace.clone(), b.service.clone());
        let mut rules = self
            .rules
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if b.clear {
            if b.share.is_some() || !b.headers.is_empty() || !b.cookies.is_empty() {
                return Err(ApiError::bad_request(
                    "clear takes no share, headers or cookies",
                ));
            }
            rules.remove(&key);
            self.generation.fetch_add(1, Ordering::Relaxed);
            return Ok(Vec::new());
        }
        let share = b
            .share
            .ok_or_else(|| ApiError::bad_request("share is required (or clear: true)"))?;
        if !share.is_finite() || share <= 0.0 || share > 1.0 {
            return Err(ApiError::bad_request("share must be above 0 and at most 1"));
        }
        let mut headers = BTreeMap::new();
        for (name, value) in &b.headers {
            check_token("header", name)?;
            check_value(name, value, false)?;
            headers.insert(name.to_ascii_lowercase(), value.clone());
        }
        for (name, value) in &b.cookies {
            check_token("cookie", name)?;
            check_value(name, value, true)?;
        }
        let existing = rules
            .get(&key)
            .map_or(0.0, |r| r.iter().map(|p| p.share).sum());
        if existing + share > 1.0 + 1e-9 {
            return Err(ApiError::bad_request(format!(
                "the rules of {}/{} already take a share of {existing}; adding {share} is over 1",
                b.namespace, b.service
            )));
        }
        let list = rules.entry(key).or_default();
        list.push(Profile {
            share,
            headers,
            cookies: b.cookies,
        });
        self.generation.fetch_add(1, Ordering::Relaxed);
        Ok(list.clone())
    }

    /// The rules of Service `namespace/service`, in the order they were added.
    pub fn of(&self, namespace: &str, service: &str) -> Vec<Profile> {
        self.rules
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&(namespace.to_owned(), service.to_owned()))
            .cloned()
            .unwrap_or_default()
    }

    /// Every Service's rules.
    pub fn snapshot(&self) -> BTreeMap<(String, String), Vec<Profile>> {
        self.rules
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Changes whenever the rules do.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }
}

fn check_token(what: &str, name: &str) -> Result<(), ApiError> {
    let tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.chars().all(tchar) {
        return Err(ApiError::bad_request(format!(
            "{what} name {name:?} is not an HTTP token"
        )));
    }
    Ok(())
}

fn check_value(name: &str, value: &str, cookie: bool) -> Result<(), ApiError> {
    let bad = |c: char| c.is_control() || (cookie && (c == ';' || c.is_whitespace()));
    if value.chars().any(bad) {
        return Err(ApiError::bad_request(format!(
            "the value of {name} has a character a request cannot carry there"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_add_up_to_at_most_all_requests_and_clear_removes_them() {
        let rules = TrafficRules::default();
        let g0 = rules.generation();
        let now = rules
            .apply(br#"{"namespace": "shop", "service": "checkout", "share": 0.3, "headers": {"X-Cohort": "beta"}, "cookies": {"plan": "gold"}}"#)
            .unwrap();
        assert_eq!(now.len(), 1);
        assert_eq!(now[0].headers["x-cohort"], "beta");
        assert_eq!(now[0].header("X-COHORT").as_deref(), Some("beta"));
        assert_eq!(now[0].header("cookie").as_deref(), Some("plan=gold"));
        assert_ne!(rules.generation(), g0);
        rules
            .apply(br#"{"namespace": "shop", "service": "checkout", "share": 0.7}"#)
            .unwrap();
        let g1 = rules.generation();
        let over = rules
            .apply(br#"{"namespace": "shop", "service": "checkout", "share": 0.01}"#)
            .unwrap_err();
        assert!(over.to_string().contains("over 1"), "{over}");
        assert_eq!(rules.generation(), g1, "a refused rule changes nothing");
        assert_eq!(rules.of("shop", "checkout").len(), 2);
        rules
            .apply(br#"{"namespace": "shop", "service": "checkout", "clear": true}"#)
            .unwrap();
        assert!(rules.of("shop", "checkout").is_empty());
    }

    #[test]
    fn bad_bodies_are_refused_and_change_nothing() {
        let rules = TrafficRules::default();
        for body in [
            r#"{"namespace": "shop", "service": "checkout"}"#,
            r#"{"namespace": "shop", "service": "checkout", "share": 0}"#,
            r#"{"namespace": "shop", "service": "checkout", "share": 1.5}"#,
            r#"{"namespace": "", "service": "checkout", "share": 0.5}"#,
            r#"{"namespace": "shop", "service": "checkout", "share": 0.5, "headers": {"x cohort": "a"}}"#,
            r#"{"namespace": "shop", "service": "checkout", "share": 0.5, "headers": {"x": "a\nb"}}"#,
            r#"{"namespace": "shop", "service": "checkout", "share": 0.5, "cookies": {"plan": "a; b=c"}}"#,
            r#"{"namespace": "shop", "service": "checkout", "share": 0.5, "clear": true}"#,
            r#"{"namespace": "shop", "service": "checkout", "share": 0.5, "other": 1}"#,
        ] {
            assert!(rules.apply(body.as_bytes()).is_err(), "{body}");
        }
        assert!(rules.snapshot().is_empty());
        assert_eq!(rules.generation(), 0);
    }
}
