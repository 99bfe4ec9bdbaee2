//! Workloads: the `Workloads` trait through which the engine reads (from watch caches) and
//! writes the Deployments and HPAs a rollout drives, and its errors. Implementations: `kube`;
//! `fake` for tests. The views it returns live in `domain::views`, the health gate in
//! `engine::decide`.

#[cfg(any(test, feature = "testing"))]
pub mod fake;
pub mod kube;

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use serde_json::Value;

pub use crate::domain::{DeploymentView, HpaView};

/// Errors writing Deployments.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error("deployment {namespace}/{name} not found")]
    NotFound { namespace: String, name: String },
    #[error("failed to {action} deployment {namespace}/{name}: {source}")]
    Write {
        action: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: Box<::kube::Error>,
    },
    #[error("deployment {namespace}/{name} has no container named {container}")]
    NoSuchContainer {
        namespace: String,
        name: String,
        container: String,
    },
    #[error("invalid patch: {0}")]
    Patch(String),
    #[error("workload caches failed to sync: {0}")]
    Sync(String),
}

impl WorkloadError {
    /// Whether trying again cannot help: the Deployment or container is gone, the patch is
    /// malformed, or the API server refuses the request itself (403, 422 and the like).
    pub fn is_permanent(&self) -> bool {
        match self {
            WorkloadError::NotFound { .. }
            | WorkloadError::NoSuchContainer { .. }
            | WorkloadError::Patch(_) => true,
            WorkloadError::Write { source, .. } => {
                crate::retry::status_code(source).is_some_and(crate::retry::is_permanent)
            }
            WorkloadError::Sync(_) => false,
        }
    }
}

/// Reads (from watch caches) and writes of Deployments and HPAs.
pub trait Workloads: Send + Sync {
    /// The Deployment as last seen; `None` when it does not exist.
    fn deployment(&self, namespace: &str, name: &str) -> Option<DeploymentView>;
    /// The HPA whose scale target is this Deployment, if any.
    fn hpa_for(&self, namespace: &str, deployment: &str) -> Option<HpaView>;
    /// Deployments carrying `key=value`, in the given namespaces (empty = all).
    fn labelled(&self, key: &str, value: &str) -> Vec<DeploymentView>;
    /// Sets `spec.replicas`.
    fn scale<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        replicas: u32,
    ) -> BoxFuture<'a, Result<(), WorkloadError>>;
    /// Sets the images of named containers of the pod template.
    fn set_images<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        images: &'a BTreeMap<String, String>,
    ) -> BoxFuture<'a, Result<(), WorkloadError>>;
    /// Replaces the pod template of `name`.
    fn replace_template<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        template: &'a Value,
    ) -> BoxFuture<'a, Result<(), WorkloadError>>;
    /// Records a Kubernetes Event about rollout `rollout` on the Deployment; best effort.
    fn record_event<'a>(
        &'a self,
        deployment: &'a DeploymentView,
        rollout: &'a str,
        reason: &'a str,
        message: &'a str,
        warning: bool,
    ) -> BoxFuture<'a, ()>;
}
