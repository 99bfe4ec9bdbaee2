//! Hand edits of the route: what someone else changed since steerer last wrote it, the pause
//! that follows, and the adoption of the route as it is on resume.

use chrono::{DateTime, Utc};

use super::{Decision, IDLE, Observation};
use crate::domain::{EventKind, Phase, Rollout, RouteView};

/// What someone else changed in the route since steerer last wrote it, as a phrase;
/// `None` when it is as steerer left it (or cannot be read).
pub(super) fn route_edit(state: &Rollout, obs: &Observation) -> Option<String> {
    match &obs.route {
        RouteView::Split {
            canary_weight,
            fingerprint,
        } => {
            let mut changes = Vec::new();
            if *canary_weight != state.canary_weight
                && obs.unrecorded_weight != Some(*canary_weight)
            {
                changes.push(format!(
                    "canary weight {}% -> {canary_weight}%",
                    state.canary_weight
                ));
            }
            if state
                .route_fingerprint
                .as_ref()
                .is_some_and(|f| f != fingerprint)
            {
                changes.push(
                    "the destinations or match conditions of its routes to GA and canary changed"
                        .to_owned(),
                );
            }
            (!changes.is_empty()).then(|| changes.join(", "))
        }
        RouteView::Broken(why) => Some(format!(
            "it no longer splits traffic between GA and canary: {why}"
        )),
        RouteView::Missing | RouteView::Unknown => None,
    }
}

/// Takes the route as it is (a resume after a hand edit): its canary weight and
/// routes become the rollout's. Returns what changed, if anything.
pub(super) fn adopt_route(
    d: &mut Decision,
    state: &Rollout,
    obs: &Observation,
    now: DateTime<Utc>,
) -> Option<String> {
    let RouteView::Split {
        canary_weight,
        fingerprint,
    } = &obs.route
    else {
        return None;
    };
    let edit = route_edit(state, obs);
    d.next.canary_weight = *canary_weight;
    d.next.route_fingerprint = Some(fingerprint.clone());
    if *canary_weight > 0 && d.next.traffic_since.is_none() {
        d.next.traffic_since = Some(now);
    }
    edit
}

/// Halts a rollout whose route was changed by hand: it is paused, leaving the
/// route as it is, until an operator resumes (adopting the change) or aborts.
/// Returns whether it paused.
pub(super) fn paused_for_edit(d: &mut Decision, state: &Rollout, obs: &Observation) -> bool {
    let Some(what) = route_edit(state, obs) else {
        if let RouteView::Split { fingerprint, .. } = &obs.route
            && state.route_fingerprint.is_none()
        {
            // A state stored before routes were fingerprinted: take them as they are.
            d.next.route_fingerprint = Some(fingerprint.clone());
        }
        return false;
    };
    let next = if matches!(obs.route, RouteView::Broken(_)) {
        "fix it, then resume; an abort cannot route traffic back to GA while it is broken"
    } else {
        "resume to carry on from it as it is now, or abort to route all traffic back to GA"
    };
    d.next.paused_from = Some(state.phase);
    d.next.phase = Phase::Paused;
    d.next.halted_since = None;
    d.next.halt_reason = None;
    d.wake = IDLE;
    d.emit(
        EventKind::Paused,
        format!(
            "paused: {} was changed outside steerer ({what}); steerer leaves it as it is: {next}",
            state.route.in_namespace(&state.namespace)
        ),
    );
    true
}

#[cfg(test)]
#[path = "edits_tests.rs"]
mod tests;
