//! The RBAC authorizer: decides a request (resource or non-resource URL) for a user from the
//! Roles, ClusterRoles, RoleBindings and ClusterRoleBindings, as kube-apiserver's RBAC
//! authorizer does, behind its `system:masters` shortcut: ClusterRoleBindings first, then the
//! RoleBindings of the request's namespace (which may grant a ClusterRole's rules there); the
//! first rule that allows wins and is named in the reason; a binding whose role is missing
//! is reported when nothing allows.

use serde::Deserialize;
use serde_json::Value;

use super::{MASTERS, UserInfo};
use crate::store::{GroupResource, Store};

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// What a resource request is about (`spec.resourceAttributes` of a SubjectAccessReview).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ResourceAttributes {
    /// The namespace; empty for cluster-scoped resources and for all namespaces.
    pub namespace: String,
    /// The verb (`get`, `list`, or a custom one such as `start`).
    pub verb: String,
    /// The API group (empty for the core group, `*` for all).
    pub group: String,
    /// The API version (RBAC ignores it).
    pub version: String,
    /// The resource (plural).
    pub resource: String,
    /// The subresource (`status`).
    pub subresource: String,
    /// The object's name; empty for all.
    pub name: String,
}

/// A request for a URL that is no resource (`/healthz`, `/metrics`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct NonResourceAttributes {
    /// The URL path.
    pub path: String,
    /// The verb (`get`).
    pub verb: String,
}

/// What is asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// An API resource.
    Resource(ResourceAttributes),
    /// A URL that is no resource.
    NonResource(NonResourceAttributes),
}

/// The answer: `allowed`, and the reason kube-apiserver gives (empty when it gives none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request is allowed (RBAC never denies outright: it allows or has no
    /// opinion).
    pub allowed: bool,
    /// `RBAC: allowed by ...`, or the roles that could not be found.
    pub reason: String,
}

/// Where the authorizer reads roles and bindings from (the store, or fixtures in tests).
pub trait Policy {
    /// Every ClusterRoleBinding.
    fn cluster_role_bindings(&self) -> Vec<Value>;
    /// The RoleBindings of one namespace.
    fn role_bindings(&self, namespace: &str) -> Vec<Value>;
    /// A Role.
    fn role(&self, namespace: &str, name: &str) -> Option<Value>;
    /// A ClusterRole.
    fn cluster_role(&self, name: &str) -> Option<Value>;
}

impl Policy for Store {
    fn cluster_role_bindings(&self) -> Vec<Value> {
        let gr = GroupResource::new(RBAC_GROUP, "clusterrolebindings");
        self.list(&gr, None)
            .0
            .iter()
            .map(|b| b.as_ref().clone())
            .collect()
    }

    fn role_bindings(&self, namespace: &str) -> Vec<Value> {
        let gr = GroupResource::new(RBAC_GROUP, "rolebindings");
        self.list(&gr, Some(namespace))
            .0
            .iter()
            .map(|b| b.as_ref().clone())
            .collect()
    }

    fn role(&self, namespace: &str, name: &str) -> Option<Value> {
        self.get(&GroupResource::new(RBAC_GROUP, "roles"), namespace, name)
            .ok()
    }

    fn cluster_role(&self, name: &str) -> Option<Value> {
        self.get(&GroupResource::new(RBAC_GROUP, "clusterroles"), "", name)
            .ok()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Meta {
    name: String,
    namespace: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Subject {
    kind: String,
    name: String,
    namespace: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RoleRef {
    kind: String,
    name: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct Binding {
    metadata: Meta,
    subjects: Vec<Subject>,
    role_ref: RoleRef,
}

/// One rule of a Role or ClusterRole.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct Rule {
    verbs: Vec<String>,
    api_groups: Vec<String>,
    resources: Vec<String>,
    resource_names: Vec<String>,
    #[serde(rename = "nonResourceURLs")]
    non_resource_urls: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Role {
    rules: Vec<Rule>,
}

impl Rule {
    fn allows(&self, request: &Request) -> bool {
        let verb = match request {
            Request::Resource(r) => &r.verb,
            Request::NonResource(n) => &n.verb,
        };
        if !self.verbs.iter().any(|v| v == "*" || v == verb) {
            return false;
        }
        match request {
            Request::Resource(r) => {
                self.api_groups.iter().any(|g| g == "*" || *g == r.group)
                    && self.matches_resource(r)
                    && (self.resource_names.is_empty() || self.resource_names.contains(&r.name))
            }
            Request::NonResource(n) => self.non_resource_urls.iter().any(|url| {
                url == "*"
                    || *url == n.path
                    || url
                        .strip_suffix('*')
                        .is_some_and(|prefix| n.path.starts_with(prefix.trim_end_matches('*')))
            }),
        }
    }

    /// `resource`, `resource/subresource`, `*`, or `*/subresource`.
    fn matches_resource(&self, r: &ResourceAttributes) -> bool {
        let combined = if r.subresource.is_empty() {
            r.resource.clone()
        } else {
            format!("{}/{}", r.resource, r.subresource)
        };
        self.resources.iter().any(|rule| {
            rule == "*"
                || *rule == combined
                || (!r.subresource.is_empty()
                    && rule.strip_prefix("*/") == Some(r.subresource.as_str()))
        })
    }
}

/// `Kind "name"`, with a service account as `name/namespace` (the binding's namespace when
/// the subject names none).
fn describe_subject(subject: &Subject, binding_namespace: &str) -> String {
    if subject.kind == "ServiceAccount" {
        let namespace = if subject.namespace.is_empty() {
            binding_namespace
        } else {
            &subject.namespace
        };
        format!("{} \"{}/{namespace}\"", subject.kind, subject.name)
    } else {
        format!("{} \"{}\"", subject.kind, subject.name)
    }
}

/// Whether a binding's subject is the user: by name, by group, or as the service account
/// (whose namespace defaults to the binding's).
fn applies_to(user: &UserInfo, subject: &Subject, namespace: &str) -> bool {
    match subject.kind.as_str() {
        "User" => user.username == subject.name,
        "Group" => user.groups.contains(&subject.name),
        "ServiceAccount" => {
            let sa_namespace = if subject.namespace.is_empty() {
                namespace
            } else {
                &subject.namespace
            };
            !sa_namespace.is_empty()
                && user.username == super::service_account_username(sa_namespace, &subject.name)
        }
        _ => false,
    }
}

/// Go's error aggregate: one message alone, several (without repeats) in brackets.
fn aggregate(errors: &[String]) -> String {
    let mut seen: Vec<&String> = Vec::new();
    for e in errors {
        if !seen.contains(&e) {
            seen.push(e);
        }
    }
    match seen.as_slice() {
        [one] => (*one).clone(),
        many => format!(
            "[{}]",
            many.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The rules a binding grants, or why they cannot be read.
fn rules_of(
    policy: &impl Policy,
    role_ref: &RoleRef,
    namespace: &str,
) -> Result<Vec<Rule>, String> {
    let (found, resource) = match role_ref.kind.as_str() {
        "Role" => (policy.role(namespace, &role_ref.name), "role"),
        "ClusterRole" => (policy.cluster_role(&role_ref.name), "clusterrole"),
        other => return Err(format!("unsupported role reference kind: \"{other}\"")),
    };
    let role =
        found.ok_or_else(|| format!("{resource}.{RBAC_GROUP} \"{}\" not found", role_ref.name))?;
    Ok(serde_json::from_value::<Role>(role)
        .map(|r| r.rules)
        .unwrap_or_default())
}

/// Decides `request` for `user` as kube-apiserver does with `--authorization-mode=RBAC`:
/// members of `system:masters` may do anything (with no reason given), everyone else what a
/// binding grants them.
pub fn authorize(policy: &impl Policy, user: &UserInfo, request: &Request) -> Decision {
    if user.groups.iter().any(|g| g == MASTERS) {
        return Decision {
            allowed: true,
            reason: String::new(),
        };
    }
    let mut errors = Vec::new();
    let mut visit = |binding: &Binding, kind: &str, namespace: &str| -> Option<String> {
        let subject = binding
            .subjects
            .iter()
            .find(|s| applies_to(user, s, namespace))?;
        match rules_of(policy, &binding.role_ref, namespace) {
            Err(e) => {
                errors.push(e);
                None
            }
            Ok(rules) => rules.iter().any(|r| r.allows(request)).then(|| {
                let name = if namespace.is_empty() {
                    binding.metadata.name.clone()
                } else {
                    format!("{}/{}", binding.metadata.name, binding.metadata.namespace)
                };
                format!(
                    "RBAC: allowed by {kind} \"{name}\" of {} \"{}\" to {}",
                    binding.role_ref.kind,
                    binding.role_ref.name,
                    describe_subject(subject, namespace)
                )
            }),
        }
    };
    let parse = |v: Value| serde_json::from_value::<Binding>(v).ok();
    for binding in policy.cluster_role_bindings().into_iter().filter_map(parse) {
        if let Some(reason) = visit(&binding, "ClusterRoleBinding", "") {
            return Decision {
                allowed: true,
                reason,
            };
        }
    }
    let namespace = match request {
        Request::Resource(r) => r.namespace.as_str(),
        Request::NonResource(_) => "",
    };
    if !namespace.is_empty() {
        for binding in policy
            .role_bindings(namespace)
            .into_iter()
            .filter_map(parse)
        {
            if let Some(reason) = visit(&binding, "RoleBinding", namespace) {
                return Decision {
                    allowed: true,
                    reason,
                };
            }
        }
    }
    // kube-apiserver's authorizer chain names the authorizer before a reason for no opinion.
    let reason = if errors.is_empty() {
        String::new()
    } else {
        format!("rbac: RBAC: {}", aggregate(&errors))
    };
    Decision {
        allowed: false,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Default)]
    struct Fixture {
        roles: Vec<Value>,
        cluster_roles: Vec<Value>,
        bindings: Vec<Value>,
        cluster_bindings: Vec<Value>,
    }

    fn named<'a>(items: &'a [Value], namespace: &str, name: &str) -> Option<&'a Value> {
        items.iter().find(|v| {
            v["metadata"]["name"] == name
                && v["metadata"]["namespace"].as_str().unwrap_or("") == namespace
        })
    }

    impl Policy for Fixture {
        fn cluster_role_bindings(&self) -> Vec<Value> {
            self.cluster_bindings.clone()
        }
        fn role_bindings(&self, namespace: &str) -> Vec<Value> {
            self.bindings
                .iter()
                .filter(|b| b["metadata"]["namespace"] == namespace)
                .cloned()
                .collect()
        }
        fn role(&self, namespace: &str, name: &str) -> Option<Value> {
            named(&self.roles, namespace, name).cloned()
        }
        fn cluster_role(&self, name: &str) -> Option<Value> {
            named(&self.cluster_roles, "", name).cloned()
        }
    }

    impl Fixture {
        fn role(mut self, ns: &str, name: &str, rules: Value) -> Self {
            self.roles
                .push(json!({"metadata": {"name": name, "namespace": ns}, "rules": rules}));
            self
        }
        fn cluster_role(mut self, name: &str, rules: Value) -> Self {
            self.cluster_roles
                .push(json!({"metadata": {"name": name}, "rules": rules}));
            self
        }
        fn binding(mut self, ns: &str, name: &str, role: (&str, &str), subjects: Value) -> Self {
            self.bindings.push(json!({
                "metadata": {"name": name, "namespace": ns},
                "roleRef": {"apiGroup": RBAC_GROUP, "kind": role.0, "name": role.1},
                "subjects": subjects,
            }));
            self
        }
        fn cluster_binding(mut self, name: &str, role: &str, subjects: Value) -> Self {
            self.cluster_bindings.push(json!({
                "metadata": {"name": name},
                "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": role},
                "subjects": subjects,
            }));
            self
        }
    }

    fn steerer() -> Fixture {
        Fixture::default()
            .role(
                "ci",
                "deployer",
                json!([{"apiGroups": ["steerer.dev"], "resources": ["rollouts"],
                        "verbs": ["start", "get", "watch"]},
                       {"apiGroups": ["steerer.dev"], "resources": ["rollouts/status"],
                        "verbs": ["get"], "resourceNames": ["web"]}]),
            )
            .binding(
                "ci",
                "deployer",
                ("Role", "deployer"),
                json!([{"kind": "ServiceAccount", "name": "deployer"}]),
            )
            .cluster_role(
                "viewer",
                json!([{"apiGroups": ["steerer.dev"], "resources": ["rollouts"],
                        "verbs": ["get", "list", "watch"]}]),
            )
            .cluster_binding(
                "viewers",
                "viewer",
                json!([{"kind": "Group", "name": "viewers"},
                       {"kind": "ServiceAccount", "name": "viewer", "namespace": "ci"}]),
            )
            .cluster_role(
                "operator",
                json!([{"apiGroups": ["steerer.dev"], "resources": ["*"], "verbs": ["*"]}]),
            )
            .binding(
                "prod",
                "ops",
                ("ClusterRole", "operator"),
                json!([{"kind": "User", "name": "alice"}]),
            )
    }

    fn rollouts(verb: &str, namespace: &str) -> Request {
        Request::Resource(ResourceAttributes {
            namespace: namespace.into(),
            verb: verb.into(),
            group: "steerer.dev".into(),
            resource: "rollouts".into(),
            ..Default::default()
        })
    }

    fn sa(name: &str) -> UserInfo {
        UserInfo::service_account("ci", name, "u")
    }

    fn user(name: &str, groups: &[&str]) -> UserInfo {
        UserInfo {
            username: name.into(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_role_binding_grants_custom_verbs_in_its_namespace_only() {
        let p = steerer();
        let d = authorize(&p, &sa("deployer"), &rollouts("start", "ci"));
        assert_eq!(
            d,
            Decision {
                allowed: true,
                reason: "RBAC: allowed by RoleBinding \"deployer/ci\" of Role \"deployer\" to \
                         ServiceAccount \"deployer/ci\""
                    .into()
            }
        );
        assert!(!authorize(&p, &sa("deployer"), &rollouts("abort", "ci")).allowed);
        assert!(!authorize(&p, &sa("deployer"), &rollouts("start", "prod")).allowed);
        assert!(!authorize(&p, &sa("deployer"), &rollouts("list", "")).allowed);
        assert_eq!(
            authorize(&p, &sa("deployer"), &rollouts("abort", "ci")).reason,
            ""
        );
    }

    #[test]
    fn a_cluster_role_binding_grants_everywhere_and_to_groups() {
        let p = steerer();
        let d = authorize(&p, &sa("viewer"), &rollouts("list", ""));
        assert_eq!(
            d.reason,
            "RBAC: allowed by ClusterRoleBinding \"viewers\" of ClusterRole \"viewer\" to \
             ServiceAccount \"viewer/ci\""
        );
        let d = authorize(&p, &user("carol", &["viewers"]), &rollouts("watch", "prod"));
        assert_eq!(
            d.reason,
            "RBAC: allowed by ClusterRoleBinding \"viewers\" of ClusterRole \"viewer\" to Group \
             \"viewers\""
        );
    }

    #[test]
    fn a_role_binding_to_a_cluster_role_with_wildcards_grants_it_in_one_namespace() {
        let p = steerer();
        let d = authorize(&p, &user("alice", &[]), &rollouts("promote", "prod"));
        assert_eq!(
            d.reason,
            "RBAC: allowed by RoleBinding \"ops/prod\" of ClusterRole \"operator\" to User \"alice\""
        );
        assert!(!authorize(&p, &user("alice", &[]), &rollouts("promote", "ci")).allowed);
    }

    #[test]
    fn subresources_and_resource_names_must_match() {
        let p = steerer();
        let status = |name: &str| {
            Request::Resource(ResourceAttributes {
                namespace: "ci".into(),
                verb: "get".into(),
                group: "steerer.dev".into(),
                resource: "rollouts".into(),
                subresource: "status".into(),
                name: name.into(),
                ..Default::default()
            })
        };
        assert!(authorize(&p, &sa("deployer"), &status("web")).allowed);
        assert!(!authorize(&p, &sa("deployer"), &status("api")).allowed);
        assert!(!authorize(&p, &sa("deployer"), &status("")).allowed);
        let any_status = Fixture::default()
            .cluster_role(
                "statuses",
                json!([{"apiGroups": ["*"], "resources": ["*/status"], "verbs": ["get"]}]),
            )
            .cluster_binding("s", "statuses", json!([{"kind": "User", "name": "bob"}]));
        assert!(authorize(&any_status, &user("bob", &[]), &status("x")).allowed);
        assert!(!authorize(&any_status, &user("bob", &[]), &rollouts("get", "ci")).allowed);
    }

    #[test]
    fn masters_may_do_anything_without_a_reason() {
        let d = authorize(
            &Fixture::default(),
            &user("x", &["system:masters"]),
            &rollouts("abort", "ci"),
        );
        assert_eq!(
            d,
            Decision {
                allowed: true,
                reason: String::new()
            }
        );
    }

    #[test]
    fn non_resource_urls_match_exactly_or_by_a_trailing_star() {
        let p = Fixture::default()
            .cluster_role(
                "urls",
                json!([{"nonResourceURLs": ["/healthz", "/metrics/*"], "verbs": ["get"]}]),
            )
            .cluster_binding("urls", "urls", json!([{"kind": "User", "name": "bob"}]));
        let url = |path: &str| {
            Request::NonResource(NonResourceAttributes {
                path: path.into(),
                verb: "get".into(),
            })
        };
        assert!(authorize(&p, &user("bob", &[]), &url("/healthz")).allowed);
        assert!(authorize(&p, &user("bob", &[]), &url("/metrics/x")).allowed);
        assert!(!authorize(&p, &user("bob", &[]), &url("/metrics")).allowed);
        assert!(!authorize(&p, &user("bob", &[]), &url("/api")).allowed);
    }

    #[test]
    fn a_binding_to_a_missing_role_is_the_reason_when_nothing_allows() {
        let p = Fixture::default()
            .binding(
                "ci",
                "dangling",
                ("Role", "nope"),
                json!([{"kind": "User", "name": "dan"}]),
            )
            .binding(
                "ci",
                "dangling2",
                ("ClusterRole", "gone"),
                json!([{"kind": "User", "name": "dan"}]),
            );
        assert_eq!(
            authorize(&p, &user("dan", &[]), &rollouts("get", "ci")).reason,
            "rbac: RBAC: [role.rbac.authorization.k8s.io \"nope\" not found, \
             clusterrole.rbac.authorization.k8s.io \"gone\" not found]"
        );
    }
}
