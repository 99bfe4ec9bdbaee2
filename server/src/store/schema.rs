//! The start-up check that the cluster serves the Rollout CRD (`rollouts.steerer.dev`) this
//! server writes: installed, and of the current schema. An older schema is told by what it
//! lacks: the served `v1alpha1` version with the status subresource, `spec.route` (added when
//! routes got kinds) and `status.state` and `status.events` (the records a server resumes
//! from); without them the API server would prune what the server writes.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::Api;
use serde_json::Value;

/// The CRD's name.
pub const CRD_NAME: &str = "rollouts.steerer.dev";
/// The version the server reads and writes.
pub const VERSION: &str = "v1alpha1";
/// The manifest that installs it.
pub const MANIFEST: &str = "artifacts/steerer/05-rollouts-crd.yaml";

/// Why the server cannot keep its records in the cluster.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SchemaError {
    #[error(
        "the Rollout CRD {CRD_NAME} is not installed in the cluster; install it with `kubectl apply -f {MANIFEST}` (or every manifest: `kubectl apply -f artifacts/steerer/`)"
    )]
    Missing,
    #[error(
        "the Rollout CRD {CRD_NAME} in the cluster is older than this server ({missing}); update it with `kubectl apply -f {MANIFEST}`"
    )]
    Outdated { missing: String },
    #[error("could not check the Rollout CRD {CRD_NAME}: {0}")]
    Unchecked(String),
}

/// What the served CRD lacks (its JSON), `None` when it is current.
pub fn lacks(crd: &Value) -> Option<String> {
    let Some(version) = crd["spec"]["versions"]
        .as_array()
        .and_then(|versions| versions.iter().find(|v| v["name"] == VERSION))
    else {
        return Some(format!("it has no version {VERSION}"));
    };
    if version["served"] != Value::Bool(true) {
        return Some(format!("it does not serve {VERSION}"));
    }
    if version["subresources"]["status"].is_null() {
        return Some(format!("{VERSION} has no status subresource"));
    }
    let properties = &version["schema"]["openAPIV3Schema"]["properties"];
    let missing: Vec<&str> = [
        ("spec.route", &properties["spec"]["properties"]["route"]),
        ("status.state", &properties["status"]["properties"]["state"]),
        (
            "status.events",
            &properties["status"]["properties"]["events"],
        ),
    ]
    .into_iter()
    .filter(|(_, field)| field.is_null())
    .map(|(name, _)| name)
    .collect();
    (!missing.is_empty()).then(|| format!("its {VERSION} schema has no {}", missing.join(", ")))
}

/// Reads the CRD and judges it. Where the server may not read CRDs (an RBAC of an earlier
/// install), API discovery at least tells whether the resource is served.
pub async fn check(client: &kube::Client) -> Result<(), SchemaError> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    match crds.get_opt(CRD_NAME).await {
        Ok(None) => Err(SchemaError::Missing),
        Ok(Some(crd)) => {
            let crd = serde_json::to_value(&crd)
                .map_err(|e| SchemaError::Unchecked(format!("unreadable CRD: {e}")))?;
            match lacks(&crd) {
                Some(missing) => Err(SchemaError::Outdated { missing }),
                None => Ok(()),
            }
        }
        Err(kube::Error::Api(status)) if status.code == 403 => {
            tracing::warn!(
                "may not read CustomResourceDefinition {CRD_NAME}: its schema is not checked"
            );
            discovered(client).await
        }
        Err(error) => Err(SchemaError::Unchecked(error.to_string())),
    }
}

/// Whether discovery lists `rollouts` in `steerer.dev/v1alpha1`.
async fn discovered(client: &kube::Client) -> Result<(), SchemaError> {
    match client
        .list_api_group_resources(&format!("steerer.dev/{VERSION}"))
        .await
    {
        Ok(list) if list.resources.iter().any(|r| r.name == "rollouts") => Ok(()),
        Ok(_) => Err(SchemaError::Missing),
        Err(kube::Error::Api(status)) if status.is_not_found() => Err(SchemaError::Missing),
        Err(error) => Err(SchemaError::Unchecked(error.to_string())),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The CRD as the project ships it.
    fn shipped() -> Value {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../artifacts/steerer/05-rollouts-crd.yaml"
        );
        serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    #[test]
    fn the_shipped_crd_is_current() {
        assert_eq!(lacks(&shipped()), None);
    }

    #[test]
    fn a_crd_from_before_route_kinds_is_outdated_and_says_what_it_lacks() {
        let mut crd = shipped();
        let spec = &mut crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
            ["properties"];
        spec.as_object_mut().unwrap().remove("route");
        assert_eq!(
            lacks(&crd).as_deref(),
            Some("its v1alpha1 schema has no spec.route")
        );
        let line = SchemaError::Outdated {
            missing: lacks(&crd).unwrap(),
        }
        .to_string();
        assert!(line.contains("rollouts.steerer.dev"), "{line}");
        assert!(line.contains(MANIFEST), "{line}");
        assert!(!line.contains('\n'), "{line}");
    }

    #[test]
    fn a_crd_without_the_status_subresource_or_the_version_is_outdated() {
        let mut crd = shipped();
        crd["spec"]["versions"][0]["subresources"] = Value::Null;
        assert_eq!(
            lacks(&crd).as_deref(),
            Some("v1alpha1 has no status subresource")
        );
        crd["spec"]["versions"][0]["name"] = "v0".into();
        assert_eq!(lacks(&crd).as_deref(), Some("it has no version v1alpha1"));
    }

    #[test]
    fn the_missing_line_names_the_crd_and_how_to_install_it() {
        let line = SchemaError::Missing.to_string();
        assert!(line.contains("rollouts.steerer.dev"));
        assert!(line.contains("kubectl apply -f artifacts/steerer/05-rollouts-crd.yaml"));
        assert!(!line.contains('\n'));
    }
}
