//! Waiting against the progress deadline: a rollout halted (on its workloads, a gate, a hand
//! edit) or checked without data says why, once, and rolls back when the deadline has passed.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::endings::begin_rollback;
use super::quiet::Repeat;
use super::{Decision, human, watching};
use crate::domain::{Breaches, CheckResult, EventKind, Phase, Rollout, Sample};

/// The rollout cannot progress for `reason`: say so once, and roll back past the deadline.
pub(super) fn halted(
    d: &mut Decision,
    state: &Rollout,
    reason: String,
    now: DateTime<Utc>,
    delay: Duration,
) {
    let since = state.halted_since.unwrap_or(now);
    d.next.halted_since = Some(since);
    let elapsed = (now - since).to_std().unwrap_or(Duration::ZERO);
    let deadline = state.analysis.progress_deadline;
    if elapsed >= deadline {
        begin_rollback(
            d,
            Phase::RolledBack,
            format!(
                "progress deadline of {} exceeded: {reason}",
                human(deadline)
            ),
            now,
            delay,
        );
        return;
    }
    watching(d, state, deadline - elapsed);
    if state.halt_reason.as_deref() != Some(reason.as_str()) {
        d.next.halt_reason = Some(reason.clone());
        d.emit(EventKind::Halted, format!("halted: {reason}"));
    }
}

/// A check without evidence: never a pass. Repeats of one reason are recorded in full a few
/// times, then once per `quiet_window` (the state still records every check), so a long
/// outage cannot grow the event log without bound.
pub(super) fn no_data(
    d: &mut Decision,
    state: &Rollout,
    sample: Sample,
    checks: Vec<CheckResult>,
    (key, why): (&str, String),
    (now, delay): (DateTime<Utc>, Duration),
) {
    let since = state.halted_since.unwrap_or(now);
    d.next.halted_since = Some(since);
    let elapsed = (now - since).to_std().unwrap_or(Duration::ZERO);
    let deadline = state.analysis.progress_deadline;
    // A dark blue/green canary only has the load something else gives it: say where from.
    let why = if state.canary_weight == 0 && state.analysis.strategy.checks_without_traffic() {
        format!(
            "{why} (blue/green: the canary takes no live traffic until its checks pass; its load must come from a load tester a rollout webhook drives)"
        )
    } else {
        why
    };
    let message = format!("no data at weight {}%: {why}", state.canary_weight);
    let past_deadline = elapsed >= deadline;
    let repeat = Repeat::of(state, key, now).recorded_anyway(past_deadline);
    if repeat.recorded {
        let note = repeat
            .left_out()
            .map(|(unrecorded, since)| {
                format!(
                    " ({unrecorded} more checks like this since {} not recorded; {} in a row)",
                    since.format("%H:%M:%S UTC"),
                    repeat.in_a_row
                )
            })
            .unwrap_or_default();
        d.emit_check(
            EventKind::CheckNoData,
            format!("{message}{note}"),
            Some(sample),
            checks,
            Breaches::default(),
        );
    } else {
        d.next.message = format!("{message} ({} checks in a row)", repeat.in_a_row);
    }
    d.next.quiet = Some(repeat.after());
    if past_deadline {
        begin_rollback(
            d,
            Phase::RolledBack,
            format!("progress deadline of {} exceeded: {why}", human(deadline)),
            now,
            delay,
        );
    }
}
