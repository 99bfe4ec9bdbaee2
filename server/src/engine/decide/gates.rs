//! Gates: which webhooks are due before a decision, and what their answers (and an
//! operator's approval) let through: confirm-rollout, pre-rollout, rollback, confirm-promotion
//! and post-rollout.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::deadline::{halted, no_data};
use super::edits::route_edit;
use super::endings::begin_rollback;
use super::health::workloads_halt;
use super::judge::{Verdict, hooks_judged, verdict};
use super::plan::{check_due, interval_elapsed};
use super::quiet::Repeat;
use super::{Decision, Observation, poll};
use crate::domain::{
    AnalysisRecord, Breaches, CheckResult, EventKind, HookAnswer, Phase, Rollout, Sample,
    WebhookKind,
};

/// The webhooks to call before the next decision, by kind: confirm-rollout (and rollback)
/// once an interval while a pending rollout awaits confirmation (`gate_called_at`: when
/// they were last called), pre-rollout when the canary is ready for its first step (again
/// an interval after a failed attempt), rollout, rollback and (at the maximum weight)
/// confirm-promotion with every check, post-rollout once all traffic has left the canary
/// for good. Only kinds the rollout has.
pub fn hooks_due(
    state: &Rollout,
    obs: &Observation,
    now: DateTime<Utc>,
    gate_called_at: Option<DateTime<Utc>>,
) -> Vec<WebhookKind> {
    let settings = &state.analysis;
    let mut due = Vec::new();
    let mut add = |kind| {
        if settings.has_hooks(kind) {
            due.push(kind);
        }
    };
    match state.phase {
        Phase::Pending if awaits_confirmation(state) => {
            let again = gate_called_at.is_none_or(|at| {
                (now - at).to_std().unwrap_or(Duration::ZERO) >= settings.interval
            });
            if again {
                add(WebhookKind::ConfirmRollout);
                add(WebhookKind::Rollback);
            }
        }
        Phase::Pending if pre_rollout_due(state, obs, now) => add(WebhookKind::PreRollout),
        Phase::Progressing if check_due(state, obs, now) => {
            add(WebhookKind::Rollout);
            add(WebhookKind::Rollback);
            if settings
                .strategy
                .completes_at(state.canary_weight, state.passed_checks)
            {
                add(WebhookKind::ConfirmPromotion);
            }
        }
        Phase::RollingBack | Phase::Promoting if post_rollout_due(state) => {
            add(WebhookKind::PostRollout);
        }
        _ => {}
    }
    due
}

/// The phase a webhook's body names: the rollout's, except for post-rollout webhooks, which
/// get the phase the rollout ends in.
pub fn hook_phase(state: &Rollout, kind: WebhookKind) -> Phase {
    match (kind, state.phase) {
        (WebhookKind::PostRollout, Phase::Promoting) => Phase::Succeeded,
        (WebhookKind::PostRollout, Phase::RollingBack) => {
            state.ending.as_ref().map_or(Phase::RolledBack, |e| e.phase)
        }
        _ => state.phase,
    }
}

/// A pending rollout with confirm-rollout webhooks that have not all said yes.
fn awaits_confirmation(state: &Rollout) -> bool {
    !state.gates.rollout_confirmed && state.analysis.has_hooks(WebhookKind::ConfirmRollout)
}

/// A prepared canary that is ready for its first step but has pre-rollout webhooks to pass,
/// an interval after the last attempt.
fn pre_rollout_due(state: &Rollout, obs: &Observation, now: DateTime<Utc>) -> bool {
    if !state.prepared
        || state.gates.pre_rollout_passed
        || !state.analysis.has_hooks(WebhookKind::PreRollout)
        || interval_elapsed(state, now).is_some()
    {
        return false;
    }
    let (Some(ga), Some(canary)) = (&obs.ga, &obs.canary) else {
        return false;
    };
    route_edit(state, obs).is_none() && workloads_halt(ga, canary, obs).is_none()
}

/// All traffic has left the canary for good (a promotion routed it to GA, or a rollback)
/// and the post-rollout webhooks have not been called.
fn post_rollout_due(state: &Rollout) -> bool {
    !state.gates.post_rollout_sent
        && state.analysis.has_hooks(WebhookKind::PostRollout)
        && (state.phase == Phase::RollingBack
            || (state.phase == Phase::Promoting && state.traffic_off_canary_at.is_some()))
}

/// What a rollout waits for when it needs an operator's approval to promote.
pub const APPROVAL: &str = "approval: call PromoteRollout";

/// Whether every webhook of `kind` said yes: `Ok` says how they answered; `Err` names the
/// first that did not (or was not asked), as what the rollout waits for.
pub(super) fn gate(
    state: &Rollout,
    kind: WebhookKind,
    answers: &[&HookAnswer],
) -> Result<String, String> {
    let mut said = Vec::new();
    for hook in state.analysis.hooks(kind) {
        match answers.iter().find(|a| a.name == hook.name) {
            Some(answer) if answer.passed() => {
                said.push(format!("{} answered {}", hook.name, answer.detail()));
            }
            Some(answer) => {
                return Err(format!(
                    "{} webhook {} ({})",
                    kind.name(),
                    hook.name,
                    answer.detail()
                ));
            }
            None => return Err(format!("{} webhook {}", kind.name(), hook.name)),
        }
    }
    Ok(said.join(", "))
}

/// The breakdown entries of some answers.
fn results(answers: &[&HookAnswer]) -> Vec<CheckResult> {
    answers.iter().map(|a| a.result()).collect()
}

/// A rollback webhook answered 2xx: the rollout rolls back now, its event carrying the
/// answers. Returns whether it did.
pub(super) fn rollback_asked(d: &mut Decision, obs: &Observation, now: DateTime<Utc>) -> bool {
    let answers = obs.answers(WebhookKind::Rollback);
    let Some(yes) = answers.iter().find(|a| a.passed()) else {
        return false;
    };
    begin_rollback(
        d,
        Phase::RolledBack,
        format!("rollback webhook {} answered {}", yes.name, yes.detail()),
        now,
        obs.scale_down_delay,
    );
    if let Some(event) = d.events.last_mut() {
        event.checks = results(&answers);
    }
    true
}

/// The confirm-rollout gate of a pending rollout: `true` once every confirm-rollout webhook
/// has answered 2xx (recorded, with an event); until then the rollout is halted saying what
/// it waits for, bounded by the progress deadline.
pub(super) fn rollout_confirmed(
    d: &mut Decision,
    state: &Rollout,
    obs: &Observation,
    now: DateTime<Utc>,
) -> bool {
    if !awaits_confirmation(state) {
        return true;
    }
    let answers = obs.answers(WebhookKind::ConfirmRollout);
    let waiting = if answers.is_empty() {
        state
            .gates
            .waiting_for
            .clone()
            .unwrap_or_else(|| "the confirm-rollout webhooks".to_owned())
    } else {
        match gate(state, WebhookKind::ConfirmRollout, &answers) {
            Ok(said) => {
                d.next.gates.rollout_confirmed = true;
                d.next.gates.waiting_for = None;
                d.next.halted_since = None;
                d.next.halt_reason = None;
                d.emit_check(
                    EventKind::Webhook,
                    format!("confirm-rollout: {said}; the rollout goes ahead"),
                    None,
                    results(&answers),
                    Breaches::default(),
                );
                return true;
            }
            Err(waiting) => waiting,
        }
    };
    d.next.gates.waiting_for = Some(waiting.clone());
    halted(
        d,
        state,
        format!("waiting for {waiting}"),
        now,
        obs.scale_down_delay,
    );
    false
}

/// The pre-rollout gate of a ready canary: `true` once every pre-rollout webhook has
/// answered 2xx (a passed check). A refusal fails a check, counted toward
/// `max_failed_checks`, and is tried again an interval later.
pub(super) fn pre_rollout_passed(
    d: &mut Decision,
    state: &Rollout,
    obs: &Observation,
    now: DateTime<Utc>,
) -> bool {
    let settings = &state.analysis;
    if state.gates.pre_rollout_passed || !settings.has_hooks(WebhookKind::PreRollout) {
        return true;
    }
    d.next.halted_since = None;
    d.next.halt_reason = None;
    if obs.answers(WebhookKind::PreRollout).is_empty() {
        // Not due yet: an interval after the last attempt.
        d.wake = interval_elapsed(state, now).unwrap_or_else(|| poll(state));
        return false;
    }
    d.next.last_step_at = Some(now);
    d.wake = settings.interval;
    let judged = verdict(
        hooks_judged(settings, WebhookKind::PreRollout, &obs.hooks),
        None,
    );
    let record = |checks: &[CheckResult]| AnalysisRecord {
        sample: Sample::default(),
        time: now,
        failed: Breaches::default(),
        checks: checks.to_vec(),
    };
    match judged {
        Verdict::Pass {
            measured, checks, ..
        } => {
            d.next.gates.pre_rollout_passed = true;
            d.next.last_analysis = Some(record(&checks));
            d.emit_check(
                EventKind::CheckPassed,
                format!("pre-rollout check passed: {measured}"),
                None,
                checks,
                Breaches::default(),
            );
            true
        }
        Verdict::NoData { key, why, checks } => {
            no_data(
                d,
                state,
                Sample::default(),
                checks,
                (key, why),
                (now, obs.scale_down_delay),
            );
            false
        }
        Verdict::Fail {
            why,
            measured,
            checks,
            ..
        } => {
            d.next.failed_checks = state.failed_checks + 1;
            d.next.last_analysis = Some(record(&checks));
            let failed_checks = d.next.failed_checks;
            d.emit_check(
                EventKind::CheckFailed,
                format!(
                    "pre-rollout check failed: {measured}, failed check {failed_checks} of {}",
                    settings.max_failed_checks
                ),
                None,
                checks,
                Breaches::default(),
            );
            if failed_checks >= settings.max_failed_checks {
                begin_rollback(
                    d,
                    Phase::RolledBack,
                    format!("{failed_checks} failed checks: pre-rollout {why}"),
                    now,
                    obs.scale_down_delay,
                );
            }
            false
        }
    }
}

/// Whether the promotion of a check that passed at the maximum weight may go ahead: `Ok`
/// (saying how the confirm-promotion webhooks answered, if any) or `Err` with what it waits
/// for: a confirm-promotion webhook's yes, then an operator's approval.
pub(super) fn promotion_gate(state: &Rollout, obs: &Observation) -> Result<Option<String>, String> {
    let mut said = None;
    if state.analysis.has_hooks(WebhookKind::ConfirmPromotion) {
        let answers = obs.answers(WebhookKind::ConfirmPromotion);
        said = Some(gate(state, WebhookKind::ConfirmPromotion, &answers)?);
    }
    if state.analysis.require_approval {
        return Err(APPROVAL.to_owned());
    }
    Ok(said)
}

/// Key of the quiet repeats of passing checks while a promotion waits.
const HELD: &str = "held at the maximum weight";

/// A check passed at the maximum weight but the promotion waits (for confirm-promotion
/// webhooks or an operator's approval): the rollout holds there and its checks go on, so a
/// failing canary is still rolled back. The wait is announced once; passing checks while it
/// lasts are recorded a few times, then once per quiet window, like repeated "no data".
pub(super) fn held(
    d: &mut Decision,
    state: &Rollout,
    (message, sample, checks): (String, Sample, Vec<CheckResult>),
    waiting: String,
    now: DateTime<Utc>,
) {
    let repeat = Repeat::of(state, HELD, now);
    if repeat.recorded {
        let note = repeat
            .left_out()
            .map(|(unrecorded, since)| {
                format!(
                    " ({unrecorded} more passing checks since {} not recorded)",
                    since.format("%H:%M:%S UTC")
                )
            })
            .unwrap_or_default();
        d.emit_check(
            EventKind::CheckPassed,
            format!("{message}{note}"),
            Some(sample),
            checks,
            Breaches::default(),
        );
    }
    d.next.quiet = Some(repeat.after());
    let reason = format!("halted: waiting for {waiting}");
    if state.gates.waiting_for.as_deref() != Some(waiting.as_str()) {
        d.emit(EventKind::Halted, reason.clone());
    }
    d.next.gates.waiting_for = Some(waiting);
    d.next.message = reason;
}

/// The post-rollout webhooks are called once all traffic has left the canary for good, and
/// the rollout ends only after: returns whether they are still to be called. Their answers
/// are recorded (an event that leaves the rollout's message alone) and change nothing else.
pub(super) fn post_rollout_pending(d: &mut Decision, state: &Rollout, obs: &Observation) -> bool {
    if !post_rollout_due(state) {
        return false;
    }
    let answers = obs.answers(WebhookKind::PostRollout);
    if answers.is_empty() {
        d.wake = poll(state);
        return true;
    }
    d.next.gates.post_rollout_sent = true;
    let refused: Vec<String> = answers
        .iter()
        .filter(|a| !a.passed())
        .map(|a| format!("{} ({})", a.name, a.detail()))
        .collect();
    let message = if refused.is_empty() {
        let said: Vec<String> = answers
            .iter()
            .map(|a| format!("{} answered {}", a.name, a.detail()))
            .collect();
        format!("post-rollout webhooks called: {}", said.join(", "))
    } else {
        format!(
            "post-rollout webhook {} failed; it is informational and changes nothing",
            refused.join(", ")
        )
    };
    d.note(EventKind::Webhook, message, results(&answers));
    false
}

#[cfg(test)]
#[path = "gates_tests.rs"]
mod tests;
