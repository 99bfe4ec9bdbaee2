//! The Istio router: VirtualServices read from a watch cache and written with JSON patches
//! that change only the weights, guarded by the resourceVersion (retried on conflict).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::{
    Resolved, RouteRef, RouteView, Router, RouterError, find_splits, route_fingerprint, routes_to,
    weight_patch,
};
use crate::cache::Cache;

const WRITE_ATTEMPTS: usize = 4;
/// Pause before the second attempt at a weight patch; doubles with each attempt.
const RETRY_BASE: Duration = Duration::from_millis(50);
/// Longest pause between two attempts.
const RETRY_CAP: Duration = Duration::from_millis(800);
/// Pause after a 429 (the API server shedding load) before anything else is tried.
const THROTTLED_MIN: Duration = Duration::from_millis(250);

/// The pause before attempt `attempt` (1 = the first retry): exponential, capped, with "equal
/// jitter" (half fixed, half random) so that drivers that failed together do not retry
/// together. `unit` in [0, 1) supplies the randomness; a throttled attempt waits longer.
fn retry_delay(attempt: usize, throttled: bool, unit: f64) -> Duration {
    let exp = u32::try_from(attempt.saturating_sub(1))
        .unwrap_or(u32::MAX)
        .min(16);
    let ceiling = RETRY_BASE.saturating_mul(1 << exp).min(RETRY_CAP);
    let half = ceiling / 2;
    let delay = half + half.mul_f64(unit.clamp(0.0, 1.0));
    if throttled {
        delay.max(THROTTLED_MIN)
    } else {
        delay
    }
}

/// Per (namespace, name): the object our last write returned.
type Written = HashMap<(String, String), Arc<DynamicObject>>;

/// Routes traffic by rewriting Istio VirtualService weights.
pub struct IstioRouter {
    client: Client,
    resource: ApiResource,
    cache: Cache<DynamicObject>,
    /// The object our last write returned, keyed by (namespace, name): while the cache still
    /// shows an older generation of the same object, the write's result is the fresher view.
    written: Mutex<Written>,
}

impl IstioRouter {
    /// Starts the VirtualService watch cache. `api_version` is the served version of
    /// `networking.istio.io` (for example `v1` or `v1beta1`).
    pub fn start(
        client: Client,
        api_version: &str,
        namespaces: &[String],
        stop: &CancellationToken,
    ) -> Self {
        let gvk = GroupVersionKind::gvk("networking.istio.io", api_version, "VirtualService");
        let resource = ApiResource::from_gvk_with_plural(&gvk, "virtualservices");
        Self {
            cache: Cache::start_dynamic(&client, namespaces, stop, &resource),
            client,
            resource,
            written: Mutex::new(HashMap::new()),
        }
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
            Err(error) => Err(RouterError::Api {
                action: "read",
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                code: crate::retry::status_code(&error),
                message: error.to_string(),
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

    fn observe<'a>(&'a self, route: &'a RouteRef) -> BoxFuture<'a, RouteView> {
        Box::pin(async move {
            let (ns, name) = (&route.namespace, &route.virtual_service);
            let vs = match self.cached(ns, name) {
                Some(vs) => vs,
                // Not in the cache: deleted, or the cache is behind. Only the API can tell.
                None => match self.fetch(ns, name).await {
                    Ok(vs) => vs,
                    Err(RouterError::NotFound { .. }) => return RouteView::Missing,
                    Err(error) if error.is_permanent() => {
                        return RouteView::Broken(error.to_string());
                    }
                    Err(error) => {
                        tracing::warn!(%error, vs = %name, "could not read the VirtualService");
                        return RouteView::Unknown;
                    }
                },
            };
            RouteView::of(&spec(&vs), route)
        })
    }

    fn canary_weight<'a>(&'a self, route: &'a RouteRef) -> BoxFuture<'a, Result<u32, RouterError>> {
        Box::pin(async move {
            let vs = self.fetch(&route.namespace, &route.virtual_service).await?;
            let splits = find_splits(
                &route.virtual_service,
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
        route: &'a RouteRef,
        weight: u32,
    ) -> BoxFuture<'a, Result<bool, RouterError>> {
        Box::pin(async move {
            let (ns, name) = (&route.namespace, &route.virtual_service);
            let mut vs = self.current(ns, name).await?;
            let mut last_error = String::new();
            let mut last_code = None;
            let mut throttled = false;
            for attempt in 0..WRITE_ATTEMPTS {
                if attempt > 0 {
                    let unit: f64 = rand::random();
                    tokio::time::sleep(retry_delay(attempt, throttled, unit)).await;
                    vs = self.fetch(ns, name).await?;
                }
                let spec = spec(&vs);
                let splits =
                    find_splits(name, &spec, ns, &route.ga_service, &route.canary_service)?;
                let rv = vs.resource_version();
                let Some(ops) = weight_patch(&splits, &spec, rv.as_deref(), weight) else {
                    return Ok(false);
                };
                let patch: json_patch::Patch =
                    serde_json::from_value(ops).map_err(|e| RouterError::Api {
                        action: "build a patch for",
                        namespace: ns.clone(),
                        name: name.clone(),
                        code: None,
                        message: e.to_string(),
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
                        return Ok(true);
                    }
                    Err(kube::Error::Api(status)) if status.is_not_found() => {
                        if let Ok(mut map) = self.written.lock() {
                            map.remove(&(ns.clone(), name.clone()));
                        }
                        return Err(RouterError::NotFound {
                            namespace: ns.clone(),
                            name: name.clone(),
                        });
                    }
                    Err(error) => {
                        last_code = crate::retry::status_code(&error);
                        last_error = error.to_string();
                        // A conflict (409) or a failed `test` op (422): someone wrote in
                        // between, so read fresh and recompute the patch. Other refusals
                        // (403, 400…) will be the same next time: give up at once.
                        let refused =
                            last_code.is_some_and(|c| c != 422 && crate::retry::is_permanent(c));
                        if refused {
                            break;
                        }
                        throttled = last_code == Some(429);
                        tracing::debug!(%error, vs = %name, attempt, "weight patch rejected; retrying with a fresh read");
                    }
                }
            }
            Err(RouterError::Api {
                action: "patch weights of",
                namespace: ns.clone(),
                name: name.clone(),
                code: last_code,
                message: last_error,
            })
        })
    }
}

#[cfg(test)]
mod retry_tests {
    use super::*;

    #[test]
    fn weight_patch_retries_back_off_exponentially_with_jitter_up_to_a_cap() {
        assert_eq!(retry_delay(1, false, 0.0), Duration::from_millis(25));
        assert_eq!(retry_delay(1, false, 0.999_999).as_millis(), 49);
        assert_eq!(retry_delay(2, false, 0.0), Duration::from_millis(50));
        assert_eq!(retry_delay(3, false, 0.0), Duration::from_millis(100));
        assert_eq!(retry_delay(30, false, 0.0), RETRY_CAP / 2);
        assert!(retry_delay(30, false, 0.999) < RETRY_CAP);
        // Two drivers with different luck do not retry in lockstep.
        assert_ne!(retry_delay(2, false, 0.1), retry_delay(2, false, 0.9));
    }

    #[test]
    fn a_throttled_patch_waits_longer() {
        assert!(retry_delay(1, true, 0.0) >= THROTTLED_MIN);
        assert!(retry_delay(1, true, 0.0) > retry_delay(1, false, 0.0));
    }
}
