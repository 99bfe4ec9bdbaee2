//! Watch caches (kube-rs reflectors) of the Kubernetes objects the server reads, one per served
//! namespace or one cluster-wide, so a rollout step reads nothing from the API server.

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

/// A set of reflector stores covering the served namespaces.
pub struct Cache<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    /// (namespace or None for all, store)
    stores: Vec<(Option<String>, Store<K>)>,
}

impl<K> Cache<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static,
    K::DynamicType: Eq + Hash + Clone + Default + Send + Sync,
{
    /// Starts reflectors for a typed namespaced resource.
    pub fn start(client: &Client, namespaces: &[String], stop: &CancellationToken) -> Self {
        let apis = if namespaces.is_empty() {
            vec![(None, Api::all(client.clone()))]
        } else {
            namespaces
                .iter()
                .map(|ns| (Some(ns.clone()), Api::namespaced(client.clone(), ns)))
                .collect()
        };
        Self::start_apis(apis, stop, &K::DynamicType::default())
    }
}

impl Cache<kube::api::DynamicObject> {
    /// Starts reflectors for a namespaced resource known at run time (a CRD's).
    pub fn start_dynamic(
        client: &Client,
        namespaces: &[String],
        stop: &CancellationToken,
        resource: &kube::api::ApiResource,
    ) -> Self {
        let apis = if namespaces.is_empty() {
            vec![(None, Api::all_with(client.clone(), resource))]
        } else {
            namespaces
                .iter()
                .map(|ns| {
                    (
                        Some(ns.clone()),
                        Api::namespaced_with(client.clone(), ns, resource),
                    )
                })
                .collect()
        };
        Self::start_apis(apis, stop, resource)
    }
}

impl<K> Cache<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    fn start_apis(
        apis: Vec<(Option<String>, Api<K>)>,
        stop: &CancellationToken,
        dyntype: &K::DynamicType,
    ) -> Self {
        let mut stores = Vec::new();
        for (ns, api) in apis {
            let writer: Writer<K> = Writer::new(dyntype.clone());
            let store = writer.as_reader();
            let stream = reflector::reflector(
                writer,
                watcher(api, watcher::Config::default()).default_backoff(),
            );
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut stream = std::pin::pin!(stream);
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        item = stream.next() => match item {
                            Some(Ok(_)) => {}
                            Some(Err(error)) => tracing::warn!(%error, "watch failed; retrying"),
                            None => break,
                        },
                    }
                }
            });
            stores.push((ns, store));
        }
        Self { stores }
    }

    /// Waits until every store has its initial list, up to `timeout`.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), String> {
        let all = futures::future::join_all(self.stores.iter().map(|(_, s)| s.wait_until_ready()));
        match tokio::time::timeout(timeout, all).await {
            Ok(results) => results
                .into_iter()
                .collect::<Result<Vec<_>, _>>()
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Err(_) => Err(format!("caches not synced within {timeout:?}")),
        }
    }

    /// The cached object, if present.
    pub fn get(&self, namespace: &str, name: &str, dyntype: &K::DynamicType) -> Option<Arc<K>> {
        let key = ObjectRef::new_with(name, dyntype.clone()).within(namespace);
        self.stores
            .iter()
            .filter(|(ns, _)| ns.as_deref().is_none_or(|ns| ns == namespace))
            .find_map(|(_, store)| store.get(&key))
    }

    /// Every cached object.
    pub fn all(&self) -> Vec<Arc<K>> {
        self.stores.iter().flat_map(|(_, s)| s.state()).collect()
    }
}
