//! The Istio router: VirtualServices read from a watch cache and written with JSON patches
//! that change only the weights, guarded by the resourceVersion (retried on conflict).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use futures::future::BoxFuture;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use kube::{Client, ResourceExt};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub mod split;

use split::{find_splits, route_fingerprint, route_view, routes_to, weight_patch};

use super::{KindRouter, Resolved, RouteSplit, RouteView, Router, RouterContext, RouterError};
use crate::cache::{Cache, Changes, Views};

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
/// (namespace, VirtualService, GA Service, canary Service).
type SplitKey = (String, String, String, String);

/// Routes traffic by rewriting Istio VirtualService weights.
pub struct IstioRouter {
    client: Client,
    resource: ApiResource,
    cache: Cache<DynamicObject>,
    /// The object our last write returned, keyed by (namespace, name): while the cache still
    /// shows an older generation of the same object, the write's result is the fresher view.
    written: Mutex<Written>,
    /// The view of each observed split, worked out once per version of its VirtualService:
    /// rollouts look at their split every time they wake.
    seen: Views<SplitKey, RouteView>,
}

impl IstioRouter {
    /// Starts the VirtualService watch cache. `api_version` is the served version of
    /// `networking.istio.io` (for example `v1` or `v1beta1`).
    pub fn start(
        client: Client,
        api_version: &str,
        namespaces: &[String],
        stop: &CancellationToken,
        changes: &Changes,
    ) -> Self {
        let gvk = GroupVersionKind::gvk("networking.istio.io", api_version, "VirtualService");
        let resource = ApiResource::from_gvk_with_plural(&gvk, "virtualservices");
        Self {
            cache: Cache::start_dynamic(&client, namespaces, stop, &resource, changes),
            client,
            resource,
            written: Mutex::new(HashMap::new()),
            seen: Views::default(),
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
            || route_view(&spec(vs), route),
            || self.cache.names(),
        )
    }

    /// Waits until the cache holds its initial list.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), String> {
        self.cache.wait_ready(timeout).await
    }

    fn api(&self, namespace: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), namespace, &self.resource)
    }

    /// The object as the cache has it, or as our last write returned it while the cache
    /// still shows an older generation of the same object (`generation` only grows with each
    /// spec change, where resourceVersions must not be compared). `None` when the cache does
    /// not have it.
    fn cached(&self, namespace: &str, name: &str) -> Option<Arc<DynamicObject>> {
        let cached = self.cache.get(namespace, name, &self.resource)?;
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
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                })
            }
            Err(source) => Err(RouterError::Api {
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
        match self.cached(namespace, name) {
            Some(vs) => Ok(vs),
            None => self.fetch(namespace, name).await,
        }
    }
}

/// The factory's start of the VirtualService router.
pub fn start(context: &RouterContext<'_>) -> Arc<dyn KindRouter> {
    Arc::new(IstioRouter::start(
        context.client.clone(),
        context.istio_api_version,
        context.namespaces,
        context.stop,
        context.changes,
    ))
}

impl KindRouter for IstioRouter {
    fn wait_ready(&self, timeout: Duration) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(IstioRouter::wait_ready(self, timeout))
    }
}

fn spec(vs: &DynamicObject) -> Value {
    vs.data.get("spec").cloned().unwrap_or(Value::Null)
}

impl Router for IstioRouter {
    fn resolve<'a>(
        &'a self,
        namespace: &'a str,
        virtual_service: Option<&'a str>,
        ga_service: &'a str,
        canary_service: &'a str,
    ) -> BoxFuture<'a, Result<Resolved, RouterError>> {
        Box::pin(async move {
            let vs = match virtual_service {
                Some(name) => self.current(namespace, name).await?,
                None => {
                    let mut candidates: Vec<Arc<DynamicObject>> = self
                        .cache
                        .all()
                        .into_iter()
                        .filter(|vs| vs.namespace().as_deref() == Some(namespace))
                        .filter(|vs| routes_to(&spec(vs), namespace, ga_service))
                        .collect();
                    if candidates.is_empty() {
                        // The cache may be behind a VirtualService created a moment ago
                        // (a watch event comes after the create's answer): before saying
                        // there is none, ask the API, once per start that finds none.
                        candidates = self
                            .list(namespace)
                            .await?
                            .into_iter()
                            .filter(|vs| routes_to(&spec(vs), namespace, ga_service))
                            .collect();
                    }
                    candidates.sort_by_key(|vs| vs.name_any());
                    match candidates.len() {
                        0 => {
                            return Err(RouterError::Topology(format!(
                                "no VirtualService in namespace {namespace} routes to the GA Service {ga_service}"
                            )));
                        }
                        1 => candidates.remove(0),
                        _ => {
                            let names: Vec<String> =
                                candidates.iter().map(|vs| vs.name_any()).collect();
                            return Err(RouterError::Topology(format!(
                                "several VirtualServices in namespace {namespace} route to {ga_service} ({}); name one in virtual_service",
                                names.join(", ")
                            )));
                        }
                    }
                }
            };
            let name = vs.name_any();
            let spec = spec(&vs);
            let splits = find_splits(&name, &spec, namespace, ga_service, canary_service)?;
            Ok(Resolved {
                name,
                canary_weight: splits[0].canary_weight,
                fingerprint: route_fingerprint(&spec, &splits),
            })
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
                        tracing::warn!(%error, vs = %name, "could not read the VirtualService");
                        return RouteView::Unknown;
                    }
                },
            };
            route_view(&spec(&vs), route)
        })
    }

    fn canary_weight<'a>(
        &'a self,
        route: &'a RouteSplit,
    ) -> BoxFuture<'a, Result<u32, RouterError>> {
        Box::pin(async move {
            let vs = self.fetch(&route.namespace, &route.name).await?;
            let splits = find_splits(
                &route.name,
                &spec(&vs),
                &route.namespace,
                &route.ga_service,
                &route.canary_service,
            )?;
            Ok(splits[0].canary_weight)
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

impl IstioRouter {
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
        let splits = find_splits(name, &spec, ns, &route.ga_service, &route.canary_service)?;
        let rv = vs.resource_version();
        let Some(ops) = weight_patch(&splits, &spec, rv.as_deref(), weight) else {
            return Ok(false);
        };
        let patch: json_patch::Patch =
            serde_json::from_value(ops).map_err(|source| RouterError::Patch {
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
                    namespace: ns.clone(),
                    name: name.clone(),
                })
            }
            Err(source) => Err(RouterError::Api {
                action: PATCH_WEIGHTS,
                namespace: ns.clone(),
                name: name.clone(),
                source: Box::new(source),
            }),
        }
    }
}

#[cfg(test)]
mod retry_tests {
    use backon::BackoffBuilder;

    use super::*;

    fn api(code: Option<u16>) -> RouterError {
        RouterError::Api {
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
