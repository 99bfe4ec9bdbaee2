//! The drain that ends a rollout: the canary scaled to 0 a delay after traffic left it, the
//! post-rollout webhook called, then the rollback's or abort's final phase recorded.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::endings::{fail, left_as_is};
use super::gates::post_rollout_pending;
use super::{Action, Decision, IDLE, Observation, poll, scaled_down_in};
use crate::domain::{Ending, EventKind, Phase, Rollout, RouteView};

/// All traffic left the canary at `traffic_off_canary_at`. Once the scale-down delay has
/// passed and the route still sends the canary nothing, scales it down and returns
/// true (the caller ends the rollout). Traffic found on the canary again (someone routed it
/// there) goes back to GA and the delay starts over: the canary is never scaled down while
/// the route still sends it requests.
pub(super) fn drained(
    d: &mut Decision,
    state: &Rollout,
    obs: &Observation,
    now: DateTime<Utc>,
) -> bool {
    let delay = obs.scale_down_delay;
    let since = match state.traffic_off_canary_at {
        Some(since) => since,
        None => {
            // A state from before the delay was recorded: a whole delay from now.
            d.next.traffic_off_canary_at = Some(now);
            now
        }
    };
    match &obs.route {
        RouteView::Split {
            canary_weight: 0, ..
        } => {}
        RouteView::Split { canary_weight, .. } => {
            d.actions.push(Action::SetCanaryWeight(0));
            d.next.canary_weight = 0;
            d.next.traffic_off_canary_at = Some(now);
            d.wake = delay;
            d.emit(
                EventKind::WeightChanged,
                format!(
                    "{} routed {canary_weight}% to the canary again (changed outside steerer); all traffic back on GA, canary {} scaled down {}",
                    state.route,
                    state.canary,
                    scaled_down_in(delay)
                ),
            );
            return false;
        }
        RouteView::Broken(why) => {
            fail(
                d,
                now,
                format!(
                    "failed: {} no longer splits traffic between GA and canary ({why}), so steerer cannot tell whether the canary still gets traffic and does not scale it down; {}",
                    state.route.in_namespace(&state.namespace),
                    left_as_is(state, obs)
                ),
            );
            return false;
        }
        RouteView::Missing | RouteView::Unknown => {
            // Missing ends the rollout before this; unknown: look again.
            d.wake = poll(state);
            return false;
        }
    }
    let elapsed = (now - since).to_std().unwrap_or(Duration::ZERO);
    if let Some(left) = delay.checked_sub(elapsed).filter(|l| !l.is_zero()) {
        d.wake = left;
        return false;
    }
    if obs.canary.as_ref().is_some_and(|c| c.spec_replicas > 0) {
        d.actions.push(Action::ScaleCanary(0));
    }
    true
}

pub(super) fn rolling_back(
    d: &mut Decision,
    state: &Rollout,
    obs: &Observation,
    now: DateTime<Utc>,
) {
    if post_rollout_pending(d, state, obs) || !drained(d, state, obs, now) {
        return;
    }
    let ending = state.ending.clone().unwrap_or(Ending {
        phase: Phase::RolledBack,
        reason: "rolled back".to_owned(),
    });
    d.next.phase = ending.phase;
    d.next.finished_at = Some(now);
    d.wake = IDLE;
    // An abort's reason already says it was aborted ("aborted: …", "aborted by request").
    let (kind, ended) = match ending.phase {
        Phase::Aborted => (EventKind::Aborted, ending.reason),
        _ => (
            EventKind::RolledBack,
            format!("rolled back: {}", ending.reason),
        ),
    };
    d.emit(
        kind,
        format!(
            "{ended}; canary {} scaled to 0, all traffic on GA",
            state.canary
        ),
    );
}
