//! The promotion: GA gets the canary's pod template, traffic returns to GA once GA is ready,
//! the canary is scaled down a delay later, and the rollout succeeds.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::edits::route_edit;
use super::endings::objects_missing;
use super::finish::drained;
use super::gates::post_rollout_pending;
use super::health::halt_reason;
use super::plan::restart;
use super::{Action, Decision, IDLE, Observation, human, scaled_down_in, watching};
use crate::domain::{
    DeploymentView, EventKind, Phase, Rollout, RouteView, promoted_template, template_hash,
};

pub(super) fn begin_promotion(
    d: &mut Decision,
    ga: &DeploymentView,
    canary: &DeploymentView,
    obs: &Observation,
    why: &str,
    now: DateTime<Utc>,
) {
    let mut need = ga.spec_replicas.max(canary.ready_replicas).max(1);
    if let Some(hpa) = &obs.ga_hpa {
        need = need.min(hpa.max_replicas.max(1));
    }
    d.next.phase = Phase::Promoting;
    d.next.promotion_min_ready = Some(need);
    d.next.promoting_since = Some(now);
    d.next.promoted_template = Some(template_hash(&promoted_template(
        &canary.template,
        &canary.selector,
        &ga.selector,
    )));
    d.next.quiet = None;
    d.wake = Duration::ZERO;
    if !obs.ga_runs_canary {
        d.actions.push(Action::PromoteTemplate);
    }
    d.emit(
        EventKind::Promoting,
        format!(
            "promoting revision {}: {why}; GA gets the canary pod template and needs {need} ready replicas before traffic returns to it",
            d.next.revision
        ),
    );
}

pub(super) fn promoting(d: &mut Decision, state: &Rollout, obs: &Observation, now: DateTime<Utc>) {
    if state.traffic_off_canary_at.is_some() {
        // Promoted and all traffic on GA: the canary waits out the scale-down delay (a
        // canary deleted meanwhile has nothing left to scale down).
        if post_rollout_pending(d, state, obs) {
            return;
        }
        if drained(d, state, obs, now) {
            succeeded(d, state, obs.canary.as_ref(), now);
        }
        return;
    }
    if objects_missing(d, state, obs, now) {
        return;
    }
    let (Some(ga), Some(canary)) = (&obs.ga, &obs.canary) else {
        return;
    };
    // A promotion resumed from a state written before promotions had a deadline gets a
    // whole one from now.
    let since = state.promoting_since.unwrap_or(now);
    d.next.promoting_since = Some(since);
    let elapsed = (now - since).to_std().unwrap_or(Duration::ZERO);
    watching(
        d,
        state,
        state.analysis.progress_deadline.saturating_sub(elapsed),
    );
    match (&obs.route, route_edit(state, obs)) {
        (RouteView::Broken(why), _) => {
            promotion_overdue(
                d,
                state,
                since,
                now,
                format!(
                    "waiting for {} to split traffic between GA and canary again ({why})",
                    state.route
                ),
            );
            return;
        }
        (
            RouteView::Split {
                canary_weight,
                fingerprint,
            },
            Some(what),
        ) => {
            // GA already has the canary's template: the promotion goes on, and its last step
            // routes all traffic to GA whatever the weights are now.
            d.next.canary_weight = *canary_weight;
            d.next.route_fingerprint = Some(fingerprint.clone());
            d.emit(
                EventKind::WeightChanged,
                format!(
                    "{} was changed outside steerer during the promotion ({what}); the promotion carries on and routes all traffic to GA once GA is ready",
                    state.route
                ),
            );
        }
        (RouteView::Split { fingerprint, .. }, None) if state.route_fingerprint.is_none() => {
            d.next.route_fingerprint = Some(fingerprint.clone());
        }
        _ => {}
    }
    // Since the promotion began GA has been given the promoted revision's template, so that
    // is what GA must run; a state from before that was recorded compares with the canary.
    let ga_runs_it = match &state.promoted_template {
        Some(hash) => template_hash(&ga.template) == *hash,
        None => obs.ga_runs_canary,
    };
    if !ga_runs_it {
        let revision = canary.revision();
        if revision != state.revision {
            if state.promoted_template.is_none() {
                restart(d, state, &revision);
                return;
            }
            // GA was given revision R; the canary has moved on since. Never copy the new
            // revision over GA (nobody analysed it); wait for GA to show R.
            promotion_overdue(
                d,
                state,
                since,
                now,
                format!(
                    "GA does not run revision {}'s pod template yet (the canary has moved on to revision {revision}, which this rollout does not promote)",
                    state.revision
                ),
            );
            return;
        }
        if !promotion_overdue(
            d,
            state,
            since,
            now,
            "GA does not run the canary's pod template yet".to_owned(),
        ) {
            d.actions.push(Action::PromoteTemplate);
        }
        return;
    }
    let need = state.promotion_min_ready.unwrap_or(1);
    if ga.spec_replicas < need {
        let waiting = format!(
            "scaling GA from {} to {need} replicas before traffic returns to it",
            ga.spec_replicas
        );
        if !promotion_overdue(d, state, since, now, waiting) {
            d.actions.push(Action::ScaleGa(need));
        }
        return;
    }
    if let Some(reason) = halt_reason("GA", ga, obs.ga_hpa.as_ref()) {
        promotion_overdue(d, state, since, now, format!("waiting for GA: {reason}"));
        return;
    }
    if ga.ready_replicas < need {
        promotion_overdue(
            d,
            state,
            since,
            now,
            format!(
                "waiting for GA: {} of {need} replicas ready",
                ga.ready_replicas
            ),
        );
        return;
    }
    d.actions.push(Action::SetCanaryWeight(0));
    d.next.canary_weight = 0;
    d.next.traffic_off_canary_at = Some(now);
    d.next.promotion_min_ready = None;
    d.wake = obs.scale_down_delay;
    d.emit(
        EventKind::Promoted,
        format!(
            "GA runs revision {} with {} ready replicas; all traffic on GA; canary {} scaled down {}",
            state.revision,
            ga.ready_replicas,
            state.canary,
            scaled_down_in(obs.scale_down_delay)
        ),
    );
}

/// The end of a promotion: traffic on GA for a whole scale-down delay, canary scaled down.
fn succeeded(
    d: &mut Decision,
    state: &Rollout,
    canary: Option<&DeploymentView>,
    now: DateTime<Utc>,
) {
    d.next.phase = Phase::Succeeded;
    d.next.finished_at = Some(now);
    d.next.promotion_min_ready = None;
    d.next.promoting_since = None;
    d.wake = IDLE;
    let moved_on = match canary.map(DeploymentView::revision) {
        Some(revision) if revision != state.revision => format!(
            " (it has since moved on to revision {revision}, which this rollout did not analyse)"
        ),
        _ => String::new(),
    };
    d.emit(
        EventKind::Succeeded,
        format!(
            "succeeded: revision {} promoted; canary {}{moved_on} scaled to 0",
            state.revision, state.canary
        ),
    );
}

/// A promotion still waiting on GA: says what it waits for, and past the progress deadline
/// ends the rollout FAILED. Traffic stays where it is: GA's new pods are not ready, so moving
/// traffic onto GA could drop requests, while the canary's pods are ready and GA's old pods
/// still serve their share. Returns whether the rollout failed.
fn promotion_overdue(
    d: &mut Decision,
    state: &Rollout,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
    waiting: String,
) -> bool {
    let elapsed = (now - since).to_std().unwrap_or(Duration::ZERO);
    let deadline = state.analysis.progress_deadline;
    if elapsed < deadline {
        d.next.message = format!("promoting: {waiting}");
        return false;
    }
    d.next.phase = Phase::Failed;
    d.next.finished_at = Some(now);
    d.next.promotion_min_ready = None;
    d.next.promoting_since = None;
    d.wake = IDLE;
    d.emit(
        EventKind::Failed,
        format!(
            "failed: promotion of revision {} did not finish within the progress deadline of {} ({waiting}); traffic left as it is, {}% on the canary (ready) and {}% on GA, canary {} keeps its replicas; fix GA {}/{}, then move traffic or start a new rollout",
            state.revision,
            human(deadline),
            state.canary_weight,
            100 - state.canary_weight.min(100),
            state.canary,
            state.namespace,
            state.target
        ),
    );
    true
}

#[cfg(test)]
#[path = "promotion_tests.rs"]
mod tests;
