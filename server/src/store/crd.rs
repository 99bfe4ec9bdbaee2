//! Rollout state as `rollouts.steerer.dev` custom resources (`artifacts/steerer/05-rollouts-crd.yaml`):
//! one per rollout, named by its id, in the namespace of its GA Deployment. The spec is what
//! was asked for, written once; the status holds the phase, weight and success rate kubectl
//! shows, the engine's full record (`status.state`) and the newest events (`status.events`).
//! Every status write is a JSON patch through the status subresource whose first operation
//! tests the resourceVersion this server last wrote or read, so a write never lands on a
//! state it did not see. Only unfinished rollouts are remembered between writes.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams, Preconditions, TypeMeta,
};
use kube::{Client, Resource, ResourceExt};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Filter, Store, StoreError, Stored};
use crate::domain::{Rollout, RolloutEvent, RouteKind};
use crate::events::DEFAULT_EVENT_LIMIT;

/// API group of the Rollout resource.
pub const GROUP: &str = "steerer.dev";
/// Served and stored version.
pub const VERSION: &str = "v1alpha1";
/// Kind of the Rollout resource.
pub const KIND: &str = "Rollout";
/// Plural (resource) name.
pub const PLURAL: &str = "rollouts";
/// Label every stored rollout carries.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "steerer");
/// Label naming the rollout's GA Deployment.
pub const TARGET_LABEL: &str = "steerer.dev/target";
/// Label holding the rollout id (also the object's name), for finding it across namespaces.
pub const ID_LABEL: &str = "steerer.dev/rollout-id";

/// The Rollout resource for dynamic API access.
pub fn api_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, VERSION, KIND), PLURAL)
}

/// What this server last wrote or read of an unfinished rollout.
struct Known {
    /// The resourceVersion the next write is conditional on.
    resource_version: String,
    /// Events the record holds.
    kept: usize,
}

/// Rollouts stored as custom resources.
pub struct CrdStore {
    client: Client,
    namespaces: Vec<String>,
    known: Mutex<HashMap<String, Known>>,
    event_limit: usize,
}

impl CrdStore {
    /// A store reading the served namespaces (empty = all).
    pub fn new(client: Client, namespaces: Vec<String>) -> Self {
        Self {
            client,
            namespaces,
            known: Mutex::new(HashMap::new()),
            event_limit: DEFAULT_EVENT_LIMIT,
        }
    }

    /// Keeps the newest `limit` events of each rollout (at least one) instead of
    /// `DEFAULT_EVENT_LIMIT`.
    pub fn with_event_limit(mut self, limit: usize) -> Self {
        self.event_limit = limit.max(1);
        self
    }

    fn api(&self, namespace: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), namespace, &api_resource())
    }

    /// One Api per served namespace, or one over all namespaces.
    fn apis(&self, namespace: Option<&str>) -> Vec<Api<DynamicObject>> {
        match namespace {
            Some(ns) => vec![self.api(ns)],
            None if self.namespaces.is_empty() => {
                vec![Api::all_with(self.client.clone(), &api_resource())]
            }
            None => self.namespaces.iter().map(|ns| self.api(ns)).collect(),
        }
    }

    fn remember(&self, rollout: &Rollout, resource_version: Option<String>, kept: usize) {
        let Ok(mut known) = self.known.lock() else {
            return;
        };
        match resource_version.filter(|_| !rollout.phase.is_terminal()) {
            Some(resource_version) => {
                known.insert(
                    rollout.id.clone(),
                    Known {
                        resource_version,
                        kept,
                    },
                );
            }
            // A finished rollout is never written again: nothing to remember.
            None => {
                known.remove(&rollout.id);
            }
        }
    }

    fn known(&self, id: &str) -> Option<(String, usize)> {
        let known = self.known.lock().ok()?;
        known.get(id).map(|k| (k.resource_version.clone(), k.kept))
    }

    fn list_params(filter: &Filter) -> ListParams {
        let mut selector = format!("{}={}", MANAGED_BY.0, MANAGED_BY.1);
        if let Some(target) = &filter.target {
            selector.push_str(&format!(",{TARGET_LABEL}={target}"));
        }
        ListParams::default().labels(&selector)
    }

    /// The rollouts of the records `filter` selects, read without their events.
    async fn list_states(&self, filter: &Filter) -> Result<Vec<Rollout>, StoreError> {
        let params = Self::list_params(filter);
        let resource = api_resource();
        let paths: Vec<String> = match filter.namespace.as_deref() {
            Some(ns) => vec![DynamicObject::url_path(&resource, Some(ns))],
            None if self.namespaces.is_empty() => vec![DynamicObject::url_path(&resource, None)],
            None => self
                .namespaces
                .iter()
                .map(|ns| DynamicObject::url_path(&resource, Some(ns)))
                .collect(),
        };
        let failed = |e: kube::Error| StoreError::api("list", "*", e);
        let mut out = Vec::new();
        for path in paths {
            let request = kube::core::Request::new(path)
                .list(&params)
                .map_err(|e| failed(kube::Error::BuildRequest(e)))?;
            let page: ListedPage = self.client.request(request).await.map_err(failed)?;
            out.extend(page.items.into_iter().filter_map(listed_state));
        }
        Ok(out)
    }

    /// Writes a JSON patch (its JSON text) to a record's status and returns the
    /// resourceVersion written, reading nothing else of the answer (the whole record, events
    /// included).
    async fn patch_status(
        &self,
        namespace: &str,
        name: &str,
        patch: Vec<u8>,
    ) -> Result<Option<String>, kube::Error> {
        let mut request =
            kube::core::Request::new(DynamicObject::url_path(&api_resource(), Some(namespace)))
                .patch_subresource(
                    "status",
                    name,
                    &PatchParams::default(),
                    &Patch::Json::<()>(json_patch::Patch(Vec::new())),
                )
                .map_err(kube::Error::BuildRequest)?;
        // The patch is written as text once, rather than built as a value and converted.
        *request.body_mut() = patch;
        let written: Written = self.client.request(request).await?;
        Ok(written.metadata.resource_version)
    }

    async fn list_objects(&self, filter: &Filter) -> Result<Vec<DynamicObject>, StoreError> {
        let params = Self::list_params(filter);
        let mut out = Vec::new();
        for api in self.apis(filter.namespace.as_deref()) {
            let list = api
                .list(&params)
                .await
                .map_err(|e| StoreError::api("list", "*", e))?;
            out.extend(list.items);
        }
        Ok(out)
    }

    async fn write(&self, rollout: &Rollout, events: &[RolloutEvent]) -> Result<(), StoreError> {
        let api = self.api(&rollout.namespace);
        let name = rollout.id.as_str();
        let api_error =
            |action: &'static str, e: kube::Error| StoreError::api(action, &rollout.id, e);
        let (mut rv, mut kept) = match self.known(name) {
            Some(known) => known,
            None => {
                let object = api.get(name).await.map_err(|e| api_error("read", e))?;
                let (_, stored_events) = decode(&object)?;
                (
                    object.resource_version().unwrap_or_default(),
                    stored_events.len(),
                )
            }
        };
        let expected = rollout.last_sequence - events.len() as u64;
        for attempt in 0..2 {
            let (patch, now_kept) = append_patch(&rv, rollout, events, kept, self.event_limit)?;
            match self.patch_status(&rollout.namespace, name, patch).await {
                Ok(written) => {
                    self.remember(rollout, written, now_kept);
                    return Ok(());
                }
                Err(kube::Error::Api(status)) if status.code < 500 && attempt == 0 => {
                    // A failed `test` of the resourceVersion (or a conflict): someone wrote
                    // the object since. Carry on only if nobody moved the rollout on.
                    let fresh = api.get(name).await.map_err(|e| api_error("read", e))?;
                    let (stored, fresh_events) = decode(&fresh)?;
                    if stored == *rollout
                        && fresh_events.last().map(|e| e.sequence) == Some(rollout.last_sequence)
                    {
                        // An earlier attempt whose answer was lost did land.
                        self.remember(rollout, fresh.resource_version(), fresh_events.len());
                        return Ok(());
                    }
                    if stored.last_sequence != expected {
                        self.forget(name);
                        return Err(StoreError::Conflict {
                            id: rollout.id.clone(),
                            stored: stored.last_sequence,
                            expected,
                        });
                    }
                    let fresh_rv = fresh.resource_version().unwrap_or_default();
                    if fresh_rv == rv {
                        // Not a concurrent write: the patch itself was refused.
                        return Err(api_error("update", kube::Error::Api(status)));
                    }
                    rv = fresh_rv;
                    kept = fresh_events.len();
                }
                Err(e) => return Err(api_error("update", e)),
            }
        }
        Err(StoreError::Conflict {
            id: rollout.id.clone(),
            stored: 0,
            expected,
        })
    }

    fn forget(&self, id: &str) {
        if let Ok(mut known) = self.known.lock() {
            known.remove(id);
        }
    }
}

fn encoding(id: &str, error: serde_json::Error) -> StoreError {
    StoreError::Encode {
        id: id.to_owned(),
        source: Arc::new(error),
    }
}

fn encode<T: serde::Serialize>(value: &T, id: &str) -> Result<Value, StoreError> {
    serde_json::to_value(value).map_err(|e| encoding(id, e))
}

/// One operation of a JSON patch.
#[derive(serde::Serialize)]
struct Op<'a, T: serde::Serialize + ?Sized> {
    op: &'static str,
    path: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<&'a T>,
}

/// Appends an operation to the JSON text of a patch (opened with `[`).
fn push_op<T: serde::Serialize + ?Sized>(
    out: &mut Vec<u8>,
    op: &'static str,
    path: &str,
    value: Option<&T>,
    id: &str,
) -> Result<(), StoreError> {
    if out.len() > 1 {
        out.push(b',');
    }
    serde_json::to_writer(&mut *out, &Op { op, path, value }).map_err(|e| encoding(id, e))
}

/// The status fields kubectl shows, from the engine's record.
fn summary(rollout: &Rollout) -> Vec<(&'static str, Value)> {
    let success = rollout
        .last_analysis
        .as_ref()
        .and_then(|a| a.sample.success_rate)
        .map(|rate| format!("{rate:.2}%"))
        .unwrap_or_default();
    let mut fields = vec![
        ("phase", json!(rollout.phase)),
        ("canaryWeight", json!(rollout.canary_weight)),
        ("successRate", json!(success)),
        ("message", json!(rollout.message)),
        ("lastSequence", json!(rollout.last_sequence)),
    ];
    if let Some(finished) = rollout.finished_at {
        fields.push(("finishedAt", json!(finished)));
    }
    fields
}

/// The JSON patch (its text) that records a step: test the resourceVersion, set the status
/// fields and the state, append the events and drop the oldest past `limit`. Also returns
/// the events the record then keeps.
fn append_patch(
    resource_version: &str,
    rollout: &Rollout,
    events: &[RolloutEvent],
    kept: usize,
    limit: usize,
) -> Result<(Vec<u8>, usize), StoreError> {
    let id = rollout.id.as_str();
    let mut out = Vec::with_capacity(4096);
    out.push(b'[');
    push_op(
        &mut out,
        "test",
        "/metadata/resourceVersion",
        Some(resource_version),
        id,
    )?;
    for (field, value) in summary(rollout) {
        push_op(
            &mut out,
            "add",
            &format!("/status/{field}"),
            Some(&value),
            id,
        )?;
    }
    push_op(&mut out, "add", "/status/state", Some(rollout), id)?;
    for event in events {
        push_op(&mut out, "add", "/status/events/-", Some(event), id)?;
    }
    let total = kept + events.len();
    let excess = total.saturating_sub(limit);
    for _ in 0..excess {
        push_op::<()>(&mut out, "remove", "/status/events/0", None, id)?;
    }
    out.push(b']');
    Ok((out, total - excess))
}

/// The whole status of a new record.
fn status(rollout: &Rollout, events: &[RolloutEvent]) -> Result<Value, StoreError> {
    let mut status = serde_json::Map::new();
    for (field, value) in summary(rollout) {
        status.insert(field.to_owned(), value);
    }
    status.insert("state".into(), encode(rollout, &rollout.id)?);
    status.insert("events".into(), encode(&events, &rollout.id)?);
    Ok(Value::Object(status))
}

/// A new record's object: metadata and spec (the status goes through its subresource).
fn object(rollout: &Rollout) -> DynamicObject {
    let mut spec = json!({
        "target": rollout.target,
        "canary": rollout.canary,
        "route": {"kind": rollout.route.kind.name(), "name": rollout.route.name},
        "images": rollout.images,
    });
    // The field records had before routes had kinds, for readers that know only it.
    match rollout.route.kind {
        RouteKind::VirtualService => spec["virtualService"] = json!(rollout.route.name),
        RouteKind::HttpRoute | RouteKind::GrpcRoute => {}
    }
    if !rollout.request_id.is_empty() {
        spec["requestId"] = json!(rollout.request_id);
    }
    DynamicObject {
        types: Some(TypeMeta {
            api_version: format!("{GROUP}/{VERSION}"),
            kind: KIND.into(),
        }),
        metadata: ObjectMeta {
            name: Some(rollout.id.clone()),
            namespace: Some(rollout.namespace.clone()),
            labels: Some(BTreeMap::from([
                (MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned()),
                (TARGET_LABEL.to_owned(), rollout.target.clone()),
                (ID_LABEL.to_owned(), rollout.id.clone()),
            ])),
            ..Default::default()
        },
        data: json!({ "spec": spec }),
    }
}

/// Whether the record's status was written (a create is two writes: the object, then its
/// status).
/// A page of records as a listing reads it: each record's name and state. The events, most
/// of a record, are skipped unparsed.
#[derive(Deserialize)]
struct ListedPage {
    items: Vec<Listed>,
}

#[derive(Deserialize)]
struct Listed {
    metadata: ListedMeta,
    #[serde(default)]
    status: Option<ListedStatus>,
}

#[derive(Deserialize)]
struct ListedMeta {
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
struct ListedStatus {
    /// Kept as text until read, so a record that cannot be read is skipped alone.
    #[serde(default)]
    state: Option<Box<serde_json::value::RawValue>>,
}

/// What a status write answers, as far as the store reads it: the new resourceVersion.
#[derive(Deserialize)]
struct Written {
    metadata: WrittenMeta,
}

#[derive(Deserialize)]
struct WrittenMeta {
    #[serde(default, rename = "resourceVersion")]
    resource_version: Option<String>,
}

fn has_state(object: &DynamicObject) -> bool {
    object.data.pointer("/status/state").is_some()
}

/// Reads a stored rollout and its kept events.
fn decode(object: &DynamicObject) -> Result<Stored, StoreError> {
    let name = || {
        format!(
            "{}/{}",
            object.namespace().unwrap_or_default(),
            object.name_any()
        )
    };
    let corrupt = |e: serde_json::Error| StoreError::Corrupt {
        name: name(),
        source: Arc::new(e),
    };
    let state = object
        .data
        .pointer("/status/state")
        .ok_or_else(|| StoreError::Incomplete {
            name: name(),
            missing: "status.state",
        })?;
    let rollout = Rollout::deserialize(state).map_err(corrupt)?;
    let events = match object.data.pointer("/status/events") {
        Some(events) => Vec::<RolloutEvent>::deserialize(events).map_err(corrupt)?,
        None => Vec::new(),
    };
    Ok((rollout, events))
}

/// A watched record's rollout and kept events; `None` (with a warning for a record that
/// cannot be read) when it holds no rollout yet.
pub fn decode_record(object: &DynamicObject) -> Option<Stored> {
    if !has_state(object) {
        return None;
    }
    match decode(object) {
        Ok(stored) => Some(stored),
        Err(error) => {
            tracing::warn!(%error, "skipping unreadable rollout record");
            None
        }
    }
}

/// Reads a listed record's state, skipping (with a warning) records that cannot be read.
fn decode_state(object: &DynamicObject) -> Option<Rollout> {
    if !has_state(object) {
        // A create whose status write never landed: not a rollout (yet).
        return None;
    }
    let state = object.data.pointer("/status/state")?;
    match Rollout::deserialize(state) {
        Ok(rollout) => Some(rollout),
        Err(error) => {
            tracing::warn!(name = %object.name_any(), %error, "skipping unreadable stored rollout");
            None
        }
    }
}

/// A listed record's rollout; `None` for a record without one yet (a create whose status
/// write never landed) and, with a warning, for one that cannot be read.
fn listed_state(listed: Listed) -> Option<Rollout> {
    let state = listed.status?.state?;
    match serde_json::from_str(state.get()) {
        Ok(rollout) => Some(rollout),
        Err(error) => {
            tracing::warn!(name = %listed.metadata.name, %error, "skipping unreadable stored rollout");
            None
        }
    }
}

impl Store for CrdStore {
    fn load_active(&self) -> BoxFuture<'_, Result<Vec<Stored>, StoreError>> {
        Box::pin(async move {
            let mut out = Vec::new();
            for object in self.list_objects(&Filter::default()).await? {
                if decode_state(&object).is_none_or(|r| r.phase.is_terminal()) {
                    continue;
                }
                let (rollout, events) = match decode(&object) {
                    Ok(stored) => stored,
                    Err(error) => {
                        tracing::warn!(%error, "skipping unreadable stored rollout");
                        continue;
                    }
                };
                self.remember(&rollout, object.resource_version(), events.len());
                out.push((rollout, events));
            }
            Ok(out)
        })
    }

    fn list<'a>(&'a self, filter: &'a Filter) -> BoxFuture<'a, Result<Vec<Rollout>, StoreError>> {
        Box::pin(async move {
            let mut listed = self.list_states(filter).await?;
            listed.retain(|r| filter.matches(r));
            Ok(listed)
        })
    }

    fn get<'a>(
        &'a self,
        namespace: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Stored>, StoreError>> {
        Box::pin(async move {
            let object = self
                .api(namespace)
                .get_opt(id)
                .await
                .map_err(|e| StoreError::api("read", id, e))?;
            let Some(object) = object.filter(has_state) else {
                return Ok(None);
            };
            let (rollout, events) = decode(&object)?;
            if !rollout.phase.is_terminal() {
                self.remember(&rollout, object.resource_version(), events.len());
            }
            Ok(Some((rollout, events)))
        })
    }

    fn find<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Stored>, StoreError>> {
        Box::pin(async move {
            if !self.namespaces.is_empty() {
                for ns in &self.namespaces {
                    if let Some(found) = self.get(ns, id).await? {
                        return Ok(Some(found));
                    }
                }
                return Ok(None);
            }
            let params = ListParams::default().labels(&format!("{ID_LABEL}={id}"));
            let list = Api::<DynamicObject>::all_with(self.client.clone(), &api_resource())
                .list(&params)
                .await
                .map_err(|e| StoreError::api("find", id, e))?;
            match list.items.iter().find(|o| has_state(o)) {
                Some(object) => decode(object).map(Some),
                None => Ok(None),
            }
        })
    }

    fn create<'a>(
        &'a self,
        rollout: &'a Rollout,
        events: &'a [RolloutEvent],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let api = self.api(&rollout.namespace);
            let api_error =
                |action: &'static str, e: kube::Error| StoreError::api(action, &rollout.id, e);
            let created = match api.create(&PostParams::default(), &object(rollout)).await {
                Ok(created) => created,
                Err(kube::Error::Api(status)) if status.is_already_exists() => {
                    // An earlier attempt of the same request made the object; if its status
                    // never landed, this attempt finishes the create.
                    let existing = api
                        .get(&rollout.id)
                        .await
                        .map_err(|e| api_error("read", e))?;
                    if has_state(&existing) {
                        return Err(StoreError::AlreadyExists {
                            id: rollout.id.clone(),
                        });
                    }
                    existing
                }
                Err(e) => return Err(api_error("create", e)),
            };
            let kept = &events[events.len().saturating_sub(self.event_limit)..];
            let patch = json!([
                {"op": "test", "path": "/metadata/resourceVersion", "value": created.resource_version().unwrap_or_default()},
                {"op": "add", "path": "/status", "value": status(rollout, kept)?},
            ]);
            let patch = serde_json::to_vec(&patch).map_err(|e| encoding(&rollout.id, e))?;
            match self
                .patch_status(&rollout.namespace, &rollout.id, patch)
                .await
            {
                Ok(written) => {
                    self.remember(rollout, written, kept.len());
                    Ok(())
                }
                Err(e) => {
                    // Leave nothing half-made behind: the start is refused and may be retried.
                    let params = DeleteParams {
                        preconditions: Some(Preconditions {
                            uid: created.uid(),
                            resource_version: None,
                        }),
                        ..DeleteParams::default()
                    };
                    if let Err(error) = api.delete(&rollout.id, &params).await {
                        tracing::warn!(rollout = %rollout.id, %error, "could not delete a record whose status write failed");
                    }
                    Err(api_error("create", e))
                }
            }
        })
    }

    fn append<'a>(
        &'a self,
        rollout: &'a Rollout,
        events: &'a [RolloutEvent],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.write(rollout, events))
    }

    fn delete<'a>(
        &'a self,
        namespace: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            self.forget(id);
            match self
                .api(namespace)
                .delete(id, &DeleteParams::default())
                .await
            {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
                Err(e) => Err(StoreError::api("delete", id, e)),
            }
        })
    }
}

/// Copies records of an earlier version (ConfigMaps, `store::configmap`) into custom resources
/// and deletes the ConfigMaps. Unfinished rollouts are carried over with their event logs;
/// a record copied before (a restart during migration) is not copied twice. Returns how many
/// were carried over.
pub async fn migrate(
    legacy: &super::configmap::LegacyRecords,
    store: &CrdStore,
) -> Result<usize, StoreError> {
    let mut carried = 0;
    for (name, namespace, record) in legacy.list().await? {
        if let Some((rollout, events)) = record {
            match store.create(&rollout, &events).await {
                Ok(()) => carried += 1,
                Err(StoreError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
            tracing::info!(rollout = %rollout.id, namespace = %rollout.namespace, phase = rollout.phase.name(), "carried a rollout record over from its ConfigMap");
        }
        legacy.delete(&namespace, &name).await?;
    }
    Ok(carried)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{EventKind, Phase};
    use chrono::Utc;

    fn rollout(last_sequence: u64) -> Rollout {
        Rollout::test().at_sequence(last_sequence)
    }

    fn event(sequence: u64) -> RolloutEvent {
        RolloutEvent {
            rollout_id: "r1".into(),
            sequence,
            time: Utc::now(),
            kind: EventKind::CheckNoData,
            phase: Phase::Progressing,
            canary_weight: 10,
            success_rate: None,
            request_rate: None,
            failed_checks: 0,
            message: String::new(),
            latency_p99_ms: None,
            failed: Default::default(),
            checks: Vec::new(),
        }
    }

    #[test]
    fn a_step_tests_the_resource_version_first_and_trims_the_oldest_events() {
        let (patch, kept) = append_patch("41", &rollout(5), &[event(4), event(5)], 3, 4).unwrap();
        let patch: Value = serde_json::from_slice(&patch).unwrap();
        let ops = patch.as_array().unwrap();
        // Every operation is one a JSON patch reader takes.
        let _: json_patch::Patch = serde_json::from_value(patch.clone()).unwrap();
        assert_eq!(
            ops[0],
            json!({"op": "test", "path": "/metadata/resourceVersion", "value": "41"})
        );
        let appended = ops
            .iter()
            .filter(|op| op["path"] == "/status/events/-")
            .count();
        let removed = ops
            .iter()
            .filter(|op| op["op"] == "remove" && op["path"] == "/status/events/0")
            .count();
        assert_eq!((appended, removed, kept), (2, 1, 4));
        assert!(
            ops.iter()
                .any(|op| op["path"] == "/status/lastSequence" && op["value"] == 5)
        );
    }

    #[test]
    fn a_listing_reads_each_state_skips_the_events_and_passes_over_unreadable_records() {
        let r = rollout(3);
        let page = json!({"items": [
            {"metadata": {"name": r.id}, "status": {"state": r, "events": [event(1), event(2), event(3)]}},
            {"metadata": {"name": "half-made"}},
            {"metadata": {"name": "broken"}, "status": {"state": {"phase": 42}}},
        ]});
        let page: ListedPage = serde_json::from_value(page).unwrap();
        let states: Vec<Rollout> = page.items.into_iter().filter_map(listed_state).collect();
        assert_eq!(states, vec![r]);
    }

    #[test]
    fn a_record_without_status_is_not_a_rollout() {
        let r = rollout(1);
        let mut o = object(&r);
        assert!(!has_state(&o));
        assert!(decode_state(&o).is_none());
        o.data["status"] = status(&r, &[event(1)]).unwrap();
        assert_eq!(decode_state(&o), Some(r.clone()));
        let (decoded, events) = decode(&o).unwrap();
        assert_eq!((decoded, events.len()), (r, 1));
    }
}
