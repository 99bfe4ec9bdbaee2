//! The served resources: the built-in kinds and those added by CustomResourceDefinitions, with
//! everything discovery, routing and table printing need to know about each.

use std::cmp::Ordering;
use std::fmt;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use serde_json::{Value, json};

/// A resource by API group and plural name (`apps`/`deployments`, ``/`services`). Objects of a
/// resource are shared by all its served versions, as in etcd.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupResource {
    /// API group; empty for the core group.
    pub group: String,
    /// Plural resource name.
    pub resource: String,
}

impl GroupResource {
    /// A group and resource pair.
    pub fn new(group: impl Into<String>, resource: impl Into<String>) -> Self {
        Self {
            group: group.into(),
            resource: resource.into(),
        }
    }
}

impl fmt::Display for GroupResource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.group.is_empty() {
            write!(f, "{}", self.resource)
        } else {
            write!(f, "{}.{}", self.resource, self.group)
        }
    }
}

/// The verbs every resource in the simulator serves.
pub const VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

const RBAC: &str = "rbac.authorization.k8s.io";
const AUTHENTICATION: &str = "authentication.k8s.io";
const AUTHORIZATION: &str = "authorization.k8s.io";

/// A column of `kubectl get` output (a CRD's `additionalPrinterColumns`).
#[derive(Debug, Clone, PartialEq)]
pub struct PrinterColumn {
    /// Column header.
    pub name: String,
    /// OpenAPI type (`string`, `integer`, `date`, ...).
    pub type_: String,
    /// Simple JSONPath (`.spec.hosts`) of the value.
    pub json_path: String,
    /// 0 for the default view, higher for `-o wide`.
    pub priority: i64,
}

/// One served resource and all its versions.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceDef {
    /// API group; empty for the core group.
    pub group: String,
    /// Served versions, most preferred first.
    pub versions: Vec<String>,
    /// Plural name, as in URLs.
    pub plural: String,
    /// Singular name.
    pub singular: String,
    /// Kind of one object.
    pub kind: String,
    /// Kind of a list.
    pub list_kind: String,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    /// Short names (`deploy`, `vs`).
    pub short_names: Vec<String>,
    /// Categories (`all`).
    pub categories: Vec<String>,
    /// Whether `/status` is a subresource (the main resource then ignores status changes).
    pub status: bool,
    /// Whether `/scale` is served (Deployments).
    pub scale: bool,
    /// Whether the kind is compiled in (strategic merge patch is only for these).
    pub builtin: bool,
    /// Extra columns for table output (CRDs).
    pub columns: Vec<PrinterColumn>,
    /// The CRD that defined this resource (`virtualservices.networking.istio.io`).
    pub crd: Option<String>,
    /// A review (TokenReview, SubjectAccessReview, ...): only `create`, answered and never
    /// stored.
    pub review: bool,
    /// Whether `/token` (the TokenRequest API) is a subresource (ServiceAccounts).
    pub token: bool,
}

impl ResourceDef {
    fn builtin(group: &str, version: &str, plural: &str, kind: &str, namespaced: bool) -> Self {
        Self {
            group: group.into(),
            versions: vec![version.into()],
            plural: plural.into(),
            singular: kind.to_lowercase(),
            kind: kind.into(),
            list_kind: format!("{kind}List"),
            namespaced,
            short_names: Vec::new(),
            categories: Vec::new(),
            status: false,
            scale: false,
            builtin: true,
            columns: Vec::new(),
            crd: None,
            review: false,
            token: false,
        }
    }

    fn create_only(mut self) -> Self {
        self.review = true;
        self
    }

    fn with_token(mut self) -> Self {
        self.token = true;
        self
    }

    /// The verbs the resource serves.
    pub fn verbs(&self) -> &'static [&'static str] {
        if self.review { &["create"] } else { &VERBS }
    }

    fn short(mut self, names: &[&str]) -> Self {
        self.short_names = names.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    fn in_all(mut self) -> Self {
        self.categories = vec!["all".into()];
        self
    }

    fn with_status(mut self) -> Self {
        self.status = true;
        self
    }

    fn with_scale(mut self) -> Self {
        self.scale = true;
        self
    }

    /// The storage key of this resource's objects.
    pub fn group_resource(&self) -> GroupResource {
        GroupResource::new(&self.group, &self.plural)
    }

    /// `group/version`, or just `version` for the core group.
    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_owned()
        } else {
            format!("{}/{version}", self.group)
        }
    }

    /// Whether `version` is served.
    pub fn serves(&self, version: &str) -> bool {
        self.versions.iter().any(|v| v == version)
    }

    /// The APIResource entries of `/apis/GROUP/VERSION` for this resource and its
    /// subresources.
    pub fn api_resources(&self) -> Vec<Value> {
        let mut main = json!({
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": self.verbs(),
        });
        if !self.short_names.is_empty() {
            main["shortNames"] = json!(self.short_names);
        }
        if !self.categories.is_empty() {
            main["categories"] = json!(self.categories);
        }
        let mut out = vec![main];
        if self.status {
            out.push(json!({
                "name": format!("{}/status", self.plural),
                "singularName": "",
                "namespaced": self.namespaced,
                "kind": self.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
        if self.token {
            out.push(json!({
                "name": format!("{}/token", self.plural),
                "singularName": "",
                "namespaced": self.namespaced,
                "group": AUTHENTICATION,
                "version": "v1",
                "kind": "TokenRequest",
                "verbs": ["create"],
            }));
        }
        if self.scale {
            out.push(json!({
                "name": format!("{}/scale", self.plural),
                "singularName": "",
                "namespaced": self.namespaced,
                "group": "autoscaling",
                "version": "v1",
                "kind": "Scale",
                "verbs": ["get", "patch", "update"],
            }));
        }
        out
    }

    /// The entry of aggregated discovery (`apidiscovery.k8s.io/v2`) for this resource in
    /// `version`.
    pub fn aggregated_resource(&self, version: &str) -> Value {
        let mut subresources = Vec::new();
        if self.status {
            subresources.push(json!({
                "subresource": "status",
                "responseKind": {"group": self.group, "version": version, "kind": self.kind},
                "verbs": ["get", "patch", "update"],
            }));
        }
        if self.token {
            subresources.push(json!({
                "subresource": "token",
                "responseKind": {"group": AUTHENTICATION, "version": "v1", "kind": "TokenRequest"},
                "verbs": ["create"],
            }));
        }
        if self.scale {
            subresources.push(json!({
                "subresource": "scale",
                "responseKind": {"group": "autoscaling", "version": "v1", "kind": "Scale"},
                "verbs": ["get", "patch", "update"],
            }));
        }
        let mut out = json!({
            "resource": self.plural,
            "responseKind": {"group": self.group, "version": version, "kind": self.kind},
            "scope": if self.namespaced { "Namespaced" } else { "Cluster" },
            "singularResource": self.singular,
            "verbs": self.verbs(),
        });
        if !self.short_names.is_empty() {
            out["shortNames"] = json!(self.short_names);
        }
        if !self.categories.is_empty() {
            out["categories"] = json!(self.categories);
        }
        if !subresources.is_empty() {
            out["subresources"] = json!(subresources);
        }
        out
    }
}

/// Why a CustomResourceDefinition cannot be served.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct CrdError {
    /// The offending field path (`spec.names.plural`).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

fn crd_error(field: &str, message: impl Into<String>) -> CrdError {
    CrdError {
        field: field.into(),
        message: message.into(),
    }
}

/// The served resources: built-ins, plus one entry per established CRD.
#[derive(Debug, Default)]
pub struct Registry {
    defs: RwLock<Vec<Arc<ResourceDef>>>,
}

impl Registry {
    /// The built-in resources: core/v1 namespaces, services, configmaps, secrets, events,
    /// pods and serviceaccounts; apps/v1 deployments and replicasets; autoscaling/v2
    /// horizontalpodautoscalers; coordination.k8s.io/v1 leases; policy/v1
    /// poddisruptionbudgets (stored, never enforced); events.k8s.io/v1 events;
    /// rbac.authorization.k8s.io/v1 roles, rolebindings, clusterroles and clusterrolebindings
    /// (stored, evaluated by SubjectAccessReviews, never enforced on requests);
    /// authentication.k8s.io/v1 tokenreviews and selfsubjectreviews and authorization.k8s.io/v1
    /// subjectaccessreviews, selfsubjectaccessreviews and localsubjectaccessreviews (answered,
    /// never stored); the `serviceaccounts/token` subresource; and apiextensions.k8s.io/v1
    /// customresourcedefinitions.
    pub fn with_builtins() -> Self {
        let defs = vec![
            ResourceDef::builtin("", "v1", "namespaces", "Namespace", false)
                .short(&["ns"])
                .with_status(),
            ResourceDef::builtin("", "v1", "services", "Service", true)
                .short(&["svc"])
                .in_all()
                .with_status(),
            ResourceDef::builtin("", "v1", "configmaps", "ConfigMap", true).short(&["cm"]),
            ResourceDef::builtin("", "v1", "secrets", "Secret", true),
            ResourceDef::builtin("", "v1", "events", "Event", true).short(&["ev"]),
            ResourceDef::builtin("", "v1", "pods", "Pod", true)
                .short(&["po"])
                .in_all()
                .with_status(),
            ResourceDef::builtin("", "v1", "serviceaccounts", "ServiceAccount", true)
                .short(&["sa"])
                .with_token(),
            ResourceDef::builtin("apps", "v1", "deployments", "Deployment", true)
                .short(&["deploy"])
                .in_all()
                .with_status()
                .with_scale(),
            ResourceDef::builtin("apps", "v1", "replicasets", "ReplicaSet", true)
                .short(&["rs"])
                .in_all()
                .with_status(),
            ResourceDef::builtin(
                "autoscaling",
                "v2",
                "horizontalpodautoscalers",
                "HorizontalPodAutoscaler",
                true,
            )
            .short(&["hpa"])
            .in_all()
            .with_status(),
            ResourceDef::builtin("coordination.k8s.io", "v1", "leases", "Lease", true),
            ResourceDef::builtin(
                "policy",
                "v1",
                "poddisruptionbudgets",
                "PodDisruptionBudget",
                true,
            )
            .short(&["pdb"])
            .with_status(),
            ResourceDef::builtin("events.k8s.io", "v1", "events", "Event", true).short(&["ev"]),
            // RBAC objects are stored so that installation manifests apply, and evaluated on
            // demand by SubjectAccessReviews; the simulator does not authorize its own requests.
            ResourceDef::builtin(RBAC, "v1", "roles", "Role", true),
            ResourceDef::builtin(RBAC, "v1", "rolebindings", "RoleBinding", true),
            ResourceDef::builtin(RBAC, "v1", "clusterroles", "ClusterRole", false),
            ResourceDef::builtin(
                RBAC,
                "v1",
                "clusterrolebindings",
                "ClusterRoleBinding",
                false,
            ),
            // Reviews: answered on demand (`api::reviews`), never stored.
            ResourceDef::builtin(AUTHENTICATION, "v1", "tokenreviews", "TokenReview", false)
                .create_only(),
            ResourceDef::builtin(
                AUTHENTICATION,
                "v1",
                "selfsubjectreviews",
                "SelfSubjectReview",
                false,
            )
            .create_only(),
            ResourceDef::builtin(
                AUTHORIZATION,
                "v1",
                "subjectaccessreviews",
                "SubjectAccessReview",
                false,
            )
            .create_only(),
            ResourceDef::builtin(
                AUTHORIZATION,
                "v1",
                "selfsubjectaccessreviews",
                "SelfSubjectAccessReview",
                false,
            )
            .create_only(),
            ResourceDef::builtin(
                AUTHORIZATION,
                "v1",
                "localsubjectaccessreviews",
                "LocalSubjectAccessReview",
                true,
            )
            .create_only(),
            ResourceDef::builtin(
                "apiextensions.k8s.io",
                "v1",
                "customresourcedefinitions",
                "CustomResourceDefinition",
                false,
            )
            .short(&["crd", "crds"])
            .with_status(),
        ];
        Self {
            defs: RwLock::new(defs.into_iter().map(Arc::new).collect()),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Vec<Arc<ResourceDef>>> {
        // Every writer replaces whole entries, so a poisoned lock still holds a valid list.
        self.defs
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Vec<Arc<ResourceDef>>> {
        self.defs
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The resource served at `/apis/GROUP/VERSION/PLURAL` (or `/api/v1/PLURAL`).
    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceDef>> {
        self.read()
            .iter()
            .find(|d| d.group == group && d.plural == plural && d.serves(version))
            .cloned()
    }

    /// The resource stored under `gr`, whatever version.
    pub fn by_group_resource(&self, gr: &GroupResource) -> Option<Arc<ResourceDef>> {
        self.read()
            .iter()
            .find(|d| d.group == gr.group && d.plural == gr.resource)
            .cloned()
    }

    /// The resource of a kind in an `apiVersion` (`apps/v1`, `v1`), as manifests name it.
    pub fn by_kind(&self, api_version: &str, kind: &str) -> Option<(Arc<ResourceDef>, String)> {
        let (group, version) = split_api_version(api_version);
        self.read()
            .iter()
            .find(|d| d.group == group && d.kind == kind && d.serves(version))
            .map(|d| (Arc::clone(d), version.to_owned()))
    }

    /// Every served resource.
    pub fn all(&self) -> Vec<Arc<ResourceDef>> {
        self.read().clone()
    }

    /// The served versions of a group, most preferred first (empty when the group is unknown).
    pub fn group_versions(&self, group: &str) -> Vec<String> {
        let mut versions: Vec<String> = Vec::new();
        for def in self.read().iter().filter(|d| d.group == group) {
            for v in &def.versions {
                if !versions.contains(v) {
                    versions.push(v.clone());
                }
            }
        }
        versions.sort_by(|a, b| compare_versions(a, b));
        versions
    }

    /// The named API groups, in registration order (built-ins first).
    pub fn groups(&self) -> Vec<String> {
        let mut groups: Vec<String> = Vec::new();
        for def in self.read().iter() {
            if !def.group.is_empty() && !groups.contains(&def.group) {
                groups.push(def.group.clone());
            }
        }
        groups
    }

    /// The resources of one group version.
    pub fn resources_of(&self, group: &str, version: &str) -> Vec<Arc<ResourceDef>> {
        self.read()
            .iter()
            .filter(|d| d.group == group && d.serves(version))
            .cloned()
            .collect()
    }

    /// Parses a CustomResourceDefinition without registering it.
    pub fn parse_crd(crd: &Value) -> Result<ResourceDef, CrdError> {
        let str_at = |ptr: &str| crd.pointer(ptr).and_then(Value::as_str).unwrap_or("");
        let group = str_at("/spec/group");
        if group.is_empty() || !group.contains('.') {
            return Err(crd_error(
                "spec.group",
                format!("Invalid value: \"{group}\": should be a domain with at least one dot"),
            ));
        }
        let plural = str_at("/spec/names/plural");
        let kind = str_at("/spec/names/kind");
        if plural.is_empty() {
            return Err(crd_error("spec.names.plural", "Required value"));
        }
        if kind.is_empty() {
            return Err(crd_error("spec.names.kind", "Required value"));
        }
        let name = str_at("/metadata/name");
        if name != format!("{plural}.{group}") {
            return Err(crd_error(
                "metadata.name",
                format!("Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"),
            ));
        }
        let namespaced = match str_at("/spec/scope") {
            "Namespaced" => true,
            "Cluster" => false,
            other => {
                return Err(crd_error(
                    "spec.scope",
                    format!(
                        "Unsupported value: \"{other}\": supported values: \"Cluster\", \"Namespaced\""
                    ),
                ));
            }
        };
        let versions = crd
            .pointer("/spec/versions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if versions.is_empty() {
            return Err(crd_error(
                "spec.versions",
                "Required value: must have exactly one version marked as storage version",
            ));
        }
        let served: Vec<&Value> = versions
            .iter()
            .filter(|v| v.get("served").and_then(Value::as_bool).unwrap_or(false))
            .collect();
        let mut names: Vec<String> = served
            .iter()
            .filter_map(|v| v.get("name").and_then(Value::as_str).map(str::to_owned))
            .collect();
        names.sort_by(|a, b| compare_versions(a, b));
        let status = versions
            .iter()
            .any(|v| v.pointer("/subresources/status").is_some());
        let columns = served
            .first()
            .and_then(|v| v.get("additionalPrinterColumns"))
            .and_then(Value::as_array)
            .map(|cols| {
                cols.iter()
                    .map(|c| PrinterColumn {
                        name: c.get("name").and_then(Value::as_str).unwrap_or("").into(),
                        type_: c
                            .get("type")
                            .and_then(Value::as_str)
                            .unwrap_or("string")
                            .into(),
                        json_path: c
                            .get("jsonPath")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .into(),
                        priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let strings = |ptr: &str| -> Vec<String> {
            crd.pointer(ptr)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        };
        let singular = match str_at("/spec/names/singular") {
            "" => kind.to_lowercase(),
            s => s.to_owned(),
        };
        let list_kind = match str_at("/spec/names/listKind") {
            "" => format!("{kind}List"),
            s => s.to_owned(),
        };
        Ok(ResourceDef {
            group: group.into(),
            versions: names,
            plural: plural.into(),
            singular,
            kind: kind.into(),
            list_kind,
            namespaced,
            short_names: strings("/spec/names/shortNames"),
            categories: strings("/spec/names/categories"),
            status,
            scale: false,
            builtin: false,
            columns,
            crd: Some(name.to_owned()),
            review: false,
            token: false,
        })
    }

    /// Starts (or updates) serving the resource a CRD defines. A CRD whose names clash with a
    /// built-in resource is refused.
    pub fn register_crd(&self, crd: &Value) -> Result<Arc<ResourceDef>, CrdError> {
        let def = Arc::new(Self::parse_crd(crd)?);
        let mut defs = self.write();
        if defs
            .iter()
            .any(|d| d.builtin && d.group == def.group && d.plural == def.plural)
        {
            return Err(crd_error(
                "spec.names.plural",
                "Invalid value: the resource is built in",
            ));
        }
        defs.retain(|d| d.crd != def.crd && !(d.group == def.group && d.plural == def.plural));
        defs.push(Arc::clone(&def));
        Ok(def)
    }

    /// Stops serving the resource of the CRD `name` (`plural.group`); returns what it served.
    pub fn unregister_crd(&self, name: &str) -> Option<Arc<ResourceDef>> {
        let mut defs = self.write();
        let pos = defs.iter().position(|d| d.crd.as_deref() == Some(name))?;
        Some(defs.remove(pos))
    }
}

/// Splits `apps/v1` into (`apps`, `v1`) and `v1` into (``, `v1`).
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.rsplit_once('/') {
        Some((group, version)) => (group, version),
        None => ("", api_version),
    }
}

/// Kubernetes version priority: GA before beta before alpha, higher numbers first, then other
/// strings alphabetically. Sorting with this puts the preferred version first.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    fn parse(v: &str) -> Option<(u64, u8, u64)> {
        let rest = v.strip_prefix('v')?;
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let major: u64 = rest[..digits].parse().ok()?;
        let tail = &rest[digits..];
        if tail.is_empty() {
            return Some((major, 2, 0));
        }
        let (level, num) = if let Some(n) = tail.strip_prefix("beta") {
            (1, n)
        } else if let Some(n) = tail.strip_prefix("alpha") {
            (0, n)
        } else {
            return None;
        };
        Some((major, level, num.parse().ok()?))
    }
    match (parse(a), parse(b)) {
        (Some((ma, la, na)), Some((mb, lb, nb))) => lb.cmp(&la).then(mb.cmp(&ma)).then(nb.cmp(&na)),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => a.cmp(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn virtual_service_crd() -> Value {
        json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": "virtualservices.networking.istio.io"},
            "spec": {
                "group": "networking.istio.io",
                "scope": "Namespaced",
                "names": {"plural": "virtualservices", "kind": "VirtualService",
                          "shortNames": ["vs"]},
                "versions": [
                    {"name": "v1alpha3", "served": true, "storage": false},
                    {"name": "v1", "served": true, "storage": false,
                     "subresources": {"status": {}}},
                    {"name": "v1beta1", "served": true, "storage": true},
                ],
            },
        })
    }

    #[test]
    fn versions_sort_ga_then_beta_then_alpha() {
        let mut v = vec!["v1alpha3", "v1beta1", "v2beta2", "v1", "v2", "foo"];
        v.sort_by(|a, b| compare_versions(a, b));
        assert_eq!(v, vec!["v2", "v1", "v2beta2", "v1beta1", "v1alpha3", "foo"]);
    }

    #[test]
    fn crd_registration_serves_every_served_version_until_unregistered() {
        let registry = Registry::with_builtins();
        assert!(
            registry
                .lookup("networking.istio.io", "v1", "virtualservices")
                .is_none()
        );
        let def = registry.register_crd(&virtual_service_crd()).unwrap();
        assert_eq!(def.versions, vec!["v1", "v1beta1", "v1alpha3"]);
        assert!(def.status && def.namespaced && !def.builtin);
        for v in ["v1", "v1beta1", "v1alpha3"] {
            assert!(
                registry
                    .lookup("networking.istio.io", v, "virtualservices")
                    .is_some()
            );
        }
        assert!(
            registry
                .groups()
                .contains(&"networking.istio.io".to_owned())
        );
        registry.unregister_crd("virtualservices.networking.istio.io");
        assert!(
            registry
                .lookup("networking.istio.io", "v1", "virtualservices")
                .is_none()
        );
        assert!(registry.group_versions("networking.istio.io").is_empty());
    }

    #[test]
    fn crd_with_a_wrong_name_is_refused() {
        let mut crd = virtual_service_crd();
        crd["metadata"]["name"] = json!("vs.networking.istio.io");
        let err = Registry::parse_crd(&crd).unwrap_err();
        assert_eq!(err.field, "metadata.name");
    }
}
