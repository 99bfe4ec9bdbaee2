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

use super::{RouteRef, Router, RouterError, find_splits, routes_to, weight_patch};
use crate::cache::Cache;

const WRITE_ATTEMPTS: usize = 4;

/// Per (namespace, name): the resourceVersion our last write replaced and the object it
/// returned.
type Written = HashMap<(String, String), (String, Arc<DynamicObject>)>;

/// Routes traffic by rewriting Istio VirtualService weights.
pub struct IstioRouter {
    client: Client,
    resource: ApiResource,
    cache: Cache<DynamicObject>,
    /// The object our last write returned, keyed by (namespace, name), with the
    /// resourceVersion it replaced: while the cache still shows that older version, the write's
    /// result is the fresher view.
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

    fn cached(&self, namespace: &str, name: &str) -> Option<Arc<DynamicObject>> {
        let cached = self.cache.get(namespace, name, &self.resource);
        let key = (namespace.to_owned(), name.to_owned());
        let written = self.written.lock().ok()?.get(&key).cloned();
        match (cached, written) {
            (Some(c), Some((replaced, ours)))
                if c.resource_version().as_deref() == Some(&replaced) =>
            {
                Some(ours)
            }
            (Some(c), _) => Some(c),
            (None, Some((_, ours))) => Some(ours),
            (None, None) => None,
        }
    }

    async fn fetch(&self, namespace: &str, name: &str) -> Result<Arc<DynamicObject>, RouterError> {
        match self.api(namespace).get_opt(name).await {
            Ok(Some(vs)) => Ok(Arc::new(vs)),
            Ok(None) => Err(RouterError::NotFound {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            }),
            Err(error) => Err(RouterError::Api {
                action: "read",
                namespace: namespace.to_owned(),
                name: name.to_owned(),
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
    ) -> BoxFuture<'a, Result<(String, u32), RouterError>> {
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
            let splits = find_splits(&name, &spec(&vs), namespace, ga_service, canary_service)?;
            Ok((name, splits[0].canary_weight))
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
            for attempt in 0..WRITE_ATTEMPTS {
                if attempt > 0 {
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
                        message: e.to_string(),
                    })?;
                match self
                    .api(ns)
                    .patch(name, &PatchParams::default(), &Patch::Json::<()>(patch))
                    .await
                {
                    Ok(written) => {
                        if let (Some(replaced), Ok(mut map)) = (rv, self.written.lock()) {
                            map.insert((ns.clone(), name.clone()), (replaced, Arc::new(written)));
                        }
                        return Ok(true);
                    }
                    Err(kube::Error::Api(status)) if status.is_not_found() => {
                        return Err(RouterError::NotFound {
                            namespace: ns.clone(),
                            name: name.clone(),
                        });
                    }
                    Err(error) => {
                        // A conflict or a failed `test` op: someone wrote in between, so read
                        // fresh and recompute the patch.
                        tracing::debug!(%error, vs = %name, attempt, "weight patch rejected; retrying with a fresh read");
                        last_error = error.to_string();
                    }
                }
            }
            Err(RouterError::Api {
                action: "patch weights of",
                namespace: ns.clone(),
                name: name.clone(),
                message: last_error,
            })
        })
    }
}
