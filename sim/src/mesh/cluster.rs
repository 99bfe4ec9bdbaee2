//! The cluster as any API server shows it: kube-rs watch caches (reflectors) of
//! VirtualServices, Gateway API routes, Services and ReplicaSets, so the mesh runs against a real kube-apiserver as
//! well as against the simulator.

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::runtime::reflector::{self, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::watch;

use super::{ClusterView, Snapshot};
use tokio_util::sync::CancellationToken as Shutdown;

/// The VirtualService API version the mesh watches unless told otherwise.
pub const DEFAULT_VIRTUAL_SERVICE_VERSION: &str = "v1";

/// Errors starting the watch caches.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    /// A resource could not be listed (not served, forbidden, unreachable server).
    #[error("failed to list {what}: {source}")]
    List {
        /// The resource, e.g. `virtualservices.networking.istio.io/v1`.
        what: String,
        /// Why.
        source: kube::Error,
    },
    /// A watch cache stopped before it held its first list.
    #[error("the watch of {what} stopped before its first list")]
    NotSynced {
        /// The resource.
        what: String,
    },
}

/// Where and what the caches watch.
#[derive(Debug, Clone)]
pub struct Scope {
    /// Only this namespace (`None`: all namespaces).
    pub namespace: Option<String>,
    /// The `networking.istio.io` version of VirtualServices (`v1`, `v1beta1`, `v1alpha3`).
    pub virtual_service_version: String,
}

impl Default for Scope {
    fn default() -> Self {
        Self {
            namespace: None,
            virtual_service_version: DEFAULT_VIRTUAL_SERVICE_VERSION.to_owned(),
        }
    }
}

/// The `VirtualService` resource at `version`.
pub fn virtual_service_resource(version: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("networking.istio.io", version, "VirtualService"),
        "virtualservices",
    )
}

/// The Gateway API route resource `plural` of `kind`, at `v1`.
pub fn gateway_route_resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(super::gateway::GROUP, "v1", kind),
        plural,
    )
}

/// Watch caches of the objects routing needs, over any API server.
pub struct KubeView {
    virtual_services: Store<DynamicObject>,
    /// `None` where the API server does not serve the kind (no Gateway API CRDs).
    http_routes: Option<Store<DynamicObject>>,
    grpc_routes: Option<Store<DynamicObject>>,
    services: Store<Service>,
    replicasets: Store<ReplicaSet>,
    changes: watch::Receiver<u64>,
    names: [String; 3],
}

impl KubeView {
    /// Lists each resource once (so a missing CRD version, a refused token or an unreachable
    /// server fails here, with its name, rather than as endless watch retries), then starts
    /// one reflector per resource, stopped by `shutdown`.
    pub async fn start(
        client: &Client,
        scope: &Scope,
        shutdown: &Shutdown,
    ) -> Result<Self, ViewError> {
        let vs_resource = virtual_service_resource(&scope.virtual_service_version);
        let (vs_api, svc_api, rs_api): (Api<DynamicObject>, Api<Service>, Api<ReplicaSet>) =
            match &scope.namespace {
                Some(ns) => (
                    Api::namespaced_with(client.clone(), ns, &vs_resource),
                    Api::namespaced(client.clone(), ns),
                    Api::namespaced(client.clone(), ns),
                ),
                None => (
                    Api::all_with(client.clone(), &vs_resource),
                    Api::all(client.clone()),
                    Api::all(client.clone()),
                ),
            };
        let names = [
            format!(
                "virtualservices.networking.istio.io/{}",
                scope.virtual_service_version
            ),
            "services/v1".to_owned(),
            "replicasets.apps/v1".to_owned(),
        ];
        let probe = ListParams::default().limit(1);
        let list_error = |what: &String| {
            let what = what.clone();
            move |source| ViewError::List { what, source }
        };
        vs_api.list(&probe).await.map_err(list_error(&names[0]))?;
        svc_api.list(&probe).await.map_err(list_error(&names[1]))?;
        rs_api.list(&probe).await.map_err(list_error(&names[2]))?;

        let (tx, changes) = watch::channel(0u64);
        let tx = Arc::new(tx);
        let mut gateway = Vec::new();
        for (kind, plural) in [("HTTPRoute", "httproutes"), ("GRPCRoute", "grpcroutes")] {
            let resource = gateway_route_resource(kind, plural);
            let api: Api<DynamicObject> = match &scope.namespace {
                Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
                None => Api::all_with(client.clone(), &resource),
            };
            let what = format!("{plural}.{}/v1", super::gateway::GROUP);
            gateway.push(match api.list(&probe).await {
                Ok(_) => Some(reflect(api, resource, &what, &tx, shutdown)),
                // Gateway API routes are optional: a cluster without their CRDs routes by
                // VirtualServices alone.
                Err(kube::Error::Api(status)) if status.is_not_found() => {
                    tracing::info!(resource = %what, "not served; routing without it");
                    None
                }
                Err(source) => return Err(ViewError::List { what, source }),
            });
        }
        let grpc_routes = gateway.pop().flatten();
        let http_routes = gateway.pop().flatten();
        Ok(Self {
            virtual_services: reflect(vs_api, vs_resource, &names[0], &tx, shutdown),
            http_routes,
            grpc_routes,
            services: reflect(svc_api, (), &names[1], &tx, shutdown),
            replicasets: reflect(rs_api, (), &names[2], &tx, shutdown),
            changes,
            names,
        })
    }

    /// Waits until every cache holds its first list.
    pub async fn wait_synced(&self) -> Result<(), ViewError> {
        let not_synced = |what: &String| {
            let what = what.clone();
            move |_| ViewError::NotSynced { what }
        };
        self.virtual_services
            .wait_until_ready()
            .await
            .map_err(not_synced(&self.names[0]))?;
        self.services
            .wait_until_ready()
            .await
            .map_err(not_synced(&self.names[1]))?;
        self.replicasets
            .wait_until_ready()
            .await
            .map_err(not_synced(&self.names[2]))?;
        for routes in [&self.http_routes, &self.grpc_routes].into_iter().flatten() {
            routes
                .wait_until_ready()
                .await
                .map_err(|_| ViewError::NotSynced {
                    what: format!("{}/v1 routes", super::gateway::GROUP),
                })?;
        }
        Ok(())
    }
}

/// Starts a reflector that bumps `changes` on every event it applies.
fn reflect<K>(
    api: Api<K>,
    dyntype: K::DynamicType,
    what: &str,
    changes: &Arc<watch::Sender<u64>>,
    shutdown: &Shutdown,
) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    let writer = Writer::new(dyntype);
    let reader = writer.as_reader();
    let stream = reflector::reflector(
        writer,
        watcher(api, watcher::Config::default()).default_backoff(),
    );
    let changes = Arc::clone(changes);
    let shutdown = shutdown.clone();
    let what = what.to_owned();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                item = stream.next() => match item {
                    Some(Ok(_)) => changes.send_modify(|n| *n = n.wrapping_add(1)),
                    Some(Err(error)) => tracing::warn!(%error, resource = %what, "watch failed; retrying"),
                    None => break,
                },
            }
        }
    });
    reader
}

fn to_json<K: Serialize>(objects: Vec<Arc<K>>) -> Vec<Arc<Value>> {
    objects
        .iter()
        .filter_map(|o| serde_json::to_value(o.as_ref()).ok())
        .map(Arc::new)
        .collect()
}

impl ClusterView for KubeView {
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            virtual_services: to_json(self.virtual_services.state()),
            http_routes: self
                .http_routes
                .as_ref()
                .map(|s| to_json(s.state()))
                .unwrap_or_default(),
            grpc_routes: self
                .grpc_routes
                .as_ref()
                .map(|s| to_json(s.state()))
                .unwrap_or_default(),
            services: to_json(self.services.state()),
            replicasets: to_json(self.replicasets.state()),
        }
    }

    async fn changed(&mut self) -> bool {
        self.changes.changed().await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_services_are_watched_at_the_version_asked_for() {
        let resource = virtual_service_resource("v1beta1");
        assert_eq!(resource.api_version, "networking.istio.io/v1beta1");
        assert_eq!(resource.plural, "virtualservices");
        assert_eq!(resource.kind, "VirtualService");
    }

    #[test]
    fn typed_objects_become_the_json_routing_reads() {
        let rs: ReplicaSet = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-abc", "namespace": "default",
                         "labels": {"pod-template-hash": "abc"},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                                              "name": "web", "uid": "1", "controller": true}]},
            "spec": {"selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"},
                                               "annotations": {"sim.steerer.dev/error-rate": "0.5"}}}},
            "status": {"replicas": 2, "readyReplicas": 2},
        }))
        .unwrap();
        let json = to_json(vec![Arc::new(rs)]);
        assert_eq!(
            json[0].pointer("/status/readyReplicas"),
            Some(&Value::from(2))
        );
        assert_eq!(
            json[0].pointer("/spec/template/metadata/annotations/sim.steerer.dev~1error-rate"),
            Some(&Value::from("0.5"))
        );
        assert_eq!(
            json[0].pointer("/metadata/ownerReferences/0/controller"),
            Some(&Value::from(true))
        );
    }
}
