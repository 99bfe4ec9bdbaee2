//! HPA load for the standalone mesh: with no metrics-server behind the API server, the load
//! figures set with `/sim/load` drive their HPAs through the API, by the simulator's own HPA
//! rule ([`crate::controllers::hpa::plan`]): the target is scaled through its `scale`
//! subresource and the HPA's status written through its `status` subresource. HPAs without a
//! figure are left alone, so an idle mesh makes no API calls.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::{Value, json};
use tokio::time::MissedTickBehavior;

use crate::controllers::Loads;
use crate::controllers::hpa;
use crate::store::now_rfc3339;
use tokio_util::sync::CancellationToken as Shutdown;

/// Errors of one HPA sync.
#[derive(Debug, thiserror::Error)]
pub enum AutoscaleError {
    /// The HPA could not be read.
    #[error("failed to get HorizontalPodAutoscaler {namespace}/{name}: {source}")]
    GetHpa {
        /// Namespace.
        namespace: String,
        /// HPA name.
        name: String,
        /// Why.
        source: kube::Error,
    },
    /// The target's scale could not be read.
    #[error("failed to get the scale of Deployment {namespace}/{name}: {source}")]
    GetScale {
        /// Namespace.
        namespace: String,
        /// Deployment name.
        name: String,
        /// Why.
        source: kube::Error,
    },
    /// The target could not be scaled.
    #[error("failed to scale Deployment {namespace}/{name} to {replicas}: {source}")]
    Scale {
        /// Namespace.
        namespace: String,
        /// Deployment name.
        name: String,
        /// Replicas asked for.
        replicas: i64,
        /// Why.
        source: kube::Error,
    },
    /// The HPA's status could not be written.
    #[error("failed to patch the status of HorizontalPodAutoscaler {namespace}/{name}: {source}")]
    Status {
        /// Namespace.
        namespace: String,
        /// HPA name.
        name: String,
        /// Why.
        source: kube::Error,
    },
}

/// The `autoscaling/v2` HorizontalPodAutoscaler resource, read as JSON so its status is
/// compared and written exactly as [`hpa::plan`] computes it.
fn hpa_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("autoscaling", "v2", "HorizontalPodAutoscaler"),
        "horizontalpodautoscalers",
    )
}

/// Syncs every HPA with a load figure in `loads` every `period` until `shutdown`.
pub async fn run(client: Client, loads: Arc<Loads>, period: Duration, shutdown: Shutdown) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = tick.tick() => {
                for ((namespace, name), load) in loads.entries() {
                    if let Err(err) = sync_one(&client, &namespace, &name, load).await {
                        tracing::warn!(%err, "hpa sync failed");
                    }
                }
            }
        }
    }
}

/// One sync of one HPA: read it and its target's scale, plan, scale, write the status.
pub async fn sync_one(
    client: &Client,
    namespace: &str,
    name: &str,
    load: f64,
) -> Result<(), AutoscaleError> {
    let hpas: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &hpa_resource());
    let object = match hpas.get(name).await {
        Ok(object) => object,
        // A load may be set before its HPA is created.
        Err(kube::Error::Api(status)) if status.is_not_found() => {
            tracing::debug!(%namespace, hpa = %name, "no such HPA yet");
            return Ok(());
        }
        Err(source) => {
            return Err(AutoscaleError::GetHpa {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                source,
            });
        }
    };
    let hpa = hpa_json(&object);
    let (kind, target) = hpa::scale_target(&hpa);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let current = if kind == "Deployment" {
        match deployments.get_scale(target).await {
            Ok(scale) => Some(i64::from(scale.spec.and_then(|s| s.replicas).unwrap_or(1))),
            Err(kube::Error::Api(status)) if status.is_not_found() => None,
            Err(source) => {
                return Err(AutoscaleError::GetScale {
                    namespace: namespace.to_owned(),
                    name: target.to_owned(),
                    source,
                });
            }
        }
    } else {
        None
    };
    let plan = hpa::plan(&hpa, current, load, &now_rfc3339());
    if let Some(replicas) = plan.scale_to {
        deployments
            .patch_scale(
                target,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": replicas}})),
            )
            .await
            .map_err(|source| AutoscaleError::Scale {
                namespace: namespace.to_owned(),
                name: target.to_owned(),
                replicas,
                source,
            })?;
        tracing::info!(%namespace, hpa = %name, %target, replicas, load, "scaled");
    }
    if hpa.get("status") != Some(&plan.status) {
        hpas.patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": plan.status})),
        )
        .await
        .map_err(|source| AutoscaleError::Status {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            source,
        })?;
    }
    Ok(())
}

/// The HPA as the JSON [`hpa::plan`] reads: metadata, spec and status.
fn hpa_json(object: &DynamicObject) -> Value {
    let mut hpa = object.data.clone();
    if !hpa.is_object() {
        hpa = json!({});
    }
    let mut metadata = json!({
        "namespace": object.metadata.namespace,
        "name": object.metadata.name,
    });
    if let Some(generation) = object.metadata.generation {
        metadata["generation"] = json!(generation);
    }
    hpa["metadata"] = metadata;
    hpa
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_planned_hpa_keeps_its_spec_status_and_generation() {
        let object: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web", "namespace": "default", "generation": 2},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 3},
            "status": {"currentReplicas": 1, "desiredReplicas": 1},
        }))
        .unwrap();
        let hpa = hpa_json(&object);
        assert_eq!(hpa::scale_target(&hpa), ("Deployment", "web"));
        let plan = hpa::plan(&hpa, Some(1), 3.0, "2025-01-01T00:00:00Z");
        assert_eq!(plan.scale_to, Some(3));
        assert_eq!(plan.status["observedGeneration"], 2);
    }
}
