//! Fault injection and request counting for the simulated API server.
//!
//! Tests and benchmarks use this to make the API misbehave the way a real cluster does and to
//! count the calls a client made:
//!
//! ```no_run
//! # use std::time::Duration;
//! # use steerer_sim::faults::{ClientMatch, Failure, Faults, Scope, Verb};
//! # let faults = Faults::default();
//! // Half of all PATCHes of VirtualServices fail with 500.
//! faults.fail_requests(0.5, Failure::InternalError, Scope::verb(Verb::Patch).resource("virtualservices"));
//! // Every list of Deployments takes 200 ms longer.
//! faults.delay_requests(Duration::from_millis(200), Scope::verb(Verb::List).resource("deployments"));
//! // One replica's Lease patches take 300 ms longer (a slow link); the others' do not.
//! let slow = ClientMatch::UserAgent("replica-b".into());
//! faults.delay_requests(Duration::from_millis(300), Scope::verb(Verb::Patch).resource("leases").client(slow));
//! // The next update, patch or delete of default/web answers 409 Conflict, once.
//! faults.conflict_next_write("deployments", "default", "web");
//! // Every open watch ends now (clients re-watch, or re-list after a 410).
//! faults.drop_watches();
//! // Requests arriving in the next 2 s are held until then.
//! faults.hold_for(Duration::from_secs(2));
//! // One client is cut off for 5 s (or until released): its requests wait, its watches go
//! // quiet; every other client is served.
//! let replica_a = ClientMatch::UserAgent("replica-a".into());
//! faults.hold_client(replica_a.clone(), Duration::from_secs(5));
//! faults.release_client(&replica_a);
//! // What did the client do?
//! assert_eq!(faults.count("patch", "virtualservices"), 0);
//! faults.clear();
//! ```
//!
//! Only resource requests (`/api/...` and `/apis/...` paths naming a resource) are counted and
//! faulted; discovery, `/version`, health checks and the admin endpoints under `/sim` never are.
//! Requests are counted by verb (`get`, `list`, `watch`, `create`, `update`, `patch`,
//! `delete`, `deletecollection`) and resource; a subresource counts as `resource/sub`
//! (`deployments/status`, `deployments/scale`).

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::str::FromStr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use http::{HeaderMap, header};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::error::ApiError;

/// An API verb, as Kubernetes audit logs and RBAC name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verb {
    /// GET of one object (or a subresource).
    Get,
    /// GET of a collection.
    List,
    /// GET of a collection or object with `watch=true`.
    Watch,
    /// POST.
    Create,
    /// PUT.
    Update,
    /// PATCH (any patch type).
    Patch,
    /// DELETE of one object.
    Delete,
    /// DELETE of a collection.
    #[serde(rename = "deletecollection")]
    DeleteCollection,
}

impl Verb {
    /// The lowercase name (`get`, `deletecollection`).
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
            Verb::DeleteCollection => "deletecollection",
        }
    }

    /// Whether the verb changes an object.
    pub fn is_write(self) -> bool {
        matches!(
            self,
            Verb::Create | Verb::Update | Verb::Patch | Verb::Delete | Verb::DeleteCollection
        )
    }
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Verb {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "get" => Verb::Get,
            "list" => Verb::List,
            "watch" => Verb::Watch,
            "create" => Verb::Create,
            "update" => Verb::Update,
            "patch" => Verb::Patch,
            "delete" => Verb::Delete,
            "deletecollection" => Verb::DeleteCollection,
            other => return Err(format!("unknown verb {other:?}")),
        })
    }
}

/// Which requests a fault applies to: optionally one verb, optionally one resource,
/// optionally one client. A resource (`deployments`) also covers its subresources
/// (`deployments/status`); naming a subresource covers only it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    /// Only this verb (any verb when `None`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verb: Option<Verb>,
    /// Only this resource, by plural name (any resource when `None`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// Only requests of this client (any client when `None`): one slow or failing replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<ClientMatch>,
}

impl Scope {
    /// Every resource request.
    pub fn any() -> Self {
        Self::default()
    }

    /// Requests of one verb.
    pub fn verb(verb: Verb) -> Self {
        Self {
            verb: Some(verb),
            ..Self::default()
        }
    }

    /// Narrows the scope to one resource (`deployments`, `virtualservices`,
    /// `deployments/scale`).
    pub fn resource(mut self, resource: impl Into<String>) -> Self {
        self.resource = Some(resource.into());
        self
    }

    /// Narrows the scope to one client's requests.
    pub fn client(mut self, client: ClientMatch) -> Self {
        self.client = Some(client);
        self
    }

    /// Whether a request of `client` falls in this scope (with any verb and resource).
    pub fn matches_client(&self, client: &ClientId) -> bool {
        self.client.as_ref().is_none_or(|want| want.matches(client))
    }

    /// Whether a request of `verb` on `resource` (`deployments` or `deployments/status`)
    /// falls in this scope, whatever its client.
    pub fn matches(&self, verb: Verb, resource: &str) -> bool {
        self.verb.is_none_or(|v| v == verb)
            && self.resource.as_deref().is_none_or(|want| {
                resource == want
                    || resource
                        .strip_prefix(want)
                        .is_some_and(|rest| rest.starts_with('/'))
            })
    }
}

/// The error a failing request answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Failure {
    /// 500 InternalError.
    InternalError,
    /// 429 TooManyRequests (API priority and fairness throttling).
    TooManyRequests,
}

impl Failure {
    /// The failure for an HTTP code (429 or anything else as 500).
    pub fn from_code(code: u16) -> Self {
        if code == 429 {
            Failure::TooManyRequests
        } else {
            Failure::InternalError
        }
    }

    fn to_error(self) -> ApiError {
        match self {
            Failure::InternalError => ApiError::internal("injected fault: internal error"),
            Failure::TooManyRequests => ApiError::too_many_requests(),
        }
    }
}

/// One active fault: a scope with an error rate and/or an added latency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultRule {
    /// Which requests.
    #[serde(flatten)]
    pub scope: Scope,
    /// Fraction of matching requests that fail, 0.0 to 1.0.
    #[serde(default)]
    pub error_rate: f64,
    /// HTTP code of the failures: 500 (default) or 429.
    #[serde(default = "default_error_code")]
    pub error_code: u16,
    /// Added latency of every matching request, in milliseconds.
    #[serde(default)]
    pub latency_ms: u64,
}

fn default_error_code() -> u16 {
    500
}

/// Which client a fault applies to, by what it sends with every request. The simulator
/// authenticates nobody, so each client (each replica of a server under test) can carry a
/// token or User-Agent of its own: in kube-rs, `Config::auth_info.token` or an entry in
/// `Config::headers`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ClientMatch {
    /// Requests whose `User-Agent` is this, or begins with it followed by `/` or a space
    /// (`replica-a` matches `replica-a/1.0 (linux)`).
    UserAgent(String),
    /// Requests with `Authorization: Bearer <this>`.
    BearerToken(String),
}

impl ClientMatch {
    /// Whether a request from `client` matches.
    pub fn matches(&self, client: &ClientId) -> bool {
        match self {
            ClientMatch::UserAgent(want) => client.user_agent.as_deref().is_some_and(|ua| {
                ua.strip_prefix(want.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with(['/', ' ']))
            }),
            ClientMatch::BearerToken(want) => client.token.as_deref() == Some(want.as_str()),
        }
    }
}

/// What a request says about its client: its User-Agent and bearer token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientId {
    /// The `User-Agent` header.
    pub user_agent: Option<String>,
    /// The token of an `Authorization: Bearer` header.
    pub token: Option<String>,
}

impl ClientId {
    /// The client of a request, from its headers.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
        Self {
            user_agent: text(header::USER_AGENT).map(str::to_owned),
            token: text(header::AUTHORIZATION)
                .and_then(|auth| auth.strip_prefix("Bearer "))
                .map(|token| token.trim().to_owned()),
        }
    }
}

/// How long a hold "until released" lasts at most.
const UNTIL_RELEASED: Duration = Duration::from_secs(365 * 24 * 3600);

#[derive(Debug, Default)]
struct State {
    rules: Vec<FaultRule>,
    conflicts: HashSet<(String, String, String)>,
    hold_until: Option<Instant>,
    client_holds: Vec<(ClientMatch, Instant)>,
    counts: BTreeMap<(String, String), u64>,
    injected: BTreeMap<(String, String), u64>,
}

/// Faults to inject into the API and counters of the requests it served. Every method takes
/// `&self`; the simulator checks the faults on each resource request.
#[derive(Debug)]
pub struct Faults {
    state: Mutex<State>,
    drops: watch::Sender<u64>,
    /// Bumped whenever a client hold ends early, to wake what waits on it.
    releases: watch::Sender<u64>,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            state: Mutex::new(State::default()),
            drops: watch::Sender::new(0),
            releases: watch::Sender::new(0),
        }
    }
}

impl Faults {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is plain data; a panic elsewhere cannot leave it half-updated.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes `fraction` (0.0..=1.0) of the requests in `scope` fail with `failure`.
    pub fn fail_requests(&self, fraction: f64, failure: Failure, scope: Scope) {
        self.add_rule(FaultRule {
            scope,
            error_rate: fraction.clamp(0.0, 1.0),
            error_code: match failure {
                Failure::InternalError => 500,
                Failure::TooManyRequests => 429,
            },
            latency_ms: 0,
        });
    }

    /// Adds `latency` to every request in `scope`. Where several delays match, the longest
    /// applies.
    pub fn delay_requests(&self, latency: Duration, scope: Scope) {
        self.add_rule(FaultRule {
            scope,
            error_rate: 0.0,
            error_code: 500,
            latency_ms: u64::try_from(latency.as_millis()).unwrap_or(u64::MAX),
        });
    }

    /// Adds a rule as the admin endpoint receives it.
    pub fn add_rule(&self, rule: FaultRule) {
        self.lock().rules.push(rule);
    }

    /// The active rules.
    pub fn rules(&self) -> Vec<FaultRule> {
        self.lock().rules.clone()
    }

    /// The next update, patch or delete of the object `namespace/name` of `resource` (plural
    /// name; empty namespace for cluster-scoped objects) answers 409 Conflict, once.
    pub fn conflict_next_write(&self, resource: &str, namespace: &str, name: &str) {
        self.lock()
            .conflicts
            .insert((resource.into(), namespace.into(), name.into()));
    }

    /// Ends every open watch now. Clients see the stream close and re-watch from their last
    /// resourceVersion (or re-list, when that version has been compacted).
    pub fn drop_watches(&self) {
        self.drops.send_modify(|n| *n += 1);
    }

    /// Holds every API request (resource requests, discovery and health checks alike) arriving
    /// in the next `duration` until it has passed, as an unresponsive API server would.
    pub fn hold_for(&self, duration: Duration) {
        self.lock().hold_until = Some(Instant::now() + duration);
    }

    /// Cuts one client off for `duration` (`Duration::MAX`: until released), as a network
    /// partition between it and the API server would: its requests (discovery included) wait
    /// until the hold ends and are served then, as TCP retransmits would deliver them, answers
    /// to its requests in flight wait too, and its open watches deliver nothing, their events
    /// following when the hold ends. Other clients are served as usual. A second hold of the
    /// same client replaces the first.
    pub fn hold_client(&self, client: ClientMatch, duration: Duration) {
        let now = Instant::now();
        let until = now
            .checked_add(duration.min(UNTIL_RELEASED))
            .unwrap_or(now + UNTIL_RELEASED);
        let mut state = self.lock();
        state
            .client_holds
            .retain(|(held, until)| *held != client && *until > now);
        state.client_holds.push((client, until));
        drop(state);
        // A shorter hold than the one it replaces must wake the waiters.
        self.releases.send_modify(|n| *n += 1);
    }

    /// Ends the holds of `client` now: what it sent meanwhile is served.
    pub fn release_client(&self, client: &ClientMatch) {
        self.lock().client_holds.retain(|(held, _)| held != client);
        self.releases.send_modify(|n| *n += 1);
    }

    /// The clients held now, with the time each hold has left.
    pub fn held_clients(&self) -> Vec<(ClientMatch, Duration)> {
        let now = Instant::now();
        self.lock()
            .client_holds
            .iter()
            .filter(|(_, until)| *until > now)
            .map(|(client, until)| (client.clone(), *until - now))
            .collect()
    }

    /// Removes every rule, pending conflict and hold, client holds included (counters stay).
    pub fn clear(&self) {
        let mut state = self.lock();
        state.rules.clear();
        state.conflicts.clear();
        state.hold_until = None;
        state.client_holds.clear();
        drop(state);
        self.releases.send_modify(|n| *n += 1);
    }

    /// Requests served so far, by (verb, resource).
    pub fn counts(&self) -> BTreeMap<(String, String), u64> {
        self.lock().counts.clone()
    }

    /// Requests of `verb` (`"patch"`) on `resource` (`"virtualservices"`,
    /// `"deployments/scale"`) so far.
    pub fn count(&self, verb: &str, resource: &str) -> u64 {
        self.lock()
            .counts
            .get(&(verb.to_owned(), resource.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    /// All resource requests so far.
    pub fn total(&self) -> u64 {
        self.lock().counts.values().sum()
    }

    /// Requests of `verb` on `resource` that an error rule failed, so far.
    pub fn injected(&self, verb: &str, resource: &str) -> u64 {
        self.lock()
            .injected
            .get(&(verb.to_owned(), resource.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    /// All requests an error rule failed, so far.
    pub fn injected_total(&self) -> u64 {
        self.lock().injected.values().sum()
    }

    /// Sets every counter (served and failed requests) back to zero.
    pub fn reset_counts(&self) {
        let mut state = self.lock();
        state.counts.clear();
        state.injected.clear();
    }

    /// Counts a resource request.
    pub(crate) fn record(&self, verb: Verb, resource: &str) {
        *self
            .lock()
            .counts
            .entry((verb.as_str().to_owned(), resource.to_owned()))
            .or_insert(0) += 1;
    }

    /// Waits out a hold, if one is active.
    pub(crate) async fn wait_hold(&self) {
        let until = self.lock().hold_until;
        if let Some(until) = until {
            tokio::time::sleep_until(until.into()).await;
        }
    }

    /// Waits while `client` is held.
    pub(crate) async fn wait_client(&self, client: &ClientId) {
        let mut releases = self.releases.subscribe();
        loop {
            let now = Instant::now();
            let until = self
                .lock()
                .client_holds
                .iter()
                .filter(|(held, until)| *until > now && held.matches(client))
                .map(|(_, until)| *until)
                .max();
            let Some(until) = until else {
                return;
            };
            tokio::select! {
                () = tokio::time::sleep_until(until.into()) => {}
                changed = releases.changed() => {
                    if changed.is_err() {
                        tokio::time::sleep_until(until.into()).await;
                    }
                }
            }
        }
    }

    /// Plays the latency and error rules for a resource request: sleeps for the longest
    /// matching delay, then fails the request if a matching error rule says so.
    pub(crate) async fn before_request(
        &self,
        verb: Verb,
        resource: &str,
        client: &ClientId,
    ) -> Result<(), ApiError> {
        let (delay, failure) = {
            let mut state = self.lock();
            let mut delay = 0;
            let mut failure = None;
            for rule in state
                .rules
                .iter()
                .filter(|r| r.scope.matches(verb, resource) && r.scope.matches_client(client))
            {
                delay = delay.max(rule.latency_ms);
                if failure.is_none()
                    && rule.error_rate > 0.0
                    && rand::random::<f64>() < rule.error_rate
                {
                    failure = Some(Failure::from_code(rule.error_code));
                }
            }
            if failure.is_some() {
                *state
                    .injected
                    .entry((verb.as_str().to_owned(), resource.to_owned()))
                    .or_insert(0) += 1;
            }
            (delay, failure)
        };
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        match failure {
            Some(failure) => Err(failure.to_error()),
            None => Ok(()),
        }
    }

    /// Whether a write to this object must fail with a forced conflict (consumes it).
    pub(crate) fn take_conflict(&self, resource: &str, namespace: &str, name: &str) -> bool {
        self.lock()
            .conflicts
            .remove(&(resource.into(), namespace.into(), name.into()))
    }

    /// A receiver that changes whenever `drop_watches` is called.
    pub(crate) fn watch_drops(&self) -> watch::Receiver<u64> {
        self.drops.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_matches_resource_and_its_subresources() {
        let scope = Scope::verb(Verb::Patch).resource("deployments");
        assert!(scope.matches(Verb::Patch, "deployments"));
        assert!(scope.matches(Verb::Patch, "deployments/scale"));
        assert!(!scope.matches(Verb::Patch, "deploymentsx"));
        assert!(!scope.matches(Verb::Get, "deployments"));
        assert!(Scope::any().matches(Verb::Watch, "leases"));
    }

    #[tokio::test]
    async fn full_error_rate_fails_only_matching_requests() {
        let faults = Faults::default();
        faults.fail_requests(1.0, Failure::TooManyRequests, Scope::verb(Verb::List));
        let err = faults
            .before_request(Verb::List, "pods", &ClientId::default())
            .await
            .unwrap_err();
        assert_eq!(err.code, 429);
        assert!(
            faults
                .before_request(Verb::Get, "pods", &ClientId::default())
                .await
                .is_ok()
        );
        faults.clear();
        assert!(
            faults
                .before_request(Verb::List, "pods", &ClientId::default())
                .await
                .is_ok()
        );
    }

    #[test]
    fn forced_conflict_is_consumed_once() {
        let faults = Faults::default();
        faults.conflict_next_write("deployments", "ns", "web");
        assert!(faults.take_conflict("deployments", "ns", "web"));
        assert!(!faults.take_conflict("deployments", "ns", "web"));
    }

    fn client(user_agent: Option<&str>, token: Option<&str>) -> ClientId {
        ClientId {
            user_agent: user_agent.map(str::to_owned),
            token: token.map(str::to_owned),
        }
    }

    #[test]
    fn clients_match_by_user_agent_product_or_bearer_token() {
        let ua = ClientMatch::UserAgent("replica-a".into());
        assert!(ua.matches(&client(Some("replica-a"), None)));
        assert!(ua.matches(&client(Some("replica-a/1.0 (linux)"), None)));
        assert!(!ua.matches(&client(Some("replica-ab"), None)));
        assert!(!ua.matches(&client(None, Some("replica-a"))));
        let token = ClientMatch::BearerToken("t1".into());
        assert!(token.matches(&client(None, Some("t1"))));
        assert!(!token.matches(&client(None, Some("t2"))));
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, "Bearer t1".parse().unwrap());
        headers.insert(header::USER_AGENT, "replica-a/2".parse().unwrap());
        let id = ClientId::from_headers(&headers);
        assert!(token.matches(&id) && ua.matches(&id));
    }

    #[tokio::test]
    async fn a_held_client_waits_until_released_and_others_do_not() {
        let faults = std::sync::Arc::new(Faults::default());
        let a = ClientMatch::UserAgent("a".into());
        faults.hold_client(a.clone(), Duration::MAX);
        let other = client(Some("b"), None);
        tokio::time::timeout(Duration::from_millis(100), faults.wait_client(&other))
            .await
            .unwrap();
        let waiter = {
            let faults = std::sync::Arc::clone(&faults);
            tokio::spawn(async move { faults.wait_client(&client(Some("a"), None)).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        assert_eq!(faults.held_clients().len(), 1);
        faults.release_client(&a);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .unwrap()
            .unwrap();
        assert!(faults.held_clients().is_empty());
    }

    #[tokio::test]
    async fn a_rule_for_one_client_spares_the_others() {
        let faults = Faults::default();
        let b = ClientMatch::UserAgent("b".into());
        faults.fail_requests(1.0, Failure::InternalError, Scope::any().client(b));
        let err = faults
            .before_request(Verb::Get, "leases", &client(Some("b/1"), None))
            .await
            .unwrap_err();
        assert_eq!(err.code, 500);
        assert!(
            faults
                .before_request(Verb::Get, "leases", &client(Some("a/1"), None))
                .await
                .is_ok()
        );
        let rule: FaultRule = serde_json::from_str(
            r#"{"verb": "patch", "client": {"userAgent": "b"}, "latencyMs": 300}"#,
        )
        .unwrap();
        assert_eq!(
            rule.scope,
            Scope::verb(Verb::Patch).client(ClientMatch::UserAgent("b".into()))
        );
    }

    #[test]
    fn rules_round_trip_through_the_admin_json() {
        let rule: FaultRule = serde_json::from_str(
            r#"{"verb": "patch", "resource": "virtualservices", "errorRate": 0.5, "errorCode": 429}"#,
        )
        .unwrap();
        assert_eq!(
            rule.scope,
            Scope::verb(Verb::Patch).resource("virtualservices")
        );
        assert_eq!(rule.error_code, 429);
        assert_eq!(rule.latency_ms, 0);
    }
}
