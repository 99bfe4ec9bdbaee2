//! The step plan: which traffic shape comes next, when a step or a check is due (shared
//! ticks, intervals, the evidence window of a revision), which weight read back after a
//! restart this rollout may have written itself, and the plan started again from weight 0 for
//! a new canary revision.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::edits::route_edit;
use super::health::workloads_halt;
use super::{Action, Decision, Observation, poll};
use crate::domain::{EventKind, Gates, Phase, Rollout, RouteView};

/// How long after a shared check tick a driver that wakes late still checks on it (at
/// most half the tick's period). Grouped measurements are shared for as long.
pub const TICK_SLACK: Duration = Duration::from_secs(1);

/// Time from `now` to the next shared check tick; zero when `now` is on one. Ticks fall
/// every `min(interval, tick)` counted from the Unix epoch, so the rollouts due for a check
/// check together, and one grouped measurement serves them all. `now` is on a tick for
/// `TICK_SLACK` (at most half a period) after it. A `tick` of zero makes every moment one.
pub fn until_tick(now: DateTime<Utc>, interval: Duration, tick: Duration) -> Duration {
    let period = i64::try_from(interval.min(tick).as_millis()).unwrap_or(i64::MAX);
    if period == 0 {
        return Duration::ZERO;
    }
    let slack = i64::try_from(TICK_SLACK.as_millis())
        .unwrap_or(i64::MAX)
        .min(period / 2);
    let since = now.timestamp_millis().rem_euclid(period);
    if since <= slack {
        Duration::ZERO
    } else {
        Duration::from_millis(u64::try_from(period - since).unwrap_or(0))
    }
}

/// After a restart the route is the truth about traffic: a step may have been
/// written without its state. A weight read back that this rollout may have written (see
/// [`written_unrecorded`]) is recorded with an event; `None` when there is nothing to record
/// (the same weight, a phase whose weight is not its own, or someone else's edit, which the
/// next decision sees and pauses on).
pub fn resumed_at(state: &Rollout, weight: u32, now: DateTime<Utc>) -> Option<Decision> {
    if !reads_weight_back(state)
        || weight == state.canary_weight
        || !written_unrecorded(state, weight)
    {
        return None;
    }
    let mut d = Decision::new(state);
    d.next.canary_weight = weight;
    d.next.updated_at = now;
    if d.next.phase == Phase::Progressing {
        // The weight read back gets a whole interval of analysis of its own.
        d.next.last_step_at = Some(now);
    }
    d.wake = Duration::ZERO;
    d.emit(
        EventKind::WeightChanged,
        format!(
            "resumed: {} routes {weight}% to the canary (state had {}%)",
            state.route, state.canary_weight
        ),
    );
    Some(d)
}

/// Whether a restarted server reads the rollout's canary weight back from the route:
/// in the phases whose weight the rollout itself moves.
pub fn reads_weight_back(state: &Rollout) -> bool {
    matches!(
        state.phase,
        Phase::Progressing | Phase::Paused | Phase::Promoting
    )
}

/// The window to measure the canary over when the next decision needs a measurement,
/// `None` when it does not.
pub fn sample_window(
    state: &Rollout,
    now: DateTime<Utc>,
    metrics_window: Duration,
    check_tick: Duration,
) -> Option<Duration> {
    if state.phase != Phase::Progressing
        || (state.canary_weight == 0 && !state.analysis.strategy.checks_without_traffic())
        || interval_elapsed(state, now).is_some()
        || !until_tick(now, state.analysis.interval, check_tick).is_zero()
    {
        return None;
    }
    evidence_window(state, now, metrics_window).ok()
}

/// The metrics window of a check, or `Err(time left)` while the revision under analysis has
/// had traffic for less than `metrics_window`.
///
/// The canary workload keeps its name across revisions, so a window reaching back before
/// `traffic_since` would count requests another revision served (a bad revision could pass
/// on a good one's evidence). The window is `max(interval, metrics_window)`, cut at
/// `traffic_since`; a cut window is rounded down to whole seconds because the provider
/// rounds windows up to whole seconds, which would reach back before the cut. A rollout
/// resumed without a recorded `traffic_since` counts from now: conservative.
pub fn evidence_window(
    state: &Rollout,
    now: DateTime<Utc>,
    metrics_window: Duration,
) -> Result<Duration, Duration> {
    let since = state.traffic_since.unwrap_or(now);
    let age = (now - since).to_std().unwrap_or(Duration::ZERO);
    if let Some(left) = metrics_window.checked_sub(age).filter(|l| !l.is_zero()) {
        return Err(left);
    }
    let wanted = state.analysis.interval.max(metrics_window);
    if wanted <= age {
        return Ok(wanted);
    }
    let whole = Duration::from_secs(age.as_secs());
    Ok(if whole.is_zero() { age } else { whole })
}

/// The window of a check against the baseline: everything since the revision under analysis
/// first got traffic (the analysis start), in whole seconds so the provider's rounding up
/// never reaches back before it. Counts over it are cumulative: each look sees all the
/// evidence so far, and the looks' levels (`stats::looks`) pay for looking again.
pub fn baseline_window(state: &Rollout, now: DateTime<Utc>) -> Option<Duration> {
    let since = state.traffic_since?;
    let age = (now - since).to_std().ok()?;
    let whole = Duration::from_secs(age.as_secs());
    (!whole.is_zero()).then_some(whole)
}

/// Whether a check is due now: the rollout progresses above weight zero, an interval has
/// passed, the revision has had a metrics window of its own traffic, and nothing holds it
/// back (both Deployments settled and healthy, the canary still the revision analysed, the
/// route as steerer left it). What `progressing` requires before it judges, so the
/// driver measures and calls webhooks only for a check that will be judged.
pub fn check_due(state: &Rollout, obs: &Observation, now: DateTime<Utc>) -> bool {
    if sample_window(state, now, obs.metrics_window, obs.check_tick).is_none() {
        return false;
    }
    let (Some(ga), Some(canary)) = (&obs.ga, &obs.canary) else {
        return false;
    };
    canary.revision() == state.revision
        && obs.route != RouteView::Missing
        && route_edit(state, obs).is_none()
        && workloads_halt(ga, canary, obs).is_none()
}

/// `None` when an interval has passed since the last step, else the time left.
pub(super) fn interval_elapsed(state: &Rollout, now: DateTime<Utc>) -> Option<Duration> {
    let last = state.last_step_at?;
    let elapsed = (now - last).to_std().unwrap_or(Duration::ZERO);
    state
        .analysis
        .interval
        .checked_sub(elapsed)
        .filter(|left| !left.is_zero())
}

/// The weight the next step of a rollout moves to, as its strategy plans it.
pub(super) fn next_step(state: &Rollout) -> u32 {
    state.analysis.strategy.next_weight(state.canary_weight)
}

/// Whether a canary weight read back from the route (after a restart) is one this
/// rollout may have written without recording it: its next step, or 0 (a rollback, a
/// promotion's route to GA, a restart of the analysis). Any other weight was set by someone
/// else, and is treated as a hand edit.
pub fn written_unrecorded(state: &Rollout, weight: u32) -> bool {
    weight == 0 || weight == next_step(state)
}

/// Moves the canary weight up to `to`, the next step of the plan.
pub(super) fn step_up(d: &mut Decision, state: &Rollout, to: u32, now: DateTime<Utc>, why: String) {
    let settings = &state.analysis;
    let from = state.canary_weight;
    d.next.last_step_at = Some(now);
    d.next.quiet = None;
    d.wake = settings.interval;
    if to == from && (from > 0 || settings.strategy.checks_without_traffic()) {
        // An A/B test between checks, or blue/green in the dark: the traffic stays as it is
        // for another interval. A dark canary's own load counts from its first step.
        if d.next.traffic_since.is_none() {
            d.next.traffic_since = Some(now);
        }
        if state.phase == Phase::Pending
            && let Some(routes) = settings.strategy.routes(to)
        {
            d.emit(EventKind::WeightChanged, format!("{why}; {routes}"));
        }
        return;
    }
    d.actions.push(Action::SetCanaryWeight(to));
    d.next.canary_weight = to;
    if d.next.traffic_since.is_none() && to > 0 {
        d.next.traffic_since = Some(now);
    }
    let what = match settings.strategy.routes(to) {
        Some(routes) => format!("{why}; {routes}"),
        None => format!("{why}; canary weight {from}% -> {to}%"),
    };
    d.emit(EventKind::WeightChanged, what);
}

/// A new canary revision: the analysis starts again from weight 0, with its own evidence,
/// confirmations and pre-rollout webhooks.
pub(super) fn restart(d: &mut Decision, state: &Rollout, revision: &str) {
    if state.canary_weight > 0 {
        d.actions.push(Action::SetCanaryWeight(0));
    }
    d.next.canary_weight = 0;
    d.next.failed_checks = 0;
    d.next.passed_checks = 0;
    d.next.phase = Phase::Pending;
    d.next.revision = String::new();
    d.next.halted_since = None;
    d.next.halt_reason = None;
    d.next.last_step_at = None;
    d.next.promotion_min_ready = None;
    d.next.promoting_since = None;
    d.next.promoted_template = None;
    d.next.quiet = None;
    // The new revision's evidence starts with its own first step, and it passes its own
    // confirmations and pre-rollout webhooks.
    d.next.traffic_since = None;
    d.next.baseline_looks = 0;
    d.next.gates = Gates::default();
    d.wake = poll(state);
    d.emit(
        EventKind::Restarted,
        format!(
            "canary revision changed from {} to {revision}; analysis restarts from weight 0",
            state.revision
        ),
    );
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
