//! Watch caches (kube-rs reflectors) of the Kubernetes objects the server reads, one per served
//! namespace or one cluster-wide, so a rollout step reads nothing from the API server;
//! [`Changes`], which wakes whoever waits on an object when its cache sees it change; and
//! [`Views`], the views built from cached objects, once per version of each.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Who waits on which objects: the hash of (namespace, name), of any kind, to the waiters.
type Waiters = HashMap<u64, Vec<(u64, Arc<Notify>)>>;

/// Wakes the waiters on a namespaced object when a watch cache applies a change to it, and
/// every waiter when a cache relists, since a relist may hide changes. Objects are told apart
/// by a hash of their namespace and name, whatever their kind: a Deployment and a
/// VirtualService of the same name (or a collision) share their waiters, which costs at most a
/// needless wake. Cheap to clone: the clones share their waiters.
#[derive(Clone, Default)]
pub struct Changes(Arc<Mutex<ChangesInner>>);

#[derive(Default)]
struct ChangesInner {
    next_id: u64,
    waiters: Waiters,
}

fn object_key(namespace: &str, name: &str) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault};
    BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
        .hash_one((namespace, name))
}

impl Changes {
    /// Waits on the named objects of `namespace` until the subscription is dropped.
    pub fn subscribe(&self, namespace: &str, names: &[&str]) -> Subscription {
        let notify = Arc::new(Notify::new());
        let mut keys: Vec<u64> = names.iter().map(|n| object_key(namespace, n)).collect();
        keys.sort_unstable();
        keys.dedup();
        let id = match self.0.lock() {
            Ok(mut inner) => {
                inner.next_id += 1;
                let id = inner.next_id;
                for key in &keys {
                    inner
                        .waiters
                        .entry(*key)
                        .or_default()
                        .push((id, notify.clone()));
                }
                id
            }
            Err(_) => 0,
        };
        Subscription {
            changes: self.clone(),
            id,
            keys: keys.into_boxed_slice(),
            notify,
        }
    }

    /// Wakes the waiters on `namespace/name` (a wake that finds a waiter busy is kept for its
    /// next wait).
    pub fn touch(&self, namespace: &str, name: &str) {
        let key = object_key(namespace, name);
        let Ok(inner) = self.0.lock() else { return };
        if let Some(waiters) = inner.waiters.get(&key) {
            for (_, notify) in waiters {
                notify.notify_one();
            }
        }
    }

    /// Wakes every waiter.
    pub fn touch_all(&self) {
        let Ok(inner) = self.0.lock() else { return };
        for (_, notify) in inner.waiters.values().flatten() {
            notify.notify_one();
        }
    }

    /// How many objects have waiters.
    #[cfg(test)]
    fn watched(&self) -> usize {
        self.0.lock().map_or(0, |inner| inner.waiters.len())
    }

    fn unsubscribe(&self, id: u64, keys: &[u64]) {
        let Ok(mut inner) = self.0.lock() else { return };
        for key in keys {
            if let Some(waiters) = inner.waiters.get_mut(key) {
                waiters.retain(|(waiter, _)| *waiter != id);
                if waiters.is_empty() {
                    inner.waiters.remove(key);
                }
            }
        }
    }
}

/// A wait on some objects' changes; dropping it ends the wait.
pub struct Subscription {
    changes: Changes,
    id: u64,
    keys: Box<[u64]>,
    notify: Arc<Notify>,
}

impl Subscription {
    /// Returns once one of the objects changed since the last return (at once if one did
    /// meanwhile).
    pub async fn changed(&self) {
        self.notify.notified().await;
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.changes.unsubscribe(self.id, &self.keys);
    }
}

/// Views built between two sweeps of a [`Views`] memo.
pub const SWEEP_EVERY: usize = 1024;

/// A memo key naming the object its view was built from.
pub trait ObjectKey {
    /// (namespace, name) of the object.
    fn object(&self) -> (&str, &str);
}

impl ObjectKey for (String, String) {
    fn object(&self) -> (&str, &str) {
        (&self.0, &self.1)
    }
}

/// (namespace, name, and two more names the view depends on).
impl ObjectKey for (String, String, String, String) {
    fn object(&self) -> (&str, &str) {
        (&self.0, &self.1)
    }
}

/// Views of cached objects, each built once per version of its object (uid and
/// resourceVersion): rollouts look at their objects every time they wake, and building a view
/// can convert a whole pod template. Every [`SWEEP_EVERY`] views built, the views of objects
/// gone from the cache go.
pub struct Views<K, V>(Mutex<Memo<K, V>>);

struct Memo<K, V> {
    /// key -> ("uid/resourceVersion", view).
    views: HashMap<K, (String, V)>,
    /// Views built since the last sweep.
    built: usize,
}

impl<K, V> Default for Views<K, V> {
    fn default() -> Self {
        Self(Mutex::new(Memo {
            views: HashMap::new(),
            built: 0,
        }))
    }
}

impl<K: ObjectKey + Eq + Hash, V: Clone> Views<K, V> {
    /// The view under `key` of the object with `meta`: the memo's when it holds this version,
    /// else `build()`'s. `cached()` names the objects still cached, for a sweep.
    pub fn of(
        &self,
        key: K,
        meta: &ObjectMeta,
        build: impl FnOnce() -> V,
        cached: impl FnOnce() -> HashSet<(String, String)>,
    ) -> V {
        // Without a resourceVersion, one version cannot be told from the next.
        let Some(resource_version) = meta.resource_version.as_deref() else {
            return build();
        };
        let version = format!(
            "{}/{resource_version}",
            meta.uid.as_deref().unwrap_or_default()
        );
        let Ok(mut memo) = self.0.lock() else {
            return build();
        };
        if let Some((seen, view)) = memo.views.get(&key)
            && *seen == version
        {
            return view.clone();
        }
        let view = build();
        memo.views.insert(key, (version, view.clone()));
        memo.built += 1;
        if memo.built >= SWEEP_EVERY {
            memo.built = 0;
            let live = cached();
            memo.views.retain(|key, _| {
                let (namespace, name) = key.object();
                live.contains(&(namespace.to_owned(), name.to_owned()))
            });
        }
        view
    }

    /// Forgets the views of an object no longer cached.
    pub fn forget(&self, namespace: &str, name: &str) {
        if let Ok(mut memo) = self.0.lock() {
            memo.views
                .retain(|key, _| key.object() != (namespace, name));
        }
    }

    /// How many views the memo holds.
    pub fn len(&self) -> usize {
        self.0.lock().map_or(0, |memo| memo.views.len())
    }

    /// Whether the memo holds no view.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

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
    pub fn start(
        client: &Client,
        namespaces: &[String],
        stop: &CancellationToken,
        changes: &Changes,
    ) -> Self {
        let apis = if namespaces.is_empty() {
            vec![(None, Api::all(client.clone()))]
        } else {
            namespaces
                .iter()
                .map(|ns| (Some(ns.clone()), Api::namespaced(client.clone(), ns)))
                .collect()
        };
        Self::start_apis(apis, stop, &K::DynamicType::default(), changes)
    }
}

impl Cache<kube::api::DynamicObject> {
    /// Starts reflectors for a namespaced resource known at run time (a CRD's).
    pub fn start_dynamic(
        client: &Client,
        namespaces: &[String],
        stop: &CancellationToken,
        resource: &kube::api::ApiResource,
        changes: &Changes,
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
        Self::start_apis(apis, stop, resource, changes)
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
        changes: &Changes,
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
            let changes = changes.clone();
            tokio::spawn(async move {
                let mut stream = std::pin::pin!(stream);
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        item = stream.next() => match item {
                            Some(Ok(watcher::Event::Apply(object) | watcher::Event::Delete(object))) => {
                                let meta = object.meta();
                                if let (Some(namespace), Some(name)) = (&meta.namespace, &meta.name) {
                                    changes.touch(namespace, name);
                                }
                            }
                            Some(Ok(watcher::Event::InitDone)) => changes.touch_all(),
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

    /// (namespace, name) of every cached object.
    pub fn names(&self) -> HashSet<(String, String)> {
        self.stores
            .iter()
            .flat_map(|(_, s)| s.state())
            .map(|o| {
                let meta = o.meta();
                (
                    meta.namespace.clone().unwrap_or_default(),
                    meta.name.clone().unwrap_or_default(),
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use std::collections::HashSet;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::{Changes, SWEEP_EVERY, Views};

    fn meta(resource_version: &str) -> ObjectMeta {
        ObjectMeta {
            uid: Some("u1".into()),
            resource_version: Some(resource_version.into()),
            ..Default::default()
        }
    }

    fn key(namespace: &str, name: &str) -> (String, String, String, String) {
        (namespace.into(), name.into(), "ga".into(), "canary".into())
    }

    #[test]
    fn a_sweep_drops_the_views_of_objects_no_longer_cached() {
        let views: Views<_, u32> = Views::default();
        for i in 0..SWEEP_EVERY {
            views.of(
                key("test", &format!("gone-{i}")),
                &meta("1"),
                || 1,
                HashSet::new,
            );
        }
        // The sweep ran on the last build: nothing listed as cached, so nothing is kept.
        assert!(views.is_empty());
        // One still cached (under two keys), then enough others to reach the next sweep.
        let cached = || HashSet::from([("test".to_owned(), "kept".to_owned())]);
        views.of(key("test", "kept"), &meta("1"), || 1, cached);
        let other = (
            "test".to_owned(),
            "kept".to_owned(),
            "ga".to_owned(),
            "other".to_owned(),
        );
        views.of(other, &meta("1"), || 2, cached);
        for i in 2..SWEEP_EVERY {
            views.of(key("test", &format!("gone-{i}")), &meta("1"), || 1, cached);
        }
        assert_eq!(views.len(), 2);
        // The same version again is the memo's; forgetting the object drops both keys.
        assert_eq!(views.of(key("test", "kept"), &meta("1"), || 9, cached), 1);
        assert_eq!(views.of(key("test", "kept"), &meta("2"), || 9, cached), 9);
        views.forget("test", "kept");
        assert!(views.is_empty());
    }

    async fn woken(subscription: &super::Subscription) -> bool {
        tokio::time::timeout(Duration::from_millis(50), subscription.changed())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_change_wakes_the_waiters_on_that_object_once_and_no_one_else() {
        let changes = Changes::default();
        let a = changes.subscribe("ns", &["podinfo", "podinfo-canary", "podinfo"]);
        let b = changes.subscribe("ns", &["other"]);
        let c = changes.subscribe("elsewhere", &["podinfo"]);
        assert_eq!(changes.watched(), 4);
        // Kept for a waiter that is busy when it comes; several changes make one wake.
        changes.touch("ns", "podinfo");
        changes.touch("ns", "podinfo-canary");
        assert!(woken(&a).await);
        assert!(!woken(&a).await);
        assert!(!woken(&b).await);
        assert!(!woken(&c).await);
        // A relist wakes everyone.
        changes.touch_all();
        assert!(woken(&a).await && woken(&b).await && woken(&c).await);
        // Dropping a subscription forgets its objects.
        drop(a);
        drop(c);
        assert_eq!(changes.watched(), 1);
        changes.touch("ns", "podinfo");
        assert!(!woken(&b).await);
        drop(b);
        assert_eq!(changes.watched(), 0);
    }
}
