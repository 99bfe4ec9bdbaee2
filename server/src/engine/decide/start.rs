//! The start of a rollout: the admission rules a request must pass before anything changes,
//! and the first state with its `Started` event.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::Decision;
use crate::domain::{AnalysisSettings, DeploymentView, EventKind, Phase, Rollout, RouteRef};
use crate::engine::StartRequest;

/// Why a start is not admitted. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotAdmitted {
    /// The request contradicts itself (a canary named like its target).
    #[error("{0}")]
    Invalid(String),
    /// A Deployment it names does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The target already has an active rollout.
    #[error("{0}")]
    AlreadyActive(String),
    /// The cluster cannot carry it out as asked (an image for a container the canary lacks).
    #[error("{0}")]
    Refused(String),
}

/// The canary a start names: the request's, or `TARGET-canary` when it names none.
pub fn canary_name(request: &StartRequest) -> String {
    if request.canary.is_empty() {
        format!("{}-canary", request.target)
    } else {
        request.canary.clone()
    }
}

/// The admission rules of a start, on what the server knows already: no other rollout is
/// active for the target (`active`), the canary is not the target, GA and the canary
/// (`ga`, `canary`, as the workloads cache has them) exist, and the canary has a container
/// for every image the request sets. Returns the canary.
pub fn admit<'a>(
    request: &StartRequest,
    active: Option<&Rollout>,
    ga: Option<&DeploymentView>,
    canary: Option<&'a DeploymentView>,
) -> Result<&'a DeploymentView, NotAdmitted> {
    let ns = &request.namespace;
    if let Some(active) = active {
        return Err(NotAdmitted::AlreadyActive(format!(
            "rollout {} is already active for deployment {ns}/{} ({})",
            active.id,
            request.target,
            active.phase.name()
        )));
    }
    let canary_name = canary_name(request);
    if canary_name == request.target {
        return Err(NotAdmitted::Invalid(
            "canary must differ from target".into(),
        ));
    }
    if ga.is_none() {
        return Err(NotAdmitted::NotFound(format!(
            "deployment {ns}/{} not found",
            request.target
        )));
    }
    let canary = canary.ok_or_else(|| {
        NotAdmitted::NotFound(format!("canary deployment {ns}/{canary_name} not found"))
    })?;
    let containers = canary.images();
    if let Some(missing) = request
        .images
        .keys()
        .find(|container| !containers.contains_key(*container))
    {
        let known: Vec<&str> = containers.keys().map(String::as_str).collect();
        return Err(NotAdmitted::Refused(format!(
            "canary deployment {ns}/{canary_name} has no container named {missing} (it has: {})",
            known.join(", ")
        )));
    }
    Ok(canary)
}

/// The rollout an admitted request asks for, before its first state: rollout `id` of the
/// request's target and `canary`, splitting traffic with `route`.
pub fn requested(
    request: &StartRequest,
    id: String,
    canary: String,
    route: RouteRef,
    now: DateTime<Utc>,
) -> Rollout {
    let mut rollout = Rollout::new(
        id,
        request.namespace.clone(),
        request.target.clone(),
        canary,
        route,
        request.analysis.clone(),
        now,
    );
    rollout.request_id = request.request_id.clone();
    rollout.created_by = request.created_by.clone();
    rollout.images = request.images.clone();
    rollout.canary_replicas = request.canary_replicas;
    rollout
}

/// The first state of a rollout, checked against the cluster by the caller, and its
/// `Started` event: pending at the canary weight the route routes now, with the
/// canary's current revision and the fingerprint of the routes it splits.
pub fn start(
    rollout: Rollout,
    canary_revision: String,
    canary_weight: u32,
    route_fingerprint: String,
) -> Decision {
    let mut d = Decision::new(&rollout);
    d.next.phase = Phase::Pending;
    d.next.revision = canary_revision;
    d.next.canary_weight = canary_weight;
    d.next.route_fingerprint = Some(route_fingerprint);
    d.wake = Duration::ZERO;
    let settings = &rollout.analysis;
    d.emit(
        EventKind::Started,
        format!(
            "rollout of {}/{} started: canary {} via {}, {} every {}, success rate >= {}%{}",
            rollout.namespace,
            rollout.target,
            rollout.canary,
            rollout.route,
            settings.strategy.describe(),
            humantime::format_duration(settings.interval),
            settings.success_rate_threshold,
            settings
                .max_latency_p99_ms
                .map(|max| format!(", p99 latency <= {max}ms"))
                .unwrap_or_default()
        ) + &judged_on(settings),
    );
    d
}

/// What a rollout is judged on besides its success rate and latency, for its first event.
fn judged_on(settings: &AnalysisSettings) -> String {
    let mut parts = Vec::new();
    if !settings.metrics.is_empty() {
        let metrics: Vec<String> = settings
            .metrics
            .iter()
            .map(|m| format!("{} {}", m.template, m.bounds()))
            .collect();
        parts.push(format!("metrics {}", metrics.join(", ")));
    }
    if !settings.webhooks.is_empty() {
        let hooks: Vec<String> = settings
            .webhooks
            .iter()
            .map(|w| format!("{} ({})", w.name, w.kind.name()))
            .collect();
        parts.push(format!("webhooks {}", hooks.join(", ")));
    }
    if settings.require_approval {
        parts.push("promotion awaits approval (PromoteRollout)".to_owned());
    }
    parts.iter().map(|p| format!("; {p}")).collect()
}

#[cfg(test)]
#[path = "start_tests.rs"]
mod tests;
