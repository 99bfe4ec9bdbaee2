//! Commands from callers (abort, pause, resume, promote) applied to a rollout's state.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::edits::adopt_route;
use super::endings::{begin_rollback, fail, left_as_is};
use super::promotion::begin_promotion;
use super::{Decision, Observation, settle_gates};
use crate::domain::{EventKind, Phase, Rollout, RouteView};

/// The answer to a command on a finished rollout: an abort changes nothing (it is
/// idempotent), the others are refused.
pub fn command_on_finished(state: &Rollout, command: &Command) -> Result<(), Refused> {
    let verb = match command {
        Command::Abort { .. } => return Ok(()),
        Command::Pause { .. } => "paused",
        Command::Resume => "resumed",
        Command::Promote => "promoted",
    };
    Err(Refused(format!(
        "rollout {} has finished ({}) and cannot be {verb}",
        state.id,
        state.phase.name()
    )))
}

/// A caller's command.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Abort { reason: String },
    Pause { reason: String },
    Resume,
    Promote,
}

/// Why a command cannot apply to the rollout as it stands.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// Applies a caller's command. Commands that change nothing (aborting a finished rollout,
/// pausing a paused one) succeed with no events.
pub fn apply_command(
    state: &Rollout,
    command: &Command,
    obs: &Observation,
    now: DateTime<Utc>,
) -> Result<Decision, Refused> {
    let mut d = Decision::new(state);
    d.wake = Duration::ZERO;
    let phase = state.phase;
    if phase.is_terminal() {
        return command_on_finished(state, command).map(|()| d);
    }
    match command {
        Command::Abort { reason } => {
            // A rollback already does what an abort asks (traffic on GA, canary scaled
            // down): it carries on with its own reason, and nothing is written twice.
            if phase == Phase::RollingBack {
                return Ok(d);
            }
            if phase == Phase::Promoting {
                return Err(Refused(promotion_cannot_be_aborted(state)));
            }
            let reason = if reason.trim().is_empty() {
                "aborted by request".to_owned()
            } else {
                format!("aborted: {}", reason.trim())
            };
            match &obs.route {
                RouteView::Missing | RouteView::Broken(_) => {
                    abort_unroutable(&mut d, state, obs, &reason, now);
                }
                _ => begin_rollback(&mut d, Phase::Aborted, reason, now, obs.scale_down_delay),
            }
        }
        Command::Pause { reason } => match phase {
            Phase::Paused => return Ok(d),
            Phase::Pending | Phase::Progressing => {
                d.next.paused_from = Some(phase);
                d.next.phase = Phase::Paused;
                d.next.gates.waiting_for = None;
                let message = if reason.trim().is_empty() {
                    format!("paused at canary weight {}%", state.canary_weight)
                } else {
                    format!(
                        "paused at canary weight {}%: {}",
                        state.canary_weight,
                        reason.trim()
                    )
                };
                d.emit(EventKind::Paused, message);
            }
            _ => {
                return Err(Refused(format!(
                    "rollout {} is {} and can no longer be paused",
                    state.id,
                    phase.name()
                )));
            }
        },
        Command::Resume => match phase {
            Phase::Paused => {
                match &obs.route {
                    RouteView::Missing => {
                        return Err(Refused(format!(
                            "rollout {}: {} no longer exists; recreate it and resume, or abort",
                            state.id,
                            state.route.in_namespace(&state.namespace)
                        )));
                    }
                    RouteView::Broken(why) => {
                        return Err(Refused(format!(
                            "rollout {}: {} no longer splits traffic between GA and canary ({why}); fix it and resume, or abort",
                            state.id,
                            state.route.in_namespace(&state.namespace)
                        )));
                    }
                    _ => {}
                }
                d.next.phase = state.paused_from.unwrap_or(Phase::Progressing);
                d.next.paused_from = None;
                // Time spent paused is not time spent halted.
                d.next.halted_since = None;
                d.next.halt_reason = None;
                d.next.last_step_at = Some(now);
                let adopted = adopt_route(&mut d, state, obs, now);
                let mut message = format!("resumed at canary weight {}%", d.next.canary_weight);
                if let Some(what) = adopted {
                    message.push_str(&format!(
                        "; the {} as changed outside steerer is adopted ({what})",
                        state.route.kind
                    ));
                }
                d.emit(EventKind::Resumed, message);
            }
            _ => return Ok(d),
        },
        Command::Promote => match phase {
            Phase::Promoting => return Ok(d),
            Phase::Progressing | Phase::Paused
                if !state.revision.is_empty() && state.paused_from != Some(Phase::Pending) =>
            {
                let (Some(ga), Some(canary)) = (&obs.ga, &obs.canary) else {
                    return Err(Refused(format!(
                        "rollout {}: deployment {}/{} or {}/{} no longer exists",
                        state.id, state.namespace, state.target, state.namespace, state.canary
                    )));
                };
                d.next.paused_from = None;
                d.next.halted_since = None;
                d.next.halt_reason = None;
                begin_promotion(&mut d, ga, canary, obs, "promoted by request", now);
            }
            Phase::Pending | Phase::Paused => {
                return Err(Refused(format!(
                    "rollout {}: the canary is not ready yet, so there is nothing to promote",
                    state.id
                )));
            }
            p => {
                return Err(Refused(format!(
                    "rollout {} is {} and cannot be promoted",
                    state.id,
                    p.name()
                )));
            }
        },
    }
    settle_gates(&mut d);
    d.next.updated_at = now;
    Ok(d)
}

/// The refusal of an abort once the promotion began: GA already has the canary's pod
/// template, and an abort could not put the old release back.
fn promotion_cannot_be_aborted(state: &Rollout) -> String {
    if state.traffic_off_canary_at.is_some() {
        return format!(
            "rollout {} cannot be aborted: revision {} is promoted and GA {}/{} serves all the traffic; the canary is being scaled down",
            state.id, state.revision, state.namespace, state.target
        );
    }
    format!(
        "rollout {} cannot be aborted while it is promoting: GA {}/{} is already rolling out the canary's pod template (revision {}), so an abort could not put the old release back; the rollout will finish promoting (or fail at its progress deadline, leaving traffic as it is)",
        state.id, state.namespace, state.target, state.revision
    )
}

/// An abort whose route is gone or no longer splits traffic: nothing can be routed
/// back to GA, so the rollout ends FAILED at once, saying what it could not undo.
fn abort_unroutable(
    d: &mut Decision,
    state: &Rollout,
    obs: &Observation,
    reason: &str,
    now: DateTime<Utc>,
) {
    let why = match &obs.route {
        RouteView::Broken(why) => format!(
            "{} no longer splits traffic between GA and canary ({why})",
            state.route.in_namespace(&state.namespace)
        ),
        _ => format!(
            "{} no longer exists",
            state.route.in_namespace(&state.namespace)
        ),
    };
    fail(
        d,
        now,
        format!(
            "failed: {reason}, but {why}, so traffic could not be routed back to GA; {}",
            left_as_is(state, obs)
        ),
    );
}

#[cfg(test)]
#[path = "commands_tests.rs"]
mod tests;
