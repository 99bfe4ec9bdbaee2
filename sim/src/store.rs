//! The object store: every resource's objects as JSON, the cluster-wide resourceVersion, and
//! the bounded change log that watches replay from.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::error::ApiError;
pub use crate::resources::GroupResource;

/// The kind of change a watch event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeType {
    /// The object was created.
    Added,
    /// The object was updated.
    Modified,
    /// The object was deleted; the event carries its last state.
    Deleted,
}

impl ChangeType {
    /// The watch event `type` string.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeType::Added => "ADDED",
            ChangeType::Modified => "MODIFIED",
            ChangeType::Deleted => "DELETED",
        }
    }
}

/// One committed change, at the resourceVersion it produced.
#[derive(Debug, Clone)]
pub struct Change {
    /// The resourceVersion this change produced.
    pub rv: u64,
    /// The resource of the changed object.
    pub gr: GroupResource,
    /// Namespace of the object; empty for cluster-scoped objects.
    pub namespace: String,
    /// What happened.
    pub change: ChangeType,
    /// The object after the change (before it, for a delete, with the delete's resourceVersion).
    pub object: Arc<Value>,
    /// The object before the change (`None` for a create and for synthetic ADDED events), so
    /// that a filtered watch can tell an object entering or leaving its selector.
    pub previous: Option<Arc<Value>>,
}

/// Which part of an object an update may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateScope {
    /// The main resource of a kind with a status subresource: `.status` is kept from the stored
    /// object.
    Spec,
    /// The `/status` subresource: only `.status` is taken from the new object.
    Status,
    /// Everything but server-owned metadata (kinds without a status subresource, and
    /// controllers).
    All,
}

/// The objects of a snapshot or a watch start, and the change feed that follows them.
pub struct WatchStart {
    /// Changes to send first, oldest first: the replayed log after the requested version, or
    /// synthetic ADDED events for every current object when no version was given.
    pub initial: Vec<Arc<Change>>,
    /// Every change committed after `initial`, in order.
    pub rx: broadcast::Receiver<Arc<Change>>,
    /// The resourceVersion the watch starts at: every change up to it is in `initial` (or
    /// before the requested version), every later one comes through `rx`.
    pub rv: u64,
}

type ObjKey = (String, String);

struct Inner {
    rv: u64,
    objects: HashMap<GroupResource, BTreeMap<ObjKey, Arc<Value>>>,
    history: VecDeque<Arc<Change>>,
    /// Oldest resourceVersion a watch may start from; older ones get 410 Expired.
    compacted_rv: u64,
}

/// The store behind the API server. Cheap to share (`Arc<Store>`); every method is atomic.
pub struct Store {
    inner: Mutex<Inner>,
    tx: broadcast::Sender<Arc<Change>>,
    history_limit: usize,
}

impl Store {
    /// An empty store keeping the last `history_limit` changes for watches to replay.
    pub fn new(history_limit: usize) -> Self {
        let (tx, _) = broadcast::channel(16_384);
        Self {
            inner: Mutex::new(Inner {
                rv: 1,
                objects: HashMap::new(),
                history: VecDeque::new(),
                compacted_rv: 1,
            }),
            tx,
            history_limit: history_limit.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-written object: every mutation
        // builds the new value first and swaps it in last.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The latest committed resourceVersion.
    pub fn current_rv(&self) -> u64 {
        self.lock().rv
    }

    /// The oldest resourceVersion a watch can still start from.
    pub fn compacted_rv(&self) -> u64 {
        self.lock().compacted_rv
    }

    /// Forgets the change log, as etcd compaction does: every watch from an older
    /// resourceVersion now gets 410 Expired.
    pub fn compact(&self) {
        let mut inner = self.lock();
        inner.history.clear();
        inner.compacted_rv = inner.rv;
    }

    /// Subscribes to every change from now on (controllers use this).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.tx.subscribe()
    }

    /// Creates an object. Sets uid, resourceVersion, generation, creationTimestamp and the
    /// namespace; a `generateName` without `name` gets a random suffix.
    pub fn create(
        &self,
        gr: &GroupResource,
        namespace: &str,
        mut obj: Value,
    ) -> Result<Value, ApiError> {
        let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) else {
            return Err(ApiError::invalid(gr, "", "metadata: Required value"));
        };
        let name = match meta.get("name").and_then(Value::as_str) {
            Some(name) if !name.is_empty() => name.to_owned(),
            _ => match meta.get("generateName").and_then(Value::as_str) {
                Some(prefix) if !prefix.is_empty() => {
                    format!("{prefix}{}", random_suffix())
                }
                _ => {
                    return Err(ApiError::invalid(
                        gr,
                        "",
                        "metadata.name: Required value: name or generateName is required",
                    ));
                }
            },
        };
        let mut inner = self.lock();
        let key = (namespace.to_owned(), name.clone());
        if inner
            .objects
            .get(gr)
            .is_some_and(|objs| objs.contains_key(&key))
        {
            return Err(ApiError::already_exists(gr, &name));
        }
        let rv = inner.rv + 1;
        meta.insert("name".into(), json!(name));
        if namespace.is_empty() {
            meta.remove("namespace");
        } else {
            meta.insert("namespace".into(), json!(namespace));
        }
        meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        meta.insert("resourceVersion".into(), json!(rv.to_string()));
        meta.insert("generation".into(), json!(1));
        meta.insert("creationTimestamp".into(), json!(now_rfc3339()));
        meta.remove("deletionTimestamp");
        meta.remove("selfLink");
        let obj = Arc::new(obj);
        inner
            .objects
            .entry(gr.clone())
            .or_default()
            .insert(key, Arc::clone(&obj));
        self.commit(
            &mut inner,
            Change {
                rv,
                gr: gr.clone(),
                namespace: namespace.to_owned(),
                change: ChangeType::Added,
                object: Arc::clone(&obj),
                previous: None,
            },
        );
        Ok((*obj).clone())
    }

    /// Reads one object.
    pub fn get(&self, gr: &GroupResource, namespace: &str, name: &str) -> Result<Value, ApiError> {
        let inner = self.lock();
        inner
            .objects
            .get(gr)
            .and_then(|objs| objs.get(&(namespace.to_owned(), name.to_owned())))
            .map(|obj| (**obj).clone())
            .ok_or_else(|| ApiError::not_found(gr, name))
    }

    /// Lists the objects of a resource, in one namespace or (with `None`) all of them, with the
    /// resourceVersion the list is consistent at.
    pub fn list(&self, gr: &GroupResource, namespace: Option<&str>) -> (Vec<Arc<Value>>, u64) {
        let inner = self.lock();
        let items = inner
            .objects
            .get(gr)
            .map(|objs| {
                objs.iter()
                    .filter(|((ns, _), _)| namespace.is_none_or(|want| want == ns))
                    .map(|(_, obj)| Arc::clone(obj))
                    .collect()
            })
            .unwrap_or_default();
        (items, inner.rv)
    }

    /// Number of objects of every resource together.
    pub fn len(&self) -> usize {
        self.lock().objects.values().map(BTreeMap::len).sum()
    }

    /// Whether the store holds no object.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Updates an object atomically: `f` gets the stored object and returns the new one (or an
    /// error, which changes nothing). If the new object carries a `metadata.resourceVersion`
    /// that is not the stored one the update fails with 409 Conflict. Server-owned metadata is
    /// kept; `scope` says whether `.status` or the rest may change; `generation` is bumped when
    /// anything outside metadata and status changed. An update that changes nothing commits
    /// nothing and keeps the resourceVersion.
    pub fn update<F>(
        &self,
        gr: &GroupResource,
        namespace: &str,
        name: &str,
        scope: UpdateScope,
        f: F,
    ) -> Result<Value, ApiError>
    where
        F: FnOnce(&Value) -> Result<Value, ApiError>,
    {
        let mut inner = self.lock();
        let key = (namespace.to_owned(), name.to_owned());
        let old = inner
            .objects
            .get(gr)
            .and_then(|objs| objs.get(&key))
            .cloned()
            .ok_or_else(|| ApiError::not_found(gr, name))?;
        let mut new = f(&old)?;
        if !new.is_object() {
            return Err(ApiError::bad_request("the object must be a JSON object"));
        }
        if let Some(want) = new
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            && !want.is_empty()
            && Some(want)
                != old
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
        {
            return Err(ApiError::conflict(gr, name));
        }
        if let Some(new_name) = new.pointer("/metadata/name").and_then(Value::as_str)
            && new_name != name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({new_name}) does not match the name on the URL ({name})"
            )));
        }
        match scope {
            UpdateScope::Spec => set_or_remove(&mut new, "status", old.get("status").cloned()),
            UpdateScope::Status => {
                let status = new.get("status").cloned();
                let owners = new.pointer("/metadata/managedFields").cloned();
                let mut kept = (*old).clone();
                set_or_remove(&mut kept, "status", status);
                // Who owns which status fields changes with the status.
                if let Some(meta) = kept.get_mut("metadata") {
                    set_or_remove(meta, "managedFields", owners);
                }
                // Labels and annotations may change through /status too, as in Kubernetes.
                new = kept;
            }
            UpdateScope::All => {}
        }
        // Server-owned metadata always comes from the stored object.
        let new_meta = new
            .as_object_mut()
            .map(|o| o.entry("metadata").or_insert_with(|| json!({})))
            .and_then(Value::as_object_mut);
        let Some(new_meta) = new_meta else {
            return Err(ApiError::bad_request("metadata must be an object"));
        };
        for field in [
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "generation",
            "resourceVersion",
        ] {
            match old.pointer(&format!("/metadata/{field}")) {
                Some(v) => {
                    new_meta.insert(field.into(), v.clone());
                }
                None => {
                    new_meta.remove(field);
                }
            }
        }
        if new == *old {
            return Ok(new);
        }
        if spec_changed(&old, &new) {
            let generation = old
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            new["metadata"]["generation"] = json!(generation + 1);
        }
        let rv = inner.rv + 1;
        new["metadata"]["resourceVersion"] = json!(rv.to_string());
        let new = Arc::new(new);
        if let Some(objs) = inner.objects.get_mut(gr) {
            objs.insert(key, Arc::clone(&new));
        }
        self.commit(
            &mut inner,
            Change {
                rv,
                gr: gr.clone(),
                namespace: namespace.to_owned(),
                change: ChangeType::Modified,
                object: Arc::clone(&new),
                previous: Some(old),
            },
        );
        Ok((*new).clone())
    }

    /// Deletes an object, failing with 409 Conflict when `precondition_rv` is given and is not
    /// the stored resourceVersion. Returns the object as it was.
    pub fn delete(
        &self,
        gr: &GroupResource,
        namespace: &str,
        name: &str,
        precondition_rv: Option<&str>,
    ) -> Result<Value, ApiError> {
        self.delete_if(gr, namespace, name, |old| match precondition_rv {
            Some(want)
                if Some(want)
                    != old
                        .pointer("/metadata/resourceVersion")
                        .and_then(Value::as_str) =>
            {
                Err(ApiError::conflict(gr, name))
            }
            _ => Ok(()),
        })
    }

    /// Deletes an object if `check` accepts the stored one (the API's delete preconditions on
    /// resourceVersion and uid). Returns the object as it was, at the delete's
    /// resourceVersion.
    pub fn delete_if<F>(
        &self,
        gr: &GroupResource,
        namespace: &str,
        name: &str,
        check: F,
    ) -> Result<Value, ApiError>
    where
        F: FnOnce(&Value) -> Result<(), ApiError>,
    {
        let mut inner = self.lock();
        let key = (namespace.to_owned(), name.to_owned());
        let old = inner
            .objects
            .get(gr)
            .and_then(|objs| objs.get(&key))
            .cloned()
            .ok_or_else(|| ApiError::not_found(gr, name))?;
        check(&old)?;
        Ok(self.remove_locked(&mut inner, gr, key, old))
    }

    /// Deletes every object for which `select(resource, namespace)` holds, one DELETED event
    /// each (a Namespace's contents when it is deleted, a CRD's objects when it is deleted).
    /// Returns how many were deleted.
    pub fn delete_where<F>(&self, select: F) -> usize
    where
        F: Fn(&GroupResource, &str) -> bool,
    {
        let mut inner = self.lock();
        let doomed: Vec<(GroupResource, ObjKey, Arc<Value>)> = inner
            .objects
            .iter()
            .flat_map(|(gr, objs)| {
                objs.iter()
                    .filter(|((ns, _), _)| select(gr, ns))
                    .map(|(key, obj)| (gr.clone(), key.clone(), Arc::clone(obj)))
            })
            .collect();
        let n = doomed.len();
        for (gr, key, old) in doomed {
            self.remove_locked(&mut inner, &gr, key, old);
        }
        n
    }

    fn remove_locked(
        &self,
        inner: &mut Inner,
        gr: &GroupResource,
        key: ObjKey,
        old: Arc<Value>,
    ) -> Value {
        if let Some(objs) = inner.objects.get_mut(gr) {
            objs.remove(&key);
        }
        let rv = inner.rv + 1;
        let mut gone = (*old).clone();
        gone["metadata"]["resourceVersion"] = json!(rv.to_string());
        let gone = Arc::new(gone);
        self.commit(
            inner,
            Change {
                rv,
                gr: gr.clone(),
                namespace: key.0.clone(),
                change: ChangeType::Deleted,
                object: Arc::clone(&gone),
                previous: Some(old),
            },
        );
        (*gone).clone()
    }

    /// Starts a watch of one resource (one namespace, or all with `None`). With `since` the
    /// logged changes after that resourceVersion are replayed first (410 Expired when the log no
    /// longer reaches back that far); without it every current object comes first as ADDED.
    pub fn watch(
        &self,
        gr: &GroupResource,
        namespace: Option<&str>,
        since: Option<u64>,
    ) -> Result<WatchStart, ApiError> {
        let inner = self.lock();
        let rx = self.tx.subscribe();
        let matches = |c: &Change| &c.gr == gr && namespace.is_none_or(|ns| ns == c.namespace);
        let initial = match since {
            Some(since) => {
                if since < inner.compacted_rv {
                    return Err(ApiError::expired(since, inner.compacted_rv));
                }
                inner
                    .history
                    .iter()
                    .filter(|c| c.rv > since && matches(c))
                    .cloned()
                    .collect()
            }
            None => inner
                .objects
                .get(gr)
                .map(|objs| {
                    objs.iter()
                        .filter(|((ns, _), _)| namespace.is_none_or(|want| want == ns))
                        .map(|((ns, _), obj)| {
                            Arc::new(Change {
                                rv: rv_of(obj),
                                gr: gr.clone(),
                                namespace: ns.clone(),
                                change: ChangeType::Added,
                                object: Arc::clone(obj),
                                previous: None,
                            })
                        })
                        .collect()
                })
                .unwrap_or_default(),
        };
        Ok(WatchStart {
            initial,
            rx,
            rv: inner.rv,
        })
    }

    fn commit(&self, inner: &mut Inner, change: Change) {
        inner.rv = change.rv;
        let change = Arc::new(change);
        inner.history.push_back(Arc::clone(&change));
        while inner.history.len() > self.history_limit {
            if let Some(dropped) = inner.history.pop_front() {
                inner.compacted_rv = dropped.rv;
            }
        }
        // No receiver is fine: nobody is watching.
        let _ = self.tx.send(change);
    }
}

/// The resourceVersion of a stored object.
pub fn rv_of(obj: &Value) -> u64 {
    obj.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn set_or_remove(obj: &mut Value, field: &str, value: Option<Value>) {
    if let Some(map) = obj.as_object_mut() {
        match value {
            Some(v) => {
                map.insert(field.into(), v);
            }
            None => {
                map.remove(field);
            }
        }
    }
}

/// Whether anything but metadata and status differs: what bumps `metadata.generation`.
fn spec_changed(old: &Value, new: &Value) -> bool {
    let strip = |v: &Value| -> Value {
        let mut v = v.clone();
        if let Some(map) = v.as_object_mut() {
            map.remove("metadata");
            map.remove("status");
        }
        v
    };
    strip(old) != strip(new)
}

fn random_suffix() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// The current time as Kubernetes writes timestamps (RFC 3339, seconds, UTC).
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployments() -> GroupResource {
        GroupResource::new("apps", "deployments")
    }

    fn deployment(name: &str) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
               "spec": {"replicas": 1}})
    }

    #[test]
    fn create_sets_server_metadata_and_rejects_duplicates() {
        let store = Store::new(100);
        let obj = store
            .create(&deployments(), "ns", deployment("web"))
            .unwrap();
        assert_eq!(obj["metadata"]["generation"], 1);
        assert_eq!(obj["metadata"]["namespace"], "ns");
        assert!(obj["metadata"]["uid"].is_string());
        let err = store
            .create(&deployments(), "ns", deployment("web"))
            .unwrap_err();
        assert_eq!(err.reason, "AlreadyExists");
    }

    #[test]
    fn stale_resource_version_conflicts_and_spec_change_bumps_generation() {
        let store = Store::new(100);
        let created = store
            .create(&deployments(), "ns", deployment("web"))
            .unwrap();
        let mut stale = created.clone();
        stale["spec"]["replicas"] = json!(3);
        let updated = store
            .update(&deployments(), "ns", "web", UpdateScope::Spec, |_| {
                Ok(stale.clone())
            })
            .unwrap();
        assert_eq!(updated["metadata"]["generation"], 2);
        let err = store
            .update(&deployments(), "ns", "web", UpdateScope::Spec, |_| {
                Ok(stale.clone())
            })
            .unwrap_err();
        assert_eq!(err.code, 409);
    }

    #[test]
    fn status_update_keeps_spec_and_generation() {
        let store = Store::new(100);
        store
            .create(&deployments(), "ns", deployment("web"))
            .unwrap();
        let updated = store
            .update(&deployments(), "ns", "web", UpdateScope::Status, |old| {
                let mut new = old.clone();
                new["spec"]["replicas"] = json!(9);
                new["status"] = json!({"replicas": 1});
                Ok(new)
            })
            .unwrap();
        assert_eq!(updated["spec"]["replicas"], 1);
        assert_eq!(updated["status"]["replicas"], 1);
        assert_eq!(updated["metadata"]["generation"], 1);
    }

    #[test]
    fn watch_replays_from_version_and_expires_after_compaction() {
        let store = Store::new(100);
        let a = store.create(&deployments(), "ns", deployment("a")).unwrap();
        store.create(&deployments(), "ns", deployment("b")).unwrap();
        let start = store
            .watch(&deployments(), Some("ns"), Some(rv_of(&a)))
            .unwrap();
        assert_eq!(start.initial.len(), 1);
        assert_eq!(start.initial[0].object["metadata"]["name"], "b");
        store.compact();
        let err = store
            .watch(&deployments(), None, Some(rv_of(&a)))
            .err()
            .unwrap();
        assert_eq!((err.code, err.reason), (410, "Expired"));
    }
}
