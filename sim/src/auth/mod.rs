//! Authentication and authorization answered on demand, as kube-apiserver answers them:
//! service-account tokens the simulator signs ([`tokens`], the TokenRequest API) and checks
//! (TokenReview), and the RBAC authorizer over the Roles, ClusterRoles and bindings it stores
//! ([`rbac`], SubjectAccessReview). The simulator still serves every request it gets: it does
//! not authenticate or authorize its own API.

pub mod rbac;
pub mod tokens;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The prefix of a service account's user name (`system:serviceaccount:NS:NAME`).
pub const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";
/// The group of every service account.
pub const ALL_SERVICE_ACCOUNTS: &str = "system:serviceaccounts";
/// The group of every authenticated user.
pub const ALL_AUTHENTICATED: &str = "system:authenticated";
/// The group the API server lets do anything, whatever RBAC says.
pub const MASTERS: &str = "system:masters";
/// The `extra` key carrying a token's `jti`, as kube-apiserver names it.
pub const CREDENTIAL_ID: &str = "authentication.kubernetes.io/credential-id";

/// Who a request or a token is: the `UserInfo` of TokenReview and SelfSubjectReview.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    /// The user name (`system:serviceaccount:NS:NAME` for a service account).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub username: String,
    /// The user's uid (a service account's `metadata.uid`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    /// The groups, in kube-apiserver's order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Extra attributes (a token's credential id).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    /// A service account, with the groups kube-apiserver gives it.
    pub fn service_account(namespace: &str, name: &str, uid: &str) -> Self {
        Self {
            username: service_account_username(namespace, name),
            uid: uid.to_owned(),
            groups: vec![
                ALL_SERVICE_ACCOUNTS.to_owned(),
                format!("{ALL_SERVICE_ACCOUNTS}:{namespace}"),
                ALL_AUTHENTICATED.to_owned(),
            ],
            extra: BTreeMap::new(),
        }
    }

    /// Whoever calls the simulator without a token it issued: the administrator of the test
    /// cluster `tests/cluster/up.sh` starts (user and uid `admin`, group `system:masters`).
    pub fn admin() -> Self {
        Self {
            username: "admin".into(),
            uid: "admin".into(),
            groups: vec![MASTERS.into(), ALL_AUTHENTICATED.into()],
            extra: BTreeMap::new(),
        }
    }
}

/// `system:serviceaccount:NS:NAME`.
pub fn service_account_username(namespace: &str, name: &str) -> String {
    format!("{SERVICE_ACCOUNT_PREFIX}{namespace}:{name}")
}

/// The namespace and name of a service account's user name, when it is one.
pub fn split_service_account_username(username: &str) -> Option<(&str, &str)> {
    let rest = username.strip_prefix(SERVICE_ACCOUNT_PREFIX)?;
    let (namespace, name) = rest.split_once(':')?;
    if namespace.is_empty() || name.is_empty() || name.contains(':') {
        return None;
    }
    Some((namespace, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_account_user_names_split_back_into_namespace_and_name() {
        let name = service_account_username("ci", "deployer");
        assert_eq!(name, "system:serviceaccount:ci:deployer");
        assert_eq!(
            split_service_account_username(&name),
            Some(("ci", "deployer"))
        );
        assert_eq!(
            split_service_account_username("system:serviceaccount:ci"),
            None
        );
        assert_eq!(split_service_account_username("alice"), None);
        assert_eq!(
            split_service_account_username("system:serviceaccount:a:b:c"),
            None
        );
    }

    #[test]
    fn a_service_account_has_the_groups_kube_apiserver_gives_it() {
        let user = UserInfo::service_account("ci", "deployer", "u1");
        assert_eq!(
            user.groups,
            vec![
                "system:serviceaccounts",
                "system:serviceaccounts:ci",
                "system:authenticated"
            ]
        );
    }
}
