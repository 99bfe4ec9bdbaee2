//! The rules of a rollout as one pure function: given the state, what was observed and the
//! time, `decide` says which actions to take, the next state and the events to record.
//! Commands from callers (abort, pause, resume, promote) go through `apply_command`, pure too.
//! No I/O here: the driver observes before and acts after.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::domain::{AnalysisRecord, Ending, EventKind, Phase, QuietRepeats, Rollout, Sample};
use crate::workloads::{DeploymentView, HpaView, halt_reason};

/// How often a rollout that waits on Kubernetes (readiness, GA's rollout) looks again.
pub const POLL: Duration = Duration::from_millis(500);
/// How long a rollout with nothing to do sleeps (commands wake it).
pub const IDLE: Duration = Duration::from_secs(3600);
/// Consecutive "no data" checks with the same reason recorded in full before their repeats
/// are recorded only once per `quiet_window`.
pub const REPEATS_IN_FULL: u32 = 3;
/// Shortest time between two recorded repeats of the same "no data" reason.
pub const MIN_QUIET: Duration = Duration::from_secs(60);

/// Time between two recorded repeats of the same "no data" reason: ten intervals, at least a
/// minute. A long outage then adds a few events an hour, not one per interval.
pub fn quiet_window(state: &Rollout) -> Duration {
    (state.analysis.interval * 10).max(MIN_QUIET)
}

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
    /// GA's pod template equals the canary's with GA's selector labels.
    pub ga_runs_canary: bool,
    /// The shortest window the metrics provider measures over (the engine's
    /// `metrics_window`): a revision is checked only once it has had traffic that long.
    pub metrics_window: Duration,
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
}

/// The outcome of deciding: actions, then the next state and its events.
#[derive(Debug, Clone)]
pub struct Decision {
    pub next: Rollout,
    pub actions: Vec<Action>,
    pub events: Vec<EventDraft>,
    /// When to decide again.
    pub wake: Duration,
}

impl Decision {
    fn new(state: &Rollout) -> Self {
        Self {
            next: state.clone(),
            actions: Vec::new(),
            events: Vec::new(),
            wake: IDLE,
        }
    }

    /// Records an event with the next state's phase, weight and failed checks as they are now.
    fn emit(&mut self, kind: EventKind, message: String) {
        self.emit_with(kind, message, None);
    }

    fn emit_with(&mut self, kind: EventKind, message: String, sample: Option<Sample>) {
        self.next.message = message.clone();
        self.events.push(EventDraft {
            kind,
            phase: self.next.phase,
            canary_weight: self.next.canary_weight,
            failed_checks: self.next.failed_checks,
            sample,
            message,
        });
    }

    /// Whether anything needs persisting.
    pub fn changes(&self, state: &Rollout) -> bool {
        !self.events.is_empty() || self.next != *state
    }
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

/// The window to measure the canary over when the next decision needs a measurement,
/// `None` when it does not.
pub fn sample_window(
    state: &Rollout,
    now: DateTime<Utc>,
    metrics_window: Duration,
) -> Option<Duration> {
    if state.phase != Phase::Progressing
        || state.canary_weight == 0
        || interval_elapsed(state, now).is_some()
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

/// `None` when an interval has passed since the last step, else the time left.
fn interval_elapsed(state: &Rollout, now: DateTime<Utc>) -> Option<Duration> {
    let last = state.last_step_at?;
    let elapsed = (now - last).to_std().unwrap_or(Duration::ZERO);
    state
        .analysis
        .interval
        .checked_sub(elapsed)
        .filter(|left| !left.is_zero())
}

fn poll(state: &Rollout) -> Duration {
    POLL.min(state.analysis.interval)
}

fn human(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs().max(1))).to_string()
}

/// Decides the next step of a rollout.
pub fn decide(state: &Rollout, obs: &Observation, now: DateTime<Utc>) -> Decision {
    let mut d = Decision::new(state);
    match state.phase {
        Phase::Pending => pending(&mut d, state, obs, now),
        Phase::Progressing => progressing(&mut d, state, obs, now),
        Phase::Promoting => promoting(&mut d, state, obs, now),
        Phase::RollingBack => rolling_back(&mut d, state, obs, now),
        Phase::Paused | Phase::Succeeded | Phase::RolledBack | Phase::Aborted | Phase::Failed => {}
    }
    if d.changes(state) {
        d.next.updated_at = now;
    }
    d
}

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
    match command {
        Command::Abort { reason } => {
            // A rollback already does what an abort asks (traffic on GA, canary scaled
            // down): it carries on with its own reason, and nothing is written twice.
            if phase.is_terminal() || phase == Phase::RollingBack {
                return Ok(d);
            }
            let reason = if reason.trim().is_empty() {
                "aborted by request".to_owned()
            } else {
                format!("aborted: {}", reason.trim())
            };
            begin_rollback(&mut d, Phase::Aborted, reason);
        }
        Command::Pause { reason } => match phase {
            Phase::Paused => return Ok(d),
            Phase::Pending | Phase::Progressing => {
                d.next.paused_from = Some(phase);
                d.next.phase = Phase::Paused;
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
                d.next.phase = state.paused_from.unwrap_or(Phase::Progressing);
                d.next.paused_from = None;
                // Time spent paused is not time spent halted.
                d.next.halted_since = None;
                d.next.halt_reason = None;
                d.next.last_step_at = Some(now);
                d.emit(
                    EventKind::Resumed,
                    format!("resumed at canary weight {}%", state.canary_weight),
                );
            }
            p if p.is_terminal() => {
                return Err(Refused(format!(
                    "rollout {} has finished ({}) and cannot be resumed",
                    state.id,
                    p.name()
                )));
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
    d.next.updated_at = now;
    Ok(d)
}

/// Marks the rollout failed when one of its Deployments is gone, sending traffic to GA.
fn objects_missing(
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

fn pending(d: &mut Decision, state: &Rollout, obs: &Observation, now: DateTime<Utc>) {
    if objects_missing(d, state, obs, now) {
        return;
    }
    let (Some(ga), Some(canary)) = (&obs.ga, &obs.canary) else {
        return;
    };
    d.wake = poll(state);
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
    let halt = halt_reason("canary", canary, obs.canary_hpa.as_ref())
        .or_else(|| halt_reason("GA", ga, obs.ga_hpa.as_ref()));
    if let Some(reason) = halt {
        halted(d, state, reason, now);
        return;
    }
    let revision = canary.revision();
    d.next.revision = revision.clone();
    d.next.phase = Phase::Progressing;
    d.next.halted_since = None;
    d.next.halt_reason = None;
    step_up(
        d,
        state,
        now,
        format!(
            "canary revision {revision} ready with {} replicas",
            canary.ready_replicas
        ),
    );
}

/// Moves the canary weight up one step.
fn step_up(d: &mut Decision, state: &Rollout, now: DateTime<Utc>, why: String) {
    let settings = &state.analysis;
    let from = state.canary_weight;
    let to = (from + settings.step_weight)
        .min(settings.max_weight)
        .min(100);
    d.actions.push(Action::SetCanaryWeight(to));
    d.next.canary_weight = to;
    d.next.last_step_at = Some(now);
    d.next.quiet = None;
    if d.next.traffic_since.is_none() && to > 0 {
        d.next.traffic_since = Some(now);
    }
    d.wake = settings.interval;
    d.emit(
        EventKind::WeightChanged,
        format!("{why}; canary weight {from}% -> {to}%"),
    );
}

/// The rollout cannot progress for `reason`: say so once, and roll back past the deadline.
fn halted(d: &mut Decision, state: &Rollout, reason: String, now: DateTime<Utc>) {
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
        );
        return;
    }
    d.wake = poll(state);
    if state.halt_reason.as_deref() != Some(reason.as_str()) {
        d.next.halt_reason = Some(reason.clone());
        d.emit(EventKind::Halted, format!("halted: {reason}"));
    }
}

fn restart(d: &mut Decision, state: &Rollout, revision: &str) {
    if state.canary_weight > 0 {
        d.actions.push(Action::SetCanaryWeight(0));
    }
    d.next.canary_weight = 0;
    d.next.failed_checks = 0;
    d.next.phase = Phase::Pending;
    d.next.revision = String::new();
    d.next.halted_since = None;
    d.next.halt_reason = None;
    d.next.last_step_at = None;
    d.next.promotion_min_ready = None;
    d.next.promoting_since = None;
    d.next.quiet = None;
    // The new revision's evidence starts with its own first step.
    d.next.traffic_since = None;
    d.wake = poll(state);
    d.emit(
        EventKind::Restarted,
        format!(
            "canary revision changed from {} to {revision}; analysis restarts from weight 0",
            state.revision
        ),
    );
}

fn progressing(d: &mut Decision, state: &Rollout, obs: &Observation, now: DateTime<Utc>) {
    if objects_missing(d, state, obs, now) {
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
    let halt = halt_reason("canary", canary, obs.canary_hpa.as_ref())
        .or_else(|| halt_reason("GA", ga, obs.ga_hpa.as_ref()));
    if let Some(reason) = halt {
        halted(d, state, reason, now);
        return;
    }
    d.next.halt_reason = None;
    if let Some(left) = interval_elapsed(state, now) {
        d.wake = left;
        return;
    }
    if state.canary_weight == 0 {
        step_up(d, state, now, "canary ready".to_owned());
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
    let settings = &state.analysis;
    d.next.last_step_at = Some(now);
    d.wake = settings.interval;
    let sample = match &obs.sample {
        Some(Ok(sample)) => *sample,
        Some(Err(error)) => {
            no_data(
                d,
                state,
                Sample::default(),
                (
                    "metrics unavailable",
                    format!("metrics unavailable: {error}"),
                ),
                now,
            );
            return;
        }
        None => {
            no_data(
                d,
                state,
                Sample::default(),
                ("no measurement", "no measurement".to_owned()),
                now,
            );
            return;
        }
    };
    d.next.last_analysis = Some(AnalysisRecord { sample, time: now });
    let rate = sample.request_rate.filter(|r| r.is_finite());
    let success = sample
        .success_rate
        .filter(|s| !s.is_nan() && !s.is_infinite());
    let (rate, success) = match (rate, success) {
        (Some(rate), _) if rate < settings.min_request_rate => {
            no_data(
                d,
                state,
                sample,
                (
                    "request rate below the minimum",
                    format!(
                        "canary request rate {rate:.2}/s below the minimum {}/s",
                        settings.min_request_rate
                    ),
                ),
                now,
            );
            return;
        }
        (Some(rate), Some(success)) => (rate, success),
        _ => {
            no_data(
                d,
                state,
                sample,
                (
                    "no canary traffic",
                    "no canary traffic in the metrics".to_owned(),
                ),
                now,
            );
            return;
        }
    };
    d.next.halted_since = None;
    d.next.quiet = None;
    let threshold = settings.success_rate_threshold;
    let failure = if !(0.0..=100.0).contains(&success) {
        Some(format!("success rate {success} is out of range"))
    } else if success < threshold {
        Some(format!(
            "success rate {success:.2}% below threshold {threshold}%"
        ))
    } else {
        None
    };
    match failure {
        Some(why) => {
            d.next.failed_checks = state.failed_checks + 1;
            let failed = d.next.failed_checks;
            d.emit_with(
                EventKind::CheckFailed,
                format!(
                    "check failed at weight {}%: {why} ({rate:.1} req/s), failed check {failed} of {}",
                    state.canary_weight, settings.max_failed_checks
                ),
                Some(sample),
            );
            if failed >= settings.max_failed_checks {
                begin_rollback(
                    d,
                    Phase::RolledBack,
                    format!("{failed} failed checks: {why}"),
                );
            }
        }
        None => {
            d.emit_with(
                EventKind::CheckPassed,
                format!(
                    "check passed at weight {}%: success rate {success:.2}% meets {threshold}% ({rate:.1} req/s)",
                    state.canary_weight
                ),
                Some(sample),
            );
            if state.canary_weight >= settings.max_weight {
                begin_promotion(
                    d,
                    ga,
                    canary,
                    obs,
                    "analysis passed at the maximum weight",
                    now,
                );
            } else {
                step_up(d, state, now, "check passed".to_owned());
            }
        }
    }
}

/// A check without evidence: never a pass. Repeats of one reason are recorded in full a few
/// times, then once per `quiet_window` (the state still records every check), so a long
/// outage cannot grow the event log without bound.
fn no_data(
    d: &mut Decision,
    state: &Rollout,
    sample: Sample,
    (key, why): (&str, String),
    now: DateTime<Utc>,
) {
    let since = state.halted_since.unwrap_or(now);
    d.next.halted_since = Some(since);
    let elapsed = (now - since).to_std().unwrap_or(Duration::ZERO);
    let deadline = state.analysis.progress_deadline;
    let message = format!("no data at weight {}%: {why}", state.canary_weight);
    let repeat = state
        .quiet
        .as_ref()
        .filter(|q| q.key == key && q.weight == state.canary_weight);
    let in_a_row = repeat.map_or(1, |q| q.in_a_row + 1);
    let past_deadline = elapsed >= deadline;
    let record = match repeat {
        None => true,
        Some(q) => {
            past_deadline
                || in_a_row <= REPEATS_IN_FULL
                || (now - q.recorded_at).to_std().unwrap_or(Duration::ZERO) >= quiet_window(state)
        }
    };
    if record {
        let note = repeat
            .filter(|q| q.unrecorded > 0)
            .map(|q| {
                format!(
                    " ({} more checks like this since {} not recorded; {in_a_row} in a row)",
                    q.unrecorded,
                    q.recorded_at.format("%H:%M:%S UTC")
                )
            })
            .unwrap_or_default();
        d.emit_with(
            EventKind::CheckNoData,
            format!("{message}{note}"),
            Some(sample),
        );
        d.next.quiet = Some(QuietRepeats {
            key: key.to_owned(),
            weight: state.canary_weight,
            recorded_at: now,
            in_a_row,
            unrecorded: 0,
        });
    } else if let Some(q) = repeat {
        d.next.message = format!("{message} ({in_a_row} checks in a row)");
        d.next.quiet = Some(QuietRepeats {
            in_a_row,
            unrecorded: q.unrecorded + 1,
            ..q.clone()
        });
    }
    if past_deadline {
        begin_rollback(
            d,
            Phase::RolledBack,
            format!("progress deadline of {} exceeded: {why}", human(deadline)),
        );
    }
}

fn begin_promotion(
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

fn promoting(d: &mut Decision, state: &Rollout, obs: &Observation, now: DateTime<Utc>) {
    if objects_missing(d, state, obs, now) {
        return;
    }
    let (Some(ga), Some(canary)) = (&obs.ga, &obs.canary) else {
        return;
    };
    d.wake = poll(state);
    // A promotion resumed from a state written before promotions had a deadline gets a
    // whole one from now.
    let since = state.promoting_since.unwrap_or(now);
    d.next.promoting_since = Some(since);
    if !obs.ga_runs_canary {
        let revision = canary.revision();
        if revision != state.revision {
            restart(d, state, &revision);
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
    d.emit(
        EventKind::Promoted,
        format!(
            "GA runs revision {} with {} ready replicas; all traffic on GA",
            state.revision, ga.ready_replicas
        ),
    );
    if canary.spec_replicas > 0 {
        d.actions.push(Action::ScaleCanary(0));
    }
    d.next.phase = Phase::Succeeded;
    d.next.finished_at = Some(now);
    d.next.promotion_min_ready = None;
    d.next.promoting_since = None;
    d.wake = IDLE;
    d.emit(
        EventKind::Succeeded,
        format!(
            "succeeded: revision {} promoted; canary {} scaled to 0",
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

/// Sends all traffic to GA in one write; the canary is scaled down on the next decision.
fn begin_rollback(d: &mut Decision, phase: Phase, reason: String) {
    d.actions.push(Action::SetCanaryWeight(0));
    d.next.canary_weight = 0;
    d.next.phase = Phase::RollingBack;
    d.next.ending = Some(Ending {
        phase,
        reason: reason.clone(),
    });
    d.wake = Duration::ZERO;
    d.emit(
        EventKind::RollingBack,
        format!("rolling back: {reason}; all traffic on GA"),
    );
}

fn rolling_back(d: &mut Decision, state: &Rollout, obs: &Observation, now: DateTime<Utc>) {
    d.actions.push(Action::SetCanaryWeight(0));
    d.next.canary_weight = 0;
    if obs.canary.as_ref().is_some_and(|c| c.spec_replicas > 0) {
        d.actions.push(Action::ScaleCanary(0));
    }
    let ending = state.ending.clone().unwrap_or(Ending {
        phase: Phase::RolledBack,
        reason: "rolled back".to_owned(),
    });
    d.next.phase = ending.phase;
    d.next.finished_at = Some(now);
    d.wake = IDLE;
    let kind = match ending.phase {
        Phase::Aborted => EventKind::Aborted,
        _ => EventKind::RolledBack,
    };
    let word = if ending.phase == Phase::Aborted {
        "aborted"
    } else {
        "rolled back"
    };
    let reason = ending
        .reason
        .strip_prefix("aborted: ")
        .unwrap_or(&ending.reason)
        .to_owned();
    let reason = if reason == "aborted by request" {
        "by request".to_owned()
    } else {
        reason
    };
    d.emit(
        kind,
        format!(
            "{word}: {reason}; canary {} scaled to 0, all traffic on GA",
            state.canary
        ),
    );
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
