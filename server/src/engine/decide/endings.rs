//! Endings other than success: rollbacks (and aborts) that route all traffic to GA, and
//! failures that say what they leave behind (their drain is `finish`).

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{Action, ActionFailure, Decision, IDLE, Observation, scaled_down_in};
use crate::domain::{Ending, EventKind, Phase, Rollout, RouteView};

/// Marks the rollout failed when one of its Deployments is gone, sending traffic to GA.
pub(super) fn objects_missing(
    d: &mut Decision,
    state: &Rollout,
    obs: &Observation,
    now: DateTime<Utc>,
) -> bool {
    let missing = match (&obs.ga, &obs.canary) {
        (None, _) => &state.target,
        (_, None) => &state.canary,
        _ => return false,
    };
    if state.canary_weight > 0 {
        d.actions.push(Action::SetCanaryWeight(0));
    }
    d.next.canary_weight = 0;
    d.next.phase = Phase::Failed;
    d.next.finished_at = Some(now);
    d.emit(
        EventKind::Failed,
        format!(
            "failed: deployment {}/{} no longer exists; all traffic on GA",
            state.namespace, missing
        ),
    );
    true
}

/// What a rollout that ends without finishing leaves behind, for the person who must clean up.
pub(super) fn left_as_is(state: &Rollout, obs: &Observation) -> String {
    let traffic = match &obs.route {
        _ if state.traffic_off_canary_at.is_some() || state.phase == Phase::RollingBack => {
            "all traffic had been routed to GA".to_owned()
        }
        RouteView::Split { canary_weight, .. } => {
            format!(
                "the {} routes {canary_weight}% of the traffic to the canary",
                state.route.kind
            )
        }
        _ => format!(
            "traffic stays where steerer last routed it ({}% to the canary)",
            state.canary_weight
        ),
    };
    let canary = match obs.canary.as_ref().map(|c| c.spec_replicas) {
        Some(n) if n > 0 => format!("canary {} keeps its {n} replicas", state.canary),
        Some(_) => format!("canary {} has no replicas", state.canary),
        None => format!("canary {} no longer exists", state.canary),
    };
    let ga = if state.phase == Phase::Promoting || state.promoted_template.is_some() {
        format!(
            "GA {} has the pod template of revision {} (the promotion had begun)",
            state.target, state.revision
        )
    } else {
        format!("GA {} is unchanged", state.target)
    };
    let doing = match (&state.ending, state.phase) {
        (Some(ending), Phase::RollingBack) => format!("it was rolling back ({}): ", ending.reason),
        _ => String::new(),
    };
    format!("{doing}{traffic}; {canary}; {ga}")
}

pub(super) fn fail(d: &mut Decision, now: DateTime<Utc>, message: String) {
    d.next.phase = Phase::Failed;
    d.next.finished_at = Some(now);
    d.next.promotion_min_ready = None;
    d.next.promoting_since = None;
    d.next.paused_from = None;
    d.wake = IDLE;
    d.emit(EventKind::Failed, message);
}

/// What an action does, as the object of "could not …".
fn describe(action: &Action) -> String {
    match action {
        Action::SetCanaryWeight(0) => "route all traffic to GA".to_owned(),
        Action::SetCanaryWeight(w) => format!("set the canary weight to {w}%"),
        Action::ScaleCanary(0) => "scale the canary down".to_owned(),
        Action::ScaleCanary(n) => format!("scale the canary to {n} replicas"),
        Action::ScaleGa(n) => format!("scale GA to {n} replicas"),
        Action::ApplyImages => "apply the requested images to the canary".to_owned(),
        Action::PromoteTemplate => "copy the canary's pod template over GA".to_owned(),
    }
}

/// An action failed with an error retrying cannot fix: the rollout ends FAILED, saying what
/// it could not do and what it leaves behind.
pub(super) fn cannot_act(
    d: &mut Decision,
    state: &Rollout,
    obs: &Observation,
    failure: &ActionFailure,
    now: DateTime<Utc>,
) {
    // An abort whose first write failed keeps its reason (a rollback under way says its
    // own in `left_as_is`): the operator's words survive.
    let during = match (&state.ending, state.phase) {
        (Some(ending), phase) if phase != Phase::RollingBack => format!("{}, but ", ending.reason),
        _ => String::new(),
    };
    fail(
        d,
        now,
        format!(
            "failed: {during}could not {}: {} (retrying cannot fix this); {}",
            describe(&failure.action),
            failure.error,
            left_as_is(state, obs)
        ),
    );
}

/// The route is gone: traffic can neither be moved nor verified, so the rollout
/// ends FAILED, leaving the canary's pods in place.
pub(super) fn route_missing(
    d: &mut Decision,
    state: &Rollout,
    obs: &Observation,
    now: DateTime<Utc>,
) {
    fail(
        d,
        now,
        format!(
            "failed: {} no longer exists, so steerer can neither move traffic nor tell where it goes; {}; recreate the {} or route the traffic yourself before scaling the canary down",
            state.route.in_namespace(&state.namespace),
            left_as_is(state, obs),
            state.route.kind
        ),
    );
}

/// Sends all traffic to GA in one write; the canary is scaled down a scale-down delay later.
pub(super) fn begin_rollback(
    d: &mut Decision,
    phase: Phase,
    reason: String,
    now: DateTime<Utc>,
    delay: Duration,
) {
    d.actions.push(Action::SetCanaryWeight(0));
    d.next.canary_weight = 0;
    d.next.phase = Phase::RollingBack;
    d.next.paused_from = None;
    d.next.traffic_off_canary_at = Some(now);
    d.next.ending = Some(Ending {
        phase,
        reason: reason.clone(),
    });
    d.wake = delay;
    d.emit(
        EventKind::RollingBack,
        format!(
            "rolling back: {reason}; all traffic on GA, canary scaled down {}",
            scaled_down_in(delay)
        ),
    );
}

#[cfg(test)]
#[path = "endings_tests.rs"]
mod tests;
