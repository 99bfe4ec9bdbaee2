//! The object verbs: get, list (selectors, pagination), create, replace, patch, delete and
//! delete-collection on resources and their `/status` and `/scale` subresources.

use std::sync::Arc;

use axum::response::Response;
use http::StatusCode;
use serde_json::{Value, json};

use super::encode::{ListBody, Versioned, versioned_value};
use super::params::{parse_rv_param, selectors};
use super::{ApiState, Output, ResourceRequest, proto, respond, reviews, table, watch};
use crate::admission;
use crate::error::ApiError;
use crate::faults::Verb;
use crate::managed::{self, Operation, Reach, Tracking, Writer};
use crate::patch::{self, PatchError, PatchType};
use crate::resources::{Registry, ResourceDef};
use crate::selector::LabelSelector;
use crate::store::{GroupResource, UpdateScope, now_rfc3339, rv_of};
use crate::world::World;

/// Runs a parsed resource request.
pub(crate) async fn dispatch(state: &ApiState, req: ResourceRequest) -> Result<Response, ApiError> {
    if req.def.namespaced
        && req.namespace.is_none()
        && !matches!(req.verb, Verb::List | Verb::Watch)
    {
        return Err(ApiError::method_not_supported(&req.gr(), req.verb.as_str()));
    }
    let world = &state.world;
    if req.def.review || req.sub.as_deref() == Some("token") {
        return reviews::handle(world, &req);
    }
    match (req.verb, req.sub.as_deref()) {
        (Verb::Watch, _) => watch::watch(state, req),
        (Verb::List, _) => list(world, &req),
        (Verb::Get, Some("scale")) => {
            let obj = world.store.get(&req.gr(), req.ns(), req.name())?;
            Ok(respond(StatusCode::OK, plain(req.output), &scale_of(&obj)))
        }
        (Verb::Get, _) => get(world, &req),
        (Verb::Create, _) => create(world, &req),
        (Verb::Update, Some("scale")) => update_scale(world, &req),
        (Verb::Update, _) => update(world, &req),
        (Verb::Patch, _) => patch(world, &req),
        (Verb::Delete, _) => delete(world, &req),
        (Verb::DeleteCollection, _) => delete_collection(world, &req),
    }
}

/// Tables are for reads; writes answer with the object.
fn plain(output: Output) -> Output {
    if output == Output::Table {
        Output::Json
    } else {
        output
    }
}

fn respond_object(req: &ResourceRequest, code: StatusCode, obj: &Value) -> Response {
    respond(
        code,
        plain(req.output),
        &Versioned {
            obj,
            api_version: &req.api_version,
            kind: &req.def.kind,
        },
    )
}

fn get(world: &World, req: &ResourceRequest) -> Result<Response, ApiError> {
    let obj = world.store.get(&req.gr(), req.ns(), req.name())?;
    if req.output == Output::Table {
        let rv = obj
            .pointer("/metadata/resourceVersion")
            .cloned()
            .unwrap_or(Value::Null);
        let table = table::table(
            &req.def,
            &[&obj],
            json!({"resourceVersion": rv}),
            req.param("includeObject"),
        );
        return Ok(respond(StatusCode::OK, Output::Json, &table));
    }
    Ok(respond_object(req, StatusCode::OK, &obj))
}

fn object_key(obj: &Value) -> (String, String) {
    let s = |p: &str| {
        obj.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    (s("/metadata/namespace"), s("/metadata/name"))
}

/// A `continue` token: the list's resourceVersion and the last key returned.
fn encode_continue(rv: u64, key: &(String, String)) -> String {
    hex::encode(json!({"rv": rv, "ns": key.0, "name": key.1}).to_string())
}

fn decode_continue(token: &str) -> Result<(u64, (String, String)), ApiError> {
    let bad = || {
        ApiError::bad_request(
            "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        )
    };
    let bytes = hex::decode(token).map_err(|_| bad())?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    let rv = value.get("rv").and_then(Value::as_u64).ok_or_else(bad)?;
    let s = |k: &str| value.get(k).and_then(Value::as_str).map(str::to_owned);
    Ok((rv, (s("ns").ok_or_else(bad)?, s("name").ok_or_else(bad)?)))
}

fn list(world: &World, req: &ResourceRequest) -> Result<Response, ApiError> {
    let (labels, fields) = selectors(req)?;
    parse_rv_param(req)?;
    let limit = match req.param("limit") {
        None | Some("") => 0,
        Some(l) => l
            .parse::<i64>()
            .map_err(|e| ApiError::bad_request(format!("limit: Invalid value: \"{l}\": {e}")))?,
    };
    let limit = usize::try_from(limit).unwrap_or(0);
    let start = match req.param("continue") {
        None | Some("") => None,
        Some(token) => Some(decode_continue(token)?),
    };
    let (items, current_rv) = world.store.list(&req.gr(), req.namespace.as_deref());
    let list_rv = match &start {
        Some((rv, _)) => {
            if *rv < world.store.compacted_rv() {
                return Err(ApiError {
                    code: 410,
                    reason: "Expired",
                    message: "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.".into(),
                    details: None,
                });
            }
            *rv
        }
        None => current_rv,
    };
    let mut selected: Vec<&Value> = items
        .iter()
        .map(|obj| obj.as_ref())
        .filter(|obj| {
            start
                .as_ref()
                .is_none_or(|(_, after)| object_key(obj) > *after)
        })
        .filter(|obj| fields.matches(obj) && labels.matches(obj))
        .collect();
    let mut metadata = json!({"resourceVersion": list_rv.to_string()});
    if limit > 0 && selected.len() > limit {
        let remaining = selected.len() - limit;
        selected.truncate(limit);
        if let Some(last) = selected.last() {
            metadata["continue"] = json!(encode_continue(list_rv, &object_key(last)));
            metadata["remainingItemCount"] = json!(remaining);
        }
    }
    if req.output == Output::Table {
        let table = table::table(&req.def, &selected, metadata, req.param("includeObject"));
        return Ok(respond(StatusCode::OK, Output::Json, &table));
    }
    Ok(respond(
        StatusCode::OK,
        req.output,
        &ListBody {
            list_kind: &req.def.list_kind,
            api_version: &req.api_version,
            kind: &req.def.kind,
            metadata,
            items: &selected,
        },
    ))
}

/// Decodes a create or replace body (JSON, or YAML with `application/yaml`).
fn decode_body(req: &ResourceRequest) -> Result<Value, ApiError> {
    let content_type = req.content_type();
    let media = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let value: Value = match media.as_str() {
        "" | "application/json" => serde_json::from_slice(&req.body).map_err(|e| {
            ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
        })?,
        "application/yaml" => serde_yaml::from_slice(&req.body).map_err(|e| {
            ApiError::bad_request(format!("couldn't get version/kind; yaml parse error: {e}"))
        })?,
        proto::MEDIA_TYPE => proto::decode(&req.body, &req.api_version, &req.def.kind)
            .map_err(|e| e.to_api_error(&req.def.kind, &req.body))?,
        _ => return Err(ApiError::unsupported_media_type(content_type)),
    };
    if !value.is_object() {
        return Err(ApiError::bad_request(format!(
            "couldn't get version/kind; json parse error: cannot unmarshal {} into Go value of type struct {{ APIVersion string \"json:\\\"apiVersion,omitempty\\\"\"; Kind string \"json:\\\"kind,omitempty\\\"\" }}",
            json_type(&value)
        )));
    }
    Ok(value)
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The body's `apiVersion` and `kind` must be those of the URL (missing ones are filled in).
/// kube-apiserver answers a mismatch with 400 for built-in kinds and, like any other invalid
/// field, with 422 for custom resources (`custom` holds the resource and the object's name).
fn check_type(
    obj: &mut Value,
    api_version: &str,
    kind: &str,
    custom: Option<&GroupResource>,
) -> Result<(), ApiError> {
    let mismatch = |field: &str, got: &str, want: &str, obj: &Value| match custom {
        Some(gr) => {
            let name = obj
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("");
            ApiError::invalid(
                gr,
                name,
                format!("{field}: Invalid value: {got:?}: must be {want}"),
            )
        }
        None if field == "kind" => ApiError::bad_request(format!(
            "the kind in the data ({got}) does not match the expected kind ({want}) for this resource"
        )),
        None => ApiError::bad_request(format!(
            "the API version in the data ({got}) does not match the expected API version ({want})"
        )),
    };
    if let Some(v) = obj.get("apiVersion").filter(|v| !v.is_null())
        && v.as_str() != Some(api_version)
    {
        return Err(mismatch(
            "apiVersion",
            v.as_str().unwrap_or(""),
            api_version,
            obj,
        ));
    }
    if let Some(k) = obj.get("kind").filter(|k| !k.is_null())
        && k.as_str() != Some(kind)
    {
        return Err(mismatch("kind", k.as_str().unwrap_or(""), kind, obj));
    }
    if let Some(map) = obj.as_object_mut() {
        map.insert("apiVersion".into(), json!(api_version));
        map.insert("kind".into(), json!(kind));
    }
    Ok(())
}

/// The body's namespace, when given, must be the URL's.
fn check_namespace(obj: &Value, namespace: &str) -> Result<(), ApiError> {
    match obj.pointer("/metadata/namespace").and_then(Value::as_str) {
        Some(ns) if !ns.is_empty() && ns != namespace => Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
        _ => Ok(()),
    }
}

fn is_crd(def: &ResourceDef) -> bool {
    def.group == "apiextensions.k8s.io" && def.plural == "customresourcedefinitions"
}

fn crd_invalid(def: &ResourceDef, obj: &Value, e: impl std::fmt::Display) -> ApiError {
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    ApiError::invalid(&def.group_resource(), name, e)
}

/// Creates an object as the API does: type and namespace checks, status reset for kinds with a
/// status subresource, defaulting, validation, CRD registration, and `managedFields` for
/// `writer` (an Update, or an Apply of `obj` itself; `None` records no owner). Used by POST, by
/// a server-side apply that creates, and by the manifests applied at start-up.
pub fn create_object(
    world: &World,
    def: &ResourceDef,
    version: &str,
    namespace: &str,
    mut obj: Value,
    dry_run: bool,
    writer: Option<&Writer>,
) -> Result<Value, ApiError> {
    // Ownership is the server's to record: what a client sends as managedFields is ignored.
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
    }
    let applied = writer
        .filter(|w| w.operation == Operation::Apply)
        .map(|_| obj.clone());
    let api_version = def.api_version(version);
    let custom = (!def.builtin).then(|| def.group_resource());
    check_type(&mut obj, &api_version, &def.kind, custom.as_ref())?;
    if def.namespaced {
        check_namespace(&obj, namespace)?;
        let namespaces = GroupResource::new("", "namespaces");
        if world.store.get(&namespaces, "", namespace).is_err() {
            return Err(ApiError::not_found(&namespaces, namespace));
        }
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("namespace".into(), json!(namespace));
        }
    }
    if def.status
        && let Some(map) = obj.as_object_mut()
    {
        map.remove("status");
    }
    admission::default_object(def, &mut obj);
    admission::validate(def, &obj, None)?;
    if is_crd(def) {
        let parsed = Registry::parse_crd(&obj).map_err(|e| crd_invalid(def, &obj, e))?;
        obj["status"] = crd_status(&obj, &parsed.kind);
    }
    if let Some(writer) = writer {
        let tracking = tracking_of(def, None);
        match &applied {
            Some(config) => {
                managed::apply(None, config, &mut obj, writer, tracking, &now_rfc3339())?;
            }
            None => managed::update(None, &mut obj, writer, tracking, &now_rfc3339()),
        }
    }
    admission::allocate(def, &mut obj, None);
    if dry_run {
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("creationTimestamp".into(), json!(now_rfc3339()));
            meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
            meta.entry("generation").or_insert(json!(1));
        }
        return Ok(obj);
    }
    let created = world.store.create(&def.group_resource(), namespace, obj)?;
    if is_crd(def)
        && let Err(e) = world.registry.register_crd(&created)
    {
        tracing::warn!(error = %e, "a validated CRD could not be registered");
    }
    Ok(created)
}

fn crd_status(crd: &Value, _kind: &str) -> Value {
    let now = now_rfc3339();
    let storage: Vec<Value> = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .map(|vs| {
            vs.iter()
                .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
                .filter_map(|v| v.get("name").cloned())
                .collect()
        })
        .unwrap_or_default();
    json!({
        "acceptedNames": crd.pointer("/spec/names").cloned().unwrap_or(json!({})),
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
             "message": "no conflicts found", "lastTransitionTime": now},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted", "lastTransitionTime": now},
        ],
        "storedVersions": storage,
    })
}

fn create(world: &World, req: &ResourceRequest) -> Result<Response, ApiError> {
    let obj = decode_body(req)?;
    let writer = req.writer(Operation::Update);
    let created = create_object(
        world,
        &req.def,
        &req.version,
        req.ns(),
        obj,
        req.dry_run(),
        Some(&writer),
    )?;
    Ok(respond_object(req, StatusCode::CREATED, &created))
}

/// What field ownership covers for a write through this subresource (or the main resource).
fn tracking_of(def: &ResourceDef, sub: Option<&str>) -> Tracking {
    let reach = match sub {
        Some("status") => Reach::Status,
        Some("scale") => Reach::Replicas,
        _ if def.status => Reach::AllButStatus,
        _ => Reach::All,
    };
    Tracking {
        reach,
        builtin: def.builtin,
    }
}

/// Which part of the object a write to this path may change.
fn scope_of(req: &ResourceRequest) -> UpdateScope {
    match req.sub.as_deref() {
        Some("status") => UpdateScope::Status,
        _ if req.def.status => UpdateScope::Spec,
        _ => UpdateScope::All,
    }
}

fn forced_conflict(world: &World, req: &ResourceRequest) -> Result<(), ApiError> {
    if world
        .faults
        .take_conflict(&req.def.plural, req.ns(), req.name())
    {
        return Err(ApiError::conflict(&req.gr(), req.name()));
    }
    Ok(())
}

/// Runs an update through the store, or (dry run) computes it without storing.
fn write<F>(
    world: &World,
    req: &ResourceRequest,
    scope: UpdateScope,
    f: F,
) -> Result<Value, ApiError>
where
    F: FnOnce(&Value) -> Result<Value, ApiError>,
{
    if req.dry_run() {
        let old = world.store.get(&req.gr(), req.ns(), req.name())?;
        let new = f(&old)?;
        if let Some(want) = new
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            && !want.is_empty()
            && want.parse::<u64>().ok() != Some(rv_of(&old))
        {
            return Err(ApiError::conflict(&req.gr(), req.name()));
        }
        return Ok(new);
    }
    let updated = world
        .store
        .update(&req.gr(), req.ns(), req.name(), scope, f)?;
    if is_crd(&req.def)
        && let Err(e) = world.registry.register_crd(&updated)
    {
        tracing::warn!(error = %e, "an updated CRD could not be registered");
    }
    Ok(updated)
}

/// Defaulting and validation of an object about to replace `old` (not for `/status`).
fn admit(req: &ResourceRequest, new: &mut Value, old: &Value) -> Result<(), ApiError> {
    if req.sub.is_some() {
        return Ok(());
    }
    admission::default_object(&req.def, new);
    admission::allocate(&req.def, new, Some(old));
    admission::validate(&req.def, new, Some(old))?;
    if is_crd(&req.def) {
        Registry::parse_crd(new).map_err(|e| crd_invalid(&req.def, new, e))?;
    }
    Ok(())
}

fn update(world: &World, req: &ResourceRequest) -> Result<Response, ApiError> {
    let mut obj = decode_body(req)?;
    let custom = (!req.def.builtin).then(|| req.def.group_resource());
    check_type(&mut obj, &req.api_version, &req.def.kind, custom.as_ref())?;
    if req.def.namespaced {
        check_namespace(&obj, req.ns())?;
    }
    let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) else {
        return Err(ApiError::invalid(
            &req.gr(),
            req.name(),
            "metadata: Required value",
        ));
    };
    match meta.get("name").and_then(Value::as_str) {
        Some(name) if name != req.name() => {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({name}) does not match the name on the URL ({})",
                req.name()
            )));
        }
        Some(_) => {}
        None => {
            meta.insert("name".into(), json!(req.name()));
        }
    }
    if req.def.namespaced {
        meta.insert("namespace".into(), json!(req.ns()));
    }
    forced_conflict(world, req)?;
    let writer = req.writer(Operation::Update);
    let tracking = tracking_of(&req.def, req.sub.as_deref());
    let updated = write(world, req, scope_of(req), |old| {
        admit(req, &mut obj, old)?;
        managed::update(Some(old), &mut obj, &writer, tracking, &now_rfc3339());
        Ok(obj)
    })?;
    Ok(respond_object(req, StatusCode::OK, &updated))
}

fn patch_error(e: PatchError) -> ApiError {
    match e {
        PatchError::Malformed(m) => ApiError::bad_request(m),
        PatchError::Failed(m) => ApiError::patch_failed(m),
    }
}

/// The parsed patch document (JSON patches are parsed when applied).
enum PatchBody {
    Doc(Value),
    JsonPatch,
}

fn parse_patch(req: &ResourceRequest) -> Result<(PatchType, PatchBody), ApiError> {
    let content_type = req.content_type();
    let ptype = PatchType::from_content_type(content_type)
        .ok_or_else(|| ApiError::unsupported_media_type(content_type))?;
    if ptype == PatchType::Strategic && !req.def.builtin {
        return Err(ApiError::unsupported_patch_type(content_type));
    }
    let body = match ptype {
        PatchType::Json => PatchBody::JsonPatch,
        PatchType::Merge | PatchType::Strategic => {
            let doc: Value = serde_json::from_slice(&req.body)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
            if !doc.is_object() {
                return Err(ApiError::bad_request(format!(
                    "error decoding patch: json: cannot unmarshal {} into Go value of type map[string]interface {{}}",
                    json_type(&doc)
                )));
            }
            PatchBody::Doc(doc)
        }
        PatchType::Apply => {
            if req.param("fieldManager").is_none_or(str::is_empty) {
                return Err(ApiError::invalid(
                    &GroupResource::new("meta.k8s.io", "patchoptions"),
                    "",
                    "fieldManager: Required value: is required for apply patch",
                ));
            }
            let doc: Value = serde_yaml::from_slice(&req.body)
                .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
            if !doc.is_object() {
                return Err(ApiError::bad_request(
                    "error decoding YAML: the applied configuration must be an object",
                ));
            }
            PatchBody::Doc(doc)
        }
    };
    Ok((ptype, body))
}

/// Applies a patch of `ptype` to `base`.
fn apply_patch(
    ptype: PatchType,
    builtin: bool,
    base: &Value,
    body: &PatchBody,
    raw: &[u8],
) -> Result<Value, ApiError> {
    match (ptype, body) {
        (PatchType::Json, _) => patch::json_patch_bytes(base, raw),
        (PatchType::Merge, PatchBody::Doc(doc)) => patch::merge_patch(base, doc),
        (PatchType::Strategic, PatchBody::Doc(doc)) => patch::strategic_merge_patch(base, doc),
        // Server-side apply: the applied configuration is merged into the object (keyed lists
        // by key for built-in kinds); field ownership is checked and recorded afterwards.
        (PatchType::Apply, PatchBody::Doc(doc)) if builtin => {
            patch::strategic_merge_patch(base, doc)
        }
        (PatchType::Apply, PatchBody::Doc(doc)) => patch::merge_patch(base, doc),
        (_, PatchBody::JsonPatch) => Err(PatchError::Malformed("missing patch body".into())),
    }
    .map_err(patch_error)
}

fn patch(world: &World, req: &ResourceRequest) -> Result<Response, ApiError> {
    let (ptype, body) = parse_patch(req)?;
    if req.sub.as_deref() == Some("scale") {
        return patch_scale(world, req, ptype, &body);
    }
    forced_conflict(world, req)?;
    let operation = match ptype {
        PatchType::Apply => Operation::Apply,
        _ => Operation::Update,
    };
    let writer = req.writer(operation);
    let tracking = tracking_of(&req.def, req.sub.as_deref());
    let apply = |old: &Value| -> Result<Value, ApiError> {
        let base = versioned_value(old, &req.api_version, &req.def.kind);
        let mut patched = apply_patch(ptype, req.def.builtin, &base, &body, &req.body)?;
        if patched.get("apiVersion").and_then(Value::as_str) != Some(req.api_version.as_str())
            || patched.get("kind").and_then(Value::as_str) != Some(req.def.kind.as_str())
        {
            return Err(ApiError::bad_request(
                "the patch must not change the object's apiVersion or kind",
            ));
        }
        if patched.pointer("/metadata/namespace") != old.pointer("/metadata/namespace") {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        match &body {
            PatchBody::Doc(config) if ptype == PatchType::Apply => {
                // Conflicts are decided on what was applied, before defaulting (as
                // kube-apiserver does); updates own what they changed, defaults included.
                managed::apply(
                    Some(old),
                    config,
                    &mut patched,
                    &writer,
                    tracking,
                    &now_rfc3339(),
                )?;
                admit(req, &mut patched, old)?;
            }
            _ => {
                admit(req, &mut patched, old)?;
                managed::update(Some(old), &mut patched, &writer, tracking, &now_rfc3339());
            }
        }
        Ok(patched)
    };
    match write(world, req, scope_of(req), apply) {
        Ok(updated) => Ok(respond_object(req, StatusCode::OK, &updated)),
        Err(e) if e.code == 404 && ptype == PatchType::Apply && req.sub.is_none() => {
            let PatchBody::Doc(mut doc) = body else {
                return Err(e);
            };
            let name = doc.pointer("/metadata/name").and_then(Value::as_str);
            if name.is_some_and(|n| n != req.name()) {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({}) does not match the name on the URL ({})",
                    name.unwrap_or(""),
                    req.name()
                )));
            }
            if let Some(meta) = doc
                .as_object_mut()
                .map(|m| m.entry("metadata").or_insert_with(|| json!({})))
                .and_then(Value::as_object_mut)
            {
                meta.insert("name".into(), json!(req.name()));
            }
            let created = create_object(
                world,
                &req.def,
                &req.version,
                req.ns(),
                doc,
                req.dry_run(),
                Some(&writer),
            )?;
            Ok(respond_object(req, StatusCode::CREATED, &created))
        }
        Err(e) => Err(e),
    }
}

/// The `autoscaling/v1` Scale of a Deployment.
pub(crate) fn scale_of(obj: &Value) -> Value {
    let meta = |f: &str| {
        obj.pointer(&format!("/metadata/{f}"))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let selector = obj
        .pointer("/spec/selector")
        .and_then(|s| LabelSelector::from_object(s).ok())
        .map(|s| s.to_query())
        .unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta("name"),
            "namespace": meta("namespace"),
            "uid": meta("uid"),
            "resourceVersion": meta("resourceVersion"),
            "creationTimestamp": meta("creationTimestamp"),
        },
        "spec": {"replicas": obj.pointer("/spec/replicas").cloned().unwrap_or(json!(1))},
        "status": {
            "replicas": obj.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": selector,
        },
    })
}

/// Applies a changed Scale to its Deployment: the Scale's resourceVersion is a precondition,
/// its `spec.replicas` the new replica count.
fn apply_scale(req: &ResourceRequest, old: &Value, scale: &Value) -> Result<Value, ApiError> {
    let scale_gr = GroupResource::new("autoscaling", "scale");
    if let Some(want) = scale
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        && !want.is_empty()
        && want.parse::<u64>().ok() != Some(rv_of(old))
    {
        return Err(ApiError::conflict(&req.gr(), req.name()));
    }
    if let Some(name) = scale.pointer("/metadata/name").and_then(Value::as_str)
        && name != req.name()
    {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({name}) does not match the name on the URL ({})",
            req.name()
        )));
    }
    let replicas = match scale.pointer("/spec/replicas") {
        None | Some(Value::Null) => 0,
        Some(v) => v.as_i64().ok_or_else(|| {
            ApiError::invalid(
                &scale_gr,
                req.name(),
                format!("spec.replicas: Invalid value: {v}: must be an integer"),
            )
        })?,
    };
    if replicas < 0 {
        return Err(ApiError::invalid(
            &scale_gr,
            req.name(),
            format!("spec.replicas: Invalid value: {replicas}: must be greater than or equal to 0"),
        ));
    }
    let mut new = old.clone();
    if let Some(meta) = new.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
    }
    new["spec"]["replicas"] = json!(replicas);
    Ok(new)
}

fn update_scale(world: &World, req: &ResourceRequest) -> Result<Response, ApiError> {
    let mut scale = decode_body(req)?;
    check_type(&mut scale, "autoscaling/v1", "Scale", None)?;
    forced_conflict(world, req)?;
    let writer = req.writer(Operation::Update);
    let tracking = tracking_of(&req.def, Some("scale"));
    let updated = write(world, req, UpdateScope::Spec, |old| {
        let mut new = apply_scale(req, old, &scale)?;
        managed::update(Some(old), &mut new, &writer, tracking, &now_rfc3339());
        Ok(new)
    })?;
    Ok(respond(
        StatusCode::OK,
        plain(req.output),
        &scale_of(&updated),
    ))
}

fn patch_scale(
    world: &World,
    req: &ResourceRequest,
    ptype: PatchType,
    body: &PatchBody,
) -> Result<Response, ApiError> {
    forced_conflict(world, req)?;
    let writer = req.writer(Operation::Update);
    let tracking = tracking_of(&req.def, Some("scale"));
    let updated = write(world, req, UpdateScope::Spec, |old| {
        let scale = apply_patch(ptype, true, &scale_of(old), body, &req.body)?;
        let mut new = apply_scale(req, old, &scale)?;
        managed::update(Some(old), &mut new, &writer, tracking, &now_rfc3339());
        Ok(new)
    })?;
    Ok(respond(
        StatusCode::OK,
        plain(req.output),
        &scale_of(&updated),
    ))
}

/// `DeleteOptions` from the body (when there is one) and the query.
struct DeleteOptions {
    rv: Option<String>,
    uid: Option<String>,
    dry_run: bool,
}

fn delete_options(req: &ResourceRequest) -> Result<DeleteOptions, ApiError> {
    let body: Value = if req.body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(&req.body)
            .map_err(|e| ApiError::bad_request(format!("error decoding DeleteOptions: {e}")))?
    };
    if !body.is_object() {
        return Err(ApiError::bad_request(
            "error decoding DeleteOptions: the body must be a JSON object",
        ));
    }
    let s = |p: &str| body.pointer(p).and_then(Value::as_str).map(str::to_owned);
    let dry_run = req.dry_run()
        || body
            .get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|v| v == "All"));
    Ok(DeleteOptions {
        rv: s("/preconditions/resourceVersion"),
        uid: s("/preconditions/uid"),
        dry_run,
    })
}

fn check_preconditions(
    req: &ResourceRequest,
    opts: &DeleteOptions,
    old: &Value,
) -> Result<(), ApiError> {
    let have = |f: &str| {
        old.pointer(&format!("/metadata/{f}"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    if let Some(uid) = &opts.uid
        && *uid != have("uid")
    {
        return Err(ApiError {
            code: 409,
            reason: "Conflict",
            message: format!(
                "Operation cannot be fulfilled on {} \"{}\": Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                req.gr(),
                req.name(),
                have("uid")
            ),
            details: None,
        });
    }
    if let Some(rv) = &opts.rv
        && *rv != have("resourceVersion")
    {
        return Err(ApiError::conflict(&req.gr(), req.name()));
    }
    Ok(())
}

/// Removes what an object's deletion takes with it: a Namespace's contents, a CRD's objects.
fn cascade(world: &World, def: &ResourceDef, gone: &Value) {
    let name = gone
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    if def.builtin && def.group.is_empty() && def.plural == "namespaces" && !name.is_empty() {
        world.store.delete_where(|_, ns| ns == name);
    } else if is_crd(def)
        && let Some(served) = world.registry.unregister_crd(name)
    {
        let gr = served.group_resource();
        world.store.delete_where(|g, _| *g == gr);
    }
}

fn delete(world: &World, req: &ResourceRequest) -> Result<Response, ApiError> {
    let opts = delete_options(req)?;
    if req.def.group.is_empty()
        && req.def.plural == "namespaces"
        && matches!(req.name(), "default" | "kube-system" | "kube-public")
    {
        return Err(ApiError {
            code: 403,
            reason: "Forbidden",
            message: format!(
                "namespaces \"{}\" is forbidden: this namespace may not be deleted",
                req.name()
            ),
            details: None,
        });
    }
    forced_conflict(world, req)?;
    if opts.dry_run {
        let old = world.store.get(&req.gr(), req.ns(), req.name())?;
        check_preconditions(req, &opts, &old)?;
        return Ok(respond_object(req, StatusCode::OK, &old));
    }
    let gone = world
        .store
        .delete_if(&req.gr(), req.ns(), req.name(), |old| {
            check_preconditions(req, &opts, old)
        })?;
    cascade(world, &req.def, &gone);
    Ok(respond_object(req, StatusCode::OK, &gone))
}

fn delete_collection(world: &World, req: &ResourceRequest) -> Result<Response, ApiError> {
    let opts = delete_options(req)?;
    let (labels, fields) = selectors(req)?;
    let (items, _) = world.store.list(&req.gr(), req.namespace.as_deref());
    let mut deleted: Vec<Arc<Value>> = Vec::new();
    for obj in items
        .iter()
        .filter(|obj| fields.matches(obj) && labels.matches(obj))
    {
        if opts.dry_run {
            deleted.push(Arc::clone(obj));
            continue;
        }
        let (ns, name) = object_key(obj);
        if let Ok(gone) = world.store.delete(&req.gr(), &ns, &name, None) {
            cascade(world, &req.def, &gone);
            deleted.push(Arc::new(gone));
        }
    }
    let refs: Vec<&Value> = deleted.iter().map(|o| o.as_ref()).collect();
    Ok(respond(
        StatusCode::OK,
        plain(req.output),
        &ListBody {
            list_kind: &req.def.list_kind,
            api_version: &req.api_version,
            kind: &req.def.kind,
            metadata: json!({"resourceVersion": world.store.current_rv().to_string()}),
            items: &refs,
        },
    ))
}
