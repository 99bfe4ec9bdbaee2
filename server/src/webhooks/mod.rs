//! Webhooks: the trait the engine calls them through, the JSON body they receive, and the
//! operator's allow-list of hosts (`--webhook-allow`) every URL must match, at StartRollout
//! and again at each call. What an answer does to a rollout is the engine's (`decide`);
//! making the call is an implementation's (`http`).

#[cfg(any(test, feature = "testing"))]
pub mod fake;
pub mod http;

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use serde::Serialize;

use crate::domain::{HookOutcome, Phase, Rollout, Webhook};

/// Calls a rollout's webhooks.
pub trait Webhooks: Send + Sync {
    /// POSTs `payload` to the hook and returns its answer; a timeout, an unreachable host or
    /// a URL no longer allowed is `HookOutcome::Failed`, never an answer.
    fn call<'a>(&'a self, hook: &'a Webhook, payload: &'a Payload) -> BoxFuture<'a, HookOutcome>;
}

/// The JSON body of a webhook call.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Payload {
    /// The webhook's name.
    pub name: String,
    /// Its type: `CONFIRM_ROLLOUT`, `PRE_ROLLOUT`, `ROLLOUT`, `CONFIRM_PROMOTION`,
    /// `POST_ROLLOUT` or `ROLLBACK`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub namespace: String,
    pub target: String,
    pub canary: String,
    pub rollout_id: String,
    pub revision: String,
    /// The rollout's phase as the API names it (`PROGRESSING`); for post-rollout webhooks the
    /// phase the rollout ends in (`SUCCEEDED`, `ROLLED_BACK`, `ABORTED`).
    pub phase: &'static str,
    pub canary_weight: u32,
    pub metadata: BTreeMap<String, String>,
}

impl Payload {
    /// The body for `hook` of `rollout`, in `phase`.
    pub fn new(rollout: &Rollout, hook: &Webhook, phase: Phase) -> Self {
        Self {
            name: hook.name.clone(),
            kind: hook.kind.api_name(),
            namespace: rollout.namespace.clone(),
            target: rollout.target.clone(),
            canary: rollout.canary.clone(),
            rollout_id: rollout.id.clone(),
            revision: rollout.revision.clone(),
            phase: phase_name(phase),
            canary_weight: rollout.canary_weight,
            metadata: hook.metadata.clone(),
        }
    }
}

/// A phase as the API names it, without its prefix.
pub fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Pending => "PENDING",
        Phase::Progressing => "PROGRESSING",
        Phase::Paused => "PAUSED",
        Phase::Promoting => "PROMOTING",
        Phase::Succeeded => "SUCCEEDED",
        Phase::RollingBack => "ROLLING_BACK",
        Phase::RolledBack => "ROLLED_BACK",
        Phase::Aborted => "ABORTED",
        Phase::Failed => "FAILED",
    }
}

/// Why a webhook URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// One allowed host: `host`, `host:port`, `*.suffix` or `*.suffix:port` (IPv6 addresses in
/// brackets).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    /// Lower case, without a leading `*.`.
    host: String,
    /// `*.suffix`: any host under the suffix (not the suffix itself).
    wildcard: bool,
    /// `None`: any port.
    port: Option<u16>,
    /// As the operator wrote it, for messages.
    text: String,
}

/// The hosts webhooks may be sent to; empty allows none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    patterns: Vec<Pattern>,
}

impl AllowList {
    /// Parses the operator's patterns: `host`, `host:port`, `*.suffix` (optionally with a
    /// port). Hosts are DNS names or IP addresses (IPv6 in brackets).
    pub fn parse(patterns: &[String]) -> Result<Self, Refused> {
        let mut parsed = Vec::new();
        for text in patterns.iter().map(|p| p.trim()).filter(|p| !p.is_empty()) {
            let bad = |why: &str| {
                Refused(format!(
                    "webhook allow pattern {text:?} {why}: use host, host:port or *.suffix"
                ))
            };
            let (wildcard, rest) = match text.strip_prefix("*.") {
                Some(rest) => (true, rest),
                None => (false, text),
            };
            let (host, port) = split_host_port(rest).ok_or_else(|| bad("is malformed"))?;
            if host.is_empty() || host.contains('*') || host.contains('/') || host.contains('@') {
                return Err(bad("is malformed"));
            }
            parsed.push(Pattern {
                host: host.to_ascii_lowercase(),
                wildcard,
                port,
                text: text.to_owned(),
            });
        }
        Ok(Self { patterns: parsed })
    }

    /// Whether no host is allowed.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The patterns as the operator wrote them, for messages.
    pub fn describe(&self) -> String {
        if self.patterns.is_empty() {
            "none: the server allows no webhook host (--webhook-allow)".to_owned()
        } else {
            self.patterns
                .iter()
                .map(|p| p.text.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        }
    }

    /// Checks a webhook URL: `http` or `https`, a host, no user info, and a host (and port)
    /// this list allows.
    pub fn check(&self, url: &str) -> Result<reqwest::Url, Refused> {
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| Refused(format!("url {:?} is not a URL: {e}", shown(url))))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(Refused(format!(
                "url {:?} must be http:// or https://",
                shown(url)
            )));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(Refused(format!(
                "url {:?} must not carry user info (it is stored with the rollout and shown to every reader)",
                shown(url)
            )));
        }
        let host = match parsed.host_str() {
            Some(host) if !host.is_empty() => host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_ascii_lowercase(),
            _ => return Err(Refused(format!("url {:?} has no host", shown(url)))),
        };
        let port = parsed.port_or_known_default();
        let allowed = self.patterns.iter().any(|p| {
            let host_ok = if p.wildcard {
                host.len() > p.host.len() + 1
                    && host.ends_with(&p.host)
                    && host[..host.len() - p.host.len()].ends_with('.')
            } else {
                host == p.host
            };
            host_ok && p.port.is_none_or(|want| Some(want) == port)
        });
        if !allowed {
            let at = port.map(|p| format!("{host}:{p}")).unwrap_or(host);
            return Err(Refused(format!(
                "url host {at} is not allowed for webhooks (allowed: {})",
                self.describe()
            )));
        }
        Ok(parsed)
    }
}

/// Splits `host`, `host:port`, `[v6]` or `[v6]:port`; the host of an IPv6 address comes back
/// without brackets. `None` when malformed.
fn split_host_port(text: &str) -> Option<(String, Option<u16>)> {
    if let Some(rest) = text.strip_prefix('[') {
        let (address, after) = rest.split_once(']')?;
        let address: std::net::Ipv6Addr = address.parse().ok()?;
        let port = match after {
            "" => None,
            port => Some(port.strip_prefix(':')?.parse().ok()?),
        };
        return Some((address.to_string(), port));
    }
    match text.split_once(':') {
        None => Some((text.to_owned(), None)),
        Some((host, port)) => Some((host.to_owned(), Some(port.parse().ok()?))),
    }
}

/// A URL cut short for messages.
fn shown(url: &str) -> String {
    url.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allow(patterns: &[&str]) -> AllowList {
        AllowList::parse(&patterns.iter().map(|p| p.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn nothing_is_allowed_by_default() {
        let none = AllowList::default();
        let error = none.check("http://hooks.example/x").unwrap_err();
        assert!(error.0.contains("allows no webhook host"), "{error}");
    }

    #[test]
    fn a_host_pattern_allows_that_host_on_any_port_and_nothing_else() {
        let list = allow(&["hooks.example", "127.0.0.1"]);
        assert!(list.check("http://hooks.example/approve").is_ok());
        assert!(list.check("https://HOOKS.example:8443/approve").is_ok());
        assert!(list.check("http://127.0.0.1:9000/").is_ok());
        for refused in [
            "http://evil.example/",
            "http://hooks.example.evil.example/",
            "http://sub.hooks.example/",
            "http://127.0.0.2/",
        ] {
            assert!(list.check(refused).is_err(), "{refused}");
        }
    }

    #[test]
    fn a_port_pattern_allows_only_that_port_counting_the_schemes_default() {
        let list = allow(&["hooks.example:8080", "secure.example:443"]);
        assert!(list.check("http://hooks.example:8080/x").is_ok());
        assert!(list.check("http://hooks.example/x").is_err());
        assert!(list.check("https://secure.example/x").is_ok());
        assert!(list.check("http://secure.example/x").is_err());
    }

    #[test]
    fn a_wildcard_allows_hosts_under_the_suffix_only() {
        let list = allow(&["*.hooks.internal"]);
        assert!(list.check("http://a.hooks.internal/").is_ok());
        assert!(list.check("http://a.b.hooks.internal:81/").is_ok());
        assert!(list.check("http://hooks.internal/").is_err());
        assert!(list.check("http://evilhooks.internal/").is_err());
    }

    #[test]
    fn ipv6_hosts_are_matched_without_brackets() {
        let list = allow(&["[::1]:8080"]);
        assert!(list.check("http://[::1]:8080/x").is_ok());
        assert!(list.check("http://[::1]:8081/x").is_err());
    }

    #[test]
    fn malformed_urls_other_schemes_and_user_info_are_refused() {
        let list = allow(&["hooks.example"]);
        for (url, says) in [
            ("not a url", "not a URL"),
            ("ftp://hooks.example/x", "http:// or https://"),
            ("file:///etc/passwd", "http:// or https://"),
            ("http://user:secret@hooks.example/", "user info"),
        ] {
            let error = list.check(url).unwrap_err();
            assert!(error.0.contains(says), "{url}: {error}");
        }
    }

    #[test]
    fn malformed_patterns_are_refused() {
        for bad in ["hooks.example:http", "*.", "a/b", "[::1", "*.*.example"] {
            assert!(
                AllowList::parse(&[bad.to_string()]).is_err(),
                "{bad} was accepted"
            );
        }
    }

    #[test]
    fn the_payload_names_the_rollout_the_hook_and_the_phase() {
        use crate::domain::WebhookKind;
        let rollout = Rollout::test()
            .at_weight(30)
            .with(|r| r.revision = "abc".into());
        let hook = Webhook {
            name: "load".into(),
            kind: WebhookKind::PreRollout,
            url: "http://127.0.0.1/".into(),
            timeout: std::time::Duration::from_secs(1),
            metadata: [("cmd".to_owned(), "hey -z 1m".to_owned())].into(),
        };
        let body = serde_json::to_value(Payload::new(&rollout, &hook, Phase::Pending)).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "name": "load", "type": "PRE_ROLLOUT", "namespace": "test",
                "target": "podinfo", "canary": "podinfo-canary", "rolloutId": "r1",
                "revision": "abc", "phase": "PENDING", "canaryWeight": 30,
                "metadata": {"cmd": "hey -z 1m"}
            })
        );
    }
}
