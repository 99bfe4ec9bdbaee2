//! The Deployment controller: one ReplicaSet per pod-template revision, pods simulated as
//! ready-at instants, rolling and recreate updates over simulated time, and the Deployment
//! status and conditions kube-controller-manager writes.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::store::{Change, ChangeType, GroupResource, Store, UpdateScope, now_rfc3339};

/// Annotation holding a Deployment's (and its ReplicaSets') revision number.
pub const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";
/// Label a ReplicaSet and its pods carry: the hash of the pod template.
pub const POD_TEMPLATE_HASH_LABEL: &str = "pod-template-hash";
/// Pod-template annotation: `"false"` means pods of that revision never become ready.
pub const READY_ANNOTATION: &str = "sim.steerer.dev/ready";

const DEFAULT_PROGRESS_DEADLINE_SECONDS: i64 = 600;
const DEFAULT_REVISION_HISTORY_LIMIT: usize = 10;

/// The `apps/deployments` resource.
pub fn deployments() -> GroupResource {
    GroupResource::new("apps", "deployments")
}

/// The `apps/replicasets` resource.
pub fn replicasets() -> GroupResource {
    GroupResource::new("apps", "replicasets")
}

/// The pod-template hash of a Deployment's `spec.template`, as the ReplicaSet label
/// `pod-template-hash` carries it: a stable hash of the template, written with the same
/// alphabet Kubernetes uses (so it looks like `5d59d67564`).
pub fn pod_template_hash(template: &Value) -> String {
    let mut canonical = String::new();
    write_canonical(template, &mut canonical);
    let digest = Sha256::digest(canonical.as_bytes());
    let number = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    number
        .to_string()
        .bytes()
        .map(|b| ALPHABET[usize::from(b) % ALPHABET.len()] as char)
        .collect()
}

/// JSON with object keys sorted, so the hash does not depend on field order.
fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            out.push('{');
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(&map[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

type Key = (String, String);

/// One ReplicaSet of a Deployment and its simulated pods.
#[derive(Debug, Clone)]
struct ReplicaSet {
    name: String,
    hash: String,
    revision: u64,
    /// The Deployment's pod template with the `pod-template-hash` label added.
    template: Value,
    never_ready: bool,
    /// One entry per pod: when it becomes ready (`None`: never). Kept sorted so the pods to
    /// remove first (never ready, then the youngest) are at the end.
    pods: Vec<Option<Instant>>,
    /// The object last written to the store, to write only on change.
    written: Option<Value>,
}

impl ReplicaSet {
    fn len(&self) -> i64 {
        i64::try_from(self.pods.len()).unwrap_or(i64::MAX)
    }

    fn ready(&self, now: Instant) -> i64 {
        count(self.pods.iter().filter(|p| p.is_some_and(|at| at <= now)))
    }

    fn available(&self, now: Instant, min_ready: Duration) -> i64 {
        count(
            self.pods
                .iter()
                .filter(|p| p.is_some_and(|at| at + min_ready <= now)),
        )
    }

    fn scale_up(&mut self, n: i64, now: Instant, startup: Duration) {
        for _ in 0..n {
            self.pods.push(if self.never_ready {
                None
            } else {
                Some(now + startup)
            });
        }
        self.sort_pods();
    }

    fn scale_down(&mut self, n: i64) {
        let keep = self.len().saturating_sub(n).max(0);
        self.pods.truncate(usize::try_from(keep).unwrap_or(0));
    }

    /// Removes up to `n` pods that are not available; returns how many went.
    fn remove_unavailable(&mut self, n: i64, now: Instant, min_ready: Duration) -> i64 {
        let mut removed = 0;
        self.pods.retain(|p| {
            let available = p.is_some_and(|at| at + min_ready <= now);
            if !available && removed < n {
                removed += 1;
                false
            } else {
                true
            }
        });
        removed
    }

    fn sort_pods(&mut self) {
        self.pods.sort_by_key(|p| match p {
            Some(at) => (0, Some(*at)),
            None => (1, None),
        });
    }
}

fn count<T>(iter: impl Iterator<Item = T>) -> i64 {
    i64::try_from(iter.count()).unwrap_or(i64::MAX)
}

#[derive(Debug)]
struct State {
    uid: String,
    sets: Vec<ReplicaSet>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strategy {
    Recreate,
    RollingUpdate { surge: i64, unavailable: i64 },
}

/// What the controller reads from a Deployment.
struct Spec {
    replicas: i64,
    generation: i64,
    template: Value,
    selector: Value,
    paused: bool,
    strategy: Strategy,
    progress_deadline: Option<i64>,
    min_ready: Duration,
    history_limit: usize,
}

impl Spec {
    fn parse(obj: &Value) -> Spec {
        let spec = obj.get("spec").cloned().unwrap_or_else(|| json!({}));
        let replicas = spec
            .get("replicas")
            .and_then(Value::as_i64)
            .unwrap_or(1)
            .max(0);
        let strategy = match spec.pointer("/strategy/type").and_then(Value::as_str) {
            Some("Recreate") => Strategy::Recreate,
            _ => {
                let surge = resolve_int_or_percent(
                    spec.pointer("/strategy/rollingUpdate/maxSurge"),
                    replicas,
                    true,
                );
                let mut unavailable = resolve_int_or_percent(
                    spec.pointer("/strategy/rollingUpdate/maxUnavailable"),
                    replicas,
                    false,
                );
                if surge == 0 && unavailable == 0 {
                    unavailable = 1;
                }
                Strategy::RollingUpdate { surge, unavailable }
            }
        };
        Spec {
            replicas,
            generation: obj
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(1),
            template: spec.get("template").cloned().unwrap_or_else(|| json!({})),
            selector: spec.get("selector").cloned().unwrap_or_else(|| json!({})),
            paused: spec.get("paused").and_then(Value::as_bool).unwrap_or(false),
            strategy,
            progress_deadline: Some(
                spec.get("progressDeadlineSeconds")
                    .and_then(Value::as_i64)
                    .unwrap_or(DEFAULT_PROGRESS_DEADLINE_SECONDS),
            ),
            min_ready: Duration::from_secs(
                spec.get("minReadySeconds")
                    .and_then(Value::as_u64)
                    .unwrap_or(0),
            ),
            history_limit: spec
                .get("revisionHistoryLimit")
                .and_then(Value::as_u64)
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or(DEFAULT_REVISION_HISTORY_LIMIT),
        }
    }

    /// maxUnavailable as the Available condition uses it.
    fn max_unavailable(&self) -> i64 {
        match self.strategy {
            Strategy::RollingUpdate { unavailable, .. } if self.replicas > 0 => {
                unavailable.min(self.replicas)
            }
            _ => 0,
        }
    }
}

/// An int-or-percent field (`maxSurge: 1`, `maxUnavailable: "25%"`) resolved against the
/// replica count: surge rounds up, unavailability rounds down, as Kubernetes does. Absent
/// means 25%.
fn resolve_int_or_percent(value: Option<&Value>, total: i64, round_up: bool) -> i64 {
    let percent = |p: f64| {
        let raw = p * total as f64 / 100.0;
        (if round_up { raw.ceil() } else { raw.floor() }) as i64
    };
    match value {
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0).max(0),
        Some(Value::String(s)) => match s.strip_suffix('%') {
            Some(p) => p.trim().parse::<f64>().map(percent).unwrap_or(0).max(0),
            None => s.trim().parse::<i64>().unwrap_or(0).max(0),
        },
        _ => percent(25.0),
    }
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

/// One pass of the rollout strategy over the ReplicaSets; returns whether anything changed.
fn step(sets: &mut [ReplicaSet], new: usize, spec: &Spec, now: Instant, startup: Duration) -> bool {
    let total: i64 = sets.iter().map(ReplicaSet::len).sum();
    let old_total = total - sets[new].len();
    let before: Vec<i64> = sets.iter().map(ReplicaSet::len).collect();
    match spec.strategy {
        Strategy::Recreate => {
            if old_total > 0 {
                for (i, set) in sets.iter_mut().enumerate() {
                    if i != new {
                        set.pods.clear();
                    }
                }
            } else if sets[new].len() < spec.replicas {
                let n = spec.replicas - sets[new].len();
                sets[new].scale_up(n, now, startup);
            } else if sets[new].len() > spec.replicas {
                let n = sets[new].len() - spec.replicas;
                sets[new].scale_down(n);
            }
        }
        Strategy::RollingUpdate { surge, unavailable } => {
            let max_total = spec.replicas + surge;
            // A scale-down in the middle of a rollout: old pods go first.
            if total > max_total {
                let mut excess = total - max_total;
                for (_, set) in oldest_first(sets, new) {
                    let n = excess.min(set.len());
                    set.scale_down(n);
                    excess -= n;
                }
            }
            let total: i64 = sets.iter().map(ReplicaSet::len).sum();
            let new_len = sets[new].len();
            if new_len > spec.replicas {
                sets[new].scale_down(new_len - spec.replicas);
            } else if new_len < spec.replicas && total < max_total {
                let n = (max_total - total).min(spec.replicas - new_len);
                sets[new].scale_up(n, now, startup);
            }
            let old_total: i64 = sets
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != new)
                .map(|(_, s)| s.len())
                .sum();
            if old_total > 0 {
                let all_total: i64 = sets.iter().map(ReplicaSet::len).sum();
                let min_available = spec.replicas - unavailable;
                let new_unavailable = sets[new].len() - sets[new].available(now, spec.min_ready);
                let mut max_scaled_down = all_total - min_available - new_unavailable;
                // Old pods that are not available cost nothing to remove.
                if max_scaled_down > 0 {
                    for (_, set) in oldest_first(sets, new) {
                        if max_scaled_down <= 0 {
                            break;
                        }
                        max_scaled_down -=
                            set.remove_unavailable(max_scaled_down, now, spec.min_ready);
                    }
                }
                let available: i64 = sets.iter().map(|s| s.available(now, spec.min_ready)).sum();
                let mut scale_down = available - min_available;
                if scale_down > 0 {
                    for (_, set) in oldest_first(sets, new) {
                        if scale_down <= 0 {
                            break;
                        }
                        let n = scale_down.min(set.len());
                        set.scale_down(n);
                        scale_down -= n;
                    }
                }
            }
        }
    }
    let after: Vec<i64> = sets.iter().map(ReplicaSet::len).collect();
    before != after
}

/// The ReplicaSets other than `new`, oldest revision first.
fn oldest_first(sets: &mut [ReplicaSet], new: usize) -> Vec<(usize, &mut ReplicaSet)> {
    let mut old: Vec<(usize, &mut ReplicaSet)> = sets
        .iter_mut()
        .enumerate()
        .filter(|(i, _)| *i != new)
        .collect();
    old.sort_by_key(|(_, s)| s.revision);
    old
}

struct ComputedStatus {
    value: Value,
    wakeup: Option<Instant>,
}

fn compute_status(
    obj: &Value,
    spec: &Spec,
    sets: &[ReplicaSet],
    new_index: Option<usize>,
    new_set_event: Option<(&'static str, String)>,
    now: Instant,
) -> ComputedStatus {
    let old_status = obj.get("status").cloned().unwrap_or_else(|| json!({}));
    let old_count = |field: &str| old_status.get(field).and_then(Value::as_i64).unwrap_or(0);
    let replicas: i64 = sets.iter().map(ReplicaSet::len).sum();
    let updated = new_index.map(|i| sets[i].len()).unwrap_or(0);
    let ready: i64 = sets.iter().map(|s| s.ready(now)).sum();
    let available: i64 = sets.iter().map(|s| s.available(now, spec.min_ready)).sum();
    let unavailable = (replicas - available).max(0);

    let mut status = Map::new();
    status.insert("observedGeneration".into(), json!(spec.generation));
    for (field, value) in [
        ("replicas", replicas),
        ("updatedReplicas", updated),
        ("readyReplicas", ready),
        ("availableReplicas", available),
        ("unavailableReplicas", unavailable),
    ] {
        if value != 0 {
            status.insert(field.into(), json!(value));
        }
    }
    if let Some(collisions) = old_status.get("collisionCount") {
        status.insert("collisionCount".into(), collisions.clone());
    }

    let stamp = now_rfc3339();
    let mut conditions: Vec<Value> = old_status
        .get("conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let condition = |type_: &str, status: &str, reason: &str, message: String| {
        json!({"type": type_, "status": status, "lastUpdateTime": stamp,
               "lastTransitionTime": stamp, "reason": reason, "message": message})
    };
    if available >= spec.replicas - spec.max_unavailable() {
        set_condition(
            &mut conditions,
            condition(
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.".into(),
            ),
        );
    } else {
        set_condition(
            &mut conditions,
            condition(
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.".into(),
            ),
        );
    }

    let progressing_reason = |conds: &[Value]| {
        find_condition(conds, "Progressing")
            .and_then(|c| c.get("reason"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let mut wakeup = None;
    if spec.paused {
        if progressing_reason(&conditions).as_deref() != Some("DeploymentPaused") {
            set_condition(
                &mut conditions,
                condition(
                    "Progressing",
                    "Unknown",
                    "DeploymentPaused",
                    "Deployment is paused".into(),
                ),
            );
        }
    } else if let Some(new) = new_index {
        if progressing_reason(&conditions).as_deref() == Some("DeploymentPaused") {
            set_condition(
                &mut conditions,
                condition(
                    "Progressing",
                    "Unknown",
                    "DeploymentResumed",
                    "Deployment is resumed".into(),
                ),
            );
        }
        if let Some((reason, message)) = new_set_event {
            set_condition(
                &mut conditions,
                condition("Progressing", "True", reason, message),
            );
        }
        let set_name = &sets[new].name;
        let complete =
            updated == spec.replicas && replicas == spec.replicas && available == spec.replicas;
        let old_old_replicas = old_count("replicas") - old_count("updatedReplicas");
        let progressed = updated > old_count("updatedReplicas")
            || (replicas - updated) < old_old_replicas
            || ready > old_count("readyReplicas")
            || available > old_count("availableReplicas");
        if complete {
            set_condition(
                &mut conditions,
                condition(
                    "Progressing",
                    "True",
                    "NewReplicaSetAvailable",
                    format!("ReplicaSet \"{set_name}\" has successfully progressed."),
                ),
            );
        } else if progressed {
            // Progress refreshes lastUpdateTime even when the reason stays the same.
            let mut fresh = condition(
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                format!("ReplicaSet \"{set_name}\" is progressing."),
            );
            if let Some(current) = find_condition(&conditions, "Progressing")
                && current.get("status").and_then(Value::as_str) == Some("True")
            {
                fresh["lastTransitionTime"] = current["lastTransitionTime"].clone();
            }
            conditions.retain(|c| c.get("type").and_then(Value::as_str) != Some("Progressing"));
            conditions.push(fresh);
        }
        if !complete && let Some(deadline) = spec.progress_deadline {
            match progress_deadline_left(&conditions, deadline) {
                Some(left) if left.is_zero() => set_condition(
                    &mut conditions,
                    condition(
                        "Progressing",
                        "False",
                        "ProgressDeadlineExceeded",
                        format!("ReplicaSet \"{set_name}\" has timed out progressing."),
                    ),
                ),
                Some(left) => wakeup = Some(now + left),
                None => {}
            }
        }
    }
    status.insert("conditions".into(), Value::Array(conditions));

    // Pods still starting wake the controller when they become ready (or available).
    for set in sets {
        for at in set.pods.iter().flatten() {
            for instant in [*at, *at + spec.min_ready] {
                if instant > now {
                    wakeup = Some(wakeup.map_or(instant, |w: Instant| w.min(instant)));
                }
            }
        }
    }
    ComputedStatus {
        value: Value::Object(status),
        wakeup,
    }
}

/// Time left before the Progressing condition times out: `None` when it cannot (no
/// condition, already complete or already timed out), zero when it has.
fn progress_deadline_left(conditions: &[Value], deadline_seconds: i64) -> Option<Duration> {
    let cond = find_condition(conditions, "Progressing")?;
    if matches!(
        cond.get("reason").and_then(Value::as_str),
        Some("NewReplicaSetAvailable" | "ProgressDeadlineExceeded")
    ) {
        return None;
    }
    let last_update = cond
        .get("lastUpdateTime")
        .and_then(Value::as_str)
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())?
        .with_timezone(&chrono::Utc);
    let due = last_update + chrono::Duration::seconds(deadline_seconds);
    // Kubernetes times out strictly after the deadline; the slack keeps the timer from firing
    // just before it.
    Some(
        (due - chrono::Utc::now())
            .to_std()
            .map_or(Duration::ZERO, |left| left + Duration::from_millis(5)),
    )
}

fn find_condition<'a>(conditions: &'a [Value], type_: &str) -> Option<&'a Value> {
    conditions
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(type_))
}

/// Kubernetes' SetDeploymentCondition: no change when status and reason are unchanged; the
/// transition time is kept when only the reason changes.
fn set_condition(conditions: &mut Vec<Value>, mut new: Value) {
    let type_ = new["type"].as_str().unwrap_or_default().to_owned();
    if let Some(current) = find_condition(conditions, &type_) {
        if current.get("status") == new.get("status") && current.get("reason") == new.get("reason")
        {
            return;
        }
        if current.get("status") == new.get("status") {
            new["lastTransitionTime"] = current["lastTransitionTime"].clone();
        }
    }
    conditions.retain(|c| c.get("type").and_then(Value::as_str) != Some(type_.as_str()));
    conditions.push(new);
}

fn set_label(obj: &mut Value, key: &str, value: &str) {
    set_meta_map(obj, "labels", key, value);
}

fn set_annotation(obj: &mut Value, key: &str, value: &str) {
    set_meta_map(obj, "annotations", key, value);
}

fn set_meta_map(obj: &mut Value, field: &str, key: &str, value: &str) {
    let Some(root) = obj.as_object_mut() else {
        return;
    };
    let meta = root.entry("metadata").or_insert_with(|| json!({}));
    let Some(meta) = meta.as_object_mut() else {
        return;
    };
    let map = meta.entry(field).or_insert_with(|| json!({}));
    if !map.is_object() {
        *map = json!({});
    }
    if let Some(map) = map.as_object_mut() {
        map.insert(key.into(), json!(value));
    }
}

/// The ReplicaSet object as kube-controller-manager writes it (without server metadata).
fn replicaset_object(
    ns: &str,
    deployment: &str,
    deployment_uid: &str,
    spec: &Spec,
    set: &ReplicaSet,
    now: Instant,
) -> Value {
    let labels = set
        .template
        .pointer("/metadata/labels")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let mut selector = spec.selector.clone();
    if !selector.is_object() {
        selector = json!({});
    }
    let mut match_labels = selector
        .get("matchLabels")
        .cloned()
        .unwrap_or_else(|| json!({}));
    match_labels[POD_TEMPLATE_HASH_LABEL] = json!(set.hash);
    selector["matchLabels"] = match_labels;
    let max_replicas = match spec.strategy {
        Strategy::RollingUpdate { surge, .. } => spec.replicas + surge,
        Strategy::Recreate => spec.replicas,
    };
    let replicas = set.len();
    let mut status = Map::new();
    for (field, value) in [
        ("replicas", replicas),
        ("fullyLabeledReplicas", replicas),
        ("readyReplicas", set.ready(now)),
        ("availableReplicas", set.available(now, spec.min_ready)),
    ] {
        if value != 0 {
            status.insert(field.into(), json!(value));
        }
    }
    let mut rs_spec = json!({"replicas": replicas, "selector": selector, "template": set.template});
    if !spec.min_ready.is_zero() {
        rs_spec["minReadySeconds"] = json!(spec.min_ready.as_secs());
    }
    json!({
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": set.name,
            "namespace": ns,
            "labels": labels,
            "annotations": {
                "deployment.kubernetes.io/desired-replicas": spec.replicas.to_string(),
                "deployment.kubernetes.io/max-replicas": max_replicas.to_string(),
                REVISION_ANNOTATION: set.revision.to_string(),
            },
            "ownerReferences": [{
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": deployment,
                "uid": deployment_uid,
                "controller": true,
                "blockOwnerDeletion": true,
            }],
        },
        "spec": rs_spec,
        "status": Value::Object(status),
    })
}

fn write_replicaset(store: &Store, ns: &str, desired: &Value) -> Result<(), crate::ApiError> {
    let name = desired["metadata"]["name"].as_str().unwrap_or_default();
    let result = store.update(&replicasets(), ns, name, UpdateScope::All, |old| {
        let mut new = old.clone();
        for field in ["labels", "annotations", "ownerReferences"] {
            new["metadata"][field] = desired["metadata"][field].clone();
        }
        new["spec"] = desired["spec"].clone();
        let generation = old
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        let bump = i64::from(old.get("spec") != desired.get("spec"));
        let mut status = desired["status"].clone();
        status["observedGeneration"] = json!(generation + bump);
        new["status"] = status;
        Ok(new)
    });
    match result {
        Ok(_) => Ok(()),
        Err(err) if err.code == 404 => {
            let mut obj = desired.clone();
            obj["status"]["observedGeneration"] = json!(1);
            store.create(&replicasets(), ns, obj).map(|_| ())
        }
        Err(err) => Err(err),
    }
}

/// Deletes the oldest empty ReplicaSets beyond `revisionHistoryLimit`.
fn prune_history(
    store: &Store,
    ns: &str,
    state: &mut State,
    new_index: Option<usize>,
    spec: &Spec,
) {
    let new_name = new_index.map(|i| state.sets[i].name.clone());
    let mut empty: Vec<(u64, String)> = state
        .sets
        .iter()
        .filter(|s| s.pods.is_empty() && Some(&s.name) != new_name.as_ref())
        .map(|s| (s.revision, s.name.clone()))
        .collect();
    if empty.len() <= spec.history_limit {
        return;
    }
    empty.sort();
    let excess = empty.len() - spec.history_limit;
    let doomed: Vec<String> = empty
        .into_iter()
        .take(excess)
        .map(|(_, name)| name)
        .collect();
    for name in doomed {
        let _ = store.delete(&replicasets(), ns, &name, None);
        state.sets.retain(|s| s.name != name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn template_hash_ignores_key_order_and_follows_content() {
        let a = json!({"metadata": {"labels": {"app": "x"}}, "spec": {"containers": []}});
        let b: Value = serde_json::from_str(
            r#"{"spec": {"containers": []}, "metadata": {"labels": {"app": "x"}}}"#,
        )
        .unwrap();
        assert_eq!(pod_template_hash(&a), pod_template_hash(&b));
        assert_ne!(
            pod_template_hash(&a),
            pod_template_hash(&json!({"spec": {}}))
        );
        assert!(
            pod_template_hash(&a)
                .chars()
                .all(|c| c.is_ascii_alphanumeric())
        );
    }

    #[test]
    fn int_or_percent_rounds_surge_up_and_unavailability_down() {
        assert_eq!(resolve_int_or_percent(Some(&json!("25%")), 3, true), 1);
        assert_eq!(resolve_int_or_percent(Some(&json!("25%")), 3, false), 0);
        assert_eq!(resolve_int_or_percent(Some(&json!(2)), 3, false), 2);
        assert_eq!(resolve_int_or_percent(None, 4, false), 1);
    }
}
