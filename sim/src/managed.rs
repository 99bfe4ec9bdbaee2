//! Field ownership for server-side apply: `metadata.managedFields` kept as kube-apiserver keeps
//! it, the conflicts an Apply runs into, and the fields an Apply stops applying.
//!
//! Every write has a field manager and an operation. `Apply` (server-side apply) owns exactly
//! the fields of its configuration and fails with 409 Conflict, unless forced, when it changes
//! a field that another manager owns; applying the value a field already has shares it. An
//! `Update` (create, replace, merge / JSON / strategic patches) never conflicts: it takes the
//! fields it changes from every other manager. A removed field loses its owners, and an Apply
//! that leaves out a field its manager alone owned removes that field.
//!
//! Fields are tracked per leaf and per map key, in kube-apiserver's `FieldsV1` notation
//! (`{"f:spec": {"f:holderIdentity": {}}}`). Two simplifications: lists are owned as a whole
//! (kube-apiserver tracks the items of keyed lists such as `containers` one by one), and every
//! `selector` of a built-in kind is owned as a whole (most are atomic in Kubernetes too).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use crate::error::ApiError;

/// The manager kube-apiserver records for the fields of an object that had no managedFields
/// when it was first applied to.
const BEFORE_FIRST_APPLY: &str = "before-first-apply";

/// The manager of a write that names none and sends no User-Agent.
const UNKNOWN_MANAGER: &str = "unknown";

/// Longest field manager name, as kube-apiserver cuts a User-Agent.
const MAX_MANAGER_LEN: usize = 128;

/// Fields that are never owned: type, identity and server-set metadata.
const NEVER_OWNED: [&[&str]; 12] = [
    &["apiVersion"],
    &["kind"],
    &["metadata"],
    &["metadata", "name"],
    &["metadata", "namespace"],
    &["metadata", "creationTimestamp"],
    &["metadata", "selfLink"],
    &["metadata", "uid"],
    &["metadata", "clusterName"],
    &["metadata", "generation"],
    &["metadata", "managedFields"],
    &["metadata", "resourceVersion"],
];

/// How a write changes an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Server-side apply.
    Apply,
    /// Any other write.
    Update,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Apply => "Apply",
            Operation::Update => "Update",
        }
    }
}

/// Who writes, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Writer {
    /// The field manager.
    pub manager: String,
    /// Apply or Update.
    pub operation: Operation,
    /// The apiVersion of the request (`v1`, `coordination.k8s.io/v1`).
    pub api_version: String,
    /// The subresource written through (`status`, `scale`), if any.
    pub subresource: Option<String>,
    /// `force=true`: an Apply takes conflicting fields over instead of failing.
    pub force: bool,
}

/// The field manager of a request: its `fieldManager` parameter, else the User-Agent up to the
/// first `/` (`kubectl/v1.33.0 (linux/amd64)` is `kubectl`), else `unknown`, as kube-apiserver
/// derives it.
pub fn manager_name(field_manager: Option<&str>, user_agent: Option<&str>) -> String {
    if let Some(m) = field_manager.filter(|m| !m.is_empty()) {
        return m.to_owned();
    }
    let product = user_agent.unwrap_or("").split('/').next().unwrap_or("");
    let mut name = String::new();
    for c in product.chars().filter(|c| !c.is_control()) {
        if name.len() + c.len_utf8() > MAX_MANAGER_LEN {
            break;
        }
        name.push(c);
    }
    if name.is_empty() {
        UNKNOWN_MANAGER.to_owned()
    } else {
        name
    }
}

/// The part of an object a write can change through its endpoint; the rest is reset by the
/// server, so no manager gains or loses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// The whole object (kinds without a status subresource).
    All,
    /// All but `.status` (the main resource of a kind with a status subresource).
    AllButStatus,
    /// Only `.status` (the `/status` subresource).
    Status,
    /// Only `.spec.replicas` (the `/scale` subresource).
    Replicas,
}

/// What ownership is tracked on: the endpoint's reach, and whether the kind is built in (whose
/// `selector` fields are atomic).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tracking {
    /// What a write through the endpoint can change.
    pub reach: Reach,
    /// A built-in kind.
    pub builtin: bool,
}

/// A set of field paths, as kube-apiserver's `fieldpath.Set`: `members` are the paths that end
/// here, `children` the sets below a path element. Path elements are in `FieldsV1` notation
/// (`f:name`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet {
    members: BTreeSet<String>,
    children: BTreeMap<String, FieldSet>,
}

type Path = Vec<String>;

impl FieldSet {
    /// Whether the set holds no path.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.children.values().all(FieldSet::is_empty)
    }

    fn insert(&mut self, path: &[String]) {
        match path {
            [] => {}
            [last] => {
                self.members.insert(last.clone());
            }
            [first, rest @ ..] => self.children.entry(first.clone()).or_default().insert(rest),
        }
    }

    fn remove(&mut self, path: &[String]) {
        match path {
            [] => {}
            [last] => {
                self.members.remove(last);
            }
            [first, rest @ ..] => {
                if let Some(child) = self.children.get_mut(first) {
                    child.remove(rest);
                    if child.is_empty() {
                        self.children.remove(first);
                    }
                }
            }
        }
    }

    /// Whether `path` or a path below it is in the set.
    fn covers(&self, path: &[String]) -> bool {
        match path {
            [] => !self.is_empty(),
            [last] => {
                self.members.contains(last)
                    || self.children.get(last).is_some_and(|c| !c.is_empty())
            }
            [first, rest @ ..] => self.children.get(first).is_some_and(|c| c.covers(rest)),
        }
    }

    fn union(&self, other: &FieldSet) -> FieldSet {
        let mut out = self.clone();
        out.members.extend(other.members.iter().cloned());
        for (name, child) in &other.children {
            let merged = match out.children.get(name) {
                Some(mine) => mine.union(child),
                None => child.clone(),
            };
            out.children.insert(name.clone(), merged);
        }
        out
    }

    fn difference(&self, other: &FieldSet) -> FieldSet {
        let members = self.members.difference(&other.members).cloned().collect();
        let children = self
            .children
            .iter()
            .map(|(name, child)| match other.children.get(name) {
                Some(theirs) => (name.clone(), child.difference(theirs)),
                None => (name.clone(), child.clone()),
            })
            .filter(|(_, child)| !child.is_empty())
            .collect();
        FieldSet { members, children }
    }

    fn intersection(&self, other: &FieldSet) -> FieldSet {
        let members = self.members.intersection(&other.members).cloned().collect();
        let children = self
            .children
            .iter()
            .filter_map(|(name, child)| {
                let theirs = other.children.get(name)?;
                Some((name.clone(), child.intersection(theirs)))
            })
            .filter(|(_, child)| !child.is_empty())
            .collect();
        FieldSet { members, children }
    }

    /// Every path, in kube-apiserver's order: the members of a level first, then each child's
    /// paths.
    fn paths(&self) -> Vec<Path> {
        let mut out = Vec::new();
        self.collect_paths(&mut Vec::new(), &mut out);
        out
    }

    fn collect_paths(&self, prefix: &mut Path, out: &mut Vec<Path>) {
        for member in &self.members {
            let mut path = prefix.clone();
            path.push(member.clone());
            out.push(path);
        }
        for (name, child) in &self.children {
            prefix.push(name.clone());
            child.collect_paths(prefix, out);
            prefix.pop();
        }
    }

    /// The `fieldsV1` JSON of the set: a path that is a member and has paths below it gets a
    /// `"."` entry.
    pub fn to_fields_v1(&self) -> Value {
        let names: BTreeSet<&String> = self.members.iter().chain(self.children.keys()).collect();
        let mut map = Map::new();
        for name in names {
            let mut node = match self.children.get(name).map(FieldSet::to_fields_v1) {
                Some(Value::Object(node)) => node,
                _ => Map::new(),
            };
            if self.members.contains(name) && !node.is_empty() {
                node.insert(".".into(), json!({}));
            }
            map.insert(name.clone(), Value::Object(node));
        }
        Value::Object(map)
    }

    /// Reads a `fieldsV1` JSON value (anything else reads as the empty set).
    pub fn from_fields_v1(value: &Value) -> FieldSet {
        let mut set = FieldSet::default();
        let Some(map) = value.as_object() else {
            return set;
        };
        for (name, node) in map.iter().filter(|(name, _)| *name != ".") {
            let below = FieldSet::from_fields_v1(node);
            let is_member = node
                .as_object()
                .is_none_or(|n| n.is_empty() || n.contains_key("."));
            if is_member {
                set.members.insert(name.clone());
            }
            if !below.is_empty() {
                set.children.insert(name.clone(), below);
            }
        }
        set
    }
}

/// A path as kube-apiserver prints it: `.spec.holderIdentity`.
fn display(path: &[String]) -> String {
    path.iter()
        .map(|element| match element.strip_prefix("f:") {
            Some(name) => format!(".{name}"),
            None => format!("[{element}]"),
        })
        .collect()
}

fn element(name: &str) -> String {
    format!("f:{name}")
}

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    manager: String,
    operation: Operation,
    api_version: String,
    time: Option<String>,
    subresource: Option<String>,
    fields: FieldSet,
}

impl Entry {
    fn new(writer: &Writer, fields: FieldSet) -> Self {
        Self {
            manager: writer.manager.clone(),
            operation: writer.operation,
            api_version: writer.api_version.clone(),
            time: None,
            subresource: writer.subresource.clone(),
            fields,
        }
    }

    /// Whether this is the writer's own entry: same manager, operation and subresource, and
    /// (for updates) apiVersion.
    fn belongs_to(&self, writer: &Writer) -> bool {
        self.manager == writer.manager
            && self.operation == writer.operation
            && self.subresource == writer.subresource
            && (self.operation == Operation::Apply || self.api_version == writer.api_version)
    }

    /// kube-apiserver's manager identifier (what conflicts are grouped and sorted by).
    fn identifier(&self) -> String {
        // Field order of Go's ManagedFieldsEntry: manager, operation, apiVersion, subresource.
        let quoted = |s: &str| Value::String(s.to_owned()).to_string();
        let mut id = format!(
            "{{\"manager\":{},\"operation\":\"{}\"",
            quoted(&self.manager),
            self.operation.as_str()
        );
        if self.operation == Operation::Update {
            id.push_str(&format!(",\"apiVersion\":{}", quoted(&self.api_version)));
        }
        if let Some(sub) = &self.subresource {
            id.push_str(&format!(",\"subresource\":{}", quoted(sub)));
        }
        id.push('}');
        id
    }

    /// The manager as a conflict message names it: `"name"`, with the subresource, and for
    /// updates the apiVersion.
    fn describe(&self) -> String {
        let mut out = Value::String(self.manager.clone()).to_string();
        if let Some(sub) = &self.subresource {
            out.push_str(&format!(" with subresource {}", Value::String(sub.clone())));
        }
        if self.operation == Operation::Update {
            out.push_str(&format!(" using {}", self.api_version));
        }
        out
    }

    fn to_json(&self) -> Value {
        let mut entry = Map::new();
        entry.insert("manager".into(), json!(self.manager));
        entry.insert("operation".into(), json!(self.operation.as_str()));
        entry.insert("apiVersion".into(), json!(self.api_version));
        if let Some(time) = &self.time {
            entry.insert("time".into(), json!(time));
        }
        entry.insert("fieldsType".into(), json!("FieldsV1"));
        entry.insert("fieldsV1".into(), self.fields.to_fields_v1());
        if let Some(sub) = &self.subresource {
            entry.insert("subresource".into(), json!(sub));
        }
        Value::Object(entry)
    }

    fn from_json(value: &Value) -> Option<Self> {
        let s = |key: &str| value.get(key).and_then(Value::as_str).map(str::to_owned);
        let operation = match value.get("operation").and_then(Value::as_str)? {
            "Apply" => Operation::Apply,
            "Update" => Operation::Update,
            _ => return None,
        };
        Some(Self {
            manager: s("manager")?,
            operation,
            api_version: s("apiVersion").unwrap_or_default(),
            time: s("time"),
            subresource: s("subresource").filter(|s| !s.is_empty()),
            fields: FieldSet::from_fields_v1(value.get("fieldsV1").unwrap_or(&Value::Null)),
        })
    }
}

/// The entries of an object's `metadata.managedFields`.
fn entries_of(obj: &Value) -> Vec<Entry> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .map(|entries| entries.iter().filter_map(Entry::from_json).collect())
        .unwrap_or_default()
}

/// Writes the entries that own something into `metadata.managedFields`, in kube-apiserver's
/// order: Apply before Update, then by time, manager, apiVersion and subresource.
fn set_entries(obj: &mut Value, mut entries: Vec<Entry>) {
    entries.retain(|e| !e.fields.is_empty());
    entries.sort_by(|a, b| {
        (
            a.operation.as_str(),
            a.time.as_deref().unwrap_or(""),
            &a.manager,
            &a.api_version,
            &a.subresource,
        )
            .cmp(&(
                b.operation.as_str(),
                b.time.as_deref().unwrap_or(""),
                &b.manager,
                &b.api_version,
                &b.subresource,
            ))
    });
    let Some(meta) = obj
        .as_object_mut()
        .map(|o| o.entry("metadata").or_insert_with(|| json!({})))
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    if entries.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert(
            "managedFields".into(),
            Value::Array(entries.iter().map(Entry::to_json).collect()),
        );
    }
}

/// The fields of `obj` a write through an endpoint of this reach can change.
fn project(obj: Option<&Value>, reach: Reach) -> Option<Value> {
    let obj = obj.filter(|o| o.is_object())?;
    let pick = |path: &[&str]| -> Value {
        let mut out = json!({});
        if let Some(v) = path.iter().try_fold(obj, |v, key| v.get(key)) {
            let mut slot = &mut out;
            for key in path {
                slot = &mut slot[*key];
            }
            *slot = v.clone();
        }
        out
    };
    let mut projected = match reach {
        Reach::All | Reach::AllButStatus => obj.clone(),
        Reach::Status => pick(&["status"]),
        Reach::Replicas => pick(&["spec", "replicas"]),
    };
    if let Some(map) = projected.as_object_mut() {
        if reach == Reach::AllButStatus {
            map.remove("status");
        }
        if let Some(meta) = map.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("managedFields");
        }
    }
    Some(projected)
}

/// Removes the fields nobody owns.
fn strip(mut set: FieldSet) -> FieldSet {
    for path in NEVER_OWNED {
        let path: Path = path.iter().map(|p| element(p)).collect();
        set.remove(&path);
    }
    set
}

fn is_atomic(path: &[String], tracking: Tracking) -> bool {
    tracking.builtin && path.last().is_some_and(|p| p == "f:selector")
}

/// Whether the field is a struct that a built-in kind always has (`spec`, a pod template and
/// its `metadata`, a Deployment's `strategy`): kube-apiserver sees it as `{}` when it is
/// missing, so it is never added or removed as a whole, unlike maps and optional structs.
fn is_struct(path: &[String], tracking: Tracking) -> bool {
    tracking.builtin
        && path.last().is_some_and(|p| {
            matches!(
                p.as_str(),
                "f:spec" | "f:status" | "f:template" | "f:metadata" | "f:strategy"
            )
        })
}

/// What a write changed, as kube-apiserver's `Compare`: leaves added, modified and removed,
/// and maps added or removed as a whole (those become `"."` entries).
#[derive(Debug, Default)]
struct Comparison {
    added: FieldSet,
    modified: FieldSet,
    removed: FieldSet,
}

impl Comparison {
    fn of(old: Option<&Value>, new: Option<&Value>, tracking: Tracking) -> Self {
        let mut out = Comparison::default();
        if old.is_some() || new.is_some() {
            compare(&mut Vec::new(), old, new, tracking, &mut out);
        }
        Comparison {
            added: strip(out.added),
            modified: strip(out.modified),
            removed: strip(out.removed),
        }
    }

    fn changed(&self) -> FieldSet {
        self.added.union(&self.modified)
    }

    fn is_same(&self) -> bool {
        self.added.is_empty() && self.modified.is_empty() && self.removed.is_empty()
    }
}

fn compare(
    path: &mut Path,
    old: Option<&Value>,
    new: Option<&Value>,
    tracking: Tracking,
    out: &mut Comparison,
) {
    let always = Value::Object(Map::new());
    let (old, new) = if is_struct(path, tracking) {
        (old.or(Some(&always)), new.or(Some(&always)))
    } else {
        (old, new)
    };
    let old_map = old.and_then(Value::as_object);
    let new_map = new.and_then(Value::as_object);
    let both_maps = old.is_none_or(Value::is_object) && new.is_none_or(Value::is_object);
    // Empty or missing on both sides is a leaf, which keeps `{}` apart from no field at all.
    let empty = old_map.is_none_or(Map::is_empty) && new_map.is_none_or(Map::is_empty);
    if both_maps && !empty && !is_atomic(path, tracking) {
        let keys: BTreeSet<&String> = old_map
            .into_iter()
            .flat_map(Map::keys)
            .chain(new_map.into_iter().flat_map(Map::keys))
            .collect();
        for key in keys {
            path.push(element(key));
            compare(
                path,
                old_map.and_then(|m| m.get(key)),
                new_map.and_then(|m| m.get(key)),
                tracking,
                out,
            );
            path.pop();
        }
        if old.is_none() {
            out.added.insert(path);
        } else if new.is_none() {
            out.removed.insert(path);
        }
        return;
    }
    match (old, new) {
        (None, Some(_)) => out.added.insert(path),
        (Some(_), None) => out.removed.insert(path),
        (Some(a), Some(b)) if a != b => out.modified.insert(path),
        _ => {}
    }
}

/// The fields an applied configuration sets: its leaves (lists and atomic maps whole).
fn applied_fields(config: &Value, tracking: Tracking) -> FieldSet {
    fn walk(path: &mut Path, value: &Value, tracking: Tracking, set: &mut FieldSet) {
        match value.as_object() {
            Some(map) if !is_atomic(path, tracking) => {
                for (key, child) in map {
                    path.push(element(key));
                    walk(path, child, tracking, set);
                    path.pop();
                }
            }
            _ => set.insert(path),
        }
    }
    let mut set = FieldSet::default();
    if let Some(config) = project(Some(config), tracking.reach) {
        walk(&mut Vec::new(), &config, tracking, &mut set);
    }
    strip(set)
}

/// Removes the field at `path` from `obj`.
fn remove_field(obj: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut node = obj;
    for element in parents {
        let Some(next) = element
            .strip_prefix("f:")
            .and_then(|name| node.get_mut(name))
        else {
            return;
        };
        node = next;
    }
    if let (Some(name), Some(map)) = (last.strip_prefix("f:"), node.as_object_mut()) {
        map.remove(name);
    }
}

/// Records an Update of `old` (`None` for a create) into `new`: the fields it changed move to
/// the writer's entry, removed fields lose their owners. Whatever `new` carried in
/// `metadata.managedFields` is replaced.
pub fn update(
    old: Option<&Value>,
    new: &mut Value,
    writer: &Writer,
    tracking: Tracking,
    now: &str,
) {
    let mut entries = old.map(entries_of).unwrap_or_default();
    let comparison = Comparison::of(
        project(old, tracking.reach).as_ref(),
        project(Some(new), tracking.reach).as_ref(),
        tracking,
    );
    let changed = comparison.changed();
    for entry in &mut entries {
        entry.fields = entry
            .fields
            .difference(&changed)
            .difference(&comparison.removed);
    }
    if !changed.is_empty() {
        match entries.iter_mut().find(|e| e.belongs_to(writer)) {
            Some(entry) => {
                entry.fields = entry.fields.union(&changed);
                entry.time = Some(now.to_owned());
            }
            None => {
                let mut entry = Entry::new(writer, changed);
                entry.time = Some(now.to_owned());
                entries.push(entry);
            }
        }
    }
    set_entries(new, entries);
}

/// Records a server-side apply of `config` into `merged` (`old` with `config` merged in; `old`
/// is `None` when the apply creates the object). The writer's Apply entry becomes the
/// configuration's fields; fields the writer applied last time, left out now and owned by no
/// one else are removed from `merged`. Changing a field another entry owns is a 409 Conflict
/// naming every such field, unless the writer forces, which takes them over.
pub fn apply(
    old: Option<&Value>,
    config: &Value,
    merged: &mut Value,
    writer: &Writer,
    tracking: Tracking,
    now: &str,
) -> Result<(), ApiError> {
    let before = project(old, tracking.reach);
    let mut entries = old.map(entries_of).unwrap_or_default();
    if old.is_some() && entries.is_empty() {
        // As kube-apiserver: the fields of an object nobody owns yet belong to a placeholder
        // manager, so a first Apply cannot silently change them.
        let existing = Comparison::of(None, before.as_ref(), tracking).changed();
        if !existing.is_empty() {
            let placeholder = Writer {
                manager: BEFORE_FIRST_APPLY.into(),
                operation: Operation::Update,
                ..writer.clone()
            };
            let mut entry = Entry::new(&placeholder, existing);
            entry.time = Some(now.to_owned());
            entries.push(entry);
        }
    }
    let applied = applied_fields(config, tracking);
    let mine = match entries.iter().position(|e| e.belongs_to(writer)) {
        Some(i) => i,
        None => {
            entries.push(Entry::new(writer, FieldSet::default()));
            entries.len() - 1
        }
    };
    let last = std::mem::replace(&mut entries[mine].fields, applied.clone());
    entries[mine].api_version = writer.api_version.clone();
    for path in last.difference(&applied).paths() {
        if !entries.iter().any(|e| e.fields.covers(&path)) {
            remove_field(merged, &path);
        }
    }
    let comparison = Comparison::of(
        before.as_ref(),
        project(Some(merged), tracking.reach).as_ref(),
        tracking,
    );
    let changed = comparison.changed();
    let conflicts: Vec<(usize, FieldSet)> = entries
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != mine)
        .map(|(i, e)| (i, e.fields.intersection(&changed)))
        .filter(|(_, c)| !c.is_empty())
        .collect();
    if !conflicts.is_empty() && !writer.force {
        return Err(conflict_error(&entries, &conflicts));
    }
    for (i, entry) in entries.iter_mut().enumerate() {
        if i != mine {
            entry.fields = entry
                .fields
                .difference(&changed)
                .difference(&comparison.removed);
        }
    }
    if !comparison.is_same() {
        entries[mine].time = Some(now.to_owned());
    }
    set_entries(merged, entries);
    Ok(())
}

/// The 409 kube-apiserver answers an Apply with: every conflicting field in `details.causes`,
/// grouped by manager in the message.
fn conflict_error(entries: &[Entry], conflicts: &[(usize, FieldSet)]) -> ApiError {
    let mut by_manager: Vec<(String, String, Vec<String>)> = conflicts
        .iter()
        .map(|(i, set)| {
            let entry = &entries[*i];
            let paths = set.paths().iter().map(|p| display(p)).collect();
            (entry.identifier(), entry.describe(), paths)
        })
        .collect();
    by_manager.sort();
    let total: usize = by_manager.iter().map(|(_, _, paths)| paths.len()).sum();
    let causes: Vec<Value> = by_manager
        .iter()
        .flat_map(|(_, who, paths)| {
            paths.iter().map(move |path| {
                json!({"reason": "FieldManagerConflict", "message": format!("conflict with {who}"),
                       "field": path})
            })
        })
        .collect();
    let message = match by_manager.as_slice() {
        [(_, who, paths)] if paths.len() == 1 => {
            format!(
                "Apply failed with 1 conflict: conflict with {who}: {}",
                paths[0]
            )
        }
        _ => {
            let lines: Vec<String> = by_manager
                .iter()
                .flat_map(|(_, who, paths)| {
                    std::iter::once(format!("conflicts with {who}:"))
                        .chain(paths.iter().map(|p| format!("- {p}")))
                })
                .collect();
            format!("Apply failed with {total} conflicts: {}", lines.join("\n"))
        }
    };
    ApiError::apply_conflict(message, causes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: &str = "2025-01-01T00:00:00Z";
    const LATER: &str = "2025-01-01T00:00:05Z";

    fn cm() -> Tracking {
        Tracking {
            reach: Reach::All,
            builtin: true,
        }
    }

    fn writer(manager: &str, operation: Operation) -> Writer {
        Writer {
            manager: manager.into(),
            operation,
            api_version: "v1".into(),
            subresource: None,
            force: false,
        }
    }

    fn applier(manager: &str) -> Writer {
        writer(manager, Operation::Apply)
    }

    fn managers(obj: &Value) -> Vec<(String, String, Value)> {
        obj["metadata"]["managedFields"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|e| {
                (
                    e["manager"].as_str().unwrap().to_owned(),
                    e["operation"].as_str().unwrap().to_owned(),
                    e["fieldsV1"].clone(),
                )
            })
            .collect()
    }

    /// Applies `config` to `old` the way the API does: merge, then ownership.
    fn run_apply(old: Option<&Value>, config: Value, w: &Writer) -> Result<Value, ApiError> {
        let mut merged = old.cloned().unwrap_or(json!({}));
        json_patch::merge(&mut merged, &config);
        apply(old, &config, &mut merged, w, cm(), LATER)?;
        Ok(merged)
    }

    #[test]
    fn fields_v1_round_trips_with_dot_for_owned_maps() {
        let v = json!({"f:data": {".": {}, "f:k": {}}, "f:metadata": {"f:labels": {"f:a": {}}}});
        let set = FieldSet::from_fields_v1(&v);
        assert_eq!(set.to_fields_v1(), v);
        assert_eq!(
            set.paths().iter().map(|p| display(p)).collect::<Vec<_>>(),
            vec![".data", ".data.k", ".metadata.labels.a"]
        );
    }

    #[test]
    fn create_owns_every_field_and_new_maps() {
        let mut obj = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "a", "labels": {"l": "1"}}, "data": {"k": "v"}});
        update(
            None,
            &mut obj,
            &writer("unknown", Operation::Update),
            cm(),
            NOW,
        );
        assert_eq!(
            managers(&obj),
            vec![(
                "unknown".into(),
                "Update".into(),
                json!({"f:data": {".": {}, "f:k": {}},
                       "f:metadata": {"f:labels": {".": {}, "f:l": {}}}})
            )]
        );
        assert_eq!(obj["metadata"]["managedFields"][0]["time"], NOW);
    }

    #[test]
    fn second_manager_changing_an_applied_field_conflicts_unless_forced() {
        let lease = json!({"metadata": {"name": "l"}, "spec": {}});
        let a = run_apply(
            Some(&lease),
            json!({"spec": {"holderIdentity": "a", "leaseDurationSeconds": 2}}),
            &applier("a"),
        )
        .unwrap();
        let err = run_apply(
            Some(&a),
            json!({"spec": {"holderIdentity": "b", "leaseDurationSeconds": 2}}),
            &applier("b"),
        )
        .unwrap_err();
        assert_eq!((err.code, err.reason), (409, "Conflict"));
        assert_eq!(
            err.message,
            "Apply failed with 1 conflict: conflict with \"a\": .spec.holderIdentity"
        );
        assert_eq!(
            err.details.unwrap()["causes"],
            json!([{"reason": "FieldManagerConflict", "message": "conflict with \"a\"",
                    "field": ".spec.holderIdentity"}])
        );

        let mut force = applier("b");
        force.force = true;
        let b = run_apply(
            Some(&a),
            json!({"spec": {"holderIdentity": "b", "leaseDurationSeconds": 2}}),
            &force,
        )
        .unwrap();
        assert_eq!(b["spec"]["holderIdentity"], "b");
        // The same value is shared: both keep leaseDurationSeconds.
        let owners = managers(&b);
        assert_eq!(
            owners,
            vec![
                (
                    "a".into(),
                    "Apply".into(),
                    json!({"f:spec": {"f:leaseDurationSeconds": {}}})
                ),
                (
                    "b".into(),
                    "Apply".into(),
                    json!({"f:spec": {"f:holderIdentity": {}, "f:leaseDurationSeconds": {}}})
                ),
            ]
        );
    }

    #[test]
    fn conflicts_with_several_managers_are_grouped_in_the_message() {
        let mut obj = json!({"spec": {}});
        obj = run_apply(
            Some(&obj),
            json!({"spec": {"holderIdentity": "a", "acquireTime": "t0", "renewTime": "t0"}}),
            &applier("a"),
        )
        .unwrap();
        let before = obj.clone();
        let mut renewed = obj.clone();
        renewed["spec"]["renewTime"] = json!("t1");
        update(
            Some(&before),
            &mut renewed,
            &writer("a", Operation::Update),
            cm(),
            NOW,
        );
        let err = run_apply(
            Some(&renewed),
            json!({"spec": {"holderIdentity": "b", "acquireTime": "t2", "renewTime": "t2"}}),
            &applier("b"),
        )
        .unwrap_err();
        assert_eq!(
            err.message,
            "Apply failed with 3 conflicts: conflicts with \"a\":\n- .spec.acquireTime\n- \
             .spec.holderIdentity\nconflicts with \"a\" using v1:\n- .spec.renewTime"
        );
        let causes = err.details.unwrap()["causes"].clone();
        assert_eq!(causes[2]["message"], "conflict with \"a\" using v1");
    }

    #[test]
    fn nulling_fields_frees_them_for_another_applier() {
        let lease = json!({"spec": {}});
        let a = run_apply(
            Some(&lease),
            json!({"spec": {"holderIdentity": "a"}}),
            &applier("a"),
        )
        .unwrap();
        let mut released = a.clone();
        released["spec"] = json!({});
        update(
            Some(&a),
            &mut released,
            &writer("b", Operation::Update),
            cm(),
            NOW,
        );
        assert!(released["metadata"].get("managedFields").is_none());
        let b = run_apply(
            Some(&released),
            json!({"spec": {"holderIdentity": "b"}}),
            &applier("b"),
        )
        .unwrap();
        assert_eq!(managers(&b)[0].0, "b");
    }

    #[test]
    fn same_value_apply_shares_ownership_without_a_time() {
        let lease = json!({"spec": {}});
        let a = run_apply(
            Some(&lease),
            json!({"spec": {"holderIdentity": "a"}}),
            &applier("a"),
        )
        .unwrap();
        let c = run_apply(
            Some(&a),
            json!({"spec": {"holderIdentity": "a"}}),
            &applier("c"),
        )
        .unwrap();
        let entries = c["metadata"]["managedFields"].as_array().unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0]["manager"], "c");
        assert!(entries[0].get("time").is_none());
    }

    #[test]
    fn apply_leaving_out_a_field_removes_it_unless_someone_else_owns_it() {
        let obj = json!({"spec": {}});
        let b = run_apply(
            Some(&obj),
            json!({"spec": {"a": 1, "b": 2, "c": 3}}),
            &applier("b"),
        )
        .unwrap();
        let c = run_apply(Some(&b), json!({"spec": {"b": 2}}), &applier("c")).unwrap();
        let b2 = run_apply(Some(&c), json!({"spec": {"a": 1}}), &applier("b")).unwrap();
        assert_eq!(b2["spec"], json!({"a": 1, "b": 2}));
    }

    #[test]
    fn first_apply_to_an_unowned_object_meets_before_first_apply() {
        let obj = json!({"metadata": {"name": "a"}, "data": {"k": "v"}});
        let err = run_apply(Some(&obj), json!({"data": {"k": "v2"}}), &applier("ap")).unwrap_err();
        assert_eq!(
            err.message,
            "Apply failed with 1 conflict: conflict with \"before-first-apply\" using v1: .data.k"
        );
    }

    #[test]
    fn updates_never_conflict_and_take_changed_fields() {
        let obj = json!({"spec": {}});
        let a = run_apply(Some(&obj), json!({"spec": {"x": 1, "y": 1}}), &applier("a")).unwrap();
        let mut new = a.clone();
        new["spec"]["x"] = json!(2);
        update(
            Some(&a),
            &mut new,
            &writer("u", Operation::Update),
            cm(),
            NOW,
        );
        assert_eq!(
            managers(&new),
            vec![
                ("a".into(), "Apply".into(), json!({"f:spec": {"f:y": {}}})),
                ("u".into(), "Update".into(), json!({"f:spec": {"f:x": {}}})),
            ]
        );
    }

    #[test]
    fn status_is_not_owned_through_the_main_resource() {
        let mut obj = json!({"spec": {"replicas": 1}, "status": {"replicas": 5}});
        let tracking = Tracking {
            reach: Reach::AllButStatus,
            builtin: true,
        };
        update(
            None,
            &mut obj,
            &writer("w", Operation::Update),
            tracking,
            NOW,
        );
        assert_eq!(managers(&obj)[0].2, json!({"f:spec": {"f:replicas": {}}}));
    }

    #[test]
    fn selectors_of_built_in_kinds_are_owned_whole() {
        let mut obj = json!({"spec": {"selector": {"matchLabels": {"app": "d"}}}});
        update(None, &mut obj, &writer("w", Operation::Update), cm(), NOW);
        assert_eq!(managers(&obj)[0].2, json!({"f:spec": {"f:selector": {}}}));
    }

    #[test]
    fn manager_comes_from_the_parameter_else_the_user_agent() {
        assert_eq!(manager_name(Some("m"), Some("x/1")), "m");
        assert_eq!(
            manager_name(None, Some("kubectl/v1.33 (linux/amd64)")),
            "kubectl"
        );
        assert_eq!(manager_name(Some(""), None), "unknown");
    }
}
