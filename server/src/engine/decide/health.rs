//! The health gate on Deployments and HPAs: why a Deployment cannot take a step now, and
//! whether GA already runs the canary's pod template.

use super::Observation;
use crate::domain::{DeploymentView, HpaView, promoted_template, template_hash};

/// Why the canary or GA cannot take a step now (the canary's reason first), with the HPAs
/// scaling them as observed; `None` when both are settled and healthy.
pub(super) fn workloads_halt(
    ga: &DeploymentView,
    canary: &DeploymentView,
    obs: &Observation,
) -> Option<String> {
    halt_reason("canary", canary, obs.canary_hpa.as_ref())
        .or_else(|| halt_reason("GA", ga, obs.ga_hpa.as_ref()))
}

/// Whether GA already runs the canary's pod template (with GA's own selector labels): the
/// canary's revision is GA's already, so promoting it copies nothing and auto mode has nothing
/// to start.
pub fn ga_runs_canary(ga: &DeploymentView, canary: &DeploymentView) -> bool {
    template_hash(&promoted_template(
        &canary.template,
        &canary.selector,
        &ga.selector,
    )) == template_hash(&ga.template)
}

/// Why a Deployment cannot take a step now, as a sentence; `None` when it is settled and
/// healthy. `role` is "canary" or "GA".
pub fn halt_reason(role: &str, d: &DeploymentView, hpa: Option<&HpaView>) -> Option<String> {
    if d.observed_generation < d.generation {
        return Some(format!(
            "{role} rolling update in progress, spec change not yet observed by the controller"
        ));
    }
    if d.updated_replicas < d.spec_replicas {
        return Some(format!(
            "{role} rolling update in progress, {} of {} replicas updated",
            d.updated_replicas, d.spec_replicas
        ));
    }
    if d.status_replicas > d.spec_replicas {
        return Some(format!(
            "{role} rolling update in progress, {} old replicas still terminating",
            d.status_replicas - d.spec_replicas
        ));
    }
    if let Some(hpa) = hpa {
        if !hpa.scaling_inactive && hpa.desired_replicas != hpa.current_replicas {
            return Some(format!(
                "HPA {} is scaling the {role} from {} to {} replicas",
                hpa.name, hpa.current_replicas, hpa.desired_replicas
            ));
        }
        if d.spec_replicas != hpa.current_replicas && d.spec_replicas != 0 {
            return Some(format!(
                "HPA {} has not settled on the {role}'s {} replicas yet (it last saw {})",
                hpa.name, d.spec_replicas, hpa.current_replicas
            ));
        }
    }
    if d.unavailable_replicas > 0
        || d.available_replicas < d.spec_replicas
        || d.ready_replicas < d.spec_replicas
    {
        let ready = d.ready_replicas.min(d.available_replicas);
        return Some(format!(
            "{role} has unhealthy pods, {} of {} replicas ready",
            ready, d.spec_replicas
        ));
    }
    None
}

#[cfg(test)]
#[path = "health_tests.rs"]
mod tests;
