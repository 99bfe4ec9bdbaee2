//! The rules of a rollout, as pure functions: given the state, what was observed and the
//! time, `decide` says which actions to take, the next state and the events to record.
//! Commands from callers go through `apply_command`, pure too; so do the first state of a
//! rollout (`start`), the weight a restarted server reads back (`resumed_at`), the judgement
//! of one measurement (`evaluate`, `evaluate_all`) and which webhooks are due before a
//! decision (`hooks_due`). No I/O, no clock, no async: the driver observes (and calls the
//! webhooks due) before and acts after. Depends on domain types only.
//!
//! One file per concern: the judge (`judge`), the health gate (`health`), the step plan
//! (`plan`), gates (`gates`), commands (`commands`), the first state (`start`), hand edits of
//! the route (`edits`), the transitions before, during and after a promotion (`progress`,
//! `promotion`, `endings`), and repeats recorded sparingly (`quiet`).

mod against;
mod commands;
mod deadline;
mod edits;
mod endings;
mod finish;
#[cfg(test)]
mod fixtures;
mod gates;
mod health;
mod judge;
mod plan;
mod progress;
mod promotion;
mod quiet;
mod start;

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::domain::{
    BaselineSample, Breaches, CheckResult, DeploymentView, EventKind, HookAnswer, HpaView, Phase,
    Rollout, RolloutEvent, RouteView, Sample, WebhookKind,
};

pub use commands::{Command, Refused, apply_command, command_on_finished};
pub use gates::{APPROVAL, hook_phase, hooks_due};
pub use health::{ga_runs_canary, halt_reason};
pub use judge::{Verdict, evaluate, evaluate_all};
pub use plan::{
    TICK_SLACK, baseline_window, check_due, evidence_window, reads_weight_back, resumed_at,
    sample_window, until_tick, written_unrecorded,
};
pub use quiet::{MIN_QUIET, REPEATS_IN_FULL, quiet_window};
pub use start::{NotAdmitted, admit, canary_name, requested, start};

use endings::{cannot_act, route_missing};
use finish::rolling_back;
use progress::{pending, progressing};
use promotion::promoting;

/// How often a rollout that waits on Kubernetes (readiness, GA's rollout) looks again.
pub const POLL: Duration = Duration::from_millis(500);

/// How often such a rollout looks again when changes to its objects wake it (see
/// [`Decision::watch`]): the look that catches what no change announced (an HPA's, a lost
/// watch event). Never longer than the rollout's interval.
pub const WATCHED_POLL: Duration = Duration::from_secs(5);

/// How long a rollout with nothing to do sleeps (commands wake it).
pub const IDLE: Duration = Duration::from_secs(3600);

/// What the driver saw just before deciding.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    pub ga: Option<DeploymentView>,
    pub canary: Option<DeploymentView>,
    pub ga_hpa: Option<HpaView>,
    pub canary_hpa: Option<HpaView>,
    /// The canary measurement when one was due (`wants_sample`); `Err` when the provider
    /// failed.
    pub sample: Option<Result<Sample, String>>,
    /// With a baseline, both sides' counts since the analysis started when a check was due;
    /// `Err` when the provider failed. Boxed: the driver's future holds an observation.
    pub baseline: Option<Box<Result<BaselineSample, String>>>,
    /// GA's pod template equals the canary's with GA's selector labels.
    pub ga_runs_canary: bool,
    /// The shortest window the metrics provider measures over (the engine's
    /// `metrics_window`): a revision is checked only once it has had traffic that long.
    pub metrics_window: Duration,
    /// The engine's `check_tick`: checks wait for a shared tick (`until_tick`).
    pub check_tick: Duration,
    /// The route as last seen.
    pub route: RouteView,
    /// A canary weight the driver wrote (or tried to) that the state does not record yet:
    /// seeing it in the route is not someone else's edit.
    pub unrecorded_weight: Option<u32>,
    /// The engine's scale-down delay: how long the canary keeps its pods after all traffic
    /// left it.
    pub scale_down_delay: Duration,
    /// An action of the last decision failed in a way retrying cannot fix.
    pub failure: Option<ActionFailure>,
    /// What each metric template of the rollout yielded, by template name, when a check was
    /// due: `Ok(None)` is no data, `Err` a failed query or a template the server no longer
    /// has.
    pub metric_values: Vec<(String, Result<Option<f64>, String>)>,
    /// The answers of the webhooks `hooks_due` named, called just before deciding.
    pub hooks: Vec<HookAnswer>,
}

impl Observation {
    /// The answers of the rollout's webhooks of one kind.
    fn answers(&self, kind: WebhookKind) -> Vec<&HookAnswer> {
        self.hooks.iter().filter(|a| a.kind == kind).collect()
    }
}

/// An action that failed with an error retrying cannot fix (a missing object, a 403, a 422).
#[derive(Debug, Clone, PartialEq)]
pub struct ActionFailure {
    pub action: Action,
    pub error: String,
}

/// A side effect the driver carries out, in order, before persisting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Route this percentage to the canary, the rest to GA (an absolute value: idempotent).
    SetCanaryWeight(u32),
    /// Set the canary's replicas.
    ScaleCanary(u32),
    /// Set GA's replicas.
    ScaleGa(u32),
    /// Apply the rollout's images to the canary's pod template.
    ApplyImages,
    /// Copy the canary's pod template over GA, keeping GA's selector labels.
    PromoteTemplate,
}

/// An event to record, before it gets its sequence number and time.
#[derive(Debug, Clone, PartialEq)]
pub struct EventDraft {
    pub kind: EventKind,
    pub phase: Phase,
    pub canary_weight: u32,
    pub failed_checks: u32,
    pub sample: Option<Sample>,
    pub message: String,
    /// On a failed check, the built-in bounds it missed.
    pub failed: Breaches,
    /// On check and webhook events, every value against its bound and every answer.
    pub checks: Vec<CheckResult>,
}

impl EventDraft {
    /// The event as recorded: numbered `sequence` of rollout `rollout_id`, at `time`.
    pub fn record(self, rollout_id: &str, sequence: u64, time: DateTime<Utc>) -> RolloutEvent {
        RolloutEvent {
            rollout_id: rollout_id.to_owned(),
            sequence,
            time,
            kind: self.kind,
            phase: self.phase,
            canary_weight: self.canary_weight,
            success_rate: self.sample.and_then(|s| s.success_rate),
            request_rate: self.sample.and_then(|s| s.request_rate),
            failed_checks: self.failed_checks,
            message: self.message,
            latency_p99_ms: self.sample.and_then(|s| s.latency_p99_ms),
            failed: self.failed,
            checks: self.checks,
        }
    }
}

/// The outcome of deciding: actions, then the next state and its events.
#[derive(Debug, Clone)]
pub struct Decision {
    pub next: Rollout,
    pub actions: Vec<Action>,
    pub events: Vec<EventDraft>,
    /// When to decide again.
    pub wake: Duration,
    /// Set when the rollout waits on its Kubernetes objects and nothing else (a canary or GA
    /// becoming ready, a halt on workloads): a driver that a change to one of those objects
    /// wakes may decide again this late rather than at `wake`. Never past a deadline.
    pub watch: Option<Duration>,
}

impl Decision {
    /// Names who caused this decision (an operator's command) in its events and message.
    pub fn attribute_to(&mut self, by: &str) {
        for event in &mut self.events {
            event.message = format!("{} (by {by})", event.message);
        }
        if let Some(last) = self.events.last() {
            self.next.message = last.message.clone();
        }
    }

    fn new(state: &Rollout) -> Self {
        Self {
            next: state.clone(),
            actions: Vec::new(),
            events: Vec::new(),
            wake: IDLE,
            watch: None,
        }
    }

    /// Records an event with the next state's phase, weight and failed checks as they are now.
    fn emit(&mut self, kind: EventKind, message: String) {
        self.emit_check(kind, message, None, Vec::new(), Breaches::default());
    }

    /// Records a check (or webhook) event with what it measured.
    fn emit_check(
        &mut self,
        kind: EventKind,
        message: String,
        sample: Option<Sample>,
        checks: Vec<CheckResult>,
        failed: Breaches,
    ) {
        self.next.message = message.clone();
        self.events.push(EventDraft {
            kind,
            phase: self.next.phase,
            canary_weight: self.next.canary_weight,
            failed_checks: self.next.failed_checks,
            sample,
            message,
            failed,
            checks,
        });
    }

    /// Records an event that leaves the rollout's message as it is.
    fn note(&mut self, kind: EventKind, message: String, checks: Vec<CheckResult>) {
        let kept = self.next.message.clone();
        self.emit_check(kind, message, None, checks, Breaches::default());
        self.next.message = kept;
    }

    /// Whether anything needs persisting.
    pub fn changes(&self, state: &Rollout) -> bool {
        !self.events.is_empty() || self.next != *state
    }

    /// The next state and its events as they are recorded at `time`, numbered on from the
    /// next state's `last_sequence`.
    pub fn record(&self, time: DateTime<Utc>) -> (Rollout, Vec<RolloutEvent>) {
        let mut next = self.next.clone();
        let events = self
            .events
            .iter()
            .cloned()
            .map(|draft| {
                next.last_sequence += 1;
                draft.record(&next.id, next.last_sequence, time)
            })
            .collect();
        (next, events)
    }
}

fn poll(state: &Rollout) -> Duration {
    POLL.min(state.analysis.interval)
}

/// Looks again on the poll, or, when woken by changes to the rollout's objects, up to
/// [`WATCHED_POLL`] later but never after `left` (a deadline) has run out. Webhooks and
/// approvals are asked or awaited on time, so a rollout with them always polls.
fn watching(d: &mut Decision, state: &Rollout, left: Duration) {
    d.wake = poll(state);
    let settings = &state.analysis;
    if !settings.webhooks.is_empty() || settings.require_approval {
        return;
    }
    let long = WATCHED_POLL.min(settings.interval).min(left);
    d.watch = (long > d.wake).then_some(long);
}

fn human(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs().max(1))).to_string()
}

/// When the canary is scaled down, from the moment traffic leaves it.
fn scaled_down_in(delay: Duration) -> String {
    if delay.is_zero() {
        "now".to_owned()
    } else {
        format!("in {}", human(delay))
    }
}

/// Decides the next step of a rollout.
pub fn decide(state: &Rollout, obs: &Observation, now: DateTime<Utc>) -> Decision {
    let mut d = Decision::new(state);
    if !state.phase.is_terminal() {
        if let Some(failure) = &obs.failure {
            cannot_act(&mut d, state, obs, failure, now);
            d.next.updated_at = now;
            return d;
        }
        if obs.route == RouteView::Missing && state.phase != Phase::Paused {
            route_missing(&mut d, state, obs, now);
            d.next.updated_at = now;
            return d;
        }
    }
    match state.phase {
        Phase::Pending => pending(&mut d, state, obs, now),
        Phase::Progressing => progressing(&mut d, state, obs, now),
        Phase::Promoting => promoting(&mut d, state, obs, now),
        Phase::RollingBack => rolling_back(&mut d, state, obs, now),
        Phase::Paused | Phase::Succeeded | Phase::RolledBack | Phase::Aborted | Phase::Failed => {}
    }
    settle_gates(&mut d);
    // Acting, a new phase or another wake-up time ends a wait on the objects alone.
    if d.wake != poll(state) || !d.actions.is_empty() || d.next.phase != state.phase {
        d.watch = None;
    }
    if d.changes(state) {
        d.next.updated_at = now;
    }
    d
}

/// A rollout no longer pending or progressing waits for nothing.
fn settle_gates(d: &mut Decision) {
    if !matches!(d.next.phase, Phase::Pending | Phase::Progressing) {
        d.next.gates.waiting_for = None;
    }
}

#[cfg(test)]
mod tests;
