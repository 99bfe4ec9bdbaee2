//! The Deployment controller: one ReplicaSet per pod-template revision, pods simulated as
//! ready-at instants, rolling and recreate updates over simulated time, and the Deployment
//! status and conditions kube-controller-manager writes.

mod hash;
mod pods;
mod replicaset;
mod rollout;
mod spec;
mod status;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::store::{Change, ChangeType, GroupResource, Store, UpdateScope};

pub use hash::pod_template_hash;
use pods::ReplicaSet;
use replicaset::{prune_history, replicaset_object, set_annotation, set_label, write_replicaset};
use rollout::step;
use spec::Spec;
use status::compute_status;

/// Annotation holding a Deployment's (and its ReplicaSets') revision number.
pub const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";
/// Label a ReplicaSet and its pods carry: the hash of the pod template.
pub const POD_TEMPLATE_HASH_LABEL: &str = "pod-template-hash";
/// Pod-template annotation: `"false"` means pods of that revision never become ready.
pub const READY_ANNOTATION: &str = "sim.steerer.dev/ready";

/// The `apps/deployments` resource.
pub fn deployments() -> GroupResource {
    GroupResource::new("apps", "deployments")
}

/// The `apps/replicasets` resource.
pub fn replicasets() -> GroupResource {
    GroupResource::new("apps", "replicasets")
}

type Key = (String, String);

#[derive(Debug)]
struct State {
    uid: String,
    sets: Vec<ReplicaSet>,
}

/// The Deployment controller's state: simulated pods per ReplicaSet, and which Deployments
/// need a reconcile now or at a later instant.
pub struct Controller {
    store: Arc<Store>,
    pod_startup: Duration,
    states: HashMap<Key, State>,
    dirty: HashSet<Key>,
    wakeups: HashMap<Key, Instant>,
    /// resourceVersion of the controller's own last write per Deployment, whose change event
    /// needs no reconcile.
    own_writes: HashMap<Key, String>,
}

impl Controller {
    /// A controller acting on `store`; new pods become ready `pod_startup` after they start.
    pub fn new(store: Arc<Store>, pod_startup: Duration) -> Self {
        Self {
            store,
            pod_startup,
            states: HashMap::new(),
            dirty: HashSet::new(),
            wakeups: HashMap::new(),
            own_writes: HashMap::new(),
        }
    }

    /// Marks every Deployment (stored or known) for a reconcile.
    pub fn resync_all(&mut self) {
        let (items, _) = self.store.list(&deployments(), None);
        for obj in items {
            if let Some(key) = key_of(&obj) {
                self.dirty.insert(key);
            }
        }
        self.dirty.extend(self.states.keys().cloned());
    }

    /// Takes note of a store change.
    pub fn observe(&mut self, change: &Change) {
        if change.gr == deployments() {
            let Some(key) = key_of(&change.object) else {
                return;
            };
            let rv = change
                .object
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str);
            if change.change != ChangeType::Deleted
                && rv.is_some()
                && self.own_writes.get(&key).map(String::as_str) == rv
            {
                return;
            }
            self.dirty.insert(key);
        } else if change.gr == replicasets() && change.change == ChangeType::Deleted {
            // A ReplicaSet deleted by someone else is written again by its Deployment.
            let Some((ns, name)) = key_of(&change.object) else {
                return;
            };
            for (key, state) in &mut self.states {
                if key.0 == ns
                    && let Some(set) = state.sets.iter_mut().find(|s| s.name == name)
                {
                    set.written = None;
                    self.dirty.insert(key.clone());
                    break;
                }
            }
        }
    }

    /// The earliest instant a Deployment waits for (a pod becoming ready, a deadline).
    pub fn next_wakeup(&self) -> Option<Instant> {
        self.wakeups.values().min().copied()
    }

    /// Marks every Deployment whose wake-up instant has come for a reconcile.
    pub fn wake_due(&mut self, now: Instant) {
        let due: Vec<Key> = self
            .wakeups
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(key, _)| key.clone())
            .collect();
        for key in due {
            self.wakeups.remove(&key);
            self.dirty.insert(key);
        }
    }

    /// Reconciles every Deployment marked dirty.
    pub fn reconcile_dirty(&mut self, now: Instant) {
        let dirty: Vec<Key> = self.dirty.drain().collect();
        for key in dirty {
            self.reconcile(&key, now);
        }
    }

    /// Brings one Deployment's ReplicaSets, pods and status up to date.
    pub fn reconcile(&mut self, key: &Key, now: Instant) {
        let (ns, name) = (key.0.as_str(), key.1.as_str());
        let Ok(obj) = self.store.get(&deployments(), ns, name) else {
            self.forget(key);
            return;
        };
        let uid = obj
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        if self.states.get(key).is_some_and(|s| s.uid != uid) {
            self.forget(key);
        }
        let spec = Spec::parse(&obj);
        let startup = self.pod_startup;
        let state = self.states.entry(key.clone()).or_insert_with(|| State {
            uid: uid.clone(),
            sets: Vec::new(),
        });

        let hash = pod_template_hash(&spec.template);
        let max_revision = state.sets.iter().map(|s| s.revision).max().unwrap_or(0);
        let mut new_set_event: Option<(&'static str, String)> = None;
        let mut new_index = state.sets.iter().position(|s| s.hash == hash);
        if !spec.paused {
            match new_index {
                None => {
                    let mut template = spec.template.clone();
                    set_label(&mut template, POD_TEMPLATE_HASH_LABEL, &hash);
                    let never_ready = template
                        .pointer("/metadata/annotations")
                        .and_then(|a| a.get(READY_ANNOTATION))
                        .and_then(Value::as_str)
                        == Some("false");
                    let set_name = format!("{name}-{hash}");
                    new_set_event = Some((
                        "NewReplicaSetCreated",
                        format!("Created new replica set \"{set_name}\""),
                    ));
                    state.sets.push(ReplicaSet {
                        name: set_name,
                        hash: hash.clone(),
                        revision: max_revision + 1,
                        template,
                        never_ready,
                        pods: Vec::new(),
                        written: None,
                    });
                    new_index = Some(state.sets.len() - 1);
                }
                Some(i) if state.sets[i].revision < max_revision => {
                    // Going back to an older template makes its ReplicaSet the newest revision.
                    state.sets[i].revision = max_revision + 1;
                    new_set_event = Some((
                        "FoundNewReplicaSet",
                        format!("Found new replica set \"{}\"", state.sets[i].name),
                    ));
                }
                Some(_) => {}
            }
            if let Some(new) = new_index {
                for _ in 0..32 {
                    if !step(&mut state.sets, new, &spec, now, startup) {
                        break;
                    }
                }
            }
        }

        let status = compute_status(&obj, &spec, &state.sets, new_index, new_set_event, now);
        let revision = new_index.map(|i| state.sets[i].revision.to_string());

        // Write ReplicaSets first, so a client that sees the Deployment status can find them.
        let deployment_uid = uid.clone();
        for set in &mut state.sets {
            let desired = replicaset_object(ns, name, &deployment_uid, &spec, set, now);
            if set.written.as_ref() == Some(&desired) {
                continue;
            }
            match write_replicaset(&self.store, ns, &desired) {
                Ok(()) => set.written = Some(desired),
                Err(err) => tracing::warn!(%err, replicaset = %set.name, "replicaset write failed"),
            }
        }
        prune_history(&self.store, ns, state, new_index, &spec);

        let current_revision = obj
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(REVISION_ANNOTATION))
            .and_then(Value::as_str);
        if obj.get("status") != Some(&status.value) || revision.as_deref() != current_revision {
            let result = self
                .store
                .update(&deployments(), ns, name, UpdateScope::All, |old| {
                    let mut new = old.clone();
                    if let Some(rev) = &revision {
                        set_annotation(&mut new, REVISION_ANNOTATION, rev);
                    }
                    new["status"] = status.value.clone();
                    Ok(new)
                });
            match result {
                Ok(written) => {
                    if let Some(rv) = written
                        .pointer("/metadata/resourceVersion")
                        .and_then(Value::as_str)
                    {
                        self.own_writes.insert(key.clone(), rv.to_owned());
                    }
                }
                Err(err) => tracing::warn!(%err, deployment = %name, "status write failed"),
            }
        }

        match status.wakeup {
            Some(at) => {
                self.wakeups.insert(key.clone(), at);
            }
            None => {
                self.wakeups.remove(key);
            }
        }
    }

    /// Drops a deleted (or re-created) Deployment, deleting its ReplicaSets as the garbage
    /// collector would.
    fn forget(&mut self, key: &Key) {
        if let Some(state) = self.states.remove(key) {
            for set in state.sets {
                let _ = self.store.delete(&replicasets(), &key.0, &set.name, None);
            }
        }
        self.wakeups.remove(key);
        self.own_writes.remove(key);
    }

    /// Ready replicas per revision of a Deployment (for tests and diagnostics).
    pub fn ready_by_revision(&self, namespace: &str, name: &str, now: Instant) -> Vec<(u64, i64)> {
        self.states
            .get(&(namespace.to_owned(), name.to_owned()))
            .map(|s| s.sets.iter().map(|r| (r.revision, r.ready(now))).collect())
            .unwrap_or_default()
    }
}

fn key_of(obj: &Value) -> Option<Key> {
    let name = obj.pointer("/metadata/name").and_then(Value::as_str)?;
    let ns = obj
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default();
    Some((ns.to_owned(), name.to_owned()))
}
#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const STARTUP: Duration = Duration::from_secs(2);

    fn deployment(replicas: i64, image: &str) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "ns"},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                             "spec": {"containers": [{"name": "web", "image": image}]}},
            },
        })
    }

    struct Fixture {
        store: Arc<Store>,
        controller: Controller,
        key: Key,
        t0: Instant,
    }

    impl Fixture {
        fn new(obj: Value) -> Self {
            let store = Arc::new(Store::new(1000));
            store.create(&deployments(), "ns", obj).unwrap();
            let controller = Controller::new(Arc::clone(&store), STARTUP);
            Fixture {
                store,
                controller,
                key: ("ns".into(), "web".into()),
                t0: Instant::now(),
            }
        }

        /// Reconciles at `t0 + secs`.
        fn at(&mut self, secs: u64) -> Value {
            let now = self.t0 + Duration::from_secs(secs);
            self.controller.reconcile(&self.key, now);
            self.store.get(&deployments(), "ns", "web").unwrap()
        }

        fn edit(&self, f: impl FnOnce(&mut Value)) {
            self.store
                .update(&deployments(), "ns", "web", UpdateScope::Spec, |old| {
                    let mut new = old.clone();
                    f(&mut new);
                    Ok(new)
                })
                .unwrap();
        }

        fn replicasets(&self) -> Vec<(String, i64, i64)> {
            let (items, _) = self.store.list(&replicasets(), Some("ns"));
            let mut sets: Vec<(String, i64, i64)> = items
                .iter()
                .map(|rs| {
                    (
                        rs["metadata"]["annotations"][REVISION_ANNOTATION]
                            .as_str()
                            .unwrap()
                            .to_owned(),
                        rs["spec"]["replicas"].as_i64().unwrap(),
                        rs["status"]["readyReplicas"].as_i64().unwrap_or(0),
                    )
                })
                .collect();
            sets.sort();
            sets
        }
    }

    fn condition<'a>(obj: &'a Value, type_: &str) -> (&'a str, &'a str) {
        let cond = obj["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == type_)
            .unwrap();
        (
            cond["status"].as_str().unwrap(),
            cond["reason"].as_str().unwrap(),
        )
    }

    fn count(obj: &Value, field: &str) -> i64 {
        obj["status"][field].as_i64().unwrap_or(0)
    }

    #[test]
    fn new_deployment_starts_pods_then_becomes_available() {
        let mut f = Fixture::new(deployment(4, "v1"));
        let obj = f.at(0);
        assert_eq!(obj["metadata"]["annotations"][REVISION_ANNOTATION], "1");
        assert_eq!(count(&obj, "replicas"), 4);
        assert_eq!(count(&obj, "unavailableReplicas"), 4);
        assert!(
            obj["status"].get("readyReplicas").is_none(),
            "zero counts are omitted"
        );
        assert_eq!(
            condition(&obj, "Available"),
            ("False", "MinimumReplicasUnavailable")
        );
        let obj = f.at(2);
        assert_eq!(count(&obj, "availableReplicas"), 4);
        assert_eq!(
            condition(&obj, "Available"),
            ("True", "MinimumReplicasAvailable")
        );
        assert_eq!(
            condition(&obj, "Progressing"),
            ("True", "NewReplicaSetAvailable")
        );
        let rs = f.store.list(&replicasets(), Some("ns")).0;
        let hash = pod_template_hash(&obj["spec"]["template"]);
        assert_eq!(rs[0]["metadata"]["name"], format!("web-{hash}"));
        assert_eq!(
            rs[0]["metadata"]["labels"][POD_TEMPLATE_HASH_LABEL],
            hash.as_str()
        );
        assert_eq!(rs[0]["metadata"]["ownerReferences"][0]["name"], "web");
    }

    #[test]
    fn template_change_rolls_within_surge_and_unavailability() {
        let mut f = Fixture::new(deployment(4, "v1"));
        f.at(0);
        f.at(2);
        f.edit(|d| d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("v2"));
        let obj = f.at(10);
        assert_eq!(obj["metadata"]["annotations"][REVISION_ANNOTATION], "2");
        assert_eq!(obj["status"]["observedGeneration"], 2);
        // 25% surge and 25% unavailable of 4: at most 5 pods, at least 3 available.
        assert_eq!(
            f.replicasets(),
            vec![("1".into(), 3, 3), ("2".into(), 2, 0)]
        );
        assert_eq!(count(&obj, "replicas"), 5);
        assert_eq!(count(&obj, "updatedReplicas"), 2);
        assert_eq!(count(&obj, "availableReplicas"), 3);
        assert_eq!(
            condition(&obj, "Progressing"),
            ("True", "NewReplicaSetCreated")
        );
        let obj = f.at(12);
        assert_eq!(
            condition(&obj, "Progressing"),
            ("True", "ReplicaSetUpdated")
        );
        assert_eq!(
            f.replicasets(),
            vec![("1".into(), 1, 1), ("2".into(), 4, 2)]
        );
        assert_eq!(count(&obj, "updatedReplicas"), 4);
        let obj = f.at(14);
        assert_eq!(
            f.replicasets(),
            vec![("1".into(), 0, 0), ("2".into(), 4, 4)]
        );
        for field in [
            "replicas",
            "updatedReplicas",
            "readyReplicas",
            "availableReplicas",
        ] {
            assert_eq!(count(&obj, field), 4, "{field}");
        }
        assert!(obj["status"].get("unavailableReplicas").is_none());
        assert_eq!(
            condition(&obj, "Progressing"),
            ("True", "NewReplicaSetAvailable")
        );
    }

    #[test]
    fn going_back_to_an_old_template_reuses_its_replicaset_as_a_new_revision() {
        let mut f = Fixture::new(deployment(1, "v1"));
        f.at(0);
        f.at(2);
        f.edit(|d| d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("v2"));
        f.at(3);
        f.at(5);
        f.edit(|d| d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("v1"));
        let obj = f.at(6);
        assert_eq!(obj["metadata"]["annotations"][REVISION_ANNOTATION], "3");
        assert_eq!(f.replicasets().len(), 2);
    }

    #[test]
    fn recreate_removes_old_pods_before_starting_new_ones() {
        let mut d = deployment(3, "v1");
        d["spec"]["strategy"] = json!({"type": "Recreate"});
        let mut f = Fixture::new(d);
        f.at(0);
        f.at(2);
        f.edit(|d| d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("v2"));
        let obj = f.at(3);
        assert_eq!(
            f.replicasets(),
            vec![("1".into(), 0, 0), ("2".into(), 3, 0)]
        );
        assert_eq!(
            condition(&obj, "Available"),
            ("False", "MinimumReplicasUnavailable")
        );
    }

    #[test]
    fn scaling_to_zero_and_back_plays_pod_startup() {
        let mut f = Fixture::new(deployment(2, "v1"));
        f.at(0);
        f.at(2);
        f.edit(|d| d["spec"]["replicas"] = json!(0));
        let obj = f.at(3);
        assert!(obj["status"].get("replicas").is_none());
        assert_eq!(
            condition(&obj, "Available"),
            ("True", "MinimumReplicasAvailable")
        );
        assert_eq!(
            condition(&obj, "Progressing"),
            ("True", "NewReplicaSetAvailable")
        );
        assert_eq!(obj["metadata"]["annotations"][REVISION_ANNOTATION], "1");
        f.edit(|d| d["spec"]["replicas"] = json!(3));
        let obj = f.at(4);
        assert_eq!(count(&obj, "replicas"), 3);
        assert_eq!(count(&obj, "unavailableReplicas"), 3);
        let obj = f.at(6);
        assert_eq!(count(&obj, "availableReplicas"), 3);
        assert_eq!(f.replicasets(), vec![("1".into(), 3, 3)]);
    }

    #[test]
    fn paused_deployment_does_not_roll_out_a_new_template() {
        let mut f = Fixture::new(deployment(2, "v1"));
        f.at(0);
        f.at(2);
        f.edit(|d| {
            d["spec"]["paused"] = json!(true);
            d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("v2");
        });
        let obj = f.at(3);
        assert_eq!(f.replicasets(), vec![("1".into(), 2, 2)]);
        assert_eq!(
            condition(&obj, "Progressing"),
            ("Unknown", "DeploymentPaused")
        );
        f.edit(|d| d["spec"]["paused"] = json!(false));
        let obj = f.at(4);
        assert_eq!(obj["metadata"]["annotations"][REVISION_ANNOTATION], "2");
    }

    #[test]
    fn never_ready_pods_hold_the_rollout_at_the_surge() {
        let mut f = Fixture::new(deployment(2, "v1"));
        f.at(0);
        f.at(2);
        f.edit(|d| {
            d["spec"]["template"]["metadata"]["annotations"] = json!({READY_ANNOTATION: "false"});
        });
        f.at(3);
        let obj = f.at(100);
        // maxUnavailable rounds down to 0 of 2, so the old pods stay while one new pod waits.
        assert_eq!(
            f.replicasets(),
            vec![("1".into(), 2, 2), ("2".into(), 1, 0)]
        );
        assert_eq!(count(&obj, "updatedReplicas"), 1);
        assert_eq!(count(&obj, "unavailableReplicas"), 1);
    }

    #[test]
    fn deleting_a_deployment_deletes_its_replicasets() {
        let mut f = Fixture::new(deployment(1, "v1"));
        f.at(0);
        f.store.delete(&deployments(), "ns", "web", None).unwrap();
        f.controller.reconcile(&f.key.clone(), f.t0);
        assert!(f.store.list(&replicasets(), Some("ns")).0.is_empty());
    }

    #[test]
    fn reconciling_twice_writes_nothing_new() {
        let mut f = Fixture::new(deployment(2, "v1"));
        f.at(0);
        let rv = f.store.current_rv();
        f.at(0);
        assert_eq!(f.store.current_rv(), rv);
    }
}
