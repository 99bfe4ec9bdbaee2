//! Transitions before the promotion: preparing the canary, its first step, halts, checks and
//! their outcomes.

use chrono::{DateTime, Utc};

use super::against::against;
use super::deadline::{halted, no_data};
use super::edits::paused_for_edit;
use super::endings::{begin_rollback, objects_missing};
use super::gates::{held, pre_rollout_passed, promotion_gate, rollback_asked, rollout_confirmed};
use super::health::workloads_halt;
use super::judge::{Verdict, evaluate_all, rate_note};
use super::plan::{evidence_window, interval_elapsed, next_step, restart, step_up, until_tick};
use super::promotion::begin_promotion;
use super::{Action, Decision, Observation, poll};
use crate::domain::{AnalysisRecord, Breaches, EventKind, Next, Phase, Rollout, Sample, Strategy};

pub(super) fn pending(d: &mut Decision, state: &Rollout, obs: &Observation, now: DateTime<Utc>) {
    if objects_missing(d, state, obs, now) {
        return;
    }
    if state.prepared && paused_for_edit(d, state, obs) {
        return;
    }
    let (Some(ga), Some(canary)) = (&obs.ga, &obs.canary) else {
        return;
    };
    d.wake = poll(state);
    if rollback_asked(d, obs, now) || !rollout_confirmed(d, state, obs, now) {
        return;
    }
    if !state.prepared {
        let mut steps = Vec::new();
        if state.canary_weight != 0 {
            d.actions.push(Action::SetCanaryWeight(0));
            d.next.canary_weight = 0;
            steps.push(format!(
                "canary weight reset from {}% to 0% until the canary is ready",
                state.canary_weight
            ));
        }
        let current = canary.images();
        let changes: Vec<String> = state
            .images
            .iter()
            .filter(|(c, image)| current.get(*c) != Some(*image))
            .map(|(c, image)| format!("{c}={image}"))
            .collect();
        if !changes.is_empty() {
            d.actions.push(Action::ApplyImages);
            steps.push(format!("setting canary images {}", changes.join(", ")));
        }
        if canary.spec_replicas == 0 {
            let replicas = state.canary_replicas.unwrap_or(ga.spec_replicas).max(1);
            d.actions.push(Action::ScaleCanary(replicas));
            steps.push(format!(
                "scaling canary {} from 0 to {replicas} replicas",
                state.canary
            ));
        }
        d.next.prepared = true;
        d.next.halted_since = Some(now);
        if !steps.is_empty() {
            d.emit(
                EventKind::Preparing,
                format!("preparing: {}", steps.join("; ")),
            );
        }
        return;
    }
    if let Some(reason) = workloads_halt(ga, canary, obs) {
        halted(d, state, reason, now, obs.scale_down_delay);
        return;
    }
    if !pre_rollout_passed(d, state, obs, now) {
        return;
    }
    let revision = canary.revision();
    d.next.revision = revision.clone();
    d.next.phase = Phase::Progressing;
    d.next.halted_since = None;
    d.next.halt_reason = None;
    // Blue/green: the first step keeps the canary dark; its checks start from here.
    let first = if state.analysis.strategy.checks_without_traffic() {
        0
    } else {
        next_step(state)
    };
    step_up(
        d,
        state,
        first,
        now,
        format!(
            "canary revision {revision} ready with {} replicas",
            canary.ready_replicas
        ),
    );
}

pub(super) fn progressing(
    d: &mut Decision,
    state: &Rollout,
    obs: &Observation,
    now: DateTime<Utc>,
) {
    if objects_missing(d, state, obs, now) {
        return;
    }
    if paused_for_edit(d, state, obs) {
        return;
    }
    let (Some(ga), Some(canary)) = (&obs.ga, &obs.canary) else {
        return;
    };
    let revision = canary.revision();
    if revision != state.revision {
        restart(d, state, &revision);
        return;
    }
    if let Some(reason) = workloads_halt(ga, canary, obs) {
        halted(d, state, reason, now, obs.scale_down_delay);
        return;
    }
    d.next.halt_reason = None;
    if let Some(left) = interval_elapsed(state, now) {
        d.wake = left;
        return;
    }
    if state.canary_weight == 0 && !state.analysis.strategy.checks_without_traffic() {
        step_up(d, state, next_step(state), now, "canary ready".to_owned());
        return;
    }
    if state.traffic_since.is_none() {
        // Resumed from a state that does not say when this revision got traffic: count
        // from now rather than risk another revision's requests.
        d.next.traffic_since = Some(now);
    }
    // Too little of this revision's own traffic yet: no check is due. This is waiting, not
    // halting: no event, no failed check, and the progress deadline does not start.
    if let Err(left) = evidence_window(&d.next, now, obs.metrics_window) {
        // Still looked at once an interval, so the health gate halts a waiting rollout too.
        d.wake = left.min(state.analysis.interval);
        return;
    }
    // Due: checked on the next shared tick, with the rollouts due then.
    let tick = until_tick(now, state.analysis.interval, obs.check_tick);
    if !tick.is_zero() {
        d.wake = tick;
        return;
    }
    let settings = &state.analysis;
    d.next.last_step_at = Some(now);
    d.wake = settings.interval;
    if rollback_asked(d, obs, now) {
        return;
    }
    let (sample, measurement) = match &obs.sample {
        Some(Ok(sample)) => (*sample, Ok(sample)),
        Some(Err(error)) => (
            Sample::default(),
            Err((
                "metrics unavailable",
                format!("metrics unavailable: {error}"),
            )),
        ),
        None => (
            Sample::default(),
            Err(("no measurement", "no measurement".to_owned())),
        ),
    };
    let measured_at_all = measurement.is_ok();
    let against_baseline = match &settings.baseline {
        Some(baseline) => {
            let look = against(
                obs.baseline.as_deref(),
                baseline,
                state.baseline_looks.saturating_add(1),
            );
            if look.looked {
                d.next.baseline_looks = state.baseline_looks.saturating_add(1);
            }
            look.judged
        }
        None => Vec::new(),
    };
    let verdict = evaluate_all(
        measurement,
        &obs.metric_values,
        &obs.hooks,
        settings,
        against_baseline,
    );
    if measured_at_all {
        // A check without a measurement leaves the last one on record.
        d.next.last_analysis = Some(AnalysisRecord {
            sample,
            time: now,
            failed: Breaches::default(),
            checks: verdict.checks().to_vec(),
        });
    }
    let (why, measured, rate, failed, checks) = match verdict {
        Verdict::NoData { key, why, checks } => {
            no_data(
                d,
                state,
                sample,
                checks,
                (key, why),
                (now, obs.scale_down_delay),
            );
            return;
        }
        Verdict::Fail {
            why,
            measured,
            request_rate,
            failed,
            checks,
        } => (why, measured, request_rate, failed, checks),
        Verdict::Pass {
            measured,
            request_rate,
            checks,
        } => {
            d.next.halted_since = None;
            let passed = state.passed_checks.saturating_add(1);
            d.next.passed_checks = passed;
            let message = match &settings.strategy {
                Strategy::AbTest { iterations, .. } => format!(
                    "check {passed} of {iterations} passed on the A/B traffic: {measured}{}",
                    rate_note(request_rate)
                ),
                Strategy::BlueGreen { iterations } if state.canary_weight == 0 => format!(
                    "check {passed} of {iterations} passed with no live traffic: {measured}{}",
                    rate_note(request_rate)
                ),
                Strategy::Canary { .. } | Strategy::BlueGreen { .. } => format!(
                    "check passed at weight {}%: {measured}{}",
                    state.canary_weight,
                    rate_note(request_rate)
                ),
            };
            if let Next::Weight(to) = settings
                .strategy
                .after_pass(state.canary_weight, state.passed_checks)
            {
                d.next.quiet = None;
                d.emit_check(
                    EventKind::CheckPassed,
                    message,
                    Some(sample),
                    checks,
                    Breaches::default(),
                );
                step_up(d, state, to, now, "check passed".to_owned());
                return;
            }
            match promotion_gate(state, obs) {
                Ok(confirmed) => {
                    d.next.quiet = None;
                    d.emit_check(
                        EventKind::CheckPassed,
                        message,
                        Some(sample),
                        checks,
                        Breaches::default(),
                    );
                    let done = match &settings.strategy {
                        Strategy::AbTest { iterations, .. } => {
                            format!("A/B analysis passed {iterations} checks")
                        }
                        Strategy::Canary { .. } => {
                            "analysis passed at the maximum weight".to_owned()
                        }
                        Strategy::BlueGreen { iterations } => format!(
                            "blue/green analysis passed {iterations} checks without live traffic and one with all of it"
                        ),
                    };
                    let why = match confirmed {
                        Some(said) => format!("{done} and confirm-promotion said yes ({said})"),
                        None => done,
                    };
                    begin_promotion(d, ga, canary, obs, &why, now);
                }
                Err(waiting) => held(d, state, (message, sample, checks), waiting, now),
            }
            return;
        }
    };
    d.next.halted_since = None;
    d.next.quiet = None;
    d.next.failed_checks = state.failed_checks + 1;
    if let Some(record) = d.next.last_analysis.as_mut() {
        record.failed = failed;
    }
    let failed_checks = d.next.failed_checks;
    d.emit_check(
        EventKind::CheckFailed,
        format!(
            "check failed at weight {}%: {measured}{}, failed check {failed_checks} of {}",
            state.canary_weight,
            rate_note(rate),
            settings.max_failed_checks
        ),
        Some(sample),
        checks,
        failed,
    );
    if failed_checks >= settings.max_failed_checks {
        begin_rollback(
            d,
            Phase::RolledBack,
            format!("{failed_checks} failed checks: {why}"),
            now,
            obs.scale_down_delay,
        );
    }
}

#[cfg(test)]
#[path = "progress_tests.rs"]
mod tests;
