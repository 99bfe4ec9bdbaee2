//! The HorizontalPodAutoscaler controller: every sync, each HPA scales its Deployment by the
//! load figure tests set, within its min and max, and reports status as the real one does.

use serde_json::{Value, json};

use super::Loads;
use super::deployment::deployments;
use crate::store::{GroupResource, Store, UpdateScope, now_rfc3339};

/// The `autoscaling/horizontalpodautoscalers` resource.
pub fn horizontal_pod_autoscalers() -> GroupResource {
    GroupResource::new("autoscaling", "horizontalpodautoscalers")
}

/// Loads within this distance of 1.0 change nothing (the HPA controller's default
/// `--horizontal-pod-autoscaler-tolerance`).
const TOLERANCE: f64 = 0.1;
const DEFAULT_TARGET_UTILIZATION: i64 = 80;

/// What one HPA decides from its target's replicas and its load: a pure function, so the
/// scaling rule is tested without time.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Replicas the target should have.
    pub desired: i64,
    /// Whether the target's replicas must be written.
    pub rescale: bool,
    /// `ScalingLimited` condition: `(status, reason, message)`.
    pub limited: (&'static str, &'static str, &'static str),
    /// Whether scaling is disabled because the target runs zero replicas.
    pub disabled: bool,
}

/// Decides an HPA's desired replicas: `ceil(current × load)` clamped to `[min, max]`, no
/// change within the tolerance, and nothing at all while the target is scaled to zero.
pub fn decide(current: i64, load: f64, min: i64, max: i64) -> Decision {
    if current == 0 && min != 0 {
        return Decision {
            desired: 0,
            rescale: false,
            limited: (
                "False",
                "DesiredWithinRange",
                "the desired count is within the acceptable range",
            ),
            disabled: true,
        };
    }
    let raw = if (load - 1.0).abs() <= TOLERANCE {
        current
    } else {
        (current as f64 * load).ceil() as i64
    };
    let (desired, limited) = if raw > max {
        (
            max,
            (
                "True",
                "TooManyReplicas",
                "the desired replica count is more than the maximum replica count",
            ),
        )
    } else if raw < min {
        (
            min,
            (
                "True",
                "TooFewReplicas",
                "the desired replica count is less than the minimum replica count",
            ),
        )
    } else {
        (
            raw,
            (
                "False",
                "DesiredWithinRange",
                "the desired count is within the acceptable range",
            ),
        )
    };
    Decision {
        desired,
        rescale: desired != current,
        limited,
        disabled: false,
    }
}

/// Runs one sync of every HPA.
pub fn sync_all(store: &Store, loads: &Loads) {
    let (hpas, _) = store.list(&horizontal_pod_autoscalers(), None);
    for hpa in hpas {
        if let Err(err) = sync_one(store, loads, &hpa) {
            tracing::warn!(%err, "hpa sync failed");
        }
    }
}

fn sync_one(store: &Store, loads: &Loads, hpa: &Value) -> Result<(), crate::ApiError> {
    let ns = hpa
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let name = hpa
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let (kind, target) = scale_target(hpa);
    let current = if kind == "Deployment" {
        store.get(&deployments(), ns, target).ok().map(|d| {
            d.pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(1)
        })
    } else {
        None
    };
    let plan = plan(hpa, current, loads.get(ns, name), &now_rfc3339());
    if let Some(replicas) = plan.scale_to {
        store.update(&deployments(), ns, target, UpdateScope::Spec, |old| {
            let mut new = old.clone();
            new["spec"]["replicas"] = json!(replicas);
            Ok(new)
        })?;
    }
    write_status(store, ns, name, hpa, plan.status)
}

/// The kind and name of an HPA's `spec.scaleTargetRef` (empty when missing).
pub fn scale_target(hpa: &Value) -> (&str, &str) {
    let field = |f: &str| {
        hpa.pointer(&format!("/spec/scaleTargetRef/{f}"))
            .and_then(Value::as_str)
            .unwrap_or_default()
    };
    (field("kind"), field("name"))
}

/// What one HPA sync does: the replicas to write to the target (if they change) and the
/// HPA's new status.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Replicas to give the target, when they change.
    pub scale_to: Option<i64>,
    /// The whole new `status` of the HPA.
    pub status: Value,
}

/// Plans one sync of `hpa` from its target's replicas (`None`: the target was not found or
/// is not a Deployment) and its load figure, with `stamp` as the time of any transition. Pure,
/// so the simulator's controller and the standalone mesh (through a real API server) scale
/// HPAs the same way.
pub fn plan(hpa: &Value, target_replicas: Option<i64>, load: f64, stamp: &str) -> Plan {
    let spec = hpa.get("spec").cloned().unwrap_or_else(|| json!({}));
    let (kind, target) = scale_target(hpa);
    let min = spec.get("minReplicas").and_then(Value::as_i64).unwrap_or(1);
    let max = spec
        .get("maxReplicas")
        .and_then(Value::as_i64)
        .unwrap_or(min)
        .max(min);
    let target_utilization = spec
        .get("metrics")
        .and_then(Value::as_array)
        .and_then(|metrics| {
            metrics.iter().find_map(|m| {
                (m.get("type").and_then(Value::as_str) == Some("Resource")
                    && m.pointer("/resource/name").and_then(Value::as_str) == Some("cpu"))
                .then(|| m.pointer("/resource/target/averageUtilization"))
                .flatten()
                .and_then(Value::as_i64)
            })
        })
        .unwrap_or(DEFAULT_TARGET_UTILIZATION);
    let old_status = hpa.get("status").cloned().unwrap_or_else(|| json!({}));
    let mut conditions: Vec<Value> = old_status
        .get("conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut set = |type_: &str, status: &str, reason: &str, message: String| {
        set_condition(&mut conditions, type_, status, reason, message, stamp);
    };

    let Some(current) = target_replicas else {
        set(
            "AbleToScale",
            "False",
            "FailedGetScale",
            format!(
                "the HPA controller was unable to get the target's current scale: {} \"{target}\" not found",
                if kind == "Deployment" {
                    "deployments/scale.apps".to_owned()
                } else {
                    format!("no scale for kind {kind}")
                }
            ),
        );
        let mut status = old_status.clone();
        status["conditions"] = json!(conditions);
        status["currentReplicas"] = status.get("currentReplicas").cloned().unwrap_or(json!(0));
        status["desiredReplicas"] = status.get("desiredReplicas").cloned().unwrap_or(json!(0));
        return Plan {
            scale_to: None,
            status,
        };
    };
    let decision = decide(current, load, min, max);

    let mut status = json!({
        "currentReplicas": current,
        "desiredReplicas": decision.desired,
    });
    if let Some(generation) = hpa.pointer("/metadata/generation") {
        status["observedGeneration"] = generation.clone();
    }
    if let Some(last) = old_status.get("lastScaleTime") {
        status["lastScaleTime"] = last.clone();
    }
    let mut scale_to = None;
    if decision.disabled {
        set(
            "AbleToScale",
            "True",
            "SucceededGetScale",
            "the HPA controller was able to get the target's current scale".into(),
        );
        set(
            "ScalingActive",
            "False",
            "ScalingDisabled",
            "scaling is disabled since the replica count of the target is zero".into(),
        );
    } else {
        let utilization = (load * target_utilization as f64).round() as i64;
        status["currentMetrics"] = json!([{
            "type": "Resource",
            "resource": {"name": "cpu", "current": {"averageUtilization": utilization}},
        }]);
        if decision.rescale {
            scale_to = Some(decision.desired);
            status["lastScaleTime"] = json!(stamp);
            set(
                "AbleToScale",
                "True",
                "SucceededRescale",
                format!(
                    "the HPA controller was able to update the target scale to {}",
                    decision.desired
                ),
            );
        } else {
            set(
                "AbleToScale",
                "True",
                "ReadyForNewScale",
                "recommended size matches current size".into(),
            );
        }
        set(
            "ScalingActive",
            "True",
            "ValidMetricFound",
            "the HPA was able to successfully calculate a replica count from cpu resource utilization (percentage of request)".into(),
        );
        let (status_, reason, message) = decision.limited;
        set("ScalingLimited", status_, reason, message.into());
    }
    status["conditions"] = json!(conditions);
    Plan { scale_to, status }
}

fn write_status(
    store: &Store,
    ns: &str,
    name: &str,
    hpa: &Value,
    status: Value,
) -> Result<(), crate::ApiError> {
    if hpa.get("status") == Some(&status) {
        return Ok(());
    }
    store.update(
        &horizontal_pod_autoscalers(),
        ns,
        name,
        UpdateScope::Status,
        |old| {
            let mut new = old.clone();
            new["status"] = status.clone();
            Ok(new)
        },
    )?;
    Ok(())
}

/// Replaces a condition in place (HPA conditions keep their order); the transition time only
/// moves when the status does.
fn set_condition(
    conditions: &mut Vec<Value>,
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    stamp: &str,
) {
    let new = json!({"type": type_, "status": status, "lastTransitionTime": stamp,
                     "reason": reason, "message": message});
    match conditions
        .iter_mut()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(type_))
    {
        Some(current) => {
            let mut new = new;
            if current.get("status").and_then(Value::as_str) == Some(status) {
                new["lastTransitionTime"] = current["lastTransitionTime"].clone();
            }
            *current = new;
        }
        None => conditions.push(new),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn double_load_scales_up_to_the_maximum() {
        let d = decide(2, 2.0, 2, 3);
        assert_eq!((d.desired, d.rescale), (3, true));
        assert_eq!(d.limited.1, "TooManyReplicas");
    }

    #[test]
    fn light_load_scales_down_to_the_minimum() {
        let d = decide(4, 0.3, 2, 4);
        assert_eq!((d.desired, d.rescale), (2, true));
        let d = decide(4, 0.1, 2, 4);
        assert_eq!((d.desired, d.rescale), (2, true));
        assert_eq!(d.limited.1, "TooFewReplicas");
    }

    #[test]
    fn load_within_tolerance_changes_nothing() {
        let d = decide(3, 1.05, 1, 10);
        assert_eq!((d.desired, d.rescale), (3, false));
        assert_eq!(d.limited.0, "False");
    }

    #[test]
    fn plan_of_a_doubled_load_rescales_and_reports_the_new_desired_count() {
        let hpa = json!({
            "metadata": {"name": "web", "namespace": "default", "generation": 3},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"},
                     "minReplicas": 2, "maxReplicas": 4},
        });
        let plan = plan(&hpa, Some(2), 2.0, "2025-01-01T00:00:00Z");
        assert_eq!(plan.scale_to, Some(4));
        assert_eq!(plan.status["currentReplicas"], 2);
        assert_eq!(plan.status["desiredReplicas"], 4);
        assert_eq!(plan.status["observedGeneration"], 3);
        assert_eq!(plan.status["lastScaleTime"], "2025-01-01T00:00:00Z");
        let missing = super::plan(&hpa, None, 2.0, "2025-01-01T00:00:00Z");
        assert_eq!(missing.scale_to, None);
        assert_eq!(missing.status["conditions"][0]["reason"], "FailedGetScale");
    }

    #[test]
    fn target_at_zero_disables_scaling() {
        let d = decide(0, 3.0, 2, 4);
        assert!(d.disabled);
        assert!(!d.rescale);
    }
}
