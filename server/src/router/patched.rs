//! The router of routes that are custom resources ([`PatchRouter`]): objects of one kind read
//! from a watch cache and written with JSON patches that change only the weights (and, for an
//! A/B test, add or remove steerer's own `steerer-ab` rules), guarded by the resourceVersion
//! (retried on conflict). Each kind brings its pure [`Rules`] (where the
//! weights sit, what a hand edit changes, the patch): Istio's VirtualService, the Gateway
//! API's HTTPRoute and GRPCRoute.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use futures::future::BoxFuture;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::ab;
use super::{
    KindRouter, Resolved, RouteKind, RouteRef, RouteSplit, RouteView, Router, RouterContext,
    RouterError,
};
use crate::cache::{Cache, Changes, Views};
use crate::domain::{AB_WEIGHT, RequestMatch, template_hash};

/// Where the GA and canary weights sit in one rule of a route (an `http[]` route of a
/// VirtualService, a `rules[]` entry of an HTTPRoute or GRPCRoute).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    pub rule_index: usize,
    pub ga_index: usize,
    pub canary_index: usize,
    pub ga_weight: u32,
    pub canary_weight: u32,
}

/// The pure rules of one kind of route, over its `spec`.
pub trait Rules: Send + Sync {
    /// Every rule splitting traffic between exactly the GA and canary Services, checked: each
    /// sums to 100 and all agree. The error says which object and why, for a person.
    fn find_splits(
        &self,
        name: &str,
        spec: &Value,
        namespace: &str,
        ga: &str,
        canary: &str,
    ) -> Result<Vec<Split>, RouterError>;

    /// Whether some rule of the route sends traffic to both Services (auto-detection).
    fn sends_to_both(&self, spec: &Value, namespace: &str, ga: &str, canary: &str) -> bool;

    /// A fingerprint of what a rollout relies on but does not change in the split rules
    /// (their matches and backends, without the weights).
    fn fingerprint(&self, spec: &Value, splits: &[Split]) -> String;

    /// The JSON patch that sets the canary weight on every split and nothing else, testing
    /// the resourceVersion and each backend it writes; `None` when the weights are right.
    fn weight_patch(
        &self,
        splits: &[Split],
        spec: &Value,
        resource_version: Option<&str>,
        canary_weight: u32,
    ) -> Option<Value>;

    /// The field of the spec holding the rules: `http` (VirtualService), `rules` (Gateway API).
    fn rules_key(&self) -> &'static str;

    /// The rule steerer adds ahead of `split` for an A/B test, named `name`: the split rule
    /// with each of its matches joined with each of `matches` (a request must meet both), and
    /// all of that traffic to the split's canary backend.
    fn ab_rule(&self, spec: &Value, split: &Split, matches: &[RequestMatch], name: &str) -> Value;

    /// The view a rollout has of a route's spec (see [`read_route`]).
    fn view(&self, spec: &Value, route: &RouteSplit) -> RouteView
    where
        Self: Sized,
    {
        view_with(self, spec, route)
    }
}

/// The view a rollout has of a route's spec under `rules` (see [`read_route`]).
pub fn view_with(rules: &dyn Rules, spec: &Value, route: &RouteSplit) -> RouteView {
    match read_route(
        rules,
        (&route.name, &route.namespace),
        spec,
        (&route.ga_service, &route.canary_service),
        &route.matches,
    ) {
        Ok((_, canary_weight, fingerprint)) => RouteView::Split {
            canary_weight,
            fingerprint,
        },
        Err(error) => RouteView::Broken(error.to_string()),
    }
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
        .map(|(n, split)| rules.ab_rule(spec, split, matches, &ab::own_name(n)))
        .collect()
}

/// What a rollout reads in a route: the splits (found in the route as its owner wrote it), the
/// canary weight and the fingerprint of the owner's split rules.
///
/// With an A/B test's rules in place exactly as the rollout of `matches` writes them (and GA
/// taking all other traffic) the canary weight is [`AB_WEIGHT`](crate::domain::AB_WEIGHT) and the fingerprint the
/// owner's; steerer's rules in any other state (changed, or not this rollout's) change the
/// fingerprint, which the engine sees as a hand edit.
pub fn read_route(
    rules: &dyn Rules,
    (name, namespace): (&str, &str),
    spec: &Value,
    (ga, canary): (&str, &str),
    matches: &[RequestMatch],
) -> Result<(Vec<Split>, u32, String), RouterError> {
    let (user, own) = ab::strip(spec, rules.rules_key());
    let splits = rules.find_splits(name, &user, namespace, ga, canary)?;
    let weight = splits[0].canary_weight;
    let fingerprint = rules.fingerprint(&user, &splits);
    if own.is_empty() {
        return Ok((splits, weight, fingerprint));
    }
    let wanted = own_rules(rules, &user, &splits, matches);
    let indexes: Vec<usize> = splits.iter().map(|s| s.rule_index).collect();
    let placed = ab::in_place(spec, rules.rules_key(), &indexes);
    if !matches.is_empty()
        && weight == 0
        && placed
        && own.len() == wanted.len()
        && own.iter().zip(&wanted).all(|(o, w)| ab::holds(o, w))
    {
        return Ok((splits, AB_WEIGHT, fingerprint));
    }
    let changed = template_hash(&json!({"routes": fingerprint, "steerer": own, "weight": weight}));
    Ok((splits, weight, changed))
}

/// The rules a route should hold for `canary_weight`: the owner's rules (of `user`, the spec
/// without steerer's) with the splits' weights set, and for an A/B test (`matches` not
/// empty) at a weight above 0 steerer's rule ahead of each split, whose unmatched traffic
/// all goes to GA.
pub fn desired_rules(
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

/// Retries of a weight patch after the first attempt.
const WRITE_RETRIES: usize = 3;
/// Pause before the first retry, before jitter; doubles with each retry.
const RETRY_BASE: Duration = Duration::from_millis(25);
/// Longest pause before jitter (with it, up to twice as long).
const RETRY_CAP: Duration = Duration::from_millis(400);
/// Pause after a 429 (the API server shedding load) before anything else is tried.
const THROTTLED_MIN: Duration = Duration::from_millis(250);

/// The pauses between attempts at a weight patch: exponential and capped, each with up to as
/// much again of random jitter, so that drivers that failed together do not retry together.
fn write_backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(RETRY_BASE)
        .with_max_delay(RETRY_CAP)
        .with_factor(2.0)
        .with_jitter()
        .with_max_times(WRITE_RETRIES)
}

/// Whether a failed weight patch is worth another attempt with a fresh read: a conflict
/// (409) or a failed `test` op (422) means someone wrote in between; 5xx, 429 and transport
/// errors pass. Other refusals (403, 400…) will be the same next time.
fn retry_write(error: &RouterError) -> bool {
    match error {
        RouterError::Api {
            action: PATCH_WEIGHTS,
            source,
            ..
        } => !crate::retry::status_code(source)
            .is_some_and(|c| c != 422 && crate::retry::is_permanent(c)),
        _ => false,
    }
}

/// Whether the API server shed the request (429): the next attempt waits longer.
fn throttled(error: &RouterError) -> bool {
    matches!(error, RouterError::Api { source, .. } if crate::retry::status_code(source) == Some(429))
}

const PATCH_WEIGHTS: &str = "patch weights of";

/// Per (namespace, name): the object our last write returned.
type Written = HashMap<(String, String), Arc<DynamicObject>>;
/// (namespace, route, GA Service, canary Service).
type SplitKey = (String, String, String, String);

/// The split of one rule whose `backends` (name, weight) have GA at `ga_index` and the canary
/// at `canary_index`. Refused when other backends share the rule or the two weights do not
/// sum to 100; `rule` names the rule for people (`VirtualService test/podinfo http route 0`).
pub fn split_of(
    rule: &str,
    rule_index: usize,
    backends: &[(&str, u32)],
    (ga_index, canary_index): (usize, usize),
    (ga, canary): (&str, &str),
) -> Result<Split, RouterError> {
    if backends.len() != 2 {
        let others: Vec<&str> = backends
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != ga_index && *i != canary_index)
            .map(|(_, (name, _))| *name)
            .collect();
        return Err(RouterError::Topology(format!(
            "{rule} routes to other destinations besides {ga} and {canary}: {}",
            others.join(", ")
        )));
    }
    let ga_weight = backends[ga_index].1;
    let canary_weight = backends[canary_index].1;
    if ga_weight + canary_weight != 100 {
        return Err(RouterError::Topology(format!(
            "{rule} weights sum to {} ({ga}={ga_weight}, {canary}={canary_weight}), not 100",
            ga_weight + canary_weight
        )));
    }
    Ok(Split {
        rule_index,
        ga_index,
        canary_index,
        ga_weight,
        canary_weight,
    })
}

/// The JSON patch that sets `canary_weight` on every split and nothing else, or `None` when
/// the weights already match. It tests the resourceVersion (optimistic concurrency) and the
/// field naming each backend it writes, so a route changed underneath fails the patch instead
/// of having the wrong backend rewritten. `backend(split, index)` is the pointer under
/// `/spec` of a backend of the split's rule, and `name` the field in it that names it.
pub fn weights_patch(
    splits: &[Split],
    spec: &Value,
    resource_version: Option<&str>,
    canary_weight: u32,
    backend: impl Fn(&Split, usize) -> String,
    name: &str,
) -> Option<Value> {
    let canary_weight = canary_weight.min(100);
    if splits.iter().all(|s| s.canary_weight == canary_weight) {
        return None;
    }
    let mut ops = Vec::new();
    if let Some(rv) = resource_version {
        ops.push(json!({"op": "test", "path": "/metadata/resourceVersion", "value": rv}));
    }
    for split in splits {
        for (index, weight) in [
            (split.ga_index, 100 - canary_weight),
            (split.canary_index, canary_weight),
        ] {
            let at = backend(split, index);
            let named = spec
                .pointer(&format!("{at}/{name}"))
                .cloned()
                .unwrap_or(Value::Null);
            ops.push(json!({"op": "test", "path": format!("/spec{at}/{name}"), "value": named}));
            ops.push(json!({"op": "add", "path": format!("/spec{at}/weight"), "value": weight}));
        }
    }
    Some(Value::Array(ops))
}

/// What starts a cache later: a kind the cluster may not serve is looked up first.
struct Pending {
    namespaces: Vec<String>,
    stop: CancellationToken,
    changes: Changes,
}

/// Routes traffic by patching the weights of routes of one kind.
pub struct PatchRouter {
    kind: RouteKind,
    rules: &'static dyn Rules,
    client: Client,
    resource: ApiResource,
    /// Empty while an optional kind is not yet looked up, and for good when the cluster does
    /// not serve it.
    cache: OnceLock<Cache<DynamicObject>>,
    /// Set for an optional kind until `wait_ready` looked it up.
    pending: Mutex<Option<Pending>>,
    /// The object our last write returned, keyed by (namespace, name): while the cache still
    /// shows an older generation of the same object, the write's result is the fresher view.
    written: Mutex<Written>,
    /// The view of each observed split, worked out once per version of its route:
    /// rollouts look at their split every time they wake.
    seen: Views<SplitKey, RouteView>,
}

impl PatchRouter {
    /// The router of `kind` at `api_version` of its group. A `required` kind's watch cache
    /// starts now (and the server waits for it); an optional one's starts in
    /// [`PatchRouter::wait_ready`] if the cluster serves the kind at all.
    pub fn start(
        kind: RouteKind,
        rules: &'static dyn Rules,
        api_version: &str,
        context: &RouterContext<'_>,
        required: bool,
    ) -> Self {
        let (group, plural) = kind.resource();
        let gvk = GroupVersionKind::gvk(group, api_version, kind.name());
        let resource = ApiResource::from_gvk_with_plural(&gvk, plural);
        let client = context.client.clone();
        let cache = OnceLock::new();
        let mut pending = None;
        if required {
            let _ = cache.set(Cache::start_dynamic(
                &client,
                context.namespaces,
                context.stop,
                &resource,
                context.changes,
            ));
        } else {
            pending = Some(Pending {
                namespaces: context.namespaces.to_vec(),
                stop: context.stop.clone(),
                changes: context.changes.clone(),
            });
        }
        Self {
            kind,
            rules,
            cache,
            pending: Mutex::new(pending),
            client,
            resource,
            written: Mutex::new(HashMap::new()),
            seen: Views::default(),
        }
    }

    /// The watch cache; an error when the cluster does not serve the kind.
    fn cache(&self) -> Result<&Cache<DynamicObject>, RouterError> {
        self.cache
            .get()
            .ok_or(RouterError::Unserved { kind: self.kind })
    }

    /// Whether the cluster serves the kind: one list of at most one object, where the
    /// server may list (a 404 says the CRD is missing).
    async fn served(&self, namespaces: &[String]) -> Result<bool, String> {
        let api = match namespaces.first() {
            Some(ns) => self.api(ns),
            None => Api::all_with(self.client.clone(), &self.resource),
        };
        match api.list(&ListParams::default().limit(1)).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.is_not_found() => Ok(false),
            Err(error) => Err(format!("failed to list {}s: {error}", self.kind)),
        }
    }

    /// The view of `route` in `vs`, from the memo when it holds this version of `vs`.
    fn view_of(&self, vs: &DynamicObject, route: &RouteSplit) -> RouteView {
        let key = (
            route.namespace.clone(),
            route.name.clone(),
            route.ga_service.clone(),
            route.canary_service.clone(),
        );
        self.seen.of(
            key,
            &vs.metadata,
            || view_with(self.rules, &spec(vs), route),
            || self.cache.get().map(Cache::names).unwrap_or_default(),
        )
    }

    /// Waits until the cache holds its initial list. An optional kind is looked up first:
    /// when the cluster does not serve it, the router stays empty and says so to each call.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), String> {
        let pending = self.pending.lock().ok().and_then(|mut p| p.take());
        if let Some(pending) = pending {
            if self.served(&pending.namespaces).await? {
                let _ = self.cache.set(Cache::start_dynamic(
                    &self.client,
                    &pending.namespaces,
                    &pending.stop,
                    &self.resource,
                    &pending.changes,
                ));
            } else {
                tracing::warn!(
                    kind = %self.kind,
                    crd = %self.kind.crd(),
                    "the cluster does not serve this route kind; rollouts cannot use it"
                );
                return Ok(());
            }
        }
        match self.cache.get() {
            Some(cache) => cache.wait_ready(timeout).await,
            None => Ok(()),
        }
    }

    fn api(&self, namespace: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), namespace, &self.resource)
    }

    /// The object as the cache has it, or as our last write returned it while the cache
    /// still shows an older generation of the same object (`generation` only grows with each
    /// spec change, where resourceVersions must not be compared). `None` when the cache does
    /// not have it.
    fn cached(&self, namespace: &str, name: &str) -> Option<Arc<DynamicObject>> {
        let cached = self.cache.get()?.get(namespace, name, &self.resource)?;
        let key = (namespace.to_owned(), name.to_owned());
        let ours = self.written.lock().ok()?.get(&key).cloned();
        match ours {
            Some(ours)
                if ours.uid() == cached.uid()
                    && ours.metadata.generation > cached.metadata.generation =>
            {
                Some(ours)
            }
            _ => Some(cached),
        }
    }

    async fn fetch(&self, namespace: &str, name: &str) -> Result<Arc<DynamicObject>, RouterError> {
        match self.api(namespace).get_opt(name).await {
            Ok(Some(vs)) => Ok(Arc::new(vs)),
            Ok(None) => {
                if let Ok(mut written) = self.written.lock() {
                    written.remove(&(namespace.to_owned(), name.to_owned()));
                }
                Err(RouterError::NotFound {
                    kind: self.kind,
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                })
            }
            Err(source) => Err(RouterError::Api {
                kind: self.kind,
                action: "read",
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                source: Box::new(source),
            }),
        }
    }

    async fn list(&self, namespace: &str) -> Result<Vec<Arc<DynamicObject>>, RouterError> {
        match self.api(namespace).list(&ListParams::default()).await {
            Ok(list) => Ok(list.items.into_iter().map(Arc::new).collect()),
            Err(source) => Err(RouterError::Api {
                kind: self.kind,
                action: "list",
                namespace: namespace.to_owned(),
                name: "*".to_owned(),
                source: Box::new(source),
            }),
        }
    }

    async fn current(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Arc<DynamicObject>, RouterError> {
        self.cache()?;
        match self.cached(namespace, name) {
            Some(vs) => Ok(vs),
            None => self.fetch(namespace, name).await,
        }
    }
}

impl KindRouter for PatchRouter {
    fn wait_ready(&self, timeout: Duration) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(PatchRouter::wait_ready(self, timeout))
    }

    fn serves(&self) -> bool {
        self.cache.get().is_some()
    }
}

fn spec(vs: &DynamicObject) -> Value {
    vs.data.get("spec").cloned().unwrap_or(Value::Null)
}

impl Router for PatchRouter {
    fn resolve<'a>(
        &'a self,
        namespace: &'a str,
        route: Option<&'a RouteRef>,
        ga_service: &'a str,
        canary_service: &'a str,
    ) -> BoxFuture<'a, Result<Resolved, RouterError>> {
        Box::pin(async move {
            let name = super::named_or_found(self, namespace, route, ga_service, canary_service)
                .await?
                .name;
            let object = self.current(namespace, &name).await?;
            let (_, canary_weight, fingerprint) = read_route(
                self.rules,
                (&name, namespace),
                &spec(&object),
                (ga_service, canary_service),
                &[],
            )?;
            Ok(Resolved {
                route: RouteRef {
                    kind: self.kind,
                    name,
                },
                canary_weight,
                fingerprint,
            })
        })
    }

    fn find<'a>(
        &'a self,
        namespace: &'a str,
        ga_service: &'a str,
        canary_service: &'a str,
    ) -> BoxFuture<'a, Result<Vec<RouteRef>, RouterError>> {
        Box::pin(async move {
            let Some(cache) = self.cache.get() else {
                return Ok(Vec::new());
            };
            let sends = |object: &Arc<DynamicObject>| {
                let (user, _) = ab::strip(&spec(object), self.rules.rules_key());
                self.rules
                    .sends_to_both(&user, namespace, ga_service, canary_service)
            };
            let mut found: Vec<Arc<DynamicObject>> = cache
                .all()
                .into_iter()
                .filter(|object| object.namespace().as_deref() == Some(namespace))
                .filter(sends)
                .collect();
            if found.is_empty() {
                // The cache may be behind a route created a moment ago (a watch event comes
                // after the create's answer): before saying there is none, ask the API.
                found = self
                    .list(namespace)
                    .await?
                    .into_iter()
                    .filter(sends)
                    .collect();
            }
            let mut names: Vec<RouteRef> = found
                .iter()
                .map(|object| RouteRef {
                    kind: self.kind,
                    name: object.name_any(),
                })
                .collect();
            names.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(names)
        })
    }

    fn observe<'a>(&'a self, route: &'a RouteSplit) -> BoxFuture<'a, RouteView> {
        Box::pin(async move {
            let (ns, name) = (&route.namespace, &route.name);
            let vs = match self.cached(ns, name) {
                Some(vs) => return self.view_of(&vs, route),
                // Not in the cache: deleted, or the cache is behind. Only the API can tell.
                None => match self.fetch(ns, name).await {
                    Ok(vs) => vs,
                    Err(RouterError::NotFound { .. }) => {
                        self.seen.forget(ns, name);
                        return RouteView::Missing;
                    }
                    Err(error) if error.is_permanent() => {
                        return RouteView::Broken(error.to_string());
                    }
                    Err(error) => {
                        tracing::warn!(%error, vs = %name, "could not read the route");
                        return RouteView::Unknown;
                    }
                },
            };
            view_with(self.rules, &spec(&vs), route)
        })
    }

    fn canary_weight<'a>(
        &'a self,
        route: &'a RouteSplit,
    ) -> BoxFuture<'a, Result<u32, RouterError>> {
        Box::pin(async move {
            self.cache()?;
            let vs = self.fetch(&route.namespace, &route.name).await?;
            let (_, weight, _) = read_route(
                self.rules,
                (&route.name, &route.namespace),
                &spec(&vs),
                (&route.ga_service, &route.canary_service),
                &route.matches,
            )?;
            Ok(weight)
        })
    }

    fn set_canary_weight<'a>(
        &'a self,
        route: &'a RouteSplit,
        weight: u32,
    ) -> BoxFuture<'a, Result<bool, RouterError>> {
        Box::pin(async move {
            let attempts = AtomicUsize::new(0);
            let attempt = || async {
                // The first attempt writes over the cached object; a retry reads afresh.
                let fresh = attempts.fetch_add(1, Ordering::Relaxed) > 0;
                self.write_weight(route, weight, fresh).await
            };
            attempt
                .retry(write_backoff())
                .when(retry_write)
                .adjust(|error, delay| {
                    delay.map(|d| if throttled(error) { d.max(THROTTLED_MIN) } else { d })
                })
                .notify(|error, delay| {
                    tracing::debug!(%error, vs = %route.name, ?delay, "weight patch rejected; retrying with a fresh read");
                })
                .await
        })
    }
}

impl PatchRouter {
    /// One attempt at a weight patch, over the cached object or (`fresh`) one read now.
    /// Returns whether it wrote.
    async fn write_weight(
        &self,
        route: &RouteSplit,
        weight: u32,
        fresh: bool,
    ) -> Result<bool, RouterError> {
        let (ns, name) = (&route.namespace, &route.name);
        let vs = if fresh {
            self.fetch(ns, name).await?
        } else {
            self.current(ns, name).await?
        };
        let spec = spec(&vs);
        let key = self.rules.rules_key();
        let (user, own) = ab::strip(&spec, key);
        let splits =
            self.rules
                .find_splits(name, &user, ns, &route.ga_service, &route.canary_service)?;
        let rv = vs.resource_version();
        let ops = if own.is_empty() && route.matches.is_empty() {
            // A weighted canary moves the weights and nothing else.
            self.rules
                .weight_patch(&splits, &spec, rv.as_deref(), weight)
        } else {
            // An A/B test adds or removes its rules; steerer's rules left in a route are
            // removed with the same patch.
            let desired = desired_rules(self.rules, &user, &splits, &route.matches, weight)
                .map_err(|why| {
                    RouterError::Topology(format!(
                        "cannot compute the rules of {} {ns}/{name}: {why}",
                        self.kind
                    ))
                })?;
            ab::rules_patch(&spec, key, rv.as_deref(), desired)
        };
        let Some(ops) = ops else {
            return Ok(false);
        };
        let patch: json_patch::Patch =
            serde_json::from_value(ops).map_err(|source| RouterError::Patch {
                kind: self.kind,
                namespace: ns.clone(),
                name: name.clone(),
                source,
            })?;
        match self
            .api(ns)
            .patch(name, &PatchParams::default(), &Patch::Json::<()>(patch))
            .await
        {
            Ok(written) => {
                if let Ok(mut map) = self.written.lock() {
                    map.insert((ns.clone(), name.clone()), Arc::new(written));
                }
                Ok(true)
            }
            Err(kube::Error::Api(status)) if status.is_not_found() => {
                if let Ok(mut map) = self.written.lock() {
                    map.remove(&(ns.clone(), name.clone()));
                }
                Err(RouterError::NotFound {
                    kind: self.kind,
                    namespace: ns.clone(),
                    name: name.clone(),
                })
            }
            Err(source) => Err(RouterError::Api {
                kind: self.kind,
                action: PATCH_WEIGHTS,
                namespace: ns.clone(),
                name: name.clone(),
                source: Box::new(source),
            }),
        }
    }
}

/// The spec after the router's write of `weight` to `route` (both write paths), for tests.
#[cfg(test)]
pub fn written(rules: &dyn Rules, spec: &Value, route: &RouteSplit, weight: u32) -> Value {
    let key = rules.rules_key();
    let (user, own) = ab::strip(spec, key);
    let splits = rules
        .find_splits(
            &route.name,
            &user,
            &route.namespace,
            &route.ga_service,
            &route.canary_service,
        )
        .unwrap();
    let ops = if own.is_empty() && route.matches.is_empty() {
        rules.weight_patch(&splits, spec, Some("7"), weight)
    } else {
        let wanted = desired_rules(rules, &user, &splits, &route.matches, weight).unwrap();
        ab::rules_patch(spec, key, Some("7"), wanted)
    };
    let Some(ops) = ops else {
        return spec.clone();
    };
    let ops: json_patch::Patch = serde_json::from_value(ops).unwrap();
    let mut doc = json!({"metadata": {"resourceVersion": "7"}, "spec": spec});
    json_patch::patch(&mut doc, &ops).unwrap();
    doc["spec"].take()
}

#[cfg(test)]
mod retry_tests {
    use backon::BackoffBuilder;

    use super::*;

    fn api(code: Option<u16>) -> RouterError {
        RouterError::Api {
            kind: RouteKind::VirtualService,
            action: PATCH_WEIGHTS,
            namespace: "test".into(),
            name: "vs".into(),
            source: Box::new(match code {
                Some(code) => kube::Error::Api(
                    kube::core::Status::failure("no", "No")
                        .with_code(code)
                        .boxed(),
                ),
                None => kube::Error::Service("connection refused".into()),
            }),
        }
    }

    #[test]
    fn weight_patch_retries_back_off_exponentially_with_jitter_up_to_a_cap() {
        let delays: Vec<Duration> = write_backoff().build().collect();
        assert_eq!(delays.len(), WRITE_RETRIES);
        for (delay, base) in delays.iter().zip([25, 50, 100]) {
            let base = Duration::from_millis(base);
            assert!(*delay >= base && *delay < base * 2, "{delay:?}");
        }
        let capped: Vec<Duration> = write_backoff().with_max_times(30).build().collect();
        assert!(capped.iter().all(|d| *d < RETRY_CAP * 2));
    }

    #[test]
    fn conflicts_failed_tests_and_outages_are_retried_and_refusals_are_not() {
        for code in [Some(409), Some(422), Some(429), Some(500), None] {
            assert!(retry_write(&api(code)), "{code:?}");
        }
        for code in [400, 403, 404] {
            assert!(!retry_write(&api(Some(code))), "{code}");
        }
        assert!(throttled(&api(Some(429))));
        assert!(!throttled(&api(Some(500))));
    }
}
